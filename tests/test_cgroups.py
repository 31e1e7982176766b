"""Discovery of the kubelet's systemd-driver cgroup layout, and the watcher."""
from __future__ import annotations

import os
import threading
import time

import pytest

from scx_slo.agent import cgroups
from scx_slo.agent.cgroups import (
    CREATED,
    REMOVED,
    RESYNC,
    CgroupError,
    CgroupWatcher,
    discover_pods,
    glob_watch_dirs,
    match_globs,
    parse_pod_slice,
    pod_uid_of,
)

UID_G = "11111111-aaaa-4bbb-8ccc-000000000001"
UID_B = "22222222-aaaa-4bbb-8ccc-000000000002"
UID_E = "33333333-aaaa-4bbb-8ccc-000000000003"
CID1 = "a" * 64
CID2 = "b" * 64


def esc(uid: str) -> str:
    return uid.replace("-", "_")


def pod_dir(qos: str, uid: str) -> str:
    if qos == "guaranteed":
        return f"kubepods.slice/kubepods-pod{esc(uid)}.slice"
    return f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{esc(uid)}.slice"


def make_tree(root) -> dict[str, str]:
    """A kubepods-shaped tree of real directories, with the files cgroupfs would show."""
    dirs = {
        "g": pod_dir("guaranteed", UID_G),
        "g1": pod_dir("guaranteed", UID_G) + f"/cri-containerd-{CID1}.scope",
        "b": pod_dir("burstable", UID_B),
        "b1": pod_dir("burstable", UID_B) + f"/cri-containerd-{CID2}.scope",
        "e": pod_dir("besteffort", UID_E),
        "sshd": "system.slice/sshd.service",
        "kubelet": "system.slice/kubelet.service",
        "mount": "system.slice/var-lib.mount",
    }
    for rel in dirs.values():
        (root / rel).mkdir(parents=True, exist_ok=True)
    # things that are not pods: files, a stray directory, a foreign scope
    (root / "kubepods.slice" / "cpu.weight").write_text("100\n")
    (root / "kubepods.slice" / "kubepods-burstable.slice" / "not-a-pod").mkdir()
    (root / pod_dir("burstable", UID_B) / "cgroup.procs").write_text("")
    (root / pod_dir("burstable", UID_B) / "something-else.scope").mkdir()
    return dirs


def test_discovers_pods_of_every_qos_with_inode_ids(tmp_path):
    dirs = make_tree(tmp_path)
    pods = {p.uid: p for p in discover_pods(str(tmp_path))}
    assert set(pods) == {UID_G, UID_B, UID_E}
    assert {u: p.qos for u, p in pods.items()} == {
        UID_G: "guaranteed", UID_B: "burstable", UID_E: "besteffort"}
    for key, uid in (("g", UID_G), ("b", UID_B), ("e", UID_E)):
        assert pods[uid].path == dirs[key]
        assert pods[uid].cgroup_id == os.stat(tmp_path / dirs[key]).st_ino
    (c,) = pods[UID_B].containers
    assert (c.id, c.runtime, c.path) == (CID2, "cri-containerd", dirs["b1"])
    assert c.cgroup_id == os.stat(tmp_path / dirs["b1"]).st_ino != pods[UID_B].cgroup_id
    assert [c.id for c in pods[UID_G].containers] == [CID1]
    assert pods[UID_E].containers == ()


def test_no_kubepods_is_no_pods(tmp_path):
    assert discover_pods(str(tmp_path)) == []


def test_a_pod_removed_is_gone_on_the_next_discovery(tmp_path):
    dirs = make_tree(tmp_path)
    os.rmdir(tmp_path / dirs["b1"])
    os.rmdir(tmp_path / dirs["b"] / "something-else.scope")
    os.unlink(tmp_path / dirs["b"] / "cgroup.procs")
    os.rmdir(tmp_path / dirs["b"])
    assert {p.uid for p in discover_pods(str(tmp_path))} == {UID_G, UID_E}


