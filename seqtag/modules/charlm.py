"""Character-level LSTM language model: data, model, and the ``seqtag lm`` command.

A forward model predicts each character from the ones before it; a backward model (``direction: backward``) reads
the text from its end and predicts each character from the ones after it. The pair gives flair-style contextual
character states (Akbik et al. 2018, "Contextual String Embeddings for Sequence Labeling").

    seqtag lm fit --config configs/charlm.yaml
    seqtag lm fit --config configs/charlm.yaml --model.direction backward
    seqtag lm test --config configs/charlm.yaml --ckpt_path runs/charlm/<run>/checkpoints/best.ckpt
    seqtag lm generate --ckpt_path <best.ckpt> --prompt "The European " --length 200 --temperature 0.8

Text is cut into chunks of ``seq_len + 1`` characters that overlap by one (the last character of a chunk is the
first input of the next); chunks are shuffled in training and no hidden state crosses chunk boundaries. Reported:
``{stage}/bpc``, bits per character = mean negative log-likelihood per predicted character / ln 2.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, OptimizerCallable
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from seqtag.atomic import atomic_write_text
from seqtag.data.readers import read_conll
from seqtag.errors import SeqtagInputError
from seqtag.modules.dropout import Dropout

VOCAB_KEY = "seqtag_char_vocab"
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


class CharLanguageModel(L.LightningModule):
    """Embedding → multi-layer LSTM → linear over characters.

    Args:
        vocab_size: V, characters including UNK (linked from the data).
        direction: ``forward`` (predict the next character) or ``backward`` (read the text from its end and
            predict the previous character). Default: ``forward``
        embedding_dim: character embedding size E. Default: 32
        hidden_size: LSTM hidden size H. Default: 256
        num_layers: stacked LSTM layers. Default: 1
        dropout: dropout on the embeddings, between layers and on the LSTM output. Default: 0.1
        implementation: ``torch`` (``nn.LSTM``) or ``reference`` (:class:`seqtag.modules.lstm.ReferenceLSTM`, the
            same parameters and results, slower). Default: ``torch``
        optimizer: the optimizer. Default: Adam (lr 0.001)

    Shape:
        forward: ids (B, T) long → logits (B, T, V)

    Example:
        >>> lm = CharLanguageModel(vocab_size=10, hidden_size=8)
        >>> lm(torch.randint(10, (2, 5))).shape
        torch.Size([2, 5, 10])
    """

    monitor = "val/bpc"  # the checkpoint and early-stopping metric; lower is better
    monitor_mode = "min"

    def __init__(
        self,
        vocab_size: int = 2,
        direction: Literal["forward", "backward"] = "forward",
        embedding_dim: int = 32,
        hidden_size: int = 256,
        num_layers: int = 1,
        dropout: float = 0.1,
        implementation: Literal["torch", "reference"] = "torch",
        optimizer: OptimizerCallable = torch.optim.Adam,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer"])
        if direction not in ("forward", "backward"):
            raise SeqtagInputError(f"direction should be one of 'forward', 'backward', got {direction!r}")
        if implementation not in ("torch", "reference"):
            raise SeqtagInputError(f"implementation should be one of 'torch', 'reference', got {implementation!r}")
        if not 0.0 <= dropout < 1.0:
            raise SeqtagInputError(f"dropout should be in [0, 1), got {dropout}")
        self.optimizer_factory = optimizer
        self.vocab: CharVocab | None = None  # from the data in training, from the checkpoint when loaded
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        kwargs = dict(batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        if implementation == "reference":
            from seqtag.modules.lstm import ReferenceLSTM

            self.lstm = ReferenceLSTM(embedding_dim, hidden_size, num_layers, **kwargs)
        else:
            self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers, **kwargs)
        self.dropout = Dropout(dropout)
        self.projection = nn.Linear(hidden_size, vocab_size)
        self.metrics = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})

    def hidden_states(
        self, ids: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Top-layer LSTM states after each character, in the order the ids are given, and the final state.

        Shape:
            ids: (B, T) long;  returns: (B, T, H), ((L, B, H), (L, B, H))
        """
        embedded = self.dropout(self.embedding(ids))  # (B, T, E)
        return self.lstm(embedded, state)  # (B, T, H)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        output, _ = self.hidden_states(ids)  # (B, T, H)
        return self.projection(self.dropout(output))  # (B, T, V)

    def _common_step(self, batch: torch.Tensor, stage: str) -> torch.Tensor:
        chunks = batch.flip(1) if self.hparams.direction == "backward" else batch  # (B, T+1) in reading order
        logits = self(chunks[:, :-1])  # (B, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1), chunks[:, 1:].flatten(), reduction="none")  # (B*T,)
        loss = nll.mean()
        self.log(f"{stage}/loss", loss, prog_bar=stage == "train", batch_size=nll.numel())
        if stage == "train":
            self.log("train/bpc", loss / math.log(2), batch_size=nll.numel())
        else:
            self.metrics[stage].update(nll)  # averaged over characters, not batches
        return loss

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._common_step(batch, "val")

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._common_step(batch, "test")

    def _log_bpc(self, stage: str) -> float:
        bpc = float(self.metrics[stage].compute()) / math.log(2)
        self.metrics[stage].reset()
        self.log(f"{stage}/bpc", bpc, prog_bar=True)
        return bpc

    def on_validation_epoch_end(self) -> None:
        self._log_bpc("val")

    def on_test_epoch_end(self) -> None:
        self.test_results = {"bpc": self._log_bpc("test")}

    def configure_optimizers(self) -> Any:
        return self.optimizer_factory(self.parameters())

    # ---------------------------------------------------------------------------------- data and checkpoints
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            self.vocab = datamodule.vocab

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.vocab is not None:
            checkpoint[VOCAB_KEY] = self.vocab.to_json()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if VOCAB_KEY not in checkpoint:
            return
        saved = CharVocab.from_json(checkpoint[VOCAB_KEY])
        if self.vocab is not None and self.vocab.chars != saved.chars:
            raise SeqtagInputError(
                f"the checkpoint's character vocabulary ({len(saved.chars)} characters) differs from the data's "
                f"({len(self.vocab.chars)}); pass --data.vocab <checkpoint folder>/vocab.json"
            )
        self.vocab = saved

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> CharLanguageModel:
        """A trained model from a checkpoint, read with ``torch.load(weights_only=True)``."""
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        known = inspect.signature(cls.__init__).parameters
        model = cls(**{k: v for k, v in checkpoint["hyper_parameters"].items() if k in known})
        model.load_state_dict(checkpoint["state_dict"])
        model.vocab = CharVocab.from_json(checkpoint[VOCAB_KEY])
        return model.eval()

    @torch.no_grad()
    def generate(self, prompt: str, length: int, temperature: float = 1.0, seed: int | None = None) -> str:
        """``length`` characters that follow ``prompt`` (forward) or precede it (backward), in reading order.
        ``temperature`` 0 picks the most likely character at each step."""
        if length < 0 or temperature < 0:
            raise SeqtagInputError(f"length and temperature should be >= 0, got {length} and {temperature}")
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        backward = self.hparams.direction == "backward"
        context = (prompt[::-1] if backward else prompt) or "\n"
        ids = self.vocab.encode(context).to(self.device)[None]  # (1, P)
        output, state = self.hidden_states(ids)
        produced = []
        for _ in range(length):
            logits = self.projection(output[:, -1]).squeeze(0).cpu()  # (V,)
            logits[0] = -math.inf  # never produce UNK
            if temperature == 0:
                next_id = int(logits.argmax())
            else:
                next_id = int(torch.multinomial(F.softmax(logits / temperature, dim=-1), 1, generator=generator))
            produced.append(next_id)
            output, state = self.hidden_states(torch.tensor([[next_id]], device=self.device), state)
        text = self.vocab.decode(produced)
        return text[::-1] if backward else text


