"""`scx-slo vm build|kernel build|run`: the sched_ext test VM.

`vm run [--kernel 7.3|6.12] [--cpus N] [--sockets S] [--threads T] [--numa N] [--mem MB]
-- COMMAND...` boots a
sched_ext kernel under qemu with this checkout inside, runs COMMAND as root,
streams its output and exits with its exit code. `vm kernel build 6.12`
builds the 6.12 kernel (cached; a second run is instant).
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scx_slo.dev.vm.kernels import DEFAULT, NAMES

    sub = p.add_subparsers(dest="vm_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="get the kernel and build the guest rootfs (cached)")
    b.add_argument("--kernel", choices=NAMES, help=f"VM kernel (default $SCX_SLO_VM_KERNEL or {DEFAULT})")
    k = sub.add_parser("kernel", help="the VM's kernels")
    ksub = k.add_subparsers(dest="kernel_command", metavar="ACTION", required=True)
    kb = ksub.add_parser("build", help="download or build a VM kernel (cached), print where it is")
    kb.add_argument("name", choices=NAMES)
    r = sub.add_parser("run", help="boot the VM, run COMMAND in it, power off")
    r.add_argument("--kernel", choices=NAMES, help=f"VM kernel (default $SCX_SLO_VM_KERNEL or {DEFAULT})")
    r.add_argument("--cpus", type=int, default=1, help="virtual CPUs (default 1)")
    r.add_argument("--sockets", type=int, default=1, help="sockets the vCPUs are spread over")
    r.add_argument("--threads", type=int, default=1, help="SMT threads per core")
    r.add_argument("--numa", type=int, default=1, metavar="N",
                   help="NUMA nodes (the sockets and memory split evenly)")
    r.add_argument("--mem", type=int, default=1024, metavar="MB", help="guest memory (default 1024)")
    r.add_argument("--timeout", type=float, default=3600, help="seconds COMMAND may run")
    r.add_argument("--console", action="store_true", help="print the kernel console afterwards")
    r.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND...")


def run(args) -> int:
    from scx_slo.errors import ScxSloError
    from scx_slo.dev.vm import Vm, build, kernels
    from scx_slo.dev.vm.cache import cache_dir

    def progress(msg: str) -> None:
        print(f"vm: {msg}", file=sys.stderr, flush=True)

    try:
        if args.vm_command == "build":
            build(progress=progress, kernel=args.kernel)
            return 0
        if args.vm_command == "kernel":
            k = kernels.get(args.name, cache_dir(), progress=progress)
            print(f"{args.name}: {k.version} {k.vmlinuz}")
            return 0
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        if not argv:
            print("scx-slo vm run: give a command after --", file=sys.stderr)
            return 2

        def stream(name: str, data: str) -> None:
            (sys.stdout if name == "stdout" else sys.stderr).write(data)
            (sys.stdout if name == "stdout" else sys.stderr).flush()

        with Vm(cpus=args.cpus, mem_mb=args.mem, kernel=args.kernel, sockets=args.sockets,
                threads=args.threads, numa_nodes=args.numa) as vm:
            progress(f"booted {vm.kernel_release} ({vm.accel}, {args.cpus} vCPU)")
            result = vm.run(argv, timeout=args.timeout, on_output=stream)
            if args.console:
                progress("console:\n" + vm.console_tail(200))
        if result.timed_out:
            progress(f"command timed out after {args.timeout:.0f} s")
        return result.returncode if result.returncode >= 0 else 128 - result.returncode
    except ScxSloError as e:
        print(f"scx-slo vm: {e}", file=sys.stderr)
        return 1
