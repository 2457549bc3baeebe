"""Length-bucketed batches, aware of distributed training.

Sentences of similar length share a batch, so little compute goes to padding. With ``bucketing="exact"`` (the
default) every batch holds sentences of one length only: such a batch has no padding at all, needs no packing and
runs the RNN's fused unpacked kernel (2-3x faster on CPU than a packed batch); lengths with fewer sentences than a
batch give smaller batches. With ``"sorted"`` each epoch shuffles the sentences, cuts them into pools of
``pool_factor`` batches, sorts each pool by length and cuts it into batches; ``"none"`` batches shuffled sentences
as they come. In training the batches are then shuffled. Exact-length evaluation and prediction batches end in a
tail of tiny batches of rare long lengths: consecutive ones are merged into padded batches where the steps and batches
saved outweigh the padding (:func:`_merge_sparse_lengths`; the tags are the same).

Evaluation and prediction batches (``shuffle=False``) with ``max_tokens`` are also cut so that sentences x longest
length stays within ``max_tokens`` padded tokens: a very long sentence goes alone instead of padding a whole batch
to its length (a 10,000-token sentence among 255 short ones took 9.6 GB more on CPU). :func:`eval_max_tokens` gives
the budget the data module and ``Tagger.tag`` use. Training batches keep their sentence count, so their draws and
order do not depend on it.

With ``documents`` (one id per sentence), batches hold whole documents instead: see :func:`document_batches`.

With several processes, rank r takes batches r, r + W, r + 2W, ...; in training every rank gets the same number of
batches (a few are repeated) because DDP steps in lock-step, while evaluation never repeats a sentence, so counts
summed over processes equal the single-process counts (with fewer evaluation batches than processes, the largest are
halved so that every process has one).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

BUCKETING = ("exact", "sorted", "none")
# Padded tokens per sentence of an evaluation batch's budget. Nearly all sentences are shorter (99.8% of CoNLL-2003
# eng.testb and of UD EWT test, 99.95% of CoNLL-2000 test), so a full batch of them stays one batch and the GPU keeps
# its throughput, while memory stays bounded: 16,384 padded tokens for the default 256 sentences.
EVAL_TOKENS_PER_SENTENCE = 64


def eval_max_tokens(batch_size: int) -> int:
    """The padded-token budget of an evaluation or prediction batch of at most ``batch_size`` sentences."""
    return batch_size * EVAL_TOKENS_PER_SENTENCE


def _cut_by_tokens(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, max_tokens: int) -> list[list[int]]:
    """Cuts ``order`` into consecutive batches of at most ``batch_size`` sentences whose size x longest length is at
    most ``max_tokens``; a sentence longer than ``max_tokens`` makes a batch of its own.

    Greedy, one tensor step per batch: within a window of ``batch_size`` sentences, the padded size of the first k,
    k x (longest of them), never decreases with k, so the batch is the longest prefix within the budget.
    """
    batches = []
    start = 0
    while start < len(order):
        window = lengths[order[start : start + batch_size]]
        padded = torch.arange(1, len(window) + 1) * torch.cummax(window, dim=0).values
        count = max(1, int((padded <= max_tokens).sum()))
        batches.append(order[start : start + count].tolist())
        start += count
    return batches


def _cut(
    order: torch.Tensor, lengths: torch.Tensor, batch_size: int, exact: bool, max_tokens: int | None = None
) -> list[list[int]]:
    """Cuts ``order`` (sorted by length when ``exact``) into batches of ``batch_size``, and also wherever the
    length changes when ``exact``; with ``max_tokens``, batches also hold at most that many padded tokens."""
    if not exact:
        if max_tokens is not None:
            return _cut_by_tokens(order, lengths, batch_size, max_tokens)
        return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    batches = []
    start = 0
    values, counts = torch.unique_consecutive(lengths[order], return_counts=True)
    for length, count in zip(values.tolist(), counts.tolist()):
        size = batch_size if max_tokens is None else min(batch_size, max(1, max_tokens // max(length, 1)))
        batches += [order[i : min(i + size, start + count)].tolist() for i in range(start, start + count, size)]
        start += count
    return batches


# The cost model that merges sparse lengths in evaluation (see _merge_sparse_lengths), in units of one token's work:
# a time step (the recurrences, the CRF's forward pass and Viterbi step once per step, whatever the batch size) and a
# batch (Lightning's step, batch building, metric updates). Chosen by timing the `seqtag test` loop on eng.testb at
# both bench sizes (scripts/bench_floor.py, docs/speed.md): 2 and 20 gave +21% / +7% over exact-length batches
# (NCRF++ / flair size), 3 and 25 +16% / +1%, 5 and 50 +10% / +1%.
STEP_COST = 2.0
BATCH_COST = 20.0


def _merge_sparse_lengths(
    batches: list[list[int]], lengths: torch.Tensor, batch_size: int, max_tokens: int | None
) -> list[list[int]]:
    """Merges consecutive exact-length evaluation batches (sorted by length) into padded ones where that is cheaper.

    Long sentences are rare, so exact-length batches end in a tail of tiny batches (eng.testb: 26 of 67 batches hold
    121 of 3,453 sentences), each paying a batch's fixed cost and a step's cost per token of its length. Merging a
    batch of length ``T2`` into the current group (``b`` sentences, longest ``T``) saves a batch and ``T`` steps and
    adds ``b x (T2 - T)`` padded tokens; it is done while the saving is larger, within ``batch_size`` and
    ``max_tokens``. Padded batches give the same tags: the encoder reads each sentence as in an exact batch
    (:meth:`seqtag.modules.encoder.RNNEncoder._padded_by_direction`) and the CRF masks the padding.
    """
    merged: list[list[int]] = []
    for batch in batches:
        if merged:
            group = merged[-1]
            longest, new_longest = int(lengths[group[-1]]), int(lengths[batch[-1]])
            size = len(group) + len(batch)
            fits = size <= batch_size and (max_tokens is None or size * new_longest <= max_tokens)
            if fits and BATCH_COST + STEP_COST * longest > len(group) * (new_longest - longest):
                group.extend(batch)
                continue
        merged.append(list(batch))
    return merged


def document_batches(documents: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of whole documents: consecutive documents fill a batch up to ``batch_size`` sentences.

    A document longer than ``batch_size`` sentences is cut into pieces of at most ``batch_size``. The batches are
    the same every epoch (training shuffles their order), so an epoch always has the same number of batches.

    Args:
        documents: the document id of each sentence; sentences with the same id form a document, in their order.
        batch_size: the most sentences in a batch.

    Returns:
        lists of sentence positions.
    """
    members: dict[int, list[int]] = {}
    for position, document in enumerate(documents):
        members.setdefault(int(document), []).append(position)
    batches: list[list[int]] = []
    current: list[int] = []
    for positions in members.values():
        for start in range(0, len(positions), batch_size):
            piece = positions[start : start + batch_size]
            if current and len(current) + len(piece) > batch_size:
                batches.append(current)
                current = []
            current.extend(piece)
    if current:
        batches.append(current)
    return batches


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
        bucketing: ``"exact"`` (one length per batch), ``"sorted"`` (similar lengths, pools of ``pool_factor``
            batches) or ``"none"``. Default: ``"exact"``
        documents: the document id of each sentence: batches then hold whole documents (:func:`document_batches`)
            and ``bucketing`` is not used. Default: None
        max_tokens: with ``shuffle=False``, the most padded tokens (sentences x longest length) in a batch; a
            longer sentence goes alone. Not used with ``documents``. Default: None (batches of ``batch_size``)
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
        bucketing: str = "exact",
        documents: Sequence[int] | None = None,
        max_tokens: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size should be >= 1, got {batch_size}")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens should be >= 1 or None, got {max_tokens}")
        if max_tokens is not None and shuffle:
            # Training batches keep their sentence count: their number, draws and order stay as they were.
            raise ValueError("max_tokens should be None with shuffle=True (it cuts evaluation batches only)")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank should be in [0, {num_replicas}), got {rank}")
        if bucketing not in BUCKETING:
            raise ValueError(f"bucketing should be one of {BUCKETING}, got {bucketing!r}")
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.pool_factor = pool_factor
        self.num_replicas = num_replicas
        self.rank = rank
        self.even = even
        self.seed = seed
        self.bucketing = bucketing
        self.max_tokens = max_tokens
        # Batches of whole documents are fixed once: every epoch only reorders them.
        self.document_batches: list[list[int]] | None = None
        if documents is not None:
            if len(documents) != len(self.lengths):
                raise ValueError(f"{len(documents)} document ids for {len(self.lengths)} sentences")
            self.document_batches = document_batches(documents, batch_size)
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
        if self.document_batches is not None:
            batches = list(self.document_batches)  # __iter__ may append to it
            if self.shuffle:
                generator = torch.Generator().manual_seed(self.seed + self.epoch)
                batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
            return batches
        n = len(self.lengths)
        exact = self.bucketing == "exact"
        if not self.shuffle:
            if self.bucketing == "none":
                return _cut(torch.arange(n), self.lengths, self.batch_size, False, self.max_tokens)
            # Stable sort: equal lengths keep file order, so predictions are reproducible.
            order = torch.sort(self.lengths, stable=True).indices
            batches = _cut(order, self.lengths, self.batch_size, exact, self.max_tokens)
            return _merge_sparse_lengths(batches, self.lengths, self.batch_size, self.max_tokens) if exact else batches
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator)
        if self.bucketing == "none":
            return _cut(order, self.lengths, self.batch_size, exact=False)
        if exact:
            order = order[torch.sort(self.lengths[order], stable=True).indices]
            batches = _cut(order, self.lengths, self.batch_size, exact=True)
            permutation = torch.randperm(len(batches), generator=generator).tolist()
            return [batches[i] for i in permutation]
        pool = self.batch_size * self.pool_factor
        batches = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[torch.sort(self.lengths[chunk], stable=True).indices]
            batches += [chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)]
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in permutation]

    def _split_for_ranks(self, batches: list[list[int]]) -> list[list[int]]:
        """Evaluation with fewer batches than processes: the largest batches are halved until every rank has one.

        A process without a batch would skip the evaluation loop and never join the others' metric
        synchronisation. Needs at least as many sentences as processes.
        """
        if self.even or self.num_replicas == 1 or not 0 < len(batches) < self.num_replicas:
            return batches
        if sum(map(len, batches)) < self.num_replicas:
            raise ValueError(f"{sum(map(len, batches))} sentences cannot be spread over {self.num_replicas} processes")
        batches = list(batches)
        while len(batches) < self.num_replicas:
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            batch = batches.pop(largest)
            batches[largest:largest] = [batch[: len(batch) // 2], batch[len(batch) // 2 :]]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._split_for_ranks(self._all_batches())
        if self.num_replicas > 1 and self.even and batches:
            per_rank = -(-len(batches) // self.num_replicas)
            # Cyclic, so that even fewer batches than half the processes fill every rank.
            batches += [batches[i % len(batches)] for i in range(per_rank * self.num_replicas - len(batches))]
        yield from batches[self.rank :: self.num_replicas]

    def __len__(self) -> int:
        if self.document_batches is not None:
            total = len(self._split_for_ranks(self.document_batches))
            if self.num_replicas > 1 and self.even:
                return -(-total // self.num_replicas)
            return len(range(self.rank, total, self.num_replicas))
        total = -(-len(self.lengths) // self.batch_size) if self.lengths.numel() else 0
        if self.max_tokens is not None or (not self.shuffle and self.bucketing == "exact"):
            total = len(self._all_batches())  # evaluation only: sorting once is cheap
        elif self.bucketing == "exact" and total:
            counts = torch.unique(self.lengths, return_counts=True)[1]
            total = int((-(-counts // self.batch_size)).sum())
        if not self.even and self.num_replicas > 1 and 0 < total < self.num_replicas:
            total = min(self.num_replicas, len(self.lengths))  # see _split_for_ranks
        if not self.shuffle or total == 0:
            return len(range(self.rank, total, self.num_replicas))
        if self.bucketing == "sorted":
            # Pools cut batches at pool boundaries: count them the way _all_batches does.
            pool = self.batch_size * self.pool_factor
            n = len(self.lengths)
            total = sum(-(-min(pool, n - s) // self.batch_size) for s in range(0, n, pool))
        if self.num_replicas > 1 and self.even:
            return -(-total // self.num_replicas)
        return len(range(self.rank, total, self.num_replicas))
