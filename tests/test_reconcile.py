"""Planning the class map: rules, capped annotations, pod slices only, removal, capacity."""
from __future__ import annotations

import os

from hypothesis import given, settings as hsettings, strategies as st

import fake_cri
from scx_slo.agent import cgroups
from scx_slo.agent.cgroups import Cgroup, ContainerScope, PodSlice
from scx_slo.agent.cri import Pod, list_pods
from scx_slo.agent.reconcile import NoteFilter, cgroup_patterns, plan, plan_node
from scx_slo.settings.validate import validate_text

CONFIG = validate_text('''
[[class]]
name = "critical"
p99 = "20ms"

[[class]]
name = "interactive"
p99 = "200ms"

[[class]]
name = "relaxed"
p99 = "1s"

[[rule]]
class = "critical"
namespace = "payments"

[[rule]]
class = "interactive"
labels = { tier = "web" }

[[rule]]
class = "relaxed"
cgroup = "system.slice/*.service"

[[rule]]
class = "relaxed"
cgroup = "kubepods.slice/kubepods-besteffort.slice"

[annotations]
namespaces = ["team-*"]
tightest = "100ms"
''', "test.toml").config
CRITICAL, INTERACTIVE, RELAXED = 1, 2, 3


def slice_(n: int, qos: str = "burstable", containers: int = 1) -> PodSlice:
    uid = f"00000000-0000-4000-8000-{n:012d}"
    esc = uid.replace("-", "_")
    if qos == "guaranteed":
        path = f"kubepods.slice/kubepods-pod{esc}.slice"
    else:
        path = f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{esc}.slice"
    scopes = tuple(ContainerScope(id=f"{n:x}{i}" * 8, runtime="cri-containerd",
                                  path=f"{path}/cri-containerd-{n:x}{i}.scope",
                                  cgroup_id=100_000 + n * 10 + i) for i in range(containers))
    return PodSlice(uid=uid, qos=qos, path=path, cgroup_id=1000 + n, containers=scopes)


def pod(n: int, namespace: str = "default", labels=None, annotations=None) -> Pod:
    return Pod(uid=f"00000000-0000-4000-8000-{n:012d}", namespace=namespace, name=f"pod-{n}",
               labels=labels or {}, annotations=annotations or {})


def test_rules_class_pod_slices_and_container_scopes_are_not_entries():
    slices = [slice_(1, "guaranteed", 2), slice_(2), slice_(3)]
    pods = [pod(1, "payments"), pod(2, "shop", {"tier": "web"}), pod(3, "shop")]
    p = plan(CONFIG, slices, pods, [], current={})
    assert p.desired == {
        1001: (CRITICAL, "pod payments/pod-1: rule[0]"),
        1002: (INTERACTIVE, "pod shop/pod-2: rule[1]"),
        1003: (0, "pod shop/pod-3: no rule or annotation"),
    }
    scope_ids = {c.cgroup_id for s in slices for c in s.containers}
    assert len(scope_ids) == 4 and not scope_ids & set(p.desired)
    assert p.adds == {1001: CRITICAL, 1002: INTERACTIVE, 1003: 0}
    assert (p.changes, p.removes, p.notes, p.unknown_pods) == ({}, [], [], [])


def test_annotations_granted_capped_and_refused_each_say_why():
    key = "slo.latency.p99"
    slices = [slice_(i) for i in range(1, 6)]
    pods = [pod(1, "team-a", annotations={key: "500ms"}),     # meets: interactive
            pod(2, "team-a", annotations={key: "10ms"}),      # tighter than 100ms: capped
            pod(3, "default", annotations={key: "200ms"}),    # namespace not allowed
            pod(4, "team-b", annotations={key: "fast"}),      # not a duration
            pod(5, "payments", annotations={key: "5s"})]      # a rule wins over annotations
    p = plan(CONFIG, slices, pods, [], current={})
    got = {cid: cls for cid, (cls, _) in p.desired.items()}
    assert got == {1001: INTERACTIVE, 1002: INTERACTIVE, 1003: 0, 1004: 0, 1005: CRITICAL}
    assert "class interactive (p99 200ms)" in p.desired[1001][1]
    assert len(p.notes) == 3
    capped, refused_ns, refused_value = p.notes
    assert capped.startswith("pod team-a/pod-2 (00000000-0000-4000-8000-000000000002): ")
    assert "claimed 10ms is tighter than the allowed 100ms; capped to 100ms" in capped
    assert "namespace 'default' is not in annotations.namespaces ['team-*']" in refused_ns
    assert refused_value.startswith("pod team-b/pod-4") and "refused" in refused_value
    for n in p.notes:
        print("note:", n)


