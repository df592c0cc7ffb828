"""RaResNet and RaWRN of Peng et al. 2023, "Robust Principles: Architectural Design Principles
for Adversarially Robust CNNs" (arXiv:2308.16258).

Reproduces the ImageNet ``ConfigurableModel`` of ``poloclub/robust-principles``
(``robustarch/models/model.py`` with the ``RaResNet50`` / ``RaResNet101`` / ``RaWRN101_2`` settings
of its ``MODEL.mk``), which RobustBench 1.1.1 ships as ``robustarch_wide_resnet.get_model
("ra_wrn101_2")``: a 7x7 stride-2 stem, four stages of SE bottleneck blocks (1x1 conv without
norm, grouped 3x3 conv, squeeze-excitation, 1x1 conv) with SiLU, global pooling and ``fc``. The
module names are the upstream ones (``stem.stem.stem.0``, ``stages.stage1.stage1-block0.F.a.0``,
``...proj.0``), without the normalization layer the upstream model holds (``normalization.mean``
/ ``.std``): the zoo normalizes inside ``RobustModel``.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops.misc import Conv2dNormActivation, SqueezeExcitation

# name -> (depths, stage widths, group widths)
CONFIGS = {
    "ra_resnet50": ((5, 8, 13, 1), (288, 576, 1120, 2160), (36, 72, 140, 270)),
    "ra_resnet101": ((7, 11, 18, 1), (336, 672, 1328, 2624), (42, 84, 166, 328)),
    "ra_wrn101_2": ((7, 11, 18, 1), (512, 1024, 2016, 4032), (64, 128, 252, 504)),
}
STEM_WIDTH = 96


def _cna(c_in: int, c_out: int, k: int, *, stride: int = 1, groups: int = 1,
         norm: type[nn.Module] | None = nn.BatchNorm2d, act: bool = True) -> nn.Module:
    return Conv2dNormActivation(c_in, c_out, k, stride, groups=groups, norm_layer=norm,
                                activation_layer=nn.SiLU if act else None, inplace=None)


class RaBlock(nn.Module):
    """``x + F(x)`` (a projected ``x`` when the shape changes), then SiLU."""

    def __init__(self, w_in: int, w_out: int, stride: int, group_width: int):
        super().__init__()
        w_b = round(w_out * 0.25)
        self.proj = (_cna(w_in, w_out, 1, stride=stride, act=False)
                     if w_in != w_out or stride != 1 else None)
        self.F = nn.Sequential(OrderedDict(
            a=_cna(w_in, w_b, 1, norm=nn.Identity),
            b=_cna(w_b, w_b, 3, stride=stride, groups=w_b // group_width),
            se=SqueezeExcitation(w_b, round(0.25 * w_in), activation=nn.ReLU),
            c=_cna(w_b, w_out, 1, act=False)))
        self.last_activation = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.proj is None else self.proj(x)
        return self.last_activation(skip + self.F(x))


class _Stem(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.stem = nn.Sequential(OrderedDict(stem=Conv2dNormActivation(
            3, width, 7, 2, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


class RaNet(nn.Module):
    """The upstream ``ConfigurableModel`` with the settings the three ImageNet models share (SE
    ratio 0.25, SiLU, bottleneck 0.25, stride 2 in every stage), without normalization."""

    def __init__(self, depths: tuple[int, ...], widths: tuple[int, ...],
                 groups: tuple[int, ...], num_classes: int = 1000):
        super().__init__()
        self.stem = _Stem(STEM_WIDTH)
        stages, w_in = [], STEM_WIDTH
        for i, (depth, w_out, gw) in enumerate(zip(depths, widths, groups), start=1):
            blocks = OrderedDict((f"stage{i}-block{j}", RaBlock(w_in if j == 0 else w_out, w_out,
                                                                 2 if j == 0 else 1, gw))
                                 for j in range(depth))
            stages.append((f"stage{i}", nn.Sequential(blocks)))
            w_in = w_out
        self.stages = nn.Sequential(OrderedDict(stages))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(w_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.stages(self.stem(x)))
        return self.fc(x.flatten(1))


def ranet(name: str, *, num_classes: int = 1000) -> RaNet:
    """RaResNet-50/101 or RaWRN-101-2 (``name`` a key of ``CONFIGS``), random weights."""
    return RaNet(*CONFIGS[name], num_classes=num_classes)
