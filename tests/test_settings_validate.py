"""Validation: located errors, did-you-mean, ranges, every issue collected; the
hostile-input table with the last good configuration kept; tomlkit round trips;
annotation capping; hypothesis: validate raises nothing but our typed error."""
from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
import tomlkit
from hypothesis import given, settings as hsettings, strategies as st, HealthCheck

from scx_slo.settings import store
from scx_slo.settings.errors import SettingsError, UserDataError, ValidationError
from scx_slo.settings.load import load_file
from scx_slo.settings.validate import validate_bytes, validate_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "settings" / "examples").glob("*.toml"))
DEMO = ROOT / "settings" / "examples" / "guide-demo.toml"
ISSUE_RE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<key>.+?): (?P<msg>.+)$")

GOOD = """\
[scheduler]
slice = "10ms"

[[class]]
name = "frontend"
p99 = "200ms"

[[rule]]
class = "frontend"
namespace = "web"
"""


def issues_of(text: str, name: str = "u.toml") -> list[str]:
    with pytest.raises(ValidationError) as e:
        validate_text(text, name)
    lines = str(e.value).splitlines()
    for line in lines:
        assert ISSUE_RE.match(line), line
    return lines


@pytest.mark.parametrize("path", [ROOT / "settings" / "defaults.toml", *EXAMPLES],
                         ids=lambda p: p.name)
def test_shipped_files_validate(path):
    loaded = load_file(path)
    assert loaded.config.classes[0].name == "default"


def test_guide_demo_maps_frontend_and_batch():
    cfg = load_file(DEMO).config
    frontend, why = cfg.class_for_pod("default", {"app": "frontend"},
                                      {"slo.latency.p99": "200ms"})
    assert frontend.name == "frontend" and frontend.p99_ns == 200_000_000, why
    batch, why = cfg.class_for_pod("default", {"app": "batch"}, {})
    assert batch.id == 0 and batch.name == "default", why
    assert frontend.priority < batch.priority and frontend.weight > batch.weight


def test_error_location_and_did_you_mean():
    text = "[scheduler]\nslice = \"5ms\"\nwatchdog-timout = \"5s\"\n"
    (line,) = issues_of(text)
    m = ISSUE_RE.match(line)
    assert (m["file"], m["line"], m["col"], m["key"]) == ("u.toml", "3", "1",
                                                          "scheduler.watchdog-timout")
    assert "did you mean 'watchdog-timeout'?" in m["msg"]


def test_all_issues_collected_in_file_order():
    text = """\
[scheduler]
batch-floor = 90
watchdog-timeout = "45s"
[scheduler.metrics]
listen = "0.0.0.0:9464"
[[class]]
name = "web"
p99 = "-1ms"
[[rule]]
class = "nope"
cgroup = "system.slice/*.service"
[annotations]
tightest = "10"
"""
    lines = issues_of(text)
    keys = [ISSUE_RE.match(x)["key"] for x in lines]
    assert keys == ["scheduler.batch-floor", "scheduler.watchdog-timeout",
                    "scheduler.metrics.listen", "class[0].p99", "rule[0].class",
                    "annotations.tightest"]
    assert "allowed 0..50" in lines[0]
    assert "allowed 1s..30s" in lines[1]
    assert "loopback-only" in lines[2]
    assert [int(ISSUE_RE.match(x)["line"]) for x in lines] == [2, 3, 5, 8, 10, 13]


def test_inline_table_keys_are_located():
    text = '[[class]]\nname = "web"\np99 = "1s"\n[[rule]]\nclass = "web"\n' \
           'labels = { app = "web", "bad key!" = "x" }\n'
    (line,) = issues_of(text)
    m = ISSUE_RE.match(line)
    assert m["line"] == "6" and m["col"] == "25" and "not a valid Kubernetes label key" in line


def test_metrics_off_by_default_and_loopback_when_on():
    cfg = validate_text("[scheduler]\n").config
    assert cfg.scheduler.metrics.enabled is False
    assert cfg.scheduler.metrics.address == "127.0.0.1"
    on = validate_text('[scheduler.metrics]\nenabled = true\nlisten = "[::1]:9100"\n').config
    assert (on.scheduler.metrics.address, on.scheduler.metrics.port) == ("::1", 9100)
    issues_of('[scheduler.metrics]\nenabled = true\nlisten = "10.0.0.1:9100"\n')


def test_derived_class_values():
    cfg = validate_text('[[class]]\nname = "a"\np99 = "50ms"\n[[class]]\nname = "b"\n'
                        'p99 = "2s"\nweight = 150\nslice = "1ms"\n').config
    a, b = cfg.class_named("a"), cfg.class_named("b")
    assert (a.id, b.id) == (1, 2)
    assert a.priority == 1 and b.priority == 2 and cfg.classes[0].priority == 3
    assert a.weight == 2000 and a.slice_ns == 1_250_000 and a.miss_threshold_ns == 5_000_000
    assert b.weight == 150 and b.slice_ns == 1_000_000


