"""Trainer-side pieces: checkpoints that watch the model's own metric, atomic writes, prediction files."""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
)
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from seqtag.atomic import atomic_open
from seqtag.ordered_output import ChunkOrderedWriter, merge_parts


def run_dir(trainer: L.Trainer) -> Path:
    """The folder of this run: ``<save_dir>/<name>/<version>`` of the first logger (as ModelCheckpoint uses),
    else ``default_root_dir``."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    if isinstance(logger, (TensorBoardLogger, CSVLogger)):
        return Path(logger.log_dir)
    save_dir = logger.save_dir or trainer.default_root_dir
    version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
    return Path(save_dir, str(logger.name), version)


class BestCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` keeping ``best.ckpt`` and ``last.ckpt``; ``monitor="auto"`` watches the model's own
    validation metric (``val/f1`` for spans, ``val/acc`` for plain classes). Writes ``vocab.json`` beside them."""

    # mode, auto_insert_metric_name and enable_version_counter are named here, not set in **kwargs: LightningCLI
    # fills **kwargs with ModelCheckpoint's own defaults (mode="min"), which would then win.
    def __init__(
        self,
        monitor: str = "auto",
        filename: str = "best",
        save_last: bool = True,
        mode: str = "max",
        auto_insert_metric_name: bool = False,
        enable_version_counter: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            monitor=None if monitor == "auto" else monitor,
            filename=filename,
            save_last=save_last,
            mode=mode,
            auto_insert_metric_name=auto_insert_metric_name,
            enable_version_counter=enable_version_counter,
            **kwargs,
        )
        self._auto = monitor == "auto"
        self._stage: str | None = None  # set by setup(), which Lightning calls before it restores a checkpoint

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_skipped(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_skipped(trainer)

    def _save_last_if_skipped(self, trainer: L.Trainer) -> None:
        # ModelCheckpoint writes last.ckpt only in a step that also wrote a top-k checkpoint; a run killed after
        # epochs without improvement would then resume from an older epoch. last.ckpt is always the latest epoch.
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            if self._last_global_step_saved != trainer.global_step:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stage = stage
        if self._auto:
            has_validation = validation_runs(trainer)
            self.monitor = getattr(pl_module, "monitor", None) if has_validation else None
            if self.monitor is None:
                self.save_top_k = 1  # without validation: keep the last epoch's model as best.ckpt too
        super().setup(trainer, pl_module, stage)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_in = state_dict.get("dirpath")
        moved = bool(saved_in and self.dirpath) and os.path.realpath(saved_in) != os.path.realpath(self.dirpath)
        if not moved:  # the same folder, perhaps written another way (relative, absolute): restore everything
            state_dict = {**state_dict, "dirpath": self.dirpath}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The dirpath has changed")  # handled below
            super().load_state_dict(state_dict)
        if not moved:
            return
        # Resumed into another folder: ModelCheckpoint forgets the best score, so the next epoch would become the
        # best model whatever its score. The best checkpoint so far stays the one to beat, where it is (it is never
        # deleted from there: ModelCheckpoint removes only files of its own folder).
        kept = {path: score for path, score in state_dict.get("best_k_models", {}).items() if os.path.isfile(path)}
        if kept:
            self.best_k_models = kept
            self.best_model_score = state_dict["best_model_score"]
            self.kth_best_model_path = state_dict["kth_best_model_path"]
            self.kth_value = state_dict["kth_value"]
        if kept and self._stage in (None, "fit"):  # test and predict read the checkpoint's weights only: no news
            rank_zero_info(
                f"Checkpoints now go to {self.dirpath}; the best so far stays {self.best_model_path} "
                f"({self.monitor} {float(self.best_model_score):.4f}) until an epoch beats it."
            )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        vocab = getattr(pl_module, "vocab", None)
        if vocab is not None and trainer.is_global_zero and self.dirpath:
            vocab.save(Path(self.dirpath) / "vocab.json")


def validation_runs(trainer: L.Trainer) -> bool:
    """Whether this fit validates: the data has a validation split and ``trainer.limit_val_batches`` is not 0."""
    has_split = trainer.datamodule is None or getattr(trainer.datamodule, "has_validation", True)
    return has_split and trainer.limit_val_batches != 0


class AutoEarlyStopping(EarlyStopping):
    """``EarlyStopping`` whose ``monitor="auto"`` follows the model's validation metric (mode max)."""

    def __init__(self, monitor: str = "auto", patience: int = 10, mode: str = "max", **kwargs: Any) -> None:
        super().__init__(monitor=monitor, patience=patience, mode=mode, **kwargs)
        self._auto = monitor == "auto"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._auto:
            self.monitor = getattr(pl_module, "monitor", "val/loss")
            if not validation_runs(trainer):
                self.monitor = "train/loss"
                self.mode = "min"  # `monitor_op` follows `mode`
                self.min_delta = -abs(self.min_delta)
                self.best_score = torch.tensor(torch.inf)
        super().setup(trainer, pl_module, stage)


class EpochSummary(Callback):
    """One line per epoch, for fits without a progress bar (scripts, logs): the epoch, the mean training loss, the
    validation loss and the metric the checkpoint watches (``*`` marks a new best), and the epoch's time; the best
    epoch when the fit ends. ``seqtag fit`` adds it when ``trainer.enable_progress_bar`` is false.

    Printed (by global rank 0)::

        epoch 3/8: train/loss 4.2163, val/loss 3.1140, val/f1 0.8512 *, 2.1 s
        best epoch: 7 of 8, val/f1 0.9215
    """

    def __init__(self) -> None:
        self._loss_sum: torch.Tensor | None = None  # summed on the device: no synchronization per step
        self._batches = 0
        self._started = 0.0
        self._best: tuple[float, int] | None = None  # (score, epoch)
        self._last_epoch = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._best = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._batches, self._started = None, 0, time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # A tagger with lm_weight returns its tagging loss beside the total: train/loss is the tagging loss.
        loss = outputs.get("tagging_loss", outputs.get("loss")) if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            loss = loss.detach().float()
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._batches += 1

    @staticmethod
    def _watched(trainer: L.Trainer, pl_module: L.LightningModule) -> tuple[str | None, str]:
        """The metric the best model is chosen by, and whether higher (``max``) or lower (``min``) is better."""
        checkpoint = trainer.checkpoint_callback
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.monitor:
            return checkpoint.monitor, checkpoint.mode
        return getattr(pl_module, "monitor", None), getattr(pl_module, "monitor_mode", "max")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epoch = self._last_epoch = trainer.current_epoch + 1
        of = f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        parts = [f"epoch {epoch}{of}:"]
        if self._loss_sum is not None:
            parts.append(f"train/loss {float(self._loss_sum) / self._batches:.4f},")
        metrics = trainer.callback_metrics
        monitor, mode = self._watched(trainer, pl_module)
        if "val/loss" in metrics and monitor != "val/loss":
            parts.append(f"val/loss {float(metrics['val/loss']):.4f},")
        if monitor in metrics:
            score = float(metrics[monitor])
            better = self._best is None or (score > self._best[0] if mode == "max" else score < self._best[0])
            if better:
                self._best = (score, epoch)
            parts.append(f"{monitor} {score:.4f}{' *' if better else ''},")
        parts.append(f"{time.perf_counter() - self._started:.1f} s")
        rank_zero_info(" ".join(parts))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero and self._best is not None:
            monitor, _ = self._watched(trainer, pl_module)
            score, epoch = self._best
            rank_zero_info(f"best epoch: {epoch} of {self._last_epoch}, {monitor} {score:.4f}")


class RandomStateCheckpoint(Callback):
    """Saves the global random state (torch, CUDA, numpy, Python) in each checkpoint and puts it back when training
    resumes, so a resumed run draws the same dropout masks and DataLoader seeds as a run that was never stopped.

    The state is put back at the start of training, not when the checkpoint is read, because Lightning reads
    checkpoints before work that may draw random numbers of its own. All values are tensors, numbers and tuples, so
    checkpoints still load with ``torch.load(weights_only=True)``. Under DDP the state of rank 0 is saved.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        name, keys, pos, has_gauss, cached = np.random.get_state()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
            "python": random.getstate(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        state, self._to_restore = self._to_restore, None
        if state is None:
            return
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))


class ExponentialMovingAverage(EMAWeightAveraging):
    """Keeps an exponential moving average of the weights, ``avg = decay * avg + (1 - decay) * w`` after every
    optimizer step, and validates, checkpoints and finishes with the average (Polyak averaging).

    The average smooths the last steps' noise; with ``decay=0.999`` it spans about the last thousand steps. Checkpoints
    hold the average as ``state_dict`` (so ``seqtag test``, ``predict`` and ``Tagger.load`` use it) and the raw
    weights as ``current_model_state`` (so a resumed fit goes on from them).

    Unlike Lightning's ``EMAWeightAveraging``, evaluation outside ``fit`` (``trainer.test(ckpt_path=...)``, even in the
    process that trained) uses the checkpoint's averaged weights as they are: the average of the finished fit is
    dropped, so it is neither swapped in for validation nor used to overwrite the loaded weights.
    """

    def __init__(self, decay: float = 0.999, update_starting_at_step: int | None = None) -> None:
        super().__init__(decay=decay, update_starting_at_step=update_starting_at_step)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            self._average_model = None
        super().setup(trainer, pl_module, stage)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._average_model is not None:  # resuming a fit: the average and the raw weights both come back
            super().on_load_checkpoint(trainer, pl_module, checkpoint)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it: a killed run never leaves a
    half-written ``.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        with atomic_open(path, "wb") as f:
            torch.save(checkpoint, f)


class RunConfigCallback(SaveConfigCallback):
    """Saves the run's effective ``config.yaml`` in the run's own folder (beside ``checkpoints/``), so runs never
    overwrite each other's config."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.already_saved or stage != "fit":
            return
        folder = trainer.strategy.broadcast(str(run_dir(trainer)))
        if trainer.is_global_zero:
            os.makedirs(folder, exist_ok=True)
            self.parser.save(self.config, os.path.join(folder, self.config_filename), skip_none=False, overwrite=True)
        self.already_saved = True


