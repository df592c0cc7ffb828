"""``robust_zoo.evaluate``: numbers equal a direct computation, claims are checked, bad data
gets clear errors, and torchrun shards add up to the single-process result."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from robust_zoo.attacks import correct_under_attack, robust_accuracy
from robust_zoo.engine.evaluation import make_autoattack
from robust_zoo.evaluate import compare_claims, evaluate, main
from robust_zoo.fileio import sha256_file
from robust_zoo.hub.manifest import Entry
from zoo import (image_tree, random_net, safetensors_entry, small_cnn, write_image_tree,
                 write_manifest)

NAME = "resnet18_l2_eps0_5"
CLASSES = ("cat", "dog", "eel")


def _tensors(n: int = 40):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 12, 12, generator=g)
    return x, (x[:, 0].mean((1, 2)) * 6).long().clamp(0, 2)


def test_in_memory_tensors_loader_and_dataset_agree_with_direct_computation():
    net, (x, y) = small_cnn(3).eval(), _tensors()
    kw = dict(norm="l2", eps=0.2, steps=3)
    clean, robust, n = robust_accuracy(net, (x, y), **kw)
    expected = {"clean_top1": clean, "pgd_top1": robust}
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    for data in [(x, y), loader, torch.utils.data.TensorDataset(x, y)]:
        r = evaluate(net, data, batch_size=16, workers=0, progress=False, **kw)
        assert r["n"] == n == len(y)
        for k, v in expected.items():
            assert r["metrics"][k] == pytest.approx(v)
        assert r["metrics"]["autoattack_top1"] is None and r["claims"] == []
        assert r["attack"]["step_size"] == pytest.approx(2.5 * 0.2 / 3)
    assert not net.training
    assert evaluate(net, loader, limit=21, progress=False, **kw)["n"] == 21   # cut mid-batch


def test_eps_zero_reports_clean_only_and_restarts_never_raise_accuracy():
    net, (x, y) = small_cnn(3).eval(), _tensors()
    r0 = evaluate(net, (x, y), norm="linf", eps=0.0, progress=False)
    assert r0["metrics"]["pgd_top1"] is None and r0["attack"] is None
    torch.manual_seed(0)
    r1 = evaluate(net, (x, y), norm="linf", eps=4 / 255, steps=3, progress=False)
    r3 = evaluate(net, (x, y), norm="linf", eps=4 / 255, steps=3, restarts=3, progress=False)
    assert r3["metrics"]["pgd_top1"] <= r1["metrics"]["pgd_top1"] <= r1["metrics"]["clean_top1"]


def test_needs_norm_and_eps_without_an_entry_and_fp32():
    net, data = small_cnn(3).eval(), _tensors()
    with pytest.raises(ValueError, match="norm= and eps="):
        evaluate(net, data, progress=False)
    with pytest.raises(ValueError, match="fp32"):
        evaluate(small_cnn(3).eval().to(torch.bfloat16), data, norm="l2", eps=1.0, progress=False)


def _tiny_digits_net(classes=(0, 1, 2, 3, 4), size: int = 8, steps: int = 100) -> nn.Module:
    """A one-conv CNN fitted on the digits (standard training): cheap enough for AutoAttack's
    5,000 Square queries."""
    import torch.nn.functional as F
    from robust_zoo.data import digits_tensors

    x, y = digits_tensors(list(classes), size, "train")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(16 * (size // 2) ** 2, len(classes)))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(y), (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return net.eval()


@pytest.mark.slow
def test_autoattack_standard_and_fast_are_at_least_as_strong_as_pgd():
    """The real pyautoattack: the standard ensemble (APGD-CE, APGD-T, FAB-T, Square) and the fast
    one (APGD-CE + APGD-T) on the same 8 images leave no more examples robust than PGD-2."""
    pytest.importorskip("pyautoattack", reason="pip install 'robust-zoo[eval]'")
    from robust_zoo.data import digits_tensors

    net = _tiny_digits_net()
    x, y = digits_tensors([0, 1, 2, 3, 4], 8, "val")
    x, y = x[:8], y[:8]
    kw = dict(norm="linf", eps=40 / 255, steps=2, progress=False)
    fast = evaluate(net, (x, y), autoattack="fast", **kw)
    std = evaluate(net, (x, y), autoattack="standard", **kw)
    assert fast["autoattack"]["attacks"] == ["apgd-ce", "apgd-t"]
    assert std["autoattack"]["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert std["autoattack"]["package"] == "pyautoattack"
    for r in (fast, std):
        c = r["counts"]
        assert c["n"] == 8 and c["clean"] >= 6 and c["pgd"] >= 1   # PGD-2 leaves some robust
        assert c["autoattack"] <= c["pgd"]
        assert r["autoattack_acc"] == pytest.approx(100 * c["autoattack"] / 8)
        assert r["clean_acc"] == r["metrics"]["clean_top1"]
    # the same seeded APGD runs start the standard ensemble, which only adds attacks
    assert std["counts"]["autoattack"] <= fast["counts"]["autoattack"]
    assert not net.training
    # the per-batch callable: a robust mask, and AutoAttack's reseeding does not leak out
    run = make_autoattack(net, norm="linf", eps=40 / 255, version="fast")
    rng = torch.get_rng_state()
    mask = run(x, y)
    assert torch.equal(torch.get_rng_state(), rng)
    assert mask.dtype == torch.bool and int(mask.sum()) == fast["counts"]["autoattack"]


def test_autoattack_missing_package_is_skipped_under_auto_and_an_error_when_asked(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyautoattack", None)      # None: the import fails
    net, (x, y) = small_cnn(3).eval(), _tensors()
    r = evaluate(net, (x, y), norm="linf", eps=8 / 255, steps=1, autoattack="auto", progress=False)
    assert r["metrics"]["autoattack_top1"] is None and r["autoattack_acc"] is None
    assert "not installed" in r["autoattack"]["skipped"]
    for asked in (True, "standard", "fast", "on"):
        with pytest.raises(ImportError, match="AutoAttack was requested.*pyautoattack"):
            evaluate(net, (x, y), norm="linf", eps=8 / 255, steps=1, autoattack=asked,
                     progress=False)
    with pytest.raises(ValueError, match="standard, fast, auto, off"):
        evaluate(net, (x, y), norm="linf", eps=8 / 255, autoattack="strong", progress=False)


def test_compare_claims_tolerance_rule():
    entry = Entry.from_dict({
        "name": NAME, "arch": "resnet18", "norm": "l2", "eps": 0.5,
        "files": [{"format": "safetensors", "path": "m.safetensors"}],
        "metrics": [{"name": "clean_top1", "value": 60.0},
                    {"name": "pgd_top1", "value": 40.0, "norm": "l2", "eps": 0.5},
                    {"name": "pgd_top1", "value": 10.0, "norm": "l2", "eps": 3.0},
                    {"name": "pgd_top1", "value": 10.0, "norm": "linf", "eps": 0.5}]})
    measured = {"clean_top1": 61.5, "pgd_top1": 40.5, "autoattack_top1": None}
    big = compare_claims(entry, measured, norm="l2", eps=0.5, n=50000)
    assert [(c["name"], c["claimed"], c["ok"]) for c in big] == [
        ("clean_top1", 60.0, False), ("pgd_top1", 40.0, True)]
    assert all(c["rule"] == "fixed 1 pt" and c["tolerance"] == 1.0 for c in big)
    small = compare_claims(entry, measured, norm="l2", eps=0.5, n=100)
    # 1.96·√(0.6·0.4/100) = 9.6 points: sampling noise dominates, 1.5 points is no evidence
    assert small[0]["rule"] == "binomial 95% (n=100)" and small[0]["ok"]
    assert small[0]["tolerance"] == pytest.approx(100 * 1.96 * (0.6 * 0.4 / 100) ** 0.5)


# -- a zoo entry on disk: manifest + safetensors + ImageFolder -------------------------------

@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A resnet18 (3 classes) saved as a safetensors manifest entry, and a 13-image tree
    (odd, so two torchrun ranks get unequal shards)."""
    root = tmp_path_factory.mktemp("zoo")
    net = random_net("resnet18", num_classes=3)   # random BN statistics, so eval mode matters
    write_manifest(root / "weights_manifest.json", safetensors_entry(
        root, NAME, net, "resnet18", eps=0.5, num_classes=3,
        metrics=[{"name": "clean_top1", "value": 99.0, "dataset": "toy", "n_examples": 13},
                 {"name": "pgd_top1", "value": 0.0, "norm": "l2", "eps": 0.5,
                  "attack": {"steps": 2, "restarts": 1}}],
        preprocessing={"resize": 36, "crop": 32}, recipe={}))
    g = torch.Generator().manual_seed(1)   # class-dependent colour: a model could tell them apart
    data = write_image_tree(root / "val", {"": 4}, CLASSES,
                            lambda s, c, j: (torch.rand(40, 40, 3, generator=g) * 128 + 40 * c))
    (data / "dog" / "extra.png").write_bytes((data / "dog" / "0.png").read_bytes())
    return root, data


