"""End to end through the real `seqtag` entry point: fit → test → predict, config printing, W&B offline."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqtag.cli import cli_main
from seqtag.errors import SeqtagInputError
from seqtag.tagger import Tagger
from tests.conftest import write

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "seqtag" / "examples" / "quickstart"


def seqtag(*args, env=None, cwd=None, check=True):
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "seqtag.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        cwd=cwd or ROOT,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"seqtag {' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )
    return result


def small_split(tmp_path, name, count):
    text = (QUICKSTART / f"{name}.conll").read_text().split("\n\n")[:count]
    return write(tmp_path / f"{name}.conll", "\n\n".join(text) + "\n")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    train, dev, test = small_split(tmp, "train", 300), small_split(tmp, "dev", 60), small_split(tmp, "test", 61)
    args = [
        "--config", ROOT / "configs" / "quickstart.yaml",
        "--data.train", train, "--data.validation", dev, "--data.test", test,
        "--data.cache_dir", tmp / "cache",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", tmp / "runs",
    ]  # fmt: skip
    fit = seqtag("fit", *args, "--trainer.max_epochs", 3)
    best = Path(fit.stdout.split("Best checkpoint: ")[1].split()[0])
    if not best.is_absolute():
        best = ROOT / best
    return tmp, args, best


def test_fit_writes_checkpoints_vocab_and_config(trained):
    tmp, _, best = trained
    folder = best.parent
    assert best.name == "best.ckpt" and (folder / "last.ckpt").exists()
    vocab = json.loads((folder / "vocab.json").read_text())
    assert vocab["scheme"] == "BIOES" and vocab["data_scheme"] == "IOB2" and "Anna" in vocab["words"]
    configs = list((tmp / "runs").rglob("config.yaml"))
    assert configs and "hidden_size: 64" in configs[0].read_text()


@pytest.fixture(scope="module")
def tested(trained):
    """`seqtag test` of the trained checkpoint: its output, and test_report.json beside the checkpoint."""
    _, args, best = trained
    return seqtag("test", *args, "--ckpt_path", best)


def test_test_prints_and_writes_span_scores(trained, tested):
    best = trained[2]
    assert "| **overall** |" in tested.stdout
    report = json.loads((best.parent / "test_report.json").read_text())
    assert 0.5 < report["f1"] <= 1.0
    assert set(report["per_type"]) == {"LOC", "MISC", "ORG", "PER"}
    assert sum(t["support"] for t in report["per_type"].values()) > 60


def test_predict_text_and_conll(trained, tested):
    tmp, args, best = trained
    text = write(tmp / "sentences.txt", "Anna Schmidt flew to Tokyo .\n\nShares of Siemens fell in Berlin trading .\n")
    out = tmp / "pred.conll"
    seqtag("predict", *args, "--ckpt_path", best, "--data.predict", text, "--predict_output", out)
    blocks = out.read_text().strip().split("\n\n")
    assert len(blocks) == 2
    first = [line.split() for line in blocks[0].splitlines()]
    assert [tok for tok, _ in first] == ["Anna", "Schmidt", "flew", "to", "Tokyo", "."]
    assert all(tag == "O" or tag[:2] in ("B-", "I-") for _, tag in first)  # written in the data's scheme (IOB2)
    # A column file with gold tags gives token, gold, predicted: a file `seqtag score` reads.
    gold = tmp / "test.conll"
    scored = tmp / "scored.conll"
    seqtag("predict", *args, "--ckpt_path", best, "--data.predict", gold, "--predict_output", scored)
    line = scored.read_text().splitlines()[0].split()
    assert len(line) == 3
    result = seqtag("score", scored, "--json")
    report = json.loads(result.stdout)
    test_report = json.loads((best.parent / "test_report.json").read_text())
    assert report["f1"] == pytest.approx(test_report["f1"], abs=1e-6)  # the report holds float32 values
    # Token accuracy too: counted on the data's IOB2 tags, not on the BIOES tags the model was trained in.
    assert report["accuracy"] == pytest.approx(test_report["accuracy"], abs=1e-6)


def test_unknown_words_script_splits_the_test_recall(trained, tested):
    """scripts/unknown_words.py: its three rows hold every gold entity once, and their recalls add up to the
    recall `seqtag test` reports."""
    tmp, _, best = trained
    result = subprocess.run(
        [sys.executable, ROOT / "scripts" / "unknown_words.py", best, tmp / "test.conll"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line.split("|")[1:-1] for line in result.stdout.splitlines()[2:]]
    assert [row[0].strip() for row in rows] == ["seen in training", "pretrained vector only", "unknown (UNK)"]
    totals = [int(row[1]) for row in rows]
    report = json.loads((best.parent / "test_report.json").read_text())
    assert sum(totals) == sum(t["support"] for t in report["per_type"].values())
    found = sum(total * float(row[2]) / 100 for total, row in zip(totals, rows))
    assert found / sum(totals) == pytest.approx(report["recall"], abs=0.002)  # recalls printed to 0.1%
    assert totals[2] > 0  # the small training split leaves test entities with unknown words


def test_predict_in_bfloat16_agrees_with_float32(trained):
    """`--trainer.precision=bf16-true` runs the model in bfloat16 (the CRF in float32): well-formed output whose
    tags nearly all equal the float32 ones."""
    tmp, args, best = trained
    gold = tmp / "test.conll"
    outputs = {}
    for precision in ("32-true", "bf16-true"):
        out = tmp / f"pred-{precision}.conll"
        seqtag("predict", *args, "--ckpt_path", best, "--data.predict", gold, "--predict_output", out,
               f"--trainer.precision={precision}")  # fmt: skip
        outputs[precision] = [line.split() for line in out.read_text().splitlines() if line]
    full, half = outputs["32-true"], outputs["bf16-true"]
    assert len(full) == len(half) > 500
    assert [row[:2] for row in full] == [row[:2] for row in half]  # tokens and gold tags
    same = sum(a[2] == b[2] for a, b in zip(full, half))
    assert same / len(full) > 0.98
    report = json.loads(seqtag("score", tmp / "pred-bf16-true.conll", "--json").stdout)
    assert report["f1"] > 0.5


def test_python_api_tags_text(trained):
    _, _, best = trained
    tagger = Tagger.load(best)
    tags = tagger.tag(["Anna Schmidt flew to Tokyo .", ["in", "Berlin"], []])
    assert len(tags[0]) == 6 and len(tags[1]) == 2 and tags[2] == []
    assert tags[1][1].endswith("LOC")
    tagger.to(torch.bfloat16)  # tagging in bfloat16: same shapes, tags from the same label set
    half = tagger.tag(["Anna Schmidt flew to Tokyo .", ["in", "Berlin"], []])
    assert [len(t) for t in half] == [6, 2, 0] and set(half[0] + half[1]) <= set(tagger.vocab.labels) | {"O"}


def documents_split(tmp_path, name, count, per_document):
    """A quickstart split cut into documents of ``per_document`` sentences by -DOCSTART- lines."""
    sentences = (QUICKSTART / f"{name}.conll").read_text().strip().split("\n\n")[:count]
    parts = ["\n\n".join(sentences[i : i + per_document]) for i in range(0, len(sentences), per_document)]
    return write(tmp_path / f"{name}.docs.conll", "".join(f"-DOCSTART- O\n\n{part}\n\n" for part in parts))


@pytest.mark.parametrize("option", ["document_memory", "document_context"])
def test_document_model_fits_tests_and_predicts(tmp_path, option):
    """A tagger that reads documents, end to end: batches of whole documents in training, evaluation and
    prediction; a predictions file as long as the input; the Python API groups sentences into documents."""
    train, dev = documents_split(tmp_path, "train", 200, 8), documents_split(tmp_path, "dev", 40, 8)
    args = [
        "--config", ROOT / "configs" / "quickstart.yaml", f"--model.{option}=true",
        "--data.train", train, "--data.validation", dev, "--data.test", dev, "--data.cache_dir", tmp_path / "cache",
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", tmp_path,
    ]  # fmt: skip
    fit = seqtag("fit", *args, "--trainer.max_epochs", 2)
    best = Path(fit.stdout.split("Best checkpoint: ")[1].split()[0])
    best = best if best.is_absolute() else ROOT / best
    tested = seqtag("test", *args, "--ckpt_path", best)
    assert "test/f1" in tested.stdout
    out = tmp_path / "pred.conll"
    seqtag("predict", *args, "--ckpt_path", best, "--data.predict", dev, "--predict_output", out)
    assert len(out.read_text().strip().split("\n\n")) == 40
    wrong = seqtag("fit", *args, "--data.batch_by_document=false", "--trainer.max_epochs=1", check=False)
    assert wrong.returncode == 2 and f"model.{option} looks across" in wrong.stderr
    tagger = Tagger.load(best)
    assert tagger.reads_documents
    sentences = ["Anna Schmidt flew to Tokyo .", "Schmidt said so .", "Schmidt said so ."]
    one_document = tagger.tag(sentences)
    apart = tagger.tag(sentences, documents=[0, 0, 1])
    alone = tagger.tag(sentences[2:])
    assert apart[2] == alone[0] and len(one_document) == 3
    with pytest.raises(SeqtagInputError, match="document ids for 2"):
        tagger.tag(sentences, documents=[0, 1])


def test_print_config_shows_effective_defaults():
    result = seqtag("fit", "--config", ROOT / "configs" / "conll2003.yaml", "--print_config")
    assert "class_path: torch.optim.Adam" in result.stdout
    assert "hidden_size: 300" in result.stdout and "patience: 8" in result.stdout
    assert "seqtag.loggers.WandbLogger" in result.stdout


def test_wandb_runs_offline_without_login(tmp_path):
    """No login and no WANDB_MODE: the run goes offline by itself, never blocks, and leaves its files."""
    train = small_split(tmp_path, "train", 40)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    environment.update(HOME=str(tmp_path), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "seqtag.cli", "fit", "--config", str(ROOT / "configs" / "quickstart.yaml"),
         "--data.train", str(train), "--data.validation", str(train), "--data.cache_dir", str(tmp_path / "cache"),
         "--trainer.max_epochs", "1", "--trainer.enable_progress_bar=false",
         "--trainer.logger.init_args.save_dir", str(tmp_path / "wb"), "--trainer.default_root_dir", str(tmp_path)],
        capture_output=True, text=True, env=environment, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb")), "the offline run holds its event log"
    assert "wandb sync" in result.stdout + result.stderr
    assert "anonymous" not in result.stdout + result.stderr  # no deprecation warning on every run
    checkpoints = list((tmp_path / "wb").rglob("best.ckpt"))
    assert checkpoints


def test_default_root_dir_holds_the_runs_files_with_the_wandb_logger(tmp_path, monkeypatch):
    """`--trainer.default_root_dir X` puts checkpoints and W&B's files under X, as without a logger (the logger's
    own save_dir, when given, wins: test above)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    train = small_split(tmp_path, "train", 40)
    root = tmp_path / "elsewhere"
    cli = cli_main(["fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.train", str(train),
                    "--data.validation", str(train), "--data.cache_dir", str(tmp_path / "cache"),
                    "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false", "--trainer.default_root_dir",
                    str(root)])  # fmt: skip
    assert Path(cli.trainer.checkpoint_callback.best_model_path).resolve().is_relative_to(root.resolve())
    assert list((root / "wandb").glob("offline-run-*"))


