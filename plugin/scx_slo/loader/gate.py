"""The ELF/BTF gate: checks a BPF scheduler object before anything reaches the kernel.

Each check has a name and reports pass, fail (with the reason) or skip (when a
check it depends on failed). pyelftools reads sections, symbols and
relocations; scx_slo.loader.btf reads the object's and the kernel's BTF. The loader
(scx_slo.loader.scheduler) runs the gate and refuses an object that fails it.

The maps the agent needs and the tunables it sets are listed once, here, by
name and C type; sizes are read from the object's BTF, map type values from
the target kernel's BTF (enum bpf_map_type).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from elftools.common.exceptions import ELFError, ELFParseError
from elftools.elf.elffile import ELFFile

from scx_slo import OPS_NAME
from scx_slo.loader import kfuncs
from scx_slo.loader.btf import Btf, BtfError, BtfExt, Kind, Layout
from scx_slo.errors import ScxSloError

DEFAULT_KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")

STRUCT_OPS_SECTION = ".struct_ops.link"
STRUCT_OPS_MAP = "scx_slo_ops"
STRUCT_OPS_TYPE = "sched_ext_ops"

# Strings the kernel's license_is_gpl_compatible() accepts.
GPL_COMPATIBLE = ("GPL", "GPL v2", "GPL and additional rights", "Dual BSD/GPL",
                  "Dual MIT/GPL", "Dual MPL/GPL")


@dataclass(frozen=True)
class MapSpec:
    """A map the agent uses: its kernel map type and the C types of key and value."""
    name: str
    map_type: str   # enumerator of the kernel's enum bpf_map_type
    key: str        # C type name in the object's BTF
    value: str


REQUIRED_MAPS: tuple[MapSpec, ...] = (
    MapSpec("slo_cgroups", "BPF_MAP_TYPE_HASH", "u64", "slo_class_entry"),
    MapSpec("slo_classes", "BPF_MAP_TYPE_ARRAY", "u32", "slo_class_cfg"),
    MapSpec("slo_gen", "BPF_MAP_TYPE_ARRAY", "u32", "u64"),
    MapSpec("slo_stats", "BPF_MAP_TYPE_PERCPU_ARRAY", "u32", "slo_class_stats"),
    MapSpec("slo_exit", "BPF_MAP_TYPE_ARRAY", "u32", "slo_exit_info"),
    MapSpec("slo_cg_bw", "BPF_MAP_TYPE_HASH", "u64", "slo_cg_bw"),
)
MAPS_BY_NAME = {m.name: m for m in REQUIRED_MAPS}


@dataclass(frozen=True)
class RingSpec:
    """A ring buffer the agent reads; each record is the C struct RECORD (in the BTF)."""
    name: str
    record: str


RING_BUFFERS: tuple[RingSpec, ...] = (RingSpec("slo_misses", "slo_miss"),)

# .rodata variables the agent sets before load.
REQUIRED_TUNABLES = ("slice_ns", "lat_slice_ns", "batch_floor_pct", "timeout_ms",
                     "miss_frac_pct")

# Callbacks newer than the oldest kernel we support: on a kernel without one the
# loader leaves it out (and says what that costs) instead of refusing the object.
OPTIONAL_CALLBACKS = {
    "cgroup_set_bandwidth": "cpu.max reaches the scheduler only from user space (the agent "
                            "reads cgroupfs into slo_cg_bw; bpftool alone leaves it "
                            "unenforced): sched_ext_ops.cgroup_set_bandwidth is new in Linux 6.17",
}

PASS, FAIL, SKIP = "pass", "fail", "skip"


class GateRefused(ScxSloError):
    """The object failed the gate; `report` lists every check."""

    def __init__(self, report: "Report"):
        self.report = report
        failed = "; ".join(f"{c.name}: {c.reason}" for c in report.failed)
        super().__init__(f"{report.path}: refused by the gate: {failed}")


@dataclass
class Check:
    name: str
    status: str
    reason: str

    @property
    def ok(self) -> bool:
        return self.status == PASS


@dataclass
class Report:
    path: str
    kernel_btf: str | None
    sha256: str | None = None
    size: int | None = None
    checks: list[Check] = field(default_factory=list)
    details: dict = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return all(c.status != FAIL for c in self.checks) and any(c.ok for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == FAIL]

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["accepted"] = self.accepted
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def render(self) -> str:
        lines = [f"{self.path}: {'accepted' if self.accepted else 'REFUSED'}"
                 + (f" (sha256 {self.sha256})" if self.sha256 else "")]
        width = max((len(c.name) for c in self.checks), default=0)
        for c in self.checks:
            lines.append(f"  {c.status.upper():4}  {c.name:<{width}}  {c.reason}")
        return "\n".join(lines)


class _Refusal(Exception):
    """Raised inside a check to fail it with a reason."""


_KBTF_CACHE: dict[tuple[str, int, int], Btf] = {}


def load_kernel_btf(path: str | Path = DEFAULT_KERNEL_BTF) -> Btf:
    """The kernel's BTF, parsed once per (path, size, mtime): a node's does not change."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise BtfError(f"{path}: cannot read BTF: {exc.strerror}") from exc
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _KBTF_CACHE:
        _KBTF_CACHE.clear()
        _KBTF_CACHE[key] = Btf.from_file(path)
    return _KBTF_CACHE[key]


