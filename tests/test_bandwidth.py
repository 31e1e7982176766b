"""cpu.max from cgroupfs into slo_cg_bw, for kernels whose sched_ext does not pass it.

Against prepared cgroup directories and a dict standing in for the map; the
real map and kernel are in tests/test_scheduler_vm.py::test_cpu_max_is_enforced
(which feeds this way on 6.12).
"""
from __future__ import annotations

import pytest

from scx_slo.agent.bandwidth import QUOTA_MAX, BandwidthFeed, read_cpu_max, walk
from scx_slo.agent.cgroups import CgroupError, cgroup_id


class FakeMap(dict):
    def update(self, key, value):      # the typed map's update(key, value)
        self[key] = value

    def delete(self, key):
        return self.pop(key, None) is not None


class FakeScheduler:
    def __init__(self, entries=None):
        self.map = FakeMap(entries or {})
        self.generation = 0

    def typed(self, name):
        assert name == "slo_cg_bw"
        return self.map

    def bump_generation(self):
        self.generation += 1
        return self.generation


def cgroup(tmp_path, name, cpu_max="max 100000", burst=None):
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "cpu.max").write_text(cpu_max + "\n")
    if burst is not None:
        (d / "cpu.max.burst").write_text(f"{burst}\n")
    return d


def test_read_cpu_max_quota_period_burst(tmp_path):
    assert read_cpu_max(cgroup(tmp_path, "a", "20000 100000", burst=5000)) == (100000, 20000, 5000)
    assert read_cpu_max(cgroup(tmp_path, "b", "max 50000")) == (50000, QUOTA_MAX, 0)


@pytest.mark.parametrize("text", ["", "20000", "x 100000", "20000 100000 7"])
def test_a_malformed_cpu_max_names_the_file(tmp_path, text):
    d = cgroup(tmp_path, "bad", text)
    with pytest.raises(CgroupError, match=r"bad/cpu.max: cannot read cpu.max"):
        read_cpu_max(d)


def test_walk_lists_cgroup_directories_only(tmp_path):
    root = cgroup(tmp_path, "kubepods.slice")
    pod = cgroup(root, "kubepods-pod1.slice", "50000 100000")
    (pod / "not-a-cgroup").mkdir()
    assert sorted(walk(root)) == sorted([str(root), str(pod)])


def test_feed_writes_changes_only_and_forgets_removed_cgroups(tmp_path):
    a = cgroup(tmp_path, "a", "20000 100000")
    b = cgroup(tmp_path, "b")
    sched = FakeScheduler()
    feed = BandwidthFeed(sched)
    assert feed.sync([a, b]) == 2 and sched.generation == 1
    entry = sched.map[cgroup_id(a)]
    assert (entry["period_us"], entry["quota_us"], entry["burst_us"]) == (100000, 20000, 0)
    assert sched.map[cgroup_id(b)]["quota_us"] == QUOTA_MAX
    # nothing changed: nothing written, no generation bump
    assert feed.sync([a, b]) == 0 and sched.generation == 1
    # a new limit gets a new seq, so the scheduler applies it again
    seq = entry["seq"]
    (a / "cpu.max").write_text("50000 100000\n")
    assert feed.sync([a, b]) == 1 and sched.map[cgroup_id(a)]["seq"] != seq
    # a cgroup that is gone (or no longer given) is dropped from the map
    b_id = cgroup_id(b)
    b.joinpath("cpu.max").unlink()
    b.rmdir()
    assert feed.sync([a, b]) == 1 and b_id not in sched.map and sched.generation == 3


def test_an_adopted_map_is_not_fed_again(tmp_path):
    a = cgroup(tmp_path, "a", "20000 100000")
    sched = FakeScheduler({cgroup_id(a): {"period_us": 100000, "quota_us": 20000,
                                           "burst_us": 0, "seq": 7}})
    assert BandwidthFeed(sched).sync([a]) == 0 and sched.generation == 0
