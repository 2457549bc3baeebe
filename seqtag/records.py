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

import json
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


def split_inputs(
    inputs: str | Sequence[str | Sequence[str]], mode: str
) -> tuple[list[list[tuple[str, int, int]]], list[int], list[str]]:
    """The sentences of raw text or token lists, as ``Tagger.predict`` takes them: each sentence's
    ``(text, char_start, char_end)`` tokens, the index of the input it comes from, and the text its offsets point into.
    A string is split into sentences and tokens (:func:`seqtag.tokenize.tokenize` in ``mode``); a token list is one
    sentence, its offsets into its tokens joined by single spaces."""
    from seqtag.tokenize import tokenize

    if isinstance(inputs, str):
        inputs = [inputs]
    sentences, origins, texts = [], [], []
    for i, item in enumerate(inputs):
        if isinstance(item, str):
            for sentence in tokenize(item, mode):
                sentences.append([(t.text, t.char_start, t.char_end) for t in sentence])
                origins.append(i)
                texts.append(item)
        else:
            sentences.append(token_offsets(list(item)))
            origins.append(i)
            texts.append(" ".join(item))
    return sentences, origins, texts


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


def output_format(output: str | None, format: str | None, n_best: int = 0, marginals: bool = False) -> str:
    """The format of ``seqtag predict``'s file: ``format``, else ``jsonl`` for a ``.jsonl``/``.json`` output, else
    ``conll``; n-best lists and marginals need ``jsonl``."""
    from seqtag.errors import SeqtagInputError

    if format is None:
        format = "jsonl" if output and str(output).endswith((".jsonl", ".json")) else "conll"
    if format not in ("conll", "jsonl"):
        raise SeqtagInputError(f"predict_format should be 'conll' or 'jsonl', got {format!r}")
    if (n_best or marginals) and format != "jsonl":
        raise SeqtagInputError("--n_best and --marginals are written in JSONL: add --predict_format jsonl")
    return format


def prediction_text(row: dict[str, Any], out: dict[str, Any], format: str) -> str:
    """A tagged sentence as ``seqtag predict`` writes it.

    Args:
        row: the sentence as read: ``tokens``, ``tags`` (gold tags, or empty), and when the input has them
            ``features`` (F lists of T values) or, for raw text, ``line``, ``text``, ``char_starts``, ``char_ends``.
        out: its predictions: ``tags`` (data scheme), and as asked ``spans``, ``n_best``, ``marginals``.
        format: ``jsonl`` (its record as one JSON line, with ``line`` for raw text, ``features`` and ``gold_tags`` when
            the input has them) or ``conll`` (a line per token: token, feature columns, gold tag when there is one,
            predicted tag; then a blank line).
    """
    tags = out["tags"]
    if format == "jsonl":
        if "char_starts" in row:  # raw text: offsets into the line
            tokens, text = list(zip(row["tokens"], row["char_starts"], row["char_ends"])), row["text"]
        else:
            tokens, text = token_offsets(row["tokens"]), " ".join(row["tokens"])
        record = sentence_record(tokens, tags, out.get("spans", ()), text, out.get("n_best"), out.get("marginals"))
        if "line" in row:
            record = {"line": row["line"], **record}
        if row.get("features"):
            record["features"] = row["features"]
        if row.get("tags"):
            record["gold_tags"] = row["tags"]
        return json.dumps(record, ensure_ascii=False) + "\n"
    gold, features = row.get("tags") or [], row.get("features") or []
    lines = []
    for j, (token, tag) in enumerate(zip(row["tokens"], tags)):
        inputs = [values[j] for values in features]  # the feature columns, in data.feature_columns order
        lines.append(" ".join([token, *inputs] + ([gold[j]] if gold else []) + [tag]))
    return "\n".join(lines) + "\n\n"
