"""Upstream ``robustness`` checkpoints ⇄ plain torchvision state dicts.

An upstream ``.ckpt`` is ``torch.save``'d ``{"model": DataParallel(AttackerModel).state_dict(),
"epoch": ..., "optimizer": ..., "schedule": ..., "amp": ...}`` (some files: ``"state_dict"``).
Inside ``model``::

    module.normalizer.new_mean / new_std          ImageNet mean/std, shape [3, 1, 1]
    module.model.<net keys>                        the classifier
    module.attacker.normalize.new_mean / new_std   the same constants again
    module.attacker.model.<net keys>               a second copy of the classifier

and, for the architectures the paper code wrapped in ``DummyModel`` (densenet, mobilenet,
shufflenet, resnext50_32x4d, vgg16_bn), one more ``model.`` level before the torchvision keys.
Conversion reads the file with ``torch.load(weights_only=True)`` (tensors and plain containers
only: no code runs), checks that the attacker copy equals the model copy and that the
normalizer holds the expected mean/std, and returns the torchvision keys, checked strictly
against the architecture: keys, shapes and the kind of each dtype (an integer tensor where the
architecture has a floating parameter or buffer is refused by name).
"""
from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections import OrderedDict
from types import MappingProxyType
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import torch

from ..models.archs import IMAGENET_MEAN, IMAGENET_STD, build, get_arch
from ..errors import RobustZooError
from ..validate import CheckpointFormatError

TOP_LEVEL_KEYS = ("model", "state_dict")

# torch's weights-only unpickler up to 2.9.1 can be driven by a crafted file into heap
# corruption and code execution (GHSA-63cw-57p8-fm3p, CVE-2026-24747); fixed in 2.10.0.
SAFE_UNPICKLER_TORCH = (2, 10)


def _torch_version() -> tuple[int, int]:
    nums = re.findall(r"\d+", torch.__version__)[:2]
    return (int(nums[0]), int(nums[1])) if len(nums) == 2 else (0, 0)


class UnsafeTorchError(RobustZooError, RuntimeError):
    """This torch's weights-only unpickler is known to be exploitable; pickles are refused."""


@dataclass
class Converted:
    state_dict: "OrderedDict[str, torch.Tensor]"
    arch: str
    wrapped: bool                       # had the DummyModel ``model.`` level
    mean: tuple[float, ...]
    std: tuple[float, ...]
    epoch: int | None
    had_attacker_copy: bool


@functools.lru_cache(maxsize=8)
def expected_state_dict(arch: str, num_classes: int) -> Mapping[str, torch.Tensor]:
    """``arch``'s state dict with ``num_classes`` outputs, on the meta device (read-only)."""
    # Building on the meta device allocates nothing and gives the exact keys, shapes and dtypes;
    # kept (timm's initialisation runs even on the meta device: a ConvNeXt takes ~0.4 s).
    return MappingProxyType(dict(build(arch, num_classes, device="meta").state_dict()))


def _kind(dtype: torch.dtype) -> str:
    return "floating" if dtype.is_floating_point else "complex" if dtype.is_complex else \
        "boolean" if dtype == torch.bool else "integer"


def _describe_mismatch(found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                       arch: str, n: int = 5) -> str:
    """The keys ``found`` lacks or adds, and the tensors whose shape or kind of dtype
    (floating, integer, ...) differs from ``expected``'s; "" when none."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    both = [k for k in expected if k in found]
    shapes = [f"{k}: file {tuple(found[k].shape)} vs {arch} {tuple(expected[k].shape)}"
              for k in both if tuple(found[k].shape) != tuple(expected[k].shape)]
    kinds = [f"{k}: file {found[k].dtype} ({_kind(found[k].dtype)}) vs {arch} "
             f"{expected[k].dtype} ({_kind(expected[k].dtype)})"
             for k in both if _kind(found[k].dtype) != _kind(expected[k].dtype)]
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} keys (first: {missing[:n]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {unexpected[:n]})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (first: {shapes[:n]})")
    if kinds:
        parts.append(f"{len(kinds)} tensors of another kind of dtype (first: {kinds[:n]})")
    return "; ".join(parts)


def _head_only(found: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
               head: str) -> str | None:
    """When the one difference is the head's output count: "its HEAD head has N outputs but
    num_classes is M" (a manifest entry's num_classes that disagrees with its file); else None."""
    bad = [k for k in expected
           if k in found and tuple(found[k].shape) != tuple(expected[k].shape)]
    w = head + ".weight"
    if set(found) != set(expected) or w not in bad or any(
            not k.startswith(head + ".") for k in bad):
        return None
    return (f"its {head} head has {found[w].shape[0]} outputs but num_classes is "
            f"{expected[w].shape[0]}")


