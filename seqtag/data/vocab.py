"""Vocabularies (words, characters, labels) built from the training split, and the encoding of a sentence.

A vocabulary is plain data: it is saved as JSON beside the checkpoints and inside them, so tagging text with a
trained model needs no pickled code.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from functools import cached_property
from pathlib import Path

from seqtag.atomic import atomic_write_text
from seqtag.errors import SeqtagInputError

# Where a checkpoint keeps the vocabulary (plain data) and the pretrained table ({"words": [...], "vectors": (P, E)}).
CHECKPOINT_KEY = "seqtag_vocab"
PRETRAINED_KEY = "seqtag_pretrained"
PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
# Characters of a token beyond this are not fed to the character encoder (URLs, runs of dashes): they cost memory
# and carry no more signal than the first ones.
MAX_CHARS_PER_TOKEN = 64

# Casing classes (Reimers & Gurevych 2017): what lowercased word vectors cannot see.
CASINGS = ("<pad>", "numeric", "mainly_numeric", "all_lower", "all_upper", "initial_upper", "contains_digit", "other")
_DIGITS = re.compile(r"\d")


# Distinct tokens whose ids Vocab.encode_tokens keeps (about 200 bytes each); the memory is emptied past it.
TOKEN_CACHE_SIZE = 500_000


def casing(token: str) -> int:
    """The casing class id of a token (an index into ``CASINGS``)."""
    digits = sum(c.isdigit() for c in token)
    if token.isdigit():
        return 1
    if digits / max(len(token), 1) > 0.5:
        return 2
    if token.islower():
        return 3
    if token.isupper():
        return 4
    if token[:1].isupper():
        return 5
    if digits:
        return 6
    return 7


@dataclass
class Vocab:
    """Word, character and label vocabularies.

    Args:
        words: id → normalized word; ids 0 and 1 are PAD and UNK.
        chars: id → character; ids 0 and 1 are PAD and UNK.
        labels: id → tag in the training scheme (no UNK: a label is known or an error).
        word_counts: training count of each word (0 for words kept only because they have a pretrained vector).
        lowercase: words are looked up lowercased (casing then comes from the casing feature).
        zero_digits: digits are replaced by 0 before lookup.
        scheme: the tag scheme the model is trained in (None for non-span labels such as POS tags).
        data_scheme: the scheme of the dataset's files, used to write predictions and score.
        features: per feature column (e.g. POS tags given as input), id → value; ids 0 and 1 are PAD and UNK.
    """

    words: list[str]
    chars: list[str]
    labels: list[str]
    word_counts: list[int] = field(default_factory=list)
    lowercase: bool = False
    zero_digits: bool = False
    scheme: str | None = None
    data_scheme: str | None = None
    features: list[list[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.word_index = {w: i for i, w in enumerate(self.words)}
        self.char_index = {c: i for i, c in enumerate(self.chars)}
        self.label_index = {t: i for i, t in enumerate(self.labels)}
        self.feature_index = [{v: i for i, v in enumerate(values)} for values in self.features]
        # Words of a pretrained vector table kept with the model (see :meth:`attach_pretrained`); not a field, so not
        # in vocab.json: the table travels in the checkpoint.
        self.pretrained_words: list[str] = []
        self.pretrained_index: dict[str, int] = {}
        # token -> (word id, char ids, casing id): a text repeats its words, and encoding each occurrence anew took
        # a third of `seqtag predict`'s tagging time. Cleared when the pretrained words change.
        self._token_ids: dict[str, tuple[int, list[int], int]] = {}

    def attach_pretrained(self, words: Sequence[str]) -> None:
        """Words outside the vocabulary that have a pretrained vector: word ``j`` gets id ``len(words) + j``, so a
        word unseen in training is tagged with its pretrained vector instead of UNK (the model's
        ``TokenEmbedder.set_pretrained_table`` holds the matching rows). Lookup tries the normalized word, then its
        lowercased form."""
        self.pretrained_words = list(words)
        offset = len(self.words)
        self.pretrained_index = {w: offset + j for j, w in enumerate(self.pretrained_words)}
        self._token_ids.clear()

    def add_pretrained(self, words: Sequence[str]) -> None:
        """Appends words to the pretrained ones (ids after theirs, which do not change), e.g. words given a subword
        vector when a text is tagged (:class:`seqtag.data.fasttext_model.SubwordTable`)."""
        offset = len(self.words) + len(self.pretrained_words)
        self.pretrained_index.update((w, offset + j) for j, w in enumerate(words))
        self.pretrained_words.extend(words)
        self._token_ids.clear()

    def word_id(self, token: str) -> int:
        """The id of a token: its vocabulary entry, else its pretrained vector's row, else UNK."""
        word = self.normalize(token)
        found = self.word_index.get(word)
        if found is not None:
            return found
        if self.pretrained_index:
            found = self.pretrained_index.get(word)
            if found is None:
                found = self.pretrained_index.get(word.lower())
            if found is not None:
                return found
        return UNK_ID

    @classmethod
    def build(
        cls,
        train_tokens: Iterable[Sequence[str]],
        labels: Sequence[str],
        min_count: int = 1,
        lowercase: bool = False,
        zero_digits: bool = False,
        extra_words: Iterable[str] = (),
        scheme: str | None = None,
        data_scheme: str | None = None,
        train_features: Iterable[Sequence[Sequence[str]]] = (),
    ) -> Vocab:
        """Builds the vocabularies from training sentences.

        Args:
            train_tokens: the training sentences' tokens.
            labels: the label list in the training scheme.
            min_count: words seen fewer times in training become UNK (unless in ``extra_words``). Default: 1
            extra_words: normalized words to keep whatever their count, e.g. words of any split that have a
                pretrained vector, so that they keep it. Default: none
            train_features: per training sentence, its feature columns (F lists of T values). Default: none
        """
        if min_count < 1:
            raise SeqtagInputError(f"min_count should be >= 1, got {min_count}")
        word_counts: Counter[str] = Counter()
        char_counts: Counter[str] = Counter()
        probe = cls([PAD, UNK], [PAD, UNK], list(labels), lowercase=lowercase, zero_digits=zero_digits)
        for tokens in train_tokens:
            word_counts.update(probe.normalize(t) for t in tokens)
            for t in tokens:
                char_counts.update(t[:MAX_CHARS_PER_TOKEN])
        extra = set(extra_words)
        kept = [w for w, c in word_counts.items() if c >= min_count or w in extra]
        # Frequent words first, ties alphabetical: deterministic on every process.
        kept.sort(key=lambda w: (-word_counts[w], w))
        seen = set(kept)
        kept += sorted(w for w in extra if w not in seen)
        words = [PAD, UNK] + [w for w in kept if w not in (PAD, UNK)]
        chars = [PAD, UNK] + sorted(char_counts)
        counts = [0, 0] + [word_counts.get(w, 0) for w in words[2:]]
        feature_values: list[set[str]] = []
        for columns in train_features:
            if not feature_values:
                feature_values = [set() for _ in columns]
            for values, column in zip(feature_values, columns):
                values.update(column)
        features = [[PAD, UNK] + sorted(values - {PAD, UNK}) for values in feature_values]
        return cls(words, chars, list(labels), counts, lowercase, zero_digits, scheme, data_scheme, features)

    def normalize(self, token: str) -> str:
        """The form under which a token is looked up in ``words``."""
        if self.lowercase:
            token = token.lower()
        if self.zero_digits:
            token = _DIGITS.sub("0", token)
        return token

    def encode_tokens(self, tokens: Sequence[str]) -> dict[str, list]:
        """Ids of one sentence.

        Returns:
            ``word_ids`` (T,) (ids from ``len(words)`` on are rows of the pretrained table), ``char_ids`` (T, ≤64)
            ragged, ``casing_ids`` (T,).
        """
        known, char_index = self._token_ids, self.char_index
        if len(known) > TOKEN_CACHE_SIZE:
            known.clear()
        word_ids, char_ids, casing_ids = [], [], []
        for t in tokens:
            ids = known.get(t)
            if ids is None:
                chars = [char_index.get(c, UNK_ID) for c in t[:MAX_CHARS_PER_TOKEN]]
                ids = known[t] = (self.word_id(t), chars, casing(t))
            word_ids.append(ids[0])
            char_ids.append(ids[1])  # shared between occurrences: read, never changed
            casing_ids.append(ids[2])
        return {"word_ids": word_ids, "char_ids": char_ids, "casing_ids": casing_ids}

    def encode_features(self, features: Sequence[Sequence[str]]) -> list[list[int]]:
        """Ids of one sentence's feature columns (F lists of T values) as (T, F) nested lists; unseen values are UNK."""
        columns = [[index.get(v, UNK_ID) for v in values] for index, values in zip(self.feature_index, features)]
        return [list(ids) for ids in zip(*columns)]

    def encode_tags(self, tags: Sequence[str], where: str = "") -> list[int]:
        """Label ids of tags already in the training scheme; an unknown label is an error."""
        try:
            return [self.label_index[t] for t in tags]
        except KeyError as err:
            raise SeqtagInputError(
                f"{where}label {err.args[0]!r} was never seen in training; the model knows {self.labels}"
            ) from None

    @cached_property
    def tokenize_mode(self) -> str:
        """How raw text is split for this vocabulary's model: ``chars`` when it was trained on one-character tokens
        (text written without spaces), else ``words`` (see :func:`seqtag.tokenize.mode_for_vocabulary`)."""
        from seqtag.tokenize import mode_for_vocabulary

        return mode_for_vocabulary(self.words[2:], self.word_counts[2:] or None)

    @property
    def singleton_ids(self) -> list[int]:
        """Ids of words seen exactly once in training."""
        return [i for i, c in enumerate(self.word_counts) if c == 1]

    def to_dict(self) -> dict:
        # Not dataclasses.asdict, which deep-copies element by element: 0.2 s for a CoNLL-2003 vocabulary, paid at
        # every checkpoint. The fields are lists of str/int (features: lists of lists) and scalars.
        data = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "features":
                value = [list(column) for column in value]
            elif isinstance(value, list):
                value = list(value)
            data[f.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Vocab:
        return cls(**data)

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def from_checkpoint(cls, checkpoint: dict, where: str | Path = "the checkpoint") -> Vocab:
        """The vocabulary a checkpoint holds, with the words of its pretrained table attached."""
        if CHECKPOINT_KEY not in checkpoint:
            raise SeqtagInputError(f"{where}: holds no seqtag vocabulary (not a seqtag tagger checkpoint?)")
        vocab = cls.from_dict(checkpoint[CHECKPOINT_KEY])
        table = checkpoint.get(PRETRAINED_KEY)
        if table:
            vocab.attach_pretrained(pretrained_words(table))
        return vocab

    @classmethod
    def load(cls, path: str | Path) -> Vocab:
        """A vocabulary from a ``vocab.json``, or from a checkpoint (``.ckpt``) with the words of its pretrained
        table attached."""
        path = Path(path)
        if not path.exists():
            raise SeqtagInputError(f"{path}: vocabulary file not found")
        if path.suffix == ".ckpt":
            return cls.from_checkpoint(load_checkpoint(path), path)
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as err:
            raise SeqtagInputError(f"{path}: not a seqtag vocabulary file: {err}") from None


def pretrained_words(table: dict) -> list[str]:
    """The words of a checkpoint's pretrained table (stored as one newline-separated string)."""
    words = table["words"]
    return words.split("\n") if isinstance(words, str) else list(words)


# The last checkpoint read, keyed by its path, size and modification time: `seqtag predict --ckpt_path` reads it for
# the options, the vocabulary and the pretrained table, and each weights_only load of a 90 MB checkpoint costs 0.3 s.
_LAST_CHECKPOINT: tuple[tuple, dict] | None = None


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents, loaded without unpickling code (``weights_only=True``). The top level and the
    hyperparameters are the caller's own copies; the tensors are shared with the next caller of the same file."""
    global _LAST_CHECKPOINT
    import torch

    path = Path(path)
    if not path.is_file():
        raise SeqtagInputError(f"{path}: checkpoint not found")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if _LAST_CHECKPOINT is None or _LAST_CHECKPOINT[0] != key:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several types for files that are not checkpoints
            raise SeqtagInputError(f"{path}: not a readable seqtag checkpoint: {err}") from None
        _LAST_CHECKPOINT = (key, checkpoint)
    checkpoint = dict(_LAST_CHECKPOINT[1])
    if isinstance(checkpoint.get("hyper_parameters"), dict):
        checkpoint["hyper_parameters"] = dict(checkpoint["hyper_parameters"])
    return checkpoint
