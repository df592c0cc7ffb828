"""The paper's 12 transfer data sets (and any ImageFolder tree), with the paper's splits.

Each adapter builds torchvision's own dataset class on ``root`` (passing its ``download`` flag
through, off by default) and returns :class:`TransferDataset` objects: labels known up front
(``.targets``), images converted to RGB, one transform applied. Splits follow the paper code
(microsoft/robust-models-transfer, ``src/utils/transfer_datasets.py``):

* Caltech-101 / -256: the first 30 / 60 images of every class (file order) train, the rest
  test. The upstream code seeds numpy and torch with 0 but draws nothing, so the split is this
  deterministic one.
* DTD: partition 1, train + val for training, test for testing.
* SUN397: official partition 01 (``Training_01.txt`` / ``Testing_01.txt`` from
  ``Partitions.zip``; torchvision's ``SUN397`` class has no split of its own).
* Flowers-102: train + val for training (2,040 images), test for testing.
* FGVC-Aircraft: variant level (100 classes), trainval / test. Pets: trainval / test.
* Birdsnap: an ImageFolder tree with ``train/`` and ``test/`` (or ``val/``, as the robustness
  loader names it; the data set is distributed as
  URL lists, so nothing can download it).
"""
from __future__ import annotations

import difflib
import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from .common import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, NO_NORM,
                     DataError, DatasetNotFoundError, UnknownDatasetError)
from .images import checked_image_folder

__all__ = ["DatasetSpec", "TransferDataset", "TRANSFER_DATASETS", "PAPER_DATASETS",
           "get_spec", "list_datasets", "load_splits"]

SUN397_PARTITIONS_URL = "https://vision.princeton.edu/projects/2010/SUN/download/Partitions.zip"


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    title: str
    num_classes: int
    metric: str                       # "top1" | "mean_per_class"
    train_split: str
    test_split: str
    sizes: tuple[int, int] | None     # (train, test) of the real data set
    source: str                       # torchvision class or "ImageFolder"
    get: str                          # how to obtain it
    rmt_name: str | None = None       # name in the paper code and its hyper-parameter table
    faithful_num_classes: int | None = None
    faithful_norm: tuple = NO_NORM
    aliases: tuple[str, ...] = ()
    loader: Callable[..., tuple[list, list, list[str]]] | None = field(default=None, repr=False)

    @property
    def downloadable(self) -> bool:
        return self.get == "--download"


class TransferDataset(Dataset):
    """Samples ``(image tensor, label)`` from one or more torchvision datasets.

    ``index`` lists ``(source number, index in that source)``; ``targets`` the labels (already
    in this data set's class numbering). Built without loading any image.
    """

    def __init__(self, sources: Sequence[Dataset], index: Sequence[tuple[int, int]],
                 targets: Sequence[int], classes: Sequence[str], *, name: str, split: str,
                 root: str, transform: Callable | None = None):
        if len(index) != len(targets):
            raise ValueError("index and targets differ in length")
        self.sources = list(sources)
        self.index = list(index)
        self.targets = [int(t) for t in targets]
        self.classes = list(classes)
        self.name, self.split, self.root = name, split, root
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        s, j = self.index[i]
        try:
            img = self.sources[s][j][0]
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError) as e:   # PIL on a truncated/foreign file
            raise DataError(f"{self.name} {self.split} sample {i} (index {j} of "
                            f"{type(self.sources[s]).__name__} under {self.root}) cannot be "
                            f"decoded: {type(e).__name__}: {e}") from None
        if hasattr(img, "convert"):
            img = img.convert("RGB")  # Caltech/SUN hold grayscale and CMYK JPEGs
        if self.transform is not None:
            img = self.transform(img)
        return img, self.targets[i]

    def with_transform(self, transform: Callable | None) -> "TransferDataset":
        return TransferDataset(self.sources, self.index, self.targets, self.classes,
                               name=self.name, split=self.split, root=self.root,
                               transform=transform)

    def fingerprint(self) -> str:
        """Identity and contents of the samples, for feature-cache keys: data set, root, split,
        labels, and what every sample is read from (``_sample_state``): each image file by its
        path, size, mtime_ns, ctime_ns, inode and device, in-memory arrays (CIFAR) by a sha256
        of their bytes. Image files are not hashed: reading every image of an ImageNet-size set
        costs as much as extracting its features, while a stat takes microseconds; a file
        rewritten in place changes its ctime even when its size and mtime are put back."""
        h = hashlib.sha256(json.dumps([self.name, self.split, self.root, len(self)]).encode())
        h.update(json.dumps(self.index).encode())
        h.update(json.dumps(self.targets).encode())
        memo: dict[int, str] = {}
        for s, j in self.index:
            h.update(_sample_state(self.sources[s], j, memo).encode())
        return h.hexdigest()


