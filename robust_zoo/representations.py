"""What a robust model has learned, as pictures: saliency, class synthesis, representation
inversion and feature visualisation (Santurkar et al. 2019; Engstrom et al. 2019).

Robust classifiers have perceptually aligned gradients, so following them from noise draws the
class (``synthesize``), from noise towards another image's penultimate representation
redraws that image (``invert``), towards one penultimate unit draws the feature
(``visualize_feature``), and the input gradient itself outlines the object (``saliency``).
No regulariser, no generator: every function here is the package's one PGD loop
(``robust_zoo.attacks.run_pgd``) with an L2 step and a different objective.

Conventions: a model as ``robust_zoo.load`` returns it (inputs in [0, 1], normalisation inside),
images (B, C, H, W) in [0, 1]; results in [0, 1] (saliency: the raw gradient), on the input's
device, with the input's dtype. The model is left as found: every submodule's train/eval flag,
``requires_grad``, dtype, and no parameter ``.grad`` written. Computation runs in eval mode on
the model's device, in chunks of ``batch_size`` (examples are independent in eval mode, so
chunking changes cost, not results); ``amp=None`` means bf16 autocast on CUDA, fp32 elsewhere.

Budgets (L2 radius ε, steps, step size α) default to the papers' values for 224-px ImageNet
images, scaled by √(C·H·W / (3·224·224)) for other sizes (an L2 norm grows with the square root
of the pixel count, so the per-pixel budget stays the same). A caller who gives ε and/or steps
but no α gets α from that budget, by the package's one step-size rule
``recipe.default_step_size`` (2.5·ε/steps: enough to cross the ball and come back), so that a
larger budget is used; the table's α applies only when neither is given:

================  ======  ======  ===  ============================================
function          ε       steps   α    source
================  ======  ======  ===  ============================================
synthesize        40      60      1    Santurkar et al. 2019 (ImageNet, 224 px)
invert            1000    1000    1    Engstrom et al. 2019 use 10,000 steps
visualize_feature 1000    200     1    Engstrom et al. 2019
================  ======  ======  ===  ============================================

``None`` for any of them means that default. ``DEFAULTS`` holds the table; ``budget`` applies
it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import (CrossEntropy, FeatureUnit, L2Step, RepresentationDistance, _attack_mode,
                      input_gradient, run_pgd)
from .console import progress as progress_bar
from .data.common import iter_batches
from .engine.precision import autocast
from .errors import UsageError
from .models.features import Penultimate
from .models.robust_model import get_head, input_size
from .naming import parse_int, parse_number
from .recipe import default_step_size

__all__ = ["saliency", "synthesize", "invert", "visualize_feature", "class_seeds",
           "penultimate", "Penultimate", "RepresentationError", "DEFAULTS", "budget"]

REFERENCE_NUMEL = 3 * 224 * 224


# Bad input to a representation function is the package's one argument error (a
# RobustZooError and a ValueError; the message says what is valid), also under this name.
RepresentationError = UsageError


@dataclass(frozen=True)
class Budget:
    eps: float        # L2 radius around the start, in [0, 1] pixel units, at 224 px
    steps: int
    step_size: float  # at 224 px


DEFAULTS: dict[str, Budget] = {
    "synthesize": Budget(40.0, 60, 1.0),
    "invert": Budget(1000.0, 1000, 1.0),
    "visualize_feature": Budget(1000.0, 200, 1.0),
}


def budget(function: str, shape: Sequence[int], eps: float | None = None,
           steps: int | None = None, step_size: float | None = None) -> tuple[float, int, float]:
    """(ε, steps, α) for ``function`` on images shaped ``(C, H, W)`` (or (B, C, H, W)).

    ``None`` for ε or steps means ``DEFAULTS[function]`` (ε scaled to the image size). α: the
    given value; else, when ε or steps is given, ``recipe.default_step_size`` of the budget
    (2.5·ε/steps, the package's one step-size rule); else the table's α scaled to the image
    size. ``budget("invert", (3, 16, 16), eps=20, steps=200)`` is (20, 200, 0.25).
    """
    d = DEFAULTS[function]
    factor = math.sqrt(math.prod(shape[-3:]) / REFERENCE_NUMEL)
    given = eps is not None or steps is not None
    eps = d.eps * factor if eps is None else _positive(eps, "eps", function)
    steps = d.steps if steps is None else parse_int(steps, what=f"{function}: steps", minimum=1)
    if step_size is not None:
        step_size = _positive(step_size, "step_size", function)
    elif given:
        step_size = default_step_size(eps, steps)
    else:
        step_size = d.step_size * factor
    return eps, steps, step_size


def _positive(v: Any, what: str, function: str) -> float:
    return parse_number(v, what=f"{function}: {what} (L2, [0, 1] pixel units; None for the "
                        "default)", minimum=0.0, allow_zero=False)


# -- penultimate features -------------------------------------------------------------------

def penultimate(model: nn.Module, x: torch.Tensor, *, batch_size: int = 64,
                amp: bool | None = None) -> torch.Tensor:
    """Penultimate features (B, D) of images ``x`` in [0, 1], in eval mode, fp32: the input of
    the classifier head (``robust_zoo.models.features.Penultimate``)."""
    x = _check_images(x, "penultimate")
    device, dtype = _model_device_dtype(model)
    feats = Penultimate(model)
    out = []
    with _attack_mode(model, True), torch.no_grad(), _autocast(device, amp):
        for i in range(0, len(x), batch_size):
            out.append(feats(x[i:i + batch_size].to(device, dtype)).float())
    return torch.cat(out).to(x.device)


# -- the four functions -----------------------------------------------------------------------

def saliency(model: nn.Module, x: torch.Tensor, y: "torch.Tensor | Sequence[int] | None" = None,
             *, smooth: int = 0, noise: float = 0.15, seed: int = 0, batch_size: int = 64,
             amp: bool | None = None, progress: bool = False) -> torch.Tensor:
    """∇ₓ of the cross-entropy loss of class ``y`` (default: the model's prediction) at ``x``.

    Returns the raw gradient, fp32, shaped like ``x``, on ``x``'s device (its magnitude is the
    saliency map; ``robust_zoo.viz`` renders |∇| summed over channels). ``smooth=N`` averages
    the gradient over N copies of ``x`` with Gaussian noise of standard deviation ``noise``
    added (SmoothGrad, Smilkov et al. 2017: 15% of the [0, 1] range), drawn from ``seed``.
    """
    x = _check_images(x, "saliency")
    smooth = parse_int(smooth, what="saliency: smooth (0 = plain gradient, N = SmoothGrad over "
                       "N noisy copies)", minimum=0)
    if smooth:
        noise = parse_number(noise, what="saliency: noise (standard deviation on the [0, 1] "
                             "scale)", minimum=0.0, allow_zero=False)
    device, dtype = _model_device_dtype(model)
    num_classes = _num_classes(model, device, dtype, x)
    if y is not None:
        y = _check_classes(y, num_classes, "saliency", "y", n=len(x))
    gen = torch.Generator().manual_seed(int(seed))
    out = []
    bar = (progress_bar(total=len(x) * max(smooth, 1), desc="saliency", unit="step", leave=False)
           if progress else None)
    try:
        with _attack_mode(model, True), _autocast(device, amp):
            for i in range(0, len(x), batch_size):
                xb = x[i:i + batch_size].to(device, dtype)
                if y is None:
                    with torch.no_grad():
                        yb = model(xb).argmax(1)
                else:
                    yb = y[i:i + batch_size].to(device)
                objective = CrossEntropy(yb)
                if not smooth:
                    g = input_gradient(model, xb, objective, bn_eval=False)
                    _tick(bar, len(xb))
                else:
                    g = torch.zeros(xb.shape, dtype=torch.float32, device=device)
                    for _ in range(smooth):
                        n = torch.randn(xb.shape, generator=gen).to(device, dtype) * noise
                        g += input_gradient(model, xb + n, objective, bn_eval=False)
                        _tick(bar, len(xb))
                    g /= smooth
                out.append(g)
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(out).to(x.device)


def synthesize(model: nn.Module, target: "int | Sequence[int] | torch.Tensor",
               start: "torch.Tensor | None" = None, *, eps: float | None = None,
               steps: int | None = None, step_size: float | None = None, data: Any = None,
               size: int | None = None, seed: int = 0, keep_best: bool = True,
               batch_size: int = 64, amp: bool | None = None,
               progress: bool = True) -> torch.Tensor:
    """Images the model classifies as ``target`` (class indices, one image per index), grown by
    targeted L2 PGD (minimising the cross-entropy of the target class) from ``start``
    (Santurkar et al. 2019).

    ``start``: (B, C, H, W) images in [0, 1]; default per-class seeds from a Gaussian fitted to
    each target class's own images in ``data`` (``class_seeds``), or uniform noise without
    ``data``. ``data``: ``(images, labels)`` tensors or an iterable of such batches, labels in
    the model's class indices. ``size``: side of generated starts (default: the model entry's
    crop, else its architecture's input size). ε, steps, α: ``DEFAULTS["synthesize"]`` (ε 40,
    60 steps, α 1 at 224 px, scaled to the image size); given ε and/or steps without α,
    α = 2.5·ε/steps (``recipe.default_step_size``, see ``budget``). ``keep_best``: per image
    the iterate with the lowest target loss.
    """
    device, dtype = _model_device_dtype(model)
    num_classes = _num_classes(model, device, dtype, None)
    target = _check_classes(target, num_classes, "synthesize", "target")
    if start is None:
        shape = (len(target),) + _image_shape(model, size)
        if data is not None:
            start = class_seeds(data, target, size=shape[-1], seed=seed)
        else:
            start = _noise(shape, seed)
    else:
        if data is not None:
            raise UsageError("synthesize: pass start= or data=, not both (data= only "
                                      "fits the default class seeds)")
        start = _check_images(start, "synthesize", "start", n=len(target))
    eps, steps, alpha = budget("synthesize", start.shape, eps, steps, step_size)
    objective = lambda idx: CrossEntropy(target[idx].to(device), targeted=True)  # noqa: E731
    return _run(model, start, objective, eps, steps, alpha, keep_best, batch_size, amp,
                progress, "synthesize")


def invert(model: nn.Module, target: torch.Tensor, start: "torch.Tensor | None" = None, *,
           eps: float | None = None, steps: int | None = None, step_size: float | None = None,
           seed: int = 0, keep_best: bool = True, batch_size: int = 64,
           amp: bool | None = None, progress: bool = True) -> torch.Tensor:
    """Images whose penultimate representation matches that of ``target`` (images in [0, 1]),
    found by L2 PGD minimising ‖f(x) − f(target)‖₂ / ‖f(target)‖₂ from ``start`` (default:
    uniform noise drawn from ``seed``; or other images, one per target), as in Engstrom et al.
    2019. ε, steps, α: ``DEFAULTS["invert"]`` (ε 1000, 1000 steps, α 1 at 224 px, scaled to the
    image size); given ε and/or steps without α, α = 2.5·ε/steps (``recipe.default_step_size``,
    see ``budget``): ``invert(m, x, eps=20, steps=200)`` steps by 0.25.
    """
    target = _check_images(target, "invert", "target")
    start = (_noise(tuple(target.shape), seed) if start is None
             else _check_images(start, "invert", "start", n=len(target)))
    if start.shape[1:] != target.shape[1:]:
        raise UsageError(f"invert: start images {tuple(start.shape[1:])} and target "
                                  f"images {tuple(target.shape[1:])} must have the same shape")
    eps, steps, alpha = budget("invert", start.shape, eps, steps, step_size)
    feats = penultimate(model, target, batch_size=batch_size, amp=amp)
    objective = lambda idx: RepresentationDistance(feats[idx])  # noqa: E731
    return _run(model, start, objective, eps, steps, alpha, keep_best, batch_size, amp,
                progress, "invert", features=True)


def visualize_feature(model: nn.Module, unit: "int | Sequence[int] | torch.Tensor",
                      start: "torch.Tensor | None" = None, *, eps: float | None = None,
                      steps: int | None = None, step_size: float | None = None,
                      size: int | None = None, seed: int = 0, keep_best: bool = True,
                      batch_size: int = 64, amp: bool | None = None,
                      progress: bool = True) -> torch.Tensor:
    """Images that maximise penultimate unit(s) ``unit`` by L2 PGD from ``start`` (Engstrom et
    al. 2019). ``unit``: one index, or one per image. ``start``: images (default: uniform noise
    from ``seed``, one per unit). ε, steps, α: ``DEFAULTS["visualize_feature"]`` (ε 1000,
    200 steps, α 1 at 224 px, scaled to the image size); given ε and/or steps without α,
    α = 2.5·ε/steps (``recipe.default_step_size``, see ``budget``).
    """
    device, dtype = _model_device_dtype(model)
    width = _feature_width(model, device, dtype, _image_shape(model, size) if start is None
                           else tuple(start.shape[1:]))
    single = isinstance(unit, int) and not isinstance(unit, bool)
    units = _check_classes([unit] if single else unit, width, "visualize_feature", "unit",
                           kind="penultimate units")
    if start is None:
        start = _noise((len(units),) + _image_shape(model, size), seed)
    else:
        start = _check_images(start, "visualize_feature", "start")
        if single:
            units = units.expand(len(start)).clone()
        elif len(units) != len(start):
            raise UsageError(f"visualize_feature: {len(units)} units for {len(start)} "
                                      "start images; pass one unit, or one per image")
    eps, steps, alpha = budget("visualize_feature", start.shape, eps, steps, step_size)
    objective = lambda idx: FeatureUnit(units[idx].to(device))  # noqa: E731
    return _run(model, start, objective, eps, steps, alpha, keep_best, batch_size, amp,
                progress, "visualize_feature", features=True)


# -- class-conditional seeds ------------------------------------------------------------------

def class_seeds(data: Any, target: "Sequence[int] | torch.Tensor", *, size: int | None = None,
                seed_size: int | None = None, seed: int = 0) -> torch.Tensor:
    """Santurkar et al.'s starting points: for each class in ``target``, a multivariate Gaussian
    (mean and full covariance) fitted to that class's images in ``data`` at a reduced resolution
    ``seed_size`` (default: ``size // 7`` kept within [8, 32]; 32 px for 224-px images, as in the
    paper), sampled, clipped to [0, 1] and upsampled (bilinear) to ``size`` (default: the data's
    own). ``data``: ``(images, labels)`` tensors or an iterable of such batches."""
    target = torch.as_tensor(target).long().flatten().cpu()
    wanted = set(target.tolist())
    pooled: dict[int, list[torch.Tensor]] = {c: [] for c in wanted}
    full = None
    for xb, yb in iter_batches(data):
        xb = _check_images(xb, "class_seeds", "data images")
        yb = torch.as_tensor(yb).cpu()
        if full is None:
            full = int(xb.shape[-1])
            size = size or full
            seed_size = seed_size or min(32, max(8, size // 7), full)
        small = F.interpolate(xb.detach().float().cpu(), size=(seed_size, seed_size),
                              mode="area")
        for c in wanted:
            m = yb == c
            if m.any():
                pooled[c].append(small[m])
    if full is None:
        raise UsageError("class_seeds: data yielded no images")
    gen = torch.Generator().manual_seed(int(seed))
    out = torch.empty((len(target),) + small.shape[1:2] + (size, size))
    for c in sorted(wanted):
        imgs = torch.cat(pooled[c]) if pooled[c] else None
        if imgs is None or len(imgs) < 2:
            raise UsageError(f"class_seeds: data has {0 if imgs is None else len(imgs)} "
                                      f"image(s) of class {c}; fitting its Gaussian needs >= 2")
        flat = imgs.flatten(1).double()
        mean = flat.mean(0)
        cov = torch.cov(flat.T).reshape(flat.shape[1], flat.shape[1])
        evals, evecs = torch.linalg.eigh(cov)       # PSD up to rounding: clamp, then sample
        root = evecs * evals.clamp_min(0).sqrt()
        idx = (target == c).nonzero().flatten()
        z = torch.randn(len(idx), flat.shape[1], generator=gen, dtype=torch.float64)
        samples = (mean + z @ root.T).float().clamp(0, 1).view((len(idx),) + imgs.shape[1:])
        out[idx] = F.interpolate(samples, size=(size, size), mode="bilinear",
                                 align_corners=False).clamp(0, 1)
    return out


# -- shared machinery -------------------------------------------------------------------------

def _run(model, start, objective_for, eps, steps, alpha, keep_best, batch_size, amp, progress,
         what, features: bool = False) -> torch.Tensor:
    device, dtype = _model_device_dtype(model)
    net = Penultimate(model) if features else model
    n_chunks = math.ceil(len(start) / batch_size)
    bar = (progress_bar(total=steps * n_chunks, desc=what, unit="step", leave=False)
           if progress else None)
    out = []
    try:
        with _attack_mode(model, True), _autocast(device, amp):
            for i in range(0, len(start), batch_size):
                idx = torch.arange(i, min(i + batch_size, len(start)))
                xb = start[i:i + batch_size].to(device, dtype)
                step = L2Step(xb.detach().float(), eps, alpha)
                out.append(run_pgd(net, xb, objective_for(idx), step, steps,
                                   keep_best=keep_best, bn_eval=False,
                                   progress=bar if bar is not None else False,
                                   what=what))
    finally:
        if bar is not None:
            bar.close()
    return torch.cat(out).to(start.device, start.dtype)


def _tick(bar, n: int) -> None:
    if bar is not None:
        bar.update(n)


def _autocast(device: torch.device, amp: bool | None):
    """bf16 autocast when ``amp`` (default: on CUDA), else fp32 (``engine.precision``)."""
    enabled = (device.type == "cuda") if amp is None else bool(amp)
    return autocast(device, "bf16" if enabled else "fp32")


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected a model (torch.nn.Module) such as robust_zoo.load "
                                  f"returns, got {type(model).__name__}")
    p = next(model.parameters(), None)
    if p is None:
        return torch.device("cpu"), torch.float32
    return p.device, (p.dtype if p.is_floating_point() else torch.float32)


def _check_images(x: Any, function: str, what: str = "x", n: int | None = None) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise UsageError(
            f"{function}: {what} must be a floating-point tensor of images (B, C, H, W) in "
            f"[0, 1], got {type(x).__name__}{tuple(getattr(x, 'shape', ()))}")
    if n is not None and len(x) != n:
        raise UsageError(f"{function}: {what} has {len(x)} images, expected {n} "
                                  "(one per target)")
    if len(x) == 0:
        raise UsageError(f"{function}: {what} holds no images")
    lo, hi = torch.stack(torch.aminmax(x.detach())).float().tolist()
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -1e-6 or hi > 1 + 1e-6:
        raise UsageError(
            f"{function}: {what} must be images in [0, 1] (the models normalise inside), got "
            f"values in [{lo:.4g}, {hi:.4g}]; pass un-normalised images, e.g. "
            "entry.transforms() without normalize=True")
    return x.detach()


def _check_classes(v: Any, limit: int, function: str, what: str, n: int | None = None,
                   kind: str = "classes") -> torch.Tensor:
    try:
        t = torch.as_tensor(v)
    except (TypeError, ValueError, RuntimeError):
        t = None
    if (t is None or t.is_floating_point() or t.is_complex() or t.dtype == torch.bool
            or t.ndim > 1 or t.numel() == 0):
        raise UsageError(f"{function}: {what} must be an int or a 1-D sequence of ints "
                                  f"(indices of {kind}), got {v!r}")
    t = t.long().flatten()
    bad = t[(t < 0) | (t >= limit)]
    if bad.numel():
        raise UsageError(f"{function}: {what} {bad[0].item()} is out of range: the "
                                  f"model has {limit} {kind} (0..{limit - 1})")
    if n is not None and len(t) != n:
        raise UsageError(f"{function}: {what} has {len(t)} entries for {n} images; "
                                  "pass one per image")
    return t


def _num_classes(model, device, dtype, x) -> int:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int) and n > 0:
        return n
    head = get_head(model)
    last = head[-1] if isinstance(head, nn.Sequential) else head
    if isinstance(last, nn.Linear):
        return last.out_features
    shape = tuple(x.shape[1:]) if x is not None else _image_shape(model, None)
    with _attack_mode(model, True), torch.no_grad():
        return int(model(torch.zeros((1,) + shape, device=device, dtype=dtype)).shape[1])


def _feature_width(model, device, dtype, shape) -> int:
    head = get_head(model)
    first = head[0] if isinstance(head, nn.Sequential) else head
    if isinstance(first, nn.Linear):
        return first.in_features
    with _attack_mode(model, True), torch.no_grad():
        return int(Penultimate(model)(torch.zeros((1,) + tuple(shape), device=device,
                                                  dtype=dtype)).shape[1])


def _image_shape(model: nn.Module, size: int | None) -> tuple[int, int, int]:
    """(3, size, size): ``size`` given, else the model's own input size (its entry's crop, else
    its architecture's, ``models.robust_model.input_size``)."""
    if size is None:
        size = input_size(model)
    else:
        size = parse_int(size, what="size (pixels)", minimum=1)
    return (3, size, size)


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(int(seed)))
