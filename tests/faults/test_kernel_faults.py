"""Faults on the real sched_ext kernel (one 2-vCPU VM for the whole module).

Each scenario runs in the guest (tests/faults/guest/kernel_faults.py) and reports JSON;
the assertions here say what must hold. Order matters only for cost: every scenario
leaves the machine as it found it (scheduler detached, pins removed, mounts restored).
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest
from fixtures import objects as O

from faults.conftest import SCALE, TABLE, size

pytestmark = [pytest.mark.faults, pytest.mark.vm]

GUEST = "python3 /opt/scx-slo/src/tests/faults/guest/kernel_faults.py"
SCX_EXIT_ERROR_STALL = 1026

OTHER_PROG = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";
/* A second sched_ext scheduler with no callbacks: the kernel's defaults (global FIFO). */
SEC(".struct_ops.link")
struct sched_ext_ops other_ops = {
	.name = "other_sched",
};
"""


def guest(vm, args: str, timeout: float = 600) -> dict:
    r = vm.run(f"{GUEST} {args}", timeout=timeout)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"rc={r.returncode}\nstdout={r.stdout[-3000:]}\nstderr={r.stderr[-3000:]}"
    out = json.loads(lines[-1])
    assert "error" not in out, out.get("traceback", out["error"])
    return out


def push(vm, data: bytes, path: str) -> None:
    r = vm.run(f"base64 -d > {path}", input=base64.b64encode(data).decode(), timeout=60)
    assert r.returncode == 0, r.stderr


def compile_obj(tmp_path, name: str, source: str) -> bytes:
    """Compile SOURCE and drop its DWARF (BTF stays): ~40 KB instead of ~1 MB, which the
    VM's control channel sends within its 1 s socket timeout even on a loaded host."""
    src = tmp_path / f"{name}.bpf.c"
    src.write_text(source)
    obj = O.compile_bpf(src, tmp_path / f"{name}.bpf.o")
    stripped = tmp_path / f"{name}.stripped.bpf.o"
    subprocess.run(["llvm-strip-19", "-g", "-o", str(stripped), str(obj)], check=True)
    return stripped.read_bytes()


# -- 1. refused objects never reach the kernel -----------------------------------------------
def test_refused_mutants_are_not_loaded(fvm):
    row = TABLE.row("gate.vm_refused_not_loaded")
    n = size(6, 60)
    out = guest(fvm, f"refused --count {n} --seed 11", timeout=900)
    assert len(out["cases"]) == n, out
    for case in out["cases"]:
        with row.case():
            assert case["outcome"] == "GateRefused", case
            assert case["state"] == "disabled", case
            row.observe(f"refused by {case['failed'][0]}")
    assert out["state_before"] == out["state_after"] == "disabled"
    assert out["new_progs"] == [], "a refused object left BPF programs in the kernel"
    assert out["pins"] is False


def test_accepted_mutants_meet_libbpf_and_the_verifier(fvm):
    """What the gate lets through (mostly damage in code, DWARF and relocations it does not
    read) reaches libbpf's ELF parser and the verifier: each load, in its own process,
    ends loaded or with a typed error, never a crash; nothing is attached or left behind."""
    row = TABLE.row("gate.vm_accepted_mutants")
    n = size(6, 60)
    out = guest(fvm, f"accepted --count {n} --seed 5", timeout=1800)
    assert len(out["cases"]) == n, out
    for case in out["cases"]:
        with row.case():
            assert case["rc"] == 0 and case["result"] is not None, case
            assert case["state"] == "disabled", case
            res = case["result"]
            why = next((ln.removeprefix("libbpf: ") for ln in case["stderr_tail"].splitlines()
                        if ln.startswith("libbpf:")), "")
            row.observe("loaded (not attached)" if res["outcome"] == "loaded"
                        else f"refused by libbpf/kernel: {res['kind']} ({why})")
    assert out["state_before"] == out["state_after"] == "disabled"
    assert out["new_progs"] == [], "programs left loaded after the processes exited"


