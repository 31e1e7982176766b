"""Speed of the gate: median wall time of an `scx-slo inspect` process on the shipped
scheduler object, the first time a kernel BTF is seen (it is parsed) and after (the
answers come from the gate's cache), and of parsing a ~5 MB kernel BTF (the host's
/sys/kernel/btf/vmlinux by default).

Targets: inspect process <= 150 ms once the kernel's answers are cached, kernel BTF
parse <= 1 s. Printed as ratios to the targets, never asserted.

    python benchmarks/inspect_speed.py [--object PATH] [--kernel-btf PATH] [--runs N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scx_slo import default_object_path
from scx_slo.loader import gate
from scx_slo.loader.btf import Btf, Kind

INSPECT_TARGET_S = 0.150
BTF_TARGET_S = 1.0


def _median(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--object", default=str(default_object_path()))
    p.add_argument("--kernel-btf", default=str(gate.DEFAULT_KERNEL_BTF))
    p.add_argument("--runs", type=int, default=9)
    args = p.parse_args()

    kbtf = Path(args.kernel_btf)
    size_mb = kbtf.stat().st_size / 1e6

    def parse_btf():
        b = Btf.from_file(kbtf)
        b.find("task_struct", Kind.STRUCT)  # includes building the name index

    def inspect_process(env):
        subprocess.run([sys.executable, "-m", "scx_slo", "inspect", args.object,
                        "--kernel-btf", str(kbtf)], env=env, stdout=subprocess.DEVNULL,
                       check=False)

    t_btf = _median(parse_btf, args.runs)
    with tempfile.TemporaryDirectory() as cache:
        cold = []
        for i in range(args.runs):
            env = {**os.environ, "SCX_SLO_CACHE": f"{cache}/{i}"}
            t0 = time.perf_counter()
            inspect_process(env)
            cold.append(time.perf_counter() - t0)
        env = {**os.environ, "SCX_SLO_CACHE": f"{cache}/0"}
        t_warm = _median(lambda: inspect_process(env), args.runs)
    t_cold = statistics.median(cold)
    print(f"kernel BTF parse + name index ({kbtf}, {size_mb:.1f} MB): "
          f"median {t_btf * 1e3:.0f} ms over {args.runs} runs; "
          f"{t_btf / BTF_TARGET_S:.2f}x of the {BTF_TARGET_S * 1e3:.0f} ms target")
    print(f"`scx-slo inspect {args.object}`, first time this kernel BTF is seen: "
          f"median {t_cold * 1e3:.0f} ms over {args.runs} runs")
    print(f"`scx-slo inspect`, kernel answers cached: median {t_warm * 1e3:.0f} ms over "
          f"{args.runs} runs; {t_warm / INSPECT_TARGET_S:.2f}x of the "
          f"{INSPECT_TARGET_S * 1e3:.0f} ms target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
