"""In the VM: the agent reads SloPolicy objects from a Kubernetes API server (the
fake one in tests/fake_kube_api.py, HTTPS on loopback, as the agent's kubeconfig
names it) while batch hogs saturate the CPU.

A policy adds a class and a rule for the `shop` namespace: the shop pod's cgroup
gets the new class in the pinned map, with no reload (the sched_ext state never
leaves `enabled`); a broken policy is refused, logged with its name and field
path, and changes nothing; deleting the first policy puts the pod back in the
default class. The verdicts come back in the objects' status. The web pod's
class misses on every wakeup: its Warning Event reaches the API server. Prints
one JSON document.
"""
from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))        # tests/
sys.path.insert(0, str(Path(__file__).resolve().parent))            # tests/vm/

from agent_scenario import (API_SOCK, CRI_SOCK, KP, NAME, Sampler, agent_log,  # noqa: E402
                            enable_cpu, make_pod, pinned_map, spawn_in, start_agent, state,
                            term)
from fake_bottlerocket_api import start as start_api  # noqa: E402
from fake_cri import start as start_cri  # noqa: E402
from fake_kube_api import FakeKubeApi  # noqa: E402
from polling import wait_for  # noqa: E402

WORK = Path("/tmp/policy-test")


def user_data() -> str:
    return f"""
[scheduler]
watchdog-timeout = "5s"

[[class]]
name = "critical"
p99 = "10ms"
miss-threshold = "10us"     # under emulation every wakeup misses: an Event for the pod

[[rule]]
class = "critical"
namespace = "web"

[alerts]
threshold = 5
window = "10s"

[kubernetes]
enabled = true
kubeconfig = "{WORK / 'kubeconfig'}"
host-root = "/"
"""


def main() -> None:
    out: dict = {}
    WORK.mkdir(parents=True, exist_ok=True)
    kube = FakeKubeApi().start()
    kube.kubeconfig(WORK / "kubeconfig")
    text = user_data()
    (WORK / "user-data").write_text(text)
    api = start_api(API_SOCK, settings={"host-containers": {NAME: {
        "source": "example.com/scx-slo:test", "enabled": True, "superpowered": True,
        "user-data": base64.b64encode(text.encode()).decode()}}})
    KP.mkdir(exist_ok=True)          # the agent scenario's tree may still be there
    enable_cpu(KP)
    uids = {"web": "1f0e6a2c-0000-4000-8000-00000000000a",
            "shop": "2b7c9d4e-0000-4000-8000-00000000000b",
            "batch": "3c8dae5f-0000-4000-8000-00000000000c"}
    pods = {ns: make_pod("burstable", uid, ch * 64)
            for (ns, uid), ch in zip(uids.items(), "def")}
    cri = start_cri(CRI_SOCK, pods=[{"uid": uid, "namespace": ns, "name": f"{ns}-0"}
                                    for ns, uid in uids.items()])
    ids = {ns: pod.stat().st_ino for ns, (pod, _) in pods.items()}
    procs = [spawn_in(pods["web"][1], [sys.executable, "-c",
                                       "import time\nwhile True: time.sleep(0.001)"]),
             spawn_in(pods["shop"][1], ["sleep", "1000"])]
    started = time.monotonic()
    agent = start_agent("p", WORK)

    def log() -> str:
        return agent_log("p", WORK)

    def cls(ns: str) -> int | None:
        return pinned_map().get(ids[ns])

    # the agent scenario's pods may still be in the map: wait for these three
    out["attached"] = bool(wait_for(lambda: state() == "enabled" and
                                    set(ids.values()) <= set(pinned_map()), 120, 0.2))
    out["before"] = {ns: cls(ns) for ns in ids}
    out["watching"] = bool(wait_for(lambda: kube.watches() >= 1, 30, 0.1))
    procs += [spawn_in(pods["batch"][1], ["stress-ng", "--cpu", "1", "--quiet"])
              for _ in range(2)]
    time.sleep(1)

    sampler = Sampler()
    sampler.start()
    t0 = time.monotonic()
    kube.apply({"metadata": {"name": "shop"}, "spec": {
        "classes": [{"name": "shop", "p99": "100ms"}],
        "rules": [{"class": "shop", "namespace": "shop"}]}})
    out["applied"] = {ns: c for ns, c in zip(ids, wait_for(
        lambda: (cls("shop") == 2) and [cls(ns) for ns in ids], 30, 0.01) or [])}
    out["applied_s"] = time.monotonic() - t0
    out["status_shop"] = wait_for(lambda: (kube.objects["shop"].get("status") or {}), 10, 0.1)

    kube.apply({"metadata": {"name": "broken"}, "spec": {
        "classes": [{"name": "fast", "p99": "1ns"}]}})
    out["refused_logged"] = bool(wait_for(
        lambda: "cluster policy refused: SloPolicy broken: spec.classes[0].p99" in log(),
        30, 0.1))
    out["status_broken"] = wait_for(lambda: (kube.objects["broken"].get("status") or {}), 10, 0.1)
    out["after_broken"] = {ns: cls(ns) for ns in ids}
    # a broken update of the accepted policy: its last good generation stays in force
    kube.apply({"metadata": {"name": "shop"}, "spec": {
        "classes": [{"name": "shop", "p99": "100ms", "weight": 0}],
        "rules": [{"class": "shop", "namespace": "shop"}]}})
    out["update_refused_logged"] = bool(wait_for(
        lambda: "SloPolicy shop: spec.classes[0].weight" in log(), 30, 0.1))
    out["status_shop_2"] = wait_for(
        lambda: (kube.objects["shop"].get("status") or {}).get("observedGeneration") == 2
        and kube.objects["shop"]["status"], 10, 0.1)
    out["after_bad_update"] = {ns: cls(ns) for ns in ids}

    kube.delete("shop")
    out["deleted"] = bool(wait_for(lambda: cls("shop") == out["before"]["shop"], 30, 0.05))
    sampler.halt.set()
    sampler.join()
    out["states"] = sorted(sampler.seen)
    out["samples"] = sampler.samples
    out["loads"] = log().count("loaded and attached")

    api.settings["host-containers"][NAME]["enabled"] = False
    out["term_rc"], _ = term(agent, "p", work=WORK)
    out["state_after"] = wait_for(lambda: state() == "disabled" and "disabled", 10) or state()
    out["run_s"] = time.monotonic() - started
    out["events"] = [{k: e.get(k) for k in ("involvedObject", "reason", "type", "message")}
                     for e in kube.events]
    out["agent_log"] = log()[-3000:]
    for p in procs:
        p.kill()
    cri.stop()
    api.stop()
    kube.stop()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
