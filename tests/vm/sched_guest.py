#!/usr/bin/env python3
"""Guest-side scenarios for the scx_slo scheduler; each prints one JSON object.

Runs inside the test VM (root, cgroup2 at /sys/fs/cgroup, bpftool, stress-ng).
The scheduler is registered by scx_slo's loader with its defaults (it leaves
out callbacks the kernel lacks; `bpftool struct_ops register` refuses the
object on 6.12) and pinned under PIN; its maps are filled and read with
`bpftool map`, so the scenarios test the BPF object, not the agent.

    python3 sched_guest.py load-unload
    python3 sched_guest.py saturation --seconds 20 --oversub 8
    python3 sched_guest.py weights --seconds 12
    python3 sched_guest.py floor --seconds 10
    python3 sched_guest.py genchurn --seconds 20
    python3 sched_guest.py move
    python3 sched_guest.py shares --seconds 6
    python3 sched_guest.py bench --seconds 8 --hogs 4 --rounds 3
    python3 sched_guest.py topology --seconds 4
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

OBJ = os.environ.get("SCX_SLO_OBJ", "/opt/scx-slo/src/plugin/scx_slo/data/scx_slo.bpf.o")
PIN = "/sys/fs/bpf/scx_slo_test"
CG_ROOT = Path("/sys/fs/cgroup")
SCX = Path("/sys/kernel/sched_ext")

LAT_CLASS = 1
NR_HIST = 32
STAT_FIELDS = ["nr_wakeups", "nr_misses", "nr_preempts", "nr_direct", "nr_floor_boosts",
               "nr_fallbacks", "nr_kthread_local", "nr_starve_rescues", "nr_class_errors",
               "nr_enqueues", "run_ns", "nr_throttled", "nr_over_share", "nr_miss_drops",
               "nr_preempt_llc", "nr_preempt_node", "nr_preempt_far", "nr_steals",
               "nr_balances"]
EXIT_FMT = "<qq128s1024s"


# -- the scheduler -------------------------------------------------------------------------
def sh(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(argv, capture_output=True, text=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip()[-2000:]}")
    return r


def scx_state() -> str:
    return (SCX / "state").read_text().strip()


def scx_ops() -> str:
    p = SCX / "root" / "ops"
    return p.read_text().strip() if p.exists() else ""


def load(**tunables: int) -> None:
    from scx_slo.loader.scheduler import Scheduler

    if os.path.exists(PIN):
        unload()
    with Scheduler.open(OBJ, pin_dir=PIN) as s:
        if tunables:
            s.set_tunables(**tunables)
        s.load()
        s.attach()
        s.pin()     # the link, the maps and the cpu.max timer's map outlive this handle
    for _ in range(100):
        if scx_state() == "enabled":
            return
        time.sleep(0.05)


def unload() -> str:
    shutil.rmtree(PIN, ignore_errors=True)
    if os.path.exists(PIN):
        os.unlink(PIN)
    for _ in range(100):
        if scx_state() == "disabled":
            break
        time.sleep(0.05)
    return scx_state()


def _hexbytes(b: bytes) -> list[str]:
    return [f"{x:02x}" for x in b]


def map_update(name: str, key: bytes, value: bytes) -> None:
    sh(["bpftool", "map", "update", "name", name, "key", "hex", *_hexbytes(key),
        "value", "hex", *_hexbytes(value)])


def set_class(class_id: int, budget_ns: int, slice_ns: int, latency_critical: bool,
              weight: int = 100, miss_threshold_ns: int = 0) -> None:
    map_update("slo_classes", struct.pack("<I", class_id),
               struct.pack("<QQIIQ", budget_ns, slice_ns, int(latency_critical), weight,
                           miss_threshold_ns))


def bump_gen() -> None:
    r = json.loads(sh(["bpftool", "-j", "map", "lookup", "name", "slo_gen", "key", "hex",
                       "00", "00", "00", "00"]).stdout)
    cur = struct.unpack("<Q", bytes(int(x, 16) for x in r["value"]))[0]
    map_update("slo_gen", struct.pack("<I", 0), struct.pack("<Q", cur + 1))


def set_cgroup_class(cg: Path, class_id: int) -> None:
    map_update("slo_cgroups", struct.pack("<Q", cg.stat().st_ino), struct.pack("<II", class_id, 0))
    bump_gen()


def read_stats() -> dict[int, dict]:
    """slo_stats summed over CPUs: {class: {lat_hist: [...], nr_wakeups: ..., ...}}."""
    dump = json.loads(sh(["bpftool", "-j", "map", "dump", "name", "slo_stats"]).stdout)
    nfields = NR_HIST + len(STAT_FIELDS)
    out = {}
    for ent in dump:
        key = struct.unpack("<I", bytes(int(x, 16) for x in ent["key"]))[0]
        tot = [0] * nfields
        for v in ent["values"]:
            raw = bytes(int(x, 16) for x in v["value"])
            n = min(nfields, len(raw) // 8)     # an older object (a baseline) has fewer
            vals = struct.unpack(f"<{n}Q", raw[:8 * n])
            tot = [a + b for a, b in zip(tot, vals)]
            tot = tot[:n]
        d = {"lat_hist": tot[:NR_HIST]}
        d.update(zip(STAT_FIELDS, tot[NR_HIST:]))
        out[key] = d
    return out


def read_exit() -> dict:
    dump = json.loads(sh(["bpftool", "-j", "map", "dump", "name", "slo_exit"]).stdout)
    raw = bytes(int(x, 16) for x in dump[0]["value"])
    kind, code, reason, msg = struct.unpack(EXIT_FMT, raw[:struct.calcsize(EXIT_FMT)])
    return {"kind": kind, "exit_code": code,
            "reason": reason.split(b"\0")[0].decode(errors="replace"),
            "msg": msg.split(b"\0")[0].decode(errors="replace")}


def cg_info(cg: Path) -> dict:
    """The scheduler's view of a cgroup (internal maps: slo_cg_slot names its slot in
    slo_cg_info): weight, runnable tasks, activity."""
    def lookup(name: str, key: bytes):
        r = sh(["bpftool", "-j", "map", "lookup", "name", name, "key", "hex", *_hexbytes(key)],
               check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    slot = lookup("slo_cg_slot", struct.pack("<Q", cg.stat().st_ino))
    if slot is None:
        return {}
    x = (slot["formatted"]["value"] if "formatted" in slot
         else struct.unpack("<I", bytes(int(b, 16) for b in slot["value"]))[0])
    entry = lookup("slo_cg_info", struct.pack("<I", x - 1))
    if entry is None:
        return {}
    if "formatted" in entry:        # bpftool lays the value out from the map's BTF
        return entry["formatted"]["value"]
    raw = bytes(int(b, 16) for b in entry["value"])
    _id, _parent, weight, nr = struct.unpack("<QIIi", raw[:20])
    return {"weight": weight, "nr_runnable": nr}


def read_bss() -> dict:
    """The scheduler's .bss globals (diagnostics), from bpftool's BTF-formatted dump."""
    r = sh(["bpftool", "-j", "map", "dump", "name", "scx_slo.bss"], check=False)
    if r.returncode != 0:
        return {}
    out = {}
    for d in json.loads(r.stdout)[0].get("formatted", {}).get("value", {}).get(".bss", []):
        out.update(d)
    return out


def hist_percentile(hist: list[int], q: float) -> int:
    """Upper bound (ns) of the log2 bucket holding the q-quantile."""
    total = sum(hist)
    if not total:
        return 0
    acc = 0
    for i, n in enumerate(hist):
        acc += n
        if acc >= q * total:
            return 2 ** (i + 1)
    return 2 ** NR_HIST


# -- cgroups and processes ----------------------------------------------------------------
def cg_make(name: str, weight: int | None = None, idle: bool = False) -> Path:
    cg = CG_ROOT / name
    cg.mkdir(exist_ok=True)
    if weight is not None:
        (cg / "cpu.weight").write_text(str(weight))
    if idle:
        (cg / "cpu.idle").write_text("1")
    return cg


def cg_usage_us(cg: Path) -> int:
    for line in (cg / "cpu.stat").read_text().splitlines():
        k, v = line.split()
        if k == "usage_usec":
            return int(v)
    raise RuntimeError(f"no usage_usec in {cg}/cpu.stat")


def cg_remove(cg: Path) -> None:
    if not cg.exists():
        return
    for _ in range(100):
        pids = [p for p in (cg / "cgroup.procs").read_text().split() if p]
        if not pids:
            break
        if (cg / "cgroup.kill").exists():
            (cg / "cgroup.kill").write_text("1")
        else:
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)
    try:
        cg.rmdir()
    except OSError:
        time.sleep(0.5)
        cg.rmdir()


def spawn_in(cg: Path, argv: list[str], **kw) -> subprocess.Popen:
    procs = str(cg / "cgroup.procs")

    def enter():
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    return subprocess.Popen(argv, preexec_fn=enter, **kw)


def hogs(cg: Path, n: int, seconds: float) -> subprocess.Popen:
    if shutil.which("stress-ng"):
        argv = ["stress-ng", "--cpu", str(n), "--cpu-method", "loop", "--timeout",
                f"{int(seconds) + 1}s", "--quiet"]
    else:  # pragma: no cover - the rootfs ships stress-ng
        argv = [sys.executable, "-c",
                f"import os,time\nfor _ in range({n}-1):\n    if os.fork()==0: break\n"
                f"e=time.time()+{seconds}+1\nwhile time.time()<e: pass"]
    return spawn_in(cg, argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


PROBE = r"""
import json, sys, time
secs, period = float(sys.argv[1]), float(sys.argv[2]) / 1e6
pns = int(period * 1e9)
lat = []
end = time.monotonic() + secs
while time.monotonic() < end:
    t0 = time.perf_counter_ns()
    time.sleep(period)
    lat.append(max(time.perf_counter_ns() - t0 - pns, 0))
