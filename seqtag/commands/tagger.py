"""``seqtag fit | validate | test | predict``: LightningCLI over Tagger and TaggingDataModule, with the data's
values linked into the model, seqtag's checkpoints and W&B runs. Run through :func:`seqtag.cli.main` (the ``seqtag``
console script); :func:`cli_main` builds it from a list of arguments (tests, scripts).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

from jsonargparse import lazy_instance
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from seqtag.callbacks import (
    AtomicCheckpointIO,
    AutoEarlyStopping,
    BestCheckpoint,
    EpochSummary,
    PredictionWriter,
    RandomStateCheckpoint,
    run_conventions,
)
from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.predict_input import READING_OPTIONS
from seqtag.errors import SeqtagInputError
from seqtag.loggers import WandbLogger
from seqtag.tagger import Tagger

DEFAULT_ROOT = "runs"  # where a run's files go unless trainer.default_root_dir or the logger's save_dir say otherwise


def trainer_defaults() -> dict:
    """The Trainer's defaults for seqtag; any of them can be overridden in a config or on the command line."""
    return {
        "max_epochs": 50,
        "gradient_clip_val": 5.0,
        "use_distributed_sampler": False,  # the bucketed batch sampler splits batches across processes itself
        "default_root_dir": DEFAULT_ROOT,
        "logger": lazy_instance(WandbLogger, project="seqtag", save_dir=DEFAULT_ROOT),
    }


