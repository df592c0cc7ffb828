"""Training data sets: ImageFolder trees (ImageNet), CIFAR-10/100 and scikit-learn's digits.

Every data set yields ``(image, label)`` with the image a float tensor in [0, 1], shaped
(3, size, size): the models normalize inside, and the attack's ε is defined on that scale.

``recipe.dataset`` picks the source: ``"imagenet"`` / ``"imagefolder"`` (``data`` has ``train/`` and
``val/`` class folders), ``"cifar10"`` / ``"cifar100"`` (torchvision, under the ``data`` root,
downloaded only when asked), ``"digits"`` (the 1,797 8×8 digits shipped inside scikit-learn,
upsampled to ``input_size`` and replicated to 3 channels; ``"digits:0-4"`` keeps classes 0–4,
relabelled 0..4). ``recipe.augmentation`` picks the training transforms (see ``AUGMENTATIONS``).

``decoder`` picks how ImageFolder training images are decoded and augmented (``DECODERS``):
``"pil"`` (torchvision ImageFolder + PIL, the reference path), ``"tensor"`` (``data.jpeg``:
libjpeg-turbo decode and uint8 crops in the loader's workers, the colour augmentation batched
in the collate_fn, or on a CUDA device after the copy of the uint8 batch) or ``"nvjpeg"``
(CUDA only: the workers read the files and draw the augmentation, the GPU decodes and augments
each batch). All three draw the same random parameters per sample; validation images always
go through PIL.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from .common import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DIGITS_MEAN,
                     DIGITS_STD, IMAGENET_MEAN, IMAGENET_STD, DataError)
from ..recipe import Decoder, choices
from .images import checked_image_folder
from .transforms import AUGMENTATIONS, eval_resize, eval_transforms, train_transforms

__all__ = ["DataSpec", "DECODERS", "TRAINING_DATASETS", "DATASET_STATS", "DATASET_DEFAULTS",
           "dataset_kind", "build_datasets", "parse_digit_classes", "TensorImages",
           "digits_tensors"]

# Normalization a model trained on each data set carries (applied inside the model).
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
    "digits": (DIGITS_MEAN, DIGITS_STD),
}
TRAINING_DATASETS = tuple(DATASET_STATS)
DECODERS = choices(Decoder)
# Recipe values a data set implies when the user does not give them.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"input_size": 32, "augmentation": "robustness-cifar", "num_classes": 10},
    "cifar100": {"input_size": 32, "augmentation": "robustness-cifar", "num_classes": 100},
    "digits": {"input_size": 32, "augmentation": "none", "num_classes": 10},
}


# --------------------------------------------------------------------------- data sets

@dataclass
class DataSpec:
    """What a run trains and evaluates on."""

    name: str
    train: Dataset
    val: Dataset
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    preprocessing: dict = field(default_factory=dict)    # the manifest entry's eval preprocessing
    # the training loader's collate_fn (None: the default), and a function the main process
    # applies to each collated training batch, returning (images, labels) on the device
    # (None: the batch is already images and labels)
    collate: Callable | None = None
    on_device: Callable | None = None


def dataset_kind(dataset: str) -> str:
    kind = dataset.split(":", 1)[0].lower()
    if kind not in TRAINING_DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}; choose one of "
                        f"{', '.join(TRAINING_DATASETS)} "
                        "(imagefolder: any folder with train/ and val/ class subfolders; "
                        "digits:0-4 keeps digit classes 0-4)")
    return kind


def build_datasets(dataset: str, data: str | os.PathLike | None, *, input_size: int,
                   augmentation: str, download: bool = False, decoder: str = "pil",
                   device: str | torch.device = "cpu") -> DataSpec:
    """Train and validation sets for ``dataset`` (a ``recipe.dataset`` value) found at ``data``;
    ``decoder`` (one of ``DECODERS``) for ImageFolder training images, ``device`` the one the
    run trains on (``"nvjpeg"`` needs CUDA)."""
    kind = dataset_kind(dataset)
    if augmentation not in AUGMENTATIONS:
        raise DataError(f"Unknown augmentation {augmentation!r}; choose one of "
                        f"{', '.join(AUGMENTATIONS)}")
    _check_decoder(decoder, kind, augmentation, torch.device(device))
    mean, std = DATASET_STATS[kind]
    if kind == "digits":
        spec = _digits(dataset, input_size, augmentation)
    elif kind in ("cifar10", "cifar100"):
        spec = _cifar(kind, data, input_size, augmentation, download)
    else:
        spec = _image_folder(kind, data, input_size, augmentation, decoder, torch.device(device))
    spec.mean, spec.std = mean, std
    spec.preprocessing.update({"mean": list(mean), "std": list(std), "input_range": [0, 1],
                               "normalize_in_model": True, "interpolation": "bilinear"})
    return spec


def _require_dir(data, what: str) -> Path:
    if data is None:
        raise DataError(f"No data folder given: pass --data /path/to/{what}")
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(f"Data folder {path} does not exist (expected {what})")
    if not path.is_dir():
        raise DataError(f"--data {path} is a file; expected a folder holding {what}")
    return path


def _check_decoder(decoder: str, kind: str, augmentation: str, device: torch.device) -> None:
    if decoder not in DECODERS:
        raise DataError(f"Unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)} "
                        "(pil: torchvision ImageFolder + PIL; tensor: torchvision.io decode, "
                        "batched tensor augmentation; nvjpeg: GPU decode, CUDA only)")
    if decoder == "pil":
        return
    if kind not in ("imagenet", "imagefolder"):
        raise DataError(f"--decoder {decoder} reads ImageFolder trees of JPEGs (imagenet, "
                        f"imagefolder); {kind} is not one: use --decoder pil")
    if augmentation != "robustness-imagenet":
        raise DataError(f"--decoder {decoder} implements the robustness-imagenet augmentation "
                        f"(RandomResizedCrop, flip, ColorJitter, Lighting), not {augmentation!r}: "
                        "use --decoder pil or --augmentation robustness-imagenet")
    if decoder == "nvjpeg" and device.type != "cuda":
        raise DataError(f"--decoder nvjpeg decodes on the GPU, and this run trains on {device}: "
                        "use --decoder tensor (the same augmentation, decoded on the CPU) or "
                        "train on a CUDA device")


def _train_images(root: Path, input_size: int, decoder: str, device: torch.device):
    """(training set, collate_fn, on_device) of a ``--decoder tensor|nvjpeg`` run."""
    from . import jpeg

    aug = jpeg.TrainAugment(input_size)
    if decoder == "tensor":
        images = jpeg.JpegFolder(root, transform=jpeg.TrainCrops(aug))
        if device.type == "cuda":      # uint8 crops cross to the GPU, the colour work runs there
            return images, jpeg.CropBatch(), jpeg.DeviceFinish(aug, device)
        return images, jpeg.FinishBatch(aug), None
    return (jpeg.JpegFolder(root, transform=jpeg.EncodedSample(aug), decode="device"),
            jpeg.collate_encoded, jpeg.JpegBatchDecoder(aug, device))


def _image_folder(kind: str, data, input_size: int, augmentation: str, decoder: str = "pil",
                  device: torch.device = torch.device("cpu")) -> DataSpec:
    root = _require_dir(data, "train/ and val/ folders of class subfolders (ImageNet layout)")
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        have = sorted(p.name for p in root.iterdir() if p.is_dir())[:8]
        raise DataError(f"{root} has no {' and no '.join(s + '/' for s in missing)} folder. An "
                        "ImageFolder data set needs train/<class>/<image> and val/<class>/<image>"
                        f"; subfolders found: {', '.join(have) or 'none'}")
    sets, collate, on_device = {}, None, None
    for split in ("train", "val"):
        try:
            if split == "val":
                sets[split] = checked_image_folder(root / split,
                                                   transform=eval_transforms(input_size))
            elif decoder == "pil":
                sets[split] = checked_image_folder(
                    root / split, transform=train_transforms(augmentation, input_size))
            else:      # the same file list as ImageFolder's, so indices and labels match
                sets[split], collate, on_device = _train_images(root / split, input_size,
                                                                decoder, device)
        except DataError as e:
            raise DataError(f"{root / split} holds no usable images: {e}") from None
    if sets["train"].classes != sets["val"].classes:
        only = sorted(set(sets["train"].classes) ^ set(sets["val"].classes))[:5]
        raise DataError(f"train/ and val/ in {root} have different class folders (e.g. {only})")
    return DataSpec(kind, sets["train"], sets["val"], len(sets["train"].classes),
                    list(sets["train"].classes), (), (),
                    {"resize": eval_resize(input_size), "crop": input_size},
                    collate=collate, on_device=on_device)


def _cifar(kind: str, data, input_size: int, augmentation: str, download: bool) -> DataSpec:
    from torchvision import datasets
    from torchvision import transforms as T

    if data is None:
        raise DataError(f"No data folder given for {kind}: pass --data /path/to/root "
                        "(add --download to fetch it there)")
    root = Path(data).expanduser()
    if not download and not root.is_dir():
        raise DataError(f"Data folder {root} does not exist; pass --download to fetch {kind} "
                        "into it")
    cls = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    val_tf = (T.ToTensor() if input_size == 32 else
              T.Compose([T.Resize(input_size), T.CenterCrop(input_size), T.ToTensor()]))
    try:
        train = cls(str(root), train=True, transform=train_transforms(augmentation, input_size),
                    download=download)
        val = cls(str(root), train=False, transform=val_tf, download=download)
    except RuntimeError as e:     # torchvision: "Dataset not found or corrupted. ..."
        raise DataError(f"{kind} not found under {root} ({e}); pass --download to fetch "
                        "it") from None
    return DataSpec(kind, train, val, len(train.classes), list(train.classes), (), (),
                    {"resize": input_size, "crop": input_size})


# -- digits (scikit-learn) ----------------------------------------------------------------

def parse_digit_classes(dataset: str) -> list[int]:
    """``"digits"`` → 0..9, ``"digits:0-4"`` → [0..4], ``"digits:1,3,5"`` → [1, 3, 5]."""
    _, _, spec = dataset.partition(":")
    if not spec:
        return list(range(10))
    out: list[int] = []
    try:
        for part in spec.split(","):
            lo, _, hi = part.partition("-")
            out.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise DataError(f"Cannot read digit classes {spec!r} in {dataset!r}; write e.g. "
                        "digits:0-4 or digits:1,3,5") from None
    if not out or len(set(out)) != len(out) or not all(0 <= c <= 9 for c in out):
        raise DataError(f"Digit classes {spec!r} must be distinct values in 0..9")
    return out


class TensorImages(Dataset):
    """Images held in memory as one [0, 1] tensor, with an optional tensor → tensor transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: list[str],
                 transform: Callable | None = None):
        self.images, self.labels, self.classes, self.transform = images, labels, classes, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.labels[i])


