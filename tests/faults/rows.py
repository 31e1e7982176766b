"""The rows of the faults table (docs/faults.md): one per fault or hostile input.

Each test of the suite counts into a row (cases tried, cases survived); the
order and wording here is the order and wording of the published table.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RowSpec:
    id: str
    fault: str
    must_hold: str
    vm: bool = False


ROWS: tuple[RowSpec, ...] = (
    RowSpec("gate.mutants",
            "ELF/BTF gate: hypothesis-mutated copies of the shipped object (byte flips, "
            "truncations, ELF/section-header, BTF/BTF.ext header and type-record corruption)",
            "gate returns a report or raises GateRefused; no other exception; under 5 s of CPU each"),
    RowSpec("gate.structural",
            "ELF/BTF gate: structurally crafted objects (type ids pointing at their own type, "
            "past the end, at void or anywhere; cycles through members and array elements)",
            "a report, never another exception; what it accepts, the loader lays out and "
            "libbpf opens"),
    RowSpec("gate.cli",
            "`scx-slo inspect` on mutated objects (in-process and as a real process)",
            "exit 0 (accepted) or 1 (refused), JSON report, never a traceback"),
    RowSpec("gate.vm_refused_not_loaded",
            "Refused mutants handed to Scheduler.open on the sched_ext kernel",
            "GateRefused; no BPF program loaded; sched_ext stays disabled", vm=True),
    RowSpec("gate.vm_accepted_mutants",
            "Mutants the gate accepts, opened and loaded by libbpf on the sched_ext kernel "
            "(not attached)",
            "loaded, or a typed error (libbpf/verifier); the process never crashes; nothing "
            "left loaded", vm=True),
    RowSpec("settings.toml",
            "Settings: generated TOML documents (random structure, keys, types, values)",
            "Loaded or ValidationError (a SettingsError); nothing else"),
    RowSpec("settings.bytes",
            "Settings: raw user-data bytes and base64 (binary, bad UTF-8, NULs, huge, nested)",
            "Loaded or a SettingsError; nothing else"),
    RowSpec("settings.render",
            "Settings: render of generated valid configurations to every target",
            "embedded user-data decodes to the same text and validates to the same Config"),
    RowSpec("settings.durations",
            "Settings: arbitrary duration values (text, numbers, None, bools)",
            "integer ns within range or DurationError; format/parse round-trips"),
    RowSpec("tenant.annotations",
            "Tenant abuse: pod annotations claiming tighter SLOs, from namespaces not "
            "allowed, malformed values",
            "never a class tighter than annotations.tightest; refusals/caps say why"),
    RowSpec("tenant.flood",
            "Tenant abuse: thousands of pods claiming the tightest target",
            "all capped, each noted once; rule-assigned pods keep their class"),
    RowSpec("stall.watchdog",
            "Scheduler stall: the test tunable withholds a canary task; small watchdog timeout",
            "watchdog ejects (exit kind stall), sched_ext back to disabled, canary finishes",
            vm=True),
    RowSpec("stall.agent",
            "Scheduler stall under the agent: repeated ejections",
            "agent logs kind/reason, reloads with backoff, gives up after max failures",
            vm=True),
    RowSpec("agent.kill_during_load",
            "Agent SIGKILLed while it starts (gate, load, attach, pin), then a new agent",
            "after the kill: nothing attached and nothing pinned, or attached with the full "
            "pin set; the next agent comes up (adopts or loads); after stop nothing leaked "
            "(programs, maps, links counted with bpftool)", vm=True),
    RowSpec("verifier.while_running",
            "Verifier rejection of a new object while scx_slo runs",
            "VerifierError with the verifier log; the running scheduler stays attached",
            vm=True),
    RowSpec("preflight.other_scheduler",
            "Another sched_ext scheduler already attached",
            "`scx-slo check` exits 1 naming it", vm=True),
    RowSpec("preflight.no_sched_ext",
            "Kernel without sched_ext (the host's own kernel)",
            "`scx-slo check` exits 1: sched_ext check fails with a fix hint"),
    RowSpec("preflight.no_bpffs",
            "No bpffs mounted",
            "`scx-slo check` exits 1 naming bpffs", vm=True),
    RowSpec("preflight.ro_cgroupfs",
            "Read-only cgroupfs",
            "`scx-slo check` reports it; no traceback", vm=True),
    RowSpec("churn.cgroups",
            "Churn: pod cgroups created and removed while batch saturates the CPUs",
            "class map ends with exactly the live entries; no watchdog ejection", vm=True),
    RowSpec("churn.map_full",
            "Map full: more pods than the class map holds",
            "reconcile reports it and keeps the highest classes"),
)
BY_ID = {r.id: r for r in ROWS}