def _direct(root, data, eps=0.5, steps=2):
    import robust_zoo
    from torchvision.datasets import ImageFolder

    model = robust_zoo.load(NAME, manifest=root / "weights_manifest.json")
    ds = ImageFolder(str(data), transform=model.entry.transforms())
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.tensor(ds.targets)
    clean, robust = correct_under_attack(model, x, y, norm="l2", eps=eps, steps=steps)
    return 100.0 * clean.sum().item() / len(y), 100.0 * robust.sum().item() / len(y), len(y)


def test_cli_end_to_end_matches_direct_computation(zoo, tmp_path, capsys):
    root, data = zoo
    out = tmp_path / "r.json"
    rc = main([NAME, "--data", str(data), "--manifest", str(root / "weights_manifest.json"),
               "--steps", "2", "--batch-size", "5", "--workers", "0", "--autoattack", "off",
               "--no-progress", "--json", str(out)])
    assert rc == 0
    r = json.loads(out.read_text())
    clean, robust, n = _direct(root, data)
    assert r["n"] == n == 13 and (r["norm"], r["eps"]) == ("l2", 0.5)   # the entry's own
    assert r["metrics"]["clean_top1"] == pytest.approx(clean)
    assert r["metrics"]["pgd_top1"] == pytest.approx(robust)
    claims = {c["name"]: c for c in r["claims"]}
    assert claims["clean_top1"]["claimed"] == 99.0 and not claims["clean_top1"]["ok"]
    # 1.96·√(0.99·0.01/13) = 5.41 points: sampling alone exceeds the fixed 1-point tolerance
    assert claims["clean_top1"]["rule"] == "binomial 95% (n=13)"
    assert claims["clean_top1"]["tolerance"] == pytest.approx(5.409, abs=1e-3)
    report = capsys.readouterr().out
    assert "clean_top1" in report and "DIFFERS" in report and "AutoAttack: skipped" in report


