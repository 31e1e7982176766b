"""The payload: this checkout of the project, carried into the VM on each boot.

An uncompressed newc cpio appended to the rootfs initramfs: the kernel unpacks
it over the rootfs, so a rebuilt project reaches the guest without rebuilding
the rootfs. It holds the guest's /init and command runner too.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import scx_slo
from scx_slo.errors import ScxSloError

GUEST_SRC = "opt/scx-slo/src"
# Directories of the checkout the guest gets (those that exist).
TREES = ["plugin", "tests", "bpf", "settings", "hostcontainer", "benchmarks", "image", "deploy"]
SKIP_NAMES = {"__pycache__", ".pytest_cache", ".hypothesis", "vmlinux.h", "build"}
SKIP_SUFFIXES = {".pyc", ".egg-info"}


class PayloadError(ScxSloError):
    """The project could not be packed for the guest."""


def project_root() -> Path:
    """The checkout this scx_slo runs from, or just the installed package."""
    pkg = Path(scx_slo.__file__).resolve().parent
    root = pkg.parent.parent
    return root if (root / "pyproject.toml").exists() and (root / "plugin").is_dir() else pkg.parent


def _ignore(_dir, names):
    return [n for n in names if n in SKIP_NAMES or Path(n).suffix in SKIP_SUFFIXES]


def build(out: Path, root: Path | None = None, trees: dict[str, Path] | None = None) -> Path:
    """Pack the project (and `trees`: guest directory -> host directory, copied
    with cp -a so device nodes and links survive) as the payload cpio at out."""
    root = root or project_root()
    guest = Path(__file__).with_name("guest")
    with tempfile.TemporaryDirectory(prefix="scx-slo-payload-") as tmp:
        stage = Path(tmp)
        src = stage / GUEST_SRC
        src.mkdir(parents=True)
        if (root / "pyproject.toml").exists():
            for name in TREES:
                if (root / name).is_dir():
                    shutil.copytree(root / name, src / name, ignore=_ignore, symlinks=True)
        else:  # an installed package: carry the package alone
            shutil.copytree(root / "scx_slo", src / "plugin" / "scx_slo", ignore=_ignore)
        shutil.copy2(guest / "init", stage / "init")
        shutil.copy2(guest / "runner.py", stage / "opt" / "scx-slo" / "runner.py")
        (stage / "usr" / "local" / "bin").mkdir(parents=True)
        shutil.copy2(guest / "scx-slo", stage / "usr" / "local" / "bin" / "scx-slo")
        for guest_dir, host_dir in (trees or {}).items():
            dest = stage / guest_dir.strip("/")
            if not guest_dir.strip("/") or dest.exists():
                raise PayloadError(f"cannot carry {host_dir} to {guest_dir}: that path is taken")
            if not Path(host_dir).is_dir():
                raise PayloadError(f"cannot carry {host_dir} into the VM: not a directory")
            dest.parent.mkdir(parents=True, exist_ok=True)
            p = subprocess.run(["cp", "-a", str(host_dir), str(dest)], capture_output=True, text=True)
            if p.returncode != 0:
                raise PayloadError(f"copying {host_dir} into the payload failed: {p.stderr.strip()}")
        files = subprocess.run(["find", ".", "-print0"], cwd=stage, capture_output=True, check=True).stdout
        with open(out, "wb") as f:
            p = subprocess.run(["cpio", "--null", "-o", "-H", "newc", "--quiet", "--owner=0:0"],
                               cwd=stage, input=files, stdout=f, stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise PayloadError(f"cpio failed packing the payload: {p.stderr.decode().strip()}")
    return out
