"""The tensor span rules equal the Python ones (schemes.get_spans, schemes.convert, conlleval.span_counts) on random
tag sequences, invalid ones included, in every scheme."""

import pytest
import torch

from seqtag.conlleval import span_counts
from seqtag.data.schemes import convert, labels_for_scheme
from seqtag.span_tensors import SchemeConversion, SpanTables

SCHEMES = ["IOB1", "IOB2", "BIOES", "BMES"]
TYPES = ["LOC", "PER", "X"]


def random_batch(num_labels: int, seed: int, batch: int = 64, length: int = 9):
    generator = torch.Generator().manual_seed(seed)
    # Mostly O (id 0), so that spans of every length and adjacency occur.
    ids = torch.randint(0, num_labels, (batch, length), generator=generator)
    ids = torch.where(torch.rand(batch, length, generator=generator) < 0.4, 0, ids)
    lengths = torch.randint(0, length + 1, (batch,), generator=generator)
    mask = torch.arange(length)[None, :] < lengths[:, None]
    return ids.masked_fill(~mask, 0), mask


def tags_of(ids, mask, labels):
    return [[labels[i] for i, real in zip(row, row_mask) if real] for row, row_mask in zip(ids.tolist(), mask.tolist())]


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("seed", range(5))
def test_span_counts_equal_conlleval(scheme, seed):
    labels = labels_for_scheme(TYPES, scheme)
    preds, mask = random_batch(len(labels), seed)
    target, _ = random_batch(len(labels), seed + 100)
    target = target.masked_fill(~mask, 0)
    tp, n_pred, n_gold = SpanTables(labels, scheme, TYPES).counts(preds, target, mask, len(TYPES))
    expected = span_counts(tags_of(target, mask, labels), tags_of(preds, mask, labels), scheme)
    got = {t: (int(tp[k]), int(n_pred[k]), int(n_gold[k])) for k, t in enumerate(TYPES) if n_pred[k] or n_gold[k]}
    assert got == expected
    assert sum(n for _, n, _ in expected.values()) > 50  # the batch has spans to count


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("data_scheme", SCHEMES)
def test_conversion_equals_convert(scheme, data_scheme):
    labels = labels_for_scheme(TYPES, scheme)
    data_labels = labels_for_scheme(TYPES, data_scheme)
    ids, mask = random_batch(len(labels), 7, batch=200)
    got = SchemeConversion(labels, scheme, data_labels, data_scheme)(ids, mask)
    expected = [convert(tags, scheme, data_scheme) for tags in tags_of(ids, mask, labels)]
    assert tags_of(got, mask, data_labels) == expected
    assert bool((got[~mask] == 0).all())
