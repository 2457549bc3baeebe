"""Span-level precision / recall / F1 (CoNLL ``conlleval`` rules) and token accuracy.

The functional core (``span_counts``, ``token_counts``, ``scores_from_counts``, ``span_scores``) works on tag
strings and is shared by the torchmetrics classes ``SpanF1`` / ``TokenAccuracy`` and by ``seqtag score``;
``TagConfusion`` counts gold vs predicted tags per token for the test report.
``format_conlleval`` prints a report in the text layout of the conlleval script. Spans come from
``seqtag.data.schemes.get_spans``; a predicted span is correct when type, start and end all match a gold span.
Scores are fractions in 0..1 everywhere except in the conlleval text, which prints percentages.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from seqtag.data.schemes import convert, get_spans, labels_for_scheme, normalize_scheme, split_tag, validate_tags
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


def _check_batch(preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Check that preds, target and mask are (B, T) and return the mask as bool (all True when None)."""
    if preds.dim() != 2 or preds.shape != target.shape:
        raise SeqtagInputError(
            f"Expected preds and target of the same shape (B, T), got {tuple(preds.shape)} and {tuple(target.shape)}"
        )
    if mask is None:
        return torch.ones_like(target, dtype=torch.bool)
    if mask.shape != target.shape:
        raise SeqtagInputError(f"Expected mask of shape {tuple(target.shape)}, got {tuple(mask.shape)}")
    return mask.to(torch.bool)  # byte or int masks are accepted too


class SpanF1(Metric):
    """Span-level micro precision, recall and F1 with the conlleval rules, plus token accuracy.

    States are long counts summed across processes, so under DDP the result equals the single-process one.

    Args:
        labels: label strings; label id ``i`` is ``labels[i]``.
        scheme: the tag scheme of ``labels`` (see ``seqtag.data.schemes.normalize_scheme``).
        data_scheme: the scheme token accuracy is counted in, as conlleval counts it on the data's own tags (a
            model trained in BIOES on IOB1 data: each sentence is rewritten to IOB1 first). Spans, and so P/R/F1,
            are the same in every scheme. Default: ``scheme``

    Shape:
        preds: (B, T) long label ids.
        target: (B, T) long label ids.
        mask: (B, T) bool, True for real tokens; None means all True.

    Example:
        >>> metric = SpanF1(["O", "B-PER", "I-PER"], "IOB2")
        >>> metric.update(torch.tensor([[1, 2, 0]]), torch.tensor([[1, 2, 1]]), torch.tensor([[True, True, True]]))
        >>> {key: round(float(value), 3) for key, value in metric.compute().items() if key != "per_type"}
        {'precision': 1.0, 'recall': 0.5, 'f1': 0.667, 'accuracy': 0.667}
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    tp: torch.Tensor
    n_pred: torch.Tensor
    n_gold: torch.Tensor
    correct_tokens: torch.Tensor
    total_tokens: torch.Tensor

    def __init__(self, labels: Sequence[str], scheme: str, data_scheme: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(labels, str) or len(labels) == 0:
            raise SeqtagInputError(f"labels should be a non-empty sequence of label strings, got {labels!r}")
        self.scheme = normalize_scheme(scheme)
        self.data_scheme = normalize_scheme(data_scheme) if data_scheme else self.scheme
        problem = validate_tags(labels, self.scheme)
        if problem is not None:
            raise SeqtagInputError(
                f"labels should be tags of scheme {self.scheme} (use TokenAccuracy otherwise): {problem}"
            )
        self.labels = list(labels)
        self.types = sorted({split_tag(label)[1] for label in self.labels if label != "O"})
        self._type_index = {type_: k for k, type_ in enumerate(self.types)}
        n_types = len(self.types)
        self.add_state("tp", default=torch.zeros(n_types, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_pred", default=torch.zeros(n_types, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_gold", default=torch.zeros(n_types, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct_tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total_tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _to_tags(self, ids: torch.Tensor, mask: torch.Tensor) -> list[list[str]]:
        """Label strings of the real tokens of each sentence."""
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(self.labels)):
            raise SeqtagInputError(
                f"Expected label ids in [0, {len(self.labels)}), got values in [{int(ids.min())}, {int(ids.max())}]"
            )
        return [
            [self.labels[i] for i, real in zip(row, row_mask) if real]
            for row, row_mask in zip(ids.tolist(), mask.tolist())
        ]

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the span and token counts of a batch (see the class docstring for shapes)."""
        mask = _check_batch(preds, target, mask)
        pred_tags = self._to_tags(preds.where(mask, 0), mask)
        gold_tags = self._to_tags(target.where(mask, 0), mask)
        counts = span_counts(gold_tags, pred_tags, self.scheme)
        batch = torch.zeros(3, len(self.types), dtype=torch.long)
        for type_, values in counts.items():
            batch[:, self._type_index[type_]] = torch.tensor(values)
        self.tp += batch[0].to(self.tp.device)
        self.n_pred += batch[1].to(self.tp.device)
        self.n_gold += batch[2].to(self.tp.device)
        if self.data_scheme == self.scheme:
            self.correct_tokens += ((preds == target) & mask).sum()
        else:
            pred_tags = [convert(tags, self.scheme, self.data_scheme) for tags in pred_tags]
            gold_tags = [convert(tags, self.scheme, self.data_scheme) for tags in gold_tags]
            self.correct_tokens += token_counts(gold_tags, pred_tags)[0]
        self.total_tokens += mask.sum()

    def compute(self) -> dict[str, Any]:
        """Micro scores as float tensors and, under ``"per_type"``, every type's scores as plain numbers."""
        counts = {
            type_: (int(tp), int(n_pred), int(n_gold))
            for type_, tp, n_pred, n_gold in zip(self.types, self.tp, self.n_pred, self.n_gold)
        }
        report = scores_from_counts(counts, int(self.correct_tokens), int(self.total_tokens))
        result: dict[str, Any] = {
            key: torch.tensor(report[key], dtype=torch.float32) for key in ("precision", "recall", "f1", "accuracy")
        }
        result["per_type"] = {
            type_: {key: scores[key] for key in ("precision", "recall", "f1", "support")}
            for type_, scores in report["per_type"].items()
        }
        return result


