"""The libbpf binding on the host: open and inspect without loading the scheduler,
tunables and struct_ops fields before load, error mapping, maps on a small object
the host kernel can load, lifetimes."""
from __future__ import annotations

import io
import logging
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from fixtures import objects as O
from scx_slo.loader import gate, libbpf
from scx_slo.loader.btf import Btf
from scx_slo.loader.scheduler import Scheduler, SchedulerError

pytestmark = pytest.mark.skipif(not O.have_clang(), reason="needs clang-19 for fixtures")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("binding")


@pytest.fixture(scope="module")
def sched_obj(work):
    return O.scheduler_object(work)


# -- version --------------------------------------------------------------------------
def test_version_is_at_least_1_4():
    assert libbpf.version() >= (1, 4)
    assert libbpf.version_string().startswith("v1.")


def test_old_libbpf_is_refused_with_a_clear_message():
    with pytest.raises(ImportError, match=r"libbpf 1\.1\.2 is too old.*>= 1\.4"):
        libbpf.check_version((1, 1), "1.1.2")
    libbpf.check_version((1, 4), "1.4.0")  # accepted


# -- open and inspect without load --------------------------------------------------------
def test_open_lists_maps_and_programs(sched_obj):
    with libbpf.BpfObject(sched_obj) as obj:
        maps = obj.maps
        btf = Btf(O.section_data(sched_obj, ".BTF"))
        for spec in gate.REQUIRED_MAPS:
            m = maps[spec.name]
            assert m.value_size == btf.layout(spec.value).size
            assert m.key_size == btf.layout(spec.key).size
        assert maps[gate.STRUCT_OPS_MAP].type == libbpf.lib.BPF_MAP_TYPE_STRUCT_OPS
        for ring in gate.RING_BUFFERS:
            assert maps[ring.name].type == libbpf.lib.BPF_MAP_TYPE_RINGBUF
            assert btf.layout(ring.record).size == 40
        assert maps["slo_stats"].percpu and not maps["slo_cgroups"].percpu
        elf = ELFFile(io.BytesIO(sched_obj.read_bytes()))
        prog_sections = {s.name for s in elf.iter_sections() if s.name.startswith("struct_ops")}
        assert set(obj.programs.values()) == prog_sections
        assert not obj.loaded


def test_rodata_initial_value_is_the_sections_bytes(sched_obj):
    with libbpf.BpfObject(sched_obj) as obj:
        assert bytes(obj.map(".rodata").initial_value()) == O.section_data(sched_obj, ".rodata")


def test_test_hooks_are_only_in_the_test_build(sched_obj, kbtf):
    """The installed objects: the shipped one has no stall canary; the test build
    of the same source has it as a signed tunable (set and read back)."""
    from scx_slo.dev import hooks_object_path

    with Scheduler.open(sched_obj, kernel_btf=kbtf) as s:
        assert "stall_canary_pid" not in s.tunables()
    with Scheduler.open(hooks_object_path(), kernel_btf=kbtf) as s:
        assert s.tunables()["stall_canary_pid"] == 0
        s.set_tunables(stall_canary_pid=-1)
        assert s.tunables()["stall_canary_pid"] == -1


def test_tunables_and_ops_before_load(sched_obj, kbtf):
    with Scheduler.open(sched_obj, kernel_btf=kbtf) as s:
        defaults = s.tunables()
        assert set(gate.REQUIRED_TUNABLES) <= set(defaults)
        s.set_tunables(slice_ns=3_000_000, batch_floor_pct=9, miss_frac_pct=77)
        after = s.tunables()
        assert after["slice_ns"] == 3_000_000 and after["batch_floor_pct"] == 9
        assert after["miss_frac_pct"] == 77
        assert after["lat_slice_ns"] == defaults["lat_slice_ns"]
        s.set_ops(timeout_ms=1234, flags=0, exit_dump_len=4096)
        ops = s.ops()
        assert ops == {"timeout_ms": 1234, "flags": 0, "exit_dump_len": 4096, "name": "scx_slo"}
        # The shadow is what libbpf will hand the kernel: read it through the map too.
        raw = bytes(s.obj.map(gate.STRUCT_OPS_MAP).initial_value())
        off, size = s.types.btf.layout("sched_ext_ops").offset_of("timeout_ms")
        assert int.from_bytes(raw[off:off + size], "little") == 1234


