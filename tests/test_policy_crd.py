"""The SloPolicy CRD (deploy/chart/scx-slo/crds/slopolicies.yaml) and the merge of
policies with a node's user-data (scx_slo.settings.cluster).

The CRD is checked as a Kubernetes object (kubernetes-validate, strict), with the
real helm (lint, `template --include-crds`), and against the settings code: its
limits, patterns and field names are the ones validate.py enforces, so what the
API server admits is what a node can merge. The example policy validates against
the CRD's schema (jsonschema; the CEL rules are checked by reading them against
the same limits) and merges with the shipped example user-data.
"""
from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import tomlkit
import yaml

from scx_slo.settings import cluster, durations, model, validate as V
from scx_slo.settings.cluster import Policy, merge
from scx_slo.settings.durations import format_duration
from scx_slo.settings.errors import ValidationError

from test_deploy import CHART, K8S_VERSIONS, helm, kubernetes_validate

REPO = Path(__file__).resolve().parents[1]
CRD_FILE = CHART / "crds" / "slopolicies.yaml"
EXAMPLE = REPO / "deploy" / "examples" / "slopolicy.yaml"
USER_DATA = '[scheduler]\n\n[[class]]\nname = "node-fast"\np99 = "20ms"\n'


@pytest.fixture(scope="module")
def crd() -> dict:
    return yaml.safe_load(CRD_FILE.read_text())


