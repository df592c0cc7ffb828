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
from .transforms import IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, Lighting

__all__ = ["JpegFolder", "TrainAugment", "EvalTransform", "AugParams", "JpegBatchDecoder",
           "collate_encoded", "decode"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")



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


def _rrc_params(height: int, width: int, scale: Sequence[float], ratio: Sequence[float]
                ) -> tuple[int, int, int, int]:
    """torchvision's ``RandomResizedCrop.get_params`` for an image of this size, drawing the same
    random numbers in the same order (it needs only the size, not the pixels)."""
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
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

    def sample(self, height: int, width: int) -> AugParams:
        """Parameters for one image, from torch's global RNG in ``data.train_transforms``'s
        order: crop box, flip, ColorJitter (order, then factors), lighting alpha."""
        box = _rrc_params(height, width, self.scale, self.ratio)
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
        from torchvision.transforms.v2 import functional as TF

        top, left, h, w = p.box
        # resize while uint8 (antialiased bilinear, like PIL's), then the small crop becomes float
        x = TF.resized_crop(img, top, left, h, w, [self.size, self.size], antialias=True)
        if p.flip:
            x = x.flip(-1)
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

    def __repr__(self) -> str:
        return (f"TrainAugment(size={self.size}, scale={self.scale}, jitter={self.jitter}, "
                f"lighting={self.lighting.alphastd})")


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

class JpegFolder(Dataset):
    """An ImageFolder tree read with ``torchvision.io``: ``(image, label)`` pairs.

    ``transform``: a (3, H, W) uint8 → tensor callable (``TrainAugment``, ``EvalTransform``);
    None yields the decoded uint8 image. ``decode="device"`` yields the encoded bytes instead
    (1-D uint8), for ``JpegBatchDecoder``. Classes are the sorted sub-folder names, as in
    torchvision's ImageFolder, so labels match it.
    """

    def __init__(self, root: str | os.PathLike, transform=None, decode: str = "cpu"):
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
        self.samples: list[tuple[str, int]] = []
        for c in self.classes:
            found = sorted(
                str(p) for p in (self.root / c).rglob("*")
                if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
            if not found:
                raise DataError(f"{self.root / c}: every class folder needs at least one image "
                                f"({', '.join(IMAGE_EXTENSIONS)})")
            self.samples += [(f, self.class_to_idx[c]) for f in found]
        self.targets = [t for _, t in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from torchvision.io import read_file

        path, label = self.samples[i]
        with _quiet():
            data = read_file(path)
        if self.decode == "device":
            return data, label
        img = decode(data)
        return (self.transform(img) if self.transform is not None else img), label


def collate_encoded(batch):
    """``collate_fn`` for ``JpegFolder(decode="device")``: (list of encoded images, labels)."""
    return [d for d, _ in batch], torch.tensor([t for _, t in batch], dtype=torch.long)


class JpegBatchDecoder:
    """Decode and augment a batch of encoded images on ``device`` (nvJPEG on CUDA: one batched
    ``decode_jpeg`` call), returning (float images (B, 3, size, size), labels) on ``device``.
    Random parameters are drawn on the host, per image, in ``TrainAugment.sample``'s order."""

    def __init__(self, transform, device: str | torch.device = "cuda"):
        self.transform, self.device = transform, torch.device(device)

    def __call__(self, batch):
        from torchvision.io import ImageReadMode, decode_jpeg

        encoded, labels = batch
        try:
            with _quiet():
                images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:     # a PNG or CMYK file in the batch: decode one by one
            images = [decode(d, self.device) for d in encoded]
        out = torch.stack([self.transform(img) for img in images])
        return out, labels.to(self.device, non_blocking=True)