def test_at_most_seven_operator_classes():
    seven = "".join(f'[[class]]\nname = "c{i}"\np99 = "{i + 1}00ms"\n' for i in range(7))
    assert len(validate_text(seven).config.classes) == 8
    eight = seven + '[[class]]\nname = "c7"\np99 = "900ms"\n'
    (line,) = issues_of(eight)
    assert "at most 7" in line and ":22:" in line


# --- the hostile-input table --------------------------------------------------------------
# (id, user-data bytes, the specific fragment its error must carry)
NESTED = ("a = " + "[" * 40 + "1" + "]" * 40 + "\n").encode()
HOSTILE = [
    ("empty", b"", "empty settings document"),
    ("whitespace", b"  \n\t\n", "empty settings document"),
    ("binary", bytes(range(256)), "not UTF-8"),
    ("nul-byte", b"[scheduler]\n\x00\n", "NUL byte"),
    ("deeply-nested", NESTED, "nested"),
    ("deep-tables", ("[" + ".".join(f"t{i}" for i in range(40)) + "]\nx = 1\n").encode(),
     "nested deeper"),
    ("huge-integer", b"[scheduler]\nbatch-floor = 999999999999999999999999999999\n",
     "out of range: allowed 0..50"),
    ("huge-duration", b'[[class]]\nname = "a"\np99 = "99999999999s"\n', "out of range"),
    ("negative-duration", b'[[class]]\nname = "a"\np99 = "-200ms"\n', "negative duration"),
    ("unitless-duration", b'[[class]]\nname = "a"\np99 = "200"\n', "has no unit"),
    ("integer-duration", b'[scheduler]\nslice = 5\n', "has no unit"),
    ("unknown-key", b"[scheduler]\nslise = \"5ms\"\n", "did you mean 'slice'?"),
    ("unknown-table", b"[schedular]\n", "did you mean 'scheduler'?"),
    ("duplicate-class", b'[[class]]\nname = "a"\np99 = "1s"\n[[class]]\nname = "a"\n'
                        b'p99 = "2s"\n', "duplicate class 'a'"),
    ("rule-missing-class", b'[[class]]\nname = "web"\np99 = "1s"\n[[rule]]\nclass = "wbe"\n'
                           b'namespace = "x"\n', "no class named 'wbe'; did you mean 'web'?"),
    ("reserved-class-name", b'[[class]]\nname = "default"\np99 = "1s"\n', "built-in class 0"),
    ("syntax", b"[scheduler\n", "TOML syntax"),
    ("duplicate-key", b"[scheduler]\nslice = \"1ms\"\nslice = \"2ms\"\n", "TOML syntax"),
    ("wrong-type", b"[scheduler]\nmetrics = 3\n", "expected a table"),
    ("public-metrics", b'[scheduler.metrics]\nenabled = true\nlisten = "0.0.0.0:80"\n',
     "loopback-only"),
    ("both-selectors", b'[[class]]\nname = "a"\np99 = "1s"\n[[rule]]\nclass = "a"\n'
                       b'namespace = "x"\ncgroup = "system.slice/*"\n', "not both"),
    ("cgroup-escape", b'[[class]]\nname = "a"\np99 = "1s"\n[[rule]]\nclass = "a"\n'
                      b'cgroup = "../../etc"\n', "not a cgroup path glob"),
    ("oversized", b"# " + b"x" * 300_000 + b"\n", "larger than"),
]


@pytest.fixture
def state_with_good(tmp_path):
    ud = tmp_path / "user-data"
    state = tmp_path / "state"
    ud.write_text(GOOD)
    first = store.load_effective(str(ud), str(state))
    assert first.source == store.SOURCE_USER_DATA and first.error is None
    return ud, state, first.config


