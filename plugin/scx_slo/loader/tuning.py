"""From settings to the scheduler: its tunables and its class table.

The one place that says how a validated Config becomes .rodata tunables,
struct_ops fields and slo_classes entries; the agent and the benchmark both
load the scheduler through it.
"""
from __future__ import annotations

SLO_MAX_CLASSES = 8          # slo_classes max_entries in bpf/scx_slo.bpf.c
_UNUSED = {"budget_ns": 0, "slice_ns": 0, "latency_critical": 0, "weight": 0,
           "miss_threshold_ns": 0}


def tune(sched, sc) -> None:
    """Set the [scheduler] settings SC on an opened, not yet loaded Scheduler."""
    timeout_ms = max(1, sc.watchdog_timeout_ns // 1_000_000)
    sched.set_tunables(slice_ns=sc.slice_ns, batch_floor_pct=sc.batch_floor_pct,
                       timeout_ms=timeout_ms)
    sched.set_ops(timeout_ms=timeout_ms)


def class_configs(config) -> dict[int, dict]:
    """slo_classes entries for every class id; ids the config does not use are zeroed."""
    out = {i: dict(_UNUSED) for i in range(SLO_MAX_CLASSES)}
    for c in config.classes:
        out[c.id] = {"budget_ns": c.budget_ns or 0, "slice_ns": c.slice_ns,
                     "latency_critical": int(c.latency_critical), "weight": c.weight,
                     "miss_threshold_ns": c.miss_threshold_ns or 0}
    return out
