"""The latency CDF plot (PNG), drawn on the host from the JSON with matplotlib.

Two panels, one line per configuration: request latency and wakeup latency,
each as the fraction of samples slower than x (1 - CDF) on log-log axes, so the
p99 and p99.9 tails, where the configurations differ, take most of the picture.
"""
from __future__ import annotations

from pathlib import Path

from scx_slo.dev.bench import stats
from scx_slo.errors import ScxSloError


class PlotError(ScxSloError):
    """The plot could not be drawn (matplotlib missing or failing)."""


def _tail(points: list[list[float]]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for value, frac in points:
        if frac >= 1.0:
            continue
        xs.append(max(value, 1e-3))
        ys.append(1.0 - frac)
    return xs, ys


def plot(doc: dict, path: str | Path) -> Path:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("matplotlib is not installed: pip install 'scx-slo[bench]' "
                        "(the JSON and markdown are written anyway)") from None
    path = Path(path)
    fig, (ax_r, ax_w) = plt.subplots(1, 2, figsize=(13, 5.2))
    delay_ms = doc["params"]["delay_s"] * 1e3
    for name, cfg in doc["configs"].items():
        style = {"linewidth": 2.4} if name == "scx_slo" else {"linewidth": 1.3}
        if name == "idle":
            style.update(color="black", linestyle="--")
        req_ms = [x * 1e3 for x in cfg["requests"]["latency_s"]]
        xs, ys = _tail(stats.cdf_points(req_ms, 2000))
        ax_r.plot(xs, ys, label=name, drawstyle="steps-post", **style)
        xs, ys = _tail(cfg["wakeup_us"]["cdf_us"])
        ax_w.plot(xs, ys, label=name, drawstyle="steps-post", **style)
    target_ms = doc["p99_target_ns"] / 1e6
    ax_r.axvline(delay_ms, color="grey", linewidth=0.8)
    ax_r.axvline(target_ms, color="red", linewidth=0.8, linestyle=":")
    ax_r.text(target_ms, 0.5, " p99 target", color="red", fontsize=8)
    ax_r.set_title(f"request latency (open loop, /delay/{doc['params']['delay_s']:g})")
    ax_r.set_xlabel("latency from intended send time (ms)")
    ax_w.set_title(f"wakeup latency ({doc['params']['probe_period_us']} us sleep loop)")
    ax_w.set_xlabel("wakeup delay (us)")
    for ax in (ax_r, ax_w):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("fraction slower (1 - CDF)")
        for q in (0.01, 0.001):
            ax.axhline(q, color="grey", linewidth=0.5, linestyle=":")
        ax.grid(True, which="major", alpha=0.3)
    ax_w.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"scx-slo bench: {doc['kernel']}, {doc['ncpu']} CPU"
                 f"{', ' + doc['accel'] if doc.get('accel') else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
