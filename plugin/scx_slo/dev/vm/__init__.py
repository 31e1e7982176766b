"""A VM with a real sched_ext kernel, for tests and for trying scx-slo anywhere."""
from scx_slo.dev.vm.machine import Result, Vm, VmCommandError, VmError, build

__all__ = ["Result", "Vm", "VmCommandError", "VmError", "build"]
