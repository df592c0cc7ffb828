"""Training behind the network (full fine-tuning, ResNet freeze levels, the fixed-feature head
trained behind the frozen network) and prediction, on the package's one engine.

Runs as one process or under ``torchrun`` (DDP; NCCL on CUDA, Gloo on CPU). The global batch is
the recipe's (64), split across processes. On CUDA the defaults are bf16 autocast and
channels_last. A checkpoint (``robust_zoo.engine.checkpoint``) is written after every epoch, and
at the step where the scheduler's warning signal or SIGTERM arrives (``engine.preemption``), so
``resume=True`` picks up where the run stopped with the same optimizer, schedule, RNG states and
data order.

Data order and augmentation follow ``robust_zoo.data.sampling``, as in training: epoch ``e``
visits the training set in ``epoch_permutation(n, seed, e)`` order and every sample's
augmentation is drawn from its own seed (``sample_seed``). The cached-feature head trainer draws
the same permutation, which is what makes the two paths comparable.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..console import progress as progress_bar
from ..data.common import Loader
from ..data.sampling import ResumableSampler, SeededDataset
from ..engine.distributed import Dist, barrier
from ..engine import checkpoint as ckpt
from ..engine import preemption
from ..engine.loop import Trainer, TrainStats, predict
from ..engine.optim import build_optimizer, build_scheduler
from ..engine.precision import channels_last_default, compile_model, resolve_precision

__all__ = ["accuracy_metrics", "predict_dataset", "train_network", "make_loader"]


# ----------------------------------------------------------------------------- metrics

def accuracy_metrics(preds: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Top-1 and per-class mean accuracy (%), the paper's two metrics.

    Per-class mean accuracy averages the accuracy of each class present in ``labels``; it equals
    the paper code's "weighted prec1" (each example weighted by N / (C · n_class)).
    """
    preds, labels = preds.cpu().long(), labels.cpu().long()
    if labels.numel() == 0:
        raise ValueError("No test examples to evaluate on")
    correct = (preds == labels).float()
    classes = labels.unique()
    per_class = torch.stack([correct[labels == c].mean() for c in classes])
    return {"top1": 100.0 * correct.mean().item(),
            "mean_per_class": 100.0 * per_class.mean().item(),
            "n": int(labels.numel())}


def make_loader(ds: Dataset, batch_size: int, workers: int, device: torch.device,
                **kw) -> DataLoader:
    return Loader(ds, batch_size=batch_size, num_workers=workers,
                  pin_memory=device.type == "cuda", persistent_workers=False, **kw)