lat.sort()
pick = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]
print(json.dumps({"n": len(lat), "p50_us": pick(0.50) / 1e3, "p99_us": pick(0.99) / 1e3,
                  "max_us": lat[-1] / 1e3}))
"""


def probe_start(cg: Path, seconds: float, period_us: int = 1000) -> subprocess.Popen:
    """The sleep-loop latency probe: sleep 1 ms, measure oversleep; JSON at the end."""
    return spawn_in(cg, [sys.executable, "-c", PROBE, str(seconds), str(period_us)],
                    stdout=subprocess.PIPE, text=True)


def probe_result(p: subprocess.Popen, timeout: float) -> dict:
    out, _ = p.communicate(timeout=timeout)
    return json.loads(out.strip().splitlines()[-1])


def sleeper_start(cg: Path) -> subprocess.Popen:
    """A process that wakes every 2 ms forever (for classification checks)."""
    return spawn_in(cg, [sys.executable, "-c", "import time\nwhile True: time.sleep(0.002)"])


def setup_lat_class() -> None:
    set_class(0, budget_ns=0, slice_ns=0, latency_critical=False)
    set_class(LAT_CLASS, budget_ns=1_000_000, slice_ns=1_000_000, latency_critical=True)


# -- scenarios ----------------------------------------------------------------------------
def scenario_load_unload(args) -> dict:
    before = scx_state()
    load()
    st = {"before": before, "state_loaded": scx_state(), "ops": scx_ops()}
    time.sleep(1)
    st["stats_after_1s"] = {k: {f: v[f] for f in ("nr_wakeups", "nr_enqueues", "run_ns")}
                            for k, v in read_stats().items() if k == 0}
    st["exit_while_running"] = read_exit()
    st["state_unloaded"] = unload()
    return st


def scenario_saturation(args) -> dict:
    """Hogs at oversub x vCPUs in a batch cgroup, the probe in a latency-critical one."""
    ncpu = os.cpu_count() or 1
    nhogs = args.oversub * ncpu
    batch, crit = cg_make("slo_batch"), cg_make("slo_crit")
    res = {"ncpu": ncpu, "hogs": nhogs, "seconds": args.seconds}
    try:
        load()
        res["state_loaded"], res["ops"] = scx_state(), scx_ops()
        setup_lat_class()
        set_cgroup_class(crit, LAT_CLASS)
        h = hogs(batch, nhogs, args.seconds)
        pr = probe_start(crit, args.seconds)
        samples = []
        t_end = time.monotonic() + args.seconds
        while time.monotonic() < t_end:
            time.sleep(min(args.seconds / 4, max(t_end - time.monotonic(), 0)))
            s = read_stats()
            samples.append({"t": round(args.seconds - (t_end - time.monotonic()), 1),
                            "state": scx_state(),
                            "lat_preempts": s[LAT_CLASS]["nr_preempts"],
                            "lat_wakeups": s[LAT_CLASS]["nr_wakeups"]})
        res["probe"] = probe_result(pr, timeout=60)
        h.wait(timeout=60)
        s = read_stats()
        res["samples"] = samples
        res["lat"] = s[LAT_CLASS]
        res["batch"] = {k: v for k, v in s[0].items() if k != "lat_hist"}
        res["lat_p99_hist_ns"] = hist_percentile(s[LAT_CLASS]["lat_hist"], 0.99)
        res["state_end"] = scx_state()
        res["exit"] = read_exit()
    finally:
        res["state_unloaded"] = unload()
        cg_remove(batch)
        cg_remove(crit)
    return res


def scenario_weights(args) -> dict:
    """Two batch cgroups, cpu.weight 200 and 100, saturated; usage_usec ratio."""
    ncpu = os.cpu_count() or 1
    a, b = cg_make("slo_w200", weight=200), cg_make("slo_w100", weight=100)
    res = {"ncpu": ncpu}
    try:
        load()
        ha = hogs(a, args.hogs_a * ncpu, args.seconds + 30)
        hb = hogs(b, args.hogs_b * ncpu, args.seconds + 30)
        time.sleep(1.5)
        ua0, ub0 = cg_usage_us(a), cg_usage_us(b)
        time.sleep(args.seconds)
        ua, ub = cg_usage_us(a) - ua0, cg_usage_us(b) - ub0
        res["cg_info"] = {str(cg.name): cg_info(cg) for cg in (a, b)}
        res["bss"] = read_bss()
        s = read_stats()[0]
        res["batch_stats"] = {k: v for k, v in s.items() if k != "lat_hist"}
        res.update({"hogs_a": args.hogs_a * ncpu, "hogs_b": args.hogs_b * ncpu,
                    "usage_a_us": ua, "usage_b_us": ub, "ratio": ua / max(ub, 1),
                    "state_end": scx_state(), "exit": read_exit()})
        for h in (ha, hb):
            h.kill()
            h.wait(timeout=60)
    finally:
        res["state_unloaded"] = unload()
        cg_remove(a)
        cg_remove(b)
    return res


def scenario_move(args) -> dict:
    """A running sleeper is moved from a batch cgroup into a latency-critical one."""
    batch, crit = cg_make("slo_mv_batch"), cg_make("slo_mv_crit")
    res = {}
    try:
        load()
        setup_lat_class()
        set_cgroup_class(crit, LAT_CLASS)
        p = sleeper_start(batch)
        time.sleep(1.0)
        s0 = read_stats()
        time.sleep(args.seconds)
        s1 = read_stats()
        (crit / "cgroup.procs").write_text(str(p.pid))
        time.sleep(0.2)
        s2 = read_stats()
        time.sleep(args.seconds)
        s3 = read_stats()
        res["moved_pid_cgroup"] = Path(f"/proc/{p.pid}/cgroup").read_text().strip()
        p.kill()
        p.wait()
        res.update({
            "before_lat_wakeups": s1[LAT_CLASS]["nr_wakeups"] - s0[LAT_CLASS]["nr_wakeups"],
            "before_batch_wakeups": s1[0]["nr_wakeups"] - s0[0]["nr_wakeups"],
            "after_lat_wakeups": s3[LAT_CLASS]["nr_wakeups"] - s2[LAT_CLASS]["nr_wakeups"],
            "state_end": scx_state(),
        })
    finally:
        res["state_unloaded"] = unload()
        cg_remove(batch)
        cg_remove(crit)
    return res


def scenario_floor(args) -> dict:
    """A CPU hog in a latency-critical cgroup vs one in a batch cgroup, the critical
    one entitled to nearly all the CPU (cpu.weight 10000 vs 1), so that its share does
    not bound it: the batch floor (batch_floor_pct, default 5) keeps batch running and
    the watchdog quiet."""
    ncpu = os.cpu_count() or 1
    batch, crit = cg_make("slo_fl_batch", weight=1), cg_make("slo_fl_crit", weight=10000)
    res = {"ncpu": ncpu}
    try:
        load()
        setup_lat_class()
        set_cgroup_class(crit, LAT_CLASS)
        hb = hogs(batch, ncpu, args.seconds + 30)
        hc = hogs(crit, ncpu, args.seconds + 30)
        time.sleep(1.0)
        ub0, uc0 = cg_usage_us(batch), cg_usage_us(crit)
        time.sleep(args.seconds)
        ub, uc = cg_usage_us(batch) - ub0, cg_usage_us(crit) - uc0
        s = read_stats()
        res.update({"usage_batch_us": ub, "usage_crit_us": uc, "batch_share": ub / max(ub + uc, 1),
                    "nr_floor_boosts": s[0]["nr_floor_boosts"], "state_end": scx_state(),
                    "exit": read_exit()})
        for h in (hb, hc):
            h.kill()
            h.wait(timeout=60)
    finally:
        res["state_unloaded"] = unload()
        cg_remove(batch)
        cg_remove(crit)
    return res


def bandwidth_feed():
    """What the agent does with cpu.max where the kernel does not pass it (< 6.17):
    a function that feeds the cgroups' cpu.max into the scheduler; a no-op elsewhere."""
    from scx_slo.agent.bandwidth import BandwidthFeed, kernel_passes_cpu_max
    from scx_slo.loader.scheduler import Scheduler

    if kernel_passes_cpu_max():
        return lambda *cgs: None

    def feed(*cgs: Path) -> None:
        with Scheduler.adopt(PIN, object_path=OBJ) as s:
            BandwidthFeed(s).sync([str(cg) for cg in cgs])
    return feed


