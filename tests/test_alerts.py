"""Per-pod SLO-miss alerts (scx_slo.agent.alerts) on the host: what the agent does with
the scheduler's miss records (the records themselves are tested in the VM:
test_scheduler_vm.py, test_agent_vm.py). Events go to tests/fake_kube_api.py over
HTTPS with the official client."""
from __future__ import annotations

import dataclasses

import pytest

from fake_kube_api import FakeKubeApi
from scx_slo.agent import alerts as A
from scx_slo.agent.alerts import MissAlerts, PodRef, PodResolver
from scx_slo.agent.policies import api_client, event_sink
from scx_slo.agent.reconcile import Entry
from scx_slo.settings.model import Alerts, S

WEB = PodRef("web", "frontend-0", "uid-1")


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Out:
    def __init__(self):
        self.lines: list[tuple[str, dict]] = []

    def warning(self, msg, **fields):
        self.lines.append((msg, fields))


def rec(cgid=11, delay_ms=3.0, class_id=1) -> dict:
    return {"cgid": cgid, "delay_ns": int(delay_ms * 1e6), "class_id": class_id,
            "pid": 7, "cpu": 0, "at_ns": 0}


def make(cfg=Alerts(), events=True):
    clock, out = Clock(), Out()
    a = MissAlerts(cfg, {11: WEB}.get, lambda c: {1: "critical"}.get(c, str(c)), out,
                   events=events, clock=clock, node="ip-10-0-0-1")
    return a, clock, out


def test_counts_and_delay_buckets_per_pod():
    a, clock, _ = make()
    for d in (0.5, 3, 3, 40, 9000):
        a.on_record(rec(delay_ms=d))
    a.on_record(rec(cgid=99))
    pm = a.pods["web/frontend-0"]
    assert pm.total == 5 and pm.class_name == "critical"
    assert pm.buckets[0] == 1                      # <= 1 ms
    assert pm.buckets[A.DELAY_BUCKETS.index(0.005)] == 2
    assert pm.buckets[A.DELAY_BUCKETS.index(0.05)] == 1
    assert pm.buckets[-1] == 1                     # over the last bound
    assert pm.delay_sum_s == pytest.approx(9.0465)
    assert a.unresolved == 1


def test_one_journal_line_per_pod_per_interval():
    a, clock, out = make(Alerts(log_interval_ns=10 * S))
    for _ in range(50):
        a.on_record(rec(delay_ms=2))
        clock.t += 0.1                             # 5 s of misses
    assert len(out.lines) == 1
    clock.t += 5.1
    a.on_record(rec(delay_ms=7))
    assert len(out.lines) == 2
    msg, fields = out.lines[1]
    assert msg == "SLO misses: pod web/frontend-0 (class critical): 50 since the last report, " \
                  "worst 7.0 ms"
    assert fields["misses"] == 50 and fields["pod"] == "web/frontend-0"


def test_an_event_when_the_window_reaches_the_threshold_then_not_before_it_passes():
    a, clock, _ = make(Alerts(threshold=5, window_ns=60 * S))
    for _ in range(4):
        a.on_record(rec())
        clock.t += 20                              # 4 misses, 20 s apart: 3 in any 60 s
    assert a.take_events() == []
    for _ in range(5):
        a.on_record(rec())
    (ev,) = a.take_events()
    assert ev[0] == WEB and ev[1] == "SloMisses"
    # the two misses of the last 60 s before and three of these
    assert ev[2] == ("5 scheduling delays over the critical class's miss threshold in the "
                     "last 60 s on node ip-10-0-0-1")
    for _ in range(20):
        a.on_record(rec())
        clock.t += 1
    assert a.take_events() == []                   # not again within the window
    clock.t += 41
    a.on_record(rec())
    assert len(a.take_events()) == 1


def test_no_events_when_they_are_off():
    a, _, _ = make(Alerts(threshold=1), events=False)
    a.on_record(rec())
    assert a.take_events() == []


def test_pods_are_bounded():
    a, _, _ = make()
    a.resolve = lambda cgid: PodRef("ns", f"p{cgid}")
    for i in range(A.MAX_PODS + 10):
        a.on_record(rec(cgid=i))
    assert len(a.pods) == A.MAX_PODS
    assert "ns/p0" not in a.pods and f"ns/p{A.MAX_PODS + 9}" in a.pods


def test_resolver_finds_a_container_scopes_pod(tmp_path):
    pod = tmp_path / "kubepods.slice" / "kubepods-burstable.slice" / "kubepods-burstable-podu1.slice"
    scope = pod / "cri-containerd-abc.scope"
    scope.mkdir(parents=True)
    entry = Entry(cgroup_id=pod.stat().st_ino, class_id=1, class_name="critical", priority=1,
                  why="rule[0]", path=str(pod.relative_to(tmp_path)), uid="u1", pod="web/frontend-0")
    r = PodResolver(str(tmp_path))
    r.update({entry.cgroup_id: entry})
    assert r(pod.stat().st_ino) == PodRef("web", "frontend-0", "u1")
    assert r(scope.stat().st_ino) == PodRef("web", "frontend-0", "u1")
    assert r(12345) is None
    r.update({})
    assert r(scope.stat().st_ino) is None


def test_the_event_reaches_the_api_server(tmp_path):
    with FakeKubeApi() as api:
        client = api_client(str(api.kubeconfig(tmp_path / "kubeconfig")))
        post = event_sink(client, "ip-10-0-0-1")
        post(WEB, "SloMisses", "5 scheduling delays")
        client.close()
    (ev,) = api.events
    assert ev["involvedObject"] == {"apiVersion": "v1", "kind": "Pod", "namespace": "web",
                                    "name": "frontend-0", "uid": "uid-1"}
    assert (ev["type"], ev["reason"], ev["message"]) == ("Warning", "SloMisses",
                                                         "5 scheduling delays")
    assert ev["metadata"]["name"].startswith("frontend-0.")
    assert ev["source"] == {"component": "scx-slo", "host": "ip-10-0-0-1"}


def test_alerts_settings_validate():
    from scx_slo.settings.errors import ValidationError
    from scx_slo.settings.validate import validate_text

    cfg = validate_text('[scheduler]\n[alerts]\nthreshold = 5\nwindow = "30s"\n'
                        'log-interval = "5s"\nevents = false\n').config.alerts
    assert dataclasses.astuple(cfg) == (True, 5, 30 * S, 5 * S, False)
    with pytest.raises(ValidationError) as e:
        validate_text('[scheduler]\n[alerts]\nthreshold = 0\nwindw = "1s"\n')
    keys = {i.key for i in e.value.issues}
    assert keys == {"alerts.threshold", "alerts.windw"}