def schema_of(crd: dict) -> dict:
    (version,) = crd["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def spec_props(crd: dict) -> dict:
    return schema_of(crd)["properties"]["spec"]["properties"]


def cel_range(prop: dict) -> tuple[str, str]:
    (rule,) = prop["x-kubernetes-validations"]
    m = re.fullmatch(r"duration\(self\) >= duration\('(\w+)'\) && "
                     r"duration\(self\) <= duration\('(\w+)'\)", rule["rule"])
    assert m, rule
    assert rule["message"] == f"out of range: allowed {m.group(1)}..{m.group(2)}"
    return m.group(1), m.group(2)


def fmt_range(rng: tuple[int, int]) -> tuple[str, str]:
    return format_duration(rng[0]), format_duration(rng[1])


# -- the CRD as a Kubernetes object -------------------------------------------------

def test_crd_is_a_valid_kubernetes_object(crd):
    for v in K8S_VERSIONS:
        kubernetes_validate.validate(crd, v, strict=True)
    assert crd["metadata"]["name"] == f"{cluster.PLURAL}.{cluster.GROUP}"
    assert crd["spec"]["group"] == cluster.GROUP and crd["spec"]["scope"] == "Cluster"
    assert crd["spec"]["names"]["kind"] == cluster.KIND
    (version,) = crd["spec"]["versions"]
    assert version["name"] == cluster.VERSION and version["subresources"] == {"status": {}}


def test_helm_ships_the_crd(tmp_path):
    p = helm("lint", "--strict", str(CHART))
    assert p.returncode == 0, p.stdout + p.stderr
    p = helm("template", "scx-slo", str(CHART), "--include-crds")
    assert p.returncode == 0, p.stderr
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    assert yaml.safe_load(CRD_FILE.read_text()) in docs


# -- the CRD mirrors validate.py --------------------------------------------------

def test_crd_fields_are_the_settings_keys(crd):
    props = spec_props(crd)
    assert set(props) == set(cluster.SPEC_FIELDS)
    assert set(props["classes"]["items"]["properties"]) == set(cluster.CLASS_FIELDS)
    assert set(props["rules"]["items"]["properties"]) == set(cluster.RULE_FIELDS)
    assert set(props["annotations"]["properties"]) == set(cluster.ANNOTATION_FIELDS)
    # and every settings key has its spec field
    assert set(cluster.CLASS_FIELDS.values()) == set(V.CLASS_KEYS)
    assert set(cluster.RULE_FIELDS.values()) == set(V.RULE_KEYS)
    assert set(cluster.ANNOTATION_FIELDS.values()) == set(V.ANNOTATION_KEYS)


def test_crd_limits_are_the_settings_limits(crd):
    props = spec_props(crd)
    cls = props["classes"]["items"]["properties"]
    assert props["classes"]["maxItems"] == model.MAX_OPERATOR_CLASSES
    assert cel_range(cls["p99"]) == fmt_range(V.P99_RANGE)
    assert cel_range(cls["slice"]) == fmt_range(V.SLICE_RANGE)
    assert cel_range(cls["missThreshold"]) == fmt_range(V.MISS_RANGE)
    assert (cls["weight"]["minimum"], cls["weight"]["maximum"]) == V.WEIGHT_RANGE
    assert cel_range(props["annotations"]["properties"]["tightest"]) == fmt_range(V.TIGHTEST_RANGE)
    assert cls["name"]["x-kubernetes-validations"][0]["rule"] == \
        f"self != '{model.DEFAULT_CLASS_NAME}'"


def test_crd_patterns_are_the_settings_patterns(crd):
    props = spec_props(crd)
    cls, rule = props["classes"]["items"]["properties"], props["rules"]["items"]["properties"]
    samples = ["500us", "1.5s", "200ms", "10µs", "7ns", "0.25ms", "1", "1.", ".5s", "ms",
               "1m", "1h", "1e3s", "1 s", "-1s", "+1s", "1.5.5s", "1S"]
    for prop in (cls["p99"], cls["slice"], cls["missThreshold"],
                 props["annotations"]["properties"]["tightest"]):
        assert [s for s in samples if re.search(prop["pattern"], s)] == \
            [s for s in samples if durations._RE.fullmatch(s)]
    assert cls["name"]["pattern"] == f"^{V.CLASS_NAME_RE.pattern}$"
    assert rule["namespace"]["pattern"] == f"^{V.NAMESPACE_GLOB_RE.pattern}$"
    assert props["annotations"]["properties"]["namespaces"]["items"]["pattern"] == \
        f"^{V.NAMESPACE_GLOB_RE.pattern}$"
    assert rule["cgroup"]["pattern"] == f"^{V.CGROUP_GLOB_RE.pattern}$"


def test_crd_rule_messages_are_the_settings_messages(crd):
    """The CEL rules on a rule say what validate.py says of the same mistake."""
    rules = spec_props(crd)["rules"]["items"]["x-kubernetes-validations"]
    both = {"class": "web", "namespace": "a", "labels": {"app": "x"},
            "annotations": {"team": "y"}, "cgroup": "x.slice"}
    none = {"class": "web"}
    for rule, cel in ((both, rules[0]), (none, rules[1])):
        text = tomlkit.dumps({"scheduler": {}, "class": [{"name": "web", "p99": "200ms"}],
                              "rule": [rule]})
        with pytest.raises(ValidationError) as e:
            V.validate_text(text)
        assert any(cel["message"] in i.message for i in e.value.issues), (cel, e.value)


def test_the_example_is_admitted_and_merges(crd):
    example = yaml.safe_load(EXAMPLE.read_text())
    jsonschema.validate(example, schema_of(crd))
    m = merge(USER_DATA, [Policy.from_object(example)])
    assert m.verdicts["web-tier"].accepted, m.verdicts
    assert [c.name for c in m.loaded.config.classes] == ["default", "node-fast", "interactive",
                                                         "web"]


def test_schema_refuses_what_settings_refuse(crd):
    """Shapes the API server turns away (before any node sees them)."""
    schema = schema_of(crd)
    for bad in ({"classes": [{"name": "Web", "p99": "200ms"}]},
                {"classes": [{"name": "web", "p99": "200"}]},
                {"classes": [{"name": "web"}]},
                {"classes": [{"name": f"c{i}", "p99": "1s"} for i in range(8)]},
                {"classes": [{"name": "web", "p99": "1s", "weight": 0}]},
                {"rules": [{"namespace": "a"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"apiVersion": f"{cluster.GROUP}/{cluster.VERSION}",
                                 "kind": cluster.KIND, "metadata": {"name": "x"}, "spec": bad},
                                schema)


# -- the merge ----------------------------------------------------------------------

def policy(name: str, generation: int = 1, **spec) -> Policy:
    return Policy(name, generation, spec)


def test_precedence_user_data_first_then_policies_by_name():
    ud = USER_DATA + '\n[[rule]]\nclass = "node-fast"\nnamespace = "ops"\n'
    m = merge(ud, [
        policy("b", classes=[{"name": "batchy", "p99": "1s"}],
               rules=[{"class": "batchy", "namespace": "ops"}]),
        policy("a", classes=[{"name": "api", "p99": "100ms", "missThreshold": "5ms"}],
               rules=[{"class": "api", "labels": {"app": "api"}}],
               annotations={"tightest": "50ms"}),
    ])
    cfg = m.loaded.config
    assert [(c.id, c.name) for c in cfg.classes] == [(0, "default"), (1, "node-fast"),
                                                     (2, "api"), (3, "batchy")]
    assert cfg.classes[2].miss_threshold_ns == 5 * model.MS
    assert [r.class_name for r in cfg.rules] == ["node-fast", "api", "batchy"]
    # the node's rule wins for namespace ops
    assert cfg.class_for_pod("ops", {}, {})[0].name == "node-fast"
    assert cfg.annotations.tightest_ns == 50 * model.MS
    assert all(v.accepted for v in m.verdicts.values())


def test_the_node_overrides_a_cluster_class_and_its_annotations():
    ud = USER_DATA + '\n[annotations]\nenabled = false\n'
    m = merge(ud, [policy("p", classes=[{"name": "node-fast", "p99": "5s"}],
                          annotations={"tightest": "1s"})])
    cfg = m.loaded.config
    assert cfg.class_named("node-fast").p99_ns == 20 * model.MS
    assert cfg.annotations.enabled is False and cfg.annotations.tightest_ns == 100 * model.MS
    assert m.verdicts["p"].accepted
    assert any("node-fast" in n and "node-local override" in n for n in m.notes)
    assert any("spec.annotations" in n for n in m.notes)


def test_a_bad_policy_is_refused_with_its_name_and_field_path_and_the_rest_apply():
    m = merge(USER_DATA, [
        policy("good", classes=[{"name": "web", "p99": "200ms"}],
               rules=[{"class": "web", "namespace": "web"}]),
        policy("bad", 7, classes=[{"name": "ok", "p99": "1s"},
                                  {"name": "fast", "p99": "200ms", "missThreshold": "1ns"}]),
        policy("typo", rules=[{"class": "wbe", "namespace": "x"}]),
        policy("shape", classez=[]),
    ])
    v = m.verdicts
    assert v["good"].accepted
    assert not v["bad"].accepted and v["bad"].generation == 7
    assert v["bad"].issues == ("SloPolicy bad: spec.classes[1].missThreshold: '1ns' is out of "
                               "range: allowed 10us..60s",)
    assert not v["typo"].accepted
    assert v["typo"].issues[0].startswith("SloPolicy typo: spec.rules[0].class: no class "
                                          "named 'wbe'; did you mean 'web'?")
    assert v["shape"].issues == ("SloPolicy shape: spec.classez: unknown field; allowed: "
                                 "classes, rules, annotations",)
    # the bad policies left nothing behind
    assert [c.name for c in m.loaded.config.classes] == ["default", "node-fast", "web"]


def test_a_rule_on_a_refused_policys_class_is_refused_too():
    m = merge(USER_DATA, [policy("a", classes=[{"name": "web", "p99": "1ns"}]),
                          policy("b", rules=[{"class": "web", "namespace": "x"}])])
    assert not m.verdicts["a"].accepted and not m.verdicts["b"].accepted
    assert "spec.rules[0].class: no class named 'web'" in m.verdicts["b"].issues[0]
    assert m.loaded.config == V.validate_text(USER_DATA).config


def test_too_many_classes_refuse_the_policy_that_overflows():
    ud = "[scheduler]\n\n" + "".join(f'[[class]]\nname = "n{i}"\np99 = "1s"\n\n'
                                     for i in range(6))
    m = merge(ud, [policy("a", classes=[{"name": "x", "p99": "1s"}]),
                   policy("b", classes=[{"name": "y", "p99": "1s"}])])
    assert m.verdicts["a"].accepted
    assert not m.verdicts["b"].accepted
    assert m.verdicts["b"].issues[0].startswith("SloPolicy b: spec.classes[0]: 8 classes declared")


def test_at_most_max_policies_by_name():
    ps = [policy(f"p{i:02}", classes=[]) for i in range(cluster.MAX_POLICIES + 2)]
    m = merge(USER_DATA, ps)
    refused = sorted(n for n, v in m.verdicts.items() if not v.accepted)
    assert refused == [f"p{i:02}" for i in range(cluster.MAX_POLICIES, cluster.MAX_POLICIES + 2)]


def test_invalid_user_data_is_the_nodes_error():
    with pytest.raises(ValidationError) as e:
        merge('[scheduler]\nslice = "1h"\n', [])
    assert e.value.issues[0].file == "<user-data>"


# -- RBAC -----------------------------------------------------------------------------

def rendered_rbac(**values) -> list[dict]:
    from test_deploy import render_chart

    return [d for d in render_chart({"policy": {"enabled": True, **values}})
            if d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")]


def test_rbac_lets_the_agent_read_policies_and_write_their_status():
    docs = rendered_rbac()
    for doc in docs:
        for v in K8S_VERSIONS:
            kubernetes_validate.validate(doc, v, strict=True)
    kinds = {d["kind"]: d for d in docs}
    rules = {(*r["apiGroups"], *r["resources"]): set(r["verbs"])
             for r in kinds["ClusterRole"]["rules"]}
    assert rules == {(cluster.GROUP, cluster.PLURAL): {"get", "list", "watch"},
                     (cluster.GROUP, f"{cluster.PLURAL}/status"): {"get", "patch"},
                     ("", "events"): {"create"}}
    subjects = kinds["ClusterRoleBinding"]["subjects"]
    assert {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io",
            "name": "system:nodes"} in subjects
    assert {"kind": "ServiceAccount", "name": "scx-slo", "namespace": "kube-system"} in subjects
    assert not any(s["kind"] == "Group" for s in
                   next(d for d in rendered_rbac(bindNodes=False)
                        if d["kind"] == "ClusterRoleBinding")["subjects"])


def test_the_daemonset_gets_its_service_account_only_with_policies():
    from test_deploy import by_kind, render_chart

    off = by_kind(render_chart())["DaemonSet"]["spec"]["template"]["spec"]
    on = by_kind(render_chart({"policy": {"enabled": True}}))["DaemonSet"]["spec"]["template"]["spec"]
    assert off["automountServiceAccountToken"] is False and "serviceAccountName" not in off
    assert on["automountServiceAccountToken"] is True and on["serviceAccountName"] == "scx-slo"
    assert not [d for d in render_chart() if d["kind"] in ("ClusterRole", "ServiceAccount")]


def test_static_rbac_is_the_rendered_chart():
    static = [d for d in yaml.safe_load_all((REPO / "deploy" / "slopolicy-rbac.yaml").read_text())
              if d]
    assert static == rendered_rbac(), \
        "deploy/slopolicy-rbac.yaml differs from the chart's rbac.yaml rendered with policy.enabled"


# -- the CLI: a policy checked against a node's settings before kubectl apply -----------

def test_validate_with_policies_merges_them_as_a_node_would(tmp_path, capsys):
    from scx_slo.cli import main

    demo = REPO / "settings" / "examples" / "guide-demo.toml"
    assert main(["settings", "validate", str(demo), "--policy", str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "SloPolicy web-tier: accepted" in out
    assert "merged: 3 classes + default (frontend, interactive, web), 3 rules" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"apiVersion: {cluster.GROUP}/{cluster.VERSION}\nkind: SloPolicy\n"
                   "metadata: {name: bad}\nspec:\n  classes: [{name: x, p99: 1ns}]\n")
    assert main(["settings", "validate", str(demo), "--policy", str(bad)]) == 1
    assert "refused: SloPolicy bad: spec.classes[0].p99: '1ns' is out of range: allowed " \
           "100us..60s" in capsys.readouterr().out
    bad.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert main(["settings", "validate", str(demo), "--policy", str(bad)]) == 1
    assert f"{bad}: document 0: not a SloPolicy" in capsys.readouterr().err


def test_a_refused_generation_keeps_the_last_good_one_in_force():
    good = policy("web", 1, classes=[{"name": "web", "p99": "200ms"}],
                  rules=[{"class": "web", "namespace": "web"}])
    bad = policy("web", 2, classes=[{"name": "web", "p99": "1ns"}],
                 rules=[{"class": "web", "namespace": "web"}])
    m = merge(USER_DATA, [bad], last_good={"web": good})
    v = m.verdicts["web"]
    assert (v.generation, v.accepted, v.in_force) == (2, False, 1)
    assert "spec.classes[0].p99" in v.issues[0]
    assert m.loaded.config.class_named("web").p99_ns == 200 * model.MS
    # without a last good generation nothing of it is in force
    m = merge(USER_DATA, [bad])
    assert m.verdicts["web"].in_force is None and m.loaded.config.class_named("web") is None
    # an accepted generation is its own
    assert merge(USER_DATA, [good]).verdicts["web"].in_force == 1
