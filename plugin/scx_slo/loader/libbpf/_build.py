"""cffi build script (API mode, out-of-line) for scx_slo's libbpf binding.

Run at install time by setup.py (`cffi_modules`); produces the extension
module `scx_slo.loader.libbpf._libbpf`. The C declarations live in libbpf.cdef, the
print-callback shim in _shim.c; nothing here is hand-written C API surface.
"""
import os
import shlex
import subprocess
from pathlib import Path

from cffi import FFI

HERE = Path(__file__).resolve().parent


def _pkg_config(*args: str) -> list[str]:
    try:
        out = subprocess.run(["pkg-config", *args, "libbpf"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return shlex.split(out)


def _flags() -> dict[str, list[str]]:
    cflags = _pkg_config("--cflags")
    libs = _pkg_config("--libs") or ["-lbpf"]
    return {
        "include_dirs": [f[2:] for f in cflags if f.startswith("-I")] + [str(HERE)],
        "library_dirs": [f[2:] for f in libs if f.startswith("-L")],
        "libraries": [f[2:] for f in libs if f.startswith("-l")] or ["bpf"],
    }


ffibuilder = FFI()
ffibuilder.cdef((HERE / "libbpf.cdef").read_text())
ffibuilder.set_source(
    "scx_slo.loader.libbpf._libbpf",
    """
    #include <bpf/libbpf.h>
    #include <bpf/bpf.h>
    #include <linux/bpf.h>
    #include "_shim.h"

    #if LIBBPF_MAJOR_VERSION < 1 || (LIBBPF_MAJOR_VERSION == 1 && LIBBPF_MINOR_VERSION < 4)
    #error "scx_slo needs libbpf >= 1.4 headers (older libbpf drops .struct_ops.link)"
    #endif
    """,
    sources=[os.path.relpath(HERE / "_shim.c")],
    extra_compile_args=["-Wall", "-Wno-unused-function"],
    **_flags(),
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
