"""MeanSparse of Amini et al. 2024, "MeanSparse: Post-Training Robustness Enhancement Through
Mean-Centered Feature Sparsification" (arXiv:2406.05927): a fixed per-channel filter that
replaces features within ``threshold`` standard deviations of their mean by the mean.

Reproduces RobustBench 1.1.1's layers and placements: ``MeanSparse_imagenet`` inserted into
timm's ConvNeXt-L by ``sparsified_model.add_custom_layer_imagenet`` (after each block's
``drop_path``, before each MLP's GELU), and the Swin-L of ``Meansparse_swin_L.py`` (after the
attention and the MLP residual of every block, after ``fc1`` and ``fc2`` of every MLP). Same
buffer names, so RobustBench's checkpoints load as they are. Inference only: the statistics are
the checkpoint's (RobustBench's ``flag_update_statistics`` calibration pass is not reproduced).
"""
from __future__ import annotations

import functools

import torch
from torch import nn


class MeanSparse(nn.Module):
    """``where(|x - mean| < threshold * std, mean, x)`` per channel; the identity when
    ``threshold`` is 0. Channels are dim 1 of an NCHW tensor of matching width, else the last.
    ``convnext=True`` adds the two unused buffers of the ConvNeXt variant (``momentum``,
    ``epsilon``) so its checkpoints' keys match."""

    def __init__(self, channels: int, *, convnext: bool = False):
        super().__init__()
        if convnext:
            self.register_buffer("momentum", torch.tensor(0.1))
            self.register_buffer("epsilon", torch.tensor(1.0e-10))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.zeros(channels))
        self.register_buffer("threshold", torch.tensor(0.0))
        self.register_buffer("flag_update_statistics", torch.tensor(0))
        self.register_buffer("batch_num", torch.tensor(0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.running_mean.shape[0]
        shape = (1, c, 1, 1) if x.dim() == 4 and x.shape[1] == c else (1,) * (x.dim() - 1) + (c,)
        mean = self.running_mean.view(shape)
        crop = self.threshold * torch.sqrt(self.running_var).view(shape)
        # threshold 0 gives crop 0 and so x itself, as the reference's explicit branch does
        return torch.where((x - mean).abs() < crop, mean.expand_as(x), x)


def convnext_large_meansparse(**kwargs) -> nn.Module:
    """timm's ``convnext_large`` with a MeanSparse after every block's ``drop_path`` and before
    every MLP activation (keys ``...drop_path.1.*`` and ``...mlp.act.0.*``)."""
    import timm

    model = timm.create_model("convnext_large", pretrained=False, **kwargs)
    for stage in model.stages:
        for block in stage.blocks:
            dim = block.norm.normalized_shape[0]
            block.drop_path = nn.Sequential(block.drop_path, MeanSparse(dim, convnext=True))
            block.mlp.act = nn.Sequential(MeanSparse(block.mlp.fc1.out_features, convnext=True),
                                          block.mlp.act)
    return model


class _Forwards:
    """Forwards of timm's ``SwinTransformerBlock`` and ``Mlp`` with MeanSparse where
    ``Meansparse_swin_L.py`` has it; ``_swin_classes`` makes subclasses of timm's with them."""

    def block(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x + self.drop_path1(self._attn(self.norm1(x)))
        x = self.meansparse1(x.reshape(b, -1, c))
        x = self.meansparse2(x + self.drop_path2(self.mlp(self.norm2(x))))
        return x.reshape(b, h, w, c)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.meansparse1(self.fc1(x))))
        return self.drop2(self.meansparse2(self.fc2(self.norm(x))))


@functools.cache
def _swin_classes() -> tuple[type, type]:
    from timm.layers import Mlp
    from timm.models.swin_transformer import SwinTransformerBlock

    return (type("MeanSparseSwinTransformerBlock", (SwinTransformerBlock,),
                 {"forward": _Forwards.block}),
            type("MeanSparseMlp", (Mlp,), {"forward": _Forwards.mlp}))


def swin_large_meansparse(**kwargs) -> nn.Module:
    """timm's ``swin_large_patch4_window7_224`` with MeanSparse layers where RobustBench's
    ``Meansparse_swin_L.py`` has them (``blocks.N.meansparse1/2``, ``mlp.meansparse1/2``)."""
    import timm

    block_cls, mlp_cls = _swin_classes()
    model = timm.create_model("swin_large_patch4_window7_224", pretrained=False, **kwargs)
    for block in (m for m in model.modules() if isinstance(m, block_cls.__base__)):
        block.__class__, block.mlp.__class__ = block_cls, mlp_cls
        block.meansparse1, block.meansparse2 = MeanSparse(block.dim), MeanSparse(block.dim)
        block.mlp.meansparse1 = MeanSparse(block.mlp.fc1.out_features)
        block.mlp.meansparse2 = MeanSparse(block.mlp.fc2.out_features)
    return model
