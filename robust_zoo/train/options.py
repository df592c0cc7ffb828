"""``RunOptions``: how to run a recipe, and which options a resumed run takes from the run it
continues (``RUN_DEFAULTS``). Plain Python, so the command line reads it without torch."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RunOptions", "RUN_DEFAULTS", "UNSET"]


class _Unset:
    """A run option left out: on resume the interrupted run's value, else ``RUN_DEFAULTS``'s."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()

# The options that shape what a run produces, with their defaults: where its data is, its
# name, the kernels and BatchNorm it trains with, the decoder (pixels differ by rounding), the
# cadence of log records, checkpoints and validations, and the final evaluation. Every
# checkpoint stores them (``options``); a resume takes the ones left out from it, and one given
# with another value wins, with a note. The other options (device, workers, compile, progress)
# change only speed or placement and are never restored.
RUN_DEFAULTS: dict[str, Any] = {
    "data": None, "name": None, "decoder": "pil", "deterministic": False, "sync_bn": False,
    "ckpt_every_steps": 0, "log_every": 50, "eval_every": 1, "eval_limit": None,
    "final_eval_steps": 20, "final_eval_norm": None, "final_eval_eps": None,
    "final_eval_limit": None}


@dataclass
class RunOptions:
    """How to run a recipe. Fields in ``RUN_DEFAULTS`` left out (``UNSET``) are the
    interrupted run's on resume, else their defaults; see ``resolved``."""

    out: str | os.PathLike
    data: str | os.PathLike | None = UNSET
    download: bool = False
    resume: bool = False
    name: str | None = UNSET              # default: {arch}_{norm}_eps{ε}
    device: str | None = None
    workers: int | None = None            # None: 0 for in-memory data, else min(8, CPUs)
    decoder: str = UNSET                  # ImageFolder training images: data.DECODERS
    ckpt_every_steps: int = UNSET         # 0: only at epoch ends
    log_every: int = UNSET
    deterministic: bool = UNSET
    compile: bool = False
    sync_bn: bool = UNSET
    eval_every: int = UNSET               # epochs between validation passes (0: never)
    eval_limit: int | None = UNSET        # examples per validation pass (None: all)
    final_eval_steps: int = UNSET
    final_eval_norm: str | None = UNSET   # None: the recipe's
    final_eval_eps: float | None = UNSET  # None: the recipe's (clean only when 0)
    final_eval_limit: int | None = UNSET
    progress: bool = True
    argv: list[str] | None = None         # recorded as provenance (default sys.argv)
    notes: list[str] = field(default_factory=list)   # printed and kept in the provenance

    def resolved(self, saved: dict[str, Any] | None) -> "RunOptions":
        """Every ``RUN_DEFAULTS`` field set: a value given wins; one left out is the
        interrupted run's (``saved``: its checkpoint's ``options``), else the default. A given
        value that differs from the run's adds a note naming both."""
        saved = saved or {}
        values, notes = {}, []
        for k, default in RUN_DEFAULTS.items():
            given = getattr(self, k)
            if given is UNSET:
                values[k] = saved.get(k, default)
                continue
            values[k] = given = _recorded(k, given)
            if k in saved and saved[k] != given:
                notes.append(f"note: {_flag(k, given)} given on the command line; the run used "
                             f"{_flag(k, saved[k])} (the given value applies from here on)")
        return dataclasses.replace(self, **values, notes=list(self.notes) + notes)

    def recorded(self) -> dict[str, Any]:
        """The ``RUN_DEFAULTS`` fields as plain values (what a checkpoint stores)."""
        return {k: _recorded(k, getattr(self, k)) for k in RUN_DEFAULTS}


def _recorded(key: str, value: Any) -> Any:
    if key == "data" and value is not None:     # absolute: a resume may run from elsewhere
        return str(Path(value).expanduser().absolute())
    return value


def _flag(key: str, value: Any) -> str:
    """How the command line spells ``key`` = ``value`` (``--log-every 3``, ``--no-sync-bn``)."""
    flag = key.replace("_", "-")
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    return f"no --{flag}" if value is None else f"--{flag} {value}"
