"""TaggerNetwork: the network of a tagger, without Lightning. Token embeddings → BiLSTM → linear → softmax or CRF.

:class:`~seqtag.tagger.Tagger` (the LightningModule: training steps, metrics, optimizers, the tagging API) is this
network plus Lightning's hooks, with the same parameters and state dict. The network alone is what tagging needs:
``seqtag predict`` builds it from a checkpoint without importing Lightning (:mod:`seqtag.commands.predict`), which
saves the 4-5 s Lightning and torchmetrics take to import.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from seqtag.data import schemes
from seqtag.data.vocab import CHECKPOINT_KEY as VOCAB_KEY
from seqtag.data.vocab import PRETRAINED_KEY, Vocab
from seqtag.errors import SeqtagInputError
from seqtag.modules.crf import ConditionalRandomField
from seqtag.modules.dropout import Dropout, LockedDropout
from seqtag.modules.embeddings import TokenEmbedder
from seqtag.modules.encoder import LAYOUT_KEYS, DocumentEncoder, RNNEncoder
from seqtag.modules.memory import DocumentMemory
from seqtag.modules.neighbour_lm import NeighbourWordLM

# Where a checkpoint keeps the character LMs' and the transformer's specs (seqtag.modules.contextual.SPECS_KEY,
# seqtag.modules.transformer.SPEC_KEY; repeated here so that reading a checkpoint imports neither module).
CHAR_LM_KEY = "seqtag_char_lm"
TRANSFORMER_KEY = "seqtag_transformer"
# Constructor arguments that are not the network's (the LightningModule's optimization).
TRAINING_ONLY = ("optimizer", "lr_scheduler", "_instantiator", "_class_path")
# Weights used in training only (the language-modelling loss's heads): a model loaded for tagging is built without them.
TRAINING_ONLY_WEIGHTS = ("neighbour_lm.",)


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths → (B, T) bool mask, True for real tokens."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]  # (B, T)


def documents_turned_off(documents_available: bool, document_memory: bool, document_context: bool) -> str | None:
    """The warning when the document options were asked for but the training data marks no documents, else None."""
    if documents_available or not (document_memory or document_context):
        return None
    asked = {"document_memory": document_memory, "document_context": document_context}
    options = " and ".join(f"model.{name}" for name, on in asked.items() if on)
    return (
        f"{options} turned off: the training data marks no documents (no -DOCSTART- lines, '# newdoc' comments or "
        f"document field), so each sentence would be a document of its own or the whole file one, its unrelated "
        f"texts read as one text; the model reads each sentence alone"
    )


class TaggerNetwork(nn.Module):
    """A BiLSTM(-CRF) sequence tagger's network. The arguments are :class:`~seqtag.tagger.Tagger`'s (documented
    there, where the command line reads them), less the optimizer and the learning-rate scheduler.

    Attributes:
        vocab: the vocabulary, set from the data in training and from the checkpoint when loaded.
    """

    def __init__(
        self,
        labels: list[str],
        scheme: str | None = None,
        vocab_size: int = 2,
        num_chars: int = 2,
        word_dim: int = 100,
        char_encoder: str = "cnn",
        char_dim: int = 30,
        char_hidden: int = 50,
        casing_dim: int = 0,
        freeze_words: bool = False,
        word_dropout: float = 0.0,
        singleton_dropout: float = 0.0,
        feature_sizes: list[int] | None = None,
        feature_dim: int = 20,
        char_lm_forward: str | dict[str, Any] | None = None,
        char_lm_backward: str | dict[str, Any] | None = None,
        char_lm_finetune: bool = False,
        transformer: str | dict[str, Any] | None = None,
        transformer_pooling: str = "mean",
        transformer_layers: str | int = "all",
        transformer_finetune: bool = False,
        transformer_lr: float = 3e-5,
        transformer_cache_mb: int = 4096,
        cell: str = "lstm",
        implementation: str = "torch",
        hidden_size: int = 200,
        num_layers: int = 1,
        dropout: float = 0.5,
        variational_dropout: bool = False,
        document_memory: bool = False,
        document_context: bool = False,
        documents_available: bool = True,
        head: str = "crf",
        label_smoothing: float = 0.0,
        confidence_temperature: float = 1.0,
        char_dropout: float = 0.0,
        loss_reduction: str = "mean",
        lm_weight: float = 0.0,
        lm_words: int = 7500,
    ) -> None:
        super().__init__()
        if not labels:
            raise SeqtagInputError("labels should be a non-empty list, got []")
        if head not in ("crf", "softmax"):
            raise SeqtagInputError(f"head should be one of 'crf', 'softmax', got {head!r}")
        if not 0.0 <= dropout < 1.0:
            raise SeqtagInputError(f"dropout should be in [0, 1), got {dropout}")
        if not 0.0 <= label_smoothing < 1.0:
            raise SeqtagInputError(f"label_smoothing should be in [0, 1), got {label_smoothing}")
        if not confidence_temperature > 0:
            raise SeqtagInputError(f"confidence_temperature should be > 0, got {confidence_temperature}")
        if not 0.0 <= char_dropout < 1.0:
            raise SeqtagInputError(f"char_dropout should be in [0, 1), got {char_dropout}")
        if loss_reduction not in ("mean", "sum"):
            raise SeqtagInputError(f"loss_reduction should be 'mean' or 'sum', got {loss_reduction!r}")
        if lm_weight < 0 or lm_words < 2:
            raise SeqtagInputError(f"lm_weight should be >= 0 and lm_words >= 2, got {lm_weight} and {lm_words}")
        if label_smoothing and head != "softmax":
            raise SeqtagInputError(f"label_smoothing applies to the softmax head, not to head={head!r}")
        if documents_turned_off(documents_available, document_memory, document_context):
            document_memory = document_context = False
        self.labels = list(labels)
        self.scheme = schemes.normalize_scheme(scheme) if scheme else None
        self.label_smoothing = label_smoothing
        self.confidence_temperature = confidence_temperature
        self.loss_reduction = loss_reduction
        self.vocab: Vocab | None = None

        self.embedder = TokenEmbedder(
            vocab_size,
            num_chars,
            word_dim,
            char_encoder,
            char_dim,
            char_hidden,
            casing_dim,
            freeze_words,
            word_dropout,
            feature_sizes or (),
            feature_dim,
            singleton_dropout,
            char_dropout,
        )
        self.char_lm = None
        if char_lm_forward is not None or char_lm_backward is not None:
            from seqtag.modules.contextual import CharLMEmbedder  # imports Lightning: the LMs are LightningModules

            self.char_lm = CharLMEmbedder(char_lm_forward, char_lm_backward, num_chars, char_lm_finetune)
        token_size = self.embedder.output_size + (self.char_lm.output_size if self.char_lm is not None else 0)
        self.transformer = None
        if transformer is not None:
            from seqtag.modules.transformer import TransformerEmbedder

            if not transformer_lr > 0:
                raise SeqtagInputError(f"transformer_lr should be > 0, got {transformer_lr}")
            self.transformer = TransformerEmbedder(
                transformer,
                transformer_pooling,
                transformer_layers,
                transformer_finetune,
                cache_mb=transformer_cache_mb,
            )
            token_size += self.transformer.output_size
        if word_dim < 0 or token_size == 0:
            raise SeqtagInputError(
                f"the token representation is empty or word_dim negative (word_dim={word_dim}, char_encoder="
                f"{char_encoder!r}, casing_dim={casing_dim}, no transformer): give the words some representation"
            )
        if document_context:
            if implementation != "torch":
                raise SeqtagInputError("model.document_context runs the torch cells: use implementation='torch'")
            self.encoder = DocumentEncoder(token_size, hidden_size, num_layers, cell, dropout)
        else:
            self.encoder = RNNEncoder(token_size, hidden_size, num_layers, cell, True, dropout, implementation)
        self.dropout = LockedDropout(dropout) if variational_dropout else Dropout(dropout)
        self.memory = DocumentMemory(vocab_size) if document_memory else None
        features = self.encoder.output_size
        if self.memory is not None:
            features += self.encoder.output_size + self.memory.extra_size
        self.projection = nn.Linear(features, len(labels))
        self.lm_weight = lm_weight
        self.neighbour_lm = None
        if lm_weight > 0:
            self.neighbour_lm = NeighbourWordLM(self.encoder.output_size // 2, min(lm_words, vocab_size))
        self.crf = None
        if head == "crf":
            constraints = schemes.allowed_transitions(self.labels, self.scheme) if self.scheme else None
            self.crf = ConditionalRandomField(len(labels), constraints)

    @property
    def reads_documents(self) -> bool:
        """Whether the model looks across the sentences of a document, so batches must hold whole documents."""
        return self.memory is not None or isinstance(self.encoder, DocumentEncoder)

    @property
    def joins_documents(self) -> bool:
        """Whether the encoder reads each document's sentences as one sequence (``document_context``): its batches
        then carry :func:`~seqtag.modules.encoder.document_layout`."""
        return isinstance(self.encoder, DocumentEncoder)

    @property
    def reads_token_text(self) -> bool:
        """Whether batches must carry the tokens' text (``token_codes``, see :mod:`seqtag.data.token_text`): a
        transformer splits the words into its own subwords."""
        return self.transformer is not None

    @property
    def document_option(self) -> str:
        """The option that makes the model read documents, for messages."""
        return "document_context" if isinstance(self.encoder, DocumentEncoder) else "document_memory"

    @property
    def tokenize_mode(self) -> str:
        """``chars`` for a model trained on one-character tokens (text written without spaces), else ``words``:
        how raw text is split for it."""
        return self.vocab.tokenize_mode if self.vocab is not None else "words"

    # ------------------------------------------------------------------------------------------------ model
    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Emission scores.

        Shape:
            batch: ``word_ids``, ``casing_ids`` (B, T); ``char_ids`` (B, T, C); ``lengths`` (B,);
                ``feature_ids`` (B, T, F) for a model with feature columns; ``document`` (B,) and ``index`` (B,)
                for a model with ``document_memory`` or ``document_context``
            returns: (B, T, K)
        """
        return self.emit(batch, *self.encode(batch))

    def encode(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The BiLSTM states of a batch (see :meth:`forward`), with the batch's mask and whether it is padded.

        Shape:
            returns: states (B, T, 2H), zeros at padded positions; mask (B, T); padded
        """
        lengths = batch["lengths"]
        mask = length_mask(lengths, batch["word_ids"].shape[1])  # (B, T)
        layout = {key: batch[key] for key in LAYOUT_KEYS} if LAYOUT_KEYS[0] in batch else None
        # One host check per batch; exact-length batches (the default bucketing) then skip every masking step. A
        # batch that brings its document layout (the data module adds it for document_context) is read as padded
        # without a look: its forward pass then reads nothing on the host.
        padded = layout is not None or not bool(mask.all())
        tokens = self.embedder(
            batch["word_ids"],
            batch["char_ids"],
            batch["casing_ids"],
            mask if padded else None,
            batch.get("feature_ids"),
        )  # (B, T, E)
        if self.char_lm is not None:
            tokens = torch.cat([tokens, self.char_lm(batch["char_ids"], mask)], dim=-1)  # (B, T, E + H_fw + H_bw)
        if self.transformer is not None:
            if "token_codes" not in batch:
                raise SeqtagInputError(
                    "model.transformer reads the tokens' text, but the batch has no token_codes (batches built "
                    "for this model carry them: iter_batches(..., with_text=True))"
                )
            tokens = torch.cat([tokens, self.transformer(batch["token_codes"], lengths)], dim=-1)  # (B, T, E + H_tr)
        if isinstance(self.encoder, DocumentEncoder):
            encoded = self.encoder(self.dropout(tokens), lengths, batch["document"], batch["index"], layout)
        else:
            encoded = self.encoder(self.dropout(tokens), lengths if padded else None)  # (B, T, 2H)
        return encoded, mask, padded

    def emit(
        self, batch: dict[str, torch.Tensor], encoded: torch.Tensor, mask: torch.Tensor, padded: bool
    ) -> torch.Tensor:
        """Emission scores from :meth:`encode`'s results: (B, T, 2H) → (B, T, K)."""
        if self.memory is not None:
            memory = self.memory(encoded, batch["word_ids"], batch["document"], mask if padded else None)
            encoded = torch.cat([encoded, memory], dim=-1)  # (B, T, 4H + 1)
        return self.projection(self.dropout(encoded))  # (B, T, K)

    def loss(self, emissions: torch.Tensor, tag_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood per sentence (CRF) or cross-entropy per token (softmax), averaged over the
        batch or, with ``loss_reduction: sum``, summed over it (as NCRF++ and flair do: steps grow with the batch)."""
        if self.crf is not None:
            nll = -self.crf(emissions, tag_ids, mask)  # (B,)
            return nll.sum() if self.loss_reduction == "sum" else nll.mean()
        return F.cross_entropy(
            emissions[mask], tag_ids[mask], label_smoothing=self.label_smoothing, reduction=self.loss_reduction
        )

    def neighbour_loss(self, states: torch.Tensor, word_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The language-modelling loss (``lm_weight`` > 0): the negative log-likelihood of each word's neighbours
        given the BiLSTM states (:class:`~seqtag.modules.neighbour_lm.NeighbourWordLM`), reduced over the batch as
        :meth:`loss` is (the mean per sentence for the CRF, per token for softmax, or the sum), times ``lm_weight``.
        (B, T, 2H) states → a scalar."""
        nll = self.neighbour_lm(self.dropout(states), word_ids, mask)  # (B,)
        if self.loss_reduction == "sum":
            return self.lm_weight * nll.sum()
        # The mean over what the tagging loss averages over: sentences (CRF) or tokens (softmax).
        return self.lm_weight * (nll.mean() if self.crf is not None else nll.sum() / mask.sum())

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, K) emissions → (B, T) best tag ids (Viterbi for the CRF, argmax otherwise)."""
        if self.crf is not None:
            return self.crf.decode(emissions, mask)
        return emissions.argmax(dim=-1).masked_fill(~mask, 0)

    # ------------------------------------------------------------------------------------------- checkpoints
    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], map_location: str | torch.device = "cpu") -> TaggerNetwork:
        """A trained tagger from a checkpoint's contents (the dict ``torch.load`` gives for a ``best.ckpt``, or
        :func:`seqtag.hub.checkpoint_from_folder` for a model folder), in eval mode, with its vocabulary and
        pretrained table, for tagging: without the language-modelling heads of ``lm_weight`` (resume training with
        ``seqtag fit --ckpt_path`` instead)."""
        hparams = dict(checkpoint["hyper_parameters"])
        for key in TRAINING_ONLY:
            hparams.pop(key, None)
        # The character LMs' weights are in the state_dict: their hyperparameters stand in for the LM files.
        for direction, spec in checkpoint.get(CHAR_LM_KEY, {}).items():
            hparams[f"char_lm_{direction}"] = spec
        # So does the transformer's config and tokenizer for its folder or Hub name.
        if TRANSFORMER_KEY in checkpoint:
            hparams["transformer"] = checkpoint[TRANSFORMER_KEY]
        if hparams.get("lm_weight"):
            hparams["lm_weight"] = 0.0  # tagging reads none of its heads (TRAINING_ONLY_WEIGHTS)
        model = cls(**hparams)
        state = checkpoint["state_dict"]
        model.load_state_dict({k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_WEIGHTS)})
        model.restore_vocabulary(checkpoint)
        model.to(map_location)
        return model.eval()

    def restore_vocabulary(self, checkpoint: dict[str, Any]) -> None:
        """Takes the vocabulary and the pretrained table of words outside it from a checkpoint, unless set."""
        if VOCAB_KEY in checkpoint and self.vocab is None:
            self.vocab = Vocab.from_checkpoint(checkpoint)
        table = checkpoint.get(PRETRAINED_KEY)
        if table and self.embedder.pretrained_table is None:
            self.embedder.set_pretrained_table(table["vectors"])
