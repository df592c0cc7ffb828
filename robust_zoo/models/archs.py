"""Architecture registry: the one table that loading, training and transfer share.

Each architecture is a constructor plus the facts the rest of the package needs about it: its
family, where its classifier head sits, how wide its penultimate features are, its input size,
what the upstream ``robustness`` checkpoint files call it (the ten architectures of Salman et
al.), whether those files wrap it in the extra ``model.`` level of ``robustness``' ``DummyModel``,
and how timm builds the same keys. Besides the ten, the registry holds the architectures of the
RobustBench ImageNet models and Peng et al.'s (timm's ConvNeXt, Swin, ViT/DeiT, XCiT; the
ConvStem, MeanSparse and RaResNet/RaWRN modules of this package) and the quickstart's small ones.
Every network is the bare classifier: inputs are normalized by ``RobustModel``.
"""
from __future__ import annotations

import contextlib
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
    input_size: int = 224        # side of the square input the architecture is used at
    fixed_input_size: bool = False   # True: a timm transformer built for input_size only (its
                                     # builder takes ``img_size=`` for another size)
    requires: str = ""           # the package the builder needs beyond torchvision ("timm")

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


def list_archs(include_extra: bool = False, *, family: str | None = None) -> list[str]:
    """The ten architectures of the upstream ``robustness`` checkpoints; ``include_extra=True``
    lists every registered one (the RobustBench and Peng et al. architectures, the quickstart's
    small ones); ``family`` keeps that family only ("resnet", "convnext", "swin", ...)."""
    return sorted(n for n, a in _ARCHS.items()
                  if (include_extra or a.zoo) and (family is None or a.family == family))


def families() -> list[str]:
    """Every architecture family in the registry."""
    return sorted({a.family for a in _ARCHS.values()})


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


# In-place initialisers: on the meta device they have no values to set and keep the shape, so
# they are skipped there (timm's trunc_normal_ alone, through torch's Python meta kernels, took
# 60-85 % of building a ConvNeXt-L or Swin-L on the meta device).
_INIT_OPS = frozenset({
    "fill_", "zero_", "uniform_", "normal_", "erfinv_", "mul_", "add_", "sub_", "div_", "clamp_",
    "copy_", "exponential_", "bernoulli_", "trunc_normal_", "kaiming_normal_", "kaiming_uniform_",
    "xavier_normal_", "xavier_uniform_", "constant_", "ones_", "zeros_", "orthogonal_"})


class NoInitOnMeta(torch.overrides.TorchFunctionMode):
    """Inside it, in-place initialisers of meta tensors return the tensor untouched."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if (getattr(func, "__name__", "") in _INIT_OPS and args
                and isinstance(args[0], torch.Tensor) and args[0].is_meta):
            return args[0]
        return func(*args, **(kwargs or {}))


def build(name: str, num_classes: int = 1000, *,
          device: str | torch.device | None = None) -> nn.Module:
    """Build ``name`` with random weights (``device="meta"``, or inside ``torch.device("meta")``,
    builds without allocating or initialising)."""
    arch = get_arch(name)
    target = torch.device(device) if device is not None else torch.get_default_device()
    with contextlib.ExitStack() as stack:
        if device is not None:
            stack.enter_context(torch.device(device))
        if target.type == "meta":
            stack.enter_context(NoInitOnMeta())
        return arch.build(num_classes)


# Small non-zoo architectures (no upstream checkpoints): what the offline quickstart trains.
def _mini_resnet(**kwargs) -> nn.Module:
    from .smallnets import mini_resnet

    return mini_resnet(**kwargs)


_register(Arch("mini_resnet", _mini_resnet, "fc", 128, "", False, 436_536, None, "resnet"))


# The architectures of the RobustBench ImageNet models and Peng et al.'s (no upstream
# ``robustness`` files): timm's own models with the configs RobustBench 1.1.1 builds, and this
# package's modules where no library has the network (convstem, meansparse, rawrn).
def _refuse_weights(weights) -> None:
    if weights is not None:
        raise ValueError("only the zoo's own weights exist for this architecture: build it with "
                         "weights=None and load a zoo entry (robust_zoo.load)")


def _import_timm():
    try:
        import timm
    except ImportError:
        raise ImportError("this architecture is timm's: pip install 'robust-zoo[timm]'") from None
    return timm


def _timm(model_name: str, **cfg) -> Callable[..., nn.Module]:
    """timm's ``model_name`` with ``cfg`` (random weights, never a download)."""
    def build(*, weights=None, **kwargs):
        _refuse_weights(weights)
        return _import_timm().create_model(model_name, pretrained=False, **{**cfg, **kwargs})

    build.__name__ = model_name
    return build


