"""BPF maps: the libbpf-owned maps of an object, and maps adopted from a pin.

Data operations go through the map's file descriptor (bpf_map_*_elem), so a
map behaves the same whether this process loaded it or re-opened its pin.
Keys and values are bytes here; `Map.typed()` wraps a map with BTF-described
layouts (scx_slo.loader.btf.Layout) to pack and unpack Python values.
"""
from __future__ import annotations

import errno
import os
from typing import Iterator

from scx_slo.loader.libbpf import errors
from scx_slo.loader.libbpf.ffi import ffi, lib
from scx_slo.loader.libbpf.handle import Handle

PERCPU_TYPES = frozenset({
    lib.BPF_MAP_TYPE_PERCPU_HASH,
    lib.BPF_MAP_TYPE_PERCPU_ARRAY,
    lib.BPF_MAP_TYPE_LRU_PERCPU_HASH,
    lib.BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE,
})


def _round8(n: int) -> int:
    return (n + 7) & ~7


class MapClosed(errors.LibbpfError):
    def __init__(self, name: str):
        super().__init__(f"map {name!r}", errno.EBADF, detail="map is closed")


class Map(Handle):
    """Common operations on a BPF map reached through its file descriptor."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int

    def __init__(self, name: str, map_type: int, key_size: int, value_size: int,
                 max_entries: int):
        self.name = name
        self.type = map_type
        self.key_size = key_size
        self.value_size = value_size
        self.max_entries = max_entries
        self._ncpus: int | None = None
        super().__init__(f"{name!r} type={map_type} key={key_size} value={value_size} "
                         f"max={max_entries}")

    # -- descriptor -----------------------------------------------------------
    @property
    def fd(self) -> int:
        raise NotImplementedError

    def _fd(self) -> int:
        if self.closed:
            raise MapClosed(self.name)
        return self.fd

    @property
    def percpu(self) -> bool:
        return self.type in PERCPU_TYPES

    @property
    def ncpus(self) -> int:
        if self._ncpus is None:
            from scx_slo.loader.libbpf import num_possible_cpus
            self._ncpus = num_possible_cpus() if self.percpu else 1
        return self._ncpus

    @property
    def value_buffer_size(self) -> int:
        """Bytes a lookup returns: per-CPU maps give one 8-aligned slot per possible CPU."""
        if self.percpu:
            return _round8(self.value_size) * self.ncpus
        return self.value_size

    # -- data -----------------------------------------------------------------
    def _key(self, key: bytes):
        if len(key) != self.key_size:
            raise ValueError(f"map {self.name!r}: key is {len(key)} bytes, map wants {self.key_size}")
        return ffi.from_buffer(bytes(key))

    def lookup(self, key: bytes) -> bytes | list[bytes] | None:
        """The value for `key` (per-CPU maps: one bytes per possible CPU), or None."""
        kbuf = self._key(key)
        vbuf = ffi.new("char[]", self.value_buffer_size)
        ret = lib.bpf_map_lookup_elem(self._fd(), kbuf, vbuf)
        if ret == -errno.ENOENT:
            return None
        errors.check(f"lookup in map {self.name!r}", ret)
        raw = ffi.buffer(vbuf)[:]
        if not self.percpu:
            return raw
        step = _round8(self.value_size)
        return [raw[i * step:i * step + self.value_size] for i in range(self.ncpus)]

    def update(self, key: bytes, value: bytes | list[bytes], flags: int = lib.BPF_ANY) -> None:
        kbuf = self._key(key)
        if self.percpu:
            values = value if isinstance(value, list) else [value] * self.ncpus
            if len(values) != self.ncpus:
                raise ValueError(f"map {self.name!r}: {len(values)} per-CPU values, "
                                 f"{self.ncpus} possible CPUs")
            step = _round8(self.value_size)
            raw = b"".join(v.ljust(step, b"\0") for v in values)
            sizes = {len(v) for v in values}
        else:
            raw = bytes(value)
            sizes = {len(raw)}
        if sizes != {self.value_size}:
            raise ValueError(f"map {self.name!r}: value is {sorted(sizes)} bytes, "
                             f"map wants {self.value_size}")
        errors.call(f"update of map {self.name!r}", lib.bpf_map_update_elem, self._fd(), kbuf,
                    ffi.from_buffer(raw), flags)

    def delete(self, key: bytes) -> bool:
        """Delete `key`; False if it was not there."""
        ret = lib.bpf_map_delete_elem(self._fd(), self._key(key))
        if ret == -errno.ENOENT:
            return False
        errors.check(f"delete from map {self.name!r}", ret)
        return True

    def keys(self) -> Iterator[bytes]:
        fd = self._fd()
        cur = ffi.NULL
        nxt = ffi.new("char[]", self.key_size)
        while True:
            ret = lib.bpf_map_get_next_key(fd, cur, nxt)
            if ret == -errno.ENOENT:
                return
            errors.check(f"iteration of map {self.name!r}", ret)
            key = ffi.buffer(nxt)[:]
            yield key
            cur = ffi.new("char[]", key)

    def items(self) -> Iterator[tuple[bytes, bytes | list[bytes]]]:
        for key in self.keys():
            value = self.lookup(key)
            if value is not None:  # deleted while iterating
                yield key, value

    def typed(self, key_layout, value_layout) -> "TypedMap":
        return TypedMap(self, key_layout, value_layout)

    # -- pinning ----------------------------------------------------------------
    def pin(self, path: str | os.PathLike) -> None:
        errors.check(f"pin of map {self.name!r} at {os.fspath(path)}",
                     lib.bpf_obj_pin(self._fd(), os.fsencode(path)))

    @staticmethod
    def unpin(path: str | os.PathLike) -> None:
        """Remove a pin (a bpffs file; the map lives on while other references exist)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

