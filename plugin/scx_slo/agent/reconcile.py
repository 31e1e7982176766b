"""Planning: which cgroup ids the scheduler's class map should hold, and the diff.

Pure: no kernel, no sockets. Inputs are what discovery found (pod slices from
cgroups.discover_pods, rule-matched cgroups from cgroups.match_globs), the pods
the container runtime reported (cri.list_pods, joined to slices by pod UID),
the validated Config and the map's current contents. Output is a Plan: the
desired {cgroup_id: (class_id, why)}, what to add/change/remove, and the notes
an operator must see (refused or capped annotations, pods the runtime does not
know yet, entries dropped for capacity).

Entries are pod slices and rule-matched cgroups only: the scheduler walks a
task's cgroup up to the first cgroup in the map, so a container scope is
classified through its pod slice. Every pod slice gets an entry, default class
included, so the map's keys are exactly the node's pods (plus the cgroups the
rules name), and a pod entry takes precedence over a rule on an ancestor.

How a pod gets its class: the pod rules (namespace/labels/annotations) in
order, then its latency annotation (capped by the operator's policy), as
Config.class_for_pod decides; a pod that ends up in the default class that way
is then matched against the cgroup rules, its slice first, then its ancestors
(so "kubepods.slice/kubepods-besteffort.slice" can class every BestEffort pod).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from scx_slo.agent.cgroups import CGROUP_ROOT, KUBEPODS, Cgroup, PodSlice, discover_pods, match_globs
from scx_slo.agent.cri import CriError, Pod, find_socket, list_pods
from scx_slo.agent.cri.client import DEFAULT_TIMEOUT_S
from scx_slo.settings.model import DEFAULT_CLASS_ID, Config

DEFAULT_MAX_ENTRIES = 16384          # slo_cgroups max_entries in bpf/scx_slo.bpf.c


@dataclass(frozen=True)
class Entry:
    cgroup_id: int
    class_id: int
    class_name: str
    priority: int        # of the class: 1 = tightest; the default class is the largest
    why: str
    path: str            # relative to the cgroup root
    uid: str | None = None        # pod UID for pod slices
    pod: str | None = None        # "namespace/name" when the runtime knows the pod


@dataclass
class Plan:
    entries: dict[int, Entry]                       # what the map should hold
    adds: dict[int, int] = field(default_factory=dict)           # id -> class
    changes: dict[int, int] = field(default_factory=dict)        # id -> new class
    changed_from: dict[int, int] = field(default_factory=dict)   # id -> old class
    removes: list[int] = field(default_factory=list)
    dropped: list[Entry] = field(default_factory=list)           # over capacity
    notes: list[str] = field(default_factory=list)               # all, every time
    messages: list[str] = field(default_factory=list)            # notes to log now
    unknown_pods: list[str] = field(default_factory=list)  # slices the runtime did not list

    @property
    def pods_by_class(self) -> dict[int, int]:
        """Number of pods per class id among the entries."""
        out: dict[int, int] = {}
        for e in self.entries.values():
            if e.uid is not None:
                out[e.class_id] = out.get(e.class_id, 0) + 1
        return out

    @property
    def desired(self) -> dict[int, tuple[int, str]]:
        return {cid: (e.class_id, e.why) for cid, e in self.entries.items()}

    @property
    def empty_diff(self) -> bool:
        return not (self.adds or self.changes or self.removes)

    def summary(self) -> str:
        return (f"{len(self.entries)} entries: +{len(self.adds)} ~{len(self.changes)} "
                f"-{len(self.removes)}" + (f", {len(self.dropped)} dropped (map full)"
                                           if self.dropped else ""))


def cgroup_patterns(config: Config) -> list[str]:
    """The cgroup globs of the config's rules, for cgroups.match_globs/glob_watch_dirs."""
    out = []
    for r in config.rules:
        if r.cgroup is not None and r.cgroup not in out:
            out.append(r.cgroup)
    return out


def _ancestors(path: str):
    parts = path.strip("/").split("/")
    for n in range(len(parts), 0, -1):
        yield "/".join(parts[:n])


def _annotation_note(config: Config, pod: Pod, reason: str) -> str | None:
    """The note for a pod whose annotation was refused or capped, else None."""
    key = config.annotations.key
    value = pod.annotations.get(key)
    if value is None or reason.startswith("rule["):
        return None
    d = config.annotation_class(pod.namespace, value)
    if d.capped or d.granted_ns is None:
        return f"pod {pod.namespace}/{pod.name} ({pod.uid}): {d.reason}"
    return None


def classify_pod(config: Config, pod_slice: PodSlice, pod: Pod | None,
                 current_class: int | None = None):
    """(class, why, note) of one pod slice; note is None unless an operator must see it.

    A pod the runtime does not list (the runtime is down, or has not reported
    the sandbox yet) keeps CURRENT_CLASS if the map already holds it: a CRI
    outage must not demote every latency-critical pod."""
    note = None
    if pod is None and current_class is not None and 0 <= current_class < len(config.classes):
        cls = config.classes[current_class]
        return cls, f"pod {pod_slice.uid}: runtime does not list it; keeps class {cls.name}", None
    if pod is not None:
        cls, why = config.class_for_pod(pod.namespace, pod.labels, pod.annotations)
        note = _annotation_note(config, pod, why)
        who = f"pod {pod.namespace}/{pod.name}"
        if cls.id != DEFAULT_CLASS_ID or why.startswith("rule["):
            return cls, f"{who}: {why}", note
    else:
        cls, why = config.classes[DEFAULT_CLASS_ID], "runtime does not list this pod (yet)"
        who = f"pod {pod_slice.uid}"
    for path in _ancestors(pod_slice.path):
        c2, why2 = config.class_for_cgroup(path)
        if why2 != "no rule":
            return c2, f"{who}: cgroup {path}: {why2}", note
    return cls, f"{who}: {why}", note


