"""The spans of batches of tag ids, found with tensor operations: what :func:`seqtag.data.schemes.get_spans` and
:func:`~seqtag.data.schemes.convert` give sentence by sentence in Python, for whole batches at once.

The conlleval rules decide whether a span ends or starts between two tokens from those two tags alone, so they are
two (K + 1) x (K + 1) tables over (previous tag, tag), the extra row and column being the sentence boundary (an
``O``). A span starts at each start; it ends at the next position where one ends or another starts.

Why: in ``seqtag test`` and validation, the metrics' Python span extraction took half the evaluation loop (0.60 of
1.13 s per pass over CoNLL-2003's test set at NCRF++ size); these tables take a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from seqtag.data.schemes import _canonical, _end_of_chunk, _start_of_chunk, normalize_scheme, split_tag


class SpanTables:
    """The conlleval rules over a label set, as tensors.

    Args:
        labels: label strings; label id ``i`` is ``labels[i]``.
        scheme: their scheme.
        types: the span types, numbered by their position here (a label's type must be among them).

    Shape:
        ids: (B, T) long label ids;  mask: (B, T) bool, True for real tokens, a prefix of each row.
    """

    def __init__(self, labels: Sequence[str], scheme: str, types: Sequence[str]) -> None:
        self.scheme = normalize_scheme(scheme)
        tags = [_canonical(label, self.scheme) for label in labels] + [("O", "")]  # the boundary last
        type_index = {type_: k for k, type_ in enumerate(types)}
        self.boundary = len(labels)
        self.type_ids = torch.tensor([type_index[t] if p != "O" else -1 for p, t in tags])  # (K + 1,)
        self.starts = torch.tensor(
            [[_start_of_chunk(p, c, pt, ct) for c, ct in tags] for p, pt in tags], dtype=torch.bool
        )  # (K + 1, K + 1): [previous, current]
        self.ends = torch.tensor([[_end_of_chunk(p, c, pt, ct) for c, ct in tags] for p, pt in tags], dtype=torch.bool)

    def spans(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where spans start, where each ends and its type.

        Returns:
            starts: (B, T) bool, True where a span starts;
            ends: (B, T) long, at a start the span's end (exclusive), elsewhere the end of a span starting there;
            types: (B, T) long, the type id of each token's tag (-1 for ``O``).
        """
        device = ids.device
        batch, length = ids.shape
        boundary = torch.full((batch, 1), self.boundary, dtype=torch.long, device=device)
        current = torch.cat([ids.masked_fill(~mask, self.boundary), boundary], dim=1)  # (B, T + 1), O after the end
        previous = torch.cat([boundary, current[:, :-1]], dim=1)  # (B, T + 1)
        starts_tab, ends_tab = self.starts.to(device), self.ends.to(device)
        starts = starts_tab[previous, current]  # (B, T + 1)
        events = starts | ends_tab[previous, current]  # a span open before position i closes at i
        positions = torch.arange(length + 1, device=device).expand(batch, -1)
        at = torch.where(events, positions, length + 1)
        next_event = at.flip(1).cummin(1).values.flip(1)  # (B, T + 1): the first event at or after i
        ends = torch.cat([next_event[:, 1:], next_event.new_full((batch, 1), length + 1)], dim=1)  # after i
        types = self.type_ids.to(device)[current]
        return starts[:, :length], ends[:, :length], types[:, :length]

    def counts(
        self, preds: torch.Tensor | tuple, target: torch.Tensor | tuple, mask: torch.Tensor, n_types: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(n_types,) counts of correct, predicted and gold spans per type: ``conlleval.span_counts``. ``preds`` and
        ``target`` are ids, or their :meth:`spans`."""
        pred_starts, pred_ends, pred_types = preds if isinstance(preds, tuple) else self.spans(preds, mask)
        gold_starts, gold_ends, gold_types = target if isinstance(target, tuple) else self.spans(target, mask)
        correct = pred_starts & gold_starts & (pred_ends == gold_ends) & (pred_types == gold_types)
        return (
            torch.bincount(pred_types[correct], minlength=n_types),
            torch.bincount(pred_types[pred_starts], minlength=n_types),
            torch.bincount(gold_types[gold_starts], minlength=n_types),
        )


class SchemeConversion:
    """Tag ids of one scheme rewritten into another through their spans: ``schemes.convert`` for batches.

    Args:
        labels: label strings of the source scheme.
        scheme: the source scheme.
        data_labels: label strings of the target scheme (every type of ``labels``, every prefix of the scheme).
        data_scheme: the target scheme: IOB1, IOB2, BIOES or BMES.
    """

    def __init__(self, labels: Sequence[str], scheme: str, data_labels: Sequence[str], data_scheme: str) -> None:
        self.types = sorted({split_tag(label)[1] for label in labels if split_tag(label)[1]})
        self.tables = SpanTables(labels, scheme, self.types)
        self.data_scheme = normalize_scheme(data_scheme)
        index = {label: i for i, label in enumerate(data_labels)}
        prefixes = {"IOB1": "BI", "IOB2": "BI", "BIOES": "BIES", "BMES": "BMES"}[self.data_scheme]
        # (P, n_types + 1): the id of prefix p and type k; the last column (type -1) is O.
        self.ids = torch.tensor(
            [[index[f"{p}-{t}"] for t in self.types] + [index["O"]] for p in prefixes], dtype=torch.long
        )
        self.prefix = {p: i for i, p in enumerate(prefixes)}

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor, spans: tuple | None = None) -> torch.Tensor:
        """(B, T) ids → (B, T) ids in ``data_labels`` (0 where ``mask`` is False). ``spans``: the ids'
        :meth:`SpanTables.spans` when already found (with the same labels and types)."""
        device = ids.device
        batch, length = ids.shape
        starts, ends, types = spans if spans is not None else self.tables.spans(ids, mask)
        positions = torch.arange(length, device=device).expand(batch, -1)
        span_start = torch.where(starts, positions, -1).cummax(1).values  # (B, T): the last start at or before t
        has_start = span_start >= 0
        first = span_start.clamp(min=0)
        span_end = ends.gather(1, first)
        covered = has_start & (span_end > positions) & mask
        span_type = types.gather(1, first)
        is_first = covered & (span_start == positions)
        is_last = covered & (span_end == positions + 1)
        p = self.prefix
        if self.data_scheme == "IOB1":
            previous_covered = torch.cat([covered.new_zeros(batch, 1), covered[:, :-1]], dim=1)
            previous_type = torch.cat([span_type.new_full((batch, 1), -2), span_type[:, :-1]], dim=1)
            begins = is_first & previous_covered & (previous_type == span_type)
            prefix = torch.where(begins, p["B"], p["I"])
        elif self.data_scheme == "IOB2":
            prefix = torch.where(is_first, p["B"], p["I"])
        else:
            inside = p["M"] if self.data_scheme == "BMES" else p["I"]
            prefix = torch.full_like(ids, inside)
            prefix = torch.where(is_last, p["E"], prefix)
            prefix = torch.where(is_first, p["B"], prefix)
            prefix = torch.where(is_first & is_last, p["S"], prefix)
        column = torch.where(covered, span_type, len(self.types))  # the O column where no span covers t
        out = self.ids.to(device)[prefix, column]
        return out.masked_fill(~mask, 0)
