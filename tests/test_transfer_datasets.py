"""The data set adapters on tiny fake trees in each real data set's on-disk layout.

Every tree is what torchvision's own class reads (file names, metadata files, .mat/.json/pickle
formats), so these tests exercise torchvision's parsing and our split logic together. Where a
torchvision class checks md5 sums of metadata files without a flag to skip it (CIFAR, Flowers),
the test registers the fake files' own md5 sums in the class's checksum table; the integrity
check still runs on every file.
"""
from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from robust_zoo.data import (TRANSFER_DATASETS, DatasetNotFoundError, UnknownDatasetError,
                             get_spec, load_splits, make_transforms)
from zoo import write_image_tree

rng = np.random.default_rng(0)
# fake trees have a handful of classes; the adapters warn about that, as they should
pytestmark = pytest.mark.filterwarnings("ignore:.*Is the copy complete")


def _img(path, size=(12, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    im = Image.fromarray(arr)
    if mode != "RGB":
        im = im.convert(mode)
    im.save(path)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _check(train, test, spec, n_train, n_test, num_classes, size=16):
    assert (len(train), len(test)) == (n_train, n_test)
    assert len(train.classes) == num_classes
    assert set(train.targets) <= set(range(num_classes))
    x, y = train[0]
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert y == train.targets[0]
    x, y = test[len(test) - 1]
    assert x.shape == (3, size, size) and y == test.targets[-1]


def _load(name, root):
    tr_tf, te_tf = make_transforms(16)
    return load_splits(name, root, train_transform=tr_tf, test_transform=te_tf)


# ----------------------------------------------------------------------------- CIFAR

def _cifar_tree(root, folder, train_files, test_file, label_key, meta_file, names_key, classes):
    d = root / folder
    d.mkdir(parents=True)

    def batch(fname, n):
        labels = [i % len(classes) for i in range(n)]
        data = rng.integers(0, 255, size=(n, 3072), dtype=np.uint8)
        (d / fname).write_bytes(pickle.dumps({"data": data, label_key: labels}))
        return labels

    train_labels = [y for f in train_files for y in batch(f, 4)]
    test_labels = batch(test_file, 6)
    (d / meta_file).write_bytes(pickle.dumps({names_key: classes}))
    return train_labels, test_labels


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar(tmp_path, monkeypatch, name):
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    classes = [f"c{i}" for i in range(10 if name == "cifar10" else 100)]
    if name == "cifar10":
        train_files = [f"data_batch_{i}" for i in range(1, 6)]
        ytr, yte = _cifar_tree(tmp_path, cls.base_folder, train_files, "test_batch", "labels",
                               "batches.meta", "label_names", classes)
    else:
        train_files = ["train"]
        ytr, yte = _cifar_tree(tmp_path, cls.base_folder, train_files, "test", "fine_labels",
                               "meta", "fine_label_names", classes)
    d = tmp_path / cls.base_folder
    monkeypatch.setattr(cls, "train_list", [[f, _md5(d / f)] for f in train_files])
    monkeypatch.setattr(cls, "test_list", [[cls.test_list[0][0], _md5(d / cls.test_list[0][0])]])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": _md5(d / cls.meta["filename"])})
    train, test, spec = _load(name, tmp_path)
    _check(train, test, spec, len(ytr), len(yte), len(classes))
    assert train.targets == ytr and test.targets == yte
    assert spec.metric == "top1" and spec.faithful_norm[0] != (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------- FGVC-Aircraft

def test_aircraft_variant_trainval_test(tmp_path):
    data = tmp_path / "fgvc-aircraft-2013b" / "data"
    variants = ["707-320", "A300B4", "Cessna 172"]
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    lines = {"trainval": [], "test": [], "train": [], "val": []}
    k = 1000000
    for split, per in (("trainval", 3), ("test", 2)):
        for v in variants:
            for _ in range(per):
                k += 1
                _img(data / "images" / f"{k}.jpg")
                lines[split].append(f"{k} {v}")
    for split, ls in lines.items():
        (data / f"images_variant_{split}.txt").write_text("\n".join(ls) + ("\n" if ls else ""))
    train, test, spec = _load("aircraft", tmp_path)
    _check(train, test, spec, 9, 6, 3)
    assert train.classes == variants
    assert train.targets == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert spec.metric == "mean_per_class" and spec.num_classes == 100


# ----------------------------------------------------------------------------- Food-101

def test_food101(tmp_path):
    base = tmp_path / "food-101"
    meta = {"train": {}, "test": {}}
    k = 0
    for split, per in (("train", 3), ("test", 2)):
        for c in ("apple_pie", "baby_back_ribs"):
            for _ in range(per):
                k += 1
                _img(base / "images" / c / f"{k}.jpg")
                meta[split].setdefault(c, []).append(f"{c}/{k}")
    (base / "meta").mkdir(parents=True)
    for split in meta:
        (base / "meta" / f"{split}.json").write_text(json.dumps(meta[split]))
    train, test, spec = _load("food101", tmp_path)
    _check(train, test, spec, 6, 4, 2)
    assert spec.metric == "top1"


# ----------------------------------------------------------------------------- Stanford Cars

def test_stanford_cars(tmp_path):
    import scipy.io as sio

    base = tmp_path / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    names = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012", "Audi R8 Coupe 2012"]
    sio.savemat(base / "devkit" / "cars_meta.mat",
                {"class_names": np.array(names, dtype=object)})
    dt = [("fname", "O"), ("class", "O")]
    for folder, mat, labels in (("cars_train", base / "devkit" / "cars_train_annos.mat",
                                 [1, 2, 3, 1, 2, 3, 1]),
                                ("cars_test", base / "cars_test_annos_withlabels.mat",
                                 [3, 2, 1, 1])):
        rec = np.array([(f"{i + 1:05d}.jpg", c) for i, c in enumerate(labels)], dtype=dt)
        for i in range(len(labels)):
            _img(base / folder / f"{i + 1:05d}.jpg")
        sio.savemat(mat, {"annotations": rec})
    train, test, spec = _load("stanford_cars", tmp_path)
    _check(train, test, spec, 7, 4, 3)
    assert test.targets == [2, 1, 0, 0]
    with pytest.raises(DatasetNotFoundError, match="cannot be downloaded"):
        load_splits("cars", tmp_path / "elsewhere", download=True)


# ----------------------------------------------------------------------------- Pets

def test_pets_trainval_test(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    (base / "annotations").mkdir(parents=True)
    breeds = [("Abyssinian", 1, 1), ("american_bulldog", 2, 2), ("Bengal", 3, 1)]
    for split, ids in (("trainval", (1, 2, 3)), ("test", (10, 11))):
        lines = []
        for breed, label, species in breeds:
            for i in ids:
                _img(base / "images" / f"{breed}_{i}.jpg")
                lines.append(f"{breed}_{i} {label} {species} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    train, test, spec = _load("pets", tmp_path)
    _check(train, test, spec, 9, 6, 3)
    assert train.classes == ["Abyssinian", "American Bulldog", "Bengal"]
    assert spec.metric == "mean_per_class"


# ----------------------------------------------------------------------------- Flowers-102

def test_flowers_train_plus_val(tmp_path, monkeypatch):
    import scipy.io as sio
    from torchvision.datasets import Flowers102

    base = tmp_path / "flowers-102"
    labels = [1, 2, 3, 1, 2, 3, 1, 2, 3, 102]          # 1-based, per image id 1..10
    for i in range(1, len(labels) + 1):
        _img(base / "jpg" / f"image_{i:05d}.jpg")
    sio.savemat(base / "imagelabels.mat", {"labels": np.array(labels)})
    sio.savemat(base / "setid.mat", {"trnid": np.array([1, 2, 3]), "valid": np.array([4, 5, 6]),
                                      "tstid": np.array([7, 8, 9, 10])})
    monkeypatch.setattr(Flowers102, "_file_dict", {
        **Flowers102._file_dict, "label": ("imagelabels.mat", _md5(base / "imagelabels.mat")),
        "setid": ("setid.mat", _md5(base / "setid.mat"))})
    train, test, spec = _load("flowers", tmp_path)
    _check(train, test, spec, 6, 4, 102)
    assert train.targets == [0, 1, 2, 0, 1, 2]            # train ids then val ids
    assert test.targets == [0, 1, 2, 101]
    assert spec.train_split == "train+val" and spec.metric == "mean_per_class"


# ----------------------------------------------------------------------------- SUN397

def test_sun397_partition_01(tmp_path):
    base = tmp_path / "SUN397"
    classes = ["/a/abbey", "/a/apartment_building/outdoor", "/b/bakery/shop"]
    base.mkdir()
    (base / "ClassName.txt").write_text("\n".join(classes) + "\n")
    files = {c: [f"{c}/sun_{c.split('/')[2][:4]}{i:03d}.jpg" for i in range(5)] for c in classes}
    for c in classes:
        for f in files[c]:
            _img(base / f.lstrip("/"))
    train = [f for c in classes for f in files[c][:2]]
    test = [f for c in classes for f in files[c][2:4]]   # the 5th image is in neither list
    with pytest.raises(DatasetNotFoundError, match="Partitions"):
        _load("sun397", tmp_path)
    (base / "Partitions").mkdir()
    (base / "Partitions" / "Training_01.txt").write_text("\n".join(train) + "\n")
    (base / "Partitions" / "Testing_01.txt").write_text("\n".join(test) + "\n")
    tr, te, spec = _load("sun397", tmp_path)
    _check(tr, te, spec, 6, 6, 3)
    assert tr.classes == ["abbey", "apartment_building/outdoor", "bakery/shop"]
    assert tr.targets == [0, 0, 1, 1, 2, 2] and te.targets == [0, 0, 1, 1, 2, 2]
    # the images really are the listed ones: same order, same pixels
    src, j = tr.index[2]
    assert tr.sources[src]._image_files[j].as_posix().endswith(train[2])


# ----------------------------------------------------------------------------- Caltech

def test_caltech101_first_30_per_class(tmp_path):
    cats = tmp_path / "caltech101" / "101_ObjectCategories"
    counts = {"BACKGROUND_Google": 3, "accordion": 31, "airplanes": 33}
    for c, n in counts.items():
        for i in range(1, n + 1):
            _img(cats / c / f"image_{i:04d}.jpg", size=(6, 5), mode="L" if i == 31 else "RGB")
    train, test, spec = _load("caltech101", tmp_path)
    _check(train, test, spec, 60, 4, 2)               # background is not a class
    ds = train.sources[0]
    assert [ds.index[j] for _, j in train.index] == list(range(1, 31)) * 2
    assert sorted(ds.index[j] for _, j in test.index) == [31, 31, 32, 33]
    x, _ = test[0]                                     # image_0031 of accordion is grayscale
    assert x.shape[0] == 3
    assert spec.metric == "mean_per_class"


def test_caltech256_first_60_per_class(tmp_path):
    cats = tmp_path / "caltech256" / "256_ObjectCategories"
    counts = {"001.ak47": 61, "002.american-flag": 62, "003.backpack": 63}
    for k, (c, n) in enumerate(counts.items(), 1):
        for i in range(1, n + 1):
            _img(cats / c / f"{k:03d}_{i:04d}.jpg", size=(6, 5))
    train, test, spec = _load("caltech256", tmp_path)
    _check(train, test, spec, 180, 6, 3)
    assert test.targets == [0, 1, 1, 2, 2, 2]


def test_caltech_too_small_class_is_an_error(tmp_path):
    cats = tmp_path / "caltech101" / "101_ObjectCategories"
    (cats / "BACKGROUND_Google").mkdir(parents=True)
    for i in range(1, 6):
        _img(cats / "accordion" / f"image_{i:04d}.jpg", size=(4, 4))
    with pytest.raises(ValueError, match="first 30"):
        _load("caltech101", tmp_path)


# ----------------------------------------------------------------------------- DTD

def test_dtd_partition1_train_plus_val(tmp_path):
    base = tmp_path / "dtd" / "dtd"
    classes = ["banded", "blotchy", "zigzagged"]
    lines = {s: [] for s in ("train", "val", "test")}
    k = 0
    for split in lines:
        for c in classes:
            k += 1
            _img(base / "images" / c / f"{c}_{k:04d}.jpg")
            lines[split].append(f"{c}/{c}_{k:04d}.jpg")
    (base / "labels").mkdir(parents=True)
    for split, ls in lines.items():
        (base / "labels" / f"{split}1.txt").write_text("\n".join(ls) + "\n")
        (base / "labels" / f"{split}2.txt").write_text("")   # other partitions exist too
    train, test, spec = _load("dtd", tmp_path)
    _check(train, test, spec, 6, 3, 3)
    assert train.targets == [0, 1, 2, 0, 1, 2]
    assert spec.num_classes == 47 and spec.faithful_num_classes == 57


# ----------------------------------------------------------------------------- ImageFolder

def _folder(root, splits, classes=("a", "b"), per=2):
    write_image_tree(root, dict.fromkeys(splits, per), classes,
                     lambda s, c, i: rng.integers(0, 255, size=(10, 12, 3), dtype=np.uint8))


def test_birdsnap_and_imagefolder(tmp_path):
    _folder(tmp_path / "birdsnap", ("train", "test"), per=3)
    train, test, spec = _load("birdsnap", tmp_path)
    _check(train, test, spec, 6, 6, 2)
    _folder(tmp_path / "generic", ("train", "val"))
    train, test, spec = _load("imagefolder", tmp_path / "generic")
    _check(train, test, spec, 4, 4, 2)
    _folder(tmp_path / "mismatch", ("train",))
    _folder(tmp_path / "mismatch", ("test",), classes=("a", "c"))
    with pytest.raises(ValueError, match="different class folders"):
        _load("imagefolder", tmp_path / "mismatch")


# ----------------------------------------------------------------------------- errors

def test_missing_dataset_says_how_to_download(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_splits("pets", tmp_path)
    msg = str(e.value)
    assert "oxford-iiit-pet" in msg and "--download" in msg and "--dataset pets" in msg
    assert not (tmp_path / "oxford-iiit-pet").exists()     # nothing created on the way
    with pytest.raises(DatasetNotFoundError, match="101_ObjectCategories"):
        load_splits("caltech101", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="get_birdsnap"):
        load_splits("birdsnap", tmp_path)


def test_unknown_dataset_suggests_names():
    with pytest.raises(UnknownDatasetError, match="'cifar10'"):
        get_spec("cifar-01")
    with pytest.raises(UnknownDatasetError, match="'caltech101'"):
        get_spec("caltec101")
    assert get_spec("CIFAR-10").name == "cifar10" and get_spec("birds").name == "birdsnap"


def test_registry_matches_the_paper():
    paper = {"cifar10": 10, "cifar100": 100, "aircraft": 100, "food101": 101,
             "stanford_cars": 196, "pets": 37, "flowers": 102, "sun397": 397,
             "caltech101": 101, "caltech256": 257, "dtd": 47, "birdsnap": 500}
    assert {n: s.num_classes for n, s in TRANSFER_DATASETS.items() if n != "imagefolder"} == paper
    per_class = {n for n, s in TRANSFER_DATASETS.items() if s.metric == "mean_per_class"}
    assert per_class == {"pets", "caltech101", "caltech256", "flowers", "aircraft"}
    faithful_norm = {n for n, s in TRANSFER_DATASETS.items()
                     if s.faithful_norm[1] != (1.0, 1.0, 1.0)}
    assert faithful_norm == {"cifar10", "cifar100"}


def test_granularity_transform_removes_fine_detail():
    from torchvision.transforms.functional import to_pil_image

    checker = (torch.arange(128).view(1, -1) + torch.arange(128).view(-1, 1)) % 2
    img = to_pil_image(checker.float().expand(3, -1, -1).contiguous())
    _, plain = make_transforms(64)
    _, coarse = make_transforms(64, granularity=32)
    assert plain(img).shape == coarse(img).shape == (3, 64, 64)
    assert coarse(img).std() < 0.5 * plain(img).std()