def _image_file(src: Dataset, j: int) -> str | None:
    """The file torchvision data set ``src`` reads sample ``j`` from (None: not file-backed)."""
    for attr in ("samples", "_samples"):             # ImageFolder, StanfordCars
        if isinstance(getattr(src, attr, None), list):
            return str(getattr(src, attr)[j][0])
    for attr in ("_image_files", "_images"):         # SUN397, Flowers, DTD, Food, Aircraft; Pets
        if isinstance(getattr(src, attr, None), list):
            return str(getattr(src, attr)[j])
    kind = type(src).__name__
    if kind == "Caltech101":
        return os.path.join(src.root, "101_ObjectCategories", src.categories[src.y[j]],
                            f"image_{src.index[j]:04d}.jpg")
    if kind == "Caltech256":
        return os.path.join(src.root, "256_ObjectCategories", src.categories[src.y[j]],
                            f"{src.y[j] + 1:03d}_{src.index[j]:04d}.jpg")
    return None


def _bytes_digest(values) -> str:
    import numpy as np
    import torch

    h = hashlib.sha256()
    for v in values:
        a = v.detach().cpu().contiguous().numpy() if isinstance(v, torch.Tensor) else \
            np.ascontiguousarray(np.asarray(v))       # arrays and PIL images
        h.update(f"{a.dtype}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _sample_state(src: Dataset, j: int, memo: dict[int, str]) -> str:
    """What sample ``j`` of ``src`` is read from, as a string that changes when it changes:
    ``path|size|mtime_ns|ctime_ns|inode|device`` of its file; for an in-memory source (CIFAR's
    ``data`` array, a ``TensorDataset``) the sha256 of the arrays, computed once per source
    (``memo``); for any other source the sha256 of the decoded sample (slow: it reads it)."""
    path = _image_file(src, j)
    if path is not None:
        try:
            st = os.stat(path)
        except OSError as e:
            raise DataError(f"{path} (sample {j} of {type(src).__name__}) cannot be read: "
                            f"{e.strerror or e}; is the data set complete?") from None
        return f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}|{st.st_dev}"
    arrays = getattr(src, "tensors", None) or (
        [src.data] if hasattr(getattr(src, "data", None), "shape") else None)
    if arrays is not None:
        if id(src) not in memo:
            memo[id(src)] = _bytes_digest(arrays)
        return memo[id(src)]
    return _bytes_digest([src[j][0]])


# ----------------------------------------------------------------------------- helpers

def _labels_of(ds: Dataset) -> list[int]:
    for attr in ("targets", "y", "_labels"):
        if hasattr(ds, attr):
            return [int(t) for t in getattr(ds, attr)]
    if hasattr(ds, "_samples"):
        return [int(t) for _, t in ds._samples]
    import torchvision

    raise RuntimeError(f"Cannot read the labels of {type(ds).__name__} from torchvision "
                       f"{torchvision.__version__} without loading every image; please report this")


def _missing(spec: DatasetSpec, root: Path, expected: Path | str,
             extra: str = "") -> DatasetNotFoundError:
    if spec.downloadable:
        how = (f"Download it with: python -m robust_zoo.transfer --dataset {spec.name} "
               f"--data-root {root} --download ...   (or torchvision.datasets.{spec.source}"
               f"(root={str(root)!r}, download=True))")
    else:
        how = spec.get
    return DatasetNotFoundError(
        f"{spec.title} not found: expected {expected}. {how}{(' ' + extra) if extra else ''}")


def _require(spec: DatasetSpec, root: Path, path: Path, download: bool) -> None:
    if not download and not path.exists():
        raise _missing(spec, root, path)


def _tv(cls_name: str):
    import torchvision.datasets as tvd

    return getattr(tvd, cls_name)


def _build(spec: DatasetSpec, root: Path, cls_name: str, **kwargs):
    try:
        return _tv(cls_name)(root=str(root), **kwargs)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        raise _missing(spec, root, root, f"(torchvision said: {e})") from None


Split = tuple[list[Dataset], list[tuple[int, int]], list[int]]


def _whole(ds: Dataset, s: int = 0) -> tuple[list[tuple[int, int]], list[int]]:
    labels = _labels_of(ds)
    return [(s, i) for i in range(len(labels))], labels


# ----------------------------------------------------------------------------- adapters
# Each returns (train Split, test Split, classes).

