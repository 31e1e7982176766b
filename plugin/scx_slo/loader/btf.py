"""A reader for BTF (.BTF, .BTF.ext, and raw kernel BTF such as /sys/kernel/btf/vmlinux).

Written from the format (Documentation/bpf/btf.rst): a header, a type section
of `struct btf_type` records each followed by kind-specific data, and a string
section. Types are indexed on parse (one pass over the records) and decoded
on demand, so a 5 MB vmlinux BTF parses quickly.

Also here: `Layout`, which packs and unpacks Python values to the bytes of a
BTF-described C type (structs, arrays, integers, enums, char arrays), so map
keys and values are never described twice.

Note: in a .o file clang leaves DATASEC sizes and VAR offsets at 0 (libbpf
fixes them up from the ELF symbol table at open); `Btf.datasec_vars()` takes
the symbol table for that reason.
"""
from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from scx_slo.errors import ScxSloError

BTF_MAGIC = 0xEB9F


class BtfError(ScxSloError):
    """BTF data that cannot be parsed."""


class Kind(enum.IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Bytes following `struct btf_type` for each kind: (fixed, per vlen entry).
_EXTRA = {
    Kind.INT: (4, 0), Kind.ARRAY: (12, 0), Kind.STRUCT: (0, 12), Kind.UNION: (0, 12),
    Kind.ENUM: (0, 8), Kind.FUNC_PROTO: (0, 8), Kind.VAR: (4, 0), Kind.DATASEC: (0, 12),
    Kind.DECL_TAG: (4, 0), Kind.ENUM64: (0, 12),
}
_EXTRA_TABLE = [_EXTRA.get(k, (0, 0)) if k in Kind._value2member_map_ else None
                for k in range(32)]

# Kinds whose `size_or_type` field is a size; for the others it is a type id.
_SIZED = frozenset({Kind.INT, Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.DATASEC,
                    Kind.FLOAT, Kind.ENUM64})
# Kinds that only qualify or rename another type.
_MODIFIERS = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT,
                        Kind.TYPE_TAG})

INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4
MAX_NESTING = 32     # struct/array nesting the gate and layouts accept

FUNC_LINKAGE = {0: "static", 1: "global", 2: "extern"}
VAR_LINKAGE = {0: "static", 1: "global", 2: "extern"}

_HDR = struct.Struct("<HBBIIIII")
_TYPE = struct.Struct("<III")


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int = 0

    @property
    def offset(self) -> int:
        """Byte offset (of the containing storage unit for a bitfield)."""
        return self.bit_offset // 8


@dataclass(frozen=True)
class Param:
    name: str
    type_id: int


@dataclass(frozen=True)
class SecInfo:
    type_id: int
    offset: int
    size: int


@dataclass(frozen=True)
class Type:
    """One decoded BTF type. `data` holds the kind-specific part."""
    id: int
    kind: Kind
    name: str
    kind_flag: bool
    vlen: int
    size: int | None          # for sized kinds
    ref: int | None           # referenced type id for the others
    data: Any = None          # INT: (encoding, bit offset, bits); ARRAY: (elem, index, n);
                              # STRUCT/UNION: [Member]; ENUM/ENUM64: {name: value};
                              # FUNC_PROTO: [Param]; VAR: linkage; DATASEC: [SecInfo];
                              # DECL_TAG: component index; FUNC: linkage

    @property
    def members(self) -> list[Member]:
        if self.kind not in (Kind.STRUCT, Kind.UNION):
            raise BtfError(f"BTF type [{self.id}] {self.name!r} is a {self.kind.name}, not a struct")
        return self.data

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise BtfError(f"{self.kind.name.lower()} {self.name!r} has no member {name!r}")