def test_real_data_smoke(shared_data, tmp_path):
    """A few batches of CoNLL-2003 with GloVe: the real files load, train and score."""
    result = seqtag(
        "fit", "--config", ROOT / "configs" / "conll2003.yaml",
        "--data.train", shared_data / "conll2003" / "eng.train",
        "--data.validation", shared_data / "conll2003" / "eng.testa",
        "--data.test", shared_data / "conll2003" / "eng.testb",
        "--data.word_vectors", shared_data / "embeddings" / "glove.6B.50d.filtered.txt.gz",
        "--data.cache_dir", tmp_path / "cache",
        "--trainer.max_epochs", 1, "--trainer.limit_train_batches", 30, "--trainer.limit_val_batches", 4,
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", tmp_path,
    )  # fmt: skip
    best = Path(result.stdout.split("Best checkpoint: ")[1].split()[0])
    tagger = Tagger.load(best if best.is_absolute() else ROOT / best)
    assert tagger.vocab.data_scheme == "IOB1" and tagger.scheme == "BIOES"
    assert len(tagger.vocab.words) > 20000  # train words plus dev words with a GloVe vector


def test_fit_with_validation_turned_off_by_the_trainer(tmp_path):
    """--trainer.limit_val_batches=0 with a validation split: early stopping and checkpoints follow train/loss."""
    train = small_split(tmp_path, "train", 40)
    result = seqtag(
        "fit", "--config", ROOT / "configs" / "quickstart.yaml",
        "--data.train", train, "--data.validation", train, "--data.cache_dir", tmp_path / "cache",
        "--trainer.max_epochs", 2, "--trainer.limit_val_batches=0", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", tmp_path / "runs",
    )  # fmt: skip
    best = Path(result.stdout.split("Best checkpoint: ")[1].split()[0])
    assert best.is_file() and (best.parent / "last.ckpt").is_file()
    assert "Traceback" not in result.stderr


