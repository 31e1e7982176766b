"""The foundation: the VM boots a real sched_ext kernel with the project inside."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

import scx_slo
from scx_slo.dev.privateapt import AptError, PrivateApt
from scx_slo.dev.vm import VmError, kernel, machine


@pytest.mark.vm
def test_guest_is_a_sched_ext_node(vm):
    assert vm.kernel_release.startswith("7.") or vm.kernel_release.startswith("6.")
    assert vm.run(["cat", "/sys/kernel/sched_ext/state"]).check().stdout.strip() == "disabled"
    controllers = vm.run(["cat", "/sys/fs/cgroup/cgroup.controllers"]).check().stdout.split()
    assert "cpu" in controllers
    enabled = vm.run(["cat", "/sys/fs/cgroup/cgroup.subtree_control"]).check().stdout.split()
    assert "cpu" in enabled
    assert vm.run(["test", "-s", "/sys/kernel/btf/vmlinux"]).returncode == 0
    mounts = vm.run(["cat", "/proc/mounts"]).check().stdout
    assert " /sys/fs/bpf bpf " in mounts


@pytest.mark.vm
def test_guest_carries_the_object_built_here(vm):
    host_obj = scx_slo.default_object_path()
    want = hashlib.sha256(host_obj.read_bytes()).hexdigest()
    r = vm.run(["python3", "-c",
                "import hashlib, scx_slo; "
                "print(hashlib.sha256(scx_slo.default_object_path().read_bytes()).hexdigest())"]).check()
    assert r.stdout.strip() == want


@pytest.mark.vm
def test_exit_codes_streams_and_timeouts_come_back(vm):
    r = vm.run("echo out; echo err >&2; exit 7")
    assert (r.returncode, r.stdout, r.stderr) == (7, "out\n", "err\n")
    r = vm.run(["cat"], input="fed through stdin")
    assert r.stdout == "fed through stdin"
    r = vm.run(["sleep", "30"], timeout=1)
    assert r.timed_out and r.returncode != 0
    assert vm.run(["/nonexistent"]).returncode == 127


def test_cli_lists_subcommands_and_rejects_unknown():
    r = subprocess.run([sys.executable, "-m", "scx_slo", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "vm" in r.stdout and "check" in r.stdout
    r = subprocess.run([sys.executable, "-m", "scx_slo", "no-such-command"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "usage:" in r.stderr and "invalid choice" in r.stderr


def test_missing_qemu_is_named(monkeypatch):
    monkeypatch.setattr(machine.shutil, "which", lambda name: None)
    with pytest.raises(VmError, match="qemu-system-x86_64 not found.*setup.sh"):
        machine.Vm().start()


def test_no_network_to_the_mirror_is_named(tmp_path):
    apt = PrivateApt(tmp_path, ["trixie-backports"], mirror="http://127.0.0.1:9/debian")
    with pytest.raises(AptError, match="no network"):
        apt.update()


class _EmptyArchive:
    def has(self, package):
        return False

    def depends(self, package):
        return ["linux-base-cloud-amd64", "linux-modules-cloud-amd64"]


class _NewerArchive(_EmptyArchive):
    def depends(self, package):
        return ["linux-base-cloud-amd64", "linux-image-7.4.1+deb13-cloud-amd64"]


def test_missing_kernel_package_is_named():
    with pytest.raises(kernel.KernelError, match="neither 7.3.4.*linux-image-cloud-amd64"):
        kernel.resolve_version(_EmptyArchive())


def test_gone_kernel_resolves_through_the_metapackage():
    assert kernel.resolve_version(_NewerArchive()) == "7.4.1+deb13-cloud-amd64"


@pytest.mark.vm
def test_topology_reaches_the_guest(vm_factory):
    """4 vCPUs as 2 sockets x 1 core x 2 SMT threads over 2 NUMA nodes, as EKS nodes have
    them: the guest kernel sees the packages, the SMT siblings, a last-level cache per
    socket and the nodes (the shape the scheduler's topology tests boot)."""
    vm = vm_factory(cpus=4, sockets=2, threads=2, numa_nodes=2)
    r = vm.run(["python3", "/opt/scx-slo/src/tests/vm/topology_guest.py"], timeout=300)
    assert r.returncode == 0, r.stderr
    t = json.loads(r.stdout.strip().splitlines()[-1])
    assert t["online"] == "0-3"
    cpus = t["cpus"]
    assert [cpus[f"cpu{i}"]["package"] for i in range(4)] == ["0", "0", "1", "1"]
    assert [cpus[f"cpu{i}"]["siblings"] for i in range(4)] == ["0-1", "0-1", "2-3", "2-3"]
    assert [cpus[f"cpu{i}"]["llc"] for i in range(4)] == ["0-1", "0-1", "2-3", "2-3"]
    assert t["nodes"] == {"node0": "0-1", "node1": "2-3"}


def test_a_topology_that_does_not_divide_is_refused():
    from scx_slo.dev.vm.machine import VmError, topology_options

    assert topology_options(4, 1024, sockets=2, threads=2, numa_nodes=2)[:2] == \
        ["-smp", "4,sockets=2,cores=1,threads=2"]
    with pytest.raises(VmError, match="divide evenly"):
        topology_options(6, 1024, sockets=4)
    with pytest.raises(VmError, match="NUMA"):
        topology_options(4, 1024, sockets=1, numa_nodes=2)
