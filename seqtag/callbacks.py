"""Trainer-side pieces: checkpoints that watch the model's own metric, atomic writes, prediction files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import BasePredictionWriter, EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from seqtag.data.vocab import atomic_write_text


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

    def __init__(self, monitor: str = "auto", filename: str = "best", save_last: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("mode", "max")
        kwargs.setdefault("auto_insert_metric_name", False)
        kwargs.setdefault("enable_version_counter", False)
        super().__init__(monitor=None if monitor == "auto" else monitor, filename=filename, save_last=save_last, **kwargs)
        self._auto = monitor == "auto"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._auto:
            has_validation = trainer.datamodule is None or getattr(trainer.datamodule, "has_validation", True)
            self.monitor = getattr(pl_module, "monitor", None) if has_validation else None
            if self.monitor is None:
                self.save_top_k = 1  # without validation: keep the last epoch's model as best.ckpt too
        super().setup(trainer, pl_module, stage)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        vocab = getattr(pl_module, "vocab", None)
        if vocab is not None and trainer.is_global_zero and self.dirpath:
            vocab.save(Path(self.dirpath) / "vocab.json")


class AutoEarlyStopping(EarlyStopping):
    """``EarlyStopping`` whose ``monitor="auto"`` follows the model's validation metric (mode max)."""

    def __init__(self, monitor: str = "auto", patience: int = 10, mode: str = "max", **kwargs: Any) -> None:
        super().__init__(monitor=monitor, patience=patience, mode=mode, **kwargs)
        self._auto = monitor == "auto"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._auto:
            self.monitor = getattr(pl_module, "monitor", "val/loss")
            if trainer.datamodule is not None and not getattr(trainer.datamodule, "has_validation", True):
                self.monitor = "train/loss"
                self.mode, self.monitor_op = "min", torch.lt
                self.best_score = torch.tensor(torch.inf)
        super().setup(trainer, pl_module, stage)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the same folder, then renames it: a killed run never leaves a
    half-written ``.ckpt``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            torch.save(checkpoint, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


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


class PredictionWriter(BasePredictionWriter):
    """Writes the predicted tags of ``seqtag predict`` to a file, atomically, in the input's order.

    Args:
        output: the file to write. Default: ``<default_root_dir>/predictions/<input name>.pred.<format>``
        format: ``conll`` (token, the input's other columns when it had tags, predicted tag; a blank line between
            sentences — an input with gold tags gives a file ``seqtag score`` reads) or ``jsonl``
            (``{"tokens": [...], "tags": [...]}`` per line). Default: ``conll``
    """

    def __init__(self, output: str | None = None, format: Literal["conll", "jsonl"] = "conll") -> None:
        super().__init__(write_interval="epoch")
        self.output = output
        self.format = format
        self.written: Path | None = None

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions: Any, batch_indices: Any) -> None:
        datamodule = trainer.datamodule
        sentences = datamodule.sentences("predict")
        by_index: dict[int, list[str]] = {}
        for batch in predictions:
            for index, tags in batch:
                by_index[index] = tags
        source = Path(str(datamodule.hparams.predict).rstrip("/"))
        path = Path(self.output) if self.output else Path(trainer.default_root_dir, "predictions", f"{source.name}.pred.{self.format}")
        lines = []
        for i, row in enumerate(sentences):
            tags = by_index[i]
            if self.format == "jsonl":
                lines.append(json.dumps({"tokens": row["tokens"], "tags": tags}, ensure_ascii=False))
                continue
            gold = row["tags"]
            for j, (token, tag) in enumerate(zip(row["tokens"], tags)):
                lines.append(" ".join([token] + ([gold[j]] if gold else []) + [tag]))
            lines.append("")
        atomic_write_text(path, "\n".join(lines) + "\n")
        self.written = path
        print(f"Predictions for {len(sentences)} sentences written to {path}")
