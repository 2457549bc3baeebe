"""From emission scores to what a user reads: tags in the data's scheme, spans with a confidence, the k best tag
sequences and per-token marginals; and the path from raw text to records used by ``Tagger.predict``.

Confidence of a span: with the CRF head, the probability under the model that exactly this span occurs (its
tokens carry its tags and nothing continues it), from forward-backward under the scheme's constraints
(:mod:`seqtag.confidence`); with the softmax head, the product of its tokens' probabilities of their predicted tags.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from seqtag.data import schemes


@dataclass
class DecodeOptions:
    """What decoding computes beyond the best tags.

    Args:
        spans: spans with their confidence. Default: False
        n_best: the k best tag sequences with their probabilities (0 = none). Default: 0
        marginals: each token's tag probabilities. Default: False
        temperature: the temperature of the probabilities (confidence, n-best, marginals); the best tags do not
            depend on it. Default: the model's ``confidence_temperature`` (fitted on the validation data after a fit)
    """

    spans: bool = False
    n_best: int = 0
    marginals: bool = False
    temperature: float | None = None


def decode_outputs(
    model: Any, emissions: torch.Tensor, mask: torch.Tensor, options: DecodeOptions
) -> list[dict[str, Any]]:
    """Per sentence: ``tags`` (data scheme), and as asked ``spans`` [(type, start, end, confidence)], ``n_best``
    [(tags, probability)], ``marginals`` [{tag: probability} per token].

    Shape:
        emissions: (B, T, K);  mask: (B, T) bool
    """
    from seqtag import confidence

    crf, labels, scheme = model.crf, model.labels, model.scheme
    data_scheme = model.vocab.data_scheme if model.vocab is not None else scheme
    convert = bool(scheme and data_scheme and data_scheme != scheme)
    tag_ids = model.decode(emissions, mask)  # (B, T)
    lengths = mask.sum(dim=1).tolist()
    temperature = options.temperature
    if temperature is None:
        temperature = float(getattr(model, "confidence_temperature", 1.0))
    if temperature != 1.0:  # scores divided by T: the same Viterbi path, calibrated probabilities
        emissions = emissions / temperature
        crf = crf.scaled(1.0 / temperature) if crf is not None else None
    outputs = [
        {"tags": _to_data_tags([labels[t] for t in row[:n]], scheme, data_scheme, convert)}
        for row, n in zip(tag_ids.tolist(), lengths)
    ]
    probs = None
    if crf is None and (options.spans or options.marginals or options.n_best):
        probs = torch.softmax(emissions.float(), dim=-1)  # (B, T, K)
    if options.spans and scheme:
        if crf is not None:
            found = confidence.span_confidences(crf, emissions, mask, tag_ids, labels, scheme)
        else:
            found = confidence.span_confidences_softmax(probs, tag_ids, mask, labels, scheme)
        for out, spans in zip(outputs, found):
            out["spans"] = [(t, s, e, float(c)) for t, s, e, c in spans]
    elif options.spans:
        for out in outputs:
            out["spans"] = []
    if options.marginals:
        table = crf.marginals(emissions, mask) if crf is not None else probs  # (B, T, K)
        for out, rows, n in zip(outputs, table.tolist(), lengths):
            out["marginals"] = [_marginal_row(row, labels, scheme, data_scheme, convert) for row in rows[:n]]
    if options.n_best:
        if crf is not None:
            best, log_probs = crf.nbest(emissions, mask, options.n_best)  # (B, k, T), (B, k)
        else:
            best, log_probs = _softmax_nbest(probs, mask, options.n_best)
        for out, rows, scores, n in zip(outputs, best.tolist(), log_probs.tolist(), lengths):
            out["n_best"] = [
                (
                    _to_data_tags([labels[t] for t in row[:n]], scheme, data_scheme, convert),
                    math.exp(s),
                )
                for row, s in zip(rows, scores)
                if s > float("-inf")
            ]
    return outputs


def _to_data_tags(tags: list[str], scheme: str | None, data_scheme: str | None, convert: bool) -> list[str]:
    return schemes.convert(tags, scheme, data_scheme) if convert else tags


def _marginal_row(
    row: Sequence[float], labels: Sequence[str], scheme: str | None, data_scheme: str | None, convert: bool
) -> dict[str, float]:
    """A token's probabilities over the training scheme's tags, kept above 0.0005 (the rest is noise in a record).
    In another data scheme the tags are still the model's (e.g. BIOES), which is what the probabilities are of."""
    return {label: p for label, p in zip(labels, row) if p >= 5e-4}


def _softmax_nbest(probs: torch.Tensor, mask: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k most probable tag sequences under independent per-token distributions (a softmax head), exactly:
    a beam of width k over positions is exact here because the sequence score is a sum of per-token terms.

    Shape:
        probs: (B, T, K);  mask: (B, T);  returns (B, k, T) tags and (B, k) log-probabilities.
    """
    batch, length, num_tags = probs.shape
    log_probs = probs.clamp_min(1e-30).log()
    scores = torch.zeros(batch, 1)
    paths = torch.zeros(batch, 1, 0, dtype=torch.long)
    for t in range(length):
        step = log_probs[:, t]  # (B, K)
        real = mask[:, t]  # (B,)
        # Padding extends each path by tag 0 alone, at no cost, so the beam keeps its paths there.
        padding = torch.full_like(step, float("-inf"))
        padding[:, 0] = 0.0
        candidates = (scores[:, :, None] + torch.where(real[:, None], step, padding)[:, None, :]).flatten(1)
        width = min(k, candidates.shape[1])
        top, flat = candidates.topk(width, dim=1)  # (B, width)
        beam, tag = flat // num_tags, flat % num_tags
        paths = torch.cat([paths.gather(1, beam[:, :, None].expand(-1, -1, paths.shape[2])), tag[:, :, None]], 2)
        scores = top
    if scores.shape[1] < k:
        pad = k - scores.shape[1]
        scores = torch.cat([scores, scores.new_full((batch, pad), float("-inf"))], dim=1)
        paths = torch.cat([paths, paths.new_zeros(batch, pad, length)], dim=1)
    return paths, scores