def _cifar(cls_name: str, folder: str):
    def load(spec, root, download):
        _require(spec, root, root / folder, download)
        tr = _build(spec, root, cls_name, train=True, download=download)
        te = _build(spec, root, cls_name, train=False, download=download)
        return ([tr], *_whole(tr)), ([te], *_whole(te)), list(tr.classes)
    return load


def _two_splits(cls_name: str, folder: str, train: str, test: str, **kw):
    def load(spec, root, download):
        _require(spec, root, root / folder, download)
        tr = _build(spec, root, cls_name, split=train, download=download, **kw)
        te = _build(spec, root, cls_name, split=test, download=False, **kw)
        return ([tr], *_whole(tr)), ([te], *_whole(te)), list(tr.classes)
    return load


def _merged(parts: list[Dataset], classes_of: Callable[[Dataset], list[str]]
            ) -> tuple[list[tuple[int, int]], list[int], list[str]]:
    """Concatenate datasets whose own class numbering may differ, by class name."""
    names = sorted({c for d in parts for c in classes_of(d)})
    pos = {c: i for i, c in enumerate(names)}
    index, targets = [], []
    for s, d in enumerate(parts):
        cls = classes_of(d)
        for i, y in enumerate(_labels_of(d)):
            index.append((s, i))
            targets.append(pos[cls[y]])
    return index, targets, names


def _load_flowers(spec, root, download):
    _require(spec, root, root / "flowers-102", download)
    tr = _build(spec, root, "Flowers102", split="train", download=download)
    va = _build(spec, root, "Flowers102", split="val")
    te = _build(spec, root, "Flowers102", split="test")
    # labels are the 0-based indices of imagelabels.mat in all three splits
    itr, ytr = _whole(tr, 0)
    iva, yva = _whole(va, 1)
    return ([tr, va], itr + iva, ytr + yva), ([te], *_whole(te)), list(tr.classes)


def _load_dtd(spec, root, download):
    _require(spec, root, root / "dtd" / "dtd", download)
    tr = _build(spec, root, "DTD", split="train", partition=1, download=download)
    va = _build(spec, root, "DTD", split="val", partition=1)
    te = _build(spec, root, "DTD", split="test", partition=1)
    index, targets, names = _merged([tr, va], lambda d: list(d.classes))
    pos = {c: i for i, c in enumerate(names)}
    te_targets = [pos[te.classes[y]] for y in _labels_of(te)]
    return ([tr, va], index, targets), ([te], [(0, i) for i in range(len(te))], te_targets), names


def _caltech(cls_name: str, folder: str, per_class: int, categories: str):
    def load(spec, root, download):
        _require(spec, root, root / folder / categories, download)
        ds = _build(spec, root, cls_name, download=download)
        labels = _labels_of(ds)
        by_class: dict[int, list[int]] = {}
        for i, y in enumerate(labels):
            by_class.setdefault(y, []).append(i)
        train, test = [], []
        for y in sorted(by_class):
            idx = by_class[y]
            if len(idx) <= per_class:
                raise DataError(
                    f"{spec.title}: class {ds.categories[y]!r} has {len(idx)} images, but the "
                    f"paper's split trains on the first {per_class} of every class and tests on "
                    f"the rest; is {root / folder / categories} complete?")
            train += idx[:per_class]
            test += idx[per_class:]
        classes = list(ds.categories)
        return (([ds], [(0, i) for i in train], [labels[i] for i in train]),
                ([ds], [(0, i) for i in test], [labels[i] for i in test]), classes)
    return load


def _find_sun_partitions(root: Path, fold: str = "01") -> tuple[Path, Path] | None:
    base = root / "SUN397"
    candidates = [base / "Partitions", base, root / "Partitions", root]
    for c in candidates:
        for found in sorted(c.rglob(f"Training_{fold}.txt")) \
                if c.is_dir() and c.name == "Partitions" else [c / f"Training_{fold}.txt"]:
            test = found.with_name(f"Testing_{fold}.txt")
            if found.is_file() and test.is_file():
                return found, test
    return None


