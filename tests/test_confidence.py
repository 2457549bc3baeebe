"""Span confidences against brute-force enumeration of every tag sequence, for each scheme."""

from __future__ import annotations

import doctest
import math

import pytest
import torch

import seqtag.confidence
from seqtag.confidence import marginals_to_lists, span_confidences, span_confidences_softmax
from seqtag.data import schemes
from seqtag.errors import SeqtagInputError
from seqtag.modules.crf import ConditionalRandomField
from tests.modules.test_crf import enumerate_paths, padded_batch, scheme_crf

SCHEMES = ["BIOES", "IOB2", "IOB1", "BMES"]


def labels_of(scheme: str) -> list[str]:
    return schemes.labels_for_scheme(["PER", "LOC"], scheme)


def brute_force_confidence(crf, emissions, mask, tag_ids, labels, scheme, i, span) -> float:
    """Probability, over the allowed paths of sequence i, that tokens start..end-1 carry tag_ids' tags there and
    that ``get_spans`` of the path's labels contains the span."""
    type_, start, end = span
    n = int(mask[i].sum())
    paths, scores, allowed = enumerate_paths(crf, emissions[i, :n])
    probs = torch.where(allowed, scores - torch.logsumexp(scores[allowed], 0), -math.inf).exp()
    same = (paths[:, start:end] == tag_ids[i, start:end]).all(1) & allowed
    total = 0.0
    for path, p in zip(paths[same].tolist(), probs[same].tolist()):
        if (type_, start, end) in schemes.get_spans([labels[y] for y in path], scheme):
            total += p
    return total


@pytest.mark.parametrize("source", ["decoded", "random"])
@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_span_confidences_match_brute_force(scheme, constrained, source):
    """Spans are get_spans' spans and each confidence is the brute-force probability of that exact span. Random
    tag ids (valid or not) check every kind of boundary; unconstrained CRFs put mass on invalid sequences too."""
    labels = labels_of(scheme)
    crf = scheme_crf(scheme if constrained else None, seed=len(scheme), labels_scheme=scheme)
    lengths = (5, 3, 1, 4) if constrained else (4, 3, 1, 2)  # 9**5 unconstrained paths would be slow
    emissions, mask = padded_batch(crf.num_tags, seed=3, lengths=lengths, scale=2.0)
    if source == "decoded":
        tag_ids = crf.decode(emissions, mask)
    else:
        tag_ids = torch.randint(len(labels), mask.shape, generator=torch.Generator().manual_seed(5))
    result = span_confidences(crf, emissions, mask, tag_ids, labels, scheme)
    assert len(result) == len(lengths)
    checked = 0
    for i, spans in enumerate(result):
        tags = [labels[y] for y in tag_ids[i, : lengths[i]].tolist()]
        assert [span[:3] for span in spans] == schemes.get_spans(tags, scheme)
        for type_, start, end, confidence in spans:
            assert isinstance(confidence, float) and 0.0 <= confidence <= 1.0
            expected = brute_force_confidence(crf, emissions, mask, tag_ids, labels, scheme, i, (type_, start, end))
            assert confidence == pytest.approx(expected, abs=1e-12)
            checked += 1
    assert checked >= 3


@pytest.mark.parametrize("scheme", ["BIOES", "IOB2"])
def test_span_confidences_with_extreme_emissions(scheme):
    """Emission gaps of hundreds of nats send some sequences through the log-space passes; still exact."""
    labels = labels_of(scheme)
    crf = scheme_crf(scheme, seed=0, labels_scheme=scheme)
    emissions, mask = padded_batch(crf.num_tags, seed=0, lengths=(5, 4, 1, 3, 5, 2), scale=600.0)
    for tag_ids in (crf.decode(emissions, mask), torch.randint(len(labels), mask.shape)):
        for i, spans in enumerate(span_confidences(crf, emissions, mask, tag_ids, labels, scheme)):
            for type_, start, end, confidence in spans:
                expected = brute_force_confidence(crf, emissions, mask, tag_ids, labels, scheme, i, (type_, start, end))
                assert confidence == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("scale", [2.0, 600.0])
