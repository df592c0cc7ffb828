"""The package's layering (docs/architecture.md): imports only point down, no cycles, one home
for the concepts that used to have several."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "robust_zoo"


def test_imports_only_point_down_and_there_is_no_cycle():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_layers.py")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_checker_catches_an_upward_import(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_layers
    finally:
        sys.path.pop(0)
    fake = tmp_path / "robust_zoo"
    (fake / "train").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "naming.py").write_text("def f():\n    from .train import run\n")
    (fake / "train" / "__init__.py").write_text("")
    (fake / "train" / "run.py").write_text("from .. import naming\n")
    monkeypatch.setattr(check_layers, "PKG", fake)
    problems, _ = check_layers.check()
    assert any("robust_zoo.naming (base) imports robust_zoo.train.run" in p for p in problems)
    assert any("import cycle" in p for p in problems)


def _modules() -> list[str]:
    """Every module and package of robust_zoo, dotted, without the ``robust_zoo.`` prefix."""
    out = []
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__main__" or parts == ["__init__"]:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append(".".join(parts))
    return out


def test_the_architecture_page_matches_the_layer_table_and_names_every_module():
    from robust_zoo._layers import LAYERS, layer_of

    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("\n## Layers\n", 1)[1].split("\n## ", 1)[0]
    rows = [r.split("|") for r in section.splitlines()
            if r.startswith("| ") and not r.startswith(("| layer ", "| ---"))]
    assert [(r[1].strip(), tuple(re.findall(r"`([\w.]+)`", r[2]))) for r in rows] == \
        [(name, prefixes) for name, prefixes, _ in LAYERS]
    named = set(re.findall(r"`(?:robust_zoo\.)?([\w.]+)`", text))
    assert [m for m in _modules() if m not in named] == []
    assert [m for m in _modules() if layer_of(m) < 0] == []


def test_the_top_level_is_small_and_shadows_no_standard_module():
    top = [p.stem for p in PKG.glob("*.py") if not p.stem.startswith("_")]
    assert len(top) <= 12, top
    assert not set(top) & set(sys.stdlib_module_names)
    packages = [p.name for p in PKG.iterdir() if (p / "__init__.py").exists()]
    assert not set(packages) & set(sys.stdlib_module_names)


def _defs(name: str) -> list[str]:
    """Modules of the package that define a function or class called ``name``."""
    out = []
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                out.append(str(p.relative_to(ROOT)))
    return out


def test_one_home_each():
    assert _defs("build_optimizer") == ["robust_zoo/engine/optim.py"]
    assert _defs("build_scheduler") == ["robust_zoo/engine/optim.py"]
    assert _defs("default_step_size") == ["robust_zoo/recipe.py"]
    assert _defs("parse_eps") == ["robust_zoo/naming.py"]
    assert _defs("autocast") == ["robust_zoo/engine/precision.py"]
    assert _defs("eval_resize") == ["robust_zoo/data/transforms.py"]
    writers = [str(p.relative_to(ROOT)) for p in PKG.rglob("*.py")
               if '"schema_version"' in p.read_text()]
    assert writers == ["robust_zoo/hub/manifest.py"]


def test_a_former_module_path_still_runs_as_a_program():
    r = subprocess.run([sys.executable, "-m", "robust_zoo.quickstart", "--help"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("usage: robust-zoo quickstart"), r.stderr
