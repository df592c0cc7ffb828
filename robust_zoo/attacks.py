"""Projected gradient descent (PGD) in pixel space: the one attack training and evaluation share.

Units: images ``x`` in [0, 1] (the models normalize inside) and ε on that scale, the convention
of ``robustness`` (whose ``attack_steps.py`` the step objects below follow) and RobustBench.

* L2:   x ← x + α·g/‖g‖₂ per example, then δ is rescaled into the ε-ball, then x clamped
  to [0, 1].
* Linf: x ← x + α·sign(g), then δ is clipped to the ε-box, then x clamped to [0, 1].

Clamping to [0, 1] only shrinks each |δᵢ| (x itself is in [0, 1]), so the bound survives it.
Gradients are taken w.r.t. the input alone (``torch.autograd.grad``) with the parameters'
``requires_grad`` switched off for the attack (and restored): no parameter ``.grad`` is written
and no weight gradient is computed, eager or ``torch.compile``d (a compiled forward has one fused
backward, which would otherwise compute every parameter's gradient and drop it). ``docs/attacks.md``
has the full semantics.

One engine, two small objects: a *step* (the threat model: how to step, project, start at
random) and an *objective* (what to ascend: per-example scores computed from the model's
output). ``run_pgd(model, x, objective, step, steps)`` is the loop; ``pgd`` is ``run_pgd`` with
``CrossEntropy`` (untargeted, or targeted as its negative); ``robust_zoo.representations``
runs the same loop with ``RepresentationDistance`` and ``FeatureUnit`` on penultimate features.

Evaluation: ``correct_under_attack`` scores one batch (clean and robust masks) and
``attacked_batches`` is the one loop over batches; ``robust_accuracy`` sums it, and
``robust_zoo.engine.evaluation.evaluate_loader`` counts it as an ``EvalResult``.
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .console import progress as progress_bar
from .data.common import DataError, iter_batches
from .errors import UsageError
from .models.robust_model import (eval_mode as _eval_mode, frozen_parameters, unwrap,
                                  unwrap_parallel)
from .naming import check_norm, parse_eps, parse_int, parse_number
from .recipe import default_step_size

__all__ = ["pgd", "run_pgd", "input_gradient", "L2Step", "LinfStep", "AttackStep", "Objective",
           "CrossEntropy", "RepresentationDistance", "FeatureUnit", "check_pgd_args",
           "correct_under_attack", "attacked_batches", "robust_accuracy", "default_step_size"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# fp16 autocast: input gradients are scaled before autograd so they do not flush to zero
# (sign(0) = 0 would silently stall the attack); the step normalizes, so the scale cancels.
_FP16_GRAD_SCALE = 2.0 ** 12


def _norms(t: torch.Tensor) -> torch.Tensor:
    """Per-example L2 norms shaped (B, 1, ..., 1); works for any memory format."""
    return torch.linalg.vector_norm(t, dim=tuple(range(1, t.ndim)), keepdim=True)


class AttackStep:
    """Threat model around a fixed origin ``x0``: how to step, project and start at random."""

    def __init__(self, x0: torch.Tensor, eps: float, step_size: float):
        self.x0, self.eps, self.step_size = x0, float(eps), float(step_size)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def random_init(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class L2Step(AttackStep):
    def project(self, x: torch.Tensor) -> torch.Tensor:
        delta = x - self.x0
        # min(1, ε/‖δ‖): points inside the ball stay put; the clamp guards ‖δ‖ = 0
        delta = delta * (self.eps / _norms(delta).clamp_min(1e-12)).clamp(max=1.0)
        return (self.x0 + delta).clamp(0.0, 1.0)

    def step(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        # a zero gradient gives a zero step instead of NaN
        return x + self.step_size * g / _norms(g).clamp_min(1e-12)

    def random_init(self, x: torch.Tensor) -> torch.Tensor:
        # Uniform in the ball: Gaussian direction, radius ε·U^(1/d). For images d is large
        # (150,528 at 224 px: radius > 0.9999·ε but with probability 3e-7), so this is
        # robustness' start on the sphere in all but name.
        d = x[0].numel()
        u = torch.randn_like(x)
        r = torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), device=x.device,
                       dtype=x.dtype).pow(1.0 / d)
        return self.project(x + self.eps * r * u / _norms(u).clamp_min(1e-12))


class LinfStep(AttackStep):
    def project(self, x: torch.Tensor) -> torch.Tensor:
        delta = (x - self.x0).clamp(-self.eps, self.eps)
        return (self.x0 + delta).clamp(0.0, 1.0)

    def step(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return x + self.step_size * g.sign()

    def random_init(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x + torch.empty_like(x).uniform_(-self.eps, self.eps))


STEPS: dict[str, type[AttackStep]] = {"l2": L2Step, "linf": LinfStep}


# -- objectives: what the engine ascends ------------------------------------------------------

class Objective:
    """Per-example scores to *maximize*, computed from the model's output for a batch.

    ``__call__(out)`` gets what the model (or feature function) returned for the current
    iterate and returns a (B,) tensor; the engine ascends its sum (examples are independent,
    so each example follows its own gradient) and, with ``keep_best``, keeps per example the
    iterate with the highest score. A scalar is accepted only with ``keep_best=False``.
    """

    name = "objective"

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CrossEntropy(Objective):
    """Untargeted: ascend the loss of the true labels ``y`` (an attack). Targeted: ascend its
    negative, i.e. move towards ``y`` (an attack towards a class, or class synthesis).
    ``loss_fn(logits, y)`` replaces cross-entropy (per-example losses, or a scalar)."""

    name = "loss_fn"

    def __init__(self, y: torch.Tensor, *, targeted: bool = False,
                 loss_fn: LossFn | None = None):
        self.y, self.targeted = y, bool(targeted)
        self.loss_fn = loss_fn or _cross_entropy
        self.sign = -1.0 if targeted else 1.0

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return self.sign * self.loss_fn(logits, self.y)


class RepresentationDistance(Objective):
    """Move a representation onto ``target`` features (B, ...): the score is
    −‖f(x) − t‖₂ / ‖t‖₂ per example (Engstrom et al.'s normalised distance, negated)."""

    name = "representation distance"

    def __init__(self, target: torch.Tensor):
        self.target = target.detach().float().flatten(1)
        self.scale = torch.linalg.vector_norm(self.target, dim=1).clamp_min(1e-12)

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        diff = features.float().flatten(1) - self.target
        return torch.linalg.vector_norm(diff, dim=1) / self.scale

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        return -self.distance(features)


class FeatureUnit(Objective):
    """Maximize one component of a (B, C, ...) representation: ``unit`` is an int (the same
    unit for every example) or a (B,) tensor of units; spatial maps are averaged."""

    name = "feature unit"

    def __init__(self, unit: "int | torch.Tensor"):
        self.unit = unit

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        f = features.float()
        f = f.flatten(2).mean(2) if f.ndim > 2 else f
        if isinstance(self.unit, torch.Tensor):
            return f.gather(1, self.unit.to(f.device).view(-1, 1).long()).squeeze(1)
        return f[:, int(self.unit)]


def _attack_mode(model: nn.Module, eval_mode: bool):
    """The attack's view of ``model``: parameters frozen (input gradients only), and eval mode
    when ``eval_mode`` (``models.eval_mode``); every flag restored afterwards."""
    stack = contextlib.ExitStack()
    stack.enter_context(frozen_parameters(model))
    if eval_mode:
        stack.enter_context(_eval_mode(model))
    return stack


def _fp16_autocast(device_type: str) -> bool:
    try:
        return (torch.is_autocast_enabled(device_type)
                and torch.get_autocast_dtype(device_type) == torch.float16)
    except (RuntimeError, TypeError):  # device types autocast does not know
        return False


def check_pgd_args(norm: str, eps: float, steps: int, step_size: float | None = None
                   ) -> tuple[str, float, int, float | None]:
    """(norm, ε, steps, α) of a PGD attack checked and normalised by the package's parsers
    (``naming.check_norm``, ``parse_eps``, ``parse_int``, ``parse_number``): norm "l2" or
    "linf", ε a finite number >= 0 in [0, 1] pixel units (``"4/255"`` works), steps an int
    >= 0, α > 0 or None (2.5·ε/steps; α is checked only when an attack runs, ε > 0 and
    steps > 0). Raises ``UsageError`` naming the argument."""
    norm = check_norm(norm)
    eps = parse_eps(eps, "eps (in [0, 1] pixel units)")
    steps = parse_int(steps, what="steps", minimum=0)
    if step_size is not None and eps > 0 and steps > 0:
        step_size = parse_number(step_size, what="step_size (None for 2.5·eps/steps)",
                                 minimum=0.0, allow_zero=False)
    return norm, eps, steps, step_size


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or not x.is_floating_point():
        raise UsageError("pgd: x must be a floating-point tensor shaped (batch, ...), got "
                         f"{type(x).__name__}{tuple(getattr(x, 'shape', ()))}")
    if not isinstance(y, torch.Tensor) or y.shape[:1] != x.shape[:1]:
        raise UsageError(f"pgd: y must be a tensor with one label per example: x has "
                         f"{x.shape[0]} examples, y has shape {tuple(getattr(y, 'shape', ()))}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("pgd needs autograd: call it outside torch.inference_mode() "
                           "(torch.no_grad() is fine)")


def _check_range(x: torch.Tensor) -> None:
    lo, hi = torch.stack(torch.aminmax(x.detach())).float().tolist()   # one device sync
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise UsageError(f"pgd: x must be an image in [0, 1] (models normalize inside), got values "
                         f"in [{lo:.4g}, {hi:.4g}]. Pass un-normalized images, e.g. "
                         "entry.transforms() without normalize=True.")


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str, eps: float, steps: int,
        step_size: float | None = None, random_start: bool = False, keep_best: bool = True,
        loss_fn: LossFn | None = None, bn_eval: bool = True, targeted: bool = False
        ) -> torch.Tensor:
    """PGD adversarial examples for ``model`` at ``x`` (in [0, 1]) with labels ``y``.

    Args:
        norm: "l2" or "linf". eps: radius in [0, 1] pixel units (Linf 4/255 is ``4/255``).
        steps: number of gradient steps; ``eps == 0`` or ``steps == 0`` returns ``x`` unchanged.
        step_size: α; default ``2.5·eps/steps``.
        random_start: start from a uniform point in the ε-ball (L2) / ε-box (Linf).
        keep_best: return, per example, the iterate (start point included) with the highest
            loss, as robustness' ``use_best``; one extra forward. False: the last iterate.
        loss_fn: ``loss_fn(logits, y)`` → per-example losses (B,); default cross-entropy.
            Scalar losses are accepted only with ``keep_best=False``.
        bn_eval: run the model in eval mode during the attack (BN running stats, no dropout, no
            running-stat updates), restoring each module's mode afterwards. False: as found.
        targeted: move towards ``y`` (minimize the loss) instead of away from it.

    Returns:
        ``x_adv``, detached, with ``x``'s dtype, shape and memory format; ‖x_adv − x‖ ≤ eps
        and x_adv in [0, 1]. Parameters' ``.grad`` is never touched; their ``requires_grad``
        is off during the attack and restored afterwards. Runs under ``torch.autocast``; steps
        and projections are computed in fp32.
    """
    norm, eps, steps, step_size = check_pgd_args(norm, eps, steps, step_size)
    _check_batch(x, y)
    if eps == 0 or steps == 0:
        return x.detach().clone()
    _check_range(x)
    alpha = default_step_size(eps, steps) if step_size is None else float(step_size)
    stepper = STEPS[norm](x.detach().to(torch.float32), eps, alpha)
    return run_pgd(model, x, CrossEntropy(y, targeted=targeted, loss_fn=loss_fn), stepper,
                   steps, random_start=random_start, keep_best=keep_best, bn_eval=bn_eval)


