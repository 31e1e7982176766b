"""Tenant abuse through the annotation policy, and a class map that cannot hold every pod.

A tenant controls its pods' annotations, namespaces' names and how many pods it runs,
never the operator's settings. Whatever it writes: no pod gets a class tighter than
annotations.tightest through an annotation, refusals and caps say why (once per pod,
not every reconcile), and pods classed by operator rules keep their class.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scx_slo.agent.cgroups import PodSlice
from scx_slo.agent.cri import Pod
from scx_slo.agent.reconcile import NoteFilter, plan
from scx_slo.settings.durations import parse_duration
from scx_slo.settings.validate import validate_text

from faults.conftest import TABLE, size

pytestmark = pytest.mark.faults

CONFIG = validate_text('''
[[class]]
name = "critical"          # operator-only: tighter than annotations.tightest
p99 = "10ms"

[[class]]
name = "web"
p99 = "250ms"

[[class]]
name = "relaxed"
p99 = "2s"

[[rule]]
class = "critical"
namespace = "payments"

[annotations]
key = "slo.latency.p99"
namespaces = ["team-*"]
tightest = "250ms"
''', "tenant.toml").config
CRITICAL, WEB, RELAXED = 1, 2, 3
KEY = "slo.latency.p99"
TIGHTEST = CONFIG.annotations.tightest_ns

claims = st.one_of(
    st.builds(lambda n, u: f"{n}{u}", st.integers(0, 10**6), st.sampled_from(["ns", "us", "ms", "s"])),
    st.sampled_from(["0", "-1ms", "1e-9s", "0.000001ns", "1ms ", " 1ms", "1 ms", "critical",
                     "p99=1ms", "1ms,1ms", "", "∞", "1µs", "NaN", "0x1ms", "1" * 100 + "ms",
                     "100ms\n", "\x001ms"]),
    st.text(max_size=40))
namespaces = st.one_of(st.sampled_from(["team-a", "team-", "team-*", "payments", "kube-system",
                                        "TEAM-A", "team-a/../payments", "", "team-a\x00"]),
                       st.text(max_size=20))


def _tenant_pod_class_ok(ns: str, value: str) -> tuple[int, str]:
    cls, why = CONFIG.class_for_pod(ns, {}, {KEY: value})
    if ns == "payments":
        # an operator rule: the annotation can neither raise nor lower it
        assert cls.id == CRITICAL and why == "rule[0]"
        return cls.id, why
    assert cls.id != CRITICAL, (ns, value, why)
    assert cls.p99_ns is None or cls.p99_ns >= TIGHTEST, (ns, value, why)
    if cls.id != 0:
        # only tenant namespaces can annotate, and only with a readable duration
        assert ns.startswith("team-") and why.startswith(f"annotation {KEY}=")
        parse_duration(value)
    elif value.strip():
        assert KEY in why   # a refusal names the annotation and says why
    return cls.id, why


def test_annotation_claims():
    row = TABLE.row("tenant.annotations")

    @settings(max_examples=size(1000, 50000), deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(namespaces, claims)
    def prop(ns, value):
        with row.case():
            class_id, _why = _tenant_pod_class_ok(ns, value)
            d = CONFIG.annotation_class(ns, value)
            if d.capped:
                assert "capped" in d.reason or "refused" in d.reason or "no class" in d.reason
            row.observe(CONFIG.classes[class_id].name)

    prop()


def test_named_abuses():
    row = TABLE.row("tenant.annotations")
    cases = [
        ("team-a", "1ns", WEB, "capped"),          # tighter than allowed: capped at 250ms
        ("team-a", "250ms", WEB, None),
        ("team-a", "1s", WEB, None),               # loosest class still meeting 1s: web
        ("team-a", "5s", RELAXED, None),
        ("kube-system", "1ms", 0, "not in annotations.namespaces"),
        ("default", "250ms", 0, "not in annotations.namespaces"),
        ("team-a", "fast", 0, "refused"),
        ("team-a", "-5ms", 0, "negative"),
        ("team-a", "5", 0, "no unit"),
        ("team-a", "1" * 100 + "ms", 0, "too long"),
        ("payments", "10h", CRITICAL, None),       # operator rule wins over the annotation
    ]
    for ns, value, want, fragment in cases:
        with row.case():
            cls, why = CONFIG.class_for_pod(ns, {}, {KEY: value})
            assert cls.id == want, (ns, value, why)
            if fragment:
                assert fragment in why, why
            row.observe(f"{ns} {value[:12]!r} -> {cls.name}")


def _slice(n: int) -> PodSlice:
    uid = f"00000000-0000-4000-8000-{n:012d}"
    return PodSlice(uid=uid, qos="burstable",
                    path=f"kubepods.slice/kubepods-burstable.slice/"
                         f"kubepods-burstable-pod{uid.replace('-', '_')}.slice",
                    cgroup_id=10_000 + n)


def test_thousands_claiming_critical():
    """N tenant pods all claim 1us; a few operator-classed payments pods run beside them."""
    row = TABLE.row("tenant.flood")
    n = size(3000, 50000)
    slices = [_slice(i) for i in range(n)]
    pods = []
    for i, s in enumerate(slices):
        if i % 1000 == 0:
            pods.append(Pod(uid=s.uid, namespace="payments", name=f"pay-{i}"))
        else:
            pods.append(Pod(uid=s.uid, namespace=f"team-{i % 7}", name=f"greedy-{i}",
                            annotations={KEY: "1us"}))
    with row.case():
        p = plan(CONFIG, slices, pods, [], {})
        by_class: dict[int, int] = {}
        for e in p.entries.values():
            by_class[e.class_id] = by_class.get(e.class_id, 0) + 1
        payments = sum(1 for pod in pods if pod.namespace == "payments")
        assert by_class == {CRITICAL: payments, WEB: n - payments}, by_class
        # every capped pod is noted (the operator can see who tried), ...
        assert len(p.notes) == n - payments
        assert all("capped" in note for note in p.notes)
        # ... and the loop logs each once: a second reconcile has nothing new to say
        f = NoteFilter()
        assert len(f.new(p.notes)) == n - payments
        again = plan(CONFIG, slices, pods, [], {cid: e.class_id for cid, e in p.entries.items()})
        assert again.empty_diff and f.new(again.notes) == []
        row.observe(f"{n - payments} greedy pods -> web (capped)")
        row.observe(f"{payments} payments pods -> critical (rule)")


def test_map_full_keeps_the_highest_classes():
    row = TABLE.row("churn.map_full")
    capacity = 500
    n = size(2000, 40000)
    slices = [_slice(i) for i in range(n)]
    pods = []
    for i, s in enumerate(slices):
        ns = "payments" if i % 10 == 0 else f"team-{i % 3}"
        value = "250ms" if i % 10 in (1, 2) else "2s"
        pods.append(Pod(uid=s.uid, namespace=ns, name=f"p{i}", annotations={KEY: value}))
    with row.case():
        p = plan(CONFIG, slices, pods, [], {}, max_entries=capacity)
        assert len(p.entries) == capacity and len(p.dropped) == n - capacity
        kept = [e.priority for e in p.entries.values()]
        lost = [e.priority for e in p.dropped]
        assert max(kept) <= min(lost), "a lower class kept while a higher one was dropped"
        assert sum(1 for e in p.entries.values() if e.class_id == CRITICAL) == n // 10
        assert any("class map full" in note for note in p.notes), p.notes
        row.observe(f"{n} pods into {capacity} entries: {len(p.dropped)} dropped, "
                    f"lowest classes first")
    # Churn at capacity: entries already in the map are kept over new ones of the same class.
    with row.case():
        current = {cid: e.class_id for cid, e in p.entries.items()}
        newcomer = _slice(n + 1)
        pods2 = pods + [Pod(uid=newcomer.uid, namespace="team-0", name="new",
                            annotations={KEY: "2s"})]
        p2 = plan(CONFIG, slices + [newcomer], pods2, [], current, max_entries=capacity)
        assert newcomer.cgroup_id not in p2.entries
        assert p2.empty_diff, p2.summary()
        row.observe("at capacity: a new low-class pod does not evict a mapped one")
