"""render -> decode the base64 -> parse -> the same model, for every --for target."""
from __future__ import annotations

import base64
import json
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from scx_slo.settings.errors import RenderError, ValidationError
from scx_slo.settings.render import TARGETS, render
from scx_slo.settings.validate import validate_bytes, validate_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "settings" / "examples").glob("*.toml"))
NAME, SOURCE = "slo-agent-2", "registry.example.com/team/scx-slo@sha256:" + "ab" * 32


def host_container_of(target: str, out: str) -> dict:
    """settings.host-containers.NAME from a rendered snippet, decoded the way its consumer does."""
    if target == "bottlerocket":
        return tomllib.loads(out)["settings"]["host-containers"][NAME]
    if target == "apiclient":
        argv = [a for a in shlex.split(out, comments=True)]
        assert argv[:3] == ["apiclient", "set", "--json"] and len(argv) == 4
        return json.loads(argv[3])["host-containers"][NAME]
    if target == "launch-template":
        user_data = base64.b64decode(json.loads(out)["UserData"], validate=True).decode()
        return tomllib.loads(user_data)["settings"]["host-containers"][NAME]
    if target == "karpenter":
        doc = yaml.safe_load(out)
        assert doc["apiVersion"] == "karpenter.k8s.aws/v1" and doc["kind"] == "EC2NodeClass"
        assert doc["spec"]["amiFamily"] == "Bottlerocket"
        return tomllib.loads(doc["spec"]["userData"])["settings"]["host-containers"][NAME]
    if target == "eksctl":
        doc = yaml.safe_load(out)
        assert doc["kind"] == "ClusterConfig"
        (ng,) = doc["managedNodeGroups"]
        assert ng["amiFamily"] == "Bottlerocket"
        return ng["bottlerocket"]["settings"]["host-containers"][NAME]
    raise AssertionError(target)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_round_trip_same_model(target, path):
    text = path.read_text()
    original = validate_text(text, str(path)).config
    out = render(text, target, name=NAME, source=SOURCE)
    hc = host_container_of(target, out)
    assert hc["source"] == SOURCE and hc["enabled"] is True and hc["superpowered"] is True
    decoded = base64.b64decode(hc["user-data"], validate=True)
    assert decoded.decode() == text          # the operator's comments travel too
    assert validate_bytes(decoded, "decoded").config == original


def test_bottlerocket_snippet_is_the_documented_shape():
    out = render((ROOT / "settings/examples/guide-demo.toml").read_text(), "bottlerocket")
    doc = tomllib.loads(out)
    assert set(doc) == {"settings"}
    assert set(doc["settings"]["host-containers"]["scx-slo"]) == {
        "source", "enabled", "superpowered", "user-data"}
    assert "[settings.host-containers.scx-slo]" in out


@pytest.mark.parametrize("name", ["bad name", "a.b", "x/y", "", "semi;colon", "ünï", "a" * 65])
def test_bad_names_refused(name):
    with pytest.raises(RenderError, match="letters, digits and '-'"):
        render("[scheduler]\n", "bottlerocket", name=name)


def test_invalid_settings_are_not_rendered():
    with pytest.raises(ValidationError):
        render('[[class]]\nname = "a"\np99 = "5"\n', "karpenter")


def test_unknown_target_refused():
    with pytest.raises(RenderError, match="unknown target"):
        render("[scheduler]\n", "cloud-init")


def test_quotes_in_settings_survive_shell_and_yaml():
    text = "# it's \"quoted\" $(not run) `nor this`\n[scheduler]\n"
    for target in TARGETS:
        hc = host_container_of(target, render(text, target, name=NAME, source=SOURCE))
        assert base64.b64decode(hc["user-data"]).decode() == text


def _padded(n_bytes: int) -> str:
    """A valid settings document of about N_BYTES (comment lines pad it)."""
    base = (ROOT / "settings" / "examples" / "guide-demo.toml").read_text()
    line = "# " + "x" * 76 + "\n"
    return base + line * max(0, (n_bytes - len(base)) // len(line))


@pytest.mark.parametrize("target", ["bottlerocket", "launch-template", "karpenter", "eksctl"])
def test_user_data_over_the_ec2_limit_is_refused_with_the_sizes(target):
    from scx_slo.settings.render import EC2_USER_DATA_LIMIT, user_data_size

    text = _padded(30 * 1024)
    validate_text(text, "big.toml")          # valid settings: only the size is wrong
    size = user_data_size(text, NAME, SOURCE)
    with pytest.raises(RenderError) as e:
        render(text, target, name=NAME, source=SOURCE, filename="big.toml")
    msg = str(e.value)
    assert f"{size} bytes" in msg and str(EC2_USER_DATA_LIMIT) in msg and "big.toml" in msg
    # an 11 KiB document fits (base64 makes its user data about 15 KB)
    small = _padded(11 * 1024)
    assert user_data_size(small, NAME, SOURCE) <= EC2_USER_DATA_LIMIT
    assert host_container_of(target, render(small, target, name=NAME, source=SOURCE))


def test_apiclient_is_not_bound_by_the_ec2_limit():
    text = _padded(30 * 1024)
    assert host_container_of("apiclient", render(text, "apiclient", name=NAME, source=SOURCE))


def test_validate_warns_when_the_document_cannot_be_user_data(tmp_path, capsys):
    from scx_slo.cli import main

    f = tmp_path / "big.toml"
    f.write_text(_padded(30 * 1024))
    assert main(["settings", "validate", str(f)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "16384" in err and "big.toml" in err
    f.write_text(_padded(4 * 1024))
    assert main(["settings", "validate", str(f)]) == 0
    assert "warning" not in capsys.readouterr().err