class KernelFacts:
    """The answers the gate asks of a kernel's BTF, remembered across runs.

    Parsing a 5.5 MB vmlinux BTF costs a quarter of a second; a node's does not change
    while it runs. The answers (does a func/var exist, the members of a struct, an
    enumerator's value) are kept in a small JSON file keyed by the BTF's path, size
    and mtime, under $SCX_SLO_CACHE or ~/.cache/scx-slo; the BTF is parsed only for a
    question not answered before. An unwritable cache only costs the parse.
    """

    def __init__(self, path: Path):
        self.path = path
        st = path.stat()
        key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode())
        self._file = _facts_dir() / f"kernel-btf-{key.hexdigest()[:16]}.json"
        try:
            self._facts = json.loads(self._file.read_text())
        except (OSError, ValueError):
            self._facts = {}
        self._dirty = False

    def _ask(self, question: str, answer: Callable[[Btf], object]):
        if question not in self._facts:
            try:
                btf = load_kernel_btf(self.path)
            except BtfError as exc:
                raise _Refusal(f"kernel BTF unusable: {exc}") from None
            self._facts[question] = answer(btf)
            self._dirty = True
        return self._facts[question]

    def has(self, name: str, kind: Kind) -> bool:
        return self._ask(f"{kind.name}:{name}", lambda b: b.find(name, kind) is not None)

    def struct_members(self, name: str) -> list[str] | None:
        def members(b: Btf):
            t = b.find(name, Kind.STRUCT)
            return None if t is None else [m.name for m in t.members]
        return self._ask(f"members:{name}", members)

    def enum_value(self, enum: str, value: str) -> int | None:
        def lookup(b: Btf):
            try:
                return b.enum_value(enum, value)
            except BtfError:
                return None
        return self._ask(f"enum:{enum}:{value}", lookup)

    def save(self) -> None:
        if not self._dirty:
            return
        try:
            self._file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._facts, sort_keys=True))
            tmp.replace(self._file)
        except OSError:
            pass
        self._dirty = False


def _facts_dir() -> Path:
    base = os.environ.get("SCX_SLO_CACHE") or Path.home() / ".cache" / "scx-slo"
    return Path(base) / "gate"


