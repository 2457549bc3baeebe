"""The ``seqtag`` command: ``fit``, ``validate``, ``test`` and ``predict`` (a LightningCLI over Tagger and
TaggingDataModule, in :mod:`seqtag.commands.tagger`), ``score`` (conlleval-style scoring of a file, :mod:`seqtag.score`)
and ``lm`` (the character language model, :mod:`seqtag.commands.lm`).

    seqtag fit --config configs/conll2003.yaml
    seqtag test --config configs/conll2003.yaml --ckpt_path runs/seqtag/<run>/checkpoints/best.ckpt
    seqtag predict --config configs/conll2003.yaml --ckpt_path <best.ckpt> --data.predict sentences.txt
    seqtag score predictions.conll
    seqtag lm fit --config configs/charlm.yaml
    seqtag export --ckpt_path <best.ckpt> --output tagger.onnx       # then: seqtag predict --onnx tagger.onnx ...

Each command is imported only when it runs: ``seqtag --help`` and ``seqtag score`` start without torch or Lightning,
and ``seqtag predict --onnx`` (:mod:`seqtag.onnx_runner`) tags without them.
Bad input ends with one paragraph naming the file and line and exit status 2; ``--debug`` (or ``SEQTAG_DEBUG=1``)
shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning, which otherwise slows 2-thread runs by
# orders of magnitude when another process shares a core.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from seqtag.console import finish_wandb_run, quiet_broken_pipe, quiet_libraries  # noqa: E402
from seqtag.errors import SeqtagInputError  # noqa: E402

# LightningCLI's subcommands, run by seqtag.commands.tagger; the help text of `seqtag --help`.
LIGHTNING_COMMANDS = {
    "fit": "train a tagger",
    "validate": "score a checkpoint on the validation data",
    "test": "score a checkpoint on the test data; writes a report beside it",
    "predict": "tag a file (plain text or CoNLL) with a checkpoint",
}
# Commands beside LightningCLI's: name -> ("module:function", help). The function takes the arguments after the name
# and returns the exit status; its module is imported only when the command runs. A new command is one line here.
EXTRA_COMMANDS = {
    "score": ("seqtag.score:score_main", "score a file of gold and predicted tags as conlleval does"),
    "lm": ("seqtag.commands.lm:lm_main", "character language model: lm fit | validate | test | generate"),
    "hub": ("seqtag.commands.hub:hub_main", "share a tagger on the Hugging Face Hub: hub save | push"),
    "serve": ("seqtag.serving.server:serve_main", "serve a checkpoint over HTTP: POST /predict with JSON (LitServe)"),
    "tune": ("seqtag.commands.tune:tune_main", "search config options with Optuna, each trial a fit (optuna)"),
    "export": ("seqtag.export:export_main", "export a checkpoint to ONNX; tag with `seqtag predict --onnx` (onnx)"),
}

# Names imported from here by tests, scripts and configs, resolved on first use (they import torch and Lightning).
# SeqtagCLI, cli_main and trainer_defaults are defined in seqtag/commands/tagger.py.
_LAZY = {
    "SeqtagCLI": "seqtag.commands.tagger",
    "cli_main": "seqtag.commands.tagger",
    "trainer_defaults": "seqtag.commands.tagger",
    "AtomicCheckpointIO": "seqtag.callbacks",
    "AutoEarlyStopping": "seqtag.callbacks",
    "BestCheckpoint": "seqtag.callbacks",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def usage() -> str:
    """The text of ``seqtag --help``: every command, from the tables above."""
    commands = {**LIGHTNING_COMMANDS, **{name: text for name, (_, text) in EXTRA_COMMANDS.items()}}
    width = max(map(len, commands))
    lines = [
        "usage: seqtag COMMAND [options]",
        "",
        "Sequence labeling (named entities, part-of-speech tags, chunks) with BiLSTM-CRF taggers.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in commands.items()),
        "",
        "`seqtag COMMAND --help` lists the options of a command, e.g. `seqtag fit --help`;",
        "`seqtag fit --config CONFIG --print_config` prints the effective configuration.",
        "--debug (or SEQTAG_DEBUG=1) shows the traceback of an input error.",
    ]
    return "\n".join(lines)


def _run(args: list[str], from_console: bool) -> int:
    """Runs the command ``args[0]`` and returns its exit status."""
    if args[0] in EXTRA_COMMANDS:
        module, function = EXTRA_COMMANDS[args[0]][0].split(":")
        return getattr(importlib.import_module(module), function)(args[1:])
    if args[0] == "predict" and any(a == "--onnx" or a.startswith("--onnx=") for a in args):
        from seqtag.onnx_runner import predict_main  # onnxruntime alone: no torch, no Lightning

        return predict_main(args[1:])
    if args[0] == "predict":
        from seqtag.commands.predict import predict_main as predict_direct  # one device, no Lightning

        status = predict_direct(args[1:])
        if status is not None:
            return status
    from seqtag.commands.tagger import cli_main

    if from_console:
        sys.argv[1:] = args  # LightningCLI reads sys.argv itself, and warns when given a second argument list
    cli_main(None if from_console else args)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``seqtag`` console script; returns the exit status."""
    from_console = argv is None or argv == sys.argv[1:]
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("SEQTAG_DEBUG") == "1"
    args = [a for a in argv if a != "--debug"]
    if not args or args[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    # A fit is `seqtag fit ...`, `seqtag lm fit ...` or, after LightningCLI's own options, `seqtag -c CONFIG fit ...`.
    fitting = args[0] == "fit" or args[:2] == ["lm", "fit"] or (args[0].startswith("-") and "fit" in args)
    status = 1  # an exception that is not an input error ends the W&B run as failed
    with warnings.catch_warnings():  # the filters last as long as the command (main may run twice in one process)
        quiet_libraries(fitting=fitting)
        try:
            status = _run(args, from_console)
            sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        except SeqtagInputError as err:
            status = 2
            if debug:
                raise
            print(f"seqtag: error: {err}", file=sys.stderr)
        except BrokenPipeError:
            status = quiet_broken_pipe()
        except SystemExit:  # `seqtag fit --help | head`: argparse printed and exits; its output may meet a closed pipe
            try:
                sys.stdout.flush()
            except BrokenPipeError:
                quiet_broken_pipe()
            raise
        finally:
            finish_wandb_run(status)
    return status


__all__ = ["EXTRA_COMMANDS", "LIGHTNING_COMMANDS", "main", "usage"]

if __name__ == "__main__":
    sys.exit(main())
