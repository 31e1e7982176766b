"""The snippets that put scx-slo settings where operators configure Bottlerocket.

Every target embeds the same thing: the operator's TOML, base64-encoded, as
settings.host-containers.NAME.user-data, next to source/enabled/superpowered
(Bottlerocket needs all three to start a host container; superpowered because
loading a sched_ext scheduler needs CAP_BPF/CAP_SYS_ADMIN on the host).
"""
from __future__ import annotations

import json
import re
import shlex

import tomlkit

from scx_slo import __version__
from scx_slo.settings.errors import RenderError
from scx_slo.settings.load import encode_user_data
from scx_slo.settings.validate import validate_text

TARGETS = ("bottlerocket", "apiclient", "launch-template", "karpenter", "eksctl")
# Targets whose output becomes EC2 instance user data, which EC2 limits to 16 KB
# (raw, before base64). eksctl and Karpenter render the same host-container
# table into the node's TOML (and add their own settings next to it).
USER_DATA_TARGETS = ("bottlerocket", "launch-template", "karpenter", "eksctl")
EC2_USER_DATA_LIMIT = 16 * 1024
DEFAULT_NAME = "scx-slo"
# The guide's placeholder registry; pass --source with the image you pushed.
DEFAULT_SOURCE = f"ghcr.io/yourorg/scx-slo:v{__version__}"
DEFAULT_CLUSTER = "my-cluster"
DEFAULT_REGION = "us-west-2"
NAME_RE = re.compile(r"[A-Za-z0-9-]{1,64}")
_SOURCE_RE = re.compile(r"[A-Za-z0-9._/:@+-]{1,512}")


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise RenderError(f"host-container name {name!r} refused: use only letters, digits and "
                          "'-' (1..64 characters)")
    return name


def check_source(source: object) -> str:
    if not isinstance(source, str) or not _SOURCE_RE.fullmatch(source):
        raise RenderError(f"image source {source!r} is not an image reference")
    return source


def host_container(text: str, name: str, source: str) -> dict:
    """settings.host-containers.NAME as a plain dict (API/JSON shape)."""
    return {"source": source, "enabled": True, "superpowered": True,
            "user-data": encode_user_data(text)}


def bottlerocket_toml(text: str, name: str, source: str) -> str:
    doc = tomlkit.document()
    doc.add(tomlkit.comment(f"scx-slo host container ({name}): Bottlerocket user-data"))
    table = tomlkit.table()
    for k, v in host_container(text, name, source).items():
        table.add(k, v)
    settings = tomlkit.table(is_super_table=True)
    hcs = tomlkit.table(is_super_table=True)
    hcs.add(name, table)
    settings.add("host-containers", hcs)
    doc.add("settings", settings)
    return tomlkit.dumps(doc)


def user_data_size(text: str, name: str = DEFAULT_NAME, source: str = DEFAULT_SOURCE) -> int:
    """Bytes of the Bottlerocket user data that carries TEXT as host container NAME."""
    return len(bottlerocket_toml(text, name, source).encode())


def check_user_data_size(text: str, target: str, name: str, source: str,
                         filename: str = "<settings>") -> None:
    size = user_data_size(text, name, source)
    if size > EC2_USER_DATA_LIMIT:
        raise RenderError(
            f"{filename}: --for {target} would make {size} bytes of instance user data; EC2 "
            f"allows {EC2_USER_DATA_LIMIT} (16 KB, before base64). The settings are "
            f"{len(text.encode())} bytes, base64-encoded inside it: shorten them (comments, "
            "unused classes or rules), or set them on running nodes with --for apiclient")


def _yaml_str(s: str) -> str:
    return json.dumps(s)          # a JSON string is a valid YAML double-quoted scalar


def render(text: str, target: str, name: str = DEFAULT_NAME, source: str = DEFAULT_SOURCE,
           cluster: str = DEFAULT_CLUSTER, region: str = DEFAULT_REGION,
           filename: str = "<settings>") -> str:
    """Validate TEXT, then return the snippet for TARGET (one of TARGETS)."""
    if target not in TARGETS:
        raise RenderError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    check_name(name)
    check_source(source)
    for what, v in (("cluster", cluster), ("region", region)):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", v):
            raise RenderError(f"{what} {v!r} refused: letters, digits, '-' and '_' only")
    validate_text(text, filename)      # never render a document the agent would refuse
    if target in USER_DATA_TARGETS:
        check_user_data_size(text, target, name, source, filename)
    hc = host_container(text, name, source)
    if target == "bottlerocket":
        return bottlerocket_toml(text, name, source)
    if target == "apiclient":
        body = json.dumps({"host-containers": {name: hc}}, separators=(",", ":"))
        return (f"# from a host container or the admin container; restarts {name}\n"
                f"apiclient set --json {shlex.quote(body)}\n")
    if target == "launch-template":
        import base64
        user_data = base64.b64encode(bottlerocket_toml(text, name, source).encode()).decode()
        body = {"UserData": user_data}
        return json.dumps(body, indent=2) + "\n"
    if target == "karpenter":
        user_data = bottlerocket_toml(text, name, source)
        block = "".join(f"    {line}\n" if line else "\n" for line in user_data.splitlines())
        return (
            "apiVersion: karpenter.k8s.aws/v1\n"
            "kind: EC2NodeClass\n"
            "metadata:\n"
            f"  name: {_yaml_str(name)}\n"
            "spec:\n"
            "  amiFamily: Bottlerocket\n"
            "  amiSelectorTerms:\n"
            "    - alias: bottlerocket@latest\n"
            f"  role: {_yaml_str('KarpenterNodeRole-' + cluster)}\n"
            "  subnetSelectorTerms:\n"
            "    - tags:\n"
            f"        karpenter.sh/discovery: {_yaml_str(cluster)}\n"
            "  securityGroupSelectorTerms:\n"
            "    - tags:\n"
            f"        karpenter.sh/discovery: {_yaml_str(cluster)}\n"
            "  userData: |\n"
            f"{block}"
        )
    # eksctl
    return (
        "apiVersion: eksctl.io/v1alpha5\n"
        "kind: ClusterConfig\n"
        "metadata:\n"
        f"  name: {_yaml_str(cluster)}\n"
        f"  region: {_yaml_str(region)}\n"
        "managedNodeGroups:\n"
        f"  - name: {_yaml_str(name)}\n"
        "    amiFamily: Bottlerocket\n"
        "    bottlerocket:\n"
        "      settings:\n"
        "        host-containers:\n"
        f"          {_yaml_str(name)}:\n"
        f"            source: {_yaml_str(hc['source'])}\n"
        "            enabled: true\n"
        "            superpowered: true\n"
        f"            user-data: {_yaml_str(hc['user-data'])}\n"
    )