class ObjectMap(Map):
    """A map of a BpfObject; libbpf owns it, the object keeps it (and is kept) alive."""

    def __init__(self, owner, ptr):
        self._owner = owner  # keeps the bpf_object alive while this map is used
        self._ptr = ptr
        super().__init__(ffi.string(lib.bpf_map__name(ptr)).decode(),
                         int(lib.bpf_map__type(ptr)), int(lib.bpf_map__key_size(ptr)),
                         int(lib.bpf_map__value_size(ptr)), int(lib.bpf_map__max_entries(ptr)))

    @property
    def fd(self) -> int:
        fd = int(lib.bpf_map__fd(self._ptr))
        if fd < 0:
            raise errors.LibbpfError(f"map {self.name!r}", -fd if fd < -1 else errno.EBADF,
                                     detail="map has no descriptor: the object is not loaded")
        return fd

    def initial_value(self):
        """A writable buffer over the map's initial contents, before load.

        For .rodata/.data/.bss this is the mmap-able data; for a struct_ops map it is
        libbpf's struct_ops shadow (the struct as the object's BTF lays it out).
        """
        if self.closed:
            raise MapClosed(self.name)
        size = ffi.new("size_t *")
        ptr = errors.check(f"initial value of map {self.name!r}",
                           lib.bpf_map__initial_value(self._ptr, size))
        return ffi.buffer(ptr, size[0])

    def pin(self, path: str | os.PathLike) -> None:
        errors.call(f"pin of map {self.name!r} at {os.fspath(path)}", lib.bpf_map__pin,
                    self._ptr, os.fsencode(path))

    def _release(self) -> None:
        self._ptr = None


class PinnedMap(Map):
    """A map re-opened from its bpffs pin by a later process; owns its descriptor."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd_value = errors.call(f"open of pinned map {self.path}", lib.bpf_obj_get,
                                     os.fsencode(self.path))
        try:
            info = ffi.new("struct bpf_map_info *")
            size = ffi.new("__u32 *", ffi.sizeof("struct bpf_map_info"))
            errors.check(f"info of pinned map {self.path}",
                         lib.bpf_map_get_info_by_fd(self._fd_value, info, size))
        except BaseException:
            os.close(self._fd_value)
            raise
        super().__init__(ffi.string(info.name).decode(), int(info.type), int(info.key_size),
                         int(info.value_size), int(info.max_entries))
        self.id = int(info.id)

    @property
    def fd(self) -> int:
        return self._fd_value

    def _release(self) -> None:
        os.close(self._fd_value)

    def __del__(self):  # backstop only: close() is the contract
        if getattr(self, "_open", False):
            self.close()


class TypedMap:
    """A map whose keys and values are packed/unpacked by BTF-described layouts."""

    def __init__(self, map_: Map, key_layout, value_layout):
        if key_layout.size != map_.key_size or value_layout.size != map_.value_size:
            raise ValueError(
                f"map {map_.name!r}: BTF layouts {key_layout.name} ({key_layout.size} B) -> "
                f"{value_layout.name} ({value_layout.size} B) do not match the map's "
                f"{map_.key_size} -> {map_.value_size} bytes")
        self.map = map_
        self.key_layout = key_layout
        self.value_layout = value_layout

    def _unpack_value(self, raw):
        if isinstance(raw, list):
            return [self.value_layout.unpack(r) for r in raw]
        return self.value_layout.unpack(raw)

    def lookup(self, key):
        raw = self.map.lookup(self.key_layout.pack(key))
        return None if raw is None else self._unpack_value(raw)

    def update(self, key, value, flags: int = lib.BPF_ANY) -> None:
        if isinstance(value, list):
            packed = [self.value_layout.pack(v) for v in value]
        else:
            packed = self.value_layout.pack(value)
        self.map.update(self.key_layout.pack(key), packed, flags)

    def delete(self, key) -> bool:
        return self.map.delete(self.key_layout.pack(key))

    def keys(self):
        return (self.key_layout.unpack(k) for k in self.map.keys())

    def items(self):
        return ((self.key_layout.unpack(k), self._unpack_value(v)) for k, v in self.map.items())
