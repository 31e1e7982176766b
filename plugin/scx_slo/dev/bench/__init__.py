"""`scx-slo bench`: the guide's demo, measured.

A latency-critical pod (an HTTP server answering /delay/<s>, driven by an
open-loop client, plus a wakeup-latency probe) shares the CPUs with a batch pod
running stress-ng hogs at 4x the CPUs, in pod-shaped cgroups with the
kubelet's cpu.weight values, under several EEVDF configurations and under
scx_slo, side by side in one run.

    stats     percentiles, open-loop arithmetic, CDF points, kubelet weights
    pods      kubepods-shaped cgroups, processes started in container scopes
    workloads the server, the client, the probe (subprocesses), stress-ng parsing
    runner    the guest side: each configuration, measured (needs root)
    report    figures, targets, markdown table, summary
    plot      the PNG (host side, matplotlib)
    host      boot the VM, run the guest side, write the outputs
"""
