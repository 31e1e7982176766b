"""Latency percentiles from the scheduler's log2 histograms.

Bucket i counts wakeup-to-run delays in [2^i, 2^(i+1)) ns (bucket 0 also
holds 0 and 1 ns). Percentiles are interpolated linearly inside the bucket
that holds them, so they are estimates within a factor of two by design.
"""
from __future__ import annotations

from typing import Sequence


def merge(per_cpu: Sequence[Sequence[int]]) -> list[int]:
    """Sum per-CPU histograms bucket by bucket."""
    return [sum(col) for col in zip(*per_cpu)] if per_cpu else []


def delta(now: Sequence[int], before: Sequence[int] | None) -> list[int]:
    if before is None:
        return list(now)
    return [max(0, a - b) for a, b in zip(now, before)]


def percentile(hist: Sequence[int], q: float) -> float | None:
    """The q-th quantile (0 < q <= 1) in ns, or None for an empty histogram."""
    if not 0 < q <= 1:
        raise ValueError("q must be in (0, 1]")
    total = sum(hist)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        if n and seen + n >= rank:
            lo, hi = (0 if i == 0 else 1 << i), 1 << (i + 1)
            return lo + (hi - lo) * (rank - seen) / n
        seen += n
    return float(1 << len(hist))


def fmt_ns(ns: float | None) -> str:
    if ns is None:
        return "-"
    if ns >= 1e9:
        return f"{ns / 1e9:.2f}s"
    if ns >= 1e6:
        return f"{ns / 1e6:.1f}ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.0f}us"
    return f"{ns:.0f}ns"
