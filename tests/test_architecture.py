"""The package's layering (docs/architecture.md): imports only point down, no cycles, one home
per concept (found by name and, where names can differ, by what the code calls)."""
from __future__ import annotations

import ast
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


_CALLS: list[tuple[str, ast.Call, str]] = []


def _calls() -> list[tuple[str, ast.Call, str]]:
    """(``module:function``, call, its source) of every call in the package (read once)."""
    if not _CALLS:
        for p in sorted(PKG.rglob("*.py")):
            stack = [(ast.parse(p.read_text()), "")]
            while stack:
                node, scope = stack.pop()
                for child in ast.iter_child_nodes(node):
                    inner = scope
                    if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        inner = f"{scope}.{child.name}" if scope else child.name
                    if isinstance(child, ast.Call):
                        _CALLS.append((f"{p.relative_to(ROOT)}:{scope}", child,
                                       ast.unparse(child)))
                    stack.append((child, inner))
    return _CALLS


def _callers(matches) -> list[str]:
    """``module:function`` of every function of the package with a call for which
    ``matches(call, source)`` holds (``source``: the call's text), each listed once."""
    return sorted({where for where, call, source in _calls() if matches(call, source)})


def _name(call: ast.Call) -> str:
    f = call.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _in_functions_calling(*names: str) -> list[str]:
    """Functions that call every one of ``names``."""
    sets = [set(_callers(lambda c, s, n=n: _name(c) == n)) for n in names]
    return sorted(set.intersection(*sets))


def test_one_lbfgs_head_fit():
    assert _callers(lambda c, s: _name(c) == "LBFGS") == [
        "robust_zoo/transfer/feature_cache.py:fit_head_lbfgs"]


def test_one_place_gathers_and_restores_rng_states_and_resumes():
    collect = {"get_rng_state", "get_rng_state_all", "getstate"}
    assert _callers(lambda c, s: _name(c) in collect or s.startswith("np.random.get_state")) == [
        "robust_zoo/engine/checkpoint.py:rng_state"]
    assert _callers(lambda c, s: _name(c) == "rng_state") == [
        "robust_zoo/engine/checkpoint.py:save_run"]          # the gather over ranks
    assert _callers(lambda c, s: _name(c) == "set_rng_state") == [
        "robust_zoo/engine/checkpoint.py:restore", "robust_zoo/engine/checkpoint.py:set_rng_state"]
    # a run's states go back into optimizer and scheduler in one place
    loads = _callers(lambda c, s: _name(c) == "load_state_dict" and any(
        isinstance(a, ast.Subscript) and isinstance(a.slice, ast.Constant)
        and a.slice.value in ("optimizer", "scheduler") for a in c.args))
    assert loads == ["robust_zoo/engine/checkpoint.py:restore"]


def test_one_home_for_data_order_and_per_sample_seeds():
    # the global RNG seeded per sample, inside a fork: one place
    assert _in_functions_calling("fork_rng", "manual_seed") == [
        "robust_zoo/data/sampling.py:SeededDataset.__getitem__"]
    assert _callers(lambda c, s: _name(c) == "sample_seed") == [
        "robust_zoo/data/sampling.py:ResumableSampler.__iter__",
        "robust_zoo/data/sampling.py:SeededDataset.__getitem__"]
    # an epoch's order: a permutation from a generator seeded by the epoch, one place
    epoch_seeded = set(_callers(lambda c, s: _name(c) == "manual_seed" and "epoch" in s))
    assert sorted(epoch_seeded & set(_callers(lambda c, s: _name(c) == "randperm"))) == [
        "robust_zoo/data/sampling.py:epoch_permutation"]
