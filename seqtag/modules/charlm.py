"""Character-level LSTM language model (Akbik et al. 2018, "Contextual String Embeddings for Sequence Labeling").

A forward model predicts each character from the ones before it; a backward model (``direction: backward``) reads
the text from its end and predicts each character from the ones after it. The pair gives flair-style contextual
character states to the tagger (:mod:`seqtag.modules.contextual`). Its data is :mod:`seqtag.data.charlm`, its
command ``seqtag lm`` (:mod:`seqtag.commands.lm`). Reported: ``{stage}/bpc``, bits per character = mean negative
log-likelihood per predicted character / ln 2.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import nn
from torchmetrics import MeanMetric

from seqtag.data.charlm import CharVocab
from seqtag.errors import SeqtagInputError
from seqtag.modules.dropout import Dropout

VOCAB_KEY = "seqtag_char_vocab"  # the character vocabulary (JSON) inside an LM checkpoint


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
