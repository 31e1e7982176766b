"""The scheduler object as an earlier revision of this checkout built it: the baseline
the benchmarks run next to the current object, in the same boot.

    obj = build_object("5305056", Path(tmp))     # tmp/scx_slo.bpf.o

The revision's bpf/ comes from git (`git archive`), vmlinux.h from this checkout
where the revision has none (it is generated, not committed), and clang builds it
with the flags setup.py uses.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from scx_slo.dev.vm.payload import project_root
from scx_slo.errors import ScxSloError

CLANG = os.environ.get("BPF_CLANG", "clang-19")
# The last revision with one latency-critical and one batch queue for the machine.
DEFAULT_REV = "5305056"
GUEST_DIR = "/opt/scx-slo/baseline"     # where the benchmarks carry it in the VM


class BaselineError(ScxSloError):
    """The baseline object could not be built."""


def build_object(rev: str, out_dir: Path, root: Path | None = None) -> Path:
    """scx_slo.bpf.o of REV in OUT_DIR (built there from REV's bpf/)."""
    root = root or project_root()
    src = out_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    try:
        archive = subprocess.run(["git", "-C", str(root), "archive", rev, "bpf"],
                                 capture_output=True)
    except OSError as e:
        raise BaselineError(f"git archive {rev}: {e.strerror}") from None
    if archive.returncode != 0:
        raise BaselineError(f"git archive {rev} bpf (in {root}): "
                            f"{archive.stderr.decode(errors='replace').strip()}")
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    vmlinux = src / "bpf" / "include" / "vmlinux.h"
    if not vmlinux.exists():
        vmlinux.write_bytes((root / "bpf" / "include" / "vmlinux.h").read_bytes())
    obj = out_dir / "scx_slo.bpf.o"
    cmd = [CLANG, "-target", "bpf", "-mcpu=v3", "-g", "-O2", "-fdebug-compilation-dir=.",
           "-D__TARGET_ARCH_x86", "-I", "bpf/include", "-I", "bpf", "-c",
           "bpf/scx_slo.bpf.c", "-o", str(obj.resolve())]
    r = subprocess.run(cmd, cwd=src, capture_output=True, text=True,
                       env={**os.environ, "SOURCE_DATE_EPOCH": "0"})
    if r.returncode != 0:
        raise BaselineError(f"building {rev}'s scheduler: {r.stderr.strip()[-1500:]}")
    return obj
