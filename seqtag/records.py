"""The one record type of a tagged sentence, shared by JSONL predictions, the Python API and any other consumer.

    {"tokens": [{"text": "Angela", "char_start": 0, "char_end": 6}, ...],
     "tags": ["B-PER", "I-PER", ...],
     "spans": [{"type": "PER", "start": 0, "end": 2, "text": "Angela Merkel", "char_start": 0, "char_end": 13,
                "confidence": 0.998}],
     "n_best": [{"tags": [...], "probability": 0.91}, ...],        # when asked for
     "marginals": [{"B-PER": 0.99, ...}, ...]}                      # when asked for

``start``/``end`` are token indices and ``char_start``/``char_end`` character offsets into the input (a line of a
file, or the string given to the API); every end is exclusive. Pure Python: no torch here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# (text, char_start, char_end) of a token; a seqtag.tokenize.Token fits.
TokenLike = Any


def token_offsets(tokens: Sequence[str]) -> list[tuple[str, int, int]]:
    """Offsets of pre-tokenized input, as if its tokens were joined by single spaces."""
    out, position = [], 0
    for token in tokens:
        out.append((token, position, position + len(token)))
        position += len(token) + 1
    return out


def sentence_record(
    tokens: Sequence[TokenLike],
    tags: Sequence[str],
    spans: Sequence[tuple[str, int, int, float]] = (),
    text: str | None = None,
    n_best: Sequence[tuple[Sequence[str], float]] | None = None,
    marginals: Sequence[dict[str, float]] | None = None,
) -> dict[str, Any]:
    """The record of one tagged sentence.

    Args:
        tokens: the sentence's tokens as ``(text, char_start, char_end)`` (a ``Token`` or a tuple).
        tags: one predicted tag per token, in the data's scheme.
        spans: ``(type, start, end_exclusive, confidence)`` of the predicted spans.
        text: the input the offsets point into; a span's ``text`` is sliced from it (else the tokens joined by
            spaces).
        n_best: the k best tag sequences with their probabilities. Default: not in the record
        marginals: per token, each tag's probability. Default: not in the record
    """
    triples = [(t[0], int(t[1]), int(t[2])) for t in tokens]
    record: dict[str, Any] = {
        "tokens": [{"text": t, "char_start": s, "char_end": e} for t, s, e in triples],
        "tags": list(tags),
        "spans": [],
    }
    for type_, start, end, confidence in spans:
        char_start, char_end = triples[start][1], triples[end - 1][2]
        span_text = text[char_start:char_end] if text is not None else " ".join(t for t, _, _ in triples[start:end])
        record["spans"].append(
            {
                "type": type_,
                "start": start,
                "end": end,
                "text": span_text,
                "char_start": char_start,
                "char_end": char_end,
                "confidence": round(float(confidence), 6),
            }
        )
    if n_best is not None:
        record["n_best"] = [{"tags": list(t), "probability": round(float(p), 6)} for t, p in n_best]
    if marginals is not None:
        record["marginals"] = [{tag: round(float(p), 6) for tag, p in row.items()} for row in marginals]
    return record
