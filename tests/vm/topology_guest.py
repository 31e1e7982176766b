"""In the VM: the CPU topology the guest kernel sees, from sysfs, as JSON."""
from __future__ import annotations

import json
from pathlib import Path

CPU = Path("/sys/devices/system/cpu")
NODE = Path("/sys/devices/system/node")


def read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:
        return None


def llc(cpu: Path) -> str | None:
    """shared_cpu_list of the cpu's highest-level unified or data cache."""
    caches = []
    for idx in (cpu / "cache").glob("index*"):
        if read(idx / "type") in ("Unified", "Data"):
            caches.append((int(read(idx / "level") or 0), read(idx / "shared_cpu_list")))
    return max(caches)[1] if caches else None


cpus = sorted((p for p in CPU.glob("cpu[0-9]*")), key=lambda p: int(p.name[3:]))
print(json.dumps({
    "online": read(CPU / "online"),
    "cpus": {p.name: {"package": read(p / "topology" / "physical_package_id"),
                      "core": read(p / "topology" / "core_id"),
                      "siblings": read(p / "topology" / "thread_siblings_list"),
                      "llc": llc(p)} for p in cpus},
    "nodes": {p.name: read(p / "cpulist") for p in sorted(NODE.glob("node[0-9]*"))},
}))