def run_pgd(model: "nn.Module | Callable[[torch.Tensor], torch.Tensor]", x: torch.Tensor,
            objective: Objective, step: AttackStep, steps: int, *, random_start: bool = False,
            keep_best: bool = True, bn_eval: bool = True, progress: Any = False,
            desc: str = "pgd", what: str = "pgd") -> torch.Tensor:
    """The PGD loop: ``steps`` times x ← project(step(x, ∇ₓ objective(model(x)))), from ``x``.

    Args:
        model: a module (DDP is stripped; with ``bn_eval`` it runs in eval mode, each module's
            flag restored afterwards) or any callable ``x → output`` whose modes the caller
            manages. ``x`` is fed in its own dtype.
        x: the starting point, in [0, 1]; ``step`` carries the origin and radius of the
            threat model (``step.x0``, usually ``x`` itself in fp32).
        objective: per-example scores to maximize (``Objective``).
        random_start: start at ``step.random_init(x)`` instead of ``x``.
        keep_best: return per example the iterate (start included) with the highest score; one
            extra forward. False: the last iterate.
        progress: True for a tqdm bar over the steps (labelled ``desc``), or an open bar to
            advance by one per step (a caller running several chunks). what: the name in errors.

    Returns the result detached, with ``x``'s dtype, shape and memory format. Parameters'
    ``.grad`` is never touched and their ``requires_grad`` is off during the attack (restored
    after), so only the input gradient is computed; steps and projections run in fp32.
    """
    net = unwrap_parallel(model) if isinstance(model, nn.Module) else model
    scale = _FP16_GRAD_SCALE if (_fp16_autocast(x.device.type) or x.dtype == torch.float16) else 1.0
    best_x = best_score = None

    def scores_at(xa: torch.Tensor) -> torch.Tensor:
        out = objective(net(xa.to(x.dtype)))
        if keep_best and out.shape != (x.shape[0],):
            raise UsageError(f"{what}: {objective.name} must return per-example losses of shape "
                             f"({x.shape[0]},) when keep_best=True, got {tuple(out.shape)}; use "
                             "reduction='none' or keep_best=False")
        return out

    def remember(xa: torch.Tensor, scores: torch.Tensor) -> None:
        nonlocal best_x, best_score
        scores = scores.detach().float()
        if best_x is None:
            best_x, best_score = xa.detach().clone(), scores
            return
        better = scores > best_score
        best_score = torch.where(better, scores, best_score)
        best_x = torch.where(better.view((-1,) + (1,) * (x.ndim - 1)), xa.detach(), best_x)

    mode = _attack_mode(net, bn_eval) if isinstance(net, nn.Module) else contextlib.nullcontext()
    own_bar = progress is True
    bar = progress_bar(total=steps, desc=desc, unit="step", leave=False) if own_bar else (
        None if progress is False or progress is None else progress)
    try:
        with mode, torch.enable_grad():
            x0 = x.detach().to(torch.float32)
            xa = step.random_init(x0) if random_start else x0.clone()
            for _ in range(steps):
                xa.requires_grad_(True)
                scores = scores_at(xa)
                g = _input_grad(scores.sum(), xa, scale)
                with torch.no_grad():
                    if keep_best:
                        remember(xa, scores)
                    xa = step.project(step.step(xa.detach(), g))
                if bar is not None:
                    bar.update(1)
            if keep_best:
                with torch.no_grad():
                    remember(xa, scores_at(xa))
                xa = best_x
    finally:
        if own_bar:
            bar.close()
    return xa.detach().to(x.dtype)


