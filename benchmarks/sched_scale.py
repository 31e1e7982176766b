#!/usr/bin/env python3
"""Scheduler cost at scale: context switches per second with thousands of runnable tasks,
EEVDF vs this scx_slo vs a previous scx_slo object, side by side in one boot.

Boots the sched_ext VM with 8 vCPUs as 4 sockets x 1 core x 2 SMT threads over 2 NUMA
nodes (4 LLCs), builds the previous object from git (--baseline REV; default the last
commit with one global queue per class), and in the guest runs, per round and policy,
stress-ng's yield stressor with about TASKS processes calling sched_yield() in a loop:
every yield is a trip through the scheduler (enqueue, dispatch, running, stopping) with
the queues thousands deep. Per policy it prints context switches per second (/proc/stat
ctxt), yields per second (stress-ng's bogo-ops: under sched_ext a yield that finds
nothing more deserving goes on without a switch), and for the scx_slo objects struct_ops
callbacks per second, ns per callback and BPF time per yield (kernel.bpf_stats_enabled),
the medians over the rounds. Under TCG absolute rates are the emulator's: read the
ratios. A benchmark, not a test: it asserts nothing.

    .venv/bin/python benchmarks/sched_scale.py [--cpus 8] [--tasks 2048] [--seconds 6]
        [--rounds 2] [--baseline REV] [--kernel 7.3|6.12] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scx_slo.dev.baseline import DEFAULT_REV, GUEST_DIR

GUEST_SELF = "/opt/scx-slo/src/benchmarks/sched_scale.py"
POLICIES = ("eevdf", "scx_slo", "baseline")


# -- host -----------------------------------------------------------------------------------
def run_host(args) -> dict:
    from scx_slo.dev.baseline import build_object
    from scx_slo.dev.vm import Vm

    with tempfile.TemporaryDirectory(prefix="scx-slo-baseline-") as tmp:
        build_object(args.baseline, Path(tmp))
        with Vm(cpus=args.cpus, mem_mb=args.mem, kernel=args.kernel, sockets=args.sockets,
                threads=2, numa_nodes=2, trees={GUEST_DIR: Path(tmp)}) as vm:
            r = vm.run(["python3", GUEST_SELF, "--guest", "--tasks", str(args.tasks),
                        "--seconds", str(args.seconds), "--rounds", str(args.rounds)],
                       timeout=(args.seconds + 60) * 3 * args.rounds + 300)
            if r.returncode != 0:
                raise SystemExit(f"guest run failed ({r.returncode}):\n{r.stderr[-3000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            res["kernel"] = vm.kernel_release
    res["baseline_rev"] = args.baseline
    return res


def report(res: dict) -> str:
    med = res["median"]
    ref = med["eevdf"]
    lines = [f"{res['ncpu']} vCPUs ({res['llcs']} LLCs), {res['tasks']} runnable tasks "
             f"(stress-ng --yield), kernel {res.get('kernel', '?')}, {res['rounds']} round(s) x "
             f"{res['seconds']} s; baseline = {res['baseline_rev']}",
             f"{'policy':<10} {'ctxt/s':>9} {'x EEVDF':>8} {'yields/s':>9} {'x EEVDF':>8} "
             f"{'callbacks/s':>12} {'ns/callback':>12} {'BPF ns/yield':>13}"]
    for name in POLICIES:
        m = med[name]
        opt = lambda k, f: format(m[k], f) if m.get(k) is not None else "-"  # noqa: E731
        lines.append(f"{name:<10} {m['ctxt_per_s']:>9.0f} "
                     f"{m['ctxt_per_s'] / (ref['ctxt_per_s'] or 1):>8.2f} "
                     f"{m['yields_per_s']:>9.0f} {m['yields_per_s'] / (ref['yields_per_s'] or 1):>8.2f} "
                     f"{opt('callbacks_per_s', '.0f'):>12} {opt('ns_per_callback', '.0f'):>12} "
                     f"{opt('bpf_ns_per_yield', '.0f'):>13}")
    new, old = med["scx_slo"], med["baseline"]
    if new.get("bpf_ns_per_yield") and old.get("bpf_ns_per_yield"):
        lines.append(f"scx_slo vs baseline: BPF time per yield "
                     f"{new['bpf_ns_per_yield'] / old['bpf_ns_per_yield']:.2f}x, ns per callback "
                     f"{new['ns_per_callback'] / old['ns_per_callback']:.2f}x, context switches/s "
                     f"{new['ctxt_per_s'] / (old['ctxt_per_s'] or 1):.2f}x, yields/s "
                     f"{new['yields_per_s'] / (old['yields_per_s'] or 1):.2f}x")
    return "\n".join(lines)


# -- guest ----------------------------------------------------------------------------------
BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def ctxt() -> int:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("ctxt "):
            return int(line.split()[1])
    raise RuntimeError("no ctxt line in /proc/stat")


def bpf_totals() -> tuple[int, int]:
    """(run_cnt, run_time_ns) summed over the loaded struct_ops programs."""
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True,
                         check=True).stdout
    progs = [p for p in json.loads(out) if p.get("type") == "struct_ops"]
    return (sum(int(p.get("run_cnt", 0)) for p in progs),
            sum(int(p.get("run_time_ns", 0)) for p in progs))


def one_run(obj: str | None, tasks: int, seconds: float) -> dict:
    from scx_slo.dev.bench.workloads import parse_stress_ng
    from scx_slo.loader.scheduler import Scheduler
    from scx_slo.loader.sysfs import wait_state

    sched = None
    if obj is not None:
        sched = Scheduler.open(obj)
        sched.load()
        sched.attach()
        wait_state("enabled", timeout=30)
    try:
        cg = Path("/sys/fs/cgroup/scale")
        cg.mkdir(exist_ok=True)
        stress = subprocess.Popen(
            ["stress-ng", "--yield", str(max(1, tasks // 2)), "--timeout", f"{int(seconds) + 4}s",
             "--metrics-brief"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=lambda: (cg / "cgroup.procs").write_text("0"))
        time.sleep(2)       # every worker forked and yielding
        nr = len((cg / "cgroup.procs").read_text().split())
        c0, b0, t0 = ctxt(), bpf_totals() if sched else (0, 0), time.monotonic()
        time.sleep(seconds)
        c1, b1, t1 = ctxt(), bpf_totals() if sched else (0, 0), time.monotonic()
        out, _ = stress.communicate(timeout=120)
        metrics = parse_stress_ng(out, "yield") or {}
        state = wait_state("enabled", timeout=1) if sched else "disabled"
    finally:
        if sched is not None:
            sched.detach()
            sched.close()
            wait_state("disabled", timeout=30)
    elapsed = t1 - t0
    res = {"tasks": nr, "ctxt_per_s": (c1 - c0) / elapsed,
           "yields_per_s": metrics.get("bogo_ops_per_s", 0.0), "state": state}
    cnt, ns = b1[0] - b0[0], b1[1] - b0[1]
    if sched is not None and cnt:
        res.update(callbacks_per_s=cnt / elapsed, ns_per_callback=ns / cnt,
                   bpf_ns_per_yield=ns / elapsed / res["yields_per_s"]
                   if res["yields_per_s"] else None)
    return res


def run_guest(args) -> dict:
    from scx_slo import default_object_path
    from scx_slo.loader.topology import Topology

    objects = {"eevdf": None, "scx_slo": str(default_object_path()),
               "baseline": f"{GUEST_DIR}/scx_slo.bpf.o"}
    BPF_STATS.write_text("1")
    runs: dict[str, list[dict]] = {p: [] for p in POLICIES}
    for _ in range(args.rounds):
        for name in POLICIES:
            runs[name].append(one_run(objects[name], args.tasks, args.seconds))
    median = {}
    for name, rs in runs.items():
        keys = {k for r in rs for k, v in r.items() if isinstance(v, (int, float))}
        median[name] = {k: statistics.median(r[k] for r in rs if r.get(k) is not None)
                        for k in keys if any(r.get(k) is not None for r in rs)}
    return {"ncpu": os.cpu_count(), "llcs": len(Topology.read().llcs), "tasks": args.tasks,
            "seconds": args.seconds, "rounds": args.rounds, "runs": runs, "median": median}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--guest", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cpus", type=int, default=8)
    ap.add_argument("--sockets", type=int, default=4)
    ap.add_argument("--mem", type=int, default=4096, help="guest MiB")
    ap.add_argument("--tasks", type=int, default=2048)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--baseline", default=DEFAULT_REV, help="git revision of the previous object")
    ap.add_argument("--kernel", default=None, help="VM kernel (7.3 or 6.12)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.guest:
        print(json.dumps(run_guest(args)))
        return 0
    res = run_host(args)
    print(json.dumps(res) if args.json else report(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
