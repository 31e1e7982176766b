"""A container runtime's CRI endpoint on a real Unix socket, for tests.

It serves runtime.v1.RuntimeService (the generated servicer of
scx_slo/agent/cri/api.proto, the same wire protocol containerd speaks) with a list of
pod sandboxes given as JSON objects:

    {"uid": "...", "namespace": "...", "name": "...", "labels": {...},
     "annotations": {...}, "state": "ready"|"notready",          # optional from here
     "id": "<sandbox id>", "attempt": 0, "created_at": <ns>}

ListPodSandbox applies the request's filter as containerd does (id, state,
label selector, ANDed). Version answers like a v1 runtime.

Use from Python:
    server = start(path, pods=[...])       # server.set_pods([...]); server.stop()
    server.set_delay(2.0)                  # answer late (DEADLINE_EXCEEDED tests)
    server.set_error(grpc.StatusCode.X)    # answer with an error status
or as a script (e.g. inside the test VM):
    python3 tests/fake_cri.py --socket PATH --pods-json FILE
The script prints "listening PATH" once it serves, re-reads FILE whenever its
mtime changes (so a test can add and remove pods by rewriting it) and stops on
SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
import time
from concurrent import futures

import grpc

from scx_slo.agent.cri import api_pb2, api_pb2_grpc

_STATES = {"ready": api_pb2.SANDBOX_READY, "notready": api_pb2.SANDBOX_NOTREADY}


def sandbox(pod: dict) -> api_pb2.PodSandbox:
    """The PodSandbox message for one JSON pod."""
    uid = pod["uid"]
    attempt = int(pod.get("attempt", 0))
    sid = pod.get("id") or hashlib.sha256(f"{uid}/{attempt}".encode()).hexdigest()
    state = pod.get("state", "ready")
    if state not in _STATES:
        raise ValueError(f"pod {uid}: state must be one of {sorted(_STATES)}, not {state!r}")
    return api_pb2.PodSandbox(
        id=sid,
        metadata=api_pb2.PodSandboxMetadata(name=pod.get("name", ""), uid=uid,
                                            namespace=pod.get("namespace", "default"),
                                            attempt=attempt),
        state=_STATES[state],
        created_at=int(pod.get("created_at", time.time_ns())),
        labels={str(k): str(v) for k, v in pod.get("labels", {}).items()},
        annotations={str(k): str(v) for k, v in pod.get("annotations", {}).items()},
    )


def _matches(sb: api_pb2.PodSandbox, flt: api_pb2.PodSandboxFilter) -> bool:
    if flt.id and sb.id != flt.id:
        return False
    if flt.HasField("state") and sb.state != flt.state.state:
        return False
    return all(sb.labels.get(k) == v for k, v in flt.label_selector.items())


class FakeRuntime(api_pb2_grpc.RuntimeServiceServicer):
    def __init__(self, pods: list[dict]):
        self._lock = threading.Lock()
        self._items: list[api_pb2.PodSandbox] = []
        self.delay_s = 0.0
        self.error: tuple[grpc.StatusCode, str] | None = None
        self.calls = 0
        self.before_list = None          # hook, e.g. to re-read a file
        self.set_pods(pods)

    def set_pods(self, pods: list[dict]) -> None:
        items = [sandbox(p) for p in pods]
        with self._lock:
            self._items = items

    def _answer(self, context):
        with self._lock:
            self.calls += 1
            delay, error = self.delay_s, self.error
        if delay:
            time.sleep(delay)
        if error is not None:
            context.abort(*error)

    def Version(self, request, context):
        self._answer(context)
        return api_pb2.VersionResponse(version="0.1.0", runtime_name="fake-cri",
                                       runtime_version="1.0.0", runtime_api_version="v1")

    def ListPodSandbox(self, request, context):
        self._answer(context)
        if self.before_list is not None:
            self.before_list()
        with self._lock:
            items = [sb for sb in self._items if _matches(sb, request.filter)]
        return api_pb2.ListPodSandboxResponse(items=items)


class FakeCriServer:
    """A grpc.Server on a Unix socket serving FakeRuntime; a context manager."""

    def __init__(self, path: str, pods: list[dict] | None = None):
        self.path = os.path.abspath(path)
        self.runtime = FakeRuntime(pods or [])
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        api_pb2_grpc.add_RuntimeServiceServicer_to_server(self.runtime, self._server)

    def start(self) -> "FakeCriServer":
        if os.path.exists(self.path):
            os.unlink(self.path)
        if self._server.add_insecure_port("unix:" + self.path) == 0:
            raise OSError(f"fake CRI: cannot listen on {self.path}")
        self._server.start()
        return self

    def set_pods(self, pods: list[dict]) -> None:
        self.runtime.set_pods(pods)

    def set_delay(self, seconds: float) -> None:
        self.runtime.delay_s = seconds

    def set_error(self, code: grpc.StatusCode | None, details: str = "fake CRI error") -> None:
        self.runtime.error = None if code is None else (code, details)

    @property
    def calls(self) -> int:
        return self.runtime.calls

    def stop(self, grace: float | None = 0) -> None:
        self._server.stop(grace).wait()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "FakeCriServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(path: str, pods: list[dict] | None = None) -> FakeCriServer:
    return FakeCriServer(path, pods).start()


def _reader(path: str):
    """A function returning the pods in PATH, re-reading it when its mtime changes."""
    state = {"mtime": None, "pods": []}

    def read() -> list[dict] | None:
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            mtime = -1
        if mtime == state["mtime"]:
            return None
        state["mtime"] = mtime
        if mtime == -1:
            return []
        with open(path) as f:
            return json.load(f)

    return read


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--socket", required=True, help="Unix socket path to serve on")
    ap.add_argument("--pods-json", help="JSON file: a list of pods (re-read when it changes)")
    args = ap.parse_args(argv)
    read = _reader(args.pods_json) if args.pods_json else (lambda: None)
    server = start(args.socket, read() or [])

    def refresh():
        pods = read()
        if pods is not None:
            server.set_pods(pods)

    server.runtime.before_list = refresh
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"listening {server.path}", flush=True)
    stop.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
