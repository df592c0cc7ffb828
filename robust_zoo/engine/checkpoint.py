"""The one checkpoint format: everything a killed run needs to continue as if never stopped.

A checkpoint file is a short header followed by a ``torch.save`` payload::

    ROBUST_ZOO_CHECKPOINT 2\\n<sha256 of the payload, 64 hex digits>\\n<payload>

The payload holds only tensors and plain containers of str/int/float/bool/None, so
``torch.load(weights_only=True)`` reads it without running code. Its dict always has ``format``
(``FORMAT``), ``kind`` ("train" or "transfer"), ``recipe`` (the run's recipe or config as a dict),
``model``, ``optimizer``, ``scheduler``, ``epoch``, ``rng`` (generator states, one dict per rank),
``rank_buffers`` (each rank's BatchNorm statistics; empty for one process)
and whatever the run adds (``step``, ``global_step``, running metrics, history, ...).

``save_run`` and ``restore`` are the two halves every kind of run uses: every rank calls
``save_run`` (it gathers each rank's generator states; rank 0 writes), and ``restore`` puts a
loaded checkpoint back into the model, optimizer, scheduler and this rank's generators.

Writes are atomic (``robust_zoo.fileio.atomic_path``): ``checkpoint.pt`` is replaced by a
rename, and the one it replaces is kept as ``checkpoint.prev.pt``. ``load`` checks the format and
the checksum; a damaged, truncated or empty ``checkpoint.pt`` is reported by name and the
previous checkpoint is used instead; with neither usable, resuming stops with ``ResumeError``.
"""
from __future__ import annotations

import hashlib
import io
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import RobustZooError
from ..fileio import atomic_path
from .distributed import Dist, all_gather

FORMAT = "robust_zoo.checkpoint/2"
LEGACY_FORMATS = ("robust_zoo.train.checkpoint/1",)   # no checksum; still read
MAGIC = b"ROBUST_ZOO_CHECKPOINT 2\n"
CHECKPOINT = "checkpoint.pt"


class RunCheckpointError(RobustZooError, ValueError):
    """A training or transfer run's checkpoint file (``checkpoint.pt``) that is empty, truncated,
    damaged or not a robust_zoo run checkpoint. Weight files have ``CheckpointFormatError``."""


class ResumeError(RobustZooError, ValueError):
    """A run that cannot be resumed (no usable checkpoint, or a different recipe or data)."""


# ----------------------------------------------------------------------------- RNG