# -- 3. scheduler stall: the watchdog ejects it, nothing is lost ------------------------------
def test_stall_watchdog_ejects_and_canary_finishes(fvm):
    row = TABLE.row("stall.watchdog")
    with row.case():
        out = guest(fvm, "stall --timeout-ms 2000 --rescue off", timeout=600)
        assert out["state_before"] == "disabled"
        assert out["state_attached"] == "enabled" and out["ops"] == "scx_slo", out
        assert out["canary_state_while_attached"] == "R", out    # runnable, withheld
        assert out["canary_done_before_eject"] is False, out
        assert out["state_final"] == "disabled", out
        assert out["exit"]["kind"] == SCX_EXIT_ERROR_STALL, out["exit"]
        assert "stall" in out["exit"]["reason"], out["exit"]
        assert str(out["canary_pid"]) in out["exit"]["msg"], out["exit"]
        assert out["canary_rc"] == 0 and out["canary_done"], out
        row.observe(f"ejected after {out['ejected_after_s']:.1f} s (timeout 2 s): "
                    f"kind {out['exit']['kind']} {out['exit']['reason']!r}")
        row.observe("canary finished under the default scheduler")
        row.note(f"watchdog message: {out['exit']['msg']}")


def test_stall_with_kernel_rescue(fvm):
    """7.x also rescues stalled tasks itself (sched_ext_ops.rescue_bandwidth_ppt, default
    on): with it, the same stall must still end with the canary finished, whether the
    kernel rescued it or the watchdog ejected the scheduler. (6.12 has no such rescue:
    there this is the watchdog case again.)"""
    row = TABLE.row("stall.watchdog")
    with row.case():
        out = guest(fvm, "stall --timeout-ms 2000 --rescue default", timeout=600)
        assert out["state_attached"] == "enabled", out
        assert out["canary_rc"] == 0 and out["canary_done"], out
        assert out["state_final"] == "disabled"
        kind = out["exit"]["kind"]
        assert kind in (0, SCX_EXIT_ERROR_STALL, 1028), out["exit"]
        row.observe(f"kernel rescue on: exit kind {kind} {out['exit']['reason']!r}, "
                    f"canary finished")


def test_stall_under_the_agent(fvm):
    """`scx-slo run` with the canary tunable (a guest-side wrapper adds it): every ejection
    logged with kind and reason, reloads after 1 s then 2 s, gives up after the third
    failure, stays off and says so (log and status), leaves no dead scheduler pinned."""
    import re

    row = TABLE.row("stall.agent")
    out = guest(fvm, "agent_stall --deadline 400", timeout=900)
    log = out["log"]
    exits = [ln for ln in log.splitlines() if "scheduler exited:" in ln]
    row.check("ejections logged", len(exits) == 3, f"{len(exits)} exit lines\n{log}")
    stall_lines = [ln for ln in exits if re.search(r"exited: stall: runnable task stall: "
                                                   rf"sh\[{out['canary_pid']}\]", ln)]
    row.check("every ejection logged with kind stall and its reason",
              len(stall_lines) == len(exits) and exits,
              "\n".join(ln for ln in exits if ln not in stall_lines))
    row.check("reloads with backoff 1 s, 2 s",
              "reloading in 1 s (failure 1 of 3)" in log
              and "reloading in 2 s (failure 2 of 3)" in log, log)
    row.check("gives up after 3 failures and says so in the log",
              out["gave_up_after_s"] is not None
              and "failed 3 times" in log and "staying on the kernel's default scheduler" in log,
              log)
    row.check("stays off: sched_ext disabled, agent still running",
              out["state_after_give_up"] == "disabled" and out["agent_alive_after_give_up"],
              str({k: out[k] for k in ("state_after_give_up", "agent_alive_after_give_up")}))
    row.check("status.json says it gave up", out["status"].get("given_up") is True,
              f"status.json: {out['status']}")
    row.check("no dead scheduler left pinned after giving up", not out["pins_after_give_up"],
              f"pins: {out['pins_after_give_up']}")
    row.check("stats deltas never negative across a reload",
              not re.search(r"wakeups=-\d", log), "\n".join(
                  ln for ln in log.splitlines() if re.search(r"wakeups=-\d", ln)))
    row.check("canary finished (no task lost)", out["canary_rc"] == 0 and out["canary_done"])
    row.check("SIGTERM after giving up: exit 0, sched_ext disabled",
              out["agent_rc"] == 0 and out["state_end"] == "disabled",
              f"rc {out['agent_rc']}, state {out['state_end']}")
    if out["gave_up_after_s"]:
        row.note(f"gave up {out['gave_up_after_s']} s after start (watchdog-timeout 2s)")
    assert not row.failures, "\n".join(row.failures)


