"""The node's cgroups: Kubernetes pod slices, rule-matched services, and a watcher.

The kubelet with the systemd cgroup driver (Bottlerocket's, and the default of
kubeadm) lays pods out under the cgroup2 root as

    kubepods.slice/
      kubepods-pod<uid>.slice/                      Guaranteed QoS pods
        cri-containerd-<container id>.scope
      kubepods-burstable.slice/
        kubepods-burstable-pod<uid>.slice/          Burstable pods
          cri-containerd-<container id>.scope
      kubepods-besteffort.slice/
        kubepods-besteffort-pod<uid>.slice/         BestEffort pods

where <uid> is the pod UID with '-' written as '_' (systemd unit names use
'-' as the hierarchy separator). A cgroup's id, the key of the scheduler's
slo_cgroups map (cgroup->kn->id in BPF), is the inode number of its directory
in cgroup2 on a 64-bit kernel.

CgroupWatcher reports creation and removal of pod slices (and of cgroups in
directories named by glob rules) within a fraction of a second through inotify
(the inotify_simple package), and asks for a periodic full resync as a safety
net; without inotify_simple it falls back to listing the same directories
every poll_interval.
"""
from __future__ import annotations

import glob
import logging
import math
import os
import re
import time
from dataclasses import dataclass

from scx_slo.errors import ScxSloError

log = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"
KUBEPODS = "kubepods.slice"
QOS_CLASSES = ("guaranteed", "burstable", "besteffort")

_QOS_SLICE_RE = re.compile(r"kubepods-(burstable|besteffort)\.slice")
_POD_SLICE_RE = re.compile(r"kubepods(?:-(burstable|besteffort))?-pod([0-9A-Za-z_]+)\.slice")
# cri-containerd-<id>.scope (containerd), crio-<id>.scope (CRI-O), docker-<id>.scope
_SCOPE_RE = re.compile(r"(cri-containerd|crio|docker)-([0-9a-f]+)\.scope")


class CgroupError(ScxSloError):
    """A cgroup file could not be read or written."""


@dataclass(frozen=True)
class ContainerScope:
    id: str              # container id as the runtime names it
    runtime: str         # "cri-containerd", "crio" or "docker"
    path: str            # relative to the cgroup root
    cgroup_id: int


@dataclass(frozen=True)
class PodSlice:
    uid: str             # pod UID with dashes, as in the pod's metadata.uid
    qos: str             # "guaranteed", "burstable" or "besteffort"
    path: str            # relative to the cgroup root
    cgroup_id: int
    containers: tuple[ContainerScope, ...] = ()


@dataclass(frozen=True)
class Cgroup:
    path: str            # relative to the cgroup root
    cgroup_id: int


def cgroup_id(path: str | os.PathLike) -> int:
    """The cgroup id of the cgroup2 directory PATH (its inode number)."""
    return os.stat(path).st_ino


def parse_pod_slice(name: str) -> tuple[str, str] | None:
    """(qos, uid) of a pod slice's directory name, or None if it is not one."""
    m = _POD_SLICE_RE.fullmatch(name)
    if m is None:
        return None
    return (m.group(1) or "guaranteed"), m.group(2).replace("_", "-")


def parse_container_scope(name: str) -> tuple[str, str] | None:
    """(runtime, container id) of a container scope's directory name, or None."""
    m = _SCOPE_RE.fullmatch(name)
    return (m.group(1), m.group(2)) if m else None


def pod_uid_of(path: str) -> str | None:
    """The pod UID of the pod slice on a cgroup path (e.g. a /proc/PID/cgroup
    line's path, with or without a container scope under it), or None."""
    for part in reversed(path.strip("/").split("/")):
        parsed = parse_pod_slice(part)
        if parsed:
            return parsed[1]
    return None


def _subdirs(path: str) -> list[str]:
    """Names of the child directories of PATH; [] if PATH vanished meanwhile."""
    try:
        with os.scandir(path) as it:
            return sorted(e.name for e in it if e.is_dir(follow_symlinks=False))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _pod_slice(root: str, rel: str, qos: str, uid: str) -> PodSlice | None:
    full = os.path.join(root, rel)
    try:
        cgid = cgroup_id(full)
    except FileNotFoundError:          # the pod went away while we looked
        return None
    containers = []
    for name in _subdirs(full):
        parsed = parse_container_scope(name)
        if parsed is None:
            continue
        try:
            cid = cgroup_id(os.path.join(full, name))
        except FileNotFoundError:
            continue
        containers.append(ContainerScope(id=parsed[1], runtime=parsed[0],
                                         path=f"{rel}/{name}", cgroup_id=cid))
    return PodSlice(uid=uid, qos=qos, path=rel, cgroup_id=cgid, containers=tuple(containers))


