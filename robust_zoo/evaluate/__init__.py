"""Clean and robust top-1 of a zoo model on an image folder, checked against its claimed
metrics: ``python -m robust_zoo.evaluate`` or, in code,

    >>> from robust_zoo.evaluate import evaluate
    >>> result = evaluate("resnet50_l2_eps3", "/data/imagenet/val", attack="pgd", eps=3.0)

* ``run``: ``evaluate`` (model, loader, attacks, report) and ``compare_claims``.
* ``corruptions``: RobustBench's common-corruption accuracy (the ImageNet-C folders).
* ``cli``: the command line.
"""
from __future__ import annotations

from .._lazy import lazy_getattr as _lazy_getattr

_LAZY = {"evaluate": "run", "compare_claims": "run", "format_report": "run",
         "main": "cli", "build_parser": "cli"}
__all__ = sorted(_LAZY)

__getattr__ = _lazy_getattr(__name__, _LAZY)