def _ours(module: str, fn: str, *args, needs_timm: bool = True) -> Callable[..., nn.Module]:
    """``robust_zoo.models.<module>.<fn>(*args, **kwargs)``, imported when first built."""
    def build(*, weights=None, **kwargs):
        import importlib

        _refuse_weights(weights)
        if needs_timm:
            _import_timm()
        return getattr(importlib.import_module(f"{__package__}.{module}"), fn)(*args, **kwargs)

    build.__name__ = f"{fn}_{'_'.join(args)}" if args else fn
    return build


def _add(name: str, builder: Callable[..., nn.Module], head: str, num_features: int,
         num_params: int, family: str, timm: dict | None = None, *, fixed: bool = False,
         requires: str = "timm") -> None:
    _register(Arch(name, builder, head, num_features, "", False, num_params, timm, family,
                   fixed_input_size=fixed, requires=requires))


def _ln6(dim: int, **kwargs) -> nn.Module:
    """The LayerNorm (eps 1e-6) of the SimMIM Swin code MIMIR's models use."""
    return nn.LayerNorm(dim, eps=1e-6, **kwargs)


_add("alexnet", _tv("alexnet"), "classifier.6", 4096, 61_100_840, "alexnet", requires="")
for _size, _w, _n in [("tiny", 768, 28_627_432), ("small", 768, 50_261_992),
                      ("base", 1024, 88_753_416), ("large", 1536, 198_134_680)]:
    _add(f"convnext_{_size}_convstem", _ours("convstem", "convnext_convstem", _size), "head.fc",
         _w, _n, "convnext")
_add("vit_small_convstem", _ours("convstem", "vit_convstem", "small"), "head", 384, 22_777_576,
     "vit", fixed=True)
_add("vit_base_convstem", _ours("convstem", "vit_convstem", "base"), "head", 768, 87_147_112,
     "vit", fixed=True)
_add("convnext_base", _timm("convnext_base"), "head.fc", 1024, 88_591_464, "convnext",
     {"architecture": "convnext_base"})
_add("convnext_large", _timm("convnext_large"), "head.fc", 1536, 197_767_336, "convnext",
     {"architecture": "convnext_large"})
_add("convnext_large_meansparse", _ours("meansparse", "convnext_large_meansparse"), "head.fc",
     1536, 197_767_336, "convnext")
_add("swin_base", _timm("swin_base_patch4_window7_224"), "head.fc", 1024, 87_768_224, "swin",
     {"architecture": "swin_base_patch4_window7_224"}, fixed=True)
_add("swin_large", _timm("swin_large_patch4_window7_224"), "head.fc", 1536, 196_532_476, "swin",
     {"architecture": "swin_large_patch4_window7_224"}, fixed=True)
_add("swin_large_meansparse", _ours("meansparse", "swin_large_meansparse"), "head.fc", 1536,
     196_532_476, "swin", fixed=True)
_add("swin_base_mimir", _timm("swin_base_patch4_window7_224", norm_layer=_ln6), "head.fc", 1024,
     87_768_224, "swin", fixed=True)
_add("swin_large_mimir", _timm("swin_large_patch4_window7_224", window_size=14, norm_layer=_ln6),
     "head.fc", 1536, 196_794_556, "swin", fixed=True)
_add("vit_base", _timm("vit_base_patch16_224"), "head", 768, 86_567_656, "vit",
     {"architecture": "vit_base_patch16_224"}, fixed=True)
_add("deit_small", _timm("deit_small_patch16_224"), "head", 384, 22_050_664, "vit",
     {"architecture": "deit_small_patch16_224"}, fixed=True)
_add("deit_base", _timm("deit_base_patch16_224"), "head", 768, 86_567_656, "vit",
     {"architecture": "deit_base_patch16_224"}, fixed=True)
for _size, _cfg, _w, _n in [("s12", {}, 384, 26_253_304),
                            ("m12", {"embed_dim": 512}, 512, 46_401_160),
                            ("l12", {"embed_dim": 768, "num_heads": 16}, 768, 103_792_648)]:
    _add(f"xcit_{_size}", _timm("xcit_small_12_p16_224", **_cfg), "head", _w, _n, "xcit",
         {"architecture": "xcit_small_12_p16_224", **({"model_args": _cfg} if _cfg else {})})
for _name, _w, _n in [("ra_resnet50", 2160, 26_143_228), ("ra_resnet101", 2624, 45_901_928),
                      ("ra_wrn101_2", 4032, 104_065_776)]:
    _add(_name, _ours("rawrn", "ranet", _name, needs_timm=False), "fc", _w, _n, "rawrn",
         requires="")
del _size, _w, _n, _cfg, _name
