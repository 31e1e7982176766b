"""The CRI client against fake_cri: real gRPC on a real Unix socket."""
from __future__ import annotations

import socket

import grpc
import pytest

import fake_cri
from scx_slo.agent.cri import (
    CriClient,
    CriRefused,
    CriSocketMissing,
    CriTimeout,
    CriUnavailable,
    api_pb2,
    find_socket,
    list_pods,
    pods_by_uid,
)
from scx_slo.errors import ScxSloError

WEB = {"uid": "0b4b5e9a-1111-4c0e-9d5e-7f3c2a1b0c01", "namespace": "shop", "name": "web-7d9f",
       "labels": {"tier": "web", "app.kubernetes.io/part-of": "shop"},
       "annotations": {"slo.latency.p99": "200ms", "kubernetes.io/config.seen": "2026-11-30"}}
BATCH = {"uid": "9c8d7e6f-2222-4c0e-9d5e-7f3c2a1b0c02", "namespace": "jobs", "name": "crunch-0",
         "labels": {"job": "crunch"}, "state": "notready", "attempt": 1}


@pytest.fixture
def cri(tmp_path):
    server = fake_cri.start(str(tmp_path / "containerd.sock"), [WEB, BATCH])
    yield server
    server.stop()


def test_list_pods_round_trips_metadata_labels_annotations_state(cri):
    pods = {p.uid: p for p in list_pods(cri.path, timeout=5)}
    assert set(pods) == {WEB["uid"], BATCH["uid"]}
    web = pods[WEB["uid"]]
    assert (web.namespace, web.name, web.labels, web.annotations, web.state) == (
        "shop", "web-7d9f", WEB["labels"], WEB["annotations"], "ready")
    assert web.ready and len(web.sandbox_id) == 64 and web.created_at_ns > 0
    batch = pods[BATCH["uid"]]
    assert (batch.state, batch.attempt, batch.annotations) == ("notready", 1, {})


def test_ready_only_sends_the_state_filter(cri):
    assert [p.uid for p in list_pods(cri.path, ready_only=True)] == [WEB["uid"]]


def test_set_pods_is_seen_by_the_next_call_on_the_same_channel(cri):
    with CriClient(cri.path) as client:
        assert len(client.list_pods()) == 2
        cri.set_pods([WEB])
        assert [p.uid for p in client.list_pods()] == [WEB["uid"]]
        assert client.version().runtime_api_version == "v1"


def test_client_recovers_after_the_runtime_restarts(tmp_path):
    path = str(tmp_path / "c.sock")
    server = fake_cri.start(path, [WEB])
    with CriClient(path) as client:
        assert len(client.list_pods(timeout=5)) == 1
        server.stop()
        with pytest.raises((CriSocketMissing, CriUnavailable)):
            client.list_pods(timeout=2)
        server = fake_cri.start(path, [WEB, BATCH])
        try:
            assert len(client.list_pods(timeout=5)) == 2
        finally:
            server.stop()


def test_pods_by_uid_prefers_the_ready_sandbox_then_the_latest_attempt():
    old = dict(WEB, attempt=0, state="notready", labels={"v": "old"})
    new = dict(WEB, attempt=1, state="ready", labels={"v": "new"})
    newer_dead = dict(WEB, attempt=2, state="notready", labels={"v": "dead"})
    pods = [api_pb2_pod(p) for p in (old, new, newer_dead)]
    assert pods_by_uid(pods)[WEB["uid"]].labels == {"v": "new"}
    assert pods_by_uid([api_pb2_pod(old), api_pb2_pod(newer_dead)])[WEB["uid"]].attempt == 2


def api_pb2_pod(d):
    from scx_slo.agent.cri import Pod
    return Pod.from_proto(fake_cri.sandbox(d))


def test_missing_socket_is_named(tmp_path):
    path = str(tmp_path / "absent.sock")
    with pytest.raises(CriSocketMissing, match=r"CRI .*absent\.sock: no such socket") as ei:
        list_pods(path, timeout=1)
    assert isinstance(ei.value, ScxSloError)


def test_a_regular_file_is_not_a_socket(tmp_path):
    path = tmp_path / "file.sock"
    path.write_text("")
    with pytest.raises(CriSocketMissing, match="not a Unix socket"):
        list_pods(str(path), timeout=1)