@pytest.mark.parametrize("kwargs, message", [
    ({"no_such_knob": 1}, "no such variable"),
    ({"batch_floor_pct": -1}, "outside"),        # u32
    ({"slice_ns": 1 << 64}, "outside"),          # u64
    ({"slice_ns": "fast"}, "expected an integer"),
])
def test_bad_tunables_are_refused(sched_obj, kbtf, kwargs, message):
    with Scheduler.open(sched_obj, kernel_btf=kbtf) as s:
        with pytest.raises(SchedulerError, match=message):
            s.set_tunables(**kwargs)


def test_only_known_ops_fields(sched_obj, kbtf):
    with Scheduler.open(sched_obj, kernel_btf=kbtf) as s:
        with pytest.raises(SchedulerError, match="cannot be set"):
            s.set_ops(name="other")


# -- errors -------------------------------------------------------------------------------
def test_missing_file_maps_to_not_found():
    with pytest.raises(libbpf.NotFound) as exc:
        libbpf.BpfObject("/nonexistent/scx.bpf.o")
    e = exc.value
    assert e.errno_name == "ENOENT" and "open of BPF object /nonexistent/scx.bpf.o" in e.operation
    assert any("/nonexistent/scx.bpf.o" in line for line in e.log_tail)


def test_garbage_maps_to_libbpf_format_error(tmp_path):
    bad = tmp_path / "bad.o"
    bad.write_bytes(b"not an ELF file" * 8)
    with pytest.raises(libbpf.LibbpfError) as exc:
        libbpf.BpfObject(bad)
    assert exc.value.errno_name == "LIBBPF_ERRNO__FORMAT"
    assert "not a proper ELF object" in str(exc.value)


def test_check_maps_both_conventions():
    assert libbpf.check("op", 3) == 3
    with pytest.raises(libbpf.Exists) as exc:
        libbpf.check("an update", -17)
    assert exc.value.errno_name == "EEXIST" and str(exc.value).startswith("an update: EEXIST")
    with pytest.raises(libbpf.LibbpfError):
        libbpf.check("a pointer", libbpf.ffi.NULL)


def test_libbpf_log_goes_to_python_logging(caplog):
    with caplog.at_level(logging.DEBUG, logger="scx_slo.loader.libbpf"):
        with pytest.raises(libbpf.NotFound):
            libbpf.BpfObject("/nonexistent/log.bpf.o")
    assert any(r.name == "scx_slo.loader.libbpf" and "log.bpf.o" in r.getMessage()
               for r in caplog.records)


def test_map_of_unloaded_object_has_no_fd(sched_obj):
    with libbpf.BpfObject(sched_obj) as obj:
        with pytest.raises(libbpf.LibbpfError, match="not loaded"):
            obj.map("slo_gen").lookup(bytes(4))


def test_unknown_map_is_not_found(sched_obj):
    with libbpf.BpfObject(sched_obj) as obj:
        with pytest.raises(libbpf.NotFound, match="no_such_map"):
            obj.map("no_such_map")


# -- lifetimes ----------------------------------------------------------------------------
def test_close_is_idempotent_and_closes_children(sched_obj):
    obj = libbpf.BpfObject(sched_obj)
    m = obj.map("slo_cgroups")
    obj.close()
    obj.close()
    assert obj.closed and m.closed
    with pytest.raises(libbpf.LibbpfError, match="closed"):
        m.lookup(bytes(8))
    with pytest.raises(libbpf.LibbpfError, match="closed"):
        obj.map("slo_cgroups")