@pytest.mark.parametrize("scheme", ["BIOES", "IOB1"])
def test_padded_emissions_do_not_matter(scheme, scale):
    """inf, nan or huge emissions at padded positions leave every confidence exactly as it was."""
    labels = labels_of(scheme)
    crf = scheme_crf(scheme, seed=1, labels_scheme=scheme)
    emissions, mask = padded_batch(crf.num_tags, seed=2, lengths=(8, 5, 1, 3, 7, 2), scale=scale)
    tag_ids = torch.randint(len(labels), mask.shape, generator=torch.Generator().manual_seed(3))
    expected = span_confidences(crf, emissions, mask, tag_ids, labels, scheme)
    for junk in (math.inf, -math.inf, math.nan, 1e30):
        junk_emissions = emissions.masked_fill(~mask.unsqueeze(2), junk)
        assert span_confidences(crf, junk_emissions, mask, tag_ids, labels, scheme) == expected


def test_iob2_confidence_requires_the_span_to_be_closed():
    """B-PER I-PER over two tokens of three: the span is (PER, 0, 2) only if token 2 does not continue it, so its
    confidence is below the probability of the two tags alone; in BIOES the E- tag closes it."""
    for scheme, tags in (("IOB2", ["B-PER", "I-PER"]), ("BIOES", ["B-PER", "E-PER"])):
        labels = labels_of(scheme)
        crf = ConditionalRandomField(len(labels), schemes.allowed_transitions(labels, scheme)).double()
        torch.nn.init.zeros_(crf.transitions)
        torch.nn.init.zeros_(crf.start_transitions)
        torch.nn.init.zeros_(crf.end_transitions)
        emissions = torch.zeros(1, 3, len(labels), dtype=torch.float64)
        emissions[0, 0, labels.index(tags[0])] = 5.0
        emissions[0, 1, labels.index(tags[1])] = 5.0
        tag_ids = torch.tensor([[labels.index(tags[0]), labels.index(tags[1]), 0]])
        [[(type_, start, end, confidence)]] = span_confidences(crf, emissions, None, tag_ids, labels, scheme)
        segment = torch.tensor([[0, 0, 2]])
        tags_alone = crf.segment_log_probs(emissions, None, tag_ids, segment).exp().item()
        assert (type_, start, end) == ("PER", 0, 2)
        if scheme == "IOB2":
            assert confidence < tags_alone - 0.05  # I-PER at token 2 would make the span (PER, 0, 3)
        else:
            assert confidence == pytest.approx(tags_alone, abs=1e-12)


def test_spans_of_every_scheme_match_get_spans():
    """The vectorised span extraction against get_spans, on random (mostly invalid) tag sequences."""
    gen = torch.Generator().manual_seed(0)
    for scheme in SCHEMES:
        labels = labels_of(scheme)
        tag_ids = torch.randint(len(labels), (200, 7), generator=gen)
        tag_ids[:50] = torch.where(torch.rand(50, 7, generator=gen) < 0.5, 0, tag_ids[:50])  # more O
        lengths = torch.randint(1, 8, (200,), generator=gen)
        mask = torch.arange(7) < lengths.unsqueeze(1)
        probs = torch.rand(200, 7, len(labels), generator=gen)
        for i, spans in enumerate(span_confidences_softmax(probs, tag_ids, mask, labels, scheme)):
            tags = [labels[y] for y in tag_ids[i, : lengths[i]].tolist()]
            assert [span[:3] for span in spans] == schemes.get_spans(tags, scheme)