@pytest.mark.parametrize("name,data,fragment", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_input_refused_last_good_kept(state_with_good, name, data, fragment):
    ud, state, good = state_with_good
    with pytest.raises(ValidationError) as direct:
        validate_bytes(data, "user-data")
    assert fragment in str(direct.value)
    ud.write_bytes(data)
    config, source, error = store.load_effective(str(ud), str(state))
    assert source == store.SOURCE_LAST_GOOD
    assert config == good
    assert isinstance(error, ValidationError) and fragment in str(error)


@pytest.mark.parametrize("value,fragment", [
    ("not base64!!", "not valid base64"),
    ("QUJD=", "not valid base64"),               # wrong padding
    (12345, "must be a base64 string"),
    (base64.b64encode(b"\xff\xfe\x00binary").decode(), "not UTF-8"),
])
def test_invalid_base64_user_data_keeps_last_good(state_with_good, value, fragment):
    _, state, good = state_with_good
    eff = store.load_effective_b64(value, str(state))
    assert eff.source == store.SOURCE_LAST_GOOD and eff.config == good
    assert isinstance(eff.error, SettingsError) and fragment in str(eff.error)
    if "base64" in fragment:
        assert isinstance(eff.error, UserDataError)


def test_valid_base64_user_data_becomes_last_good(tmp_path):
    eff = store.load_effective_b64(base64.b64encode(GOOD.encode()).decode(), str(tmp_path))
    assert eff.source == store.SOURCE_USER_DATA
    assert (tmp_path / store.LAST_GOOD).read_text() == GOOD


def test_no_last_good_falls_back_to_defaults(tmp_path):
    ud = tmp_path / "user-data"
    ud.write_bytes(b"[scheduler\n")
    eff = store.load_effective(str(ud), str(tmp_path / "state"))
    assert eff.source == store.SOURCE_DEFAULTS and eff.error is not None
    assert len(eff.config.classes) == 1
    absent = store.load_effective(str(tmp_path / "missing"), str(tmp_path / "state"))
    assert absent.source == store.SOURCE_DEFAULTS and absent.error is None


def test_refusal_is_logged(state_with_good, caplog):
    ud, state, _ = state_with_good
    ud.write_text('[[class]]\nname = "a"\np99 = "-1s"\n')
    with caplog.at_level("ERROR", logger="scx_slo.settings.store"):
        store.load_effective(str(ud), str(state))
    assert "refused, keeping the last good" in caplog.text and "negative" in caplog.text


def test_tenant_annotation_tighter_than_allowed_is_capped(state_with_good):
    ud, state, _ = state_with_good
    ud.write_bytes(DEMO.read_bytes())
    cfg = store.load_effective(str(ud), str(state)).config
    d = cfg.annotation_class("default", "1ms")
    assert d.capped and d.claimed_ns == 1_000_000
    assert d.granted_ns == 200_000_000 and d.class_name == "frontend"
    assert "tighter than the allowed 100ms" in d.reason
    refused = cfg.annotation_class("kube-system", "200ms")
    assert refused.class_id == 0 and "not in annotations.namespaces" in refused.reason
    garbage = cfg.annotation_class("default", "-5ms")
    assert garbage.class_id == 0 and "negative" in garbage.reason
    # the tenant's claim changed nothing in the configuration in force
    assert store.load_effective(str(ud), str(state)).config == cfg


# --- tomlkit round trip ----------------------------------------------------------------------
def test_comments_and_layout_survive_round_trip():
    text = DEMO.read_text()
    loaded = validate_text(text)
    assert tomlkit.dumps(loaded.document) == text
    doc = tomlkit.parse(text)
    doc["class"][0]["p99"] = "150ms"
    edited = tomlkit.dumps(doc)
    assert "# What the frontend's annotation resolves to" in edited
    assert 'p99 = "150ms"' in edited
    assert edited.replace('"150ms"', '"200ms"', 1) == text
    assert validate_text(edited).config.class_named("frontend").p99_ns == 150_000_000


# --- properties --------------------------------------------------------------------------------
toml_scalars = st.one_of(st.text(max_size=12), st.integers(), st.booleans(),
                         st.sampled_from(["200ms", "-1s", "5", "1.5s", "0us", "10000s"]))
keys = st.sampled_from(["scheduler", "class", "rule", "annotations", "name", "p99", "slice",
                        "batch-floor", "watchdog-timeout", "metrics", "enabled", "listen",
                        "namespace", "labels", "cgroup", "key", "namespaces", "tightest",
                        "weight", "miss-threshold", "bogus"])
values = st.recursive(toml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(keys, inner, max_size=4)), max_leaves=12)
docs = st.dictionaries(keys, values, max_size=5)


@hsettings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(docs)
def test_validate_structured_documents_raise_only_our_error(doc):
    try:
        text = tomlkit.dumps(doc)
    except Exception:   # hypothesis built something TOML cannot express: not our input
        return
    try:
        validate_text(text, "h.toml")
    except ValidationError as e:
        assert e.issues and all(ISSUE_RE.match(str(i)) for i in e.issues)


@hsettings(max_examples=300)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_validate_arbitrary_bytes_raise_only_our_error(data):
    try:
        validate_bytes(data, "h.toml")
    except ValidationError as e:
        assert e.issues


@hsettings(max_examples=300)
@given(st.text(max_size=12), st.one_of(st.text(max_size=16), st.integers(), st.none(),
                                        st.from_regex(r"[0-9]{1,5}(us|ms|s)", fullmatch=True)))
def test_no_annotation_promotes_past_the_cap(namespace, value):
    cfg = validate_text((ROOT / "settings/examples/multi-tenant.toml").read_text()).config
    d = cfg.annotation_class(namespace, value)
    granted = cfg.classes[d.class_id]
    assert d.reason
    if granted.id != 0:
        assert granted.p99_ns >= cfg.annotations.tightest_ns   # payments (50ms) is never reached
        assert namespace.startswith("team-")
