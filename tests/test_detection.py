"""Zoo ResNets as Faster R-CNN backbones: weights copied, normalization matched, training works."""
from __future__ import annotations


import pytest
import torch

from robust_zoo.transfer.detection import backbone, detection_archs, faster_rcnn

from zoo import random_net, safetensors_entry, write_manifest


def _manifest(tmp_path):
    # non-trivial BN statistics: a copy that skips buffers shows
    net = random_net("resnet18", seed=3)
    entry = safetensors_entry(tmp_path, "resnet18_l2_eps3", net, "resnet18")
    return write_manifest(tmp_path / "manifest.json", entry), net.state_dict()


def _train_step(model):
    model.train()
    images = [torch.rand(3, 100, 120)]
    targets = [{"boxes": torch.tensor([[10.0, 20.0, 60.0, 80.0]]), "labels": torch.tensor([1])}]
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.05).step()
    return {n: not torch.equal(before[n], p) for n, p in model.named_parameters()}


def test_random_weight_faster_rcnn_trains_only_unfrozen_layers(no_fetch):
    from torchvision.models.detection import FasterRCNN

    bb = backbone("resnet18", trainable_layers=3, pretrained=False)
    assert bb.out_channels == 256
    model = FasterRCNN(bb, num_classes=3, min_size=96, max_size=128,
                       image_mean=bb.image_mean, image_std=bb.image_std)
    changed = _train_step(model)
    body = {n: c for n, c in changed.items() if n.startswith("backbone.body.")}
    assert not any(c for n, c in body.items() if n.startswith(("backbone.body.conv1",
                                                               "backbone.body.layer1")))
    assert any(c for n, c in body.items() if n.startswith("backbone.body.layer4"))
    assert any(c for n, c in changed.items() if n.startswith("backbone.fpn"))
    assert all(not p.requires_grad for n, p in model.named_parameters()
               if n.startswith(("backbone.body.conv1", "backbone.body.layer1")))


def test_backbone_copies_zoo_weights_and_normalization(tmp_path):
    man, sd = _manifest(tmp_path)
    model = faster_rcnn("resnet18_l2_eps3", num_classes=3, trainable_layers=2, manifest=man,
                        min_size=96, max_size=128)
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, sd["conv1.weight"])
    assert torch.equal(body.layer3[1].conv2.weight, sd["layer3.1.conv2.weight"])
    assert torch.equal(body.layer1[0].bn1.running_mean, sd["layer1.0.bn1.running_mean"])
    assert torch.equal(body.layer1[0].bn1.running_var, sd["layer1.0.bn1.running_var"])
    # GeneralizedRCNNTransform normalizes with the mean/std the zoo weights expect
    assert model.transform.image_mean == pytest.approx([0.485, 0.456, 0.406])
    assert model.transform.image_std == pytest.approx([0.229, 0.224, 0.225])
    changed = _train_step(model)
    assert not changed["backbone.body.layer2.0.conv1.weight"]      # trainable_layers=2
    assert changed["backbone.body.layer3.0.conv1.weight"]
    assert torch.equal(body.conv1.weight, sd["conv1.weight"])


def test_non_resnet_and_bad_arguments_are_clear_errors():
    assert {"resnet18", "resnet50", "wide_resnet50_2", "wide_resnet50_4",
            "resnext50_32x4d"} == set(detection_archs())
    with pytest.raises(ValueError, match="only for torchvision ResNet archs: resnet18"):
        backbone("mobilenet_v2", pretrained=False)
    with pytest.raises(ValueError, match="trainable_layers"):
        backbone("resnet18", trainable_layers=7, pretrained=False)
    with pytest.raises(ValueError, match="--pretrained false|pretrained=False"):
        backbone("resnet18")
