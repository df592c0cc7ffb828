"""The one training engine: every run of the package, adversarial training, full fine-tuning,
the fixed-feature head behind a frozen network and per-epoch validation, goes through it.

* ``precision``: the autocast helper, the device defaults (bf16 and channels_last on CUDA),
  determinism and ``compile_model`` (``--compile``).
* ``optim``: the optimizer and learning-rate schedule builder (``build_optimizer``,
  ``build_scheduler``) from a recipe's shared settings.
* ``checkpoint``: the one checkpoint format (format tag, recipe, RNG states, content checksum),
  written atomically, the previous one kept, a corrupt one detected and skipped.
* ``loop``: ``Trainer.train_one_epoch`` / ``train_step`` and ``predict``.
* ``evaluation``: ``evaluate_loader`` → ``EvalResult`` (counts that add and all-reduce), the
  clean/PGD/AutoAttack evaluation under ``robust_zoo.evaluate`` and per-epoch validation.

The layer sits above models/attacks/data and below train/transfer/evaluate (docs/architecture.md).
"""
from __future__ import annotations

from .._lazy import lazy_getattr as _lazy_getattr

_LAZY = {
    "autocast": "precision", "resolve_precision": "precision", "channels_last_default":
    "precision", "compile_model": "precision",
    "build_optimizer": "optim", "build_scheduler": "optim",
    "Trainer": "loop", "TrainStats": "loop", "predict": "loop", "TrainingDivergedError": "loop",
    "evaluate_loader": "evaluation", "EvalResult": "evaluation",
    "RunCheckpointError": "checkpoint", "ResumeError": "checkpoint",
}
__all__ = sorted(_LAZY)

__getattr__ = _lazy_getattr(__name__, _LAZY)