# ---------------------------------------------------------------------------------------------------- command
def lm_trainer_defaults() -> dict:
    from jsonargparse import lazy_instance

    from seqtag.loggers import WandbLogger

    return {
        "max_epochs": 20,
        "gradient_clip_val": 1.0,
        "default_root_dir": "runs",
        "logger": lazy_instance(WandbLogger, project="seqtag-lm", save_dir="runs"),
    }


def _lm_cli_class() -> type:
    from seqtag.callbacks import AutoEarlyStopping, BestCheckpoint
    from seqtag.cli import SeqtagCLI

    class LMCLI(SeqtagCLI):
        """The ``seqtag lm`` LightningCLI: the data's vocabulary size is linked into the model; checkpoints and early
        stopping watch ``val/bpc`` (lower is better)."""

        def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
            parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
            parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
            parser.add_lightning_class_args(AutoEarlyStopping, "early_stopping")
            parser.set_defaults(
                {
                    "checkpoint.monitor": CharLanguageModel.monitor,
                    "checkpoint.mode": CharLanguageModel.monitor_mode,
                    "early_stopping.monitor": CharLanguageModel.monitor,
                    "early_stopping.mode": CharLanguageModel.monitor_mode,
                    "early_stopping.patience": 3,
                }
            )

        def after_instantiate_classes(self) -> None:
            pass

        def after_test(self) -> None:
            results = getattr(self.model, "test_results", None)
            if results is not None and self.trainer.is_global_zero:
                print(f"test bits per character: {results['bpc']:.4f}")

    return LMCLI


def lm_cli_main(args: ArgsType = None, run: bool = True):
    """Builds and runs the ``seqtag lm`` LightningCLI; ``args`` is a list of arguments (tests) or None."""
    from seqtag.callbacks import run_conventions

    return _lm_cli_class()(
        CharLanguageModel,
        CharLMDataModule,
        trainer_defaults=lm_trainer_defaults(),
        args=args,
        run=run,
        **run_conventions(),
    )


def generate_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="seqtag lm generate", description="Sample text from a character LM.")
    parser.add_argument("--ckpt_path", required=True, help="a checkpoint written by `seqtag lm fit`")
    parser.add_argument("--prompt", default="", help="text to continue (or, for a backward model, to precede)")
    parser.add_argument("--length", type=int, default=200, help="characters to generate")
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = always the most likely character")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    if not Path(args.ckpt_path).is_file():
        raise SeqtagInputError(f"{args.ckpt_path}: no such checkpoint")
    model = CharLanguageModel.load(args.ckpt_path)
    text = model.generate(args.prompt, args.length, args.temperature, args.seed)
    print(text + args.prompt if model.hparams.direction == "backward" else args.prompt + text)
    return 0


def lm_main(argv: list[str]) -> int:
    """``seqtag lm fit|validate|test ...`` (LightningCLI) and ``seqtag lm generate ...``."""
    argv = [a for a in argv if a != "--debug"]
    if argv[:1] == ["generate"]:
        return generate_main(argv[1:])
    if sys.argv[1:2] == ["lm"] and [a for a in sys.argv[2:] if a != "--debug"] == argv:
        # Run from the console: LightningCLI reads sys.argv itself (and does not warn about a second argument list).
        sys.argv = [f"{sys.argv[0]} lm", *argv]
        lm_cli_main(None)
    else:
        lm_cli_main(argv)
    return 0


if __name__ == "__main__":
    sys.exit(lm_main(sys.argv[1:]))
