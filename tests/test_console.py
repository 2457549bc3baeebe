"""What a user sees from the `seqtag` command itself: every command in the help, a fast start for `--help` and
`score` (no torch), a quiet end when the reader of the output goes away, files with ordinary permissions."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from seqtag.atomic import atomic_open, atomic_write_text
from seqtag.cli import EXTRA_COMMANDS, LIGHTNING_COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "lightning", "datasets", "wandb")
PREDICTIONS = "EU B-ORG B-ORG\nrejects O O\nGerman B-MISC B-MISC\n\nPeter B-PER B-PER\nBlackburn I-PER B-LOC\n"


def python(code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, env=environment, timeout=120
    )


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    listed = [
        line.split()[0] for line in capsys.readouterr().out.split("commands:\n")[1].splitlines() if line[:2] == "  "
    ]
    assert listed == ["fit", "validate", "test", "predict", "score", "lm", "hub", "serve", "tune", "export"]
    assert listed == [*LIGHTNING_COMMANDS, *EXTRA_COMMANDS]
    assert main([]) == 2 and "usage: seqtag COMMAND" in capsys.readouterr().err


@pytest.mark.parametrize(
    "code",
    [
        "import seqtag.cli",
        "from seqtag.cli import main; assert main(['--help']) == 0",
        "from seqtag.cli import main; import sys; assert main(['score', sys.argv[1]]) == 0",
    ],
    ids=["import", "help", "score"],
)
def test_cli_starts_without_torch(tmp_path: Path, code: str) -> None:
    predictions = tmp_path / "pred.conll"
    predictions.write_text(PREDICTIONS)
    check = f"{code}\nimport sys\nprint('heavy:', [m for m in {HEAVY!r} if m in sys.modules])"
    result = python(check, str(predictions))
    assert result.returncode == 0, result.stderr
    assert "heavy: []" in result.stdout, result.stdout


def test_lightning_names_still_resolve_from_the_cli_module() -> None:
    result = python("from seqtag.cli import SeqtagCLI, cli_main, BestCheckpoint; print(SeqtagCLI.__module__)")
    assert result.returncode == 0 and result.stdout.strip() == "seqtag.commands.tagger", result.stderr


def test_closed_pipe_ends_quietly(tmp_path: Path) -> None:
    """`seqtag score FILE | head`: the reader goes away before the report is written."""
    predictions = tmp_path / "pred.conll"
    predictions.write_text(PREDICTIONS)
    process = subprocess.Popen(
        [sys.executable, "-m", "seqtag.cli", "score", str(predictions)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    process.stdout.close()  # nothing will read the report
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 1
    assert stderr == ""


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_files_get_the_mode_open_would_give(tmp_path: Path, umask: int) -> None:
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "report.md", "text\n")
        with atomic_open(tmp_path / "best.ckpt", "wb") as f:
            f.write(b"\0")
    finally:
        os.umask(previous)
    for name in ("report.md", "best.ckpt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask
    (tmp_path / "report.md").chmod(0o600)
    atomic_write_text(tmp_path / "report.md", "new text\n")  # a file replaced keeps its mode, as with open()
    assert stat.S_IMODE((tmp_path / "report.md").stat().st_mode) == 0o600


@pytest.mark.parametrize(("stage", "told"), [("fit", True), ("test", False), ("predict", False)])
def test_moved_checkpoint_folder_is_news_only_when_resuming_a_fit(tmp_path: Path, caplog, stage: str, told: bool):
    import torch

    from seqtag.callbacks import BestCheckpoint

    best = tmp_path / "old" / "best.ckpt"
    best.parent.mkdir()
    best.write_bytes(b"")
    score = torch.tensor(0.9)
    state = {
        "monitor": "val/f1", "best_model_score": score, "best_model_path": str(best), "current_score": score,
        "dirpath": str(best.parent), "best_k_models": {str(best): score}, "kth_best_model_path": str(best),
        "kth_value": score, "last_model_path": str(tmp_path / "old" / "last.ckpt"),
    }  # fmt: skip
    callback = BestCheckpoint(monitor="val/f1", dirpath=tmp_path / "new")
    callback._stage = stage  # as setup() records it before Lightning restores the checkpoint
    with caplog.at_level(logging.INFO):
        callback.load_state_dict(state)
    assert any(message.startswith("Checkpoints now go to") for message in caplog.messages) == told
    assert callback.best_model_path == str(best)  # the best model to beat is kept either way


def test_console_filters_keep_logs_free_of_progress_bars_and_the_frozen_encoders_eval_mode(monkeypatch) -> None:
    import warnings

    from seqtag.console import quiet_libraries

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "")  # recorded, so the test's value is undone after it
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries(fitting=True)  # stderr is captured here: not a terminal
        warnings.warn("Found 120 module(s) in eval mode at the start of training. This may ...", stacklevel=1)
        warnings.warn("Found something else", stacklevel=1)
    assert [str(w.message) for w in caught] == ["Found something else"]
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"  # transformers' "Loading weights" bar reads it
