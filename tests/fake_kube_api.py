"""A stand-in for the Kubernetes API server's SloPolicy endpoints, for tests.

It speaks what kube-apiserver speaks for a cluster-scoped custom resource with
a status subresource, over HTTPS on loopback (a self-signed certificate made
with openssl) with a bearer token:

  GET   /apis/slo.scx-slo.dev/v1alpha1/slopolicies            the list (kind SloPolicyList,
                                                              metadata.resourceVersion)
  GET   ...?watch=true&resourceVersion=RV[&allowWatchBookmarks=true][&timeoutSeconds=N]
        a chunked stream of JSON events, one per line: ADDED / MODIFIED / DELETED
        after RV, BOOKMARK (when asked) every `bookmark_s`; RV older than the
        history kept: one ERROR event, a v1 Status with code 410 (Expired), then the
        end of the stream (HTTP 200, as kube-apiserver does for a watch)
  POST  /api/v1/namespaces/NS/events   a core/v1 Event (generateName honoured), 201
  PATCH .../slopolicies/NAME/status   application/merge-patch+json (RFC 7386) on
        .status only; application/json-patch+json with an object body is a 400
  anything else: a v1 Status 404; a wrong or missing token: a v1 Status 401

The test drives it: apply(obj) creates or updates (a spec change bumps
metadata.generation; every write bumps the resourceVersion), delete(name),
compact() forgets the event history and ends open watches (resuming them is
410 Gone),
fail_next(n, code) answers the next n requests with that error, drop_watches()
cuts every open watch stream.
"""
from __future__ import annotations

import copy
import json
import ssl
import subprocess
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

GROUP, VERSION, PLURAL, KIND = "slo.scx-slo.dev", "v1alpha1", "slopolicies", "SloPolicy"
API_VERSION = f"{GROUP}/{VERSION}"
BASE = f"/apis/{GROUP}/{VERSION}/{PLURAL}"


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def go_bool(v: str | None) -> bool:
    """A query flag as kube-apiserver reads it (Go's strconv.ParseBool)."""
    return v in ("1", "t", "T", "TRUE", "true", "True")


def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class FakeKubeApi:
    def __init__(self, token: str = "test-token", bookmark_s: float = 0.5):
        self.token, self.bookmark_s = token, bookmark_s
        self.objects: dict[str, dict] = {}
        self.rv = 100
        self.history: list[tuple[int, str, dict]] = []     # (rv, type, object)
        self.oldest = self.rv                              # older resourceVersions: 410
        self.cond = threading.Condition()
        self.requests: list[tuple[str, str]] = []          # (method, path with query)
        self.patches: list[tuple[str, str, dict]] = []     # (name, content type, body)
        self.events: list[dict] = []                       # Events posted
        self._fail: list[int] = []
        self.failed = 0                                    # injected failures answered
        self.gone = 0                                      # 410s sent
        self._generation = 0                               # drop_watches() bumps it
        self.dir = Path(tempfile.mkdtemp(prefix="fake-kube-"))
        self.ca = self.dir / "ca.crt"
        key = self.dir / "tls.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                        "/CN=fake-kube-apiserver", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", str(key), "-out", str(self.ca)],
                       check=True, capture_output=True)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.ca, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "FakeKubeApi":
        self._thread.start()
        return self

    def stop(self) -> None:
        self.drop_watches()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "FakeKubeApi":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def kubeconfig(self, path: Path, ca: str | None = None) -> Path:
        """A kubeconfig for this server (CA path as given, default the real one)."""
        import yaml

        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url,
                                                      "certificate-authority": ca or str(self.ca)}}],
            "users": [{"name": "node", "user": {"token": self.token}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "node"}}]}))
        return path

    # -- what a test does ----------------------------------------------------------------
    def _event(self, kind: str, obj: dict) -> None:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.history.append((self.rv, kind, copy.deepcopy(obj)))
        self.cond.notify_all()

    def apply(self, obj: dict) -> dict:
        with self.cond:
            name = obj["metadata"]["name"]
            old = self.objects.get(name)
            new = copy.deepcopy(obj)
            new.setdefault("apiVersion", API_VERSION)
            new.setdefault("kind", KIND)
            meta = new["metadata"]
            if old is None:
                meta["generation"] = 1
                meta["uid"] = f"uid-{name}"
            else:
                meta["generation"] = old["metadata"]["generation"] + (
                    old.get("spec") != new.get("spec"))
                meta["uid"] = old["metadata"]["uid"]
                new["status"] = old.get("status")
            self.objects[name] = new
            self._event("ADDED" if old is None else "MODIFIED", new)
            return copy.deepcopy(new)

    def delete(self, name: str) -> None:
        with self.cond:
            obj = self.objects.pop(name)
            self._event("DELETED", obj)

    def compact(self) -> None:
        """As etcd compaction after another write: every resourceVersion handed out so far
        is too old to watch from, and open watches end."""
        with self.cond:
            self.rv += 1
            self.history.clear()
            self.oldest = self.rv
            self._generation += 1
            self.cond.notify_all()

    def fail_next(self, n: int, code: int = 500) -> None:
        with self.cond:
            self._fail += [code] * n

    def drop_watches(self) -> None:
        with self.cond:
            self._generation += 1
            self.cond.notify_all()

    def watches(self) -> int:
        return sum(1 for m, p in self.requests if m == "GET" and "watch=" in p)

    def lists(self) -> int:
        return sum(1 for m, p in self.requests if m == "GET" and "watch=" not in p)


