"""Our own weight files: safetensors holding the bare network's state dict plus metadata.

Metadata (all strings, as safetensors requires): ``format`` = "robust_zoo", ``arch``,
``num_classes``, ``mean``/``std`` (JSON lists: the normalization the weights expect),
and whatever the writer adds (``name``, ``source_sha256``, ``source_file``, ...).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from .io import atomic_path

FORMAT_TAG = "robust_zoo"


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
                 arch: str, num_classes: int, mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), **metadata: Any) -> Path:
    """Write ``state_dict`` atomically as safetensors (contiguous CPU copies, shared storage
    broken, so any module's state dict can be saved)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    meta = {"format": FORMAT_TAG, "arch": arch, "num_classes": str(int(num_classes)),
            "mean": json.dumps([float(x) for x in mean]),
            "std": json.dumps([float(x) for x in std])}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state_dict, metadata) of a safetensors file; never executes code."""
    from safetensors.torch import load_file

    return load_file(str(path), device=str(device)), read_metadata(path)
