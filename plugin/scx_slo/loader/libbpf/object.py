"""A BPF object file opened (and later loaded) by libbpf."""
from __future__ import annotations

import errno
import os

from scx_slo.loader.libbpf import errors
from scx_slo.loader.libbpf.ffi import ffi, lib
from scx_slo.loader.libbpf.handle import Handle
from scx_slo.loader.libbpf.links import Link
from scx_slo.loader.libbpf.maps import ObjectMap

DEFAULT_LOG_SIZE = 4 << 20  # verifier log buffer (bytes)


class BpfObject(Handle):
    """`struct bpf_object`: open from a file, adjust, load, attach.

    Owns its maps and the links it attaches; close() releases links, then
    maps, then the object, and is idempotent. Children (maps, links) keep a
    reference to their object, so it outlives them.
    """

    def __init__(self, path: str | os.PathLike, *, btf_custom_path: str | os.PathLike | None = None,
                 kernel_log_size: int = DEFAULT_LOG_SIZE, kernel_log_level: int = 0,
                 object_name: str | None = None):
        self.path = os.fspath(path)
        super().__init__(self.path)
        self._keep = []  # cdata that must outlive the bpf_object (opts strings, log buffer)
        opts = ffi.new("struct bpf_object_open_opts *")
        opts.sz = ffi.sizeof("struct bpf_object_open_opts")
        if btf_custom_path is not None:
            s = ffi.new("char[]", os.fsencode(btf_custom_path))
            self._keep.append(s)
            opts.btf_custom_path = s
        if object_name is not None:
            s = ffi.new("char[]", object_name.encode())
            self._keep.append(s)
            opts.object_name = s
        self._log = ffi.new("char[]", kernel_log_size) if kernel_log_size else ffi.NULL
        opts.kernel_log_buf = self._log
        opts.kernel_log_size = kernel_log_size
        opts.kernel_log_level = kernel_log_level
        self._opts = opts
        ptr = errors.call(f"open of BPF object {self.path}", lib.bpf_object__open_file,
                          os.fsencode(self.path), opts)
        # Backstop only: close() is the contract and releases this at once.
        self._ptr = ffi.gc(ptr, lib.bpf_object__close)
        self._maps: dict[str, ObjectMap] = {}
        self._links: list[Link] = []
        self.loaded = False

    # -- lookup ---------------------------------------------------------------
    def _live(self):
        if self._ptr is None:
            raise errors.LibbpfError(f"BPF object {self.path}", errno.EBADF,
                                     detail="object is closed")
        return self._ptr

    @property
    def name(self) -> str:
        return ffi.string(lib.bpf_object__name(self._live())).decode()

    @property
    def maps(self) -> dict[str, ObjectMap]:
        """Every map of the object by name (libbpf's names: '.rodata' maps appear
        under their section name, see map())."""
        ptr = lib.bpf_object__next_map(self._live(), ffi.NULL)
        while ptr != ffi.NULL:
            name = ffi.string(lib.bpf_map__name(ptr)).decode()
            if name not in self._maps:
                self._maps[name] = ObjectMap(self, ptr)
            ptr = lib.bpf_object__next_map(self._ptr, ptr)
        return dict(self._maps)

    def map(self, name: str) -> ObjectMap:
        """A map by name; internal maps also by section name ('.rodata')."""
        ptr = lib.bpf_object__find_map_by_name(self._live(), name.encode())
        if ptr == ffi.NULL:
            raise errors.NotFound(f"map {name!r} in {self.path}", errno.ENOENT)
        real = ffi.string(lib.bpf_map__name(ptr)).decode()
        if real not in self._maps:
            self._maps[real] = ObjectMap(self, ptr)
        return self._maps[real]

    @property
    def programs(self) -> dict[str, str]:
        """Program name -> section name."""
        out = {}
        ptr = lib.bpf_object__next_program(self._live(), ffi.NULL)
        while ptr != ffi.NULL:
            out[ffi.string(lib.bpf_program__name(ptr)).decode()] = \
                ffi.string(lib.bpf_program__section_name(ptr)).decode()
            ptr = lib.bpf_object__next_program(self._ptr, ptr)
        return out

    def _program(self, name: str):
        return errors.check(f"lookup of program {name!r} in {self.path}",
                            lib.bpf_object__find_program_by_name(self._live(), name.encode()))

    def autoload(self, name: str) -> bool:
        """Whether load() loads the program `name`."""
        return bool(lib.bpf_program__autoload(self._program(name)))

    def set_autoload(self, name: str, autoload: bool) -> None:
        """Before load(): load the program `name` or leave it out."""
        errors.check(f"autoload of program {name!r}",
                     lib.bpf_program__set_autoload(self._program(name), autoload))

    def _program_fd(self, name: str) -> int:
        if not self.loaded:
            raise errors.LibbpfError(f"program {name!r}", errno.EBADF, detail="object is not loaded")
        return errors.check(f"fd of program {name!r}", lib.bpf_program__fd(self._program(name)))

    def verified_insns(self) -> dict[str, int]:
        """After load(): instructions the verifier processed, per loaded program."""
        out = {}
        for name in self.programs:
            if not self.autoload(name):
                continue
            info = ffi.new("struct bpf_prog_info *")
            size = ffi.new("__u32 *", ffi.sizeof("struct bpf_prog_info"))
            errors.check(f"info of program {name!r}",
                         lib.bpf_prog_get_info_by_fd(self._program_fd(name), info, size))
            out[name] = int(info.verified_insns)
        return out

    def run(self, name: str, ctx: bytes) -> int:
        """Run a loaded SEC("syscall") program once with `ctx` as its context; its return value."""
        opts = ffi.new("struct bpf_test_run_opts *")
        opts.sz = ffi.sizeof("struct bpf_test_run_opts")
        buf = ffi.from_buffer(ctx)
        opts.ctx_in = buf
        opts.ctx_size_in = len(ctx)
        errors.check(f"run of program {name!r}",
                     lib.bpf_prog_test_run_opts(self._program_fd(name), opts))
        return int(opts.retval)

    # -- load / attach ----------------------------------------------------------
    @property
    def kernel_log(self) -> str:
        if self._log == ffi.NULL:
            return ""
        return ffi.string(self._log).decode("utf-8", "replace")

    def load(self) -> None:
        """Load into the kernel. A verifier rejection raises VerifierError with its log."""
        if self._log != ffi.NULL:
            self._log[0] = b"\0"
        errors.call(f"load of BPF object {self.path}", lib.bpf_object__load, self._live(),
                    verifier_log=lambda: self.kernel_log)
        self.loaded = True

    def attach_struct_ops(self, map_name: str) -> Link:
        m = self.map(map_name)
        ptr = errors.call(f"attach of struct_ops map {map_name!r}",
                          lib.bpf_map__attach_struct_ops, m._ptr)
        link = Link(ptr, self, f"struct_ops link of {map_name!r}")
        self._links.append(link)
        return link

    # -- lifetime ---------------------------------------------------------------
    def _release(self) -> None:
        """Close links, then maps, then the object."""
        for link in reversed(self._links):
            link.close()
        self._links.clear()
        for m in self._maps.values():
            m.close()
        self._maps.clear()
        ptr, self._ptr = self._ptr, None
        ffi.release(ptr)  # runs bpf_object__close exactly once
        self._keep.clear()
