"""`scx-slo check`: each preflight check named, with a hint, on real and prepared trees."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from scx_slo.agent.preflight import CAPS, Preflight

ALL_CAPS = sum(1 << bit for bit in CAPS.values())


def node(tmp_path, state="disabled", ops=None, controllers="cpuset cpu io memory pids", bpffs=True):
    (tmp_path / "sys/kernel/sched_ext/root").mkdir(parents=True)
    (tmp_path / "sys/kernel/sched_ext/state").write_text(state + "\n")
    if ops:
        (tmp_path / "sys/kernel/sched_ext/root/ops").write_text(ops + "\n")
    (tmp_path / "sys/kernel/btf").mkdir(parents=True)
    (tmp_path / "sys/kernel/btf/vmlinux").write_bytes(b"\x9f\xeb")
    (tmp_path / "sys/fs/cgroup").mkdir(parents=True)
    (tmp_path / "sys/fs/cgroup/cgroup.controllers").write_text(controllers + "\n")
    (tmp_path / "proc/self").mkdir(parents=True)
    mounts = "bpf /sys/fs/bpf bpf rw 0 0\n" if bpffs else "proc /proc proc rw 0 0\n"
    (tmp_path / "proc/self/mounts").write_text(mounts)
    return tmp_path


def by_name(checks):
    return {c.name: c for c in checks}


def test_a_ready_node_passes_every_node_check(tmp_path):
    checks = by_name(Preflight(node(tmp_path), release="6.12.40", cap_eff=ALL_CAPS).run())
    for name in ("kernel", "sched_ext", "btf", "cgroup", "privileges", "bpffs", "other_scheduler"):
        assert checks[name].ok, checks[name]


@pytest.mark.parametrize("setup, release, caps, failing, hint", [
    ({}, "6.6.1", ALL_CAPS, "kernel", "6.12"),
    ({"controllers": "memory pids"}, "6.12.1", ALL_CAPS, "cgroup", "+cpu"),
    ({}, "6.12.1", 1 << CAPS["CAP_SYS_ADMIN"], "privileges", "superpowered"),
    ({"bpffs": False}, "6.12.1", ALL_CAPS, "bpffs", "mount -t bpf"),
    ({"state": "enabled", "ops": "scx_rusty"}, "6.12.1", ALL_CAPS, "other_scheduler", "scx_rusty"),
])
def test_each_problem_is_named_with_a_hint(tmp_path, setup, release, caps, failing, hint):
    checks = by_name(Preflight(node(tmp_path, **setup), release=release, cap_eff=caps).run())
    assert not checks[failing].ok
    assert hint in checks[failing].hint
    # libbpf and the verifier are the real ones of this process, not of the prepared tree
    assert [c.name for c in checks.values()
            if not c.ok and c.name not in ("libbpf", "verifier")] == [failing]


def test_the_verifier_is_not_tried_on_a_prepared_tree(tmp_path):
    check = Preflight(node(tmp_path), release="6.12.40", cap_eff=ALL_CAPS).verifier()
    assert not check.ok and check.detail.startswith("not tried")


def test_our_own_attached_scheduler_is_not_a_problem(tmp_path):
    checks = by_name(Preflight(node(tmp_path, state="enabled", ops="scx_slo"), release="7.0",
                               cap_eff=ALL_CAPS).run())
    assert checks["other_scheduler"].ok and "adopted" in checks["other_scheduler"].detail


def test_kernel_without_sched_ext(tmp_path):
    checks = by_name(Preflight(tmp_path, release="6.12.0", cap_eff=ALL_CAPS).run())
    assert not checks["sched_ext"].ok
    assert "CONFIG_SCHED_CLASS_EXT" in checks["sched_ext"].hint


def test_this_host_without_sched_ext_exits_1():
    # The build machine's own kernel has no sched_ext: the real check must say so.
    r = subprocess.run([sys.executable, "-m", "scx_slo", "check", "--json"], capture_output=True, text=True)
    report = json.loads(r.stdout)
    sched_ext = next(c for c in report["checks"] if c["name"] == "sched_ext")
    assert r.returncode == (0 if sched_ext["ok"] and report["ready"] else 1)
    if not sched_ext["ok"]:
        assert report["ready"] is False


@pytest.mark.vm
def test_the_vm_is_ready(vm):
    r = vm.run(["scx-slo", "check", "--json"])
    report = json.loads(r.stdout)
    assert r.returncode == 0, report
    assert report["ready"] is True
    assert {c["name"] for c in report["checks"]} >= {"kernel", "sched_ext", "btf", "cgroup",
                                                      "privileges", "bpffs", "libbpf", "verifier"}
    verifier = next(c for c in report["checks"] if c["name"] == "verifier")
    assert "programs load" in verifier["detail"], verifier
