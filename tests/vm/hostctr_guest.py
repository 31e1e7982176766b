"""Guest side of the image's VM test (tests/test_image.py): runs inside the VM as root.

The image's root filesystem arrives unpacked at --rootfs. This lays it out as
Bottlerocket's host-ctr lays out a superpowered host container
(hostcontainer/emulate-host-ctr: host root read-only at /.bottlerocket/rootfs,
persistent storage with user-data at /.bottlerocket/host-containers/current,
a fake Bottlerocket API on /run/api.sock, host PID namespace) and runs the
image's entrypoint unchanged, with the image's own Python, libbpf and
scheduler object. Then it disables the host container in the API and sends
SIGTERM, as Bottlerocket does when an operator turns it off.
Prints one JSON object with what it observed; the host test asserts on it.
"""
from __future__ import annotations

import argparse
import base64
import json
import signal
import subprocess
import sys
from pathlib import Path

SRC = Path("/opt/scx-slo/src")
sys.path.insert(0, str(SRC / "tests"))
sys.path.insert(0, str(SRC / "tests" / "vm"))

from fake_bottlerocket_api import start as start_api  # noqa: E402
from polling import wait_for  # noqa: E402

from scx_slo.loader.sysfs import attached_ops, sched_ext_state  # noqa: E402

NAME = "scx-slo"
WORK = Path("/tmp/host-ctr")
API_SOCK = WORK / "api.sock"
PIN_PARENT = Path("/sys/fs/bpf/scx-slo")


def sched_ext() -> tuple[str, str]:
    return sched_ext_state(), attached_ops() or ""



def pins() -> list[str]:
    return sorted(str(p.relative_to(PIN_PARENT)) for p in PIN_PARENT.rglob("*")) \
        if PIN_PARENT.is_dir() else []


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rootfs", required=True)
    ap.add_argument("--user-data", required=True)
    args = ap.parse_args()
    out: dict = {"before": sched_ext()}

    storage = WORK / "local" / "host-containers" / NAME     # Bottlerocket: /local/host-containers/NAME
    storage.mkdir(parents=True)
    user_data = Path(args.user_data).read_bytes()
    (storage / "user-data").write_bytes(user_data)
    api = start_api(str(API_SOCK), settings={"host-containers": {NAME: {
        "source": "example.com/scx-slo:test", "enabled": True, "superpowered": True,
        "user-data": base64.b64encode(user_data).decode()}}})

    log_path = WORK / "console.log"       # what host-ctr would hand to the journal
    with open(log_path, "w") as log:
        ctr = subprocess.Popen([str(SRC / "hostcontainer" / "emulate-host-ctr"),
                                "--rootfs", args.rootfs, "--name", NAME,
                                "--storage", str(storage), "--api-sock", str(API_SOCK)],
                               stdout=log, stderr=subprocess.STDOUT)

    def console() -> str:
        return log_path.read_text(errors="replace")

    attached = wait_for(lambda: ctr.poll() is None and sched_ext() == ("enabled", "scx_slo")
                        and "loaded and attached" in console(), 240, 0.2)
    out["attached"] = bool(attached)
    out["after_start"] = sched_ext()
    # the agent reports a status line per class every interval (10 s by default)
    out["status_line"] = bool(wait_for(lambda: "class frontend: pods=" in console(), 60, 0.2))
    out["pins"] = pins()
    status = storage / "status.json"
    # written right after the status lines: wait for it, do not race it
    out["status_json"] = json.loads(status.read_text()) \
        if wait_for(status.exists, 30, 0.1) else None
    # every exec in the chain (unshare, chroot, env, start) replaced the process:
    # the child we started is the agent, the process host-ctr signals
    try:
        out["agent_cmdline"] = Path(f"/proc/{ctr.pid}/cmdline").read_bytes().split(b"\0")[:4]
        out["agent_cmdline"] = [a.decode() for a in out["agent_cmdline"]]
        out["agent_root"] = str(Path(f"/proc/{ctr.pid}/root").resolve())
    except OSError as e:
        out["agent_cmdline"] = f"gone: {e}"

    # An operator sets enabled = false; Bottlerocket stops the unit with SIGTERM.
    api.settings["host-containers"][NAME]["enabled"] = False
    ctr.send_signal(signal.SIGTERM)
    try:
        out["exit_code"] = ctr.wait(timeout=120)
    except subprocess.TimeoutExpired:
        ctr.kill()
        out["exit_code"] = f"no exit within 120 s of SIGTERM (killed: {ctr.wait()})"
    out["after_stop"] = sched_ext()
    out["pins_after_stop"] = pins()
    out["mounts_left"] = [m for m in Path("/proc/self/mounts").read_text().splitlines()
                          if args.rootfs in m]
    api.stop()
    out["console"] = console()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
