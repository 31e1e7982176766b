"""Hostile objects: hypothesis mutates the shipped scheduler object and the ELF/BTF gate
must answer with a report (accepted) or GateRefused, never another exception, never a
hang; `scx-slo inspect` must exit 0 or 1 without a traceback."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures import objects as O
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scx_slo.loader import gate
from scx_slo.loader.libbpf import BpfObject

from faults import mutate
from faults.conftest import TABLE, CaseTimeout, size, time_bound

pytestmark = [pytest.mark.faults,
              pytest.mark.skipif(not O.have_clang(), reason="needs clang-19 for the kernel BTF")]

CASE_SECONDS = 5.0


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gate-fuzz")


@pytest.fixture(scope="module")
def good(work) -> Path:
    return O.scheduler_object(work)


@pytest.fixture(scope="module")
def original(good, kbtf):
    data = good.read_bytes()
    assert gate.inspect_bytes(data, kernel_btf=kbtf).accepted
    return data, mutate.Layout.of(data)


def _values(bits: int = 64):
    return st.one_of(st.sampled_from(mutate.INTERESTING), st.integers(0, (1 << bits) - 1))


def mutation(layout: mutate.Layout):
    n = layout.size
    return st.one_of(
        st.tuples(st.just("flip"), st.integers(0, n - 1), st.integers(1, 255)),
        st.tuples(st.just("section_flip"), st.sampled_from(mutate.GATE_SECTIONS),
                  st.integers(0, 1 << 20), st.integers(1, 255)),
        st.tuples(st.just("truncate"), st.one_of(
            st.integers(0, n - 1),
            # just short of a structure's end: the classic truncations
            st.sampled_from(sorted({max(0, o + s - d) for o, s in layout.sections.values()
                                    for d in (1, 4)} | {0, 4, 16, 63, 64})))),
        st.tuples(st.just("shdr"), st.integers(0, layout.shnum - 1),
                  st.sampled_from(sorted(mutate.SHDR_FIELDS)), _values()),
        st.tuples(st.just("ehdr"), st.sampled_from(sorted(mutate.EHDR_FIELDS)), _values()),
        st.tuples(st.just("btf_hdr"), st.sampled_from(sorted(mutate.BTF_HDR_FIELDS)),
                  _values(32)),
        st.tuples(st.just("btfext_hdr"), st.sampled_from(sorted(mutate.BTFEXT_HDR_FIELDS)),
                  _values(32)),
        st.tuples(st.just("btf_word"), st.integers(0, layout.btf_types[1] // 4),
                  st.one_of(st.sampled_from(mutate.BTF_INFO_WORDS), _values(32))),
    )


def gate_outcome(path: Path, kbtf: Path) -> tuple[bool, list[str]]:
    """Run the gate as the loader does (gate.require): (accepted, failed check names).

    Anything but a Report or GateRefused, or a run past CASE_SECONDS, propagates and
    fails the test.
    """
    with time_bound(CASE_SECONDS):
        try:
            report = gate.require(path, kernel_btf=kbtf)
        except gate.GateRefused as exc:
            report = exc.report
            assert not report.accepted and report.failed
            assert str(path) in str(exc)
        # what the CLI prints must be producible too
        json.loads(report.to_json())
        report.render()
        if report.accepted:     # and what the gate accepts, the loader's libbpf opens
            BpfObject(path, btf_custom_path=kbtf).close()
    return report.accepted, [c.name for c in report.failed]


def test_gate_mutants(original, kbtf, work):
    data, layout = original
    row = TABLE.row("gate.mutants")
    path = work / "mutant.bpf.o"

    @settings(max_examples=size(400, 20000), deadline=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(mutation(layout), min_size=1, max_size=3))
    def prop(muts):
        with row.case():
            path.write_bytes(mutate.apply(data, muts, layout))
            accepted, failed = gate_outcome(path, kbtf)
            row.observe("accepted" if accepted else f"refused by {failed[0]}")

    prop()


def test_gate_mutants_never_raise_untyped(original, kbtf, work):
    """The same property on purely random (seeded) mutants, as the guest draws them."""
    import random

    data, layout = original
    row = TABLE.row("gate.mutants")
    rng = random.Random(20261130)
    path = work / "rmutant.bpf.o"
    for _ in range(size(200, 5000)):
        with row.case():
            path.write_bytes(mutate.apply(data, mutate.random_mutations(rng, layout), layout))
            accepted, failed = gate_outcome(path, kbtf)
            row.observe("accepted" if accepted else f"refused by {failed[0]}")


def test_gate_structural_mutants(original, kbtf, work):
    """Type ids rewritten to point at their own type, past the end, at void or anywhere
    (members, array elements, pointers, typedefs, vars, funcs)."""
    import struct as st_

    from scx_slo.loader.scheduler import ObjectTypes

    data, _layout = original
    row = TABLE.row("gate.structural")
    slots = O.btf_type_id_slots(data)
    n = len(O._btf_section(data)[1])      # type ids run 0..n-1
    path = work / "structural.bpf.o"

    @settings(max_examples=size(150, 5000), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(st.tuples(st.sampled_from(slots),
                              st.sampled_from(["self", "past-end", "void", "any"]),
                              st.integers(0, n + 5)), min_size=1, max_size=3))
    def prop(edits):
        with row.case():
            buf = bytearray(data)
            for (tid, pos), how, anyid in edits:
                new = {"self": tid, "past-end": n + 7, "void": 0, "any": anyid}[how]
                buf[pos:pos + 4] = st_.pack("<I", new)
            path.write_bytes(bytes(buf))
            accepted, failed = gate_outcome(path, kbtf)
            if accepted:        # what the gate accepts, the loader can lay out
                types = ObjectTypes(path)
                for spec in gate.REQUIRED_MAPS:
                    for layout in types.map_layouts(spec):
                        layout.unpack(bytes(layout.size))
                for ring in gate.RING_BUFFERS:
                    layout = types.named(ring.record)
                    layout.unpack(bytes(layout.size))
            row.observe("accepted" if accepted else f"refused by {failed[0]}")

    prop()


def test_time_bound_catches_a_hang():
    """The per-case bound really interrupts a runaway case (so a gate hang would fail)."""
    import time

    with pytest.raises(CaseTimeout), time_bound(0.2):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:     # spin: a CPU-bound runaway
            pass


def _inspect_in_process(path: Path, kbtf: Path) -> tuple[int, str, str]:
    from scx_slo import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(["inspect", str(path), "--kernel-btf", str(kbtf), "--json"])
    return rc, out.getvalue(), err.getvalue()


def test_inspect_cli_on_mutants(original, kbtf, work):
    data, layout = original
    row = TABLE.row("gate.cli")
    path = work / "cli-mutant.bpf.o"

    @settings(max_examples=size(100, 3000), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.lists(mutation(layout), min_size=1, max_size=3))
    def prop(muts):
        with row.case():
            path.write_bytes(mutate.apply(data, muts, layout))
            with time_bound(CASE_SECONDS):
                rc, out, err = _inspect_in_process(path, kbtf)
            assert rc in (0, 1), (rc, err)
            assert "Traceback" not in out + err
            report = json.loads(out)
            assert report["accepted"] is (rc == 0)
            row.observe(f"exit {rc}")

    prop()


def test_inspect_cli_process_on_mutants(original, kbtf, work):
    """A few mutants through a real `python -m scx_slo inspect` process (no JSON flag:
    the human report and the one-line refusal)."""
    import random

    data, layout = original
    row = TABLE.row("gate.cli")
    rng = random.Random(7)
    for i in range(size(6, 100)):
        with row.case():
            path = work / f"proc-mutant-{i}.bpf.o"
            path.write_bytes(mutate.apply(data, mutate.random_mutations(rng, layout), layout))
            r = subprocess.run([sys.executable, "-m", "scx_slo", "inspect", str(path),
                                "--kernel-btf", str(kbtf)],
                               check=False, capture_output=True, text=True, timeout=60)
            assert r.returncode in (0, 1), r.stderr
            assert "Traceback" not in r.stdout + r.stderr
            if r.returncode == 1:
                assert "REFUSED" in r.stdout and r.stderr.startswith("refused: "), r.stderr
            else:
                assert "accepted" in r.stdout
            row.observe(f"exit {r.returncode}")
