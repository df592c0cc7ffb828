"""The paper's transfer recipe: one config object, with per-(data set, arch, mode) learning rates.

Batch 64, 150 epochs, SGD momentum 0.9, weight decay 5e-4, lr ×0.1 every 50 epochs, for every
data set (upstream-checkpoints.md §4.2). The learning rate was grid-searched over {0.01, 0.001}
per (data set, arch, freeze level); the winners are in ``best_params_per_dataset_per_arch.md`` of
microsoft/robust-models-transfer (MIT), copied below with the best source ε and the accuracy the
paper code reached there (``nat_prec1``, %; per-class mean accuracy where the paper uses it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..recipe import (OptimizerSettings, Precision, PrecisionSettings, RecipeError,
                      ScheduleSettings)
from .core import parse_mode

# dataset -> arch -> ((lr, best ε, acc) at freeze level 4 = fixed-feature,
#                     (lr, best ε, acc) at freeze level -1 = full network); L2 ε.
PAPER_TABLE: dict[str, dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]]] = {
    "sun397": {
        "resnet18": ((0.01, 0.0, 51.77), (0.001, 0.0, 59.58)),
        "resnet50": ((0.01, 0.01, 54.88), (0.001, 0.0, 62.38)),
        "wide_resnet50_2": ((0.01, 0.0, 55.7), (0.001, 0.03, 63.52)),
        "wide_resnet50_4": ((0.01, 0.01, 58.81), (0.001, 0.01, 65.01)),
    },
    "aircraft": {
        "resnet18": ((0.01, 0.5, 41.91), (0.01, 0.0, 80.89)),
        "resnet50": ((0.01, 1.0, 42.15), (0.01, 0.01, 86.14)),
        "wide_resnet50_2": ((0.01, 0.5, 41.34), (0.01, 0.0, 86.83)),
        "wide_resnet50_4": ((0.01, 0.05, 44.38), (0.001, 0.25, 86.44)),
    },
    "birdsnap": {
        "resnet18": ((0.01, 0.01, 45.94), (0.01, 0.01, 68.51)),
        "resnet50": ((0.01, 0.1, 49.25), (0.01, 0.25, 73.71)),
        "wide_resnet50_2": ((0.01, 0.03, 48.76), (0.001, 0.01, 75.11)),
        "wide_resnet50_4": ((0.01, 0.01, 50.75), (0.001, 0.01, 76.69)),
    },
    "caltech101": {
        "resnet18": ((0.01, 0.1, 89.49), (0.001, 0.0, 92.06)),
        "resnet50": ((0.01, 1.0, 91.07), (0.001, 0.03, 94.61)),
        "wide_resnet50_2": ((0.01, 0.5, 91.8), (0.001, 0.5, 95.41)),
        "wide_resnet50_4": ((0.01, 0.25, 92.76), (0.001, 0.05, 95.69)),
    },
    "caltech256": {
        "resnet18": ((0.01, 0.05, 78.4), (0.001, 0.05, 80.16)),
        "resnet50": ((0.01, 0.05, 82.51), (0.001, 0.05, 84.63)),
        "wide_resnet50_2": ((0.01, 0.03, 83.34), (0.001, 0.05, 86.33)),
        "wide_resnet50_4": ((0.01, 0.03, 85.08), (0.001, 0.05, 87.74)),
    },
    "cifar10": {
        "resnet18": ((0.01, 3.0, 91.64), (0.001, 3.0, 97.14)),
        "resnet50": ((0.01, 3.0, 94.81), (0.001, 3.0, 98.27)),
        "wide_resnet50_2": ((0.01, 3.0, 95.21), (0.001, 5.0, 98.55)),
        "wide_resnet50_4": ((0.01, 3.0, 95.57), (0.001, 1.0, 98.72)),
    },
    "cifar100": {
        "resnet18": ((0.01, 3.0, 74.01), (0.001, 1.0, 84.41)),
        "resnet50": ((0.01, 3.0, 79.5), (0.001, 3.0, 87.45)),
        "wide_resnet50_2": ((0.01, 3.0, 80.77), (0.001, 3.0, 88.23)),
        "wide_resnet50_4": ((0.01, 3.0, 81.15), (0.001, 1.0, 89.18)),
    },
    "dtd": {
        "resnet18": ((0.01, 0.0, 67.13), (0.001, 0.0, 72.34)),
        "resnet50": ((0.01, 0.01, 70.59), (0.001, 0.01, 75.53)),
        "wide_resnet50_2": ((0.01, 0.0, 70.21), (0.001, 0.01, 76.17)),
        "wide_resnet50_4": ((0.001, 0.03, 70.96), (0.001, 0.03, 77.39)),
    },
    "flowers": {
        "resnet18": ((0.01, 0.1, 91.36), (0.01, 0.0, 96.22)),
        "resnet50": ((0.01, 0.1, 91.46), (0.01, 0.01, 96.98)),
        "wide_resnet50_2": ((0.01, 0.0, 92.23), (0.01, 0.01, 97.33)),
        "wide_resnet50_4": ((0.01, 0.01, 91.95), (0.01, 0.0, 97.12)),
    },
    "food101": {
        "resnet18": ((0.01, 0.03, 60.26), (0.001, 0.01, 84.06)),
        "resnet50": ((0.01, 0.05, 66.03), (0.01, 0.0, 87.71)),
        "wide_resnet50_2": ((0.01, 0.0, 65.83), (0.001, 0.05, 88.37)),
        "wide_resnet50_4": ((0.01, 0.01, 69.35), (0.001, 0.1, 89.3)),
    },
    "pets": {
        "resnet18": ((0.01, 0.0, 89.78), (0.001, 0.0, 92.05)),
        "resnet50": ((0.01, 0.03, 91.32), (0.001, 0.05, 93.71)),
        "wide_resnet50_2": ((0.01, 0.0, 92.03), (0.001, 0.05, 94.51)),
        "wide_resnet50_4": ((0.01, 0.03, 92.23), (0.001, 0.01, 94.59)),
    },
    "stanford_cars": {
        "resnet18": ((0.01, 0.1, 45.67), (0.01, 0.0, 88.22)),
        "resnet50": ((0.01, 0.5, 47.38), (0.01, 0.0, 91.49)),
        "wide_resnet50_2": ((0.01, 0.25, 46.91), (0.01, 0.0, 91.64)),
        "wide_resnet50_4": ((0.01, 0.01, 51.06), (0.01, 0.0, 91.42)),
    },
}
TABLE_SOURCE = "microsoft/robust-models-transfer best_params_per_dataset_per_arch.md"
# Everything else: the table's majority choice (fixed-feature 47/48 rows, full network 34/48).
FALLBACK_LR = {"fixed-feature": 0.01, "full": 0.001}


def _table_column(mode: str) -> int | None:
    mode = parse_mode(mode)
    return 0 if mode in ("fixed-feature", "layer4") else 1 if mode == "full" else None


def paper_lr(dataset: str, arch: str, mode: str) -> tuple[float, str]:
    """(learning rate, where it comes from) for the paper's recipe.

    The table covers the four ResNets of the paper at freeze levels 4 and -1. Other archs use
    the ResNet-50 row of the same data set; freeze levels 1-3 (mostly trainable) use the
    full-network column; data sets outside the table use the table's majority choice.
    """
    mode = parse_mode(mode)
    col = _table_column(mode)
    rows = PAPER_TABLE.get(dataset)
    key = "fixed-feature" if col == 0 else "full"
    if rows is None:
        return FALLBACK_LR[key], f"default for {key} (data set not in the paper's table)"
    col = 1 if col is None else col
    if arch in rows:
        return rows[arch][col][0], f"{TABLE_SOURCE} ({dataset}, {arch}, {key})"
    return rows["resnet50"][col][0], f"{TABLE_SOURCE} ({dataset}, resnet50 row, {key})"


def paper_result(dataset: str, arch: str, mode: str) -> dict | None:
    """The paper code's best accuracy (%) and best ε for (data set, arch, mode), if tabulated."""
    col = _table_column(mode)
    row = PAPER_TABLE.get(dataset, {}).get(arch)
    if row is None or col is None:
        return None
    lr, eps, acc = row[col]
    return {"accuracy": acc, "best_eps": eps, "lr": lr, "source": TABLE_SOURCE}