def rng_state() -> dict[str, Any]:
    """This process' generator states as tensors and plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, mt, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(mt), "gauss_next": gauss_next},
    }


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


# ----------------------------------------------------------------------------- runs

def save_run(where: str | os.PathLike, dist: Dist, *, kind: str, model: torch.nn.Module,
             optimizer: torch.optim.Optimizer, scheduler, **fields: Any) -> None:
    """Checkpoint a run: ``model``, ``optimizer`` and ``scheduler`` states, the generator
    states of every rank (``rng``, in rank order) and ``fields``. Every rank calls it (the
    states are gathered); rank 0 writes."""
    rngs = all_gather(dist, rng_state())
    buffers = all_gather(dist, rank_buffers(model)) if dist.enabled else []
    if dist.is_main:
        save(where, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": rngs,
                     "rank_buffers": buffers, **fields}, kind=kind)


def rank_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """This rank's buffers (BatchNorm running statistics). DDP gives every forward rank 0's,
    but each rank's own forward updates them with its own batch, and an attack run with BN in
    eval mode reads them before the next forward: they differ per rank and are part of where
    a multi-process run is."""
    return {k: v.detach().cpu().clone() for k, v in model.named_buffers()}


def restore(state: dict[str, Any], dist: Dist, *, model: torch.nn.Module,
            optimizer: torch.optim.Optimizer, scheduler, reseed: int) -> bool:
    """Load a checkpoint's states into ``model``, ``optimizer``, ``scheduler`` and this rank's
    generators (from a run of as many processes, this rank's own buffers too: ``rank_buffers``),
    so the run continues as if never stopped. A checkpoint of a different number of
    processes has no generator states for this rank: the generators are then seeded with
    ``reseed + rank`` and False is returned (the data order does not depend on them; random
    draws such as attack starts do)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rngs = state["rng"]
    if len(rngs) == dist.world_size:
        set_rng_state(rngs[dist.rank])
        own = state.get("rank_buffers") or []
        if len(own) == dist.world_size:
            with torch.no_grad():
                for k, v in model.named_buffers():
                    v.copy_(own[dist.rank][k])
        return True
    seed_everything(int(reseed) + dist.rank)
    return False


# ----------------------------------------------------------------------------- files

def _paths(where: str | os.PathLike) -> tuple[Path, Path]:
    p = Path(where)
    if p.is_dir() or p.suffix != ".pt":
        p = p / CHECKPOINT
    return p, p.with_name(p.stem.removesuffix(".prev") + ".prev.pt")


def save(where: str | os.PathLike, state: dict[str, Any], *, kind: str) -> Path:
    """Write ``state`` as the checkpoint of run folder (or file) ``where``; the checkpoint it
    replaces becomes ``checkpoint.prev.pt``. A kill at any moment leaves a readable checkpoint."""
    path, prev = _paths(where)
    buf = io.BytesIO()
    torch.save({"format": FORMAT, "kind": kind, **state}, buf)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(MAGIC + digest + b"\n")
            f.write(payload)
        if path.exists():          # the newest good state stays on disk until the rename
            os.replace(path, prev)
    return path


def read(path: str | os.PathLike) -> dict[str, Any]:
    """One checkpoint file, verified (format tag and content checksum); ``RunCheckpointError``
    says what is wrong with it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RunCheckpointError(f"{path} cannot be read: {e}") from None
    if not raw:
        raise RunCheckpointError(f"{path} is empty (0 bytes): its write was interrupted")
    if raw.startswith(MAGIC):
        head = len(MAGIC)
        recorded = raw[head:head + 64].decode("ascii", "replace")
        payload = raw[head + 65:]
        actual = hashlib.sha256(payload).hexdigest()
        if raw[head + 64:head + 65] != b"\n" or actual != recorded:
            raise RunCheckpointError(
                f"{path} is corrupt: the sha256 of its content ({actual[:16]}…) is not the one "
                f"recorded when it was written ({recorded[:16]}…); it was truncated or damaged "
                "on disk")
        state = _unpickle(io.BytesIO(payload), path)
        formats = (FORMAT,)
    else:
        state = _unpickle(path, path)
        formats = LEGACY_FORMATS
        if isinstance(state, dict) and state.get("format") in LEGACY_FORMATS:
            warnings.warn(f"{path} is a {state['format']} checkpoint, a format without a "
                          "content checksum; it is read as is")
    if not isinstance(state, dict) or state.get("format") not in formats:
        got = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise RunCheckpointError(f"{path} is not a robust_zoo checkpoint (format {got!r}, "
                              f"expected {FORMAT!r})")
    state.setdefault("kind", "train")
    return state


def _unpickle(src, path: Path) -> Any:
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except Exception as e:   # truncated or foreign files: say which file, not a pickle traceback
        raise RunCheckpointError(f"{path} is not a readable checkpoint: {type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}") from None


def exists(where: str | os.PathLike) -> bool:
    """True when the run folder holds a checkpoint (current or previous), usable or not."""
    path, prev = _paths(where)
    return path.is_file() or prev.is_file()


def load(where: str | os.PathLike, *, kind: str | None = None) -> tuple[dict[str, Any], Path]:
    """(state, file) of the newest usable checkpoint of run folder ``where``.

    A damaged ``checkpoint.pt`` is named in a warning and ``checkpoint.prev.pt`` is used; with no
    usable checkpoint ``ResumeError`` says what was found."""
    path, prev = _paths(where)
    problems = []
    for p in (path, prev):
        if not p.is_file():
            continue
        try:
            state = read(p)
        except RunCheckpointError as e:
            problems.append(str(e))
            continue
        if kind is not None and state["kind"] != kind:
            problems.append(f"{p} is a {state['kind']} checkpoint, not a {kind} checkpoint")
            continue
        if problems:
            warnings.warn(f"{problems[0]}. Resuming from the previous checkpoint {p} instead "
                          f"(epoch {int(state.get('epoch', 0)) + 1}, step "
                          f"{state.get('step', 0)}); the steps after it are redone.")
        return state, p
    if not problems:
        raise ResumeError(f"No checkpoint at {path}: nothing to resume. Start the run without "
                          f"--resume, or point --out at the run folder that holds {CHECKPOINT}")
    raise ResumeError("No usable checkpoint to resume from:\n  " + "\n  ".join(problems)
                      + "\nStart the run again without --resume in a new --out (nothing in "
                        "this folder was changed)")


def remove(where: str | os.PathLike) -> None:
    """Delete the checkpoints of a finished run (current and previous)."""
    for p in _paths(where):
        p.unlink(missing_ok=True)


def remove_stale_temporaries(run_dir: Path) -> None:
    """Temporary files a killed writer left behind (``.checkpoint.pt.*.tmp``)."""
    for p in Path(run_dir).glob(".*.tmp"):
        p.unlink(missing_ok=True)