class _Ctx:
    """What the checks learn about the object, shared between them."""

    def __init__(self, data: bytes, kernel_btf_path: Path | None):
        self.data = data
        self.kernel_btf_path = kernel_btf_path
        self.elf: ELFFile | None = None
        self.btf: Btf | None = None
        self.symbols: dict[str, object] = {}
        self._kbtf: KernelFacts | None = None
        self._kbtf_error: str | None = None

    def kernel_btf(self) -> KernelFacts:
        if self._kbtf is None and self._kbtf_error is None:
            if self.kernel_btf_path is None:
                self._kbtf_error = "no kernel BTF given"
            else:
                try:
                    self._kbtf = KernelFacts(self.kernel_btf_path)
                except OSError as exc:
                    self._kbtf_error = f"{self.kernel_btf_path}: cannot read BTF: {exc.strerror}"
        if self._kbtf is None:
            raise _Refusal(f"kernel BTF unusable: {self._kbtf_error}")
        return self._kbtf

    def section(self, name: str):
        return self.elf.get_section_by_name(name)

    def symbol_offsets(self) -> dict[str, tuple[int, int]]:
        return {n: (s["st_value"], s["st_size"]) for n, s in self.symbols.items()}


# --- the checks -------------------------------------------------------------------------
def _check_elf_header(ctx: _Ctx) -> str:
    data = ctx.data
    if not data:
        raise _Refusal("empty file (0 bytes)")
    if data[:4] != b"\x7fELF":
        raise _Refusal(f"not an ELF file (magic {data[:4]!r})")
    if len(data) < 64:
        raise _Refusal(f"truncated: {len(data)} bytes, an ELF64 header needs 64")
    ei_class, ei_data = data[4], data[5]
    if ei_class != 2:
        raise _Refusal(f"EI_CLASS={ei_class}: not ELF64")
    if ei_data != 1:
        raise _Refusal(f"EI_DATA={ei_data}: not little-endian (BPF for x86 is ELFDATA2LSB)")
    try:
        ctx.elf = ELFFile(io.BytesIO(data))
    except (ELFError, ELFParseError, ValueError) as exc:
        raise _Refusal(f"unreadable ELF header: {exc}") from None
    h = ctx.elf.header
    if h["e_machine"] != "EM_BPF":
        raise _Refusal(f"e_machine={h['e_machine']}, want EM_BPF")
    if h["e_type"] != "ET_REL":
        raise _Refusal(f"e_type={h['e_type']}, want ET_REL (an unlinked object)")
    return "ELF64, little-endian, EM_BPF, ET_REL"


def _check_elf_sections(ctx: _Ctx) -> str:
    elf, size = ctx.elf, len(ctx.data)
    h = elf.header
    shnum, shoff, shentsize = h["e_shnum"], h["e_shoff"], h["e_shentsize"]
    if shnum == 0:
        raise _Refusal("no section table")
    if shentsize != 64:
        raise _Refusal(f"e_shentsize={shentsize}, want 64")
    if shoff + shnum * shentsize > size:
        raise _Refusal(f"section table ({shnum} entries at {shoff}) runs past the end of the "
                       f"{size}-byte file (truncated?)")
    if not 0 < h["e_shstrndx"] < shnum:
        raise _Refusal(f"e_shstrndx={h['e_shstrndx']} outside the section table")
    names = set()
    for i, sec in enumerate(elf.iter_sections()):
        if sec["sh_type"] != "SHT_NOBITS" and sec["sh_offset"] + sec["sh_size"] > size:
            raise _Refusal(f"section [{i}] {sec.name!r} runs past the end of the file "
                           f"(truncated?)")
        names.add(sec.name)
    symtab = elf.get_section_by_name(".symtab")
    if symtab is None:
        raise _Refusal("no .symtab")
    for sym in symtab.iter_symbols():
        if sym.name:
            ctx.symbols.setdefault(sym.name, sym)
    return f"{shnum} sections, {len(ctx.symbols)} named symbols"


