"""The agent: the host container's main process (`scx-slo run`).

1. Preflight, then the configuration in force (user-data, else the last good one).
2. The scheduler: adopt our pinned one, replace a pinned one of another digest
   (an upgrade), or gate -> load -> attach -> pin.
3. Reconcile: pod cgroups and their classes into the scheduler's maps, on
   every cgroup change (inotify) and on a periodic full resync.
4. Report one line per class every interval; sd_notify; optional metrics.
5. Watch for the scheduler's exit: log it, reload with backoff, give up loudly
   after repeated failures.
6. SIGTERM: hand off (leave it pinned) if this host container is still
   enabled in the API, else detach and unpin.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from scx_slo import OPS_NAME
from scx_slo.loader import pins
from scx_slo.errors import ScxSloError
from scx_slo.agent.histogram import fmt_ns, percentile
from scx_slo.agent.journal import Reporter
from scx_slo.loader.tuning import class_configs, tune
from scx_slo.loader.scheduler import LINK_PIN, Scheduler
from scx_slo.loader.sysfs import attached_ops, exit_kind, wait_state

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
class AgentError(ScxSloError):
    """The agent cannot run on this node."""


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Options:
    user_data: str
    state_dir: str
    pin_base: str | None = None
    cgroup_root: str = "/sys/fs/cgroup"
    cri_socket: str | None = None
    api_socket: str = "/run/api.sock"
    name: str = "scx-slo"
    interval: float = 10.0
    resync: float = 60.0
    max_failures: int = 3
    failure_window: float = 600.0
    backoff: list[float] = field(default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0])


class Agent:
    def __init__(self, opts: Options, reporter: Reporter | None = None):
        self.opts = opts
        self.out = reporter or Reporter()
        self.sched: Scheduler | None = None
        self.config = None
        self.config_source = ""
        self.pin_dir: Path | None = None
        self.failures: list[float] = []
        self.given_up = False
        self.stop_event = threading.Event()
        self.entries: dict[int, tuple[int, str]] = {}
        self.pods_by_class: dict[int, int] = {}
        self._last_stats: dict[int, dict] = {}
        self.metrics_server = None
        self.bw_feed = None     # cpu.max from cgroupfs, on kernels that do not pass it
        self.node_settings = None   # the node's own settings (Loaded): merged with policies
        self.policies = None        # PolicyWatch, with [kubernetes] enabled
        self.kube_client = None     # its API client (also for Events)
        self.misses = None          # MissReader: per-pod SLO-miss alerts
        self.pod_resolver = None
        self._refused: dict[str, tuple] = {}    # policy name -> (generation, issues) logged
        self._last_good: dict = {}              # policy name -> its last accepted Policy

    # -- configuration -----------------------------------------------------------------
    def load_config(self) -> None:
        from scx_slo.settings.store import load_effective

        eff = load_effective(self.opts.user_data, self.opts.state_dir)
        if eff.error is not None:
            self.out.error(f"settings refused, running with the {eff.source} configuration: "
                           f"{eff.error}", source=eff.source)
        self.config, self.config_source = eff.config, eff.source
        self.node_settings = eff.loaded
        self.out.log(f"settings: {len(eff.config.classes) - 1} SLO class(es), "
                     f"{len(eff.config.rules)} rule(s), from {eff.source}", source=eff.source)

    # -- cluster policy ----------------------------------------------------------------
    def start_policies(self) -> None:
        """With [kubernetes] enabled: watch the cluster's SloPolicy objects."""
        from scx_slo.agent.policies import PolicyApiError, PolicyWatch, api_client

        k = self.config.kubernetes
        if not k.enabled:
            return
        try:
            client = api_client(k.kubeconfig, k.host_root)
        except PolicyApiError as e:
            self.out.error(f"{e}; running with the node's settings only")
            return
        self.kube_client = client
        self.policies = PolicyWatch(client).start()
        where = "the pod's service account" if k.kubeconfig is None else \
            f"{k.kubeconfig}" + (f" under {k.host_root}" if k.host_root else "")
        self.out.log(f"cluster policy: watching SloPolicy objects (credentials: {where})")

    def start_misses(self) -> None:
        """Per-pod SLO-miss alerts from the scheduler's slo_misses ring ([alerts])."""
        from scx_slo.agent.alerts import MissAlerts, MissReader, PodResolver
        from scx_slo.agent.policies import event_sink

        cfg = self.config.alerts
        if not cfg.enabled or self.sched is None or self.misses is not None:
            return
        if self.pod_resolver is None:
            self.pod_resolver = PodResolver(self.opts.cgroup_root)
        node = os.uname().nodename
        sink = event_sink(self.kube_client, node) \
            if cfg.events and self.kube_client is not None else None
        alerts = MissAlerts(cfg, self.pod_resolver, self.class_name, self.out,
                            events=sink is not None, node=node)
        try:
            self.misses = MissReader(self.sched, alerts, sink).start()
        except ScxSloError as e:
            self.out.warning(f"per-pod SLO-miss alerts are off: {e}")

    def class_name(self, class_id: int) -> str:
        return next((c.name for c in self.config.classes if c.id == class_id), str(class_id))

    def stop_misses(self) -> None:
        if self.misses is not None:
            self.misses.stop()
            self.misses = None

    def apply_policies(self) -> None:
        """Merge the policies as last seen with the node's settings; apply a change to
        the maps (no reload); log each refusal once; write the verdicts back."""
        from scx_slo.settings.cluster import merge

        snapshot = self.policies.snapshot()
        if snapshot is None or self.node_settings is None:
            return
        current = {p.name: p for p in snapshot}
        self._last_good = {n: p for n, p in self._last_good.items() if n in current}
        merged = merge(self.node_settings.text, snapshot, self._last_good)
        for name, v in merged.verdicts.items():
            seen = (v.generation, v.issues)
            if v.accepted:
                self._last_good[name] = current[name]
            elif self._refused.get(name) != seen:
                kept = f" (generation {v.in_force} stays in force)" if v.in_force else ""
                for issue in v.issues:
                    self.out.error(f"cluster policy refused: {issue}{kept}", policy=name)
            self._refused[name] = seen
        for note in merged.notes:
            log.info("cluster policy: %s", note)
        config = merged.loaded.config
        in_force = sorted(n for n, v in merged.verdicts.items() if v.in_force)
        if (config.classes, config.rules, config.annotations) != \
                (self.config.classes, self.config.rules, self.config.annotations):
            self.config = config
            self.config_source = f"{self.node_settings.filename} + SloPolicy " \
                                 f"{', '.join(in_force) or '(none)'}"
            self.configure_classes()
            self.reconcile()
            self.out.log(f"settings: {len(config.classes) - 1} SLO class(es), "
                         f"{len(config.rules)} rule(s), from {self.config_source}",
                         source="cluster")
        self.policies.report(merged.verdicts)

    # -- the scheduler -----------------------------------------------------------------
    def _object(self) -> tuple[str, str]:
        path = self.config.scheduler.object_path()
        return path, file_sha256(path)

    def attach(self) -> None:
        """Adopt, upgrade, or load the scheduler; then configure its classes."""
        path, sha = self._object()
        pin_base = pins.base_dir(self.opts.pin_base)
        mine = pins.object_dir(pin_base, sha)
        ops = attached_ops()
        others = [d for d in pins.pinned_dirs(pin_base) if d != mine]
        if ops is not None and ops != OPS_NAME:
            raise AgentError(f"another sched_ext scheduler is attached ({ops}); "
                             "scx-slo will not replace it")
        if ops == OPS_NAME and (mine / LINK_PIN).exists():
            self.sched = Scheduler.adopt(mine, object_path=path)
            self.pin_dir = mine
            self.out.log(f"adopted the pinned scheduler {sha[:16]} (no reload)", sha256=sha)
        elif ops == OPS_NAME and others:
            self._upgrade(path, sha, mine, others)
        else:
            for stale in others + ([mine] if mine.exists() else []):
                self._remove_pins(stale, path)
            self.sched = self._load(path, sha, mine)
            self.out.log(f"scheduler {OPS_NAME} loaded and attached ({sha[:16]}), "
                         f"pinned at {mine}", sha256=sha)
        self.configure_classes()

    def _load(self, path: str, sha: str, pin_dir: Path, attach: bool = True) -> Scheduler:
        sc = self.config.scheduler
        sched = Scheduler.open(path, expect_sha256=sc.sha256, pin_dir=pin_dir)
        try:
            tune(sched, sc)
            sched.load()
            for gap in sched.gaps:
                self.out.log(f"on this kernel: {gap}", gap=gap)
            if attach:
                sched.attach()
                sched.pin()
        except BaseException:
            sched.close()
            raise
        self.pin_dir = pin_dir
        return sched

    def _upgrade(self, path: str, sha: str, mine: Path, others: list[Path]) -> None:
        # Load (and verify) the new object before touching the running one.
        new = self._load(path, sha, mine, attach=False)
        t0 = time.monotonic()
        for old in others:
            self._remove_pins(old, path, detach=True)
        try:
            new.attach()
            new.pin()
        except BaseException:
            new.close()
            raise
        gap = time.monotonic() - t0
        self.sched = new
        self.out.warning(f"upgraded the scheduler to {sha[:16]} (replaced "
                         f"{', '.join(d.name for d in others)}); the kernel's default scheduler "
                         f"ran for {gap * 1000:.0f} ms in between", sha256=sha)

    def _remove_pins(self, pin_dir: Path, path: str, detach: bool = False) -> None:
        try:
            old = Scheduler.adopt(pin_dir, object_path=path)
        except ScxSloError as e:
            log.warning("stale pins at %s could not be adopted (%s); removing them", pin_dir, e)
            from scx_slo.loader.libbpf import Map
            for entry in pin_dir.iterdir():
                Map.unpin(entry)
            pin_dir.rmdir()
            return
        with old:
            if detach:
                old.detach()
            old.unpin()

    def configure_classes(self) -> None:
        from scx_slo.agent.bandwidth import BandwidthFeed, kernel_passes_cpu_max

        for class_id, cfg in class_configs(self.config).items():
            self.sched.set_class(class_id, cfg)
        self.sched.bump_generation()
        self.bw_feed = None if kernel_passes_cpu_max() else BandwidthFeed(self.sched)

    def feed_cpu_max(self) -> None:
        """Before 6.17: cpu.max of every cgroup of the pod tree and of the rules, into the map."""
        from scx_slo.agent.bandwidth import walk
        from scx_slo.agent.cgroups import KUBEPODS, match_globs
        from scx_slo.agent.reconcile import cgroup_patterns

        if self.bw_feed is None:
            return
        root = self.opts.cgroup_root
        paths = set(walk(os.path.join(root, KUBEPODS)))
        paths.update(os.path.join(root, c.path) for c in match_globs(root, cgroup_patterns(self.config)))
        changed = self.bw_feed.sync(sorted(paths))
        if changed:
            log.info("cpu.max: %d cgroup(s) fed from cgroupfs", changed)

    # -- reconcile ---------------------------------------------------------------------
    def reconcile(self) -> None:
        from scx_slo.agent.reconcile import plan_node

        cgroups = self.sched.typed("slo_cgroups")
        current = {key: value["class_id"] for key, value in cgroups.items()}
        plan = plan_node(self.config, self.opts.cgroup_root, self.opts.cri_socket, current)
        for message in plan.messages:
            self.out.warning(message)
        for cgid in plan.removes:
            self.sched.remove_cgroup(cgid)
        for cgid, class_id in {**plan.adds, **plan.changes}.items():
            self.sched.set_cgroup_class(cgid, class_id)
        if plan.adds or plan.changes or plan.removes:
            self.sched.bump_generation()
            log.info("reconciled: %s", plan.summary())
        self.pods_by_class = plan.pods_by_class
        if self.pod_resolver is not None:
            self.pod_resolver.update(plan.entries)
        self.feed_cpu_max()

    # -- health ------------------------------------------------------------------------
    def healthy(self) -> bool:
        return attached_ops() == OPS_NAME

    def handle_exit(self) -> None:
        """The scheduler is gone: say why, then reload with backoff or give up."""
        info = {}
        self.stop_misses()
        if self.sched is not None:
            # The exit record is complete once the kernel has finished disabling.
            wait_state("disabled", timeout=5)
            try:
                info = self.sched.exit_info() or {}
            except ScxSloError:
                info = {}
            try:
                self.sched.unpin()      # a dead scheduler's pins serve no one
            except ScxSloError as e:
                log.warning("could not remove the dead scheduler's pins: %s", e)
            self.sched.close()
            self.sched = None
        self._last_stats.clear()
        kind = exit_kind(info.get("kind", 0))
        self.out.error(f"scheduler exited: {kind}: {info.get('reason', '?')}: "
                       f"{info.get('msg', '').strip() or '-'}; the kernel's default scheduler is "
                       "running", exit_kind=kind, exit_code=info.get("exit_code", 0))
        now = time.monotonic()
        self.failures = [t for t in self.failures if now - t < self.opts.failure_window] + [now]
        if len(self.failures) >= self.opts.max_failures:
            self.given_up = True
            self.out.log(f"scheduler failed {len(self.failures)} times in "
                         f"{self.opts.failure_window:.0f} s: staying on the kernel's default "
                         "scheduler until this container restarts", priority=2)
            Reporter.notify("GIVEN UP: scheduler keeps exiting; default scheduler in use")
            self.write_status()
            return
        delay = self.opts.backoff[min(len(self.failures) - 1, len(self.opts.backoff) - 1)]
        self.out.warning(f"reloading in {delay:.0f} s (failure {len(self.failures)} of "
                         f"{self.opts.max_failures})")
        if self.stop_event.wait(delay):
            return
        try:
            self.attach()
            self.entries.clear()
            self.reconcile()
            self.start_misses()
        except ScxSloError as e:
            self.out.error(f"reload failed: {e}")
            self.handle_exit()

    # -- reporting ---------------------------------------------------------------------
    def class_stats(self) -> list[dict]:
        rows = []
        for c in self.config.classes:
            s = self.sched.stats(c.id)
            prev = self._last_stats.get(c.id)
            hist = [a - (prev["lat_hist"][i] if prev else 0) for i, a in enumerate(s["lat_hist"])]
            rows.append({
                "class": c.name, "id": c.id, "pods": self.pods_by_class.get(c.id, 0),
                "p50_ns": percentile(hist, 0.5), "p99_ns": percentile(hist, 0.99),
                "wakeups": s["nr_wakeups"] - (prev["nr_wakeups"] if prev else 0),
                "misses": s["nr_misses"] - (prev["nr_misses"] if prev else 0),
                "preempts": s["nr_preempts"] - (prev["nr_preempts"] if prev else 0),
            })
            self._last_stats[c.id] = s
        return rows

    def report(self) -> None:
        for r in self.class_stats():
            self.out.log(f"class {r['class']}: pods={r['pods']} wakeups={r['wakeups']} "
                         f"p50={fmt_ns(r['p50_ns'])} p99={fmt_ns(r['p99_ns'])} "
                         f"misses={r['misses']} preempts={r['preempts']}",
                         slo_class=r["class"], pods=r["pods"], p99_ns=r["p99_ns"] or 0,
                         misses=r["misses"], preempts=r["preempts"])
        self.write_status()

    def write_status(self) -> None:
        status = {"pid": os.getpid(), "time": time.time(), "pin_dir": str(self.pin_dir or ""),
                  "config_source": self.config_source, "given_up": self.given_up,
                  "classes": [{"id": c.id, "name": c.name, "p99_ns": c.p99_ns,
                               "pods": self.pods_by_class.get(c.id, 0)}
                              for c in self.config.classes]}
        d = Path(self.opts.state_dir)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / (STATUS_FILE + ".tmp")
        tmp.write_text(json.dumps(status))
        tmp.replace(d / STATUS_FILE)

    # -- shutdown ----------------------------------------------------------------------
    def still_enabled(self) -> bool | None:
        """Is this host container still enabled in the Bottlerocket API? None: unknown."""
        from scx_slo.settings.apiclient import ApiClient, ApiError

        try:
            hc = ApiClient(self.opts.api_socket, timeout=5).host_container(self.opts.name)
        except ApiError as e:
            self.out.warning(f"cannot ask the API whether {self.opts.name} is still enabled: {e}")
            return None
        return bool(hc.get("enabled", False))

    def shutdown(self) -> None:
        if self.sched is None:
            return
        enabled = self.still_enabled()
        if enabled is False:
            self.sched.detach()
            self.sched.unpin()
            self.out.log(f"host container {self.opts.name} is disabled: scheduler detached and "
                         "unpinned; the kernel's default scheduler is back")
        else:
            self.out.log(f"handing off: the scheduler stays attached and pinned at {self.pin_dir} "
                         "for the next agent to adopt")
        self.sched.close()
        self.sched = None

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> int:
        from scx_slo.agent.preflight import Preflight

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop_event.set())
        problems = [c for c in Preflight().run(trial_load=False) if not c.ok]
        for c in problems:
            self.out.error(f"preflight {c.name}: {c.detail}; fix: {c.hint}", check=c.name)
        if any(c.name in ("kernel", "sched_ext", "btf", "privileges", "libbpf", "other_scheduler")
               for c in problems):
            return 1
        self.load_config()
        try:
            self.attach()
        except ScxSloError as e:
            self.out.error(f"could not start the scheduler: {e}")
            return 1
        self.start_metrics()
        self.start_policies()
        self.start_misses()
        from scx_slo.agent.cgroups import CgroupWatcher, glob_watch_dirs
        from scx_slo.agent.reconcile import cgroup_patterns

        watcher = CgroupWatcher(self.opts.cgroup_root, resync_interval=self.opts.resync,
                                extra_dirs=glob_watch_dirs(cgroup_patterns(self.config)))
        Reporter.notify(f"{OPS_NAME} attached", ready=True)
        next_report = time.monotonic()
        # a policy change waits for the next poll: poll more often while policies are read
        poll_s = 0.25 if self.policies is not None else 1.0
        try:
            while not self.stop_event.is_set():
                changes = watcher.poll(timeout=poll_s)
                if self.stop_event.is_set() or self.given_up:
                    continue
                if not self.healthy():
                    self.handle_exit()
                    continue
                if self.policies is not None and self.policies.changed.is_set():
                    self.policies.changed.clear()
                    self.apply_policies()
                if changes:
                    self.reconcile()
                if time.monotonic() >= next_report:
                    self.feed_cpu_max()     # an in-place pod resize rewrites cpu.max
                    self.report()
                    next_report = time.monotonic() + self.opts.interval
        finally:
            watcher.close()
            if self.policies is not None:
                self.policies.stop()
            self.stop_misses()
            self.stop_metrics()
            self.shutdown()
        return 0

    def start_metrics(self) -> None:
        m = self.config.scheduler.metrics
        if not m.enabled:
            return
        from scx_slo.agent.metrics import serve

        self.metrics_server = serve(self, m.address, m.port)
        self.out.log(f"metrics on http://{m.address}:{m.port}/metrics")

    def stop_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.shutdown()
            self.metrics_server = None
