"""Trainer-side pieces: checkpoints that watch the model's own metric, atomic writes, prediction files."""

from __future__ import annotations

import json
import os
import random
import warnings
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    EarlyStopping,
    EMAWeightAveraging,
    ModelCheckpoint,
)
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from seqtag.atomic import atomic_open, atomic_write_text


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


class PredictionWriter(BasePredictionWriter):
    """Writes the predicted tags of ``seqtag predict`` to a file, atomically, in the input's order.

    Args:
        output: the file to write. Default: ``<default_root_dir>/predictions/<input name>.pred.<format>``
        format: ``conll`` (token, the feature columns the model reads, the gold tag when the input has one, the
            predicted tag; a blank line between sentences — an input with gold tags gives a file ``seqtag score``
            reads) or ``jsonl`` (``{"tokens": [...], "tags": [...]}`` per line, with ``"features"``, one list per
            feature column, for a model that reads them). Default: ``conll``
    """

    def __init__(self, output: str | None = None, format: Literal["conll", "jsonl"] = "conll") -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.format = format
        self.written: Path | None = None

    def write_on_epoch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any
    ) -> None:
        datamodule = trainer.datamodule
        sentences = datamodule.sentences("predict")
        by_index: dict[int, list[str]] = {}
        for batch in predictions:
            for index, tags in batch:
                by_index[index] = tags
        source = Path(str(datamodule.hparams.predict).rstrip("/"))
        path = (
            Path(self.output)
            if self.output
            else Path(trainer.default_root_dir, "predictions", f"{source.name}.pred.{self.format}")
        )
        lines = []
        for i, row in enumerate(sentences):
            tags = by_index[i]
            if self.format == "jsonl":
                record = {"tokens": row["tokens"]}
                if row.get("features"):
                    record["features"] = row["features"]
                record["tags"] = tags
                lines.append(json.dumps(record, ensure_ascii=False))
                continue
            gold, features = row["tags"], row.get("features") or []
            for j, (token, tag) in enumerate(zip(row["tokens"], tags)):
                inputs = [values[j] for values in features]  # the feature columns, in data.feature_columns order
                lines.append(" ".join([token, *inputs] + ([gold[j]] if gold else []) + [tag]))
            lines.append("")
        atomic_write_text(path, "\n".join(lines) + "\n")
        self.written = path
        print(f"Predictions for {len(sentences)} sentences written to {path}")