def digits_tensors(classes: list[int] | None = None, input_size: int = 32, split: str = "train",
                   train_fraction: float = 0.7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's digits as (N, 3, size, size) images in [0, 1] and labels 0..K-1.

    Nearest-neighbour upsampling keeps the 17 grey levels exact; the train/test split is a
    fixed per-class shuffle (``seed``), so it never depends on the run's own seed.
    """
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    classes = list(range(10)) if classes is None else classes
    d = load_digits()
    images = torch.tensor(d.images, dtype=torch.float32) / 16.0
    target = torch.tensor(d.target)
    g = torch.Generator().manual_seed(seed)
    idx = []
    for new, c in enumerate(classes):
        members = (target == c).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=g)]
        cut = int(round(train_fraction * len(members)))
        idx.append(members[:cut] if split == "train" else members[cut:])
    sel = torch.cat(idx).sort().values
    x = F.interpolate(images[sel, None], size=(input_size, input_size), mode="nearest")
    remap = torch.full((10,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    return x.expand(-1, 3, -1, -1).contiguous(), remap[target[sel]]


def _digits(dataset: str, input_size: int, augmentation: str) -> DataSpec:
    classes = parse_digit_classes(dataset)
    if augmentation not in ("none", "flip-crop"):
        raise DataError(f"digits are tensors already: use augmentation 'none' or 'flip-crop', "
                        f"not {augmentation!r}")
    tf = None
    if augmentation == "flip-crop":
        from torchvision import transforms as T

        tf = T.Compose([T.RandomCrop(input_size, padding=input_size // 8),
                        T.RandomHorizontalFlip()])
    names = [str(c) for c in classes]
    train = TensorImages(*digits_tensors(classes, input_size, "train"), names, tf)
    val = TensorImages(*digits_tensors(classes, input_size, "val"), names)
    return DataSpec("digits", train, val, len(classes), names, (), (),
                    {"resize": input_size, "crop": input_size})