def test_softmax_confidence_is_the_product_of_token_probabilities():
    labels = labels_of("BIOES")
    gen = torch.Generator().manual_seed(1)
    probs = torch.softmax(torch.randn(3, 6, len(labels), generator=gen, dtype=torch.float64), -1)
    probs[1, 2] = 0.0  # a zero probability gives confidence 0, not NaN
    mask = torch.arange(6) < torch.tensor([[6], [4], [2]])
    tag_ids = torch.randint(len(labels), (3, 6), generator=gen)
    result = span_confidences_softmax(probs, tag_ids, mask, labels, "BIOES")
    assert sum(len(spans) for spans in result) >= 3
    for i, spans in enumerate(result):
        for _, start, end, confidence in spans:
            expected = math.prod(probs[i, t, tag_ids[i, t]].item() for t in range(start, end))
            assert confidence == pytest.approx(expected, rel=1e-12, abs=1e-300)


def test_float32_crf_no_spans_and_single_tokens():
    labels = labels_of("BIOES")
    crf = scheme_crf("BIOES", seed=2).float()
    emissions = torch.randn(4, 5, len(labels))
    mask = torch.arange(5) < torch.tensor([[5], [1], [3], [2]])
    tag_ids = crf.decode(emissions, mask)
    result32 = span_confidences(crf, emissions, mask, tag_ids, labels, "BIOES")
    result64 = span_confidences(crf.double(), emissions.double(), mask, tag_ids, labels, "BIOES")
    for spans32, spans64 in zip(result32, result64):
        assert [s[:3] for s in spans32] == [s[:3] for s in spans64]
        for a, b in zip(spans32, spans64):
            assert a[3] == pytest.approx(b[3], abs=1e-6)
    all_o = torch.zeros(4, 5, dtype=torch.long)
    assert span_confidences(crf, emissions.double(), mask, all_o, labels, "BIOES") == [[], [], [], []]


def test_bad_input():
    labels = labels_of("BIOES")
    crf = scheme_crf("BIOES", seed=0)
    emissions, mask = padded_batch(crf.num_tags, seed=0, lengths=(3, 2))
    tag_ids = crf.decode(emissions, mask)
    with pytest.raises(SeqtagInputError, match="labels do not fit scheme IOB2"):
        span_confidences(crf, emissions, mask, tag_ids, labels, "IOB2")
    with pytest.raises(SeqtagInputError, match="labels should name the 9 tags, got 5 labels"):
        span_confidences(crf, emissions, mask, tag_ids, labels_of("IOB2"), "IOB2")
    with pytest.raises(SeqtagInputError, match="scheme should be one of"):
        span_confidences(crf, emissions, mask, tag_ids, labels, "XYZ")
    with pytest.raises(ValueError, match="right-padded"):
        span_confidences(
            crf, emissions, torch.tensor([[True, False, True], [True, True, False]]), tag_ids, labels, "BIOES"
        )
    with pytest.raises(ValueError, match=r"Expected probs of shape \(2, 3, 9\)"):
        span_confidences_softmax(torch.rand(2, 4, 9), tag_ids, mask, labels, "BIOES")
    with pytest.raises(SeqtagInputError, match="labels should name the 4 tags, got 9 labels"):
        span_confidences_softmax(torch.rand(2, 3, 4), tag_ids, mask, labels, "BIOES")


def test_marginals_to_lists():
    crf = scheme_crf("BIOES", seed=4)
    emissions, mask = padded_batch(crf.num_tags, seed=4, lengths=(3, 1))
    marginals = crf.marginals(emissions, mask)
    lists = marginals_to_lists(marginals, mask, digits=4)
    assert [len(sequence) for sequence in lists] == [3, 1]
    assert all(len(token) == crf.num_tags for sequence in lists for token in sequence)
    assert lists[1][0] == [round(p, 4) for p in marginals[1, 0].tolist()]
    assert marginals_to_lists(marginals)[1][2] == [0.0] * crf.num_tags  # no mask: padding kept


def test_docstring_examples():
    assert doctest.testmod(seqtag.confidence).failed == 0
