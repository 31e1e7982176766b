"""The kernel's sched_ext state as sysfs shows it: /sys/kernel/sched_ext/state, the
attached scheduler's ops name, and the names of the exit kinds a scheduler leaves with
(enum scx_exit_kind, include/linux/sched/ext.h)."""
from __future__ import annotations

import time
from pathlib import Path

SCX = Path("/sys/kernel/sched_ext")
STATE_PATH = SCX / "state"
OPS_PATH = SCX / "root" / "ops"
EXIT_KINDS = {0: "none", 1: "done", 64: "unregistered", 65: "unregistered (bpf)",
              66: "unregistered (kernel)", 67: "sysrq", 1024: "error", 1025: "error (bpf)",
              1026: "stall", 1027: "error (reenqueue)"}


def sched_ext_state() -> str:
    """The kernel's sched_ext state ('enabled', 'disabled', ...), or 'unsupported'."""
    try:
        return STATE_PATH.read_text().strip()
    except OSError:
        return "unsupported"


def wait_state(want: str, timeout: float = 10.0) -> str:
    """Poll the sched_ext state until it is `want` or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    state = sched_ext_state()
    while state != want and time.monotonic() < deadline:
        time.sleep(0.05)
        state = sched_ext_state()
    return state


def attached_ops() -> str | None:
    """The ops name of the attached sched_ext scheduler, or None."""
    if sched_ext_state() != "enabled":
        return None
    try:
        return OPS_PATH.read_text().strip()
    except OSError:
        return None


def exit_kind(kind: int) -> str:
    return EXIT_KINDS.get(kind, f"kind {kind}")
