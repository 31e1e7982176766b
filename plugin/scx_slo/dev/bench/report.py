"""From the guest's raw results to figures, targets, a markdown table and a summary.

analyze(doc) adds doc["figures"] (per configuration) and doc["targets"]; it is
pure, so the host recomputes it from the JSON whenever it reports.

Targets, printed as measured ratios, never asserted:
  probe_vs_idle     scx_slo's wakeup p99 under load <= 1.2x its idle p99
  noload_vs_idle    scx_slo's wakeup p99 attached with no batch <= 1.2x the idle p99
  probe_vs_eevdf    scx_slo's wakeup p99 <= the best EEVDF configuration's under load
  request_excess    scx_slo's request p99 above the designed delay <= 10 % of the delay
  batch_throughput  batch bogo-ops/s under scx_slo >= 95 % of EEVDF's (every weight 100)
  bpf_vs_baseline   BPF time per critical wakeup under scx_slo <= half the baseline
                    object's (with --baseline)
"""
from __future__ import annotations

from scx_slo.dev.bench import stats

EEVDF_LOADED = ("eevdf_default", "eevdf_kubelet_besteffort", "eevdf_kubelet_burstable",
                "eevdf_batch_idle")
BATCH_REFERENCE = "eevdf_default"
SCX = "scx_slo"
SCX_NOLOAD = "scx_slo_noload"
SCX_BASELINE = "scx_slo_baseline"
IDLE = "idle"


def figures(cfg: dict, doc: dict) -> dict:
    delay = cfg["requests"]["delay_s"]
    target_s = doc["p99_target_ns"] / 1e9
    miss_s = target_s / 10  # the class's miss threshold (settings: p99 / 10)
    lat = cfg["requests"]["latency_s"]
    excess = [max(0.0, x - delay) for x in lat]
    req = stats.summarize(lat)
    exc = stats.summarize(excess)
    w = cfg["wakeup_us"]
    f = {
        "request_ms": {k: (v * 1e3 if v is not None and k != "n" else v)
                       for k, v in req.items()},
        "request_excess_ms": {k: (v * 1e3 if v is not None and k != "n" else v)
                              for k, v in exc.items()},
        "requests_unfinished": cfg["requests"]["unfinished"],
        "requests_errors": cfg["requests"]["errors"],
        "wakeup_us": {"n": w["n"], "p50": w["p50"], "p99": w["p99"], "max": w["max"]},
        "client_over_target": sum(1 for x in lat if x > target_s),
        "client_excess_over_miss_threshold": sum(1 for x in excess if x > miss_s),
        "sched_ext_state": cfg.get("sched_ext_state"),
        "batch_cpu_share": cfg.get("batch_cpu_share"),
        "batch_cpu_of_available": cfg.get("batch_cpu_of_available"),
        "batch_bogo_ops_per_s": (cfg.get("batch") or {}).get("bogo_ops_per_s"),
    }
    scx = cfg.get("scx")
    if scx:
        f["scheduler_misses"] = scx["counters"].get("nr_misses")
        f["scheduler_wakeups"] = scx["counters"].get("nr_wakeups")
        f["scheduler_preempts"] = scx["counters"].get("nr_preempts")
        f["bpf_avg_ns_per_callback"] = scx["bpf"].get("avg_ns")
        f["bpf_run_cnt"] = scx["bpf"].get("run_cnt")
        wakeups = scx["counters"].get("nr_wakeups")
        # every callback since attach, per critical wakeup in the same time: what a probe
        # wakeup costs the machine in BPF, batch's share included
        f["bpf_ns_per_critical_wakeup"] = stats.ratio(scx["bpf"].get("run_time_ns"), wakeups)
        f["bpf_callbacks_per_s"] = stats.ratio(scx["bpf"].get("run_cnt"), scx.get("attached_s"))
        f["scx_exit_kind"] = scx.get("exit_kind")
    return f


def analyze(doc: dict) -> dict:
    configs = doc["configs"]
    figs = {name: figures(cfg, doc) for name, cfg in configs.items()}
    ref = figs.get(BATCH_REFERENCE, {}).get("batch_bogo_ops_per_s")
    for f in figs.values():
        f["batch_ratio_to_eevdf"] = stats.ratio(f["batch_bogo_ops_per_s"], ref)
    doc["figures"] = figs
    doc["targets"] = targets(figs, doc)
    return doc


