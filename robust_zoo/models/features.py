"""Penultimate features: the input of a model's classifier head, for every architecture.

The one place that hooks a head: a forward pre-hook on the module ``get_head`` finds records the
head's input and lives only for the duration of one forward. Transfer learning reads features
with it (``robust_zoo.transfer.features``, stopping the forward at the head, whose output is
not needed), and the representation tools attack through it (``robust_zoo.representations``:
``Penultimate`` as a module whose output PGD follows).
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UsageError
from .robust_model import get_head, unwrap

__all__ = ["Penultimate", "head_input", "model_arch"]


class _HeadReached(Exception):
    """Raised by the hook to stop a forward at the head (its output is not needed)."""


def model_arch(model: nn.Module) -> str | None:
    """The registry name of ``model``'s architecture (``RobustModel.arch``, or an ``arch``
    attribute of the bare network), None when neither says."""
    return getattr(model, "arch", None) or getattr(unwrap(model), "arch", None)


def head_input(model: nn.Module, x: torch.Tensor, *, head: nn.Module | None = None,
               stop_early: bool = True) -> torch.Tensor:
    """The input of ``model``'s classifier head for ``x``, flattened to ``[N, num_features]``.

    ``head``: the head module (default: ``get_head(model)``). ``stop_early``: end the forward
    as soon as the head is reached (its output is not computed); False runs the whole forward.
    The model runs in whatever train/eval and grad mode it is in; through ``RobustModel`` the
    input is normalized first. With a hidden-layer head the features are those in front of
    its first layer.
    """
    head = get_head(model, model_arch(model)) if head is None else head
    captured: list[torch.Tensor] = []

    def hook(module: nn.Module, args: tuple) -> None:
        captured.append(args[0])
        if stop_early:
            raise _HeadReached

    handle = head.register_forward_pre_hook(hook)
    try:
        model(x)
    except _HeadReached:
        pass
    finally:
        handle.remove()
    if not captured:
        raise UsageError(f"the classifier head of {type(unwrap(model)).__name__} never ran in "
                         "its forward, so its input (the penultimate features) is unknown: pass "
                         "a model whose forward ends in the head that robust_zoo.models.get_head "
                         "finds")
    return captured[-1].flatten(1)


class Penultimate(nn.Module):
    """``model``'s penultimate representation as a module: ``Penultimate(model)(x)`` is
    ``head_input(model, x)``. The head is found once; ``model`` is a submodule, so mode and
    ``requires_grad`` changes reach it. ``stop_early=False`` (default) runs the whole forward."""

    def __init__(self, model: nn.Module, *, stop_early: bool = False):
        super().__init__()
        self.model = model
        self.head = get_head(model, model_arch(model))
        self.stop_early = bool(stop_early)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return head_input(self.model, x, head=self.head, stop_early=self.stop_early)