def scenario_bandwidth(args) -> dict:
    """cpu.max under scx_slo: a heavy cgroup (cpu.weight 1000) with a cpu.max quota next
    to an unlimited one (cpu.weight 100), both saturated. The limit is there before load
    (cgroup_init; fed from cgroupfs before 6.17), changed while loaded
    (cgroup_set_bandwidth; fed again before 6.17), binds the cgroup as a
    latency-critical class too, then is lifted ("max")."""
    ncpu = os.cpu_count() or 1
    lim, free = cg_make("slo_bw_lim", weight=1000), cg_make("slo_bw_free", weight=100)
    res = {"ncpu": ncpu, "phases": []}
    # (cpu.max of the limited cgroup, its class)
    settings = [("20000 100000", 0), ("50000 100000", 0), ("30000 100000", LAT_CLASS),
                ("max 100000", 0)]
    try:
        (lim / "cpu.max").write_text(settings[0][0])
        load()
        setup_lat_class()
        feed = bandwidth_feed()
        feed(lim, free)
        hl = hogs(lim, 2 * ncpu, len(settings) * (args.seconds + 1) + 60)
        hf = hogs(free, 2 * ncpu, len(settings) * (args.seconds + 1) + 60)
        time.sleep(1.5)
        for i, (cpu_max, class_id) in enumerate(settings):
            if i:
                (lim / "cpu.max").write_text(cpu_max)
                feed(lim, free)
                set_cgroup_class(lim, class_id)
                time.sleep(0.5)
            t0, ul0, uf0 = time.monotonic(), cg_usage_us(lim), cg_usage_us(free)
            time.sleep(args.seconds)
            window = time.monotonic() - t0
            ul, uf = cg_usage_us(lim) - ul0, cg_usage_us(free) - uf0
            res["phases"].append({"cpu_max": (lim / "cpu.max").read_text().strip(),
                                  "class": class_id, "window_s": window, "cpus_limited": ul / window / 1e6,
                                  "cpus_free": uf / window / 1e6,
                                  "nr_bw_cgroups": read_bss().get("nr_bw_cgroups")})
        s = read_stats()
        res["nr_throttled"] = sum(c["nr_throttled"] for c in s.values())
        bss = read_bss()
        res["bss"] = {k: bss.get(k) for k in ("nr_bw_cgroups", "nr_bw_releases",
                                               "nr_bw_overrides", "bw_timer_err",
                                               "bw_timer_broken", "bw_override_pid",
                                               "bw_override_wait_ns")}
        res.update({"state_end": scx_state(), "exit": read_exit()})
        for h in (hl, hf):
            h.kill()
            h.wait(timeout=60)
    finally:
        res["state_unloaded"] = unload()
        cg_remove(lim)
        cg_remove(free)
    return res


