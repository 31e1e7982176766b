"""`scx-slo settings`: validate, render, apply and show the SLO settings.

  scx-slo settings validate FILE [--policy SLOPOLICY.yaml ...]
  scx-slo settings render FILE --for bottlerocket|apiclient|launch-template|karpenter|eksctl
                               [--name NAME] [--source IMAGE]
  scx-slo settings apply FILE [--name NAME] [--socket PATH]
  scx-slo settings show [--user-data PATH] [--state-dir DIR]
"""
from __future__ import annotations

import argparse
import sys

TARGETS = ("bottlerocket", "apiclient", "launch-template", "karpenter", "eksctl")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="settings_command", metavar="ACTION", required=True)

    p = sub.add_parser("validate", help="check a settings file; exit 0 if valid, 1 if not")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--policy", action="append", default=[], metavar="YAML",
                   help="SloPolicy objects (YAML, as for kubectl apply) to merge with FILE as a "
                        "node would; exit 1 if any is refused (repeatable)")

    p = sub.add_parser("render", help="the snippet that carries FILE to a Bottlerocket node")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--for", dest="target", required=True, choices=TARGETS)
    p.add_argument("--name", default="scx-slo",
                   help="host-container name (letters, digits, '-'; default scx-slo)")
    p.add_argument("--source", default=None, help="host-container image reference")
    p.add_argument("--cluster", default="my-cluster",
                   help="cluster name for the karpenter/eksctl documents")
    p.add_argument("--region", default="us-west-2", help="AWS region for the eksctl document")

    p = sub.add_parser("apply", help="set FILE as the host container's user-data through the "
                                     "Bottlerocket API (PATCH + commit_and_apply, one tx)")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--name", default="scx-slo", help="host-container name (default scx-slo)")
    p.add_argument("--socket", default="/run/api.sock", help="API socket (default /run/api.sock)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per API request")

    p = sub.add_parser("show", help="the effective settings and where each value came from")
    p.add_argument("--user-data", default=None,
                   help="user-data file (default /.bottlerocket/host-containers/current/user-data)")
    p.add_argument("--state-dir", default=None, help="persistent state directory holding the "
                   "last good settings (default /.bottlerocket/host-containers/current/"
                   "scx-slo-state)")


def run(args: argparse.Namespace) -> int:
    from scx_slo.errors import ScxSloError
    from scx_slo.settings.errors import ValidationError

    try:
        return {"validate": _validate, "render": _render, "apply": _apply,
                "show": _show}[args.settings_command](args)
    except ValidationError as e:
        for issue in e.issues:
            print(issue, file=sys.stderr)
        return 1
    except ScxSloError as e:
        print(f"scx-slo settings {args.settings_command}: {e}", file=sys.stderr)
        return 1


def _validate(args) -> int:
    from scx_slo.settings.load import load_file

    from scx_slo.settings.render import EC2_USER_DATA_LIMIT, user_data_size

    loaded = load_file(args.file)
    c = loaded.config
    print(f"{args.file}: ok ({len(c.classes) - 1} classes + default, {len(c.rules)} rules, "
          f"annotations {'on' if c.annotations.enabled else 'off'})")
    if args.policy:
        return _merge_policies(loaded.text, args.policy)
    size = user_data_size(loaded.text)
    if size > EC2_USER_DATA_LIMIT:
        print(f"{args.file}: warning: as Bottlerocket user data this is {size} bytes, over "
              f"EC2's {EC2_USER_DATA_LIMIT}-byte limit: launch templates, Karpenter and eksctl "
              "cannot carry it (apiclient on running nodes can)", file=sys.stderr)
    return 0


def _merge_policies(text: str, files: list[str]) -> int:
    import yaml

    from scx_slo.errors import ScxSloError
    from scx_slo.settings.cluster import GROUP, KIND, VERSION, Policy, merge

    policies = []
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                docs = [d for d in yaml.safe_load_all(fh) if d]
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
            raise ScxSloError(f"{f}: cannot read it as YAML: {e}") from None
        for i, d in enumerate(docs):
            if not isinstance(d, dict) or d.get("kind") != KIND or \
                    d.get("apiVersion") != f"{GROUP}/{VERSION}":
                raise ScxSloError(f"{f}: document {i}: not a {KIND} ({GROUP}/{VERSION})")
            policies.append(Policy.from_object({**d, "metadata": {"generation": 1,
                                                                  **(d.get("metadata") or {})}}))
    merged = merge(text, policies)
    for note in merged.notes:
        print(f"note: {note}")
    for name, v in sorted(merged.verdicts.items()):
        print(f"SloPolicy {name}: accepted" if v.accepted else
              "\n".join(f"refused: {issue}" for issue in v.issues))
    c = merged.loaded.config
    print(f"merged: {len(c.classes) - 1} classes + default "
          f"({', '.join(k.name for k in c.classes[1:]) or 'none'}), {len(c.rules)} rules")
    return 0 if all(v.accepted for v in merged.verdicts.values()) else 1