def _check_btf(ctx: _Ctx) -> str:
    sec = ctx.section(".BTF")
    if sec is None:
        raise _Refusal("no .BTF section (compile with clang -g)")
    try:
        ctx.btf = Btf(sec.data(), source=".BTF")
        ctx.btf.validate()
        heights: dict[int, int] = {}
        for t in ctx.btf.types():
            if t.kind in (Kind.STRUCT, Kind.UNION, Kind.ARRAY):
                ctx.btf.check_acyclic(t.id, heights)  # a type that contains itself has no size
        ext = ctx.section(".BTF.ext")
        nfunc = 0
        if ext is not None:
            e = BtfExt.parse(ext.data(), ctx.btf)
            nfunc = sum(len(v) for v in e.func_info.values())
    except BtfError as exc:
        raise _Refusal(str(exc)) from None
    return f"{len(ctx.btf) - 1} types" + (f", .BTF.ext with {nfunc} func_info" if ext else "")


# DATASECs whose variables are externs (ELF symbols without a section) rather than data.
EXTERN_SECTIONS = (".ksyms", ".kconfig")


def _check_symbols(ctx: _Ctx) -> str:
    """The ELF symbol table and BTF agree, as libbpf's open needs them to: every extern
    symbol has a BTF variable in .ksyms/.kconfig and every one of those a symbol; every
    variable of a data DATASEC (.maps, .rodata, .struct_ops.link, ...) is a symbol of
    the ELF section of the same name, inside it."""
    btf, elf = ctx.btf, ctx.elf
    externs = {n for n, sym in ctx.symbols.items()
               if sym["st_shndx"] == "SHN_UNDEF"
               and sym["st_info"]["bind"] in ("STB_GLOBAL", "STB_WEAK")}
    in_btf: set[str] = set()
    problems = []
    for t in btf.types():
        if t.kind != Kind.DATASEC:
            continue
        names = [btf.type(si.type_id).name for si in t.data]
        if t.name in EXTERN_SECTIONS:
            in_btf.update(names)
            continue
        sec = ctx.section(t.name)
        for name in names:
            sym = ctx.symbols.get(name)
            if sym is None:
                problems.append(f"BTF variable {name!r} of {t.name} has no ELF symbol")
            elif sec is None or sym["st_shndx"] != elf.get_section_index(t.name):
                problems.append(f"symbol {name!r} is not in section {t.name}")
            elif sym["st_value"] + sym["st_size"] > sec["sh_size"]:
                problems.append(f"symbol {name!r} runs past the end of {t.name}")
    problems += [f"extern {n!r} has no BTF in {' or '.join(EXTERN_SECTIONS)}"
                 for n in sorted(externs - in_btf)]
    problems += [f"BTF extern {n!r} has no ELF symbol" for n in sorted(in_btf - externs)]
    if problems:
        raise _Refusal("; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)"
                                                  if len(problems) > 5 else ""))
    return f"{len(externs)} externs and the data symbols match BTF"


def _check_libbpf_open(ctx: _Ctx) -> str:
    """libbpf itself opens the object (ELF, BTF, relocations; nothing reaches the kernel):
    what the checks above do not model, the loader's own parser decides."""
    from scx_slo.loader.libbpf import BpfObject, LibbpfError, version_string

    fd = os.memfd_create("scx-slo-gate")
    quiet = logging.getLogger("scx_slo.loader.libbpf")     # its lines go into the refusal instead
    was_disabled, quiet.disabled = quiet.disabled, True
    try:
        os.write(fd, ctx.data)
        try:
            with BpfObject(f"/proc/self/fd/{fd}", kernel_log_size=0) as obj:
                programs = len(obj.programs)
        except LibbpfError as exc:
            raise _Refusal(f"libbpf cannot open it: {exc.errno_name}: "
                           + " / ".join(line.strip() for line in exc.log_tail[-3:])) from None
    finally:
        quiet.disabled = was_disabled
        os.close(fd)
    return f"libbpf {version_string()} opens it ({programs} programs)"


def _check_license(ctx: _Ctx) -> str:
    sec = ctx.section("license")
    if sec is None:
        raise _Refusal("no 'license' section: sched_ext requires a GPL-compatible license")
    text = sec.data().split(b"\0", 1)[0].decode("utf-8", "replace")
    if text not in GPL_COMPATIBLE:
        raise _Refusal(f"license {text!r} is not GPL-compatible (sched_ext requires GPL)")
    return f"license {text!r}"


