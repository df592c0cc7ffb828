"""Fixed-feature transfer without running the frozen network every epoch.

In fixed-feature mode the network below the head is a fixed function (``freeze`` keeps it in
eval mode), so its output for an image never changes: extract it once, store it on disk, and
train the head on the stored matrix with the same recipe (same initial head, same SGD, same
per-epoch order of examples). Without augmentation that is the same computation as training the
head behind the frozen network, up to float rounding; with ``views=K`` the cache holds K
augmented views of every training image and each epoch draws one per image (the
"paper-kview-approx" protocol: an approximation of fresh views every epoch, measured in
benchmarks/README.md). View ``v`` is ``data.SeededDataset(ds, seed=seed, epoch=v)``: image ``i``
is drawn from the torch RNG seeded with ``data.sample_seed(seed, v, i)``, the crop epoch ``v``
behind the network gives it, and depends on nothing else (not on workers, world size or batch
size).

A cache file is keyed by everything its content depends on (``cache_key``):

* the model: the architecture and a sha256 of the backbone's weights (every state-dict tensor
  except the head's, normalization buffers included: ``model_fingerprint``), so another
  checkpoint, ε or ``--faithful`` normalization is another key, and a new head is not;
* the samples and their contents (``TransferDataset.fingerprint``): data set, root, split,
  labels and, per image file, its path, size, mtime_ns, ctime_ns, inode and device; in-memory
  arrays (CIFAR) by a sha256 of their bytes. Image files are not hashed: reading every image
  of an ImageNet-size set on every run would cost as much as extracting its features, while a
  stat takes microseconds; a file rewritten or replaced changes its ctime or inode even when
  its size and mtime are put back;
* the transform (its ``repr``: image size, resize, crop, ``--granularity``);
* what the protocol extracts: the number of views, their seed (K > 1) and the extraction
  precision (bf16 autocast on CUDA, fp32 on CPU). The protocol's name is not in the key:
  protocols that extract the same views share a file (every protocol's test split, the
  centre crops of ``centre-crop-sgd`` and ``centre-crop-lbfgs``).

Files are written atomically, so concurrent runs never read half a file.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..data.sampling import SeededDataset, epoch_permutation
from ..models.robust_model import head_path, unwrap
from ..fileio import atomic_path
from .core import features
from ..engine.distributed import Dist
from ..engine.optim import build_optimizer, build_scheduler
from ..engine.precision import autocast
from ..console import progress as progress_bar
from .finetune import make_loader

__all__ = ["default_cache_dir", "model_fingerprint", "cache_key", "extract_features",
           "cached_features", "train_head", "fit_head_lbfgs", "head_predict"]


def default_cache_dir() -> Path:
    from ..hub.cache import cache_dir

    return cache_dir() / "features"


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of every state-dict tensor except the head's (names, dtypes, shapes, bytes)."""
    net = unwrap(model)
    head = head_path(net, getattr(model, "arch", None))
    prefix = "model." if net is not model else ""
    skip = f"{prefix}{head}."
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        if k.startswith(skip):
            continue
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        t = v.detach().to("cpu").contiguous().reshape(-1)
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cache_key(model_fp: str, data_fp: str, transform: Callable | None, views: int, seed: int,
              dtype: torch.dtype, *, arch: str | None = None, precision: str = "fp32") -> str:
    """sha256 of what a feature file's content depends on (the module doc lists them)."""
    desc = json.dumps({"model": model_fp, "arch": arch, "data": data_fp,
                       "transform": repr(transform), "views": views,
                       "seed": seed if views > 1 else None, "precision": precision,
                       "dtype": str(dtype), "version": 3}, sort_keys=True)
    return hashlib.sha256(desc.encode()).hexdigest()


