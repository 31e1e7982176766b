"""cpu.max for kernels whose sched_ext does not pass it to the scheduler (before 6.17).

Linux 6.17 added `sched_ext_ops.cgroup_set_bandwidth` (and cpu.max in
`cgroup_init`'s arguments). Before it, a sched_ext scheduler learns a cgroup's
cpu.max only from user space: `BandwidthFeed.sync()` reads `cpu.max` and
`cpu.max.burst` from cgroupfs and writes what changed into the scheduler's
`slo_cg_bw` map (cgroup id -> period, quota, burst, seq), then bumps
`slo_gen`; the scheduler applies an entry when a task of that cgroup next
resolves its class. From there on enforcement is the same as on 6.17+.
"""
from __future__ import annotations

import logging
import os
import time

from scx_slo.loader.btf import Kind
from scx_slo.agent.cgroups import CgroupError, cgroup_id
from scx_slo.loader.gate import DEFAULT_KERNEL_BTF, STRUCT_OPS_TYPE, load_kernel_btf

log = logging.getLogger(__name__)

QUOTA_MAX = (1 << 64) - 1       # cpu.max "max", as the kernel passes it
BANDWIDTH_CALLBACK = "cgroup_set_bandwidth"


def kernel_passes_cpu_max(path=DEFAULT_KERNEL_BTF) -> bool:
    """Does this kernel's sched_ext hand cpu.max to the scheduler itself?"""
    ops = load_kernel_btf(path).find(STRUCT_OPS_TYPE, Kind.STRUCT)
    return ops is not None and any(m.name == BANDWIDTH_CALLBACK for m in ops.members)


def read_cpu_max(path: str | os.PathLike) -> tuple[int, int, int]:
    """(period_us, quota_us, burst_us) of the cgroup directory PATH; quota QUOTA_MAX = "max"."""
    f = os.path.join(path, "cpu.max")
    try:
        with open(f) as fh:
            quota, period = fh.read().split()
        quota_us = QUOTA_MAX if quota == "max" else int(quota)
        period_us = int(period)
    except (OSError, ValueError) as e:
        raise CgroupError(f"{f}: cannot read cpu.max: {e}") from None
    burst_us = 0
    try:
        with open(os.path.join(path, "cpu.max.burst")) as fh:
            burst_us = int(fh.read().strip())
    except FileNotFoundError:
        pass        # kernels without CFS burst support
    except (OSError, ValueError) as e:
        raise CgroupError(f"{path}/cpu.max.burst: cannot read: {e}") from None
    return period_us, quota_us, burst_us


def walk(root: str | os.PathLike) -> list[str]:
    """ROOT and every cgroup directory below it (a cgroup that vanishes is skipped)."""
    out = []
    for dirpath, _dirs, files in os.walk(root):
        if "cpu.max" in files:
            out.append(dirpath)
    return out


class BandwidthFeed:
    """Keeps the scheduler's slo_cg_bw equal to cpu.max of the cgroups it is given."""

    def __init__(self, sched):
        self.sched = sched
        self.map = sched.typed("slo_cg_bw")
        # an adopted scheduler: what an earlier agent fed is in the map already
        self.fed = {cgid: (v["period_us"], v["quota_us"], v["burst_us"])
                    for cgid, v in self.map.items()}

    def sync(self, paths) -> int:
        """Feed cpu.max of PATHS, forget cgroups no longer among them; entries changed."""
        want: dict[int, tuple[int, int, int]] = {}
        for path in paths:
            try:
                want[cgroup_id(path)] = read_cpu_max(path)
            except (CgroupError, OSError) as e:
                log.debug("cpu.max of %s not fed: %s", path, e)   # removed meanwhile
        changed = 0
        for cgid, (period, quota, burst) in want.items():
            if self.fed.get(cgid) == (period, quota, burst):
                continue
            self.map.update(cgid, {"period_us": period, "quota_us": quota, "burst_us": burst,
                                   "seq": time.monotonic_ns()})
            self.fed[cgid] = (period, quota, burst)
            changed += 1
        for cgid in [c for c in self.fed if c not in want]:
            self.map.delete(cgid)
            del self.fed[cgid]
            changed += 1
        if changed:
            self.sched.bump_generation()
        return changed
