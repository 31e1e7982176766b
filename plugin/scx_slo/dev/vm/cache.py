"""Where the VM's kernel, rootfs and probes are cached (outside the repository)."""
import os
from pathlib import Path


def cache_dir() -> Path:
    """$SCX_SLO_CACHE, else $XDG_CACHE_HOME/scx-slo, else ~/.cache/scx-slo."""
    if os.environ.get("SCX_SLO_CACHE"):
        d = Path(os.environ["SCX_SLO_CACHE"])
    else:
        d = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "scx-slo"
    d.mkdir(parents=True, exist_ok=True)
    return d
