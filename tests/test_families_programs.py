"""Every program on a timm architecture (DeiT-S, RobustBench's Tian2022Deeper model): transfer
(head swap, penultimate features, fixed-feature and full fine-tuning), representations and
viz at the network's own input size, evaluate with RobustBench's field names and common
corruptions, export into timm; and the ResNet-only features (freeze levels, detection
backbones) refuse it in one line."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

import robust_zoo
from robust_zoo import cli
from robust_zoo.errors import UsageError
from robust_zoo.evaluate import evaluate, format_report
from robust_zoo.formats.safetensors_file import load_weights
from robust_zoo.hub.manifest import Entry
from robust_zoo.models import Penultimate, RobustModel, archs, get_head, input_size
from robust_zoo.transfer import features, freeze, replace_head
from zoo import assert_same_state, image_tree, model_state, safetensors_entry, write_manifest

timm = pytest.importorskip("timm")

ARCH, SIZE = "deit_small", 32          # DeiT-S built for 32-px inputs: 4 patches + the class token
COLORS = [(200, 60, 60), (60, 200, 60), (60, 60, 200)]


@pytest.fixture(scope="module")
def deit() -> RobustModel:
    """Random DeiT-S with a 10-class head, in eval mode (tests that change it take a copy)."""
    torch.manual_seed(0)
    return RobustModel(archs.get_arch(ARCH).build(10, img_size=SIZE), ARCH, name="deit").eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return image_tree(tmp_path_factory.mktemp("colors"), {"train": 8, "val": 4}, COLORS, 24,
                      noise=50.0)


def _pre_logits(model: RobustModel, x: torch.Tensor) -> torch.Tensor:
    """timm's own penultimate features: forward_head(..., pre_logits=True)."""
    net = model.model
    with torch.no_grad():
        return net.forward_head(net.forward_features(model.normalize(x)), pre_logits=True)


# ----------------------------------------------------------------------------- transfer

