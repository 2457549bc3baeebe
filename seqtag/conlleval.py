"""Span-level precision / recall / F1 under the CoNLL ``conlleval`` rules, on tag strings, in pure Python.

``span_counts``, ``token_counts``, ``scores_from_counts`` and ``span_scores`` are shared by the torchmetrics classes
of :mod:`seqtag.metrics` and by ``seqtag score``, which imports this module without torch. ``format_conlleval``
prints a report in the text layout of the conlleval script. Spans come from ``seqtag.data.schemes.get_spans``; a
predicted span is correct when type, start and end all match a gold span. Scores are fractions in 0..1 everywhere
except in the conlleval text, which prints percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from seqtag.data.schemes import get_spans
from seqtag.errors import SeqtagInputError

SpanCounts = dict[str, tuple[int, int, int]]  # type -> (true positives, predicted spans, gold spans)


def _check_lengths(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise SeqtagInputError(f"Expected as many predicted as gold sentences, got {len(pred)} and {len(gold)}")
    for i, (gold_tags, pred_tags) in enumerate(zip(gold, pred)):
        if len(gold_tags) != len(pred_tags):
            raise SeqtagInputError(
                f"Expected sentence {i} to have as many predicted as gold tags, "
                f"got {len(pred_tags)} and {len(gold_tags)}"
            )


def span_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str) -> SpanCounts:
    """Count correct, predicted and gold spans per type.

    Args:
        gold: gold tag strings, one sequence per sentence.
        pred: predicted tag strings, the same lengths as ``gold``.
        scheme: a scheme name (see ``seqtag.data.schemes.normalize_scheme``).

    Returns:
        ``{type: (tp, n_pred, n_gold)}`` for every type found in ``gold`` or ``pred``.

    Example:
        >>> span_counts([["B-PER", "I-PER", "O"]], [["B-PER", "O", "B-LOC"]], "IOB2")
        {'LOC': (0, 1, 0), 'PER': (0, 1, 1)}
    """
    _check_lengths(gold, pred)
    counts: dict[str, list[int]] = {}
    for gold_tags, pred_tags in zip(gold, pred):
        gold_spans = set(get_spans(gold_tags, scheme))
        pred_spans = set(get_spans(pred_tags, scheme))
        for span in pred_spans:
            counts.setdefault(span[0], [0, 0, 0])[1] += 1
            counts[span[0]][0] += span in gold_spans
        for span in gold_spans:
            counts.setdefault(span[0], [0, 0, 0])[2] += 1
    return {type_: (tp, n_pred, n_gold) for type_, (tp, n_pred, n_gold) in sorted(counts.items())}


def token_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> tuple[int, int]:
    """Count tokens whose predicted tag equals the gold tag, as conlleval's accuracy does.

    Returns:
        ``(correct, total)``.
    """
    _check_lengths(gold, pred)
    correct = sum(g == p for gold_tags, pred_tags in zip(gold, pred) for g, p in zip(gold_tags, pred_tags))
    return correct, sum(len(tags) for tags in gold)


def precision_recall_f1(tp: int, n_pred: int, n_gold: int) -> tuple[float, float, float]:
    """Precision tp/n_pred, recall tp/n_gold and their harmonic mean; each is 0 where undefined."""
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_gold if n_gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def scores_from_counts(counts: SpanCounts, correct_tokens: int, total_tokens: int) -> dict[str, Any]:
    """Turn counts into a report: micro-averaged scores, per-type scores and the counts themselves.

    Args:
        counts: ``{type: (tp, n_pred, n_gold)}`` as from ``span_counts``.
        correct_tokens: tokens whose predicted tag equals the gold tag.
        total_tokens: all tokens.

    Returns:
        ``{"precision", "recall", "f1", "accuracy"}`` as floats in 0..1, ``"tokens"``, ``"tp"``, ``"n_pred"``,
        ``"n_gold"`` as ints, and ``"per_type": {type: {"precision", "recall", "f1", "support", "tp", "n_pred"}}``
        where ``support`` is the number of gold spans.
    """
    tp, n_pred, n_gold = (sum(values[k] for values in counts.values()) for k in range(3))
    precision, recall, f1 = precision_recall_f1(tp, n_pred, n_gold)
    per_type = {}
    for type_, (type_tp, type_pred, type_gold) in sorted(counts.items()):
        p, r, f = precision_recall_f1(type_tp, type_pred, type_gold)
        per_type[type_] = {
            "precision": p,
            "recall": r,
            "f1": f,
            "support": type_gold,
            "tp": type_tp,
            "n_pred": type_pred,
        }
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "accuracy": correct_tokens / total_tokens if total_tokens else 0.0,
        "tokens": total_tokens,
        "tp": tp,
        "n_pred": n_pred,
        "n_gold": n_gold,
        "per_type": per_type,
    }


def span_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], scheme: str) -> dict[str, Any]:
    """Score predicted tags against gold tags; see ``scores_from_counts`` for the report's keys.

    Example:
        >>> report = span_scores([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "B-LOC"]], "IOB2")
        >>> report["precision"], report["recall"], round(report["accuracy"], 3)
        (0.5, 1.0, 0.667)
    """
    return scores_from_counts(span_counts(gold, pred, scheme), *token_counts(gold, pred))


def format_conlleval(report: dict[str, Any]) -> str:
    """Lay out a report (from ``scores_from_counts``) as the conlleval script prints it.

    Per-type lines end with the number of predicted spans of that type, as in conlleval; types with neither gold
    nor predicted spans are left out.

    Example:
        >>> report = span_scores([["B-PER", "I-PER", "O"]], [["B-PER", "I-PER", "B-LOC"]], "IOB2")
        >>> print(format_conlleval(report))
        processed 3 tokens with 1 phrases; found: 2 phrases; correct: 1.
        accuracy:  66.67%; precision:  50.00%; recall: 100.00%; FB1:  66.67
                      LOC: precision:   0.00%; recall:   0.00%; FB1:   0.00  1
                      PER: precision: 100.00%; recall: 100.00%; FB1: 100.00  1
    """
    lines = [
        f"processed {report['tokens']} tokens with {report['n_gold']} phrases; "
        f"found: {report['n_pred']} phrases; correct: {report['tp']}."
    ]
    if report["tokens"] > 0:
        lines.append(
            f"accuracy: {100 * report['accuracy']:6.2f}%; precision: {100 * report['precision']:6.2f}%; "
            f"recall: {100 * report['recall']:6.2f}%; FB1: {100 * report['f1']:6.2f}"
        )
    for type_, scores in sorted(report["per_type"].items()):
        if scores["support"] == 0 and scores["n_pred"] == 0:
            continue
        lines.append(
            f"{type_:>17}: precision: {100 * scores['precision']:6.2f}%; recall: {100 * scores['recall']:6.2f}%; "
            f"FB1: {100 * scores['f1']:6.2f}  {scores['n_pred']}"
        )
    return "\n".join(lines)
