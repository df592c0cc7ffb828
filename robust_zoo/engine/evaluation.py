"""Clean and robust accuracy over a loader: counts that add and all-reduce."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from ..attacks import _attack_mode, correct_under_attack


@dataclass(frozen=True)
class EvalResult:
    n: int = 0
    clean: int = 0
    pgd: int | None = None
    autoattack: int | None = None

    def __add__(self, o: "EvalResult") -> "EvalResult":
        add = lambda a, b: None if a is None and b is None else (a or 0) + (b or 0)  # noqa: E731
        return EvalResult(self.n + o.n, self.clean + o.clean, add(self.pgd, o.pgd),
                          add(self.autoattack, o.autoattack))

    def all_reduce(self, dist) -> "EvalResult":
        from ..distributed import all_reduce_sum

        vals = all_reduce_sum(dist, [self.n, self.clean, self.pgd or 0, self.autoattack or 0])
        n, c, p, a = (int(v) for v in vals)
        return EvalResult(n, c, None if self.pgd is None else p,
                          None if self.autoattack is None else a)

    def _pct(self, k):
        return None if k is None or not self.n else 100.0 * k / self.n

    @property
    def clean_top1(self):
        return self._pct(self.clean)

    @property
    def pgd_top1(self):
        return self._pct(self.pgd)

    @property
    def autoattack_top1(self):
        return self._pct(self.autoattack)


def evaluate_loader(model: nn.Module, loader: Iterable, *, norm: str, eps: float, steps: int,
                    step_size: float | None = None, restarts: int = 1, random_start: bool = False,
                    keep_best: bool = True, autoattack: Callable | None = None,
                    device: torch.device, limit: int | None = None, precision: str = "fp32",
                    progress: bool = False, desc: str = "evaluate") -> EvalResult:
    attacking = eps > 0 and steps > 0
    n = c = p = a = 0
    with _attack_mode(model, True):
        for x, y in loader:
            if limit is not None:
                keep = max(0, min(len(y), limit - n))
                if keep == 0:
                    break
                x, y = x[:keep], y[:keep]
            x, y = x.to(device).float(), torch.as_tensor(y).to(device)
            if attacking:
                clean, robust = correct_under_attack(model, x, y, norm=norm, eps=eps,
                                                     steps=steps, step_size=step_size,
                                                     restarts=restarts, random_start=random_start,
                                                     keep_best=keep_best)
            else:
                with torch.no_grad():
                    clean = model(x).argmax(1) == y
                robust = clean
            n += len(y)
            c += int(clean.sum())
            p += int(robust.sum())
            if autoattack is not None:
                a += int((clean & autoattack(x, y)).sum())
    return EvalResult(n, c, p if attacking else None, a if autoattack is not None else None)
