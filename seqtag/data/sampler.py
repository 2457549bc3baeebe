"""Length-bucketed batches, aware of distributed training.

Sentences of similar length share a batch, so little compute goes to padding. Each epoch shuffles the sentences,
cuts them into pools of ``pool_factor`` batches, sorts each pool by length, cuts it into batches and shuffles the
batches. With several processes, rank r takes batches r, r + W, r + 2W, ...; in training every rank gets the same
number of batches (a few are repeated) because DDP steps in lock-step, while evaluation never repeats a sentence,
so counts summed over processes equal the single-process counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    """Yields lists of dataset indices grouped by length.

    Args:
        lengths: the length of each sentence.
        batch_size: sentences per batch.
        shuffle: shuffle sentences and batches each epoch (training). Without it, batches are cut from the
            sentences sorted by length (evaluation, prediction). Default: True
        pool_factor: batches per sorting pool; larger pools pad less but mix lengths less. Default: 100
        num_replicas: number of processes. Default: 1
        rank: this process's rank. Default: 0
        even: give every rank the same number of batches, repeating some (training under DDP). Default: True
        seed: base seed; the epoch is added so every rank draws the same permutation. Default: 0
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        shuffle: bool = True,
        pool_factor: int = 100,
        num_replicas: int = 1,
        rank: int = 0,
        even: bool = True,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size should be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank should be in [0, {num_replicas}), got {rank}")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.pool_factor = pool_factor
        self.num_replicas = num_replicas
        self.rank = rank
        self.even = even
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of each epoch so each epoch has its own order."""
        self.epoch = epoch

    @property
    def sampler(self) -> BucketBatchSampler:
        """Lightning calls ``set_epoch`` on ``batch_sampler.sampler``, not on the batch sampler itself: without this
        every epoch would repeat the first one's order. The epoch it passes is restored on resume."""
        return self

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            # Stable sort: equal lengths keep file order, so predictions are reproducible.
            order = torch.sort(self.lengths, stable=True).indices
            return [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator)
        pool = self.batch_size * self.pool_factor
        batches = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[torch.sort(self.lengths[chunk], stable=True).indices]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in permutation]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._all_batches()
        if self.num_replicas > 1 and self.even and batches:
            per_rank = -(-len(batches) // self.num_replicas)
            batches += batches[: per_rank * self.num_replicas - len(batches)]
        yield from batches[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        total = -(-len(self.lengths) // self.batch_size) if self.lengths.numel() else 0
        if not self.shuffle or total == 0:
            return len(range(self.rank, total, self.num_replicas))
        # Pools cut batches at pool boundaries: count them the way _all_batches does.
        pool = self.batch_size * self.pool_factor
        n = len(self.lengths)
        total = sum(-(-min(pool, n - s) // self.batch_size) for s in range(0, n, pool))
        if self.num_replicas > 1 and self.even:
            return -(-total // self.num_replicas)
        return len(range(self.rank, total, self.num_replicas))