def match_state_dict(sd: Mapping[str, torch.Tensor], arch: str, num_classes: int | None = None,
                     what: str = "state dict", dtype: torch.dtype | None = None
                     ) -> "OrderedDict[str, torch.Tensor]":
    """``sd`` if its keys, shapes and kinds of dtype are exactly ``arch``'s, else a
    CheckpointFormatError naming the first mismatching tensors: integer tensors where the
    architecture has floating parameters or buffers are refused, while its integer buffers
    (BatchNorm's ``num_batches_tracked``) stay integers. With ``dtype`` the floating tensors are
    cast to it (a tensor already of that dtype is returned as is, not copied) and the integer
    ones to the architecture's dtype. ``num_classes`` defaults to what the head in ``sd`` says."""
    a = get_arch(arch)
    if num_classes is None:
        head_w = sd.get(a.head + ".weight")
        num_classes = int(head_w.shape[0]) if head_w is not None else 1000
    expected = expected_state_dict(a.name, num_classes)
    problems = _describe_mismatch(sd, expected, a.name)
    head = _head_only(sd, expected, a.head)
    if head:
        raise CheckpointFormatError(f"The {what} does not fit {a.name} with {num_classes} "
                                    f"classes: {head} ({problems}); the manifest entry's "
                                    "num_classes must match the file's head")
    if problems:
        raise CheckpointFormatError(f"The {what} does not fit {a.name}: {problems}. Is it "
                                    "another architecture? `robust-zoo info NAME` shows each "
                                    "entry's arch.")
    if dtype is None:
        return OrderedDict((k, sd[k]) for k in expected)
    return OrderedDict((k, sd[k].to(dtype if v.dtype.is_floating_point else v.dtype))
                       for k, v in expected.items())


_ALLOWING = threading.Lock()


@contextlib.contextmanager
def _allowed(allow: Sequence[Any]) -> Iterator[None]:
    """torch's process-wide allowlist of globals, with ``allow`` added for this block only: one
    block at a time, and what was allowed before (by the user) is left allowed after."""
    if not allow:
        yield
        return
    with _ALLOWING:
        before = set(torch.serialization.get_safe_globals())
        with torch.serialization.safe_globals([g for g in allow if g not in before]):
            yield


