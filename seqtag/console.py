"""What ``seqtag`` prints: library messages that are understood and harmless are silenced, output read by a program
gets no colour codes, and a reader that goes away (``seqtag score FILE | head``) ends the command quietly.

Nothing here imports torch, Lightning or W&B: the filters are installed by name before those libraries load, so
``seqtag score`` stays fast. Messages a user must act on are kept.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Lightning's INFO messages go through these loggers (`rank_zero_info`); which one depends on import order.
_LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def _not_an_advertisement(record: logging.LogRecord) -> bool:
    # Lightning's "💡 Tip: For seamless cloud logging ... try installing litlogger" (and litmodels) on every run:
    # advice about a hosted service, nothing about this run.
    return not str(record.msg).startswith("💡 Tip:")


def _is_terminal(stream: object) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def quiet_libraries(fitting: bool) -> None:
    """Installs seqtag's warning and logging filters for a command run from the console.

    Args:
        fitting: the command trains (``fit``, ``lm fit``): warnings about resuming from a checkpoint are kept.
    """
    # Outside training seqtag's BucketBatchSampler yields every sentence exactly once (tests/data/test_datamodule.py,
    # test_bucket_sampler_covers_each_sentence_once_across_ranks); Lightning warns on every `predict` because it
    # cannot check that for a custom batch sampler.
    warnings.filterwarnings(
        "ignore",
        message=r"You are using a custom batch sampler `BucketBatchSampler` for prediction",
        category=UserWarning,
    )
    # Lightning's own pytree helper constructs torch's deprecated LeafSpec; nothing a user can change.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # A frozen encoder (model.transformer, the character LMs) stays in eval mode on purpose: no dropout inside it.
    warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
    if not fitting:
        # test / validate / predict restore only the weights: the training callbacks whose state the checkpoint also
        # holds (early stopping, moving average...) play no part. Resuming a fit keeps the warning.
        warnings.filterwarnings(
            "ignore", message=r"Be aware that when using `ckpt_path`, callbacks used to create", category=UserWarning
        )
    if not _is_terminal(sys.stderr):
        # A progress bar redraws itself with carriage returns: in a log file or a pipe each redraw is one more run of
        # junk. `datasets` reads this when imported (the command imports it later), and child processes inherit it.
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # and transformers' "Loading weights" bar
    for name in _LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if _not_an_advertisement not in logger.filters:
            logger.addFilter(_not_an_advertisement)


def finish_wandb_run(exit_code: int = 0) -> None:
    """Finishes this process's W&B run, if there is one, while the command's streams are still open.

    Left to W&B's exit hook, the run's summary comes after Python has started shutting down, on standard output and
    with colour codes even when the output is a file or a pipe.
    """
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish(exit_code=exit_code)


def quiet_broken_pipe() -> int:
    """The reader of standard output went away (``seqtag score FILE | head``): stop without a traceback.

    Standard output is pointed at ``os.devnull`` so that the interpreter's final flush does not fail again (as the
    Python documentation on SIGPIPE advises). Returns the exit status, 1.
    """
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test's captured stdout)
        pass
    return 1


def flag(value: str) -> bool:
    """A true/false command-line value as LightningCLI reads it: true, 1, yes or false, 0, no."""
    import argparse

    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