def _load_sun397(spec, root, download):
    _require(spec, root, root / "SUN397", download)
    ds = _build(spec, root, "SUN397", download=download)
    parts = _find_sun_partitions(root)
    if parts is None and download:
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(SUN397_PARTITIONS_URL, download_root=str(root / "SUN397"),
                                     extract_root=str(root / "SUN397" / "Partitions"))
        parts = _find_sun_partitions(root)
    if parts is None:
        raise DatasetNotFoundError(
            f"SUN397 partition files not found: expected {root / 'SUN397' / 'Partitions'}/"
            f"Training_01.txt and Testing_01.txt (the paper uses the official split 01). Get them "
            f"with --download, or fetch {SUN397_PARTITIONS_URL} and unzip it into "
            f"{root / 'SUN397' / 'Partitions'}.")
    data_dir = Path(ds.root) / "SUN397"
    where = {Path(p).relative_to(data_dir).as_posix(): i for i, p in enumerate(ds._image_files)}
    labels = _labels_of(ds)

    def split(path: Path):
        rel = [ln.strip().lstrip("/") for ln in path.read_text().splitlines() if ln.strip()]
        missing = [r for r in rel if r not in where]
        if missing:
            raise DatasetNotFoundError(
                f"{len(missing)} images listed in {path} are not under {data_dir} "
                f"(first: {missing[0]}); is the SUN397 image tree complete?")
        idx = [where[r] for r in rel]
        return [ds], [(0, i) for i in idx], [labels[i] for i in idx]

    return split(parts[0]), split(parts[1]), list(ds.classes)


def _folder_root(root: Path, sub: str) -> Path:
    return root / sub if (root / sub / "train").is_dir() else root


def _image_folder(sub: str | None, test_names: Sequence[str]):
    def load(spec, root, download):
        base = _folder_root(root, sub) if sub else root
        train_dir = base / "train"
        test_dir = next((base / t for t in test_names if (base / t).is_dir()), None)
        if not train_dir.is_dir() or test_dir is None:
            raise _missing(spec, root, f"{base}/train/ and {base}/{'|'.join(test_names)}/ "
                           "(one sub-folder per class)")
        tr, te = checked_image_folder(train_dir), checked_image_folder(test_dir)
        if tr.classes != te.classes:
            only = sorted(set(tr.classes) ^ set(te.classes))
            raise DataError(f"{train_dir} and {test_dir} have different class folders "
                             f"(in one but not the other: {only[:5]})")
        return ([tr], *_whole(tr)), ([te], *_whole(te)), list(tr.classes)
    return load


# ----------------------------------------------------------------------------- registry

_DL = "--download"
TRANSFER_DATASETS: dict[str, DatasetSpec] = {}


def _add(spec: DatasetSpec) -> None:
    TRANSFER_DATASETS[spec.name] = spec


_add(DatasetSpec("cifar10", "CIFAR-10", 10, "top1", "train", "test", (50000, 10000), "CIFAR10",
                 _DL, "cifar10", faithful_norm=(CIFAR10_MEAN, CIFAR10_STD),
                 loader=_cifar("CIFAR10", "cifar-10-batches-py")))
_add(DatasetSpec("cifar100", "CIFAR-100", 100, "top1", "train", "test", (50000, 10000),
                 "CIFAR100", _DL, "cifar100", faithful_norm=(CIFAR100_MEAN, CIFAR100_STD),
                 loader=_cifar("CIFAR100", "cifar-100-python")))
_add(DatasetSpec("aircraft", "FGVC-Aircraft", 100, "mean_per_class", "trainval", "test",
                 (6667, 3333), "FGVCAircraft", _DL, "aircraft", aliases=("fgvc_aircraft",),
                 loader=_two_splits("FGVCAircraft", "fgvc-aircraft-2013b", "trainval", "test",
                                    annotation_level="variant")))
_add(DatasetSpec("food101", "Food-101", 101, "top1", "train", "test", (75750, 25250), "Food101",
                 _DL, "food", aliases=("food",),
                 loader=_two_splits("Food101", "food-101", "train", "test")))
_add(DatasetSpec("stanford_cars", "Stanford Cars", 196, "top1", "train", "test", (8144, 8041),
                 "StanfordCars",
                 "torchvision cannot download Stanford Cars (the original URL is gone): place "
                 "cars_train/, cars_test/, devkit/ and cars_test_annos_withlabels.mat under "
                 "DATA_ROOT/stanford_cars/ yourself.", "stanford_cars", aliases=("cars",),
                 loader=_two_splits("StanfordCars", "stanford_cars", "train", "test")))
_add(DatasetSpec("pets", "Oxford-IIIT Pets", 37, "mean_per_class", "trainval", "test",
                 (3680, 3669), "OxfordIIITPet", _DL, "pets",
                 aliases=("oxford_pets", "oxford_iiit_pet"),
                 loader=_two_splits("OxfordIIITPet", "oxford-iiit-pet", "trainval", "test")))
