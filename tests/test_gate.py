"""The ELF/BTF gate: the shipped object passes; each bad object is refused by the
right named check, without a traceback, and never reaches libbpf."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures import objects as O
from scx_slo.loader import gate

pytestmark = pytest.mark.skipif(not O.have_clang(), reason="needs clang-19 for fixtures")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gate")


@pytest.fixture(scope="module")
def good(work) -> Path:
    return O.scheduler_object(work)


def _first_strong_candidate(path: Path) -> str:
    from scx_slo.loader.btf import Btf
    btf = Btf(O.section_data(path, ".BTF"))
    return sorted(n for n in btf.datasec_vars(".ksyms") if "___" not in n)[0]


def _corpus(good: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (object bytes, the check that must refuse it)."""
    data = good.read_bytes()
    kfunc = _first_strong_candidate(good)
    absent = kfunc[:-2] + ("zz" if not kfunc.endswith("zz") else "yy")
    return {
        "zero-length": (b"", "elf.header"),
        "truncated-header": (data[:40], "elf.header"),
        "truncated": (data[: len(data) // 2], "elf.sections"),
        "wrong-e_machine": (O.set_e_machine(data, 62), "elf.header"),  # EM_X86_64
        "big-endian": (data[:5] + b"\x02" + data[6:], "elf.header"),
        "btf-magic": (O.corrupt_btf_magic(data), "btf"),
        "no-license": (O.rename_section(data, "license", "_license"), "license"),
        "proprietary": (O.set_license(data, "Proprietary"), "license"),
        "no-struct_ops": (O.rename_section(data, ".struct_ops.link", "scx_slo_ops"),
                          "struct_ops"),
        "other-struct_ops-type": (O.replace_name(data, "sched_ext_ops", "tcp_congestio"),
                                  "struct_ops"),
        "map-missing": (O.replace_name(data, "slo_gen", "slo_gex"), "maps"),
        "map-value-size": (O.retarget_map_value(data, "slo_classes", "u64"), "maps"),
        "ring-missing": (O.replace_name(data, "slo_misses", "slo_missex"), "maps"),
        "ring-record-missing": (O.replace_name(data, "slo_miss", "slo_mist"), "maps"),
        "kfunc-absent": (O.replace_name(O.make_symbol_strong(data, kfunc), kfunc, absent),
                         "kfuncs"),
    }


def test_shipped_object_passes(good, kbtf):
    report = gate.inspect(good, kernel_btf=kbtf)
    assert report.accepted, report.render()
    assert {c.name for c in report.checks if c.ok} == set(gate.CHECK_NAMES) - {"sha256"}
    assert report.details["struct_ops"]["ops_name"] == "scx_slo"
    assert report.details["struct_ops"]["callbacks"]


def test_host_kernel_without_sched_ext_is_reported(good):
    # The host's kernel has no sched_ext: the gate says so by name.
    report = gate.inspect(good, kernel_btf="/sys/kernel/btf/vmlinux")
    from scx_slo.loader.btf import Btf, Kind
    if Btf.from_file("/sys/kernel/btf/vmlinux").find("sched_ext_ops", Kind.STRUCT):
        pytest.skip("this host kernel has sched_ext")
    assert not report.accepted
    assert [c.name for c in report.failed] == ["kernel.struct_ops"]


@pytest.mark.parametrize("case", [
    "zero-length", "truncated-header", "truncated", "wrong-e_machine", "big-endian",
    "btf-magic", "no-license", "proprietary", "no-struct_ops", "other-struct_ops-type",
    "map-missing", "map-value-size", "ring-missing", "ring-record-missing", "kfunc-absent"])
def test_bad_object_refused_by_named_check(case, good, kbtf, work):
    data, check = _corpus(good)[case]
    path = work / f"{case}.bpf.o"
    path.write_bytes(data)
    report = gate.inspect(path, kernel_btf=kbtf)
    assert not report.accepted
    assert report.check(check).status == gate.FAIL, report.render()
    # The first failure is the one that names the defect (later ones may follow from it).
    assert report.failed[0].name == check, report.render()


def test_kfunc_absent_names_the_kfunc(good, work):
    kfunc = _first_strong_candidate(good)
    data = O.make_symbol_strong(good.read_bytes(), kfunc)
    path = work / "strong.bpf.o"
    path.write_bytes(data)
    kb = O.kernel_btf_for(good, work, omit=(kfunc,))
    report = gate.inspect(path, kernel_btf=kb)
    assert report.failed and report.failed[0].name == "kfuncs"
    assert kfunc in report.check("kfuncs").reason


def test_weak_kfunc_called_unguarded_is_required(good, work):
    # vmlinux.h makes every kfunc weak; ops.init calls scx_bpf_create_dsq with no
    # bpf_ksym_exists() guard, so a kernel without it must be refused, by name.
    kb = O.kernel_btf_for(good, work, omit=("scx_bpf_create_dsq",))
    report = gate.inspect(good, kernel_btf=kb)
    assert [c.name for c in report.failed] == ["kfuncs"], report.render()
    reason = report.check("kfuncs").reason
    assert "scx_bpf_create_dsq (in slo_init)" in reason and "bpf_ksym_exists" in reason


def test_guarded_kfunc_absent_is_allowed(good, work):
    # The newest insert is tried first behind bpf_ksym_exists(); a kernel without it
    # takes the next form, so its absence is fine...
    kb = O.kernel_btf_for(good, work, omit=("scx_bpf_dsq_insert___v2",))
    report = gate.inspect(good, kernel_btf=kb)
    assert report.check("kfuncs").ok, report.render()
    assert "scx_bpf_dsq_insert___v2" in report.check("kfuncs").reason


def test_last_fallback_of_a_chain_is_required(good, work):
    # ...but with every earlier form gone, the last fallback (6.12's scx_bpf_dispatch)
    # is reached unguarded and must exist.
    kb = O.kernel_btf_for(good, work, omit=("scx_bpf_dsq_insert___v2", "scx_bpf_dsq_insert",
                                            "scx_bpf_dispatch"))
    report = gate.inspect(good, kernel_btf=kb)
    reason = report.check("kfuncs").reason
    assert not report.accepted and "scx_bpf_dispatch (in " in reason, report.render()
    assert "scx_bpf_dsq_insert " not in reason and "___v2 " not in reason


def test_sha256_pin(good, kbtf):
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    assert gate.inspect(good, kernel_btf=kbtf, expect_sha256=digest).check("sha256").ok
    wrong = gate.inspect(good, kernel_btf=kbtf, expect_sha256="0" * 64)
    assert not wrong.accepted and [c.name for c in wrong.failed] == ["sha256"]


def test_unreadable_path_is_refused(tmp_path):
    report = gate.inspect(tmp_path / "missing.o")
    assert not report.accepted and report.failed[0].name == "elf.header"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scx_slo", "inspect", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", ["zero-length", "big-endian", "btf-magic", "proprietary",
                                  "map-value-size", "kfunc-absent"])
def test_cli_refuses_without_traceback(case, good, kbtf, work):
    data, check = _corpus(good)[case]
    path = work / f"cli-{case}.bpf.o"
    path.write_bytes(data)
    r = _cli(str(path), "--kernel-btf", str(kbtf), "--json")
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    report = json.loads(r.stdout)
    assert report["accepted"] is False
    assert [c["name"] for c in report["checks"] if c["status"] == "fail"][0] == check


def test_cli_accepts_and_usage(good, kbtf):
    r = _cli(str(good), "--kernel-btf", str(kbtf))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "accepted" in r.stdout and "PASS  struct_ops" in r.stdout
    assert _cli("--expect-sha256", "nothex").returncode == 2


def test_refused_object_never_reaches_libbpf(good, kbtf, work, monkeypatch):
    import scx_slo.loader.libbpf as libbpf
    from scx_slo.loader.scheduler import Scheduler

    opened = []
    monkeypatch.setattr(libbpf, "BpfObject", lambda *a, **k: opened.append(a))
    data, _check = _corpus(good)["proprietary"]
    path = work / "never-loaded.bpf.o"
    path.write_bytes(data)
    with pytest.raises(gate.GateRefused) as exc:
        Scheduler.open(path, kernel_btf=kbtf)
    assert "license" in str(exc.value)
    assert [c.name for c in exc.value.report.failed] == ["license"]
    assert opened == []


def test_cli_takes_object_and_pin_from_settings(good, kbtf, tmp_path):
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    ok = tmp_path / "ok.toml"
    ok.write_text(f'[scheduler]\nobject = "{good}"\nsha256 = "{digest}"\n')
    r = _cli("--settings", str(ok), "--kernel-btf", str(kbtf), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert {c["name"]: c["status"] for c in json.loads(r.stdout)["checks"]}["sha256"] == "pass"
    pinned = tmp_path / "pinned.toml"
    pinned.write_text(f'[scheduler]\nobject = "{good}"\nsha256 = "{"0" * 64}"\n')
    r = _cli("--settings", str(pinned), "--kernel-btf", str(kbtf), "--json")
    assert r.returncode == 1
    assert [c["name"] for c in json.loads(r.stdout)["checks"] if c["status"] == "fail"] == \
        ["sha256"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[scheduler]\nsha = 1\n")
    r = _cli("--settings", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr and "sha" in r.stderr


def _kernel_without(kbtf: Path, work: Path, member: str) -> Path:
    """The kernel BTF with sched_ext_ops.<member> renamed away: an older kernel."""
    out = work / f"vmlinux-without-{member}.btf"
    out.write_bytes(O.replace_name(kbtf.read_bytes(), member, member[:-1] + "X"))
    return out


def test_optional_callback_absent_from_an_older_kernel_is_left_out(good, kbtf, work):
    """Before 6.17 sched_ext_ops has no cgroup_set_bandwidth: the object is accepted, the
    callback is left out at load (NULL in the struct_ops shadow, its program not
    loaded) and what that means is named; the other callbacks stay. The kernel BTF
    also tells the agent that cpu.max must come from cgroupfs there."""
    from scx_slo.agent.bandwidth import kernel_passes_cpu_max
    from scx_slo.loader.btf import Layout
    from scx_slo.loader.scheduler import Scheduler

    old = _kernel_without(kbtf, work, "cgroup_set_bandwidth")
    report = gate.inspect(good, kernel_btf=old)
    assert report.accepted, report.render()
    assert report.details["absent_callbacks"] == ["cgroup_set_bandwidth"]
    assert "cpu.max reaches the scheduler only from user space" in \
        report.check("kernel.struct_ops").reason
    assert not kernel_passes_cpu_max(old) and kernel_passes_cpu_max(kbtf)
    with Scheduler.open(good, kernel_btf=old) as s:
        assert s.gaps == [gate.OPTIONAL_CALLBACKS["cgroup_set_bandwidth"]]
        assert not s.obj.autoload("slo_cgroup_set_bandwidth")
        assert s.obj.autoload("slo_cgroup_set_weight") and s.obj.autoload("slo_tick")
        shadow = bytes(s.obj.map(gate.STRUCT_OPS_MAP).initial_value())
        layout = Layout(s.types.btf, s.types.ops_struct().id)
        off, size = layout.offset_of("cgroup_set_bandwidth")
        assert shadow[off:off + size] == bytes(size)
        off, size = layout.offset_of("cgroup_set_weight")
        assert shadow[off:off + size] != bytes(size)
    # on the kernel that has it, nothing is left out
    with Scheduler.open(good, kernel_btf=kbtf) as s:
        assert s.gaps == [] and s.obj.autoload("slo_cgroup_set_bandwidth")


def test_required_callback_absent_is_still_refused(good, kbtf, work):
    report = gate.inspect(good, kernel_btf=_kernel_without(kbtf, work, "cgroup_set_weight"))
    assert not report.accepted
    assert [c.name for c in report.failed] == ["kernel.struct_ops"]
    assert "cgroup_set_weight" in report.failed[0].reason


@pytest.mark.parametrize("craft, fragment", [
    (lambda d: O.truncate_func_info(d, keep=2), "func_info"),
    (lambda d: O.set_member_type(d, "sched_ext_ops", "select_cpu"), "contains itself"),
    (lambda d: O.set_array_elem_to_itself(d, "slo_class_stats", "lat_hist"), "contains itself"),
    (lambda d: O.set_member_type(d, "slo_class_entry", "flags"), "contains itself"),
    (lambda d: O.set_member_type(d, "slo_class_entry", "flags", 0x1000000), "invalid referenced type ID"),
    (lambda d: O.set_btf_ext_flags(d, 1), "flags 1"),
    (lambda d: O.rename_symbol(d, "scx_bpf_kick_cpu", "scx_slo_ops"), "has no BTF"),
    (lambda d: O.rename_symbol(d, "slo_gen", "slo_classes"), "has no ELF symbol"),
    (lambda d: O.rename_section(d, "struct_ops/slo_enqueue", "scx_slo_ops"), "slo_enqueue"),
], ids=["func_info-cut-to-2-bytes", "ops-member-is-ops", "array-of-itself", "struct-holds-itself",
        "member-type-past-the-end", "btf.ext-flags", "extern-symbol-renamed",
        "map-symbol-renamed", "program-section-renamed"])
def test_crafted_structures_are_refused_not_crashed(good, kbtf, work, craft, fragment):
    """Cycles and truncations are typed refusals naming the cause, never a traceback,
    and `scx-slo inspect --json` still prints its JSON report."""
    bad = work / "crafted.bpf.o"
    bad.write_bytes(craft(good.read_bytes()))
    report = gate.inspect(bad, kernel_btf=kbtf)
    assert not report.accepted
    assert any(fragment in c.reason for c in report.failed), report.render()
    r = _cli("--json", "--kernel-btf", str(kbtf), str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert json.loads(r.stdout)["accepted"] is False
