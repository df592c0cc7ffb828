"""Our own weight files: safetensors holding the bare network's state dict plus metadata.

Metadata (all strings, as safetensors requires): ``format`` = "robust_zoo", ``arch``,
``num_classes``, ``mean``/``std`` (JSON lists: the normalization the weights expect),
and whatever the writer adds (``name``, ``source_sha256``, ``source_file``, ...).

Layout. The files are standard safetensors (``safetensors.torch.load_file`` and timm read them),
written so that the loader can hand out tensors that live in the memory-mapped file and still
start on a 64-byte boundary: the JSON header is padded with spaces so the byte buffer starts at
a multiple of 64, and tensors whose size is a multiple of 64 bytes (every conv and linear weight
of the zoo's networks) come first. Alignment matters for bit-exact outputs: oneDNN chooses its
kernels by pointer alignment, and on AVX-512 machines a 4-byte-aligned weight gives results
that differ from torchvision's in the last bits.

Reading (``read_weights``) maps the file once, hashes exactly the mapped bytes with the fast
digest (``fileio.FAST_DIGEST``), validates the header (``validate.safetensors_header``) and builds
each tensor as a view of the map when it is 64-byte aligned, else as an aligned copy. So the
bytes that were hashed are the bytes the model computes with.
"""
from __future__ import annotations

import json
import math
import mmap
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from ..fileio import FAST_DIGEST, atomic_path, fast_hasher
from ..models.archs import IMAGENET_MEAN, IMAGENET_STD
from ..validate import (DTYPES, CheckpointFormatError, IntegrityError, header_length,
                       safetensors_header)

FORMAT_TAG = "robust_zoo"
ALIGN = 64

_TO_ST = {getattr(torch, name): code for code, (name, _) in DTYPES.items()
          if hasattr(torch, name)}


def _layout(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None
            ) -> tuple[bytes, list[torch.Tensor]]:
    """(8-byte length + padded JSON header, tensors in file order) of the aligned layout."""
    items = []
    for k, v in tensors.items():
        if v.dtype not in _TO_ST:
            raise CheckpointFormatError(f"tensor {k!r} has dtype {v.dtype}, which safetensors "
                                        "files of this package do not hold")
        items.append((k, v.detach().to("cpu").contiguous()))
    # 64-byte multiples first (they keep the alignment), in their state-dict order.
    items.sort(key=lambda kv: (kv[1].numel() * kv[1].element_size()) % ALIGN != 0)
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    off = 0
    for k, v in items:
        n = v.numel() * v.element_size()
        header[k] = {"dtype": _TO_ST[v.dtype], "shape": list(v.shape),
                     "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((-(8 + len(raw))) % ALIGN)
    return len(raw).to_bytes(8, "little") + raw, [v for _, v in items]


def _chunks(head: bytes, tensors: list[torch.Tensor]):
    yield head
    for v in tensors:
        if v.numel():
            yield memoryview(v.view(-1).view(torch.uint8).numpy())


def write_safetensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike,
                      metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``tensors`` as an aligned safetensors file (see the module doc), atomically."""
    head, items = _layout(tensors, metadata)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        for chunk in _chunks(head, items):
            f.write(chunk)
    return path


def serialized_digest(tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> str:
    """The fast digest of the bytes ``write_safetensors`` would write, without writing them."""
    h = fast_hasher()
    for chunk in _chunks(*_layout(tensors, metadata)):
        h.update(chunk)
    return h.hexdigest()


def weights_metadata(arch: str, num_classes: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     **metadata: Any) -> dict[str, str]:
    """The metadata ``save_weights`` writes."""
    meta = {"format": FORMAT_TAG, "arch": arch, "num_classes": str(int(num_classes)),
            "mean": json.dumps([float(x) for x in mean]),
            "std": json.dumps([float(x) for x in std])}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    return meta


def save_weights(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike, *,
                 arch: str, num_classes: int, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                 **metadata: Any) -> Path:
    """Write ``state_dict`` atomically as (aligned) safetensors plus the metadata above."""
    return write_safetensors(state_dict, path, weights_metadata(arch, num_classes, mean, std,
                                                                **metadata))


@dataclass
class Loaded:
    """A safetensors file as read: tensors, metadata, and the fast digest of its exact bytes."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, str]
    digest: str          # FAST_DIGEST hex of the whole file
    size: int
    copied: int          # tensors that were not 64-byte aligned in the file (copied)
    path: Path | None = None     # the file read


def read_weights(path: str | os.PathLike, expect_digest: str | None = None,
                 what: str | None = None) -> Loaded:
    """Map, hash and parse a safetensors file (see the module doc); never executes code.

    With ``expect_digest`` the fast digest of the mapped bytes must equal it (checked before
    the header is parsed), else ``IntegrityError``."""
    path = Path(path)
    what = what or str(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            if expect_digest is not None and fast_hasher(f.read()).hexdigest() != expect_digest:
                raise _changed(what, path)
            raise CheckpointFormatError(f"{what} is {size} bytes: too short for a safetensors "
                                        "file")
        # ACCESS_COPY: private, writable pages (the tensors can be trained in place; nothing
        # is ever written back to the file).
        mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    digest = fast_hasher(mm).hexdigest()
    if expect_digest is not None and digest != expect_digest:
        raise _changed(what, path)
    n = header_length(mm[:8], size, what)
    head = safetensors_header(bytes(mm[8:8 + n]), size, what)
    sd: dict[str, torch.Tensor] = {}
    copied = 0
    for t in head.tensors:
        dtype = getattr(torch, t.dtype)
        numel = math.prod(t.shape)
        if not numel:
            sd[t.name] = torch.empty(t.shape, dtype=dtype)
            continue
        # One frombuffer per tensor: tensors of their own (own version counter), not views of
        # one another, so an in-place update of one (BatchNorm statistics) leaves the others'
        # autograd state alone.
        if t.begin % ALIGN == 0:       # the map starts on a page boundary
            x = torch.frombuffer(mm, dtype=dtype, count=numel, offset=t.begin)
        else:
            x = torch.frombuffer(mm, dtype=torch.uint8, count=t.end - t.begin,
                                 offset=t.begin).clone().view(dtype)  # allocator: 64-aligned
            copied += 1
        sd[t.name] = x.view(t.shape)
    return Loaded(sd, head.metadata, digest, size, copied, path)


def _changed(what: str, path: Path) -> IntegrityError:
    return IntegrityError(f"{what} changed on disk since it was verified ({FAST_DIGEST} of "
                          f"{path} differs from the one recorded when its sha256 was checked)")


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (the header only is read)."""
    path = Path(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        n = header_length(f.read(8), size, str(path))
        header = f.read(n)
    return safetensors_header(header, size, str(path)).metadata


def load_weights(path: str | os.PathLike, device: str | torch.device = "cpu"
                 ) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(state_dict, metadata) of a safetensors file; never executes code."""
    loaded = read_weights(path)
    sd = loaded.state_dict
    if torch.device(device).type != "cpu":
        sd = {k: v.to(device) for k, v in sd.items()}
    return sd, loaded.metadata


__all__ = ["save_weights", "write_safetensors", "serialized_digest", "weights_metadata",
           "read_weights", "read_metadata", "load_weights",
           "Loaded", "FAST_DIGEST", "FORMAT_TAG"]
