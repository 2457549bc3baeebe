"""An encoded split held as flat tensors, so a batch is cut by a few indexing operations.

Reading rows one by one from Arrow and padding them in Python took half as long as the training steps themselves
for a small tagger (CoNLL-2003, NCRF++ size). Here each split is flattened once (all tokens end to end, all
characters end to end, with offsets), and ``PackedSplit[indices]`` builds the padded batch with vectorized gathers.
The batch equals ``collate([row_i for i in indices])``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from seqtag.data.token_text import flat_token_codes

if TYPE_CHECKING:
    import datasets


def _lengths_and_values(column) -> tuple[torch.Tensor, object]:
    """(lengths of each list, the flattened values) of an Arrow list column, or of a Python list of lists."""
    if isinstance(column, list):
        return torch.tensor([len(row) for row in column], dtype=torch.long), list(itertools.chain.from_iterable(column))
    import pyarrow.compute as pc  # here: tagging (Python lists) does without it

    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    return _to_tensor(pc.list_value_length(column).fill_null(0)), column.flatten()


def _to_tensor(values) -> torch.Tensor:
    """An Arrow integer array, or a Python list of ints, as a long tensor (empty or all-null: an empty tensor)."""
    if isinstance(values, list):
        return torch.tensor(values, dtype=torch.long) if values else torch.zeros(0, dtype=torch.long)
    if len(values) == 0 or values.null_count == len(values):
        return torch.zeros(0, dtype=torch.long)
    return torch.from_numpy(values.to_numpy(zero_copy_only=False).astype(np.int64))


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    """(n,) lengths → (n + 1,) start offsets."""
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])


def _gather_padded(values: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Rows ``values[starts[i] : starts[i] + lengths[i]]`` padded with 0 to ``width``.

    Shape:
        values: (N,);  starts, lengths: (n,);  returns: (n, width)
    """
    positions = starts.unsqueeze(1) + torch.arange(width)  # (n, width)
    real = torch.arange(width) < lengths.unsqueeze(1)  # (n, width)
    if values.numel() == 0:
        return torch.zeros(real.shape, dtype=torch.long)
    return torch.where(real, values[positions.clamp(max=values.numel() - 1)], 0)


