"""One training step and one epoch, for every kind of run.

The robustness recipe: the loss is cross-entropy on the adversarial examples only; the attack
(PGD from ``robust_zoo.attacks``, input-only gradients) runs on the model without its DDP
wrapper, so the reducer never sees its forwards, with BN in eval mode when the recipe says so.
With no attack (ε = 0: standard training, full fine-tuning, a head behind a frozen network) the
step is the plain supervised step. Loss and accuracy are summed on the device and read only when
the caller asks (``TrainStats``), so a step costs no host synchronisation.
"""
from __future__ import annotations

import math
from dataclasses import asdict, astuple, dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd
from ..errors import RobustZooError
from ..models.robust_model import eval_mode, unwrap_parallel
from .precision import autocast

__all__ = ["Trainer", "TrainStats", "TrainingDivergedError", "predict"]


class TrainingDivergedError(RobustZooError, FloatingPointError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class TrainStats:
    """Sums over the examples a run has trained on: ``loss_sum`` (loss × examples),
    ``correct`` and ``n`` on the trained inputs, and ``clean_correct``/``clean_n`` on the clean
    inputs of the steps where clean accuracy was measured. Adds and subtracts like counts."""

    loss_sum: float = 0.0
    correct: float = 0.0
    n: float = 0.0
    clean_correct: float = 0.0
    clean_n: float = 0.0

    def __add__(self, other: "TrainStats") -> "TrainStats":
        return TrainStats(*(a + b for a, b in zip(astuple(self), astuple(other))))

    def __sub__(self, other: "TrainStats") -> "TrainStats":
        return TrainStats(*(a - b for a, b in zip(astuple(self), astuple(other))))

    def to_list(self) -> list[float]:
        return [float(v) for v in astuple(self)]

    @classmethod
    def from_list(cls, values: Iterable[float]) -> "TrainStats":
        return cls(*(float(v) for v in values))

    def all_reduce(self, dist) -> "TrainStats":
        from .distributed import all_reduce_sum

        return TrainStats.from_list(all_reduce_sum(dist, self.to_list()))

    @property
    def loss(self) -> float:
        return self.loss_sum / self.n if self.n else float("nan")

    @property
    def acc(self) -> float:
        return 100.0 * self.correct / self.n if self.n else float("nan")

    @property
    def clean_acc(self) -> float | None:
        return 100.0 * self.clean_correct / self.clean_n if self.clean_n else None


class Trainer:
    """A model, its optimizer and how one step trains it.

    ``model`` is what is trained (a ``RobustModel`` or any module taking [0, 1] images);
    ``train_model`` is what runs the trained forward (the DDP-wrapped and/or compiled model;
    default ``model``) and ``attack_model`` what the attack differentiates (default:
    ``train_model`` without its DDP wrapper). ``attack`` is a ``recipe.AttackSettings`` (None or
    ε = 0: no attack). ``precision`` is "fp32" or "bf16" (autocast); the loss is computed in fp32.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *,
                 device: torch.device, attack=None, precision: str = "fp32",
                 channels_last: bool = False, label_smoothing: float = 0.0,
                 train_model: nn.Module | None = None, attack_model: nn.Module | None = None):
        self.model, self.optimizer = model, optimizer
        self.device = torch.device(device)
        self.train_model = train_model if train_model is not None else model
        self.attack_model = (attack_model if attack_model is not None
                             else unwrap_parallel(self.train_model))
        self.attack = attack if attack is not None and attack.adversarial else None
        self.attack_kwargs = self.attack.attack_kwargs() if self.attack is not None else None
        self.precision, self.channels_last = precision, bool(channels_last)
        self.label_smoothing = float(label_smoothing or 0.0)

    # ------------------------------------------------------------------ one step
    def to_device(self, x: torch.Tensor, y) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.to(self.device, non_blocking=True)
        y = torch.as_tensor(y).to(self.device, non_blocking=True)
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y

    def inputs(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The inputs the step trains on: PGD examples at (x, y), or ``x`` with no attack."""
        if self.attack_kwargs is None:
            return x
        return pgd(self.attack_model, x, y, **self.attack_kwargs)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Attack, forward, backward, update. Returns (mean loss, #correct on the trained
        inputs) as device tensors, so the caller decides when to synchronize."""
        with autocast(x.device, self.precision):
            x_in = self.inputs(x, y)
            logits = self.train_model(x_in)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), (logits.detach().argmax(1) == y).sum()

    @torch.no_grad()
    def clean_correct(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """#correct on clean inputs, in eval mode (running BN statistics are not touched)."""
        with eval_mode(self.attack_model), autocast(x.device, self.precision):
            return (self.attack_model(x).argmax(1) == y).sum()

    # ------------------------------------------------------------------ one epoch
    def train_one_epoch(self, loader: Iterable, *, start_step: int = 0,
                        stats: TrainStats | None = None,
                        after_step: Callable[[int, torch.Tensor, torch.Tensor, "Running"], None]
                        | None = None, where: str = "") -> TrainStats:
        """Train on every batch of ``loader`` (the model in train mode; frozen parts stay as
        ``freeze`` pinned them). ``stats`` continues an interrupted epoch's sums; ``start_step``
        numbers the first batch. ``after_step(step, x, y, running)`` runs after each step with
        the running sums (``running.stats()`` reads them, one synchronisation;
        ``running.add_clean(x, y)`` measures clean accuracy on the batch).
        Raises ``TrainingDivergedError`` when the loss is NaN or infinite (checked whenever the
        sums are read, and at the end of the epoch)."""
        self.train_model.train()
        running = Running(self, stats or TrainStats(), where)
        step = start_step - 1
        for step, (x, y) in enumerate(loader, start=start_step):
            x, y = self.to_device(x, y)
            loss, correct = self.train_step(x, y)
            running.add(loss * len(y), correct, len(y))
            if after_step is not None:
                after_step(step, x, y, running)
        return running.stats(step=step + 1)


class Running:
    """The running sums of an epoch (``TrainStats``' fields), kept on the device."""

    def __init__(self, trainer: Trainer, start: TrainStats, where: str):
        self.trainer, self.where = trainer, where
        dev = trainer.device
        self._sums = {k: torch.tensor(v, dtype=torch.float64, device=dev)
                      for k, v in asdict(start).items()}

    def add(self, loss_sum, correct, n) -> None:
        self._sums["loss_sum"] += loss_sum
        self._sums["correct"] += correct
        self._sums["n"] += n
        self._last_correct = correct

    def add_clean(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Count clean accuracy on the batch just trained (its own count with no attack)."""
        attacked = self.trainer.attack is not None
        self._sums["clean_correct"] += (self.trainer.clean_correct(x, y) if attacked
                                        else self._last_correct)
        self._sums["clean_n"] += len(y)

    def stats(self, step: int | None = None) -> TrainStats:
        s = TrainStats(**{k: float(v) for k, v in self._sums.items()})
        if not math.isfinite(s.loss_sum):
            at = f" at {self.where}" if self.where else ""
            at += f", step {step}" if step is not None else ""
            raise TrainingDivergedError(
                f"The training loss became {s.loss_sum / max(s.n, 1):g}{at}: the run diverged. "
                "Lower the learning rate (--lr) or check the data; nothing after the last "
                "checkpoint was kept")
        return s


@torch.no_grad()
def predict(model: nn.Module, loader: Iterable, *, device: torch.device,
            precision: str = "fp32", channels_last: bool = False,
            progress: Callable[[Iterable], Iterable] | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels, true labels) of ``model`` in eval mode over ``loader`` (the mode of
    every submodule is restored afterwards)."""
    preds, labels = [], []
    with eval_mode(model):
        for x, y in (progress(loader) if progress else loader):
            x = x.to(device, non_blocking=True)
            if channels_last and x.ndim == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, precision):
                out = model(x)
            preds.append(out.argmax(1).cpu())
            labels.append(torch.as_tensor(y))
    p = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    t = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
    return p, t
