"""The model a user gets back: a torchvision network behind its input normalization.

Robust checkpoints are trained and attacked in pixel space: inputs in [0, 1], the ImageNet
mean/std applied inside the model (the convention of ``robustness`` and RobustBench), so that
an ε in the manifest means an ε on the image a user feeds in. ``RobustModel`` keeps that
convention and exposes the network as ``.model``; its state-dict keys (``normalize.mean``,
``normalize.std``, ``model.*``) are RobustBench's.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def unwrap(model: nn.Module) -> nn.Module:
    """The bare network inside ``model``: through ``RobustModel``, DDP / DataParallel and
    ``torch.compile``'s wrapper, in any nesting. The one place that knows the wrappers."""
    while True:
        if isinstance(model, RobustModel):
            model = model.model
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod          # torch.compile's OptimizedModule
        else:
            return model


def unwrap_parallel(model: nn.Module) -> nn.Module:
    """``model`` without its DDP / DataParallel wrapper (the normalizing wrapper kept): what an
    attack runs on, so that DDP's reducer never sees forwards that no backward follows."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, with mean/std as (1, C, 1, 1) buffers."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        fmt = lambda t: "(" + ", ".join(f"{v:.4g}"  # noqa: E731
                                        for v in t.flatten().tolist()) + ")"
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"


class RobustModel(nn.Module):
    """``model(normalize(x))`` for x in [0, 1]; ``.model`` is the bare torchvision network."""

    def __init__(self, model: nn.Module, arch: str, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, name: str | None = None):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        self.arch = arch
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    # timm-style conveniences, so a head swap reads the same for every architecture
    def get_classifier(self) -> nn.Module:
        from .archs import get_head

        return get_head(self.model, self.arch)

    def reset_classifier(self, num_classes: int, hidden: Sequence[int] = ()) -> None:
        from .archs import replace_head

        replace_head(self, num_classes, hidden=hidden, arch=self.arch)

    @property
    def num_classes(self) -> int:
        head = self.get_classifier()
        last = head[-1] if isinstance(head, nn.Sequential) else head
        return last.out_features if isinstance(last, nn.Linear) else 0

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}" + (f", name={self.name!r}" if self.name else "")
