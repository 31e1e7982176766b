"""Validate an operator's scx-slo TOML into a Config, collecting every issue.

Each issue is reported as FILE:LINE:COL: key.path: message. Unknown keys get a
did-you-mean (difflib), out-of-range values name the allowed range, and all
issues are collected before ValidationError is raised. validate_text() never
raises anything but ValidationError (a SettingsError).
"""
from __future__ import annotations

import difflib
import ipaddress
import re
from dataclasses import dataclass, field

import tomlkit
from tomlkit.exceptions import ParseError, TOMLKitError

from scx_slo.settings import model
from scx_slo.settings.durations import format_duration, parse_duration
from scx_slo.settings.errors import DurationError, Issue, ValidationError
from scx_slo.settings.locate import Locator, format_path

MAX_BYTES = 256 * 1024          # user-data of a host container is small; refuse more
MAX_NESTING = 16                # no legitimate key is nested deeper than this

MS, US, S = model.MS, model.US, model.S

# Allowed keys per section; the schema settings/schema.md documents the same.
TOP_KEYS = ("scheduler", "class", "rule", "annotations", "kubernetes", "alerts")
SCHEDULER_KEYS = ("object", "sha256", "slice", "batch-floor", "watchdog-timeout", "metrics")
METRICS_KEYS = ("enabled", "listen")
CLASS_KEYS = ("name", "p99", "weight", "slice", "miss-threshold")
RULE_KEYS = ("class", "namespace", "labels", "annotations", "cgroup")
ANNOTATION_KEYS = ("enabled", "key", "namespaces", "tightest")
KUBERNETES_KEYS = ("enabled", "kubeconfig", "host-root")
ALERTS_KEYS = ("enabled", "threshold", "window", "log-interval", "events")

# (min, max) of each bounded value
SLICE_RANGE = (100 * US, 100 * MS)
WATCHDOG_RANGE = (1 * S, 30 * S)          # the kernel caps the sched_ext watchdog at 30s
P99_RANGE = (100 * US, 60 * S)
MISS_RANGE = (10 * US, 60 * S)
TIGHTEST_RANGE = (100 * US, 60 * S)
BATCH_FLOOR_RANGE = (0, 50)
WEIGHT_RANGE = (model.WEIGHT_MIN, model.WEIGHT_MAX)
PORT_RANGE = (1, 65535)
ALERT_THRESHOLD_RANGE = (1, 1_000_000)
ALERT_WINDOW_RANGE = (1 * S, 3600 * S)
LOG_INTERVAL_RANGE = (1 * S, 3600 * S)

CLASS_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,30}")
SHA256_RE = re.compile(r"[0-9a-f]{64}")
NAMESPACE_GLOB_RE = re.compile(r"[a-z0-9*?\[\]!-]{1,63}")
# Kubernetes label/annotation keys: optional DNS-subdomain prefix and '/', then a name.
K8S_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
K8S_KEY_RE = re.compile(rf"(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{K8S_NAME}")
LABEL_VALUE_RE = re.compile(rf"(?:{K8S_NAME})?")
CGROUP_GLOB_RE = re.compile(r"[A-Za-z0-9_.:@*?\[\]!/\\-]{1,4096}")


@dataclass
class Loaded:
    """A validated document: the model, where each value came from, the text."""

    config: model.Config
    provenance: dict[str, str]          # key path -> "FILE:LINE" or "default"
    filename: str
    text: str
    document: tomlkit.TOMLDocument = field(repr=False, default=None)


