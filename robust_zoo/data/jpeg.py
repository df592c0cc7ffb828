"""JPEG folders without PIL: ``torchvision.io`` decoding, the training augmentation as tensor ops.

``JpegFolder`` reads an ImageFolder tree (``root/<class>/<image>``) like torchvision's
``ImageFolder``, but decodes with ``torchvision.io.decode_jpeg`` (libjpeg-turbo) and augments
``uint8`` tensors: the crop is resized while still 8-bit (torchvision's vectorised uint8
bilinear kernel), and only the ``size × size`` result is converted to float. Two ways to run it:

* ``decode="cpu"`` (default): each DataLoader worker decodes and augments; batches are float
  images in [0, 1], exactly what ``robust_zoo.data``'s ImageFolder sets yield.
* ``decode="device"``: the data set yields the encoded bytes; ``JpegBatchDecoder`` decodes a
  whole batch at once on the GPU (``decode_jpeg(list, device="cuda")``, nvJPEG) and augments it
  there, so the host only reads files. Use ``collate_encoded`` as the loader's ``collate_fn``.

``TrainAugment`` is the recipe's ``robustness-imagenet`` augmentation (``data.train_transforms``:
RandomResizedCrop, horizontal flip, ColorJitter(0.1, 0.1, 0.1), Lighting(0.05)) and draws its
random parameters from torch's global RNG in the same order as that PIL pipeline, so under one
seed both paths pick the same crop boxes, flips, jitter factors and lighting noise.

Training (``python -m robust_zoo.train --decoder tensor``) splits it in two: per image in the
workers, the draws and the uint8 crop (``TrainCrops``); per batch, the float conversion,
ColorJitter and Lighting as a few vectorised passes (``TrainAugment.finish``), either in the
``collate_fn`` (``FinishBatch``: float batches) or after the copy to a CUDA device
(``CropBatch`` + ``DeviceFinish``). ``--decoder nvjpeg`` draws in the workers from the file's
header (``EncodedSample``) and decodes and augments on the GPU (``JpegBatchDecoder``). Under
``data.SeededDataset`` every path draws each sample's parameters from that sample's seed.
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import Dataset

from .common import DataError
from .images import MAX_PIXELS, list_images
from .transforms import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, Lighting

__all__ = ["JpegFolder", "TrainAugment", "EvalTransform", "AugParams", "PARAM_COLUMNS",
           "TrainCrops", "FinishBatch", "CropBatch", "DeviceFinish", "EncodedSample",
           "JpegBatchDecoder", "DeviceBatches", "collate_encoded", "decode", "image_size"]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torchvision 0.29 deprecates torchvision.io's image codecs in favour of TorchCodec and
    warns on every call; they remain the libjpeg-turbo / nvJPEG decoders used here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities "
                                "of TorchVision are deprecated", category=DeprecationWarning)
        yield


def decode(data: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """Encoded bytes (1-D uint8) → (3, H, W) uint8 RGB. JPEG through ``decode_jpeg``; other
    formats (ImageNet holds a few PNGs and CMYK JPEGs) through ``decode_image``."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    with _quiet():
        try:
            return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            return decode_image(data, mode=ImageReadMode.RGB).to(device)


# ----------------------------------------------------------------------------- augmentation

@dataclass(frozen=True)
class AugParams:
    """One image's random draw: crop box (top, left, height, width), flip, the ColorJitter
    order (0 brightness, 1 contrast, 2 saturation) and factors, and the lighting alpha."""

    box: tuple[int, int, int, int]
    flip: bool
    order: tuple[int, ...]
    brightness: float
    contrast: float
    saturation: float
    alpha: tuple[float, float, float] | None


