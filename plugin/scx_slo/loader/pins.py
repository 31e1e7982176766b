"""Where the scheduler's link and maps are pinned, so they outlive the agent.

A superpowered Bottlerocket host container gets a fresh sysfs without the
host's /sys/fs/bpf, but shares the host PID namespace: the host's bpffs is
reachable as /proc/1/root/sys/fs/bpf. A bpffs mounted inside the container's
own mount namespace dies with the container and takes the scheduler with it,
so that is the last resort, and said loudly.

Under the base directory each loaded object gets `<base>/<sha256[:16]>/`
holding `link` and one pin per map: the digest in the path is how a new agent
tells an adoption (same object) from an upgrade (another object).
"""
from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from scx_slo.errors import ScxSloError

log = logging.getLogger(__name__)

HOST_BPFFS = Path("/proc/1/root/sys/fs/bpf")
LOCAL_BPFFS = Path("/sys/fs/bpf")
SUBDIR = "scx-slo"


class PinError(ScxSloError):
    """No bpffs to pin in."""


def _bpf_mounts(mountinfo: str) -> set[str]:
    points = set()
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if right.split()[:1] == ["bpf"] and len(fields) > 4:
            points.add(fields[4])
    return points


def _is_bpffs(path: Path, mountinfo_file: Path) -> bool:
    try:
        return str(path) in _bpf_mounts(mountinfo_file.read_text())
    except OSError:
        return False


def _mount_bpffs(path: Path) -> None:
    """Mount a bpffs at path with mount(8), or raise PinError saying why not."""
    cmd = ["mount", "-t", "bpf", "bpf", str(path)]
    what = f"no bpffs to pin in, and `{' '.join(cmd)}` failed"
    try:
        path.mkdir(parents=True, exist_ok=True)
        p = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as e:
        if e.filename == cmd[0]:
            raise PinError(f"{what}: no {cmd[0]} program in PATH") from None
        raise PinError(f"{what}: {e}") from None
    except OSError as e:
        raise PinError(f"{what}: {e}") from None
    if p.returncode != 0:
        raise PinError(f"{what} (exit status {p.returncode}): {p.stderr.strip()}")


def base_dir(explicit: str | os.PathLike | None = None, mount_if_missing: bool = True) -> Path:
    """The directory under which scx-slo pins, created if needed."""
    if explicit:
        base = Path(explicit)
    elif _is_bpffs(Path("/sys/fs/bpf"), Path("/proc/1/mountinfo")) and HOST_BPFFS.is_dir() \
            and os.stat("/proc/1/root").st_ino != os.stat("/").st_ino:
        base = HOST_BPFFS / SUBDIR          # the host's bpffs, seen from a container
    elif _is_bpffs(LOCAL_BPFFS, Path("/proc/self/mountinfo")):
        base = LOCAL_BPFFS / SUBDIR
    elif mount_if_missing:
        _mount_bpffs(LOCAL_BPFFS)
        log.warning("mounted a bpffs at %s: pins there may not outlive this container", LOCAL_BPFFS)
        base = LOCAL_BPFFS / SUBDIR
    else:
        raise PinError("no bpffs mounted (mount -t bpf bpf /sys/fs/bpf)")
    base.mkdir(parents=True, exist_ok=True)
    return base


def object_dir(base: Path, sha256: str) -> Path:
    return base / sha256[:16]


def pinned_dirs(base: Path) -> list[Path]:
    """Object directories under base that hold a pinned link."""
    try:
        return sorted(d for d in base.iterdir() if (d / "link").exists())
    except OSError:
        return []
