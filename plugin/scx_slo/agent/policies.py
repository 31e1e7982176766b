"""The cluster's SloPolicy objects, kept current from the Kubernetes API server.

A thread lists the policies with the official client, then watches from the
list's resourceVersion (bookmarks on, a server-side timeout so that a dead
connection is noticed, and a client read timeout). A watch that ends is
resumed from the last resourceVersion seen; 410 Gone (the server no longer
has it) lists again; any other error is logged and retried after a backoff
that grows to 30 s. The loop learns of a change through `changed` (an Event)
and takes `snapshot()`: the policies as last listed and watched, or None while
the API server has not been reached (the node's user-data is then the whole
configuration). At most MAX_OBJECTS policies, each at most MAX_OBJECT_BYTES of
spec, are kept (a larger spec is kept as a marker the merge refuses); of those
the merge applies the first MAX_POLICIES by name.

`report()` writes each policy's verdict on this node to the object's status
subresource (a merge patch, which the client sends for a dict body:
observedGeneration and an Accepted condition), only where the status does not
say so already: nodes that agree write once. `event_sink()` posts Events on
pods for agent/alerts.py with the same client.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from scx_slo.errors import ScxSloError
from scx_slo.settings.cluster import GROUP, MAX_POLICIES, PLURAL, VERSION, Policy, Verdict

log = logging.getLogger(__name__)

MAX_OBJECTS = 4 * MAX_POLICIES
MAX_OBJECT_BYTES = 64 * 1024
WATCH_TIMEOUT_S = 300          # the server ends a watch after this; resumed at once
READ_TIMEOUT_S = 90            # no byte (event or bookmark) for this long: reconnect
BACKOFF_S = (1, 2, 5, 10, 30)
CONDITION = "Accepted"


class PolicyApiError(ScxSloError):
    """The Kubernetes API cannot be configured from what the settings name."""


def api_client(kubeconfig: str | None, host_root: str | None = None):
    """A kubernetes.client.ApiClient: in-cluster credentials when KUBECONFIG is None and
    the pod's service account is mounted, else the kubeconfig file. With HOST_ROOT (a
    host container seeing the host's root there), the kubeconfig and the files it names
    (the CA, client certificates) are read under it, and an exec credential plugin runs
    chrooted into it: on Bottlerocket that is /usr/bin/aws-iam-authenticator, linked
    against the host's glibc (hostcontainer/CONTRACT.md)."""
    from kubernetes import client, config

    try:
        if kubeconfig is None:
            config.load_incluster_config()
            return client.ApiClient()
        import yaml

        path = Path(host_root) / kubeconfig.lstrip("/") if host_root else Path(kubeconfig)

        doc = yaml.safe_load(path.read_text())
        if host_root:
            doc = _under_root(doc, host_root)
        cfg = client.Configuration()
        config.load_kube_config_from_dict(doc, client_configuration=cfg)
        return client.ApiClient(cfg)
    except (OSError, ValueError, TypeError, config.ConfigException) as e:
        where = "in-cluster service account" if kubeconfig is None else kubeconfig
        raise PolicyApiError(f"kubernetes: cannot configure the API client from {where}: {e}") \
            from None


_PATH_KEYS = ("certificate-authority", "client-certificate", "client-key", "tokenFile")


def _under_root(doc: dict, root: str) -> dict:
    """A kubeconfig whose absolute file paths are read under ROOT and whose exec plugin
    runs chrooted into ROOT."""
    def rebase(p):
        return str(Path(root) / p.lstrip("/")) if isinstance(p, str) and p.startswith("/") else p

    doc = json.loads(json.dumps(doc))
    for section, inner in (("clusters", "cluster"), ("users", "user")):
        for entry in doc.get(section) or []:
            body = entry.get(inner) or {}
            for key in _PATH_KEYS:
                if key in body:
                    body[key] = rebase(body[key])
            ex = body.get("exec")
            if isinstance(ex, dict) and str(ex.get("command", "")).startswith("/"):
                ex["args"] = [root, ex["command"], *(ex.get("args") or [])]
                ex["command"] = "chroot"
    return doc


