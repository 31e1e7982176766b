"""The package's layers import only downward: agent -> loader -> libbpf, settings used
by both, and nothing that runs on a node (loader, agent, settings, the commands the
image runs) imports the development tooling in scx_slo.dev."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "plugin" / "scx_slo"

# The commands a node runs; the others (bench, demo, vm, image) are tooling.
RUNTIME_COMMANDS = ("check", "inspect", "run", "settings", "status", "stop")


def imports(path: Path) -> set[str]:
    """Every scx_slo module `path` imports (at any depth of the file)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("scx_slo")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                and node.module.startswith("scx_slo"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names}
    return out


def files(*parts: str) -> list[Path]:
    base = PKG.joinpath(*parts)
    return sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]


def _in(module: str, layer: str) -> bool:
    return module == layer or module.startswith(layer + ".")


@pytest.mark.parametrize("layer, forbidden", [
    ("loader/libbpf", ("scx_slo.loader.btf", "scx_slo.loader.gate", "scx_slo.loader.scheduler",
                       "scx_slo.agent", "scx_slo.settings", "scx_slo.dev", "scx_slo.commands")),
    ("loader", ("scx_slo.agent", "scx_slo.dev", "scx_slo.commands")),
    ("settings", ("scx_slo.loader", "scx_slo.agent", "scx_slo.dev", "scx_slo.commands")),
    ("agent", ("scx_slo.dev", "scx_slo.commands")),
    *[(f"commands/{c}", ("scx_slo.dev",)) for c in RUNTIME_COMMANDS],
])
def test_imports_point_downward(layer, forbidden):
    bad = [f"{p.relative_to(PKG)} imports {m}" for p in files(*layer.split("/"))
           for m in sorted(imports(p)) if any(_in(m, f) for f in forbidden)]
    assert not bad, "\n".join(bad)


def test_the_checker_sees_imports(tmp_path):
    """imports() finds top-level, nested and `from` imports (so the test above can fail)."""
    f = tmp_path / "m.py"
    f.write_text("import scx_slo.dev.vm\ndef f():\n    from scx_slo.agent import loop\n")
    assert imports(f) == {"scx_slo.dev.vm", "scx_slo.agent", "scx_slo.agent.loop"}


def test_every_module_is_in_a_layer():
    """No module is left at the package top besides the CLI's own."""
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "cli.py", "errors.py"], top
