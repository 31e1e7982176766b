"""The kernels the VM boots, by name: `7.3` (downloaded) and `6.12` (built here).

7.3 is Debian trixie-backports' cloud kernel (HZ=250, PREEMPT_LAZY), the
default because it only needs a download. 6.12 is the LTS kernel that
Bottlerocket's kernel-6.12 variants run, built from Debian's source with
Bottlerocket's scheduler configuration (HZ=100, PREEMPT_NONE + PREEMPT_DYNAMIC,
NO_HZ_FULL, SCHED_CORE); see kbuild.py.
"""
from __future__ import annotations

import os
from pathlib import Path

from scx_slo.dev.vm import kbuild
from scx_slo.dev.vm import kernel as debian
from scx_slo.dev.vm.kernel import Kernel, KernelError

NAMES = ("7.3", "6.12")
DEFAULT = "7.3"


def default_name() -> str:
    """$SCX_SLO_VM_KERNEL, else 7.3."""
    return os.environ.get("SCX_SLO_VM_KERNEL") or DEFAULT


def get(name: str, cache: Path, progress=print) -> Kernel:
    """The kernel called `name`, downloaded or built on first use."""
    if name == "7.3":
        return debian.fetch(cache)
    if name == "6.12":
        return kbuild.build(cache, progress=progress)
    raise KernelError(f"unknown VM kernel {name!r}: choose one of {', '.join(NAMES)}")