def _target(name: str, what: str, measured: float | None, limit: float, higher_ok: bool,
            detail: str) -> dict:
    if measured is None:
        ok = None
    else:
        ok = measured >= limit if higher_ok else measured <= limit
    return {"name": name, "what": what, "measured": measured, "limit": limit,
            "pass": ok, "detail": detail}


def targets(figs: dict, doc: dict) -> list[dict]:
    scx, idle = figs.get(SCX), figs.get(IDLE)
    idle_p99 = idle["wakeup_us"]["p99"] if idle else None
    out = []
    noload = figs.get(SCX_NOLOAD)
    if noload is not None:
        q99 = noload["wakeup_us"]["p99"]
        out.append(_target("noload_vs_idle",
                           "scx_slo wakeup p99 with no load / idle wakeup p99",
                           stats.ratio(q99, idle_p99), 1.2, False,
                           f"{q99:.0f} us vs idle {idle_p99:.0f} us" if idle_p99
                           else "no idle run"))
    if scx is None:
        return out
    p99 = scx["wakeup_us"]["p99"]
    out.insert(0, _target("probe_vs_idle", "scx_slo wakeup p99 under load / idle wakeup p99",
                          stats.ratio(p99, idle_p99), 1.2, False,
                          f"{p99:.0f} us vs idle {idle_p99:.0f} us" if idle_p99
                          else "no idle run"))
    loaded = {n: figs[n]["wakeup_us"]["p99"] for n in EEVDF_LOADED if n in figs}
    if loaded:
        best = min(loaded, key=loaded.get)
        out.append(_target("probe_vs_eevdf",
                           "scx_slo wakeup p99 / best EEVDF wakeup p99 under load",
                           stats.ratio(p99, loaded[best]), 1.0, False,
                           f"{p99:.0f} us vs {best} {loaded[best]:.0f} us"))
    delay_ms = doc["params"]["delay_s"] * 1e3
    exc = scx["request_excess_ms"]["p99"]
    out.append(_target("request_excess", "scx_slo request p99 above the designed delay / delay",
                       stats.ratio(exc, delay_ms), 0.10, False,
                       f"{exc:.1f} ms above the {delay_ms:g} ms delay"))
    out.append(_target("batch_throughput", "scx_slo batch bogo-ops/s / EEVDF's",
                       scx.get("batch_ratio_to_eevdf"), 0.95, True,
                       f"{scx.get('batch_bogo_ops_per_s') or 0:.1f} vs "
                       f"{figs.get(BATCH_REFERENCE, {}).get('batch_bogo_ops_per_s') or 0:.1f} "
                       f"bogo-ops/s ({BATCH_REFERENCE})"))
    base = figs.get(SCX_BASELINE)
    if base is not None:
        now, then = scx.get("bpf_ns_per_critical_wakeup"), base.get("bpf_ns_per_critical_wakeup")
        out.append(_target("bpf_vs_baseline",
                           "scx_slo BPF time per critical wakeup / the baseline object's",
                           stats.ratio(now, then), 0.5, False,
                           f"{_n(now)} vs {_n(then)} ns ({doc.get('baseline_rev', 'baseline')})"))
    return out


def _n(v, fmt: str = "{:.0f}", none: str = "-") -> str:
    return none if v is None else fmt.format(v)