class TokenAccuracy(Metric):
    """Share of real tokens whose predicted label id equals the gold one.

    Shape:
        preds: (B, T) long label ids.
        target: (B, T) long label ids.
        mask: (B, T) bool, True for real tokens; None means all True.

    Example:
        >>> metric = TokenAccuracy()
        >>> metric.update(torch.tensor([[1, 2, 0]]), torch.tensor([[1, 0, 5]]), torch.tensor([[True, True, False]]))
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    correct_tokens: torch.Tensor
    total_tokens: torch.Tensor

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("correct_tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total_tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the correct and total real tokens of a batch."""
        mask = _check_batch(preds, target, mask)
        self.correct_tokens += ((preds == target) & mask).sum()
        self.total_tokens += mask.sum()

    def compute(self) -> torch.Tensor:
        """Accuracy as a float tensor (0 when no token was seen)."""
        if int(self.total_tokens) == 0:
            return torch.tensor(0.0)
        return self.correct_tokens.float() / self.total_tokens


class TagConfusion(Metric):
    """Token-level confusion counts of gold vs predicted tags, in the data's scheme.

    Ids refer to ``labels`` (the model's labels, in ``scheme``). When the data's files use another span scheme,
    each sentence is rewritten into ``data_scheme`` through its spans before counting, so the matrix shows the tags
    a user sees in the files. The state is one long count matrix summed across processes.

    Args:
        labels: label strings; label id ``i`` is ``labels[i]``.
        scheme: the scheme of ``labels``, or None for plain classes such as POS tags. Default: None
        data_scheme: the scheme to count in; None or ``scheme`` counts the ids as they are. Default: None

    Attributes:
        data_labels: the row and column names of the matrix.

    Shape:
        preds: (B, T) long label ids.
        target: (B, T) long label ids.
        mask: (B, T) bool, True for real tokens; None means all True.
        compute returns: (K_data, K_data) long, rows gold, columns predicted.

    Example:
        >>> metric = TagConfusion(["O", "B-PER", "I-PER", "E-PER", "S-PER"], "BIOES", "IOB2")
        >>> metric.data_labels
        ['O', 'B-PER', 'I-PER']
        >>> metric.update(torch.tensor([[1, 3, 0]]), torch.tensor([[4, 0, 0]]))
        >>> metric.compute()
        tensor([[1, 0, 1],
                [0, 1, 0],
                [0, 0, 0]])
    """

    is_differentiable = False
    higher_is_better = None
    full_state_update = False

    confusion: torch.Tensor

    def __init__(
        self, labels: Sequence[str], scheme: str | None = None, data_scheme: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(labels, str) or len(labels) == 0:
            raise SeqtagInputError(f"labels should be a non-empty sequence of label strings, got {labels!r}")
        self.labels = list(labels)
        self.scheme = normalize_scheme(scheme) if scheme else None
        self.data_scheme = normalize_scheme(data_scheme) if data_scheme and self.scheme else self.scheme
        if self.data_scheme != self.scheme:
            types = {split_tag(label)[1] for label in self.labels} - {None}
            self.data_labels = labels_for_scheme(types, self.data_scheme)
        else:
            self.data_labels = list(self.labels)
        self._data_index = {label: i for i, label in enumerate(self.data_labels)}
        k = len(self.data_labels)
        self.add_state("confusion", default=torch.zeros(k, k, dtype=torch.long), dist_reduce_fx="sum")

    def _data_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Ids of the real tokens, flattened sentence by sentence, in ``data_labels``."""
        if self.data_scheme == self.scheme:
            return ids[mask]
        out = []
        for row, row_mask in zip(ids.tolist(), mask.tolist()):
            tags = convert([self.labels[i] for i, real in zip(row, row_mask) if real], self.scheme, self.data_scheme)
            out += [self._data_index[t] for t in tags]
        return torch.tensor(out, dtype=torch.long, device=ids.device)

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the tag pairs of a batch's real tokens (see the class docstring for shapes)."""
        mask = _check_batch(preds, target, mask)
        k = len(self.data_labels)
        gold = self._data_ids(target.where(mask, 0), mask)  # (N,)
        pred = self._data_ids(preds.where(mask, 0), mask)  # (N,)
        self.confusion += torch.bincount(gold * k + pred, minlength=k * k).view(k, k).to(self.confusion.device)

    def compute(self) -> torch.Tensor:
        """The count matrix, rows gold and columns predicted."""
        return self.confusion.clone()
