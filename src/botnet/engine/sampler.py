"""Sampling that makes a run independent of how it is spread over devices.

``GlobalBatchSampler`` shuffles once per epoch (seed + epoch), cuts the permutation into global
batches and each global batch into ``world_size * accum_steps`` micro-batches; micro-batch j goes to
rank j % world_size. A run on 8 devices, on 4 with 2 accumulation steps, or on 1 with 8 sees the
same global batches and, with per-sample seeded augmentation (``SeededDataset``), the same pixels:
the same loss curve up to float summation order. It plays the role of ``DistributedSampler`` for
training and can start mid-epoch, which exact resume needs.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Sampler

__all__ = ["GlobalBatchSampler", "SeededDataset", "shard_indices"]


class GlobalBatchSampler(Sampler[list]):
    """Yields this rank's micro-batches as lists of (index, sample_seed) pairs.

    Args:
        num_samples: dataset length N.
        global_batch: images per optimizer step over all ranks and accumulation steps.
        world_size, rank: the process group.
        accum_steps: micro-batches per rank per optimizer step.
        seed: shuffling and augmentation seed.
    The last incomplete global batch of an epoch is dropped.
    """

    def __init__(self, num_samples: int, global_batch: int, world_size: int = 1, rank: int = 0,
                 accum_steps: int = 1, seed: int = 0):
        parts = world_size * accum_steps
        if global_batch % parts:
            raise ValueError(f"global batch {global_batch} is not divisible by world_size*accum_steps = {parts}")
        if num_samples < global_batch:
            raise ValueError(f"dataset has {num_samples} samples, fewer than one global batch of {global_batch}")
        self.num_samples, self.global_batch = num_samples, global_batch
        self.world_size, self.rank, self.accum_steps, self.seed = world_size, rank, accum_steps, seed
        self.micro = global_batch // parts
        self.epoch = 0
        self.start_step = 0

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        """Select the epoch's permutation; skip its first ``start_step`` optimizer steps (resume)."""
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return (self.steps_per_epoch - self.start_step) * self.accum_steps

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        perm = torch.randperm(self.num_samples, generator=g).tolist()
        for step in range(self.start_step, self.steps_per_epoch):
            batch = perm[step * self.global_batch : (step + 1) * self.global_batch]
            for a in range(self.accum_steps):
                j = a * self.world_size + self.rank
                idx = batch[j * self.micro : (j + 1) * self.micro]
                yield [(i, _sample_seed(self.seed, self.epoch, i)) for i in idx]


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 100_003 + index) % (2**63 - 1)


def shard_indices(n: int, world_size: int, rank: int) -> list[int]:
    """Evaluation shard: indices rank, rank + world, ... (no padding, so nothing is counted twice)."""
    return list(range(rank, n, world_size))


class SeededDataset(Dataset):
    """Wraps a dataset so that item ``(index, seed)`` is loaded with the torch RNG seeded by ``seed``:
    augmentation becomes a function of (run seed, epoch, index), whatever the worker or the resume
    point. Plain integer indices load without reseeding (evaluation)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        if isinstance(item, tuple):
            index, seed = item
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.dataset[index]
        return self.dataset[item]
