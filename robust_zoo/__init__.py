"""robust_zoo: the adversarially robust ImageNet classifiers of Salman et al. (NeurIPS 2020),
verified, pickle-free and one call away.

    >>> import robust_zoo
    >>> model = robust_zoo.load("resnet50_l2_eps3")          # inputs in [0, 1]
    >>> robust_zoo.list_models(arch="resnet18", norm="l2")

Heavy modules (torchvision, huggingface_hub, timm) are imported on first use, so
``import robust_zoo`` costs little beyond ``import torch``.
"""
from __future__ import annotations

from ._lazy import lazy_getattr as _lazy_getattr
from ._version import __version__

_LAZY = {
    "load": "api", "list_models": "api", "get_entry": "api", "download": "api",
    "export": "publish", "model_card": "publish",
    "list_archs": "archs", "replace_head": "models", "get_head": "models",
    "load_manifest": "manifest", "Manifest": "manifest", "Entry": "manifest",
    "RobustModel": "models", "Recipe": "recipe",
    # errors a caller may want to catch
    "UnknownModelError": "manifest", "IntegrityError": "hub", "NotCachedError": "hub",
    "SourceUnavailableError": "hub", "UnpinnedFileWarning": "hub",
    "CheckpointFormatError": "convert",
}

__all__ = sorted(_LAZY) + ["__version__"]


__getattr__ = _lazy_getattr(__name__, _LAZY)


def __dir__():
    return __all__
