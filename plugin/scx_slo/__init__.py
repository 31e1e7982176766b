"""scx-slo: an SLO-aware sched_ext scheduler and its Bottlerocket host-container agent."""

from importlib import resources

__version__ = "0.1.0"

OPS_NAME = "scx_slo"


def default_object_path():
    """Path of the scheduler object shipped inside the package."""
    return resources.files(__name__) / "data" / "scx_slo.bpf.o"