def _struct_ops_var(ctx: _Ctx):
    btf = ctx.btf
    vars_ = btf.datasec_vars(STRUCT_OPS_SECTION, ctx.symbol_offsets())
    return vars_


def _check_struct_ops(ctx: _Ctx) -> str:
    btf, elf = ctx.btf, ctx.elf
    sec = ctx.section(STRUCT_OPS_SECTION)
    if sec is None:
        legacy = ctx.section(".struct_ops")
        hint = (" (found legacy .struct_ops: scx_slo needs the link-based section)"
                if legacy is not None else "")
        raise _Refusal(f"no {STRUCT_OPS_SECTION} section{hint}")
    vars_ = _struct_ops_var(ctx)
    if len(vars_) != 1:
        raise _Refusal(f"{len(vars_)} maps in {STRUCT_OPS_SECTION}, want exactly one "
                       f"({', '.join(vars_) or 'none'})")
    (name, (var, off, size)), = vars_.items()
    if name != STRUCT_OPS_MAP:
        raise _Refusal(f"struct_ops map is {name!r}, want {STRUCT_OPS_MAP!r}")
    st = btf.resolve(var.ref)
    if st.kind != Kind.STRUCT or st.name != STRUCT_OPS_TYPE:
        raise _Refusal(f"{name} is {st.kind.name.lower()} {st.name!r}, want struct "
                       f"{STRUCT_OPS_TYPE}")
    data = sec.data()
    if off + st.size > len(data):
        raise _Refusal(f"{name} ({st.size} bytes at {off}) exceeds the section")
    ops_name = btf.layout(st.id).unpack(data[off:off + st.size]).get("name", "")
    if ops_name != OPS_NAME:
        raise _Refusal(f"ops name {ops_name!r}, want {OPS_NAME!r}")
    # Each callback slot is relocated to a program: check those programs exist.
    by_offset = {m.offset: m for m in st.members}
    callbacks = {}
    relsec = ctx.section(".rel" + STRUCT_OPS_SECTION)
    if relsec is None:
        raise _Refusal(f"{name} sets no callbacks (no .rel{STRUCT_OPS_SECTION})")
    symtab = elf.get_section(relsec["sh_link"])
    for rel in relsec.iter_relocations():
        slot = rel["r_offset"] - off
        member = by_offset.get(slot)
        if member is None:
            raise _Refusal(f"relocation at offset {slot} of {name} is not a member boundary")
        mt = btf.resolve(member.type_id)
        target = btf.resolve(mt.ref) if mt.kind == Kind.PTR else None
        if target is None or target.kind != Kind.FUNC_PROTO:
            raise _Refusal(f"relocation on {STRUCT_OPS_TYPE}.{member.name}, which is not a "
                           f"callback")
        sym = symtab.get_symbol(rel["r_info_sym"])
        if sym is None or sym["st_info"]["type"] != "STT_FUNC" or \
                not isinstance(sym["st_shndx"], int):
            raise _Refusal(f"{STRUCT_OPS_TYPE}.{member.name} points to "
                           f"{sym.name if sym else '?'!r}, which is not a program in the object")
        psec = elf.get_section(sym["st_shndx"])
        if not (psec["sh_flags"] & 0x4) or sym["st_value"] + sym["st_size"] > psec["sh_size"]:
            raise _Refusal(f"{STRUCT_OPS_TYPE}.{member.name} -> {sym.name}: not inside an "
                           f"executable section")
        if not psec.name.startswith(("struct_ops/", "struct_ops.s/")):
            raise _Refusal(f"{STRUCT_OPS_TYPE}.{member.name} -> {sym.name}: in section "
                           f"{psec.name!r}, which libbpf does not load as a struct_ops program")
        callbacks[member.name] = f"{psec.name}:{sym.name}"
    if not callbacks:
        raise _Refusal(f"{name} sets no callbacks")
    ctx.details_struct_ops = {"map": name, "ops_name": ops_name, "callbacks": callbacks}
    return f"{name}: struct {STRUCT_OPS_TYPE} {ops_name!r}, {len(callbacks)} callbacks " \
           f"relocated to programs"


