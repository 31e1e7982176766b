"""The `scx-slo` command line.

Each subcommand lives in its own module under scx_slo.commands, which provides
`add_arguments(parser)` and `run(args) -> int`. Command modules import their
heavy dependencies inside run(), so `--help` stays fast and one command's
dependencies never break another's.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

from scx_slo import __version__
from scx_slo.errors import ScxSloError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("scx_slo.commands.check", "preflight: is this node ready to run scx_slo?"),
    "inspect": ("scx_slo.commands.inspect", "check a BPF object with the ELF/BTF gate"),
    "settings": ("scx_slo.commands.settings", "validate, render, apply and show settings"),
    "run": ("scx_slo.commands.run", "the host container's agent: load or adopt, reconcile, report"),
    "status": ("scx_slo.commands.status", "show the attached scheduler, classes and latency"),
    "stop": ("scx_slo.commands.stop", "detach the scheduler and remove its pins"),
    "bench": ("scx_slo.commands.bench", "measure latency under a noisy neighbour, per policy"),
    "demo": ("scx_slo.commands.demo", "the quick benchmark with a short summary"),
    "image": ("scx_slo.commands.image", "build the OCI host-container image"),
    "vm": ("scx_slo.commands.vm", "build and boot the sched_ext test VM"),
}


# Commands that need the development tooling (scx_slo.dev), which the image leaves out.
DEV_COMMANDS = frozenset({"bench", "demo", "image", "vm"})


def available_commands() -> dict[str, tuple[str, str]]:
    have_dev = importlib.util.find_spec("scx_slo.dev") is not None
    return {name: spec for name, spec in COMMANDS.items()
            if (have_dev or name not in DEV_COMMANDS)
            and importlib.util.find_spec(spec[0]) is not None}


def build_parser(commands: dict[str, tuple[str, str]],
                 only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, the other commands' modules are not imported (their
    subparsers then have no arguments: enough to list them and to run `only`)."""
    parser = argparse.ArgumentParser(prog="scx-slo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"scx-slo {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for libbpf debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_) in commands.items():
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(_module=module)
        if only is None or name == only:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    commands = available_commands()
    words = [a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")]
    only = words[0] if words and words[0] in commands else None
    args = build_parser(commands, only).parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return importlib.import_module(args._module).run(args)
    except ScxSloError as e:
        print(f"scx-slo {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1


if __name__ == "__main__":
    sys.exit(main())