def read_checkpoint(path: str | os.PathLike, allow: Sequence[Any] = ()) -> dict[str, Any]:
    """``torch.load`` restricted to tensors and plain containers (no code execution), plus
    exactly the types in ``allow`` (``torch.serialization.safe_globals``: classes whose
    instances are rebuilt from their attributes, never a callable that runs code); refused on
    a torch older than 2.10, whose weights-only unpickler is exploitable."""
    if _torch_version() < SAFE_UNPICKLER_TORCH:
        raise UnsafeTorchError(
            f"Refusing to unpickle {path} with torch {torch.__version__}: its weights-only "
            "unpickler (torch <= 2.9.1) can be driven by a crafted checkpoint into code "
            "execution (GHSA-63cw-57p8-fm3p, CVE-2026-24747). Upgrade to torch >= 2.10; "
            "safetensors files load on any torch.")
    with open(path, "rb") as f:
        head = f.read(512)
    if head.lstrip().lower().startswith((b"<!doctype", b"<html")):
        raise CheckpointFormatError(f"{path} is an HTML page, not a checkpoint (a login or error "
                                    "page saved in place of the file?)")
    if head.startswith(b"version https://git-lfs"):
        raise CheckpointFormatError(f"{path} is a Git LFS pointer, not the checkpoint itself")
    try:
        with _allowed(allow):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError, RuntimeError (zip), ...
        code = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", str(e), re.IGNORECASE)
        if code:
            raise CheckpointFormatError(
                f"{path} could not be read as a weights-only torch checkpoint: unpickling it "
                f"needs {code.group(1)}, which could run code. Files that need arbitrary code "
                "to unpickle are refused; nothing in it was executed.") from None
        raise CheckpointFormatError(
            f"{path} could not be read as a weights-only torch checkpoint ({type(e).__name__}: "
            f"{str(e).splitlines()[0][:300]}). Files that need arbitrary code to unpickle are "
            "refused.") from None
    if not isinstance(obj, dict):
        raise CheckpointFormatError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _split(sd: Mapping[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    parts: dict[str, dict[str, torch.Tensor]] = {"normalizer": {}, "model": {},
                                                 "attacker.normalize": {}, "attacker.model": {}}
    other = []
    for k, v in sd.items():
        key = k[len("module."):] if k.startswith("module.") else k
        for p in ("attacker.normalize.", "attacker.model.", "normalizer.", "model."):
            if key.startswith(p):
                parts[p[:-1]][key[len(p):]] = v
                break
        else:
            other.append(k)
    if other:
        raise CheckpointFormatError(
            f"unexpected keys outside normalizer/model/attacker: {other[:5]}")
    return parts


def _check_normalizer(buf: Mapping[str, torch.Tensor], mean: Sequence[float],
                      std: Sequence[float], where: str) -> None:
    for key, want in (("new_mean", mean), ("new_std", std)):
        if key not in buf:
            raise CheckpointFormatError(f"{where} has no {key} buffer (found: {sorted(buf)})")
        got = buf[key].float().flatten()
        if got.numel() != len(want) or not torch.allclose(got, torch.tensor(want), atol=1e-6):
            raise CheckpointFormatError(
                f"{where}.{key} is {got.tolist()}, expected {list(want)}: these weights expect "
                "another input normalization. Pass mean=/std= to convert them as they are.")


def from_robustness(ckpt: Mapping[str, Any], arch: str, *, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD, num_classes: int | None = None,
                    source: str = "checkpoint") -> Converted:
    """Torchvision state dict of ``arch`` from an upstream checkpoint dict (see module doc).
    ``num_classes``: the head the result must have (None: whatever the file's head has)."""
    a = get_arch(arch)
    key = next((k for k in TOP_LEVEL_KEYS if k in ckpt), None)
    if key is None:
        raise CheckpointFormatError(
            f"{source} is not a robustness checkpoint: expected a top-level 'model' (or "
            f"'state_dict') entry holding the AttackerModel state dict, found keys "
            f"{sorted(map(str, ckpt))[:10]}")
    sd = ckpt[key]
    if not isinstance(sd, Mapping) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointFormatError(f"{source}[{key!r}] is not a state dict of tensors")
    try:
        parts = _split(sd)
    except CheckpointFormatError as e:
        raise CheckpointFormatError(f"{source}: {e}. Expected keys module.normalizer.*, "
                                    "module.model.*, module.attacker.*") from None
    net = parts["model"]
    if not net:
        raise CheckpointFormatError(f"{source} has no module.model.* keys (found e.g. "
                                    f"{list(sd)[:5]})")
    if num_classes is None:
        head_w = net.get(a.head + ".weight", net.get("model." + a.head + ".weight"))
        num_classes = int(head_w.shape[0]) if head_w is not None else 1000
    expected = expected_state_dict(a.name, num_classes)
    wrapped = False
    if set(net) != set(expected) and all(k.startswith("model.") for k in net):
        net = {k[len("model."):]: v for k, v in net.items()}
        wrapped = True
    problems = _describe_mismatch(net, expected, a.name)
    head = _head_only(net, expected, a.head)
    if head:
        raise CheckpointFormatError(f"{source} does not hold a {a.name} with {num_classes} "
                                    f"classes: {head} ({problems})")
    if problems:
        raise CheckpointFormatError(f"{source} does not hold a {a.name}: {problems}")
    att = parts["attacker.model"]
    if att:
        if wrapped:
            att = {k[len("model."):]: v for k, v in att.items() if k.startswith("model.")}
        if set(att) != set(net):
            raise CheckpointFormatError(
                f"{source}: the attacker copy has other keys than the "
                f"model ({_describe_mismatch(att, net, a.name)})")
        for k, v in net.items():
            if not torch.equal(att[k], v):
                raise CheckpointFormatError(
                    f"{source}: module.attacker.model.{k} differs from module.model.{k}; the two "
                    "copies of an upstream checkpoint are identical, so this file was altered")
    if parts["normalizer"]:
        _check_normalizer(parts["normalizer"], mean, std, "module.normalizer")
    if parts["attacker.normalize"]:
        _check_normalizer(parts["attacker.normalize"], mean, std, "module.attacker.normalize")
    epoch = ckpt.get("epoch")
    return Converted(OrderedDict((k, net[k]) for k in expected), a.name, wrapped, tuple(mean),
                     tuple(std), int(epoch) if isinstance(epoch, (int, float)) else None, bool(att))


def to_robustness(state_dict: Mapping[str, torch.Tensor], arch: str, *,
                  wrapped: bool | None = None, mean: Sequence[float] = IMAGENET_MEAN,
                  std: Sequence[float] = IMAGENET_STD, epoch: int = 90,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The upstream checkpoint dict for a torchvision ``state_dict`` — the exact key layout that
    ``robustness.model_utils.make_and_restore_model`` loads (``wrapped`` defaults to how the
    paper's files store ``arch``). Tensors of the attacker copy are separate clones, as in the
    released files (which are twice the size of one network)."""
    a = get_arch(arch)
    sd = match_state_dict(state_dict, a.name)
    wrapped = a.upstream_wrapped if wrapped is None else wrapped
    pre = "model." if wrapped else ""
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    out["module.normalizer.new_mean"] = m.clone()
    out["module.normalizer.new_std"] = s.clone()
    for k, v in sd.items():
        out[f"module.model.{pre}{k}"] = v.detach().clone()
    out["module.attacker.normalize.new_mean"] = m.clone()
    out["module.attacker.normalize.new_std"] = s.clone()
    for k, v in sd.items():
        out[f"module.attacker.model.{pre}{k}"] = v.detach().clone()
    ckpt = {"model": out, "epoch": epoch, "optimizer": None, "schedule": None, "amp": None}
    ckpt.update(extra or {})
    return ckpt
