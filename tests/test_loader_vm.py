"""The loader against the real sched_ext kernel (in the VM).

open -> tunables -> load -> attach -> pin; a new process adopts the pinned link
and maps, updates and reads a cgroup entry, reads per-CPU stats, unpins and
detaches; sched_ext is back to disabled. A verifier rejection carries the log.
"""
from __future__ import annotations

import base64
import json
import subprocess
import textwrap

import pytest

from fixtures import objects as O

pytestmark = pytest.mark.vm

PIN_DIR = "/sys/fs/bpf/scx_slo_test"


def _py(vm, code: str, timeout: float = 300):
    r = vm.run(["python3", "-c", textwrap.dedent(code)], timeout=timeout)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def _json_line(r) -> dict:
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result: rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    return json.loads(lines[-1])


def test_load_attach_pin_adopt_detach(vm):
    load = _py(vm, f"""
        import json
        from scx_slo.loader.scheduler import Scheduler
        from scx_slo.loader.sysfs import sched_ext_state, wait_state
        before = sched_ext_state()
        s = Scheduler.open(pin_dir={PIN_DIR!r})
        s.set_tunables(slice_ns=4_000_000, batch_floor_pct=7, timeout_ms=4000)
        s.set_ops(timeout_ms=4000, exit_dump_len=2048)
        tun, ops = s.tunables(), s.ops()
        s.load(); s.attach(); s.pin()
        state = wait_state("enabled")
        s.close()   # pinned: stays attached after this process lets go
        print(json.dumps({{"before": before, "state": state, "tunables": tun, "ops": ops,
                           "gate": s.report.accepted, "after_close": sched_ext_state()}}))
    """)
    first = _json_line(load)
    assert first["before"] == "disabled"
    assert first["gate"] is True
    assert first["tunables"]["slice_ns"] == 4_000_000 and first["tunables"]["batch_floor_pct"] == 7
    assert first["ops"]["timeout_ms"] == 4000 and first["ops"]["exit_dump_len"] == 2048
    assert first["ops"]["name"] == "scx_slo"
    assert first["state"] == "enabled", load.stderr
    assert first["after_close"] == "enabled"

    adopt = _py(vm, f"""
        import json, os
        from scx_slo.loader.scheduler import Scheduler
        from scx_slo.loader.sysfs import sched_ext_state, wait_state
        from scx_slo.loader.libbpf import num_possible_cpus
        cg = "/sys/fs/cgroup/scx-slo-loader-test"
        os.makedirs(cg, exist_ok=True)
        cgid = os.stat(cg).st_ino
        with Scheduler.adopt({PIN_DIR!r}) as s:
            s.set_cgroup_class(cgid, 1)
            entry = s.cgroup_class(cgid)
            keys = list(s.typed("slo_cgroups").keys())
            per_cpu = s.stats(0, per_cpu=True)
            total = s.stats(0)
            exit_before = s.exit_info()["kind"]
            removed = s.remove_cgroup(cgid)
            s.unpin()
            pins_left = os.path.exists({PIN_DIR!r})
            s.detach()
            state = wait_state("disabled")
            exit_after = s.exit_info()
        os.rmdir(cg)
        print(json.dumps({{"cgid": cgid, "entry": entry, "keys": keys, "ncpu": len(per_cpu),
                           "possible": num_possible_cpus(), "total": total,
                           "stats_fields": sorted(per_cpu[0]), "exit_before": exit_before,
                           "removed": removed, "pins_left": pins_left, "state": state,
                           "exit_after": exit_after}}))
    """)
    second = _json_line(adopt)
    assert second["entry"] == {"class_id": 1, "flags": 0}
    assert second["cgid"] in second["keys"]
    assert second["ncpu"] == second["possible"] >= 1
    assert "nr_wakeups" in second["stats_fields"] and "lat_hist" in second["stats_fields"]
    assert len(second["total"]["lat_hist"]) == 32
    assert second["exit_before"] == 0
    assert second["removed"] is True
    assert second["pins_left"] is False
    assert second["state"] == "disabled", adopt.stderr
    assert second["exit_after"]["kind"] != 0  # ops.exit ran and wrote the record