def discover_pods(root: str = CGROUP_ROOT, kubepods: str = KUBEPODS) -> list[PodSlice]:
    """Every pod slice under ROOT/KUBEPODS, sorted by path; [] if there is none.

    Tolerates cgroups vanishing during the walk (a pod being deleted).
    """
    pods: list[PodSlice] = []
    top = os.path.join(root, kubepods)
    for name in _subdirs(top):
        rel = f"{kubepods}/{name}"
        parsed = parse_pod_slice(name)
        if parsed is not None:
            if parsed[0] == "guaranteed":
                pod = _pod_slice(root, rel, *parsed)
                if pod:
                    pods.append(pod)
            continue
        m = _QOS_SLICE_RE.fullmatch(name)
        if m is None:
            continue
        for child in _subdirs(os.path.join(top, name)):
            parsed = parse_pod_slice(child)
            if parsed is None or parsed[0] != m.group(1):
                continue
            pod = _pod_slice(root, f"{rel}/{child}", *parsed)
            if pod:
                pods.append(pod)
    return sorted(pods, key=lambda p: p.path)


def _has_glob(s: str) -> bool:
    return glob.has_magic(s)


def match_globs(root: str, patterns) -> list[Cgroup]:
    """Cgroups (directories) under ROOT matching any of PATTERNS, relative to ROOT.

    Patterns are cgroup rules' globs such as "system.slice/*.service"; each
    '*' matches within one path component here (rules match with fnmatch,
    where '*' may cross '/', so every cgroup listed here also matches its rule).
    """
    found: dict[str, Cgroup] = {}
    for pattern in patterns:
        pattern = pattern.strip("/")
        if not pattern:
            continue
        for full in glob.glob(os.path.join(glob.escape(root), pattern)):
            rel = os.path.relpath(full, root)
            if rel in found or not os.path.isdir(full) or os.path.islink(full):
                continue
            try:
                found[rel] = Cgroup(path=rel, cgroup_id=cgroup_id(full))
            except FileNotFoundError:
                continue
    return sorted(found.values(), key=lambda c: c.path)


def glob_watch_dirs(patterns) -> list[str]:
    """The directories (relative) whose children a watcher must see for PATTERNS:
    the longest prefix of each pattern without glob characters, if that prefix
    is the pattern's parent (deeper wildcards need the periodic resync)."""
    dirs = []
    for pattern in patterns:
        parts = pattern.strip("/").split("/")
        static = []
        for p in parts:
            if _has_glob(p):
                break
            static.append(p)
        parent = "/".join(static[:len(parts) - 1])
        if parent not in dirs:
            dirs.append(parent)
    return dirs


def read_cpu_weight(path: str) -> int:
    """cpu.weight of the cgroup directory PATH (1..10000)."""
    f = os.path.join(path, "cpu.weight")
    try:
        with open(f) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError) as e:
        raise CgroupError(f"{f}: cannot read cpu.weight: {e}") from None


def write_cpu_weight(path: str, weight: int) -> None:
    f = os.path.join(path, "cpu.weight")
    if not 1 <= int(weight) <= 10000:
        raise CgroupError(f"{f}: weight {weight} is outside 1..10000")
    try:
        with open(f, "w") as fh:
            fh.write(f"{int(weight)}\n")
    except OSError as e:
        raise CgroupError(f"{f}: cannot write cpu.weight: {e.strerror}") from None


# --- watching ------------------------------------------------------------------

CREATED = "created"
REMOVED = "removed"
RESYNC = "resync"       # time for a full rediscovery (periodic, overflow, start)


@dataclass(frozen=True)
class Change:
    kind: str           # CREATED, REMOVED or RESYNC
    path: str = ""      # relative to the cgroup root; "" for RESYNC
    why: str = ""


