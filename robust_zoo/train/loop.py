"""Recipe checks, one training step, and the optimizer, LR schedule and autocast around it.

The robustness recipe: the loss is cross-entropy on the adversarial examples only; the attack
(PGD from ``robust_zoo.attacks``, input-only gradients) runs with BN in eval mode when
``recipe.bn_eval_during_attack``, on the un-wrapped model so DDP never sees its forwards.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .. import archs
from ..attacks import pgd
from ..data import AUGMENTATIONS, dataset_kind
from ..recipe import Recipe

OPTIMIZERS = ("sgd",)
SCHEDULES = ("step", "cosine", "constant")
PRECISIONS = ("fp32", "bf16")


class RecipeError(ValueError):
    """A recipe that cannot be trained as given."""


def check_recipe(recipe: Recipe) -> None:
    """Reject recipes the trainer cannot run, saying which field and what is valid."""
    archs.get_arch(recipe.arch)
    dataset_kind(recipe.dataset)
    needed = ["epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
              "lr_schedule", "augmentation", "precision", "seed", "use_best", "random_start",
              "bn_eval_during_attack", "label_smoothing"]
    if recipe.lr_schedule == "step":
        needed += ["lr_step", "lr_gamma"]
    if recipe.eps > 0:
        needed.append("attack_steps")
    missing = [f for f in needed if getattr(recipe, f) is None]
    if missing:
        flags = " ".join(f"--{f.replace('_', '-')} VALUE" for f in missing)
        raise RecipeError(f"Recipe fields {', '.join(missing)} have no value (unknown); give "
                          f"them on the command line: {flags}")
    if recipe.eps > 0 and int(recipe.attack_steps) < 1:
        raise RecipeError(f"eps={recipe.eps:g} > 0 needs attack_steps >= 1 (got "
                          f"{recipe.attack_steps}); for standard training pass --eps 0")
    if recipe.optimizer not in OPTIMIZERS:
        raise RecipeError(f"optimizer {recipe.optimizer!r} is not supported; use one of "
                          f"{OPTIMIZERS}")
    if recipe.lr_schedule not in SCHEDULES:
        raise RecipeError(f"lr_schedule {recipe.lr_schedule!r} is not supported; use one of "
                          f"{SCHEDULES}")
    if recipe.precision == "fp16":
        raise RecipeError("precision 'fp16' is not supported: use 'bf16' (same speed on "
                          "recent GPUs, no loss scaling needed) or 'fp32'")
    if recipe.precision not in PRECISIONS:
        raise RecipeError(f"precision {recipe.precision!r}: use one of {PRECISIONS}")
    if recipe.augmentation not in AUGMENTATIONS:
        raise RecipeError(f"augmentation {recipe.augmentation!r}: use one of {AUGMENTATIONS}")
    for f in ("lr", "momentum", "weight_decay", "label_smoothing"):
        if float(getattr(recipe, f)) < 0:
            raise RecipeError(f"{f} must be >= 0, got {getattr(recipe, f)}")
    if recipe.attack_step_size is not None and not float(recipe.attack_step_size) > 0:
        raise RecipeError(f"attack_step_size must be > 0 (or unset for 2.5·eps/steps), got "
                          f"{recipe.attack_step_size}")
    if int(recipe.input_size) < 8 or int(recipe.num_classes) < 1:
        raise RecipeError(f"input_size must be >= 8 and num_classes >= 1, got "
                          f"{recipe.input_size} and {recipe.num_classes}")


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def adversarial_examples(recipe: Recipe, model: nn.Module, x: torch.Tensor,
                         y: torch.Tensor) -> torch.Tensor:
    """The training attack of ``recipe`` at (x, y); ``x`` itself for standard training."""
    if not recipe.adversarial:
        return x
    return pgd(model, x, y, norm=recipe.norm, eps=recipe.eps, steps=int(recipe.attack_steps),
               step_size=recipe.step_size, random_start=bool(recipe.random_start),
               keep_best=bool(recipe.use_best), bn_eval=bool(recipe.bn_eval_during_attack))


def train_step(recipe: Recipe, model: nn.Module, attack_model: nn.Module,
               optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, *,
               precision: str = "fp32") -> tuple[torch.Tensor, torch.Tensor]:
    """Attack, forward, backward, update. Returns (mean loss, #correct on the trained inputs)
    as device tensors, so the caller decides when to synchronize."""
    with autocast(x.device, precision):
        x_in = adversarial_examples(recipe, attack_model, x, y)
        logits = model(x_in)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=float(recipe.label_smoothing or 0.0))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


@torch.no_grad()
def clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  precision: str) -> torch.Tensor:
    """#correct on clean inputs, in eval mode (running BN statistics are not touched)."""
    was = model.training
    model.eval()
    try:
        with autocast(x.device, precision):
            return (model(x).argmax(1) == y).sum()
    finally:
        model.train(was)


def build_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    # robustness applies weight decay to every parameter, BN and biases included
    return torch.optim.SGD(model.parameters(), lr=float(recipe.lr), momentum=float(recipe.momentum),
                           weight_decay=float(recipe.weight_decay))


def build_scheduler(recipe: Recipe, optimizer: torch.optim.Optimizer):
    """Stepped once per epoch: ×lr_gamma every lr_step epochs, cosine to 0, or constant."""
    if recipe.lr_schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(recipe.lr_step),
                                               gamma=float(recipe.lr_gamma))
    if recipe.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(recipe.epochs))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)
