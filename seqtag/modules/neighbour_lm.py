"""A language-modelling objective beside the tagging one (Rei 2017, "Semi-supervised Multitask Learning for
Sequence Labeling"): in training, the BiLSTM's forward state at each word also predicts the next word and its
backward state the previous word. The tagger's own training sentences are the only text it needs; the extra signal
teaches the encoder about words and contexts that tags alone say little about. Tagging does not use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

UNK_ID = 1  # the vocabulary's UNK (seqtag.data.vocab: PAD 0, UNK 1, then words most frequent first)


class NeighbourWordLM(nn.Module):
    """Predicts each word's neighbours from the BiLSTM states: the next word from the forward state, the previous
    word from the backward state, each through its own tanh layer and a softmax over the ``num_words`` most
    frequent words (the vocabulary's ids below ``num_words``; rarer words are predicted as UNK).

    Args:
        hidden_size: H, the BiLSTM's hidden size per direction (states are ``[forward, backward]``).
        num_words: the classes predicted: word ids below it stand for themselves, the others for UNK.
        hidden: the tanh layer's size. Default: 50 (Rei 2017)

    Shape:
        states: (B, T, 2H);  word_ids: (B, T) vocabulary ids;  mask: (B, T) bool, True at real tokens;
        returns: (B,) the negative log-likelihood of each sentence's neighbour words, summed over both directions.
    """

    def __init__(self, hidden_size: int, num_words: int, hidden: int = 50) -> None:
        super().__init__()
        if num_words < 2:
            raise ValueError(f"num_words should be at least 2 (PAD and UNK), got {num_words}")
        self.hidden_size = hidden_size
        self.num_words = num_words
        self.next_word = nn.Sequential(nn.Linear(hidden_size, hidden), nn.Tanh(), nn.Linear(hidden, num_words))
        self.previous_word = nn.Sequential(nn.Linear(hidden_size, hidden), nn.Tanh(), nn.Linear(hidden, num_words))

    def forward(
        self, states: torch.Tensor, word_ids: torch.Tensor, mask: torch.Tensor, select: bool | None = None
    ) -> torch.Tensor:
        """``select``: run the heads on the real pairs only (boolean indexing reads the mask on the host) rather than
        on every position with padding masked out (fixed shapes, no host sync). Default: on the CPU only, where
        document batches' padding would cost more than the read."""
        h = self.hidden_size
        targets = torch.where(word_ids < self.num_words, word_ids, UNK_ID)  # (B, T)
        # Position t of `pairs` is True when words t and t + 1 both exist: forward state t → word t + 1, backward
        # state t + 1 → word t.
        pairs = mask[:, 1:]  # (B, T - 1)
        forward, following = states[:, :-1, :h], targets[:, 1:]  # (B, T - 1, H), (B, T - 1)
        backward, preceding = states[:, 1:, h:], targets[:, :-1]
        select = select if select is not None else states.device.type == "cpu"
        if select:  # the N real pairs
            forward, following, backward, preceding = (x[pairs] for x in (forward, following, backward, preceding))
        else:  # every position, padding masked out below
            forward, following, backward, preceding = (
                x.flatten(0, 1) for x in (forward, following, backward, preceding)
            )
        nll = F.cross_entropy(self.next_word(forward), following, reduction="none") + F.cross_entropy(
            self.previous_word(backward), preceding, reduction="none"
        )  # (N,) or (B * (T - 1),)
        if select:
            return states.new_zeros(states.shape[0]).index_add_(0, pairs.nonzero()[:, 0], nll)  # (B,)
        return (nll.view_as(pairs) * pairs).sum(1)  # (B,)
