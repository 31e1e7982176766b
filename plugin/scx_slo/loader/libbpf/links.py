"""BPF links: the struct_ops attachment of a scheduler, live or re-opened from its pin."""
from __future__ import annotations

import errno
import os

from scx_slo.loader.libbpf import errors
from scx_slo.loader.libbpf.ffi import ffi, lib
from scx_slo.loader.libbpf.handle import Handle


class Link(Handle):
    """A `struct bpf_link`; closing it releases this process's reference.

    A link that is pinned stays attached after close(); detach() ends it for
    every holder (BPF_LINK_DETACH).
    """

    def __init__(self, ptr, owner=None, description: str = "link"):
        super().__init__(description)
        self._ptr = ptr
        self._owner = owner  # the BpfObject (or None for an adopted link), kept alive
        # Backstop only: close() is the contract, this catches forgotten links.
        self._gc = ffi.gc(ptr, lib.bpf_link__destroy)

    @classmethod
    def open_pinned(cls, path: str | os.PathLike) -> "Link":
        """Re-open a pinned link (adoption by a later process)."""
        path = os.fspath(path)
        ptr = errors.call(f"open of pinned link {path}", lib.bpf_link__open, os.fsencode(path))
        return cls(ptr, None, f"link pinned at {path}")

    def _live(self):
        if self._ptr is None:
            raise errors.LibbpfError(self.description, errno.EBADF,
                                     detail="link is closed")
        return self._ptr

    @property
    def fd(self) -> int:
        return int(lib.bpf_link__fd(self._live()))

    @property
    def pin_path(self) -> str | None:
        p = lib.bpf_link__pin_path(self._live())
        return None if p == ffi.NULL else ffi.string(p).decode()

    def info(self) -> dict:
        info = ffi.new("struct bpf_link_info *")
        size = ffi.new("__u32 *", ffi.sizeof("struct bpf_link_info"))
        errors.check(f"info of {self.description}",
                     lib.bpf_link_get_info_by_fd(self.fd, info, size))
        return {"type": int(info.type), "id": int(info.id), "prog_id": int(info.prog_id)}

    def pin(self, path: str | os.PathLike) -> None:
        errors.call(f"pin of {self.description} at {os.fspath(path)}", lib.bpf_link__pin,
                    self._live(), os.fsencode(path))

    def unpin(self) -> None:
        """Remove the link's pin (if this Link pinned or was opened from it)."""
        if self.pin_path is None:
            return
        errors.call(f"unpin of {self.description}", lib.bpf_link__unpin, self._live())

    def detach(self) -> None:
        """Detach the link in the kernel, for every holder of it."""
        errors.call(f"detach of {self.description}", lib.bpf_link__detach, self._live())

    def _release(self) -> None:
        """Release this process's reference."""
        self._ptr = None
        ffi.release(self._gc)  # runs bpf_link__destroy exactly once
        self._owner = None
