"""Head swap, freezing and penultimate features for every zoo architecture.

``freeze(model, "fixed-feature")`` means what the phrase says: the network below the head is a
fixed function. Its parameters get no gradient *and* it stays in eval mode, so BatchNorm running
statistics do not drift and dropout in front of the head (VGG, MobileNet, MNASNet) is off, even
after ``model.train()``. That is also what makes cached features (``feature_cache``) exactly the
features the head sees when it is trained behind the network. The paper code's behaviour (BN
statistics updating because the whole model is in train mode) is ``freeze(..., pin_eval=False)``.
"""
from __future__ import annotations

import types

import torch
from torch import nn

from ..errors import UsageError
from ..models.archs import get_arch, list_archs
from ..models.features import head_input, model_arch
from ..models.robust_model import head_path, replace_head, unwrap

__all__ = ["replace_head", "freeze", "features", "frozen_modules", "parse_mode", "MODES"]

MODES = ("fixed-feature", "full", "layer1", "layer2", "layer3", "layer4")
_ALIASES = {"fixed": "fixed-feature", "fixed_feature": "fixed-feature", "linear": "fixed-feature",
            "fixed-feature": "fixed-feature", "full": "full", "full-network": "full",
            "finetune": "full", "-1": "full"}
_PIN_ATTR = "_rz_pinned_eval"


def parse_mode(mode: "str | int | None") -> str:
    """Canonical freeze mode: "fixed-feature", "full" or "layer1".."layer4".

    Integers follow the paper code's ``--freeze-level``: -1 is full fine-tuning, k in 1..4
    freezes everything up to and including ``layer{k}``.
    """
    if mode is None:
        return "full"
    key = str(mode).strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    if key in {"1", "2", "3", "4"}:
        return f"layer{key}"
    if key in {"layer1", "layer2", "layer3", "layer4"}:
        return key
    raise UsageError(f"Unknown freeze mode {mode!r}. Valid modes: {', '.join(MODES)} "
                     "(aliases: 'fixed', 'linear', -1 = 'full', 1..4 = 'layer1'..'layer4')")


def _check_freeze_level(net: nn.Module, arch: str | None, mode: str) -> None:
    """A freeze level exists for ResNet-family archs only (stem, then layer1..layer4)."""
    family = get_arch(arch).family if arch else (
        "resnet" if all(hasattr(net, f"layer{i}") for i in range(1, 5)) else "")
    if family != "resnet":
        resnets = [a for a in list_archs() if get_arch(a).family == "resnet"]
        what = f"a {family} arch" if family else "not a ResNet"
        raise UsageError(
            f"freeze level {mode!r} exists only for ResNet-family archs ({', '.join(resnets)}); "
            f"{arch or type(net).__name__} is {what}. Valid modes for it: 'fixed-feature', "
            "'full'")


def _own_parameters(net: nn.Module, head_path: str) -> list[nn.Parameter]:
    """Parameters held directly by ``net`` or by an ancestor of its head, outside any child
    ``_pinned_roots`` returns: a ViT's ``cls_token`` and ``pos_embed``, for instance."""
    out, module = [], net
    for part in head_path.split(".")[:-1] + [None]:
        out += list(module.parameters(recurse=False))
        if part is None:
            break
        module = module[int(part)] if part.isdigit() else getattr(module, part)
    return out


def _pinned_roots(net: nn.Module, head_path: str, mode: str) -> list[nn.Module]:
    """The largest subtrees of ``net`` that ``mode`` fixes (frozen weights, eval mode)."""
    if mode.startswith("layer"):
        roots, k = [], int(mode[-1])
        for name, child in net.named_children():
            roots.append(child)
            if name == f"layer{k}":
                return roots
        raise AssertionError("unreachable: checked by freeze()")
    # fixed-feature: everything that is neither the head nor one of its ancestors
    roots: list[nn.Module] = []
    parts = head_path.split(".")

    def walk(module: nn.Module, depth: int) -> None:
        for name, child in module.named_children():
            if name != parts[depth]:
                roots.append(child)
            elif depth + 1 < len(parts):
                walk(child, depth + 1)

    walk(net, 0)
    return roots


def _train_pinned(self: nn.Module, mode: bool = True) -> nn.Module:
    # Instance-level override: nn.Module.train on any ancestor calls child.train(mode), so a
    # pinned subtree ignores model.train() (also through DDP) and stays in eval mode.
    return nn.Module.train(self, False)


def _reassert_eval(module: nn.Module, args) -> None:
    # Forward pre-hook on the frozen model: catches direct `submodule.train()` or `.training = True`
    # on anything inside a pinned subtree before it could update BN statistics.
    for root in getattr(module, _PIN_ATTR, ()):
        for m in root.modules():
            if m.training:
                nn.Module.train(m, False)


def _unpin(model: nn.Module) -> None:
    # found by identity rather than through a handle, which a deepcopy would share
    for key in [k for k, h in model._forward_pre_hooks.items() if h is _reassert_eval]:
        del model._forward_pre_hooks[key]
    for root in getattr(model, _PIN_ATTR, ()):
        if "train" in root.__dict__:
            del root.__dict__["train"]
    setattr(model, _PIN_ATTR, ())


def freeze(model: nn.Module, mode: "str | int" = "fixed-feature", *, pin_eval: bool = True
           ) -> nn.Module:
    """Freeze ``model`` for transfer learning and return it.

    * ``"fixed-feature"``: only the classifier head (``replace_head``'s module, hidden layers
      included) trains; every other parameter has ``requires_grad=False``.
    * ``"full"``: every parameter trains.
    * ``"layer1"``..``"layer4"`` (or 1..4, the paper code's ``--freeze-level``; ResNet-family
      archs only): the stem and ``layer1``..``layer{k}`` are frozen, the rest trains.

    With ``pin_eval=True`` (default) the frozen part stays in eval mode whatever ``train()`` is
    called on: BatchNorm running statistics do not change and dropout is inactive. Calling
    ``freeze`` again replaces the previous setting. Works on ``RobustModel``, bare torchvision
    networks and DDP-wrapped models.
    """
    mode = parse_mode(mode)
    net = unwrap(model)
    arch = model_arch(model)
    if mode.startswith("layer"):
        _check_freeze_level(net, arch, mode)
    _unpin(model)
    for p in net.parameters():
        p.requires_grad_(True)
    if mode == "full":
        return model
    path = head_path(net, arch)
    roots = _pinned_roots(net, path, mode)
    for root in roots:
        for p in root.parameters():
            p.requires_grad_(False)
    if mode == "fixed-feature":
        for p in _own_parameters(net, path):
            p.requires_grad_(False)
    if pin_eval:
        for root in roots:
            root.train = types.MethodType(_train_pinned, root)
            nn.Module.train(root, False)
        setattr(model, _PIN_ATTR, tuple(roots))
        model.register_forward_pre_hook(_reassert_eval)
    return model


def frozen_modules(model: nn.Module) -> tuple[nn.Module, ...]:
    """The subtrees ``freeze`` pinned to eval mode (empty when none are)."""
    return tuple(getattr(model, _PIN_ATTR, ()))


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features ``[N, num_features]``: the input of the classifier head.

    Through ``RobustModel`` the input is normalized first (``x`` in [0, 1]); a bare network gets
    ``x`` as is. The network runs in whatever train/eval and grad mode it is in (call
    ``model.eval()`` and use ``torch.no_grad()`` for extraction) and stops at the head. With a
    hidden-layer head the features are still those of the backbone, in front of the first hidden
    layer. ``robust_zoo.models.features.head_input`` is the one implementation.
    """
    return head_input(model, x, stop_early=True)
