"""ListPodSandbox over gRPC on the container runtime's Unix socket."""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

import grpc

from scx_slo.agent.cri import api_pb2, api_pb2_grpc
from scx_slo.errors import ScxSloError

# containerd's CRI socket on a node, and where a Bottlerocket host container
# sees the host's root filesystem.
DEFAULT_SOCKETS = (
    "/run/containerd/containerd.sock",
    "/.bottlerocket/rootfs/run/containerd/containerd.sock",
)
DEFAULT_TIMEOUT_S = 5.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024   # a node with many pods and big annotations

READY = "ready"
NOTREADY = "notready"
_STATE_NAMES = {api_pb2.SANDBOX_READY: READY, api_pb2.SANDBOX_NOTREADY: NOTREADY}


class CriError(ScxSloError):
    """The container runtime could not tell us the node's pods."""

    def __init__(self, socket_path: str, message: str):
        self.socket_path = socket_path
        super().__init__(f"CRI {socket_path}: {message}")


class CriSocketMissing(CriError):
    """No socket at the path (runtime not running, or the wrong path)."""


class CriUnavailable(CriError):
    """The socket exists but nothing answers on it (gRPC UNAVAILABLE)."""


class CriTimeout(CriError):
    """The runtime did not answer in time (gRPC DEADLINE_EXCEEDED)."""


class CriRefused(CriError):
    """The runtime answered with an error status (UNIMPLEMENTED, PERMISSION_DENIED, ...)."""

    def __init__(self, socket_path: str, message: str, code: grpc.StatusCode):
        self.code = code
        super().__init__(socket_path, message)


@dataclass(frozen=True)
class Pod:
    """One pod sandbox as the runtime reports it."""

    uid: str
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    state: str = READY               # "ready" or "notready"
    sandbox_id: str = ""
    attempt: int = 0
    created_at_ns: int = 0

    @property
    def ready(self) -> bool:
        return self.state == READY

    @classmethod
    def from_proto(cls, item: api_pb2.PodSandbox) -> "Pod":
        md = item.metadata
        return cls(uid=md.uid, namespace=md.namespace, name=md.name,
                   labels=dict(item.labels), annotations=dict(item.annotations),
                   state=_STATE_NAMES.get(item.state, NOTREADY), sandbox_id=item.id,
                   attempt=md.attempt, created_at_ns=item.created_at)


def find_socket(candidates=DEFAULT_SOCKETS) -> str:
    """The first candidate path that is a Unix socket; CriSocketMissing if none is."""
    for path in candidates:
        if _is_socket(path):
            return path
    raise CriSocketMissing(" or ".join(candidates),
                           "no container runtime socket (is containerd running? "
                           "on Bottlerocket the host container needs superpowered = true)")


def _is_socket(path: str) -> bool:
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def _target(socket_path: str) -> str:
    return "unix:" + os.path.abspath(socket_path)


class CriClient:
    """A channel to one runtime socket, reusable across calls; a context manager."""

    def __init__(self, socket_path: str):
        self.socket_path = socket_path
        self._channel: grpc.Channel | None = None
        self._stub: api_pb2_grpc.RuntimeServiceStub | None = None

    def _connect(self) -> api_pb2_grpc.RuntimeServiceStub:
        try:
            st = os.stat(self.socket_path)
        except FileNotFoundError:
            raise CriSocketMissing(self.socket_path, "no such socket (is the container "
                                   "runtime running?)") from None
        except OSError as e:
            raise CriSocketMissing(self.socket_path, f"cannot stat: {e.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise CriSocketMissing(self.socket_path, "exists but is not a Unix socket")
        if self._stub is None:
            self._channel = grpc.insecure_channel(
                _target(self.socket_path),
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
            self._stub = api_pb2_grpc.RuntimeServiceStub(self._channel)
        return self._stub

    def _call(self, what: str, method: str, request, timeout: float):
        stub = self._connect()
        try:
            return getattr(stub, method)(request, timeout=timeout)
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
            # A channel that failed stays in backoff; start afresh next time.
            self.close()
            if code == grpc.StatusCode.UNAVAILABLE:
                raise CriUnavailable(self.socket_path, f"{what}: runtime unavailable "
                                     f"({details})") from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise CriTimeout(self.socket_path, f"{what}: no answer within "
                                 f"{timeout:g}s") from None
            raise CriRefused(self.socket_path, f"{what}: {code.name}: {details}", code) from None

    def version(self, timeout: float = DEFAULT_TIMEOUT_S) -> api_pb2.VersionResponse:
        return self._call("Version", "Version", api_pb2.VersionRequest(version="v1"), timeout)

    def list_pods(self, timeout: float = DEFAULT_TIMEOUT_S, ready_only: bool = False) -> list[Pod]:
        req = api_pb2.ListPodSandboxRequest()
        if ready_only:
            req.filter.state.state = api_pb2.SANDBOX_READY
        resp = self._call("ListPodSandbox", "ListPodSandbox", req, timeout)
        return [Pod.from_proto(item) for item in resp.items]

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel = self._stub = None

    def __enter__(self) -> "CriClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_pods(socket_path: str, timeout: float = DEFAULT_TIMEOUT_S,
              ready_only: bool = False) -> list[Pod]:
    """Every pod sandbox the runtime at SOCKET_PATH knows (one call, channel closed after)."""
    with CriClient(socket_path) as client:
        return client.list_pods(timeout=timeout, ready_only=ready_only)


def pods_by_uid(pods: list[Pod]) -> dict[str, Pod]:
    """One sandbox per pod uid: a ready one over a stopped one, then the latest attempt.

    A pod whose sandbox was recreated (node reboot, sandbox crash) has several;
    the metadata (labels, annotations) is the pod's either way.
    """
    best: dict[str, Pod] = {}
    for p in pods:
        if not p.uid:
            continue
        cur = best.get(p.uid)
        if cur is None or (p.ready, p.attempt, p.created_at_ns) > (cur.ready, cur.attempt,
                                                                   cur.created_at_ns):
            best[p.uid] = p
    return best
