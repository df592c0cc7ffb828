"""What every data module shares: the error family, the normalization statistics, how
in-memory data is read as batches (``tensor_pair``, ``iter_batches``), and the package's
``DataLoader`` (``Loader``), whose workers end when an iteration fails."""
from __future__ import annotations

from typing import Any, Iterator

import torch

from ..models.archs import IMAGENET_MEAN, IMAGENET_STD
from ..errors import RobustZooError

__all__ = ["DataError", "DatasetNotFoundError", "UnknownDatasetError", "IMAGENET_MEAN",
           "IMAGENET_STD", "CIFAR10_MEAN", "CIFAR10_STD", "CIFAR100_MEAN", "CIFAR100_STD",
           "DIGITS_MEAN", "DIGITS_STD", "NO_NORM", "tensor_pair", "iter_batches", "Loader",
           "stop_workers"]


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


def tensor_pair(data: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``data`` as ``(images, labels)`` when it is a pair (tuple or list) of two tensors, else
    None. A pair whose lengths differ is a ``DataError``."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)):
        return None
    if len(data[0]) != len(data[1]):
        raise DataError(f"images and labels differ in length: {len(data[0])} vs {len(data[1])}")
    return data[0], data[1]


def iter_batches(data: Any, batch_size: int | None = None
                 ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` batches of ``data``: an ``(images, labels)`` pair of tensors cut
    into chunks of ``batch_size`` (one batch when None), or any iterable of ``(images, labels,
    ...)`` batches, such as a DataLoader, as it comes. Anything else is a ``DataError``."""
    pair = tensor_pair(data)
    if pair is not None:
        images, labels = pair
        step = batch_size or max(len(images), 1)
        for i in range(0, len(images), step):
            yield images[i:i + step], labels[i:i + step]
        return
    try:
        batches = iter(data)
    except TypeError:
        raise DataError("data must be (images, labels) tensors or an iterable of (images, "
                        f"labels) batches such as a DataLoader, got {type(data).__name__}"
                        ) from None
    try:
        for batch in batches:
            if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                raise DataError("data must yield (images, labels) batches, got a "
                                f"{type(batch).__name__}")
            yield batch[0], batch[1]
    finally:
        stop_workers(batches)


class Loader(torch.utils.data.DataLoader):
    """torch's ``DataLoader`` whose worker processes end as soon as an iteration over it ends
    by an error (a bad file read in a worker) or is abandoned, not when the garbage collector
    reaches the iterator (``stop_workers``). Persistent workers stay, as torch keeps them."""

    def __iter__(self):
        batches = super().__iter__()
        try:
            yield from batches
        except BaseException:            # GeneratorExit too: the loop was left early
            if not self.persistent_workers:
                stop_workers(batches)
            raise


def stop_workers(batches: Iterator) -> None:
    """End the worker processes of a DataLoader iterator now. An iteration ended by an error
    otherwise keeps them until the garbage collector reaches the iterator (the error's
    traceback refers to it), which then stalls for seconds while the workers are joined."""
    shutdown = getattr(batches, "_shutdown_workers", None)   # torch's own, also run by __del__
    if callable(shutdown):
        shutdown()
