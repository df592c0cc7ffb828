"""The convolutional stems of Singh et al. 2023, "Revisiting Adversarial Training for ImageNet"
(arXiv:2303.01870): timm's ConvNeXt and ViT with the patchify stem replaced by a small stack of
3x3 convolutions.

Reproduces RobustBench 1.1.1's ``model_zoo/architectures/convstem_models.py`` (``ConvBlock``,
``ConvBlock1``, ``ConvBlock3``, the channels-first ``LayerNorm`` and ``get_convstem_models``) with
the same module names, so its checkpoints' keys (``stem.stem.0.weight``,
``patch_embed.proj.stem.0.weight``, ...) load as they are, and the same arithmetic.
"""
from __future__ import annotations

import torch
from torch import nn


class ChannelsFirstLayerNorm(nn.Module):
    """LayerNorm over the channels of an NCHW tensor, computed as ConvNeXt's reference code does
    (mean, biased variance, ``(x - u) / sqrt(s + eps)``, then the affine map)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


def _conv_ln_gelu(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1),
            ChannelsFirstLayerNorm(c_out), nn.GELU()]


class ConvStem(nn.Module):
    """``self.stem``: conv 3x3 / LayerNorm / GELU groups with the given widths and strides, and
    optionally a final 1x1 convolution to ``out`` channels (the ViT patch embedding)."""

    def __init__(self, widths: list[int], strides: list[int], out: int | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out, s in zip([3] + widths[:-1], widths, strides):
            layers += _conv_ln_gelu(c_in, c_out, s)
        if out is not None:
            layers.append(nn.Conv2d(widths[-1], out, kernel_size=1))
        self.stem = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stem(x)


# RobustBench's stems by model: ConvBlock1(48) for ConvNeXt-T/S, ConvBlock3(64 / 96) for
# ConvNeXt-B/L, ConvBlock(48, end_siz=8 / 16) for ViT-S/B (four stride-2 convs, then 1x1).
def convnext_stem(planes: int, three: bool) -> ConvStem:
    if three:
        return ConvStem([planes, planes * 3 // 2, planes * 2], [2, 2, 1])
    return ConvStem([planes, planes * 2], [2, 2])


def vit_stem(embed_dim: int) -> ConvStem:
    return ConvStem([48, 96, 192, 384], [2, 2, 2, 2], out=embed_dim)


_CONVNEXT = {"tiny": ("convnext_tiny", 48, False), "small": ("convnext_small", 48, False),
             "base": ("convnext_base", 64, True), "large": ("convnext_large", 96, True)}
_VIT = {"small": ("deit_small_patch16_224", 384), "base": ("vit_base_patch16_224", 768)}


def convnext_convstem(size: str, **kwargs) -> nn.Module:
    """timm's ``convnext_{size}`` with Singh et al.'s stem (random weights, no network)."""
    import timm

    name, planes, three = _CONVNEXT[size]
    model = timm.create_model(name, pretrained=False, **kwargs)
    model.stem = convnext_stem(planes, three)
    return model


def vit_convstem(size: str, **kwargs) -> nn.Module:
    """timm's ViT-S (DeiT-S config) / ViT-B with Singh et al.'s convolutional patch embedding."""
    import timm

    name, dim = _VIT[size]
    model = timm.create_model(name, pretrained=False, **kwargs)
    model.patch_embed.proj = vit_stem(dim)
    return model
