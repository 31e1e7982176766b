"""`scx-slo inspect`: run the ELF/BTF gate on a BPF scheduler object.

Exit 0 when the object is accepted, 1 when it is refused, 2 on usage errors.
"""
from __future__ import annotations

import argparse
import re
import sys


def _sha256(text: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", text):
        raise argparse.ArgumentTypeError("expected 64 hex digits")
    return text.lower()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("object", nargs="?", metavar="OBJECT",
                        help="BPF object to check (default: the scheduler shipped in the package)")
    parser.add_argument("--kernel-btf", metavar="PATH", default=None,
                        help="kernel BTF to check kfuncs and map types against "
                             "(default: /sys/kernel/btf/vmlinux)")
    parser.add_argument("--expect-sha256", metavar="HEX", type=_sha256, default=None,
                        help="refuse the object unless its SHA-256 is HEX")
    parser.add_argument("--settings", metavar="FILE", default=None,
                        help="take the object ([scheduler] object) and the sha256 pin "
                             "([scheduler] sha256) from this settings file")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    from scx_slo import default_object_path
    from scx_slo.loader import gate
    from scx_slo.errors import ScxSloError

    path, pin = args.object, args.expect_sha256
    if args.settings:
        from scx_slo.settings.load import load_file
        try:
            sched = load_file(args.settings).config.scheduler
        except ScxSloError as exc:
            print(f"scx-slo inspect: {exc}", file=sys.stderr)
            return 1
        path = path or sched.object_path()
        pin = pin or sched.sha256
    path = path or str(default_object_path())
    kernel_btf = args.kernel_btf or gate.DEFAULT_KERNEL_BTF
    report = gate.inspect(path, kernel_btf=kernel_btf, expect_sha256=pin)
    print(report.to_json() if args.json else report.render())
    if not report.accepted and not args.json:
        print(f"refused: {', '.join(c.name for c in report.failed)}", file=sys.stderr)
    return 0 if report.accepted else 1
