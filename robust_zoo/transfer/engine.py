"""Training and evaluation loops shared by full fine-tuning and the head-behind-the-network path.

Runs as one process or under ``torchrun`` (DDP; NCCL on CUDA, Gloo on CPU). The global batch is
the recipe's (64), split across processes. On CUDA the default is bf16 autocast and
channels_last. A checkpoint is written atomically after every epoch, so ``resume=True`` picks up
after the last finished epoch with the same optimizer, schedule and data order.

Data order: epoch ``e`` visits the training set in ``torch.randperm(n)`` order drawn from a
generator seeded with ``seed + e`` (``DistributedSampler``'s rule); the cached-feature head
trainer draws the same permutation, which is what makes the two paths comparable.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from ..distributed import Dist, barrier
from ..io import atomic_path
from .core import trainable_parameters

__all__ = ["accuracy_metrics", "predict", "train_network", "epoch_permutation"]


# ----------------------------------------------------------------------------- processes

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


def _autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _loader(ds: Dataset, batch_size: int, workers: int, device: torch.device, **kw) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=False, **kw)


def _progress(iterable, enabled: bool, **kw):
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, leave=False, dynamic_ncols=True, **kw)


@torch.no_grad()
def predict(model: nn.Module, ds: Dataset, *, batch_size: int = 256, workers: int = 0,
            dist: Dist | None = None, amp: bool = False, channels_last: bool = False,
            progress: bool = False, desc: str = "eval") -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels, true labels) on ``ds``; under DDP every process gets all of them."""
    dist = dist or Dist()
    idx = list(range(dist.rank, len(ds), dist.world_size))
    part = Subset(ds, idx) if dist.enabled else ds
    was_training = model.training
    model.eval()
    preds, labels = [], []
    for x, y in _progress(_loader(part, batch_size, workers, dist.device),
                          progress and dist.is_main, desc=desc):
        x = x.to(dist.device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with _autocast(dist.device, amp):
            out = model(x)
        preds.append(out.argmax(1).cpu())
        labels.append(torch.as_tensor(y))
    model.train(was_training)
    p = torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
    t = torch.cat(labels) if labels else torch.empty(0, dtype=torch.long)
    if dist.enabled:
        gathered: list = [None] * dist.world_size
        torch.distributed.all_gather_object(gathered, (idx, p, t))
        order = torch.tensor([i for g in gathered for i in g[0]])
        p = torch.cat([g[1] for g in gathered])[order.argsort()]
        t = torch.cat([g[2] for g in gathered])[order.argsort()]
    return p, t


# ----------------------------------------------------------------------------- training

def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The visiting order of epoch ``epoch`` (DistributedSampler's, for one process)."""
    g = torch.Generator()
    g.manual_seed(seed + epoch)
    return torch.randperm(n, generator=g)


def make_optimizer(params, cfg) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.StepLR]:
    params = list(params)
    if not params:
        raise ValueError("Nothing to train: every parameter is frozen")
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_lr, gamma=cfg.lr_gamma)
    return opt, sched


def _bare(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def save_checkpoint(path: Path, model: nn.Module, opt, sched, epoch: int, extra: dict) -> None:
    state = {"model": _bare(model).state_dict(), "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "epoch": epoch, **extra}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def train_network(model: nn.Module, train_ds: Dataset, cfg, *, dist: Dist | None = None,
                  workers: int = 0, checkpoint: Path | None = None, resume: bool = False,
                  progress: bool = True, test_ds: Dataset | None = None,
                  log=print, on_epoch_end=None) -> dict[str, Any]:
    """Train ``model``'s trainable parameters with the recipe in ``cfg`` (a TransferConfig with
    ``lr`` resolved); returns timing and per-epoch history. ``model`` is trained in place.

    ``on_epoch_end(epoch, record)`` is called after each epoch's checkpoint is written.
    """
    dist = dist or Dist()
    dev = dist.device
    amp = cfg.amp if cfg.amp is not None else dev.type == "cuda"
    cl = cfg.channels_last if cfg.channels_last is not None else dev.type == "cuda"
    if cfg.batch_size % dist.world_size:
        raise ValueError(
            f"batch size {cfg.batch_size} is not divisible by {dist.world_size} processes")
    model.to(dev)
    if cl:
        model.to(memory_format=torch.channels_last)
    opt, sched = make_optimizer(trainable_parameters(model), cfg)
    start, history = 0, []
    if resume and checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, history = state["epoch"] + 1, list(state.get("history", []))
        changed = {k: (v, cfg.to_dict().get(k)) for k, v in state.get("config", {}).items()
                   if k not in ("epochs", "eval_every") and cfg.to_dict().get(k) != v}
        if changed and dist.is_main:
            warnings.warn(f"Resuming {checkpoint} with a different recipe: {changed}")
        if dist.is_main:
            log(f"resumed from {checkpoint} after epoch {start}/{cfg.epochs}")
    net = model
    if dist.enabled:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None)
    sampler = DistributedSampler(train_ds, num_replicas=dist.world_size, rank=dist.rank,
                                 shuffle=True, seed=cfg.seed, drop_last=False)
    per_rank = cfg.batch_size // dist.world_size
    t0 = time.perf_counter()
    for epoch in range(start, cfg.epochs):
        sampler.set_epoch(epoch)
        # augmentation randomness: reproducible per epoch, so a resumed run sees the same crops
        torch.manual_seed(cfg.seed * 100_003 + epoch * 1_009 + dist.rank)
        g = torch.Generator()
        g.manual_seed(cfg.seed * 100_003 + epoch)
        loader = _loader(train_ds, per_rank, workers, dev, sampler=sampler, generator=g)
        net.train()
        tot, n = 0.0, 0
        bar = _progress(loader, progress and dist.is_main, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for x, y in bar:
            x, y = x.to(dev, non_blocking=True), torch.as_tensor(y).to(dev, non_blocking=True)
            if cl:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(dev, amp):
                out = net(x)
            loss = F.cross_entropy(out.float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch + 1}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(y)
            n += len(y)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{tot / n:.4f}", refresh=False)
        sched.step()
        rec = {"epoch": epoch + 1, "train_loss": tot / max(n, 1), "lr": opt.param_groups[0]["lr"]}
        if test_ds is not None and cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 \
                and epoch + 1 < cfg.epochs:
            p, t = predict(model, test_ds, dist=dist, amp=amp, channels_last=cl, workers=workers)
            rec.update({f"test_{k}": v for k, v in accuracy_metrics(p, t).items() if k != "n"})
        history.append(rec)
        if dist.is_main:
            if checkpoint is not None:
                save_checkpoint(checkpoint, model, opt, sched, epoch,
                                {"history": history, "config": cfg.to_dict()})
            if not progress:
                log(f"epoch {epoch + 1}/{cfg.epochs} loss {rec['train_loss']:.4f}")
        barrier(dist)
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, rec)
    if isinstance(model, nn.Module) and cl:
        model.to(memory_format=torch.contiguous_format)
    return {"train_s": time.perf_counter() - t0, "history": history, "start_epoch": start,
            "amp": amp, "channels_last": cl}