class _Checker:
    def __init__(self, text: str, filename: str):
        self.text = text
        self.filename = filename
        self.issues: list[Issue] = []
        self.loc = Locator(text)
        self.prov: dict[str, str] = {}

    # -- reporting -------------------------------------------------------
    def issue(self, path: tuple, message: str) -> None:
        line, col = self.loc.find(path)
        self.issues.append(Issue(self.filename, line, col, format_path(path), message))

    def from_file(self, path: tuple) -> None:
        line, _ = self.loc.find(path)
        self.prov[format_path(path)] = f"{self.filename}:{line}"

    def default(self, path: tuple) -> None:
        self.prov[format_path(path)] = "default"

    def unknown_keys(self, table: dict, allowed: tuple, path: tuple) -> None:
        for key in table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else \
                    f"; allowed keys: {', '.join(allowed)}"
                self.issue(path + (key,), f"unknown key {key!r}{hint}")

    # -- typed getters: return the value, or None after reporting ---------
    def table(self, parent: dict, key: str, path: tuple) -> dict | None:
        if key not in parent:
            return None
        v = parent[key]
        if not isinstance(v, dict):
            self.issue(path + (key,), f"expected a table, got {_kind(v)}")
            return None
        return v

    def get(self, table: dict, key: str, path: tuple, kind: type, default):
        full = path + (key,)
        if key not in table:
            self.default(full)
            return default
        v = table[key]
        if kind is int and (isinstance(v, bool) or not isinstance(v, int)):
            self.issue(full, f"expected an integer, got {_kind(v)}")
            return None
        if kind is not int and not isinstance(v, kind):
            self.issue(full, f"expected {_kind_name(kind)}, got {_kind(v)}")
            return None
        self.from_file(full)
        return v

    def duration(self, table: dict, key: str, path: tuple, rng: tuple[int, int],
                 default: int | None):
        full = path + (key,)
        if key not in table:
            self.default(full)
            return default
        try:
            ns = parse_duration(table[key], min_ns=rng[0], max_ns=rng[1])
        except DurationError as e:
            self.issue(full, str(e))
            return None
        self.from_file(full)
        return ns

    def int_in(self, table: dict, key: str, path: tuple, rng: tuple[int, int], default):
        v = self.get(table, key, path, int, default)
        if v is None or key not in table:
            return v
        if not rng[0] <= v <= rng[1]:
            shown = str(v) if len(str(v)) <= 24 else f"{str(v)[:20]}..."
            self.issue(path + (key,), f"{shown} is out of range: allowed {rng[0]}..{rng[1]}")
            return None
        return v

    def str_map(self, table: dict, key: str, path: tuple, key_re, value_re, what: str):
        t = self.table(table, key, path)
        if t is None:
            return ()
        out = []
        for k, v in t.items():
            full = path + (key, k)
            if not isinstance(v, str):
                self.issue(full, f"{what} values are strings, got {_kind(v)}")
            elif not key_re.fullmatch(k):
                self.issue(full, f"{k!r} is not a valid Kubernetes {what} key")
            elif value_re is not None and not value_re.fullmatch(v):
                self.issue(full, f"{v!r} is not a valid Kubernetes {what} value")
            else:
                out.append((k, v))
        self.from_file(path + (key,))
        return tuple(sorted(out))


def _kind(v) -> str:
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int):
        return "an integer"
    if isinstance(v, float):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, list):
        return "an array"
    return type(v).__name__


def _kind_name(kind: type) -> str:
    return {bool: "a boolean", str: "a string", list: "an array", dict: "a table"}.get(
        kind, kind.__name__)


def _depth(v, limit: int, d: int = 0) -> int:
    if d > limit:
        return d
    if isinstance(v, dict):
        return max([_depth(x, limit, d + 1) for x in v.values()] or [d])
    if isinstance(v, list):
        return max([_depth(x, limit, d + 1) for x in v] or [d])
    return d


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _listen(c: _Checker, table: dict, path: tuple):
    full = path + ("listen",)
    default = model.Metrics()
    v = c.get(table, "listen", path, str, f"{default.address}:{default.port}")
    if v is None:
        return None
    m = re.fullmatch(r"\[([0-9a-fA-F:]+)\]:([0-9]{1,5})|([^:\[\]]+):([0-9]{1,5})", v)
    if not m:
        c.issue(full, f"{v!r} is not HOST:PORT (e.g. \"127.0.0.1:9464\" or \"[::1]:9464\")")
        return None
    host = m.group(1) or m.group(3)
    port = int(m.group(2) or m.group(4))
    if not PORT_RANGE[0] <= port <= PORT_RANGE[1]:
        c.issue(full, f"port {port} is out of range: allowed {PORT_RANGE[0]}..{PORT_RANGE[1]}")
        return None
    if not _loopback(host):
        c.issue(full, f"metrics listen on {host!r} refused: the listener is loopback-only "
                      f"(127.0.0.0/8, ::1 or localhost)")
        return None
    return host, port


