"""Evaluation as a library: clean, PGD and AutoAttack counts over a loader, as one typed result.

``evaluate_loader`` is the per-batch loop behind ``python -m robust_zoo.evaluate`` and the
per-epoch validation of training: it takes a model and any iterable of ``(images, labels)``
batches (images in [0, 1]) and returns an ``EvalResult`` of integer counts. Counts add up
(``+``, ``sum``) and sum over torchrun ranks (``all_reduce``), so sharded or chunked evaluations
give the single-process numbers exactly; percentages are derived at the end.

Robust accuracy counts an example only if it is classified correctly clean and after every PGD
restart; AutoAttack is run on its own (not stacked on PGD), as RobustBench reports it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

import torch
from torch import nn

from . import distributed
from ..console import progress as progress_bar
from ..attacks import correct_under_attack
from ..recipe import Precision, choices, default_step_size
from ..data.common import DataError
from ..errors import RobustZooError, UsageError
from ..models.robust_model import eval_mode, unwrap
from ..naming import check_norm
from .precision import autocast

__all__ = ["EvalResult", "evaluate_loader", "make_autoattack", "AutoAttackUnavailable",
           "AUTOATTACK_VERSIONS", "PRECISIONS"]

PRECISIONS = choices(Precision)
# "standard": RobustBench's ensemble; "fast": its two gradient attacks (no FAB-T, no Square)
AUTOATTACK_VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "fast": ("apgd-ce", "apgd-t"),
}
AutoAttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class AutoAttackUnavailable(RobustZooError, ImportError):
    """AutoAttack was asked for but the ``pyautoattack`` package is not installed."""


# ----------------------------------------------------------------------------- the result

def _add_optional(a: int | None, b: int | None, n_a: int, n_b: int, what: str) -> int | None:
    if a is None and b is None:
        return None
    if a is None or b is None:
        # an empty result (n = 0) is the identity whatever was run
        if (n_a if a is None else n_b) == 0:
            return a if b is None else b
        raise ValueError(f"EvalResult: cannot add a result with {what} counts to one without")
    return a + b


@dataclass(frozen=True)
class EvalResult:
    """Counts of one evaluation: ``n`` examples, ``clean`` correct, ``pgd`` correct under every
    PGD restart (None: no attack run), ``autoattack`` correct under AutoAttack (None: not run).
    """

    n: int = 0
    clean: int = 0
    pgd: int | None = None
    autoattack: int | None = None

    def __post_init__(self) -> None:
        for name in ("n", "clean", "pgd", "autoattack"):
            v = getattr(self, name)
            if v is None and name in ("n", "clean"):
                raise ValueError(f"EvalResult.{name} must be an int")
            if v is not None:
                if isinstance(v, bool) or int(v) != v or v < 0:
                    raise ValueError(f"EvalResult.{name} must be an int >= 0, got {v!r}")
                object.__setattr__(self, name, int(v))
                if name != "n" and v > self.n:
                    raise ValueError(f"EvalResult.{name} = {v} exceeds n = {self.n}")

    def __add__(self, other: "EvalResult") -> "EvalResult":
        if not isinstance(other, EvalResult):
            return NotImplemented
        return EvalResult(
            self.n + other.n, self.clean + other.clean,
            _add_optional(self.pgd, other.pgd, self.n, other.n, "PGD"),
            _add_optional(self.autoattack, other.autoattack, self.n, other.n, "AutoAttack"))

    def __radd__(self, other):   # sum(results) starts from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def all_reduce(self, d: distributed.Dist) -> "EvalResult":
        """The sum of every rank's result (each rank gets it); ``d`` from
        ``robust_zoo.distributed.setup``. A world of one returns the result unchanged. Every rank
        must have run the same attacks."""
        if not d.enabled:
            return self
        vals = distributed.all_reduce_sum(d, [self.n, self.clean, self.pgd or 0,
                                              self.autoattack or 0])
        n, clean, pgd, aa = (int(round(v)) for v in vals)
        return EvalResult(n, clean, None if self.pgd is None else pgd,
                          None if self.autoattack is None else aa)

    def _pct(self, k: int | None) -> float | None:
        if k is None:
            return None
        return 100.0 * k / self.n if self.n else math.nan

    @property
    def clean_top1(self) -> float:
        """Clean top-1 in percent (NaN for an empty result)."""
        return self._pct(self.clean)

    @property
    def pgd_top1(self) -> float | None:
        """PGD robust top-1 in percent, None when no attack ran."""
        return self._pct(self.pgd)

    @property
    def autoattack_top1(self) -> float | None:
        """AutoAttack top-1 in percent, None when AutoAttack did not run."""
        return self._pct(self.autoattack)

    def metrics(self) -> dict[str, float | None]:
        """``{"clean_top1", "pgd_top1", "autoattack_top1"}`` in percent (the manifest's names)."""
        return {"clean_top1": self.clean_top1, "pgd_top1": self.pgd_top1,
                "autoattack_top1": self.autoattack_top1}


# ----------------------------------------------------------------------------- AutoAttack

def make_autoattack(model: nn.Module, *, norm: str, eps: float, version: str = "standard",
                    device: str | torch.device = "cpu", seed: int = 0) -> AutoAttackFn:
    """A per-batch AutoAttack: ``fn(x, y)`` → boolean mask of examples still classified
    correctly after the attacks of ``version`` ("standard": APGD-CE, APGD-T, FAB-T, Square, as
    RobustBench runs it; "fast": APGD-CE + APGD-T). Uses the ``pyautoattack`` package
    (``pip install robust-zoo[eval]``); raises ``AutoAttackUnavailable`` without it.

    The attack is built on the first batch, once the model's class count is known: targeted
    attacks use min(9, classes − 1) target classes (RobustBench's 9 for ImageNet). ``seed``
    makes the attacks reproducible; torch's global RNG is restored afterwards.
    """
    norm = check_norm(norm)
    if version not in AUTOATTACK_VERSIONS:
        raise UsageError(f"AutoAttack version {version!r}: use one of "
                         f"{', '.join(AUTOATTACK_VERSIONS)}")
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise AutoAttackUnavailable(
            "AutoAttack needs the pyautoattack package: pip install 'robust-zoo[eval]' (or "
            "pip install pyautoattack)") from None
    device = torch.device(device)
    state: dict[str, object] = {}

    def build(num_classes: int):
        if num_classes < 4:
            raise DataError(f"AutoAttack's targeted DLR loss needs >= 4 classes; the model "
                                f"has {num_classes}")
        targets = min(9, num_classes - 1)
        kw = dict(norm="L2" if norm == "l2" else "Linf", eps=float(eps), device=str(device),
                  seed=seed)
        if version == "standard":
            adv = AutoAttack(model, version="standard", **kw)
            adv.fab.n_target_classes = targets
        else:
            adv = AutoAttack(model, version="custom", attacks=list(AUTOATTACK_VERSIONS[version]),
                             **kw)
            adv.apgd.n_restarts = 1           # the standard version's settings
            adv.apgd_targeted.n_restarts = 1
        adv.apgd_targeted.n_target_classes = targets
        adv.verbose = False
        return adv

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if "adv" not in state:
            with torch.no_grad():
                state["adv"] = build(int(model(x[:1]).shape[1]))
        adv = state["adv"]
        rng_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):
            x_adv, _ = adv.run_standard_evaluation(x, y, batch_size=len(x))
        with torch.no_grad():
            return model(x_adv).argmax(1) == y

    run.version = version                       # type: ignore[attr-defined]
    run.attacks = AUTOATTACK_VERSIONS[version]  # type: ignore[attr-defined]
    return run


