"""The optimizer and learning-rate schedule of every run, from a recipe's shared settings
(``recipe.OptimizerSettings`` / ``recipe.ScheduleSettings``, which ``Recipe`` and
``TransferConfig`` both are)."""
from __future__ import annotations

from typing import Iterable

import torch

from ..recipe import RecipeError


def build_optimizer(params: Iterable[torch.nn.Parameter], settings) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay on ``params`` (robustness applies weight decay to
    every parameter, BN and biases included)."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise RecipeError("Nothing to train: every parameter is frozen")
    if settings.optimizer not in (None, "sgd"):
        raise RecipeError(f"optimizer {settings.optimizer!r} is not supported; use 'sgd'")
    return torch.optim.SGD(params, lr=float(settings.lr), momentum=float(settings.momentum),
                           weight_decay=float(settings.weight_decay))


def build_scheduler(optimizer: torch.optim.Optimizer, settings):
    """Stepped once per epoch: ×lr_gamma every lr_step epochs, cosine to 0, or constant."""
    if settings.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(settings.lr_step),
                                               gamma=float(settings.lr_gamma))
    if settings.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(settings.epochs))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