def input_gradient(model: "nn.Module | Callable[[torch.Tensor], torch.Tensor]", x: torch.Tensor,
                   objective: Objective, *, bn_eval: bool = True) -> torch.Tensor:
    """∇ₓ of the summed objective at ``x`` (fp32, ``x``'s shape): one step of the engine's
    gradient, with the same mode handling, fp16 scaling and no parameter ``.grad``."""
    net = unwrap_parallel(model) if isinstance(model, nn.Module) else model
    scale = _FP16_GRAD_SCALE if (_fp16_autocast(x.device.type) or x.dtype == torch.float16) else 1.0
    mode = _attack_mode(net, bn_eval) if isinstance(net, nn.Module) else contextlib.nullcontext()
    with mode, torch.enable_grad():
        xa = x.detach().to(torch.float32).requires_grad_(True)
        return _input_grad(objective(net(xa.to(x.dtype))).sum(), xa, scale)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")


def _input_grad(loss: torch.Tensor, xa: torch.Tensor, scale: float) -> torch.Tensor:
    if scale == 1.0:
        (g,) = torch.autograd.grad(loss, xa)
        return g.float()
    (g,) = torch.autograd.grad(loss * scale, xa, retain_graph=True)
    if not bool(torch.isfinite(g).all()):   # the scale overflowed fp16: redo unscaled
        (g,) = torch.autograd.grad(loss, xa)
    return g.float()


