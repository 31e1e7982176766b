"""The VM's 6.12 kernel, built here from Debian's `linux-source-6.12`.

Debian's 6.12 binaries have no sched_ext, but its 6.12 source does. The build
starts from `allnoconfig`, applies the fragment `kconfig/6.12.config` (the
scheduler options of Bottlerocket's kernel-6.12 plus what the VM needs) and
refuses a configuration that lost any of its lines. The result is cached by
(source version, fragment hash): a second call returns at once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from scx_slo.dev.vm.kernel import Kernel, KernelError

log = logging.getLogger(__name__)

SOURCE_PACKAGE = "linux-source-6.12"
SOURCE_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
FRAGMENT = Path(__file__).with_name("kconfig") / "6.12.config"
TOOLS = ("make", "gcc", "flex", "bison", "bc", "pahole", "tar", "xz")


def source_version() -> str:
    """The installed linux-source-6.12 package version (e.g. 6.12.117-1~deb12u1)."""
    p = subprocess.run(["dpkg-query", "-W", "-f=${Version}", SOURCE_PACKAGE],
                       capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout or not SOURCE_TARBALL.exists():
        raise KernelError(f"{SOURCE_PACKAGE} is not installed ({SOURCE_TARBALL} missing): "
                          f"run scripts/setup.sh (apt-get install {SOURCE_PACKAGE})")
    return p.stdout.strip()


def fragment_lines(fragment: Path = FRAGMENT) -> list[str]:
    """The fragment's option lines (comments and blank lines dropped)."""
    return [ln.strip() for ln in fragment.read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def build_id(version: str, fragment: Path = FRAGMENT) -> str:
    h = hashlib.sha256(version.encode() + b"\0" + fragment.read_bytes())
    return h.hexdigest()[:12]


def lost_options(config_text: str, wanted: list[str]) -> list[str]:
    """Fragment lines the final .config does not have (a dependency was not met)."""
    have = set(config_text.splitlines())
    return [ln for ln in wanted if ln not in have]


def cached(cache: Path) -> Kernel | None:
    """The built kernel for the installed source and the current fragment, if any."""
    try:
        out = cache / f"kernel-6.12-{build_id(source_version())}"
    except KernelError:
        return None
    stamp = out / "kernel.json"
    if not stamp.exists():
        return None
    info = json.loads(stamp.read_text())
    k = Kernel(info["version"], out / "bzImage", out / "config")
    return k if k.vmlinuz.exists() and k.config.exists() else None


def _make(src: Path, obj: Path, *targets: str, log_file: Path | None = None) -> str:
    argv = ["make", "-C", str(src), f"O={obj}", "ARCH=x86_64", *targets]
    log.info("kernel build: %s", " ".join(argv))
    out = open(log_file, "a") if log_file else subprocess.PIPE
    try:
        p = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, text=True)
    finally:
        if log_file:
            out.close()
    if p.returncode != 0:
        tail = (log_file.read_text(errors="replace") if log_file else p.stdout or "")
        tail = "\n".join(tail.strip().splitlines()[-25:])
        raise KernelError(f"make {' '.join(targets)} failed (exit {p.returncode}):\n{tail}")
    return p.stdout or ""


def build(cache: Path, progress=print, jobs: int | None = None) -> Kernel:
    """Build (once) the 6.12 kernel; return its bzImage and config."""
    k = cached(cache)
    if k is not None:
        return k
    version = source_version()
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        raise KernelError(f"building the 6.12 kernel needs {', '.join(missing)}: run scripts/setup.sh")
    bid = build_id(version)
    out = cache / f"kernel-6.12-{bid}"
    work = cache / "kbuild"
    # One object tree, kept: a changed fragment rebuilds only what it touches.
    src, obj = work / f"linux-{version}", work / "obj"
    t0 = time.monotonic()
    if not (src / "Makefile").exists():
        progress(f"unpacking {SOURCE_TARBALL} ({version})")
        shutil.rmtree(src, ignore_errors=True)
        src.mkdir(parents=True)
        subprocess.run(["tar", "-xJf", str(SOURCE_TARBALL), "-C", str(src),
                        "--strip-components=1"], check=True)
    marker = obj / ".scx-slo-source"
    if not marker.exists() or marker.read_text() != version:
        shutil.rmtree(obj, ignore_errors=True)
        obj.mkdir(parents=True)
        marker.write_text(version)
    build_log = obj / "build.log"
    build_log.write_text("")
    _make(src, obj, "allnoconfig", log_file=build_log)
    p = subprocess.run([str(src / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(obj),
                        str(obj / ".config"), str(FRAGMENT)], capture_output=True, text=True)
    if p.returncode != 0:
        raise KernelError(f"merging {FRAGMENT} failed: {p.stderr.strip()[-2000:]}")
    _make(src, obj, "olddefconfig", log_file=build_log)
    lost = lost_options((obj / ".config").read_text(), fragment_lines())
    if lost:
        raise KernelError(f"{FRAGMENT}: the kernel's Kconfig dropped {', '.join(lost)} "
                          f"(a dependency is not set); see {obj / '.config'}")
    jobs = jobs or os.cpu_count() or 1
    progress(f"building Linux {version} bzImage with {FRAGMENT.name} (-j{jobs}, log {build_log})")
    _make(src, obj, f"-j{jobs}", "bzImage", log_file=build_log)
    release = _make(src, obj, "-s", "kernelrelease").strip()
    seconds = time.monotonic() - t0
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(obj / "arch/x86/boot/bzImage", out / "bzImage")
    shutil.copyfile(obj / ".config", out / "config")
    (out / "kernel.json").write_text(json.dumps({
        "version": release, "source": f"{SOURCE_PACKAGE} {version}",
        "fragment_sha256": hashlib.sha256(FRAGMENT.read_bytes()).hexdigest(),
        "build_seconds": round(seconds)}))
    progress(f"kernel {release} built in {seconds:.0f} s: {out / 'bzImage'}")
    return Kernel(release, out / "bzImage", out / "config")
