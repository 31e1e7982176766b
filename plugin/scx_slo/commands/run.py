"""`scx-slo run`: the agent, the host container's main process."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    from scx_slo.settings.load import USER_DATA_PATH
    from scx_slo.settings.store import DEFAULT_STATE_DIR

    p.add_argument("--user-data", default=USER_DATA_PATH, help=f"settings TOML (default {USER_DATA_PATH})")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                   help="persistent directory for the last good settings and status")
    p.add_argument("--pin-dir", default=None,
                   help="bpffs directory to pin under (default: the host's bpffs)")
    p.add_argument("--cgroup-root", default="/sys/fs/cgroup")
    p.add_argument("--cri-socket", default=None,
                   help="container runtime socket (default: containerd's, found automatically)")
    p.add_argument("--api-socket", default="/run/api.sock", help="Bottlerocket API socket")
    p.add_argument("--name", default="scx-slo", help="this host container's name in the settings")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between status lines")
    p.add_argument("--resync", type=float, default=60.0, help="seconds between full resyncs")


def run(args) -> int:
    from scx_slo.agent.loop import Agent, Options

    opts = Options(user_data=args.user_data, state_dir=args.state_dir, pin_base=args.pin_dir,
                   cgroup_root=args.cgroup_root, cri_socket=args.cri_socket,
                   api_socket=args.api_socket, name=args.name, interval=args.interval,
                   resync=args.resync)
    return Agent(opts).run()
