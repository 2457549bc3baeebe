"""DDP on CPU (gloo, 2 processes): evaluation is exact and training writes a checkpoint.

Evaluation batches never repeat a sentence across processes and the metric states are sums, so ``seqtag test``
under DDP must write the same ``test_report.json`` as a single process, even when the ranks get different numbers of
batches and sentences. Each run is a ``seqtag`` subprocess, as DDP's launcher starts the other rank from the
command line. The module's checkpoint also serves a check that ``seqtag test`` logs its report to W&B when a
logger is given.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqtag.tagger import Tagger

SEQTAG = str(Path(sys.executable).with_name("seqtag"))
NAMES = {
    "PER": [["Anna"], ["Bela", "Kovacs"], ["Chen"], ["Dora", "Lind"]],
    "LOC": [["Paris"], ["New", "Lorem"], ["Oslo"]],
    "ORG": [["Acme", "Corp"], ["Ubu"], ["Zeta", "Bank"]],
}
WORDS = "the a visited met with in from said on today and of".split()
N_TEST = 23  # odd: with eval_batch_size 5 the two ranks get 3 and 2 batches (15 and 8 sentences)
DDP = ["--trainer.strategy=ddp", "--trainer.devices=2"]


def write_conll(path: Path, n: int, rng: random.Random) -> None:
    """``n`` made-up IOB2 NER sentences, one ``token tag`` pair a line."""
    lines = []
    for _ in range(n):
        for _ in range(rng.randint(3, 9)):
            if rng.random() < 0.3:
                type_ = rng.choice(sorted(NAMES))
                name = rng.choice(NAMES[type_])
                lines += [f"{token} {'B' if i == 0 else 'I'}-{type_}" for i, token in enumerate(name)]
            else:
                lines.append(f"{rng.choice(WORDS)} O")
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def single_gold_spans(path: Path) -> int:
    """Gold spans of an IOB2 file: one per B- tag."""
    return sum(1 for line in path.read_text().splitlines() if line.split(" ")[-1].startswith("B-"))


def run_seqtag(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", PYTHONWARNINGS="ignore")
    proc = subprocess.run([SEQTAG, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"seqtag {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module")
def data_args(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    folder = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    for split, n in [("train", 40), ("validation", 15), ("test", N_TEST)]:
        write_conll(folder / f"{split}.conll", n, rng)
    return [
        *(f"--data.{split}={folder / f'{split}.conll'}" for split in ("train", "validation", "test")),
        "--data.batch_size=8",
        "--data.eval_batch_size=5",
        "--model.word_dim=16",
        "--model.hidden_size=16",
        "--model.char_hidden=10",
        "--trainer.logger=false",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


@pytest.fixture(scope="module")
def checkpoint(data_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """best.ckpt (with vocab.json beside it) after one epoch of single-process training."""
    root = tmp_path_factory.mktemp("fit")
    run_seqtag("fit", *data_args, "--trainer.max_epochs=1", f"--trainer.default_root_dir={root}")
    path = root / "checkpoints" / "best.ckpt"
    assert path.is_file()
    return path


def copy_checkpoint(checkpoint: Path, folder: Path) -> Path:
    """The checkpoint in its own folder, so each test run writes its report there."""
    folder.mkdir()
    shutil.copy(checkpoint, folder / "best.ckpt")
    shutil.copy(checkpoint.parent / "vocab.json", folder / "vocab.json")
    return folder / "best.ckpt"


# One evaluation batch in all: it is split so that each process gets one (a process without a batch would wait
# forever for the others' metric synchronisation).
ONE_BATCH = ["--data.bucketing=sorted", "--data.eval_batch_size=256"]


@pytest.mark.slow
@pytest.mark.parametrize("batches", [[], ONE_BATCH], ids=["several_batches", "one_batch"])
def test_ddp_test_report_equals_single_process(
    data_args: list[str], checkpoint: Path, tmp_path: Path, batches: list[str]
) -> None:
    reports, losses = {}, {}
    for name, extra in [("single", []), ("ddp", DDP)]:
        ckpt = copy_checkpoint(checkpoint, tmp_path / name)
        options = [*data_args, *batches, *extra, f"--ckpt_path={ckpt}", f"--trainer.default_root_dir={tmp_path}"]
        output = run_seqtag("test", *options).stdout
        reports[name] = json.loads((ckpt.parent / "test_report.json").read_text())
        losses[name] = float(re.search(r"test/loss\W+([0-9.]+)", output).group(1))
    single, ddp = reports["single"], reports["ddp"]
    # The loss is the mean over all test sentences, not the mean of the two processes' means.
    assert losses["ddp"] == pytest.approx(losses["single"], rel=1e-5)
    # Every test token and every gold span counted exactly once in both runs.
    test_file = Path(next(a for a in data_args if a.startswith("--data.test=")).split("=", 1)[1])
    n_tokens = sum(1 for line in test_file.read_text().splitlines() if line.strip())
    assert sum(map(sum, single["confusion"]["matrix"])) == n_tokens
    assert sum(s["support"] for s in single["per_type"].values()) == single_gold_spans(test_file)
    assert ddp == single
    for name in ("single", "ddp"):
        assert (tmp_path / name / "test_report.md").is_file()
        assert (tmp_path / name / "test_f1_per_type.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / name / "test_confusion.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_ddp_fit_writes_checkpoint(data_args: list[str], tmp_path: Path) -> None:
    # A GRU encoder with a softmax head here; the LSTM-CRF default goes through DDP in the test above. With weight
    # averaging: each rank keeps the same average (the gradients are all-reduced) and rank 0 saves it.
    model = ["--model.cell=gru", "--model.head=softmax"]
    averaging = ["--trainer.callbacks+=seqtag.callbacks.ExponentialMovingAverage", "--trainer.callbacks.decay=0.9"]
    options = [*DDP, *model, *averaging, "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}"]
    run_seqtag("fit", *data_args, *options)
    path = tmp_path / "checkpoints" / "best.ckpt"
    assert path.is_file() and (tmp_path / "checkpoints" / "vocab.json").is_file()
    saved = torch.load(path, map_location="cpu", weights_only=True)
    averaged, raw = saved["state_dict"]["projection.weight"], saved["current_model_state"]["projection.weight"]
    assert torch.isfinite(averaged).all() and not torch.equal(averaged, raw)
    tagger = Tagger.load(path)
    tags = tagger.tag([["Anna", "visited", "Paris"]])
    assert len(tags[0]) == 3 and set(tags[0]) <= {"O", *(f"{p}-{t}" for p in "BI" for t in NAMES)}  # IOB2, as the data


def test_test_logs_report_to_wandb(data_args: list[str], checkpoint: Path, tmp_path: Path) -> None:
    """A logger given on the command line survives `seqtag test` and receives the table and both plots."""
    ckpt = copy_checkpoint(checkpoint, tmp_path / "ckpt")
    save_dir = tmp_path / "wandb_runs"
    args = [a for a in data_args if a != "--trainer.logger=false"]
    logger = ["--trainer.logger=seqtag.loggers.WandbLogger", f"--trainer.logger.save_dir={save_dir}"]
    run_seqtag("test", *args, *logger, "--trainer.logger.offline=true", f"--ckpt_path={ckpt}")
    (run,) = (save_dir / "wandb").glob("offline-run-*")
    media = {p.name.split("_")[0] for p in (run / "files" / "media").rglob("*") if p.is_file()}
    assert {"per", "f1", "confusion"} <= media, sorted(media)
