"""A stand-in for Bottlerocket's apiserver on a real Unix socket, for tests.

It answers the calls scx-slo makes the way the apiserver does (see
sources/api/openapi.yaml and apiserver/src/server/mod.rs in
bottlerocket-os/bottlerocket):

  GET  /settings[?keys=settings.a,settings.b | ?prefix=settings.x]  200 JSON, live settings only
  PATCH /settings[?tx=NAME]             204; 400 (text body) on unknown keys or wrong types
  GET  /tx[?tx=NAME]                    200 JSON, the pending settings of NAME
  POST /tx/commit_and_apply[?tx=NAME]   200 JSON list of committed keys;
                                        422 when NAME has nothing pending
The transaction defaults to "default". Settings JSON has no "settings" wrapper.
Host containers take exactly source/enabled/superpowered/user-data, and names
of letters, digits and '-' only; user-data must be base64.

Use from Python:
    server = start(path, settings={...})   # server.settings is the live dict
    ...; server.stop()                      # or `with start(path) as server:`
or as a script (e.g. inside the test VM):
    python3 tests/fake_bottlerocket_api.py --socket PATH [--settings-json FILE]
"""
from __future__ import annotations

import argparse
import base64
import binascii
import copy
import json
import os
import re
import signal
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

# Top-level settings a Bottlerocket aws-k8s variant knows (Settings has
# deny_unknown_fields: anything else is a 400).
KNOWN_SETTINGS = {
    "motd", "kubernetes", "host-containers", "bootstrap-containers", "ntp", "network",
    "kernel", "boot", "aws", "updates", "metrics", "container-registry", "oci-defaults",
    "oci-hooks", "pki", "dns", "cloudformation", "autoscaling", "host-containerd",
    "container-runtime", "bootstrap-commands",
}
HOST_CONTAINER_FIELDS = {"source": str, "enabled": bool, "superpowered": bool, "user-data": str}
_NAME_RE = re.compile(r"[A-Za-z0-9-]+")


class BadRequest(Exception):
    pass


def _b64_ok(s: str) -> bool:
    try:
        base64.b64decode(s, validate=True)
        return True
    except (binascii.Error, ValueError):
        return False


def check_settings(body: object) -> None:
    """Reject what the apiserver's model would refuse to deserialize."""
    if not isinstance(body, dict):
        raise BadRequest("Json deserialize error: invalid type: expected struct Settings")
    for key, value in body.items():
        if key not in KNOWN_SETTINGS:
            raise BadRequest(f"Json deserialize error: unknown field `{key}`, expected one of "
                             + ", ".join(f"`{k}`" for k in sorted(KNOWN_SETTINGS)))
        if key == "motd" and not isinstance(value, str):
            raise BadRequest("Json deserialize error: invalid type for `motd`, expected a string")
        if key == "host-containers":
            if not isinstance(value, dict):
                raise BadRequest("Json deserialize error: invalid type for `host-containers`, "
                                 "expected a map")
            for name, hc in value.items():
                if not _NAME_RE.fullmatch(name):
                    raise BadRequest(f"Json deserialize error: invalid host container name "
                                     f"'{name}': only ASCII letters, digits and '-' allowed")
                if not isinstance(hc, dict):
                    raise BadRequest(f"Json deserialize error: invalid type for host container "
                                     f"'{name}', expected struct HostContainer")
                for field, v in hc.items():
                    if field not in HOST_CONTAINER_FIELDS:
                        raise BadRequest(f"Json deserialize error: unknown field `{field}`, "
                                         "expected one of `source`, `enabled`, "
                                         "`superpowered`, `user-data`")
                    if not isinstance(v, HOST_CONTAINER_FIELDS[field]):
                        raise BadRequest(f"Json deserialize error: invalid type for `{field}`")
                    if field == "user-data" and not _b64_ok(v):
                        raise BadRequest("Json deserialize error: Invalid base64 in user-data")


def merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


def _quote(seg: str) -> str:
    return f'"{seg}"' if "." in seg else seg