def _map_defs(ctx: _Ctx) -> dict[str, dict]:
    """BTF-defined maps of .maps: name -> {type, max_entries, key_size, value_size, ...}."""
    btf = ctx.btf
    out = {}
    for name, (var, _off, _size) in btf.datasec_vars(".maps", ctx.symbol_offsets()).items():
        st = btf.resolve(var.ref)
        d: dict = {}
        if st.kind != Kind.STRUCT:
            continue
        for m in st.members:
            mt = btf.resolve(m.type_id)
            if mt.kind != Kind.PTR:
                continue
            target = btf.resolve(mt.ref)
            if m.name in ("type", "max_entries", "key_size", "value_size", "map_flags"):
                if target.kind == Kind.ARRAY:
                    d[m.name] = target.data[2]
            elif m.name in ("key", "value"):
                d[m.name + "_size"] = btf.size_of(mt.ref)
                d[m.name + "_type"] = btf.type(mt.ref).name or target.name
                d[m.name + "_type_id"] = mt.ref
        out[name] = d
    return out


def _defined_map(defs: dict, kbtf, name: str, map_type: str) -> tuple[dict | None, list[str]]:
    """NAME's definition in the object (None if it has none, or the kernel lacks MAP_TYPE)
    and what is wrong with its type."""
    d = defs.get(name)
    if d is None:
        return None, [f"{name} missing"]
    want = kbtf.enum_value("bpf_map_type", map_type)
    if want is None:
        return None, [f"kernel BTF lacks {map_type}"]
    if d.get("type") != want:
        return d, [f"{name} has map type {d.get('type')}, want {map_type} ({want})"]
    return d, []


def _layout_problems(btf, type_id: int, what: str) -> list[str]:
    """[] if every member of the type decodes, as the loader will decode it."""
    try:
        layout = Layout(btf, type_id)
        layout.unpack(bytes(layout.size))
    except BtfError as exc:
        return [f"{what} cannot be laid out: {exc}"]
    return []


def _check_maps(ctx: _Ctx) -> str:
    btf = ctx.btf
    defs = _map_defs(ctx)
    kbtf = ctx.kernel_btf()
    problems = []
    for spec in REQUIRED_MAPS:
        d, wrong = _defined_map(defs, kbtf, spec.name, spec.map_type)
        problems += wrong
        if d is None:
            continue
        for part, tname in (("key", spec.key), ("value", spec.value)):
            t = (btf.find(tname, Kind.STRUCT) or btf.find(tname, Kind.TYPEDEF)
                 or btf.find(tname, Kind.INT))
            if t is None:
                problems.append(f"object BTF has no type {tname!r} for {spec.name}'s {part}")
                continue
            want = btf.size_of(t.id)
            got = d.get(f"{part}_size")
            if got != want:
                problems.append(f"{spec.name} {part} size {got}, want {want} ({tname})")
            elif d.get(f"{part}_type") != tname:
                problems.append(f"{spec.name} {part} is {d.get(f'{part}_type')!r}, want {tname!r}")
            else:
                problems += _layout_problems(btf, d[f"{part}_type_id"],
                                             f"{spec.name} {part} ({tname})")
    for ring in RING_BUFFERS:
        d, wrong = _defined_map(defs, kbtf, ring.name, "BPF_MAP_TYPE_RINGBUF")
        problems += wrong
        if d is None:
            continue
        t = btf.find(ring.record, Kind.STRUCT)
        if t is None:
            problems.append(f"object BTF has no struct {ring.record!r} for {ring.name}'s records")
            continue
        problems += _layout_problems(btf, t.id, f"{ring.name} record ({ring.record})")
    if problems:
        raise _Refusal("; ".join(problems))
    ctx.details_maps = defs
    return (f"{len(REQUIRED_MAPS)} required maps with expected types and sizes, "
            f"{len(RING_BUFFERS)} ring buffer(s) with their record types")


