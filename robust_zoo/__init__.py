"""robust_zoo: the adversarially robust ImageNet classifiers of Salman et al. (NeurIPS 2020),
verified, pickle-free and one call away.

    >>> import robust_zoo
    >>> model = robust_zoo.load("resnet50_l2_eps3")          # inputs in [0, 1]
    >>> robust_zoo.list_models(arch="resnet18", norm="l2")

Heavy modules (torchvision, huggingface_hub, timm) are imported on first use, so
``import robust_zoo`` costs little beyond ``import torch``. docs/architecture.md maps the
packages (``hub``, ``formats``, ``models``, ``data``, ``engine``, ``train``, ``transfer``,
``evaluate``, ``cli``) and the modules beside them.
"""
from __future__ import annotations

from ._lazy import install_moved_finder as _install_moved_finder
from ._lazy import lazy_getattr as _lazy_getattr
from ._version import __version__

_LAZY = {
    # loading
    "load": "hub.factory", "list_models": "hub.factory", "get_entry": "hub.factory",
    "download": "hub.factory", "load_manifest": "hub.manifest", "Manifest": "hub.manifest",
    "Entry": "hub.manifest", "export": "hub.publish", "model_card": "hub.publish",
    # models
    "list_archs": "models.archs", "RobustModel": "models.robust_model",
    "replace_head": "models.robust_model", "get_head": "models.robust_model",
    # training
    "Recipe": "recipe",
    # errors a caller may want to catch; every one is a RobustZooError
    "RobustZooError": "errors", "UsageError": "errors",
    "UnknownModelError": "hub.manifest", "ManifestError": "hub.manifest",
    "IntegrityError": "validate", "CheckpointFormatError": "validate",
    "NotCachedError": "hub.sources", "SourceUnavailableError": "hub.sources",
    "UnpinnedFileWarning": "hub.sources",
}

__all__ = sorted(_LAZY) + ["__version__"]

__getattr__ = _lazy_getattr(__name__, _LAZY)
_install_moved_finder()


def __dir__():
    return __all__
