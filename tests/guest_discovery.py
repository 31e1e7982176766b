"""Run inside the test VM (as root, real cgroup2): build a kubepods tree, put a
process in a container scope, serve its pods over a fake CRI socket, discover,
plan, watch, and print what was found as JSON. Cleans up after itself.

    python3 /opt/scx-slo/src/tests/guest_discovery.py
"""
from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

from scx_slo.agent import cgroups
from scx_slo.agent.cri import list_pods
from scx_slo.agent.reconcile import cgroup_patterns, plan
from scx_slo.settings.validate import validate_text

ROOT = "/sys/fs/cgroup"
HERE = os.path.dirname(os.path.abspath(__file__))
PODS = {
    "guaranteed": ("6a1f0c2e-0001-4d3e-9f00-00000000000a", "payments", "api"),
    "burstable": ("6a1f0c2e-0002-4d3e-9f00-00000000000b", "shop", "web"),
    "besteffort": ("6a1f0c2e-0003-4d3e-9f00-00000000000c", "jobs", "crunch"),
}
CID = "c0ffee" + "0" * 58
CONFIG = validate_text('''
[[class]]
name = "critical"
p99 = "20ms"
[[class]]
name = "interactive"
p99 = "200ms"
[[rule]]
class = "critical"
namespace = "payments"
[[rule]]
class = "interactive"
cgroup = "system.slice/*.service"
''', "guest.toml").config


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 8)]


def kernfs_id(path: str) -> int:
    """The cgroup id the kernel puts in the cgroup's file handle (kernfs node id,
    what BPF sees as cgrp->kn->id): name_to_handle_at(2), independent of stat."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fh = FileHandle(handle_bytes=8)
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(-100, path.encode(), ctypes.byref(fh), ctypes.byref(mount_id), 0):
        raise OSError(ctypes.get_errno(), f"name_to_handle_at {path}")
    return int.from_bytes(bytes(fh.f_handle[:fh.handle_bytes]), "little")


def slice_path(qos: str, uid: str) -> str:
    esc = uid.replace("-", "_")
    if qos == "guaranteed":
        return f"kubepods.slice/kubepods-pod{esc}.slice"
    return f"kubepods.slice/kubepods-{qos}.slice/kubepods-{qos}-pod{esc}.slice"


def main() -> int:
    made: list[str] = []
    procs: list[subprocess.Popen] = []
    out: dict = {}

    def mkdir(rel):
        os.mkdir(os.path.join(ROOT, rel))
        made.append(rel)

    try:
        for rel in ("kubepods.slice", "kubepods.slice/kubepods-burstable.slice",
                    "kubepods.slice/kubepods-besteffort.slice", "system.slice",
                    "system.slice/demo.service"):
            if not os.path.isdir(os.path.join(ROOT, rel)):
                mkdir(rel)
        scopes = {}
        for qos, (uid, _, _) in PODS.items():
            mkdir(slice_path(qos, uid))
            scopes[qos] = f"{slice_path(qos, uid)}/cri-containerd-{CID[:-1]}{len(scopes)}.scope"
            mkdir(scopes[qos])
        # a real process in the burstable pod's container scope
        sleeper = subprocess.Popen(["sleep", "300"])
        procs.append(sleeper)
        with open(os.path.join(ROOT, scopes["burstable"], "cgroup.procs"), "w") as f:
            f.write(str(sleeper.pid))
        with open(f"/proc/{sleeper.pid}/cgroup") as f:
            out["sleeper_cgroup"] = f.read().strip().split("::", 1)[1]

        tmp = tempfile.mkdtemp()
        sock, pods_json = os.path.join(tmp, "containerd.sock"), os.path.join(tmp, "pods.json")
        with open(pods_json, "w") as f:
            json.dump([{"uid": u, "namespace": ns, "name": n}
                       for u, ns, n in PODS.values()], f)
        cri = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_cri.py"),
                                "--socket", sock, "--pods-json", pods_json],
                               stdout=subprocess.PIPE, text=True)
        procs.append(cri)
        out["fake_cri"] = cri.stdout.readline().strip()

        t0 = time.monotonic()
        found = cgroups.discover_pods(ROOT)
        out["discover_ms"] = (time.monotonic() - t0) * 1000
        out["pods"] = [{"uid": p.uid, "qos": p.qos, "path": p.path, "cgroup_id": p.cgroup_id,
                        "kernfs_id": kernfs_id(os.path.join(ROOT, p.path)),
                        "containers": [{"path": c.path, "cgroup_id": c.cgroup_id,
                                        "kernfs_id": kernfs_id(os.path.join(ROOT, c.path))}
                                       for c in p.containers]} for p in found]
        globbed = cgroups.match_globs(ROOT, cgroup_patterns(CONFIG))
        out["globbed"] = [{"path": c.path, "cgroup_id": c.cgroup_id,
                           "kernfs_id": kernfs_id(os.path.join(ROOT, c.path))} for c in globbed]
        cri_pods = list_pods(sock, timeout=10)
        out["cri_uids"] = sorted(p.uid for p in cri_pods)
        p = plan(CONFIG, found, cri_pods, globbed, current={})
        out["desired"] = {str(k): v for k, v in p.desired.items()}

        # the watcher on the real cgroupfs: a new pod slice and its removal
        with cgroups.CgroupWatcher(ROOT, resync_interval=60) as w:
            out["watch_mode"] = w.mode
            w.poll(0)
            new = slice_path("burstable", "6a1f0c2e-0004-4d3e-9f00-00000000000d")
            stamp = {}

            def act(fn):
                time.sleep(0.3)
                stamp["t"] = time.monotonic()
                fn(os.path.join(ROOT, new))

            for kind, fn in (("created", os.mkdir), ("removed", os.rmdir)):
                th = threading.Thread(target=act, args=(fn,))
                th.start()
                seen = None
                t_end = time.monotonic() + 5
                while seen is None and time.monotonic() < t_end:
                    for c in w.poll(timeout=0.5):
                        if c.kind == kind and c.path == new:
                            seen = time.monotonic() - stamp["t"]
                th.join()
                out[f"watch_{kind}_ms"] = None if seen is None else seen * 1000
        # remove a pod: it leaves discovery and the plan removes its entry
        gone = scopes["besteffort"]
        os.rmdir(os.path.join(ROOT, gone))
        os.rmdir(os.path.join(ROOT, os.path.dirname(gone)))
        made.remove(gone)
        made.remove(os.path.dirname(gone))
        current = {int(k): v[0] for k, v in out["desired"].items()}
        p2 = plan(CONFIG, cgroups.discover_pods(ROOT), cri_pods, globbed, current)
        out["after_removal"] = {"removes": p2.removes, "adds": p2.adds, "changes": p2.changes}
    finally:
        for pr in procs:
            pr.terminate()
            pr.wait()
        for rel in reversed(made):
            try:
                os.rmdir(os.path.join(ROOT, rel))
            except OSError as e:
                out.setdefault("cleanup_errors", []).append(f"{rel}: {e}")
        print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