def _scheduler(c: _Checker, doc: dict) -> model.Scheduler | None:
    path = ("scheduler",)
    t = c.table(doc, "scheduler", ())
    if t is None:
        t = {}
    c.unknown_keys(t, SCHEDULER_KEYS, path)
    d = model.Scheduler()
    obj = c.get(t, "object", path, str, d.object)
    if obj is not None and not obj.startswith("/"):
        c.issue(path + ("object",), f"{obj!r} must be an absolute path")
        obj = None
    sha = c.get(t, "sha256", path, str, d.sha256)
    if sha is not None and not SHA256_RE.fullmatch(sha):
        c.issue(path + ("sha256",), "expected 64 lowercase hex digits")
        sha = None
    slice_ns = c.duration(t, "slice", path, SLICE_RANGE, d.slice_ns)
    floor = c.int_in(t, "batch-floor", path, BATCH_FLOOR_RANGE, d.batch_floor_pct)
    watchdog = c.duration(t, "watchdog-timeout", path, WATCHDOG_RANGE, d.watchdog_timeout_ns)
    mpath = path + ("metrics",)
    mt = c.table(t, "metrics", path) or {}
    c.unknown_keys(mt, METRICS_KEYS, mpath)
    enabled = c.get(mt, "enabled", mpath, bool, d.metrics.enabled)
    listen = _listen(c, mt, mpath)
    if None in (slice_ns, floor, watchdog, enabled, listen) or \
            ("object" in t and obj is None) or ("sha256" in t and sha is None):
        return None
    return model.Scheduler(object=obj, sha256=sha, slice_ns=slice_ns, batch_floor_pct=floor,
                           watchdog_timeout_ns=watchdog,
                           metrics=model.Metrics(enabled=enabled, address=listen[0],
                                                 port=listen[1]))


def _array_of_tables(c: _Checker, doc: dict, key: str) -> list[dict]:
    if key not in doc:
        return []
    v = doc[key]
    if isinstance(v, dict):
        c.issue((key,), f"expected [[{key}]] entries (an array of tables), got a single "
                        f"table [{key}]")
        return []
    if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
        c.issue((key,), f"expected [[{key}]] entries (an array of tables), got {_kind(v)}")
        return []
    return v


