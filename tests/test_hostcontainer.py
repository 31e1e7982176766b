"""hostcontainer/start, the image's entrypoint, run for real with a stand-in agent.

The stand-in `scx-slo` records its argv, environment and PID; the pin
directory is a real bpffs mounted under the test's temporary directory (the
start script refuses anything else), so the tests need root with
CAP_SYS_ADMIN and are skipped, saying so, where bpffs cannot be mounted.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

START = Path(__file__).resolve().parents[1] / "hostcontainer" / "start"

FAKE_AGENT = """#!/usr/bin/env python3
import json, os, sys
with open(os.environ["FAKE_AGENT_LOG"], "w") as f:
    json.dump({"argv": sys.argv[1:], "pid": os.getpid(),
               "env": {k: v for k, v in os.environ.items() if k.startswith("SCX_SLO_")}}, f)
"""


def fstype(path: Path) -> str:
    return subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def host(tmp_path):
    """A fake host root whose sys/fs/bpf is a real bpffs mount."""
    bpf = tmp_path / "host" / "sys" / "fs" / "bpf"
    bpf.mkdir(parents=True)
    p = subprocess.run(["mount", "-t", "bpf", "bpf", str(bpf)], capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount bpffs here (needs root with CAP_SYS_ADMIN): {p.stderr.strip()}")
    # what host-ctr mounts: this container's persistent dir, by name and as `current`
    for d in ("scx-slo", "current"):
        (tmp_path / "br" / "host-containers" / d).mkdir(parents=True)
    agent = tmp_path / "scx-slo"
    agent.write_text(FAKE_AGENT)
    agent.chmod(0o755)
    yield tmp_path
    subprocess.run(["umount", str(bpf)], check=False)


def start(host: Path, *args: str, **env: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    log = host / "agent.json"
    log.unlink(missing_ok=True)
    full_env = {"PATH": os.environ["PATH"], "FAKE_AGENT_LOG": str(log),
                "SCX_SLO_HOST_ROOT": str(host / "host"), "SCX_SLO_BIN": str(host / "scx-slo"),
                "SCX_SLO_BOTTLEROCKET_DIR": str(host / "br")}
    full_env.update(env)
    p = subprocess.Popen([str(START), *args], env=full_env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=30)
    res = subprocess.CompletedProcess(p.args, p.returncode, out, err)
    res.pid = p.pid
    return res, (json.loads(log.read_text()) if log.exists() else None)


def test_execs_agent_with_user_data_and_host_pin_dir(host):
    current = host / "br" / "host-containers" / "current"
    (current / "user-data").write_text('[scheduler]\n')
    r, agent = start(host, "--interval", "5")
    assert r.returncode == 0, r.stderr
    pin = host / "host" / "sys" / "fs" / "bpf" / "scx-slo"
    assert agent["argv"] == ["run", "--user-data", str(current / "user-data"),
                             "--state-dir", str(current), "--name", "scx-slo",
                             "--pin-dir", str(pin),
                             "--cgroup-root", str(host / "host" / "sys" / "fs" / "cgroup"),
                             "--interval", "5"]
    assert pin.is_dir() and fstype(pin) == "bpf_fs"
    # exec, not fork: host-ctr's SIGTERM must reach the agent itself
    assert agent["pid"] == r.pid
    assert agent["env"]["SCX_SLO_HOST_ROOT"] == str(host / "host")
    assert "user-data" in r.stdout and "sha256" in r.stdout


def test_the_arguments_are_what_scx_slo_run_accepts(host):
    """start and `scx-slo run` must agree on flags: parse start's argv with the real CLI."""
    from scx_slo.cli import available_commands, build_parser
    (host / "br" / "host-containers" / "current" / "user-data").write_text("")
    r, agent = start(host)
    assert r.returncode == 0, r.stderr
    args = build_parser(available_commands()).parse_args(agent["argv"])
    assert args.command == "run"
    assert args.pin_dir == agent["argv"][agent["argv"].index("--pin-dir") + 1]
    assert args.name == "scx-slo"


def test_container_named_current(host):
    (host / "br" / "host-containers" / "scx-slo").rmdir()
    r, agent = start(host)
    assert r.returncode == 0, r.stderr
    assert agent["argv"][agent["argv"].index("--name") + 1] == "current"


def test_without_user_data_runs_with_defaults(host):
    r, agent = start(host, SCX_SLO_BOTTLEROCKET_DIR=str(host / "not-bottlerocket"))
    assert r.returncode == 0, r.stderr
    assert agent["argv"][:2] == ["run", "--pin-dir"]
    assert not {"--user-data", "--state-dir", "--name"} & set(agent["argv"])
    assert "no user-data" in r.stdout and "no persistent directory" in r.stdout


def test_refuses_a_pin_dir_outside_bpffs(host):
    not_bpf = host / "plain" / "scx-slo"
    not_bpf.parent.mkdir()
    r, agent = start(host, SCX_SLO_PIN_DIR=str(not_bpf))
    assert r.returncode == 1
    assert agent is None
    assert f"{not_bpf.parent} is not a bpffs" in r.stderr
    assert not not_bpf.exists()


def test_explicit_pin_dir_on_bpffs(host):
    pin = host / "host" / "sys" / "fs" / "bpf" / "custom" / "deep"
    r, agent = start(host, SCX_SLO_PIN_DIR=str(pin))
    # the parent of the pin dir must itself be on bpffs: custom/ is created by mkdir -p
    # only after that check, so a missing parent is refused
    assert r.returncode == 1 and agent is None
    assert "is not a bpffs" in r.stderr
    pin.parent.mkdir()
    r, agent = start(host, SCX_SLO_PIN_DIR=str(pin))
    assert r.returncode == 0, r.stderr
    assert agent["argv"][agent["argv"].index("--pin-dir") + 1] == str(pin)
    assert fstype(pin) == "bpf_fs"


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_refuses_to_run_outside_the_host_pid_namespace(host):
    env = {"PATH": os.environ["PATH"], "FAKE_AGENT_LOG": str(host / "agent.json"),
           "SCX_SLO_BIN": str(host / "scx-slo")}
    p = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", str(START)], env=env,
                       capture_output=True, text=True, timeout=30)
    if "unshare failed" in p.stderr or "Operation not permitted" in p.stderr:
        pytest.skip(f"cannot create a PID namespace here: {p.stderr.strip()}")
    assert p.returncode == 1
    assert "not in the host PID namespace" in p.stderr
    assert not (host / "agent.json").exists()
