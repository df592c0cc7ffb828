"""Recipes: what a training or fine-tuning run does, as typed data.

One family of dataclasses. The parts every run shares have one home each, and both the training
``Recipe`` and the transfer ``TransferConfig`` are built from them:

* ``OptimizerSettings``: optimizer, lr, momentum, weight decay;
* ``ScheduleSettings``: epochs and the learning-rate schedule;
* ``PrecisionSettings``: fp32 or bf16 autocast;
* ``AttackSettings``: the training attack (norm, ε, PGD steps, step size, start, keep-best).

Choices are ``Literal`` types; ``choices(T)`` lists them, and the command lines build their
``choices=`` from it, so a value a CLI offers is always one the recipe accepts. Every field is
checked when a recipe is made (``RecipeError`` names the field, the value and what is valid).

Values that the upstream sources do not document are ``None`` and named in ``unknown``; values
from a secondary or recalled source are named in ``unconfirmed``; ``source`` says where values
come from (a string, or a mapping from field names to their source). Nothing is invented: a
trainer that needs an unknown value uses the defaults below and says so.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_args

from .errors import RobustZooError
from .naming import check_norm

Norm = Literal["l2", "linf"]
OptimizerName = Literal["sgd"]
Schedule = Literal["step", "cosine", "constant"]
Precision = Literal["fp32", "bf16"]
Augmentation = Literal["robustness-imagenet", "robustness-cifar", "flip-crop", "none"]
# how ImageFolder training images are decoded and augmented (a run option, not a recipe field:
# every choice draws the same augmentation; robust_zoo.data.training documents them)
Decoder = Literal["pil", "tensor", "nvjpeg"]


class RecipeError(RobustZooError, ValueError):
    """A recipe value that is not valid, or a recipe that cannot be run as given."""


def choices(tp: Any) -> tuple[str, ...]:
    """The values of a ``Literal`` type (``Optional`` stripped)."""
    args = get_args(tp)
    if args and typing.get_origin(tp) is Literal:
        return tuple(args)
    out: list[str] = []
    for a in args:
        out += [v for v in choices(a) if v not in out]
    return tuple(out)


def field_choices(cls: type, name: str) -> tuple[str, ...]:
    """The allowed values of dataclass field ``name`` of ``cls`` (empty if it is no choice)."""
    return choices(typing.get_type_hints(cls)[name])


def default_step_size(eps: float, steps: int) -> float:
    """α = 2.5·ε/steps: the ``robustness`` README's evaluation convention (enough to cross the
    ball and come back). The library itself has no default step size."""
    return 2.5 * float(eps) / int(steps) if steps else 0.0


# field -> (minimum, minimum allowed?, maximum, maximum allowed?)
_BOUNDS: dict[str, tuple[float | None, bool, float | None, bool]] = {
    "lr": (0.0, False, None, True), "momentum": (0.0, True, 1.0, False),
    "weight_decay": (0.0, True, None, True), "lr_gamma": (0.0, False, None, True),
    "label_smoothing": (0.0, True, 1.0, False), "eps": (0.0, True, None, True),
    "attack_step_size": (0.0, False, None, True), "epochs": (1, True, None, True),
    "lr_step": (1, True, None, True), "batch_size": (1, True, None, True),
    "attack_steps": (0, True, None, True), "input_size": (8, True, None, True),
    "num_classes": (1, True, None, True), "seed": (0, True, None, True),
}


def _check_value(name: str, value: Any, tp: Any) -> Any:
    """``value`` checked against the field's annotation and bounds; returns it normalised."""
    if value is None:
        return None
    opts = choices(tp)
    if opts:
        v = str(value).lower()
        if v not in opts:
            raise RecipeError(f"{name}={value!r} is not valid; choose one of {', '.join(opts)}")
        return v
    kinds = {a for a in (get_args(tp) or (tp,)) if a is not type(None)}
    if bool in kinds:
        if not isinstance(value, bool):
            raise RecipeError(f"{name} must be true or false, got {value!r}")
        return value
    if int in kinds:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise RecipeError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    elif float in kinds:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise RecipeError(f"{name} must be a finite number, got {value!r}")
    else:
        return value
    lo, lo_ok, hi, hi_ok = _BOUNDS.get(name, (None, True, None, True))
    if lo is not None and (value < lo or (value == lo and not lo_ok)):
        raise RecipeError(f"{name} must be {'>=' if lo_ok else '>'} {lo:g}, got {value!r}")
    if hi is not None and (value > hi or (value == hi and not hi_ok)):
        raise RecipeError(f"{name} must be {'<=' if hi_ok else '<'} {hi:g}, got {value!r}")
    return value


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of ``cls``, once per class (resolving them takes milliseconds,
    and a study plans thousands of configs)."""
    return typing.get_type_hints(cls)


class _Checked:
    """Validates every field from its annotation when the dataclass is made."""

    def __post_init__(self) -> None:
        hints = _hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            if f.name in ("unknown", "unconfirmed", "source", "hidden"):
                continue
            setattr(self, f.name, _check_value(f.name, getattr(self, f.name), hints[f.name]))


@dataclass(kw_only=True)
class OptimizerSettings(_Checked):
    optimizer: OptimizerName | None = "sgd"
    lr: float | None = 0.1
    momentum: float | None = 0.9
    weight_decay: float | None = 1e-4       # every parameter, BN and biases included (robustness)


@dataclass(kw_only=True)
class ScheduleSettings(_Checked):
    epochs: int | None = 90
    # step: ×lr_gamma every lr_step epochs | cosine | constant
    lr_schedule: Schedule | None = "step"
    lr_step: int | None = 30
    lr_gamma: float | None = 0.1


@dataclass(kw_only=True)
class PrecisionSettings(_Checked):
    precision: Precision | None = "fp32"    # bf16: autocast; None: unknown / the run's default


@dataclass(kw_only=True)
class AttackSettings(_Checked):
    norm: Norm = "l2"
    eps: float = 0.0                        # [0, 1] pixel units (Linf 4/255 = 0.01568...)
    attack_steps: int | None = 3
    attack_step_size: float | None = None   # None: default_step_size (2.5·ε/steps)
    random_start: bool | None = False
    # keep the highest-loss PGD iterate (robustness' use_best)
    keep_best: bool | None = True
    bn_eval_during_attack: bool | None = True

    def __post_init__(self) -> None:
        self.norm = check_norm(self.norm)
        super().__post_init__()
        # L2 ε is a raw norm of a [0, 1] image (3.0 is common); only Linf is bounded by 1.
        if self.norm == "linf" and self.eps > 1:
            raise RecipeError(
                f"eps={self.eps:g} makes no sense for linf: ε is in pixel units of images in "
                f"[0, 1] (Linf 4/255 = 0.0157). Did you mean {self.eps:g}/255?")

    @property
    def adversarial(self) -> bool:
        return float(self.eps) > 0 and (self.attack_steps or 0) > 0

    @property
    def step_size(self) -> float:
        if self.attack_step_size is not None:
            return float(self.attack_step_size)
        return default_step_size(self.eps, self.attack_steps or 1)

    def attack_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``robust_zoo.attacks.pgd`` for this training attack."""
        return dict(norm=self.norm, eps=float(self.eps), steps=int(self.attack_steps or 0),
                    step_size=self.step_size, random_start=bool(self.random_start),
                    keep_best=bool(self.keep_best), bn_eval=bool(self.bn_eval_during_attack))


