"""The validated scx-slo configuration, as frozen dataclasses.

validate.py builds these from an operator's TOML; nothing else constructs a
Config from untrusted input. Durations are integer nanoseconds.

Classes: id 0 is the built-in "default" class (batch: everything no rule or
annotation claims). Operator classes take ids 1..7 in the order they are
written, so at most MAX_OPERATOR_CLASSES = 7 may be declared. What a class
gets follows from its p99 target (see derive_class):

  priority   1 = tightest target; the default class has the lowest priority
  weight     sched_ext weight (1..10000, 100 = CFS nice 0): 100 * 1s / p99,
             clamped to 200..10000, so tighter targets get more CPU share
  slice      p99 / 40, clamped to [100us, scheduler.slice]
  miss       a scheduling delay (runnable -> running) above p99 / 10 counts
             as an SLO miss: queueing must stay a small part of the budget
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from scx_slo.settings.durations import format_duration, parse_duration
from scx_slo.settings.errors import DurationError

MS = 1_000_000
US = 1_000
S = 1_000_000_000

MAX_CLASS_ID = 7
MAX_OPERATOR_CLASSES = MAX_CLASS_ID  # ids 1..7; id 0 is the default class
DEFAULT_CLASS_NAME = "default"
DEFAULT_CLASS_ID = 0

WEIGHT_MIN, WEIGHT_MAX, WEIGHT_DEFAULT = 1, 10_000, 100
SLICE_FLOOR_NS = 100 * US


@dataclass(frozen=True)
class Metrics:
    enabled: bool = False
    address: str = "127.0.0.1"
    port: int = 9464


@dataclass(frozen=True)
class Scheduler:
    object: str | None = None          # None: the object shipped in the package
    sha256: str | None = None          # optional pin of the object's SHA-256
    slice_ns: int = 5 * MS             # slice of the default class (the BPF's slice_ns)
    batch_floor_pct: int = 5           # CPU share the default class keeps under load
    watchdog_timeout_ns: int = 5 * S   # sched_ext watchdog (kernel max 30s)
    metrics: Metrics = field(default_factory=Metrics)

    def object_path(self) -> str:
        if self.object is not None:
            return self.object
        from scx_slo import default_object_path
        return str(default_object_path())


IN_CLUSTER = "in-cluster"


@dataclass(frozen=True)
class Alerts:
    """Per-pod SLO-miss alerts from the scheduler's miss records (agent/alerts.py)."""

    enabled: bool = True
    threshold: int = 20                 # misses of one pod within window: a Kubernetes Event
    window_ns: int = 60 * S
    log_interval_ns: int = 10 * S       # at most one journal line per pod this often
    events: bool = True                 # post Events (needs [kubernetes] enabled)


@dataclass(frozen=True)
class Kubernetes:
    """Where the agent reads SloPolicy objects (settings/cluster.py) from."""

    enabled: bool = False
    # the kubelet's kubeconfig on a Bottlerocket aws-k8s node, read under host_root;
    # None: the pod's service account (the DaemonSet)
    kubeconfig: str | None = "/etc/kubernetes/kubelet/kubeconfig"
    host_root: str | None = "/.bottlerocket/rootfs"   # None: paths as written


@dataclass(frozen=True)
class SloClass:
    id: int
    name: str
    p99_ns: int | None                 # None only for the default class
    priority: int
    weight: int
    slice_ns: int
    miss_threshold_ns: int | None

    @property
    def is_default(self) -> bool:
        return self.id == DEFAULT_CLASS_ID

    @property
    def latency_critical(self) -> bool:
        """Operator classes are latency-critical; the default class is batch."""
        return self.id != DEFAULT_CLASS_ID

    @property
    def budget_ns(self) -> int | None:
        """Wakeup-to-run budget (the BPF's slo_class_cfg.budget_ns): the miss threshold."""
        return self.miss_threshold_ns


@dataclass(frozen=True)
class Rule:
    """Maps workloads to a class. Pod selectors (namespace/labels/annotations)
    and the cgroup glob are alternatives: a rule uses one kind or the other."""

    class_name: str
    class_id: int
    namespace: str | None = None                        # fnmatch glob
    labels: tuple[tuple[str, str], ...] = ()            # all must match
    annotations: tuple[tuple[str, str], ...] = ()       # all must match
    cgroup: str | None = None                           # fnmatch glob, relative to the cgroup root

    def matches_pod(self, namespace: str, labels: dict[str, str],
                    annotations: dict[str, str]) -> bool:
        if self.cgroup is not None:
            return False
        if self.namespace is not None and not fnmatch.fnmatchcase(namespace, self.namespace):
            return False
        if any(labels.get(k) != v for k, v in self.labels):
            return False
        return all(annotations.get(k) == v for k, v in self.annotations)

    def matches_cgroup(self, path: str) -> bool:
        return self.cgroup is not None and fnmatch.fnmatchcase(path.strip("/"), self.cgroup)


@dataclass(frozen=True)
class Annotations:
    enabled: bool = True
    key: str = "slo.latency.p99"
    namespaces: tuple[str, ...] = ("*",)   # fnmatch globs of namespaces allowed to annotate
    tightest_ns: int = 100 * MS            # no annotation may claim a tighter target


@dataclass(frozen=True)
class AnnotationDecision:
    """What a pod's latency annotation gets: a class, and why."""

    class_id: int
    class_name: str
    claimed_ns: int | None
    granted_ns: int | None
    capped: bool
    reason: str


