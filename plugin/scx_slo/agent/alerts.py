"""Per-pod SLO-miss alerts, from the scheduler's slo_misses ring buffer.

The scheduler writes a record for every SLO miss (a latency-critical wakeup
that waited past its class's miss threshold), at most 16 per cgroup per 100 ms
(the rest are counted in nr_miss_drops). A thread reads them through libbpf's
ring buffer API (`MissReader`: no map polling) and hands them to `MissAlerts`,
which

- resolves the record's cgroup (a container scope or a pod slice) to its pod;
- keeps per-pod counts and delay histograms for OpenMetrics (at most MAX_PODS
  pods; the one missed longest ago makes room);
- logs at most one journal line per pod per `log-interval`, with the misses
  since the last line and the worst delay;
- where Kubernetes Events are on, has one Warning Event posted on the pod when
  its misses within `window` reach `threshold`, then no other until that
  window has passed (the reader posts it, outside the lock the metrics share).

MissAlerts does no I/O but through the reporter, so it is tested on the host;
the reader needs the kernel.
"""
from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Callable

from scx_slo.settings.model import Alerts

log = logging.getLogger(__name__)

MAX_PODS = 512
# Histogram bucket bounds (seconds) of a pod's miss delays.
DELAY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
EVENT_REASON = "SloMisses"


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str
    uid: str | None = None

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class PodMisses:
    pod: PodRef
    class_name: str
    total: int = 0
    delay_sum_s: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(DELAY_BUCKETS) + 1))
    recent: deque = field(default_factory=deque)     # times of the last `threshold` misses
    since_log: int = 0
    worst_since_log_ns: int = 0
    last_log: float | None = None
    event_until: float = 0.0                          # no other Event before this


class MissAlerts:
    """What the agent does with miss records (see the module's docstring)."""

    def __init__(self, cfg: Alerts, resolve: Callable[[int], PodRef | None],
                 class_name: Callable[[int], str], out, events: bool = False,
                 clock: Callable[[], float] = time.monotonic, node: str = ""):
        self.cfg, self.resolve, self.class_name = cfg, resolve, class_name
        self.out, self.events, self.clock, self.node = out, events, clock, node
        # per pod at most `threshold` miss times are kept: enough to tell whether that
        # many fell within the window
        self.pods: OrderedDict[str, PodMisses] = OrderedDict()
        self.unresolved = 0             # records whose cgroup is no known pod
        self.pending: list[tuple[PodRef, str, str]] = []   # Events to post: (pod, reason, text)

    def take_events(self) -> list[tuple[PodRef, str, str]]:
        out, self.pending = self.pending, []
        return out

    def on_record(self, rec: dict) -> None:
        pod = self.resolve(rec["cgid"])
        if pod is None:
            self.unresolved += 1
            return
        now = self.clock()
        key = str(pod)
        pm = self.pods.get(key)
        if pm is None:
            if len(self.pods) >= MAX_PODS:
                self.pods.popitem(last=False)
            pm = self.pods[key] = PodMisses(pod, self.class_name(rec["class_id"]),
                                            recent=deque(maxlen=self.cfg.threshold))
        self.pods.move_to_end(key)
        delay_s = rec["delay_ns"] / 1e9
        pm.total += 1
        pm.delay_sum_s += delay_s
        pm.buckets[bisect.bisect_left(DELAY_BUCKETS, delay_s)] += 1
        pm.since_log += 1
        pm.worst_since_log_ns = max(pm.worst_since_log_ns, rec["delay_ns"])
        window_s = self.cfg.window_ns / 1e9
        pm.recent.append(now)
        while pm.recent and pm.recent[0] <= now - window_s:
            pm.recent.popleft()
        if pm.last_log is None or now - pm.last_log >= self.cfg.log_interval_ns / 1e9:
            self._log(pm, now)
        if self.events and len(pm.recent) >= self.cfg.threshold and now >= pm.event_until:
            pm.event_until = now + window_s
            self.pending.append((pm.pod, EVENT_REASON, (
                f"{len(pm.recent)} scheduling delays over the {pm.class_name} class's miss "
                f"threshold in the last {window_s:g} s"
                + (f" on node {self.node}" if self.node else ""))))

    def _log(self, pm: PodMisses, now: float) -> None:
        self.out.warning(f"SLO misses: pod {pm.pod} (class {pm.class_name}): {pm.since_log} "
                         f"since the last report, worst {pm.worst_since_log_ns / 1e6:.1f} ms",
                         pod=str(pm.pod), slo_class=pm.class_name, misses=pm.since_log,
                         worst_ns=pm.worst_since_log_ns)
        pm.since_log, pm.worst_since_log_ns, pm.last_log = 0, 0, now


class MissReader:
    """A thread that reads slo_misses and feeds MissAlerts; stop() ends it."""

    def __init__(self, sched, alerts: MissAlerts, event_sink=None, poll_ms: int = 200):
        self.sched, self.alerts, self.poll_ms = sched, alerts, poll_ms
        self.event_sink = event_sink
        self.events_posted = 0
        self.ring = sched.miss_reader()
        self.records = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()       # alerts' state, shared with the metrics thread
        self._thread = threading.Thread(target=self._run, name="slo-misses", daemon=True)

    def start(self) -> "MissReader":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                raws = self.ring.poll(self.poll_ms)
            except Exception as e:  # noqa: BLE001 - the ring is gone (scheduler reloaded)
                log.warning("slo_misses: %s; the reader stops", e)
                return
            with self._lock:
                for raw in raws:
                    self.alerts.on_record(self.sched.decode_miss(raw))
                events = self.alerts.take_events()
            self.records += len(raws)
            for pod, reason, text in events:        # outside the lock: network calls
                try:
                    self.event_sink(pod, reason, text)
                    self.events_posted += 1
                except Exception as e:  # noqa: BLE001 - best effort; the journal has it
                    log.warning("could not post the Event for pod %s: %s", pod, e)

    def snapshot(self) -> list[PodMisses]:
        with self._lock:
            return [PodMisses(p.pod, p.class_name, p.total, p.delay_sum_s, list(p.buckets))
                    for p in self.alerts.pods.values()]

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            self.ring.close()


class PodResolver:
    """cgroup id -> PodRef, from the reconcile plan's entries (pod slices) and, for a
    container scope, its parent slice (its children are scanned when an id is new)."""

    def __init__(self, cgroup_root: str):
        self.root = cgroup_root
        self.slices: dict[int, tuple[str, PodRef]] = {}     # pod slice id -> (path, pod)
        self.known: dict[int, PodRef | None] = {}

    def update(self, entries: dict) -> None:
        """ENTRIES: reconcile.Plan.entries (cgroup id -> Entry)."""
        slices = {}
        for cgid, e in entries.items():
            if e.pod and e.uid:
                ns, _, name = e.pod.partition("/")
                slices[cgid] = (e.path, PodRef(ns, name, e.uid))
        self.slices = slices
        self.known = {}

    def __call__(self, cgid: int) -> PodRef | None:
        if cgid in self.known:
            return self.known[cgid]
        if cgid in self.slices:
            pod = self.slices[cgid][1]
        else:
            pod = None
            for path, ref in self.slices.values():
                try:
                    with os.scandir(os.path.join(self.root, path)) as it:
                        for d in it:
                            if d.is_dir(follow_symlinks=False):
                                self.known[d.inode()] = ref
                except OSError:
                    continue
            pod = self.known.get(cgid)
        self.known[cgid] = pod
        return pod
