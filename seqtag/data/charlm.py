"""Character language model data: the character vocabulary, text files read as one string, and chunks of it.

Text is cut into chunks of ``seq_len + 1`` characters that overlap by one (the last character of a chunk is the first
input of the next); chunks are shuffled in training and no hidden state crosses chunk boundaries. The model that
reads them is :class:`seqtag.modules.charlm.CharLanguageModel`; ``seqtag lm`` (:mod:`seqtag.commands.lm`) trains it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch.utils.data import DataLoader

from seqtag.atomic import atomic_write_text
from seqtag.data.readers import read_conll
from seqtag.errors import SeqtagInputError

UNK = "<unk>"


@dataclass
class CharVocab:
    """Characters of the training text; id 0 is UNK (a character training never saw)."""

    chars: list[str]
    index: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.index = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def build(cls, text: str) -> CharVocab:
        return cls([UNK, *sorted(set(text))])

    def encode(self, text: str) -> torch.Tensor:
        return torch.tensor([self.index.get(c, 0) for c in text], dtype=torch.long)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] if i else "\ufffd" for i in ids)

    def to_json(self) -> str:
        return json.dumps({"chars": self.chars}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> CharVocab:
        return cls(json.loads(text)["chars"])

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, self.to_json() + "\n")


def read_text(paths: str | Sequence[str], format: str = "text", token_column: int = 0, encoding: str = "utf-8") -> str:
    """The text of one or more files. ``format="conll"`` takes each sentence's tokens from ``token_column``, joins
    them with spaces and puts one sentence per line (``-DOCSTART-`` lines are skipped)."""
    if format not in ("text", "conll"):
        raise SeqtagInputError(f"format should be one of 'text', 'conll', got {format!r}")
    texts = []
    for path in [paths] if isinstance(paths, str) else paths:
        if not Path(path).is_file():
            raise SeqtagInputError(f"{path}: no such file")
        if format == "conll":
            sentences = read_conll(path, token_column=token_column, tag_column=None, encoding=encoding)
            texts.append("".join(" ".join(s["tokens"]) + "\n" for s in sentences))
        else:
            texts.append(Path(path).read_text(encoding=encoding))
    return "\n".join(texts)


def chunk(ids: torch.Tensor, seq_len: int) -> torch.Tensor:
    """(N,) ids → (C, seq_len + 1) chunks overlapping by one id; a text shorter than a chunk is one chunk."""
    if ids.numel() < 2:
        raise SeqtagInputError(f"a text split should hold at least 2 characters, got {ids.numel()}")
    size = min(seq_len + 1, ids.numel())
    return ids.unfold(0, size, size - 1).contiguous()  # (C, seq_len + 1)


class CharLMDataModule(L.LightningDataModule):
    """Character chunks of UTF-8 text files.

    Args:
        train: training text file(s).
        validation: validation text file(s); None holds out the tail of ``train``. Default: None
        test: test text file(s). Default: None
        format: ``text`` (files as they are) or ``conll`` (the token column, one sentence per line). Default: text
        token_column: token column of ``conll`` files. Default: 0
        validation_fraction: the fraction of the training text (cut at a line break) held out for validation when
            ``validation`` is None. Default: 0.05
        seq_len: characters per training chunk (backpropagation through time length). Default: 100
        batch_size: chunks per training batch. Default: 32
        eval_batch_size: chunks per evaluation batch. Default: 128
        vocab: a ``vocab.json`` saved with a model, used instead of the training text's characters. Default: None
        encoding: text encoding. Default: ``utf-8``
    """

    def __init__(
        self,
        train: str | list[str],
        validation: str | list[str] | None = None,
        test: str | list[str] | None = None,
        format: Literal["text", "conll"] = "text",
        token_column: int = 0,
        validation_fraction: float = 0.05,
        seq_len: int = 100,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        vocab: str | None = None,
        encoding: str = "utf-8",
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        if seq_len < 1 or batch_size < 1 or eval_batch_size < 1:
            raise SeqtagInputError(
                f"seq_len, batch_size and eval_batch_size should be >= 1, got {seq_len}, {batch_size}, "
                f"{eval_batch_size}"
            )
        if validation is None and not 0.0 < validation_fraction < 1.0:
            raise SeqtagInputError(
                f"validation_fraction should be in (0, 1) when no validation file is given, got {validation_fraction}"
            )
        self._text = {"train": read_text(train, format, token_column, encoding)}
        if validation is None:
            text = self._text["train"]
            cut = int(len(text) * (1 - validation_fraction))
            cut = text.rfind("\n", 0, cut) + 1 or cut  # at a line break when there is one
            self._text = {"train": text[:cut], "validation": text[cut:]}
        self.vocab = CharVocab.from_json(Path(vocab).read_text()) if vocab else CharVocab.build(self._text["train"])
        self._chunks: dict[str, torch.Tensor] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab.chars)

    def _split(self, split: str) -> torch.Tensor:
        if split not in self._chunks:
            hp = self.hparams
            if split not in self._text:
                self._text[split] = read_text(getattr(hp, split), hp.format, hp.token_column, hp.encoding)
            self._chunks[split] = chunk(self.vocab.encode(self._text[split]), hp.seq_len)
        return self._chunks[split]

    def setup(self, stage: str) -> None:
        splits = {"fit": ["train", "validation"], "validate": ["validation"], "test": ["test"]}.get(stage, [])
        for split in splits:
            if split == "test" and self.hparams.test is None:
                raise SeqtagInputError("data.test is required for `seqtag lm test`")
            self._split(split)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._chunks["train"], batch_size=self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._chunks["validation"], batch_size=self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._chunks["test"], batch_size=self.hparams.eval_batch_size)
