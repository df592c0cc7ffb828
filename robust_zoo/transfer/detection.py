"""Zoo ResNets as detection backbones: torchvision's ResNet-FPN, initialized from a zoo model.

    >>> from robust_zoo.detection import backbone, faster_rcnn
    >>> bb = backbone("resnet50_l2_eps3", trainable_layers=3)      # BackboneWithFPN
    >>> model = torchvision.models.detection.FasterRCNN(
    ...     bb, num_classes=91, image_mean=bb.image_mean, image_std=bb.image_std)
    >>> model = faster_rcnn("resnet50_l2_eps3", num_classes=91)    # the same, in one call

Normalization: the zoo weights expect images in [0, 1] normalized with the entry's mean/std
(ImageNet's for every zoo model). torchvision's detectors take [0, 1] images and normalize them
in ``GeneralizedRCNNTransform`` with ``image_mean``/``image_std``, which default to the same
ImageNet values; ``bb.image_mean``/``bb.image_std`` carry the entry's own values so a detector
built from them always matches the weights.

BatchNorm becomes ``FrozenBatchNorm2d`` with the zoo model's statistics (torchvision's choice
for detection, where batches are small); ``trainable_layers`` counts from ``layer4`` down, as in
``resnet_fpn_backbone`` (3: layer2-4 train, stem and layer1 frozen; 5: everything trains).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn

from ..errors import UsageError
from ..models.archs import IMAGENET_MEAN, IMAGENET_STD, build, get_arch, list_archs

__all__ = ["backbone", "faster_rcnn", "detection_archs"]


@functools.lru_cache(maxsize=1)
def detection_archs() -> tuple[str, ...]:
    """Zoo archs that are torchvision ResNets (what ``_resnet_fpn_extractor`` can wrap); the
    registry is fixed at import, so they are found once."""
    from torchvision.models.resnet import ResNet

    return tuple(a for a in list_archs() if get_arch(a).family == "resnet"
                 and isinstance(build(a, device="meta"), ResNet))


def backbone(name: str, trainable_layers: int = 3, pretrained: bool = True, manifest: Any = None,
             *, returned_layers: list[int] | None = None, extra_blocks: nn.Module | None = None,
             norm_layer: Callable[..., nn.Module] | None = None,
             progress: bool = True) -> nn.Module:
    """A ``BackboneWithFPN`` whose ResNet body holds zoo model ``name``'s weights.

    ``pretrained=False`` builds the architecture (a zoo name or an arch name such as
    ``"resnet18"``) with random weights and touches no network or cache. Only ResNet-family
    archs have an FPN extractor in torchvision (``detection_archs()``: resnet18, resnet50,
    wide_resnet50_2, wide_resnet50_4, resnext50_32x4d).
    """
    from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
    from torchvision.ops import FrozenBatchNorm2d

    from ..hub.factory import arch_of

    arch = get_arch(arch_of(name, manifest=manifest, pretrained=pretrained))
    supported = detection_archs()
    if arch.name not in supported:
        raise UsageError(f"{name!r} is a {arch.name} ({arch.family or 'non-ResNet'} family); "
                         "detection backbones (ResNet-FPN) exist only for torchvision ResNet "
                         f"archs: {', '.join(supported)}")
    if not 0 <= trainable_layers <= 5:
        raise UsageError(
            f"trainable_layers must be in 0..5 (5: every layer), got {trainable_layers}")
    norm_layer = norm_layer or FrozenBatchNorm2d
    net = arch.builder(weights=None, num_classes=1000, norm_layer=norm_layer)
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if pretrained:
        from ..hub.factory import load

        zoo = load(name, manifest=manifest, pretrained=True, progress=progress)
        sd = {k: v for k, v in zoo.model.state_dict().items() if not k.startswith("fc.")}
        missing, unexpected = net.load_state_dict(sd, strict=False)
        if unexpected or any(not k.startswith("fc.") for k in missing):
            raise RuntimeError(f"{name}: weights do not fit {arch.name} "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        mean = tuple(zoo.normalize.mean.flatten().tolist())
        std = tuple(zoo.normalize.std.flatten().tolist())
        del zoo
    bb = _resnet_fpn_extractor(net, trainable_layers, returned_layers, extra_blocks)
    bb.image_mean, bb.image_std = list(mean), list(std)
    bb.arch, bb.source = arch.name, name if pretrained else None
    return bb


def faster_rcnn(name: str, num_classes: int, trainable_layers: int = 3, pretrained: bool = True,
                manifest: Any = None, **kwargs) -> nn.Module:
    """``torchvision.models.detection.FasterRCNN`` on ``backbone(name, ...)``, normalizing
    inputs the way the zoo weights expect (``kwargs`` go to FasterRCNN)."""
    from torchvision.models.detection import FasterRCNN

    bb = backbone(name, trainable_layers, pretrained, manifest)
    kwargs.setdefault("image_mean", bb.image_mean)
    kwargs.setdefault("image_std", bb.image_std)
    return FasterRCNN(bb, num_classes=num_classes, **kwargs)