def run_conventions() -> dict[str, Any]:
    """LightningCLI arguments shared by ``seqtag`` and ``seqtag lm``: the default seed, and each run's effective
    config saved in its own folder."""
    return {
        "seed_everything_default": 1234,
        "save_config_callback": RunConfigCallback,
        "save_config_kwargs": {"overwrite": True},
    }


class PredictionWriter(Callback):
    """Writes the predictions of ``seqtag predict`` to a file as they come, in the input's order; the file appears
    whole at the end (written to a temporary file beside it, then renamed), and not at all if tagging fails.

    The data module streams its input a chunk at a time (:mod:`seqtag.data.streaming`) and each batch carries its
    sentences as read; their records wait in a reorder buffer (:class:`~seqtag.ordered_output.ChunkOrderedWriter`)
    until the sentences before them are written, so memory holds about one chunk of records, however long the input.
    Under DDP, each process writes the chunks it tagged to a part file beside the output; once all have finished,
    rank 0 joins the parts chunk by chunk into the output (the same file a single process writes) and removes them.
    The output's folder must then be one that all processes see.

    Args:
        output: the file to write. Default: ``<default_root_dir>/predictions/<input name>.pred.<format>``
        format: ``conll`` (token, the feature columns the model reads, the gold tag when the input has one, the
            predicted tag; a blank line between sentences — an input with gold tags gives a file ``seqtag score``
            reads) or ``jsonl`` (one record per sentence, see :mod:`seqtag.records`: ``tokens`` with character
            offsets into their line, ``tags``, ``spans`` with their confidence, ``n_best`` and ``marginals`` when
            asked for; ``line`` for raw text, ``features`` and ``gold_tags`` when the input has them). Default: the
            output's extension when it is ``.jsonl``, else ``conll``
        n_best: the k most probable tag sequences of each sentence, with their probabilities (``jsonl``). Default: 0
        marginals: each token's tag probabilities (``jsonl``). Default: False
    """

    def __init__(
        self,
        output: str | None = None,
        format: Literal["conll", "jsonl"] | None = None,
        n_best: int = 0,
        marginals: bool = False,
    ) -> None:
        from seqtag.records import output_format

        self.output = output
        self.format = output_format(output, format, n_best, marginals)
        self.n_best = n_best
        self.marginals = marginals
        self.written: Path | None = None
        self._open: contextlib.ExitStack | None = None  # the file being written, until the epoch ends
        self._writer: ChunkOrderedWriter | None = None
        self._part: Path | None = None  # this process's part file, under DDP

    def _path(self, trainer: L.Trainer) -> Path:
        if self.output:
            return Path(self.output)
        source = Path(str(trainer.datamodule.hparams.predict).rstrip("/"))
        return Path(trainer.default_root_dir, "predictions", f"{source.name}.pred.{self.format}")

    def _part_path(self, path: Path, token: str, rank: int) -> Path:
        return path.with_name(f".{path.name}.{token}.part{rank}")

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        from seqtag.tagging import DecodeOptions

        pl_module.decode_options = DecodeOptions(
            spans=self.format == "jsonl", n_best=self.n_best, marginals=self.marginals
        )
        trainer.predict_loop.return_predictions = False  # written here, not kept: memory stays flat
        # oneDNN keeps the LSTM it compiled for each batch shape, up to 1,024 of them at about 0.7 MB each; the batch
        # sizes of streamed chunks vary, so that cache alone grew by 360 MB over 30,000 CoNLL-2003 sentences. Keeping
        # 16 tagged as fast (the variable is read when oneDNN first runs, after this point in `seqtag predict`).
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
        path = self._path(trainer)
        self._token = trainer.strategy.broadcast(secrets.token_hex(4))  # the same part names in every process
        target = path if trainer.world_size == 1 else self._part_path(path, self._token, trainer.global_rank)
        self._part = None if trainer.world_size == 1 else target
        self._open = contextlib.ExitStack()
        file = self._open.enter_context(atomic_open(target, "wb"))
        self._writer = ChunkOrderedWriter(file, first=trainer.global_rank, step=trainer.world_size)

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        from seqtag.records import prediction_text

        streamed = batch.get("sentences") if isinstance(batch, dict) else None
        if streamed is None:
            raise RuntimeError("PredictionWriter writes the streamed batches of TaggingDataModule.predict_dataloader")
        texts = []
        for row, (index, out) in zip(streamed.rows, outputs, strict=True):
            texts.append((index, prediction_text(row, out, self.format)))
        self._writer.add(streamed.chunk, streamed.chunk_start, streamed.chunk_size, texts)

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        table = self._writer.finish()
        sentences = self._writer.sentences
        self._open.close()  # flushed, synced and renamed into place
        self._open = None
        path = self._path(trainer)
        if trainer.world_size > 1:
            # Every process takes part in each broadcast, so these also wait until all parts are complete.
            shares = [trainer.strategy.broadcast((table, sentences), src=r) for r in range(trainer.world_size)]
            sentences = sum(count for _, count in shares)
            if trainer.is_global_zero:
                parts = [self._part_path(path, self._token, r) for r in range(trainer.world_size)]
                with atomic_open(path, "wb") as out:
                    merge_parts(parts, [part_table for part_table, _ in shares], out)
                for part in parts:
                    part.unlink()
        self.written = path
        if trainer.is_global_zero:
            print(f"Predictions for {sentences} sentences written to {path}")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # No output, no temporary file, no part left behind.
        if self._open is not None:
            self._open.__exit__(type(exception), exception, exception.__traceback__)
            self._open = None
        elif self._part is not None:
            self._part.unlink(missing_ok=True)
