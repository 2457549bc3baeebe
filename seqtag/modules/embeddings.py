"""Token representations: word vectors, a character CNN or BiLSTM, a casing feature and embedded input feature
columns (e.g. POS tags given with the data), concatenated.

(B, T) ids → (B, T, E). The character encoders run only over real tokens (padding positions are skipped, then
filled with zeros), which matters for batches of uneven sentences.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from seqtag.data.vocab import CASINGS
from seqtag.modules.dropout import Dropout


class CharCNN(nn.Module):
    """Character CNN with max pooling over each token (Ma & Hovy 2016).

    The same function as ``Conv1d(padding=kernel_size // 2)`` over each zero-padded token followed by a max over its
    characters, computed without the padding: the tokens' characters are laid end to end, ``kernel_size // 2`` zero
    (padding-id) characters apart, each character's window of ``kernel_size`` embeddings is one row of a matrix
    product, and the max runs over each token's segment. Character padding in a batch is typically 2-3x the real
    characters, and ``Conv1d``'s backward is slow at these sizes on CPU: this is about 3x faster there, with the
    same parameters (``conv.weight``, ``conv.bias``) and results. On other devices :meth:`forward_padded` runs
    instead: the padded convolution as one matrix product.

    Args:
        num_chars: character vocabulary size (id 0 is padding).
        char_dim: character embedding size. Default: 30
        num_filters: output size per token. Default: 50
        kernel_size: convolution width in characters, odd. Default: 3
        dropout: dropout on the character embeddings, in training (as NCRF++). Default: 0.0

    Shape:
        char_ids: (N, C) long, N real tokens, each with at least one character, padded with 0;
        returns: (N, num_filters)
    """

    def __init__(
        self, num_chars: int, char_dim: int = 30, num_filters: int = 50, kernel_size: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size should be odd and positive, got {kernel_size}")
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.dropout = Dropout(dropout)  # a cheaper mask on CPU (seqtag.modules.dropout)
        self.conv = nn.Conv1d(char_dim, num_filters, kernel_size, padding=kernel_size // 2)
        self.output_size = num_filters

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        if char_ids.device.type != "cpu":
            # On a GPU the end-to-end layout would cost about 20 more small kernels and two host syncs (boolean
            # indexing, nonzero) per batch.
            return self.forward_padded(char_ids)
        return self.forward_end_to_end(char_ids)

    def forward_padded(self, char_ids: torch.Tensor) -> torch.Tensor:
        """The convolution over the zero-padded tokens as one matrix product, max over real characters.

        Not ``Conv1d``: cuDNN plans each new input shape, about 2 ms of CPU forward and backward, and here
        nearly every batch has a new (tokens, characters) shape. (N, C) → (N, F)
        """
        k = self.conv.kernel_size[0]
        embedded = F.pad(self.dropout(self.embedding(char_ids)), (0, 0, k // 2, k // 2))  # (N, C + k - 1, D)
        windows = embedded.unfold(1, k, 1).flatten(2)  # (N, C, D * k), ordered as the Conv1d weight (F, D, k)
        h = F.linear(windows, self.conv.weight.flatten(1), self.conv.bias)  # (N, C, F)
        return h.masked_fill((char_ids == 0).unsqueeze(2), float("-inf")).amax(dim=1)  # (N, F)

    def forward_end_to_end(self, char_ids: torch.Tensor) -> torch.Tensor:
        """The same function with the tokens' characters end to end, no padding computed. (N, C) → (N, F)"""
        n, half = char_ids.shape[0], self.conv.kernel_size[0] // 2
        lengths = (char_ids != 0).sum(dim=1)  # (N,)
        # Each token's characters followed by `half` padding ids, all tokens end to end, `half` more in front.
        padded = torch.cat([char_ids, char_ids.new_zeros(n, half)], dim=1)  # (N, C + half)
        position = torch.arange(padded.shape[1], device=char_ids.device)
        keep = position < (lengths + half).unsqueeze(1)  # (N, C + half)
        stream = F.pad(padded[keep], (half, 0))  # (L,) with L = sum(lengths) + (N + 1) * half
        embedded = self.dropout(self.embedding(stream))  # (L, D), zero rows at padding ids
        real = (stream != 0).nonzero().squeeze(1)  # (R,) positions of real characters, R = sum(lengths)
        windows = torch.cat([embedded[real + offset] for offset in range(-half, half + 1)], dim=1)  # (R, k * D)
        # Conv1d weight (F, D, k) as a (F, k * D) matrix in the windows' order: offset -half first.
        weight = self.conv.weight.transpose(1, 2).reshape(self.conv.out_channels, -1)
        h = F.linear(windows, weight, self.conv.bias)  # (R, F)
        return torch.segment_reduce(h, "max", lengths=lengths)  # (N, F)


class CharLSTM(nn.Module):
    """Character BiLSTM; a token is the concatenation of its last forward and first backward states (Lample 2016).

    Args:
        num_chars: character vocabulary size (id 0 is padding).
        char_dim: character embedding size. Default: 25
        hidden_size: hidden size per direction. Default: 25
        dropout: dropout on the character embeddings, in training. Default: 0.0

    Shape:
        char_ids: (N, C) long, padded with 0, every row non-empty;  returns: (N, 2 * hidden_size)
    """

    def __init__(self, num_chars: int, char_dim: int = 25, hidden_size: int = 25, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_chars, char_dim, padding_idx=0)
        self.dropout = Dropout(dropout)  # a cheaper mask on CPU (seqtag.modules.dropout)
        self.lstm = nn.LSTM(char_dim, hidden_size, batch_first=True, bidirectional=True)
        self.output_size = 2 * hidden_size

    def forward(self, char_ids: torch.Tensor) -> torch.Tensor:
        lengths = (char_ids != 0).sum(dim=1).clamp(min=1).cpu()
        embedded = self.dropout(self.embedding(char_ids))
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(packed)  # h_n: (2, N, H)
        return torch.cat([h_n[0], h_n[1]], dim=-1)  # (N, 2H)


class TokenEmbedder(nn.Module):
    """Word embedding ⊕ character encoding ⊕ casing embedding ⊕ feature-column embeddings.

    Args:
        vocab_size: word vocabulary size (0 = PAD, 1 = UNK).
        num_chars: character vocabulary size.
        word_dim: word vector size; 0 = no word vectors. Default: 100
        char_encoder: ``"cnn"``, ``"lstm"`` or ``"none"``. Default: ``"cnn"``
        char_dim: character embedding size. Default: 30
        char_hidden: CNN filters, or LSTM hidden size per direction. Default: 50
        casing_dim: casing embedding size; 0 disables the feature. Default: 0
        freeze_words: keep word vectors fixed in training. Default: False
        word_dropout: in training, the probability of replacing a word id by UNK. Default: 0.0
        singleton_dropout: in training, the probability of replacing a word seen once in the training data by UNK
            (Lample et al. 2016), on top of ``word_dropout``; :meth:`set_singletons` says which words those are.
            Default: 0.0
        feature_sizes: the number of values of each input feature column (0 = PAD, 1 = UNK). Default: none
        feature_dim: embedding size of each feature column. Default: 20
        char_dropout: dropout on the character embeddings, in training. Default: 0.0

    Shape:
        word_ids, casing_ids: (B, T) long;  char_ids: (B, T, C) long;  mask: (B, T) bool, or None when every
        position is a real token (no padding: the character encoder then runs without indexing);
        feature_ids: (B, T, F) long, F = ``len(feature_sizes)``;  returns: (B, T, E) with E = ``output_size``
    """

    def __init__(
        self,
        vocab_size: int,
        num_chars: int,
        word_dim: int = 100,
        char_encoder: str = "cnn",
        char_dim: int = 30,
        char_hidden: int = 50,
        casing_dim: int = 0,
        freeze_words: bool = False,
        word_dropout: float = 0.0,
        feature_sizes: Sequence[int] = (),
        feature_dim: int = 20,
        singleton_dropout: float = 0.0,
        char_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if char_encoder not in ("cnn", "lstm", "none"):
            raise ValueError(f"char_encoder should be one of 'cnn', 'lstm', 'none', got {char_encoder!r}")
        if not 0.0 <= word_dropout < 1.0:
            raise ValueError(f"word_dropout should be in [0, 1), got {word_dropout}")
        if not 0.0 <= singleton_dropout < 1.0:
            raise ValueError(f"singleton_dropout should be in [0, 1), got {singleton_dropout}")
        self.words = nn.Embedding(vocab_size, word_dim, padding_idx=0)
        if word_dim > 0:  # 0: no word vectors (a transformer or the characters represent the words)
            nn.init.uniform_(self.words.weight, -((3.0 / word_dim) ** 0.5), (3.0 / word_dim) ** 0.5)
        self.words.weight.data[0] = 0.0
        self.words.weight.requires_grad_(not freeze_words)
        self.chars: nn.Module | None = None
        if char_encoder == "cnn":
            self.chars = CharCNN(num_chars, char_dim, char_hidden, dropout=char_dropout)
        elif char_encoder == "lstm":
            self.chars = CharLSTM(num_chars, char_dim, char_hidden, dropout=char_dropout)
        self.casing = nn.Embedding(len(CASINGS), casing_dim, padding_idx=0) if casing_dim > 0 else None
        self.features = nn.ModuleList(nn.Embedding(size, feature_dim, padding_idx=0) for size in feature_sizes)
        self.word_dropout = word_dropout
        self.singleton_dropout = singleton_dropout
        # (V,) True for words seen once in training; set from the vocabulary when training starts, not saved.
        self.register_buffer("singletons", torch.zeros(vocab_size, dtype=torch.bool), persistent=False)
        # (P, word_dim) pretrained vectors of words outside the vocabulary (ids V .. V + P - 1): a fixed table, kept
        # with the model by the Tagger's checkpoint hooks, so words unseen in training keep their vector when tagging.
        # Not a buffer: DDP broadcasts every buffer from rank 0 before each step, and this one is identical on every
        # process (80 MB for GloVe's 400,000 words: 2 processes on 2 CPU cores trained 5.8x slower than 1). _apply
        # moves and casts it with the module, as it would a buffer.
        self.pretrained_table: torch.Tensor | None = None
        self.output_size = (
            word_dim
            + (self.chars.output_size if self.chars else 0)
            + max(casing_dim, 0)
            + feature_dim * len(self.features)
        )

    def load_pretrained(self, matrix: torch.Tensor) -> None:
        """Copies pretrained rows (V, word_dim) into the word embedding."""
        expected = tuple(self.words.weight.shape)
        if tuple(matrix.shape) != expected:
            raise ValueError(
                f"Expected pretrained vectors of shape {expected} (vocabulary size, model.word_dim), got "
                f"{tuple(matrix.shape)}: set model.word_dim to the vectors' dimension {matrix.shape[1]}"
            )
        with torch.no_grad():
            self.words.weight.copy_(matrix)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001 (nn.Module's signature)
        super()._apply(fn, recurse)
        if self.pretrained_table is not None:
            self.pretrained_table = fn(self.pretrained_table)
        return self

    def set_pretrained_table(self, matrix: torch.Tensor | None) -> None:
        """Sets (or, with None, removes) the fixed (P, word_dim) vectors for word ids ``V .. V + P - 1``."""
        if matrix is not None and (matrix.dim() != 2 or matrix.shape[1] != self.words.embedding_dim):
            raise ValueError(
                f"pretrained vectors have {tuple(matrix.shape)[1:]} values per word, the model's word vectors "
                f"{self.words.embedding_dim}"
            )
        device = self.words.weight.device
        self.pretrained_table = None if matrix is None else matrix.detach().to(device, torch.float32)

    def set_singletons(self, word_ids: Sequence[int]) -> None:
        """Marks the words seen once in the training data, which ``singleton_dropout`` replaces by UNK."""
        singletons = torch.zeros_like(self.singletons)
        singletons[torch.as_tensor(list(word_ids), dtype=torch.long, device=singletons.device)] = True
        self.singletons = singletons

    def _word_vectors(self, word_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) ids → (B, T, word_dim): the trained embedding below V, the fixed pretrained table from V on."""
        if self.pretrained_table is None:
            return self.words(word_ids)
        size = self.words.num_embeddings
        inside = word_ids < size  # (B, T); no host sync: both lookups always run
        trained = self.words(word_ids.masked_fill(~inside, 1))
        table = self.pretrained_table.to(trained.dtype)
        fixed = nn.functional.embedding((word_ids - size).clamp(min=0, max=table.shape[0] - 1), table)
        return torch.where(inside[..., None], trained, fixed)

    def forward(
        self,
        word_ids: torch.Tensor,
        char_ids: torch.Tensor,
        casing_ids: torch.Tensor,
        mask: torch.Tensor | None,
        feature_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.training and self.word_dropout > 0:
            drop = torch.rand(word_ids.shape, device=word_ids.device) < self.word_dropout
            word_ids = word_ids.masked_fill(drop if mask is None else drop & mask, 1)  # 1 = UNK
        if self.training and self.singleton_dropout > 0:
            # Words unknown at test time are mostly rare names: UNK learns from the rare words of training.
            drop = self.singletons[word_ids.clamp(max=self.singletons.shape[0] - 1)] & (
                torch.rand(word_ids.shape, device=word_ids.device) < self.singleton_dropout
            )
            word_ids = word_ids.masked_fill(drop, 1)  # padding (id 0) is never a singleton
        parts = [self._word_vectors(word_ids)]  # (B, T, word_dim)
        if self.chars is not None and mask is None:
            parts.append(self.chars(char_ids.flatten(0, 1)).unflatten(0, word_ids.shape))  # (B, T, F)
        elif self.chars is not None and word_ids.device.type != "cpu" and isinstance(self.chars, CharCNN):
            # Off the CPU, fixed shapes (no host sync for boolean indexing): every position, padding zeroed.
            chars = self.chars.forward_padded(char_ids.flatten(0, 1)).unflatten(0, word_ids.shape)  # (B, T, F)
            parts.append(chars.masked_fill(~mask[..., None], 0.0))
        elif self.chars is not None:
            real = self.chars(char_ids[mask])  # (N, F) over real tokens only
            chars = real.new_zeros(*word_ids.shape, real.shape[-1])
            chars[mask] = real
            parts.append(chars)  # (B, T, F)
        if self.casing is not None:
            parts.append(self.casing(casing_ids))  # (B, T, casing_dim)
        if len(self.features):
            if feature_ids is None or feature_ids.shape[-1] != len(self.features):
                given = "none" if feature_ids is None else feature_ids.shape[-1]
                raise ValueError(f"the model reads {len(self.features)} feature columns, the batch has {given}")
            parts += [embedding(feature_ids[..., f]) for f, embedding in enumerate(self.features)]  # (B, T, dim)
        return torch.cat(parts, dim=-1)  # (B, T, E)