def test_moving_average_is_what_checkpoints_hold_and_evaluation_uses(tmp_path):
    """With ExponentialMovingAverage, best.ckpt holds the averaged weights (the raw ones beside them), and evaluating
    it, in the process that trained or in a new one, reproduces the dev score recorded for it during fit."""
    train, dev = small_split(tmp_path, "train", 120), small_split(tmp_path, "dev", 40)
    args = [
        "--config", ROOT / "configs" / "quickstart.yaml", "--data.train", train, "--data.validation", dev,
        "--data.test", dev, "--data.cache_dir", tmp_path / "cache", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.callbacks+=seqtag.callbacks.ExponentialMovingAverage", "--trainer.callbacks.decay=0.9",
    ]  # fmt: skip
    cli = cli_main(["fit", *map(str, args), "--trainer.max_epochs=3", f"--trainer.default_root_dir={tmp_path}/runs"])
    best, recorded = cli.trainer.checkpoint_callback.best_model_path, cli.trainer.checkpoint_callback.best_model_score
    recorded = float(recorded)
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    averaged, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert averaged.keys() == raw.keys()
    assert not torch.equal(averaged["projection.weight"], raw["projection.weight"])

    # In the process that trained, the finished fit's average and raw weights must not replace the checkpoint's.
    (validated,) = cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)
    (tested,) = cli.trainer.test(cli.model, datamodule=cli.datamodule, ckpt_path=best, verbose=False)  # test = dev
    assert validated["val/f1"] == pytest.approx(recorded, abs=1e-6)
    assert tested["test/f1"] == pytest.approx(recorded, abs=1e-6)

    validate = seqtag("validate", *args, "--ckpt_path", best, "--trainer.default_root_dir", tmp_path / "eval")
    assert "WeightAveraging" not in validate.stderr  # no warning about the callback outside fit
    assert float(validate.stdout.split("val/f1")[1].split()[1]) == pytest.approx(recorded, abs=1e-6)
