"""The machine's CPU topology as the scheduler's .rodata wants it.

Read from sysfs when the scheduler is loaded: each possible CPU's last-level
cache (the highest-level data or unified cache, `cache/index*/shared_cpu_list`),
its NUMA node (`node*/cpulist`) and an SMT sibling (`topology/thread_siblings_list`).
The scheduler queues work per LLC; an LLC that spans nodes is split by node, so
that a queue is never further from a CPU than its node. CPUs sysfs says nothing
about (offline, no cache information) share one LLC per node.

    topo = Topology.read()            # or Topology.read(Path("/some/sysfs/devices/system"))
    sched.set_tunables(**topo.rodata())
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scx_slo.errors import ScxSloError

SYSFS = Path("/sys/devices/system")
MAX_CPUS = 1024        # SLO_MAX_CPUS in bpf/scx_slo.bpf.c
MAX_LLCS = 256         # SLO_MAX_LLCS


class TopologyError(ScxSloError):
    """The CPU topology in sysfs cannot be read or does not fit the scheduler."""


def parse_cpulist(text: str, source: str) -> list[int]:
    """A kernel cpulist ("0-3,8,10-11") as sorted CPU numbers."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise TopologyError(f"{source}: {text.strip()!r} is not a CPU list") from None
        if b < a:
            raise TopologyError(f"{source}: range {part!r} runs backwards")
        cpus.update(range(a, b + 1))
    return sorted(cpus)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


@dataclass(frozen=True)
class Topology:
    """CPUs by LLC: llcs[i] is the sorted CPUs of LLC i, LLCs ordered by node, then
    by their first CPU; nodes[i] is LLC i's node; siblings[cpu] an SMT sibling
    (the CPU itself if it has none)."""

    nr_cpus: int
    llcs: tuple[tuple[int, ...], ...]
    nodes: tuple[int, ...]
    siblings: tuple[int, ...]

    @classmethod
    def read(cls, root: Path = SYSFS) -> "Topology":
        possible = root / "cpu" / "possible"
        text = _read(possible)
        if text is None:
            raise TopologyError(f"{possible}: cannot be read")
        cpus = parse_cpulist(text, str(possible))
        if not cpus:
            raise TopologyError(f"{possible}: no CPUs")
        nr = cpus[-1] + 1
        if nr > MAX_CPUS:
            raise TopologyError(f"{possible}: {nr} CPUs, the scheduler handles at most "
                                f"{MAX_CPUS}")
        node_of = {c: 0 for c in cpus}
        for node_dir in sorted(root.glob("node/node[0-9]*")):
            listed = _read(node_dir / "cpulist")
            for c in parse_cpulist(listed or "", str(node_dir / "cpulist")):
                if c in node_of:
                    node_of[c] = int(node_dir.name[4:])
        siblings = list(range(nr))
        groups: dict[tuple[int, tuple[int, ...] | None], list[int]] = {}
        for c in cpus:
            cpu_dir = root / "cpu" / f"cpu{c}"
            thread = _read(cpu_dir / "topology" / "thread_siblings_list")
            if thread is not None:
                others = [s for s in parse_cpulist(thread, str(cpu_dir / "topology"))
                          if s != c and s < nr]
                if others:
                    siblings[c] = others[0]
            groups.setdefault((node_of[c], _llc_key(cpu_dir)), []).append(c)
        llcs = sorted(((sorted(m), node) for (node, _key), m in groups.items()),
                      key=lambda item: (item[1], item[0][0]))
        if len(llcs) > MAX_LLCS:
            # more caches than queues: one queue per node (still a queue near every CPU)
            per_node: dict[int, list[int]] = {}
            for members, node in llcs:
                per_node.setdefault(node, []).extend(members)
            llcs = sorted(((sorted(m), n) for n, m in per_node.items()), key=lambda i: i[1])
            if len(llcs) > MAX_LLCS:
                raise TopologyError(f"{root}: {len(llcs)} NUMA nodes, the scheduler handles "
                                    f"at most {MAX_LLCS}")
        return cls(nr_cpus=nr, llcs=tuple(tuple(m) for m, _ in llcs),
                   nodes=tuple(n for _, n in llcs), siblings=tuple(siblings))

    def rodata(self) -> dict[str, int | list[int]]:
        """The scheduler's topology tunables (see bpf/scx_slo.bpf.c)."""
        order: list[int] = []
        first: list[int] = []
        cpu_llc = [0] * self.nr_cpus
        for i, members in enumerate(self.llcs):
            first.append(len(order))
            order.extend(members)
            for c in members:
                cpu_llc[c] = i
        first.append(len(order))
        node_first, node_end = [], []
        for node in self.nodes:
            same = [i for i, n in enumerate(self.nodes) if n == node]
            node_first.append(same[0])
            node_end.append(same[-1] + 1)
        # numbers missing from a possible list with gaps: in the last LLC (they never run)
        listed = set(order)
        for c in range(self.nr_cpus):
            if c not in listed:
                order.append(c)
                cpu_llc[c] = len(self.llcs) - 1
        first[-1] = len(order)
        return {"nr_llcs": len(self.llcs), "cpu_llc": cpu_llc, "cpu_sibling": list(self.siblings),
                "topo_order": order, "llc_first": first, "llc_node_first": node_first,
                "llc_node_end": node_end}


def _llc_key(cpu_dir: Path) -> tuple[int, ...] | None:
    """The CPUs sharing this CPU's highest-level data or unified cache; None: unknown."""
    best: tuple[int, tuple[int, ...]] | None = None
    for index in cpu_dir.glob("cache/index[0-9]*"):
        kind = (_read(index / "type") or "").strip()
        level = (_read(index / "level") or "").strip()
        shared = _read(index / "shared_cpu_list")
        if kind not in ("Data", "Unified") or not level.isdigit() or shared is None:
            continue
        key = (int(level), tuple(parse_cpulist(shared, str(index / "shared_cpu_list"))))
        if best is None or key[0] > best[0]:
            best = key
    return best[1] if best else None
