"""Agent footprint with many pods: RSS and CPU of `scx-slo run` (prints, asserts nothing).

Run inside the VM (it needs the sched_ext kernel and root):

    .venv/bin/scx-slo vm run -- python3 /opt/scx-slo/src/benchmarks/agent_footprint.py [--pods 500]

Builds PODS pod slices (each with a container scope) in the kubelet's layout,
serves them over the fake CRI, starts the agent, lets it settle, then samples
its RSS and CPU time over a window. Targets: RSS <= 60 MB, CPU < 1% of a core.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, "/opt/scx-slo/src/tests")
from fake_cri import start as start_cri  # noqa: E402

KP = Path("/sys/fs/cgroup/kubepods.slice")
TICK = os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=500)
    ap.add_argument("--window", type=float, default=30.0)
    args = ap.parse_args()

    KP.mkdir(exist_ok=True)
    qos = KP / "kubepods-burstable.slice"
    qos.mkdir(exist_ok=True)
    pods = []
    for i in range(args.pods):
        uid = f"00000000-0000-4000-8000-{i:012d}"
        pod = qos / f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
        pod.mkdir()
        (pod / f"cri-containerd-{i:064x}.scope").mkdir()
        pods.append({"uid": uid, "namespace": "web" if i % 10 == 0 else "batch", "name": f"p{i}"})
    cri = start_cri("/run/cri.sock", pods=pods)
    work = Path("/tmp/footprint")
    work.mkdir(exist_ok=True)
    (work / "user-data").write_text('[[class]]\nname = "frontend"\np99 = "200ms"\n\n'
                                    '[[rule]]\nclass = "frontend"\nnamespace = "web"\n')
    t0 = time.monotonic()
    agent = subprocess.Popen([sys.executable, "-m", "scx_slo", "run", "--user-data",
                              str(work / "user-data"), "--state-dir", str(work / "state"),
                              "--cri-socket", "/run/cri.sock", "--api-socket", "/nonexistent",
                              "--interval", "10"], stdout=open(work / "agent.log", "w"),
                             stderr=subprocess.STDOUT)
    while "class frontend: pods=" not in (work / "agent.log").read_text():
        if agent.poll() is not None or time.monotonic() - t0 > 300:
            print((work / "agent.log").read_text())
            raise SystemExit("the agent did not come up")
        time.sleep(0.5)
    startup = time.monotonic() - t0
    time.sleep(5)
    c0, w0 = cpu_s(agent.pid), time.monotonic()
    peak = 0.0
    while time.monotonic() - w0 < args.window:
        peak = max(peak, rss_mb(agent.pid))
        time.sleep(1)
    cpu_pct = 100 * (cpu_s(agent.pid) - c0) / (time.monotonic() - w0)
    agent.terminate()
    agent.wait(timeout=60)
    subprocess.run([sys.executable, "-m", "scx_slo", "stop"], capture_output=True)
    cri.stop()
    shutil.rmtree(work, ignore_errors=True)
    print(f"agent with {args.pods} pod cgroups (guest under emulation; Python here runs ~4-5x "
          f"slower than on a node):")
    print(f"  startup to first report : {startup:.1f} s")
    print(f"  RSS peak                : {peak:.1f} MB   (target <= 60 MB: "
          f"{'met' if peak <= 60 else 'NOT met'})")
    print(f"  CPU over {args.window:.0f} s          : {cpu_pct:.2f} % of a core "
          f"(target < 1%: {'met' if cpu_pct < 1 else 'NOT met'})")


if __name__ == "__main__":
    main()
