"""A client of the Bottlerocket API: HTTP/1.1 over the Unix socket /run/api.sock.

Bottlerocket mounts the socket into every host container. The calls used here
(see sources/api/openapi.yaml in bottlerocket-os/bottlerocket-core-kit; the API
server's routes are in sources/api/apiserver/src/server/mod.rs there):

  GET  /settings?keys=settings.a,settings.b   the named settings (JSON object)
  GET  /settings?prefix=settings.host-containers
  PATCH /settings?tx=NAME                     stage a change in transaction NAME (204)
  GET  /tx?tx=NAME                            the pending settings of NAME
  POST /tx/commit_and_apply?tx=NAME           commit NAME and apply it (200, changed keys;
                                              422 "Tried to commit with no pending
                                              changes" when NAME changes nothing)

Settings JSON has no "settings" wrapper: {"host-containers": {"scx-slo": {...}}}.
Every failure is an ApiError subclass naming the socket and the request.
"""
from __future__ import annotations

import http.client
import json
import secrets
import socket
from urllib.parse import quote, urlencode

from scx_slo.errors import ScxSloError

API_SOCKET = "/run/api.sock"
DEFAULT_TIMEOUT = 30.0
MAX_RESPONSE = 16 * 1024 * 1024


class ApiError(ScxSloError):
    """A Bottlerocket API request that failed."""


class ApiSocketError(ApiError):
    """The API socket is absent, refuses connections or is not a socket."""


class ApiTimeout(ApiError):
    """The API did not answer in time."""


class ApiHttpError(ApiError):
    """The API answered with a 4xx/5xx status."""

    def __init__(self, method: str, target: str, status: int, reason: str, body: str):
        self.method, self.target, self.status, self.body = method, target, status, body
        detail = body.strip().splitlines()[0][:300] if body.strip() else reason
        super().__init__(f"{method} {target}: HTTP {status} {reason}: {detail}")


class ApiBadResponse(ApiError):
    """The API answered with something that is not the JSON it should be."""


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over an AF_UNIX stream socket."""

    def __init__(self, path: str, timeout: float = DEFAULT_TIMEOUT):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def new_tx_name(prefix: str = "scx-slo") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


class ApiClient:
    def __init__(self, socket_path: str = API_SOCKET, timeout: float = DEFAULT_TIMEOUT):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method: str, path: str, query: dict | None = None,
                body: object = None) -> tuple[int, bytes]:
        target = path + ("?" + urlencode(query, safe=",", quote_via=quote) if query else "")
        what = f"{method} {target} on {self.socket_path}"
        conn = UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            headers = {}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, target, body=payload, headers=headers)
            resp = conn.getresponse()
            data = resp.read(MAX_RESPONSE + 1)
        except FileNotFoundError:
            raise ApiSocketError(f"{what}: no API socket at {self.socket_path} (is this a "
                                 "Bottlerocket host container?)") from None
        except (ConnectionRefusedError, ConnectionResetError, BrokenPipeError) as e:
            raise ApiSocketError(f"{what}: {e.strerror or e}") from None
        except socket.timeout:
            raise ApiTimeout(f"{what}: no answer within {self.timeout:g}s") from None
        except OSError as e:
            raise ApiSocketError(f"{what}: {e.strerror or e}") from None
        except http.client.HTTPException as e:
            raise ApiBadResponse(f"{what}: malformed HTTP response: {e!r}") from None
        finally:
            conn.close()
        if len(data) > MAX_RESPONSE:
            raise ApiBadResponse(f"{what}: response larger than {MAX_RESPONSE} bytes")
        if resp.status >= 400:
            raise ApiHttpError(method, target, resp.status, resp.reason,
                               data.decode("utf-8", "replace"))
        return resp.status, data

    def _json(self, method: str, path: str, query: dict | None = None, body: object = None):
        status, data = self.request(method, path, query, body)
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as e:
            raise ApiBadResponse(f"{method} {path} on {self.socket_path}: HTTP {status} body "
                                 f"is not JSON: {e}") from None

    def get_settings(self, keys: list[str] | None = None, prefix: str | None = None) -> dict:
        """GET /settings; KEYS like "settings.motd", PREFIX like "settings.host-containers"."""
        query = {}
        if keys:
            query["keys"] = ",".join(keys)
        elif prefix:
            query["prefix"] = prefix
        out = self._json("GET", "/settings", query or None)
        if not isinstance(out, dict):
            raise ApiBadResponse(f"GET /settings: expected a JSON object, got "
                                 f"{type(out).__name__}")
        return out

    def patch_settings(self, settings: dict, tx: str) -> None:
        """Stage SETTINGS (API shape, no "settings" wrapper) in transaction TX."""
        self.request("PATCH", "/settings", {"tx": tx}, settings)

    def get_tx(self, tx: str) -> dict:
        out = self._json("GET", "/tx", {"tx": tx})
        if not isinstance(out, dict):
            raise ApiBadResponse(f"GET /tx: expected a JSON object, got {type(out).__name__}")
        return out

    def commit_and_apply(self, tx: str) -> list[str]:
        """Commit TX and apply it; returns the committed keys ([] if TX changed nothing)."""
        try:
            out = self._json("POST", "/tx/commit_and_apply", {"tx": tx})
        except ApiHttpError as e:
            if e.status == 422 and "no pending changes" in e.body:
                return []           # the server's CommitWithNoPending: nothing changed
            raise
        if not isinstance(out, list):
            raise ApiBadResponse(f"POST /tx/commit_and_apply: expected a JSON list of keys, got "
                                 f"{type(out).__name__}")
        return [str(k) for k in out]

    def set_settings(self, settings: dict, tx: str | None = None) -> list[str]:
        """PATCH then commit-and-apply in one transaction (what `apiclient set` does)."""
        tx = tx or new_tx_name()
        self.patch_settings(settings, tx)
        return self.commit_and_apply(tx)

    def host_container(self, name: str) -> dict:
        """settings.host-containers.NAME ({} if it is not set)."""
        got = self.get_settings(prefix=f"settings.host-containers.{name}")
        return got.get("host-containers", {}).get(name, {})
