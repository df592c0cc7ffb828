"""Training data: ImageFolder trees (ImageNet), CIFAR-10/100 and scikit-learn's digits.

Every data set yields ``(image, label)`` with the image a float tensor in [0, 1], shaped
(3, size, size): the models normalize inside, and the attack's ε is defined on that scale.

``recipe.dataset`` picks the source: ``"imagenet"`` / ``"imagefolder"`` (``data`` has ``train/`` and
``val/`` class folders), ``"cifar10"`` / ``"cifar100"`` (torchvision, under the ``data`` root,
downloaded only when asked), ``"digits"`` (the 1,797 8×8 digits shipped inside scikit-learn,
upsampled to ``input_size`` and replicated to 3 channels; ``"digits:0-4"`` keeps classes 0–4,
relabelled 0..4). ``recipe.augmentation`` picks the training transforms (see ``AUGMENTATIONS``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from .models import IMAGENET_MEAN, IMAGENET_STD

# robustness' data_augmentation.IMAGENET_PCA (AlexNet's PCA of ImageNet RGB pixels)
IMAGENET_PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                       (-0.5808, -0.0045, -0.8140),
                       (-0.5836, -0.6948, 0.4203))

# Normalization a model trained on each data set carries (applied inside the model).
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),     # robustness' values
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "digits": ((0.3053,) * 3, (0.3760,) * 3),                             # all 1,797 images
}
DATASETS = tuple(DATASET_STATS)
AUGMENTATIONS = ("robustness-imagenet", "robustness-cifar", "flip-crop", "none")

# Recipe values a data set implies when the user does not give them.
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "cifar10": {"input_size": 32, "augmentation": "robustness-cifar", "num_classes": 10},
    "cifar100": {"input_size": 32, "augmentation": "robustness-cifar", "num_classes": 100},
    "digits": {"input_size": 32, "augmentation": "none", "num_classes": 10},
}


class DataError(ValueError):
    """Data that is missing, empty, or does not fit the recipe or the model (training and
    evaluation alike)."""


class Lighting:
    """AlexNet-style PCA lighting noise (robustness' ``data_augmentation.Lighting``).

    Adds ``eigvec @ (alpha * eigval)`` to every pixel, ``alpha ~ N(0, alphastd)`` per image,
    drawn from torch's global RNG like the torchvision transforms around it. The result is
    clamped to [0, 1] (robustness does not clamp; its attack clamps every iterate, so only the
    ε=0 path and the attack's start point differ, by at most a few 1/255).
    """

    def __init__(self, alphastd: float = 0.05, eigval=IMAGENET_PCA_EIGVAL,
                 eigvec=IMAGENET_PCA_EIGVEC):
        self.alphastd = float(alphastd)
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if self.alphastd == 0:
            return img
        alpha = torch.empty(3).normal_(0, self.alphastd)
        rgb = (self.eigvec * (alpha * self.eigval).view(1, 3)).sum(1)
        return (img + rgb.to(img.dtype).view(3, 1, 1)).clamp_(0.0, 1.0)

    def __repr__(self) -> str:
        return f"Lighting(alphastd={self.alphastd})"


def eval_resize(input_size: int) -> int:
    """The eval resize for a crop: 256 for 224 (ImageNet), scaled in proportion otherwise."""
    return int(round(input_size * 256 / 224))


def train_transforms(augmentation: str, input_size: int) -> Callable:
    """PIL image → [0, 1] tensor with the training augmentation ``augmentation``."""
    from torchvision import transforms as T

    if augmentation == "robustness-imagenet":   # robustness' TRAIN_TRANSFORMS_IMAGENET
        return T.Compose([T.RandomResizedCrop(input_size), T.RandomHorizontalFlip(),
                          T.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1),
                          T.ToTensor(), Lighting(0.05)])
    if augmentation == "robustness-cifar":      # robustness' TRAIN_TRANSFORMS_DEFAULT(size)
        return T.Compose([T.RandomCrop(input_size, padding=4), T.RandomHorizontalFlip(),
                          T.ColorJitter(0.25, 0.25, 0.25), T.RandomRotation(2), T.ToTensor()])
    if augmentation == "flip-crop":
        return T.Compose([T.RandomCrop(input_size, padding=input_size // 8),
                          T.RandomHorizontalFlip(), T.ToTensor()])
    if augmentation == "none":
        return T.Compose([T.Resize(input_size), T.CenterCrop(input_size), T.ToTensor()])
    raise DataError(f"Unknown augmentation {augmentation!r}; choose one of "
                    f"{', '.join(AUGMENTATIONS)}")


def eval_transforms(input_size: int, resize: int | None = None) -> Callable:
    """Resize (256 for a 224 crop, in proportion otherwise), center crop, to a [0, 1] tensor."""
    from torchvision import transforms as T

    return T.Compose([T.Resize(resize or eval_resize(input_size)), T.CenterCrop(input_size),
                      T.ToTensor()])


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


def dataset_kind(dataset: str) -> str:
    kind = dataset.split(":", 1)[0].lower()
    if kind not in DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)} "
                        "(imagefolder: any folder with train/ and val/ class subfolders; "
                        "digits:0-4 keeps digit classes 0-4)")
    return kind


def build_datasets(dataset: str, data: str | os.PathLike | None, *, input_size: int,
                   augmentation: str, download: bool = False) -> DataSpec:
    """Train and validation sets for ``dataset`` (a ``recipe.dataset`` value) found at ``data``."""
    kind = dataset_kind(dataset)
    if augmentation not in AUGMENTATIONS:
        raise DataError(f"Unknown augmentation {augmentation!r}; choose one of "
                        f"{', '.join(AUGMENTATIONS)}")
    mean, std = DATASET_STATS[kind]
    if kind == "digits":
        spec = _digits(dataset, input_size, augmentation)
    elif kind in ("cifar10", "cifar100"):
        spec = _cifar(kind, data, input_size, augmentation, download)
    else:
        spec = _image_folder(kind, data, input_size, augmentation)
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


def _image_folder(kind: str, data, input_size: int, augmentation: str) -> DataSpec:
    from torchvision.datasets import ImageFolder

    root = _require_dir(data, "train/ and val/ folders of class subfolders (ImageNet layout)")
    missing = [s for s in ("train", "val") if not (root / s).is_dir()]
    if missing:
        have = sorted(p.name for p in root.iterdir() if p.is_dir())[:8]
        raise DataError(f"{root} has no {' and no '.join(s + '/' for s in missing)} folder. An "
                        "ImageFolder data set needs train/<class>/<image> and val/<class>/<image>"
                        f"; subfolders found: {', '.join(have) or 'none'}")
    sets = {}
    for split, tf in (("train", train_transforms(augmentation, input_size)),
                      ("val", eval_transforms(input_size))):
        try:
            sets[split] = ImageFolder(str(root / split), transform=tf)
        except (FileNotFoundError, RuntimeError) as e:   # no class folders / no images
            raise DataError(f"{root / split} holds no usable images: {e}") from None
    if sets["train"].classes != sets["val"].classes:
        only = sorted(set(sets["train"].classes) ^ set(sets["val"].classes))[:5]
        raise DataError(f"train/ and val/ in {root} have different class folders (e.g. {only})")
    return DataSpec(kind, sets["train"], sets["val"], len(sets["train"].classes),
                    list(sets["train"].classes), (), (),
                    {"resize": eval_resize(input_size), "crop": input_size})


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


# --------------------------------------------------------------------------- sampling

class _Subset(Dataset):
    def __init__(self, ds: Dataset, indices: list[int]):
        self.ds, self.indices = ds, indices
        self.classes = getattr(ds, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.ds[self.indices[i]]


def fixed_subset(ds: Dataset, limit: int | None, seed: int = 0) -> Dataset:
    """A fixed random subset of ``limit`` examples (``seed`` 0), in index order; ``ds`` itself
    when ``limit`` is None or not smaller. ImageFolder is sorted by class, so the first N images
    would cover only the first few classes."""
    if limit is None or limit >= len(ds):
        return ds
    if isinstance(limit, bool) or int(limit) < 1:
        raise DataError(f"limit must be an integer >= 1, got {limit!r}")
    g = torch.Generator().manual_seed(seed)
    return _Subset(ds, sorted(torch.randperm(len(ds), generator=g)[:int(limit)].tolist()))


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: a function of (run seed, epoch, index) only, so
    augmentation never depends on worker count, world size or where a run was resumed."""
    mask = 2**64 - 1                    # splitmix64 finalizer over a linear mix of the three
    h = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index)) & mask
    h ^= h >> 31
    h = (h * 0x94D049BB133111EB) & (2**64 - 1)
    return (h ^ (h >> 29)) & (2**63 - 1)


class SeededDataset(Dataset):
    """Wraps a data set so that index ``(i, seed)`` draws sample ``i``'s augmentation from
    ``seed``. The global torch RNG is left as found (the attack's random start uses it)."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            i, seed = key
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.base[i]
        return self.base[key]


class ResumableSampler(torch.utils.data.DistributedSampler):
    """``DistributedSampler`` that can start an epoch at a given batch and tags every index
    with its augmentation seed (for ``SeededDataset``).

    The order is a function of (seed, epoch) only: rank ``r`` of ``W`` takes ``perm[r::W]``, so
    batch ``b`` of all ranks together is ``perm[b·B:(b+1)·B]`` (B = W × per-rank batch) for every
    world size; ``set_epoch(e, start_batch=k)`` skips the first ``k`` global batches.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 batch_size: int = 1, augment_seeds: bool = True):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=seed, drop_last=True)
        self.batch_size = batch_size            # per rank
        self.start_batch = 0
        self.augment_seeds = augment_seeds

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        super().set_epoch(epoch)
        self.start_batch = int(start_batch)

    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def __iter__(self):
        indices = list(super().__iter__())[self.start_batch * self.batch_size:]
        if not self.augment_seeds:
            return iter(indices)
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start_batch * self.batch_size
