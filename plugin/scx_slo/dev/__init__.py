"""Development tooling, never imported by the agent or the loader at run time: the
test VM and kernel builds (vm), the benchmark (bench), the private apt configuration
they share (privateapt). The host-container image leaves this package out."""

from pathlib import Path


def hooks_object_path() -> Path:
    """The scheduler built from the same source with its test hooks compiled in
    (-DSCX_SLO_TEST_HOOKS: the stall canary the fault suite uses to prove the
    watchdog). Built next to the shipped object by the package's install."""
    return Path(__file__).parent / "data" / "scx_slo_hooks.bpf.o"
