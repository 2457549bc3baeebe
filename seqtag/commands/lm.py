"""``seqtag lm``: train, evaluate and sample the character language model.

    seqtag lm fit --config configs/charlm.yaml
    seqtag lm fit --config configs/charlm.yaml --model.direction backward
    seqtag lm test --config configs/charlm.yaml --ckpt_path runs/charlm/<run>/checkpoints/best.ckpt
    seqtag lm generate --ckpt_path <best.ckpt> --prompt "The European " --length 200 --temperature 0.8

``fit``, ``validate`` and ``test`` are a LightningCLI over :class:`seqtag.modules.charlm.CharLanguageModel` and
:class:`seqtag.data.charlm.CharLMDataModule`, with the conventions of ``seqtag fit`` (checkpoints, seed, W&B);
checkpoints and early stopping watch ``val/bpc``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from jsonargparse import lazy_instance
from lightning.pytorch.cli import ArgsType, LightningArgumentParser

from seqtag.callbacks import AutoEarlyStopping, BestCheckpoint, run_conventions
from seqtag.commands.tagger import SeqtagCLI
from seqtag.data.charlm import CharLMDataModule
from seqtag.errors import SeqtagInputError
from seqtag.loggers import WandbLogger
from seqtag.modules.charlm import CharLanguageModel


def lm_trainer_defaults() -> dict:
    """The Trainer's defaults for ``seqtag lm``; any of them can be overridden in a config or on the command line."""
    return {
        "max_epochs": 20,
        "gradient_clip_val": 1.0,
        "default_root_dir": "runs",
        "logger": lazy_instance(WandbLogger, project="seqtag-lm", save_dir="runs"),
    }


# `seqtag lm` commands and their help; `generate` is ours, the others are LightningCLI's.
LM_COMMANDS = {
    "fit": "train a forward or backward character LM",
    "validate": "bits per character of a checkpoint on the validation text",
    "test": "bits per character of a checkpoint on the test text",
    "generate": "sample text from a checkpoint",
}


def usage() -> str:
    """The text of ``seqtag lm --help``."""
    width = max(map(len, LM_COMMANDS))
    return "\n".join(
        [
            "usage: seqtag lm COMMAND [options]",
            "",
            "Character language model: contextual character features for the tagger (model.char_lm_forward,",
            "model.char_lm_backward).",
            "",
            "commands:",
            *(f"  {name:<{width}}  {text}" for name, text in LM_COMMANDS.items()),
            "",
            "`seqtag lm COMMAND --help` lists the options of a command.",
        ]
    )


class LMCLI(SeqtagCLI):
    """The ``seqtag lm`` LightningCLI: the data's vocabulary size is linked into the model; checkpoints and early
    stopping watch ``val/bpc`` (lower is better)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # A language model tags nothing: no `predict`.
        return {name: skip for name, skip in SeqtagCLI.subcommands().items() if name in LM_COMMANDS}

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

    def _options_from_checkpoint(self, config: Any) -> None:
        pass  # the tagger's model and data options: an LM checkpoint's come from the config and the command line

    def after_instantiate_classes(self) -> None:
        pass  # no prediction writer

    def before_fit(self) -> None:
        pass  # the data summary of `seqtag fit` describes tagged sentences, not a character stream

    def after_test(self) -> None:
        results = getattr(self.model, "test_results", None)
        if results is not None and self.trainer.is_global_zero:
            print(f"test bits per character: {results['bpc']:.4f}")


def lm_cli_main(args: ArgsType = None, run: bool = True):
    """Builds and runs the ``seqtag lm`` LightningCLI; ``args`` is a list of arguments (tests) or None."""
    return LMCLI(
        CharLanguageModel,
        CharLMDataModule,
        trainer_defaults=lm_trainer_defaults(),
        args=args,
        run=run,
        **run_conventions(),
    )


def generate_main(argv: list[str]) -> int:
    """``seqtag lm generate``: prints the prompt and the text the model samples after it (before it, backward)."""
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
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
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
