"""The guest root filesystem: Debian bookworm minbase, Python and what tests need.

Built once with debootstrap, packed as a zstd cpio that the kernel unpacks as
its initramfs, and cached under a name derived from this recipe, so a changed
recipe builds a new one. The project itself is not in here: it travels in the
payload (see payload.py) on every boot.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scx_slo.errors import ScxSloError
from scx_slo.dev.privateapt import PrivateApt, extract

log = logging.getLogger(__name__)

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
DEBIAN_PACKAGES = [
    "python3", "python3-systemd", "libelf1", "zlib1g", "libcap2", "procps",
    "stress-ng", "util-linux", "kmod", "iproute2",
    "openssl",          # the fake Kubernetes API server's certificate (tests/fake_kube_api.py)
]
# libbpf >= 1.4: bookworm has 1.1.2, which silently drops .struct_ops.link.
BACKPORTS = ["libbpf1", "bpftool"]
# The project's runtime dependencies go in with pip (into SITE), except
# systemd-python, which Debian's python3-systemd provides, and cffi, which must
# be the version that built the extension the guest imports.
PIP_FROM_DEBIAN = {"systemd-python"}
SITE = "opt/scx-slo/site"
STRIP = ["usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale",
         "var/cache/apt", "var/lib/apt/lists", "usr/share/zoneinfo"]


class RootfsError(ScxSloError):
    """The guest root filesystem could not be built."""


def pip_requirements() -> list[str]:
    from importlib.metadata import requires

    import cffi
    from packaging.requirements import Requirement

    reqs = [f"cffi=={cffi.__version__}"]
    for text in requires("scx-slo") or []:
        req = Requirement(text)
        if req.marker is not None or req.name in PIP_FROM_DEBIAN or req.name == "cffi":
            continue
        reqs.append(f"{req.name}{req.specifier}")
    return sorted(reqs)


def recipe() -> dict:
    return {"suite": SUITE, "debian": DEBIAN_PACKAGES, "backports": BACKPORTS,
            "pip": pip_requirements(), "strip": STRIP, "v": 1}


def recipe_id() -> str:
    return hashlib.sha256(json.dumps(recipe(), sort_keys=True).encode()).hexdigest()[:12]


def image_path(cache: Path) -> Path:
    return cache / f"rootfs-{recipe_id()}.cpio.zst"


def _run(cmd: list[str], what: str, **kw) -> None:
    log.info("%s: %s", what, " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if p.returncode != 0:
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-5:])
        raise RootfsError(f"{what} failed ({cmd[0]} exit {p.returncode}): {tail}")


def build(cache: Path, progress=print) -> Path:
    """Build the rootfs image if this recipe has none yet; return its path."""
    out = image_path(cache)
    if out.exists():
        return out
    if os.geteuid() != 0:
        raise RootfsError("building the VM rootfs needs root (debootstrap); run scripts/setup.sh as root")
    for tool in ("debootstrap", "cpio", "zstd", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RootfsError(f"{tool} is missing: run scripts/setup.sh (apt-get install {tool})")
    tree = cache / "rootfs-tree"
    shutil.rmtree(tree, ignore_errors=True)
    progress(f"debootstrap {SUITE} minbase into {tree} (a few minutes, once)")
    _run(["debootstrap", "--variant=minbase", f"--include={','.join(DEBIAN_PACKAGES)}",
          SUITE, str(tree), MIRROR], "debootstrap")

    progress(f"adding {', '.join(BACKPORTS)} from {SUITE}-backports")
    apt = PrivateApt(cache / "apt-guest", [f"{SUITE}-backports"])
    apt.update()
    for deb in apt.download(BACKPORTS, cache / "apt-guest" / "debs"):
        extract(deb, tree)

    progress("installing Python dependencies into the guest")
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-compile", "--target",
          str(tree / SITE), *pip_requirements()], "pip install --target")

    for rel in STRIP:
        shutil.rmtree(tree / rel, ignore_errors=True)
    (tree / "etc" / "hostname").write_text("scx-slo-vm\n")

    progress(f"packing {out.name}")
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        find = subprocess.Popen(["find", ".", "-print0"], cwd=tree, stdout=subprocess.PIPE)
        cpio = subprocess.Popen(["cpio", "--null", "-o", "-H", "newc", "--quiet"], cwd=tree,
                                stdin=find.stdout, stdout=subprocess.PIPE)
        zstd = subprocess.Popen(["zstd", "-q", "-T0", "-10", "-c"], stdin=cpio.stdout, stdout=f)
        find.stdout.close()
        cpio.stdout.close()
        if zstd.wait() or cpio.wait() or find.wait():
            raise RootfsError("packing the rootfs (find | cpio | zstd) failed")
    # The payload cpio is appended after this one: it must start 4-byte
    # aligned or the kernel silently ignores it. Pad to 512.
    size = tmp.stat().st_size
    with open(tmp, "ab") as f:
        f.write(b"\0" * (-size % 512))
    tmp.rename(out)
    shutil.rmtree(tree, ignore_errors=True)
    progress(f"rootfs ready: {out} ({out.stat().st_size / 1e6:.1f} MB)")
    return out