def _classes(c: _Checker, doc: dict, max_slice: int | None):
    raw = _array_of_tables(c, doc, "class")
    if len(raw) > model.MAX_OPERATOR_CLASSES:
        c.issue(("class", model.MAX_OPERATOR_CLASSES),
                f"{len(raw)} classes declared; at most {model.MAX_OPERATOR_CLASSES} are allowed "
                f"(ids 1..{model.MAX_CLASS_ID}; id 0 is the '{model.DEFAULT_CLASS_NAME}' class)")
    entries, seen, ok = [], {}, True
    for i, t in enumerate(raw):
        path = ("class", i)
        c.unknown_keys(t, CLASS_KEYS, path)
        name = c.get(t, "name", path, str, None)
        if "name" not in t:
            c.issue(path, "a class needs a name")
        elif name is not None:
            if name == model.DEFAULT_CLASS_NAME:
                c.issue(path + ("name",), f"'{name}' is the built-in class 0; choose another name")
                name = None
            elif not CLASS_NAME_RE.fullmatch(name):
                c.issue(path + ("name",), f"{name!r} is not a class name: lowercase letters, "
                                          "digits and '-', starting with a letter, 1..31 chars")
                name = None
            elif name in seen:
                c.issue(path + ("name",), f"duplicate class {name!r} (first declared as "
                                          f"class[{seen[name]}])")
                name = None
            else:
                seen[name] = i
        if "p99" not in t:
            c.issue(path, "a class needs a latency target, e.g. p99 = \"200ms\"")
            p99 = None
        else:
            p99 = c.duration(t, "p99", path, P99_RANGE, None)
        weight = c.int_in(t, "weight", path, WEIGHT_RANGE, None)
        slice_ns = c.duration(t, "slice", path, SLICE_RANGE, None)
        miss = c.duration(t, "miss-threshold", path, MISS_RANGE, None)
        bad = name is None or p99 is None or ("weight" in t and weight is None) or \
            ("slice" in t and slice_ns is None) or ("miss-threshold" in t and miss is None)
        if bad:
            ok = False
            continue
        for k in ("priority", "weight", "slice", "miss-threshold"):
            if k not in t:
                c.prov[format_path(path + (k,))] = f"derived from p99 ({format_duration(p99)})"
        entries.append((i, name, p99, weight, slice_ns, miss))
    if not ok or max_slice is None or len(raw) > model.MAX_OPERATOR_CLASSES:
        return None
    ranked = sorted(entries, key=lambda e: (e[2], e[0]))
    priority = {e[0]: rank for rank, e in enumerate(ranked, start=1)}
    classes = [model.default_class(len(entries) + 1, max_slice)]
    for i, name, p99, weight, slice_ns, miss in entries:
        classes.append(model.derive_class(i + 1, name, p99, priority[i], max_slice,
                                          weight=weight, slice_ns=slice_ns,
                                          miss_threshold_ns=miss))
    return tuple(classes)


