"""The model a user gets back: a network (torchvision, timm or this package's) behind its input
normalization.

Robust checkpoints are trained and attacked in pixel space: inputs in [0, 1], the ImageNet
mean/std applied inside the model (the convention of ``robustness`` and RobustBench), so that
an ε in the manifest means an ε on the image a user feeds in. ``RobustModel`` keeps that
convention and exposes the network as ``.model``; its state-dict keys (``normalize.mean``,
``normalize.std``, ``model.*``) are RobustBench's.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from .archs import IMAGENET_MEAN, IMAGENET_STD, Arch, get_arch, list_archs, resolve_path

__all__ = ["RobustModel", "Normalize", "eval_mode", "frozen_parameters", "unwrap",
           "unwrap_parallel", "get_head", "replace_head", "head_path", "input_size",
           "IMAGENET_MEAN", "IMAGENET_STD"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """``model`` in eval mode (BN running statistics, no dropout, no statistics updates), every
    submodule's own flag restored afterwards, exception or not: mixed modes (a frozen, pinned
    backbone under a training head) come back as found."""
    saved = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in saved:
            m.training = training


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """``requires_grad`` off on every parameter of ``model``, each one's flag restored
    afterwards, exception or not. Under it a backward computes input gradients only: eager
    autograd already skips weight gradients nobody asked for, but a ``torch.compile``d forward
    carries one fused backward that computes the gradient of every input that requires one."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


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
    """``(clamp(x, 0, 1) - mean) / std`` per channel, with mean/std as (1, C, 1, 1) buffers.

    The forward is the ``robustness`` library's ``InputNormalize``: an input outside [0, 1]
    gives the logits the upstream model gives it. The clamp is straight-through for gradients:
    ``torch.clamp`` would zero the input gradient of every pixel at exactly 0 or 1 (black and
    white pixels, common in digits and in attacked images), which stalls sign-gradient attacks
    on them; straight through, gradients are those of the model on [0, 1], as without a clamp.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + (x.clamp(0.0, 1.0) - x).detach()       # clamp forward, identity backward
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        fmt = lambda t: "(" + ", ".join(f"{v:.4g}"  # noqa: E731
                                        for v in t.flatten().tolist()) + ")"
        return f"mean={fmt(self.mean)}, std={fmt(self.std)}"


class RobustModel(nn.Module):
    """``model(normalize(x))`` for x in [0, 1]; ``.model`` is the bare network."""

    def __init__(self, model: nn.Module, arch: "str | Arch", mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, name: str | None = None):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        self.arch_spec: Arch = arch if isinstance(arch, Arch) else get_arch(arch)
        self.name = name

    @property
    def arch(self) -> str:
        """The architecture's registry name."""
        return self.arch_spec.name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.normalize(x))

    # timm-style conveniences, so a head swap reads the same for every architecture
    def get_classifier(self) -> nn.Module:
        return get_head(self.model, self.arch_spec)

    def reset_classifier(self, num_classes: int, hidden: Sequence[int] = ()) -> None:
        replace_head(self, num_classes, hidden=hidden, arch=self.arch_spec)

    @property
    def input_size(self) -> int:
        """Side in pixels of the images this model is evaluated on (``input_size``)."""
        return input_size(self)

    @property
    def num_classes(self) -> int:
        head = self.get_classifier()
        last = head[-1] if isinstance(head, nn.Sequential) else head
        return last.out_features if isinstance(last, nn.Linear) else 0

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}" + (f", name={self.name!r}" if self.name else "")


