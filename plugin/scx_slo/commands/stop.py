"""`scx-slo stop`: detach the scheduler and remove its pins (always)."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pin-dir", default=None, help="bpffs directory the agent pins under")


def run(args) -> int:
    from scx_slo.loader import pins
    from scx_slo.loader.scheduler import Scheduler
    from scx_slo.loader.sysfs import attached_ops, wait_state

    base = pins.base_dir(args.pin_dir, mount_if_missing=False)
    dirs = pins.pinned_dirs(base)
    for d in dirs:
        with Scheduler.adopt(d) as s:
            s.detach()
            s.unpin()
        print(f"detached and unpinned {d}")
    ops = attached_ops()
    if ops == "scx_slo":
        state = wait_state("disabled", timeout=5)
        if state != "disabled":
            print(f"scx_slo is still attached but not pinned under {base}: "
                  "its agent holds it; stop that agent (SIGTERM)")
            return 1
    if not dirs:
        print(f"nothing pinned under {base}" + (f"; attached: {ops}" if ops else ""))
    return 0