BAD_PROG = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
char _license[] SEC("license") = "GPL";
SEC("struct_ops/bad_enqueue")
void BPF_PROG(bad_enqueue, struct task_struct *p, u64 enq_flags)
{
	/* Reads through a scalar: the verifier must refuse this. */
	u64 *ptr = (u64 *)enq_flags;
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, *ptr, enq_flags);
}
SEC(".struct_ops.link")
struct sched_ext_ops bad_ops = {
	.enqueue = (void *)bad_enqueue,
	.name = "scx_slo_bad",
};
"""


@pytest.mark.skipif(not O.have_clang(), reason="needs clang-19")
def test_verifier_rejection_carries_the_log(vm, tmp_path):
    src = tmp_path / "bad.bpf.c"
    src.write_text(BAD_PROG)
    obj = O.compile_bpf(src, tmp_path / "bad.bpf.o")
    # DWARF makes the object ~1 MB; BTF (kept by strip -g) is all libbpf needs.
    subprocess.run([O.CLANG.replace("clang", "llvm-strip"), "-g", str(obj)], check=True)
    payload = base64.b64encode(obj.read_bytes()).decode()
    assert vm.run("base64 -d > /tmp/bad.bpf.o", input=payload, timeout=60).returncode == 0
    r = _py(vm, """
        import json
        from scx_slo.loader import libbpf
        from scx_slo.loader.sysfs import sched_ext_state
        out = {}
        with libbpf.BpfObject("/tmp/bad.bpf.o") as obj:
            try:
                obj.load()
                out["loaded"] = True
            except libbpf.VerifierError as exc:
                # Only the tail travels back: the whole log can be very long.
                out.update(kind=type(exc).__name__, errno=exc.errno_name, op=exc.operation,
                           log_len=len(exc.verifier_log), log=exc.verifier_log[-4000:],
                           message=str(exc)[-4000:])
        out["state"] = sched_ext_state()
        print(json.dumps(out))
    """)
    res = _json_line(r)
    assert "loaded" not in res, r.stderr
    assert res["kind"] == "VerifierError"
    assert res["errno"] in ("EACCES", "EINVAL")
    assert "load of BPF object" in res["op"]
    assert res["log_len"] > 0
    assert "invalid mem access" in res["log"] or "scalar" in res["log"], res["log"]
    assert "verifier log" in res["message"]
    assert res["state"] == "disabled"


def test_gate_checks_against_the_real_kernel_btf(vm):
    r = vm.run(["scx-slo", "inspect", "--json"], timeout=300)
    report = json.loads(r.stdout)
    assert r.returncode == 0, r.stdout
    assert report["kernel_btf"] == "/sys/kernel/btf/vmlinux"
    checks = {c["name"]: c["status"] for c in report["checks"]}
    assert checks["kernel.struct_ops"] == "pass" and checks["kfuncs"] == "pass"


HEADROOM = 0.5     # of the verifier's 1M-instruction budget, per program


def test_every_program_verifies_with_headroom(vm, vm_kernel):
    """The shipped object loads on this kernel, each program well under the verifier's limit."""
    r = _py(vm, """
        import json
        from scx_slo.loader.scheduler import VERIFIER_LIMIT, trial_load
        from scx_slo.loader.sysfs import sched_ext_state
        print(json.dumps({"insns": trial_load(), "limit": VERIFIER_LIMIT,
                          "state": sched_ext_state()}))
    """)
    res = _json_line(r)
    insns = res["insns"]
    print(f"\nverified instructions on {vm_kernel} ({vm.kernel_release}):")
    for name, n in sorted(insns.items(), key=lambda kv: -kv[1]):
        print(f"  {name:28} {n:>8}  {100 * n / res['limit']:5.1f}%")
    assert {"slo_dispatch", "slo_enqueue", "slo_select_cpu", "slo_init"} <= set(insns)
    over = {name: n for name, n in insns.items() if n >= HEADROOM * res["limit"]}
    assert not over, f"programs over {HEADROOM:.0%} of the verifier's limit: {over}"
    assert all(n > 0 for n in insns.values()), insns
    assert res["state"] == "disabled"    # a trial load attaches nothing
