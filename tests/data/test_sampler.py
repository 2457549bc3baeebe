"""Evaluation and prediction batches bounded by padded tokens (sentences x longest length)."""

from __future__ import annotations

import random

import pytest

from seqtag.data.datamodule import iter_batches
from seqtag.data.sampler import BucketBatchSampler, eval_max_tokens
from seqtag.data.vocab import Vocab

ONE_LONG = [5] * 255 + [10_000]  # one very long sentence, last in the file


def padded(batch: list[int], lengths: list[int]) -> int:
    return len(batch) * max(lengths[i] for i in batch)


@pytest.mark.parametrize("bucketing", ["sorted", "none", "exact"])
def test_a_very_long_sentence_goes_alone(bucketing):
    for lengths in (ONE_LONG, ONE_LONG[::-1], [5] * 100 + [10_000] + [5] * 155):
        sampler = BucketBatchSampler(lengths, 256, shuffle=False, bucketing=bucketing, max_tokens=eval_max_tokens(256))
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(256))
        long = lengths.index(10_000)
        assert [long] in batches
        short = [b for b in batches if long not in b]
        assert len(short) <= 2 and sum(map(len, short)) == 255, (bucketing, [len(b) for b in batches])
    # Without a budget the long sentence pads a whole batch: the case the budget exists for.
    assert list(BucketBatchSampler(ONE_LONG, 256, shuffle=False, bucketing="sorted")) == [list(range(256))]


@pytest.mark.parametrize("bucketing", ["sorted", "none", "exact"])
def test_token_budget_bounds_every_batch_and_keeps_short_batches_full(bucketing):
    rng = random.Random(0)
    # Mostly short sentences, a few long ones of hundreds and thousands of tokens.
    lengths = [rng.randint(1, 60) for _ in range(2000)] + [rng.randint(200, 5000) for _ in range(20)]
    rng.shuffle(lengths)
    budget = 40 * 64
    batches = list(BucketBatchSampler(lengths, 40, shuffle=False, bucketing=bucketing, max_tokens=budget))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(padded(b, lengths) <= budget or len(b) == 1 for b in batches)
    assert all(len(b) <= 40 for b in batches)
    if bucketing == "sorted":
        # Sentences of at most 64 tokens fill whole batches, as they did without a budget.
        shorts = [b for b in batches if max(lengths[i] for i in b) <= 64]
        assert sum(len(b) < 40 for b in shorts) <= 1


def test_evaluation_ranks_cover_each_sentence_once_with_a_budget():
    lengths = [3, 900, 7, 1, 9, 4, 4, 2, 1000, 8, 5, 6, 10, 700]
    for replicas in (2, 3):
        seen = []
        for rank in range(replicas):
            sampler = BucketBatchSampler(
                lengths, 4, shuffle=False, num_replicas=replicas, rank=rank, even=False, bucketing="sorted",
                max_tokens=256,
            )  # fmt: skip
            batches = list(sampler)
            assert len(batches) == len(sampler)
            assert all(padded(b, lengths) <= 256 or len(b) == 1 for b in batches)
            seen += [i for b in batches for i in b]
        assert sorted(seen) == list(range(len(lengths)))
    # Fewer batches than processes: the budget's batches are still split so that every rank has one.
    ranks = [
        list(BucketBatchSampler([5, 5, 5, 3, 3], 256, False, num_replicas=4, rank=r, even=False, max_tokens=64))
        for r in range(4)
    ]
    assert all(len(batches) == 1 for batches in ranks)


def test_documents_and_training_ignore_the_budget():
    documents = [0, 0, 0, 3, 3, 5, 6, 6, 6, 6, 6]
    lengths = [5, 5, 10_000, 5, 5, 5, 5, 5, 5, 5, 5]
    evaluation = BucketBatchSampler(lengths, 4, shuffle=False, documents=documents, max_tokens=64)
    assert list(evaluation) == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9], [10]]  # whole documents, as without it
    with pytest.raises(ValueError, match="max_tokens should be None with shuffle=True"):
        BucketBatchSampler(lengths, 4, shuffle=True, max_tokens=64)
    with pytest.raises(ValueError, match="max_tokens should be >= 1 or None, got 0"):
        BucketBatchSampler(lengths, 4, shuffle=False, max_tokens=0)


def test_iter_batches_tags_a_very_long_sentence_alone():
    vocab = Vocab.build([["a", "b"]], ["O", "B-X"])
    sentences = [["a"] * 10_000] + [["b"] * 5] * 255
    batches = list(iter_batches(vocab, sentences, batch_size=256))
    assert [b["index"].tolist() for b in batches if b["lengths"].max() == 10_000] == [[0]]
    assert [b["word_ids"].shape for b in batches] == [(255, 5), (1, 10_000)]
    # Length order (stable), as before: equal lengths keep their input order.
    assert [i for b in batches for i in b["index"].tolist()] == list(range(1, 256)) + [0]
    assert list(iter_batches(vocab, [], batch_size=8)) == []


def test_datamodule_cuts_evaluation_batches_by_tokens_and_not_training_ones(tmp_path):
    from seqtag.data.datamodule import TaggingDataModule
    from tests.conftest import write

    sentences = ["\n".join(["word O"] * 3000)] + ["Paris B-LOC\nsays O"] * 12
    data = write(tmp_path / "data.conll", "\n\n".join(sentences) + "\n")
    dm = TaggingDataModule(
        str(data), test=str(data), batch_size=13, eval_batch_size=13, bucketing="sorted", cache_dir=str(tmp_path / "c")
    )
    dm.setup("fit")
    dm.setup("test")
    # eval_batch_size 13: a budget of 13 x 64 = 832 padded tokens, so the 3,000-token sentence goes alone.
    test = [batch["lengths"].tolist() for batch in dm.test_dataloader()]
    assert sorted(test) == [[2] * 12, [3000]] and len(dm.test_dataloader()) == 2
    # Training batches keep batch_size sentences, whatever their length.
    assert [len(batch["lengths"]) for batch in dm.train_dataloader()] == [13]


def test_exact_evaluation_merges_the_sparse_long_tail_into_padded_batches():
    """Frequent lengths keep exact-length batches; the rare long lengths share padded batches while the steps and
    batches saved outweigh the padding (STEP_COST, BATCH_COST); training batches stay exact."""
    lengths = [10] * 300 + [12] * 200 + [40, 41, 41, 43, 45, 60, 90]
    random.Random(0).shuffle(lengths)
    batches = list(BucketBatchSampler(lengths, 256, shuffle=False, bucketing="exact", max_tokens=eval_max_tokens(256)))
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))  # each sentence once
    spans = [sorted({lengths[i] for i in batch}) for batch in batches]
    # 10 x 300: 256 + 44; 12 x 200 alone (merging 44 tens would pad 88 tokens for 10 steps and a batch: 40 < 88).
    assert spans[:3] == [[10], [10], [12]]
    # The tail: 40-45 merged (each join saves 20 + 2 x its length, more than the padding added); 60 joins too
    # (20 + 90 > 5 x 15), while 90 stays alone (20 + 120 < 6 x 30).
    assert spans[3:] == [[40, 41, 43, 45, 60], [90]]
    # Training batches are exact-length, as before.
    training = BucketBatchSampler(lengths, 32, shuffle=True, bucketing="exact")
    assert all(len({lengths[i] for i in batch}) == 1 for batch in training)
    # The token budget still bounds a merged batch.
    tight = list(BucketBatchSampler(lengths, 256, shuffle=False, bucketing="exact", max_tokens=120))
    assert all(padded(batch, lengths) <= 120 or len(batch) == 1 for batch in tight)