def scenario_genchurn(args) -> dict:
    """Class and weight generations moving hundreds of times a second while batch hogs
    saturate the vCPUs and a latency-critical probe wakes every millisecond: every
    enqueue, dispatch (of a kept prev), tick and timer re-resolves a task's class.
    slo_gen is bumped through the map; weight_gen through cpu.weight writes
    (cgroup_set_weight) and cgroups made and removed (cgroup_init/exit)."""
    from scx_slo.loader.scheduler import Scheduler

    ncpu = os.cpu_count() or 1
    batch, crit = cg_make("slo_gc_batch"), cg_make("slo_gc_crit")
    res = {"ncpu": ncpu, "seconds": args.seconds, "bumps": 0, "weight_writes": 0,
           "cgroups_made": 0, "samples": []}
    try:
        load()
        setup_lat_class()
        set_cgroup_class(crit, LAT_CLASS)
        h = hogs(batch, 4 * ncpu, args.seconds + 60)
        probe = probe_start(crit, args.seconds)
        t_end = time.monotonic() + args.seconds
        next_sample = time.monotonic() + 1
        # the churn itself runs latency-critical, so the hogs cannot slow it down
        (crit / "cgroup.procs").write_text(f"{os.getpid()}\n")
        with Scheduler.adopt(PIN, object_path=OBJ) as s:
            gen = s.typed("slo_gen")
            value = gen.lookup(0) or 0
            while time.monotonic() < t_end and scx_state() == "enabled":
                for _ in range(20):
                    value += 1
                    gen.update(0, value)
                res["bumps"] += 20
                (batch / "cpu.weight").write_text(f"{100 + res['weight_writes'] % 50}\n")
                res["weight_writes"] += 1
                tmp = CG_ROOT / f"slo_gc_tmp{res['cgroups_made'] % 4}"
                tmp.mkdir(exist_ok=True)
                tmp.rmdir()
                res["cgroups_made"] += 1
                time.sleep(0.005)
                if time.monotonic() >= next_sample:
                    res["samples"].append(scx_state())
                    next_sample += 1
        res["probe"] = probe_result(probe, args.seconds + 120)
        res["lat"] = read_stats()[LAT_CLASS]["nr_wakeups"]
        res.update({"state_end": scx_state(), "exit": read_exit()})
        h.kill()
        h.wait(timeout=60)
    finally:
        (CG_ROOT / "cgroup.procs").write_text(f"{os.getpid()}\n")   # out of crit first
        res["state_unloaded"] = unload()
        cg_remove(batch)
        cg_remove(crit)
    return res


