"""`scx-slo demo`: the quick benchmark in the VM, with a short human summary.

The guide's demo, measured: a critical pod's request and wakeup latency next to
batch hogs, under the kernel's EEVDF configurations and under scx_slo.
"""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench-results", metavar="DIR",
                   help="where bench.json, bench.md and bench.png go (default ./bench-results)")
    p.add_argument("--cpus", type=int, default=1, help="VM vCPUs (default 1)")
    p.add_argument("--here", action="store_true",
                   help="run on this machine instead of the VM (root; a real node)")
    from scx_slo.commands.bench import add_kernel_argument
    add_kernel_argument(p)


def run(args) -> int:
    from scx_slo.dev.bench.host import write_outputs
    from scx_slo.dev.bench.report import markdown, summary, target_line
    from scx_slo.commands import bench

    ns = argparse.Namespace(quick=True, out=args.out, json=False, cpus=(args.cpus,),
                            here=args.here, kernel=args.kernel, seconds=None, rate=None, delay=None, configs=None,
                            no_plot=False)
    bench.progress("the quick benchmark: 7 configurations, about 5 minutes under emulation")
    doc = bench.measure(ns, 0 if args.here else args.cpus)
    paths = write_outputs(doc, args.out, warn=bench.progress)
    print(markdown(doc).split("\n\nClient misses")[0])
    print()
    print(summary(doc))
    for t in doc["targets"]:
        print(target_line(t))
    print(f"\nplot: {paths.get('png', '(none: matplotlib missing)')}; "
          f"table: {paths['markdown']}; data: {paths['json']}")
    return 0