def _rrc_params(height: int, width: int, scale: Sequence[float], ratio: Sequence[float],
                log_ratio: Sequence[float] | None = None) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` for an image of this size, drawing the same
    random numbers in the same order (it needs only the size, not the pixels). ``log_ratio``:
    ``torch.log(torch.tensor(ratio))``, computed once by the caller."""
    area = height * width
    if log_ratio is None:
        log_ratio = torch.log(torch.tensor(ratio)).tolist()
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
        aspect_ratio = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,)).item()
            j = torch.randint(0, width - w + 1, size=(1,)).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)       # fallback: central crop
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


# ITU-R 601-2 luma, as torchvision's rgb_to_grayscale and PIL's convert("L")
_LUMA = (0.299, 0.587, 0.114)
_LUMA_T = torch.tensor(_LUMA)
PARAM_COLUMNS = 9      # TrainAugment.row: 3 op indices, 3 jitter factors, 3 lighting alphas


class TrainAugment:
    """RandomResizedCrop(size) → flip → ColorJitter(b, c, s) → Lighting on a (3, H, W) uint8
    image, returning float (3, size, size) in [0, 1]; defaults are the recipe's
    ``robustness-imagenet`` values. ``sample`` draws the parameters, ``apply`` uses them (the
    two halves let a GPU batch draw on the host and compute on the device)."""

    def __init__(self, size: int, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), jitter: float = 0.1,
                 lighting: float = 0.05):
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)
        self.jitter = float(jitter)
        self.lighting = Lighting(lighting, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC)
        self._eigval = self.lighting.eigval.tolist()
        self._eigvec = self.lighting.eigvec.tolist()
        self._log_ratio = torch.log(torch.tensor(self.ratio)).tolist()

    def sample(self, height: int, width: int) -> AugParams:
        """Parameters for one image, from torch's global RNG in ``data.train_transforms``'s
        order: crop box, flip, ColorJitter (order, then factors), lighting alpha."""
        box = _rrc_params(height, width, self.scale, self.ratio, self._log_ratio)
        flip = bool(torch.rand(1) < 0.5)
        j = self.jitter
        if j > 0:
            order = tuple(torch.randperm(4).tolist())
            b, c, s = (float(torch.empty(1).uniform_(1 - j, 1 + j)) for _ in range(3))
        else:
            order, b, c, s = (), 1.0, 1.0, 1.0
        alpha = None
        if self.lighting.alphastd != 0:
            alpha = tuple(torch.empty(3).normal_(0, self.lighting.alphastd).tolist())
        return AugParams(box, flip, order, b, c, s, alpha)

    def apply(self, img: torch.Tensor, p: AugParams) -> torch.Tensor:
        # resize while uint8 (antialiased bilinear, like PIL's), then the small crop becomes float
        x = self.crop(img, p)
        # colour work on (3, H·W), with few passes: brightness and contrast are one in-place
        # multiply-add each, saturation one 3×3 matmul; clamped after each op, as PIL does
        c, hh, ww = x.shape
        x = x.reshape(c, hh * ww).float().div_(255.0)
        for op in p.order:
            if op == 0:
                x = x.mul_(p.brightness).clamp_(0.0, 1.0)
            elif op == 1:
                mean = float(_LUMA_T.to(x.device) @ x.mean(dim=1))
                x = x.mul_(p.contrast).add_((1.0 - p.contrast) * mean).clamp_(0.0, 1.0)
            elif op == 2:
                sat, rest = p.saturation, 1.0 - p.saturation
                a = torch.tensor([[sat * (i == j) + rest * _LUMA[j] for j in range(3)]
                                  for i in range(3)], device=x.device)
                x = (a @ x).clamp_(0.0, 1.0)
        if p.alpha is not None:
            # Lighting: eigvec @ (alpha * eigval) added to every pixel
            rgb = [sum(self._eigvec[i][j] * p.alpha[j] * self._eigval[j] for j in range(3))
                   for i in range(3)]
            x = x.add_(torch.tensor(rgb, device=x.device).view(3, 1)).clamp_(0.0, 1.0)
        x = x.view(c, hh, ww)
        return x

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        return self.apply(img, self.sample(img.shape[-2], img.shape[-1]))

    # -- the same augmentation in two halves: per image in uint8, then batched in float --------
    def crop(self, img: torch.Tensor, p: AugParams) -> torch.Tensor:
        """The geometric half of ``apply``: the (3, size, size) uint8 crop, flipped."""
        from torchvision.transforms.v2 import functional as TF

        top, left, h, w = p.box
        x = TF.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
        return (x.flip(-1) if p.flip else x).contiguous()     # (3, H, W) for finish's copy

    def row(self, p: AugParams) -> list[float]:
        """The colour half of ``p`` as ``PARAM_COLUMNS`` numbers (one row of ``finish``'s
        parameter matrix): the jitter ops in the order applied (-1: none), the brightness,
        contrast and saturation factors, the lighting alpha (0 when off)."""
        ops = [op for op in p.order if op < 3] + [-1] * 3
        return [*ops[:3], p.brightness, p.contrast, p.saturation, *(p.alpha or (0.0,) * 3)]

    def finish(self, crops: torch.Tensor | Sequence[torch.Tensor], params: torch.Tensor,
               out: torch.Tensor | None = None, chunk: int | None = None) -> torch.Tensor:
        """The colour half of ``apply`` on a batch: B uint8 crops (a (B, 3, S, S) tensor or
        a list of (3, S, S)) and their (B, ``PARAM_COLUMNS``) ``row``s → (B, 3, S, S) float
        in [0, 1] (written into ``out`` when given). Works through ``chunk`` images at a time,
        by default as many as fit in about 2.5 MB of float (4 at 224 × 224), so that they stay
        in cache between the passes."""
        B, (C, H, W) = len(crops), crops[0].shape
        dev = crops[0].device
        chunk = chunk or max(1, 2_500_000 // (4 * C * H * W))
        if out is None:
            out = torch.empty((B, C, H, W), dtype=torch.float32, device=dev)
        params = params.to(device="cpu", dtype=torch.float32)     # B × 9 numbers: on the host
        ops = params[:, 0:3].long().tolist()                           # op at each position
        factors = params[:, 3:6]
        # Lighting: eigvec @ (alpha * eigval) per image, (B, 3)
        shift = (params[:, 6:9] * self.lighting.eigval) @ self.lighting.eigvec.T
        light = bool(shift.any())
        shift = shift.to(dev)
        # Every jitter op is x ← clamp(f·x + g): brightness g = 0; contrast g = (1 − f)·mean
        # grey level; saturation g = (1 − f)·grey image. f, and the weights of the mean grey
        # and of the grey image in g, for each image and position, as (B, 3) tensors:
        op_t = params[:, 0:3].long()
        f = torch.where(op_t >= 0, factors.gather(1, op_t.clamp(min=0)), 1.0)
        w_mean = torch.where(op_t == 1, 1.0 - f, 0.0)
        w_grey = torch.where(op_t == 2, 1.0 - f, 0.0)
        # the first op also turns 0..255 into [0, 1]: f/255, and g measured on 0..255
        f[:, 0] /= 255.0
        w_mean[:, 0] /= 255.0
        w_grey[:, 0] /= 255.0
        # f ≤ 1 mixes values in [0, 1] (convex combinations): no clamp needed after that op
        clamp = (f * torch.tensor([255.0, 1.0, 1.0]) > 1).tolist()
        f, w_mean, w_grey = (t.to(dev).view(B, 3, 1, 1) for t in (f, w_mean, w_grey))
        luma = _LUMA_T.to(dev).view(1, 1, 3)

        def grey(v):      # (n, 3, P) → (n, 1, P) luma; a matmul on the CPU (fastest there),
            if v.device.type == "cpu":           # elementwise elsewhere (exact under TF32)
                return luma @ v
            return (v * luma.view(1, 3, 1)).sum(1, keepdim=True)

        for a in range(0, B, chunk):
            b = min(a + chunk, B)
            x = out[a:b].view(b - a, C, H * W)
            if isinstance(crops, torch.Tensor):
                x.copy_(crops[a:b].reshape(b - a, C, H * W))
            else:
                for j in range(a, b):
                    x[j - a].copy_(crops[j].reshape(C, H * W))
            rows = ops[a:b]
            if all(r[0] < 0 for r in rows):
                x.div_(255.0)
            for k in range(3):
                here = {r[k] for r in rows}
                if here == {-1}:
                    continue
                fk = f[a:b, k]
                if 2 in here:                                        # saturation: grey image
                    g = grey(x).mul_(w_grey[a:b, k])
                    if 1 in here:
                        g.add_(grey(x.mean(2, keepdim=True)).mul_(w_mean[a:b, k]))
                    x.mul_(fk).add_(g)
                elif 1 in here:                                      # contrast: mean grey
                    g = grey(x.mean(2, keepdim=True)).mul_(w_mean[a:b, k])
                    x.mul_(fk).add_(g)
                else:                                                # brightness only
                    x.mul_(fk)
                if any(c[k] for c in clamp[a:b]):
                    x.clamp_(0.0, 1.0)
            if light:
                x.add_(shift[a:b].view(-1, C, 1))
            x.clamp_(0.0, 1.0)       # also the rounding of the unclamped mixes: [0, 1] exactly
        return out


class EvalTransform:
    """Resize the shorter side to ``resize`` (uint8, antialiased), center crop ``size``, to
    float in [0, 1]: ``data.eval_transforms`` on tensors."""

    def __init__(self, size: int, resize: int | None = None):
        from .transforms import eval_resize

        self.size, self.resize = int(size), int(resize or eval_resize(size))

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        x = TF.resize(img, [self.resize], antialias=True)
        return TF.center_crop(x, [self.size, self.size]).float().div_(255.0)


# ----------------------------------------------------------------------------- data set

def image_size(data: torch.Tensor) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header or a PNG's IHDR chunk, without decoding;
    None for other formats or a header that cannot be read."""
    buf = memoryview(data.numpy())
    n = len(buf)
    if n >= 24 and bytes(buf[:8]) == b"\x89PNG\r\n\x1a\n":
        return int.from_bytes(buf[20:24], "big"), int.from_bytes(buf[16:20], "big")
    if n < 4 or buf[0] != 0xFF or buf[1] != 0xD8:
        return None
    i = 2
    while i + 9 < n:                                   # walk the marker segments
        if buf[i] != 0xFF:
            return None
        marker = buf[i + 1]
        if marker == 0xFF:                             # fill byte
            i += 1
            continue
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) are not frames
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = (buf[i + 5] << 8) | buf[i + 6], (buf[i + 7] << 8) | buf[i + 8]
            return (h, w) if h and w else None
        i += 2 + ((buf[i + 2] << 8) | buf[i + 3])
    return None


def _check_size(path: str, data: torch.Tensor) -> None:
    size = image_size(data)
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise DataError(f"{path}: the image declares {size[1]}×{size[0]} = "
                        f"{size[0] * size[1]:,} pixels, more than the {MAX_PIXELS:,} allowed (a "
                        "decompression bomb or a damaged header); remove the file")


def _decode_file(path: str, data: torch.Tensor) -> torch.Tensor:
    """``decode`` whose failures name the file; formats torchvision.io cannot read (BMP, TIFF,
    PPM) go through PIL, as ImageFolder reads them."""
    _check_size(path, data)
    try:
        return decode(data)
    except RuntimeError:
        pass
    from .images import load_rgb

    img = load_rgb(path)              # a DataError naming the file when PIL cannot read it
    return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(
        img.height, img.width, 3).permute(2, 0, 1)


class JpegFolder(Dataset):
    """An ImageFolder tree read with ``torchvision.io``: ``(image, label)`` pairs.

    Classes and samples are torchvision ImageFolder's (same extensions, same order), so labels
    and indices match it. ``transform`` gets the decoded (3, H, W) uint8 image
    (``TrainAugment``, ``EvalTransform``, ``TrainCrops``); None yields that image.
    ``decode="device"`` skips decoding: ``transform`` then gets the encoded bytes (1-D uint8;
    ``EncodedSample`` draws the augmentation for them) and None yields the bytes, for
    ``JpegBatchDecoder``.
    """

    def __init__(self, root: str | os.PathLike, transform=None, decode: str = "cpu"):
        from torchvision.datasets.folder import IMG_EXTENSIONS

        if decode not in ("cpu", "device"):
            raise DataError(f"JpegFolder: decode={decode!r}; use 'cpu' (decode in the loader's "
                            "workers) or 'device' (yield bytes for JpegBatchDecoder)")
        self.root, self.transform, self.decode = Path(root).expanduser(), transform, decode
        if not self.root.is_dir():
            raise DataError(f"Data folder {self.root} does not exist (or is not a folder): "
                            "expected DIR/<class>/<image>")
        self.classes = sorted(d.name for d in os.scandir(self.root) if d.is_dir())
        if not self.classes:
            raise DataError(f"{self.root} has no class sub-folders: expected DIR/<class>/<image>")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        try:
            self.samples = list_images(self.root, self.class_to_idx, IMG_EXTENSIONS)
        except FileNotFoundError as e:   # "Found no valid file for the classes ..."
            raise DataError(f"{self.root}: every class folder needs at least one image "
                            f"({', '.join(IMG_EXTENSIONS)}); {e}") from None
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from torchvision.io import read_file

        path, label = self.samples[i]
        with _quiet():
            data = read_file(path)
        if self.decode == "device":
            _check_size(path, data)
            x = data
        else:
            x = _decode_file(path, data)
        return (self.transform(x) if self.transform is not None else x), label


# ----------------------------------------------------------------------------- batches
#
# The fast training path splits TrainAugment in two. Per image, in the loader's workers:
# decode, draw the parameters (TrainAugment.sample, under the sample's seed), crop, resize and
# flip in uint8 (TrainCrops). Per batch: the float conversion, ColorJitter and Lighting as a
# few vectorised passes (FinishBatch, the loader's collate_fn), writing straight into the batch
# tensor the loader hands over, which lives in shared memory when made in a worker.

def _batch_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An empty tensor for a batch: in shared memory inside a DataLoader worker (as
    ``default_collate`` allocates it), so handing it to the main process copies nothing."""
    if torch.utils.data.get_worker_info() is not None:
        numel = math.prod(shape)
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
        return torch.empty(0, dtype=dtype).new(storage).view(shape)
    return torch.empty(shape, dtype=dtype)


class TrainCrops:
    """JpegFolder transform of the fast training path: (3, H, W) uint8 →
    (uint8 (3, size, size) crop, the image's colour ``row``), for ``FinishBatch``."""

    def __init__(self, augment: TrainAugment):
        self.augment = augment

    def __call__(self, img: torch.Tensor):
        p = self.augment.sample(img.shape[-2], img.shape[-1])
        return self.augment.crop(img, p), self.augment.row(p)

    def __repr__(self) -> str:
        return f"TrainCrops({self.augment!r})"


class FinishBatch:
    """``collate_fn`` of the fast training path: ``TrainCrops`` items → (float images
    (B, 3, size, size) in [0, 1], labels), the same images as ``TrainAugment`` per image."""

    def __init__(self, augment: TrainAugment):
        self.augment = augment

    def __call__(self, batch):
        crops = [c for (c, _), _ in batch]
        params = torch.tensor([r for (_, r), _ in batch], dtype=torch.float32)
        labels = torch.tensor([t for _, t in batch], dtype=torch.long)
        out = _batch_buffer((len(batch), *crops[0].shape), torch.float32)
        return self.augment.finish(crops, params, out=out), labels


class CropBatch:
    """``collate_fn`` that leaves the colour work to the training device: ``TrainCrops``
    items → (uint8 crops (B, 3, size, size), their ``row``s (B, ``PARAM_COLUMNS``), labels),
    a quarter of the float batch's bytes to hand over, pin and copy. ``DeviceFinish`` ends it."""

    def __call__(self, batch):
        crops = [c for (c, _), _ in batch]
        out = _batch_buffer((len(batch), *crops[0].shape), torch.uint8)
        torch.stack(crops, out=out)
        params = torch.tensor([r for (_, r), _ in batch], dtype=torch.float32)
        return out, params, torch.tensor([t for _, t in batch], dtype=torch.long)


class DeviceFinish:
    """A ``CropBatch`` batch → (float images, labels) on ``device``: the copy, then
    ``TrainAugment.finish`` there (on CUDA a few kernels per batch)."""

    def __init__(self, augment: TrainAugment, device: str | torch.device = "cuda"):
        self.augment, self.device = augment, torch.device(device)

    def __call__(self, batch):
        crops, params, labels = batch
        crops = crops.to(self.device, non_blocking=True)
        chunk = len(crops) if self.device.type == "cuda" else None
        return (self.augment.finish(crops, params, chunk=chunk),
                labels.to(self.device, non_blocking=True))


class EncodedSample:
    """JpegFolder(decode="device") transform: encoded bytes → (bytes, AugParams), the draw
    made in the worker under the sample's seed (the size comes from the file's header)."""

    def __init__(self, augment: TrainAugment):
        self.augment = augment

    def __call__(self, data: torch.Tensor):
        size = image_size(data)
        if size is None:                     # not a JPEG/PNG header: decode to learn the size
            size = tuple(decode(data).shape[-2:])
        return data, self.augment.sample(*size)


def collate_encoded(batch):
    """``collate_fn`` for ``JpegFolder(decode="device")``: (encoded images, their
    ``AugParams`` — None without an ``EncodedSample`` transform —, labels)."""
    labels = torch.tensor([t for _, t in batch], dtype=torch.long)
    if batch and isinstance(batch[0][0], tuple):
        return [d for (d, _), _ in batch], [p for (_, p), _ in batch], labels
    return [d for d, _ in batch], None, labels


class JpegBatchDecoder:
    """Decode and augment a ``collate_encoded`` batch on ``device`` (nvJPEG on CUDA: one
    batched ``decode_jpeg`` call), returning (float images (B, 3, size, size), labels) on
    ``device``: per image the uint8 crop, then ``TrainAugment.finish`` over the whole batch.
    Parameters the batch lacks are drawn here, in ``TrainAugment.sample``'s order."""

    def __init__(self, augment: TrainAugment, device: str | torch.device = "cuda"):
        self.augment, self.device = augment, torch.device(device)

    def __call__(self, batch):
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded, params, labels = batch
        try:
            with _quiet():
                images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:     # a PNG or CMYK file in the batch: decode one by one
            images = [decode(d, self.device) for d in encoded]
        aug = self.augment
        if params is None:
            params = [aug.sample(img.shape[-2], img.shape[-1]) for img in images]
        crops = [aug.crop(img, p) for img, p in zip(images, params)]
        rows = torch.tensor([aug.row(p) for p in params], dtype=torch.float32)
        chunk = len(crops) if self.device.type == "cuda" else None
        return aug.finish(crops, rows, chunk=chunk), labels.to(self.device, non_blocking=True)


class DeviceBatches:
    """``loader`` with ``fn`` applied to each batch as it is taken (in the main process):
    how a training loop runs ``JpegBatchDecoder`` without knowing about it."""

    def __init__(self, loader, fn):
        self.loader, self.fn = loader, fn

    def __iter__(self):
        for batch in self.loader:
            yield self.fn(batch)

    def __len__(self) -> int:
        return len(self.loader)
