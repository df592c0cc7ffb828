"""Weight file formats: reading and writing bytes, never fetching them.

* ``safetensors_file``: the zoo's own weight files (safetensors, 64-byte aligned, metadata with
  the architecture, classes and normalization), read with header validation and a content
  digest.
* ``upstream``: MadryLab ``robustness`` checkpoints ⇄ plain torchvision state dicts
  (``read_checkpoint`` unpickles with ``weights_only=True`` only).
* ``torch_state_dict``: RobustBench's and Peng et al.'s state-dict files in the layouts
  RobustBench's loader reads (prefixes, normalization wrapper, timm checkpoint filters).
"""
from __future__ import annotations

from .._lazy import lazy_getattr as _lazy_getattr

_LAZY = {
    "save_weights": "safetensors_file", "read_weights": "safetensors_file",
    "load_weights": "safetensors_file", "read_metadata": "safetensors_file",
    "write_safetensors": "safetensors_file", "Loaded": "safetensors_file",
    "from_robustness": "upstream", "to_robustness": "upstream", "read_checkpoint": "upstream",
    "match_state_dict": "upstream", "Converted": "upstream", "UnsafeTorchError": "upstream",
    "from_state_dict": "torch_state_dict", "read_state_dict_file": "torch_state_dict",
}
__all__ = sorted(_LAZY)

__getattr__ = _lazy_getattr(__name__, _LAZY)