def test_cgroup_rules_class_services_and_default_pods_under_a_matching_ancestor():
    slices = [slice_(1, "besteffort"), slice_(2, "besteffort")]
    pods = [pod(1, "shop"), pod(2, "payments")]
    sshd = Cgroup("system.slice/sshd.service", 77)
    stray = Cgroup("other.slice/x.service", 78)          # enumerated, no rule matches it
    p = plan(CONFIG, slices, pods, [sshd, stray], current={})
    assert p.desired == {
        1001: (RELAXED, "pod shop/pod-1: cgroup kubepods.slice/kubepods-besteffort.slice: "
                        "rule[3]"),
        1002: (CRITICAL, "pod payments/pod-2: rule[0]"),  # the pod rule wins
        77: (RELAXED, "cgroup system.slice/sshd.service: rule[2]"),
    }
    assert cgroup_patterns(CONFIG) == ["system.slice/*.service",
                                       "kubepods.slice/kubepods-besteffort.slice"]


def test_a_pod_the_runtime_does_not_list_yet_gets_an_entry_and_is_reported():
    p = plan(CONFIG, [slice_(1), slice_(2, "besteffort")], [], [], current={})
    assert p.unknown_pods == [slice_(1).uid, slice_(2).uid]
    assert p.desired[1001] == (0, f"pod {slice_(1).uid}: runtime does not list this pod (yet)")
    assert p.desired[1002][0] == RELAXED


def test_diff_against_the_map_adds_changes_removes_and_then_is_empty():
    slices = [slice_(1), slice_(2), slice_(3)]
    pods = [pod(1, "payments"), pod(2, "shop", {"tier": "web"}), pod(3)]
    current = {1001: CRITICAL, 1002: 0, 9999: RELAXED}     # 9999: a pod that is gone
    p = plan(CONFIG, slices, pods, [], current)
    assert p.adds == {1003: 0}
    assert p.changes == {1002: INTERACTIVE} and p.changed_from == {1002: 0}
    assert p.removes == [9999]
    assert p.summary() == "3 entries: +1 ~1 -1"
    applied = {cid: cls for cid, (cls, _) in p.desired.items()}
    assert plan(CONFIG, slices, pods, [], applied).empty_diff


def test_a_removed_pod_slice_is_removed_from_the_map():
    slices = [slice_(1), slice_(2)]
    pods = [pod(1, "payments"), pod(2, "payments")]
    first = plan(CONFIG, slices, pods, [], {})
    current = {cid: cls for cid, (cls, _) in first.desired.items()}
    second = plan(CONFIG, slices[:1], pods, [], current)    # pod 2's cgroup is gone
    assert second.removes == [1002] and not second.adds and not second.changes


def test_capacity_keeps_the_highest_classes_and_reports_the_rest():
    slices = [slice_(i) for i in range(1, 7)]
    pods = [pod(1), pod(2, "shop", {"tier": "web"}), pod(3, "payments"), pod(4),
            pod(5, "shop", {"tier": "web"}), pod(6)]
    p = plan(CONFIG, slices, pods, [Cgroup("system.slice/a.service", 50)], current={1006: 0},
             max_entries=4)
    kept = {cid: cls for cid, (cls, _) in p.desired.items()}
    # critical, both interactive, then the relaxed service; no default pod fits
    assert kept == {1003: CRITICAL, 1002: INTERACTIVE, 1005: INTERACTIVE, 50: RELAXED}
    assert sorted(e.cgroup_id for e in p.dropped) == [1001, 1004, 1006]
    assert p.removes == [1006]
    (note,) = p.notes
    assert note.startswith("class map full (4 entries): 3 cgroups left out") and "3 default" in note
    # with room for one default pod, the one already in the map stays
    p5 = plan(CONFIG, slices, pods, [Cgroup("system.slice/a.service", 50)], current={1006: 0},
              max_entries=5)
    assert 1006 in p5.desired and 1006 not in p5.removes


def test_note_filter_logs_each_note_once_until_it_goes_away():
    f = NoteFilter()
    assert f.new(["a", "b"]) == ["a", "b"]
    assert f.new(["a", "b"]) == []
    assert f.new(["b"]) == []
    assert f.new(["a", "b"]) == ["a"]


@hsettings(max_examples=150, deadline=None)
@given(st.dictionaries(st.integers(1, 40), st.sampled_from(["payments", "web", "plain", None]),
                       max_size=25),
       st.dictionaries(st.integers(1001, 1060), st.integers(0, 3), max_size=25),
       st.integers(1, 30))
