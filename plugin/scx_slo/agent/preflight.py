"""Preflight: is this node able to run scx_slo? Each check named, with a fix hint.

Paths are read under `root` so tests can point the checks at a prepared tree.
"""
from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

MIN_KERNEL = (6, 12)
CAPS = {"CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}


def _bpf_mount_points(mountinfo: str) -> set[str]:
    from scx_slo.loader.pins import _bpf_mounts
    return _bpf_mounts(mountinfo)


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    hint: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


class Preflight:
    def __init__(self, root: str | Path = "/", release: str | None = None,
                 cap_eff: int | None = None):
        self.root = Path(root)
        self.release = release if release is not None else os.uname().release
        self._cap_eff = cap_eff

    def _p(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def _read(self, path: str) -> str | None:
        try:
            return self._p(path).read_text().strip()
        except OSError:
            return None

    def kernel(self) -> Check:
        m = re.match(r"(\d+)\.(\d+)", self.release)
        version = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        ok = version >= MIN_KERNEL
        return Check("kernel", ok, f"Linux {self.release}",
                     "" if ok else "sched_ext needs Linux >= 6.12 (Bottlerocket aws-k8s-1.33 or newer)")

    def sched_ext(self) -> Check:
        state = self._read("/sys/kernel/sched_ext/state")
        if state is None:
            return Check("sched_ext", False, "/sys/kernel/sched_ext is absent",
                         "this kernel was built without CONFIG_SCHED_CLASS_EXT; "
                         "try `scx-slo vm run -- scx-slo check` for a kernel that has it")
        return Check("sched_ext", True, f"state {state}")

    def btf(self) -> Check:
        ok = self._p("/sys/kernel/btf/vmlinux").exists()
        return Check("btf", ok, "/sys/kernel/btf/vmlinux " + ("present" if ok else "absent"),
                     "" if ok else "the kernel needs CONFIG_DEBUG_INFO_BTF=y")

    def cgroup(self) -> Check:
        controllers = self._read("/sys/fs/cgroup/cgroup.controllers")
        if controllers is None:
            return Check("cgroup", False, "no cgroup v2 at /sys/fs/cgroup",
                         "mount cgroup2 at /sys/fs/cgroup (a host container needs the host's)")
        if "cpu" not in controllers.split():
            return Check("cgroup", False, f"cpu controller missing ({controllers})",
                         "enable the cpu controller: echo +cpu > /sys/fs/cgroup/cgroup.subtree_control")
        writable = os.access(self._p("/sys/fs/cgroup"), os.W_OK)
        return Check("cgroup", True, "cgroup v2 with cpu" + ("" if writable else " (read-only)"))

    def privileges(self) -> Check:
        cap_eff = self._cap_eff
        if cap_eff is None:
            status = self._read("/proc/self/status") or ""
            m = re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M)
            cap_eff = int(m.group(1), 16) if m else 0
        missing = [n for n, bit in CAPS.items() if not cap_eff >> bit & 1]
        return Check("privileges", not missing,
                     "all of " + ", ".join(CAPS) if not missing else "missing " + ", ".join(missing),
                     "" if not missing else "run as root in a superpowered host container "
                     "(superpowered = true) or a privileged pod")

    def bpffs(self) -> Check:
        mounts = self._read("/proc/self/mounts") or ""
        points = [line.split()[1] for line in mounts.splitlines() if len(line.split()) > 2
                  and line.split()[2] == "bpf"]
        if points:
            return Check("bpffs", True, "bpffs at " + ", ".join(points))
        # Not in our mount namespace, but in PID 1's (a host container sharing
        # the host PID namespace): pins go there through /proc/1/root.
        if "/sys/fs/bpf" in _bpf_mount_points(self._read("/proc/1/mountinfo") or ""):
            return Check("bpffs", True, "host bpffs reachable at /proc/1/root/sys/fs/bpf")
        return Check("bpffs", False, "no bpffs mounted",
                     "mount -t bpf bpf /sys/fs/bpf (pins must live in the host's bpffs "
                     "to outlive the container)")

    def other_scheduler(self) -> Check:
        state = self._read("/sys/kernel/sched_ext/state")
        if state != "enabled":
            return Check("other_scheduler", True, "no sched_ext scheduler attached")
        ops = self._read("/sys/kernel/sched_ext/root/ops") or "?"
        if ops == "scx_slo":
            return Check("other_scheduler", True, "scx_slo already attached (will be adopted)")
        return Check("other_scheduler", False, f"another sched_ext scheduler is attached: {ops}",
                     f"stop {ops} first (only one sched_ext scheduler can be attached)")

    def libbpf(self) -> Check:
        try:
            from scx_slo.loader import libbpf
            return Check("libbpf", True, f"libbpf {libbpf.version_string()}")
        except Exception as e:  # noqa: BLE001 - reported, not raised: this is a check
            return Check("libbpf", False, f"libbpf binding unusable: {e}",
                         "install libbpf >= 1.4 (bookworm-backports libbpf1) and reinstall scx-slo")

    def verifier(self) -> Check:
        """Load the shipped object without attaching it: does this kernel's verifier take it?"""
        hint = "run `scx-slo check` as root on a kernel with sched_ext and BTF"
        if self.root != Path("/") or self._read("/sys/kernel/sched_ext/state") is None:
            return Check("verifier", False, "not tried: no sched_ext here", hint)
        if not self.privileges().ok:
            return Check("verifier", False, "not tried: missing privileges", hint)
        from scx_slo.errors import ScxSloError
        from scx_slo.loader.scheduler import VERIFIER_LIMIT, trial_load
        try:
            insns = trial_load()
        except ScxSloError as e:
            first = str(e).strip().splitlines()
            return Check("verifier", False, f"the object does not load here: {first[0] if first else e}",
                         "this kernel's verifier refuses scx_slo: report it with `scx-slo inspect` "
                         "and the kernel release")
        name, most = max(insns.items(), key=lambda kv: kv[1])
        return Check("verifier", True, f"{len(insns)} programs load; largest {name}: {most} "
                     f"instructions, {100 * most / VERIFIER_LIMIT:.1f}% of the limit")

    def run(self, trial_load: bool = True) -> list[Check]:
        """Every check; TRIAL_LOAD=False leaves out the verifier's (the agent's own load
        reports a refusal, with the log, and need not load the object twice)."""
        checks = [self.kernel(), self.sched_ext(), self.btf(), self.cgroup(), self.privileges(),
                  self.bpffs(), self.other_scheduler(), self.libbpf()]
        return checks + [self.verifier()] if trial_load else checks
