"""Training checkpoints: everything a killed run needs to continue as if never stopped.

One file, ``run_dir/checkpoint.pt``, replaced atomically (``robust_zoo.io.atomic_path``), so a
SIGKILL at any moment leaves either the previous or the new checkpoint. It holds only tensors
and plain containers of str/int/float/bool/None, so ``torch.load(weights_only=True)`` reads it:

``format``, ``recipe`` (Recipe.to_dict()), ``model`` (the bare network's state dict),
``optimizer``, ``scheduler``, ``epoch`` and ``step`` (the next batch to run: ``step`` batches
of ``epoch`` are done), ``global_step``, ``steps_per_epoch``, ``world_size``, ``rng`` (one dict
per rank: torch, cuda, numpy and python generator states), ``sampler`` (seed, epoch,
start_batch: the data order is a function of these), ``epoch_stats`` and ``log_window`` (the
running sums of the epoch's training metrics, and their values at the last log step) and
``run`` (start time, wall time so far, command lines).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_path

FORMAT = "robust_zoo.train.checkpoint/1"
CHECKPOINT = "checkpoint.pt"


class ResumeError(ValueError):
    """A run cannot be resumed from the given checkpoint."""


def rng_state() -> dict[str, Any]:
    """This process' generator states as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(mt), "gauss_next": gauss_next},
    }
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        if len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        else:  # a different GPU count: each rank only draws on its own device
            torch.cuda.set_rng_state(state["cuda"][torch.cuda.current_device()
                                                   % len(state["cuda"])])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (the old checkpoint stays readable until the rename)."""
    state = {"format": FORMAT, **state}
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True`` (no code runs while loading)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise ResumeError(f"No checkpoint at {path}: nothing to resume. Start the run without "
                          "--resume, or point --out at the run folder that holds checkpoint.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated/foreign files: say which file, not a pickle traceback
        raise ResumeError(f"{path} is not a readable training checkpoint: {e}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ResumeError(f"{path} is not a robust_zoo training checkpoint "
                          f"(format {state.get('format') if isinstance(state, dict) else '?'!r}, "
                          f"expected {FORMAT!r})")
    return state


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed writer left behind (``.checkpoint.pt.*.tmp``)."""
    for p in run_dir.glob(".*.tmp"):
        p.unlink(missing_ok=True)
