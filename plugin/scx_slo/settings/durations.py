"""Durations as operators write them: "500us", "200ms", "1.5s".

parse_duration() returns integer nanoseconds. A duration must carry a unit,
be positive, be a whole number of nanoseconds and be at most one hour;
anything else raises DurationError (never ValueError/TypeError).
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from scx_slo.settings.errors import DurationError

NS_PER = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
UNITS_HINT = '"500us", "200ms" or "1.5s"'
MAX_NS = 3600 * NS_PER["s"]          # no scheduler knob or latency target is above an hour
_MAX_TEXT = 32                        # longer strings are refused before any arithmetic

_RE = re.compile(r"(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<unit>ns|us|µs|ms|s)")
_UNITLESS = re.compile(r"[+-]?[0-9]+(?:\.[0-9]*)?")


def parse_duration(value: object, *, min_ns: int = 1, max_ns: int = MAX_NS) -> int:
    """Parse VALUE (a string like "200ms") into nanoseconds, within [min_ns, max_ns]."""
    if isinstance(value, bool) or not isinstance(value, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            raise DurationError(f"{value!r} has no unit; write a string such as {UNITS_HINT}")
        raise DurationError(f"expected a duration string such as {UNITS_HINT}, "
                            f"got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise DurationError(f"empty duration; write e.g. {UNITS_HINT}")
    if len(text) > _MAX_TEXT:
        raise DurationError(f"duration {text[:_MAX_TEXT]!r}... is too long")
    if text.startswith("-"):
        raise DurationError(f"negative duration {text!r}; durations must be positive")
    if _UNITLESS.fullmatch(text):
        raise DurationError(f"{text!r} has no unit; write e.g. {UNITS_HINT}")
    m = _RE.fullmatch(text)
    if not m:
        raise DurationError(f"cannot read {text!r} as a duration; write e.g. {UNITS_HINT}")
    try:
        ns = Decimal(m["num"]) * NS_PER[m["unit"]]
    except InvalidOperation as e:  # pragma: no cover - regex admits only plain decimals
        raise DurationError(f"cannot read {text!r} as a duration") from e
    if ns != ns.to_integral_value():
        raise DurationError(f"{text!r} is finer than one nanosecond")
    ns_int = int(ns)
    if ns_int < min_ns or ns_int > max_ns:
        raise DurationError(f"{text!r} is out of range: allowed "
                            f"{format_duration(min_ns)}..{format_duration(max_ns)}")
    return ns_int


def format_duration(ns: int) -> str:
    """The shortest exact spelling of NS nanoseconds: 200000000 -> "200ms"."""
    if ns < 0:
        raise DurationError(f"negative duration {ns}ns")
    candidates = []
    for unit in ("s", "ms", "us", "ns"):
        if ns >= NS_PER[unit] or unit == "ns":
            text = format(Decimal(ns) / NS_PER[unit], "f")
            if "." in text:
                text = text.rstrip("0").rstrip(".")
            candidates.append(f"{text}{unit}")
    return min(candidates, key=len)
