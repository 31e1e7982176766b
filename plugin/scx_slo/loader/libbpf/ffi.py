"""The binding's one cffi module: `ffi` and `lib`, libbpf's API as libbpf.cdef declares
it, compiled by _build.py. Every other module of the binding imports them from here."""
from scx_slo.loader.libbpf._libbpf import ffi, lib  # noqa: F401