def _handler(api: FakeKubeApi):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def send_json(self, code: int, doc: dict) -> None:
            body = json.dumps(doc).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def gate(self) -> bool:
            """Auth and injected failures; False when the request was answered."""
            with api.cond:
                api.requests.append((self.command, self.path))
                fail = api._fail.pop(0) if api._fail else None
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                self.send_json(401, status(401, "Unauthorized", "Unauthorized"))
                return False
            if fail is not None:
                api.failed += 1
                self.send_json(fail, status(fail, "InternalError", "injected failure"))
                return False
            return True

        def do_GET(self) -> None:
            if not self.gate():
                return
            url = urlsplit(self.path)
            q = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path != BASE:
                self.send_json(404, status(404, "NotFound", f"{url.path} not found"))
                return
            if not go_bool(q.get("watch")):
                with api.cond:
                    items = [copy.deepcopy(o) for _, o in sorted(api.objects.items())]
                    rv = api.rv
                self.send_json(200, {"apiVersion": API_VERSION, "kind": f"{KIND}List",
                                     "metadata": {"resourceVersion": str(rv)}, "items": items})
                return
            self.watch(int(q.get("resourceVersion") or 0),
                       go_bool(q.get("allowWatchBookmarks")),
                       float(q["timeoutSeconds"]) if "timeoutSeconds" in q else None)

        def chunk(self, doc: dict) -> None:
            data = json.dumps(doc).encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def watch(self, since: int, bookmarks: bool, timeout: float | None) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            end = time.monotonic() + (timeout if timeout is not None else 1800)
            next_bookmark = time.monotonic() + api.bookmark_s
            try:
                with api.cond:
                    gen = api._generation
                    if since < api.oldest:
                        api.gone += 1
                        self.chunk({"type": "ERROR", "object": status(
                            410, "Expired", f"too old resource version: {since} ({api.oldest})")})
                        return
                    sent = since
                    while time.monotonic() < end and gen == api._generation:
                        for rv, kind, obj in api.history:
                            if rv > sent:
                                self.chunk({"type": kind, "object": obj})
                                sent = rv
                        now = time.monotonic()
                        if bookmarks and now >= next_bookmark:
                            self.chunk({"type": "BOOKMARK", "object": {
                                "apiVersion": API_VERSION, "kind": KIND,
                                "metadata": {"resourceVersion": str(api.rv)}}})
                            sent = max(sent, api.rv)
                            next_bookmark = now + api.bookmark_s
                        api.cond.wait(min(0.1, max(0.0, end - now)))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
                pass
            finally:
                self.close_connection = True

        def do_POST(self) -> None:
            if not self.gate():
                return
            url = urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 5 or parts[:3] != ["api", "v1", "namespaces"] or \
                    parts[4] != "events":
                self.send_json(404, status(404, "NotFound", f"{url.path} not found"))
                return
            try:
                ev = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            except ValueError as e:
                self.send_json(400, status(400, "BadRequest", f"invalid JSON: {e}"))
                return
            meta = ev.setdefault("metadata", {})
            if meta.get("namespace", parts[3]) != parts[3] or \
                    ev.get("involvedObject", {}).get("namespace") != parts[3]:
                self.send_json(422, status(422, "Invalid", "namespace does not match"))
                return
            with api.cond:
                api.rv += 1
                meta.update(namespace=parts[3], resourceVersion=str(api.rv),
                            name=meta.get("name") or f"{meta.get('generateName', 'event.')}"
                                                      f"{api.rv:x}")
                api.events.append(ev)
            self.send_json(201, ev)

        def do_PATCH(self) -> None:
            if not self.gate():
                return
            url = urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = url.path[len(BASE) + 1:].split("/") if url.path.startswith(BASE + "/") else []
            if len(parts) != 2 or parts[1] != "status":
                self.send_json(404, status(404, "NotFound", f"{url.path} not found"))
                return
            ctype = self.headers.get("Content-Type", "")
            try:
                patch = json.loads(body)
            except ValueError as e:
                self.send_json(400, status(400, "BadRequest", f"invalid JSON: {e}"))
                return
            if ctype != "application/merge-patch+json" or not isinstance(patch, dict):
                self.send_json(400, status(400, "BadRequest", f"the server rejected our request "
                                           f"due to an error in our request ({ctype})"))
                return
            with api.cond:
                api.patches.append((parts[0], ctype, patch))
                obj = api.objects.get(parts[0])
                if obj is None:
                    self.send_json(404, status(404, "NotFound", f"slopolicies {parts[0]!r} "
                                                                "not found"))
                    return
                obj["status"] = merge_patch(obj.get("status"), patch.get("status"))
                api._event("MODIFIED", obj)
                doc = copy.deepcopy(obj)
            self.send_json(200, doc)

    return Handler