def test_slice_names_parse_back_to_uids():
    assert parse_pod_slice(f"kubepods-burstable-pod{esc(UID_B)}.slice") == ("burstable", UID_B)
    assert parse_pod_slice(f"kubepods-pod{esc(UID_G)}.slice") == ("guaranteed", UID_G)
    assert parse_pod_slice("kubepods-burstable.slice") is None
    assert parse_pod_slice("kubepods-weird-pod1.slice") is None
    line = f"/{pod_dir('besteffort', UID_E)}/cri-containerd-{CID1}.scope"
    assert pod_uid_of(line) == UID_E
    assert pod_uid_of("/system.slice/sshd.service") is None


def test_glob_rules_match_directories_only(tmp_path):
    dirs = make_tree(tmp_path)
    (tmp_path / "system.slice" / "fake.service").write_text("a file, not a cgroup")
    got = match_globs(str(tmp_path), ["system.slice/*.service", "/system.slice/sshd.service",
                                      "nothing/*"])
    assert [c.path for c in got] == [dirs["kubelet"], dirs["sshd"]]
    assert got[1].cgroup_id == os.stat(tmp_path / dirs["sshd"]).st_ino
    assert glob_watch_dirs(["system.slice/*.service", "a/b/c", "x*/y"]) == [
        "system.slice", "a/b", ""]


def test_cpu_weight_helpers(tmp_path):
    (tmp_path / "cpu.weight").write_text("100\n")
    assert cgroups.read_cpu_weight(str(tmp_path)) == 100
    cgroups.write_cpu_weight(str(tmp_path), 250)
    assert cgroups.read_cpu_weight(str(tmp_path)) == 250
    with pytest.raises(CgroupError, match="outside 1..10000"):
        cgroups.write_cpu_weight(str(tmp_path), 0)
    with pytest.raises(CgroupError, match=r"nope/cpu\.weight: cannot read"):
        cgroups.read_cpu_weight(str(tmp_path / "nope"))