def input_size(model: nn.Module, default: int = 224) -> int:
    """Side in pixels of the square images ``model`` is evaluated on: its manifest entry's
    (``entry.input_size``, else the crop, else a square resize such as RobustBench's Res224),
    else, for an architecture built for one size (ViT/DeiT/Swin position tables and windows),
    the size its patch embedding was built for, else the architecture's ``input_size``, else
    ``default``."""
    entry = getattr(model, "entry", None)
    size = getattr(entry, "input_size", None)
    if isinstance(size, int) and size > 0:
        return size
    pre = getattr(entry, "preprocessing", None) or {}
    crop, resize = pre.get("crop"), pre.get("resize")
    if isinstance(crop, int) and crop > 0:
        return crop
    if isinstance(resize, (list, tuple)) and len(resize) == 2 and resize[0] == resize[1]:
        return int(resize[0])
    spec = _arch_of(model)
    if isinstance(spec, str):
        try:
            spec = get_arch(spec)
        except ValueError:
            spec = None
    if getattr(spec, "fixed_input_size", False):     # built for one size, maybe img_size=N
        built = getattr(getattr(unwrap(model), "patch_embed", None), "img_size", None)
        if isinstance(built, (tuple, list)) and len(built) == 2 and built[0] == built[1]:
            return int(built[0])
    size = getattr(spec, "input_size", None)
    return int(size) if isinstance(size, int) and size > 0 else default


# --------------------------------------------------------------------------- heads

def _arch_of(model: nn.Module) -> "Arch | str | None":
    spec = getattr(model, "arch_spec", None)
    return spec if isinstance(spec, Arch) else getattr(model, "arch", None)

def head_path(net: nn.Module, arch: "str | Arch | None") -> str:
    """Dotted path of the classifier head of bare network ``net`` (from its architecture, or
    found among the registry's head paths)."""
    if isinstance(arch, Arch):
        return arch.head
    if arch is not None:
        return get_arch(arch).head
    for a in (get_arch(n) for n in list_archs(include_extra=True)):
        try:
            parent, last = resolve_path(net, a.head)
            mod = parent[int(last)] if last.isdigit() else getattr(parent, last)
        except (AttributeError, IndexError, TypeError):
            continue
        if isinstance(mod, (nn.Linear, nn.Sequential, nn.Identity)):
            return a.head
    raise ValueError(
        f"Cannot find the classifier head of {type(net).__name__}; pass arch= "
        f"(one of {', '.join(list_archs())})")


def get_head(model: nn.Module, arch: str | None = None) -> nn.Module:
    """The classifier head module (through the normalizing wrapper and DDP)."""
    net = unwrap(model)
    parent, last = resolve_path(net, head_path(net, arch or _arch_of(model)))
    return parent[int(last)] if last.isdigit() else getattr(parent, last)


def replace_head(model: nn.Module, num_classes: int, hidden: Sequence[int] = (),
                 arch: str | None = None) -> nn.Module:
    """Swap the classifier for a fresh ``Linear(num_features, num_classes)``.

    ``hidden=(h1, h2, ...)`` puts ``Linear+ReLU`` layers in front of it (the paper code's
    ``--additional-hidden``). ``num_classes=0`` gives an ``Identity`` head, so the forward
    returns penultimate features. Works on bare torchvision and timm modules, on the loader's
    normalizing wrapper and on DDP-wrapped models; returns ``model`` for chaining.
    """
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")
    net = unwrap(model)
    arch = arch or _arch_of(model) or getattr(net, "arch", None)
    path = head_path(net, arch)
    parent, last = resolve_path(net, path)
    old = parent[int(last)] if last.isdigit() else getattr(parent, last)
    spec = arch if isinstance(arch, Arch) else get_arch(arch) if arch else None
    in_features = spec.num_features if spec else _in_features(old)
    ref = next(net.parameters())
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        width = h
    layers.append(nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity())
    new = layers[0] if len(layers) == 1 else nn.Sequential(*layers)
    new = new.to(device=ref.device, dtype=ref.dtype)
    if last.isdigit():
        parent[int(last)] = new
    else:
        setattr(parent, last, new)
    # A network that stores num_classes (timm-style) keeps it in step; RobustModel derives it.
    if "num_classes" in vars(net):
        net.num_classes = num_classes
    return model


def _in_features(head: nn.Module) -> int:
    if isinstance(head, nn.Linear):
        return head.in_features
    if isinstance(head, nn.Sequential):
        for m in head:
            if isinstance(m, nn.Linear):
                return m.in_features
    raise ValueError(f"Cannot tell the input width of head {head!r}; pass arch=")
