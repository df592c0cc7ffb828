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

from .._lazy import lazy_getattr as _lazy_getattr

from .core import MODES, features, freeze, frozen_modules, parse_mode, replace_head

__all__ = ["replace_head", "freeze", "features", "frozen_modules", "parse_mode", "MODES",
           "run_transfer", "sweep", "load_splits", "list_datasets", "get_spec",
           "TransferConfig", "paper_lr", "make_transforms"]

_LAZY = {"run_transfer": "runner", "load_model": "runner", "sweep": "study",
         # the data sets and their transforms live in the data layer
         "load_splits": ".data.transfer_sets", "list_datasets": ".data.transfer_sets",
         "get_spec": ".data.transfer_sets", "make_transforms": ".data.transforms",
         "TransferConfig": "hparams", "paper_lr": "hparams"}


__getattr__ = _lazy_getattr(__name__, _LAZY)