_add(DatasetSpec("flowers", "Oxford Flowers-102", 102, "mean_per_class", "train+val", "test",
                 (2040, 6149), "Flowers102", _DL, "flowers", aliases=("flowers102",),
                 loader=_load_flowers))
_add(DatasetSpec("sun397", "SUN397", 397, "top1", "partition 01 Training_01",
                 "partition 01 Testing_01", (19850, 19850), "SUN397", _DL, "SUN397",
                 loader=_load_sun397))
_add(DatasetSpec("caltech101", "Caltech-101", 101, "mean_per_class", "first 30 per class",
                 "rest", (3030, 5647), "Caltech101", _DL, "caltech101",
                 loader=_caltech("Caltech101", "caltech101", 30, "101_ObjectCategories")))
_add(DatasetSpec("caltech256", "Caltech-256", 257, "mean_per_class", "first 60 per class",
                 "rest", (15420, 15187), "Caltech256", _DL, "caltech256",
                 loader=_caltech("Caltech256", "caltech256", 60, "256_ObjectCategories")))
_add(DatasetSpec("dtd", "DTD", 47, "top1", "partition 1 train+val", "partition 1 test",
                 (3760, 1880), "DTD", _DL, "dtd", faithful_num_classes=57,
                 loader=_load_dtd))
_add(DatasetSpec("birdsnap", "Birdsnap", 500, "top1", "train/", "test/", (47386, 2443),
                 "ImageFolder",
                 "Birdsnap is distributed as image URL lists: fetch it with its own "
                 "get_birdsnap.py and arrange DATA_ROOT/birdsnap/train/<class>/ and "
                 "DATA_ROOT/birdsnap/test/<class>/.",
                 "birds", aliases=("birds",),
                 loader=_image_folder("birdsnap", ("test", "val"))))
_add(DatasetSpec("imagefolder", "ImageFolder", 0, "top1", "train/", "val/ or test/", None,
                 "ImageFolder", "Arrange DATA_ROOT/train/<class>/ and DATA_ROOT/val/<class>/ "
                 "(or test/).", None, loader=_image_folder(None, ("val", "test"))))

PAPER_DATASETS = tuple(n for n in TRANSFER_DATASETS if n != "imagefolder")


def list_datasets() -> list[str]:
    return list(TRANSFER_DATASETS)


def _norm(s: str) -> str:
    return "".join(ch for ch in s.lower() if ch.isalnum())


def get_spec(name: str) -> DatasetSpec:
    """The data set called ``name`` (case, '-', '_' ignored; paper-code names work too)."""
    key = _norm(name)
    for spec in TRANSFER_DATASETS.values():
        if key in {_norm(n) for n in (spec.name, spec.rmt_name or "", *spec.aliases) if n}:
            return spec
    names = list(TRANSFER_DATASETS) + [a for s in TRANSFER_DATASETS.values() for a in s.aliases]
    close = difflib.get_close_matches(name.strip().lower(), names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownDatasetError(f"Unknown data set {name!r}.{hint} Known: "
                              f"{', '.join(TRANSFER_DATASETS)}.")


def load_splits(name: str, root: "str | os.PathLike", *, train_transform=None,
                test_transform=None, download: bool = False
                ) -> tuple[TransferDataset, TransferDataset, DatasetSpec]:
    """(train, test, spec) for data set ``name`` under ``root`` with the paper's split.

    ``download=True`` passes torchvision's own ``download=True`` (nothing else downloads).
    A data set that is not there raises :class:`DatasetNotFoundError` saying how to get it.
    """
    spec = get_spec(name)
    if root is None:
        raise DatasetNotFoundError(f"No data root given for {spec.title}: pass --data-root DIR")
    root = Path(root).expanduser().resolve()
    if download and not spec.downloadable:
        raise DatasetNotFoundError(f"{spec.title} cannot be downloaded automatically. {spec.get}")
    if download:
        root.mkdir(parents=True, exist_ok=True)
    (tr_src, tr_idx, tr_y), (te_src, te_idx, te_y), classes = spec.loader(spec, root, download)
    if spec.num_classes and len(classes) != spec.num_classes:
        warnings.warn(f"{spec.title} under {root} has {len(classes)} classes; the real data set "
                      f"has {spec.num_classes}. Is the copy complete?", stacklevel=2)
    common: dict[str, Any] = dict(classes=classes, name=spec.name, root=str(root))
    train = TransferDataset(tr_src, tr_idx, tr_y, split="train", transform=train_transform,
                            **common)
    test = TransferDataset(te_src, te_idx, te_y, split="test", transform=test_transform, **common)
    return train, test, spec