def test_cli_limit_and_eps_override(zoo, tmp_path):
    root, data = zoo
    out = tmp_path / "r.json"
    assert main([NAME, "--data", str(data), "--manifest", str(root), "--eps", "1/4",
                 "--steps", "1", "--limit", "5", "--workers", "0", "--autoattack", "off",
                 "--no-progress", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["n"] == 5 and r["eps"] == 0.25 and r["limit"] == 5
    assert all(c["name"] == "clean_top1" for c in r["claims"])   # no pgd claim at eps 0.25


def test_cli_data_errors(zoo, tmp_path, capsys):
    root, _ = zoo
    man = str(root / "weights_manifest.json")
    args = ["--manifest", man, "--workers", "0", "--no-progress", "--autoattack", "off"]
    assert main([NAME, "--data", str(tmp_path / "missing"), *args]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.png").write_bytes(b"")
    assert main([NAME, "--data", str(tmp_path / "flat"), *args]) == 2
    assert "no class sub-folders" in capsys.readouterr().err
    (tmp_path / "hollow" / "a").mkdir(parents=True)
    assert main([NAME, "--data", str(tmp_path / "hollow"), *args]) == 2
    assert "hollow" in capsys.readouterr().err
    two = image_tree(tmp_path / "two", {"": 1}, [(60, 60, 60), (180, 180, 180)])
    assert main([NAME, "--data", str(two), *args]) == 2
    assert "2 classes but the model's head has 3 outputs" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_ranks_match_one_process(zoo, tmp_path, subprocess_env):
    root, data = zoo
    out = tmp_path / "dist.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "robust_zoo.evaluate", NAME, "--data", str(data), "--manifest", str(root),
           "--steps", "2", "--batch-size", "4", "--workers", "0", "--device", "cpu",
           "--autoattack", "off", "--no-progress", "--json", str(out)]
    env = dict(subprocess_env, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("clean_top1") == 1          # only rank 0 reports
    r = json.loads(out.read_text())
    clean, robust, n = _direct(root, data)
    assert r["world_size"] == 2 and r["n"] == n == 13
    assert r["metrics"]["clean_top1"] == pytest.approx(clean)
    assert r["metrics"]["pgd_top1"] == pytest.approx(robust)


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory):
    """The quickstart's robust recipe (mini_resnet, Linf PGD-3 on digits 0-4, 16 px) trained
    for one epoch, and a PNG tree of held-out digits (4 per class)."""
    from robust_zoo.data import digits_tensors
    from robust_zoo.cli.quickstart import recipes
    from robust_zoo.train import RunOptions, train

    root = tmp_path_factory.mktemp("qs")
    res = train(recipes(1, 0)["robust"], RunOptions(
        out=root / "run", progress=False, eval_every=0, final_eval_steps=0, final_eval_limit=8,
        log_every=1000, argv=["test"]))
    x, y = digits_tensors([0, 1, 2, 3, 4], 16, "val")
    first = [(y == c).nonzero().flatten()[:4].tolist() for c in range(5)]
    return res, write_image_tree(root / "val", {"": 4}, [str(c) for c in range(5)],
                                 lambda s, c, j: (x[first[c][j]].permute(1, 2, 0) * 255).round())


@pytest.mark.slow
def test_cli_autoattack_fast_on_a_quickstart_model(quickstart_run, tmp_path, capsys):
    pytest.importorskip("pyautoattack", reason="pip install 'robust-zoo[eval]'")
    res, data = quickstart_run
    out = tmp_path / "aa.json"
    assert main([res.name, "--manifest", str(res.run_dir), "--data", str(data), "--limit", "8",
                 "--steps", "2", "--eps", "32/255", "--autoattack", "fast", "--workers", "0",
                 "--no-progress", "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    c = r["counts"]
    assert r["n"] == c["n"] == 8 and r["autoattack"]["version"] == "fast"
    assert c["autoattack"] <= c["pgd"] <= c["clean"]
    # RobustBench's names, in percent
    assert r["clean_acc"] == pytest.approx(100 * c["clean"] / 8)
    assert r["autoattack_acc"] == pytest.approx(100 * c["autoattack"] / 8)
    assert r["autoattack_acc"] == r["metrics"]["autoattack_top1"] <= r["metrics"]["pgd_top1"]
    assert "AutoAttack: fast (apgd-ce, apgd-t; pyautoattack" in capsys.readouterr().out


@pytest.mark.parametrize("flags, message", [
    (["--steps", "-1"], "--steps must be >= 0"),
    (["--steps", "2.5"], "whole number"),
    (["--limit", "0"], "--limit must be >= 1"),
    (["--eps", "nan"], "finite"),
    (["--eps", "1/0"], "not a number or fraction"),
    (["--step-size", "0"], "--step-size must be > 0"),
    (["--restarts", "0"], "--restarts must be >= 1"),
    (["--batch-size", "x"], "not a number"),
    (["--autoattack", "strong"], "invalid choice"),
])
def test_cli_numeric_flags_are_checked(zoo, flags, message, capsys):
    root, data = zoo
    rc = main([NAME, "--data", str(data), "--manifest", str(root), "--no-progress", *flags])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_cli_value_errors_exit_2_without_traceback(zoo, capsys):
    root, data = zoo
    # errors raised below the CLI (here: a device torch does not know) are one message, exit 2
    rc = main([NAME, "--data", str(data), "--manifest", str(root), "--norm", "linf",
               "--no-progress", "--workers", "0", "--autoattack", "off", "--steps", "0",
               "--device", "nonsense"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: device 'nonsense'") and "Traceback" not in err


def test_eval_result_adds_and_reduces():
    from robust_zoo.engine.distributed import Dist
    from robust_zoo.engine.evaluation import EvalResult, evaluate_loader

    a, b = EvalResult(10, 8, 5, 4), EvalResult(6, 6, 1, 0)
    assert a + b == EvalResult(16, 14, 6, 4) and sum([a, b]) == a + b
    assert (a + b).pgd_top1 == pytest.approx(100 * 6 / 16)
    assert EvalResult() + EvalResult(3, 2) == EvalResult(3, 2)          # empty is neutral
    assert (EvalResult(3, 2) + EvalResult()).pgd is None
    with pytest.raises(ValueError, match="PGD"):
        EvalResult(3, 2) + EvalResult(3, 2, 1)
    with pytest.raises(ValueError, match="exceeds"):
        EvalResult(3, 4)
    assert a.all_reduce(Dist()) is a                                     # a world of one
    # chunked evaluation adds up to the whole, and the model's mode comes back as it was
    net, (x, y) = small_cnn(3).eval(), _tensors()
    net.train()
    kw = dict(norm="l2", eps=0.2, steps=2)
    whole = evaluate_loader(net, [(x, y)], **kw)
    parts = [evaluate_loader(net, [(x[i:i + 7], y[i:i + 7])], **kw) for i in range(0, 40, 7)]
    assert sum(parts) == whole and whole.n == 40 and net.training
    assert evaluate_loader(net, [(x, y)], limit=9, **kw).n == 9
    clean_only = evaluate_loader(net, [(x, y)], norm="l2", eps=0.0, steps=2)
    assert clean_only.pgd is None and clean_only.clean == whole.clean
    assert evaluate_loader(net, [(x, y)], precision="bf16", **kw).n == 40
    with pytest.raises(ValueError, match="precision"):
        evaluate_loader(net, [(x, y)], precision="fp16", **kw)
    with pytest.raises(ValueError, match="Labels range"):
        evaluate_loader(net, [(x, y + 5)], **kw)


@pytest.mark.parametrize("keep_best", [True, False])
def test_pgd_keeps_no_graph_across_steps(keep_best):
    """Memory of the attack does not grow with its steps: every activation of step k is freed
    before step k+1's forward, and none survives the attack (checked through weak references,
    which see exactly what autograd keeps alive)."""
    import gc
    import weakref

    from robust_zoo.attacks import pgd

    net, (x, y) = small_cnn(3).eval(), _tensors(8)
    refs: list[weakref.ref] = []
    alive_at_forward: list[int] = []

    def hook(module, args, out):   # refcounting frees autograd's buffers: no gc needed
        alive_at_forward.append(sum(r() is not None for r in refs))
        refs.append(weakref.ref(out))

    handle = net[2].register_forward_hook(hook)        # the ReLU: saved for the backward
    try:
        for steps in (2, 20):
            refs.clear()
            alive_at_forward.clear()
            x_adv = pgd(net, x, y, norm="l2", eps=0.5, steps=steps, keep_best=keep_best)
            gc.collect()
            assert len(refs) == steps + keep_best
            assert max(alive_at_forward) == 0, alive_at_forward
            assert sum(r() is not None for r in refs) == 0
            assert x_adv.grad_fn is None and not x_adv.requires_grad
    finally:
        handle.remove()


# -- AutoAttack on the image size; errors raised in DataLoader workers; a head that disagrees --

@pytest.mark.parametrize("size", [12, 24])
def test_autoattack_runs_on_the_image_size_or_says_why(size, capsys):
    """pyautoattack's L2 Square attack cannot start on 12- or 24-px images (its first
    perturbation tiles the image with ⌊size/5⌋-px squares that overrun it). "auto" runs the
    standard ensemble without Square, named so in the result, the report and on stderr;
    "standard" refuses with a UsageError saying why; "fast" needs no Square."""
    pytest.importorskip("pyautoattack", reason="pip install 'robust-zoo[eval]'")
    from robust_zoo.errors import UsageError
    from robust_zoo.evaluate import format_report

    # a near-constant model (class 0 by a wide margin): nothing is fooled at this ε, so every
    # attack of the ensemble runs (Square last), and each of its steps costs next to nothing
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5)).eval()
    with torch.no_grad():
        net[2].weight.mul_(1e-2)
        net[2].bias.copy_(torch.tensor([5.0, 0, 0, 0, 0]))
    x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    y = torch.zeros(1, dtype=torch.long)
    kw = dict(norm="l2", eps=0.01, steps=1, progress=False)
    r = evaluate(net, (x, y), autoattack="auto", **kw)
    aa = r["autoattack"]
    assert aa["version"] == "standard-no-square"
    assert aa["attacks"] == ["apgd-ce", "apgd-t", "fab-t"] and aa["target_classes"] == 4
    assert f"{size}×{size}" in aa["note"] and "not the standard AutoAttack" in aa["note"]
    assert r["counts"]["autoattack"] == 1                  # it ran, and fooled nothing
    assert aa["note"] in format_report(r) and aa["note"] in capsys.readouterr().err
    with pytest.raises(UsageError, match=rf"Square attack .* {size}×{size} .*--autoattack fast"):
        evaluate(net, (x, y), autoattack="standard", **kw)
    fast = evaluate(net, (x, y), autoattack="fast", **kw)["autoattack"]
    assert fast["version"] == "fast" and fast["note"] is None


def test_autoattack_plan_keeps_square_wherever_it_runs_and_needs_four_classes():
    """The plan runs pyautoattack's own Square attack on the image size (one query on a
    constant model) and keeps it wherever it starts; APGD-T and FAB-T target min(9, classes − 1)
    classes, and a model with fewer than 4 classes cannot run AutoAttack (skipped under
    "auto", an error when asked for)."""
    pytest.importorskip("pyautoattack", reason="pip install 'robust-zoo[eval]'")
    from robust_zoo.engine.evaluation import plan_autoattack
    from robust_zoo.errors import UsageError

    cases = [("l2", 4, False), ("l2", 12, False), ("l2", 24, False), ("l2", 19, False),
             ("l2", 5, True), ("l2", 16, True), ("l2", 25, True), ("l2", 224, True),
             ("linf", 4, True), ("linf", 24, True)]
    for norm, size, square in cases:
        plan = plan_autoattack("standard", norm=norm, eps=0.5, image_shape=(3, size, size),
                               num_classes=1000, drop_square=True)
        assert ("square" in plan.attacks) == square, (norm, size)
        assert plan.version == ("standard" if square else "standard-no-square")
        assert (plan.note is None) == square and plan.target_classes == 9
    assert plan_autoattack("fast", norm="l2", eps=0.5, image_shape=(3, 24, 24),
                           num_classes=4).target_classes == 3
    with pytest.raises(UsageError, match="3 classes.*at least 4"):
        plan_autoattack("fast", norm="l2", eps=0.5, image_shape=(3, 24, 24), num_classes=3)
    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3)).eval()
    x, y = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    r = evaluate(net, (x, y), norm="linf", eps=8 / 255, steps=1, autoattack="auto",
                 progress=False)
    assert "3 classes" in r["autoattack"]["skipped"] and r["counts"]["autoattack"] is None
    with pytest.raises(UsageError, match="3 classes"):
        evaluate(net, (x, y), norm="linf", eps=8 / 255, steps=1, autoattack="fast",
                 progress=False)


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    """A 5-class mini_resnet saved as an L2 manifest entry that crops 24 px, and a tree of
    24-px images (5 classes, one image each)."""
    from zoo import image_tree, random_net, safetensors_entry, write_manifest

    root = tmp_path_factory.mktemp("small")
    net = random_net("mini_resnet", num_classes=5)
    entry = safetensors_entry(root, "mini_resnet_l2_eps0_5", net, "mini_resnet", eps=0.5,
                              num_classes=5, preprocessing={"resize": 24, "crop": 24})
    man = write_manifest(root / "weights_manifest.json", entry)
    colors = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (150, 150, 0), (0, 150, 150)]
    data = image_tree(root / "data", {"val": 1}, colors, size=24) / "val"
    return man, data, net


def test_cli_autoattack_standard_that_cannot_run_is_one_line_exit_2(small_zoo, capsys):
    man, data, _ = small_zoo
    rc = main(["mini_resnet_l2_eps0_5", "--manifest", str(man), "--data", str(data),
               "--autoattack", "standard", "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "Square attack" in err and "24×24" in err and "Traceback" not in err


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_an_empty_image_file_is_one_line_naming_it(small_zoo, tmp_path, capsys, workers,
                                                   suffix):
    """A 0-byte image is a DataError naming the file, one line, whether it is read in the main
    process or in a DataLoader worker (which wraps the error in its traceback). The workers have
    ended when the error arrives: the error that is kept refers to the loader, and would
    otherwise keep them until a later garbage collection, which then stalls joining them."""
    import multiprocessing
    import shutil

    from robust_zoo.data import DataError

    man, data, _ = small_zoo
    tree = shutil.copytree(data, tmp_path / "val")
    bad = tree / "class2" / f"empty{suffix}"
    bad.write_bytes(b"")
    kw = dict(workers=workers, autoattack="off", steps=1, progress=False)
    before = set(multiprocessing.active_children())
    with pytest.raises(DataError) as err:
        evaluate("mini_resnet_l2_eps0_5", str(tree), manifest=man, **kw)
    assert set(multiprocessing.active_children()) <= before
    assert str(err.value).splitlines() == [str(err.value)] and str(bad) in str(err.value)
    assert "0 bytes" in str(err.value) and "Traceback" not in str(err.value)
    rc = main(["mini_resnet_l2_eps0_5", "--manifest", str(man), "--data", str(tree),
               "--workers", str(workers), "--autoattack", "off", "--steps", "1",
               "--no-progress"])
    out = capsys.readouterr().err
    assert rc == 2 and out == f"error: {err.value}\n", out


@pytest.mark.parametrize("fmt", ["safetensors", "robustness-ckpt"])
def test_an_entry_whose_num_classes_disagrees_with_its_head_fails_naming_both(
        small_zoo, tmp_path, capsys, fmt):
    """An entry that says num_classes=10 for a file with a 5-class head fails at load, before
    any image is read, with an error that names both numbers (exit 2, one line)."""
    from zoo import ckpt_bytes, random_net, safetensors_entry, write_manifest

    _, data, net = small_zoo
    name = "mini_resnet_l2_eps0_5"
    if fmt == "safetensors":
        entry = dict(safetensors_entry(tmp_path, name, net, "mini_resnet", eps=0.5,
                                       num_classes=5), num_classes=10)
    else:
        ckpt = tmp_path / "m.ckpt"
        ckpt.write_bytes(ckpt_bytes(random_net("resnet18", num_classes=5), "resnet18"))
        name = "resnet18_l2_eps0_5"
        entry = {"name": name, "arch": "resnet18", "norm": "l2", "eps": 0.5, "num_classes": 10,
                 "files": [{"format": fmt, "path": ckpt.name, "sha256": sha256_file(ckpt),
                            "size": ckpt.stat().st_size}], "metrics": []}
    man = write_manifest(tmp_path / "weights_manifest.json", entry)
    rc = main([name, "--manifest", str(man), "--data", str(data), "--workers", "0",
               "--autoattack", "off", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "head has 5 outputs" in err and "num_classes is 10" in err, err