# -- maps on the host kernel (BPF without sched_ext) ----------------------------------------
MAPS_SRC = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";
struct entry { u32 class_id; u32 flags; };
struct tstat { u64 hist[4]; u64 count; s32 last; char tag[12]; };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64);
         __type(key, u64); __type(value, struct entry); } cgs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 4);
         __type(key, u32); __type(value, struct tstat); } stats SEC(".maps");
"""


@pytest.fixture(scope="module")
def maps_obj(work):
    src = work / "maps.bpf.c"
    src.write_text(MAPS_SRC)
    path = O.compile_bpf(src, work / "maps.bpf.o")
    try:
        obj = libbpf.BpfObject(path)
        obj.load()
    except libbpf.LibbpfError as exc:
        pytest.skip(f"this host cannot create BPF maps: {exc}")
    yield obj, Btf(O.section_data(path, ".BTF"))
    obj.close()


def test_hash_map_typed_roundtrip(maps_obj):
    obj, btf = maps_obj
    cgs = obj.map("cgs").typed(btf.layout("u64"), btf.layout("entry"))
    cgs.update(12345, {"class_id": 3})
    assert cgs.lookup(12345) == {"class_id": 3, "flags": 0}
    cgs.update(7, {"class_id": 1, "flags": 2})
    assert sorted(cgs.keys()) == [7, 12345]
    assert dict(cgs.items())[7] == {"class_id": 1, "flags": 2}
    assert cgs.delete(7) is True and cgs.delete(7) is False
    assert cgs.lookup(7) is None
    with pytest.raises(libbpf.Exists):
        cgs.update(12345, {"class_id": 4}, flags=libbpf.lib.BPF_NOEXIST)


def test_percpu_map_is_sized_by_possible_cpus(maps_obj):
    obj, btf = maps_obj
    m = obj.map("stats")
    n = libbpf.num_possible_cpus()
    assert m.percpu and m.ncpus == n
    assert m.value_buffer_size == ((m.value_size + 7) // 8 * 8) * n
    stats = m.typed(btf.layout("u32"), btf.layout("tstat"))
    values = [{"hist": [i, 0, 0, 1], "count": 10 * i, "last": -i, "tag": f"cpu{i}"}
              for i in range(n)]
    stats.update(2, values)
    got = stats.lookup(2)
    assert got == values
    assert stats.lookup(0) == [{"hist": [0] * 4, "count": 0, "last": 0, "tag": ""}] * n


def test_a_map_keeps_its_object_alive(maps_obj, work):
    import gc
    path = work / "maps.bpf.o"  # built by the maps_obj fixture's compile
    obj = libbpf.BpfObject(path)
    obj.load()
    m = obj.map("cgs")
    del obj
    gc.collect()
    key = (5).to_bytes(8, "little")
    m.update(key, bytes(8))
    assert m.lookup(key) == bytes(8)
    m._owner.close()
    assert m.closed


def test_layout_mismatch_is_refused(maps_obj):
    obj, btf = maps_obj
    with pytest.raises(ValueError, match="do not match"):
        obj.map("cgs").typed(btf.layout("u32"), btf.layout("entry"))


def test_wrong_key_size_is_refused(maps_obj):
    obj, _btf = maps_obj
    with pytest.raises(ValueError, match="key is 4 bytes, map wants 8"):
        obj.map("cgs").lookup(bytes(4))


@pytest.fixture
def bpffs(tmp_path):
    """A bpffs of the test's own (a pin needs one; the host's may not be mounted)."""
    mnt = tmp_path / "bpffs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "bpf", "bpf", str(mnt)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a bpffs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_pin_and_reopen(maps_obj, bpffs):
    obj, btf = maps_obj
    path = str(bpffs / "scx_slo_binding_test_cgs")
    m = obj.map("cgs")
    m.pin(path)
    try:
        with libbpf.PinnedMap(path) as pinned:
            assert (pinned.name, pinned.key_size, pinned.value_size) == ("cgs", 8, 8)
            m.update((99).to_bytes(8, "little"), bytes(8))
            assert pinned.lookup((99).to_bytes(8, "little")) == bytes(8)
    finally:
        libbpf.Map.unpin(path)
