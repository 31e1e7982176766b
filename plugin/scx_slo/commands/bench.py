"""`scx-slo bench`: request and wakeup latency of a critical pod next to a noisy
batch pod, per scheduling policy (idle, EEVDF configurations, scx_slo); with
`--scenario shares`, the CPU each pod of a Kubernetes cgroup tree gets under EEVDF
and under scx_slo (scx_slo.dev.bench.shares).

By default it boots the sched_ext VM (1 vCPU) and runs there; --here runs on
this machine (root, a sched_ext kernel for the scx_slo configuration). Writes
bench.json, bench.md and bench.png (latency CDFs) to --out; prints the table
and the targets (measured ratios, pass/fail; the exit status does not depend
on them).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


SHARES_SECONDS = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", choices=("latency", "shares"), default="latency",
                   help="latency (default): the policies' latency table; shares: each pod's "
                        f"CPU under EEVDF and scx_slo ({SHARES_SECONDS:g} s per phase unless "
                        "--seconds; writes shares.json and shares.md)")
    p.add_argument("--quick", action="store_true",
                   help="25 s per configuration instead of 60 (about 4 minutes in all)")
    p.add_argument("--out", default="bench-results", metavar="DIR",
                   help="where bench.json, bench.md and bench.png go (default ./bench-results)")
    p.add_argument("--json", action="store_true",
                   help="print the result document as JSON instead of the table")
    p.add_argument("--cpus", type=_cpu_counts, default=None, metavar="N[,M]",
                   help="VM vCPUs, one table per count (default 1,2; 1 with --quick): latency "
                        "is judged on 1 (the emulator runs a multi-vCPU guest's vCPUs in "
                        "turns), 2 shows the same policies with cross-CPU wakeups; ignored "
                        "with --here")
    p.add_argument("--here", action="store_true",
                   help="run on this machine instead of the VM (root; a real node)")
    p.add_argument("--seconds", type=float, default=None,
                   help="measurement window per configuration (overrides --quick)")
    p.add_argument("--rate", type=float, default=None, help="requests per second (default 10)")
    p.add_argument("--delay", type=float, default=None,
                   help="designed request latency in seconds (default 0.1)")
    p.add_argument("--configs", default=None, metavar="A,B",
                   help="run only these configurations (default: all, in order)")
    p.add_argument("--no-plot", action="store_true", help="skip the PNG")
    p.add_argument("--baseline", default=None, metavar="REV",
                   help="also run scx_slo with the object of this git revision "
                        "(scx_slo_baseline), for the BPF cost per critical wakeup side by side")
    p.add_argument("--baseline-object", default=None, help=argparse.SUPPRESS)
    add_kernel_argument(p)


def _cpu_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(x) for x in text.split(","))
    except ValueError:
        counts = ()
    if not counts or any(n < 1 for n in counts) or len(set(counts)) != len(counts):
        raise argparse.ArgumentTypeError(f"{text!r}: give vCPU counts like 1 or 1,2")
    return counts


def cpu_counts(args) -> tuple[int, ...]:
    """The vCPU counts to run: --cpus, else 1 for a quick run and 1,2 for a full one."""
    if args.here:
        return (0,)
    if args.cpus:
        return args.cpus
    return (1,) if args.quick else (1, 2)


def add_kernel_argument(p: argparse.ArgumentParser) -> None:
    from scx_slo.dev.vm.kernels import DEFAULT, NAMES

    p.add_argument("--kernel", choices=NAMES, default=None,
                   help=f"VM kernel (default $SCX_SLO_VM_KERNEL or {DEFAULT}; 6.12 is "
                        "Bottlerocket's, HZ=100)")


def _params(args):
    from dataclasses import replace

    from scx_slo.dev.bench.runner import Params

    p = Params.quick() if args.quick else Params()
    if args.seconds is not None:
        p = replace(p, measure_s=args.seconds)
    if args.rate is not None:
        p = replace(p, rate_hz=args.rate)
    if args.delay is not None:
        p = replace(p, delay_s=args.delay)
    return p


def _configs(args) -> tuple[str, ...]:
    from scx_slo.dev.bench.runner import BASELINE, CONFIG_NAMES, DEFAULT_CONFIGS, BenchError

    with_baseline = bool(args.baseline or args.baseline_object)
    if not args.configs:
        return DEFAULT_CONFIGS + ((BASELINE,) if with_baseline else ())
    names = tuple(n.strip() for n in args.configs.split(",") if n.strip())
    unknown = [n for n in names if n not in CONFIG_NAMES]
    if unknown:
        raise BenchError(f"--configs: unknown configuration(s) {', '.join(unknown)} "
                         f"(have {', '.join(CONFIG_NAMES)})")
    if BASELINE in names and not with_baseline:
        raise BenchError(f"--configs: {BASELINE} needs --baseline REV")
    return names


def _forwarded(args) -> list[str]:
    opts = ["--quick"] if args.quick else []
    if args.scenario != "latency":
        opts += ["--scenario", args.scenario]
    for flag, value in (("--seconds", args.seconds), ("--rate", args.rate),
                        ("--delay", args.delay), ("--configs", args.configs)):
        if value is not None:
            opts += [flag, str(value)]
    return opts


def progress(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def measure(args, cpus: int) -> dict:
    """Run the benchmark (in a VM of CPUS vCPUs, or here with cpus 0) and return the
    analyzed document."""
    from scx_slo.dev.bench.report import analyze

    names = _configs(args)
    params = _params(args)
    with tempfile.TemporaryDirectory(prefix="scx-slo-baseline-") as tmp:
        baseline = args.baseline_object
        if args.baseline:
            from scx_slo.dev.baseline import build_object
            progress(f"building the scheduler object of {args.baseline}")
            baseline = str(build_object(args.baseline, Path(tmp)))
        if not cpus:
            from scx_slo.dev.bench.runner import run_all
            doc = run_all(params, names, log=progress, baseline_object=baseline)
        else:
            from scx_slo.dev.baseline import GUEST_DIR
            from scx_slo.dev.bench.host import run_in_vm
            options, trees = _forwarded(args), {}
            if baseline:
                trees[GUEST_DIR] = Path(baseline).parent
                options += ["--baseline-object", f"{GUEST_DIR}/{Path(baseline).name}"]
            doc = run_in_vm(options, cpus=cpus, progress=progress, kernel=args.kernel,
                            timeout=max(1800.0, len(names) * (params.measure_s * 8 + 120)),
                            trees=trees)
    if args.baseline:
        doc["baseline_rev"] = args.baseline
    return analyze(doc)


def measure_shares(args) -> dict:
    from scx_slo.dev.bench import shares

    if args.here:
        doc = shares.run_all(args.seconds or SHARES_SECONDS, log=progress)
    else:
        from scx_slo.dev.bench.host import run_in_vm
        doc = run_in_vm(_forwarded(args), cpus=cpu_counts(args)[0], progress=progress,
                        kernel=args.kernel)
    return shares.analyze(doc)


def run_shares(args) -> int:
    from scx_slo.dev.bench import shares
    from scx_slo.dev.bench.host import BenchRunError

    doc = measure_shares(args)
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "shares.json").write_text(json.dumps(doc, indent=1) + "\n")
        (out / "shares.md").write_text(shares.markdown(doc))
    except OSError as e:
        raise BenchRunError(f"{out}: cannot write the results: {e.strerror}") from None
    print(json.dumps(doc) if args.json else shares.markdown(doc))
    progress(f"wrote {out / 'shares.json'}, {out / 'shares.md'}")
    return 0


def run(args) -> int:
    from scx_slo.dev.bench.host import write_outputs
    from scx_slo.dev.bench.report import markdown

    if args.scenario == "shares":
        return run_shares(args)
    counts = cpu_counts(args)
    for cpus in counts:
        doc = measure(args, cpus)
        # one count: bench.*; several: bench-<n>cpu.* each
        stem = "bench" if len(counts) == 1 else f"bench-{cpus}cpu"
        paths = write_outputs(doc, args.out, plot=not args.no_plot, warn=progress, stem=stem)
        if args.json:
            print(json.dumps(doc))
        else:
            print(markdown(doc))
        progress("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
