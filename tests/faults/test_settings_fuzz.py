"""Hostile settings: generated TOML documents, mutated shipped examples, raw user-data
bytes and base64, arbitrary durations. Only the settings' typed error (a SettingsError)
or a validated Config ever comes out; a valid config renders to every target and the
embedded user-data validates back to the same Config."""
from __future__ import annotations

import base64
from pathlib import Path

import pytest
import tomlkit
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scx_slo.settings import model
from scx_slo.settings import validate as V
from scx_slo.settings.durations import MAX_NS, format_duration, parse_duration
from scx_slo.settings.errors import DurationError, SettingsError
from scx_slo.settings.load import load_user_data_b64
from scx_slo.settings.render import TARGETS, render
from scx_slo.settings.store import load_effective

from faults.conftest import TABLE, size, time_bound

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = [ROOT / "settings" / "defaults.toml", *sorted((ROOT / "settings" / "examples").glob("*.toml"))]
CASE_SECONDS = 5.0


def fuzz(n: int):
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

# -- strategies ------------------------------------------------------------------------------
durations_ok = st.builds(lambda n, u: f"{n}{u}", st.integers(1, 5000),
                         st.sampled_from(["us", "ms", "s"]))
durations_any = st.one_of(
    durations_ok,
    st.sampled_from(["", "0s", "-1ms", "5", "1.5", "1e3ms", "NaN", "infs", "1.0000000001ns",
                     "99999999999999999999s", "200 ms", "200MS", "µs", "1µs", "0x10ms",
                     "१००ms", "\u0000ms", "1_000ms"]),
    st.text(max_size=40), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
    st.booleans(), st.none())
names = st.one_of(st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
                  st.sampled_from(["default", "Default", "", "a" * 40, "x y", "critical"]),
                  st.text(max_size=10))
scalars = st.one_of(st.text(max_size=20), st.integers(-2**63, 2**63 - 1), st.booleans(),
                    st.floats(allow_nan=False), durations_any.filter(lambda v: v is not None))


def _maybe(strategy, junk=scalars):
    """Mostly the schema's kind of value, sometimes anything."""
    return st.one_of(strategy, strategy, strategy, junk)


class_table = st.fixed_dictionaries(
    {"name": _maybe(names)},
    optional={"p99": _maybe(durations_ok), "weight": _maybe(st.integers(-5, 20000)),
              "slice": _maybe(durations_ok), "miss-threshold": _maybe(durations_ok),
              "bogus": scalars})
rule_table = st.fixed_dictionaries(
    {"class": _maybe(names)},
    optional={"namespace": _maybe(st.from_regex(r"[a-z0-9*?-]{1,10}", fullmatch=True)),
              "labels": _maybe(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True),
                                               st.text(max_size=8), max_size=3)),
              "annotations": _maybe(st.dictionaries(st.text(max_size=10), st.text(max_size=8),
                                                    max_size=2)),
              "cgroup": _maybe(st.text(max_size=20))})
scheduler_table = st.fixed_dictionaries(
    {}, optional={"slice": _maybe(durations_any), "batch-floor": _maybe(st.integers(-5, 80)),
                  "watchdog-timeout": _maybe(durations_any),
                  "sha256": _maybe(st.from_regex(r"[0-9a-f]{64}", fullmatch=True)),
                  "object": _maybe(st.text(max_size=30)),
                  "metrics": _maybe(st.fixed_dictionaries(
                      {}, optional={"enabled": st.booleans(),
                                    "listen": st.sampled_from(["127.0.0.1:9464", "0.0.0.0:1",
                                                               "[::1]:80", "localhost:0",
                                                               "host:99999", ":", "[::1"])}))})
annotations_table = st.fixed_dictionaries(
    {}, optional={"enabled": _maybe(st.booleans()), "key": _maybe(st.text(max_size=30)),
                  "namespaces": _maybe(st.lists(st.text(max_size=10), max_size=4)),
                  "tightest": _maybe(durations_any)})
