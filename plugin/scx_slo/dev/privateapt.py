"""Download Debian packages through a private apt configuration.

The system's apt sources are never read or changed: each PrivateApt has its own
`*.sources` file, package lists and cache under one directory, and only
downloads (`apt-get download`) and unpacks (`dpkg-deb -x`) packages.
"""
from __future__ import annotations

import logging
import re
import subprocess
from pathlib import Path

from scx_slo.errors import ScxSloError

log = logging.getLogger(__name__)

MIRROR = "http://deb.debian.org/debian"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


class AptError(ScxSloError):
    """apt-get could not update, resolve or download what was asked."""


class PrivateApt:
    def __init__(self, root: Path, suites: list[str], mirror: str = MIRROR):
        self.root = Path(root)
        self.suites = suites
        self.mirror = mirror

    @property
    def _opts(self) -> list[str]:
        r = self.root
        return ["-o", "Dir::Etc::SourceList=/dev/null",
                "-o", f"Dir::Etc::SourceParts={r / 'sources.list.d'}",
                "-o", f"Dir::State::Lists={r / 'lists'}",
                "-o", f"Dir::Cache={r / 'cache'}",
                "-o", "Dir::State::status=/dev/null",
                "-o", "APT::Sandbox::User=root",
                "-o", "Debug::NoLocking=1"]

    def _run(self, tool: str, *args: str, what: str, cwd: Path | None = None) -> str:
        cmd = [tool, *self._opts, *args]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
        except FileNotFoundError as e:
            raise AptError(f"{tool} not found: this needs a Debian machine with apt") from e
        if p.returncode != 0:
            tail = (p.stderr or p.stdout).strip().splitlines()[-3:]
            raise AptError(f"{what} failed: {' | '.join(tail)}")
        return p.stdout

    def update(self) -> None:
        for d in ("sources.list.d", "lists/partial", "cache/archives/partial"):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        (self.root / "sources.list.d" / "scx-slo.sources").write_text(
            f"Types: deb\nURIs: {self.mirror}\nSuites: {' '.join(self.suites)}\n"
            f"Components: main\nSigned-By: {KEYRING}\n")
        self._run("apt-get", "update", "-qq", "--error-on=any",
                  what=f"apt-get update of {', '.join(self.suites)} (no network to {self.mirror}?)")

    def has(self, package: str) -> bool:
        try:
            out = self._run("apt-cache", "policy", package, what=f"apt-cache policy {package}")
        except AptError:
            return False
        return bool(re.search(r"Candidate: (?!\(none\))", out))

    def depends(self, package: str) -> list[str]:
        out = self._run("apt-cache", "show", package, what=f"apt-cache show {package}")
        for line in out.splitlines():
            if line.startswith("Depends:"):
                return [alt.split()[0] for dep in line[len("Depends:"):].split(",")
                        for alt in dep.split("|")[:1]]
        return []

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        dest.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", "download", "-qq", *packages, cwd=dest,
                  what=f"apt-get download {' '.join(packages)}")
        debs = []
        for pkg in packages:
            found = sorted(dest.glob(f"{pkg.split('=')[0]}_*.deb"))
            if not found:
                raise AptError(f"apt-get download {pkg} left no .deb in {dest}")
            debs.append(found[-1])
        return debs


def extract(deb: Path, into: Path) -> None:
    """Unpack a .deb's data into a directory (dpkg-deb -x)."""
    into.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], capture_output=True, text=True)
    if p.returncode != 0:
        raise AptError(f"dpkg-deb -x {deb.name} failed: {p.stderr.strip()}")
