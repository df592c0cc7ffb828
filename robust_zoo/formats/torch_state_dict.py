"""RobustBench and Peng et al. checkpoints ("torch-state-dict" files) → the architecture's keys.

A ``torch-state-dict`` file is a ``torch.save``'d state dict of one network in one of the
layouts RobustBench's loader accepts (``robustbench.utils.load_model``, 1.1.1):

* the state dict itself, or under a top-level ``"state_dict"`` or ``"model"`` entry (other
  top-level entries, such as ``epoch``, ``args`` or ``optimizer``, are ignored);
* keys prefixed by ``module.`` (``DataParallel``) and then ``model.`` (RobustBench's
  ``normalize_model`` wrapper, ``nn.Sequential(normalize=..., model=...)``);
* the wrapper's normalization buffers (``normalize.mean`` / ``normalize.std``; ``normalizer.*``;
  RaWRN's ``normalization.*``), which must hold the entry's mean/std and are dropped: the zoo
  model normalizes itself;
* Swin checkpoints of older timm versions, converted by timm's ``checkpoint_filter_fn`` as
  RobustBench does (and MIMIR's, whose own Swin keeps that older layout); XCiT and DeiT files
  go through their timm model's pretrained filter, the function timm's pretrained loading
  applies (RobustBench loads those through timm).

The file is read by ``upstream.read_checkpoint`` (``torch.load(weights_only=True)``) with exactly
the harmless non-tensor types such training scripts store beside the weights allowed
(``harmless_globals``: ``argparse.Namespace`` of the run's arguments, numpy scalars and their
dtypes); anything else that needs code to unpickle is refused. The keys that result must be
exactly the architecture's (``upstream.match_state_dict``); otherwise the error names the first
unmatched keys.
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Callable, Mapping, Sequence

import torch

from ..models.archs import IMAGENET_MEAN, IMAGENET_STD, build, get_arch
from ..validate import CheckpointFormatError
from .upstream import Converted, expected_state_dict, match_state_dict, read_checkpoint

TOP_LEVEL_KEYS = ("state_dict", "model")
PREFIXES = ("module.", "model.")          # stripped in this order, as RobustBench does
NORMALIZER_KEYS = tuple(f"{m}.{b}" for m in ("normalize", "normalizer", "normalization")
                        for b in ("mean", "std", "new_mean", "new_std"))

__all__ = ["harmless_globals", "read_state_dict_file", "from_state_dict", "TIMM_FILTERS"]


@functools.lru_cache(maxsize=1)
def harmless_globals() -> tuple[Any, ...]:
    """The non-tensor types a training script stores beside the weights that unpickling may
    build: an ``argparse.Namespace`` (the run's arguments: attributes only, no code) and numeric
    numpy scalars with their dtypes (a best accuracy, an epoch), under numpy 2's module names
    and numpy 1's (``numpy.core``)."""
    import argparse

    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = sorted({type(np.dtype(c)) for c in "?bhilqBHILQefdgFDG"}, key=str)  # numeric
    return (argparse.Namespace, np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar"),
            *dtypes)


def read_state_dict_file(path) -> dict[str, Any]:
    """The file's top-level dict, unpickled weights-only with ``harmless_globals`` allowed."""
    return read_checkpoint(path, allow=harmless_globals())


def _unwrap(ckpt: Mapping[str, Any], source: str) -> Mapping[str, torch.Tensor]:
    """The state dict: the mapping itself or its ``state_dict`` / ``model`` entry."""
    sd: Any = ckpt
    if not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        key = next((k for k in TOP_LEVEL_KEYS if isinstance(ckpt.get(k), Mapping)), None)
        if key is None:
            raise CheckpointFormatError(
                f"{source} is not a state dict: expected tensors, or a top-level 'state_dict' "
                f"or 'model' entry holding them; found keys {sorted(map(str, ckpt))[:10]}")
        sd = ckpt[key]
        bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise CheckpointFormatError(f"{source}[{key!r}] is not a state dict of tensors "
                                        f"(not tensors: {bad[:5]})")
    if not sd:
        raise CheckpointFormatError(f"{source} holds an empty state dict")
    return sd


def _strip(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}


def _drop_normalizer(sd: Mapping[str, torch.Tensor], expected: Mapping[str, Any],
                     mean: Sequence[float], std: Sequence[float], source: str
                     ) -> dict[str, torch.Tensor]:
    """``sd`` without the wrapper's normalization buffers, each checked against mean/std."""
    out = {}
    for k, v in sd.items():
        if k in expected or k not in NORMALIZER_KEYS:
            out[k] = v
            continue
        want = mean if k.endswith("mean") else std
        got = v.float().flatten()
        if got.numel() != len(want) or not torch.allclose(got, torch.tensor(want), atol=1e-6):
            raise CheckpointFormatError(
                f"{source}: its normalization buffer {k} is {got.tolist()}, but the entry "
                f"normalizes with {list(want)}: these weights expect another input "
                "normalization (set the entry's preprocessing mean/std)")
    return out


def _swin_filter(sd, model):
    from timm.models.swin_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(sd, model)


def _xcit_filter(sd, model):
    from timm.models.xcit import checkpoint_filter_fn

    return checkpoint_filter_fn(dict(sd), model)


def _deit_filter(sd, model):
    from timm.models.vision_transformer import checkpoint_filter_fn

    return checkpoint_filter_fn(sd, model, adapt_layer_scale=True)


# Architecture → the key conversion RobustBench's loading applies to its files (see module doc).
TIMM_FILTERS: dict[str, Callable[[Mapping[str, torch.Tensor], torch.nn.Module], dict]] = {
    "swin_base": _swin_filter, "swin_large": _swin_filter,
    # MIMIR's own Swin keeps the older layout (downsampling at the end of a stage, persistent
    # masks and indices, a bare head), which the same filter converts to timm's
    "swin_base_mimir": _swin_filter, "swin_large_mimir": _swin_filter,
    "xcit_s12": _xcit_filter, "xcit_m12": _xcit_filter, "xcit_l12": _xcit_filter,
    "deit_small": _deit_filter, "deit_base": _deit_filter,
}


def _layouts(sd: Mapping[str, torch.Tensor]) -> list[tuple[dict[str, torch.Tensor], bool]]:
    """(keys, whether ``model.`` was stripped), RobustBench's reading first: both prefixes
    stripped, then ``module.`` only, then the keys as they are."""
    no_module = _strip(sd, PREFIXES[0])
    wrapped = any(k.startswith(PREFIXES[1]) for k in no_module)
    return [(_strip(no_module, PREFIXES[1]), wrapped), (no_module, False), (dict(sd), False)]


def from_state_dict(ckpt: Mapping[str, Any], arch: str, *,
                    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                    num_classes: int | None = None, source: str = "checkpoint") -> Converted:
    """``arch``'s state dict from a torch-state-dict file's top-level dict (see module doc);
    ``num_classes``: the head the result must have (None: whatever the file's head has)."""
    a = get_arch(arch)
    sd = _unwrap(ckpt, source)
    classes = num_classes
    if classes is None:
        head = next((v for k, v in sd.items() if k.endswith(a.head + ".weight")), None)
        classes = int(head.shape[0]) if head is not None else 1000
    expected = expected_state_dict(a.name, classes)
    flt = TIMM_FILTERS.get(a.name)
    model = build(a.name, classes, device="meta") if flt is not None else None
    candidates = []
    for keys, wrapped in _layouts(sd):
        keys = _drop_normalizer(keys, expected, mean, std, source)
        if flt is not None:
            keys = flt(keys, model)
        if set(keys) == set(expected):
            candidates = [(keys, wrapped)]
            break
        candidates.append((keys, wrapped))
    keys, wrapped = candidates[0]
    try:
        matched = match_state_dict(keys, a.name, classes, what=f"state dict in {source}")
    except CheckpointFormatError as e:
        raise CheckpointFormatError(
            f"{e} (read as RobustBench does: 'state_dict'/'model' entry, 'module.' and 'model.' "
            "prefixes stripped, normalization buffers dropped"
            f"{', timm checkpoint filter applied' if flt else ''})") from None
    epoch = ckpt.get("epoch")
    return Converted(OrderedDict(matched), a.name, wrapped, tuple(mean), tuple(std),
                     int(epoch) if isinstance(epoch, (int, float)) and not isinstance(
                         epoch, bool) else None, False)
