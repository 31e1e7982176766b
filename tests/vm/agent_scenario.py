"""Guest side of the agent test (tests/test_agent_vm.py): runs inside the VM as root.

Builds a kubepods-shaped cgroup tree with real processes, serves it over a fake
CRI and a fake Bottlerocket API, runs `scx-slo run` and drives it through
reconcile, pod churn, SIGKILL, SIGTERM hand-off, an upgrade to another build of
the scheduler (--next-object) and SIGTERM-when-disabled.
Prints one JSON object with what it observed; the host test asserts on it.
"""
from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

SRC = Path("/opt/scx-slo/src")
sys.path.insert(0, str(SRC / "tests"))
sys.path.insert(0, str(SRC / "tests" / "vm"))

from fake_bottlerocket_api import start as start_api  # noqa: E402
from polling import wait_for  # noqa: E402
from fake_cri import start as start_cri  # noqa: E402

from scx_slo.loader import pins  # noqa: E402
from scx_slo.loader.sysfs import attached_ops  # noqa: E402
from scx_slo.loader.scheduler import Scheduler  # noqa: E402
from scx_slo.settings.apiclient import ApiClient  # noqa: E402

CG = Path("/sys/fs/cgroup")
KP = CG / "kubepods.slice"
STATE = Path("/sys/kernel/sched_ext/state")
WORK = Path("/tmp/agent-test")
API_SOCK = "/run/api.sock"
CRI_SOCK = "/run/cri.sock"
NAME = "scx-slo"

USER_DATA = """
[scheduler]
watchdog-timeout = "5s"

[scheduler.metrics]
enabled = true
listen = "127.0.0.1:9464"

[[class]]
name = "critical"
p99 = "10ms"
miss-threshold = "10us"     # under emulation every wakeup misses: per-pod alerts fire

[alerts]
log-interval = "1s"

[[class]]
name = "frontend"
p99 = "200ms"

[[rule]]
class = "critical"
namespace = "web"

[annotations]
tightest = "100ms"
"""

out: dict = {"events": []}


def note(msg: str) -> None:
    out["events"].append(f"{time.monotonic():.2f} {msg}")


def state() -> str:
    return STATE.read_text().strip()


def enable_cpu(path: Path) -> None:
    (path / "cgroup.subtree_control").write_text("+cpu")


def make_pod(qos: str, uid: str, container: str) -> tuple[Path, Path]:
    u = uid.replace("-", "_")
    if qos == "guaranteed":
        parent, pod = KP, KP / f"kubepods-pod{u}.slice"
    else:
        parent = KP / f"kubepods-{qos}.slice"
        parent.mkdir(exist_ok=True)
        enable_cpu(parent)
        pod = parent / f"kubepods-{qos}-pod{u}.slice"
    pod.mkdir()
    enable_cpu(pod)
    scope = pod / f"cri-containerd-{container}.scope"
    scope.mkdir()
    return pod, scope


def spawn_in(scope: Path, argv: list[str]) -> subprocess.Popen:
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    (scope / "cgroup.procs").write_text(str(p.pid))
    return p


def remove_pod(pod: Path, procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()
    for child in pod.iterdir():
        if child.is_dir():
            child.rmdir()
    pod.rmdir()


_maps: list[Scheduler] = []


def maps() -> Scheduler | None:
    """The agent's pinned maps, adopted once (they stay the same across hand-offs)."""
    if not _maps:
        d = pins.pinned_dirs(pins.base_dir(None, mount_if_missing=False))
        if not d:
            return None
        _maps.append(Scheduler.adopt(d[-1]))
    return _maps[0]


def pinned_map() -> dict[int, int]:
    m = maps()
    return {k: v["class_id"] for k, v in m.typed("slo_cgroups").items()} if m else {}


def pin_names() -> list[str]:
    return [p.name for p in pins.pinned_dirs(pins.base_dir(None, mount_if_missing=False))]


def class_stats(class_id: int) -> dict:
    return maps().stats(class_id)



class Sampler(threading.Thread):
    """Reads the sched_ext state every few ms; remembers every value seen."""

    def __init__(self):
        super().__init__(daemon=True)
        self.seen: set[str] = set()
        self.samples = 0
        self.halt = threading.Event()

    def run(self):
        while not self.halt.is_set():
            self.seen.add(state())
            self.samples += 1
            time.sleep(0.005)


def start_agent(tag: str, work: Path = WORK) -> subprocess.Popen:
    """`scx-slo run` on WORK/user-data, its state in WORK/state, its log WORK/agent-TAG.log."""
    log = open(work / f"agent-{tag}.log", "w")
    return subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "scx_slo", "run",
         "--user-data", str(work / "user-data"), "--state-dir", str(work / "state"),
         "--cri-socket", CRI_SOCK, "--api-socket", API_SOCK,
         "--name", NAME, "--interval", "2", "--resync", "30"],
        stdout=log, stderr=subprocess.STDOUT)