@dataclass(frozen=True)
class Config:
    scheduler: Scheduler
    classes: tuple[SloClass, ...]      # classes[0] is the default class; classes[i].id == i
    rules: tuple[Rule, ...]
    annotations: Annotations
    kubernetes: Kubernetes = field(default_factory=Kubernetes)
    alerts: Alerts = field(default_factory=Alerts)

    def class_named(self, name: str) -> SloClass | None:
        return next((c for c in self.classes if c.name == name), None)

    def class_for_pod(self, namespace: str, labels: dict[str, str],
                      annotations: dict[str, str]) -> tuple[SloClass, str]:
        """Class of a pod: first matching rule, else its annotation, else default."""
        for i, rule in enumerate(self.rules):
            if rule.matches_pod(namespace, labels, annotations):
                return self.classes[rule.class_id], f"rule[{i}]"
        value = annotations.get(self.annotations.key)
        if value is not None:
            d = self.annotation_class(namespace, value)
            return self.classes[d.class_id], d.reason
        return self.classes[DEFAULT_CLASS_ID], "no rule or annotation"

    def class_for_cgroup(self, path: str) -> tuple[SloClass, str]:
        for i, rule in enumerate(self.rules):
            if rule.matches_cgroup(path):
                return self.classes[rule.class_id], f"rule[{i}]"
        return self.classes[DEFAULT_CLASS_ID], "no rule"

    def annotation_class(self, namespace: str, value: object) -> AnnotationDecision:
        return annotation_class(self, namespace, value)


def derive_class(id_: int, name: str, p99_ns: int, priority: int, max_slice_ns: int,
                 weight: int | None = None, slice_ns: int | None = None,
                 miss_threshold_ns: int | None = None) -> SloClass:
    """A class with the values that follow from its p99 target (overrides win)."""
    if weight is None:
        weight = max(200, min(WEIGHT_MAX, round(WEIGHT_DEFAULT * S / p99_ns)))
    if slice_ns is None:
        slice_ns = max(SLICE_FLOOR_NS, min(max_slice_ns, p99_ns // 40))
    if miss_threshold_ns is None:
        miss_threshold_ns = max(1, p99_ns // 10)
    return SloClass(id=id_, name=name, p99_ns=p99_ns, priority=priority, weight=weight,
                    slice_ns=slice_ns, miss_threshold_ns=miss_threshold_ns)


def default_class(lowest_priority: int, slice_ns: int) -> SloClass:
    return SloClass(id=DEFAULT_CLASS_ID, name=DEFAULT_CLASS_NAME, p99_ns=None,
                    priority=lowest_priority, weight=WEIGHT_DEFAULT, slice_ns=slice_ns,
                    miss_threshold_ns=None)


def annotation_class(config: Config, namespace: str, value: object) -> AnnotationDecision:
    """The class a pod may have for its annotation VALUE, capped by the operator.

    A pod claims a p99 target. It gets the loosest operator class whose target
    still meets the claim. A claim tighter than annotations.tightest is capped
    there, and classes tighter than annotations.tightest are never granted by
    annotation (only operator rules reach them). Every refusal or cap says why.
    """
    pol = config.annotations
    default = config.classes[DEFAULT_CLASS_ID]

    def refuse(reason: str, claimed: int | None = None) -> AnnotationDecision:
        return AnnotationDecision(default.id, default.name, claimed, None, claimed is not None,
                                  reason)

    if not pol.enabled:
        return refuse(f"annotation {pol.key} ignored: annotations are disabled")
    if not any(fnmatch.fnmatchcase(namespace, g) for g in pol.namespaces):
        return refuse(f"annotation {pol.key} refused: namespace {namespace!r} is not in "
                      f"annotations.namespaces {list(pol.namespaces)}")
    try:
        claimed = parse_duration(value)
    except DurationError as e:
        return refuse(f"annotation {pol.key} refused: {e}")
    granted, capped, note = claimed, False, ""
    if claimed < pol.tightest_ns:
        granted, capped = pol.tightest_ns, True
        note = (f"claimed {format_duration(claimed)} is tighter than the allowed "
                f"{format_duration(pol.tightest_ns)}; capped to {format_duration(granted)}; ")
    eligible = [c for c in config.classes[1:] if c.p99_ns >= pol.tightest_ns]
    if not eligible:
        return AnnotationDecision(default.id, default.name, claimed, None, True,
                                  f"annotation {pol.key} refused: {note}no class is open to "
                                  f"annotations (all are tighter than "
                                  f"{format_duration(pol.tightest_ns)})")
    meeting = [c for c in eligible if c.p99_ns <= granted]
    if meeting:
        cls = max(meeting, key=lambda c: (c.p99_ns, -c.id))
        return AnnotationDecision(cls.id, cls.name, claimed, cls.p99_ns, capped,
                                  f"annotation {pol.key}={format_duration(claimed)}: {note}"
                                  f"class {cls.name} (p99 {format_duration(cls.p99_ns)})")
    cls = min(eligible, key=lambda c: (c.p99_ns, c.id))
    return AnnotationDecision(cls.id, cls.name, claimed, cls.p99_ns, True,
                              f"annotation {pol.key}={format_duration(claimed)}: {note}no "
                              f"class meets {format_duration(granted)}; closest allowed is "
                              f"{cls.name} (p99 {format_duration(cls.p99_ns)})")