def markdown(doc: dict) -> str:
    figs = doc["figures"]
    p = doc["params"]
    lines = [f"scx-slo bench: kernel {doc['kernel']}, {doc['ncpu']} CPU"
             f"{' (' + doc['accel'] + ')' if doc.get('accel') else ''}; "
             f"{p['measure_s']:g} s per configuration; {p['rate_hz']:g} req/s open loop to "
             f"/delay/{p['delay_s']:g} (class p99 target {doc['p99_target_ns'] / 1e6:g} ms); "
             f"{p['hogs_per_cpu']}x CPUs stress-ng hogs; wakeup probe sleeps "
             f"{p['probe_period_us']} us.", "",
             "| configuration | req p50 ms | req p99 ms | req p99.9 ms | p99 above delay ms "
             "| wakeup p50 us | wakeup p99 us | wakeup max us | batch ops/s (x EEVDF) "
             "| batch CPU | misses client / sched | BPF callbacks/s | BPF ns/callback "
             "| BPF us/critical wakeup | sched_ext |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, f in figs.items():
        r, e, w = f["request_ms"], f["request_excess_ms"], f["wakeup_us"]
        batch = "-"
        if f["batch_bogo_ops_per_s"] is not None:
            batch = (f"{f['batch_bogo_ops_per_s']:.1f} "
                     f"({_n(f['batch_ratio_to_eevdf'], '{:.2f}', '?')}x)")
        sched_miss = _n(f.get("scheduler_misses"), "{}")
        lines.append(
            f"| {name} | {_n(r['p50'], '{:.1f}')} | {_n(r['p99'], '{:.1f}')} "
            f"| {_n(r['p99.9'], '{:.1f}')} | {_n(e['p99'], '{:.1f}')} | {_n(w['p50'])} "
            f"| {_n(w['p99'])} | {_n(w['max'])} | {batch} "
            f"| {_n(f['batch_cpu_share'], '{:.0%}')} "
            f"| {f['client_excess_over_miss_threshold']} / {sched_miss} "
            f"| {_n(f.get('bpf_callbacks_per_s'))} | {_n(f.get('bpf_avg_ns_per_callback'))} "
            f"| {_n(_scaled(f.get('bpf_ns_per_critical_wakeup'), 1e-3), '{:.1f}')} "
            f"| {f['sched_ext_state']} |")
    lines += ["", "Client misses: requests more than p99/10 (the class's miss threshold) above "
              "the designed delay; scheduler misses: wakeups of the critical class that waited "
              "longer than its miss threshold to run (scx_slo's own counter).", "",
              "Targets (scx_slo; measured, not asserted):", ""]
    lines += [target_line(t) for t in doc["targets"]]
    return "\n".join(lines) + "\n"


def _scaled(v, k):
    return None if v is None else v * k


def target_line(t: dict) -> str:
    verdict = {True: "PASS", False: "FAIL", None: "n/a "}[t["pass"]]
    cmp_ = ">=" if t["name"] == "batch_throughput" else "<="
    measured = _n(t["measured"], "{:.2f}", "?")
    return f"- {verdict} {t['what']}: {measured} ({cmp_} {t['limit']:g}); {t['detail']}"


def summary(doc: dict) -> str:
    """A few sentences for `scx-slo demo`."""
    figs = doc["figures"]
    delay_ms = doc["params"]["delay_s"] * 1e3
    out = []
    idle = figs.get(IDLE)
    if idle:
        out.append(f"Alone on the node, the critical pod's requests (designed to take "
                   f"{delay_ms:g} ms) finish at p99 {idle['request_ms']['p99']:.0f} ms and its "
                   f"threads wake up within {idle['wakeup_us']['p99']:.0f} us (p99).")
    worst = max((n for n in EEVDF_LOADED if n in figs),
                key=lambda n: figs[n]["wakeup_us"]["p99"], default=None)
    if worst:
        w = figs[worst]
        out.append(f"With {doc['params']['hogs_per_cpu']}x-oversubscribed batch hogs, the "
                   f"kernel's EEVDF at its worst here ({worst}) gives request p99 "
                   f"{w['request_ms']['p99']:.0f} ms and wakeup p99 "
                   f"{w['wakeup_us']['p99']:.0f} us.")
    scx = figs.get(SCX)
    if scx:
        out.append(f"With scx_slo: request p99 {scx['request_ms']['p99']:.0f} ms "
                   f"({scx['request_excess_ms']['p99']:.1f} ms above the designed delay), "
                   f"wakeup p99 {scx['wakeup_us']['p99']:.0f} us, while batch keeps "
                   f"{_n(scx['batch_ratio_to_eevdf'], '{:.0%}', '?')} of its EEVDF throughput; "
                   f"BPF cost {_n(scx.get('bpf_avg_ns_per_callback'))} ns per callback.")
    met = [t for t in doc["targets"] if t["pass"]]
    out.append(f"Targets met: {len(met)}/{len(doc['targets'])}.")
    return "\n".join(out)
