"""`scx-slo status [--json]`: the attached scheduler, classes, pods and latency, from any process."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scx_slo.settings.store import DEFAULT_STATE_DIR

    p.add_argument("--json", action="store_true")
    p.add_argument("--pin-dir", default=None, help="bpffs directory the agent pins under")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    p.epilog = "exit status: 0 scx_slo attached, 1 not attached"


def collect(pin_dir: str | None, state_dir: str) -> dict:
    from scx_slo.loader import pins
    from scx_slo.agent.loop import STATUS_FILE
    from scx_slo.agent.histogram import percentile
    from scx_slo.loader.scheduler import Scheduler
    from scx_slo.loader.sysfs import attached_ops, sched_ext_state

    out = {"state": sched_ext_state(), "ops": attached_ops(), "attached": attached_ops() == "scx_slo",
           "pinned": [], "classes": [], "agent": None}
    try:
        out["agent"] = json.loads((Path(state_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        pass
    names = {c["id"]: c for c in (out["agent"] or {}).get("classes", [])}
    try:
        base = pins.base_dir(pin_dir, mount_if_missing=False)
    except pins.PinError:
        return out
    dirs = pins.pinned_dirs(base)
    out["pinned"] = [str(d) for d in dirs]
    if not dirs:
        return out
    with Scheduler.adopt(dirs[-1]) as s:
        entries = list(s.typed("slo_cgroups").items())
        cfgs = {i: s.typed("slo_classes").lookup(i) for i in range(8)}
        for class_id, cfg in cfgs.items():
            st = s.stats(class_id)
            known = names.get(class_id)
            if known is None and class_id != 0 and not any(cfg.values()):
                continue
            out["classes"].append({
                "id": class_id, "name": known["name"] if known else ("default" if class_id == 0 else f"class{class_id}"),
                "latency_critical": bool(cfg["latency_critical"]),
                "cgroups": sum(1 for _, v in entries if v["class_id"] == class_id),
                "pods": known["pods"] if known else None,
                "wakeups": st["nr_wakeups"], "misses": st["nr_misses"], "preempts": st["nr_preempts"],
                "p50_ns": percentile(st["lat_hist"], 0.5), "p99_ns": percentile(st["lat_hist"], 0.99),
                "histogram": st["lat_hist"],
            })
        out["exit"] = s.exit_info()
    return out


def run(args) -> int:
    from scx_slo.agent.histogram import fmt_ns

    st = collect(args.pin_dir, args.state_dir)
    if args.json:
        print(json.dumps(st, indent=2, default=str))
        return 0 if st["attached"] else 1
    print(f"sched_ext: {st['state']}" + (f", ops {st['ops']}" if st["ops"] else ""))
    for d in st["pinned"]:
        print(f"pinned: {d}")
    if st["agent"] and st["agent"].get("given_up"):
        print("AGENT GAVE UP: the scheduler kept exiting; the kernel's default scheduler is in use")
    for c in st["classes"]:
        print(f"class {c['name']:12} cgroups={c['cgroups']:<5} wakeups={c['wakeups']:<9} "
              f"p50={fmt_ns(c['p50_ns']):>8} p99={fmt_ns(c['p99_ns']):>8} "
              f"misses={c['misses']} preempts={c['preempts']}")
    return 0 if st["attached"] else 1
