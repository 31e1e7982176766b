"""The optional OpenMetrics endpoint (off by default; loopback when on).

A prometheus_client collector reads the scheduler's maps on every scrape, so
the numbers are as fresh as the scrape and cost nothing between scrapes.
"""
from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

from scx_slo.errors import ScxSloError

COUNTERS = (("nr_wakeups", "wakeups", "Wakeups of tasks in the class"),
            ("nr_misses", "slo_misses", "Wakeup-to-run delays above the class's miss threshold"),
            ("nr_preempts", "preemptions", "CPUs preempted on behalf of the class"),
            ("nr_direct", "direct_dispatches", "Wakeups dispatched straight to an idle CPU"),
            ("nr_floor_boosts", "floor_boosts", "Batch slices forced by the starvation floor"),
            ("nr_throttled", "cpu_max_throttles",
             "Tasks held back because a cgroup had used its cpu.max quota"),
            ("nr_over_share", "over_share_enqueues",
             "Latency-critical enqueues served by weight: the cgroup had used its CPU share"),
            ("nr_preempt_llc", "preemptions_same_llc",
             "Preemptions whose victim shared the waking CPU's last-level cache"),
            ("nr_preempt_node", "preemptions_same_node",
             "Preemptions whose victim was in another LLC of the waking CPU's NUMA node"),
            ("nr_preempt_far", "preemptions_other_node",
             "Preemptions whose victim was on another NUMA node"))
# Counted by the CPU that moved the task, not by class: machine-wide (in class 0's entry).
QUEUE_COUNTERS = (("nr_steals", "queue_steals",
                   "Tasks a CPU with empty queues took from another LLC's queue"),
                  ("nr_balances", "queue_balances",
                   "Tasks taken from an LLC's queue that was a round longer than the taker's"))


class SchedulerCollector:
    def __init__(self, agent):
        self.agent = agent

    def collect(self):
        sched, config = self.agent.sched, self.agent.config
        attached = GaugeMetricFamily("scx_slo_attached", "1 when scx_slo is the attached scheduler")
        attached.add_metric([], 1.0 if self.agent.healthy() else 0.0)
        yield attached
        if sched is None or config is None:
            return
        pods = GaugeMetricFamily("scx_slo_pods", "Pods mapped to the class", labels=["class"])
        counters = {key: CounterMetricFamily(f"scx_slo_{name}", text, labels=["class"])
                    for key, name, text in COUNTERS}
        hist = HistogramMetricFamily("scx_slo_wakeup_latency_seconds",
                                     "Wakeup-to-run latency (log2 buckets)", labels=["class"])
        for c in config.classes:
            try:
                s = sched.stats(c.id)
            except ScxSloError:
                continue
            pods.add_metric([c.name], self.agent.pods_by_class.get(c.id, 0))
            for key, counter in counters.items():
                if key in s:        # an adopted object of an older build may lack a counter
                    counter.add_metric([c.name], s[key])
            cumulative, buckets = 0, []
            for i, n in enumerate(s["lat_hist"]):
                cumulative += n
                buckets.append((repr((1 << (i + 1)) / 1e9), cumulative))
            buckets.append(("+Inf", cumulative))
            hist.add_metric([c.name], buckets, sum_value=None)
        yield pods
        yield from counters.values()
        yield hist
        try:
            machine = sched.stats(0)
        except ScxSloError:
            machine = {}
        for key, name, text in QUEUE_COUNTERS:
            if key in machine:
                counter = CounterMetricFamily(f"scx_slo_{name}", text)
                counter.add_metric([], machine[key])
                yield counter
        if self.agent.misses is not None:
            yield from pod_misses(self.agent.misses.snapshot())


def pod_misses(pods) -> list:
    """Per-pod SLO misses and their delays, from the miss records (agent/alerts.py)."""
    from scx_slo.agent.alerts import DELAY_BUCKETS

    labels = ["namespace", "pod", "class"]
    total = CounterMetricFamily("scx_slo_pod_slo_misses", "SLO misses of the pod's tasks "
                                "(recorded ones: at most 160 per second per cgroup)", labels=labels)
    hist = HistogramMetricFamily("scx_slo_pod_miss_delay_seconds",
                                 "Wakeup-to-run delay of the pod's SLO misses", labels=labels)
    for p in pods:
        key = [p.pod.namespace, p.pod.name, p.class_name]
        total.add_metric(key, p.total)
        cumulative, buckets = 0, []
        for bound, n in zip((*map(repr, DELAY_BUCKETS), "+Inf"), p.buckets):
            cumulative += n
            buckets.append((bound, cumulative))
        hist.add_metric(key, buckets, sum_value=p.delay_sum_s)
    return [total, hist]


def serve(agent, address: str, port: int):
    """Start the endpoint in a thread; returns the server (call .shutdown())."""
    from prometheus_client import start_http_server

    if address not in ("127.0.0.1", "::1", "localhost"):
        raise ScxSloError(f"metrics.address {address!r}: only loopback addresses are allowed")
    registry = CollectorRegistry()
    registry.register(SchedulerCollector(agent))
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return server
