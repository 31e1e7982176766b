#!/usr/bin/env python3
"""Guest side of the faults suite: each scenario runs on the sched_ext kernel and prints
one JSON object (last line of stdout) for tests/faults/test_kernel_faults.py to judge.

    python3 kernel_faults.py refused --count 6 --seed 1
    python3 kernel_faults.py stall --timeout-ms 2000
    python3 kernel_faults.py verifier --bad /tmp/bad.bpf.o
    python3 kernel_faults.py other --obj /tmp/other.bpf.o
    python3 kernel_faults.py nobpffs
    python3 kernel_faults.py rocgroup
    python3 kernel_faults.py churn --pods 500 --rounds 5

Scenarios leave the machine as they found it (scheduler detached, pins and cgroups
removed, mounts restored) or say in their JSON what they could not restore.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

SRC = Path("/opt/scx-slo/src")
sys.path[:0] = [str(SRC / "tests"), str(SRC / "plugin")]

from scx_slo.loader.scheduler import Scheduler
from scx_slo.dev import hooks_object_path
from scx_slo.loader.sysfs import sched_ext_state, wait_state

OPS = Path("/sys/kernel/sched_ext/root/ops")
CG = Path("/sys/fs/cgroup")


def emit(obj: dict) -> None:
    print(json.dumps(obj, default=str), flush=True)


def sh(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, shell=isinstance(cmd, str), **kw)


def prog_ids() -> set[int]:
    r = sh(["bpftool", "-j", "prog", "show"])
    return {p["id"] for p in json.loads(r.stdout or "[]")}


def map_ids() -> set[int]:
    r = sh(["bpftool", "-j", "map", "show"])
    return {m["id"] for m in json.loads(r.stdout or "[]")}


def link_ids() -> set[int]:
    r = sh(["bpftool", "-j", "link", "show"])
    return {m["id"] for m in json.loads(r.stdout or "[]")}


def struct_ops_maps() -> list[str]:
    r = sh(["bpftool", "-j", "map", "show"])
    return [m.get("name", "") for m in json.loads(r.stdout or "[]")
            if m.get("type") == "struct_ops"]


def attached_ops() -> str | None:
    if sched_ext_state() != "enabled":
        return None
    try:
        return OPS.read_text().strip()
    except OSError:
        return None


def dmesg_tail(n: int = 30) -> list[str]:
    return sh(["dmesg"]).stdout.splitlines()[-n:]


# -- refused mutants never reach the kernel --------------------------------------------------
def refused(args) -> dict:
    from faults import mutate
    from scx_slo import default_object_path
    from scx_slo.loader import gate

    data = Path(str(default_object_path())).read_bytes()
    layout = mutate.Layout.of(data)
    rng = random.Random(args.seed)
    before_progs, state_before = prog_ids(), sched_ext_state()
    cases, tries = [], 0
    work = Path("/tmp/faults-mutants")
    work.mkdir(exist_ok=True)
    while len(cases) < args.count and tries < args.count * 50:
        tries += 1
        muts = mutate.random_mutations(rng, layout)
        path = work / f"m{tries}.bpf.o"
        path.write_bytes(mutate.apply(data, muts, layout))
        if gate.inspect(path).accepted:       # against the real /sys/kernel/btf/vmlinux
            path.unlink()
            continue
        case = {"path": str(path), "mutations": repr(muts)}
        try:
            s = Scheduler.open(path, pin_dir="/sys/fs/bpf/faults_refused")
        except gate.GateRefused as exc:
            case["outcome"] = "GateRefused"
            case["failed"] = [c.name for c in exc.report.failed]
        except Exception as exc:  # noqa: BLE001 - the test judges it
            case["outcome"] = f"{type(exc).__name__}: {exc}"
        else:
            case["outcome"] = "opened"
            s.close()
        case["state"] = sched_ext_state()
        path.unlink()
        cases.append(case)
    shutil.rmtree(work, ignore_errors=True)
    return {"cases": cases, "tries": tries, "state_before": state_before,
            "state_after": sched_ext_state(), "new_progs": sorted(prog_ids() - before_progs),
            "pins": os.path.exists("/sys/fs/bpf/faults_refused")}


# -- accepted mutants reach libbpf and the verifier: typed errors, never a crash ---------------
LOAD_ONE = """
import json, sys
sys.path[:0] = ["/opt/scx-slo/src/plugin"]
from scx_slo.errors import ScxSloError
from scx_slo.loader.scheduler import Scheduler
try:
    with Scheduler.open(sys.argv[1], pin_dir="/sys/fs/bpf/faults_accepted") as s:
        s.load()
    print(json.dumps({"outcome": "loaded"}))