def scenario_starve(args) -> dict:
    """THREADS runnable batch threads per vCPU against a latency-critical CPU hog per
    vCPU, with the watchdog at 5 s, the critical cgroup entitled to nearly all the CPU
    (cpu.weight 10000 vs 1): the floor alone serves one batch slice per ~100 ms, so
    with dozens of threads only the starvation rescue keeps every one under it."""
    ncpu = os.cpu_count() or 1
    batch, crit = cg_make("slo_sv_batch", weight=1), cg_make("slo_sv_crit", weight=10000)
    res = {"ncpu": ncpu, "threads": args.threads * ncpu, "seconds": args.seconds, "samples": []}
    try:
        load(timeout_ms=5000)
        setup_lat_class()
        set_cgroup_class(crit, LAT_CLASS)
        hb = hogs(batch, args.threads * ncpu, args.seconds + 60)
        hc = hogs(crit, ncpu, args.seconds + 60)
        t_end = time.monotonic() + args.seconds
        while time.monotonic() < t_end and scx_state() == "enabled":
            time.sleep(1)
            res["samples"].append(scx_state())
        s = read_stats()
        res["nr_starve_rescues"] = s[0]["nr_starve_rescues"]
        res["nr_floor_boosts"] = s[0]["nr_floor_boosts"]
        bss = read_bss()
        res["last_rescue_wait_ms"] = (bss.get("rescue_wait_ns") or 0) / 1e6
        res.update({"state_end": scx_state(), "exit": read_exit()})
        for h in (hb, hc):
            h.kill()
            h.wait(timeout=60)
    finally:
        res["state_unloaded"] = unload()
        cg_remove(batch)
        cg_remove(crit)
    return res


