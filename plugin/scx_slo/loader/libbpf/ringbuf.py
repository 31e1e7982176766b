"""A BPF ring buffer (BPF_MAP_TYPE_RINGBUF) read through libbpf's ring_buffer API.

libbpf calls scx_slo_ringbuf_sample() for every record; the callback only copies
the bytes into the reader's list (no Python error can escape into C), and poll()
returns what arrived. One reader per process and map; close() frees it.
"""
from __future__ import annotations

import errno

from scx_slo.loader.libbpf import errors
from scx_slo.loader.libbpf.ffi import ffi, lib
from scx_slo.loader.libbpf.handle import Handle
from scx_slo.loader.libbpf.maps import Map


@ffi.def_extern()
def scx_slo_ringbuf_sample(ctx, data, size):  # called by libbpf during poll/consume
    ffi.from_handle(ctx)._records.append(bytes(ffi.buffer(data, size)))
    return 0


class RingBuffer(Handle):
    """Records of one ring buffer map: `poll(timeout_ms)` -> list of bytes."""

    def __init__(self, ring: Map):
        if ring.type != lib.BPF_MAP_TYPE_RINGBUF:
            raise errors.LibbpfError(f"ring buffer of map {ring.name}", errno.EINVAL,
                                     detail=f"map type {ring.type} is not a ring buffer")
        self._records: list[bytes] = []
        self._self = ffi.new_handle(self)       # kept alive as long as libbpf holds it
        self._rb = errors.call(f"ring_buffer__new({ring.name})", lib.ring_buffer__new,
                               ring.fd, lib.scx_slo_ringbuf_sample, self._self, ffi.NULL)
        super().__init__(f"ring buffer of {ring.name!r}")

    def poll(self, timeout_ms: int) -> list[bytes]:
        """Wait up to TIMEOUT_MS for records; every record that arrived (maybe none)."""
        if self.closed:
            raise errors.LibbpfError(f"poll of {self.description}", errno.EBADF,
                                     detail="closed")
        n = lib.ring_buffer__poll(self._rb, int(timeout_ms))
        if n < 0 and n != -errno.EINTR:     # a signal: what arrived is still returned
            errors.check(f"ring_buffer__poll of {self.description}", n)
        records, self._records = self._records, []
        return records

    def _release(self) -> None:
        lib.ring_buffer__free(self._rb)
        self._rb = ffi.NULL
