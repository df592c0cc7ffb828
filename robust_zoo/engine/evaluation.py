"""Evaluation as a library: clean, PGD and AutoAttack counts over a loader, as one typed result.

``evaluate_loader`` is the evaluation behind ``python -m robust_zoo.evaluate`` and the per-epoch
validation of training: it takes a model and any iterable of ``(images, labels)`` batches
(images in [0, 1]), runs ``robust_zoo.attacks.attacked_batches`` over them (the one loop over
batches) under the requested precision, adds AutoAttack, and returns an ``EvalResult`` of
integer counts. Counts add up
(``+``, ``sum``) and sum over torchrun ranks (``all_reduce``), so sharded or chunked evaluations
give the single-process numbers exactly; percentages are derived at the end.

Robust accuracy counts an example only if it is classified correctly clean and after every PGD
restart; AutoAttack is run on its own (not stacked on PGD), as RobustBench reports it.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Literal, Sequence

import torch
from torch import nn

from . import distributed
from ..console import progress as progress_bar
from ..attacks import attacked_batches, check_pgd_args
from ..recipe import Precision, choices
from ..errors import RobustZooError, UsageError
from ..models.robust_model import eval_mode
from ..naming import check_norm
from .precision import autocast, check_precision

__all__ = ["EvalResult", "evaluate_loader", "make_autoattack", "plan_autoattack",
           "square_failure", "AutoAttackPlan", "AutoAttackUnavailable", "AutoAttackUnsupported",
           "AUTOATTACK_VERSIONS", "NO_SQUARE", "PRECISIONS"]

PRECISIONS = choices(Precision)
# "standard": RobustBench's ensemble; "fast": its two gradient attacks (no FAB-T, no Square)
AUTOATTACK_VERSIONS: dict[str, tuple[str, ...]] = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "fast": ("apgd-ce", "apgd-t"),
}
# the standard ensemble without Square: what "auto" runs where Square cannot run on the images
NO_SQUARE = "standard-no-square"
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

class AutoAttackUnsupported(UsageError):
    """AutoAttack (or the requested version of it) cannot run on this model or image size; the
    message says why and what runs instead."""


@dataclass(frozen=True)
class AutoAttackPlan:
    """What AutoAttack runs on one image size and class count: ``version`` ("standard", "fast",
    or ``NO_SQUARE`` where pyautoattack's Square attack cannot run on the images), its
    ``attacks``, the ``target_classes`` of APGD-T and FAB-T, and a ``note`` saying how the run
    departs from the requested version (None: it does not)."""

    version: str
    attacks: tuple[str, ...]
    target_classes: int
    note: str | None = None


def plan_autoattack(version: str, *, norm: str, eps: float, image_shape: Sequence[int],
                    num_classes: int, drop_square: bool = False) -> AutoAttackPlan:
    """The attacks of ``version`` that run on ``image_shape`` (C, H, W) images and a model with
    ``num_classes`` outputs. APGD-T and FAB-T target min(9, classes − 1) classes (RobustBench's 9
    for ImageNet; every other class when there are fewer); their targeted DLR loss needs 4
    classes, so fewer is an ``AutoAttackUnsupported``. Square is run once on the image size
    (``square_failure``); where it cannot start, ``drop_square`` leaves it out, naming the plan
    ``NO_SQUARE`` with a note, and otherwise raises ``AutoAttackUnsupported`` saying why."""
    norm = check_norm(norm)
    if version not in AUTOATTACK_VERSIONS:
        raise UsageError(f"AutoAttack version {version!r}: use one of "
                         f"{', '.join(AUTOATTACK_VERSIONS)}")
    if num_classes < 4:
        raise AutoAttackUnsupported(
            f"AutoAttack cannot run on a model with {num_classes} classes: its targeted attacks "
            "(APGD-T, FAB-T) use the DLR loss, which needs at least 4; evaluate with PGD only "
            "(--autoattack off)")
    attacks, targets = AUTOATTACK_VERSIONS[version], min(9, num_classes - 1)
    why = square_failure(norm, eps, tuple(image_shape)) if "square" in attacks else None
    if why is None:
        return AutoAttackPlan(version, attacks, targets)
    if not drop_square:
        raise AutoAttackUnsupported(
            f"AutoAttack {version} cannot run: {why}. Use --autoattack fast (APGD-CE + APGD-T) "
            f"or auto (the standard ensemble without Square, reported as {NO_SQUARE}), or "
            "images of another size")
    return AutoAttackPlan(NO_SQUARE, tuple(a for a in attacks if a != "square"), targets,
                          note=f"{why}; Square was left out, so this is not the standard "
                               "AutoAttack")


@functools.lru_cache(maxsize=None)
def square_failure(norm: str, eps: float, image_shape: tuple[int, ...]) -> str | None:
    """Why pyautoattack's Square attack cannot run on ``image_shape`` (C, H, W) images, or None
    when it runs. It is run for real, once per shape, for one query on a model that it cannot
    fool: the size matters only where the attack starts (the L2 version tiles the image with
    ⌊H/5⌋-px squares, which overrun square images of 1-4, 12, 14, 18, 19 and 24 px); the
    squares of later queries are clamped to the image."""
    from importlib.metadata import version as package_version

    from pyautoattack.square import SquareAttack

    c, h, w = image_shape
    attack = SquareAttack(_Unfoolable(), p_init=0.8, n_queries=1, eps=float(eps),
                          norm="L2" if check_norm(norm) == "l2" else "Linf", n_restarts=1,
                          seed=0, verbose=False, device="cpu", resc_schedule=False)
    with torch.random.fork_rng(devices=[]):       # the attack seeds torch's global RNG
        try:
            attack.perturb(torch.full((1, c, h, w), 0.5), torch.zeros(1, dtype=torch.long))
        except Exception as e:                    # whatever the library raised: it cannot run
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        else:
            return None
    tiling = (f"; its L2 start tiles the image with squares of side ⌊{h}/5⌋ = {h // 5} px, "
              "which do not fit it" if norm == "l2" else "")
    return (f"pyautoattack {package_version('pyautoattack')}'s {norm.upper()} Square attack "
            f"fails on {h}×{w} images ({reason}{tiling})")


class _Unfoolable(nn.Module):
    """Class 0 by a margin of 1 whatever the input: Square keeps querying it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0, 0.0]).expand(len(x), 2) + 0 * x.flatten(1)[:, :1]