documents = st.fixed_dictionaries(
    {}, optional={"scheduler": _maybe(scheduler_table),
                  "class": _maybe(st.lists(class_table, max_size=9)),
                  "rule": _maybe(st.lists(rule_table, max_size=4)),
                  "annotations": _maybe(annotations_table),
                  "unknown": scalars})


def _dumps(doc: dict) -> str | None:
    try:
        return tomlkit.dumps(doc)
    except Exception:  # noqa: BLE001 - hypothesis built something TOML cannot spell: not input
        return None


def check_outcome(text: str, filename: str = "<fuzz>") -> model.Config | None:
    """validate_text: a Config that holds the schema's promises, or a SettingsError."""
    with time_bound(CASE_SECONDS):
        try:
            loaded = V.validate_text(text, filename)
        except SettingsError as exc:
            str(exc)          # the message the CLI prints must be producible
            return None
    cfg = loaded.config
    assert [c.id for c in cfg.classes] == list(range(len(cfg.classes)))
    assert 1 <= len(cfg.classes) <= model.MAX_CLASS_ID + 1
    assert cfg.classes[0].name == model.DEFAULT_CLASS_NAME
    for c in cfg.classes:
        assert model.WEIGHT_MIN <= c.weight <= model.WEIGHT_MAX
        assert V.SLICE_RANGE[0] <= c.slice_ns <= V.SLICE_RANGE[1]
    assert V.WATCHDOG_RANGE[0] <= cfg.scheduler.watchdog_timeout_ns <= V.WATCHDOG_RANGE[1]
    assert V.BATCH_FLOOR_RANGE[0] <= cfg.scheduler.batch_floor_pct <= V.BATCH_FLOOR_RANGE[1]
    assert all(0 <= r.class_id < len(cfg.classes) for r in cfg.rules)
    if cfg.scheduler.metrics.enabled:
        assert V._loopback(cfg.scheduler.metrics.address)
    return cfg


# -- documents -------------------------------------------------------------------------------
def test_generated_documents():
    row = TABLE.row("settings.toml")

    @fuzz(size(300, 20000))
    @given(documents)
    def prop(doc):
        text = _dumps(doc)
        assume(text is not None)
        with row.case():
            cfg = check_outcome(text)
            row.observe("accepted" if cfg else "refused")

    prop()


edits = st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 5),
                           st.text(alphabet=st.characters(codec="utf-8"), max_size=6)),
                 min_size=1, max_size=4)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_mutated_shipped_documents(path):
    """Text-level edits (delete/insert at random places) of the shipped settings files."""
    row = TABLE.row("settings.toml")
    original = path.read_text()

    @fuzz(size(100, 5000))
    @given(edits)
    def prop(changes):
        text = original
        for pos, delete, insert in changes:
            pos %= len(text) + 1
            text = text[:pos] + insert + text[pos + delete:]
        with row.case():
            cfg = check_outcome(text, str(path))
            row.observe("accepted" if cfg else "refused")

    prop()


def test_hostile_shapes():
    """Hand-picked shapes generators rarely reach: deep nesting, huge arrays, giant keys."""
    row = TABLE.row("settings.toml")
    cases = {
        "deep inline tables": "a = " + "{b = " * 200 + "1" + "}" * 200,
        "deep arrays": "a = " + "[" * 500 + "]" * 500,
        "very deep arrays": "a = " + "[" * 5000 + "]" * 5000,
        "many classes": "".join(f'[[class]]\nname = "c{i}"\np99 = "{i + 1}ms"\n'
                                for i in range(2000)),
        "huge int": "[scheduler]\nbatch-floor = 99999999999999999999999999\n",
        "huge document": "# " + "x" * (V.MAX_BYTES + 10),
        "dotted keys": "scheduler.metrics.enabled.x.y = 1\n",
        "table redefined": "[scheduler]\n[scheduler]\n",
        "class as table": '[class]\nname = "a"\n',
        "array of tables clash": '[[scheduler]]\nslice = "5ms"\n',
        "nul": "[scheduler]\x00\n",
        "lone surrogate": "[scheduler]\nobject = \"\ud800\"\n",
        "bom inside": "\ufeff[scheduler]\n",
        "datetime": "[scheduler]\nslice = 1979-05-27T07:32:00Z\n",
        "inf/nan": "[scheduler]\nbatch-floor = inf\nslice = nan\n",
        "listen garbage": '[scheduler.metrics]\nenabled = true\nlisten = "[::1]:"\n',
        "crlf and tabs": "[scheduler]\r\n\tslice\t=\t\"5ms\"\r\n",
    }
    for name, text in cases.items():
        with row.case():
            cfg = check_outcome(text, name)
            row.observe(f"{name}: {'accepted' if cfg else 'refused'}")


