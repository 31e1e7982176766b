"""The benchmark's arithmetic: percentiles, open-loop schedules, CDFs, ratios.

Pure functions of numbers (no I/O), shared by the guest side that measures and
the host side that reports, and unit-tested on the host.

Percentiles use the nearest-rank definition: the q-quantile of n sorted samples
is the smallest sample x such that at least ceil(q * n) samples are <= x. So p99
of 100 samples is the 99th smallest, and a reported p99 is always a latency some
request really had.

Open loop: request i is *intended* to be sent at start + i / rate whatever
happened to the earlier ones, and its latency is counted from that intended
time. A load generator that was itself delayed (or that waits for answers
before sending, "coordinated omission") would otherwise hide exactly the stalls
this benchmark is about.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank q-quantile (0 < q <= 1) of an ascending sequence."""
    if not sorted_values:
        raise ValueError("percentile of no samples")
    if not 0.0 < q <= 1.0:
        raise ValueError(f"quantile {q} is outside (0, 1]")
    rank = math.ceil(q * len(sorted_values) - 1e-9)
    return sorted_values[max(rank, 1) - 1]


def summarize(values: Iterable[float], qs: Sequence[float] = (0.5, 0.99, 0.999)) -> dict:
    """n, the named percentiles (p50, p99, p99.9 ...) and max of VALUES."""
    s = sorted(values)
    out: dict = {"n": len(s)}
    if not s:
        out.update({qname(q): None for q in qs})
        out["max"] = None
        return out
    for q in qs:
        out[qname(q)] = percentile(s, q)
    out["max"] = s[-1]
    return out


def qname(q: float) -> str:
    """0.5 -> 'p50', 0.99 -> 'p99', 0.999 -> 'p99.9'."""
    text = f"{q * 100:.6f}".rstrip("0").rstrip(".")
    return f"p{text}"


def intended_send_times(rate_hz: float, duration_s: float) -> list[float]:
    """Offsets (s, from the start) at which an open-loop client sends: i / rate, i >= 0,
    strictly before duration_s."""
    if rate_hz <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    n = math.ceil(rate_hz * duration_s - 1e-9)
    return [i / rate_hz for i in range(n)]


def open_loop_latencies(intended: Sequence[float], completed: Sequence[float | None],
                        end: float) -> tuple[list[float], int]:
    """Latency of each request from its intended send time.

    COMPLETED[i] is when request i finished (same clock as INTENDED), or None if it
    never did by END; such a request counts with latency END - intended (a lower
    bound: it is never dropped, which would flatter the tail). Returns
    (latencies, number of requests that had not completed)."""
    if len(intended) != len(completed):
        raise ValueError("intended and completed differ in length")
    out, unfinished = [], 0
    for t_int, t_done in zip(intended, completed):
        if t_done is None:
            unfinished += 1
            t_done = max(end, t_int)
        out.append(max(0.0, t_done - t_int))
    return out, unfinished


def cdf_points(values: Iterable[float], max_points: int = 400) -> list[list[float]]:
    """A compact CDF for plotting: [value, fraction <= value] pairs, dense in the tail.

    Keeps every sample of the top 1 % (up to max_points / 2 of them) and spaces the
    rest evenly in log(1 - F), so a log-scale tail plot loses nothing that matters."""
    s = sorted(values)
    n = len(s)
    if n == 0:
        return []
    if n <= max_points:
        return [[v, (i + 1) / n] for i, v in enumerate(s)]
    idx: set[int] = set()
    half = max_points // 2
    for k in range(half):   # 1 - F from 1 down to 1/n, log-spaced
        frac = 10 ** (-math.log10(n) * k / max(half - 1, 1))
        idx.add(min(n - 1, max(0, math.ceil((1 - frac) * n) - 1)))
    tail = max(1, n // 100)
    idx.update(range(max(0, n - min(tail, half)), n))
    return [[s[i], (i + 1) / n] for i in sorted(idx)]


def ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den is 0."""
    if num is None or den is None or den == 0:
        return None
    return num / den


def kubelet_cpu_weight(millicpu: int | None) -> int:
    """cpu.weight the kubelet writes for a CPU request (None/0: BestEffort).

    shares = max(2, millicpu * 1024 / 1000) (MilliCPUToShares), then the cgroup
    v2 conversion 1 + (shares - 2) * 9999 / 262142. 500m -> 20, 2 CPUs -> 79,
    BestEffort -> 1."""
    shares = 2 if not millicpu else max(2, millicpu * 1024 // 1000)
    shares = min(shares, 262144)
    return 1 + ((shares - 2) * 9999) // 262142