def test_applying_the_diff_yields_exactly_the_desired_map(spec, current, cap):
    slices = [slice_(n) for n in spec]
    pods = [pod(n, "payments") if k == "payments" else pod(n, "shop", {"tier": "web"})
            if k == "web" else pod(n) for n, k in spec.items() if k is not None]
    p = plan(CONFIG, slices, pods, [], current, max_entries=cap)
    after = {cid: cls for cid, cls in current.items() if cid not in p.removes}
    after.update(p.adds)
    after.update(p.changes)
    assert after == {cid: cls for cid, (cls, _) in p.desired.items()}
    assert len(p.desired) == min(cap, len(spec))
    # never a lower class kept while a higher one was dropped
    if p.dropped:
        prio = {c.id: c.priority for c in CONFIG.classes}
        assert max(prio[c] for c, _ in p.desired.values()) <= min(
            prio[e.class_id] for e in p.dropped)


def test_end_to_end_tree_and_fake_runtime(tmp_path):
    """Real directories, real gRPC: discovery + ListPodSandbox + plan."""
    root = tmp_path / "cgroup"
    s1, s2, s3 = slice_(1, "guaranteed"), slice_(2, "burstable"), slice_(3, "besteffort")
    for s in (s1, s2, s3):
        for c in s.containers:
            (root / c.path).mkdir(parents=True)
    (root / "system.slice" / "sshd.service").mkdir(parents=True)
    specs = [{"uid": s1.uid, "namespace": "payments", "name": "api"},
             {"uid": s2.uid, "namespace": "team-x", "name": "ui",
              "annotations": {"slo.latency.p99": "300ms"}},
             {"uid": s3.uid, "namespace": "jobs", "name": "batch"}]
    with fake_cri.start(str(tmp_path / "cri.sock"), specs) as server:
        pods = list_pods(server.path, timeout=5)
    found = cgroups.discover_pods(str(root))
    globbed = cgroups.match_globs(str(root), cgroup_patterns(CONFIG))
    p = plan(CONFIG, found, pods, globbed, current={})
    qos = "kubepods.slice/kubepods-besteffort.slice"
    ino = {rel: os.stat(root / rel).st_ino for rel in
           (s1.path, s2.path, s3.path, "system.slice/sshd.service", qos)}
    # the QoS slice is an entry of its own: a cgroup rule names it
    assert {cid: cls for cid, (cls, _) in p.desired.items()} == {
        ino[s1.path]: CRITICAL, ino[s2.path]: INTERACTIVE, ino[s3.path]: RELAXED,
        ino["system.slice/sshd.service"]: RELAXED, ino[qos]: RELAXED}


def test_a_pod_the_runtime_stops_listing_keeps_its_class():
    slices = [slice_(1), slice_(2)]
    p = plan(CONFIG, slices, [], [], current={1001: CRITICAL})
    assert p.desired[1001] == (CRITICAL, f"pod {slice_(1).uid}: runtime does not list it; "
                                         "keeps class critical")
    assert p.empty_diff is False and p.adds == {1002: 0} and not p.changes
    assert p.pods_by_class == {CRITICAL: 1, 0: 1}


def _tree(root):
    s1, s2 = slice_(1, "guaranteed"), slice_(2, "burstable")
    for s in (s1, s2):
        for c in s.containers:
            (root / c.path).mkdir(parents=True)
    return s1, s2


def test_plan_node_discovers_and_asks_the_runtime(tmp_path):
    root = tmp_path / "cgroup"
    s1, s2 = _tree(root)
    specs = [{"uid": s1.uid, "namespace": "payments", "name": "api"},
             {"uid": s2.uid, "namespace": "team-x", "name": "ui",
              "annotations": {"slo.latency.p99": "1ms"}}]
    notes = NoteFilter()
    with fake_cri.start(str(tmp_path / "cri.sock"), specs) as server:
        p = plan_node(CONFIG, str(root), server.path, {}, capacity=100, note_filter=notes)
        id1, id2 = os.stat(root / s1.path).st_ino, os.stat(root / s2.path).st_ino
        assert {cid: c for cid, (c, _) in p.desired.items()} == {id1: CRITICAL, id2: INTERACTIVE}
        assert p.pods_by_class == {CRITICAL: 1, INTERACTIVE: 1}
        assert len(p.messages) == 1 and "capped to 100ms" in p.messages[0]
        applied = {cid: c for cid, (c, _) in p.desired.items()}
        again = plan_node(CONFIG, str(root), server.path, applied, note_filter=notes)
        assert again.empty_diff and again.messages == [] and len(again.notes) == 1
    # the runtime is gone: a note once, and the pods keep their classes
    down = plan_node(CONFIG, str(root), server.path, applied, note_filter=notes)
    assert down.empty_diff
    assert down.messages[0].startswith(f"CRI {server.path}: no such socket")
    assert "pods keep the classes they have" in down.messages[0]
