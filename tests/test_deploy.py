"""deploy/: the DaemonSet manifest and the Helm chart are valid Kubernetes objects.

Validation: the PyPI package `kubernetes-validate`, which carries the published
Kubernetes OpenAPI schemas as JSON Schema per version and checks with jsonschema
(strict: unknown fields are errors).

Rendering: helm is not installable on this machine (not in Debian bookworm, and
no route to its releases), so the chart's templates are written in a small
subset of Helm's Go-template language and rendered here by `render` below,
which implements exactly that subset and raises on anything else (so a template
using a construct it does not know fails the test instead of rendering wrong).
The subset: {{ .Values.x.y }}, .Release.Name/.Namespace/.Service, .Chart.Name/
.Version/.AppVersion, pipelines into quote, default, toYaml, indent, nindent,
{{ if }}/{{ else }}/{{ end }}, and {{- -}} whitespace trimming. Where a real
`helm` is on PATH, test_real_helm_agrees compares against `helm template`.
"""
from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="pip install kubernetes-validate (test dependency)")

REPO = Path(__file__).resolve().parents[1]
CHART = REPO / "deploy" / "chart" / "scx-slo"
STATIC = REPO / "deploy" / "daemonset.yaml"
K8S_VERSIONS = ["1.28", "1.31", kubernetes_validate.latest_version()]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


# -- the Go-template subset ---------------------------------------------------

class TemplateError(Exception):
    pass


ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _indent(n, s):
    return "\n".join(" " * int(n) + line for line in str(s).split("\n"))


FUNCS = {
    "quote": lambda v: json.dumps("" if v is None else str(v)),
    "default": lambda d, v: v if v not in (None, "", 0, False, [], {}) else d,
    "toYaml": lambda v: yaml.safe_dump(v, default_flow_style=False, sort_keys=True).rstrip("\n"),
    "indent": _indent,
    "nindent": lambda n, s: "\n" + _indent(n, s),
}


def _lookup(token: str, ctx: dict):
    if token.startswith("."):
        v = ctx
        for part in token[1:].split("."):
            if not isinstance(v, dict) or part not in v:
                raise TemplateError(f"no value for {token}")
            v = v[part]
        return v
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    if token.startswith('"'):
        return json.loads(token)
    raise TemplateError(f"unsupported operand {token!r}")


def _eval(expr: str, ctx: dict):
    value, first = None, True
    for cmd in expr.split("|"):
        words = shlex.split(cmd.strip(), posix=False)
        if first and len(words) == 1:
            value = _lookup(words[0], ctx)
        else:
            fn, *args = words
            if fn not in FUNCS:
                raise TemplateError(f"unsupported function {fn!r}")
            args = [_lookup(a, ctx) for a in args] + ([] if first else [value])
            value = FUNCS[fn](*args)
        first = False
    return value


def render(template: str, ctx: dict) -> str:
    # tokens: ("text", s) / ("act", expr), with {{- and -}} applied to neighbouring text
    tokens, pos, trim_next = [], 0, False
    for m in ACTION.finditer(template):
        text = template[pos:m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        tokens += [("text", text), ("act", m.group(2))]
        pos, trim_next = m.end(), bool(m.group(3))
    tail = template[pos:]
    tokens.append(("text", tail.lstrip(" \t\r\n") if trim_next else tail))

    out: list[str] = []
    stack: list[tuple[bool, bool]] = []      # (parent emitting, this branch taken)
    emitting = True
    for kind, val in tokens:
        if kind == "text":
            if emitting:
                out.append(val)
            continue
        word = val.split(None, 1)
        if word and word[0] == "if":
            cond = bool(_eval(word[1], ctx)) if emitting else False
            stack.append((emitting, cond))
            emitting = emitting and cond
        elif val == "else":
            if not stack:
                raise TemplateError("else without if")
            parent, taken = stack[-1]
            emitting = parent and not taken
        elif val == "end":
            if not stack:
                raise TemplateError("end without if")
            emitting, _ = stack.pop()
        elif word and word[0] in ("range", "with", "define", "template", "include", "block"):
            raise TemplateError(f"unsupported action {word[0]!r}")
        elif emitting:
            v = _eval(val, ctx)
            out.append("" if v is None else str(v).lower() if isinstance(v, bool) else str(v))
    if stack:
        raise TemplateError("if without end")
    return "".join(out)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render_chart(values: dict | None = None, name: str = "scx-slo",
                 namespace: str = "kube-system") -> list[dict]:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    ctx = {"Values": _merge(yaml.safe_load((CHART / "values.yaml").read_text()), values or {}),
           "Release": {"Name": name, "Namespace": namespace, "Service": "Helm"},
           "Chart": {"Name": chart["name"], "Version": chart["version"],
                     "AppVersion": chart["appVersion"]}}
    docs = []
    for t in sorted((CHART / "templates").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(render(t.read_text(), ctx)) if d]
    return docs


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


# -- tests ----------------------------------------------------------------------

def test_renderer_subset():
    ctx = {"Values": {"a": {"b": "x"}, "on": True, "off": False, "l": {"k": [1, 2]}, "e": ""}}
    assert render("v={{ .Values.a.b }}", ctx) == "v=x"
    assert render("{{ .Values.e | default \"d\" }}/{{ .Values.a.b | quote }}", ctx) == 'd/"x"'
    assert render("a:\n  {{- toYaml .Values.l | nindent 2 }}\n", ctx) == "a:\n  k:\n  - 1\n  - 2\n"
    assert render("{{ if .Values.on }}y{{ else }}n{{ end }}{{ if .Values.off }}y{{ else }}n{{ end }}",
                  ctx) == "yn"
    for bad in ('{{ include "x" . }}', "{{ range .Values.l }}{{ end }}", "{{ .Values.nope }}",
                "{{ .Values.a.b | upper }}", "{{ if .Values.on }}"):
        with pytest.raises(TemplateError):
            render(bad, ctx)


def test_chart_renders_valid_kubernetes_objects():
    docs = render_chart()
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "DaemonSet"]
    for doc in docs:
        for v in K8S_VERSIONS:
            kubernetes_validate.validate(doc, v, strict=True)


