"""Weight file formats: reading and writing bytes, never fetching them.

* ``safetensors_file``: the zoo's own weight files (safetensors, 64-byte aligned, metadata with
  the architecture, classes and normalization), read with header validation and a content
  digest.
* ``upstream``: MadryLab ``robustness`` checkpoints ⇄ plain torchvision state dicts
  (``read_checkpoint`` unpickles with ``weights_only=True`` only).
"""
from __future__ import annotations

from .._lazy import lazy_getattr as _lazy_getattr

_LAZY = {
    "save_weights": "safetensors_file", "read_weights": "safetensors_file",
    "load_weights": "safetensors_file", "read_metadata": "safetensors_file",
    "write_safetensors": "safetensors_file", "Loaded": "safetensors_file",
    "from_robustness": "upstream", "to_robustness": "upstream", "read_checkpoint": "upstream",
    "match_state_dict": "upstream", "Converted": "upstream", "UnsafeTorchError": "upstream",
}
__all__ = sorted(_LAZY)

__getattr__ = _lazy_getattr(__name__, _LAZY)
