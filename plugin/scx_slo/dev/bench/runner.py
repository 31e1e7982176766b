"""The guest side of `scx-slo bench`: every configuration, one after the other, on
this machine (root, cgroup2, a sched_ext kernel for the scx_slo configuration).

Per configuration: build the pod tree (pods.Node), load scx_slo if asked, start
the HTTP server in the critical pod, start the batch pod's stress-ng, let it
warm up, then run the open-loop client and the wakeup probe (both in the
critical pod, as extra containers, so they get the pod's treatment in every
configuration) for the measurement window, and collect: client latencies, the
probe's wakeup latencies, CPU usage of both pods (cpu.stat), stress-ng's
bogo-ops, the sched_ext state seen mid-window, and for scx_slo the class
counters and bpf_stats per callback. Everything is torn down before the next.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from scx_slo.dev.bench import stats
from scx_slo.dev.bench.pods import Node, Pod, PodError, idle_usec, usage_usec
from scx_slo.dev.bench.workloads import parse_stress_ng, stress_ng_argv
from scx_slo.errors import ScxSloError
from scx_slo.loader.sysfs import STATE_PATH, attached_ops, sched_ext_state
from scx_slo.loader.tuning import class_configs, tune

BPF_STATS = Path("/proc/sys/kernel/bpf_stats_enabled")

CRITICAL_MILLICPU = 500
BURSTABLE_BATCH_MILLICPU = 2000
P99_TARGET_NS = 200_000_000


class BenchError(ScxSloError):
    """The benchmark could not run a configuration."""


@dataclass(frozen=True)
class Setup:
    name: str
    title: str
    batch_qos: str | None          # None: no batch pod
    kubelet_weights: bool
    batch_idle: bool = False       # cpu.idle=1 on the batch pod slice
    scx: bool = False
    baseline: bool = False         # scx_slo with the baseline object (--baseline)


CONFIGS: tuple[Setup, ...] = (
    Setup("idle", "idle (no batch)", None, True),
    Setup("scx_slo_noload", "scx_slo, no batch", None, True, scx=True),
    Setup("eevdf_default", "EEVDF, every cpu.weight 100", "besteffort", False),
    Setup("eevdf_kubelet_besteffort", "EEVDF, kubelet weights, batch BestEffort",
          "besteffort", True),
    Setup("eevdf_kubelet_burstable", "EEVDF, kubelet weights, batch Burstable 2 CPU",
          "burstable", True),
    Setup("eevdf_batch_idle", "EEVDF, batch Burstable 2 CPU with cpu.idle=1",
          "burstable", True, batch_idle=True),
    Setup("scx_slo", "scx_slo, batch Burstable 2 CPU", "burstable", True, scx=True),
    Setup("scx_slo_baseline", "scx_slo's baseline object, batch Burstable 2 CPU", "burstable",
          True, scx=True, baseline=True),
)
CONFIG_NAMES = tuple(c.name for c in CONFIGS)
BASELINE = "scx_slo_baseline"
DEFAULT_CONFIGS = tuple(c.name for c in CONFIGS if not c.baseline)


@dataclass(frozen=True)
class Params:
    measure_s: float = 60.0
    warmup_s: float = 3.0
    rate_hz: float = 10.0
    delay_s: float = 0.1
    probe_period_us: int = 1000
    hogs_per_cpu: int = 4
    port: int = 18080

    @classmethod
    def quick(cls) -> "Params":
        return cls(measure_s=25.0, warmup_s=2.0)


def bpf_prog_stats(progs: list[dict]) -> dict:
    """Per-callback cost of the struct_ops programs in `bpftool -j prog show` output:
    {name: {run_cnt, run_time_ns, avg_ns}} plus an overall average."""
    per = {}
    for p in progs:
        if p.get("type") != "struct_ops" or not p.get("run_cnt"):
            continue
        cnt, ns = int(p["run_cnt"]), int(p.get("run_time_ns", 0))
        per[p.get("name", str(p.get("id")))] = {"run_cnt": cnt, "run_time_ns": ns,
                                                "avg_ns": ns / cnt}
    total_cnt = sum(v["run_cnt"] for v in per.values())
    total_ns = sum(v["run_time_ns"] for v in per.values())
    return {"callbacks": per, "run_cnt": total_cnt, "run_time_ns": total_ns,
            "avg_ns": (total_ns / total_cnt) if total_cnt else None}


def settings_text(critical_slice: str | None) -> str:
    """The operator settings the scx_slo configuration runs with: one class with a
    200 ms p99 target, and a rule putting the critical pod's slice in it (no rule
    without one)."""
    text = f'[[class]]\nname = "critical"\np99 = "{P99_TARGET_NS // 1_000_000}ms"\n'
    if critical_slice is not None:
        text += f'\n[[rule]]\nclass = "critical"\ncgroup = "{critical_slice}"\n'
    return text


class ScxRun:
    """scx_slo loaded through scx_slo.loader.scheduler.Scheduler for one configuration,
    with CRITICAL's pod slice in the latency-critical class (None: every pod batch)."""

    def __init__(self, node: Node, critical: Pod | None, log: Callable[[str], None],
                 object_path: str | None = None):
        from scx_slo.settings.validate import validate_text

        self.log = log
        self.object_path = object_path
        rel = critical.rel(node.root) if critical else None
        self.config = validate_text(settings_text(rel), "<bench settings>").config
        self.klass = next(c for c in self.config.classes if c.name == "critical")
        if rel is not None and self.config.class_for_cgroup(rel)[0] != self.klass:
            raise BenchError(f"the bench settings do not classify {rel}")
        self.critical_cgid = os.stat(critical.path).st_ino if critical else None
        self.sched = None
        self.bpf_stats_before = None
        self.attached_at = 0.0

    def start(self) -> None:
        from scx_slo.loader.scheduler import Scheduler
        from scx_slo.loader.sysfs import wait_state

        try:
            self.bpf_stats_before = BPF_STATS.read_text().strip()
            BPF_STATS.write_text("1")
        except OSError:
            self.bpf_stats_before = None
        sc = self.config.scheduler
        s = Scheduler.open(self.object_path or sc.object_path())
        try:
            tune(s, sc)
            s.load()
            for class_id, cfg in class_configs(self.config).items():
                s.set_class(class_id, cfg)
            if self.critical_cgid is not None:
                s.set_cgroup_class(self.critical_cgid, self.klass.id)
            s.bump_generation()
            s.attach()
        except BaseException:
            s.close()
            raise
        self.sched = s
        self.attached_at = time.monotonic()
        state = wait_state("enabled", timeout=20)
        self.log(f"scx_slo attached (state {state}); class {self.klass.name!r} "
                 f"id {self.klass.id}: budget {self.klass.budget_ns / 1e6:g} ms, slice "
                 f"{self.klass.slice_ns / 1e6:g} ms, weight {self.klass.weight}")

    def collect(self) -> dict:
        st = self.sched.stats(self.klass.id) or {}
        counters = {k: v for k, v in st.items() if k != "lat_hist"}
        from scx_slo.agent import histogram
        hist = st.get("lat_hist") or []
        exit_info = self.sched.exit_info() or {}
        try:
            out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True,
                                 text=True, timeout=60)
            progs = json.loads(out.stdout) if out.returncode == 0 else []
        except (OSError, ValueError, subprocess.TimeoutExpired):
            progs = []
        return {"class": {"id": self.klass.id, "name": self.klass.name,
                          "p99_target_ns": self.klass.p99_ns, "budget_ns": self.klass.budget_ns,
                          "slice_ns": self.klass.slice_ns, "weight": self.klass.weight,
                          "miss_threshold_ns": self.klass.miss_threshold_ns},
                "counters": counters,
                "sched_wakeup_p99_ns": histogram.percentile(hist, 0.99) if hist else None,
                "exit_kind": exit_info.get("kind"),
                "exit_reason": exit_info.get("reason", ""),
                "bpf": bpf_prog_stats(progs),
                "attached_s": time.monotonic() - self.attached_at}

    def stop(self) -> str:
        from scx_slo.loader.sysfs import wait_state

        if self.sched is not None:
            try:
                self.sched.detach()
            except ScxSloError:
                pass
            self.sched.close()
            self.sched = None
        if self.bpf_stats_before is not None:
            try:
                BPF_STATS.write_text(self.bpf_stats_before)
            except OSError:
                pass
        return wait_state("disabled", timeout=20)