# -- evaluation: per batch, and the one loop over batches ----------------------------------------

@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).argmax(dim=1)


def correct_under_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: str,
                         eps: float, steps: int, step_size: float | None = None,
                         restarts: int = 1, random_start: bool = False, keep_best: bool = True,
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean_correct, robust_correct) boolean masks for one batch, model in eval mode.

    An example is robust only if it is classified correctly clean *and* after every restart
    (AutoAttack's convention). Restart 1 starts at x unless ``random_start``; later restarts
    start at random. Only still-robust examples are attacked again (eval mode makes examples
    independent of their batch-mates, so this changes cost, not results). ``eps == 0`` or
    ``steps == 0``: no attack, robust = clean.
    """
    norm, eps, steps, step_size = check_pgd_args(norm, eps, steps, step_size)
    restarts = parse_int(restarts, what="restarts", minimum=1)
    with _attack_mode(model, True):
        clean = _predict(model, x) == y
        robust = clean.clone()
        for r in range(restarts):
            idx = robust.nonzero().flatten()
            if idx.numel() == 0 or eps == 0 or steps == 0:
                break
            xa = pgd(model, x[idx], y[idx], norm=norm, eps=eps, steps=steps, step_size=step_size,
                     random_start=random_start or r > 0, keep_best=keep_best)
            robust[idx] = _predict(model, xa) == y[idx]
    return clean, robust


def _check_labels(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  classes: Sequence | None) -> None:
    """The labels (and the data's class names, when known) fit the model's outputs."""
    net = unwrap(model)     # the bare network: a compiled model would compile a batch of 1
    with _eval_mode(net), torch.no_grad():
        k = net(x[:1]).shape[1]
    if classes is not None and len(classes) != k:
        raise DataError(
            f"The data has {len(classes)} classes but the model's head has {k} outputs: the "
            "folder needs one sub-folder per model class, in the model's class order (ImageNet: "
            "the 1000 WordNet ids n01440764 ... n15075141)")
    if int(y.max()) >= k or int(y.min()) < 0:
        raise DataError(f"Labels range over [{int(y.min())}, {int(y.max())}] but the model "
                        f"has {k} outputs")


def attacked_batches(model: nn.Module, data: Any, *, norm: str, eps: float, steps: int,
                     step_size: float | None = None, restarts: int = 1,
                     random_start: bool = False, keep_best: bool = True,
                     batch_size: int | None = None, device: str | torch.device | None = None,
                     limit: int | None = None, classes: Sequence | None = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(x, y, clean, robust)`` for each batch of ``data``: the batch on ``device`` and its
    ``correct_under_attack`` masks. The one loop behind ``robust_accuracy`` and
    ``robust_zoo.engine.evaluation.evaluate_loader``.

    ``data``: an ``(images, labels)`` pair of tensors (cut into ``batch_size`` chunks; one batch
    when None) or an iterable of ``(images, labels)`` batches (``data.common.iter_batches``).
    Images go to ``device`` (default: the model's) in the model's parameter dtype. ``limit``:
    stop after that many examples (the last batch is cut). On the first batch the labels (and
    ``classes``, the data's class names) are checked against the model's output count.
    Arguments are checked when this is called, before the first batch is read.
    """
    norm, eps, steps, step_size = check_pgd_args(norm, eps, steps, step_size)
    attack = dict(norm=norm, eps=eps, steps=steps, step_size=step_size,
                  restarts=parse_int(restarts, what="restarts", minimum=1),
                  random_start=random_start, keep_best=keep_best)
    limit = None if limit is None else parse_int(limit, what="limit", minimum=1)
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = torch.device(device) if device is not None else (
        param.device if param is not None else torch.device("cpu"))
    dtype = param.dtype if param is not None else torch.float32
    return _attacked(model, iter_batches(data, batch_size), attack, device, dtype, limit,
                     classes)


def _attacked(model, batches, attack, device, dtype, limit, classes):
    n = 0
    for x, y in batches:
        if limit is not None:
            x, y = x[:limit - n], y[:limit - n]
        if len(y) == 0:
            continue
        x = x.to(device, non_blocking=True).to(dtype)
        y = y.to(device, non_blocking=True)
        if n == 0:
            _check_labels(model, x, y, classes)
        clean, robust = correct_under_attack(model, x, y, **attack)
        n += len(y)
        yield x, y, clean, robust
        if limit is not None and n >= limit:
            return


def robust_accuracy(model: nn.Module, data: Any, *, norm: str, eps: float, steps: int,
                    step_size: float | None = None, restarts: int = 1, random_start: bool = False,
                    keep_best: bool = True, batch_size: int = 128,
                    device: str | torch.device | None = None) -> tuple[float, float, int]:
    """(clean top-1 %, PGD robust top-1 %, n) over ``data``: an iterable of (x, y) batches
    (e.g. a DataLoader) or an ``(images, labels)`` pair of tensors (``batch_size`` at a time).
    The counts of ``attacked_batches``; for ImageFolder trees, manifests, distributed runs and
    claimed-metric checks use ``robust_zoo.evaluate``."""
    n = n_clean = n_robust = 0
    for _, y, clean, robust in attacked_batches(
            model, data, norm=norm, eps=eps, steps=steps, step_size=step_size,
            restarts=restarts, random_start=random_start, keep_best=keep_best,
            batch_size=batch_size, device=device):
        n, n_clean, n_robust = n + len(y), n_clean + int(clean.sum()), n_robust + int(robust.sum())
    if n == 0:
        raise DataError("robust_accuracy: data yielded no examples")
    return 100.0 * n_clean / n, 100.0 * n_robust / n, n