def plan(config: Config, pod_slices: list[PodSlice], cri_pods, cgroups: list[Cgroup],
         current: dict[int, int], max_entries: int = DEFAULT_MAX_ENTRIES) -> Plan:
    """The desired class map and its diff against CURRENT ({cgroup_id: class_id}).

    CRI_PODS is a {uid: Pod} (see cri.pods_by_uid) or a list of Pods.
    """
    if not isinstance(cri_pods, dict):
        from scx_slo.agent.cri import pods_by_uid
        cri_pods = pods_by_uid(list(cri_pods))
    notes: list[str] = []
    unknown: list[str] = []
    wanted: dict[int, Entry] = {}

    for ps in pod_slices:
        pod = cri_pods.get(ps.uid)
        if pod is None:
            unknown.append(ps.uid)
        cls, why, note = classify_pod(config, ps, pod, current.get(ps.cgroup_id))
        if note:
            notes.append(note)
        wanted[ps.cgroup_id] = Entry(ps.cgroup_id, cls.id, cls.name, cls.priority, why, ps.path,
                                     uid=ps.uid,
                                     pod=f"{pod.namespace}/{pod.name}" if pod else None)

    for cg in cgroups:
        if cg.cgroup_id in wanted:      # a pod slice a glob also matches: the pod decides
            continue
        cls, why = config.class_for_cgroup(cg.path)
        if why == "no rule":            # enumerated by a glob no rule matches any more
            continue
        wanted[cg.cgroup_id] = Entry(cg.cgroup_id, cls.id, cls.name, cls.priority,
                                     f"cgroup {cg.path}: {why}", cg.path)

    dropped: list[Entry] = []
    if len(wanted) > max_entries:
        # highest classes first; within a class keep what the map already holds, then by path
        order = sorted(wanted.values(),
                       key=lambda e: (e.priority, e.cgroup_id not in current, e.path))
        keep, dropped = order[:max_entries], order[max_entries:]
        wanted = {e.cgroup_id: e for e in keep}
        by_class: dict[str, int] = {}
        for e in dropped:
            by_class[e.class_name] = by_class.get(e.class_name, 0) + 1
        notes.append(f"class map full ({max_entries} entries): {len(dropped)} cgroups left "
                     f"out, lowest classes first: "
                     + ", ".join(f"{n} {name}" for name, n in by_class.items())
                     + f" (first: {dropped[0].path})")

    p = Plan(entries=wanted, dropped=dropped, notes=notes, messages=list(notes),
             unknown_pods=unknown)
    for cid, e in wanted.items():
        old = current.get(cid)
        if old is None:
            p.adds[cid] = e.class_id
        elif old != e.class_id:
            p.changes[cid] = e.class_id
            p.changed_from[cid] = old
    p.removes = sorted(cid for cid in current if cid not in wanted)
    return p


class NoteFilter:
    """Passes a note the first time it appears, and again only after it went away,
    so a reconcile loop logs each refused annotation once, not every second."""

    def __init__(self):
        self._seen: set[str] = set()

    def new(self, notes) -> list[str]:
        notes = list(dict.fromkeys(notes))
        fresh = [n for n in notes if n not in self._seen]
        self._seen = set(notes)
        return fresh


_NOTES = NoteFilter()


def plan_node(config: Config, cgroup_root: str = CGROUP_ROOT, cri_socket: str | None = None,
              current: dict[int, int] | None = None, capacity: int = DEFAULT_MAX_ENTRIES,
              kubepods: str = KUBEPODS, timeout: float = DEFAULT_TIMEOUT_S,
              note_filter: NoteFilter | None = None) -> Plan:
    """Discover this node (cgroups under CGROUP_ROOT, pods from the runtime at
    CRI_SOCKET, or the first of cri.DEFAULT_SOCKETS that exists) and plan.

    A runtime that cannot be reached is a note, not an error: pods already in
    the map keep their class, new ones are planned without metadata (and the
    next reconcile, on the next cgroup event or resync, tries again).
    Plan.messages holds only the notes NOTE_FILTER (a process-wide one by
    default) has not passed before, so a loop can log them all every time.
    """
    current = current or {}
    slices = discover_pods(cgroup_root, kubepods)
    globbed = match_globs(cgroup_root, cgroup_patterns(config))
    cri_note = None
    try:
        socket_path = cri_socket or find_socket()
        pods = list_pods(socket_path, timeout=timeout)
    except CriError as e:
        pods = []
        cri_note = f"{e}; pods keep the classes they have, new pods wait for their metadata"
    p = plan(config, slices, pods, globbed, current, max_entries=capacity)
    if cri_note:
        p.notes.insert(0, cri_note)
    p.messages = (note_filter or _NOTES).new(p.notes)
    return p
