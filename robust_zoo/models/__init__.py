"""The networks: the architecture registry, the model a user gets back and its head.

* ``archs``: the one table of architectures (torchvision builders, head paths, widths, upstream
  names) that loading, training and transfer share; ``build`` makes one on any device.
* ``robust_model``: ``RobustModel`` (the input normalization inside the model), head access and
  swap (``get_head``, ``replace_head``), ``unwrap`` and the eval-mode / frozen-parameter guards.
* ``features``: penultimate features, the input of the head (``head_input``, ``Penultimate``),
  captured by the package's one forward pre-hook on a head.
* ``smallnets``: the small networks of the offline quickstart.
"""
from __future__ import annotations

from .archs import IMAGENET_MEAN, IMAGENET_STD, Arch, build, get_arch, list_archs
from .features import Penultimate, head_input
from .robust_model import (Normalize, RobustModel, eval_mode, frozen_parameters, get_head,
                           head_path, input_size, replace_head, unwrap, unwrap_parallel)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Arch", "build", "get_arch", "list_archs",
           "Normalize", "Penultimate", "RobustModel", "eval_mode", "frozen_parameters", "get_head",
           "head_input", "head_path", "input_size", "replace_head", "unwrap", "unwrap_parallel"]