def test_head_swap_and_penultimate_features_match_timms_pre_logits(deit):
    model = copy.deepcopy(deit)
    x = torch.rand(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    want = _pre_logits(model, x)
    with torch.no_grad():
        assert torch.allclose(features(model, x), want, atol=1e-5)
        assert torch.allclose(Penultimate(model)(x), want, atol=1e-5)
        assert torch.allclose(model(x), model.model.head(want), atol=1e-5)
    replace_head(model, 5)
    head = get_head(model)
    assert head is model.model.head and (head.in_features, head.out_features) == (384, 5)
    assert model.model.num_classes == model.num_classes == 5
    with torch.no_grad():
        assert model(x).shape == (3, 5)
        assert torch.allclose(features(model, x), want, atol=1e-5)   # the backbone is as it was


def test_fixed_feature_trains_the_head_only_and_full_the_whole_network(deit, folder,
                                                                       tmp_path):
    """cls_token and pos_embed are parameters of the network itself, outside every child
    module: fixed-feature freezes them too."""
    from robust_zoo.transfer import TransferConfig
    from robust_zoo.transfer.runner import run_transfer

    model = copy.deepcopy(deit)
    freeze(model, "fixed-feature")
    assert [n for n, p in model.named_parameters() if p.requires_grad] == [
        "model.head.weight", "model.head.bias"]
    before = {k: v.clone() for k, v in deit.model.state_dict().items()}
    # behind the network (both modes), and the head fit on cached penultimate features
    for mode, protocol in [("fixed-feature", "paper"), ("full", "paper"),
                           ("fixed-feature", "centre-crop-lbfgs")]:
        cfg = TransferConfig(mode=mode, protocol=protocol, epochs=1, image_size=SIZE,
                             batch_size=24, lr=0.01)
        out = tmp_path / f"{mode}-{protocol}"
        res = run_transfer(deit, "imagefolder", data_root=folder, out_dir=out, config=cfg,
                           cache_dir=tmp_path / "cache", progress=False, log=lambda *a: None,
                           save_model=protocol == "paper")
        assert (res["arch"], res["protocol"], res["num_classes"], res["n_test"]) == (
            ARCH, protocol, 3, 12)
        head, _ = load_weights(out / "head.safetensors")
        assert head["weight"].shape == (3, 384)
        if protocol != "paper":          # the network never ran behind a head being trained
            continue
        sd, meta = load_weights(out / "model.safetensors")
        assert meta["arch"] == ARCH and sd["head.weight"].shape == (3, 384)
        backbone = [k for k in before if not k.startswith("head.")]
        changed = [k for k in backbone if not torch.equal(sd[k], before[k])]
        assert torch.equal(sd["head.weight"], head["weight"])
        if mode == "fixed-feature":
            assert changed == []
        else:
            assert "cls_token" in changed and "blocks.0.attn.qkv.weight" in changed
    assert res["cache"]["train"]["hit"] is False and Path(res["cache"]["test"]["path"]).is_file()
    assert all(torch.equal(v, before[k]) for k, v in deit.model.state_dict().items())


@pytest.mark.parametrize("arch", ["alexnet", "convnext_tiny_convstem", "swin_base",
                                  "vit_small_convstem", "xcit_s12", "ra_resnet50"])
def test_every_family_has_its_head_swapped_features_read_and_backbone_frozen(arch):
    """On the meta device (shapes only): the head a transfer replaces, the features it reads
    and what fixed-feature freezes, for the smallest member of each new family."""
    from robust_zoo.transfer.detection import backbone

    a = archs.get_arch(arch)
    model = RobustModel(archs.build(arch, 10, device="meta"), arch).to("meta")
    x = torch.empty(2, 3, a.input_size, a.input_size, device="meta")
    freeze(replace_head(model, 5), "fixed-feature")
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == [f"model.{a.head}.weight", f"model.{a.head}.bias"]
    assert get_head(model).out_features == 5
    assert features(model, x).shape == (2, a.num_features)
    with pytest.raises(UsageError, match="ResNet-family"):
        freeze(model, "layer4")
    with pytest.raises(UsageError, match=r"ResNet-FPN"):
        backbone(arch, pretrained=False)


def test_resnet_only_features_refuse_other_archs_in_one_line(deit, folder, tmp_path, capsys):
    from robust_zoo.transfer.detection import backbone
    from robust_zoo.transfer.runner import check_input_size

    with pytest.raises(UsageError, match=r"ResNet-family.*deit_small is a vit arch.*"
                                         r"'fixed-feature', 'full'") as e:
        freeze(copy.deepcopy(deit), "layer3")
    assert "\n" not in str(e.value)
    with pytest.raises(UsageError, match=r"'deit_small' is a deit_small \(vit family\); "
                                         r"detection backbones \(ResNet-FPN\).*resnet50") as e:
        backbone("deit_small", pretrained=False)
    assert "\n" not in str(e.value)
    on_meta = RobustModel(archs.build(ARCH, 10, device="meta"), ARCH)
    with pytest.raises(UsageError, match="built for 224-px images.*--image-size 224"):
        check_input_size(on_meta, 64)
    check_input_size(deit, SIZE)                                      # its own size: fine
    from robust_zoo.transfer.__main__ import main

    rc = main(["--model", ARCH, "--pretrained", "false", "--mode", "layer2", "--dataset",
               "imagefolder", "--data-root", str(folder), "--out", str(tmp_path / "o"),
               "--epochs", "1", "--workers", "0", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: freeze level 'layer2'")
    assert "'fixed-feature', 'full'" in err[0] and not (tmp_path / "o").exists()


# ----------------------------------------------------------------------------- representations

def test_representations_run_at_the_networks_own_size(deit):
    from robust_zoo import representations as R

    before = model_state(deit)
    assert input_size(deit) == SIZE                  # the size its position table was built for
    x = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    g = R.saliency(deit, x)
    assert g.shape == x.shape and g.abs().sum() > 0
    drawn = R.synthesize(deit, [1, 4], steps=2, progress=False)
    assert drawn.shape == (2, 3, SIZE, SIZE) and 0 <= drawn.min() and drawn.max() <= 1
    start = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(3))
    back = R.invert(deit, x, start, steps=3, progress=False)
    target = R.penultimate(deit, x)
    assert torch.allclose(target, _pre_logits(deit, x), atol=1e-5)
    dist = lambda z: (R.penultimate(deit, z) - target).norm(dim=1)  # noqa: E731
    assert (dist(back) < dist(start)).all()
    unit = R.visualize_feature(deit, 7, steps=2, progress=False)
    assert unit.shape == (1, 3, SIZE, SIZE)
    assert_same_state(deit, before)


# ----------------------------------------------------------------------------- export, viz

def test_export_loads_into_timm_and_viz_draws_it(tmp_path, capsys):
    """A DeiT-S entry (224 px: timm builds the architecture the config names) exported, loaded
    by timm from the folder (local-dir:, as from the Hub) with the same logits, and drawn."""
    torch.manual_seed(4)
    net = archs.build(ARCH, 10).eval()
    entry = safetensors_entry(tmp_path, "deit-linf", net, ARCH, norm="linf", eps=4 / 255,
                              num_classes=10, preprocessing={"resize": 248, "crop": 224,
                                                             "interpolation": "bicubic"})
    man = write_manifest(tmp_path / "m.json", entry)
    out = tmp_path / "export"
    assert cli.main(["export", "deit-linf", str(out), "--manifest", str(man), "--quiet"]) == 0
    assert f'timm.create_model("local-dir:{out}", pretrained=True)' in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architecture"] == "deit_small_patch16_224" and cfg["num_classes"] == 10
    pre = cfg["pretrained_cfg"]
    assert pre["input_size"] == [3, 224, 224] and pre["crop_pct"] == round(224 / 248, 4)
    assert "pretrained_cfg mean/std" in cfg["normalization"]
    tm = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    data_cfg = timm.data.resolve_data_config({}, model=tm)
    mean = torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(data_cfg["std"]).view(1, 3, 1, 1)
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    ours = robust_zoo.load(str(out))
    with torch.no_grad():
        want = net((x - mean) / std)
        assert torch.allclose(tm((x - mean) / std), want, atol=1e-5)
        assert torch.equal(ours(x), want)
    assert data_cfg["interpolation"] == "bicubic" and data_cfg["crop_pct"] == pre["crop_pct"]
    card = (out / "README.md").read_text()
    assert "timm `deit_small_patch16_224` keys" in card and "resize 248 + center crop" in card
    images = image_tree(tmp_path / "imgs", {"": 1}, COLORS[:1], 40)
    png = tmp_path / "grid.png"
    capsys.readouterr()
    assert cli.main(["viz", str(out), "invert", "--images", str(images / "class0"), "--steps",
                     "1", "--no-progress", "--out", str(png)]) == 0
    assert png.stat().st_size > 0 and "mean representation distance" in capsys.readouterr().out


# ----------------------------------------------------------------------------- evaluate

def _entry(tmp_path: Path) -> Entry:
    metrics = [
        {"name": "clean_top1", "value": 50.0, "threat_model": "Linf"},
        {"name": "autoattack_top1", "value": 30.0, "norm": "linf", "eps": "4/255",
         "threat_model": "Linf"},
        {"name": "clean_top1", "value": 60.0, "threat_model": "corruptions"},
        {"name": "corruptions_acc", "value": 40.0, "threat_model": "corruptions"}]
    return Entry.from_dict({"name": "Tian2022Deeper_DeiT-S-like", "arch": ARCH, "norm": "linf",
                            "eps": 4 / 255, "num_classes": 3, "metrics": metrics,
                            "preprocessing": {"resize": SIZE, "crop": SIZE},
                            "files": [{"format": "safetensors", "path": "unused"}]}, tmp_path)


def _accuracy(model, folder: Path) -> float:
    """Top-1 (%) on a class-folder tree, each image resized to SIZE × SIZE: written out here,
    apart from evaluate's loaders."""
    from PIL import Image
    from torchvision.transforms.functional import resize, to_tensor

    correct = total = 0
    for label, cls in enumerate(sorted(p for p in folder.iterdir() if p.is_dir())):
        for f in sorted(cls.iterdir()):
            x = resize(to_tensor(Image.open(f).convert("RGB")), [SIZE, SIZE])
            with torch.no_grad():
                correct += int(model(x[None]).argmax(1).item() == label)
            total += 1
    return 100.0 * correct / total


def test_evaluate_reports_robustbench_fields_and_corruption_accuracy(deit, tmp_path):
    model = replace_head(copy.deepcopy(deit), len(COLORS))
    model.entry = _entry(tmp_path)
    val = image_tree(tmp_path / "val", {"": 3}, COLORS, 24)
    common = dict(workers=0, progress=False, batch_size=8)
    r = evaluate(model, val, steps=1, autoattack=False, **common)
    assert (r["threat_model"], r["n"], r["clean_acc"]) == ("Linf", 9, r["metrics"]["clean_top1"])
    assert r["autoattack_acc"] is None and r["external"] == r["metrics"]["pgd_top1"]
    assert r["robustbench"]["eps"] == "4/255" and r["robustbench"]["dataset"] == "imagenet"
    assert r["robustbench"]["claimed"] == {"clean_acc": 50.0, "autoattack_acc": 30.0}
    assert [(c["name"], c["claimed"]) for c in r["claims"]] == [("clean_top1", 50.0)]
    root = tmp_path / "data"
    for i, (corruption, severity) in enumerate([("gaussian_noise", 1), ("fog", 3)]):
        image_tree(root / "ImageNet-C" / corruption / str(severity), {"": 2}, COLORS, 24,
                   noise=80.0, seed=i + 1)
    r = evaluate(model, val, steps=0, corruptions=root, **common)
    c = r["corruptions"]
    want = [_accuracy(model, root / "ImageNet-C" / "gaussian_noise" / "1"),
            _accuracy(model, root / "ImageNet-C" / "fog" / "3")]
    assert c["per_corruption"] == {"gaussian_noise": {"1": want[0]}, "fog": {"3": want[1]}}
    assert r["corruptions_acc"] == c["corruptions_acc"] == pytest.approx(sum(want) / 2)
    assert (c["folders"], c["n"], c["complete"], len(c["missing"])) == (2, 12, False, 73)
    assert r["threat_model"] == "corruptions" and r["external"] is None
    assert {x["name"]: x["claimed"] for x in r["claims"]} == {"clean_top1": 60.0,
                                                               "corruptions_top1": 40.0}
    assert r["robustbench"]["claimed"] == {"clean_acc": 60.0, "corruptions_acc": 40.0}
    text = format_report(r)
    assert "2 ImageNet-C folders" in text and "corruptions_top1" in text
    with pytest.raises(robust_zoo.RobustZooError, match="ImageNet-C"):
        evaluate(model, val, steps=0, corruptions=tmp_path / "val", **common)


def test_claims_are_matched_by_name_threat_model_norm_and_eps():
    from types import SimpleNamespace

    from robust_zoo.evaluate import compare_claims

    entry = SimpleNamespace(metrics=[
        {"name": "autoattack_acc", "value": 40.0, "threat_model": "Linf"},   # RobustBench's
        {"name": "autoattack_top1", "value": 45.0, "norm": "l2", "eps": 3.0},
        {"name": "clean_top1", "value": 70.0}])
    rows = compare_claims(entry, {"autoattack_top1": 41.0, "clean_top1": 69.5}, norm="linf",
                          eps=4 / 255, n=5000, threat="Linf")
    assert [(r["name"], r["claimed"], r["ok"]) for r in rows] == [
        ("autoattack_top1", 40.0, True), ("clean_top1", 70.0, True)]
    rows = compare_claims(entry, {"autoattack_top1": 41.0}, norm="l2", eps=3.0, n=5000,
                          threat="L2")
    assert [(r["claimed"], r["ok"]) for r in rows] == [(45.0, False)]


def test_an_autoattack_claim_measured_with_another_version_is_not_comparable():
    """RobustBench's AutoAttack accuracies are AutoAttack standard's: measured with "fast" (a
    weaker attack: a higher accuracy) the row is neither ok nor DIFFERS and says why, and the
    many-model table shows it so."""
    from types import SimpleNamespace

    from robust_zoo.evaluate import compare_claims
    from robust_zoo.evaluate.array import format_table
    from robust_zoo.evaluate.run import claim_verdict

    entry = SimpleNamespace(metrics=[
        {"name": "autoattack_acc", "value": 40.0, "threat_model": "Linf"},
        {"name": "clean_top1", "value": 70.0}])
    measured = {"autoattack_top1": 52.0, "clean_top1": 69.5}
    kw = dict(norm="linf", eps=4 / 255, n=5000, threat="Linf")
    fast = compare_claims(entry, measured, autoattack="fast", **kw)
    assert [claim_verdict(r) for r in fast] == ["not comparable", "ok"]
    assert fast[0]["note"] == ("claimed with AutoAttack standard, measured with fast: "
                               "not comparable")
    standard = compare_claims(entry, measured, autoattack="standard", **kw)
    assert [claim_verdict(r) for r in standard] == ["DIFFERS", "ok"]
    row = {"model": "m", "n": 5000, "norm": "linf", "eps_display": "4/255",
           "metrics": {"clean_top1": 69.5, "pgd_top1": None, "autoattack_top1": 52.0},
           "claims": fast}
    table = format_table([row])
    assert "52.00 (40.00 not comparable)" in table and "ok, 1 not comparable" in table