class Btf:
    """Parsed BTF: `types[0]` is void; ids index `type()`."""

    def __init__(self, data: bytes, *, source: str = "<bytes>"):
        self.source = source
        self._data = data = bytes(data)
        if len(data) < _HDR.size:
            raise BtfError(f"{source}: BTF is {len(data)} bytes, shorter than its header")
        magic, version, flags, hdr_len, type_off, type_len, str_off, str_len = \
            _HDR.unpack_from(data, 0)
        if magic != BTF_MAGIC:
            if magic == 0x9FEB:
                raise BtfError(f"{source}: big-endian BTF is not supported")
            raise BtfError(f"{source}: bad BTF magic 0x{magic:04x} (want 0x{BTF_MAGIC:04x})")
        if version != 1:
            raise BtfError(f"{source}: unsupported BTF version {version}")
        if hdr_len < 24 or hdr_len > len(data):
            raise BtfError(f"{source}: bad BTF header length {hdr_len}")
        t0, s0 = hdr_len + type_off, hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data) or type_off % 4:
            raise BtfError(f"{source}: BTF sections run past the end of the data "
                           f"({len(data)} bytes)")
        if type_off + type_len > str_off:
            raise BtfError(f"{source}: BTF type data ({type_off} + {type_len}) overlaps the "
                           f"strings at {str_off}")
        self.flags = flags
        self._strs = data[s0:s0 + str_len]
        if not str_len or self._strs[-1:] != b"\0" or self._strs[:1] != b"\0":
            raise BtfError(f"{source}: BTF string section must start and end with NUL")
        self._index_types(t0, t0 + type_len)
        self._cache: dict[int, Type] = {}

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> "Btf":
        """Raw BTF, e.g. /sys/kernel/btf/vmlinux."""
        path = Path(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BtfError(f"{path}: cannot read BTF: {exc.strerror}") from exc
        return cls(data, source=str(path))

    def _index_types(self, start: int, end: int) -> None:
        # One pass over the type records as u32 words: record where each type
        # starts and which string names it (names are decoded only when asked).
        if (end - start) % 4:
            raise BtfError(f"{self.source}: type section length is not a multiple of 4")
        words = memoryview(self._data)[start:end].cast("I")  # host order: x86 is little-endian
        table = [(e[0] // 4, e[1] // 4) if e is not None else None for e in _EXTRA_TABLE]
        offs = [0]
        by_name_off: dict[int, list[int]] = {}
        n, i, tid = len(words), 0, 1
        while i < n:
            if i + 3 > n:
                raise BtfError(f"{self.source}: type [{tid}] is truncated")
            name_off, info = words[i], words[i + 1]
            extra = table[(info >> 24) & 0x1F]
            if extra is None:
                raise BtfError(f"{self.source}: type [{tid}] has unknown kind "
                               f"{(info >> 24) & 0x1F}")
            offs.append(start + 4 * i)
            if name_off:
                ids = by_name_off.get(name_off)
                if ids is None:
                    by_name_off[name_off] = [tid]
                else:
                    ids.append(tid)
            i += 3 + extra[0] + extra[1] * (info & 0xFFFF)
            tid += 1
        if i != n:
            raise BtfError(f"{self.source}: type [{tid - 1}] is truncated")
        self._offs = offs
        self._by_name_off = by_name_off

    # -- strings ----------------------------------------------------------------------
    def string(self, off: int) -> str:
        if off >= len(self._strs):
            raise BtfError(f"{self.source}: string offset {off} outside the string section")
        end = self._strs.index(b"\0", off)
        return self._strs[off:end].decode("utf-8", "replace")

    # -- types ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._offs)

    def type(self, type_id: int) -> Type:
        t = self._cache.get(type_id)
        if t is None:
            t = self._decode(type_id)
            self._cache[type_id] = t
        return t

    def types(self) -> Iterable[Type]:
        return (self.type(i) for i in range(1, len(self._offs)))

    def _decode(self, tid: int) -> Type:
        if tid == 0:
            return Type(0, Kind.UNKN, "void", False, 0, 0, None)
        if not 0 < tid < len(self._offs):
            raise BtfError(f"{self.source}: no BTF type [{tid}] (have {len(self._offs) - 1})")
        data, pos = self._data, self._offs[tid]
        name_off, info, st = _TYPE.unpack_from(data, pos)
        kind = Kind((info >> 24) & 0x1F)
        vlen, kflag = info & 0xFFFF, bool(info >> 31)
        name = self.string(name_off) if name_off else ""
        p = pos + 12
        extra: Any = None
        if kind == Kind.INT:
            (enc,) = struct.unpack_from("<I", data, p)
            extra = ((enc >> 24) & 0xF, (enc >> 16) & 0xFF, enc & 0xFF)
        elif kind == Kind.ARRAY:
            extra = struct.unpack_from("<III", data, p)
        elif kind in (Kind.STRUCT, Kind.UNION):
            ms = []
            for i in range(vlen):
                mn, mt, mo = struct.unpack_from("<III", data, p + 12 * i)
                if kflag:
                    ms.append(Member(self.string(mn) if mn else "", mt, mo & 0xFFFFFF, mo >> 24))
                else:
                    ms.append(Member(self.string(mn) if mn else "", mt, mo))
            extra = ms
        elif kind == Kind.ENUM:
            fmt = "<Ii" if kflag else "<II"
            extra = {self.string(n): v for n, v in
                     (struct.unpack_from(fmt, data, p + 8 * i) for i in range(vlen))}
        elif kind == Kind.ENUM64:
            vals = {}
            for i in range(vlen):
                n, lo, hi = struct.unpack_from("<III", data, p + 12 * i)
                v = (hi << 32) | lo
                if kflag and v >= 1 << 63:
                    v -= 1 << 64
                vals[self.string(n)] = v
            extra = vals
        elif kind == Kind.FUNC_PROTO:
            extra = [Param(self.string(n) if n else "", t) for n, t in
                     (struct.unpack_from("<II", data, p + 8 * i) for i in range(vlen))]
        elif kind == Kind.VAR:
            (extra,) = struct.unpack_from("<I", data, p)
        elif kind == Kind.DATASEC:
            extra = [SecInfo(*struct.unpack_from("<III", data, p + 12 * i)) for i in range(vlen)]
        elif kind == Kind.DECL_TAG:
            (extra,) = struct.unpack_from("<i", data, p)
        elif kind == Kind.FUNC:
            extra = vlen  # linkage
        sized = kind in _SIZED
        return Type(tid, kind, name, kflag, vlen, st if sized else None,
                    None if sized else st, extra)

    # -- lookup ---------------------------------------------------------------------
    def _ids_named(self, name: str) -> list[int]:
        """Ids of the types named `name`: find the name in the string section, then
        the types pointing at it (no decoding of the other names)."""
        needle = name.encode() + b"\0"
        strs, ids, pos = self._strs, [], 0
        if strs.startswith(needle):
            ids += self._by_name_off.get(0, [])
        while True:
            pos = strs.find(b"\0" + needle, pos)
            if pos < 0:
                break
            ids += self._by_name_off.get(pos + 1, [])
            pos += 1
        return sorted(ids)

    def find_all(self, name: str, kind: Kind | None = None) -> list[Type]:
        ts = [self.type(i) for i in self._ids_named(name)]
        return [t for t in ts if kind is None or t.kind == kind]

    def find(self, name: str, kind: Kind | None = None) -> Type | None:
        """The first type named `name` (of `kind`), skipping forward declarations."""
        for t in self.find_all(name, kind):
            if t.kind != Kind.FWD or kind == Kind.FWD:
                return t
        return None

    def get(self, name: str, kind: Kind) -> Type:
        t = self.find(name, kind)
        if t is None:
            raise BtfError(f"{self.source}: no {kind.name.lower()} named {name!r} in BTF")
        return t

    def resolve(self, type_id: int) -> Type:
        """Follow typedefs and qualifiers to the underlying type."""
        t = self.type(type_id)
        for _ in range(64):
            if t.kind not in _MODIFIERS:
                return t
            t = self.type(t.ref)
        raise BtfError(f"{self.source}: type [{type_id}] has a modifier loop")

    def size_of(self, type_id: int, _depth: int = 0) -> int:
        if _depth > MAX_NESTING:
            raise BtfError(f"{self.source}: type [{type_id}] nests deeper than {MAX_NESTING} "
                           "levels (a type that contains itself?)")
        t = self.resolve(type_id)
        if t.kind == Kind.PTR:
            return 8
        if t.kind == Kind.ARRAY:
            elem, _index, n = t.data
            return self.size_of(elem, _depth + 1) * n
        if t.kind == Kind.VAR:
            return self.size_of(t.ref, _depth + 1)
        if t.size is None:
            raise BtfError(f"{self.source}: type [{t.id}] {t.kind.name} {t.name!r} has no size")
        return t.size

    def check_acyclic(self, type_id: int, heights: dict[int, int] | None = None) -> None:
        """Refuse a type that contains itself (through members, array elements, typedefs
        or qualifiers; pointers may point back) or nests deeper than MAX_NESTING.
        `heights` remembers how deep each type already checked nests, so checking every
        type of a BTF with one dict visits each type once."""
        heights = {} if heights is None else heights

        def visit(tid: int, path: tuple[int, ...]) -> int:
            height = heights.get(tid)
            if height is None:
                if tid in path:
                    chain = " -> ".join(f"[{i}]" for i in (*path, tid))
                    raise BtfError(f"{self.source}: type [{path[0]}] contains itself ({chain})")
                if len(path) > MAX_NESTING:
                    raise BtfError(f"{self.source}: type [{path[0]}] nests deeper than "
                                   f"{MAX_NESTING} levels")
                t = self.type(tid)
                if t.kind in (Kind.STRUCT, Kind.UNION):
                    children = [m.type_id for m in t.data]
                elif t.kind == Kind.ARRAY:
                    children = [t.data[0]]
                elif t.kind in _MODIFIERS or t.kind == Kind.VAR:
                    children = [t.ref]
                else:
                    children = []
                height = 1 + max((visit(c, (*path, tid)) for c in children), default=0)
                heights[tid] = height
            if len(path) + height > MAX_NESTING + 1:
                raise BtfError(f"{self.source}: type [{path[0] if path else tid}] nests "
                               f"deeper than {MAX_NESTING} levels")
            return height
        visit(type_id, ())

    def validate(self) -> None:
        """Check every type as libbpf's btf_sanity_check() does before it uses a BTF:
        each name is a string of the section, each referenced type id exists, and a
        FUNC's type is a FUNC_PROTO."""
        nstr, ntypes = len(self._strs), len(self._offs)

        def name(off: int, what: str, tid: int) -> None:
            if off >= nstr:
                raise BtfError(f"{self.source}: type [{tid}]: invalid {what} "
                               f"(string offset {off})")

        def ref(rid: int, tid: int) -> None:
            if not 0 <= rid < ntypes:
                raise BtfError(f"{self.source}: type [{tid}]: invalid referenced type ID "
                               f"{rid}")

        data = self._data
        for tid in range(1, ntypes):
            pos = self._offs[tid]
            name_off, info, st = _TYPE.unpack_from(data, pos)
            kind, vlen, p = (info >> 24) & 0x1F, info & 0xFFFF, pos + 12
            name(name_off, "type name", tid)
            if kind in _MODIFIERS or kind in (Kind.PTR, Kind.VAR, Kind.DECL_TAG):
                ref(st, tid)
            elif kind == Kind.ARRAY:
                elem, index, _n = struct.unpack_from("<III", data, p)
                ref(elem, tid)
                ref(index, tid)
            elif kind in (Kind.STRUCT, Kind.UNION):
                for i in range(vlen):
                    mn, mt, _mo = struct.unpack_from("<III", data, p + 12 * i)
                    name(mn, "field name", tid)
                    ref(mt, tid)
            elif kind in (Kind.ENUM, Kind.ENUM64):
                step = 8 if kind == Kind.ENUM else 12
                for i in range(vlen):
                    name(struct.unpack_from("<I", data, p + step * i)[0], "enum name", tid)
            elif kind == Kind.FUNC:
                ref(st, tid)
                target_kind = (_TYPE.unpack_from(data, self._offs[st])[1] >> 24) & 0x1F \
                    if st else Kind.UNKN
                if target_kind != Kind.FUNC_PROTO:
                    raise BtfError(f"{self.source}: type [{tid}]: referenced type [{st}] is "
                                   f"not FUNC_PROTO")
            elif kind == Kind.FUNC_PROTO:
                ref(st, tid)
                for i in range(vlen):
                    pn, pt = struct.unpack_from("<II", data, p + 8 * i)
                    name(pn, "param name", tid)
                    ref(pt, tid)
            elif kind == Kind.DATASEC:
                for i in range(vlen):
                    ref(struct.unpack_from("<I", data, p + 12 * i)[0], tid)

    def enum_value(self, enum_name: str, value_name: str) -> int:
        for k in (Kind.ENUM, Kind.ENUM64):
            t = self.find(enum_name, k)
            if t is not None and value_name in t.data:
                return t.data[value_name]
        raise BtfError(f"{self.source}: no enumerator {value_name} in enum {enum_name}")

    def datasec_vars(self, section: str, symbols: Mapping[str, tuple[int, int]] | None = None
                     ) -> dict[str, tuple[Type, int, int]]:
        """Variables of DATASEC `section`: name -> (VAR type, offset, size).

        `symbols` (name -> (st_value, st_size) from the ELF symbol table) supplies the
        offsets and sizes that clang leaves at 0 in an unlinked object.
        """
        sec = self.find(section, Kind.DATASEC)
        if sec is None:
            return {}
        out = {}
        for si in sec.data:
            var = self.type(si.type_id)
            off, size = si.offset, si.size
            if symbols and var.name in symbols:
                off, sym_size = symbols[var.name]
                size = sym_size or size
            if not size and var.kind == Kind.VAR:
                size = self.size_of(var.ref)
            out[var.name] = (var, off, size)
        return out

    def layout(self, type_or_name: int | str) -> "Layout":
        """A packer for a type id, or for a struct/union/typedef found by name."""
        if isinstance(type_or_name, str):
            t = (self.find(type_or_name, Kind.STRUCT) or self.find(type_or_name, Kind.UNION)
                 or self.find(type_or_name, Kind.TYPEDEF) or self.find(type_or_name, Kind.INT))
            if t is None:
                raise BtfError(f"{self.source}: no type named {type_or_name!r}")
            return Layout(self, t.id)
        return Layout(self, type_or_name)


# --- .BTF.ext ------------------------------------------------------------------------
@dataclass
class BtfExt:
    """The func_info, line_info and CO-RE relocation records of .BTF.ext, per ELF section."""
    func_info: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    line_info: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)
    core_relos: dict[str, list[tuple[int, int, int, int]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: bytes, btf: Btf, *, source: str = ".BTF.ext") -> "BtfExt":
        data = bytes(data)
        if len(data) < 24:
            raise BtfError(f"{source}: {len(data)} bytes, shorter than its header")
        magic, version, flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"{source}: bad magic 0x{magic:04x}")
        if version != 1 or flags or hdr_len < 24 or hdr_len >= len(data):
            raise BtfError(f"{source}: bad header (version {version}, flags {flags}, "
                           f"length {hdr_len} of {len(data)})")
        fi_off, fi_len, li_off, li_len = struct.unpack_from("<IIII", data, 8)
        cr_off = cr_len = 0
        if hdr_len >= 32:
            cr_off, cr_len = struct.unpack_from("<II", data, 24)
        ext = cls()
        ext.func_info = _ext_section(data, hdr_len + fi_off, fi_len, "<II", btf, source, "func_info")
        ext.line_info = _ext_section(data, hdr_len + li_off, li_len, "<IIII", btf, source,
                                     "line_info")
        if cr_len:
            ext.core_relos = _ext_section(data, hdr_len + cr_off, cr_len, "<IIII", btf, source,
                                          "core_relo")
        return ext


def _ext_section(data: bytes, start: int, length: int, fmt: str, btf: Btf, source: str,
                 what: str) -> dict[str, list[tuple]]:
    """One info section, checked as libbpf's btf_ext_setup_info() checks it."""
    out: dict[str, list[tuple]] = {}
    if not length:
        return out
    if start % 4:
        raise BtfError(f"{source}: {what} is not aligned to 4 bytes")
    end = start + length
    if end > len(data):
        raise BtfError(f"{source}: {what} runs past the end")
    if length < 4:
        raise BtfError(f"{source}: {what} is {length} bytes, too short for its record size")
    rec = struct.Struct(fmt)
    (rec_size,) = struct.unpack_from("<I", data, start)
    if rec_size < rec.size or rec_size % 4:
        raise BtfError(f"{source}: {what} has invalid record size {rec_size}")
    pos = start + 4
    if pos == end:
        raise BtfError(f"{source}: {what} has no records")
    while pos < end:
        if pos + 8 > end:
            raise BtfError(f"{source}: {what} block header truncated")
        sec_off, num = struct.unpack_from("<II", data, pos)
        pos += 8
        if not num:
            raise BtfError(f"{source}: {what} block with no records")
        if pos + num * rec_size > end:
            raise BtfError(f"{source}: {what} records truncated")
        out.setdefault(btf.string(sec_off), []).extend(
            rec.unpack_from(data, pos + i * rec_size) for i in range(num))
        pos += num * rec_size
    return out


# --- Layout: Python values <-> bytes of a BTF type ---------------------------------------
class Layout:
    """Pack/unpack a C type described by BTF.

    struct/union -> dict of member name -> value; array -> list (char arrays -> str);
    integers, enums and pointers -> int; bool -> bool. Missing struct members pack as 0.
    """

    def __init__(self, btf: Btf, type_id: int):
        btf.check_acyclic(type_id)      # so that packing and unpacking cannot recurse forever
        self.btf = btf
        self.type_id = type_id
        self.type = btf.resolve(type_id)
        self.name = btf.type(type_id).name or self.type.name or f"[{type_id}]"
        self.size = btf.size_of(type_id)

    def __repr__(self) -> str:
        return f"<Layout {self.name} {self.size} bytes>"

    @property
    def fields(self) -> list[str]:
        return [m.name for m in self.type.members] if self.type.kind in (Kind.STRUCT, Kind.UNION) \
            else []

    def offset_of(self, member: str) -> tuple[int, int]:
        """(byte offset, size) of a struct member."""
        m = self.type.member(member)
        return m.offset, self.btf.size_of(m.type_id)

    def unpack(self, raw: bytes) -> Any:
        if len(raw) < self.size:
            raise ValueError(f"{self.name}: {len(raw)} bytes, need {self.size}")
        return self._get(self.type_id, memoryview(raw), 0)

    def pack(self, value: Any) -> bytes:
        buf = bytearray(self.size)
        self._put(self.type_id, buf, 0, value, self.name)
        return bytes(buf)

    def pack_into(self, buf, offset: int, value: Any) -> None:
        self._put(self.type_id, buf, offset, value, self.name)

    # -- internals ----------------------------------------------------------------------
    def _int_info(self, t: Type) -> tuple[int, bool]:
        if t.kind == Kind.INT:
            return t.size, bool(t.data[0] & INT_SIGNED)
        if t.kind in (Kind.ENUM, Kind.ENUM64):
            return t.size, t.kind_flag
        if t.kind == Kind.PTR:
            return 8, False
        raise BtfError(f"{self.btf.source}: cannot pack {t.kind.name} {t.name!r}")

    def _is_char(self, tid: int) -> bool:
        t = self.btf.resolve(tid)
        return t.kind == Kind.INT and t.size == 1 and (bool(t.data[0] & INT_CHAR)
                                                        or t.name in ("char", "signed char",
                                                                      "unsigned char"))

    def _get(self, tid: int, mv: memoryview, off: int) -> Any:
        t = self.btf.resolve(tid)
        if t.kind in (Kind.STRUCT, Kind.UNION):
            out = {}
            for m in t.data:
                if m.bitfield_size:
                    unit = int.from_bytes(mv[off:off + t.size], "little")
                    out[m.name] = (unit >> m.bit_offset) & ((1 << m.bitfield_size) - 1)
                elif m.name:
                    out[m.name] = self._get(m.type_id, mv, off + m.offset)
                else:  # anonymous struct/union: flatten
                    out.update(self._get(m.type_id, mv, off + m.offset))
            return out
        if t.kind == Kind.ARRAY:
            elem, _idx, n = t.data
            if self._is_char(elem):
                raw = bytes(mv[off:off + n])
                return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
            esz = self.btf.size_of(elem)
            return [self._get(elem, mv, off + i * esz) for i in range(n)]
        if t.kind == Kind.FLOAT:
            return struct.unpack_from({4: "<f", 8: "<d"}[t.size], mv, off)[0]
        size, signed = self._int_info(t)
        v = int.from_bytes(mv[off:off + size], "little", signed=signed)
        if t.kind == Kind.INT and t.data[0] & INT_BOOL:
            return bool(v)
        return v

    def _put(self, tid: int, buf, off: int, value: Any, path: str) -> None:
        t = self.btf.resolve(tid)
        if t.kind in (Kind.STRUCT, Kind.UNION):
            if not isinstance(value, Mapping):
                raise TypeError(f"{path}: expected a mapping for {t.kind.name.lower()} "
                                f"{t.name!r}, got {type(value).__name__}")
            names = {m.name for m in t.data}
            unknown = set(value) - names
            if unknown:
                raise KeyError(f"{path}: no member(s) {', '.join(sorted(unknown))} in "
                               f"{t.name or 'anonymous ' + t.kind.name.lower()}")
            for m in t.data:
                if m.name not in value:
                    continue
                if m.bitfield_size:
                    width = t.size
                    unit = int.from_bytes(buf[off:off + width], "little")
                    mask = ((1 << m.bitfield_size) - 1) << m.bit_offset
                    unit = (unit & ~mask) | ((int(value[m.name]) << m.bit_offset) & mask)
                    buf[off:off + width] = unit.to_bytes(width, "little")
                else:
                    self._put(m.type_id, buf, off + m.offset, value[m.name], f"{path}.{m.name}")
            return
        if t.kind == Kind.ARRAY:
            elem, _idx, n = t.data
            if self._is_char(elem) and isinstance(value, (str, bytes)):
                raw = value.encode() if isinstance(value, str) else value
                if len(raw) > n:
                    raise ValueError(f"{path}: {len(raw)} bytes do not fit char[{n}]")
                buf[off:off + n] = raw.ljust(n, b"\0")
                return
            value = list(value)
            if len(value) > n:
                raise ValueError(f"{path}: {len(value)} elements do not fit [{n}]")
            esz = self.btf.size_of(elem)
            for i, v in enumerate(value):
                self._put(elem, buf, off + i * esz, v, f"{path}[{i}]")
            return
        if t.kind == Kind.FLOAT:
            struct.pack_into({4: "<f", 8: "<d"}[t.size], buf, off, float(value))
            return
        size, signed = self._int_info(t)
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, bool) and t.kind == Kind.INT:
                value = int(value)
            else:
                raise TypeError(f"{path}: expected an integer for {t.name or t.kind.name}, "
                                f"got {type(value).__name__}")
        try:
            buf[off:off + size] = value.to_bytes(size, "little", signed=signed)
        except OverflowError:
            lo, hi = (-(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1) if signed \
                else (0, (1 << (8 * size)) - 1)
            raise ValueError(f"{path}: {value} outside {t.name or 'integer'} range "
                             f"[{lo}, {hi}]") from None
