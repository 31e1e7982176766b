"""Cluster policy: SloPolicy objects (slo.scx-slo.dev/v1alpha1) merged with a node's user-data.

An SloPolicy's spec carries what [[class]], [[rule]] and [annotations] carry in
user-data, with the Kubernetes spelling (missThreshold for miss-threshold).
The node's user-data is the node-local override, and the whole configuration
when the API server cannot be reached:

- [scheduler] comes from the user-data alone;
- classes: the user-data's, then every policy's in the order of the policies'
  names; a policy class that the user-data declares too is the user-data's;
- rules: the user-data's first (tried first), then every policy's, in the same
  order;
- annotations: the user-data's [annotations] if it has one, else those of the
  first policy (by name) that sets them, else the defaults.

The merge is validated by the same code as user-data (validate.py). A policy
that makes it invalid is refused whole, with every issue located at the
policy's name and field path (`SloPolicy web: spec.classes[1].p99: ...`); the
others still apply, and so does the policy's last accepted generation, if the
caller kept one. The user-data must be valid on its own.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import tomlkit

from scx_slo.settings.errors import Issue, ValidationError
from scx_slo.settings.validate import Loaded, validate_text

GROUP = "slo.scx-slo.dev"
VERSION = "v1alpha1"
PLURAL = "slopolicies"
KIND = "SloPolicy"

MAX_POLICIES = 32
# The spec's keys and the user-data key each stands for.
CLASS_FIELDS = {"name": "name", "p99": "p99", "weight": "weight", "slice": "slice",
                "missThreshold": "miss-threshold"}
RULE_FIELDS = {"class": "class", "namespace": "namespace", "labels": "labels",
               "annotations": "annotations", "cgroup": "cgroup"}
ANNOTATION_FIELDS = {"enabled": "enabled", "key": "key", "namespaces": "namespaces",
                     "tightest": "tightest"}
SPEC_FIELDS = {"classes": ("class", CLASS_FIELDS), "rules": ("rule", RULE_FIELDS),
               "annotations": ("annotations", ANNOTATION_FIELDS)}
_TO_SPEC = {toml: spec for fields in (CLASS_FIELDS, RULE_FIELDS, ANNOTATION_FIELDS)
            for spec, toml in fields.items()}
_ISSUE_KEY = re.compile(r"^(class|rule)\[(\d+)\](.*)$|^(annotations)(.*)$")


@dataclass(frozen=True)
class Policy:
    """One SloPolicy object as the API server returned it."""

    name: str
    generation: int
    spec: object

    @classmethod
    def from_object(cls, obj: dict) -> "Policy":
        meta = obj.get("metadata") or {}
        return cls(name=str(meta.get("name", "")), generation=int(meta.get("generation") or 0),
                   spec=obj.get("spec"))


@dataclass(frozen=True)
class Verdict:
    """Whether a policy's current generation is accepted on this node, and if not, why
    (one line per issue) and which earlier generation stays in force (None: none)."""

    name: str
    generation: int
    accepted: bool
    issues: tuple[str, ...] = ()
    in_force: int | None = None


@dataclass
class Merged:
    loaded: Loaded                              # the configuration in force
    verdicts: dict[str, Verdict]                # by policy name
    notes: list[str] = field(default_factory=list)   # overrides worth a log line


def _spec_path(rest: str) -> str:
    """A merged document's key below an entry ('.miss-threshold') in the spec's spelling."""
    head, sep, tail = rest.lstrip(".").partition(".")
    return f".{_TO_SPEC.get(head, head)}{sep}{tail}" if head else rest


class _Doc:
    """The merged document being built, and where each of its entries came from."""

    def __init__(self, user: dict):
        self.doc = {k: v for k, v in user.items() if k not in ("class", "rule")}
        self.classes: list[dict] = list(user.get("class", []))
        self.rules: list[dict] = list(user.get("rule", []))
        self.origin = {"class": [None] * len(self.classes), "rule": [None] * len(self.rules),
                       "annotations": None}
        self.user_classes = {c.get("name") for c in self.classes}

    def add(self, policy: Policy, notes: list[str]) -> list[str]:
        """Add POLICY's entries; the spec's own shape problems (not the values'), located."""
        spec = policy.spec
        where = f"{KIND} {policy.name}: spec"
        if not isinstance(spec, dict):
            return [f"{where}: expected an object, got {type(spec).__name__}"]
        problems = [f"{where}.{k}: unknown field; allowed: {', '.join(SPEC_FIELDS)}"
                    for k in spec if k not in SPEC_FIELDS]
        for key, (toml_key, fields) in SPEC_FIELDS.items():
            if key not in spec:
                continue
            entries = [spec[key]] if toml_key == "annotations" else spec[key]
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                problems.append(f"{where}.{key}: expected "
                                f"{'an object' if toml_key == 'annotations' else 'a list of objects'}")
                continue
            for i, entry in enumerate(entries):
                at = f"{where}.{key}" + ("" if toml_key == "annotations" else f"[{i}]")
                unknown = [k for k in entry if k not in fields]
                problems += [f"{at}.{k}: unknown field; allowed: {', '.join(fields)}"
                             for k in unknown]
                if unknown:
                    continue
                table = {fields[k]: v for k, v in entry.items()}
                if toml_key == "class" and table.get("name") in self.user_classes:
                    notes.append(f"{at}: class {table['name']!r} is the node's user-data's "
                                 "(node-local override)")
                elif toml_key == "annotations":
                    if "annotations" in self.doc:
                        notes.append(f"{at}: the node's [annotations] (or an earlier "
                                     "policy's) apply instead")
                    else:
                        self.doc["annotations"] = table
                        self.origin["annotations"] = (policy.name, f"spec.{key}")
                else:
                    (self.classes if toml_key == "class" else self.rules).append(table)
                    self.origin[toml_key].append((policy.name, f"spec.{key}[{i}]"))
        return problems

    def text(self) -> str:
        doc = dict(self.doc)
        if self.classes:
            doc["class"] = self.classes
        if self.rules:
            doc["rule"] = self.rules
        return tomlkit.dumps(doc)

    def locate(self, issue: Issue) -> tuple[str | None, str]:
        """The policy an issue of the merged document belongs to (None: the user-data's),
        and the issue in the spec's terms."""
        m = _ISSUE_KEY.match(issue.key)
        if m is None:
            return None, str(issue)
        if m.group(4):
            origin, rest = self.origin["annotations"], m.group(5)
        else:
            entries = self.origin[m.group(1)]
            i = int(m.group(2))
            origin, rest = (entries[i] if i < len(entries) else None), m.group(3)
        if origin is None:
            return None, f"user-data {issue.key}: {issue.message}"
        name, path = origin
        return name, f"{KIND} {name}: {path}{_spec_path(rest)}: {issue.message}"


def merge(user_data_text: str, policies: list[Policy], last_good: dict[str, Policy] | None = None,
          filename: str = "<cluster policy>") -> Merged:
    """The configuration in force: USER_DATA_TEXT (valid on its own) with every policy that
    keeps the merge valid. A refused policy of which LAST_GOOD holds an earlier accepted
    generation keeps that one in force (if it still merges). Raises ValidationError only
    for an invalid user-data."""
    first = _merge(user_data_text, policies, filename)
    restore = {n: last_good[n] for n, v in first.verdicts.items()
               if not v.accepted and last_good and n in last_good
               and last_good[n].generation != v.generation}
    if not restore:
        return first
    second = _merge(user_data_text, [restore.get(p.name, p) for p in policies], filename)
    verdicts = dict(second.verdicts)
    for name, old in restore.items():
        kept = second.verdicts[name].accepted
        verdicts[name] = dataclasses.replace(first.verdicts[name],
                                             in_force=old.generation if kept else None)
    return Merged(second.loaded, verdicts, second.notes)


def _merge(user_data_text: str, policies: list[Policy], filename: str) -> Merged:
    user_loaded = validate_text(user_data_text, "<user-data>")
    user = user_loaded.document.unwrap()
    ordered = sorted(policies, key=lambda p: p.name)
    verdicts: dict[str, Verdict] = {}
    for extra in ordered[MAX_POLICIES:]:
        verdicts[extra.name] = Verdict(extra.name, extra.generation, False, (
            f"{KIND} {extra.name}: more than {MAX_POLICIES} policies; the first "
            f"{MAX_POLICIES} by name apply",))
    candidates = []
    for p in ordered[:MAX_POLICIES]:
        problems = _Doc(user).add(p, [])
        if problems:
            verdicts[p.name] = Verdict(p.name, p.generation, False, tuple(problems))
        else:
            candidates.append(p)
    while True:
        d, notes = _Doc(user), []
        for p in candidates:
            d.add(p, notes)
        if not candidates:
            return Merged(user_loaded, verdicts, notes)
        try:
            loaded = validate_text(d.text(), filename)
        except ValidationError as e:
            refused: dict[str, list[str]] = {}
            for issue in e.issues:
                name, line = d.locate(issue)
                # an issue on the user-data's own entries comes from what the policies
                # added (the user-data alone is valid): refuse the last policy
                refused.setdefault(name or candidates[-1].name, []).append(line)
            for p in candidates:
                if p.name in refused:
                    verdicts[p.name] = Verdict(p.name, p.generation, False,
                                               tuple(refused[p.name]))
            candidates = [p for p in candidates if p.name not in refused]
            continue
        for p in candidates:
            verdicts[p.name] = Verdict(p.name, p.generation, True, in_force=p.generation)
        return Merged(loaded, verdicts, notes)