# -- bytes and base64 user-data --------------------------------------------------------------
raw = st.one_of(st.binary(max_size=400),
                st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
                st.sampled_from([b"\xef\xbb\xbf[scheduler]\n", b"\xff\xfe[\x00s\x00",
                                 b"[scheduler]\n\x80", b"\x00" * 10, b"\xef\xbb\xbf"]))


def test_user_data_bytes_and_base64(tmp_path_factory):
    row = TABLE.row("settings.bytes")
    state = tmp_path_factory.mktemp("state")
    ud = state / "user-data"

    @fuzz(size(300, 20000))
    @given(raw, st.one_of(st.none(), st.text(max_size=60), st.integers(), st.binary(max_size=30)))
    def prop(data, b64_junk):
        with row.case():
            with time_bound(CASE_SECONDS):
                try:
                    V.validate_bytes(data, "<bytes>")
                    row.observe("bytes accepted")
                except SettingsError:
                    row.observe("bytes refused")
                for value in (base64.b64encode(data).decode(), b64_junk):
                    try:
                        load_user_data_b64(value)
                    except SettingsError:
                        pass
                # the agent's path: a file with these bytes never stops it
                ud.write_bytes(data)
                eff = load_effective(str(ud), str(state), save=False)
            assert eff.config is not None and eff.config.classes
            assert (eff.error is None) == (eff.source == "user-data"), (eff.source, eff.error)

    prop()


# -- render ----------------------------------------------------------------------------------
valid_class = st.builds(lambda n, p: {"name": n, "p99": p},
                        st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
                        .filter(lambda n: n != "default"),
                        st.builds(lambda n, u: f"{n}{u}", st.integers(1, 900),
                                  st.sampled_from(["ms", "s"])).filter(
                            lambda d: parse_duration(d) <= 60 * model.S))
valid_documents = st.builds(
    lambda sched, classes, comment: (comment, {"scheduler": sched,
                                               "class": classes}),
    st.fixed_dictionaries({}, optional={
        "slice": st.sampled_from(["1ms", "5ms", "10ms", "100ms"]),
        "batch-floor": st.integers(0, 50),
        "watchdog-timeout": st.sampled_from(["1s", "5s", "30s"])}),
    st.lists(valid_class, max_size=7, unique_by=lambda c: c["name"]),
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]),
            max_size=40))


def test_render_round_trips():
    from test_settings_render import NAME, SOURCE, host_container_of

    row = TABLE.row("settings.render")

    @fuzz(size(60, 2000))
    @given(valid_documents)
    def prop(doc):
        comment, body = doc
        text = f"# {comment}\n" + tomlkit.dumps(body)
        try:
            original = V.validate_text(text).config
        except SettingsError:
            assume(False)
        with row.case():
            for target in TARGETS:
                out = render(text, target, name=NAME, source=SOURCE)
                hc = host_container_of(target, out)
                decoded = base64.b64decode(hc["user-data"], validate=True)
                assert decoded.decode("utf-8") == text
                assert V.validate_bytes(decoded, "decoded").config == original
            row.observe(f"{len(original.classes) - 1} classes")

    prop()


# -- durations -------------------------------------------------------------------------------
def test_durations():
    row = TABLE.row("settings.durations")

    @fuzz(size(500, 50000))
    @given(durations_any, st.integers(1, MAX_NS))
    def prop(value, ns):
        with row.case():
            try:
                got = parse_duration(value)
                assert isinstance(got, int) and 1 <= got <= MAX_NS
                row.observe("parsed")
            except DurationError:
                row.observe("refused")
            assert parse_duration(format_duration(ns)) == ns

    prop()
