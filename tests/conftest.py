"""Shared fixtures. Tests marked `vm` boot the Debian sched_ext kernel under qemu.

`vm` is one machine (1 vCPU) shared by the whole session: tests that use it
must leave it as they found it (scheduler detached, cgroups removed).
`vm_factory(cpus=N)` boots a private one for tests that need another shape or
would disturb others; it is powered off at the end of the test's module.
"""
from __future__ import annotations

import pytest

from scx_slo.vm import Vm


@pytest.fixture(scope="session")
def vm():
    with Vm(cpus=1, mem_mb=1024) as machine:
        yield machine


@pytest.fixture(scope="module")
def vm_factory():
    machines: list[Vm] = []

    def boot(cpus: int = 1, mem_mb: int = 1024, **kwargs) -> Vm:
        machine = Vm(cpus=cpus, mem_mb=mem_mb, **kwargs)
        machine.start()
        machines.append(machine)
        return machine

    yield boot
    for machine in machines:
        machine.close()
