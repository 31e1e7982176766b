"""The CPU topology the loader reads from sysfs and hands the scheduler (.rodata)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from scx_slo import default_object_path
from scx_slo.loader.scheduler import Scheduler, SchedulerError
from scx_slo.loader.topology import Topology, TopologyError, parse_cpulist


def cpulist(cpus) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def fake_sysfs(root: Path, nr: int, llc_of: dict[int, int] | None, node_of: dict[int, int],
               smt: int = 1, possible: str | None = None) -> Path:
    """A /sys/devices/system with NR CPUs: L1d per core, an L3 per llc_of value (no
    cache directories at all when llc_of is None), SMT threads of SMT consecutive CPUs."""
    (root / "cpu").mkdir(parents=True)
    (root / "cpu" / "possible").write_text((possible or f"0-{nr - 1}") + "\n")
    for c in range(nr):
        d = root / "cpu" / f"cpu{c}"
        (d / "topology").mkdir(parents=True)
        core = [x for x in range(nr) if x // smt == c // smt]
        (d / "topology" / "thread_siblings_list").write_text(cpulist(core) + "\n")
        if llc_of is None:
            continue
        caches = [(0, 1, "Data", core), (1, 1, "Instruction", core), (2, 2, "Unified", core),
                  (3, 3, "Unified", [x for x in range(nr) if llc_of[x] == llc_of[c]])]
        for index, level, kind, shared in caches:
            i = d / "cache" / f"index{index}"
            i.mkdir(parents=True)
            (i / "level").write_text(f"{level}\n")
            (i / "type").write_text(f"{kind}\n")
            (i / "shared_cpu_list").write_text(cpulist(shared) + "\n")
    for n in sorted(set(node_of.values())):
        d = root / "node" / f"node{n}"
        d.mkdir(parents=True)
        (d / "cpulist").write_text(cpulist(c for c in node_of if node_of[c] == n) + "\n")
    return root


def test_two_sockets_smt_two_nodes(tmp_path):
    """The test VM's layout: 2 sockets x 1 core x 2 threads, a socket per node."""
    root = fake_sysfs(tmp_path, 4, {0: 0, 1: 0, 2: 1, 3: 1}, {0: 0, 1: 0, 2: 1, 3: 1}, smt=2)
    t = Topology.read(root)
    assert t.llcs == ((0, 1), (2, 3)) and t.nodes == (0, 1) and t.siblings == (1, 0, 3, 2)
    r = t.rodata()
    assert r["nr_llcs"] == 2 and r["cpu_llc"] == [0, 0, 1, 1]
    assert r["topo_order"] == [0, 1, 2, 3] and r["llc_first"] == [0, 2, 4]
    assert r["llc_node_first"] == [0, 1] and r["llc_node_end"] == [1, 2]


def test_llcs_are_grouped_by_node_and_split_where_one_spans_two(tmp_path):
    """Interleaved numbering (CPUs 0,2,4,6 on node 0), and one L3 spanning both nodes:
    the queue is per (LLC, node), and the node's LLCs are adjacent."""
    node_of = {c: c % 2 for c in range(8)}
    t = Topology.read(fake_sysfs(tmp_path, 8, {c: 0 for c in range(8)}, node_of))
    assert t.llcs == ((0, 2, 4, 6), (1, 3, 5, 7)) and t.nodes == (0, 1)
    r = t.rodata()
    assert r["topo_order"] == [0, 2, 4, 6, 1, 3, 5, 7]
    assert r["cpu_llc"] == [0, 1] * 4


def test_no_cache_information_means_one_queue_per_node(tmp_path):
    t = Topology.read(fake_sysfs(tmp_path, 4, None, {0: 0, 1: 0, 2: 1, 3: 1}))
    assert t.llcs == ((0, 1), (2, 3))
    assert t.siblings == (0, 1, 2, 3)     # no SMT: each CPU is its own "sibling"


def test_a_possible_list_with_a_gap(tmp_path):
    root = fake_sysfs(tmp_path, 4, {0: 0, 1: 0, 2: 0, 3: 0}, {0: 0, 1: 0, 3: 0},
                      possible="0-1,3")
    r = Topology.read(root).rodata()
    assert sorted(r["topo_order"]) == [0, 1, 2, 3] and r["llc_first"] == [0, 4]


@pytest.mark.parametrize("text, message", [("0-x", "not a CPU list"), ("5-2", "backwards")])
def test_bad_cpu_lists_name_the_file(text, message):
    with pytest.raises(TopologyError, match=f"/sys/x: .*{message}"):
        parse_cpulist(text, "/sys/x")


def test_more_cpus_than_the_scheduler_handles_is_refused(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "possible").write_text("0-2047\n")
    with pytest.raises(TopologyError, match="2048 CPUs.*at most 1024"):
        Topology.read(tmp_path)


layouts = st.integers(1, 4).flatmap(lambda nodes: st.tuples(
    st.just(nodes), st.integers(1, 3), st.integers(1, 4), st.sampled_from([1, 2]),
    st.booleans()))


@settings(max_examples=60, deadline=None)
@given(layouts)
def test_rodata_describes_every_cpu_once(tmp_path_factory, layout):
    """For any nodes x LLCs per node x cores per LLC x SMT, numbered in order or
    interleaved across nodes: every CPU is in exactly one LLC's range, that range is
    its cpu_llc's, and the LLC's node range holds the LLC."""
    nodes, llcs_per_node, cores, smt, interleave = layout
    per_node = llcs_per_node * cores * smt
    nr = nodes * per_node
    place = {}
    for c in range(nr):
        n, i = (c % nodes, c // nodes) if interleave else (c // per_node, c % per_node)
        place[c] = (n, i // (cores * smt))
    root = fake_sysfs(tmp_path_factory.mktemp("sys"), nr,
                      {c: place[c][0] * 100 + place[c][1] for c in range(nr)},
                      {c: place[c][0] for c in range(nr)}, smt=1)
    r = Topology.read(root).rodata()
    assert r["nr_llcs"] == nodes * llcs_per_node
    assert sorted(r["topo_order"]) == list(range(nr))
    first = r["llc_first"]
    for c in range(nr):
        l = r["cpu_llc"][c]
        assert c in r["topo_order"][first[l]:first[l + 1]]
        assert r["llc_node_first"][l] <= l < r["llc_node_end"][l]
        members = r["topo_order"][first[l]:first[l + 1]]
        assert {place[m] for m in members} == {place[c]}


def test_the_scheduler_takes_the_topology_as_tunables(kbtf, tmp_path):
    """Arrays of .rodata set through the BTF like the integer tunables, lengths checked."""
    root = fake_sysfs(tmp_path, 4, {0: 0, 1: 0, 2: 1, 3: 1}, {0: 0, 1: 0, 2: 1, 3: 1}, smt=2)
    with Scheduler.open(default_object_path(), kernel_btf=kbtf) as s:
        s.set_topology(Topology.read(root))
        t = s.tunables()
        assert t["nr_llcs"] == 2 and t["llc_first"][:3] == [0, 2, 4]
        assert t["cpu_sibling"][:4] == [1, 0, 3, 2] and t["cpu_llc"][:4] == [0, 0, 1, 1]
        with pytest.raises(SchedulerError, match="is an array"):
            s.set_tunables(cpu_llc=3)
        with pytest.raises(SchedulerError, match="not an array"):
            s.set_tunables(slice_ns=[1, 2])
        with pytest.raises(SchedulerError, match=r"do not fit \[1024\]"):
            s.set_tunables(cpu_llc=[0] * 1025)
