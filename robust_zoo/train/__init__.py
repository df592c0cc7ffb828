"""Training with the robustness recipe: ``python -m robust_zoo.train`` or, in code,

    >>> from robust_zoo.train import train, RunOptions
    >>> from robust_zoo.recipe import Recipe
    >>> result = train(Recipe(arch="resnet18", norm="l2", eps=3.0, dataset="imagefolder",
    ...                       num_classes=10), RunOptions(out="runs/r18", data="/data/imagenette"))
    >>> robust_zoo.load(result.name, manifest=result.run_dir / "weights_manifest.json")

``docs/training.md`` describes the recipe fields, the command line, torchrun, resume semantics
and the files a run writes.
"""
from __future__ import annotations

from .._lazy import lazy_getattr as _lazy_getattr

__all__ = ["train", "RunOptions", "RunResult", "RecipeError", "main", "build_parser",
           "resolve_recipe", "parse_number"]

_LAZY = {"train": "run", "RunOptions": "options", "RunResult": "run", "RecipeError": ".recipe",
         "main": "cli", "build_parser": "cli", "resolve_recipe": "cli", "parse_number": "cli"}


__getattr__ = _lazy_getattr(__name__, _LAZY)