def _check_tunables(ctx: _Ctx) -> str:
    vars_ = ctx.btf.datasec_vars(".rodata", ctx.symbol_offsets())
    missing = [t for t in REQUIRED_TUNABLES if t not in vars_]
    if missing:
        raise _Refusal(f".rodata lacks tunable(s) {', '.join(missing)}")
    return f"{len(REQUIRED_TUNABLES)} tunables in .rodata"


def _ksyms(ctx: _Ctx) -> dict[str, tuple[str, str, bool]]:
    """Object name -> (name as the kernel knows it, BTF kind, weak) of each extern ksym."""
    out = {}
    for name, (var, _o, _s) in ctx.btf.datasec_vars(".ksyms").items():
        sym = ctx.symbols.get(name)
        weak = sym is not None and sym["st_info"]["bind"] == "STB_WEAK"
        kname = name[:name.rindex("___")] if "___" in name else name  # libbpf flavours
        kind = "func" if var.kind == Kind.FUNC else "var"
        out[name] = (kname, kind, weak)
    return out


def _check_kfuncs(ctx: _Ctx) -> str:
    """Weakness is no guide (vmlinux.h declares every kfunc __weak): a kfunc the kernel
    lacks is allowed only if no call to it is reachable past its bpf_ksym_exists() guard."""
    kbtf = ctx.kernel_btf()
    ksyms = _ksyms(ctx)
    present = {name: kbtf.has(kname, Kind.FUNC if kind == "func" else Kind.VAR)
               for name, (kname, kind, _w) in ksyms.items()}
    strong = sorted({ksyms[n][0] for n, ok in present.items() if not ok and not ksyms[n][2]})
    if strong:
        raise _Refusal(f"not in kernel BTF {ctx.kernel_btf_path}: {', '.join(strong)}")
    called = kfuncs.missing_calls(ctx.elf, ksyms, present.__getitem__)
    if called:
        where: dict[str, list[str]] = {}
        for c in called:
            where.setdefault(ksyms[c.kfunc][0], []).append(c.function)
        raise _Refusal(f"kernel BTF {ctx.kernel_btf_path} lacks kfunc(s) the object calls "
                       f"without a bpf_ksym_exists() guard: "
                       + "; ".join(f"{k} (in {', '.join(sorted(set(fs)))})"
                                   for k, fs in sorted(where.items())))
    absent = sorted({ksyms[n][0] for n, ok in present.items() if not ok})
    extra = (f"; absent but only behind bpf_ksym_exists(): {', '.join(absent)}"
             if absent else "")
    return f"{sum(present.values())} ksyms found in kernel BTF{extra}"


def _check_kernel_struct_ops(ctx: _Ctx) -> str:
    kbtf = ctx.kernel_btf()
    members = kbtf.struct_members(STRUCT_OPS_TYPE)
    if members is None:
        raise _Refusal(f"kernel BTF {ctx.kernel_btf_path} has no struct {STRUCT_OPS_TYPE}: "
                       f"this kernel has no sched_ext")
    kernel_members = set(members)
    used = getattr(ctx, "details_struct_ops", {}).get("callbacks", {})
    absent = [m for m in used if m not in kernel_members]
    required = [m for m in absent if m not in OPTIONAL_CALLBACKS]
    if required:
        raise _Refusal(f"kernel's {STRUCT_OPS_TYPE} lacks callback(s) {', '.join(required)}")
    ctx.details_absent_callbacks = absent
    if absent:
        return (f"kernel has struct {STRUCT_OPS_TYPE} with {len(used) - len(absent)} of the "
                f"{len(used)} callbacks used; optional, absent (left out at load): "
                + "; ".join(f"{m} ({OPTIONAL_CALLBACKS[m]})" for m in absent))
    return f"kernel has struct {STRUCT_OPS_TYPE} with all {len(used)} callbacks used"