def agent_log(tag: str, work: Path = WORK) -> str:
    return (work / f"agent-{tag}.log").read_text()


def term(agent: subprocess.Popen, tag: str, timeout: float = 30,
         work: Path = WORK) -> tuple[int, float]:
    """SIGTERM the agent; its exit code and the seconds it took. One that does not exit
    in time is made to dump every thread's stack (faulthandler, on SIGABRT) and the
    failure shows where."""
    t0 = time.monotonic()
    agent.send_signal(signal.SIGTERM)
    try:
        return agent.wait(timeout=timeout), time.monotonic() - t0
    except subprocess.TimeoutExpired:
        agent.send_signal(signal.SIGABRT)
        agent.wait(timeout=30)
        raise SystemExit(f"agent {tag} did not exit within {timeout:g} s of SIGTERM; "
                         f"its log:\n{agent_log(tag, work)[-6000:]}") from None


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--next-object", help="another build of the scheduler, to upgrade to")
    next_object = ap.parse_args().next_object
    WORK.mkdir(parents=True, exist_ok=True)
    (WORK / "user-data").write_text(USER_DATA)
    api = start_api(API_SOCK, settings={"host-containers": {NAME: {
        "source": "example.com/scx-slo:test", "enabled": True, "superpowered": True,
        "user-data": base64.b64encode(USER_DATA.encode()).decode()}}})
    KP.mkdir()
    enable_cpu(KP)
    fe_uid, be_uid, g_uid = ("1f0e6a2c-0000-4000-8000-000000000001",
                             "2b7c9d4e-0000-4000-8000-000000000002",
                             "3c8dae5f-0000-4000-8000-000000000003")
    fe_pod, fe_scope = make_pod("burstable", fe_uid, "a" * 64)
    be_pod, be_scope = make_pod("besteffort", be_uid, "b" * 64)
    g_pod, g_scope = make_pod("guaranteed", g_uid, "c" * 64)
    (fe_pod / "cpu.weight").write_text("20")      # kubelet: 500m request
    (be_pod / "cpu.weight").write_text("1")       # BestEffort
    (g_pod / "cpu.max").write_text("50000 100000")    # kubelet: a 500m limit
    pods = [
        {"uid": fe_uid, "namespace": "web", "name": "frontend-0", "labels": {"app": "frontend"}},
        {"uid": be_uid, "namespace": "batch", "name": "stress-0", "labels": {"app": "stress"}},
        {"uid": g_uid, "namespace": "batch", "name": "critical-claim",
         "annotations": {"slo.latency.p99": "1us"}},
    ]
    cri = start_cri(CRI_SOCK, pods=pods)
    probe = spawn_in(fe_scope, [sys.executable, "-c",
                                "import time\nwhile True: time.sleep(0.001)"])
    g_proc = spawn_in(g_scope, ["sleep", "1000"])

    ids = {"frontend": fe_pod.stat().st_ino, "batch": be_pod.stat().st_ino,
           "guaranteed": g_pod.stat().st_ino, "frontend_scope": fe_scope.stat().st_ino}
    out["ids"] = ids

    agent = start_agent("1")
    ok = wait_for(lambda: state() == "enabled" and "attached" in agent_log("1"), 120, 0.2)
    note("agent 1 attached" if ok else "agent 1 did not attach")
    ok = ok and wait_for(lambda: len(pinned_map()) >= 3, 30, 0.1)
    note("map filled" if ok else "map not filled")
    out["attached"] = bool(ok)
    out["ops"] = Path("/sys/kernel/sched_ext/root/ops").read_text().strip() if ok else None
    out["map_initial"] = {str(k): v for k, v in pinned_map().items()}
    # before 6.17 the agent feeds cpu.max from cgroupfs; from 6.17 the kernel passes it
    from scx_slo.agent.bandwidth import kernel_passes_cpu_max
    out["kernel_passes_cpu_max"] = kernel_passes_cpu_max()
    fed = wait_for(lambda: (maps().typed("slo_cg_bw").lookup(ids["guaranteed"])
                            if maps() else None), 15, 0.1)
    out["cpu_max_fed"] = fed or {}
    out["cpu_max_fed_count"] = len(list(maps().typed("slo_cg_bw").keys())) if maps() else 0

    # A new pod: how long until its slice is in the map?
    t0 = time.monotonic()
    new_uid = "4d9ebf60-0000-4000-8000-000000000004"
    cri.set_pods(pods + [{"uid": new_uid, "namespace": "web", "name": "frontend-1"}])
    new_pod, new_scope = make_pod("burstable", new_uid, "d" * 64)
    seen = wait_for(lambda: new_pod.stat().st_ino in pinned_map(), 10, 0.02)
    out["new_pod_delay_s"] = time.monotonic() - t0 if seen else None
    out["new_pod_class"] = pinned_map().get(new_pod.stat().st_ino)

    # Removing it removes its entry.
    gone_id = new_pod.stat().st_ino
    remove_pod(new_pod, [])
    cri.set_pods(pods)
    out["removed_pod_gone"] = bool(wait_for(lambda: gone_id not in pinned_map(), 10, 0.05))

    # Batch hogs at 2x the vCPUs in the BestEffort pod from here on.
    hogs = [spawn_in(be_scope, ["stress-ng", "--cpu", "1", "--quiet"]) for _ in range(4)]
    note("hogs started")

    # The probe runs in the container scope: its wakeups count for its pod's class.
    before = class_stats(1)["nr_wakeups"]
    time.sleep(3)
    out["frontend_wakeups_in_3s"] = class_stats(1)["nr_wakeups"] - before
    out["frontend_preempts"] = class_stats(1)["nr_preempts"]

    st = subprocess.run([sys.executable, "-m", "scx_slo", "status", "--json",
                         "--state-dir", str(WORK / "state")], capture_output=True, text=True)
    out["status_rc"] = st.returncode
    out["status"] = json.loads(st.stdout) if st.stdout.strip().startswith("{") else st.stderr

    import urllib.request
    try:
        with urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=10) as r:
            out["metrics"] = r.read().decode()
    except OSError as e:
        out["metrics"] = f"unreachable: {e}"

    out["miss_log"] = [line for line in agent_log("1").splitlines() if "SLO misses:" in line]

    # SIGKILL: the pinned scheduler stays; a new agent adopts it without a gap.
    sampler = Sampler()
    sampler.start()
    agent.kill()
    agent.wait()
    time.sleep(1)
    agent = start_agent("2")
    adopted = wait_for(lambda: "adopted" in agent_log("2"), 60, 0.2)
    out["kill_adopted"] = bool(adopted)

    # SIGTERM while still enabled in the API: hand off, then adopt again.
    out["term_enabled_rc"], out["term_enabled_s"] = term(agent, "2")
    out["term_enabled_log"] = agent_log("2")[-600:]
    time.sleep(1)
    agent = start_agent("3")
    out["term_adopted"] = bool(wait_for(lambda: "adopted" in agent_log("3"), 60, 0.2))
    sampler.halt.set()
    sampler.join()
    out["states_during_handoffs"] = sorted(sampler.seen)
    out["state_samples"] = sampler.samples
    tag = "3"

    # An upgrade: the next image ships another build of the scheduler (another
    # digest). The agent is killed (pins stay), the new one replaces the pinned one.
    if next_object:
        _maps.pop().close()                # the old maps: re-adopted from the new pins below
        out["pins_before_upgrade"] = pin_names()
        sampler = Sampler()
        sampler.start()
        agent.kill()
        agent.wait()
        (WORK / "user-data").write_text(
            USER_DATA.replace("[scheduler]\n", f'[scheduler]\nobject = "{next_object}"\n', 1))
        tag = "4"
        agent = start_agent(tag)
        out["upgraded"] = bool(wait_for(lambda: "upgraded the scheduler" in agent_log(tag), 120, 0.2))
        out["upgrade_log"] = agent_log(tag)[-1500:]
        out["after_upgrade"] = [state(), attached_ops() or ""]
        out["pins_after_upgrade"] = pin_names()
        out["map_after_upgrade"] = {str(k): v for k, v in wait_for(
            lambda: len(pinned_map()) >= 3 and pinned_map(), 30, 0.2).items()} \
            if out["upgraded"] else {}
        sampler.halt.set()
        sampler.join()
        out["states_during_upgrade"] = sorted(sampler.seen)

    # SIGTERM after the operator disabled the container: detach and unpin.
    ApiClient(API_SOCK).set_settings({"host-containers": {NAME: {"enabled": False}}})
    out["term_disabled_rc"], out["term_disabled_s"] = term(agent, tag)
    out["state_after_disable"] = wait_for(lambda: state() == "disabled" and "disabled", 10) or state()
    out["pins_after_disable"] = pin_names()
    out["last_agent_log"] = agent_log(tag)[-1500:]
    out["agent1_log"] = agent_log("1")[-1500:]

    for p in [probe, g_proc, *hogs]:
        p.kill()
    cri.stop()
    api.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