@dataclass(kw_only=True)
class TransferConfig(OptimizerSettings, ScheduleSettings, PrecisionSettings):
    """Everything that decides a transfer run's result (stored in every result.json).

    The optimizer, schedule and precision parts are the training recipe's own
    (``robust_zoo.recipe``), with the paper's transfer values as defaults: SGD momentum 0.9,
    weight decay 5e-4, 150 epochs, lr ×0.1 every 50 epochs, batch 64."""

    mode: str = "fixed-feature"
    lr: float | None = None               # None: the paper's table (paper_lr)
    weight_decay: float | None = 5e-4
    epochs: int | None = 150
    lr_step: int | None = 50
    precision: Precision | None = None    # None: bf16 autocast on CUDA, fp32 elsewhere
    batch_size: int = 64                  # global, whatever the number of processes
    image_size: int = 224
    resize_size: int | None = None        # None: image_size * 256/224
    granularity: int | None = None        # e.g. 32: the paper's §4.3 down/up-scaling
    augment: bool = True                  # RandomResizedCrop+flip while training behind the net
    hidden: tuple[int, ...] = ()
    faithful: bool = False
    seed: int = 0
    path: str = "auto"                    # fixed-feature: "cached" | "network" | "auto"
    views: int = 1                        # cached path: 1 = centre crop, K > 1 augmented views
    head_solver: str = "sgd"              # cached path: "sgd" (the recipe) | "lbfgs"
    lbfgs_iters: int = 500
    eval_every: int = 0                   # network path: evaluate every N epochs (0: at the end)
    channels_last: bool | None = None     # None: on for CUDA

    def __post_init__(self) -> None:
        super().__post_init__()
        self.mode = parse_mode(self.mode)
        self.hidden = tuple(int(h) for h in self.hidden)
        for name in ("image_size", "views", "lbfgs_iters"):
            if int(getattr(self, name)) < 1:
                raise RecipeError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.granularity is not None and self.granularity < 1:
            raise RecipeError(f"granularity must be a positive size, got {self.granularity}")
        if self.path not in ("auto", "cached", "network"):
            raise RecipeError(f"path must be 'auto', 'cached' or 'network', got {self.path!r}")
        if self.head_solver not in ("sgd", "lbfgs"):
            raise RecipeError(f"head_solver must be 'sgd' or 'lbfgs', got {self.head_solver!r}")
        if self.path == "cached" and self.mode != "fixed-feature":
            raise RecipeError(
                f"The cached-feature path needs mode 'fixed-feature', not {self.mode!r}")
        if self.path == "cached" and self.faithful:
            raise RecipeError(
                "--faithful fixed-feature training lets BN statistics drift inside the "
                "network, which cached features cannot reproduce: use path='network'")

    @property
    def uses_cache(self) -> bool:
        return self.mode == "fixed-feature" and (
            self.path == "cached" or (self.path == "auto" and not self.faithful))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d
