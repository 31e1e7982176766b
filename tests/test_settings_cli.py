"""`scx-slo settings validate|render|show` through the CLI entry point."""
from __future__ import annotations

import base64
import re
import tomllib
from pathlib import Path

import pytest

from scx_slo.cli import main
from scx_slo.settings import store

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "settings" / "examples" / "guide-demo.toml"


def test_validate_ok(capsys):
    assert main(["settings", "validate", str(DEMO)]) == 0
    assert "ok (2 classes + default, 1 rules" in capsys.readouterr().out


def test_validate_reports_every_error_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('[scheduler]\nslcie = "5ms"\n[[class]]\nname = "Web"\np99 = "200"\n')
    assert main(["settings", "validate", str(bad)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{bad}:2:1: scheduler.slcie: unknown key 'slcie'; did you mean 'slice'?",
        f"{bad}:4:1: class[0].name: 'Web' is not a class name: lowercase letters, digits and "
        "'-', starting with a letter, 1..31 chars",
        f"{bad}:5:1: class[0].p99: '200' has no unit; write e.g. \"500us\", \"200ms\" or \"1.5s\"",
    ]


def test_validate_missing_file(tmp_path, capsys):
    assert main(["settings", "validate", str(tmp_path / "nope.toml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_render_bottlerocket(capsys):
    assert main(["settings", "render", str(DEMO), "--for", "bottlerocket", "--name", "slo",
                 "--source", "example.com/scx-slo:1"]) == 0
    hc = tomllib.loads(capsys.readouterr().out)["settings"]["host-containers"]["slo"]
    assert base64.b64decode(hc["user-data"]).decode() == DEMO.read_text()


def test_render_bad_name_exit_1(capsys):
    assert main(["settings", "render", str(DEMO), "--for", "eksctl", "--name", "no_underscores"]) == 1
    assert "letters, digits and '-'" in capsys.readouterr().err


def test_render_unknown_target_is_usage_error():
    with pytest.raises(SystemExit) as e:
        main(["settings", "render", str(DEMO), "--for", "cloud-init"])
    assert e.value.code == 2


def test_show_names_where_values_came_from(tmp_path, capsys):
    ud = tmp_path / "user-data"
    ud.write_bytes(DEMO.read_bytes())
    assert main(["settings", "show", "--user-data", str(ud), "--state-dir",
                 str(tmp_path / "st")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"# effective settings: user-data ({ud})")
    assert re.search(r"^scheduler\.slice = 5ms\s+# default$", out, re.M)
    assert re.search(rf"^scheduler\.watchdog-timeout = 5s\s+# {re.escape(str(ud))}:9$", out, re.M)
    assert re.search(r"^class\[0\]\.weight = 500\s+# derived from p99 \(200ms\)$", out, re.M)
    assert not (tmp_path / "st").exists()            # show only reads
    store.load_effective(str(ud), str(tmp_path / "st"))   # the agent accepts it: last good
    # now a broken user-data: the last good one stays, and show says so
    ud.write_text("[scheduler]\nslice = \"-1ms\"\n")
    assert main(["settings", "show", "--user-data", str(ud), "--state-dir",
                 str(tmp_path / "st")]) == 1
    out = capsys.readouterr().out
    assert "# effective settings: last-good" in out
    assert f"{ud}:2:1: scheduler.slice: negative duration" in out
    assert re.search(r"^class\[0\]\.name = frontend \(id 1\)", out, re.M)
