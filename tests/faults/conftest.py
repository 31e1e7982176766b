"""The faults suite: scale, per-case time bound, and the results recorder.

Every test counts its cases into a row of the faults table (tests/faults/rows.py):
`row.tried()` when a case starts, `row.survived()` when its assertions held,
`row.observe(label)` to tally what was seen (e.g. which gate check refused).
At the end of the session the rows touched are merged into a JSON file
(SCX_SLO_FAULTS_RESULTS, default build/faults/results.json), from which
tests/faults/make_table.py renders docs/faults.md.

Scale: SCX_SLO_FAULTS_SCALE=quick (default, CI) or large.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import signal
import subprocess
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from faults.rows import BY_ID

REPO = Path(__file__).resolve().parents[2]
SCALE = os.environ.get("SCX_SLO_FAULTS_SCALE", "quick").strip().lower()
if SCALE not in ("quick", "large"):
    raise pytest.UsageError(f"SCX_SLO_FAULTS_SCALE={SCALE!r}: use quick or large")
RESULTS = Path(os.environ.get("SCX_SLO_FAULTS_RESULTS", REPO / "build" / "faults" / "results.json"))


def size(quick: int, large: int) -> int:
    """A case count for this scale."""
    return large if SCALE == "large" else quick


class CaseTimeout(Exception):
    """A case ran past its time bound (a hang)."""


@contextlib.contextmanager
def time_bound(seconds: float):
    """Raise CaseTimeout in this (main) thread if the block uses more than SECONDS of CPU.

    CPU time (ITIMER_PROF), not wall time: the suite shares 2 cores with VMs booting, and a
    case that waits its turn is not a hang; a parser spinning on a hostile input is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _alarm(_sig, _frame):
        raise CaseTimeout(f"case still running after {seconds} s of CPU")

    old = signal.signal(signal.SIGPROF, _alarm)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, old)


@dataclass
class Row:
    id: str
    tried_n: int = 0
    survived_n: int = 0
    seen: Counter = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def tried(self, n: int = 1) -> None:
        self.tried_n += n

    def survived(self, n: int = 1) -> None:
        self.survived_n += n

    def observe(self, label: str, n: int = 1) -> None:
        self.seen[label] += n

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def check(self, label: str, ok: bool, detail: str = "") -> bool:
        """One case judged by a condition, so a test can judge several and report all:
        counted as tried, survived if OK; failures are kept for the test to assert on."""
        self.tried()
        if ok:
            self.survived()
            self.observe(label)
        else:
            self.fail_note(f"{label}: {detail[:500]}" if detail else label)
            self.observe(f"FAILED: {label}")
        return ok

    @contextlib.contextmanager
    def case(self):
        """One case: counted as tried on entry, survived if the block finishes."""
        self.tried()
        try:
            yield
        except BaseException as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            self.fail_note(f"{type(exc).__name__}: {first}")
            raise
        self.survived()

    def fail_note(self, text: str) -> None:
        if text not in self.failures and len(self.failures) < 8:
            self.failures.append(text)


class Table:
    def __init__(self):
        self.rows: dict[str, Row] = {}

    def row(self, row_id: str) -> Row:
        if row_id not in BY_ID:
            raise KeyError(f"{row_id!r} is not a row of tests/faults/rows.py")
        return self.rows.setdefault(row_id, Row(row_id))


TABLE = Table()


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], check=False, cwd=REPO,
                              capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def write_results(table: Table, path: Path = RESULTS) -> None:
    """Merge the rows this session touched into PATH (rows not run keep their last result)."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        old = {}
    rows = old.get("rows", {}) if isinstance(old, dict) else {}
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    commit = _git_commit()
    for r in table.rows.values():
        if r.tried_n == 0:
            continue
        rows[r.id] = {"tried": r.tried_n, "survived": r.survived_n,
                      "seen": dict(r.seen.most_common()), "notes": r.notes,
                      "failures": r.failures,
                      "scale": SCALE, "when": now, "commit": commit,
                      "host": f"{platform.system()} {platform.release()}"}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"rows": rows}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


@pytest.fixture(scope="session", autouse=True)
def _record_results():
    yield
    write_results(TABLE)


@pytest.fixture(scope="session")
def fault_table() -> Table:
    return TABLE


@pytest.fixture(scope="module")
def fvm(vm_factory):
    """One VM (2 vCPUs) per faults module that needs the kernel: boots are reused within
    the module, and the state a fault leaves behind cannot leak into other suites."""
    return vm_factory(cpus=2)