_CHECKS: list[tuple[str, tuple[str, ...], Callable[[_Ctx], str]]] = [
    ("elf.header", (), _check_elf_header),
    ("elf.sections", ("elf.header",), _check_elf_sections),
    ("btf", ("elf.sections",), _check_btf),
    ("license", ("elf.sections",), _check_license),
    ("struct_ops", ("btf",), _check_struct_ops),
    ("maps", ("btf",), _check_maps),
    ("tunables", ("btf",), _check_tunables),
    ("kernel.struct_ops", ("struct_ops",), _check_kernel_struct_ops),
    ("kfuncs", ("btf", "kernel.struct_ops"), _check_kfuncs),
    ("symbols", ("btf",), _check_symbols),
    ("libbpf.open", ("license", "struct_ops", "maps", "tunables", "symbols"),
     _check_libbpf_open),
]
CHECK_NAMES = tuple(n for n, _d, _f in _CHECKS) + ("sha256",)


def inspect_bytes(data: bytes, *, path: str = "<bytes>",
                  kernel_btf: str | Path | None = DEFAULT_KERNEL_BTF,
                  expect_sha256: str | None = None) -> Report:
    kpath = Path(kernel_btf) if kernel_btf is not None else None
    report = Report(path=path, kernel_btf=str(kpath) if kpath else None,
                    sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    ctx = _Ctx(data, kpath)
    status: dict[str, str] = {}
    for name, deps, fn in _CHECKS:
        blocked = [d for d in deps if status.get(d) != PASS]
        if blocked:
            status[name] = SKIP
            report.checks.append(Check(name, SKIP, f"needs {', '.join(blocked)}"))
            continue
        try:
            reason = fn(ctx)
            status[name] = PASS
        except _Refusal as exc:
            status[name], reason = FAIL, str(exc)
        except (ELFError, ELFParseError, BtfError, ValueError, KeyError, IndexError,
                TypeError, UnicodeDecodeError, AttributeError, OverflowError, struct.error,
                RecursionError) as exc:
            # Malformed input that slipped past the structural checks.
            status[name], reason = FAIL, f"malformed object: {type(exc).__name__}: {exc}"
        report.checks.append(Check(name, status[name], reason))
    if ctx._kbtf is not None:
        ctx._kbtf.save()
    if expect_sha256:
        want = expect_sha256.strip().lower()
        ok = want == report.sha256
        report.checks.append(Check("sha256", PASS if ok else FAIL,
                                   "matches the expected digest" if ok else
                                   f"sha256 {report.sha256} != expected {want}"))
    else:
        report.checks.append(Check("sha256", SKIP, "no expected digest given"))
    if hasattr(ctx, "details_struct_ops"):
        report.details["struct_ops"] = ctx.details_struct_ops
    if hasattr(ctx, "details_maps"):
        report.details["maps"] = ctx.details_maps
    if hasattr(ctx, "details_absent_callbacks"):
        report.details["absent_callbacks"] = ctx.details_absent_callbacks
    return report


def inspect(path: str | Path, *, kernel_btf: str | Path | None = DEFAULT_KERNEL_BTF,
            expect_sha256: str | None = None) -> Report:
    """Run every check on the object at `path`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        report = Report(path=str(path), kernel_btf=str(kernel_btf) if kernel_btf else None)
        report.checks.append(Check("elf.header", FAIL, f"cannot read: {exc.strerror}"))
        return report
    return inspect_bytes(data, path=str(path), kernel_btf=kernel_btf,
                         expect_sha256=expect_sha256)


def require(path: str | Path, **kwargs) -> Report:
    """inspect(), raising GateRefused (listing every failed check) unless accepted."""
    report = inspect(path, **kwargs)
    if not report.accepted:
        raise GateRefused(report)
    return report