class PackedSplit:
    """An encoded split (columns ``word_ids``, ``char_ids``, ``casing_ids``, ``tag_ids``, ``index``,
    ``document``) as flat tensors.

    Indexing with a list of sentence positions returns a padded batch: ``word_ids``, ``casing_ids``, ``tag_ids``
    (B, T); ``char_ids`` (B, T, C); ``lengths`` (B,); ``index``, ``document`` (B,); and ``feature_ids``
    (B, T, F) when the split has a ``feature_ids`` column; ``token_codes`` (B, T, L), the tokens' text
    (:mod:`seqtag.data.token_text`), when ``tokens`` are given or the split has a ``tokens`` column. A single int
    returns that sentence's row (lists), as the Arrow dataset does.

    Args:
        encoded: the encoded split: a ``datasets.Dataset``, or its columns as Python lists (a chunk of data to tag:
            no Arrow, whose conversion of Python lists imports pandas, 0.2 s of a ``seqtag predict``).
        tokens: each row's tokens as read, for batches that carry their text. Default: None
    """

    def __init__(
        self, encoded: datasets.Dataset | dict[str, list], tokens: Sequence[Sequence[str]] | None = None
    ) -> None:
        self.rows = encoded
        # selections (``Dataset.select``) applied
        table = _Columns(encoded) if isinstance(encoded, dict) else encoded.with_format("arrow")[:]
        self.lengths, words = _lengths_and_values(table.column("word_ids"))
        self.token_offsets = _offsets(self.lengths)  # (S + 1,)
        self.word_ids = _to_tensor(words)  # (N,)
        _, casings = _lengths_and_values(table.column("casing_ids"))
        self.casing_ids = _to_tensor(casings)  # (N,)
        tag_lengths, tags = _lengths_and_values(table.column("tag_ids"))
        self.tag_ids = _to_tensor(tags)
        self.tag_offsets = _offsets(tag_lengths)  # sentences without tags (prediction) have none
        _, token_chars = _lengths_and_values(table.column("char_ids"))
        char_lengths, chars = _lengths_and_values(token_chars)
        self.char_lengths = char_lengths  # (N,)
        self.char_offsets = _offsets(char_lengths)  # (N + 1,)
        self.char_ids = _to_tensor(chars)  # (M,)
        self.index = torch.tensor(_plain(table.column("index")), dtype=torch.long)  # (S,)
        self.document = torch.tensor(_plain(table.column("document")), dtype=torch.long)  # (S,)
        self.feature_ids: torch.Tensor | None = None  # (N, F), with feature columns only
        if "feature_ids" in table.column_names:
            _, values = _lengths_and_values(table.column("feature_ids"))  # (N,) lists of F ids
            num_features = len(values[0]) if len(values) else 0
            flat = _lengths_and_values(values)[1] if isinstance(values, list) else values.flatten()
            self.feature_ids = _to_tensor(flat).reshape(len(values), num_features)
        self.token_codes: torch.Tensor | None = None  # (M,) int32 code points of all tokens, end to end
        if tokens is None and "tokens" in table.column_names:
            tokens = _plain(table.column("tokens"))
        if tokens is not None:
            self.token_codes, self.code_lengths = flat_token_codes([t for sentence in tokens for t in sentence])
            self.code_offsets = _offsets(self.code_lengths)  # (N + 1,)
            if len(self.code_lengths) != len(self.word_ids):
                raise ValueError(f"Expected the text of {len(self.word_ids)} tokens, got {len(self.code_lengths)}")

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, indices: int | Sequence[int]):
        if isinstance(indices, int):
            if isinstance(self.rows, dict):
                return {name: values[indices] for name, values in self.rows.items()}
            return self.rows[indices]
        return self.batch(indices)

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        # DataLoader with a batch sampler calls this once per batch; collate_fn then passes the batch through.
        return self.batch(indices)

    def batch(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)  # (B,)
        lengths = self.lengths[idx]  # (B,)
        width = int(lengths.max())
        starts = self.token_offsets[idx]
        word_ids = _gather_padded(self.word_ids, starts, lengths, width)  # (B, T)
        casing_ids = _gather_padded(self.casing_ids, starts, lengths, width)  # (B, T)
        tag_lengths = self.tag_offsets[idx + 1] - self.tag_offsets[idx]
        tag_ids = _gather_padded(self.tag_ids, self.tag_offsets[idx], tag_lengths, width)  # (B, T)
        real = torch.arange(width) < lengths.unsqueeze(1)  # (B, T)
        tokens = (starts.unsqueeze(1) + torch.arange(width))[real]  # (n,) flat ids of the batch's tokens
        char_lengths = self.char_lengths[tokens]
        chars = _gather_padded(self.char_ids, self.char_offsets[tokens], char_lengths, int(char_lengths.max()))
        char_ids = torch.zeros(len(idx), width, chars.shape[1], dtype=torch.long)  # (B, T, C)
        char_ids[real] = chars
        batch = {
            "word_ids": word_ids,
            "char_ids": char_ids,
            "casing_ids": casing_ids,
            "tag_ids": tag_ids,
            "lengths": lengths,
            "index": self.index[idx],
            "document": self.document[idx],
        }
        if self.feature_ids is not None:
            feature_ids = self.feature_ids.new_zeros(len(idx), width, self.feature_ids.shape[1])  # (B, T, F)
            feature_ids[real] = self.feature_ids[tokens]
            batch["feature_ids"] = feature_ids
        if self.token_codes is not None:
            code_lengths = self.code_lengths[tokens]
            longest = max(int(code_lengths.max()), 1)
            codes = _gather_padded(self.token_codes, self.code_offsets[tokens], code_lengths, longest)  # (n, L)
            token_codes = torch.zeros(len(idx), width, longest, dtype=torch.int32)  # (B, T, L)
            token_codes[real] = codes.to(torch.int32)
            batch["token_codes"] = token_codes
        return batch


class _Columns:
    """Columns given as Python lists, read as an Arrow table's are here."""

    def __init__(self, columns: dict[str, list]) -> None:
        self.columns = columns
        self.column_names = list(columns)

    def column(self, name: str) -> list:
        return self.columns[name]


def _plain(column) -> list:
    """An Arrow column, or a Python list, as a Python list."""
    return column if isinstance(column, list) else column.to_pylist()


def passthrough(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The DataLoader's collate_fn for a :class:`PackedSplit`: its batches are already collated."""
    return batch
