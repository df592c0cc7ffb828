"""``robust_zoo.evaluate``: numbers equal a direct computation, claims are checked, bad data
gets clear errors, and torchrun shards add up to the single-process result."""
from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
import torch
from torch import nn

from robust_zoo.attacks import correct_under_attack, pgd, robust_accuracy
from robust_zoo.evaluate import compare_claims, evaluate, main
from robust_zoo.io import sha256_file
from robust_zoo.manifest import Entry

NAME = "resnet18_l2_eps0_5"
CLASSES = ("cat", "dog", "eel")


def _tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 3)).eval()


def _tensors(n: int = 40):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 12, 12, generator=g)
    return x, (x[:, 0].mean((1, 2)) * 6).long().clamp(0, 2)


def test_in_memory_tensors_loader_and_dataset_agree_with_direct_computation():
    net, (x, y) = _tiny_net(), _tensors()
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
    net, (x, y) = _tiny_net(), _tensors()
    r0 = evaluate(net, (x, y), norm="linf", eps=0.0, progress=False)
    assert r0["metrics"]["pgd_top1"] is None and r0["attack"] is None
    torch.manual_seed(0)
    r1 = evaluate(net, (x, y), norm="linf", eps=4 / 255, steps=3, progress=False)
    r3 = evaluate(net, (x, y), norm="linf", eps=4 / 255, steps=3, restarts=3, progress=False)
    assert r3["metrics"]["pgd_top1"] <= r1["metrics"]["pgd_top1"] <= r1["metrics"]["clean_top1"]


def test_needs_norm_and_eps_without_an_entry_and_fp32():
    net, data = _tiny_net(), _tensors()
    with pytest.raises(ValueError, match="norm= and eps="):
        evaluate(net, data, progress=False)
    with pytest.raises(ValueError, match="fp32"):
        evaluate(_tiny_net().to(torch.bfloat16), data, norm="l2", eps=1.0, progress=False)


def test_autoattack_is_run_per_batch_and_reported_on_its_own(monkeypatch):
    # fra31's API (AutoAttack(model, norm=, eps=, version=, device=, verbose=),
    # run_standard_evaluation(x, y, bs=)) with a 5-step PGD standing in for the real ensemble
    calls = []

    class FakeAutoAttack:
        def __init__(self, model, norm, eps, version, device, verbose=True):
            self.model, self.eps = model, eps
            calls.append(dict(norm=norm, eps=eps, version=version, verbose=verbose))

        def run_standard_evaluation(self, x, y, bs=250):
            assert not self.model.training and bs == len(x)
            return pgd(self.model, x, y, norm="linf", eps=self.eps, steps=5)

    monkeypatch.setitem(sys.modules, "autoattack", types.SimpleNamespace(AutoAttack=FakeAutoAttack))
    net, (x, y) = _tiny_net(), _tensors()
    r = evaluate(net, (x, y), norm="linf", eps=8 / 255, steps=1, autoattack=True, batch_size=16,
                 progress=False)
    assert calls == [dict(norm="Linf", eps=8 / 255, version="standard", verbose=False)]
    with torch.no_grad():
        hits = ((net(x).argmax(1) == y)
                & (net(pgd(net, x, y, norm="linf", eps=8 / 255, steps=5)).argmax(1) == y)).sum()
    assert r["metrics"]["autoattack_top1"] == pytest.approx(100.0 * int(hits) / len(y))
    assert r["autoattack"] == {"version": "standard"}

    monkeypatch.setitem(sys.modules, "autoattack", None)      # None: the import fails
    monkeypatch.setitem(sys.modules, "pyautoattack", None)
    r = evaluate(net, (x, y), norm="linf", eps=8 / 255, steps=1, autoattack="auto", progress=False)
    assert r["metrics"]["autoattack_top1"] is None and "is installed" in r["autoattack"]["skipped"]
    with pytest.raises(ImportError, match="AutoAttack was requested"):
        evaluate(net, (x, y), norm="linf", eps=8 / 255, steps=1, autoattack=True, progress=False)


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

def _write_tree(root, per_class: int = 4, classes=CLASSES, size: int = 40):
    from PIL import Image

    g = torch.Generator().manual_seed(1)
    for i, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for j in range(per_class):
            # class-dependent colour so a model can in principle tell them apart
            arr = (torch.rand(size, size, 3, generator=g) * 128 + 40 * i).clamp(0, 255)
            Image.fromarray(arr.to(torch.uint8).numpy()).save(root / c / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """A resnet18 (3 classes) saved as a safetensors manifest entry, and a 13-image tree
    (odd, so two torchrun ranks get unequal shards)."""
    from robust_zoo.archs import build
    from robust_zoo.weights import save_weights

    root = tmp_path_factory.mktemp("zoo")
    torch.manual_seed(0)
    net = build("resnet18", num_classes=3)
    with torch.no_grad():   # non-trivial BN statistics, so eval mode matters
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = save_weights(net.state_dict(), root / "model.safetensors", arch="resnet18",
                        num_classes=3)
    manifest = {"schema_version": 1, "models": [{
        "name": NAME, "arch": "resnet18", "norm": "l2", "eps": 0.5, "num_classes": 3,
        "files": [{"format": "safetensors", "path": "model.safetensors",
                   "sha256": sha256_file(path), "size": path.stat().st_size}],
        "metrics": [{"name": "clean_top1", "value": 99.0, "dataset": "toy", "n_examples": 13},
                    {"name": "pgd_top1", "value": 0.0, "norm": "l2", "eps": 0.5,
                     "attack": {"steps": 2, "restarts": 1}}],
        "preprocessing": {"resize": 36, "crop": 32}, "recipe": {}}]}
    (root / "weights_manifest.json").write_text(json.dumps(manifest))
    data = _write_tree(root / "val")
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
    assert claims["clean_top1"]["rule"] == "binomial 95% (n=13)" or clean == 99.0
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
    two = _write_tree(tmp_path / "two", per_class=1, classes=("a", "b"))
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