def scenario_slicetimer(args) -> dict:
    """Latency-critical work behind latency-critical work: CPU hogs and the 1 ms probe
    in one latency-critical class. With lat_preempt_ns = 0 (off) a probe wakeup finds
    no CPU it may preempt and waits on its queue for a slice to end: with slice_timer_ns
    = 0 at a tick (10 ms at HZ=100), with the default timer at about 1 ms. With
    lat_preempt_ns = 500 us the probe preempts a hog that has run that long."""
    ncpu = os.cpu_count() or 1
    crit = cg_make("slo_st_crit")
    res = {"ncpu": ncpu, "hz_tick_ms": None, "runs": {}}
    no_lat_preempt = {"lat_preempt_ns": 0}
    lat_preempt = {"lat_preempt_ns": 500_000}
    try:
        for name, tun in (("ticks_only", {"slice_timer_ns": 0, **no_lat_preempt}),
                          ("slice_timer", no_lat_preempt), ("lat_preempt", lat_preempt),
                          ("ticks_only_2", {"slice_timer_ns": 0, **no_lat_preempt}),
                          ("slice_timer_2", no_lat_preempt), ("lat_preempt_2", lat_preempt)):
            load(**tun)
            setup_lat_class()
            set_cgroup_class(crit, LAT_CLASS)
            h = hogs(crit, 2 * ncpu, args.seconds + 60)
            time.sleep(0.5)
            probe = probe_start(crit, args.seconds)
            out = probe_result(probe, args.seconds + 120)
            h.kill()
            h.wait(timeout=60)
            bss = read_bss()
            out["nr_slice_kicks"] = bss.get("nr_slice_kicks")
            out["nr_lat_preempts"] = bss.get("nr_lat_preempts")
            out["slice_timer_broken"] = bss.get("slice_timer_broken")
            st = read_stats().get(LAT_CLASS, {})
            out["nr_fallbacks"] = st.get("nr_fallbacks")
            out["nr_over_share"] = st.get("nr_over_share")
            out["state"] = scx_state()
            out["exit"] = read_exit()
            res["runs"][name] = out
            unload()
    finally:
        res["state_unloaded"] = unload()
        cg_remove(crit)
    return res


