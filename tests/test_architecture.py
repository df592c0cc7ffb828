"""The package's layering (docs/architecture.md): imports only point down, no cycles, one home
per concept (found by name and, where names can differ, by what the code calls)."""
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


# -- one home, checked by what the code does ---------------------------------------------------

def _calls(attr: str) -> list[tuple[str, str]]:
    """(module, receiver source) of every call ``<receiver>.<attr>(...)`` in the package."""
    out = []
    for p in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == attr):
                out.append((str(p.relative_to(ROOT)), ast.unparse(node.func.value)))
    return out


def _functions_where(predicate) -> list[tuple[str, str]]:
    """(module, function) of every function whose own body satisfies ``predicate(nodes)``."""
    out = []
    for p in sorted(PKG.rglob("*.py")):
        for fn in ast.walk(ast.parse(p.read_text())):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if predicate(list(ast.walk(fn))):
                    out.append((str(p.relative_to(ROOT)), fn.name))
    return out


def test_penultimate_features_have_one_forward_pre_hook_on_the_head(monkeypatch):
    # in the code: the only pre-hook on a head is registered in models/features.py (the other
    # pre-hook of the package is freeze's, on the whole model)
    hooks = _calls("register_forward_pre_hook")
    assert [h for h in hooks if "head" in h[1]] == [("robust_zoo/models/features.py", "head")]
    assert [h for h in hooks if "head" not in h[1]] == [("robust_zoo/transfer/core.py", "model")]
    # at run time: transfer.features, representations.penultimate and an inversion all hook the
    # head through that one function, and give the same features
    import torch

    from robust_zoo import representations as R
    from robust_zoo import transfer
    from robust_zoo.models import get_head

    from torch import nn
    from zoo import mini_model

    model = mini_model().eval()
    head = get_head(model)
    callers = []
    original = nn.Module.register_forward_pre_hook

    def recording(self, hook, *args, **kwargs):
        if self is head:
            callers.append(sys._getframe(1).f_code.co_filename)
        return original(self, hook, *args, **kwargs)

    monkeypatch.setattr(nn.Module, "register_forward_pre_hook", recording)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        f = transfer.features(model, x)
    torch.testing.assert_close(R.penultimate(model, x), f)
    R.invert(model, x, steps=1, progress=False)
    assert len(callers) >= 3
    assert {Path(c).relative_to(ROOT).as_posix() for c in callers} == {
        "robust_zoo/models/features.py"}


def _reads_a_tensor_pair(nodes) -> bool:
    pair = any(isinstance(n, ast.Compare) and isinstance(n.left, ast.Call)
               and getattr(n.left.func, "id", None) == "len"
               and any(isinstance(c, ast.Constant) and c.value == 2 for c in n.comparators)
               for n in nodes)
    tensor = any(isinstance(n, ast.Call) and getattr(n.func, "id", None) == "isinstance"
                 and len(n.args) == 2 and "Tensor" in ast.unparse(n.args[1]) for n in nodes)
    return pair and tensor


def test_tensors_or_batches_are_read_in_one_place():
    assert _functions_where(_reads_a_tensor_pair) == [("robust_zoo/data/common.py",
                                                       "tensor_pair")]
    # every entry point that takes "(images, labels) or batches" refuses a bad pair alike
    import pytest
    import torch

    from robust_zoo import representations as R
    from robust_zoo.attacks import robust_accuracy
    from robust_zoo.data import DataError
    from robust_zoo.evaluate import evaluate

    from zoo import mini_model

    model = mini_model().eval()
    bad = (torch.rand(4, 3, 16, 16), torch.zeros(3, dtype=torch.long))
    for call in (lambda: robust_accuracy(model, bad, norm="l2", eps=0.1, steps=1),
                 lambda: evaluate(model, bad, norm="l2", eps=0.1, steps=1, progress=False),
                 lambda: R.class_seeds(bad, [0])):
        with pytest.raises(DataError, match="differ in length: 4 vs 3"):
            call()


def _tests_precision_membership(nodes) -> bool:
    return any(isinstance(n, ast.Compare) and isinstance(n.ops[0], (ast.In, ast.NotIn))
               and ast.unparse(n.left).endswith("precision") for n in nodes)


def test_one_precision_checker():
    assert _functions_where(_tests_precision_membership) == [("robust_zoo/engine/precision.py",
                                                              "check_precision")]
    import pytest
    import torch

    from robust_zoo.engine.evaluation import evaluate_loader
    from robust_zoo.engine.precision import resolve_precision
    from robust_zoo.errors import UsageError
    from robust_zoo.evaluate import evaluate

    from zoo import mini_model

    model = mini_model().eval()
    data = (torch.rand(2, 3, 16, 16), torch.zeros(2, dtype=torch.long))
    messages = set()
    for call in (lambda: resolve_precision("fp16", torch.device("cpu")),
                 lambda: evaluate_loader(model, [data], norm="l2", eps=0.1, steps=1,
                                         precision="fp16"),
                 lambda: evaluate(model, data, norm="l2", eps=0.1, precision="fp16")):
        with pytest.raises(UsageError) as e:
            call()
        messages.add(str(e.value))
    assert messages == {"precision 'fp16' is not valid: use one of fp32, bf16 (fp16 is not "
                        "supported: use bf16)"}


_CALLS: list[tuple[str, ast.Call, str]] = []


def _every_call() -> list[tuple[str, ast.Call, str]]:
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
    return sorted({where for where, call, source in _every_call() if matches(call, source)})


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


def test_one_data_loader_and_one_home_for_the_schedulers_signals():
    # every loader the package makes is data.common.Loader (workers end with a failed loop)
    assert _callers(lambda c, s: _name(c) == "DataLoader") == []
    assert _callers(lambda c, s: _name(c) == "Loader") == [
        "robust_zoo/evaluate/run.py:_loader", "robust_zoo/train/run.py:_Run._loader",
        "robust_zoo/train/run.py:_Run._validate", "robust_zoo/transfer/finetune.py:make_loader"]
    # signal handlers are set in one place: the step-boundary stop that training and transfer
    # share (engine.preemption)
    assert _callers(lambda c, s: s.startswith("signal.signal(")) == [
        "robust_zoo/engine/preemption.py:Watch.__enter__",
        "robust_zoo/engine/preemption.py:Watch._restore",
        "robust_zoo/engine/preemption.py:Watch.hand_over"]
    assert _callers(lambda c, s: _name(c) == "watch") == [
        "robust_zoo/train/run.py:_Run.__init__", "robust_zoo/transfer/finetune.py:train_network"]


def test_no_lazy_name_is_also_a_submodule_of_its_package():
    """Importing a submodule sets it as an attribute of its package, so a lazy name spelt like a
    submodule would turn into that module once anything imported it."""
    import importlib
    import pkgutil

    clashes = []
    for pkg in ["robust_zoo"] + [f"robust_zoo.{m.name}" for m in pkgutil.iter_modules(
            [str(PKG)]) if m.ispkg]:
        mod = importlib.import_module(pkg)
        subs = {m.name for m in pkgutil.iter_modules(mod.__path__)}
        clashes += [f"{pkg}.{name}" for name in getattr(mod, "_LAZY", {}) if name in subs]
    assert clashes == []