def make_autoattack(model: nn.Module, *, norm: str, eps: float, version: str = "standard",
                    device: str | torch.device = "cpu", seed: int = 0,
                    drop_square: bool = False) -> AutoAttackFn:
    """A per-batch AutoAttack: ``fn(x, y)`` → boolean mask of examples still classified
    correctly after the attacks of ``version`` ("standard": APGD-CE, APGD-T, FAB-T, Square, as
    RobustBench runs it; "fast": APGD-CE + APGD-T). Uses the ``pyautoattack`` package
    (``pip install robust-zoo[eval]``); raises ``AutoAttackUnavailable`` without it.

    The attacks are planned (``plan_autoattack``) on the first batch, or earlier with
    ``fn.prepare(x)`` on a sample batch: the image size decides whether Square runs
    (``drop_square``: leave it out where it cannot; otherwise ``AutoAttackUnsupported``), the
    model's class count the target classes. ``fn.plan`` is the plan once made. ``seed`` makes
    the attacks reproducible; torch's global RNG is restored afterwards.
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
    kw = dict(norm="L2" if norm == "l2" else "Linf", eps=float(eps), device=str(device),
              seed=seed)

    def build(plan: AutoAttackPlan):
        if plan.version == "standard":
            adv = AutoAttack(model, version="standard", **kw)
        else:       # a part of the standard ensemble, with the standard version's settings
            adv = AutoAttack(model, version="custom", attacks=list(plan.attacks), **kw)
            adv.apgd.n_restarts = 1
            adv.apgd_targeted.n_restarts = 1
            adv.fab.n_restarts = 1
        adv.apgd_targeted.n_target_classes = plan.target_classes
        adv.fab.n_target_classes = plan.target_classes
        adv.verbose = False
        return adv

    def prepare(x: torch.Tensor) -> AutoAttackPlan:
        if "adv" not in state:
            with torch.no_grad(), eval_mode(model):
                classes = int(model(x[:1]).shape[1])
            plan = plan_autoattack(version, norm=norm, eps=eps, image_shape=tuple(x.shape[1:]),
                                   num_classes=classes, drop_square=drop_square)
            state["adv"], run.plan = build(plan), plan   # type: ignore[attr-defined]
        return run.plan                                  # type: ignore[attr-defined]

    def run(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        prepare(x)
        adv = state["adv"]
        rng_devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=rng_devices):
            x_adv, _ = adv.run_standard_evaluation(x, y, batch_size=len(x))
        with torch.no_grad():
            return model(x_adv).argmax(1) == y

    run.prepare = prepare                       # type: ignore[attr-defined]
    run.plan = None                             # type: ignore[attr-defined]
    return run


# ----------------------------------------------------------------------------- the loop

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
    model's output count on the first batch. The batches and their masks come from
    ``robust_zoo.attacks.attacked_batches``. This process's counts only: under torchrun call
    ``.all_reduce(d)`` on the result.
    """
    precision = check_precision(precision)
    norm, eps, steps, step_size = check_pgd_args(norm, eps, steps, step_size)
    attacking = eps > 0 and steps > 0
    batches = attacked_batches(model, loader, norm=norm, eps=eps, steps=steps,
                               step_size=step_size, restarts=restarts, random_start=random_start,
                               keep_best=keep_best, device=device, limit=limit, classes=classes)
    result = EvalResult(0, 0, 0 if attacking else None, 0 if autoattack is not None else None)
    bar = progress_bar(enabled=progress, total=_length(loader), unit="batch", desc=desc)
    try:
        with eval_mode(model), autocast(_device_of(model, device), precision):
            for x, y, clean, robust in batches:
                aa = None if autoattack is None else int((clean & autoattack(x, y)).sum())
                result += EvalResult(len(y), int(clean.sum()),
                                     int(robust.sum()) if attacking else None, aa)
                bar.update(1)
                bar.set_postfix({k.split("_")[0]: f"{v:.2f}"
                                 for k, v in result.metrics().items() if v is not None})
    finally:
        bar.close()
    return result


def _length(loader: Iterable) -> int | None:
    try:
        return len(loader)          # type: ignore[arg-type]
    except TypeError:
        return None


def _device_of(model: nn.Module, device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return next(model.parameters()).device