def scenario_misses(args) -> dict:
    """Every SLO miss is a record in slo_misses or counted as dropped. Four tasks waking
    every 2 ms in a latency-critical class whose miss threshold (10 us) the emulator cannot
    meet, next to batch hogs: a storm of misses (several times the per-cgroup rate of 16
    per 100 ms, however slow the host), read through libbpf's ring buffer API while it
    lasts; the rate bounds what arrives."""
    from scx_slo.loader.scheduler import Scheduler

    ncpu = os.cpu_count() or 1
    load()
    setup_lat_class()
    set_class(LAT_CLASS, budget_ns=1_000_000, slice_ns=1_000_000, latency_critical=True,
              miss_threshold_ns=10_000)
    lat, batch = cg_make("misses_lat"), cg_make("misses_batch")
    set_cgroup_class(lat, LAT_CLASS)
    h = hogs(batch, 2 * ncpu, args.seconds)
    records, polls = [], 0
    with Scheduler.adopt(PIN) as s, s.miss_reader() as ring:
        sleepers = [sleeper_start(lat) for _ in range(4)]
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            records += [s.decode_miss(r) for r in ring.poll(100)]
            polls += 1
        for sleeper in sleepers:
            sleeper.kill()
            sleeper.wait()
        elapsed = time.monotonic() - t0
        time.sleep(0.2)
        records += [s.decode_miss(r) for r in ring.poll(100)]
    st = read_stats().get(LAT_CLASS, {})
    h.kill()
    h.wait()
    out = {"records": len(records), "polls": polls, "elapsed_s": elapsed,
           "nr_misses": st.get("nr_misses"), "nr_miss_drops": st.get("nr_miss_drops"),
           "nr_wakeups": st.get("nr_wakeups"), "cgid": lat.stat().st_ino,
           "sleeper_pids": sorted(s.pid for s in sleepers), "class": LAT_CLASS,
           "cgids": sorted({r["cgid"] for r in records}),
           "pids": sorted({r["pid"] for r in records}),
           "classes": sorted({r["class_id"] for r in records}),
           "min_delay_ns": min((r["delay_ns"] for r in records), default=None),
           "max_in_100ms": max((sum(1 for q in records if 0 <= q["at_ns"] - r["at_ns"] < 100e6)
                                for r in records), default=0),
           "state": scx_state(), "exit": read_exit()}
    cg_remove(lat)
    cg_remove(batch)
    out["state_unloaded"] = unload()
    return out


