"""The Bottlerocket API client against a server on a real Unix socket."""
from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import fake_bottlerocket_api
from scx_slo.cli import main
from scx_slo.settings.apiclient import (ApiBadResponse, ApiClient, ApiHttpError, ApiSocketError,
                                        ApiTimeout)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "settings" / "examples" / "guide-demo.toml"
INITIAL = {
    "motd": "Welcome to Bottlerocket!",
    "host-containers": {
        "admin": {"enabled": False, "source": "public.ecr.aws/bottlerocket/bottlerocket-admin:v0.11",
                  "superpowered": True},
        "scx-slo": {"enabled": True, "source": "ghcr.io/yourorg/scx-slo:v0.1.0",
                    "superpowered": True,
                    "user-data": base64.b64encode(b"[scheduler]\n").decode()},
    },
}


@pytest.fixture
def api(tmp_path):
    server = fake_bottlerocket_api.start(str(tmp_path / "api.sock"), INITIAL)
    yield server, ApiClient(server.path, timeout=5)
    server.stop()


def test_get_shapes(api):
    server, client = api
    assert client.get_settings() == INITIAL
    assert client.get_settings(keys=["settings.motd"]) == {"motd": INITIAL["motd"]}
    got = client.get_settings(prefix="settings.host-containers.scx-slo")
    assert got == {"host-containers": {"scx-slo": INITIAL["host-containers"]["scx-slo"]}}
    assert client.host_container("nope") == {}


def test_change_visible_only_after_commit(api):
    server, client = api
    new = base64.b64encode(DEMO.read_bytes()).decode()
    client.patch_settings({"host-containers": {"scx-slo": {"user-data": new}}}, "t1")
    assert client.host_container("scx-slo")["user-data"] != new          # still pending
    assert client.get_tx("t1") == {"host-containers": {"scx-slo": {"user-data": new}}}
    assert client.get_tx("other") == {}
    keys = client.commit_and_apply("t1")
    assert keys == ["settings.host-containers.scx-slo.user-data"]
    assert client.host_container("scx-slo")["user-data"] == new
    assert client.host_container("scx-slo")["source"] == INITIAL["host-containers"]["scx-slo"][
        "source"]                                                          # merged, not replaced


def test_cli_apply_patches_and_commits_in_one_tx(api, capsys):
    server, client = api
    rc = main(["settings", "apply", str(DEMO), "--socket", server.path])
    assert rc == 0, capsys.readouterr().err
    got = client.host_container("scx-slo")["user-data"]
    assert base64.b64decode(got).decode() == DEMO.read_text()
    (patch,), (commit,) = ([r for r in server.requests if r[0] == m] for m in ("PATCH", "POST"))
    tx = patch[1].split("tx=")[1]
    assert commit[1] == f"/tx/commit_and_apply?tx={tx}"
    assert "committed: settings.host-containers.scx-slo.user-data" in capsys.readouterr().out


def test_commit_of_an_empty_transaction_is_nothing_changed(api):
    """The API server answers 422 (CommitWithNoPending) for a transaction with nothing
    staged; that is "nothing changed", not an error. Other 4xx still raise."""
    server, client = api
    assert client.commit_and_apply("scx-slo-empty") == []
    assert server.requests[-1][:2] == ("POST", "/tx/commit_and_apply?tx=scx-slo-empty")
    with pytest.raises(ApiHttpError):
        client.request("GET", "/no/such/route")


def test_cli_apply_refuses_invalid_file_without_touching_api(api, tmp_path, capsys):
    server, client = api
    bad = tmp_path / "bad.toml"
    bad.write_text('[[class]]\nname = "a"\np99 = "200"\n')
    assert main(["settings", "apply", str(bad), "--socket", server.path]) == 1
    assert f"{bad}:3:1: class[0].p99:" in capsys.readouterr().err
    assert not any(m == "PATCH" for m, _ in server.requests)


def test_4xx_carries_the_body(api):
    server, client = api
    with pytest.raises(ApiHttpError) as e:
        client.patch_settings({"not-a-setting": 1}, "t")
    assert e.value.status == 400 and "unknown field `not-a-setting`" in str(e.value)
    with pytest.raises(ApiHttpError) as e:
        client.patch_settings({"host-containers": {"bad.name": {"enabled": True}}}, "t")
    assert e.value.status == 400
    with pytest.raises(ApiHttpError) as e:
        client.request("POST", "/tx/commit_and_apply", {"tx": "nothing-pending"})
    assert e.value.status == 422 and "no pending changes" in e.value.body


def test_absent_socket(tmp_path):
    with pytest.raises(ApiSocketError, match="no API socket"):
        ApiClient(str(tmp_path / "missing.sock"), timeout=1).get_settings()


def test_socket_not_listening(tmp_path):
    path = str(tmp_path / "dead.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)                      # bound but never listening: connection refused
    try:
        with pytest.raises(ApiSocketError):
            ApiClient(path, timeout=1).get_settings()
    finally:
        s.close()


class RawServer:
    """Answers every connection with RESPONSE bytes (or nothing, if None)."""

    def __init__(self, path: str, response: bytes | None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.response = response
        self.conns = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            while True:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
                conn.recv(65536)
                if self.response is not None:
                    conn.sendall(self.response)
                    conn.close()
        except OSError:
            pass

    def close(self):
        for c in self.conns:
            c.close()
        self.sock.close()


@pytest.mark.parametrize("response,error,fragment", [
    (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{nope",
     ApiBadResponse, "not JSON"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n[]", ApiBadResponse, "expected a JSON object"),
    (b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 24\r\n\r\nUnable to lock datastore",
     ApiHttpError, "HTTP 500"),
    (b"garbage\r\n\r\n", ApiBadResponse, "malformed HTTP"),
])
def test_bad_answers(tmp_path, response, error, fragment):
    srv = RawServer(str(tmp_path / "raw.sock"), response)
    try:
        with pytest.raises(error, match=fragment):
            ApiClient(str(tmp_path / "raw.sock"), timeout=2).get_settings()
    finally:
        srv.close()


def test_timeout(tmp_path):
    srv = RawServer(str(tmp_path / "slow.sock"), None)
    try:
        t0 = time.monotonic()
        with pytest.raises(ApiTimeout, match="no answer within 0.3s"):
            ApiClient(str(tmp_path / "slow.sock"), timeout=0.3).get_settings()
        assert time.monotonic() - t0 < 5
    finally:
        srv.close()


def test_fake_server_runs_as_a_script(tmp_path):
    sock = tmp_path / "api.sock"
    settings_json = tmp_path / "settings.json"
    settings_json.write_text(json.dumps(INITIAL))
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "fake_bottlerocket_api.py"),
                             "--socket", str(sock), "--settings-json", str(settings_json)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in proc.stdout.readline()
        client = ApiClient(str(sock), timeout=5)
        assert client.get_settings(keys=["settings.motd"]) == {"motd": INITIAL["motd"]}
        client.set_settings({"motd": "changed"})
        assert client.get_settings()["motd"] == "changed"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    assert not os.path.exists(sock)
