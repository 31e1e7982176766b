"""Durations: "500us", "200ms", "1.5s" parse; negative, unitless, huge are refused."""
import pytest
from hypothesis import given, strategies as st

from scx_slo.settings.durations import MAX_NS, format_duration, parse_duration
from scx_slo.settings.errors import DurationError, SettingsError


@pytest.mark.parametrize("text,ns", [
    ("500us", 500_000), ("200ms", 200_000_000), ("1.5s", 1_500_000_000),
    ("1ns", 1), ("250µs", 250_000), (" 5ms ", 5_000_000), ("0.5ms", 500_000),
])
def test_parses(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("value,fragment", [
    ("-5ms", "negative"),
    ("200", "no unit"),
    ("1.5", "no unit"),
    (200, "no unit"),
    ("", "empty"),
    ("5 minutes", "cannot read"),
    ("1e3ms", "cannot read"),
    ("99999999s", "out of range"),
    ("0ms", "out of range"),
    ("1.0000000001s", "finer than one nanosecond"),
    ("9" * 40 + "s", "too long"),
    (None, "got NoneType"),
    (True, "got bool"),
])
def test_refuses_with_reason(value, fragment):
    with pytest.raises(DurationError) as e:
        parse_duration(value)
    assert fragment in str(e.value)


def test_bounds_are_named():
    with pytest.raises(DurationError, match=r"allowed 1s\.\.30s"):
        parse_duration("60s", min_ns=1_000_000_000, max_ns=30_000_000_000)


@pytest.mark.parametrize("ns,text", [(200_000_000, "200ms"), (1_500_000_000, "1.5s"),
                                     (500_000, "500us"), (1_250_000, "1.25ms"), (7, "7ns")])
def test_format(ns, text):
    assert format_duration(ns) == text


@given(st.integers(min_value=1, max_value=MAX_NS))
def test_format_parse_round_trip(ns):
    assert parse_duration(format_duration(ns)) == ns


@given(st.one_of(st.text(max_size=40), st.integers(), st.floats(), st.none(), st.booleans(),
                 st.binary(max_size=20), st.lists(st.integers(), max_size=3)))
def test_never_raises_anything_but_our_error(value):
    try:
        ns = parse_duration(value)
    except SettingsError:
        return
    assert isinstance(ns, int) and 1 <= ns <= MAX_NS


@given(st.from_regex(r"-?[0-9]{0,12}(\.[0-9]{0,12})?(ns|us|µs|ms|s|m|h|)", fullmatch=True))
def test_numberish_strings(text):
    try:
        ns = parse_duration(text)
    except DurationError:
        return
    assert ns > 0 and not text.startswith("-")
