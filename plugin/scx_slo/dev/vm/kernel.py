"""The sched_ext kernel the VM boots: Debian trixie-backports' cloud kernel.

The version is pinned here, and only here. Backports keep only the newest
build, so when the pinned packages are gone the version is resolved through
the `linux-image-cloud-amd64` metapackage; either way the kernel config must
say CONFIG_SCHED_CLASS_EXT=y, and the version used is logged.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from scx_slo.errors import ScxSloError
from scx_slo.dev.privateapt import PrivateApt, extract

log = logging.getLogger(__name__)

KERNEL_VERSION = "7.3.4+deb13-cloud-amd64"
KERNEL_SUITE = "trixie-backports"
METAPACKAGE = "linux-image-cloud-amd64"
REQUIRED_CONFIG = ("CONFIG_SCHED_CLASS_EXT=y", "CONFIG_DEBUG_INFO_BTF=y", "CONFIG_RD_ZSTD=y")


class KernelError(ScxSloError):
    """The VM kernel could not be downloaded or is unfit."""


@dataclass(frozen=True)
class Kernel:
    version: str
    vmlinuz: Path
    config: Path

    def config_has(self, line: str) -> bool:
        return line in self.config.read_text().splitlines()


def _packages(version: str) -> list[str]:
    return [f"linux-base-{version}", f"linux-binary-{version}"]


def resolve_version(apt: PrivateApt, pinned: str = KERNEL_VERSION) -> str:
    if all(apt.has(p) for p in _packages(pinned)):
        return pinned
    for dep in apt.depends(METAPACKAGE):
        if dep.startswith("linux-image-") and "+" in dep:
            version = dep[len("linux-image-"):]
            log.warning("pinned kernel %s is gone from %s; using %s (from %s)",
                        pinned, KERNEL_SUITE, version, METAPACKAGE)
            return version
    raise KernelError(f"neither {pinned} nor a version through {METAPACKAGE} is in {KERNEL_SUITE}")


def fetch(cache: Path) -> Kernel:
    """Download (once) and unpack the kernel; return its vmlinuz and config."""
    stamp = cache / "kernel.json"
    if stamp.exists():
        info = json.loads(stamp.read_text())
        k = Kernel(info["version"], Path(info["vmlinuz"]), Path(info["config"]))
        if k.vmlinuz.exists() and k.config.exists():
            return k
    apt = PrivateApt(cache / "apt-kernel", [KERNEL_SUITE])
    apt.update()
    version = resolve_version(apt)
    debs = apt.download(_packages(version), cache / "apt-kernel" / "debs")
    tree = cache / "kernel"
    shutil.rmtree(tree, ignore_errors=True)
    for deb in debs:
        extract(deb, tree)
    moddir = tree / "usr" / "lib" / "modules" / version
    k = Kernel(version, moddir / "vmlinuz", moddir / "config")
    if not k.vmlinuz.exists() or not k.config.exists():
        raise KernelError(f"packages for {version} did not contain vmlinuz and config under {moddir}")
    missing = [c for c in REQUIRED_CONFIG if not k.config_has(c)]
    if missing:
        raise KernelError(f"kernel {version} lacks {', '.join(missing)}: it cannot run sched_ext tests")
    log.warning("VM kernel: %s (%s)", version, ", ".join(REQUIRED_CONFIG))
    stamp.write_text(json.dumps({"version": version, "vmlinuz": str(k.vmlinuz),
                                 "config": str(k.config)}))
    return k