# ----------------------------------------------------------------------------- the loop

def _check_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 classes: Sequence | None) -> None:
    with torch.no_grad():      # the bare network: a compiled model would compile a batch of 1
        k = unwrap(model)(x[:1]).shape[1]
    if classes is not None and len(classes) != k:
        raise DataError(
            f"The data has {len(classes)} classes but the model's head has {k} outputs: the "
            "folder needs one sub-folder per model class, in the model's class order (ImageNet: "
            "the 1000 WordNet ids n01440764 ... n15075141)")
    if int(y.max()) >= k or int(y.min()) < 0:
        raise DataError(f"Labels range over [{int(y.min())}, {int(y.max())}] but the model "
                            f"has {k} outputs")


def _check_int(name: str, v, minimum: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
        raise UsageError(f"{name} must be an int >= {minimum}, got {v!r}")
    return v


def evaluate_loader(model: nn.Module, loader: Iterable, *, norm: str, eps: float, steps: int,
                    step_size: float | None = None, restarts: int = 1,
                    random_start: bool = False, keep_best: bool = True,
                    autoattack: AutoAttackFn | None = None,
                    device: str | torch.device | None = None, limit: int | None = None,
                    precision: Literal["fp32", "bf16"] = "fp32", progress: bool = False,
                    desc: str = "evaluate", classes: Sequence | None = None) -> EvalResult:
    """Clean, PGD and (optionally) AutoAttack counts of ``model`` over ``loader``.

    ``loader``: any iterable of ``(images, labels)`` batches, images in [0, 1] (the model
    normalizes inside). The model runs in eval mode (each module's mode is restored afterwards)
    and in fp32 unless ``precision="bf16"`` (autocast; the attack's steps stay fp32). PGD: L2 or
    Linf ``eps`` in [0, 1] pixel units, ``steps`` iterations of size ``step_size`` (default
    2.5·eps/steps), ``restarts`` runs (later ones from random starts); ``eps == 0`` or
    ``steps == 0`` evaluates clean accuracy only (``pgd`` is None). ``autoattack``: a callable
    ``(x, y) -> bool mask`` (``make_autoattack``) or None. ``limit``: stop after that many
    examples (the last batch is cut). ``classes``: the data's class names, checked against the
    model's output count on the first batch. This process's counts only: under torchrun call
    ``.all_reduce(d)`` on the result.
    """
    norm = check_norm(norm)
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps >= 0):
        raise UsageError(f"eps must be a finite number >= 0 in [0, 1] pixel units, got {eps!r}")
    _check_int("steps", steps, 0)
    _check_int("restarts", restarts, 1)
    if limit is not None:
        _check_int("limit", limit, 1)
    if precision not in PRECISIONS:
        raise UsageError(f"precision {precision!r}: use one of {', '.join(PRECISIONS)} (fp16 "
                         "is not supported: use bf16)")
    attacking = eps > 0 and steps > 0
    if attacking and step_size is not None and not (math.isfinite(step_size)
                                                    and step_size > 0):
        raise UsageError(f"step_size must be a positive number (or None for 2.5·eps/steps), "
                         f"got {step_size!r}")
    device = (torch.device(device) if device is not None
              else next(model.parameters()).device)
    alpha = step_size if step_size is not None else default_step_size(eps, steps)
    n = n_clean = n_pgd = n_aa = 0
    bar = progress_bar(loader, enabled=progress, unit="batch", desc=desc)
    try:
        with eval_mode(model), autocast(device, precision):
            for x, y in bar:
                if limit is not None:
                    keep = max(0, min(len(y), limit - n))
                    if keep == 0:
                        break
                    x, y = x[:keep], y[:keep]
                x = x.to(device, non_blocking=True).float()
                y = y.to(device, non_blocking=True)
                if n == 0:
                    _check_batch(model, x, y, classes)
                if attacking:
                    clean, robust = correct_under_attack(
                        model, x, y, norm=norm, eps=eps, steps=steps, step_size=alpha,
                        restarts=restarts, random_start=random_start, keep_best=keep_best)
                else:
                    with torch.no_grad():
                        clean = model(x).argmax(1) == y
                    robust = clean
                n += len(y)
                n_clean += int(clean.sum())
                n_pgd += int(robust.sum())
                if autoattack is not None:
                    n_aa += int((clean & autoattack(x, y)).sum())
                if hasattr(bar, "set_postfix"):
                    post = {"clean": f"{100 * n_clean / n:.2f}"}
                    if attacking:
                        post["pgd"] = f"{100 * n_pgd / n:.2f}"
                    if autoattack is not None:
                        post["aa"] = f"{100 * n_aa / n:.2f}"
                    bar.set_postfix(post)
    finally:
        if hasattr(bar, "close"):
            bar.close()
    return EvalResult(n, n_clean, n_pgd if attacking else None,
                      n_aa if autoattack is not None else None)