class PolicyWatch:
    """List + watch SloPolicy objects in a thread (see the module's docstring)."""

    def __init__(self, client, *, watch_timeout: int = WATCH_TIMEOUT_S,
                 read_timeout: float = READ_TIMEOUT_S, backoff=BACKOFF_S):
        from kubernetes import client as k8s

        self.api = k8s.CustomObjectsApi(client)
        self.watch_timeout, self.read_timeout, self.backoff = watch_timeout, read_timeout, backoff
        self.changed = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._objects: dict[str, dict] | None = None
        self._watch = None
        self._thread: threading.Thread | None = None

    # -- what the loop sees --------------------------------------------------------------
    def snapshot(self) -> list[Policy] | None:
        with self._lock:
            if self._objects is None:
                return None
            return [Policy.from_object(o) for o in self._objects.values()]

    def start(self) -> "PolicyWatch":
        self._thread = threading.Thread(target=self._run, name="slopolicy-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        w = self._watch
        if w is not None:
            w.stop()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "PolicyWatch":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the thread ----------------------------------------------------------------------
    def _run(self) -> None:
        from kubernetes.client.rest import ApiException

        failures = 0
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    rv = self._list()
                    failures = 0
                t0 = time.monotonic()
                rv, events = self._watch_from(rv)
                if not events and time.monotonic() - t0 < 1:
                    # a watch the server ends at once is a server problem: no busy loop
                    rv = self._fail(failures, "the watch ended at once")
                    failures += 1
            except ApiException as e:
                if e.status == 410:
                    log.info("slopolicies: resourceVersion %s is gone; listing again", rv)
                    rv = None
                    continue
                rv = self._fail(failures, f"HTTP {e.status} {e.reason}")
                failures += 1
            except Exception as e:  # noqa: BLE001 - urllib3, ssl, socket, JSON: retry them all
                if self._stop.is_set():
                    break
                rv = self._fail(failures, f"{type(e).__name__}: {e}")
                failures += 1

    def _fail(self, failures: int, what: str) -> None:
        """Log, wait out the backoff; None: list again after it."""
        delay = self.backoff[min(failures, len(self.backoff) - 1)]
        log.warning("slopolicies: %s; retrying in %s s", what, delay)
        self._stop.wait(delay)
        return None

    def _list(self) -> str:
        resp = self.api.list_cluster_custom_object(
            GROUP, VERSION, PLURAL, _request_timeout=(10, self.read_timeout))
        objects = {}
        for obj in sorted(resp.get("items") or [], key=lambda o: o["metadata"]["name"]):
            if len(objects) >= MAX_OBJECTS:
                log.warning("slopolicies: more than %d objects; the rest are ignored", MAX_OBJECTS)
                break
            objects[obj["metadata"]["name"]] = _bounded(obj)
        with self._lock:
            self._objects = objects
        self.changed.set()
        return resp["metadata"]["resourceVersion"]

    def _watch_from(self, rv: str) -> tuple[str, int]:
        """Follow the watch from RV; the resourceVersion reached and the events seen."""
        from kubernetes import watch

        w = self._watch = watch.Watch()
        events = 0
        try:
            for ev in w.stream(self.api.list_cluster_custom_object, GROUP, VERSION, PLURAL,
                               resource_version=rv, allow_watch_bookmarks=True,
                               timeout_seconds=self.watch_timeout,
                               _request_timeout=(10, self.read_timeout)):
                if self._stop.is_set():
                    break
                events += 1
                self._apply(ev["type"], ev["raw_object"])
        finally:
            self._watch = None
        return w.resource_version or rv, events

    def _apply(self, kind: str, obj: dict) -> None:
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return                      # BOOKMARK: the watch keeps its resourceVersion
        name = obj["metadata"]["name"]
        with self._lock:
            objects = dict(self._objects or {})
            if kind == "DELETED":
                objects.pop(name, None)
            elif name in objects or len(objects) < MAX_OBJECTS:
                objects[name] = _bounded(obj)
            else:
                log.warning("slopolicies: more than %d objects; %s ignored", MAX_OBJECTS, name)
                return
            old = (self._objects or {}).get(name)
            self._objects = objects
        # a status written back (ours or another node's) changes no spec: no reload
        if old is None or kind == "DELETED" or old.get("spec") != objects[name].get("spec"):
            self.changed.set()

    # -- status --------------------------------------------------------------------------
    def report(self, verdicts: dict[str, Verdict]) -> int:
        """Write VERDICTS to the policies' status where it differs; the number written."""
        from kubernetes.client.rest import ApiException

        with self._lock:
            current = {n: (o.get("status") or {}) for n, o in (self._objects or {}).items()}
        written = 0
        for name, v in verdicts.items():
            if name not in current:
                continue
            cond = _condition(v)
            have = next((c for c in current[name].get("conditions") or []
                         if c.get("type") == CONDITION), {})
            if current[name].get("observedGeneration") == v.generation and all(
                    have.get(k) == cond[k] for k in ("status", "reason", "message")):
                continue
            body = {"status": {"observedGeneration": v.generation, "conditions": [cond]}}
            try:
                self.api.patch_cluster_custom_object_status(
                    GROUP, VERSION, PLURAL, name, body, _request_timeout=(5, 10))
                written += 1
            except ApiException as e:
                log.warning("slopolicies: cannot write the status of %s: HTTP %s %s",
                            name, e.status, e.reason)
            except Exception as e:  # noqa: BLE001 - the next change retries it
                log.warning("slopolicies: cannot write the status of %s: %s", name, e)
        return written


def _condition(v: Verdict) -> dict:
    return {"type": CONDITION, "status": "True" if v.accepted else "False",
            "reason": "Merged" if v.accepted else "Invalid",
            "message": "in force" if v.accepted else (
                "\n".join(v.issues) + (f"\ngeneration {v.in_force} stays in force"
                                       if v.in_force else ""))[:32768],
            "observedGeneration": v.generation,
            "lastTransitionTime": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}


def _bounded(obj: dict) -> dict:
    """OBJ without what the merge does not read, and with an oversized spec replaced by a
    marker the merge refuses (so memory stays bounded whatever the server sends)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec")
    if len(json.dumps(spec)) > MAX_OBJECT_BYTES:
        spec = f"spec larger than {MAX_OBJECT_BYTES} bytes"
    return {"metadata": {"name": meta.get("name"), "generation": meta.get("generation"),
                         "resourceVersion": meta.get("resourceVersion")},
            "spec": spec, "status": obj.get("status")}



def event_sink(client, node: str):
    """A function posting a Warning Event on a pod (core/v1, as the kubelet's are): the
    alerts' sink when the agent reaches the API server."""
    from kubernetes import client as k8s

    core = k8s.CoreV1Api(client)

    def post(pod, reason: str, message: str) -> None:
        ts = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {"apiVersion": "v1", "kind": "Event",
                "metadata": {"generateName": f"{pod.name}.", "namespace": pod.namespace},
                "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace,
                                   "name": pod.name, **({"uid": pod.uid} if pod.uid else {})},
                "reason": reason, "message": message[:1024], "type": "Warning",
                "source": {"component": "scx-slo", "host": node},
                "reportingComponent": "scx-slo", "reportingInstance": node,
                "firstTimestamp": ts, "lastTimestamp": ts, "count": 1}
        core.create_namespaced_event(pod.namespace, body, _request_timeout=(5, 10))

    return post
