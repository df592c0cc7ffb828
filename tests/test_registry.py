"""The registry walked the way torchvision's test_models.py walks its models: every manifest
name builds, every detection arch builds a backbone, every freeze level on every ResNet,
training with both norms, and the input convention of the upstream code."""
from __future__ import annotations

import pytest
import torch

import robust_zoo
from robust_zoo.models import archs
from robust_zoo.formats.upstream import from_robustness, to_robustness
from robust_zoo.hub.manifest import load_manifest
from robust_zoo.models import Normalize, RobustModel, get_head, replace_head

from zoo import random_net

NAMES = load_manifest().names()
RESNETS = [a for a in archs.list_archs(include_extra=True) if archs.get_arch(a).family == "resnet"]


@pytest.mark.parametrize("name", NAMES)
def test_every_manifest_name_builds_on_the_meta_device_without_network(name, no_fetch):
    entry = robust_zoo.get_entry(name)
    with torch.device("meta"):
        model = robust_zoo.load(name, pretrained=False)
    assert isinstance(model, RobustModel) and model.arch == entry.arch and not model.training
    assert next(model.parameters()).device.type == "meta"
    assert get_head(model).out_features == entry.num_classes
    assert sum(p.numel() for p in model.model.parameters()) == archs.get_arch(entry.arch).num_params
    with pytest.raises(AssertionError, match="was fetched"):     # the guard sees a fetch
        robust_zoo.load(name)


@pytest.mark.parametrize("name", archs.list_archs(include_extra=True))
def test_every_architecture_builds_on_meta_with_the_registry_facts(name):
    """The registry walk: every architecture builds without network with 10 classes, its head
    is the Linear at ``head`` with ``num_features`` inputs and 10 outputs, its parameter count is
    the registry's (``num_params`` counts a 1000-class head), and heads swap."""
    a = archs.get_arch(name)
    net = archs.build(name, 10, device="meta")
    assert net.state_dict() and all(t.is_meta for t in net.state_dict().values())
    head = get_head(net, name)
    assert isinstance(head, torch.nn.Linear) and head.in_features == a.num_features
    assert head.out_features == 10
    assert sum(p.numel() for p in net.parameters()) == a.num_params - 990 * (a.num_features + 1)
    replace_head(net, 5, hidden=(16,), arch=name)
    new = get_head(net, name)
    assert isinstance(new, torch.nn.Sequential) and new[-1].out_features == 5


@pytest.mark.parametrize("arch", RESNETS)
@pytest.mark.parametrize("mode", ["fixed-feature", "layer1", "layer2", "layer3", "layer4", "full"])
def test_every_freeze_level_on_every_resnet(arch, mode):
    from robust_zoo.transfer import freeze, replace_head

    with torch.device("meta"):
        model = RobustModel(archs.build(arch), arch)
    replace_head(model, 3)
    freeze(model, mode)
    trainable = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    top = [n for n, _ in model.model.named_children() if any(True for _ in
                                                              getattr(model.model, n).parameters())]
    if mode == "full":
        assert trainable == set(top)
    elif mode == "fixed-feature":
        assert trainable == {"fc"}
    else:
        k = int(mode[-1])
        frozen = set(top[:top.index(f"layer{k}") + 1])
        assert trainable == set(top) - frozen and "fc" in trainable


def test_every_detection_arch_builds_a_backbone():
    from robust_zoo.transfer.detection import backbone, detection_archs

    for arch in detection_archs():
        with torch.device("meta"):         # the structure is the point, not the weights
            bb = backbone(arch, pretrained=False)
        assert bb.arch == arch and bb.out_channels == 256


@pytest.mark.parametrize("wrapped", [True, False])
def test_mnasnet_files_in_either_layout_convert(wrapped):
    net = random_net("mnasnet1_0")
    ck = to_robustness(net.state_dict(), "mnasnet1_0", wrapped=wrapped)
    conv = from_robustness(ck, "mnasnet1_0")
    assert conv.wrapped is wrapped
    assert all(torch.equal(conv.state_dict[k], v) for k, v in net.state_dict().items())


def test_mnasnet_is_written_in_the_paper_codes_dummymodel_layout():
    ck = to_robustness(random_net("mnasnet1_0").state_dict(), "mnasnet1_0")
    assert any(k.startswith("module.model.model.") for k in ck["model"])


def test_normalize_clamps_to_the_unit_range_like_input_normalize():
    norm = Normalize()
    x = torch.tensor([-0.5, 0.3, 1.7]).view(1, 3, 1, 1)
    ref = (x.clamp(0, 1) - norm.mean) / norm.std          # robustness' InputNormalize
    assert torch.allclose(norm(x), ref, rtol=0, atol=1e-6)
    # in range the forward is exactly (x - mean) / std, and gradients reach saturated pixels
    inside = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1).requires_grad_(True)
    assert torch.equal(norm(inside), (inside - norm.mean) / norm.std)
    norm(inside).sum().backward()
    assert torch.equal(inside.grad, (1 / norm.std).expand_as(inside))


@pytest.mark.parametrize("norm, eps", [("l2", 0.5), ("linf", 8 / 255)])
def test_training_with_both_norms(tmp_path, norm, eps):
    from robust_zoo.recipe import Recipe
    from robust_zoo.train import RunOptions, train

    recipe = Recipe(arch="mini_resnet", norm=norm, eps=eps, dataset="digits:0-1", num_classes=2,
                    input_size=16, epochs=1, batch_size=32, lr=0.05, augmentation="none",
                    attack_steps=2, lr_schedule="constant")
    res = train(recipe, RunOptions(out=tmp_path / norm, progress=False, final_eval_steps=2,
                                   eval_every=0, final_eval_limit=40))
    (m,) = [m for m in res.entry["metrics"] if m["name"] == "pgd_top1"]
    assert m["norm"] == norm and m["eps"] == pytest.approx(eps)
    assert res.final["metrics"]["pgd_top1"] <= res.final["metrics"]["clean_top1"]