def _rules(c: _Checker, doc: dict, class_names: dict[str, int] | None):
    raw = _array_of_tables(c, doc, "rule")
    rules, ok = [], True
    for i, t in enumerate(raw):
        path = ("rule", i)
        c.unknown_keys(t, RULE_KEYS, path)
        cls = c.get(t, "class", path, str, None)
        if "class" not in t:
            c.issue(path, "a rule needs the class it maps to, e.g. class = \"frontend\"")
        elif cls is not None and class_names is not None and cls not in class_names:
            known = list(class_names)
            close = difflib.get_close_matches(cls, known, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else f"; classes: {', '.join(known)}"
            c.issue(path + ("class",), f"no class named {cls!r}{hint}")
            cls = None
        ns = c.get(t, "namespace", path, str, None)
        if ns is not None and not NAMESPACE_GLOB_RE.fullmatch(ns):
            c.issue(path + ("namespace",), f"{ns!r} is not a namespace name or glob")
            ns = None
        labels = c.str_map(t, "labels", path, K8S_KEY_RE, LABEL_VALUE_RE, "label")
        annotations = c.str_map(t, "annotations", path, K8S_KEY_RE, None, "annotation")
        cg = c.get(t, "cgroup", path, str, None)
        if cg is not None:
            if not CGROUP_GLOB_RE.fullmatch(cg) or ".." in cg.split("/"):
                c.issue(path + ("cgroup",), f"{cg!r} is not a cgroup path glob relative to the "
                                            "cgroup root (e.g. \"system.slice/*.service\")")
                cg = None
            else:
                cg = cg.strip("/")
        pod_keys = [k for k in ("namespace", "labels", "annotations") if k in t]
        if "cgroup" in t and pod_keys:
            c.issue(path + ("cgroup",), f"a rule matches either pods ({', '.join(pod_keys)}) or a "
                                        "cgroup path, not both; split it into two rules")
            ok = False
        elif "cgroup" not in t and not pod_keys:
            c.issue(path, "a rule needs a selector: namespace, labels, annotations or cgroup")
            ok = False
        if cls is None or ("namespace" in t and ns is None) or ("cgroup" in t and cg is None):
            ok = False
            continue
        if class_names is not None:
            rules.append(model.Rule(class_name=cls, class_id=class_names[cls], namespace=ns,
                                    labels=labels, annotations=annotations, cgroup=cg))
    if not ok or class_names is None:
        return None
    return tuple(rules)


def _section(c: _Checker, doc: dict, name: str, keys: tuple) -> tuple[tuple, dict]:
    """The path and table of the top-level section NAME ({} if absent), unknown keys reported."""
    path = (name,)
    t = c.table(doc, name, ()) or {}
    c.unknown_keys(t, keys, path)
    return path, t


def _annotations(c: _Checker, doc: dict) -> model.Annotations | None:
    path, t = _section(c, doc, "annotations", ANNOTATION_KEYS)
    d = model.Annotations()
    enabled = c.get(t, "enabled", path, bool, d.enabled)
    key = c.get(t, "key", path, str, d.key)
    if key is not None and not K8S_KEY_RE.fullmatch(key):
        c.issue(path + ("key",), f"{key!r} is not a valid Kubernetes annotation key")
        key = None
    nss = c.get(t, "namespaces", path, list, list(d.namespaces))
    if nss is not None:
        bad = [n for n in nss if not isinstance(n, str) or not NAMESPACE_GLOB_RE.fullmatch(n)]
        if bad:
            c.issue(path + ("namespaces",), f"not namespace names or globs: {bad[:5]!r}")
            nss = None
    tightest = c.duration(t, "tightest", path, TIGHTEST_RANGE, d.tightest_ns)
    if None in (enabled, key, nss, tightest):
        return None
    return model.Annotations(enabled=enabled, key=key, namespaces=tuple(nss),
                             tightest_ns=tightest)


def _kubernetes(c: _Checker, doc: dict) -> model.Kubernetes | None:
    path, t = _section(c, doc, "kubernetes", KUBERNETES_KEYS)
    d = model.Kubernetes()
    enabled = c.get(t, "enabled", path, bool, d.enabled)
    kubeconfig = c.get(t, "kubeconfig", path, str, d.kubeconfig)
    if kubeconfig is not None and kubeconfig != model.IN_CLUSTER and not kubeconfig.startswith("/"):
        c.issue(path + ("kubeconfig",), f"{kubeconfig!r}: an absolute path, or "
                                        f"\"{model.IN_CLUSTER}\" for the pod's service account")
        kubeconfig = None
    root = c.get(t, "host-root", path, str, d.host_root)
    if root is not None and not root.startswith("/"):
        c.issue(path + ("host-root",), f"{root!r} must be an absolute path (\"/\": paths as "
                                       "written)")
        root = None
    if None in (enabled, kubeconfig, root):
        return None
    return model.Kubernetes(enabled=enabled,
                            kubeconfig=None if kubeconfig == model.IN_CLUSTER else kubeconfig,
                            host_root=None if root == "/" else root)


def _alerts(c: _Checker, doc: dict) -> model.Alerts | None:
    path, t = _section(c, doc, "alerts", ALERTS_KEYS)
    d = model.Alerts()
    enabled = c.get(t, "enabled", path, bool, d.enabled)
    threshold = c.int_in(t, "threshold", path, ALERT_THRESHOLD_RANGE, d.threshold)
    window = c.duration(t, "window", path, ALERT_WINDOW_RANGE, d.window_ns)
    interval = c.duration(t, "log-interval", path, LOG_INTERVAL_RANGE, d.log_interval_ns)
    events = c.get(t, "events", path, bool, d.events)
    if None in (enabled, threshold, window, interval, events):
        return None
    return model.Alerts(enabled=enabled, threshold=threshold, window_ns=window,
                        log_interval_ns=interval, events=events)


def parse_document(text: str, filename: str) -> tomlkit.TOMLDocument:
    """tomlkit-parse TEXT; a syntax error becomes a located ValidationError."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise ValidationError([Issue(filename, 1, 1, "", f"document is larger than "
                                                         f"{MAX_BYTES} bytes")])
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ValidationError([Issue(filename, line, 1, "", "binary data (NUL byte) is not "
                                                            "TOML settings")])
    try:
        return tomlkit.parse(text)
    except ParseError as e:
        msg = re.sub(r" at line \d+ col \d+$", "", str(e))
        raise ValidationError([Issue(filename, e.line, e.col + 1, "",
                                     f"TOML syntax: {msg}")]) from None
    except RecursionError:
        raise ValidationError([Issue(filename, 1, 1, "", "document is nested too deeply")]) \
            from None
    except (TOMLKitError, ValueError, TypeError, OverflowError) as e:
        raise ValidationError([Issue(filename, 1, 1, "", f"TOML syntax: {e}")]) from None


def validate_text(text: str, filename: str = "<user-data>") -> Loaded:
    """Parse and validate TEXT; raise ValidationError listing every issue."""
    if not isinstance(text, str):
        raise ValidationError([Issue(filename, 1, 1, "", f"expected text, got "
                                                         f"{type(text).__name__}")])
    if not text.strip():
        raise ValidationError([Issue(filename, 1, 1, "", "empty settings document; write at "
                                     "least a [scheduler] table (see settings/defaults.toml)")])
    doc = parse_document(text, filename)
    try:
        plain = doc.unwrap()
    except (RecursionError, TOMLKitError, ValueError, TypeError, OverflowError) as e:
        raise ValidationError([Issue(filename, 1, 1, "", f"cannot read document: {e}")]) \
            from None
    if _depth(plain, MAX_NESTING) > MAX_NESTING:
        raise ValidationError([Issue(filename, 1, 1, "", f"document is nested deeper than "
                                                         f"{MAX_NESTING} levels")])
    c = _Checker(text, filename)
    c.unknown_keys(plain, TOP_KEYS, ())
    sched = _scheduler(c, plain)
    classes = _classes(c, plain, sched.slice_ns if sched else None)
    names = {cl.name: cl.id for cl in classes} if classes else None
    if names is None and "class" in plain:
        # still check rules for their own problems, and class references by name
        declared = plain.get("class")
        names_for_check = {t.get("name"): 0 for t in (declared if isinstance(declared, list) else [])
                           if isinstance(t, dict) and isinstance(t.get("name"), str)}
        names_for_check[model.DEFAULT_CLASS_NAME] = 0
        _rules(c, plain, names_for_check)
        rules = None
    else:
        if names is None:
            names = {model.DEFAULT_CLASS_NAME: 0}
        rules = _rules(c, plain, names)
    ann = _annotations(c, plain)
    kube = _kubernetes(c, plain)
    alerts = _alerts(c, plain)
    if c.issues:
        c.issues.sort(key=lambda i: (i.line, i.col))
        raise ValidationError(c.issues)
    assert None not in (sched, classes, rules, ann, kube, alerts)
    config = model.Config(scheduler=sched, classes=classes, rules=rules, annotations=ann,
                          kubernetes=kube, alerts=alerts)
    return Loaded(config=config, provenance=c.prov, filename=filename, text=text, document=doc)


def validate_bytes(data: bytes, filename: str = "<user-data>") -> Loaded:
    """Validate raw user-data bytes: refuse binary and non-UTF-8 with a located error."""
    if not isinstance(data, (bytes, bytearray)):
        raise ValidationError([Issue(filename, 1, 1, "", "expected bytes")])
    if len(data) > MAX_BYTES:
        raise ValidationError([Issue(filename, 1, 1, "", f"document is larger than "
                                                         f"{MAX_BYTES} bytes")])
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise ValidationError([Issue(filename, line, col, "", "not UTF-8 text (binary data?)")]) \
            from None
    if text.startswith("\ufeff"):
        text = text[1:]
    return validate_text(text, filename)