@torch.no_grad()
def extract_features(model: nn.Module, ds, *, batch_size: int = 128, workers: int = 0,
                     dist: Dist | None = None, amp: bool | None = None,
                     progress: bool = False, desc: str = "features") -> torch.Tensor:
    """Penultimate features ``[len(ds), D]`` (float32, CPU) of ``model`` in eval mode.

    Under DDP each process extracts every world-th example and all processes get the whole
    matrix back.
    """
    dist = dist or Dist()
    dev = dist.device
    amp = dev.type == "cuda" if amp is None else amp
    n = len(ds)
    idx = list(range(dist.rank, n, dist.world_size))
    part = torch.utils.data.Subset(ds, idx) if dist.enabled else ds
    model.eval().to(dev)
    chunks = []
    loader = make_loader(part, batch_size, workers, dev)
    for x, _ in progress_bar(loader, enabled=progress and dist.is_main, leave=False, desc=desc):
        with autocast(dev, "bf16" if amp else "fp32"):
            f = features(model, x.to(dev, non_blocking=True))
        chunks.append(f.float().cpu())
    local = torch.cat(chunks) if chunks else torch.empty(0)
    if not dist.enabled:
        return local
    per = -(-n // dist.world_size)
    d = torch.tensor([local.shape[1] if local.numel() else 0], device=dev)
    torch.distributed.all_reduce(d, op=torch.distributed.ReduceOp.MAX)
    padded = torch.zeros(per, int(d.item()), device=dev)
    padded[: len(local)] = local.to(dev)
    gathered = [torch.empty_like(padded) for _ in range(dist.world_size)]
    torch.distributed.all_gather(gathered, padded)
    out = torch.empty(n, int(d.item()))
    for r, g in enumerate(gathered):
        count = len(range(r, n, dist.world_size))
        out[r::dist.world_size] = g[:count].cpu()
    return out


def cached_features(model: nn.Module, ds, *, cache_dir: Path | None, views: int = 1,
                    seed: int = 0, tag: str = "", workers: int = 0, batch_size: int = 128,
                    dist: Dist | None = None, progress: bool = False, log=print,
                    model_fp: str | None = None, amp: bool | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(features ``[views, N, D]``, labels ``[N]``, info) for ``ds`` with its own transform.

    ``cache_dir=None`` disables the cache. ``info`` has ``hit`` (read from disk), ``path`` and
    ``extract_s``. With ``views > 1`` view ``v`` is ``SeededDataset(ds, seed=seed, epoch=v)``:
    every random crop is a function of (seed, v, image index), so a cached file, a fresh
    extraction and an extraction under DDP agree. ``views=1`` is meant for a deterministic
    transform (the centre crop). ``amp``: bf16 autocast (default: on CUDA only).
    """
    dist = dist or Dist()
    amp = dist.device.type == "cuda" if amp is None else amp
    labels = torch.tensor(ds.targets, dtype=torch.long)
    model_fp = model_fp or model_fingerprint(model)
    key = cache_key(model_fp, ds.fingerprint(), ds.transform, views, seed, torch.float32,
                    arch=getattr(model, "arch", type(unwrap(model)).__name__),
                    precision="bf16" if amp else "fp32")
    path = None
    if cache_dir is not None:
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in (tag or "model"))
        name = f"{safe}__{ds.name}__{ds.split}__{key[:20]}.safetensors"
        path = Path(cache_dir) / name
        if path.exists():
            try:
                from safetensors.torch import load_file

                t = load_file(str(path))
                if t["labels"].tolist() == ds.targets:
                    return t["features"], labels, {"hit": True, "path": str(path), "extract_s": 0.0}
                log(f"ignoring {path}: its labels differ from the data set's")
            except Exception as e:  # damaged file: extract again and overwrite it
                log(f"ignoring unreadable feature cache {path}: {e}")
    t0 = time.perf_counter()
    out = []
    for v in range(views):
        view = SeededDataset(ds, seed=seed, epoch=v) if views > 1 else ds
        out.append(extract_features(model, view, workers=workers, batch_size=batch_size, dist=dist,
                                    amp=amp, progress=progress, desc=f"features {ds.split}"
                                    + (f" view {v + 1}/{views}" if views > 1 else "")))
    feats = torch.stack(out)
    info = {"hit": False, "path": str(path) if path else None,
            "extract_s": time.perf_counter() - t0}
    if path is not None and dist.is_main:
        from safetensors.torch import save_file

        meta = {"key": key, "model": model_fp, "dataset": ds.name, "split": ds.split,
                "root": ds.root, "views": str(views), "transform": repr(ds.transform),
                "precision": "bf16" if amp else "fp32"}
        with atomic_path(path) as tmp:
            save_file({"features": feats.contiguous(), "labels": labels}, str(tmp), metadata=meta)
    return feats, labels, info


def train_head(head: nn.Module, feats: torch.Tensor, labels: torch.Tensor, cfg, *,
               device: torch.device | str = "cpu", progress: bool = False,
               log=print) -> dict[str, Any]:
    """Train ``head`` (in place) on cached features ``[V, N, D]`` with the recipe in ``cfg``.

    ``solver="sgd"``: epoch by epoch exactly as behind the network (``_train_head_sgd``).
    ``solver="lbfgs"``: ``fit_head_lbfgs`` on all V × N rows, at most ``lbfgs_iters``
    iterations.
    """
    device = torch.device(device)
    head.to(device).train()
    feats = feats.to(device)
    y = labels.to(device)
    t0 = time.perf_counter()
    if cfg.head_solver == "lbfgs":
        V, N, _ = feats.shape
        loss = fit_head_lbfgs(head, feats.reshape(V * N, -1), y.repeat(V),
                              weight_decay=cfg.weight_decay, max_iter=cfg.lbfgs_iters)
        history = [{"epoch": 1, "train_loss": loss}]
    else:
        history = _train_head_sgd(head, feats, y, cfg, progress)
    return {"train_s": time.perf_counter() - t0, "history": history}


def fit_head_lbfgs(head: nn.Module, x: torch.Tensor, y: torch.Tensor, *, weight_decay: float,
                   max_iter: int) -> float:
    """Fit ``head`` (in place) to features ``x`` and labels ``y`` by full-batch L-BFGS on
    cross-entropy + weight_decay/2·‖θ‖² over every head parameter: the multinomial logistic
    regression of Kornblith et al. 2019 (deterministic). Returns the objective L-BFGS started
    from (``torch.optim.LBFGS.step``'s value)."""
    opt = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe", tolerance_grad=1e-7,
                            tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(head(x), y)
        loss = loss + 0.5 * weight_decay * sum((p ** 2).sum() for p in head.parameters())
        loss.backward()
        return loss

    return float(opt.step(closure).detach())


def _train_head_sgd(head: nn.Module, feats: torch.Tensor, y: torch.Tensor, cfg,
                    progress: bool) -> list[dict]:
    """The same permutation per epoch as behind the network (``epoch_permutation``),
    mini-batches of ``batch_size`` (last one partial), SGD with momentum and weight decay and
    the recipe's schedule; with V > 1 views every epoch picks one view per example at random."""
    V, N, _ = feats.shape
    opt = build_optimizer(head.parameters(), cfg)
    sched = build_scheduler(opt, cfg)
    bs, history = cfg.batch_size, []
    g = torch.Generator()
    for epoch in progress_bar(range(cfg.epochs), enabled=progress, leave=False, desc="head epochs"):
        perm = epoch_permutation(N, cfg.seed, epoch).to(feats.device)
        if V > 1:
            g.manual_seed(cfg.seed * 7919 + epoch)
            view = torch.randint(V, (N,), generator=g).to(feats.device)
        tot = 0.0
        for s in range(0, N, bs):
            b = perm[s:s + bs]
            xb = feats[view[b], b] if V > 1 else feats[0, b]
            loss = F.cross_entropy(head(xb), y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            tot += loss.item() * len(b)
        sched.step()
        history.append({"epoch": epoch + 1, "train_loss": tot / N,
                        "lr": opt.param_groups[0]["lr"]})
    return history


@torch.no_grad()
def head_predict(head: nn.Module, feats: torch.Tensor, batch: int = 4096) -> torch.Tensor:
    head.eval()
    dev = next(head.parameters()).device
    out = [head(feats[i:i + batch].to(dev)).argmax(1).cpu() for i in range(0, len(feats), batch)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)