def cpu_times() -> dict[int, tuple[int, int]]:
    """(idle, total) jiffies per CPU from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *vals = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in vals]
            out[int(name[3:])] = (v[3] + v[4], sum(v[:8]))
    return out


def idle_shares(before: dict, after: dict) -> dict[int, float]:
    return {c: round((after[c][0] - before[c][0]) / max(after[c][1] - before[c][1], 1), 3)
            for c in after}


def llc_groups() -> list[list[int]]:
    """The LLCs the scheduler was given (the loader's reading of sysfs)."""
    from scx_slo.loader.topology import Topology

    return [list(m) for m in Topology.read().llcs]


def scenario_topology(args) -> dict:
    """Per-LLC queues on a multi-socket, SMT, NUMA guest. Imbalance: 2 hogs per vCPU
    start pinned to the first LLC's CPUs and are then allowed everywhere; the queues
    are that LLC's, so the other CPUs only get work by stealing or balancing, and the
    idle share of every CPU over the next seconds shows whether they do. Locality: a
    1 ms sleep loop per LLC in a latency-critical cgroup next to the hogs; every
    preemption it causes is counted by distance (same LLC, same node, farther)."""
    ncpu = os.cpu_count() or 1
    llcs = llc_groups()
    batch, crit = cg_make("slo_topo_batch"), cg_make("slo_topo_crit")
    res = {"ncpu": ncpu, "llcs": llcs, "seconds": args.seconds}
    try:
        load()
        setup_lat_class()
        set_cgroup_class(crit, LAT_CLASS)
        first = set(llcs[0])
        procs = []
        for _ in range(2 * ncpu):
            p = spawn_in(batch, [sys.executable, "-c", "while True: pass"])
            os.sched_setaffinity(p.pid, first)
            procs.append(p)
        time.sleep(1.0)
        s0 = read_stats()[0]
        for p in procs:
            os.sched_setaffinity(p.pid, range(ncpu))
        time.sleep(0.5)
        t0 = cpu_times()
        time.sleep(args.seconds)
        res["idle_after_unpin"] = idle_shares(t0, cpu_times())
        s1 = read_stats()[0]
        res["steals"] = s1["nr_steals"] - s0["nr_steals"]
        res["balances"] = s1["nr_balances"] - s0["nr_balances"]

        before = read_stats()[LAT_CLASS]
        probes = []
        for members in llcs:
            pr = probe_start(crit, args.seconds)
            os.sched_setaffinity(pr.pid, members)   # one probe near each LLC ...
            os.sched_setaffinity(pr.pid, range(ncpu))  # ... free to go anywhere
            probes.append(pr)
        res["probes"] = [probe_result(pr, timeout=args.seconds + 120) for pr in probes]
        after = read_stats()[LAT_CLASS]
        res["preempts"] = {k: after[k] - before[k] for k in
                           ("nr_preempts", "nr_preempt_llc", "nr_preempt_node",
                            "nr_preempt_far", "nr_direct", "nr_fallbacks", "nr_wakeups")}
        res["bss_nr_lat_queued"] = read_bss().get("nr_lat_queued")
        res["state_end"], res["exit"] = scx_state(), read_exit()
        for p in procs:
            p.kill()
            p.wait(timeout=60)
    finally:
        res["state_unloaded"] = unload()
        cg_remove(batch)
        cg_remove(crit)
    return res


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("load-unload")
    p = sub.add_parser("saturation")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--oversub", type=int, default=8)
    p = sub.add_parser("weights")
    p.add_argument("--seconds", type=float, default=12)
    p.add_argument("--hogs-a", type=int, default=3, help="hogs per vCPU in the weight-200 cgroup")
    p.add_argument("--hogs-b", type=int, default=1, help="hogs per vCPU in the weight-100 cgroup")
    p = sub.add_parser("floor")
    p.add_argument("--seconds", type=float, default=10)
    p = sub.add_parser("starve")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--threads", type=int, default=64, help="batch threads per vCPU")
    p = sub.add_parser("slicetimer")
    p.add_argument("--seconds", type=float, default=8)
    p = sub.add_parser("genchurn")
    p.add_argument("--seconds", type=float, default=20)
    p = sub.add_parser("bandwidth")
    p.add_argument("--seconds", type=float, default=6)
    p = sub.add_parser("misses")
    p.add_argument("--seconds", type=float, default=3)
    p = sub.add_parser("move")
    p.add_argument("--seconds", type=float, default=2)
    p = sub.add_parser("topology")
    p.add_argument("--seconds", type=float, default=4)
    args = ap.parse_args()
    fn = {"load-unload": scenario_load_unload, "saturation": scenario_saturation,
          "weights": scenario_weights, "floor": scenario_floor,
          "bandwidth": scenario_bandwidth, "genchurn": scenario_genchurn, "slicetimer": scenario_slicetimer, "starve": scenario_starve, "move": scenario_move,
          "misses": scenario_misses, "topology": scenario_topology}[args.cmd]
    print(json.dumps(fn(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