except ScxSloError as exc:
    print(json.dumps({"outcome": "typed", "kind": type(exc).__name__,
                      "message": str(exc).splitlines()[0][:200]}))
"""


def accepted(args) -> dict:
    from faults import mutate
    from scx_slo import default_object_path
    from scx_slo.loader import gate

    data = Path(str(default_object_path())).read_bytes()
    layout = mutate.Layout.of(data)
    rng = random.Random(args.seed)
    before_progs, state_before = prog_ids(), sched_ext_state()
    work = Path("/tmp/faults-accepted")
    work.mkdir(exist_ok=True)
    cases, tries = [], 0
    while len(cases) < args.count and tries < args.count * 50:
        tries += 1
        muts = mutate.random_mutations(rng, layout)
        path = work / f"a{tries}.bpf.o"
        path.write_bytes(mutate.apply(data, muts, layout))
        if not gate.inspect(path).accepted:
            path.unlink()
            continue
        r = sh([sys.executable, "-c", LOAD_ONE, str(path)], timeout=600)
        lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
        case = {"mutations": repr(muts), "rc": r.returncode,
                "result": json.loads(lines[-1]) if lines else None,
                "stderr_tail": r.stderr[-600:], "state": sched_ext_state()}
        path.unlink()
        cases.append(case)
    shutil.rmtree(work, ignore_errors=True)
    return {"cases": cases, "tries": tries, "state_before": state_before,
            "state_after": sched_ext_state(), "new_progs": sorted(prog_ids() - before_progs)}


# -- stall: the watchdog ejects, the canary finishes -----------------------------------------
# The canary sleeps and wakes in a loop: each wakeup goes through ops.enqueue, where the
# stall tunable parks it on a DSQ nobody consumes. (A pure busy loop would not do: a task
# that is the last runnable one on its CPU keeps running without being enqueued again.)
# It loops until GO exists, then does LOOPS more rounds and writes DONE.
CANARY = ("while [ ! -e {go} ]; do sleep 0.05; done; i=0; "
          "while [ $i -lt {loops} ]; do sleep 0.05; i=$((i+1)); done; echo done > {done}")


SCX_RESCUE_DISABLE = 0xFFFFFFFF


def disable_rescue(s: Scheduler) -> str:
    """Turn off the kernel's rescue of stalled tasks (sched_ext_ops.rescue_bandwidth_ppt,
    new in 7.x), so that the watchdog is what catches the stall. A kernel without the
    member (6.12) has no such rescue: nothing to turn off."""
    from scx_slo.loader import gate
    from scx_slo.loader.btf import Btf, Kind
    from scx_slo.loader.scheduler import SchedulerError

    kernel_ops = Btf.from_file(gate.DEFAULT_KERNEL_BTF).get(gate.STRUCT_OPS_TYPE, Kind.STRUCT)
    if "rescue_bandwidth_ppt" not in {m.name for m in kernel_ops.members}:
        return "absent: this kernel has no rescue"

    try:
        s.set_ops(rescue_bandwidth_ppt=SCX_RESCUE_DISABLE)
        return "set_ops"
    except SchedulerError:
        # Scheduler.set_ops does not allow the field (yet): write libbpf's shadow directly.
        from scx_slo.loader import gate
        from scx_slo.loader.btf import Layout

        layout = Layout(s.types.btf, s.types.ops_struct().id)
        off, size = layout.offset_of("rescue_bandwidth_ppt")
        buf = s.obj.map(gate.STRUCT_OPS_MAP).initial_value()
        buf[off:off + size] = SCX_RESCUE_DISABLE.to_bytes(size, "little")
        return "shadow"


def stall(args) -> dict:
    done, go = Path("/tmp/faults-canary.done"), Path("/tmp/faults-canary.go")
    done.unlink(missing_ok=True)
    go.unlink(missing_ok=True)
    out: dict = {"state_before": sched_ext_state(), "rescue": args.rescue}
    canary = subprocess.Popen(["sh", "-c", CANARY.format(loops=args.loops, done=done,
                                                                go=go)])
    out["canary_pid"] = canary.pid
    with Scheduler.open(hooks_object_path(), pin_dir="/sys/fs/bpf/faults_stall") as s:
        s.set_tunables(stall_canary_pid=canary.pid, timeout_ms=args.timeout_ms)
        s.set_ops(timeout_ms=args.timeout_ms)
        if args.rescue == "off":
            out["rescue_set_by"] = disable_rescue(s)
        out["tunables"] = {k: v for k, v in s.tunables().items()
                           if k in ("stall_canary_pid", "timeout_ms")}
        s.load()
        t0 = time.monotonic()
        s.attach()
        out["state_attached"] = wait_state("enabled", 5)
        out["ops"] = attached_ops()
        go.write_text("go")
        time.sleep(0.5)
        out["canary_state_while_attached"] = _proc_state(canary.pid)
        out["state_final"] = wait_state("disabled", args.timeout_ms / 1000 * 4 + 10)
        out["ejected_after_s"] = round(time.monotonic() - t0, 2)
        out["canary_done_before_eject"] = done.exists()
        out["exit"] = s.exit_info()
    try:
        canary.wait(timeout=args.canary_timeout)
    except subprocess.TimeoutExpired:
        canary.kill()
        canary.wait()
    out["canary_rc"] = canary.returncode
    out["canary_done"] = done.exists()
    out["canary_total_s"] = round(time.monotonic() - t0, 2)
    out["dmesg"] = [ln for ln in dmesg_tail(60) if "sched_ext" in ln or "scx" in ln][-8:]
    done.unlink(missing_ok=True)
    go.unlink(missing_ok=True)
    return out


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "?"


# -- stall under the agent: log, reload with backoff, give up ---------------------------------
# The settings point `scx-slo run` at the hooks object; the canary tunable is no
# setting, so this wrapper adds it to every Scheduler.set_tunables call the agent
# makes, then runs the real CLI.
AGENT_WITH_CANARY = """
import sys
import scx_slo.loader.scheduler as S
_orig = S.Scheduler.set_tunables
def _with_canary(self, **kw):
    kw.setdefault("stall_canary_pid", {pid})
    return _orig(self, **kw)