# Names a recipe file may still use for a field.
_LEGACY = {"use_best": "keep_best"}
META_FIELDS = ("unknown", "unconfirmed", "source")


@dataclass(kw_only=True)
class Recipe(AttackSettings, OptimizerSettings, ScheduleSettings, PrecisionSettings):
    """A training run: architecture and data plus the shared settings above."""

    arch: str
    dataset: str = "imagenet"
    num_classes: int = 1000
    input_size: int = 224
    batch_size: int | None = 512            # global batch, whatever the world size
    augmentation: Augmentation | None = "robustness-imagenet"
    label_smoothing: float | None = 0.0
    seed: int | None = 0
    unknown: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    source: str | dict[str, str] | None = None

    # -- what the trainer needs
    def require_complete(self) -> None:
        """Refuse a recipe whose values the trainer needs are unknown (None)."""
        needed = ["epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
                  "lr_schedule", "augmentation", "precision", "seed", "keep_best",
                  "random_start", "bn_eval_during_attack", "label_smoothing"]
        if self.lr_schedule == "step":
            needed += ["lr_step", "lr_gamma"]
        if self.eps > 0:
            needed.append("attack_steps")
        missing = [f for f in needed if getattr(self, f) is None]
        if missing:
            flags = " ".join(f"--{f.replace('_', '-')} VALUE" for f in missing)
            raise RecipeError(f"Recipe fields {', '.join(missing)} have no value (unknown); give "
                              f"them on the command line: {flags}")
        if self.eps > 0 and int(self.attack_steps) < 1:
            raise RecipeError(f"eps={self.eps:g} > 0 needs attack_steps >= 1 (got "
                              f"{self.attack_steps}); for standard training pass --eps 0")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: d[k] for k in FIELD_ORDER}

    @classmethod
    def field_names(cls) -> list[str]:
        return list(FIELD_ORDER)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        if not isinstance(d, dict):
            raise RecipeError(f"A recipe is a JSON object of fields, got {type(d).__name__}")
        d = {_LEGACY.get(k, k): v for k, v in d.items()}
        names = set(cls.field_names())
        extra = sorted(set(d) - names)
        if extra:
            raise RecipeError(f"Unknown recipe fields {extra}; valid fields: {sorted(names)}")
        if "arch" not in d:
            raise RecipeError("A recipe needs an 'arch' field")
        return cls(**d)

    def diff(self, other: "Recipe", ignore: tuple[str, ...] = META_FIELDS
             ) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: {name: (self, other)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}


# The order of fields in recipe files and on the command line (dataclass inheritance would put
# the shared parts first).
FIELD_ORDER = (
    "arch", "norm", "eps", "dataset", "num_classes", "input_size", "epochs", "batch_size",
    "optimizer", "lr", "momentum", "weight_decay", "lr_schedule", "lr_step", "lr_gamma",
    "attack_steps", "attack_step_size", "random_start", "keep_best", "bn_eval_during_attack",
    "augmentation", "label_smoothing", "precision", "seed", "unknown", "unconfirmed", "source")
assert set(FIELD_ORDER) == {f.name for f in fields(Recipe)}
