"""Architecture registry: the one table that loading, training and transfer share.

Each zoo architecture is a torchvision constructor plus the facts the rest of the package needs
about it: where its classifier head sits, how wide its penultimate features are, what the
upstream ``robustness`` checkpoint files call it, whether those files wrap it in the extra
``model.`` level of ``robustness``' ``DummyModel``, and how timm builds the same keys.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

# The input convention of every zoo checkpoint: ImageNet mean/std, applied inside the model.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Arch:
    name: str
    builder: Callable[..., nn.Module]
    head: str                    # dotted path of the final Linear, e.g. "fc", "classifier.1"
    num_features: int            # input width of that Linear (penultimate feature size)
    upstream_name: str           # architecture part of the upstream .ckpt file name
    upstream_wrapped: bool       # True: keys are module.model.model.<tv keys> (DummyModel)
    num_params: int              # with the 1000-class head; checked by the test suite
    timm: dict | None = None     # {"architecture": ..., "model_args": {...}} when timm has
                                 # the same keys
    family: str = ""             # "resnet", "densenet", ... (freeze levels exist for "resnet")
    aliases: tuple[str, ...] = field(default=())

    @property
    def zoo(self) -> bool:
        """True for the ten architectures the upstream checkpoints exist for."""
        return bool(self.upstream_name)

    def build(self, num_classes: int = 1000, **kwargs) -> nn.Module:
        return self.builder(weights=None, num_classes=num_classes, **kwargs)


def _tv(fn_name: str) -> Callable[..., nn.Module]:
    def build(**kwargs):
        import torchvision.models as tvm

        return getattr(tvm, fn_name)(**kwargs)

    build.__name__ = fn_name
    return build


def _wide_resnet50_4(*, weights=None, **kwargs) -> nn.Module:
    # torchvision has no WRN-50-4; robustness' imagenet_models.wide_resnet50_4 is
    # ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=64*4), with torchvision's key names.
    from torchvision.models.resnet import Bottleneck, ResNet

    if weights is not None:
        raise ValueError("wide_resnet50_4 has no torchvision weights")
    return ResNet(Bottleneck, [3, 4, 6, 3], width_per_group=64 * 4, **kwargs)


_ARCHS: dict[str, Arch] = {}


def _register(arch: Arch) -> None:
    _ARCHS[arch.name] = arch


_register(Arch("resnet18", _tv("resnet18"), "fc", 512, "resnet18", False, 11_689_512,
               {"architecture": "resnet18"}, "resnet"))
_register(Arch("resnet50", _tv("resnet50"), "fc", 2048, "resnet50", False, 25_557_032,
               {"architecture": "resnet50"}, "resnet"))
_register(Arch("wide_resnet50_2", _tv("wide_resnet50_2"), "fc", 2048, "wide_resnet50_2", False,
               68_883_240, {"architecture": "wide_resnet50_2"}, "resnet"))
_register(Arch("wide_resnet50_4", _wide_resnet50_4, "fc", 2048, "wide_resnet50_4", False,
               223_439_144, {"architecture": "resnet50", "model_args": {"base_width": 256}},
               "resnet"))
_register(Arch("resnext50_32x4d", _tv("resnext50_32x4d"), "fc", 2048, "resnext50_32x4d", True,
               25_028_904, {"architecture": "resnext50_32x4d"}, "resnet"))
_register(Arch("densenet161", _tv("densenet161"), "classifier", 2208, "densenet", True,
               28_681_000, None, "densenet", ("densenet",)))
# MNASNet: the paper code builds it with add_custom_forward=True (DummyModel), so files it writes
# carry the extra ``model.`` level; the loader detects either layout.
_register(Arch("mnasnet1_0", _tv("mnasnet1_0"), "classifier.1", 1280, "mnasnet", True,
               4_383_312, None, "mnasnet", ("mnasnet",)))
_register(Arch("mobilenet_v2", _tv("mobilenet_v2"), "classifier.1", 1280, "mobilenet", True,
               3_504_872, None, "mobilenet", ("mobilenet",)))
_register(Arch("shufflenet_v2_x1_0", _tv("shufflenet_v2_x1_0"), "fc", 1024, "shufflenet", True,
               2_278_604, None, "shufflenet", ("shufflenet",)))
_register(Arch("vgg16_bn", _tv("vgg16_bn"), "classifier.6", 4096, "vgg16_bn", True, 138_365_992,
               None, "vgg"))


def resolve_path(model: nn.Module, path: str) -> tuple[nn.Module, str]:
    """Parent module and attribute name of the dotted ``path`` (indices allowed)."""
    *parents, last = path.split(".")
    parent = model
    for p in parents:
        parent = parent[int(p)] if p.isdigit() else getattr(parent, p)
    return parent, last


def list_archs(include_extra: bool = False) -> list[str]:
    """The zoo's architectures; ``include_extra=True`` adds the small non-zoo ones (quickstart)."""
    return sorted(n for n, a in _ARCHS.items() if include_extra or a.zoo)


def get_arch(name: str) -> Arch:
    """Look up an architecture by its zoo name or an upstream alias ("densenet" → densenet161)."""
    if name in _ARCHS:
        return _ARCHS[name]
    for arch in _ARCHS.values():
        if name in arch.aliases or name == arch.upstream_name:
            return arch
    close = difflib.get_close_matches(name, list(_ARCHS), n=3, cutoff=0.4)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"Unknown architecture {name!r}. Known: "
                     f"{', '.join(list_archs(include_extra=True))}.{hint}")


def build(name: str, num_classes: int = 1000, *,
          device: str | torch.device | None = None) -> nn.Module:
    """Build ``name`` with random weights (``device="meta"`` builds without allocating)."""
    arch = get_arch(name)
    if device is None:
        return arch.build(num_classes)
    with torch.device(device):
        return arch.build(num_classes)


# Small non-zoo architectures (no upstream checkpoints): what the offline quickstart trains.
def _mini_resnet(**kwargs) -> nn.Module:
    from .smallnets import mini_resnet

    return mini_resnet(**kwargs)


_register(Arch("mini_resnet", _mini_resnet, "fc", 128, "", False, 436_536, None, "resnet"))
