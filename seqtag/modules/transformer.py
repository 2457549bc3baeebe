"""Contextual token vectors from a pretrained Hugging Face encoder (BERT, RoBERTa, DeBERTa, ELECTRA, MiniLM, ...).

The words of each sentence (the batch's ``token_codes``: their text, not vocabulary ids) are split into the
encoder's subwords by its fast tokenizer (``is_split_into_words=True``; ``word_ids()`` maps subwords back to words),
the encoder reads them, and each word gets one vector:

- **pooling**: the mean of its subwords' vectors (``mean``) or the vector of its first subword (``first``, as
  Devlin et al. 2019 tag with a fine-tuned BERT). A frozen encoder was never trained to gather a word in its first
  subword: on CoNLL-2003 ``mean`` scored higher (docs/transformer.md);
- **layers**: one hidden layer, or a scalar mix of several, ``gamma * sum_j softmax(s)_j h_j`` with learned ``s`` and
  ``gamma`` (Peters et al. 2018): different layers hold different information, and which ones a task needs is
  learned instead of guessed;
- **windows**: a sentence longer than the encoder's maximum input (512 subwords for BERT) is read in overlapping
  windows of at most that length, each starting half a window after the previous one (the last one ends at the
  sentence's end); each word takes its vector from the window where it is most central, i.e. where the smaller of
  its distances to the window's two edges is largest, so it always sees at least about a quarter of a window of
  context on each side that the sentence has. A sentence that fits is one window: exactly the plain encoding. A
  single word of more than half a window of subwords (a very long string of symbols) keeps its first half-window of
  subwords.

The encoder is frozen (kept in eval mode, run without gradients) unless ``finetune``; the scalar mix always learns.
Its weights are part of the tagger's ``state_dict`` either way, and :meth:`TransformerEmbedder.spec` gives its
config and tokenizer files as plain data, so a checkpoint rebuilds it with neither the original folder nor the Hub.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqtag.data.token_text import decode_token_codes
from seqtag.errors import SeqtagInputError

SPEC_KEY = "seqtag_transformer"  # the encoder's config and tokenizer files inside a tagger checkpoint
POOLINGS = ("first", "mean")
# At most about this many subword positions (windows x padded window length) go through the encoder at once, so a
# very long sentence cut into many windows does not run them all in one call.
SUBWORDS_PER_CALL = 8192
# The windows of a batch go through the encoder shortest first, in blocks whose longest window is at most this
# factor (plus one subword) longer than their shortest, each block padded to its own longest. CoNLL-2003's training
# sentences in document batches: one block per batch read 3.6 times their subwords, these blocks 1.06 times; a frozen
# MiniLM-L6 on one thread read 59-60 sentences a second before, 178-186 after (docs/transformer.md: other factors).
BLOCK_GROWTH = 1.1


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise SeqtagInputError(
            "model.transformer needs the transformers package: pip install 'seqtag[transformers]'"
        ) from None
    return transformers


def parse_layers(layers: str | int, num_layers: int) -> list[int] | None:
    """The hidden states a ``transformer_layers`` value selects, as indices 0 (the embedding output) to
    ``num_layers`` (the last layer); None for ``last`` (the encoder's output, ``last_hidden_state``).

    ``all``: every hidden state, the embedding output included (as ELMo's mix includes its token layer);
    ``-1,-2,-3,-4`` or ``4,5,6``: those states, negative ones counted from the last layer (-1).

    Example:
        >>> parse_layers("-1,-2", 12), parse_layers("all", 2), parse_layers("last", 12)
        ([12, 11], [0, 1, 2], None)
    """
    text = str(layers).strip().lower()
    if text == "last":
        return None
    if text == "all":
        return list(range(num_layers + 1))
    try:
        picked = [int(part) for part in text.split(",")]
    except ValueError:
        picked = []
    resolved = [p + num_layers + 1 if p < 0 else p for p in picked]
    if not resolved or any(not 0 <= p <= num_layers for p in resolved) or len(set(resolved)) != len(resolved):
        raise SeqtagInputError(
            f"transformer_layers should be 'all', 'last' or distinct layer numbers between {-num_layers - 1} and "
            f"{num_layers} separated by commas (0 = the embedding output, -1 = the last layer), got {layers!r}"
        )
    return resolved


def _tokenizer_files(tokenizer: Any) -> dict[str, str]:
    """The files ``tokenizer.save_pretrained`` writes, as text; binary ones (a sentencepiece model) are left out:
    ``tokenizer.json``, which a fast tokenizer always writes, holds all it needs."""
    files: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        for path in sorted(Path(folder).iterdir()):
            if path.is_file():
                try:
                    files[path.name] = path.read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    continue
    return files


def _load_tokenizer(transformers: Any, source: str) -> Any:
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    if getattr(tokenizer, "add_prefix_space", None) is False:
        # Byte-level BPE (RoBERTa, GPT-2) reads pre-split words only with a space before each one.
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, add_prefix_space=True)
    return tokenizer


def load_encoder(source: str | dict[str, Any]) -> tuple[nn.Module, Any, dict[str, Any]]:
    """The encoder, its tokenizer and its spec (``name``, ``config`` as a plain dict, ``tokenizer`` files as text).

    ``source``: a model folder or Hub name (weights loaded), or a spec from :meth:`TransformerEmbedder.spec`
    (architecture only: the weights come with the tagger's state_dict).
    """
    transformers = _transformers()
    if isinstance(source, dict):
        try:
            name, config, files = source["name"], dict(source["config"]), dict(source["tokenizer"])
        except (KeyError, TypeError) as err:
            raise SeqtagInputError(f"model.transformer: a saved encoder spec needs {err}, got {list(source)}") from None
        model_type = config.pop("model_type", None)
        try:
            model = transformers.AutoModel.from_config(transformers.AutoConfig.for_model(model_type, **config))
        except ValueError as err:
            raise SeqtagInputError(f"model.transformer: cannot rebuild the encoder {name!r}: {err}") from None
        with tempfile.TemporaryDirectory() as folder:
            for file_name, text in files.items():
                if Path(file_name).name != file_name or file_name in ("", ".", ".."):
                    raise SeqtagInputError(f"model.transformer: {file_name!r} is not a tokenizer file name")
                (Path(folder) / file_name).write_text(text, encoding="utf-8")
            tokenizer = _load_tokenizer(transformers, folder)
    else:
        name = str(source)
        try:
            tokenizer = _load_tokenizer(transformers, name)
            model = transformers.AutoModel.from_pretrained(name)
        except (OSError, ValueError) as err:
            raise SeqtagInputError(
                f"model.transformer should be a Hugging Face encoder's folder or Hub name, got {name!r}: {err}"
            ) from None
        files = _tokenizer_files(tokenizer)
    if not getattr(tokenizer, "is_fast", False) or "tokenizer.json" not in files:
        raise SeqtagInputError(
            f"model.transformer {name!r} has no fast tokenizer (tokenizer.json): words are mapped to subwords with "
            f"its word_ids(), which only fast tokenizers give"
        )
    model.float()  # weights saved in half precision are trained and read in float32; the Trainer sets precision
    config = json.loads(model.config.to_json_string(use_diff=False))
    return model, tokenizer, {"name": name, "config": config, "tokenizer": files}


@dataclass
class KeptVectors:
    """Sentences' vectors a frozen encoder gave (words → (n, L, H) tensor), and their size in bytes."""

    vectors: dict[tuple[str, ...], torch.Tensor] = field(default_factory=dict)
    used: int = 0


_shared: dict[str, KeptVectors] | None = None  # while a sharing_kept_vectors() scope is open


@contextlib.contextmanager
def sharing_kept_vectors() -> Iterator[None]:
    """Within this scope, the fits of this process whose frozen encoders have the same weights and settings share
    their kept vectors (``seqtag tune``: every trial reads the same sentences), so the encoder reads each sentence
    once per search instead of once per trial. They are let go when the outermost scope closes."""
    global _shared
    outer = _shared
    _shared = {} if outer is None else outer
    try:
        yield
    finally:
        _shared = outer


def _forget_cache(module: TransformerEmbedder, keys: Any) -> None:
    module.clear_cache()


class ScalarMix(nn.Module):
    """``gamma * sum_j softmax(s)_j h_j`` over L hidden layers (Peters et al. 2018), starting as their mean.

    Shape:
        layers: L tensors (..., H);  returns: (..., H)
    """

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.zeros(num_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def forward(self, layers: Sequence[torch.Tensor]) -> torch.Tensor:
        weights = torch.softmax(self.weights, dim=0).to(layers[0].dtype)
        mixed = weights[0] * layers[0]
        for weight, layer in zip(weights[1:], layers[1:]):
            mixed = mixed + weight * layer
        return self.gamma.to(mixed.dtype) * mixed


class TransformerEmbedder(nn.Module):
    """One vector per word from a Hugging Face encoder (see the module docstring).

    Args:
        source: a model folder or Hub name, or the spec a tagger checkpoint keeps (:meth:`spec`).
        pooling: ``mean`` (the mean of its subwords) or ``first`` (the word's first subword). Default: ``mean``
        layers: ``all`` (a scalar mix of every hidden state), ``last`` (the encoder's output) or layer numbers such
            as ``-1,-2,-3,-4`` (one: that layer; several: their scalar mix). Default: ``all``
        finetune: train the encoder with the tagger; otherwise it stays frozen, in eval mode. Default: False
        max_length: the most subwords the encoder reads at once, special tokens included. Default: the smaller of
            the tokenizer's ``model_max_length`` and the model's ``max_position_embeddings``
        cache_mb: a frozen encoder gives a sentence the same vectors every time, so after :meth:`use_cache` each
            sentence's (all selected layers, before the mix) are kept in memory, up to this many megabytes, and
            later epochs skip the encoder for it; 0 keeps none. Not used when fine-tuning. Default: 4096

    Shape:
        token_codes: (B, T, L) int, the tokens' code points (:mod:`seqtag.data.token_text`);  lengths: (B,) long;
        returns: (B, T, H), H = ``output_size`` (the encoder's hidden size), zeros at padding positions

    Example:
        >>> embedder = TransformerEmbedder("bert-base-cased")  # doctest: +SKIP
        >>> from seqtag.data.token_text import pad_token_codes  # doctest: +SKIP
        >>> embedder(pad_token_codes([["EU", "rejects", "German", "call"]]), torch.tensor([4])).shape  # doctest: +SKIP
        torch.Size([1, 4, 768])
    """

    def __init__(
        self,
        source: str | dict[str, Any],
        pooling: str = "mean",
        layers: str | int = "all",
        finetune: bool = False,
        max_length: int | None = None,
        cache_mb: int = 4096,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise SeqtagInputError(f"transformer_pooling should be one of 'first', 'mean', got {pooling!r}")
        self.encoder, self.tokenizer, self._spec = load_encoder(source)
        config = self.encoder.config
        self.layers = parse_layers(layers, int(config.num_hidden_layers))
        self.mix = ScalarMix(len(self.layers)) if self.layers is not None and len(self.layers) > 1 else None
        self.pooling = pooling
        self.finetune = finetune
        self.output_size = int(config.hidden_size)
        self.encoder.requires_grad_(finetune)
        pooler = getattr(self.encoder, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)  # the sentence vector is not read: no gradient would ever reach it
        self._set_specials()
        if max_length is None:
            limit = getattr(self.tokenizer, "model_max_length", None)
            positions = getattr(config, "max_position_embeddings", None)
            # RoBERTa and its kin number positions from padding_idx + 1: 514 position embeddings read 512 subwords.
            padding = getattr(getattr(self.encoder, "embeddings", None), "padding_idx", None)
            if positions and isinstance(padding, int):
                positions -= padding + 1
            if limit is None or limit > 1_000_000:  # no limit recorded: transformers' huge sentinel
                limit = positions or 512
            max_length = min(limit, positions) if positions else limit
        self.window = int(max_length) - len(self.prefix) - len(self.suffix)  # subwords of the sentence per window
        if self.window < 2:
            raise SeqtagInputError(
                f"model.transformer reads at most {max_length} subwords, {len(self.prefix) + len(self.suffix)} of "
                f"them special tokens: too few for windows of a sentence"
            )
        if cache_mb < 0:
            raise SeqtagInputError(f"transformer_cache_mb should be >= 0, got {cache_mb}")
        self.cache_bytes = int(cache_mb) * 2**20
        self._caching = False
        self.clear_cache()
        # New weights (a checkpoint loaded into this module or a model holding it) make the kept vectors stale.
        self.register_load_state_dict_post_hook(_forget_cache)
        self.train()

    def _set_specials(self) -> None:
        """The special tokens the tokenizer puts before and after a sentence ([CLS] ... [SEP] for BERT)."""
        encoding = self.tokenizer([["a"]], is_split_into_words=True, add_special_tokens=True)
        ids, words = encoding["input_ids"][0], encoding.word_ids(0)
        first = words.index(0)
        last = len(words) - 1 - words[::-1].index(0)
        self.prefix, self.suffix = list(ids[:first]), list(ids[last + 1 :])
        unknown = self.tokenizer.unk_token_id
        self.unknown_id = unknown if unknown is not None else (self.tokenizer.pad_token_id or 0)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    def spec(self) -> dict[str, Any]:
        """The encoder's name, config (plain dict) and tokenizer files (text): with the weights in the tagger's
        state_dict, all a reload needs."""
        return {
            "name": self._spec["name"],
            "config": dict(self._spec["config"]),
            "tokenizer": dict(self._spec["tokenizer"]),
        }

    def train(self, mode: bool = True) -> TransformerEmbedder:
        super().train(mode)
        if not self.finetune:
            self.encoder.eval()  # a frozen encoder runs without dropout
        return self

    # -------------------------------------------------------------------------------------- words → windows
    def subwords(self, sentences: Sequence[Sequence[str]]) -> list[list[list[int]]]:
        """Each word's subword ids. A word the tokenizer drops entirely (empty, or only characters it strips, such
        as a zero-width space) is its unknown token; a word longer than half a window keeps its first half."""
        encoding = self.tokenizer(
            [list(words) for words in sentences], is_split_into_words=True, add_special_tokens=False
        )
        cap = self.window - self.window // 2
        pieces = []
        for i, words in enumerate(sentences):
            per_word: list[list[int]] = [[] for _ in words]
            for piece, word in zip(encoding["input_ids"][i], encoding.word_ids(i)):
                if word is not None:
                    per_word[word].append(piece)
            pieces.append([ids[:cap] if ids else [self.unknown_id] for ids in per_word])
        return pieces

    def windows(self, pieces: Sequence[Sequence[int]]) -> tuple[list[int], list[int]]:
        """One sentence's windows: their start offsets into its subwords, and each word's window (an index into
        the starts), the one where the word is most central (ties: the earlier window).

        Example:
            >>> embedder = TransformerEmbedder.__new__(TransformerEmbedder); embedder.window = 4
            >>> embedder.windows([[1], [2], [3], [4], [5], [6]])  # windows [0, 4), [2, 6)
            ([0, 2], [0, 0, 0, 1, 1, 1])
        """
        sizes = np.array([len(p) for p in pieces])
        ends = np.cumsum(sizes)
        starts_of_words = ends - sizes
        total, width = int(ends[-1]) if len(ends) else 0, self.window
        if total <= width:
            return [0], [0] * len(pieces)
        step = width // 2
        starts = np.array([*range(0, total - width, step), total - width])
        left = starts_of_words[:, None] - starts[None, :]  # (T, K) room before the word in each window
        right = starts[None, :] + width - ends[:, None]  # (T, K) room after it
        room = np.minimum(left, right)
        room[(left < 0) | (right < 0)] = -(10**9)  # the word is not (wholly) in that window
        return starts.tolist(), room.argmax(axis=1).tolist()

    # ----------------------------------------------------------------------------------------------- forward
    def forward(self, token_codes: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        sentences = decode_token_codes(token_codes, lengths)
        batch, width = token_codes.shape[0], token_codes.shape[1]
        per_sentence = self.cached(sentences) if self.caches else self.layer_vectors(sentences)
        pooled = self.mix_layers(torch.cat(per_sentence))  # (N, H)
        rows = torch.tensor(
            [b * width + t for b, words in enumerate(sentences) for t in range(len(words))], dtype=torch.long
        )
        out = pooled.new_zeros(batch * width, pooled.shape[-1])
        return out.index_copy(0, rows.to(pooled.device), pooled).view(batch, width, -1)  # (B, T, H)

    @property
    def caches(self) -> bool:
        """Whether words' vectors are kept between batches: a frozen encoder gives a sentence the same ones."""
        return self._caching and not self.finetune and self.cache_bytes > 0

    def use_cache(self, on: bool) -> None:
        """Starts keeping vectors (the tagger does for a fit, which reads the same sentences every epoch), or stops
        and forgets them. Inside :func:`sharing_kept_vectors`, an encoder with the same weights and settings as an
        earlier one of the scope starts with its vectors."""
        self._caching = on
        if on and _shared is not None and self.caches:
            self._kept = _shared.setdefault(self.fingerprint(), self._kept)
        elif not on:
            self.clear_cache()

    def fingerprint(self) -> str:
        """A digest of what a sentence's kept vectors depend on: the encoder's weights, tokenizer, pooling, layers
        and windows (0.05-0.09 s for the MiniLM's 90 MB)."""
        digest = hashlib.sha256(repr((self.pooling, self.layers, self.window, self.prefix, self.suffix)).encode())
        digest.update(json.dumps(self._spec["tokenizer"], sort_keys=True).encode())
        for name, tensor in self.encoder.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return digest.hexdigest()

    def cached(self, sentences: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """:meth:`layer_vectors`, encoding only the sentences not met before; new ones are kept while the cache
        holds less than ``cache_bytes``.

        Shape:
            returns: one (n, L, H) tensor per sentence
        """
        keys = [tuple(words) for words in sentences]
        kept = self._kept
        missing = list(dict.fromkeys(key for key in keys if key not in kept.vectors))
        fresh = dict(zip(missing, self.layer_vectors(missing))) if missing else {}
        for key, vectors in fresh.items():
            size = vectors.numel() * vectors.element_size()
            if kept.used + size > self.cache_bytes:
                break
            kept.vectors[key] = vectors.clone()  # a copy: the batch's tensor is not kept alive by one sentence
            kept.used += size
        device = next(self.encoder.parameters()).device
        return [(fresh[key] if key in fresh else kept.vectors[key]).to(device) for key in keys]

    def clear_cache(self) -> None:
        """Forgets the kept vectors (the encoder's weights changed); vectors shared with other fits stay theirs."""
        self._kept = KeptVectors()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())  # copies and pickles leave the kept vectors behind
        state["_kept"] = KeptVectors()
        return state

    def layer_vectors(self, sentences: Sequence[Sequence[str]]) -> list[torch.Tensor]:
        """Each word's pooled vector in every selected hidden state (the scalar mix is linear, as is pooling, so
        mixing after pooling gives what mixing before would).

        Shape:
            returns: one (n, L, H) tensor per sentence, n its words, L the selected states (1 for ``last``)
        """
        device = next(self.encoder.parameters()).device
        window_ids: list[list[int]] = []
        window_of_word, positions, counts = [], [], []  # per word, in sentence order
        for pieces in self.subwords(sentences):
            starts, chosen = self.windows(pieces)
            flat = [piece for ids in pieces for piece in ids]
            first_window = len(window_ids)
            for start in starts:
                window_ids.append(self.prefix + flat[start : start + self.window] + self.suffix)
            offset = 0
            for ids, k in zip(pieces, chosen):
                window_of_word.append(first_window + k)
                positions.append(len(self.prefix) + offset - starts[k])
                counts.append(len(ids))
                offset += len(ids)
        # Windows of similar length go through the encoder together (little padding); the words follow their windows.
        order = sorted(range(len(window_ids)), key=lambda w: len(window_ids[w]))
        rank = torch.empty(len(order), dtype=torch.long)
        rank[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        sorted_window = rank[torch.tensor(window_of_word, dtype=torch.long)]  # (N,) each word's window, sorted order
        by_window = torch.argsort(sorted_window, stable=True)  # (N,) the words in the order of their windows
        longest = max(len(ids) for ids in window_ids)
        input_ids = torch.full((len(window_ids), longest), self.pad_id, dtype=torch.long)  # (W, S)
        attention = torch.zeros(len(window_ids), longest, dtype=torch.long)  # (W, S)
        for w, original in enumerate(order):
            ids = window_ids[original]
            input_ids[w, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[w, : len(ids)] = 1
        pooled = self.pool_words(
            input_ids.to(device),
            attention.to(device),
            sorted_window[by_window],
            torch.tensor(positions, dtype=torch.long)[by_window],
            torch.tensor(counts, dtype=torch.long)[by_window],
        )  # (N, L * H) in window order
        pooled = pooled.index_select(0, torch.argsort(by_window).to(pooled.device))  # (N, L * H) in sentence order
        layers = pooled.view(pooled.shape[0], -1, self.output_size)  # (N, L, H)
        return list(layers.split([len(words) for words in sentences]))

    def mix_layers(self, layers: torch.Tensor) -> torch.Tensor:
        """(N, L, H) words' vectors in the selected states → (N, H): their scalar mix, or the one state."""
        return layers[:, 0] if self.mix is None else self.mix(layers.unbind(1))

    def pool_words(
        self,
        input_ids: torch.Tensor,
        attention: torch.Tensor,
        window_of_word: torch.Tensor,
        positions: torch.Tensor,
        counts: torch.Tensor,
    ) -> torch.Tensor:
        """Runs the windows through the encoder a few at a time, each call padded to its longest window only (give
        the windows shortest first), and pools each word's subwords.

        Shape:
            input_ids, attention: (W, S) long;  window_of_word, positions, counts: (N,) long, each word's window,
            the position of its first subword there, its number of subwords (non-decreasing windows);
            returns: (N, L * H), the selected states side by side
        """
        used = counts if self.pooling == "mean" else torch.ones_like(counts)  # (N,) subwords pooled per word
        sizes = attention.sum(1).tolist()  # (W,) each window's subwords, special tokens included
        parts, w0 = [], 0
        while w0 < len(sizes):
            # The most windows from w0 whose padded block stays within SUBWORDS_PER_CALL positions (one at least).
            w1, width = w0 + 1, sizes[w0]
            while (
                w1 < len(sizes)
                and (w1 + 1 - w0) * max(width, sizes[w1]) <= SUBWORDS_PER_CALL
                and sizes[w1] <= sizes[w0] * BLOCK_GROWTH + 1
            ):
                width = max(width, sizes[w1])
                w1 += 1
            lo, hi = np.searchsorted(window_of_word.numpy(), [w0, w1])
            hidden = self.hidden(input_ids[w0:w1, :width], attention[w0:w1, :width])  # (w, S, L * H)
            n = used[lo:hi]
            word = torch.repeat_interleave(torch.arange(hi - lo), n)  # (P,) the word of each pooled subword
            first = (window_of_word[lo:hi] - w0) * hidden.shape[1] + positions[lo:hi]  # (n,) flat first subwords
            within = torch.arange(len(word)) - torch.repeat_interleave(torch.cumsum(n, 0) - n, n)  # (P,)
            index = (first[word] + within).to(hidden.device)  # (P,)
            summed = hidden.new_zeros(hi - lo, hidden.shape[-1])
            summed = summed.index_add(0, word.to(hidden.device), hidden.flatten(0, 1)[index])  # (n, L * H)
            parts.append(summed / n.to(hidden.device, hidden.dtype)[:, None])
            w0 = w1
        return torch.cat(parts)  # (N, L * H)

    def hidden(self, input_ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        """The selected hidden states of some windows, side by side (not mixed).

        Shape:
            input_ids, attention: (w, S) long;  returns: (w, S, L * H)
        """
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            outputs = self.encoder(
                input_ids=input_ids, attention_mask=attention, output_hidden_states=self.layers is not None
            )
        if self.layers is None:
            return outputs.last_hidden_state
        return torch.cat([outputs.hidden_states[i] for i in self.layers], dim=-1)
