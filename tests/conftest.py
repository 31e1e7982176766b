"""Shared fixtures. Tests marked `vm` boot a sched_ext kernel under qemu.

Every test that uses `vm` or `vm_factory` runs once per VM kernel: 7.3
(Debian's cloud kernel, downloaded) and 6.12 (built here with Bottlerocket's
scheduler configuration; `scx-slo vm kernel build 6.12`). `--vm-kernel NAME`
(repeatable) or $SCX_SLO_TEST_KERNELS (comma-separated) picks fewer.

`vm` is one machine (1 vCPU) per kernel shared by the whole session: tests
that use it must leave it as they found it (scheduler detached, cgroups
removed). `vm_factory(cpus=N)` boots a private one for tests that need another
shape or would disturb others; it is powered off at the end of the test's module.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import settings

from scx_slo.dev.vm import Vm
from scx_slo.dev.vm.kernels import NAMES


# Property tests: no per-example deadline (a busy 2-core machine is slow, not wrong) and
# derandomized, so a failure in CI is the same failure on a developer's machine.
settings.register_profile("scx-slo", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("scx-slo")


def pytest_addoption(parser):
    parser.addoption("--vm-kernel", action="append", choices=NAMES, default=None,
                     help="run the VM tests on this kernel only (repeatable; default: all)")


def _kernels(config) -> list[str]:
    chosen = config.getoption("--vm-kernel")
    if not chosen and os.environ.get("SCX_SLO_TEST_KERNELS"):
        chosen = [k.strip() for k in os.environ["SCX_SLO_TEST_KERNELS"].split(",") if k.strip()]
    unknown = set(chosen or ()) - set(NAMES)
    if unknown:
        raise pytest.UsageError(f"unknown VM kernel(s) {', '.join(sorted(unknown))}: "
                                f"choose from {', '.join(NAMES)}")
    return list(chosen or NAMES)


def pytest_configure(config):
    config.addinivalue_line("markers", "vm_kernels(*names): run this VM test on these kernels "
                                       "only (of those selected)")


def pytest_generate_tests(metafunc):
    if "vm_kernel" in metafunc.fixturenames:
        names = _kernels(metafunc.config)
        only = metafunc.definition.get_closest_marker("vm_kernels")
        if only is not None:
            names = [n for n in names if n in only.args]
        metafunc.parametrize("vm_kernel", names, scope="session")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Host tests first (minutes), then the VM tests; a stable sort, so the VM tests keep
    the grouping pytest gave them by kernel (one shared machine per kernel)."""
    items.sort(key=lambda item: item.get_closest_marker("vm") is not None)


@pytest.fixture(scope="session")
def kbtf(tmp_path_factory):
    """A raw kernel BTF with what the shipped object needs of a sched_ext kernel (the
    host's has no sched_ext), compiled once for the session."""
    from fixtures import objects as O

    if not O.have_clang():
        pytest.skip("needs clang-19 for the kernel BTF")
    work = tmp_path_factory.mktemp("kernel-btf")
    return O.kernel_btf_for(O.scheduler_object(work), work)


@pytest.fixture(scope="session")
def vm(vm_kernel):
    with Vm(cpus=1, mem_mb=1024, kernel=vm_kernel) as machine:
        yield machine


@pytest.fixture(scope="module")
def vm_factory(vm_kernel):
    machines: list[Vm] = []

    def boot(cpus: int = 1, mem_mb: int = 1024, **kwargs) -> Vm:
        machine = Vm(cpus=cpus, mem_mb=mem_mb, kernel=vm_kernel, **kwargs)
        machine.start()
        machines.append(machine)
        return machine

    yield boot
    for machine in machines:
        machine.close()