def test_agent_killed_during_load(fvm):
    row = TABLE.row("agent.kill_during_load")
    delays = [0.5, 2.5, 8.0] if SCALE == "quick" else [x / 2 for x in range(1, 25)]
    out = guest(fvm, "killload --delays " + " ".join(map(str, delays)), timeout=3600)
    from scx_slo.loader.scheduler import KEEPALIVE_MAPS, LINK_PIN, OWN_MAPS

    full = {LINK_PIN, *OWN_MAPS, *KEEPALIVE_MAPS}
    assert full == {"link", "slo_cgroups", "slo_classes", "slo_exit", "slo_gen", "slo_stats",
                    "slo_cg_bw", "slo_misses", "slo_bw_timer", "slo_slice_timer"}
    for c in out["cycles"]:
        with row.case():
            pins = {p.split("/", 1)[1] for p in c["pins_after_kill"] if "/" in p}
            if c["state_after_kill"] == "enabled":
                assert pins == full, c["pins_after_kill"]
                phase = "after pin: left attached and pinned"
            else:
                assert c["state_after_kill"] == "disabled" and not pins, c
                phase = "before attach: nothing attached, nothing pinned"
            assert c["second_up"] and c["second_ops"] == "scx_slo", c["second_log"]
            if pins:
                assert "adopted the pinned scheduler" in c["second_log"], c["second_log"]
            assert c["second_rc"] == 0 and "Traceback" not in c["second_log"]
            assert c["stop"]["rc"] == 0 and c["state_end"] == "disabled", c["stop"]
            assert c["leaked"] == {"progs": [], "maps": [], "links": []}, c["leaked"]
            row.observe(f"killed {c['killed_after_settings_s']} s after settings: {phase}; "
                        f"next agent {'adopted' if pins else 'loaded'}; nothing leaked")


# -- 4. verifier rejection while scx_slo runs ------------------------------------------------
@pytest.mark.skipif(not O.have_clang(), reason="needs clang-19")
def test_verifier_rejection_leaves_the_running_scheduler(fvm, tmp_path):
    from test_loader_vm import BAD_PROG

    row = TABLE.row("verifier.while_running")
    push(fvm, compile_obj(tmp_path, "bad", BAD_PROG), "/tmp/faults-bad.bpf.o")
    with row.case():
        out = guest(fvm, "verifier --bad /tmp/faults-bad.bpf.o")
        assert out["state_running"] == "enabled" and out["ops_running"] == "scx_slo"
        assert "bad_loaded" not in out, out
        assert out["kind"] == "VerifierError", out
        assert out["errno"] in ("EACCES", "EINVAL"), out
        assert "invalid mem access" in out["log"] or "scalar" in out["log"], out["log"][-2000:]
        assert "verifier log" in out["message"]
        assert out["state_after_reject"] == "enabled" and out["ops_after_reject"] == "scx_slo", \
            out["exit_while_running"]
        assert out["exit_while_running"]["kind"] == 0, out["exit_while_running"]
        assert out["leaked_progs"] == [], out["leaked_progs"]
        assert out["state_end"] == "disabled"
        row.observe(f"{out['errno']}, verifier log {len(out['log'])} chars; scx_slo stayed "
                    f"attached")


# -- 5. preflight faults ---------------------------------------------------------------------
@pytest.mark.skipif(not O.have_clang(), reason="needs clang-19")
def test_another_scheduler_attached(fvm, tmp_path):
    row = TABLE.row("preflight.other_scheduler")
    push(fvm, compile_obj(tmp_path, "other", OTHER_PROG), "/tmp/faults-other.bpf.o")
    with row.case():
        out = guest(fvm, "other --obj /tmp/faults-other.bpf.o --agent")
        assert out["state_other"] == "enabled" and out["ops_other"] == "other_sched", out
        chk = out["check"]
        assert chk["rc"] == 1, chk
        assert "Traceback" not in chk["stdout"] + chk["stderr"]
        fail = [ln for ln in chk["stdout"].splitlines() if ln.startswith("FAIL")]
        assert any("other_scheduler" in ln and "other_sched" in ln for ln in fail), chk["stdout"]
        report = json.loads(out["check_json"]["stdout"])
        assert report["ready"] is False and out["check_json"]["rc"] == 1
        # our loader does not displace it, and says why with a typed error
        assert "ours_attached" not in out, out
        assert out["ours_error"]["typed"], out["ours_error"]
        assert out["ops_after_ours"] == "other_sched"
        row.observe("check exit 1 naming other_sched; Scheduler.attach refused: "
                    f"{out['ours_error']['kind']}")
        agent = out["agent"]
        assert agent["exited_by_itself"] and agent["rc"] == 1, agent
        assert "Traceback" not in agent["stdout"] + agent["stderr"], agent["stderr"]
        assert "other_sched" in agent["stdout"] + agent["stderr"], agent
        assert out["ops_after_agent"] == "other_sched"
        row.observe("`scx-slo run` exit 1 naming it; other_sched untouched")
        assert out["state_end"] == "disabled"


