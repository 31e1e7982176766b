"""Speed of the gate: median time to inspect the shipped scheduler object, and to
parse a ~5 MB kernel BTF (the host's /sys/kernel/btf/vmlinux by default).

Targets (issue 3): inspect <= 200 ms, kernel BTF parse <= 1 s. Printed as
ratios to the targets, never asserted.

    python benchmarks/inspect_speed.py [--object PATH] [--kernel-btf PATH] [--runs N]
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from scx_slo import default_object_path, gate
from scx_slo.btf import Btf, Kind

INSPECT_TARGET_S = 0.200
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

    def inspect():
        gate.inspect(args.object, kernel_btf=kbtf)

    t_btf = _median(parse_btf, args.runs)
    t_inspect = _median(inspect, args.runs)
    print(f"kernel BTF parse + name index ({kbtf}, {size_mb:.1f} MB): "
          f"median {t_btf * 1e3:.0f} ms over {args.runs} runs; "
          f"{t_btf / BTF_TARGET_S:.2f}x of the {BTF_TARGET_S * 1e3:.0f} ms target")
    print(f"inspect {args.object} (including that kernel BTF): "
          f"median {t_inspect * 1e3:.0f} ms over {args.runs} runs; "
          f"{t_inspect / INSPECT_TARGET_S:.2f}x of the {INSPECT_TARGET_S * 1e3:.0f} ms target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
