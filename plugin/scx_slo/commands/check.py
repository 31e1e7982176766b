"""`scx-slo check [--json]`: preflight checks, each with a fix hint.

Exit codes: 0 ready, 1 a problem was found, 2 usage.
"""
from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.epilog = "exit status: 0 ready, 1 a problem was found, 2 usage error"


def run(args) -> int:
    from scx_slo.agent.preflight import Preflight

    checks = Preflight().run()
    ready = all(c.ok for c in checks)
    if args.json:
        print(json.dumps({"ready": ready, "checks": [c.as_dict() for c in checks]}, indent=2))
    else:
        for c in checks:
            print(f"{'ok  ' if c.ok else 'FAIL'} {c.name:16} {c.detail}")
            if c.hint:
                print(f"     {'':16} fix: {c.hint}")
        print("ready: scx_slo can run here" if ready else "not ready: see FAIL lines above")
    return 0 if ready else 1
