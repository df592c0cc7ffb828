"""Transfer learning with zoo models: the paper's fixed-feature and full-network recipes.

    >>> from robust_zoo.transfer import replace_head, freeze, features
    >>> model = robust_zoo.load("resnet50_l2_eps3")
    >>> replace_head(model, 10)                  # fresh Linear(2048, 10)
    >>> freeze(model, "fixed-feature")          # only the head trains; BN statistics fixed
    >>> f = features(model, x)                  # [N, 2048] penultimate features

``run_transfer`` / ``sweep`` (and ``python -m robust_zoo.transfer``) run whole experiments;
``docs/transfer.md`` describes the data sets, defaults and the cached-feature fast path.
"""
from __future__ import annotations

from .core import MODES, features, freeze, frozen_modules, parse_mode, replace_head

__all__ = ["replace_head", "freeze", "features", "frozen_modules", "parse_mode", "MODES",
           "run_transfer", "sweep", "load_splits", "list_datasets", "get_spec",
           "TransferConfig", "paper_lr", "make_transforms"]

_LAZY = {"run_transfer": "runner", "load_model": "runner", "sweep": "sweep",
         "load_splits": "datasets", "list_datasets": "datasets", "get_spec": "datasets",
         "make_transforms": "datasets", "TransferConfig": "hparams", "paper_lr": "hparams"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
