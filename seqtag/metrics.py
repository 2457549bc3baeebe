"""Span-level precision / recall / F1 (CoNLL ``conlleval`` rules) and token accuracy as torchmetrics.

``SpanF1`` / ``TokenAccuracy`` add up counts over batches (summed across processes) and score them with the
functional core in :mod:`seqtag.conlleval` (``span_counts``, ``token_counts``, ``scores_from_counts``,
``span_scores``, ``format_conlleval``, imported here too), the code ``seqtag score`` runs without torch.
The test report's confusion matrix (gold vs predicted tag per token) comes from ``SpanF1(..., confusion=True)`` for
span labels and from ``TagConfusion`` for plain classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torchmetrics import Metric

from seqtag.conlleval import (  # the functional core, also importable from here
    SpanCounts,
    format_conlleval,
    precision_recall_f1,
    scores_from_counts,
    span_counts,
    span_scores,
    token_counts,
)
from seqtag.data.schemes import labels_for_scheme, normalize_scheme, split_tag, validate_tags
from seqtag.errors import SeqtagInputError
from seqtag.span_tensors import SchemeConversion, SpanTables

__all__ = [
    "SpanCounts",
    "SpanF1",
    "TagConfusion",
    "TokenAccuracy",
    "format_conlleval",
    "precision_recall_f1",
    "scores_from_counts",
    "span_counts",
    "span_scores",
    "token_counts",
]


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
        confusion: also count gold vs predicted tags of each token in ``data_scheme`` (a ``confusion`` state, rows
            gold and columns predicted, named by ``confusion_labels``; :meth:`compute` returns it). It reuses the
            rewritten tags the token accuracy counts, so it costs one ``bincount`` a batch where a
            :class:`TagConfusion` beside this metric rewrote them again (5% of the CoNLL-2003 test loop at NCRF++
            size). ``data_scheme`` must then stay as given. Default: False

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

    def __init__(
        self,
        labels: Sequence[str],
        scheme: str,
        data_scheme: str | None = None,
        confusion: bool = False,
        **kwargs: Any,
    ) -> None:
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
        self._tables = SpanTables(self.labels, self.scheme, self.types)
        n_types = len(self.types)
        self.add_state("tp", default=torch.zeros(n_types, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_pred", default=torch.zeros(n_types, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("n_gold", default=torch.zeros(n_types, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct_tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total_tokens", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.confusion_labels: list[str] | None = None
        if confusion:
            same = self.data_scheme == self.scheme
            self.confusion_labels = list(self.labels) if same else labels_for_scheme(self.types, self.data_scheme)
            self._confusion_scheme = self.data_scheme
            k = len(self.confusion_labels)
            self.add_state("confusion", default=torch.zeros(k, k, dtype=torch.long), dist_reduce_fx="sum")

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= len(self.labels)):
            raise SeqtagInputError(
                f"Expected label ids in [0, {len(self.labels)}), got values in [{int(ids.min())}, {int(ids.max())}]"
            )

    def _conversion(self) -> SchemeConversion:
        """Ids rewritten into ``data_scheme`` (set after construction by the tagger, once the data is known)."""
        if getattr(self, "_converts_to", None) != self.data_scheme:
            data_labels = labels_for_scheme(self.types, self.data_scheme)
            self._converter = SchemeConversion(self.labels, self.scheme, data_labels, self.data_scheme)
            self._converts_to = self.data_scheme
        return self._converter

    def update(self, preds: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Add the span and token counts of a batch (see the class docstring for shapes)."""
        mask = _check_batch(preds, target, mask)
        preds, target = preds.where(mask, 0), target.where(mask, 0)
        self._check_ids(preds)
        self._check_ids(target)
        pred_spans, gold_spans = self._tables.spans(preds, mask), self._tables.spans(target, mask)
        tp, n_pred, n_gold = self._tables.counts(pred_spans, gold_spans, mask, len(self.types))
        self.tp += tp.to(self.tp.device)
        self.n_pred += n_pred.to(self.tp.device)
        self.n_gold += n_gold.to(self.tp.device)
        if self.data_scheme != self.scheme:  # spans are the same in every scheme, tags are not
            convert = self._conversion()
            preds, target = convert(preds, mask, pred_spans), convert(target, mask, gold_spans)
        self.correct_tokens += ((preds == target) & mask).sum()
        self.total_tokens += mask.sum()
        if self.confusion_labels is not None:
            if self.data_scheme != self._confusion_scheme:
                raise ValueError(f"confusion counts {self._confusion_scheme} tags; data_scheme is {self.data_scheme}")
            k = len(self.confusion_labels)
            pairs = torch.bincount((target * k + preds)[mask], minlength=k * k)  # (K_data * K_data,)
            self.confusion += pairs.view(k, k).to(self.confusion.device)

    def compute(self) -> dict[str, Any]:
        """Micro scores as float tensors and, under ``"per_type"``, every type's scores as plain numbers (and the
        ``"confusion"`` matrix, (K_data, K_data) long, when counted)."""
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
        if self.confusion_labels is not None:
            result["confusion"] = self.confusion.clone()
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
        self._convert = None
        if self.data_scheme != self.scheme:
            self._convert = SchemeConversion(self.labels, self.scheme, self.data_labels, self.data_scheme)
        k = len(self.data_labels)
        self.add_state("confusion", default=torch.zeros(k, k, dtype=torch.long), dist_reduce_fx="sum")

    def _data_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Ids of the real tokens, flattened sentence by sentence, in ``data_labels``."""
        if self._convert is not None:
            ids = self._convert(ids, mask)
        return ids[mask]

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