S.Scheduler.set_tunables = _with_canary
from scx_slo.cli import main
sys.exit(main({argv!r}))
"""
STALL_SETTINGS = """
[scheduler]
watchdog-timeout = "2s"
object = "{object}"
"""


def agent_stall(args) -> dict:
    stop, done = Path("/tmp/faults-acanary.stop"), Path("/tmp/faults-acanary.done")
    stop.unlink(missing_ok=True)
    done.unlink(missing_ok=True)
    state = Path("/tmp/faults-agent-stall")
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    (state / "user-data").write_text(STALL_SETTINGS.format(object=hooks_object_path()))
    pin_base = "/sys/fs/bpf/faults_agent_stall"
    canary = subprocess.Popen(["sh", "-c", (f"while [ ! -e {stop} ]; do sleep 0.05; done; "
                                            f"echo done > {done}")])
    argv = ["run", "--user-data", str(state / "user-data"), "--state-dir", str(state),
            "--pin-dir", pin_base, "--cri-socket", "/nonexistent.sock",
            "--api-socket", "/nonexistent.sock", "--interval", "5"]
    with open(state / "agent.log", "w") as log:   # the child keeps its own copy of the fd
        agent = subprocess.Popen([sys.executable, "-c",
                                  AGENT_WITH_CANARY.format(pid=canary.pid, argv=argv)],
                                 stdout=log, stderr=subprocess.STDOUT, text=True)
    out: dict = {"canary_pid": canary.pid}
    t0 = time.monotonic()
    gave_up_at = None
    states = []
    while time.monotonic() - t0 < args.deadline:
        text = (state / "agent.log").read_text()
        states.append(sched_ext_state())
        if "staying on the kernel's default scheduler" in text:
            gave_up_at = time.monotonic() - t0
            break
        if agent.poll() is not None:
            break
        time.sleep(0.5)
    out["gave_up_after_s"] = gave_up_at and round(gave_up_at, 1)
    time.sleep(3)                       # given up: it must stay off
    out["state_after_give_up"] = sched_ext_state()
    out["agent_alive_after_give_up"] = agent.poll() is None
    try:
        out["status"] = json.loads((state / "status.json").read_text())
    except (OSError, ValueError) as exc:
        out["status"] = {"error": str(exc)}
    out["pins_after_give_up"] = sorted(str(p.relative_to(pin_base))
                                       for p in Path(pin_base).rglob("*")) \
        if os.path.isdir(pin_base) else []
    stop.write_text("stop")
    try:
        canary.wait(timeout=60)
    except subprocess.TimeoutExpired:
        canary.kill()
        canary.wait()
    out["canary_rc"], out["canary_done"] = canary.returncode, done.exists()
    agent.terminate()
    try:
        out["agent_rc"] = agent.wait(timeout=60)
    except subprocess.TimeoutExpired:
        agent.kill()
        out["agent_rc"] = agent.wait()
    out["log"] = (state / "agent.log").read_text()[-6000:]
    out["states_seen"] = sorted(set(states))
    out["state_end"] = sched_ext_state()
    # leave nothing behind
    r = sh(["scx-slo", "stop", "--pin-dir", pin_base], timeout=300)
    out["stop_rc"] = r.returncode
    shutil.rmtree(pin_base, ignore_errors=True)
    stop.unlink(missing_ok=True)
    done.unlink(missing_ok=True)
    return out


# -- verifier rejection while scx_slo runs ---------------------------------------------------
def verifier(args) -> dict:
    from scx_slo.loader import libbpf

    out: dict = {"state_before": sched_ext_state()}
    with Scheduler.open(pin_dir="/sys/fs/bpf/faults_verifier") as s:
        s.load()
        s.attach()
        out["state_running"] = wait_state("enabled", 5)
        out["ops_running"] = attached_ops()
        progs_before = prog_ids()
        try:
            with libbpf.BpfObject(args.bad) as bad:
                bad.load()
                out["bad_loaded"] = True
        except libbpf.VerifierError as exc:
            out.update(kind=type(exc).__name__, errno=exc.errno_name, log=exc.verifier_log,
                       message=str(exc))
        except Exception as exc:  # noqa: BLE001
            out["kind"] = f"{type(exc).__name__}: {exc}"
        # and a new scx_slo object (ours, valid) cannot take over while one is attached
        time.sleep(1.0)
        out["state_after_reject"] = sched_ext_state()
        out["ops_after_reject"] = attached_ops()
        out["leaked_progs"] = sorted(prog_ids() - progs_before)
        out["exit_while_running"] = s.exit_info()
        s.detach()
        out["state_end"] = wait_state("disabled", 10)
    return out


# -- another sched_ext scheduler attached ----------------------------------------------------
OTHER_PIN = "/sys/fs/bpf/faults_other_link"


def other(args) -> dict:
    from scx_slo.loader import libbpf

    out: dict = {"state_before": sched_ext_state()}
    with libbpf.BpfObject(args.obj) as obj:
        obj.load()
        link = obj.attach_struct_ops(args.map)
        link.pin(OTHER_PIN)
        link.close()
    out["state_other"] = wait_state("enabled", 5)
    out["ops_other"] = attached_ops()
    try:
        r = sh(["scx-slo", "check"], timeout=300)
        out["check"] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
        r = sh(["scx-slo", "check", "--json"], timeout=300)
        out["check_json"] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
        # our loader: a typed refusal from the kernel, and the other scheduler stays
        try:
            with Scheduler.open(pin_dir="/sys/fs/bpf/faults_other_ours") as s:
                s.load()
                s.attach()
                out["ours_attached"] = True
        except Exception as exc:  # noqa: BLE001 - judged by the test
            from scx_slo.errors import ScxSloError
            out["ours_error"] = {"typed": isinstance(exc, ScxSloError),
                                 "kind": type(exc).__name__, "message": str(exc)}
        out["ops_after_ours"] = attached_ops()
        if args.agent:
            out["agent"] = run_agent_briefly(Path("/tmp/faults-other-agent"), 120,
                                             ["--pin-dir", "/sys/fs/bpf/faults_other_agent"])
            out["ops_after_agent"] = attached_ops()
    finally:
        link = libbpf.Link.open_pinned(OTHER_PIN)
        link.unpin()
        link.detach()
        link.close()
        out["state_end"] = wait_state("disabled", 10)
    return out


# -- no bpffs --------------------------------------------------------------------------------
def bpf_mounts() -> list[str]:
    return [ln for ln in Path("/proc/self/mounts").read_text().splitlines() if " bpf " in ln]


def run_agent_briefly(state: Path, seconds: float, extra: list[str] = ()) -> dict:
    """Start `scx-slo run`; SIGTERM it a second after it has attached the scheduler, or
    after SECONDS if it neither attaches nor exits by itself."""
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    (state / "user-data").write_text("[scheduler]\n")
    argv = ["scx-slo", "run", "--user-data", str(state / "user-data"), "--state-dir",
            str(state), "--cri-socket", "/nonexistent.sock", "--api-socket",
            "/nonexistent.sock", "--interval", "1", *extra]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: dict = {}
    deadline = time.monotonic() + seconds
    while p.poll() is None and time.monotonic() < deadline and attached_ops() != "scx_slo":
        time.sleep(0.2)
    if p.poll() is None:
        time.sleep(1)       # what it does right after attaching is part of the run
    if p.poll() is not None:
        out["exited_by_itself"] = True
    else:
        out["exited_by_itself"] = False
        out["ops_while_running"] = attached_ops()
        p.terminate()
    stdout, stderr = p.communicate(timeout=120)
    out.update(rc=p.returncode, stdout=stdout[-4000:], stderr=stderr[-4000:])
    return out


def nobpffs(args) -> dict:
    out: dict = {}
    r = sh("umount /sys/fs/bpf")
    out["umount_rc"], out["umount_err"] = r.returncode, r.stderr
    try:
        out["mounts_bpf"] = bpf_mounts()
        r = sh(["scx-slo", "check"], timeout=300)
        out["check"] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
        if args.agent:
            out["agent"] = run_agent_briefly(Path("/tmp/faults-nobpffs-agent"), 60)
            out["mounts_after_agent"] = bpf_mounts()
            r = sh(["scx-slo", "stop"], timeout=300)
            out["stop"] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
            out["state_after_stop"] = wait_state("disabled", 10)
    finally:
        if not bpf_mounts():
            out["remount_rc"] = sh("mount -t bpf bpf /sys/fs/bpf").returncode
        else:
            out["remount_rc"] = 0
        out["mounts_end"] = bpf_mounts()
    return out


# -- agent killed while it loads ---------------------------------------------------------------
def start_agent(state: Path, pin_base: str) -> tuple[subprocess.Popen, Path]:
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir()
    (state / "user-data").write_text("[scheduler]\n")
    log = state / "agent.log"
    argv = ["scx-slo", "run", "--user-data", str(state / "user-data"), "--state-dir",
            str(state), "--pin-dir", pin_base, "--cri-socket", "/nonexistent.sock",
            "--api-socket", "/nonexistent.sock", "--interval", "5"]
    with open(log, "w") as f:
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT)
    return p, log


def killload(args) -> dict:
    """SIGKILL the agent DELAY seconds into its start (during gate/open/load/attach/pin),
    then start a new agent: it must come up (adopt or load) from whatever was left; after
    SIGTERM and `scx-slo stop` no program, map or link of ours is left in the kernel."""
    pin_base = "/sys/fs/bpf/faults_kill"
    out: dict = {"cycles": []}
    base = {"progs": prog_ids(), "maps": map_ids(), "links": link_ids()}
    for delay in args.delays:
        c: dict = {"delay": delay}
        p, log = start_agent(Path("/tmp/faults-kill-1"), pin_base)
        # DELAY counts from the agent's "settings:" line: what follows is gate, open,
        # load, attach, pin (the agent's imports alone take seconds under TCG)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 120 and "settings:" not in log.read_text() \
                and p.poll() is None:
            time.sleep(0.05)
        t1 = time.monotonic()
        time.sleep(delay)
        p.kill()
        c["killed_after_settings_s"] = round(time.monotonic() - t1, 2)
        p.wait()
        c["first_log"] = log.read_text()[-1500:]
        c["state_after_kill"] = sched_ext_state()
        c["first_attached"] = "loaded and attached" in c["first_log"]
        c["pins_after_kill"] = sorted(str(x.relative_to(pin_base))
                                      for x in Path(pin_base).rglob("*")) \
            if os.path.isdir(pin_base) else []
        p2, log2 = start_agent(Path("/tmp/faults-kill-2"), pin_base)
        t0 = time.monotonic()
        up = False
        while time.monotonic() - t0 < args.up_timeout and p2.poll() is None:
            text = log2.read_text()
            if "loaded and attached" in text or "adopted the pinned scheduler" in text:
                up = True
                break
            time.sleep(0.3)
        c["second_up"] = up
        c["second_ops"] = attached_ops()
        p2.terminate()
        try:
            c["second_rc"] = p2.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p2.kill()
            c["second_rc"] = p2.wait()
        c["second_log"] = log2.read_text()[-2500:]
        r = sh(["scx-slo", "stop", "--pin-dir", pin_base], timeout=300)
        c["stop"] = {"rc": r.returncode, "stdout": r.stdout[-500:], "stderr": r.stderr[-500:]}
        c["state_end"] = wait_state("disabled", 10)
        time.sleep(1.0)            # let the kernel free what the last fds held
        c["leaked"] = {"progs": sorted(prog_ids() - base["progs"]),
                       "maps": sorted(map_ids() - base["maps"]),
                       "links": sorted(link_ids() - base["links"])}
        out["cycles"].append(c)
    shutil.rmtree(pin_base, ignore_errors=True)
    return out


# -- read-only cgroupfs ----------------------------------------------------------------------
def rocgroup(args) -> dict:
    out: dict = {}
    r = sh("mount -o remount,ro /sys/fs/cgroup")
    out["remount_rc"], out["remount_err"] = r.returncode, r.stderr
    try:
        out["writable"] = os.access("/sys/fs/cgroup", os.W_OK)
        r = sh(["scx-slo", "check"], timeout=300)
        out["check"] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
        r = sh(["scx-slo", "check", "--json"], timeout=300)
        out["check_json"] = {"rc": r.returncode, "stdout": r.stdout, "stderr": r.stderr}
    finally:
        r = sh("mount -o remount,rw /sys/fs/cgroup")
        out["restore_rc"] = r.returncode
        out["writable_after"] = os.access("/sys/fs/cgroup", os.W_OK)
    return out


# -- churn -----------------------------------------------------------------------------------
CHURN_SETTINGS = """
[[class]]
name = "critical"
p99 = "20ms"