def _render(args) -> int:
    from scx_slo.settings import render as r
    from scx_slo.settings.load import read_bytes
    from scx_slo.settings.validate import validate_bytes

    text = validate_bytes(read_bytes(args.file), args.file).text
    out = r.render(text, args.target, name=args.name, source=args.source or r.DEFAULT_SOURCE,
                   cluster=args.cluster, region=args.region, filename=args.file)
    sys.stdout.write(out)
    return 0


def _apply(args) -> int:
    from scx_slo.settings.apiclient import ApiClient, new_tx_name
    from scx_slo.settings.load import encode_user_data, load_file
    from scx_slo.settings.render import check_name

    name = check_name(args.name)
    loaded = load_file(args.file)            # refuse to ship what the agent would refuse
    client = ApiClient(args.socket, timeout=args.timeout)
    tx = new_tx_name("scx-slo-apply")
    client.patch_settings({"host-containers": {name: {"user-data": encode_user_data(
        loaded.text)}}}, tx)
    keys = client.commit_and_apply(tx)
    print(f"applied {args.file} to settings.host-containers.{name}.user-data (tx {tx}); "
          f"committed: {', '.join(keys) or 'nothing changed'}")
    return 0


def effective_items(loaded) -> list[tuple[str, str, str]]:
    """(key, value, origin) for every effective value of LOADED, in schema order."""
    from scx_slo.settings.durations import format_duration as fd

    c, prov = loaded.config, loaded.provenance
    s = c.scheduler

    def origin(key: str, fallback: str = "default") -> str:
        return prov.get(key, fallback)

    items = [
        ("scheduler.object", s.object_path(), origin("scheduler.object")),
        ("scheduler.sha256", s.sha256 or "(not pinned)", origin("scheduler.sha256")),
        ("scheduler.slice", fd(s.slice_ns), origin("scheduler.slice")),
        ("scheduler.batch-floor", f"{s.batch_floor_pct}%", origin("scheduler.batch-floor")),
        ("scheduler.watchdog-timeout", fd(s.watchdog_timeout_ns),
         origin("scheduler.watchdog-timeout")),
        ("scheduler.metrics.enabled", str(s.metrics.enabled).lower(),
         origin("scheduler.metrics.enabled")),
        ("scheduler.metrics.listen", f"{s.metrics.address}:{s.metrics.port}",
         origin("scheduler.metrics.listen")),
    ]
    for cl in c.classes:
        if cl.is_default:
            items.append(("class 0 (default)", f"weight {cl.weight}, slice {fd(cl.slice_ns)}, "
                          f"priority {cl.priority} (lowest)", "built-in"))
            continue
        base = f"class[{cl.id - 1}]"
        items += [
            (f"{base}.name", f"{cl.name} (id {cl.id})", origin(f"{base}.name")),
            (f"{base}.p99", fd(cl.p99_ns), origin(f"{base}.p99")),
            (f"{base}.priority", str(cl.priority), origin(f"{base}.priority", "derived")),
            (f"{base}.weight", str(cl.weight), origin(f"{base}.weight")),
            (f"{base}.slice", fd(cl.slice_ns), origin(f"{base}.slice")),
            (f"{base}.miss-threshold", fd(cl.miss_threshold_ns),
             origin(f"{base}.miss-threshold")),
        ]
    for i, rule in enumerate(c.rules):
        sel = []
        if rule.namespace:
            sel.append(f"namespace={rule.namespace}")
        sel += [f"label {k}={v}" for k, v in rule.labels]
        sel += [f"annotation {k}={v}" for k, v in rule.annotations]
        if rule.cgroup:
            sel.append(f"cgroup={rule.cgroup}")
        items.append((f"rule[{i}]", f"{' '.join(sel)} -> {rule.class_name}",
                      origin(f"rule[{i}].class")))
    a = c.annotations
    items += [
        ("annotations.enabled", str(a.enabled).lower(), origin("annotations.enabled")),
        ("annotations.key", a.key, origin("annotations.key")),
        ("annotations.namespaces", ", ".join(a.namespaces), origin("annotations.namespaces")),
        ("annotations.tightest", fd(a.tightest_ns), origin("annotations.tightest")),
    ]
    return items


def _show(args) -> int:
    from scx_slo.settings import store
    from scx_slo.settings.load import USER_DATA_PATH

    user_data = args.user_data or USER_DATA_PATH
    state_dir = args.state_dir or store.DEFAULT_STATE_DIR
    eff = store.load_effective(user_data, state_dir, save=False)   # show writes nothing
    where = {store.SOURCE_USER_DATA: user_data,
             store.SOURCE_LAST_GOOD: eff.loaded.filename,
             store.SOURCE_DEFAULTS: "built-in defaults"}[eff.source]
    print(f"# effective settings: {eff.source} ({where})")
    if eff.error is not None:
        print(f"# {user_data} was refused; the {eff.source} settings stay in force:")
        for line in str(eff.error).splitlines():
            print(f"#   {line}")
    items = effective_items(eff.loaded)
    width = max(len(k) + len(v) for k, v, _ in items) + 4
    for key, value, origin in items:
        print(f"{key} = {value}".ljust(width) + f"  # {origin}")
    return 1 if eff.error is not None else 0