def test_host_kernel_without_sched_ext():
    row = TABLE.row("preflight.no_sched_ext")
    from pathlib import Path
    if Path("/sys/kernel/sched_ext").exists():
        pytest.skip("this host kernel has sched_ext")
    with row.case():
        r = subprocess.run([sys.executable, "-m", "scx_slo", "check"], check=False,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stdout + r.stderr
        assert "Traceback" not in r.stdout + r.stderr
        line = next(ln for ln in r.stdout.splitlines() if "sched_ext" in ln and
                    ln.startswith("FAIL"))
        assert "absent" in line
        assert "fix:" in r.stdout and "CONFIG_SCHED_CLASS_EXT" in r.stdout
        row.observe("check exit 1: " + line.split(None, 2)[2])


def test_no_bpffs(fvm):
    """With /sys/fs/bpf unmounted, `scx-slo check` must say there is no bpffs; the agent
    (by design, pins.base_dir) mounts one itself and says loudly that pins there may not
    outlive the container; `scx-slo stop` then detaches and unpins."""
    row = TABLE.row("preflight.no_bpffs")
    out = guest(fvm, "nobpffs --agent")
    assert out["umount_rc"] == 0, out
    assert out["mounts_bpf"] == []
    assert out["remount_rc"] == 0 and out["mounts_end"], out
    with row.case():
        chk = out["check"]
        assert "Traceback" not in chk["stdout"] + chk["stderr"]
        bpffs = next(ln for ln in chk["stdout"].splitlines() if " bpffs " in ln)
        row.observe(f"check exit {chk['rc']}: {' '.join(bpffs.split())}")
        assert chk["rc"] == 1 and bpffs.startswith("FAIL"), (
            "preflight claims a bpffs that is not mounted:\n" + chk["stdout"])
    with row.case():
        agent = out["agent"]
        assert "Traceback" not in agent["stdout"] + agent["stderr"], agent["stderr"]
        if agent["exited_by_itself"]:
            assert agent["rc"] == 1 and "bpffs" in agent["stdout"] + agent["stderr"]
            row.observe("agent: exit 1 naming bpffs")
        else:
            assert agent["ops_while_running"] == "scx_slo"
            assert "mounted a bpffs" in agent["stdout"] + agent["stderr"], agent
            assert out["stop"]["rc"] == 0 and out["state_after_stop"] == "disabled"
            row.observe("agent: mounted its own bpffs and warned that pins may not "
                        "outlive the container; `scx-slo stop` detached")


def test_read_only_cgroupfs(fvm):
    row = TABLE.row("preflight.ro_cgroupfs")
    with row.case():
        out = guest(fvm, "rocgroup")
        assert out["remount_rc"] == 0, out
        assert out["writable"] is False
        chk = out["check"]
        assert "Traceback" not in chk["stdout"] + chk["stderr"]
        line = next(ln for ln in chk["stdout"].splitlines() if " cgroup " in ln)
        assert "read-only" in line, chk["stdout"]
        report = json.loads(out["check_json"]["stdout"])
        assert (chk["rc"] == 0) == report["ready"]
        assert out["restore_rc"] == 0 and out["writable_after"] is True
        row.observe(f"check exit {chk['rc']}: {' '.join(line.split())}")


# -- 6. churn --------------------------------------------------------------------------------
def test_churn_while_batch_saturates(fvm):
    row = TABLE.row("churn.cgroups")
    pods, rounds = size(500, 10000), size(5, 20)
    with row.case():
        out = guest(fvm, f"churn --pods {pods} --rounds {rounds}", timeout=1800)
        assert out["state_attached"] == "enabled"
        assert out["map_equals_live"], {k: out[k] for k in ("map_size", "live", "missing",
                                                             "extra", "wrong_class")}
        # an ejection is reported with the scheduler's exit kind, reason and message
        assert out["states"] == ["enabled"], (out["states"], out["exit"])
        assert out["exit"]["kind"] == 0, out["exit"]
        assert out["state_end_attached"] == "enabled", out["exit"]
        assert out["state_end"] == "disabled"
        created = sum(r["adds"] for r in out["rounds"])
        removed = sum(r["removes"] for r in out["rounds"])
        row.observe(f"{created} pod cgroups mapped, {removed} removed in {out['churn_s']} s "
                    f"under stress-ng; map = the {out['live'] - 1} live pods + the rule's QoS slice, "
                    f"exactly; no ejection")