def predict_dataset(model: nn.Module, ds: Dataset, *, batch_size: int = 256, workers: int = 0,
                    dist: Dist | None = None, precision: str | None = "fp32",
                    channels_last: bool = False, progress: bool = False, desc: str = "eval"
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels, true labels) on ``ds``; under DDP every process gets all of them."""
    dist = dist or Dist()
    idx = list(range(dist.rank, len(ds), dist.world_size))
    part = Subset(ds, idx) if dist.enabled else ds
    p, t = predict(model, make_loader(part, batch_size, workers, dist.device),
                   device=dist.device, precision=resolve_precision(precision, dist.device),
                   channels_last=channels_last,
                   progress=lambda it: progress_bar(it, enabled=progress and dist.is_main,
                                                     leave=False, desc=desc))
    if dist.enabled:
        gathered: list = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, (idx, p, t))
        order = torch.tensor([i for g in gathered for i in g[0]])
        p = torch.cat([g[1] for g in gathered])[order.argsort()]
        t = torch.cat([g[2] for g in gathered])[order.argsort()]
    return p, t


# ----------------------------------------------------------------------------- training

def train_network(model: nn.Module, train_ds: Dataset, cfg, *, dist: Dist | None = None,
                  workers: int = 0, checkpoint: Path | None = None, resume: bool = False,
                  progress: bool = True, test_ds: Dataset | None = None,
                  log: Callable = print, on_epoch_end=None) -> dict[str, Any]:
    """Train ``model``'s trainable parameters with the recipe in ``cfg`` (a TransferConfig with
    ``lr`` resolved); returns timing and per-epoch history. ``model`` is trained in place.

    ``checkpoint`` is the run folder (or file) whose checkpoint is written after every epoch,
    and at the step where the scheduler's signal came (the run then stops: ``preemption``);
    ``on_epoch_end(epoch, record)`` is called after it is written.
    """
    dist = dist or Dist()
    dev = dist.device
    precision = resolve_precision(cfg.precision, dev)
    cl = channels_last_default(dev, cfg.channels_last)
    if cfg.batch_size % dist.world_size:
        raise ValueError(
            f"batch size {cfg.batch_size} is not divisible by {dist.world_size} processes")
    model.to(dev)
    if cl:
        model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model.parameters(), cfg)
    sched = build_scheduler(opt, cfg)
    at = _Position()
    if resume and checkpoint is not None and ckpt.exists(checkpoint):
        at = _resume(checkpoint, model, opt, sched, cfg, dist, log)
    trainer = _trainer(model, opt, cfg, dist, precision, cl)
    sampler, loader = _train_loader(train_ds, cfg, dist, workers)
    save = functools.partial(ckpt.save_run, checkpoint, dist, kind="transfer", model=model,
                             optimizer=opt, scheduler=sched, recipe=cfg.to_dict())
    steps = -(-sampler.num_samples // sampler.batch_size)      # the last batch may be short
    stop = preemption.watch(dist) if checkpoint is not None else None
    first, t0 = at.epoch, time.perf_counter()
    with stop or contextlib.nullcontext():
        for epoch in range(first, cfg.epochs):
            sampler.set_epoch(epoch, at.step)
            bar = progress_bar(loader, enabled=progress and dist.is_main, leave=False,
                               desc=f"epoch {epoch + 1}/{cfg.epochs}")
            at_step = _StopAtStep(stop, save, at, epoch, steps, log) if stop else None
            stats = trainer.train_one_epoch(bar, start_step=at.step, stats=at.stats,
                                            after_step=at_step, where=f"epoch {epoch + 1}")
            sched.step()
            at = _Position(epoch + 1, history=at.history)
            rec = _epoch_record(model, stats.all_reduce(dist), epoch, opt, cfg, test_ds, dist,
                                precision, cl, workers)
            at.history.append(rec)
            if checkpoint is not None:
                save(epoch=epoch + 1, step=0, history=at.history)
            if dist.is_main and not progress:
                log(f"epoch {epoch + 1}/{cfg.epochs} loss {rec['train_loss']:.4f}")
            barrier(dist)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, rec)
            if stop is not None and epoch + 1 < cfg.epochs and stop.requested():
                stop.stop_here(f"after epoch {epoch + 1}", log)
    if cl:
        model.to(memory_format=torch.contiguous_format)
    return {"train_s": time.perf_counter() - t0, "history": at.history, "start_epoch": first,
            "precision": precision, "channels_last": cl}


def _epoch_record(model: nn.Module, stats: TrainStats, epoch: int, opt, cfg,
                  test_ds: Dataset | None, dist: Dist, precision: str, cl: bool,
                  workers: int) -> dict[str, Any]:
    """The finished epoch's record: loss, lr, and test accuracy where ``cfg.eval_every`` asks
    for it (not after the last epoch: the run's result measures that)."""
    rec = {"epoch": epoch + 1, "train_loss": stats.loss, "lr": opt.param_groups[0]["lr"]}
    if test_ds is not None and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 \
            and epoch + 1 < cfg.epochs:
        p, t = predict_dataset(model, test_ds, dist=dist, precision=precision,
                               channels_last=cl, workers=workers)
        rec.update({f"test_{k}": v for k, v in accuracy_metrics(p, t).items() if k != "n"})
    return rec


@dataclasses.dataclass
class _Position:
    """Where a run is: ``epoch`` epochs done and ``step`` steps of the next one, with that
    epoch's loss sums so far (on rank 0; the sums over the ranks) and the finished epochs'
    records."""
    epoch: int = 0
    step: int = 0
    stats: TrainStats = dataclasses.field(default_factory=TrainStats)
    history: list = dataclasses.field(default_factory=list)


class _StopAtStep:
    """``after_step`` of one epoch: when the scheduler's signal has come (``preemption``;
    every rank asks at every step), write the checkpoint at this step and hand the job over."""

    def __init__(self, stop: preemption.Watch, save: Callable, at: _Position, epoch: int,
                 steps: int, log: Callable):
        self.watch, self.save, self.at, self.epoch, self.steps, self.log = \
            stop, save, at, epoch, steps, log

    def __call__(self, step: int, x, y, running) -> None:
        if step + 1 == self.steps or not self.watch.requested():
            return
        sums = running.stats(step=step + 1).all_reduce(self.watch.d)
        self.save(epoch=self.epoch, step=step + 1, epoch_stats=sums.to_list(),
                  history=self.at.history)
        self.watch.stop_here(f"at step {step + 1}/{self.steps} of epoch {self.epoch + 1}",
                             self.log)


def _resume(checkpoint: Path, model: nn.Module, opt, sched, cfg, dist: Dist,
            log: Callable) -> _Position:
    """Where the run's checkpoint is, its states restored into the run."""
    state, used = ckpt.load(checkpoint, kind="transfer")
    at = _Position(int(state["epoch"]), int(state.get("step", 0)),
                   history=list(state.get("history", [])))
    if dist.is_main and "epoch_stats" in state:      # the sums over ranks live on rank 0
        at.stats = TrainStats.from_list(state["epoch_stats"])
    ckpt.restore(state, dist, model=model, optimizer=opt, scheduler=sched,
                 reseed=cfg.seed * 100_003 + at.epoch * 101 + at.step)
    now = cfg.to_dict()
    changed = {k: (v, now.get(k)) for k, v in state.get("recipe", {}).items()
               if k not in ("epochs", "eval_every", "compile") and now.get(k) != v}
    if dist.is_main:
        if changed:
            warnings.warn(f"Resuming {used} with a different recipe: {changed}")
        where = f", step {at.step}" if at.step else ""
        log(f"resumed from {used} after epoch {at.epoch}/{cfg.epochs}{where}")
    return at


def _trainer(model: nn.Module, opt, cfg, dist: Dist, precision: str, cl: bool) -> Trainer:
    net = compile_model(model, dist.device) if cfg.compile else model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[dist.device.index] if dist.device.type == "cuda" else None)
    return Trainer(model, opt, device=dist.device, precision=precision, channels_last=cl,
                   train_model=net)


def _train_loader(train_ds: Dataset, cfg, dist: Dist, workers: int
                  ) -> tuple[ResumableSampler, DataLoader]:
    per_rank = cfg.batch_size // dist.world_size
    sampler = ResumableSampler(train_ds, num_replicas=dist.world_size, rank=dist.rank,
                               seed=cfg.seed, batch_size=per_rank)
    loader = make_loader(SeededDataset(train_ds), per_rank, workers, dist.device,
                         sampler=sampler, generator=torch.Generator().manual_seed(cfg.seed))
    return sampler, loader
