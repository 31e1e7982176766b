"""scx_slo.loader.btf: parse .BTF/.BTF.ext/kernel BTF, cross-checked against bpftool; layouts."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from fixtures import objects as O
from scx_slo.loader.btf import Btf, BtfError, BtfExt, Kind

pytestmark = pytest.mark.skipif(not O.have_clang(), reason="needs clang-19 for fixtures")
KERNEL_BTF = Path("/sys/kernel/btf/vmlinux")


@pytest.fixture(scope="module")
def obj(tmp_path_factory) -> Path:
    return O.scheduler_object(tmp_path_factory.mktemp("btf"))


@pytest.fixture(scope="module")
def btf(obj) -> Btf:
    return Btf(O.section_data(obj, ".BTF"))


def _bpftool_types(path: Path) -> list[dict]:
    if shutil.which("bpftool") is None:
        pytest.skip("bpftool not installed")
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["types"]


def _name(t) -> str:
    return t.name or "(anon)"


def test_every_type_matches_bpftool(obj, btf):
    theirs = _bpftool_types(obj)
    assert len(theirs) == len(btf) - 1
    for ref in theirs:
        t = btf.type(ref["id"])
        assert t.kind.name == ref["kind"] and _name(t) == ref["name"], ref
        if "size" in ref and ref["kind"] != "DATASEC":
            assert t.size == ref["size"], ref
        if "type_id" in ref and ref["kind"] != "ARRAY":
            assert t.ref == ref["type_id"], ref
        if ref["kind"] in ("STRUCT", "UNION"):
            assert [(m.name or "(anon)", m.type_id, m.bit_offset, m.bitfield_size)
                    for m in t.members] == \
                   [(m["name"], m["type_id"], m["bits_offset"], m.get("bitfield_size", 0))
                    for m in ref["members"]], ref
        elif ref["kind"] in ("ENUM", "ENUM64"):
            assert t.data == {v["name"]: v["val"] for v in ref["values"]}, ref
        elif ref["kind"] == "ARRAY":
            assert t.data == (ref["type_id"], ref["index_type_id"], ref["nr_elems"])
        elif ref["kind"] == "FUNC_PROTO":
            assert [(p.name or "(anon)", p.type_id) for p in t.data] == \
                   [(p["name"], p["type_id"]) for p in ref["params"]]
        elif ref["kind"] == "DATASEC":
            assert [(v.type_id, v.offset, v.size) for v in t.data] == \
                   [(v["type_id"], v["offset"], v["size"]) for v in ref["vars"]]
        elif ref["kind"] == "INT":
            assert t.data[2] == ref["nr_bits"] and t.data[1] == ref["bits_offset"]


@pytest.mark.skipif(not KERNEL_BTF.exists(), reason="no kernel BTF")
def test_kernel_btf_matches_bpftool_on_type_count_and_names():
    k = Btf.from_file(KERNEL_BTF)
    theirs = _bpftool_types(KERNEL_BTF)
    assert len(theirs) == len(k) - 1
    for ref in theirs[:: max(1, len(theirs) // 2000)]:  # a spread sample
        t = k.type(ref["id"])
        assert (t.kind.name, _name(t)) == (ref["kind"], ref["name"])
    task = k.get("task_struct", Kind.STRUCT)
    assert task.member("pid").offset > 0
    assert k.enum_value("bpf_map_type", "BPF_MAP_TYPE_HASH") == 1


def test_datasec_offsets_come_from_the_symbol_table(obj, btf):
    from elftools.elf.elffile import ELFFile
    with open(obj, "rb") as f:
        elf = ELFFile(f)
        syms = {s.name: (s["st_value"], s["st_size"])
                for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name}
        rodata_size = elf.get_section_by_name(".rodata")["sh_size"]
    raw = btf.datasec_vars(".rodata")
    fixed = btf.datasec_vars(".rodata", syms)
    # clang leaves the offsets at 0 in the .o ...
    assert {off for _v, off, _s in raw.values()} == {0}
    # ... the symbol table places each variable, without overlap, inside .rodata.
    spans = sorted((off, off + size) for _v, off, size in fixed.values())
    assert all(a_end <= b for (_a, a_end), (b, _b_end) in zip(spans, spans[1:]))
    assert spans[-1][1] <= rodata_size
    for name, (var, off, size) in fixed.items():
        assert (off, size) == syms[name] and size == btf.size_of(var.ref)


def test_btf_ext_names_the_program_sections(obj, btf):
    from elftools.elf.elffile import ELFFile
    ext = BtfExt.parse(O.section_data(obj, ".BTF.ext"), btf)
    with open(obj, "rb") as f:
        code = {s.name for s in ELFFile(f).iter_sections() if s["sh_flags"] & 0x4 and s["sh_size"]}
    assert ext.func_info and set(ext.func_info) == code
    for records in ext.func_info.values():
        for _insn, type_id in records:
            assert btf.type(type_id).kind == Kind.FUNC
    assert ext.line_info.keys() == ext.func_info.keys()


def test_layouts_follow_the_c_structs(btf):
    cfg = btf.layout("slo_class_cfg")
    assert cfg.size == 32
    assert [cfg.offset_of(f) for f in cfg.fields] == [(0, 8), (8, 8), (16, 4), (20, 4), (24, 8)]
    value = {"budget_ns": 2_000_000, "slice_ns": 0, "latency_critical": 1, "weight": 100,
             "miss_threshold_ns": 3_000_000}
    packed = cfg.pack(value)
    assert packed == struct.pack("<QQIIQ", 2_000_000, 0, 1, 100, 3_000_000)
    assert cfg.unpack(packed) == value
    ex = btf.layout("slo_exit_info")
    rec = ex.unpack(ex.pack({"kind": -1, "exit_code": 5, "reason": "watchdog", "msg": "x" * 10}))
    assert rec == {"kind": -1, "exit_code": 5, "reason": "watchdog", "msg": "x" * 10}


def test_layout_refuses_wrong_values(btf):
    entry = btf.layout("slo_class_entry")
    with pytest.raises(KeyError, match="no member"):
        entry.pack({"klass": 1})
    with pytest.raises(ValueError, match="outside"):
        entry.pack({"class_id": -1})
    with pytest.raises(TypeError, match="expected an integer"):
        entry.pack({"class_id": "one"})
    with pytest.raises(ValueError, match="do not fit"):
        btf.layout("slo_exit_info").pack({"reason": "r" * 200})


@settings(max_examples=60, deadline=None)
@given(values=st.fixed_dictionaries({
    "budget_ns": st.integers(0, 2**64 - 1), "slice_ns": st.integers(0, 2**64 - 1),
    "latency_critical": st.integers(0, 2**32 - 1), "weight": st.integers(0, 2**32 - 1),
    "miss_threshold_ns": st.integers(0, 2**64 - 1)}))
def test_layout_roundtrip(btf, values):
    cfg = btf.layout("slo_class_cfg")
    assert cfg.unpack(cfg.pack(values)) == values


def test_bad_btf_headers(btf, obj):
    data = O.section_data(obj, ".BTF")
    with pytest.raises(BtfError, match="shorter than its header"):
        Btf(data[:10])
    with pytest.raises(BtfError, match="bad BTF magic"):
        Btf(b"\0\0" + data[2:])
    with pytest.raises(BtfError, match="big-endian"):
        Btf(b"\xeb\x9f" + data[2:])
    with pytest.raises(BtfError, match="run past the end"):
        Btf(data[: len(data) - 100])


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_damaged_btf_raises_only_btf_error(obj, data):
    raw = bytearray(O.section_data(obj, ".BTF"))
    cut = data.draw(st.integers(0, len(raw)))
    flips = data.draw(st.lists(st.tuples(st.integers(0, len(raw) - 1), st.integers(0, 255)),
                               max_size=4))
    for pos, val in flips:
        raw[pos] = val
    try:
        b = Btf(bytes(raw[:cut]))
    except BtfError:
        return
    try:  # decoding what parsed may find more damage, reported the same way
        for t in b.types():
            assert isinstance(t.kind, Kind)
    except BtfError:
        pass