def test_socket_nobody_listens_on_is_unavailable(tmp_path):
    path = str(tmp_path / "stale.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)                     # bound, never listening: connect() is refused
    try:
        with pytest.raises(CriUnavailable, match=r"stale\.sock: ListPodSandbox: runtime "
                                                 r"unavailable") as ei:
            list_pods(path, timeout=2)
        assert isinstance(ei.value, ScxSloError)
    finally:
        s.close()


def test_slow_runtime_is_a_timeout(cri):
    cri.set_delay(1.0)
    with pytest.raises(CriTimeout, match=r"no answer within 0\.2s"):
        list_pods(cri.path, timeout=0.2)


def test_error_status_is_refused_with_its_code(cri):
    cri.set_error(grpc.StatusCode.PERMISSION_DENIED, "not for you")
    with pytest.raises(CriRefused, match="PERMISSION_DENIED: not for you") as ei:
        list_pods(cri.path, timeout=2)
    assert ei.value.code == grpc.StatusCode.PERMISSION_DENIED


def test_find_socket_takes_the_first_socket(tmp_path, cri):
    missing = str(tmp_path / "nope.sock")
    assert find_socket([missing, cri.path]) == cri.path
    with pytest.raises(CriSocketMissing, match="no container runtime socket"):
        find_socket([missing])


# --- wire compatibility with containerd (k8s.io/cri-api runtime/v1 field numbers) ---

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes | int) -> bytes:
    if isinstance(payload, int):
        return _varint(num << 3) + _varint(payload)
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _map_entry(num: int, k: str, v: str) -> bytes:
    return _field(num, _field(1, k.encode()) + _field(2, v.encode()))


def test_upstream_encoded_sandbox_decodes():
    """Bytes laid out by hand with the upstream field numbers, as containerd sends them:
    PodSandbox{id=1, metadata=2{name=1, uid=2, namespace=3, attempt=4}, state=3,
    created_at=4, labels=5, annotations=6, runtime_handler=7}."""
    md = _field(1, b"web") + _field(2, b"uid-1") + _field(3, b"shop") + _field(4, 3)
    sb = (_field(1, b"sbx") + _field(2, md) + _field(3, 1) + _field(4, 1234)
          + _map_entry(5, "tier", "web") + _map_entry(6, "slo.latency.p99", "1s")
          + _field(7, b"runc") + _field(99, b"a field this subset does not know"))
    resp = api_pb2.ListPodSandboxResponse.FromString(_field(1, sb))
    from scx_slo.agent.cri import Pod
    pod = Pod.from_proto(resp.items[0])
    assert (pod.sandbox_id, pod.name, pod.uid, pod.namespace, pod.attempt, pod.state,
            pod.created_at_ns, pod.labels, pod.annotations) == (
        "sbx", "web", "uid-1", "shop", 3, "notready", 1234, {"tier": "web"},
        {"slo.latency.p99": "1s"})
    assert resp.items[0].runtime_handler == "runc"


def test_method_path_is_the_upstream_one(cri):
    """A raw call on /runtime.v1.RuntimeService/ListPodSandbox, the path containerd
    registers, with a hand-encoded filter (filter=1{state=2{state=1: READY=0}})."""
    req = _field(1, _field(2, _field(1, 0)))
    with grpc.insecure_channel("unix:" + cri.path) as ch:
        call = ch.unary_unary("/runtime.v1.RuntimeService/ListPodSandbox")
        raw = call(req, timeout=5)
    resp = api_pb2.ListPodSandboxResponse.FromString(raw)
    assert [i.metadata.uid for i in resp.items] == [WEB["uid"]]


def test_generated_code_matches_the_proto(tmp_path):
    """api_pb2*.py are what the regenerate command in scx_slo.agent.cri's docstring makes."""
    protoc = pytest.importorskip("grpc_tools.protoc")
    from pathlib import Path

    import scx_slo.agent.cri
    pkg = Path(scx_slo.agent.cri.__file__).parent
    plugin = pkg.parent.parent
    (tmp_path / "scx_slo" / "agent" / "cri").mkdir(parents=True)
    (tmp_path / "scx_slo" / "agent" / "cri" / "api.proto").write_bytes((pkg / "api.proto").read_bytes())
    rc = protoc.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}",
                      f"--grpc_python_out={tmp_path}", str(tmp_path / "scx_slo/agent/cri/api.proto")])
    assert rc == 0
    for name in ("api_pb2.py", "api_pb2_grpc.py"):
        assert (tmp_path / "scx_slo" / "agent" / "cri" / name).read_text() == (pkg / name).read_text(), (
            f"{name} is stale: regenerate (see scx_slo.agent.cri's docstring) from {plugin}")
