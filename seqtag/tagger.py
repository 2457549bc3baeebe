"""Tagger: the LightningModule. Token embeddings → BiLSTM → linear → softmax or CRF.

The module holds the science (model, loss, metrics, decoding); devices, precision, DDP, clipping, checkpoints and
loggers belong to the Trainer. A trained tagger tags Python lists of tokens with :meth:`Tagger.tag`::

    tagger = Tagger.load("runs/.../checkpoints/best.ckpt")
    tagger.tag([["EU", "rejects", "German", "call"]])   # [['I-ORG', 'O', 'I-MISC', 'O']]
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn
from torchmetrics import MeanMetric

from seqtag.callbacks import validation_runs
from seqtag.data import schemes
from seqtag.data.vocab import CHECKPOINT_KEY as VOCAB_KEY
from seqtag.data.vocab import PRETRAINED_KEY, Vocab, load_checkpoint
from seqtag.errors import NonFiniteLossError, SeqtagInputError
from seqtag.metrics import SpanF1, TagConfusion, TokenAccuracy
from seqtag.network import CHAR_LM_KEY, TRANSFORMER_KEY, TaggerNetwork, documents_turned_off, length_mask
from seqtag.optim import fused_when_identical

__all__ = ["Tagger", "length_mask"]


class Tagger(TaggerNetwork, L.LightningModule):
    """A BiLSTM(-CRF) sequence tagger: :class:`~seqtag.network.TaggerNetwork` with Lightning's training, evaluation
    and prediction steps, and the tagging API.

    Args:
        labels: the tags the model predicts, in the training scheme (linked from the data).
        scheme: the training scheme of ``labels`` (``IOB1``, ``IOB2``, ``BIOES``, ``BMES``), or None for plain
            classes such as POS tags (linked from the data).
        vocab_size: word vocabulary size (linked from the data).
        num_chars: character vocabulary size (linked from the data).
        word_dim: word embedding size; must equal the pretrained vectors' size when the data gives some.
            Default: 100
        char_encoder: ``cnn``, ``lstm`` or ``none``. Default: ``cnn``
        char_dim: character embedding size. Default: 30
        char_hidden: CNN filters or char-LSTM hidden size per direction. Default: 50
        casing_dim: casing feature size (0 = off). Default: 0
        freeze_words: keep the word vectors fixed. Default: False
        word_dropout: probability of replacing a training word by UNK. Default: 0.0
        singleton_dropout: probability of replacing a word seen once in the training data by UNK, on top of
            ``word_dropout`` (Lample et al. 2016), so that UNK learns from rare words, as the unknown words of new
            text are. Default: 0.0
        feature_sizes: the number of values of each input feature column (linked from the data's
            ``feature_columns``). Default: none
        feature_dim: embedding size of each feature column. Default: 20
        char_lm_forward: a forward character LM checkpoint (``seqtag lm fit``) whose state after each word's last
            character is added to the token representation (Akbik et al. 2018). Default: None
        char_lm_backward: a backward character LM checkpoint; its state at each word's first character is added.
            Default: None. (Either may also be the LM spec a tagger checkpoint stores: evaluation and tagging with
            a checkpoint take the LMs from it, so the LM files need not exist then.)
        char_lm_finetune: train the character LMs with the tagger instead of keeping them frozen. Default: False
        transformer: a Hugging Face encoder (model folder or Hub name, AutoModel with a fast AutoTokenizer) whose
            contextual vector of each word is added to the token representation
            (:class:`~seqtag.modules.transformer.TransformerEmbedder`; with ``word_dim: 0`` it replaces the word
            vectors). A checkpoint keeps its config, tokenizer and weights: evaluation and tagging need neither the
            folder nor the Hub. Default: None
        transformer_pooling: a word's vector from its subwords': ``mean`` or ``first`` (see docs/transformer.md for
            why ``mean``). Default: ``mean``
        transformer_layers: ``all`` (a learned scalar mix of every hidden state), ``last`` (the encoder's output),
            or layer numbers such as ``-1,-2,-3,-4`` (several are mixed). Default: ``all``
        transformer_finetune: train the encoder with the tagger (at ``transformer_lr``) instead of keeping it
            frozen. Default: False
        transformer_lr: the encoder's learning rate when fine-tuned (its own optimizer parameter group; the rest
            of the model keeps the optimizer's). Default: 3e-5
        transformer_cache_mb: during a fit, a frozen encoder's vectors of each sentence (every selected layer, before
            the mix) are kept in memory up to this many megabytes, so later epochs, validation and the calibration
            after the fit do not run the encoder again for them; 0 keeps none. Fine-tuning keeps none. Default: 4096
        cell: ``lstm``, ``gru`` or ``rnn``. Default: ``lstm``
        implementation: ``torch`` or ``reference`` (LSTM from its equations). Default: ``torch``
        hidden_size: encoder hidden size per direction. Default: 200
        num_layers: encoder layers. Default: 1
        dropout: dropout on the token representations and on the encoder output (and between layers).
            Default: 0.5
        variational_dropout: ``dropout`` on the token representations and the encoder output draws one mask per
            sentence, shared by its time steps (:class:`~seqtag.modules.dropout.LockedDropout`), instead of one
            per element. Default: False
        document_memory: give each token the mean BiLSTM state of the other occurrences of its word in the same
            document (:class:`~seqtag.modules.memory.DocumentMemory`); batches then hold whole documents. Default:
            False
        document_context: the BiLSTM reads each document's sentences as one sequence
            (:class:`~seqtag.modules.encoder.DocumentEncoder`), so a sentence is encoded in the context of its
            neighbours; batches then hold whole documents. ``cell`` LSTM, GRU or RNN; ``implementation`` torch.
            Default: False
        documents_available: whether the training data marks documents (linked from the data's
            ``has_documents``). When it does not, ``document_memory`` and ``document_context`` are turned off with
            a warning, and the hyperparameters record them off, so a checkpoint reloads to the model as built.
            Default: True
        head: ``crf`` (transitions constrained by the scheme) or ``softmax``. Default: ``crf``
        label_smoothing: softmax head only: the cross-entropy's target puts this much probability mass evenly on all
            tags (Szegedy et al. 2016), which keeps the model from growing over-confident. Default: 0.0
        confidence_temperature: the temperature of span confidences, n-best probabilities and marginals (not of the
            tags): scores are divided by it. ``seqtag fit`` sets it in the best checkpoint by temperature scaling on
            the validation data (see :mod:`seqtag.calibration`). Default: 1.0
        char_dropout: dropout on the character embeddings, in training (NCRF++ applies ``dropout`` there). Default: 0.0
        loss_reduction: ``mean`` (the batch's mean loss per sentence, or per token for softmax: the step size does not
            depend on the batch size) or ``sum`` (as NCRF++ and flair: at the same learning rate, steps ``batch_size``
            times larger). Default: ``mean``
        lm_weight: in training, add this weight times a language-modelling loss (Rei 2017): the BiLSTM's forward
            state at each word predicts the next word and its backward state the previous word, from the training
            sentences themselves (:class:`~seqtag.modules.neighbour_lm.NeighbourWordLM`); 0 turns it off. The
            weighted term is logged as ``train/lm_loss``; ``train/loss`` and the evaluation losses stay the tagging
            loss. Default: 0.0
        lm_words: the language-modelling loss predicts the ``lm_words`` most frequent training words, and the rest
            as one class (UNK). Default: 7500 (Rei 2017)
        optimizer: the optimizer, e.g. ``torch.optim.SGD`` with its arguments. Default: Adam (lr 0.001)
        lr_scheduler: an optional scheduler; ``ReduceLROnPlateau`` watches the validation metric. Default: None
    """

    def __init__(
        self,
        labels: list[str],
        scheme: str | None = None,
        vocab_size: int = 2,
        num_chars: int = 2,
        word_dim: int = 100,
        char_encoder: Literal["cnn", "lstm", "none"] = "cnn",
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
        transformer_pooling: Literal["first", "mean"] = "mean",
        transformer_layers: str | int = "all",
        transformer_finetune: bool = False,
        transformer_lr: float = 3e-5,
        transformer_cache_mb: int = 4096,
        cell: Literal["lstm", "gru", "rnn"] = "lstm",
        implementation: Literal["torch", "reference"] = "torch",
        hidden_size: int = 200,
        num_layers: int = 1,
        dropout: float = 0.5,
        variational_dropout: bool = False,
        document_memory: bool = False,
        document_context: bool = False,
        documents_available: bool = True,
        head: Literal["crf", "softmax"] = "crf",
        label_smoothing: float = 0.0,
        confidence_temperature: float = 1.0,
        char_dropout: float = 0.0,
        loss_reduction: Literal["mean", "sum"] = "mean",
        lm_weight: float = 0.0,
        lm_words: int = 7500,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        turned_off = documents_turned_off(documents_available, document_memory, document_context)
        if turned_off:
            rank_zero_warn(turned_off)
        super().__init__(
            labels,
            scheme,
            vocab_size,
            num_chars,
            word_dim,
            char_encoder,
            char_dim,
            char_hidden,
            casing_dim,
            freeze_words,
            word_dropout,
            singleton_dropout,
            feature_sizes,
            feature_dim,
            char_lm_forward,
            char_lm_backward,
            char_lm_finetune,
            transformer,
            transformer_pooling,
            transformer_layers,
            transformer_finetune,
            transformer_lr,
            transformer_cache_mb,
            cell,
            implementation,
            hidden_size,
            num_layers,
            dropout,
            variational_dropout,
            document_memory,
            document_context,
            documents_available,
            head,
            label_smoothing,
            confidence_temperature,
            char_dropout,
            loss_reduction,
            lm_weight,
            lm_words,
        )
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if turned_off:  # the checkpoint's hyperparameters then describe the model as built
            self.hparams.update(document_memory=False, document_context=False)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self._train_losses: list[torch.Tensor] = []  # since train/loss was last logged
        self._tagging_loss: torch.Tensor | None = None  # of the last training step (without lm_weight's term)
        self.metrics = nn.ModuleDict({stage: self._make_metric() for stage in ("val", "test")})
        # Evaluation loss per sentence (CRF) or token (softmax), weighted by batch: a metric, so that under DDP the
        # processes' sums are added (ranks with fewer sentences would otherwise weigh as much as the others).
        self.eval_losses = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        # Plain classes (no span scheme): the test's confusion counts, built in setup("test"). The span metric
        # counts its own (SpanF1's confusion), once the data's scheme is known.
        self.test_confusion: TagConfusion | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> Tagger:
        """A copy (such as the weight average of ``ExponentialMovingAverage``) shares the optimizer and scheduler
        factories and has no trainer: a copy trains nothing, and under DDP both hold locks that cannot be copied."""
        for shared in (self.optimizer_factory, self.lr_scheduler_factory):
            memo[id(shared)] = shared
        if self._trainer is not None:
            memo[id(self._trainer)] = None
        duplicate = self.__class__.__new__(self.__class__)
        memo[id(self)] = duplicate
        duplicate.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return duplicate

    def _make_metric(self) -> SpanF1 | TokenAccuracy:
        return SpanF1(self.labels, self.scheme) if self.scheme else TokenAccuracy()

    @property
    def monitor(self) -> str:
        """The validation metric that selects checkpoints and stops training early."""
        return "val/f1" if self.scheme else "val/acc"

    # ------------------------------------------------------------------------------------------------ steps
    def _common_step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        """The loss a step optimizes (``train``) or the tagging loss, with the metrics updated (``val``, ``test``)."""
        states, mask, padded = self.encode(batch)  # (B, T, 2H), (B, T)
        emissions = self.emit(batch, states, mask, padded)  # (B, T, K)
        loss = self.loss(emissions, batch["tag_ids"], mask)
        batch_size = batch["lengths"].shape[0]
        if stage == "train":
            lm_loss = None
            if self.neighbour_lm is not None:
                lm_loss = self.neighbour_loss(states, batch["word_ids"], mask)
            total = loss if lm_loss is None else loss + lm_loss
            if not torch.isfinite(total):
                # Raised before backward, so the weights (and every checkpoint written so far) stay finite.
                raise NonFiniteLossError(
                    f"train/loss is {total.item()} at epoch {self.current_epoch}, step {self.global_step}: training "
                    f"stopped, the checkpoints written so far are kept (lower the learning rate, or set "
                    f"trainer.gradient_clip_val)"
                )
            self._tagging_loss = loss.detach()
            self._log_train_loss(self._tagging_loss, batch_size, None if lm_loss is None else lm_loss.detach())
            return total
        weight = loss.new_tensor(batch_size) if self.crf is not None else mask.sum()
        mean = loss / weight if self.loss_reduction == "sum" else loss  # evaluation logs the mean either way
        self.eval_losses[stage].update(mean.detach(), weight)  # logged at the epoch's end (_log_metric)
        preds = self.decode(emissions, mask)  # (B, T)
        self.metrics[stage].update(preds, batch["tag_ids"], mask)
        if stage == "test" and self.test_confusion is not None:
            self.test_confusion.update(preds, batch["tag_ids"], mask)
        return loss

    def _log_train_loss(self, loss: torch.Tensor, batch_size: int, lm_loss: torch.Tensor | None = None) -> None:
        """Logs ``train/loss`` (the tagging loss, comparable with ``val/loss``) and, with ``lm_weight``,
        ``train/lm_loss`` (the weighted language-modelling term added to it for the gradient) on the steps the
        loggers write (every ``trainer.log_every_n_steps``, Lightning's rule for one optimizer) and on the epoch's
        last batch (early stopping without validation data watches it), as the mean over the steps since it was last
        logged. ``self.log`` on every step cost 0.8 ms a step, 10% of a CoNLL-2003 epoch at NCRF++ size (batches of
        10), for values no logger kept."""
        self._train_losses.append(loss if lm_loss is None else torch.stack([loss, lm_loss]))
        if self._trainer is None:
            due = True
        else:
            every = self.trainer.log_every_n_steps
            due = (every and (self.global_step + 1) % every == 0) or self.trainer.is_last_batch
        if due:
            means = torch.stack(self._train_losses).mean(0)  # () or (2,): tagging, language modelling
            self._train_losses.clear()
            self.log("train/loss", means if lm_loss is None else means[0], batch_size=batch_size, prog_bar=True)
            if lm_loss is not None:
                self.log("train/lm_loss", means[1], batch_size=batch_size)

    def on_train_epoch_start(self) -> None:
        self._train_losses = []

    def on_fit_start(self) -> None:
        if self.transformer is not None:
            # A fit reads the same training and validation sentences every epoch: a frozen encoder's vectors of
            # them are kept (transformer_cache_mb). Tagging and serving read new text, so they keep none.
            self.transformer.use_cache(True)

    def on_fit_end(self) -> None:
        if self.transformer is not None:
            self.transformer.use_cache(False)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor | dict[str, torch.Tensor]:
        loss = self._common_step(batch, "train")
        if self.neighbour_lm is None:
            return loss
        # The tagging loss beside the total the gradient comes from: what EpochSummary prints as train/loss.
        return {"loss": loss, "tagging_loss": self._tagging_loss}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._common_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._common_step(batch, "test")

    def _log_metric(self, stage: str) -> dict[str, Any]:
        losses = self.eval_losses[stage]
        if losses.update_called:
            # Once per epoch: logging the metric object at every step cost 0.9 ms a step, 10% of `seqtag test`.
            self.log(f"{stage}/loss", losses.compute())
            losses.reset()
        metric = self.metrics[stage]
        result = metric.compute()
        metric.reset()
        if isinstance(result, dict):
            for key in ("precision", "recall", "accuracy"):
                self.log(f"{stage}/{key}", result[key])
            self.log(f"{stage}/f1", result["f1"], prog_bar=True)
            for type_, scores in result["per_type"].items():
                self.log(f"{stage}/f1_{type_}", float(scores["f1"]))
            scores = {k: (v if k == "per_type" else float(v)) for k, v in result.items() if k != "confusion"}
            if "confusion" in result:  # (K_data, K_data), summed over processes
                scores["confusion"] = {"labels": metric.confusion_labels, "matrix": result["confusion"].tolist()}
            return scores
        self.log(f"{stage}/acc", result, prog_bar=True)
        return {"accuracy": float(result)}

    def on_validation_epoch_end(self) -> None:
        self._log_metric("val")

    def on_test_epoch_end(self) -> None:
        self.test_results = self._log_metric("test")
        if self.test_confusion is not None:
            matrix = self.test_confusion.compute()  # (K_data, K_data), summed over processes
            self.test_confusion.reset()
            self.test_results["confusion"] = {"labels": self.test_confusion.data_labels, "matrix": matrix.tolist()}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> list[tuple[int, dict[str, Any]]]:
        """Each sentence's index in its split and its outputs: ``tags`` in the data's scheme, and what
        ``self.decode_options`` asks for (spans with confidence, n-best, marginals; see :mod:`seqtag.tagging`)."""
        from seqtag.tagging import DecodeOptions, decode_outputs

        emissions = self(batch)
        mask = length_mask(batch["lengths"], emissions.shape[1])
        outputs = decode_outputs(self, emissions, mask, getattr(self, "decode_options", None) or DecodeOptions())
        return list(zip(batch["index"].tolist(), outputs))

    # ------------------------------------------------------------------------------------------- optimization
    def configure_optimizers(self) -> Any:
        params: Any = [p for p in self.parameters() if p.requires_grad]
        if self.transformer is not None and self.transformer.finetune:
            # The pretrained encoder learns at its own (smaller) rate: a parameter group of its own.
            encoder = {id(p) for p in self.transformer.encoder.parameters()}
            params = [
                {"params": [p for p in params if id(p) not in encoder]},
                {"params": [p for p in params if id(p) in encoder], "lr": self.hparams.transformer_lr},
            ]
        optimizer = fused_when_identical(self.optimizer_factory(params))
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and self._trainer is not None:
            if not validation_runs(self.trainer):
                raise SeqtagInputError(
                    f"lr_scheduler ReduceLROnPlateau steps on the validation metric {self.monitor}, but this fit does "
                    f"not validate (no validation data, or trainer.limit_val_batches=0): give validation data "
                    f"(data.validation or data.validation_from_train) or choose another lr_scheduler"
                )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": self.monitor}}

    # ---------------------------------------------------------------------------------- data and checkpoints
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            self.vocab = datamodule.vocab
            table = datamodule.pretrained_table()
            if table is not None:
                self.embedder.set_pretrained_table(table[1])
        data_scheme = self.vocab.data_scheme if self.vocab is not None else self.scheme
        for metric in self.metrics.values():
            if isinstance(metric, SpanF1) and data_scheme:
                metric.data_scheme = schemes.normalize_scheme(data_scheme)  # token accuracy as conlleval counts it
        if stage == "test" and self.scheme:
            # The span metric counts the confusion from the tags it already rewrote into the data's scheme.
            self.metrics["test"] = SpanF1(self.labels, self.scheme, data_scheme or self.scheme, confusion=True)
        elif stage == "test":
            self.test_confusion = TagConfusion(self.labels)
        if datamodule is None:
            return
        if datamodule.labels != self.labels:
            raise SeqtagInputError(f"the model's labels {self.labels} differ from the data's {datamodule.labels}")
        if self.reads_documents and not datamodule.batch_by_document():
            raise SeqtagInputError(
                f"model.{self.document_option} looks across the sentences of a document, but "
                "data.batch_by_document is false: leave it unset (or true)"
            )
        if stage == "fit":
            self.embedder.set_singletons(self.vocab.singleton_ids)
            if self.char_lm is not None:
                self.char_lm.set_chars(self.vocab.chars)  # a resumed checkpoint restores the same maps
            # Restoring a checkpoint (resume) happens after setup, so it overrides these rows.
            matrix = datamodule.pretrained_embeddings()
            if matrix is not None:
                try:
                    self.embedder.load_pretrained(matrix)
                except ValueError as err:
                    raise SeqtagInputError(str(err)) from None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.vocab is not None:
            checkpoint[VOCAB_KEY] = self.vocab.to_dict()
            table = self.embedder.pretrained_table
            if table is not None and self.vocab.pretrained_words:
                # One string, not a list: weights_only loading unpickles a list of 400,000 strings in 1.9 s, one
                # string in milliseconds.
                words = "\n".join(self.vocab.pretrained_words)
                checkpoint[PRETRAINED_KEY] = {"words": words, "vectors": table.cpu()}
        if self.char_lm is not None:
            checkpoint[CHAR_LM_KEY] = self.char_lm.specs()
        if self.transformer is not None:
            checkpoint[TRANSFORMER_KEY] = self.transformer.spec()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Called before the weights are copied: a checkpoint for other data fails here with a sentence, not with
        # torch's list of size mismatches.
        saved = checkpoint.get("hyper_parameters", {})
        if "labels" in saved and list(saved["labels"]) != self.labels:
            raise SeqtagInputError(
                f"the checkpoint's labels {list(saved['labels'])} differ from the data's {self.labels}: the model was "
                f"trained on other data (or another scheme)"
            )
        own = self.state_dict()
        for name, tensor in checkpoint.get("state_dict", {}).items():
            if name in own and tuple(tensor.shape) != tuple(own[name].shape):
                differ = {k: (v, self.hparams[k]) for k, v in saved.items() if self.hparams.get(k, v) != v}
                raise SeqtagInputError(
                    f"the checkpoint does not fit this model: {name} has shape {tuple(tensor.shape)} in the checkpoint "
                    f"and {tuple(own[name].shape)} here; hyperparameters that differ (checkpoint, now): {differ} (use "
                    f"the training's data and model options, or data.vocab=<the vocab.json beside the checkpoint>)"
                )
        self.restore_vocabulary(checkpoint)

    # ------------------------------------------------------------------------------------------- tagging API
    @classmethod
    def load(
        cls,
        checkpoint_path: str | Path,
        map_location: str | torch.device = "cpu",
        word_vectors: str | Path | None = None,
        keep_vectors: int = 400_000,
    ) -> Tagger:
        """A trained tagger from a checkpoint, loaded without unpickling code (``weights_only=True``).

        Words unseen in training are tagged with the pretrained vectors the checkpoint keeps (see
        ``data.keep_vectors``). ``word_vectors``: a vectors file to take them from instead (the first
        ``keep_vectors`` words), e.g. for a checkpoint trained with ``keep_vectors: 0``.
        """
        path = Path(checkpoint_path)
        model = cls.from_checkpoint(load_checkpoint(path), map_location)
        model.origin["checkpoint"] = str(path)
        if word_vectors is not None and model.vocab is not None:
            model.use_vectors_file(word_vectors, keep_vectors)
        if model.vocab is None:
            vocab_file = path.parent / "vocab.json"
            if not vocab_file.exists():
                raise SeqtagInputError(f"{path}: the checkpoint holds no vocabulary and {vocab_file} is missing")
            model.vocab = Vocab.load(vocab_file)
        return model.eval()

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], map_location: str | torch.device = "cpu") -> Tagger:
        """A trained tagger from a checkpoint's contents (the dict ``torch.load`` gives for a ``best.ckpt``, or
        :func:`seqtag.hub.checkpoint_from_folder` for a model folder), in eval mode. ``origin`` keeps the training
        data's options, for the model card of :meth:`save_pretrained`."""
        model = super().from_checkpoint(checkpoint, map_location)
        model.origin = {"data": dict(checkpoint.get("datamodule_hyper_parameters") or {})}
        return model.eval()

    def use_vectors_file(self, path: str | Path, keep_vectors: int = 400_000) -> None:
        """Takes the pretrained vectors of words outside the vocabulary from a vectors file (its first
        ``keep_vectors`` words) instead of the table the checkpoint keeps; 0 drops the table (such words are UNK).
        With a fastText model (``.bin``), every other word of the texts tagged gets the vector its character
        n-grams give (:class:`~seqtag.data.fasttext_model.SubwordTable`; see docs/vectors.md)."""
        from seqtag.data.fasttext_model import SubwordTable
        from seqtag.data.vectors import load_table_cached

        self.subword_table = None
        if not keep_vectors:
            self.vocab.attach_pretrained([])
            self.embedder.set_pretrained_table(None)
            return
        words, matrix = load_table_cached(path, keep_vectors)
        keep = [j for j, w in enumerate(words) if w not in self.vocab.word_index]
        table = torch.from_numpy(matrix[keep])
        self.vocab.attach_pretrained([words[j] for j in keep])
        self.embedder.set_pretrained_table(table)
        self.subword_table = SubwordTable.for_file(path, table)

    def tag(
        self,
        sentences: Sequence[Sequence[str] | str],
        batch_size: int = 256,
        features: Sequence[Sequence[Sequence[str]]] | None = None,
        documents: Sequence[int] | None = None,
    ) -> list[list[str]]:
        """Tags sentences, in the data's scheme: one list of tags per input.

        Each input is a token list, or a string that is tokenized as the training data was (PTB-like English
        words, or characters for a model trained on one-character tokens; see :mod:`seqtag.tokenize`) and tagged as
        one sentence. :meth:`predict` gives the tokens, offsets, spans and their confidence.

        ``features``: for a model trained with feature columns, per sentence its columns' values (F lists of T
        strings), e.g. ``[[["NNP", "VBZ", "JJ", "NN"]]]`` for one sentence with a POS column.
        ``documents``: for a model with ``document_memory`` or ``document_context``, the document id of each
        sentence (sentences with the same id are one document, in their order). Default: all the sentences of the
        call are one document.
        """
        from seqtag.tokenize import tokenize

        mode = self.tokenize_mode
        token_lists = [
            [t.text for sentence in tokenize(s, mode) for t in sentence] if isinstance(s, str) else list(s)
            for s in sentences
        ]
        outputs = self._decode_token_lists(token_lists, batch_size, features, documents)
        return [out["tags"] for out in outputs]

    def predict(
        self,
        inputs: str | Sequence[str | Sequence[str]],
        n_best: int = 0,
        marginals: bool = False,
        batch_size: int = 256,
        features: Sequence[Sequence[Sequence[str]]] | None = None,
        documents: Sequence[int] | None = None,
    ) -> list[dict[str, Any]]:
        """Tags raw text or token lists into records (see :mod:`seqtag.records`), one per sentence, in order.

        ``inputs``: a string of raw text (split into sentences and tokens), or a list of such strings and/or token
        lists (a token list is one sentence). Each record has ``input`` (the index of the input it comes from),
        ``tokens`` with character offsets into that input (a token list's offsets are into its tokens joined by
        single spaces), ``tags`` in the data's scheme, and ``spans`` with their confidence; ``n_best=k`` adds the k
        most probable tag sequences with their probabilities (exact k-best Viterbi under the scheme's constraints
        for a CRF), ``marginals=True`` each token's tag probabilities. ``features``: per token-list input, as in
        :meth:`tag`. ``documents``: for a model with ``document_memory`` or ``document_context``, the document id of
        each input (its sentences are that document's, in order). Default: all the inputs of the call are one document.
        """
        from seqtag.records import sentence_record, split_inputs
        from seqtag.tagging import DecodeOptions

        if isinstance(inputs, str):
            inputs = [inputs]
        sentences, origins, texts = split_inputs(inputs, self.tokenize_mode)
        if features is not None and any(isinstance(item, str) for item in inputs):
            raise SeqtagInputError("features go with token-list inputs only (raw text has no feature columns)")
        options = DecodeOptions(spans=True, n_best=n_best, marginals=marginals)
        token_lists = [[t[0] for t in sentence] for sentence in sentences]
        if documents is not None and len(documents) != len(inputs):
            raise SeqtagInputError(f"{len(inputs)} inputs but document ids for {len(documents)}")
        sentence_documents = [documents[i] for i in origins] if documents is not None else None
        outputs = self._decode_token_lists(token_lists, batch_size, features, sentence_documents, options)
        records = []
        for sentence, origin, text, out in zip(sentences, origins, texts, outputs):
            record = {"input": origin}
            spans, n_best, probs = out.get("spans", ()), out.get("n_best"), out.get("marginals")
            record.update(sentence_record(sentence, out["tags"], spans, text, n_best, probs))
            records.append(record)
        return records

    @torch.inference_mode()
    def _decode_token_lists(
        self,
        token_lists: list[list[str]],
        batch_size: int,
        features: Sequence[Sequence[Sequence[str]]] | None,
        documents: Sequence[int] | None,
        options: Any = None,
    ) -> list[dict[str, Any]]:
        """:func:`seqtag.tagging.decode_outputs` of each token list (an empty one gets empty outputs)."""
        from seqtag.data.datamodule import iter_batches
        from seqtag.tagging import DecodeOptions

        if self.vocab is None:
            raise SeqtagInputError("the tagger has no vocabulary: load it with Tagger.load(checkpoint)")
        num_features = len(self.vocab.features)
        if num_features and features is None:
            raise SeqtagInputError(
                f"this tagger reads {num_features} feature columns besides the tokens: pass features=[per sentence, "
                f"{num_features} lists of values, one per token]"
            )
        if features is not None:
            if len(features) != len(token_lists):
                raise SeqtagInputError(f"{len(token_lists)} sentences but features for {len(features)}")
            for i, (tokens, columns) in enumerate(zip(token_lists, features)):
                if len(columns) != num_features or any(len(values) != len(tokens) for values in columns):
                    raise SeqtagInputError(
                        f"sentence {i}: expected {num_features} feature columns of {len(tokens)} values each, got "
                        f"{[len(values) for values in columns]}"
                    )
        options = options or DecodeOptions()
        empty: dict[str, Any] = {"tags": [], "spans": [], "n_best": [([], 1.0)] if options.n_best else None}
        results: list[dict[str, Any]] = [
            {k: v for k, v in empty.items() if v is not None or k == "tags"} for _ in token_lists
        ]
        nonempty = [i for i, tokens in enumerate(token_lists) if tokens]
        was_training = self.training
        self.eval()
        kept_features = [list(map(list, features[i])) for i in nonempty] if features is not None else None
        document_ids = None
        if self.reads_documents:
            if documents is not None and len(documents) != len(token_lists):
                raise SeqtagInputError(f"{len(token_lists)} sentences but document ids for {len(documents)}")
            document_ids = [int(documents[i]) if documents is not None else 0 for i in nonempty]
        kept_tokens = [token_lists[i] for i in nonempty]
        previous = getattr(self, "decode_options", None)
        self.decode_options = options
        subwords = getattr(self, "subword_table", None)  # set by use_vectors_file with a fastText model
        if subwords is not None and subwords.add(self.vocab, kept_tokens):
            self.embedder.set_pretrained_table(subwords.table)
        try:
            text = self.reads_token_text
            for batch in iter_batches(self.vocab, kept_tokens, batch_size, kept_features, document_ids, text):
                batch = {k: v.to(self.device) for k, v in batch.items()}
                for i, out in self.predict_step(batch, 0):
                    results[nonempty[i]] = out
        finally:
            self.decode_options = previous
            self.train(was_training)
        return results

    # ---------------------------------------------------------------------------------- Hugging Face Hub
    def save_pretrained(
        self,
        folder: str | Path,
        repo_id: str | None = None,
        language: str | Sequence[str] | None = None,
        tags: Sequence[str] = (),
    ) -> Path:
        """Writes the model as a Hub model folder: ``model.safetensors``, ``config.json``, ``vocab.json``,
        ``pretrained_words.txt`` and a model card ``README.md`` (see :mod:`seqtag.hub`). ``repo_id``: the name the
        card's usage snippet loads; ``language``: language code(s) for the card's metadata. Returns the folder."""
        from seqtag import hub

        return hub.save_pretrained(self, folder, repo_id=repo_id, language=language, tags=tags)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | Path,
        revision: str | None = None,
        cache_dir: str | Path | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
        map_location: str | torch.device = "cpu",
    ) -> Tagger:
        """A tagger from a model folder (:meth:`save_pretrained`, ``seqtag hub save``) or a Hugging Face Hub model
        ``"owner/name"`` (downloaded once, then read from the Hub cache; ``HF_HUB_OFFLINE=1`` reads the cache
        only), loaded from safetensors and JSON: no pickle. Tags as :meth:`load` of the checkpoint it was saved
        from."""
        from seqtag import hub

        return hub.from_pretrained(name_or_path, revision, cache_dir, token, local_files_only, map_location)

    def push_to_hub(
        self,
        repo_id: str,
        private: bool = False,
        token: str | None = None,
        commit_message: str = "Upload seqtag tagger",
        language: str | Sequence[str] | None = None,
        tags: Sequence[str] = (),
    ) -> str:
        """Uploads the model folder of :meth:`save_pretrained` to the Hub model repo ``repo_id`` (created when
        missing). ``token``: a Hub token with write access (default: the one ``hf auth login`` saved). Returns the
        commit's URL."""
        from seqtag import hub

        return hub.push_to_hub(
            self, repo_id, private=private, token=token, commit_message=commit_message, language=language, tags=tags
        )