class SeqtagCLI(LightningCLI):
    """LightningCLI with the data's values linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Known only once the training data is read: linked, never configured.
        parser.link_arguments("data.labels", "model.labels", apply_on="instantiate")
        parser.link_arguments("data.scheme", "model.scheme", apply_on="instantiate")
        parser.link_arguments("data.vocab_size", "model.vocab_size", apply_on="instantiate")
        parser.link_arguments("data.num_chars", "model.num_chars", apply_on="instantiate")
        parser.link_arguments("data.feature_sizes", "model.feature_sizes", apply_on="instantiate")
        # Training data without document markers turns the document options off (the model warns).
        parser.link_arguments("data.has_documents", "model.documents_available", apply_on="instantiate")
        # Checkpointing and early stopping are configurable under `checkpoint.*` and `early_stopping.*`.
        parser.add_lightning_class_args(BestCheckpoint, "checkpoint")
        parser.add_lightning_class_args(AutoEarlyStopping, "early_stopping")
        parser.set_defaults({"early_stopping.patience": 10})
        parser.add_argument("--predict_output", type=str | None, default=None, help="file for `seqtag predict` output")
        parser.add_argument(
            "--predict_format",
            type=str | None,
            default=None,
            help="conll or jsonl (records with spans, offsets and confidence); default: jsonl for a .jsonl output",
        )
        parser.add_argument(
            "--calibrate",
            type=bool,
            default=True,
            help="fit: fit the temperature of the best checkpoint's confidences on the validation data",
        )
        parser.add_argument("--n_best", type=int, default=0, help="predict: the k best tag sequences (JSONL)")
        parser.add_argument("--marginals", type=bool, default=False, help="predict: per-token tag probabilities")
        parser.add_argument(
            "--onnx",
            type=str | None,
            default=None,
            help="predict: tag with a graph from `seqtag export` through onnxruntime instead of a checkpoint",
        )

    def instantiate_trainer(self, **kwargs):
        # Checkpoints are always written atomically (temporary file, then rename).
        plugins = kwargs.get("plugins") or []
        plugins = plugins if isinstance(plugins, list) else [plugins]
        if not any(isinstance(p, AtomicCheckpointIO) for p in plugins):
            kwargs["plugins"] = [*plugins, AtomicCheckpointIO()]
        trainer = super().instantiate_trainer(**kwargs)
        # Without a progress bar (scripts, logs) a fit still prints how each epoch went.
        if trainer.progress_bar_callback is None and not any(isinstance(c, EpochSummary) for c in trainer.callbacks):
            trainer.callbacks.append(EpochSummary())
        # Resuming with --ckpt_path continues the random draws where the checkpoint left them.
        if not any(isinstance(c, RandomStateCheckpoint) for c in trainer.callbacks):
            trainer.callbacks.append(RandomStateCheckpoint())
        return trainer

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # Kept so that `before_instantiate_classes` sees the arguments of `cli_main([...])` too, not only sys.argv.
        self.given_args = [str(a) for a in (sys.argv[1:] if args is None else args if isinstance(args, list) else [])]
        if self.model_class is Tagger and (args is None or isinstance(args, list)):
            # `--model owner/name` or `--model FOLDER`: a shared model, run as the checkpoint it converts to.
            from seqtag.commands.hub import model_as_checkpoint

            rewritten = model_as_checkpoint(self.given_args)
            if rewritten != self.given_args:
                self.given_args = args = rewritten
        super().parse_arguments(parser, args)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.get("onnx"):
            # `seqtag predict --onnx` runs seqtag.onnx_runner before LightningCLI is built (seqtag.cli).
            raise SeqtagInputError(
                f"--onnx goes with the `seqtag predict` command (seqtag.onnx_runner.predict_main), not seqtag "
                f"{self.subcommand} or cli_main"
            )
        if self.subcommand in ("test", "predict", "validate"):
            self._options_from_checkpoint(config)
        logger = config.trainer.get("logger")
        init_args = getattr(logger, "init_args", None)
        if (
            getattr(logger, "class_path", "").endswith(".WandbLogger")
            and getattr(init_args, "save_dir", None) == DEFAULT_ROOT
            and config.trainer.get("default_root_dir") not in (None, DEFAULT_ROOT)
            and not any("save_dir" in a for a in self.given_args)
        ):
            # The run's files (checkpoints, W&B's own) go where --trainer.default_root_dir says, as they do without
            # a logger, unless the logger's save_dir is given too.
            init_args.save_dir = str(config.trainer.default_root_dir)
        if self.subcommand in ("test", "predict", "validate") and config.trainer.get("logger") is not None:
            # Evaluation and tagging need no new W&B run unless one is asked for on the command line.
            if not any(a.startswith("--trainer.logger") for a in self.given_args):
                logger = config.trainer.logger
                if isinstance(logger, dict) or hasattr(logger, "class_path"):
                    config.trainer.logger = False

    # Data options that say how to read files: taken from the checkpoint unless given (values other than defaults).
    READING_OPTIONS = (*READING_OPTIONS, "unknown_labels", "eval_bucketing")

    def _options_from_checkpoint(self, config) -> None:
        """``seqtag test|validate|predict --ckpt_path X``: the checkpoint is all it takes. The model's options, the
        vocabulary with its pretrained table, the labels and schemes come from it, never from training files
        (which need not exist any more, and whose vocabulary would differ from new text's). The data's reading
        options come from the checkpoint too unless given; ``--data.word_vectors`` on the command line takes the
        vectors of words unseen in training from that file instead of the checkpoint's table."""
        ckpt_path = config.get("ckpt_path")
        if not ckpt_path or not os.path.isfile(ckpt_path):
            return  # "last", "best" or a missing file: Lightning's own handling and message
        from seqtag.data.vocab import load_checkpoint

        checkpoint = load_checkpoint(ckpt_path)
        if "hyper_parameters" not in checkpoint:
            raise SeqtagInputError(f"{ckpt_path}: not a seqtag tagger checkpoint (no hyperparameters)")
        saved_model = dict(checkpoint["hyper_parameters"])
        model = config.get("model")
        if model is not None:
            linked = {"labels", "scheme", "vocab_size", "num_chars", "feature_sizes", "documents_available"}
            for key, value in saved_model.items():
                if key in model and key not in linked and key not in ("optimizer", "lr_scheduler"):
                    model[key] = value
            # The character LMs' architectures (their weights are in the state_dict) stand in for the LM files.
            from seqtag.modules.contextual import SPECS_KEY

            for direction, spec in checkpoint.get(SPECS_KEY, {}).items():
                model[f"char_lm_{direction}"] = spec
            # So do the transformer's config and tokenizer files for its folder or Hub name.
            from seqtag.modules.transformer import SPEC_KEY as TRANSFORMER_KEY

            if TRANSFORMER_KEY in checkpoint:
                model["transformer"] = checkpoint[TRANSFORMER_KEY]
        data = config.get("data")
        if data is None:
            return
        saved_data = checkpoint.get("datamodule_hyper_parameters", {})
        defaults = self._subcommand_parsers[self.subcommand].get_defaults().get("data", {})
        for key in self.READING_OPTIONS:
            if key in saved_data and key in data and data[key] == defaults.get(key):
                data[key] = saved_data[key]
        if self.subcommand == "test" and data.get("test") is None:
            data["test"] = saved_data.get("test")
        if self.subcommand == "validate" and data.get("validation") is None:
            data["validation"] = saved_data.get("validation")
            data["validation_from_train"] = saved_data.get("validation_from_train", 0.0)
            if data["validation"] is None and data["validation_from_train"]:
                data["train"] = saved_data.get("train")  # the held-out part of train is the validation split
        elif data.get("train") is not None:
            data["train"] = None
        data["vocab"] = ckpt_path
        if not any(a.startswith("--data.word_vectors") for a in self.given_args):
            data["word_vectors"] = None
        if data.get("batch_by_document") is None and "batch_by_document" in saved_data:
            data["batch_by_document"] = saved_data["batch_by_document"]

    def after_instantiate_classes(self) -> None:
        if self.subcommand == "predict":
            config = self.config[self.subcommand]
            writer = PredictionWriter(
                config.get("predict_output"),
                config.get("predict_format"),
                config.get("n_best") or 0,
                bool(config.get("marginals")),
            )
            self.trainer.callbacks.append(writer)

    def _run_subcommand(self, subcommand: str) -> None:
        from seqtag.modules.transformer import sharing_kept_vectors

        # A frozen transformer's vectors of the validation sentences, kept during a fit, serve the calibration after it.
        with sharing_kept_vectors():
            super()._run_subcommand(subcommand)

    def fit(self, model: Tagger, ckpt_path: str | None = None, **kwargs: Any) -> None:
        ckpt_path = self._resume_in_the_checkpoints_run(ckpt_path)
        with warnings.catch_warnings():
            if ckpt_path:  # resuming: the checkpoint folder holds this run's own files
                warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
            self.trainer.fit(model, ckpt_path=ckpt_path, **kwargs)

    def _resume_in_the_checkpoints_run(self, ckpt_path: str | None) -> str | None:
        """``seqtag fit --ckpt_path``: W&B gives every fit a new run id, and so a new checkpoint folder
        (``<save_dir>/<project>/<run id>/checkpoints``). A resumed fit goes on in the run and folder of its checkpoint
        instead, where the best model and score so far are, and ``--ckpt_path last`` finds the newest ``last.ckpt``
        of the project's runs. A run id given on the command line or in the config wins. Returns the path to
        resume from."""
        logger = self.trainer.logger
        if not ckpt_path or not isinstance(logger, WandbLogger) or logger.version is not None:
            return ckpt_path
        runs = (Path(logger.save_dir) / logger.name).resolve()
        if ckpt_path == "last":
            found = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda path: path.stat().st_mtime)
            if not found:
                return ckpt_path  # Lightning warns that there is no last checkpoint and trains from the start
            ckpt_path = str(found[-1])
            rank_zero_info(f"Resuming from the newest last.ckpt: {ckpt_path}")
        folder = Path(ckpt_path).resolve().parent
        if folder.name == "checkpoints" and folder.parent.parent == runs:
            logger.continue_run(folder.parent.name)
        return ckpt_path

    def before_fit(self) -> None:
        # What was read, before the first epoch: a wrong column, scheme or path shows here, not after hours.
        if self.trainer.is_global_zero:
            from seqtag.data.summary import describe

            print(describe(self.datamodule), flush=True)

    def after_fit(self) -> None:
        best = self.trainer.checkpoint_callback
        if best is not None and self.trainer.is_global_zero and best.best_model_path:
            self._calibrate(best.best_model_path)
            print(f"Best checkpoint: {best.best_model_path}")

    def _calibrate(self, path: str) -> None:
        """Temperature scaling of the best checkpoint's confidences on the validation data (seqtag.calibration)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        datamodule = self.datamodule
        if not isinstance(self.model, Tagger) or not config.get("calibrate", True):
            return
        if not getattr(datamodule, "has_validation", False):
            return
        from seqtag.calibration import calibrate_checkpoint

        result = calibrate_checkpoint(path, datamodule.val_dataloader())
        if result is not None:
            print(f"Confidence calibrated: {result}")

    def after_test(self) -> None:
        results = getattr(self.model, "test_results", None)
        if results is not None and self.trainer.is_global_zero:
            from seqtag.report import print_report, write_report

            print_report(results)
            write_report(self.trainer, self.model, results, self.config[self.subcommand].get("ckpt_path"))


def cli_main(args: ArgsType = None, run: bool = True) -> SeqtagCLI:
    """Builds and runs the CLI; ``args`` is a list of arguments (tests) or None (``sys.argv``)."""
    return SeqtagCLI(
        Tagger,
        TaggingDataModule,
        trainer_defaults=trainer_defaults(),
        args=args,
        run=run,
        **run_conventions(),
    )
