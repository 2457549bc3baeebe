"""Document memory: each token sees how the other occurrences of its word in the document were encoded.

Names recur within a news story: first in full and in context ("Pakistan captain Wasim Akram said"), later alone
("Akram") or in an all-capitals headline. A sentence-level BiLSTM reads each occurrence apart. This module gives
every token the mean encoder state of the other occurrences of the same word in the same document (words as the
vocabulary normalizes them, so lowercased with ``data.lowercase``), in the spirit of the document-level memory of
Luo et al. (2020, "Hierarchical Contextualized Representation for Named Entity Recognition").
"""

from __future__ import annotations

import torch
from torch import nn

from seqtag.data.vocab import UNK_ID


class DocumentMemory(nn.Module):
    """The mean state of the other occurrences of each token's word in its document, and how many there are.

    Unknown words (UNK) are not one word and get no memory; nor does padding. The sums run over groups found with
    ``torch.unique`` on (document, word) keys, so the cost is linear in the batch's tokens.

    Args:
        vocab_size: V, the word vocabulary size (word ids are below it).

    Shape:
        states: (B, T, D) encoder states;  word_ids: (B, T);  documents: (B,) document ids;
        mask: (B, T) bool, True for real tokens, or None when nothing is padded;
        returns: (B, T, D + 1): the mean of the other occurrences' states (zeros when there are none), then
        log(1 + the number of other occurrences).
    """

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.vocab_size = vocab_size

    @property
    def extra_size(self) -> int:
        """Features added beyond the states' own size D."""
        return 1

    def forward(
        self, states: torch.Tensor, word_ids: torch.Tensor, documents: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        batch, length, size = states.shape
        n = batch * length
        known = word_ids > UNK_ID  # (B, T)
        if mask is not None:
            known = known & mask
        known = known.reshape(n)
        # Fixed shapes, no host sync (no boolean indexing, no torch.unique): every position takes part, and an
        # unknown word or padding gets a key of its own, a group of one that adds nothing. Word ids may pass V (rows
        # of a pretrained table kept for words unseen in training): 2**32 separates documents.
        positions = torch.arange(n, device=states.device)
        keys = torch.where(known, (documents[:, None] * 2**32 + word_ids).reshape(n), -1 - positions)  # (N,)
        sorted_keys, order = keys.sort()
        starts = torch.ones_like(known)
        starts[1:] = sorted_keys[1:] != sorted_keys[:-1]
        group = torch.empty_like(order).scatter_(0, order, starts.long().cumsum(0) - 1)  # (N,) each position's group
        own = torch.where(known[:, None], states.reshape(n, size), 0.0)  # (N, D), zeros where unknown
        sums = own.new_zeros(n, size).index_add_(0, group, own)  # (G <= N, D): in position order, as a loop would
        counts = own.new_zeros(n).index_add_(0, group, known.to(own.dtype))
        others = (counts[group] - 1).clamp(min=0)  # (N,)
        # A word seen once gets sum - own = 0 exactly.
        mean = (sums[group] - own) / others.clamp(min=1.0)[:, None]  # (N, D)
        memory = torch.where(known[:, None], torch.cat([mean, torch.log1p(others)[:, None]], dim=-1), 0.0)
        return memory.reshape(batch, length, size + 1)
