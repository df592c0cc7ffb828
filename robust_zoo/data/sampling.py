"""Sampling: the data order and per-sample augmentation seeds of every training loop, and the
fixed subsets evaluation uses.

The one home of both rules every training path follows:

* order: epoch ``e`` visits the training set in ``epoch_permutation(n, seed, e)`` order
  (``DistributedSampler``'s shuffle), rank ``r`` of ``W`` taking every ``W``-th index;
* augmentation: sample ``i`` of epoch ``e`` draws its random transform from the torch RNG seeded
  with ``sample_seed(seed, e, i)`` (``SeededDataset``), so it depends on nothing else.
"""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from .common import DataError

__all__ = ["fixed_subset", "sample_seed", "epoch_permutation", "SeededDataset",
           "ResumableSampler"]


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


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order in which epoch ``epoch`` visits ``n`` examples: ``torch.randperm(n)`` from a
    generator seeded with ``seed + epoch`` (``DistributedSampler``'s shuffle)."""
    g = torch.Generator()
    g.manual_seed(int(seed) + int(epoch))
    return torch.randperm(n, generator=g)


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of one sample's augmentation: a function of (run seed, epoch, index) only, so
    augmentation never depends on worker count, world size or where a run was resumed."""
    mask = 2**64 - 1                    # splitmix64 finalizer over a linear mix of the three
    h = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(index)) & mask
    h ^= h >> 31
    h = (h * 0x94D049BB133111EB) & (2**64 - 1)
    return (h ^ (h >> 29)) & (2**63 - 1)


class SeededDataset(Dataset):
    """``base`` with every sample's random transform drawn from that sample's own seed; the
    global torch RNG is left as found (the attack's random start uses it).

    Indexed by ``(i, seed)`` (what ``ResumableSampler`` yields) sample ``i`` draws from ``seed``.
    Built with ``seed`` and ``epoch``, plain index ``i`` draws from ``sample_seed(seed, epoch,
    i)``: the augmentation epoch ``epoch`` of a run with that seed gives sample ``i`` (the K-view
    feature cache's view ``v`` is epoch ``v``). Otherwise a plain index reads ``base`` as is.
    """

    def __init__(self, base: Dataset, *, seed: int | None = None, epoch: int | None = None):
        if (seed is None) != (epoch is None):
            raise ValueError("SeededDataset: pass both seed and epoch, or neither")
        self.base, self.seed, self.epoch = base, seed, epoch

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key):
        if isinstance(key, tuple):
            i, seed = key
        elif self.epoch is not None:
            i, seed = key, sample_seed(self.seed, self.epoch, key)
        else:
            return self.base[key]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.base[i]


class ResumableSampler(torch.utils.data.DistributedSampler):
    """``DistributedSampler`` that can start an epoch at a given batch and tags every index
    with its augmentation seed (for ``SeededDataset``).

    The order is ``epoch_permutation`` of (seed, epoch) only: rank ``r`` of ``W`` takes
    ``perm[r::W]``, so batch ``b`` of all ranks together is ``perm[b·B:(b+1)·B]`` (B = W ×
    per-rank batch) for every world size; ``set_epoch(e, start_batch=k)`` skips the first ``k``
    global batches.
    """

    def __init__(self, dataset: Dataset, *, num_replicas: int = 1, rank: int = 0, seed: int = 0,
                 batch_size: int = 1):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True,
                         seed=seed, drop_last=True)
        self.batch_size = batch_size            # per rank
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        super().set_epoch(epoch)
        self.start_batch = int(start_batch)

    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def __iter__(self):
        perm = epoch_permutation(len(self.dataset), self.seed, self.epoch).tolist()
        mine = perm[:self.total_size][self.rank:self.total_size:self.num_replicas]
        mine = mine[self.start_batch * self.batch_size:]
        return iter([(i, sample_seed(self.seed, self.epoch, i)) for i in mine])

    def __len__(self) -> int:
        return self.num_samples - self.start_batch * self.batch_size
