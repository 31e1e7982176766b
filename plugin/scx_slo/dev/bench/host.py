"""The host side of `scx-slo bench`: boot the VM, run the guest side, write outputs.

    doc = run_in_vm(["--quick"], cpus=1, progress=print)   # the guest's result document
    paths = write_outputs(analyze(doc), "bench-results")   # bench.json, bench.md, bench.png
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable

from scx_slo.dev.bench.report import analyze, markdown
from scx_slo.errors import ScxSloError

GUEST_OUT = "/tmp/scx-slo-bench"


class BenchRunError(ScxSloError):
    """The guest side of the benchmark failed."""


def guest_argv(options: list[str]) -> list[str]:
    return ["python3", "-m", "scx_slo", "bench", "--here", "--json", "--no-plot",
            "--out", GUEST_OUT, *options]


def run_in_vm(options: list[str], cpus: int = 1, vm=None, timeout: float = 3600,
              progress: Callable[[str], None] | None = None, kernel: str | None = None,
              trees: dict[str, Path] | None = None) -> dict:
    """Run the guest side with OPTIONS (e.g. ["--quick"]) in VM, or in a VM booted here
    on KERNEL (a name in scx_slo.dev.vm.kernels.NAMES; default the VM's default) with
    TREES (guest directory -> host directory) carried in."""
    from scx_slo.dev.vm import Vm

    say = progress or (lambda m: None)
    if vm is None:
        say(f"booting the sched_ext VM ({cpus} vCPU)...")
        with Vm(cpus=cpus, mem_mb=1024, kernel=kernel, trees=trees) as booted:
            say(f"booted {booted.kernel_release} ({booted.accel})")
            return run_in_vm(options, cpus, booted, timeout, progress)

    def stream(name: str, data: str) -> None:
        if name == "stderr" and progress:
            for line in data.splitlines():
                say(line[len("bench: "):] if line.startswith("bench: ") else line)

    r = vm.run(guest_argv(options), timeout=timeout, on_output=stream)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if r.returncode != 0 or not lines:
        raise BenchRunError(f"the benchmark failed in the VM (exit {r.returncode}"
                            f"{', timed out' if r.timed_out else ''}): "
                            f"{r.stderr.strip()[-1500:]}")
    doc = json.loads(lines[-1])
    doc["accel"] = vm.accel
    doc["vm_cpus"] = vm.cpus
    return doc


def write_outputs(doc: dict, out_dir: str | Path, plot: bool = True,
                  warn: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
                  stem: str = "bench") -> dict:
    """STEM.json, STEM.md and (with matplotlib) STEM.png in OUT_DIR; their paths."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md"}
        paths["json"].write_text(json.dumps(doc, indent=1) + "\n")
        paths["markdown"].write_text(markdown(doc))
    except OSError as e:
        raise BenchRunError(f"{out}: cannot write the results: {e.strerror}") from None
    if plot:
        from scx_slo.dev.bench.plot import PlotError, plot as draw
        try:
            paths["png"] = draw(doc, out / f"{stem}.png")
        except PlotError as e:
            warn(f"no plot: {e}")
    return paths


__all__ = ["analyze", "run_in_vm", "write_outputs", "BenchRunError"]
