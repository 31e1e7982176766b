"""Pod-shaped cgroups, laid out as the kubelet's systemd cgroup driver does.

    kubepods.slice/                                   (node allocatable)
      kubepods-pod<uid>.slice/                        Guaranteed: weight: its request
      kubepods-burstable.slice/                       weight: sum of its pods' requests
        kubepods-burstable-pod<uid>.slice/            weight: the pod's CPU request
          cri-containerd-<id>.scope                   one per container (optionally
                                                      weighted by its own request)
      kubepods-besteffort.slice/                      weight 1 (shares 2)
        kubepods-besteffort-pod<uid>.slice/           weight 1

cpu.weight values follow the kubelet's conversion (stats.kubelet_cpu_weight)
when `kubelet_weights` is on, else every cgroup keeps the default 100, the way
a node without requests (or plain systemd) would look. Processes are started
inside a container scope, so the scheduler must find their class through the
pod slice, as on a real node.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from scx_slo.dev.bench.stats import kubelet_cpu_weight
from scx_slo.errors import ScxSloError

CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods.slice"


class PodError(ScxSloError):
    """A benchmark cgroup could not be created, written or removed."""


@dataclass
class Pod:
    name: str
    qos: str                       # "guaranteed", "burstable" or "besteffort"
    millicpu: int | None           # CPU request; None for BestEffort
    uid: str = field(default_factory=lambda: str(uuid.uuid4()))
    path: Path | None = None       # the pod slice, once created
    containers: dict[str, Path] = field(default_factory=dict)

    @property
    def slice_name(self) -> str:
        uid = self.uid.replace('-', '_')
        return f"kubepods-pod{uid}.slice" if self.qos == "guaranteed" else \
            f"kubepods-{self.qos}-pod{uid}.slice"

    @property
    def qos_slice(self) -> str | None:
        """The QoS slice the pod slice lives in; None for Guaranteed (in kubepods.slice)."""
        return None if self.qos == "guaranteed" else f"kubepods-{self.qos}.slice"

    def rel(self, root: Path = CGROUP_ROOT) -> str:
        return str(self.path.relative_to(root)) if self.path else ""


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as e:
        raise PodError(f"{path}: cannot write {value!r}: {e.strerror}") from None


def _mkdir(path: Path) -> Path:
    try:
        path.mkdir(exist_ok=True)
    except OSError as e:
        raise PodError(f"{path}: cannot create the cgroup: {e.strerror}") from None
    return path


def usage_usec(cg: Path) -> int:
    """usage_usec from the cgroup's cpu.stat."""
    try:
        for line in (cg / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value)
    except OSError as e:
        raise PodError(f"{cg}/cpu.stat: {e.strerror}") from None
    raise PodError(f"{cg}/cpu.stat has no usage_usec")


def idle_usec() -> int:
    """CPU time all CPUs spent idle (idle + iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    if not fields or fields[0] != "cpu":
        raise PodError("/proc/stat does not start with the cpu line")
    ticks = int(fields[4]) + int(fields[5])
    return ticks * 1_000_000 // os.sysconf("SC_CLK_TCK")


class Node:
    """The kubepods tree for one configuration; remove() tears it all down."""

    def __init__(self, pods: list[Pod], *, kubelet_weights: bool, root: Path = CGROUP_ROOT):
        self.root = root
        self.pods = pods
        self.kubelet_weights = kubelet_weights
        self.created: list[Path] = []

    def create(self) -> "Node":
        top = self._make(self.root / KUBEPODS)
        for qos in ("burstable", "besteffort"):
            qslice = self._make(top / f"kubepods-{qos}.slice")
            members = [p for p in self.pods if p.qos == qos]
            if self.kubelet_weights:
                req = sum(p.millicpu or 0 for p in members)
                _write(qslice / "cpu.weight", str(kubelet_cpu_weight(req)))
        for pod in self.pods:
            parent = top / pod.qos_slice if pod.qos_slice else top
            pod.path = self._make(parent / pod.slice_name)
            if self.kubelet_weights:
                _write(pod.path / "cpu.weight", str(kubelet_cpu_weight(pod.millicpu)))
        return self

    def _make(self, path: Path) -> Path:
        existed = path.exists()
        _mkdir(path)
        if not existed:
            self.created.append(path)
        try:
            ctl = (path / "cgroup.subtree_control").read_text().split()
            if "cpu" not in ctl:
                _write(path / "cgroup.subtree_control", "+cpu")
        except OSError as e:
            raise PodError(f"{path}/cgroup.subtree_control: {e.strerror}") from None
        return path

    def container(self, pod: Pod, name: str, millicpu: int | None = None) -> Path:
        """A container scope in POD (created on first use); with MILLICPU and kubelet
        weights, weighted as the kubelet weights a container with that request."""
        if name not in pod.containers:
            cid = uuid.uuid5(uuid.UUID(pod.uid), name).hex + uuid.uuid5(uuid.UUID(pod.uid), "c").hex
            scope = pod.path / f"cri-containerd-{cid}.scope"
            _mkdir(scope)
            self.created.append(scope)
            if millicpu is not None and self.kubelet_weights:
                _write(scope / "cpu.weight", str(kubelet_cpu_weight(millicpu)))
            pod.containers[name] = scope
        return pod.containers[name]

    def spawn(self, pod: Pod, container: str, argv: list[str], millicpu: int | None = None,
              **kw) -> subprocess.Popen:
        """Start ARGV inside a container scope of POD (it joins before exec)."""
        procs = str(self.container(pod, container, millicpu) / "cgroup.procs")

        def enter() -> None:
            with open(procs, "w") as f:
                f.write("0")

        return subprocess.Popen(argv, preexec_fn=enter, **kw)

    def remove(self) -> None:
        """Kill everything in the created cgroups and remove them, deepest first."""
        for cg in sorted(self.created, key=lambda p: len(p.parts), reverse=True):
            kill_all(cg)
            for _ in range(50):
                try:
                    cg.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                raise PodError(f"{cg}: cannot remove the cgroup (processes left?)")
        self.created.clear()


def kill_all(cg: Path) -> None:
    if not cg.exists():
        return
    kill = cg / "cgroup.kill"
    for _ in range(100):
        try:
            pids = (cg / "cgroup.procs").read_text().split()
        except FileNotFoundError:
            return
        if not pids and not _has_children_procs(cg):
            return
        if kill.exists():
            _write(kill, "1")
        else:
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.05)


def _has_children_procs(cg: Path) -> bool:
    try:
        return (cg / "cgroup.events").read_text().find("populated 1") >= 0
    except OSError:
        return False
