"""`scx-slo bench --scenario shares`: the CPU each pod of a Kubernetes cgroup tree
gets under EEVDF and under scx_slo, in one boot, side by side.

Every pod runs CPU hogs in one container (weighted, as the kubelet weights it, by
the container's request, which is the pod's), so the CPU is saturated and each pod
takes what the policy gives it. Phases:

  burstable  Burstable 500m (1 thread per vCPU) vs Burstable 2 CPU (16 per vCPU):
             the two share the burstable slice 20:79, whatever their thread counts.
  qos        the same two, plus a Guaranteed 2 CPU pod (1 thread per vCPU) and a
             BestEffort pod (1 thread per vCPU): the burstable slice carries 2.5 CPU
             of requests against the Guaranteed pod's 2; BestEffort gets a sliver.
  critical   the 500m pod (4 threads per vCPU) in a latency-critical class vs the
             2 CPU pod: served first only up to its share, it must still get what
             EEVDF gives it and no more.

A pod's share is its cpu.stat usage over the phase's total. Target, printed, not
asserted here: every pod EEVDF gives at least MIN_SHARE gets within 10% of that
under scx_slo; a pod with less (BestEffort) must get something and little.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

from scx_slo.dev.bench.pods import Node, Pod, PodError, usage_usec
from scx_slo.dev.bench.workloads import stress_ng_argv
from scx_slo.loader.sysfs import sched_ext_state

TOLERANCE = 0.10
MIN_SHARE = 0.05        # below this EEVDF's share is a sliver: no ratio is meaningful
SLIVER_MAX = 0.02
POLICIES = ("eevdf", "scx_slo")


@dataclass(frozen=True)
class PodSpec:
    name: str
    qos: str
    millicpu: int | None
    threads_per_cpu: int
    critical: bool = False


@dataclass(frozen=True)
class Phase:
    name: str
    title: str
    pods: tuple[PodSpec, ...]


_A = PodSpec("a", "burstable", 500, 1)
_B = PodSpec("b", "burstable", 2000, 16)
PHASES: tuple[Phase, ...] = (
    Phase("burstable", "Burstable 500m (1 thread) vs Burstable 2 CPU (16 threads)", (_A, _B)),
    Phase("qos", "... plus Guaranteed 2 CPU (1 thread) and BestEffort (1 thread)",
          (_A, _B, PodSpec("g", "guaranteed", 2000, 1), PodSpec("e", "besteffort", None, 1))),
    Phase("critical", "Burstable 500m latency-critical (4 threads) vs Burstable 2 CPU",
          (PodSpec("a", "burstable", 500, 4, critical=True), _B)),
)


def run_phase(phase: Phase, policy: str, seconds: float, warmup_s: float,
              log: Callable[[str], None]) -> dict:
    from scx_slo.dev.bench.runner import ScxRun

    ncpu = os.cpu_count() or 1
    pods = {s.name: Pod(s.name, s.qos, s.millicpu) for s in phase.pods}
    node = Node(list(pods.values()), kubelet_weights=True)
    procs, scx = [], None
    out: dict = {}
    try:
        node.create()
        if policy == "scx_slo":
            critical = [pods[s.name] for s in phase.pods if s.critical]
            scx = ScxRun(node, critical[0] if critical else None, log)
            scx.start()
        for s in phase.pods:
            n = s.threads_per_cpu * ncpu
            procs.append(node.spawn(pods[s.name], "hogs",
                                    stress_ng_argv(n, warmup_s + seconds + 30),
                                    millicpu=s.millicpu or 0))
        time.sleep(warmup_s)
        u0 = {k: usage_usec(p.path) for k, p in pods.items()}
        time.sleep(seconds)
        used = {k: usage_usec(p.path) - u0[k] for k, p in pods.items()}
        total = max(sum(used.values()), 1)
        out = {"share": {k: v / total for k, v in used.items()}, "usage_us": used,
               "weights": {k: int((p.path / "cpu.weight").read_text()) for k, p in pods.items()}}
        if scx:
            out["state"] = sched_ext_state()
            got = scx.collect()
            out["counters"] = got["counters"]
            out["exit_kind"] = got["exit_kind"]
            out["exit_reason"] = got["exit_reason"]
        return out
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=60)
        if scx:
            out["state_after"] = scx.stop()
        try:
            node.remove()
        except PodError as e:
            log(f"warning: {e}")


def run_all(seconds: float, warmup_s: float = 1.5,
            log: Callable[[str], None] = print) -> dict:
    """Every phase under both policies; the result document (analyze() adds ratios)."""
    doc = {"scenario": "shares", "version": 1, "kernel": os.uname().release,
           "ncpu": os.cpu_count() or 1, "seconds": seconds,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "phases": {}}
    for phase in PHASES:
        res = doc["phases"][phase.name] = {"title": phase.title,
                                           "pods": [asdict(s) for s in phase.pods]}
        for policy in POLICIES:
            log(f"shares: {phase.name} under {policy}: {seconds:g} s")
            res[policy] = run_phase(phase, policy, seconds, warmup_s, log)
    return doc


def analyze(doc: dict) -> dict:
    """Per pod: the ratio of scx_slo's share to EEVDF's and whether the target holds."""
    for res in doc["phases"].values():
        eevdf, scx = res["eevdf"]["share"], res["scx_slo"]["share"]
        res["pods_result"] = {}
        for pod, want in eevdf.items():
            got = scx[pod]
            if want >= MIN_SHARE:
                ratio = got / want
                ok = abs(ratio - 1) <= TOLERANCE
                target = f"within {TOLERANCE:.0%} of EEVDF"
            else:
                ratio = None
                ok = 0 < got < SLIVER_MAX
                target = f"a sliver (0 < share < {SLIVER_MAX})"
            res["pods_result"][pod] = {"eevdf": want, "scx_slo": got, "ratio": ratio,
                                       "target": target, "met": ok}
    doc["all_met"] = all(r["met"] for res in doc["phases"].values()
                         for r in res["pods_result"].values())
    return doc


def markdown(doc: dict) -> str:
    lines = [f"# scx-slo bench: CPU shares ({doc['kernel']}, {doc['ncpu']} vCPU, "
             f"{doc['seconds']:g} s per phase and policy)", "",
             "| phase | pod | QoS, request | threads | EEVDF | scx_slo | ratio | target |",
             "|---|---|---|---|---|---|---|---|"]
    for name, res in doc["phases"].items():
        specs = {p["name"]: p for p in res["pods"]}
        for pod, r in res["pods_result"].items():
            s = specs[pod]
            req = f"{s['millicpu']}m" if s["millicpu"] else "none"
            qos = s["qos"] + (", latency-critical" if s["critical"] else "")
            ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
            lines.append(f"| {name} | {pod} | {qos}, {req} | {s['threads_per_cpu']}/vCPU | "
                         f"{r['eevdf']:.3f} | {r['scx_slo']:.3f} | {ratio} | "
                         f"{'PASS' if r['met'] else 'FAIL'}: {r['target']} |")
    crit = doc["phases"].get("critical", {}).get("scx_slo", {}).get("counters", {})
    if crit:
        lines += ["", f"critical phase: {crit.get('nr_over_share', 0)} latency-critical "
                      f"enqueues were served by weight (the pod was over its share), "
                      f"{crit.get('nr_preempts', 0)} preemptions for it."]
    lines += ["", f"All targets met: {'yes' if doc['all_met'] else 'no'}.", ""]
    return "\n".join(lines)
