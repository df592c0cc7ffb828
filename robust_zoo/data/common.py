"""What every data module shares: the error family and the normalization statistics."""
from __future__ import annotations

from ..models.archs import IMAGENET_MEAN, IMAGENET_STD
from ..errors import RobustZooError

__all__ = ["DataError", "DatasetNotFoundError", "UnknownDatasetError", "IMAGENET_MEAN",
           "IMAGENET_STD", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
           "DIGITS_MEAN", "DIGITS_STD", "NO_NORM"]


class DataError(RobustZooError, ValueError):
    """Data that is missing, empty, unreadable, or does not fit the recipe or the model
    (training, transfer and evaluation alike). Messages name the file or folder."""


class DatasetNotFoundError(DataError, FileNotFoundError):
    """The data set is not under the given root; the message says how to get it."""


class UnknownDatasetError(DataError):
    """No data set has that name."""


# robustness' CIFAR statistics (its CIFAR models and the paper code's fine-tuning use them)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
DIGITS_MEAN, DIGITS_STD = (0.3053,) * 3, (0.3760,) * 3        # all 1,797 scikit-learn digits
NO_NORM = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