[[rule]]
class = "critical"
cgroup = "kubepods.slice/kubepods-burstable.slice"
"""


def _pod_path(i: int) -> tuple[str, str]:
    uid = f"00000000-0000-4000-8000-{i:012d}"
    esc = uid.replace("-", "_")
    if i % 2:
        return uid, f"kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{esc}.slice"
    return uid, f"kubepods.slice/kubepods-pod{esc}.slice"


def churn(args) -> dict:
    """Create and remove pod cgroups in rounds while stress-ng saturates the CPUs; after
    each round reconcile the class map the way the agent does (plan_node -> map)."""
    from scx_slo.agent.reconcile import plan_node
    from scx_slo.settings.validate import validate_text

    config = validate_text(CHURN_SETTINGS, "churn.toml").config
    kube = CG / "kubepods.slice"
    for d in (kube, kube / "kubepods-burstable.slice"):
        d.mkdir(exist_ok=True)
    (kube / "cgroup.subtree_control").write_text("+cpu")
    batch = CG / "faults-batch"
    batch.mkdir(exist_ok=True)
    out: dict = {"state_before": sched_ext_state(), "rounds": []}
    rng = random.Random(args.seed)
    live: set[int] = set()
    stress = None
    states: list[str] = []
    try:
        with Scheduler.open(pin_dir="/sys/fs/bpf/faults_churn") as s:
            s.set_ops(timeout_ms=5000)
            s.load()
            s.attach()
            out["state_attached"] = wait_state("enabled", 5)
            capacity = s.typed("slo_cgroups").max_entries \
                if hasattr(s.typed("slo_cgroups"), "max_entries") else 16384
            stress = subprocess.Popen(
                ["sh", "-c", (f"echo $$ > {batch}/cgroup.procs && exec stress-ng --cpu "
                              f"{os.cpu_count() * 2} --timeout {args.stress_s}s --quiet")])
            next_id = 0
            t0 = time.monotonic()
            for rnd in range(args.rounds):
                # create a batch of pods, then remove a random part of the live ones
                for _ in range(args.pods // args.rounds):
                    _uid, rel = _pod_path(next_id)
                    (CG / rel).mkdir()
                    live.add(next_id)
                    next_id += 1
                for i in rng.sample(sorted(live), k=len(live) // 3):
                    os.rmdir(CG / _pod_path(i)[1])
                    live.discard(i)
                current = {k: v["class_id"] for k, v in s.typed("slo_cgroups").items()}
                p = plan_node(config, str(CG), "/nonexistent-cri.sock", current,
                              capacity=capacity, timeout=0.5)
                for cgid in p.removes:
                    s.remove_cgroup(cgid)
                for cgid, class_id in p.adds.items():
                    s.set_cgroup_class(cgid, class_id)
                for cgid, (_old, new) in p.changes.items():
                    s.set_cgroup_class(cgid, new)
                s.bump_generation()
                states.append(sched_ext_state())
                out["rounds"].append({"live": len(live), "adds": len(p.adds),
                                      "removes": len(p.removes), "changes": len(p.changes)})
            out["churn_s"] = round(time.monotonic() - t0, 1)
            # the map against the cgroups that exist now: every live pod slice, plus the
            # burstable QoS slice the cgroup rule names (rule-matched cgroups are entries too)
            want = {os.stat(kube / "kubepods-burstable.slice").st_ino: 1}
            for i in live:
                st = os.stat(CG / _pod_path(i)[1])
                want[st.st_ino] = 1 if i % 2 else 0
            got = {k: v["class_id"] for k, v in s.typed("slo_cgroups").items()}
            out["map_equals_live"] = got == want
            out["map_size"], out["live"] = len(got), len(want)
            out["missing"] = len(set(want) - set(got))
            out["extra"] = len(set(got) - set(want))
            out["wrong_class"] = sum(1 for k in set(got) & set(want) if got[k] != want[k])
            out["extra_ids"] = sorted(set(got) - set(want))[:10]
            out["critical_wakeups"] = s.stats(1)["nr_wakeups"]
            out["states"] = sorted(set(states))
            out["exit"] = s.exit_info()
            out["state_end_attached"] = sched_ext_state()
            s.detach()
            out["state_end"] = wait_state("disabled", 10)
    finally:
        if stress is not None:
            stress.kill()
            stress.wait()
        for i in list(live):
            try:
                os.rmdir(CG / _pod_path(i)[1])
            except OSError:
                pass
        for d in (kube / "kubepods-burstable.slice", kube, batch):
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
    return out


def main() -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("refused")
    a.add_argument("--count", type=int, default=6)
    a.add_argument("--seed", type=int, default=1)
    a = sub.add_parser("accepted")
    a.add_argument("--count", type=int, default=6)
    a.add_argument("--seed", type=int, default=5)
    a = sub.add_parser("stall")
    a.add_argument("--timeout-ms", type=int, default=2000)
    a.add_argument("--loops", type=int, default=10)
    a.add_argument("--canary-timeout", type=float, default=120)
    a.add_argument("--rescue", choices=("default", "off"), default="off")
    a = sub.add_parser("agent_stall")
    a.add_argument("--deadline", type=float, default=400)
    a = sub.add_parser("verifier")
    a.add_argument("--bad", required=True)
    a = sub.add_parser("other")
    a.add_argument("--obj", required=True)
    a.add_argument("--map", default="other_ops")
    a.add_argument("--agent", action="store_true")
    a = sub.add_parser("nobpffs")
    a.add_argument("--agent", action="store_true")
    sub.add_parser("rocgroup")
    a = sub.add_parser("killload")
    a.add_argument("--delays", type=float, nargs="+", default=[0.5, 2.0, 5.0])
    a.add_argument("--up-timeout", type=float, default=120)
    a = sub.add_parser("churn")
    a.add_argument("--pods", type=int, default=500)
    a.add_argument("--rounds", type=int, default=5)
    a.add_argument("--seed", type=int, default=3)
    a.add_argument("--stress-s", type=int, default=600)
    args = p.parse_args()
    try:
        result = globals()[args.cmd](args)
    except Exception as exc:  # noqa: BLE001 - reported to the host as data
        emit({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
        return 1
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
