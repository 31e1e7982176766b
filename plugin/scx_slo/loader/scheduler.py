"""The scx_slo scheduler as one Python object: gate, open, tune, load, attach, pin, adopt.

    with Scheduler.open() as s:                  # runs the gate first
        s.set_tunables(slice_ns=5_000_000)       # .rodata, checked against BTF
        s.set_ops(timeout_ms=5000)               # struct_ops fields via libbpf's shadow
        s.load(); s.attach(); s.pin()
    ...
    with Scheduler.adopt() as s:                 # a later process: pinned link + maps
        s.set_cgroup_class(cgid, 1); s.stats()
        s.unpin(); s.detach()

Map keys and values are packed with layouts read from the object's BTF; the
required maps and their C types come from scx_slo.loader.gate.REQUIRED_MAPS.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

from scx_slo import default_object_path
from scx_slo.loader import gate
from scx_slo.loader.btf import Btf, Kind, Layout
from scx_slo.loader.topology import Topology
from scx_slo.errors import ScxSloError

DEFAULT_PIN_DIR = Path("/sys/fs/bpf/scx_slo")
LINK_PIN = "link"
OPS_FIELDS = ("timeout_ms", "flags", "exit_dump_len")
# Maps pinned only to keep them alive: the kernel frees a map's BPF timers once no
# user space reference (fd or pin) is left, and the scheduler outlives its loader.
KEEPALIVE_MAPS = ("slo_bw_timer", "slo_slice_timer")
# The maps the loader opens, pins and unpins by name: the required ones and the ring buffers.
OWN_MAPS = (*(spec.name for spec in gate.REQUIRED_MAPS), *(ring.name for ring in gate.RING_BUFFERS))


class SchedulerError(ScxSloError):
    """A scheduler operation was refused (bad tunable, wrong state, mismatched pins)."""


class ObjectTypes:
    """The BTF of a scheduler object with its ELF symbol offsets: layouts and variables."""

    def __init__(self, path: str | os.PathLike):
        with open(path, "rb") as f:
            elf = ELFFile(f)
            sec = elf.get_section_by_name(".BTF")
            if sec is None:
                raise SchedulerError(f"{path}: no .BTF section")
            self.btf = Btf(sec.data(), source=f"{path}:.BTF")
            self.symbols = {s.name: (s["st_value"], s["st_size"])
                            for s in elf.get_section_by_name(".symtab").iter_symbols() if s.name}

    def named(self, name: str) -> Layout:
        for kind in (Kind.STRUCT, Kind.UNION, Kind.TYPEDEF, Kind.INT):
            t = self.btf.find(name, kind)
            if t is not None:
                return Layout(self.btf, t.id)
        raise SchedulerError(f"object BTF has no type {name!r}")

    def map_layouts(self, spec: gate.MapSpec) -> tuple[Layout, Layout]:
        return self.named(spec.key), self.named(spec.value)

    def rodata(self) -> dict:
        return self.btf.datasec_vars(".rodata", self.symbols)

    def ops_struct(self):
        return self.btf.get(gate.STRUCT_OPS_TYPE, Kind.STRUCT)


class Scheduler:
    """The scheduler's kernel resources, created here or adopted from pins.

    Close order: link, maps, object. close() never detaches a pinned scheduler;
    detach() does.
    """

    def __init__(self, object_path: str | os.PathLike | None = None, *,
                 pin_dir: str | os.PathLike = DEFAULT_PIN_DIR):
        self.object_path = Path(object_path or default_object_path())
        self.pin_dir = Path(pin_dir)
        self.types = ObjectTypes(self.object_path)
        self.obj = None
        self.link = None
        self.maps: dict[str, Any] = {}
        self.report: gate.Report | None = None
        self.gaps: list[str] = []      # what this kernel cannot do with the object (left out)
        self._typed: dict[str, Any] = {}
        self._miss_layout: Layout | None = None
        self._topology_set = False

    # -- creation ---------------------------------------------------------------------
    @classmethod
    def open(cls, object_path: str | os.PathLike | None = None, *,
             kernel_btf: str | os.PathLike | None = gate.DEFAULT_KERNEL_BTF,
             expect_sha256: str | None = None, pin_dir: str | os.PathLike = DEFAULT_PIN_DIR,
             kernel_log_size: int | None = None) -> "Scheduler":
        """Gate the object (raising gate.GateRefused), then open it with libbpf."""
        from scx_slo.loader.libbpf import BpfObject
        from scx_slo.loader.libbpf.object import DEFAULT_LOG_SIZE

        path = Path(object_path or default_object_path())
        report = gate.require(path, kernel_btf=kernel_btf, expect_sha256=expect_sha256)
        self = cls(path, pin_dir=pin_dir)
        self.report = report
        self.obj = BpfObject(path, kernel_log_size=kernel_log_size or DEFAULT_LOG_SIZE)
        try:
            for member in report.details.get("absent_callbacks", []):
                self._leave_out(member)
        except BaseException:
            self.close()
            raise
        return self

    def _leave_out(self, member: str) -> None:
        """Drop an optional callback the kernel lacks: NULL in the struct_ops shadow
        (libbpf then skips the member) and its program not loaded."""
        prog = self.report.details["struct_ops"]["callbacks"][member].split(":", 1)[1]
        layout = Layout(self.types.btf, self.types.ops_struct().id)
        off, size = layout.offset_of(member)
        buf = self.obj.map(gate.STRUCT_OPS_MAP).initial_value()
        buf[off:off + size] = bytes(size)
        self.obj.set_autoload(prog, False)
        self.gaps.append(gate.OPTIONAL_CALLBACKS[member])

    @classmethod
    def adopt(cls, pin_dir: str | os.PathLike = DEFAULT_PIN_DIR,
              object_path: str | os.PathLike | None = None) -> "Scheduler":
        """Re-open a pinned scheduler's link and maps (a later process)."""
        from scx_slo.loader.libbpf import Link, PinnedMap, lib

        self = cls(object_path, pin_dir=pin_dir)
        try:
            self.link = Link.open_pinned(self.pin_dir / LINK_PIN)
            if self.link.info()["type"] != lib.BPF_LINK_TYPE_STRUCT_OPS:
                raise SchedulerError(f"pin {self.pin_dir / LINK_PIN} is not a struct_ops link")
            for spec in gate.REQUIRED_MAPS:
                m = PinnedMap(self.pin_dir / spec.name)
                self.maps[spec.name] = m
                if m.name != spec.name[:15]:
                    raise SchedulerError(f"pin {self.pin_dir / spec.name} holds map "
                                         f"{m.name!r}, not {spec.name!r}")
                self.typed(spec.name)  # checks sizes against the object's BTF
            for ring in gate.RING_BUFFERS:     # pins of an older build may lack one
                if (self.pin_dir / ring.name).exists():
                    self.maps[ring.name] = PinnedMap(self.pin_dir / ring.name)
        except BaseException:
            self.close()
            raise
        return self

    # -- before load ----------------------------------------------------------------------
    def _require_open(self):
        if self.obj is None or self.obj.closed:
            raise SchedulerError("no open BPF object (an adopted scheduler cannot be re-tuned)")
        if self.obj.loaded:
            raise SchedulerError("the object is loaded: tunables are read-only now")
        return self.obj

    def set_tunables(self, **values: int | list[int]) -> None:
        """Set .rodata variables (integers, arrays of them) by name; types, lengths and
        ranges are checked against BTF."""
        obj = self._require_open()
        variables = self.types.rodata()
        buf = obj.map(".rodata").initial_value()
        for name, value in values.items():
            if name not in variables:
                raise SchedulerError(f"tunable {name!r}: no such variable in .rodata "
                                     f"(have {', '.join(sorted(variables))})")
            var, off, size = variables[name]
            layout = Layout(self.types.btf, var.ref)
            kind = layout.type.kind
            if kind == Kind.ARRAY:
                kind = self.types.btf.resolve(layout.type.data[0]).kind
                if not isinstance(value, (list, tuple)):
                    raise SchedulerError(f"tunable {name!r} is an array: give a list")
            elif isinstance(value, (list, tuple)):
                raise SchedulerError(f"tunable {name!r} is a {kind.name}, not an array")
            if kind not in (Kind.INT, Kind.ENUM, Kind.ENUM64):
                raise SchedulerError(f"tunable {name!r} holds {kind.name}, not integers")
            try:
                packed = layout.pack(value)
            except (TypeError, ValueError) as exc:
                raise SchedulerError(f"tunable {name!r}: {exc}") from None
            if off + size > len(buf) or len(packed) != size:
                raise SchedulerError(f"tunable {name!r}: BTF and .rodata disagree "
                                     f"({size} bytes at {off}, section {len(buf)})")
            buf[off:off + size] = packed
        if "nr_llcs" in values:
            self._topology_set = True

    def tunables(self) -> dict[str, int]:
        """The current .rodata values (initial values before load)."""
        obj = self._require_open() if self.obj and not self.obj.loaded else self.obj
        if obj is None:
            raise SchedulerError("no open BPF object")
        buf = bytes(obj.map(".rodata").initial_value())
        return {name: Layout(self.types.btf, var.ref).unpack(buf[off:off + size])
                for name, (var, off, size) in self.types.rodata().items()}

    def set_ops(self, **fields: int) -> None:
        """Set sched_ext_ops fields (timeout_ms, flags, exit_dump_len) in libbpf's shadow."""
        obj = self._require_open()
        unknown = set(fields) - set(OPS_FIELDS)
        if unknown:
            raise SchedulerError(f"struct_ops field(s) {', '.join(sorted(unknown))} cannot be "
                                 f"set (allowed: {', '.join(OPS_FIELDS)})")
        ops = self.types.ops_struct()
        layout = Layout(self.types.btf, ops.id)
        buf = obj.map(gate.STRUCT_OPS_MAP).initial_value()
        if len(buf) != layout.size:
            raise SchedulerError(f"struct_ops shadow is {len(buf)} bytes, BTF says "
                                 f"{layout.size}")
        current = bytearray(buf)
        try:
            layout.pack_into(current, 0, {k: int(v) for k, v in fields.items()})
        except (TypeError, ValueError, KeyError) as exc:
            raise SchedulerError(f"struct_ops field: {exc}") from None
        for name in fields:
            off, size = layout.offset_of(name)
            buf[off:off + size] = bytes(current[off:off + size])

    def ops(self) -> dict[str, Any]:
        """timeout_ms/flags/exit_dump_len/name as in the struct_ops shadow."""
        if self.obj is None:
            raise SchedulerError("no open BPF object")
        layout = Layout(self.types.btf, self.types.ops_struct().id)
        values = layout.unpack(bytes(self.obj.map(gate.STRUCT_OPS_MAP).initial_value()))
        return {k: values[k] for k in (*OPS_FIELDS, "name") if k in values}

    # -- load / attach / pin --------------------------------------------------------------
    def set_topology(self, topo: Topology | None = None) -> None:
        """Tell the scheduler the CPU topology (by default this machine's, from sysfs)."""
        self.set_tunables(**(topo or Topology.read()).rodata())

    def load(self) -> None:
        """Load into the kernel (with this machine's topology unless set_topology() gave
        one, where the object takes one); a verifier rejection raises
        libbpf.VerifierError."""
        obj = self._require_open()
        if not self._topology_set and "nr_llcs" in self.types.rodata():
            self.set_topology()
        obj.load()
        for name in OWN_MAPS:
            self.maps[name] = obj.map(name)

    def verified_insns(self) -> dict[str, int]:
        """After load(): instructions the verifier processed, per program."""
        if self.obj is None or not self.obj.loaded:
            raise SchedulerError("load() before verified_insns()")
        return self.obj.verified_insns()

    def attach(self):
        if self.obj is None or not self.obj.loaded:
            raise SchedulerError("load() before attach()")
        if self.link is not None:
            raise SchedulerError("already attached")
        self.link = self.obj.attach_struct_ops(gate.STRUCT_OPS_MAP)
        return self.link

    def pin(self) -> None:
        """Pin the link, the required maps and the keep-alive maps under pin_dir (bpffs)."""
        if self.link is None:
            raise SchedulerError("attach() before pin()")
        self.pin_dir.mkdir(parents=True, exist_ok=True)
        self.link.pin(self.pin_dir / LINK_PIN)
        for name, m in self.maps.items():
            m.pin(self.pin_dir / name)
        for name in KEEPALIVE_MAPS:
            if name in self.obj.maps:
                self.obj.map(name).pin(self.pin_dir / name)

    def unpin(self) -> None:
        """Remove the pins (link and maps) and the pin directory."""
        from scx_slo.loader.libbpf import Map

        if self.link is not None and self.link.pin_path:
            self.link.unpin()
        else:
            Map.unpin(self.pin_dir / LINK_PIN)
        for name in (*OWN_MAPS, *KEEPALIVE_MAPS):
            Map.unpin(self.pin_dir / name)
        try:
            self.pin_dir.rmdir()
        except FileNotFoundError:
            pass
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise

    def detach(self) -> None:
        """Detach the scheduler in the kernel (for every holder of the link)."""
        if self.link is None:
            raise SchedulerError("not attached")
        self.link.detach()

    # -- maps -----------------------------------------------------------------------------
    def typed(self, name: str):
        """A required map with keys/values packed by the object's BTF layouts."""
        if name not in self._typed:
            if name not in self.maps:
                raise SchedulerError(f"map {name!r} is not available (load or adopt first)")
            key, value = self.types.map_layouts(gate.MAPS_BY_NAME[name])
            try:
                self._typed[name] = self.maps[name].typed(key, value)
            except ValueError as exc:
                raise SchedulerError(str(exc)) from None
        return self._typed[name]

    def set_cgroup_class(self, cgroup_id: int, class_id: int, flags: int = 0) -> None:
        self.typed("slo_cgroups").update(cgroup_id, {"class_id": class_id, "flags": flags})

    def cgroup_class(self, cgroup_id: int) -> dict | None:
        return self.typed("slo_cgroups").lookup(cgroup_id)

    def remove_cgroup(self, cgroup_id: int) -> bool:
        return self.typed("slo_cgroups").delete(cgroup_id)

    def set_class(self, class_id: int, cfg: dict) -> None:
        self.typed("slo_classes").update(class_id, cfg)

    def bump_generation(self) -> int:
        gen = self.typed("slo_gen")
        value = (gen.lookup(0) or 0) + 1
        gen.update(0, value)
        return value

    def stats(self, class_id: int, *, per_cpu: bool = False):
        """slo_class_stats of a class: summed over CPUs, or the per-CPU list."""
        values = self.typed("slo_stats").lookup(class_id)
        if values is None or per_cpu:
            return values
        return _sum_records(values)

    def miss_reader(self):
        """A RingBuffer over slo_misses (the caller closes it); decode with decode_miss()."""
        from scx_slo.loader.libbpf import RingBuffer

        if "slo_misses" not in self.maps:
            raise SchedulerError("map 'slo_misses' is not available (load or adopt a build "
                                 "that has it)")
        return RingBuffer(self.maps["slo_misses"])

    def decode_miss(self, raw: bytes) -> dict:
        """One slo_misses record (struct slo_miss, laid out by the object's BTF)."""
        if self._miss_layout is None:
            ring = next(r for r in gate.RING_BUFFERS if r.name == "slo_misses")
            self._miss_layout = self.types.named(ring.record)
        return self._miss_layout.unpack(raw[:self._miss_layout.size])

    def exit_info(self) -> dict | None:
        """The exit record the scheduler wrote in ops.exit (kind 0 = has not exited)."""
        return self.typed("slo_exit").lookup(0)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Release link, maps, then object (idempotent). Pins keep a pinned scheduler alive."""
        if self.link is not None:
            self.link.close()
            self.link = None
        for m in self.maps.values():
            m.close()
        self.maps.clear()
        self._typed.clear()
        if self.obj is not None:
            self.obj.close()
            self.obj = None

    def __enter__(self) -> "Scheduler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


VERIFIER_LIMIT = 1_000_000   # BPF_COMPLEXITY_LIMIT_INSNS: the verifier's budget per program


def trial_load(object_path: str | os.PathLike | None = None) -> dict[str, int]:
    """Gate and load the object without attaching it; verified instructions per program.

    Raises gate.GateRefused or libbpf.VerifierError (with the log) where the
    object cannot run on this kernel. Nothing stays loaded.
    """
    with Scheduler.open(object_path) as s:
        s.load()
        return s.verified_insns()


def _sum_records(records: list):
    first = records[0]
    if isinstance(first, dict):
        return {k: _sum_records([r[k] for r in records]) for k in first}
    if isinstance(first, list):
        return [_sum_records(list(col)) for col in zip(*records)]
    if isinstance(first, str):
        return first
    return sum(records)
