"""GPU-hours of a transfer grid, estimated from the numbers in benchmarks/README.md.

That page has no GPU measurement of transfer; the estimate chains three of its rows:

* the GPU target for ResNet-50 PGD-3 training, 1,300 img/s on one H100/H200 ("GPU host"
  paragraph of the loader section; a target, not a measurement);
* "PGD-3 training step ÷ standard step": 3.23–3.30× (summary table); the lower end is used, so
  a standard training step (forward + full backward: full-network transfer) runs at
  1,300 × 3.23 ≈ 4,200 img/s;
* "forward + full backward" = 3.08 F (attacks, run A): a forward without gradients (the frozen
  network of fixed-feature transfer, feature extraction, the test set) runs 3.08× faster.

Other architectures and image sizes are scaled by their forward FLOPs (counted on the meta
device) against ResNet-50 at 224 px. Data loading is assumed to keep up (the same paragraph:
about 4.3 loader cores per GPU at that rate), and the head's own training is neglected.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["SOURCES", "Estimate", "estimate", "run_images", "train_rate"]

RESNET50_PGD3_IMG_S = 1300.0
PGD3_OVER_STANDARD = 3.23
FWD_BWD_OVER_FWD = 3.08
SOURCES = (
    "benchmarks/README.md, loader section, 'GPU host': the target of 1,300 img/s for ResNet-50 "
    "PGD-3 training on one H100/H200 (a target, not a measurement)",
    "benchmarks/README.md, summary table, 'PGD-3 training step ÷ standard step': 3.23× "
    "(the lower end of 3.23–3.30×)",
    "benchmarks/README.md, attacks run A, 'forward + full backward': 3.08 F",
)


@functools.lru_cache(maxsize=None)
def forward_flops(arch: str, image_size: int) -> float:
    """Forward FLOPs of one image through ``arch`` (counted on the meta device: no memory,
    no weights)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..models.archs import get_arch

    with torch.device("meta"):
        net = get_arch(arch).build()
        x = torch.empty(1, 3, image_size, image_size)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(x)
    return float(counter.get_total_flops())


def train_rate(arch: str, image_size: int) -> float:
    """Images per second of a standard training step (forward + full backward) on one GPU."""
    scale = forward_flops("resnet50", 224) / forward_flops(arch, image_size)
    return RESNET50_PGD3_IMG_S * PGD3_OVER_STANDARD * scale


def run_images(cfg, n_train: int, n_test: int) -> tuple[int, int]:
    """(images through forward + backward, images through a forward only) of one run of the
    resolved config ``cfg``."""
    evals = 1 + (cfg.epochs // cfg.eval_every if cfg.eval_every else 0)
    if cfg.path == "cached":                     # features extracted once (a cold cache)
        return 0, (cfg.views or 1) * n_train + n_test
    if cfg.mode == "fixed-feature":              # behind the frozen network: forwards only
        return 0, cfg.epochs * n_train + evals * n_test
    return cfg.epochs * n_train, evals * n_test


@dataclass
class Estimate:
    """GPU-hours of a grid's runs, by (mode, arch); runs whose data set size is unknown are
    counted in ``unsized``."""

    hours: dict[tuple[str, str], float] = field(default_factory=lambda: defaultdict(float))
    runs: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))
    unsized: int = 0

    @property
    def total(self) -> float:
        return sum(self.hours.values())


def estimate(runs: Sequence, arch_of: Callable[[str], str],
             size_of: Callable[[str], "tuple[int, int] | None"]) -> Estimate:
    """GPU-hours of ``runs`` (``study.Run``s); ``arch_of(model)``, ``size_of(data set)`` ->
    (n_train, n_test) or None when unknown."""
    est = Estimate()
    for run in runs:
        cfg, arch, size = run.config.resolved(), arch_of(run.model), size_of(run.dataset)
        key = (cfg.mode, arch)
        est.runs[key] += 1
        if size is None:
            est.unsized += 1
            continue
        fb, fwd = run_images(cfg, *size)
        rate = train_rate(arch, cfg.image_size)
        est.hours[key] += (fb / rate + fwd / (rate * FWD_BWD_OVER_FWD)) / 3600
    return est