class CgroupWatcher:
    """Reports pod slices (and glob-watched cgroups) appearing and vanishing.

        with CgroupWatcher(root, extra_dirs=glob_watch_dirs(patterns)) as w:
            while running:
                changes = w.poll(timeout=1.0)   # [] on timeout
                if changes: rediscover and reconcile

    Watches ROOT (for kubepods.slice to appear), ROOT/kubepods.slice, its QoS
    slices (added as they appear) and the EXTRA_DIRS. poll() returns a RESYNC
    first, then at least every RESYNC_INTERVAL seconds, and whenever events
    may have been lost. fileno() is the inotify descriptor for a select loop
    (None in polling mode).
    """

    def __init__(self, root: str = CGROUP_ROOT, kubepods: str = KUBEPODS,
                 extra_dirs=(), resync_interval: float = 60.0, poll_interval: float = 0.25,
                 use_inotify: bool | None = None):
        self.root = root
        self.kubepods = kubepods
        self.resync_interval = resync_interval
        self.poll_interval = poll_interval
        self._extra = [d.strip("/") for d in extra_dirs]
        self._pending: list[Change] = [Change(RESYNC, why="start")]
        self._next_resync = time.monotonic() + resync_interval
        self._inotify = None
        self._wd_path: dict[int, str] = {}      # watch descriptor -> relative dir
        self._path_wd: dict[str, int] = {}
        self._snap: dict[str, set[str]] = {}    # polling mode: dir -> child dirs
        if use_inotify is None or use_inotify:
            try:
                import inotify_simple
            except ImportError:
                if use_inotify:
                    raise CgroupError("the cgroup watcher needs the inotify_simple package "
                                      "(pip install inotify_simple)") from None
                log.warning("inotify_simple is not installed: watching cgroups by listing "
                            "them every %.2fs", poll_interval)
            else:
                self._flags = inotify_simple.flags
                self._inotify = inotify_simple.INotify()
        self._refresh_watches()

    @property
    def mode(self) -> str:
        return "inotify" if self._inotify is not None else "poll"

    def fileno(self) -> int | None:
        return self._inotify.fileno() if self._inotify is not None else None

    def watched(self) -> list[str]:
        return sorted(self._path_wd if self._inotify is not None else self._snap)

    def _dirs_to_watch(self) -> list[str]:
        dirs = ["", self.kubepods]
        for name in _subdirs(os.path.join(self.root, self.kubepods)):
            if _QOS_SLICE_RE.fullmatch(name):
                dirs.append(f"{self.kubepods}/{name}")
        return dirs + [d for d in self._extra if d not in dirs]

    def _refresh_watches(self) -> None:
        """Watch every directory that should be watched and exists now."""
        for rel in self._dirs_to_watch():
            full = os.path.join(self.root, rel) if rel else self.root
            if self._inotify is not None:
                if rel in self._path_wd:
                    continue
                f = self._flags
                try:
                    wd = self._inotify.add_watch(full, f.CREATE | f.DELETE | f.MOVED_FROM
                                                 | f.MOVED_TO | f.DELETE_SELF | f.ONLYDIR)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                except OSError as e:
                    raise CgroupError(f"{full}: cannot watch: {e.strerror}") from None
                self._wd_path[wd] = rel
                self._path_wd[rel] = wd
            elif rel not in self._snap and os.path.isdir(full):
                self._snap[rel] = set(_subdirs(full))

    def _join(self, parent: str, name: str) -> str:
        return f"{parent}/{name}" if parent else name

    def _read_inotify(self, timeout: float) -> list[Change]:
        f = self._flags
        out: list[Change] = []
        # read_delay: let a burst (a pod slice and its scopes) arrive in one read
        for ev in self._inotify.read(timeout=math.ceil(timeout * 1000), read_delay=10):
            if ev.mask & f.Q_OVERFLOW:
                out.append(Change(RESYNC, why="inotify queue overflow"))
                continue
            parent = self._wd_path.get(ev.wd)
            if ev.mask & f.IGNORED:
                if parent is not None:
                    del self._wd_path[ev.wd]
                    self._path_wd.pop(parent, None)
                continue
            if parent is None or not ev.mask & f.ISDIR:
                continue
            path = self._join(parent, ev.name)
            if ev.mask & (f.CREATE | f.MOVED_TO):
                out.append(Change(CREATED, path))
            elif ev.mask & (f.DELETE | f.MOVED_FROM):
                out.append(Change(REMOVED, path))
        if any(c.kind == CREATED for c in out):
            # a new QoS slice (or kubepods.slice itself): watch it, and rediscover
            # what was created in it before the watch existed
            before = set(self._path_wd)
            self._refresh_watches()
            for rel in sorted(set(self._path_wd) - before):
                out.append(Change(RESYNC, rel, why=f"started watching {rel}"))
        return out

    def _read_poll(self, timeout: float) -> list[Change]:
        deadline = time.monotonic() + timeout
        while True:
            out: list[Change] = []
            for rel in list(self._snap):
                full = os.path.join(self.root, rel) if rel else self.root
                if not os.path.isdir(full):
                    del self._snap[rel]
                    continue
                now = set(_subdirs(full))
                old = self._snap[rel]
                out += [Change(CREATED, self._join(rel, n)) for n in sorted(now - old)]
                out += [Change(REMOVED, self._join(rel, n)) for n in sorted(old - now)]
                self._snap[rel] = now
            before = set(self._snap)
            self._refresh_watches()
            out += [Change(RESYNC, rel, why=f"started watching {rel}")
                    for rel in sorted(set(self._snap) - before)]
            left = deadline - time.monotonic()
            if out or left <= 0:
                return out
            time.sleep(min(self.poll_interval, left))

    def poll(self, timeout: float = 1.0) -> list[Change]:
        """Changes since the last call, waiting up to TIMEOUT seconds for one."""
        if self._pending:
            out, self._pending = self._pending, []
            return out
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            wait = max(0.0, min(deadline, self._next_resync) - now)
            if self._inotify is not None:
                out = self._read_inotify(wait)
            else:
                out = self._read_poll(wait)
            now = time.monotonic()
            if out or now >= self._next_resync or now >= deadline:
                break
        if now >= self._next_resync or any(c.kind == RESYNC for c in out):
            self._next_resync = time.monotonic() + self.resync_interval
            if not any(c.kind == RESYNC for c in out):
                out.append(Change(RESYNC, why="periodic"))
        return out

    wait = poll      # the agent loop's name for it

    def close(self) -> None:
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None
            self._wd_path.clear()
            self._path_wd.clear()

    def __enter__(self) -> "CgroupWatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


Watcher = CgroupWatcher