def _wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the HTTP server exited ({proc.returncode}) before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchError(f"the HTTP server did not listen on port {port} within {timeout:.0f} s")


def _wait_ready(proc: subprocess.Popen, what: str, timeout: float) -> None:
    """Wait for the "ready" line of a --wait workload (its start-up, outside the window)."""
    import selectors
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            raise BenchError(f"the {what} was not ready within {timeout:.0f} s")
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        _, err = proc.communicate()
        raise BenchError(f"the {what} failed to start ({proc.returncode}): "
                         f"{err.strip()[-500:]}")


def _json_out(proc: subprocess.Popen, what: str, timeout: float) -> dict:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise BenchError(f"the {what} did not finish within {timeout:.0f} s")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchError(f"the {what} failed ({proc.returncode}): {err.strip()[-500:]}")
    return json.loads(lines[-1])


def run_setup(setup: Setup, p: Params, log: Callable[[str], None],
              baseline_object: str | None = None) -> dict:
    ncpu = os.cpu_count() or 1
    critical = Pod("critical", "burstable", CRITICAL_MILLICPU)
    pods = [critical]
    batch = None
    if setup.batch_qos == "besteffort":
        batch = Pod("batch", "besteffort", None)
    elif setup.batch_qos == "burstable":
        batch = Pod("batch", "burstable", BURSTABLE_BATCH_MILLICPU)
    if batch:
        pods.append(batch)
    node = Node(pods, kubelet_weights=setup.kubelet_weights)
    py = sys.executable
    env = dict(os.environ)
    procs: list[subprocess.Popen] = []
    scx = None
    res: dict = {"name": setup.name, "title": setup.title, "ncpu": ncpu, "setup": asdict(setup)}
    tmp = Path(tempfile.mkdtemp(prefix="scx-slo-bench-"))
    phases: dict[str, float] = {}
    res["phases_s"] = phases
    mark = [time.monotonic()]

    def phase(name: str) -> None:
        t = time.monotonic()
        phases[name] = round(t - mark[0], 2)
        mark[0] = t

    try:
        node.create()
        res["weights"] = {pod.name: int((pod.path / "cpu.weight").read_text())
                          for pod in pods}
        if batch and setup.batch_idle:
            (batch.path / "cpu.idle").write_text("1")
        res["cgroups"] = {pod.name: pod.rel(node.root) for pod in pods}
        if setup.scx:
            scx = ScxRun(node, critical, log, baseline_object if setup.baseline else None)
            scx.start()
        server = node.spawn(critical, "server",
                            [py, "-m", "scx_slo.dev.bench.workloads", "server", "--port",
                             str(p.port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env)
        procs.append(server)
        _wait_port(p.port, server, 60)
        phase("setup")
        t_warm = time.monotonic()
        loadgen = node.spawn(critical, "loadgen",
                             [py, "-m", "scx_slo.dev.bench.workloads", "loadgen", "--wait",
                              "--port", str(p.port), "--rate", str(p.rate_hz), "--duration",
                              str(p.measure_s), "--delay", str(p.delay_s)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        procs.append(loadgen)
        probe = node.spawn(critical, "probe",
                           [py, "-m", "scx_slo.dev.bench.workloads", "probe", "--wait",
                            "--duration", str(p.measure_s), "--period-us",
                            str(p.probe_period_us)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=env)
        procs.append(probe)
        for proc, what in ((loadgen, "load generator"), (probe, "wakeup probe")):
            _wait_ready(proc, what, 300)
        res["startup_s"] = time.monotonic() - t_warm
        phase("startup")
        hogs = None
        hogs_log = tmp / "stress-ng.log"
        if batch:
            n = p.hogs_per_cpu * ncpu
            argv = stress_ng_argv(n, p.warmup_s + p.measure_s + 3) + ["--log-file",
                                                                     str(hogs_log)]
            hogs = node.spawn(batch, "hogs", argv, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
            procs.append(hogs)
            res["batch_workers"] = n
        time.sleep(p.warmup_s)

        phase("warmup")
        t0 = time.monotonic()
        u0 = {pod.name: usage_usec(pod.path) for pod in pods}
        idle0 = idle_usec()
        for proc in (loadgen, probe):
            proc.stdin.write("go\n")
            proc.stdin.flush()
        time.sleep(p.measure_s / 2)
        res["sched_ext_state"] = sched_ext_state()
        res["sched_ext_ops"] = (attached_ops() or "")
        # CPU usage over exactly the probe's window (the batch runs past its end)
        rest = t0 + p.measure_s - time.monotonic()
        if rest > 0:
            time.sleep(rest)
        t1 = time.monotonic()
        u1 = {pod.name: usage_usec(pod.path) for pod in pods}
        idle1 = idle_usec()
        wake = _json_out(probe, "wakeup probe", p.measure_s * 6 + 120)
        phase("measure")
        client = _json_out(loadgen, "load generator", p.measure_s * 6 + 120)
        window = t1 - t0
        res["window_s"] = window
        res["cpu_usage_us"] = {k: u1[k] - u0[k] for k in u0}
        res["idle_us"] = idle1 - idle0
        # all pods' CPU time over the window's capacity: near 1.0 under batch load
        res["pods_cpu_share"] = sum(res["cpu_usage_us"].values()) / (window * ncpu * 1e6)
        res["wakeup_us"] = wake
        res["requests"] = client
        if batch:
            cap = window * ncpu * 1e6
            used = res["cpu_usage_us"]["batch"]
            res["batch_cpu_share"] = used / cap
            # what the batch took of the CPU time nobody else wanted: capacity
            # minus the critical pod (server, load generator, probe) minus what
            # ran outside the pods (the guest's harness, kernel threads), which is
            # batch + idle; near 1.0 means the policy stayed work-conserving
            res["batch_cpu_of_available"] = used / max(used + res["idle_us"], 1.0)
            try:
                hogs.wait(timeout=p.measure_s * 4 + 60)
            except subprocess.TimeoutExpired:
                hogs.kill()
                hogs.wait()
            text = hogs_log.read_text(errors="replace") if hogs_log.exists() else ""
            res["batch"] = parse_stress_ng(text)
            if res["batch"] is None:
                res["batch_error"] = text.strip()[-500:] or f"stress-ng exited {hogs.returncode}"
        phase("client_end")
        if scx:
            res["scx"] = scx.collect()
        return res
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        if scx:
            res["sched_ext_state_after"] = scx.stop()
        try:
            node.remove()
        except PodError as e:
            log(f"warning: {e}")
        phase("teardown")
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


def run_all(p: Params, names: tuple[str, ...] = DEFAULT_CONFIGS,
            log: Callable[[str], None] = print, baseline_object: str | None = None) -> dict:
    """Every selected configuration in order; the result document (see report.py).
    BASELINE_OBJECT is the object scx_slo_baseline loads."""
    if os.geteuid() != 0:
        raise BenchError("the benchmark needs root (cgroups, BPF): run it in the VM "
                         "(scx-slo bench) or as root on a node (--here)")
    if "scx_slo" in names and sched_ext_state() == "unsupported":
        raise BenchError(f"{STATE_PATH}: this kernel has no sched_ext; run in the VM "
                         "(scx-slo bench without --here) or leave scx_slo out with --configs")
    if BASELINE in names and not baseline_object:
        raise BenchError(f"{BASELINE}: no baseline object (scx-slo bench --baseline REV)")
    if not (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
        raise BenchError("/sys/fs/cgroup is not a cgroup2 mount: the benchmark needs cgroup v2")
    ncpu = os.cpu_count() or 1
    doc = {"version": 1, "kernel": os.uname().release, "ncpu": ncpu,
           "params": asdict(p), "p99_target_ns": P99_TARGET_NS,
           "critical_millicpu": CRITICAL_MILLICPU,
           "burstable_batch_millicpu": BURSTABLE_BATCH_MILLICPU,
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "configs": {}}
    setups = [c for c in CONFIGS if c.name in names]
    for i, setup in enumerate(setups, 1):
        log(f"[{i}/{len(setups)}] {setup.title}: measuring {p.measure_s:g} s "
            f"(+{p.warmup_s:g} s warm-up)")
        t = time.monotonic()
        r = run_setup(setup, p, log, baseline_object)
        doc["configs"][setup.name] = r
        w, q = r["wakeup_us"], r["requests"]
        lat = stats.summarize(q["latency_s"])
        log(f"[{i}/{len(setups)}] {setup.name} done in {time.monotonic() - t:.0f} s: "
            f"wakeup p99 {w['p99']:.0f} us, request p99 {lat['p99'] * 1e3:.1f} ms"
            + (f", batch {r['batch']['bogo_ops_per_s']:.1f} bogo-ops/s"
               if r.get("batch") else "")
            + " (phases " + " ".join(f"{k} {v:.0f}" for k, v in r["phases_s"].items()) + " s)")
    return doc
