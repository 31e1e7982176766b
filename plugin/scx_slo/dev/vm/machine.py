"""Boot the sched_ext kernel under qemu and run commands in it.

    with Vm(cpus=1) as vm:
        r = vm.run(["cat", "/sys/kernel/sched_ext/state"])

The guest's /init hands a virtio-serial port to a small runner
(guest/runner.py); this side listens on a Unix socket that qemu connects to,
sends requests and reads the streamed output back as JSON lines. The kernel
console goes to a log file (`Vm.console`).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from scx_slo.errors import ScxSloError
from scx_slo.dev.vm import kernel as kernel_mod
from scx_slo.dev.vm import kernels
from scx_slo.dev.vm import payload as payload_mod
from scx_slo.dev.vm import rootfs as rootfs_mod
from scx_slo.dev.vm.cache import cache_dir

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
CMDLINE = "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init"


class VmError(ScxSloError):
    """The VM could not be started or stopped talking."""


class VmCommandError(ScxSloError):
    """A command in the VM failed (raised by Result.check())."""


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    def check(self) -> "Result":
        if self.returncode != 0:
            raise VmCommandError(
                f"{' '.join(self.argv)} exited {self.returncode}"
                f"{' (timed out)' if self.timed_out else ''}:\n{self.stderr[-4000:]}")
        return self


def _accel_verdict_path(cache: Path) -> Path:
    return cache / "accel.json"


def _host_key() -> str:
    qemu = subprocess.run([QEMU, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    return f"{os.uname().release} {qemu}"


def choose_accels(cache: Path) -> list[str]:
    """Accelerators to try in order: KVM when it is usable and not known to fail here."""
    want = os.environ.get("SCX_SLO_VM_ACCEL", "auto")
    if want in ("kvm", "tcg"):
        return [want]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return ["tcg"]
    verdict = _accel_verdict_path(cache)
    if verdict.exists():
        v = json.loads(verdict.read_text())
        if v.get("host") == _host_key():
            return ["kvm"] if v.get("kvm") else ["tcg"]
    return ["kvm", "tcg"]


def tcg_accel_option(cpus: int) -> str:
    """TCG with one host thread for all vCPUs when there are several.

    qemu 7.2's multi-threaded TCG races when one vCPU rewrites kernel text that
    another executes: the kernel patches static keys when sched_ext is enabled
    or disabled, and a 2-vCPU guest then panics now and then with RIP in the
    middle of a patched jump ("Fatal exception in interrupt", seen in CI).
    Single-threaded TCG runs the vCPUs in turn on one host thread, so every
    vCPU sees whole patches; the guest is still SMP. (On this project's 2-core
    build machine the 2-vCPU tests ran no slower this way.)
    SCX_SLO_VM_TCG_THREAD=multi brings back the multi-threaded, racy mode.
    """
    thread = os.environ.get("SCX_SLO_VM_TCG_THREAD") or ("single" if cpus > 1 else "multi")
    if thread not in ("single", "multi"):
        raise VmError(f"SCX_SLO_VM_TCG_THREAD={thread!r}: use single or multi")
    return f"tcg,thread={thread}"


def topology_options(cpus: int, mem_mb: int, sockets: int = 1, threads: int = 1,
                     numa_nodes: int = 1) -> list[str]:
    """qemu's -smp (and -numa) for CPUS vCPUs as SOCKETS x cores x THREADS, the sockets
    (and their memory) split evenly over NUMA_NODES nodes."""
    if sockets < 1 or threads < 1 or numa_nodes < 1 or cpus % (sockets * threads):
        raise VmError(f"{cpus} vCPUs cannot be {sockets} socket(s) x {threads} thread(s) per "
                      "core: the vCPUs must divide evenly")
    if sockets % numa_nodes or mem_mb % numa_nodes:
        raise VmError(f"{numa_nodes} NUMA node(s) need the {sockets} socket(s) and the "
                      f"{mem_mb} MiB to divide evenly")
    cores = cpus // (sockets * threads)
    argv = ["-smp", f"{cpus},sockets={sockets},cores={cores},threads={threads}"]
    per_node = cpus // numa_nodes
    for n in range(numa_nodes if numa_nodes > 1 else 0):
        argv += ["-object", f"memory-backend-ram,id=mem{n},size={mem_mb // numa_nodes}M",
                 "-numa", f"node,nodeid={n},cpus={n * per_node}-{(n + 1) * per_node - 1},"
                          f"memdev=mem{n}"]
    return argv


class Vm:
    """One booted VM; a context manager that powers it off on exit.

    CPUS vCPUs are one socket of single-threaded cores unless SOCKETS, THREADS (per core)
    and NUMA_NODES say otherwise (qemu's -smp and -numa: the guest kernel sees the
    packages, SMT siblings, shared caches and nodes in sysfs as on a real machine)."""

    def __init__(self, cpus: int = 1, mem_mb: int = 1024, boot_timeout: float = 300,
                 cmdline_extra: str = "", console: Path | None = None,
                 trees: dict[str, Path] | None = None, kernel: str | None = None,
                 sockets: int = 1, threads: int = 1, numa_nodes: int = 1):
        if cpus < 1 or mem_mb < 512:
            raise VmError("the VM needs at least 1 CPU and 512 MiB of memory")
        self.cpus, self.mem_mb = cpus, mem_mb
        self.topology = topology_options(cpus, mem_mb, sockets, threads, numa_nodes)
        self.kernel = kernel or kernels.default_name()   # a name in kernels.NAMES
        self.boot_timeout = boot_timeout
        self.cmdline_extra = cmdline_extra
        self.console = console
        self.trees = dict(trees or {})     # guest directory -> host directory, in the payload
        self.kernel_release = ""
        self.accel = ""
        self._proc: subprocess.Popen | None = None
        self._conn: socket.socket | None = None
        self._buf = b""
        self._next_id = 0
        self._tmp: tempfile.TemporaryDirectory | None = None

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> "Vm":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        if shutil.which(QEMU) is None:
            raise VmError(f"{QEMU} not found: run scripts/setup.sh (apt-get install qemu-system-x86)")
        cache = cache_dir()
        kernel = kernels.get(self.kernel, cache, progress=log.warning)
        rootfs = rootfs_mod.image_path(cache)
        if not rootfs.exists():
            raise VmError(f"no VM rootfs at {rootfs}: run `scx-slo vm build` (or scripts/setup.sh)")
        self._tmp = tempfile.TemporaryDirectory(prefix="scx-slo-vm-")
        tmp = Path(self._tmp.name)
        initrd = tmp / "initrd"
        shutil.copyfile(rootfs, initrd)
        payload = payload_mod.build(tmp / "payload.cpio", trees=self.trees)
        with open(initrd, "ab") as out, open(payload, "rb") as inp:
            shutil.copyfileobj(inp, out)
        if self.console is None:
            self.console = tmp / "console.log"
        errors = []
        for accel in choose_accels(cache):
            try:
                self._boot(kernel.vmlinuz, initrd, accel, tmp)
                self._record_accel(cache, accel, ok=True)
                return
            except VmError as e:
                errors.append(f"{accel}: {e}")
                self._kill()
                if accel == "kvm":
                    self._record_accel(cache, "kvm", ok=False)
                    log.warning("KVM boot failed, falling back to TCG: %s", e)
        self.close()
        raise VmError("could not boot the VM: " + "; ".join(errors))

    def _record_accel(self, cache: Path, accel: str, ok: bool) -> None:
        if accel == "kvm" or not _accel_verdict_path(cache).exists():
            _accel_verdict_path(cache).write_text(json.dumps({"host": _host_key(), "kvm": accel == "kvm" and ok}))

    def _boot(self, vmlinuz: Path, initrd: Path, accel: str, tmp: Path) -> None:
        sock_path = tmp / f"ctl-{accel}.sock"
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(str(sock_path))
        listener.listen(1)
        cpu = "host" if accel == "kvm" else "max"
        argv = [QEMU, "-accel", tcg_accel_option(self.cpus) if accel == "tcg" else accel,
                "-cpu", cpu, *self.topology, "-m", str(self.mem_mb),
                "-kernel", str(vmlinuz), "-initrd", str(initrd),
                "-append", f"{CMDLINE} {self.cmdline_extra}".strip(),
                "-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults",
                "-serial", f"file:{self.console}",
                "-device", "virtio-serial-pci",
                "-chardev", f"socket,id=ctl,path={sock_path}",
                "-device", "virtserialport,chardev=ctl,name=scx.ctl"]
        log.info("booting: %s", " ".join(argv))
        self.accel = accel
        self._qemu_err = open(tmp / f"qemu-{accel}.err", "w+")
        self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._qemu_err,
                                      stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.boot_timeout
        listener.settimeout(1.0)
        try:
            while True:
                self._fail_if_exited("while connecting")
                try:
                    self._conn, _ = listener.accept()
                    break
                except socket.timeout:
                    if time.monotonic() > deadline:
                        raise VmError("qemu never connected to the control socket")
        finally:
            listener.close()
        msg = self._recv(deadline, "while booting")
        if msg.get("event") != "ready":
            raise VmError(f"unexpected first message from the guest: {msg}")
        self.kernel_release = msg["kernel"]

    def _fail_if_exited(self, when: str) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._qemu_err.seek(0)
            err = self._qemu_err.read().strip()[-2000:]
            tail = self.console_tail()
            raise VmError(f"qemu exited {self._proc.returncode} {when}: {err or '(no qemu output)'}"
                          + (f"\n--- console ---\n{tail}" if tail else ""))

    def console_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(Path(self.console).read_text(errors="replace").splitlines()[-n:])
        except (OSError, TypeError):
            return ""

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._send({"op": "poweroff"})
            except OSError:
                pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._kill()
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._proc = None
        if self._tmp is not None:
            if self.console and str(self.console).startswith(self._tmp.name):
                self.console = None
            self._tmp.cleanup()
            self._tmp = None

    def _kill(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    # -- the channel ---------------------------------------------------------
    def _send(self, msg: dict) -> None:
        self._conn.settimeout(None)     # _recv's polling timeout must not cut a large send
        self._conn.sendall((json.dumps(msg) + "\n").encode())

    def _recv(self, deadline: float | None, when: str) -> dict:
        while b"\n" not in self._buf:
            self._fail_if_exited(when)
            if deadline is not None and time.monotonic() > deadline:
                raise VmError(f"no answer from the guest {when}\n--- console ---\n{self.console_tail()}")
            self._conn.settimeout(1.0)
            try:
                chunk = self._conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                self._proc.wait(timeout=10) if self._proc else None
                self._fail_if_exited(when)
                raise VmError(f"the guest closed the control channel {when}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, cmd: list[str] | str, timeout: float = 600, env: dict | None = None,
            input: str | None = None, cwd: str | None = None,
            on_output: Callable[[str, str], None] | None = None) -> Result:
        """Run a command (argv list, or a string for `sh -c`) as root in the guest."""
        if self._conn is None:
            raise VmError("the VM is not running")
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        self._next_id += 1
        rid = self._next_id
        self._send({"op": "run", "id": rid, "argv": argv, "env": env or {}, "cwd": cwd,
                    "input": input, "timeout": timeout})
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        # The guest enforces `timeout`; allow it time to report before giving up.
        deadline = time.monotonic() + timeout + 60
        while True:
            msg = self._recv(deadline, f"running {argv!r}")
            if msg.get("id") != rid:
                continue
            if "stream" in msg:
                out[msg["stream"]].append(msg["data"])
                if on_output:
                    on_output(msg["stream"], msg["data"])
            elif "exit" in msg:
                return Result(argv, msg["exit"], "".join(out["stdout"]), "".join(out["stderr"]),
                              msg.get("timed_out", False))


def build(progress=print, kernel: str | None = None) -> tuple[kernel_mod.Kernel, Path]:
    """Fetch or build the kernel and build the rootfs (both cached)."""
    cache = cache_dir()
    k = kernels.get(kernel or kernels.default_name(), cache, progress=progress)
    progress(f"kernel: {k.version} ({k.vmlinuz})")
    return k, rootfs_mod.build(cache, progress=progress)