def test_static_daemonset_is_the_rendered_chart():
    static = [d for d in yaml.safe_load_all(STATIC.read_text()) if d]
    for doc in static:
        for v in K8S_VERSIONS:
            kubernetes_validate.validate(doc, v, strict=True)
    assert static == render_chart(), \
        "deploy/daemonset.yaml differs from the chart rendered with its default values"


def test_validator_rejects_broken_objects():
    ds = by_kind(render_chart())["DaemonSet"]
    bad = copy.deepcopy(ds)
    bad["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)
    bad = copy.deepcopy(ds)
    bad["spec"]["template"]["spec"]["containers"][0]["privilegd"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSIONS[-1], strict=True)


def test_daemonset_gives_the_host_container_contract():
    ds = by_kind(render_chart())["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert pod["hostPID"] is True
    assert c["securityContext"]["privileged"] is True
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["scx-slo", "stop"]
    assert c["image"] == f"scx-slo:{VERSION}"
    assert "command" not in c and "args" not in c      # the image's entrypoint runs
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert volumes[mounts["/sys/fs/bpf"]["name"]]["hostPath"]["path"] == "/sys/fs/bpf"
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "Bidirectional"
    assert volumes[mounts["/sys/fs/cgroup"]["name"]]["hostPath"]["path"] == "/sys/fs/cgroup"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["SCX_SLO_PIN_DIR"].startswith("/sys/fs/bpf/")
    settings_mount = next(p for p, m in mounts.items() if m["name"] == "settings")
    assert env["SCX_SLO_USER_DATA"].startswith(settings_mount + "/")
    assert volumes[mounts[env["SCX_SLO_STATE_DIR"]]["name"]]["hostPath"]["type"] == "DirectoryOrCreate"
    assert pod["terminationGracePeriodSeconds"] >= 20


def test_chart_version_follows_the_project():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == VERSION


def test_settings_in_the_configmap_validate(tmp_path):
    from scx_slo.cli import main

    cm = by_kind(render_chart())["ConfigMap"]
    f = tmp_path / "settings.toml"
    f.write_text(cm["data"]["settings.toml"])
    assert main(["settings", "validate", str(f)]) == 0


def test_values_override():
    docs = render_chart({"image": {"repository": "registry.example.com/ops/scx-slo", "tag": "9.9.9"},
                         "nodeSelector": {"scx-slo.io/daemonset": "true"},
                         "settings": '[scheduler]\nslice = "5ms"\n'},
                        name="sched", namespace="scx")
    kinds = by_kind(docs)
    ds = kinds["DaemonSet"]
    pod = ds["spec"]["template"]["spec"]
    assert ds["metadata"]["namespace"] == "scx" and ds["metadata"]["name"] == "sched"
    assert pod["containers"][0]["image"] == "registry.example.com/ops/scx-slo:9.9.9"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux", "scx-slo.io/daemonset": "true"}
    assert pod["volumes"][-1]["configMap"]["name"] == kinds["ConfigMap"]["metadata"]["name"]
    assert kinds["ConfigMap"]["data"]["settings.toml"] == '[scheduler]\nslice = "5ms"\n'
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)


def test_real_helm_agrees():
    helm = shutil.which("helm")
    if helm is None:
        pytest.skip("helm is not installed (not packaged in Debian bookworm): "
                    "the chart was rendered with the subset renderer only")
    p = subprocess.run([helm, "template", "scx-slo", str(CHART), "--namespace", "kube-system"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert [d for d in yaml.safe_load_all(p.stdout) if d] == render_chart()


def test_readme_snippets_are_the_current_render_output(capsys):
    """deploy/README.md shows `scx-slo settings render` output; it must not fall behind."""
    from scx_slo.cli import main

    readme = (REPO / "deploy" / "README.md").read_text()
    blocks = re.findall(r"<!-- render --for (\S+) -->\n```\w*\n(.*?)\n```", readme, re.S)
    assert {t for t, _ in blocks} == {"bottlerocket", "apiclient", "launch-template",
                                      "karpenter", "eksctl"}
    for target, shown in blocks:
        capsys.readouterr()
        assert main(["settings", "render", str(REPO / "settings/examples/guide-demo.toml"),
                     "--for", target, "--name", "scx-slo",
                     "--source", "ACCOUNT.dkr.ecr.REGION.amazonaws.com/scx-slo:0.1.0"]) == 0
        assert capsys.readouterr().out.rstrip() == shown, f"deploy/README.md: --for {target}"