def flatten(d: dict, prefix: str = "settings") -> dict[str, object]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{_quote(k)}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def subset(settings: dict, want) -> dict:
    """The part of SETTINGS whose dotted keys satisfy WANT(key)."""
    out: dict = {}

    def walk(src: dict, dst_path: list, prefix: str):
        for k, v in src.items():
            key = f"{prefix}.{_quote(k)}"
            if isinstance(v, dict) and v and not want(key):
                walk(v, dst_path + [k], key)
            elif want(key):
                node = out
                for p in dst_path:
                    node = node.setdefault(p, {})
                node[k] = copy.deepcopy(v)
    walk(settings, [], "settings")
    return out


class FakeApiServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, settings: dict | None = None):
        self.path = path
        self.settings: dict = copy.deepcopy(settings) if settings else {}
        self.pending: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []     # (method, target), for assertions
        self.applied: list[list[str]] = []            # committed keys of each commit_and_apply
        self.lock = threading.Lock()
        self._thread: threading.Thread | None = None
        if os.path.exists(path):
            os.unlink(path)
        super().__init__(path, _Handler)

    def start(self) -> "FakeApiServer":
        self._thread = threading.Thread(target=self.serve_forever, name="fake-br-api",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread:
            self._thread.join(timeout=5)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeApiServer

    def log_message(self, fmt, *args):  # the client address of a Unix socket is ''
        pass

    def _send(self, status: int, body: object = None, text: str | None = None) -> None:
        if text is not None:
            data, ctype = text.encode(), "text/plain; charset=utf-8"
        elif body is not None:
            data, ctype = json.dumps(body).encode(), "application/json"
        else:
            data, ctype = b"", None
        self.send_response(status)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method: str) -> None:
        url = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        tx = q.get("tx", "default")
        srv = self.server
        with srv.lock:
            srv.requests.append((method, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            with srv.lock:
                if url.path == "/settings" and method == "GET":
                    if "keys" in q:
                        keys = [k for k in q["keys"].split(",") if k]
                        if not keys:
                            raise BadRequest("Input 'keys' cannot be empty")
                        return self._send(200, subset(srv.settings, lambda k: k in keys))
                    if "prefix" in q:
                        prefix = q["prefix"]
                        if not prefix:
                            raise BadRequest("Input 'prefix' cannot be empty")
                        return self._send(200, subset(srv.settings,
                                                      lambda k: k.startswith(prefix)))
                    return self._send(200, srv.settings)
                if url.path == "/settings" and method == "PATCH":
                    try:
                        body = json.loads(raw)
                    except ValueError as e:
                        raise BadRequest(f"Json deserialize error: {e}") from None
                    check_settings(body)
                    merge(srv.pending.setdefault(tx, {}), body)
                    return self._send(204)
                if url.path == "/tx" and method == "GET":
                    return self._send(200, srv.pending.get(tx, {}))
                if url.path == "/tx/list" and method == "GET":
                    return self._send(200, sorted(srv.pending))
                if url.path in ("/tx/commit_and_apply", "/tx/commit") and method == "POST":
                    pending = srv.pending.pop(tx, {})
                    before = flatten(srv.settings)
                    merge(srv.settings, pending)
                    changed = sorted(k for k, v in flatten(pending).items()
                                     if before.get(k, object()) != v or k not in before)
                    if not pending:
                        # the apiserver's CommitWithNoPending (server/error.rs)
                        return self._send(422, text="Tried to commit with no pending changes")
                    srv.applied.append(changed)
                    return self._send(200, sorted(flatten(pending)))
            return self._send(404 if method == "GET" else 405,
                              text=f"no route for {method} {url.path}")
        except BadRequest as e:
            return self._send(400, text=str(e))

    def do_GET(self):
        self._route("GET")

    def do_PATCH(self):
        self._route("PATCH")

    def do_POST(self):
        self._route("POST")


def start(path: str, settings: dict | None = None) -> FakeApiServer:
    """Listen on the Unix socket PATH and serve in a thread; returns the server."""
    return FakeApiServer(str(path), settings).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--socket", required=True, help="Unix socket path to listen on")
    p.add_argument("--settings-json", help="initial live settings (API JSON shape)")
    args = p.parse_args(argv)
    settings = {}
    if args.settings_json:
        with open(args.settings_json) as f:
            settings = json.load(f)
    server = FakeApiServer(args.socket, settings)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"fake Bottlerocket API listening on {args.socket}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        try:
            os.unlink(args.socket)
        except FileNotFoundError:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