def _wait_for(watcher, kind, path, limit=10.0):
    """Poll until a change of KIND at PATH arrives; the seconds it took, or None."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        for c in watcher.poll(timeout=0.5):
            if c.kind == kind and c.path == path:
                return time.monotonic() - t0
    return None


def _delay_of(watcher, kind, path, act, limit=10.0):
    """Seconds from ACT() (run by another thread while the watcher is blocked in
    poll) to the watcher reporting a change of KIND at PATH; None if it never does."""
    done = {}

    def later():
        time.sleep(0.2)
        done["t"] = time.monotonic()
        act()

    t = threading.Thread(target=later)
    t.start()
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit:
            for c in watcher.poll(timeout=0.5):
                if c.kind == kind and c.path == path:
                    return time.monotonic() - done["t"]
        return None
    finally:
        t.join()


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "listing"])
def test_watcher_sees_pod_slices_come_and_go(tmp_path, use_inotify):
    """Each change is reported; how fast depends on this machine, so it is printed
    (a few ms with inotify, up to the 0.25 s listing interval without), not asserted."""
    make_tree(tmp_path)
    with CgroupWatcher(str(tmp_path), resync_interval=30, use_inotify=use_inotify) as w:
        assert w.mode == ("inotify" if use_inotify else "poll")
        assert [c.kind for c in w.poll(0)] == [RESYNC]          # the first call: discover
        assert {"", "kubepods.slice", "kubepods.slice/kubepods-burstable.slice",
                "kubepods.slice/kubepods-besteffort.slice"} <= set(w.watched())
        new = tmp_path / pod_dir("burstable", "44444444-aaaa-4bbb-8ccc-000000000004")
        rel = str(new.relative_to(tmp_path))
        delay = _delay_of(w, CREATED, rel, new.mkdir)
        assert delay is not None
        print(f"\n[{w.mode}] pod slice created -> reported in {delay * 1000:.1f} ms")
        delay = _delay_of(w, REMOVED, rel, new.rmdir)
        assert delay is not None
        print(f"[{w.mode}] pod slice removed -> reported in {delay * 1000:.1f} ms")
        guaranteed = pod_dir("guaranteed", "55555555-aaaa-4bbb-8ccc-000000000005")
        (tmp_path / guaranteed).mkdir()
        assert _wait_for(w, CREATED, guaranteed) is not None


@pytest.mark.parametrize("use_inotify", [True, False], ids=["inotify", "listing"])
def test_watcher_follows_kubepods_appearing_later(tmp_path, use_inotify):
    with CgroupWatcher(str(tmp_path), resync_interval=30, use_inotify=use_inotify) as w:
        w.poll(0)
        assert w.watched() == [""]
        (tmp_path / "kubepods.slice" / "kubepods-besteffort.slice").mkdir(parents=True)
        changes = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10 and "kubepods.slice/kubepods-besteffort.slice" \
                not in w.watched():
            changes += w.poll(0.2)
        assert "kubepods.slice/kubepods-besteffort.slice" in w.watched()
        assert any(c.kind in (CREATED, RESYNC) for c in changes)
        new = pod_dir("besteffort", UID_E)
        (tmp_path / new).mkdir()
        assert _wait_for(w, CREATED, new) is not None
        assert discover_pods(str(tmp_path))[0].uid == UID_E


def test_watcher_asks_for_a_periodic_resync(tmp_path):
    make_tree(tmp_path)
    with CgroupWatcher(str(tmp_path), resync_interval=0.3) as w:
        w.poll(0)
        t0 = time.monotonic()
        changes = w.poll(timeout=2.0)
        waited = time.monotonic() - t0
        assert [(c.kind, c.why) for c in changes] == [(RESYNC, "periodic")]
        assert 0.2 < waited < 1.0


def test_watcher_sees_glob_directories(tmp_path):
    make_tree(tmp_path)
    with CgroupWatcher(str(tmp_path), extra_dirs=glob_watch_dirs(["system.slice/*.service"]),
                       resync_interval=30) as w:
        w.poll(0)
        (tmp_path / "system.slice" / "nginx.service").mkdir()
        assert _wait_for(w, CREATED, "system.slice/nginx.service") is not None


@pytest.mark.vm
def test_real_cgroup2_tree_in_the_guest(vm):
    """Discovery on the guest's real cgroup2: ids are the kernel's cgroup ids (the
    file-handle id name_to_handle_at reports = kn->id, what BPF sees), a process in
    a container scope is attributed to its pod, the fake CRI answers over gRPC in
    the guest, and the watcher sees a new pod slice on cgroupfs."""
    import json

    r = vm.run(["python3", "/opt/scx-slo/src/tests/guest_discovery.py"], timeout=300).check()
    out = json.loads(r.stdout.strip().splitlines()[-1])
    print(f"\nguest: discovery {out['discover_ms']:.1f} ms; watcher ({out['watch_mode']}): "
          f"created seen in {out['watch_created_ms']:.1f} ms, "
          f"removed in {out['watch_removed_ms']:.1f} ms")
    assert "cleanup_errors" not in out
    assert out["fake_cri"].startswith("listening ")
    pods = {p["qos"]: p for p in out["pods"]}
    assert set(pods) == {"guaranteed", "burstable", "besteffort"}
    for p in out["pods"]:
        assert p["cgroup_id"] == p["kernfs_id"]
        (c,) = p["containers"]
        assert c["cgroup_id"] == c["kernfs_id"] != p["cgroup_id"]
    assert [g["path"] for g in out["globbed"]] == ["system.slice/demo.service"]
    assert out["globbed"][0]["cgroup_id"] == out["globbed"][0]["kernfs_id"]
    # the sleeping process sits in the burstable pod's container scope
    assert out["sleeper_cgroup"] == "/" + pods["burstable"]["containers"][0]["path"]
    assert cgroups.pod_uid_of(out["sleeper_cgroup"]) == pods["burstable"]["uid"]
    assert out["cri_uids"] == sorted(p["uid"] for p in out["pods"])
    desired = {int(k): v[0] for k, v in out["desired"].items()}
    assert desired == {pods["guaranteed"]["cgroup_id"]: 1, pods["burstable"]["cgroup_id"]: 0,
                       pods["besteffort"]["cgroup_id"]: 0, out["globbed"][0]["cgroup_id"]: 2}
    assert out["after_removal"] == {"removes": [pods["besteffort"]["cgroup_id"]], "adds": {},
                                    "changes": {}}
    assert out["watch_created_ms"] < 1000 and out["watch_removed_ms"] < 1000


def test_watcher_wait_is_poll_for_the_agent_loop(tmp_path):
    with cgroups.Watcher(str(tmp_path), resync_interval=30) as w:
        assert w.wait(timeout=0) and not w.wait(timeout=0.05)
