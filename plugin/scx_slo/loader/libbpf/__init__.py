"""scx_slo's binding to libbpf (cffi, API mode).

- libbpf.cdef: the C declarations; _shim.c: the print callback shim;
  _build.py: the cffi build script (run at install).
- ffi: the one cffi module (`ffi`, `lib`) the others import.
- errors: libbpf calls and return codes -> typed exceptions, libbpf log -> logging.
- handle / object / maps / links / ringbuf: Python objects owning the kernel
  resources, one lifecycle (close once, `with`, repr) for all of them.

Importing this package refuses a libbpf older than 1.4: libbpf 1.1 silently
ignores the `.struct_ops.link` section that scx_slo's scheduler uses.
"""
from __future__ import annotations

try:
    from scx_slo.loader.libbpf.ffi import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "scx_slo's libbpf binding is not compiled (scx_slo/loader/libbpf/_libbpf*.so missing): "
        "reinstall with `pip install -e .` on a machine with libbpf-dev >= 1.4 "
        f"({exc})") from exc

from scx_slo.loader.libbpf.errors import (  # noqa: F401
    Exists, LibbpfError, LibbpfVersionError, NotFound, PermissionDenied,
    Unsupported, VerifierError, call, check, log_mark, on_libbpf_log,
)

MIN_VERSION = (1, 4)



def version() -> tuple[int, int]:
    """The (major, minor) version of the libbpf shared library in use."""
    return int(lib.libbpf_major_version()), int(lib.libbpf_minor_version())


def version_string() -> str:
    return ffi.string(lib.libbpf_version_string()).decode()


def check_version(found: tuple[int, int], text: str) -> None:
    """Refuse a libbpf older than MIN_VERSION (raises LibbpfVersionError, an ImportError)."""
    if tuple(found) < MIN_VERSION:
        raise LibbpfVersionError(
            f"libbpf {text} is too old: scx_slo needs libbpf >= "
            f"{MIN_VERSION[0]}.{MIN_VERSION[1]} (older releases silently drop .struct_ops.link)")


check_version(version(), version_string())


@ffi.def_extern()
def scx_slo_libbpf_log(level, msg):  # called from _shim.c
    on_libbpf_log(int(level), ffi.string(msg).decode("utf-8", "replace"))


lib.scx_slo_libbpf_install_print()


def num_possible_cpus() -> int:
    return check("libbpf_num_possible_cpus", int(lib.libbpf_num_possible_cpus()))


from scx_slo.loader.libbpf.links import Link  # noqa: E402,F401
from scx_slo.loader.libbpf.maps import Map, ObjectMap, PinnedMap  # noqa: E402,F401
from scx_slo.loader.libbpf.object import BpfObject  # noqa: E402,F401
from scx_slo.loader.libbpf.ringbuf import RingBuffer  # noqa: E402,F401
