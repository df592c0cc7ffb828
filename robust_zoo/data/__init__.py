"""The data layer: every data set, transform and sampler the package trains and evaluates on.

* ``training``: the recipe's data sets (ImageFolder trees such as ImageNet, CIFAR-10/100,
  scikit-learn's digits) as ``DataSpec`` (train, val, classes, normalization).
* ``transfer_sets``: the paper's 12 transfer data sets and any ImageFolder tree, with the
  paper's splits (``load_splits``, ``get_spec``).
* ``transforms``: the training augmentations (robustness' ImageNet and CIFAR ones, Lighting),
  the evaluation resize/crop and the paper's transfer transforms.
* ``images``: image decoding whose failures name the file; ``checked_image_folder``.
* ``sampling``: the data order and per-sample augmentation seeds of every training loop.
* ``common``: the error family (``DataError`` and its subclasses) and normalization statistics.

Every data set yields ``(image, label)`` with the image a float tensor in [0, 1]: the models
normalize inside, and the attack's ε is defined on that scale.
"""
from __future__ import annotations

from .common import (CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, DIGITS_MEAN,
                     DIGITS_STD, IMAGENET_MEAN, IMAGENET_STD, NO_NORM, DataError,
                     DatasetNotFoundError, UnknownDatasetError)
from .images import MAX_PIXELS, checked_image_folder, load_rgb
from .sampling import ResumableSampler, SeededDataset, fixed_subset, sample_seed
from .training import (DATASET_DEFAULTS, DATASET_STATS, TRAINING_DATASETS, DataSpec,
                       TensorImages, build_datasets, dataset_kind, digits_tensors,
                       parse_digit_classes)
from .transfer_sets import (PAPER_DATASETS, TRANSFER_DATASETS, DatasetSpec, TransferDataset,
                            get_spec, list_datasets, load_splits)
from .transforms import (AUGMENTATIONS, IMAGENET_PCA_EIGVAL, IMAGENET_PCA_EIGVEC, Lighting,
                         eval_resize, eval_transforms, make_transforms, train_transforms)

__all__ = [
    "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD", "DIGITS_MEAN", "DIGITS_STD",
    "IMAGENET_MEAN", "IMAGENET_STD", "NO_NORM", "DataError", "DatasetNotFoundError",
    "UnknownDatasetError", "MAX_PIXELS", "checked_image_folder", "load_rgb", "ResumableSampler",
    "SeededDataset", "fixed_subset", "sample_seed", "DATASET_DEFAULTS", "DATASET_STATS",
    "TRAINING_DATASETS", "DataSpec", "TensorImages", "build_datasets",
    "dataset_kind", "digits_tensors", "parse_digit_classes", "TRANSFER_DATASETS",
    "PAPER_DATASETS", "DatasetSpec", "TransferDataset", "get_spec", "list_datasets",
    "load_splits", "AUGMENTATIONS", "IMAGENET_PCA_EIGVAL", "IMAGENET_PCA_EIGVEC", "Lighting",
    "eval_resize", "eval_transforms", "make_transforms", "train_transforms"]
