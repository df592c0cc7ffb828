"""The training recipe: one typed object, stored with every run and in every manifest entry.

Values that the upstream sources do not document are ``None`` and named in ``unknown``; values
that come from a secondary or recalled source are named in ``unconfirmed``. Nothing is invented:
a trainer that needs an unknown value uses the default below and says so.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from .naming import check_norm


@dataclass
class Recipe:
    arch: str
    norm: str = "l2"
    eps: float = 0.0                       # [0, 1] pixel units (Linf 4/255 = 0.01568...)
    dataset: str = "imagenet"
    num_classes: int = 1000
    input_size: int = 224
    epochs: int | None = 90
    batch_size: int | None = 512           # global batch, whatever the world size
    optimizer: str | None = "sgd"
    lr: float | None = 0.1
    momentum: float | None = 0.9
    weight_decay: float | None = 1e-4
    lr_schedule: str | None = "step"       # "step" (×lr_gamma every lr_step epochs) | "cosine"
    lr_step: int | None = 30
    lr_gamma: float | None = 0.1
    attack_steps: int | None = 3
    attack_step_size: float | None = None  # None: 2.5·ε/steps (robustness' convention)
    random_start: bool | None = False
    use_best: bool | None = True           # keep the highest-loss PGD iterate
    bn_eval_during_attack: bool | None = True
    augmentation: str | None = "robustness-imagenet"
    label_smoothing: float | None = 0.0
    precision: str | None = "fp32"         # "fp32" | "bf16" | "fp16"
    seed: int | None = 0
    unknown: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    source: str | None = None

    def __post_init__(self) -> None:
        self.norm = check_norm(self.norm)
        eps = float(self.eps)
        # L2 ε is a raw norm of a [0, 1] image (3.0 is common); only Linf is bounded by 1.
        if not eps >= 0 or (self.norm == "linf" and eps > 1):
            raise ValueError(
                f"eps={self.eps} makes no sense for {self.norm}: ε is in pixel units "
                "of images in [0, 1] (Linf 4/255 = 0.0157; L2 is a raw norm, e.g. 3.0)")
        self.eps = eps
        for name in ("epochs", "batch_size", "attack_steps"):
            v = getattr(self, name)
            if v is not None and int(v) < (0 if name == "attack_steps" else 1):
                raise ValueError(f"{name} must be a positive integer, got {v}")

    @property
    def adversarial(self) -> bool:
        return float(self.eps) > 0 and (self.attack_steps or 0) > 0

    @property
    def step_size(self) -> float:
        if self.attack_step_size is not None:
            return float(self.attack_step_size)
        steps = self.attack_steps or 1
        return 2.5 * float(self.eps) / steps

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        names = {f.name for f in fields(cls)}
        extra = sorted(set(d) - names)
        if extra:
            raise ValueError(f"Unknown recipe fields {extra}; valid fields: {sorted(names)}")
        return cls(**d)

    def diff(self, other: "Recipe", ignore: tuple[str, ...] = ("unknown", "unconfirmed", "source")
             ) -> dict[str, tuple[Any, Any]]:
        """Fields whose values differ: {name: (self, other)}."""
        a, b = self.to_dict(), other.to_dict()
        return {k: (a[k], b[k]) for k in a if k not in ignore and a[k] != b[k]}

