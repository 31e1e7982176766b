"""The node agent (`scx-slo run`): its loop (loop), the cgroup tree and pods (cgroups,
cri, reconcile), cpu.max from cgroupfs (bandwidth), preflight checks (preflight),
OpenMetrics (metrics, histogram) and journald/stdout reporting (journal). Built on
scx_slo.loader; imports nothing from scx_slo.dev."""
