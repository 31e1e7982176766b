"""scx-slo: an SLO-aware sched_ext scheduler and its Bottlerocket host-container agent."""

from pathlib import Path

__version__ = "0.1.0"

OPS_NAME = "scx_slo"


def default_object_path() -> Path:
    """Path of the scheduler object shipped inside the package (a plain file next to
    this module, in a wheel and in an editable install alike)."""
    return Path(__file__).parent / "data" / "scx_slo.bpf.o"
