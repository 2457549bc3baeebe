"""Confidence of predicted spans: the CRF's probability that a span occurs, or a softmax head's token product.

For a CRF the confidence of a span is its marginal probability: the probability, under the CRF's distribution over
tag sequences, that the span's tokens carry exactly its tags and that it starts and ends where it does. Which tags
may come before and after a span is read off ``seqtag.data.schemes.get_spans`` for every pair of labels, so every
scheme is handled the same way:

- BIOES / BMES: ``E-``/``S-`` close a span, so any next tag may follow; a span starting with ``B-``/``S-`` starts
  after any tag.
- IOB2: the next tag must not continue the span (anything but ``I-X``), or the sentence ends.
- IOB1: as IOB2, and a span starting with ``I-X`` must not continue one before it (the previous tag is not
  ``B-X``/``I-X``).

The probability is computed by ``ConditionalRandomField.segment_log_probs`` from one forward-backward pass, for all
spans of a batch at once (Culotta & McCallum 2004, "Confidence Estimation for Information Extraction", compute
the same constrained marginal with a clamped forward pass per field).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from seqtag.data import schemes
from seqtag.errors import SeqtagInputError
from seqtag.modules.crf import ConditionalRandomField

Span = tuple[str, int, int, float]  # (type, start, end exclusive, confidence)


class _SchemeTables(NamedTuple):
    """How spans start and end, by label id, as ``schemes.get_spans`` decides it from two neighbouring tags."""

    types: tuple[str | None, ...]  # (K,) span type of each label; None for O
    first: Tensor  # (K,) bool: a span starts at this tag at the sentence start
    begins: Tensor  # (K, K) bool [previous, tag]: a span starts at ``tag`` after ``previous``
    closes: Tensor  # (K, K) bool [tag, next]: a span whose last tag is ``tag`` is closed by ``next``


@functools.lru_cache(maxsize=32)
def _scheme_tables(labels: tuple[str, ...], scheme: str) -> _SchemeTables:
    """Build the tables by running ``get_spans`` on every label and every pair of labels (once per label set).

    ``get_spans`` decides whether a span ends or starts between tokens ``i - 1`` and ``i`` from those two tags
    alone, so pairs are enough. Labels must be tags of the scheme: then every label other than ``O`` starts a span
    at the sentence start, and the sentence end closes every span.
    """
    problem = schemes.validate_tags(labels, scheme)
    if problem is not None:
        raise SeqtagInputError(f"labels do not fit scheme {scheme}: {problem}")
    single = [schemes.get_spans([label], scheme) for label in labels]
    types = tuple(spans[0][0] if spans else None for spans in single)
    pairs = [[schemes.get_spans([a, b], scheme) for b in labels] for a in labels]
    begins = [[any(start == 1 for _, start, _ in spans) for spans in row] for row in pairs]
    closes = [[any((start, end) == (0, 1) for _, start, end in spans) for spans in row] for row in pairs]
    return _SchemeTables(
        types=types,
        first=torch.tensor([bool(spans) for spans in single]),
        begins=torch.tensor(begins, dtype=torch.bool).view(len(labels), len(labels)),
        closes=torch.tensor(closes, dtype=torch.bool).view(len(labels), len(labels)),
    )


def _tables(labels: Sequence[str], scheme: str, num_tags: int) -> _SchemeTables:
    if len(labels) != num_tags:
        raise SeqtagInputError(f"labels should name the {num_tags} tags, got {len(labels)} labels")
    return _scheme_tables(tuple(labels), schemes.normalize_scheme(scheme))


def _check_ids(tag_ids: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    """``(tag_ids with 0 at padding, bool mask, lengths)``; the mask must be right padded."""
    if tag_ids.dim() != 2:
        raise ValueError(f"Expected tag_ids of shape (B, T), got {tuple(tag_ids.shape)}")
    if mask is None:
        mask = torch.ones_like(tag_ids, dtype=torch.bool)
    elif mask.shape != tag_ids.shape:
        raise ValueError(f"Expected mask of shape {tuple(tag_ids.shape)}, got {tuple(mask.shape)}")
    mask = mask.to(torch.bool)
    lengths = mask.sum(1)  # (B,)
    if not torch.equal(mask, torch.arange(mask.size(1), device=mask.device) < lengths.unsqueeze(1)):
        raise ValueError("Expected a right-padded mask (real tokens first), got padding between real tokens")
    return torch.where(mask, tag_ids.long(), 0), mask, lengths


def _span_table(tag_ids: Tensor, mask: Tensor, lengths: Tensor, tables: _SchemeTables) -> Tensor:
    """The spans of every sequence, as ``schemes.get_spans`` finds them, without a loop over tokens.

    A span starts where ``tables.first`` / ``tables.begins`` say so and ends at the next position that closes
    it (``tables.closes``, or the sentence end).

    Args:
        tag_ids: (B, T) long, 0 at padding.
        mask: (B, T) bool, right padded.
        lengths: (B,).
        tables: from :func:`_scheme_tables`.

    Returns:
        (N, 3) long rows ``(batch index, start, end exclusive)``, ordered by batch index, then start.
    """
    b, t = tag_ids.shape
    first, begins, closes = (x.to(tag_ids.device) for x in tables[1:])
    starts = torch.cat([first[tag_ids[:, :1]], begins[tag_ids[:, :-1], tag_ids[:, 1:]]], 1) & mask  # (B, T)
    positions = torch.arange(t + 1, device=tag_ids.device)
    # closed[b, i]: a span open before token i ends there (i = 1 .. T; i = length is the sentence end).
    inner = closes[tag_ids[:, :-1], tag_ids[:, 1:]] & mask[:, 1:]  # (B, T-1)
    closed = torch.cat([inner.new_zeros(b, 1), inner, inner.new_zeros(b, 1)], 1) | (positions == lengths[:, None])
    # Next closing position at or after each i: a reversed running minimum.
    at = torch.where(closed, positions, t + 1).flip(1).cummin(1).values.flip(1)  # (B, T+1)
    index, start = starts.nonzero(as_tuple=True)  # (N,), (N,)
    return torch.stack([index, start, at[index, start + 1]], 1)  # (N, 3)


def _group(spans: Tensor, values: Tensor, tag_ids: Tensor, types: tuple[str | None, ...], b: int) -> list[list[Span]]:
    """Rows of ``spans`` with their ``values`` as per-sequence lists of ``(type, start, end, value)``."""
    index, start, end = spans.unbind(1)
    span_types = [types[tag] for tag in tag_ids[index, start].tolist()]
    rows = list(zip(span_types, start.tolist(), end.tolist(), values.tolist()))
    # spans are ordered by sequence, so each sequence's spans are one slice
    bounds = [0, *torch.bincount(index, minlength=b).cumsum(0).tolist()]
    return [rows[bounds[i] : bounds[i + 1]] for i in range(b)]


def span_confidences(
    crf: ConditionalRandomField,
    emissions: Tensor,
    mask: Tensor | None,
    tag_ids: Tensor,
    labels: Sequence[str],
    scheme: str,
) -> list[list[Span]]:
    """The spans of each sequence's tags with their marginal probability under the CRF.

    The confidence of span ``(type, start, end)`` is the probability, over all tag sequences the CRF allows, that
    tokens ``start .. end - 1`` carry exactly the span's tags in ``tag_ids`` and that the span begins at ``start``
    and is closed at ``end`` by the scheme's rules (see the module docstring). It is at most the probability of the
    span in any labelling, and near 1 only when the CRF is sure of both its tags and its boundaries.

    Args:
        crf: the CRF that scored ``emissions``.
        emissions: the CRF's input scores.
        mask: True for real tokens, right padded; None means all True.
        tag_ids: tag ids of the labelling whose spans are scored, usually ``crf.decode(emissions, mask)``.
        labels: label of each tag id, tags of ``scheme``.
        scheme: the scheme of ``labels`` (``IOB1``, ``IOB2``, ``BIOES``, ``BMES`` or an alias).

    Returns:
        For each sequence, its spans as ``(type, start, end, confidence)``, ``end`` exclusive, in order.

    Raises:
        SeqtagInputError: if the labels are not tags of the scheme or do not match the CRF's tags.
        ValueError: for a mask with padding between real tokens or mismatched shapes.

    Shape:
        emissions: (B, T, K) float
        mask: (B, T) bool
        tag_ids: (B, T) long

    Example:
        >>> from seqtag.data.schemes import allowed_transitions
        >>> labels = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
        >>> crf = ConditionalRandomField(5, allowed_transitions(labels, "BIOES"))
        >>> emissions = torch.tensor([[[0.0, 9, 0, 0, 0], [0, 0, 0, 9, 0], [9, 0, 0, 0, 0]]])
        >>> [(t, s, e, round(c, 2)) for t, s, e, c in span_confidences(crf, emissions, None, crf.decode(emissions),
        ...                                                          labels, "BIOES")[0]]
        [('PER', 0, 2, 1.0)]
    """
    tables = _tables(labels, scheme, crf.num_tags)
    tag_ids, mask, lengths = _check_ids(tag_ids, mask)
    spans = _span_table(tag_ids, mask, lengths, tables)  # (N, 3)
    if len(spans) == 0:
        return [[] for _ in range(tag_ids.size(0))]
    log_probs = crf.segment_log_probs(emissions, mask, tag_ids, spans, tables.begins, tables.closes)  # (N,)
    confidence = log_probs.double().exp().clamp(max=1.0)  # rounding can exceed 1 by an ulp
    return _group(spans, confidence, tag_ids, tables.types, tag_ids.size(0))


def span_confidences_softmax(
    probs: Tensor,
    tag_ids: Tensor,
    mask: Tensor | None,
    labels: Sequence[str],
    scheme: str,
) -> list[list[Span]]:
    """The spans of each sequence's tags with a confidence from per-token probabilities (softmax head).

    The confidence of a span is the product of its tokens' probabilities of their tags in ``tag_ids``. Tokens are
    treated as independent and the neighbouring tags are not looked at, so unlike :func:`span_confidences` this
    is not the probability that the span occurs, only a score in [0, 1] that ranks spans.

    Args:
        probs: per-token tag probabilities (softmax of the emissions).
        tag_ids: predicted tag ids, usually ``probs.argmax(-1)``.
        mask: True for real tokens, right padded; None means all True.
        labels: label of each tag id, tags of ``scheme``.
        scheme: the scheme of ``labels``.

    Returns:
        For each sequence, its spans as ``(type, start, end, confidence)``, ``end`` exclusive, in order.

    Shape:
        probs: (B, T, K) float
        tag_ids: (B, T) long
        mask: (B, T) bool
    """
    if probs.dim() != 3 or probs.shape[:2] != tag_ids.shape:
        raise ValueError(f"Expected probs of shape {(*tag_ids.shape, len(labels))}, got {tuple(probs.shape)}")
    tables = _tables(labels, scheme, probs.size(2))
    tag_ids, mask, lengths = _check_ids(tag_ids, mask)
    spans = _span_table(tag_ids, mask, lengths, tables)  # (N, 3)
    # Sum of log-probabilities as a difference of prefix sums; log(0) is clamped so the difference stays finite.
    log_probs = probs.gather(2, tag_ids.unsqueeze(2)).squeeze(2).double()  # (B, T)
    log_probs = log_probs.clamp_min(torch.finfo(torch.float64).tiny).log()
    prefix = torch.cat([log_probs.new_zeros(log_probs.size(0), 1), log_probs.cumsum(1)], 1)  # (B, T+1)
    index, start, end = spans.unbind(1)
    confidence = (prefix[index, end] - prefix[index, start]).exp().clamp(max=1.0)  # (N,)
    return _group(spans, confidence, tag_ids, tables.types, tag_ids.size(0))


def marginals_to_lists(
    marginals: Tensor, mask: Tensor | None = None, digits: int | None = None
) -> list[list[list[float]]]:
    """Per-token tag probabilities as nested lists without padding, e.g. for JSON output.

    Args:
        marginals: from ``ConditionalRandomField.marginals`` (or a softmax).
        mask: True for real tokens; None means all True. Default: ``None``
        digits: round each probability to this many decimals; None keeps them as they are. Default: ``None``

    Returns:
        ``out[b][t][k]`` = probability of tag ``k`` at real token ``t`` of sequence ``b``.

    Shape:
        marginals: (B, T, K) float
        mask: (B, T) bool

    Example:
        >>> marginals_to_lists(torch.tensor([[[0.25, 0.75], [0.0, 0.0]]]), torch.tensor([[True, False]]))
        [[[0.25, 0.75]]]
    """
    if mask is None:
        mask = torch.ones(marginals.shape[:2], dtype=torch.bool)
    rows = marginals.detach().cpu().double()
    out = []
    for row, keep in zip(rows, mask.to(torch.bool).cpu()):
        values = row[keep].tolist()
        if digits is not None:
            values = [[round(p, digits) for p in token] for token in values]
        out.append(values)
    return out
