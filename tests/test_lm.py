"""Character LM: data reading and chunking, both directions, the reference LSTM, and `seqtag lm` end to end."""

from __future__ import annotations

import logging
import math
import random
import re
from pathlib import Path

import pytest
import torch

from seqtag.cli import main
from seqtag.data.charlm import CharLMDataModule, CharVocab, chunk, read_text
from seqtag.modules.charlm import CharLanguageModel

WORDS = "the cat sat on a mat and dog ran to big red house".split()


def write_text(path: Path, lines: int = 300, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(8)) for _ in range(lines)) + "\n")
    return path


def fit_args(tmp_path: Path, text: Path, *extra: str) -> list[str]:
    return [
        "lm",
        "fit",
        f"--data.train={text}",
        "--data.seq_len=20",
        "--data.batch_size=16",
        "--model.hidden_size=32",
        "--model.embedding_dim=8",
        "--model.optimizer=torch.optim.Adam",
        "--model.optimizer.lr=0.01",
        "--trainer.logger=false",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path / 'run'}",
        *extra,
    ]


def test_bpc(capsys: pytest.CaptureFixture, args: list[str]) -> float:
    assert main(args) == 0
    found = re.search(r"test bits per character: ([0-9.]+)", capsys.readouterr().out)
    assert found, "seqtag lm test printed no bpc"
    return float(found.group(1))


test_bpc.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def forward_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp_path = tmp_path_factory.mktemp("forward")
    text = write_text(tmp_path / "tiny.txt")
    assert main(fit_args(tmp_path, text)) == 0
    return text, tmp_path / "run" / "checkpoints" / "best.ckpt"


def test_fit_writes_checkpoint_with_vocabulary(forward_run: tuple[Path, Path]) -> None:
    text, ckpt = forward_run
    checkpoint = torch.load(ckpt, weights_only=True)
    vocab = CharVocab.from_json(checkpoint["seqtag_char_vocab"])
    assert vocab.chars[0] == "<unk>" and set(vocab.chars[1:]) == set(text.read_text())
    assert (ckpt.parent / "vocab.json").is_file()
    scores = [float(s["best_model_score"]) for s in checkpoint["callbacks"].values() if "best_model_score" in s]
    assert scores and all(math.isfinite(s) for s in scores)


def test_trained_bpc_beats_uniform(forward_run: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    text, ckpt = forward_run
    held_out = write_text(tmp_path / "held_out.txt", lines=50, seed=1)
    args = ["lm", "test", f"--data.train={text}", f"--data.test={held_out}", "--model.hidden_size=32",
            "--model.embedding_dim=8", "--trainer.enable_progress_bar=false", f"--ckpt_path={ckpt}",
            f"--trainer.default_root_dir={tmp_path}"]  # fmt: skip
    bpc = test_bpc(capsys, args)
    uniform = math.log2(len(set(text.read_text())) + 1)
    assert math.isfinite(bpc) and bpc < uniform - 0.5, (bpc, uniform)


def test_generate_length(forward_run: tuple[Path, Path], capsys) -> None:
    _, ckpt = forward_run
    model = CharLanguageModel.load(ckpt)
    assert len(model.generate("the cat", 37, temperature=0.7, seed=0)) == 37
    assert len(model.generate("", 5, temperature=0)) == 5
    args = ["lm", "generate", f"--ckpt_path={ckpt}", "--prompt=the ", "--length=50", "--seed=3"]
    assert main(args) == 0
    printed = capsys.readouterr().out.removesuffix("\n")
    assert printed.startswith("the ") and len(printed) == 4 + 50


def test_backward_direction(tmp_path: Path, capsys, caplog) -> None:
    text = write_text(tmp_path / "tiny.txt")
    with caplog.at_level(logging.INFO):
        assert main(fit_args(tmp_path, text, "--model.direction=backward", "--trainer.max_epochs=1")) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "best.ckpt"
    assert f"Best checkpoint: {ckpt}" in capsys.readouterr().out
    # Without a progress bar each epoch still gets a line, and the end names the best epoch.
    epoch = r"epoch 1/1: train/loss [0-9.]+, val/loss [0-9.]+, val/bpc [0-9.]+ \*, [0-9.]+ s"
    assert any(re.fullmatch(epoch, message) for message in caplog.messages), caplog.messages
    assert any(re.fullmatch(r"best epoch: 1 of 1, val/bpc [0-9.]+", message) for message in caplog.messages)
    model = CharLanguageModel.load(ckpt)
    assert model.hparams.direction == "backward"
    args = ["lm", "generate", f"--ckpt_path={ckpt}", "--prompt= red house", "--length=30", "--seed=0"]
    assert main(args) == 0
    printed = capsys.readouterr().out.removesuffix("\n")
    assert printed.endswith(" red house") and len(printed) == 30 + 10


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)` but the `self.trainer`")  # no Trainer here
def test_backward_reads_reversed_text() -> None:
    torch.manual_seed(0)
    forward = CharLanguageModel(vocab_size=7, hidden_size=8, dropout=0.0)
    backward = CharLanguageModel(vocab_size=7, hidden_size=8, dropout=0.0, direction="backward")
    backward.load_state_dict(forward.state_dict())
    batch = torch.randint(7, (3, 11))
    assert torch.allclose(backward._common_step(batch, "val"), forward._common_step(batch.flip(1), "val"))


def test_reference_implementation_matches_torch() -> None:
    torch.manual_seed(0)
    fast = CharLanguageModel(vocab_size=9, hidden_size=6, num_layers=2, dropout=0.0)
    reference = CharLanguageModel(vocab_size=9, hidden_size=6, num_layers=2, dropout=0.0, implementation="reference")
    reference.load_state_dict(fast.state_dict())
    ids = torch.randint(9, (2, 13))
    assert torch.allclose(fast(ids), reference(ids), atol=1e-5)


def test_chunks_overlap_by_one() -> None:
    ids = torch.arange(10)
    assert chunk(ids, 3).tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    assert chunk(torch.arange(3), 100).tolist() == [[0, 1, 2]]


def test_conll_format_and_validation_fraction(tmp_path: Path) -> None:
    conll = tmp_path / "train.conll"
    conll.write_text("-DOCSTART- -X- O O\n\nEU NNP I-NP I-ORG\nrejects VBZ I-VP O\n\nPeter NNP I-NP I-PER\n")
    assert read_text(str(conll), format="conll") == "EU rejects\nPeter\n"
    text = write_text(tmp_path / "tiny.txt", lines=100)
    data = CharLMDataModule(str(text), validation_fraction=0.1, seq_len=10)
    assert data._text["train"].endswith("\n") and data._text["train"] + data._text["validation"] == text.read_text()
    assert 0.05 < len(data._text["validation"]) / len(text.read_text()) < 0.15
    with pytest.raises(ValueError, match="validation_fraction should be in"):
        CharLMDataModule(str(text), validation_fraction=0.0)
