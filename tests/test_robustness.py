"""Bad input through the real entry point: one paragraph naming the file and line (or the config key), a non-zero
exit status and no traceback; a run killed mid-training resumes to the same weights; a NaN loss stops training."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import pytest
import torch

from seqtag.cli import main
from seqtag.data import schemes
from seqtag.data.datamodule import TaggingDataModule, iter_batches
from seqtag.data.vocab import MAX_CHARS_PER_TOKEN, Vocab
from seqtag.errors import SeqtagInputError
from seqtag.tagger import VOCAB_KEY, Tagger
from tests.conftest import write

ROOT = Path(__file__).resolve().parent.parent
TINY_MODEL = ["--model.hidden_size=8", "--model.word_dim=8", "--model.char_dim=4", "--model.char_hidden=4"]
WORDS = ["went", "to", "the", "big", "city", "and", "saw"]
NAMES = {"PER": ["john", "mary"], "LOC": ["paris", "london"], "ORG": ["acme", "ibm"], "MISC": ["euro", "nobel"]}


def conll(sentences: int, seed: int = 0, types: tuple[str, ...] = ("PER", "LOC", "ORG")) -> str:
    """IOB2 text: one `token tag` per line, a blank line between sentences."""
    rng = random.Random(seed)
    blocks = []
    for _ in range(sentences):
        lines = []
        for _ in range(rng.randint(3, 8)):
            if rng.random() < 0.3:
                type_ = rng.choice(types)
                lines.append(f"{rng.choice(NAMES[type_])} B-{type_}")
                if rng.random() < 0.5:
                    lines.append(f"{rng.choice(NAMES[type_])} I-{type_}")
            else:
                lines.append(f"{rng.choice(WORDS)} O")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def options(tmp_path: Path, root: str = "run", epochs: int = 1) -> list[str]:
    return [
        "--trainer.logger=false", f"--trainer.max_epochs={epochs}", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", "--trainer.default_root_dir", str(tmp_path / root),
        "--data.cache_dir", str(tmp_path / "cache"), *TINY_MODEL,
    ]  # fmt: skip


def run(capsys, *args) -> tuple[int, str]:
    """`seqtag ...` in this process: (exit status, stderr)."""
    capsys.readouterr()
    try:
        status = main([str(a) for a in args])
    except SystemExit as err:  # jsonargparse ends on a bad option with SystemExit
        status = err.code
    return status, capsys.readouterr().err


def error_line(err: str) -> str:
    """The `seqtag: error: ...` paragraph; fails when there is none or a traceback is printed."""
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("seqtag: error: ")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


@pytest.fixture
def train(tmp_path):
    return write(tmp_path / "train.conll", conll(40))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained for one epoch; its checkpoint folder and the training file."""
    tmp = tmp_path_factory.mktemp("trained")
    train = write(tmp / "train.conll", conll(40))
    status = main(["fit", "--data.train", str(train), *options(tmp)])
    assert status == 0
    return tmp / "run" / "checkpoints", train


# --------------------------------------------------------------------------------------------- data files
NO_SENTENCE = "no sentence found (the file is empty or holds only blank lines)"


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.conll", None, ": no such file or folder (and not a Hugging Face hub name like 'owner/name')"),
        ("folder", "folder", ": is a folder but not a dataset saved with `save_to_disk`; give a data file instead"),
        ("empty.conll", "", f": {NO_SENTENCE}"),
        ("blank.conll", "\n \n\t\n\n", f": {NO_SENTENCE}"),
        ("cols.conll", "EU B-ORG\nrejects O\ncity NNP B-ORG\n", ":3: expected 2 columns, got 3: 'city NNP B-ORG'"),
        ("tab.conll", "EU\tB-ORG\n\tO\n", ":2: empty token (column 1 of this TAB-separated line): '\\tO'"),
        (
            "docstart.conll",
            "-DOCSTART- -X- -X- O\n\n-DOCSTART- -X- -X- O\n\n",
            ": no sentences: the file holds only -DOCSTART- lines",
        ),
        ("docstart.jsonl", '{"tokens": ["-DOCSTART-"], "tags": ["O"]}\n', ": no sentences: only -DOCSTART- rows"),
        ("empty.json", "[]\n", ": no sentence found (the file holds only [])"),
    ],
)
def test_bad_training_file(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    if content == "folder":
        path.mkdir()
    elif content is not None:
        write(path, content)
    status, err = run(capsys, "fit", "--data.train", path, *options(tmp_path))
    assert status == 2
    assert error_line(err) == f"seqtag: error: {path}{expected}"


def test_tag_column_that_does_not_exist(tmp_path, capsys, train):
    status, err = run(capsys, "fit", "--data.train", train, "--data.tag_column", 7, *options(tmp_path))
    assert status == 2
    first = train.read_text().splitlines()[0]
    assert (
        error_line(err) == f"seqtag: error: {train}:1: tag_column=7 does not exist: the file has 2 columns: {first!r}"
    )


def test_tag_not_valid_in_the_declared_scheme(tmp_path, capsys):
    path = write(tmp_path / "xper.conll", "EU B-ORG\nrejects O\n\nJohn X-PER\nsaw O\n")
    status, err = run(capsys, "fit", "--data.train", path, "--data.tag_scheme", "IOB2", *options(tmp_path))
    assert status == 2
    assert error_line(err) == (
        f"seqtag: error: {path}:4: tag 'X-PER' is not a valid IOB2 tag (expected O or B-TYPE, I-TYPE)"
    )


STRAY = (
    "is not a span tag (O, or PREFIX-TYPE with PREFIX one of B, I, E, S, M, L, U) though most tags are: fix it, or "
    "set data.tag_scheme=none if the tags are plain classes"
)


@pytest.mark.parametrize("stray", ["X-PER", "PER", "b-PER", "B-"])
def test_stray_tag_in_span_data_is_an_error_naming_its_line(tmp_path, capsys, stray):
    """Without the check, one stray tag made the scheme undetectable: the spans silently became plain classes."""
    text = conll(20).splitlines()
    text[7] = f"{text[7].split()[0]} {stray}" if text[7] else f"john {stray}"
    path = write(tmp_path / "train.conll", "\n".join(text) + "\n")
    status, err = run(capsys, "fit", "--data.train", path, *options(tmp_path))
    assert status == 2
    assert error_line(err) == f"seqtag: error: {path}:8: tag {stray!r} {STRAY}"
    status, err = run(capsys, "fit", "--data.train", path, "--data.tag_scheme", "none", *options(tmp_path))
    assert status == 0, err  # declared plain classes: learnt as they are


def test_stray_tag_in_json_lines_and_parquet_names_line_or_row(tmp_path, capsys):
    rows = [{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}, {"tokens": ["John", "saw"], "tags": ["X-PER", "O"]}]
    jsonl = write(tmp_path / "train.jsonl", json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    status, err = run(capsys, "fit", "--data.train", jsonl, *options(tmp_path))
    assert status == 2
    assert error_line(err) == f"seqtag: error: {jsonl}:3: token 1 ('John'): tag 'X-PER' {STRAY}"
    parquet = tmp_path / "train.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(parquet))
    status, err = run(capsys, "fit", "--data.train", parquet, *options(tmp_path))
    assert status == 2
    assert error_line(err) == f"seqtag: error: {parquet}: row 1 (from 0), token 1 ('John'): tag 'X-PER' {STRAY}"


def test_part_of_speech_tags_stay_plain_classes(tmp_path):
    """PTB and UD tags have no span prefix (PRP$, -LRB-, X): no scheme, no error, whatever the mix."""
    pos = "I PRP\nsaw VBD\nher PRP$\n( -LRB-\ndog NN\n) -RRB-\n\nx X\nB-52 NNP\nI-95 NNP\nO UH\n"
    data = TaggingDataModule(train=str(write(tmp_path / "pos.conll", pos)), cache_dir=str(tmp_path / "cache"))
    assert data.scheme is None and data.data_scheme is None
    assert "PRP$" in data.labels and "-LRB-" in data.labels


@pytest.mark.parametrize(
    ("tags", "span_like"),
    [
        (["O", "B-PER", "I-PER", "X-PER"], True),
        (["B-PER", "I-PER", "B-LOC", "PER", "LOC"], True),  # 2 of 4 distinct labels, and most occurrences
        (["b-per", "i-per", "o"], True),  # lower-case prefixes: misspelt span tags
        (["PRP$", "-LRB-", "-RRB-", "X", "NN", "O"], False),
        (["NOUN", "VERB", "X", "PUNCT", "S-X"], False),  # one span-looking tag among many classes
        (["O", "O"], False),
    ],
)
def test_is_span_like(tags, span_like):
    assert schemes.is_span_like([tags]) is span_like


# ------------------------------------------------------------------------------- JSON and parquet files
@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "comma.jsonl",
            '{"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]}\n'
            '{"tokens": ["John", "saw"], "tags": ["B-PER" "O"]}\n',
            ':2: invalid JSON: Expecting \',\' delimiter at column 46: \'...], "tags": ["B-PER" "O"]}\'',
        ),
        (
            "cut.jsonl",
            '{"tokens": ["EU"], "tags": ["B-ORG"]}\n{"tokens": ["John", "saw"], "tags": ["B-PER", \n',
            ":2: invalid JSON: Expecting value at column 47 (the file ends there: is it cut short?): "
            '\'..., "tags": ["B-PER", \'',
        ),
        (
            "cut.json",
            '[{"tokens": ["EU"], "tags": ["B-ORG"]},\n {"tokens": ["John"], "tags": ["B-PER"]',
            ":2: invalid JSON: Expecting ',' delimiter at column 40 (the file ends there: is it cut short?): "
            '\'...], "tags": ["B-PER"]\'',
        ),
        (
            "latin.jsonl",
            b'{"tokens": ["J\xfcrgen"], "tags": ["B-PER"]}\n',
            ":1: bytes that are not utf-8 at byte offset 14 of the file (set data.encoding to the file's encoding, "
            "e.g. latin-1 or cp1252)",
        ),
        (
            "garbage.parquet",
            b"PAR1 this is no parquet file",
            ": not a readable parquet file: Parquet magic bytes not found in footer. Either the file is corrupted or "
            "this is not a parquet file.",
        ),
        ("zero.parquet", b"", ": not a readable parquet file: Parquet file size is 0 bytes"),
    ],
)
def test_broken_json_and_parquet_files(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    status, err = run(capsys, "fit", "--data.train", path, *options(tmp_path))
    assert status == 2
    assert error_line(err) == f"seqtag: error: {path}{expected}"
    assert "Failed to" not in err  # the log lines of datasets are silenced: one paragraph only


def test_parquet_cut_short(tmp_path, capsys):
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_dict({"tokens": [["EU", "rejects"]] * 50, "tags": [["B-ORG", "O"]] * 50}).to_parquet(
        str(path)
    )
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    status, err = run(capsys, "fit", "--data.train", path, *options(tmp_path))
    assert status == 2
    assert error_line(err).startswith(f"seqtag: error: {path}: not a readable parquet file: Parquet magic bytes")


def test_unknown_validation_label_is_an_error_by_default(tmp_path, capsys, train):
    dev = write(tmp_path / "dev.conll", "john B-PER\nsaw O\n\nacme B-MISC\n")
    status, err = run(capsys, "fit", "--data.train", train, "--data.validation", dev, *options(tmp_path))
    assert status == 2
    line = error_line(err)
    assert line.startswith(f"seqtag: error: {dev}: labels never seen in training: ['S-MISC']")
    assert "data.unknown_labels=O" in line


def test_unknown_validation_label_counts_as_O_with_a_warning(tmp_path, capsys, train):
    dev = write(tmp_path / "dev.conll", "john B-PER\nsaw O\n\nacme B-MISC\n")
    args = ["fit", "--data.train", train, "--data.validation", dev, "--data.unknown_labels", "O", *options(tmp_path)]
    with pytest.warns(UserWarning, match=r"labels never seen in training are counted as 'O': \['S-MISC'\]"):
        status, _ = run(capsys, *args)
    assert status == 0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_crlf_and_bom_train_the_same_model_as_lf(tmp_path, capsys):
    text = conll(20)
    weights = {}
    variants = {
        "lf": text.encode(),
        "crlf": text.replace("\n", "\r\n").encode(),
        "bom": b"\xef\xbb\xbf" + text.encode(),
    }
    for name, data in variants.items():
        path = tmp_path / f"{name}.conll"
        path.write_bytes(data)
        status, err = run(capsys, "fit", "--data.train", path, *options(tmp_path, root=name))
        assert status == 0, err
        folder = tmp_path / name / "checkpoints"
        weights[name] = torch.load(folder / "last.ckpt", weights_only=True)["state_dict"]
        assert (
            json.loads((folder / "vocab.json").read_text())["words"]
            == json.loads((tmp_path / "lf" / "checkpoints" / "vocab.json").read_text())["words"]
        )
    for name in ("crlf", "bom"):
        assert all(torch.equal(weights["lf"][k], weights[name][k]) for k in weights["lf"])


def test_non_utf8_bytes_give_the_byte_offset_and_latin1_works(tmp_path, capsys):
    text = "EU B-ORG\nrejects O\n\nJürgen B-PER\nsaw O\n"
    path = tmp_path / "latin.conll"
    path.write_bytes(text.encode("latin-1"))
    status, err = run(capsys, "fit", "--data.train", path, *options(tmp_path))
    assert status == 2
    offset = text.encode("latin-1").index("ü".encode("latin-1"))
    assert error_line(err) == (
        f"seqtag: error: {path}:4: bytes that are not utf-8 at byte offset {offset} of the file (set data.encoding "
        f"to the file's encoding, e.g. latin-1 or cp1252)"
    )
    status, err = run(capsys, "fit", "--data.train", path, "--data.encoding", "latin-1", *options(tmp_path))
    assert status == 0, err
    assert "Jürgen" in json.loads((tmp_path / "run" / "checkpoints" / "vocab.json").read_text())["words"]


def test_zero_width_characters_stay_inside_tokens(tmp_path, capsys):
    path = write(tmp_path / "zw.conll", "par\u200bis B-LOC\nis O\n\njo\u200dhn B-PER\n")
    status, err = run(capsys, "fit", "--data.train", path, *options(tmp_path))
    assert status == 0, err
    words = json.loads((tmp_path / "run" / "checkpoints" / "vocab.json").read_text())["words"]
    assert "par\u200bis" in words and "jo\u200dhn" in words


# ------------------------------------------------------------------------------------------ long sentences
def test_prediction_tags_a_sentence_of_10000_tokens(tmp_path, capsys, trained):
    folder, train = trained
    text = write(tmp_path / "long.txt", " ".join(["john"] * 10_000) + "\nmary saw paris\n")
    output = tmp_path / "long.pred.conll"
    args = ["predict", "--data.train", train, "--data.predict", text, "--ckpt_path", folder / "best.ckpt"]
    status, err = run(capsys, *args, "--predict_output", output, *options(tmp_path))
    assert status == 0, err
    sentences = output.read_text().strip("\n").split("\n\n")
    assert [len(s.splitlines()) for s in sentences] == [10_000, 3]


def test_tagger_tags_10000_tokens_with_a_very_long_token_in_little_memory():
    """Characters are a (B, T, C) tensor, C the longest token of the batch: a token of 2,000 characters must not make
    it (1, 10000, 2000). The LSTM and the CRF hold (B, T, 2H) and (B, T, K) values: small at any length."""
    torch.manual_seed(0)
    labels = schemes.labels_for_scheme(["LOC", "PER"], "BIOES")
    words = ["john", "went", "to", "paris"]
    vocab = Vocab.build([words], labels, scheme="BIOES", data_scheme="IOB2")
    model = Tagger(labels, "BIOES", vocab_size=len(vocab.words), num_chars=len(vocab.chars), word_dim=8, char_dim=4,
                   char_hidden=4, hidden_size=6)  # fmt: skip
    model.vocab = vocab
    long = words * 2_500
    long[5_000] = "x" * 2_000
    (batch,) = iter_batches(vocab, [long], batch_size=256)
    assert batch["char_ids"].shape == (1, 10_000, MAX_CHARS_PER_TOKEN)
    tags = model.tag([long, "john went to paris", []])
    assert [len(t) for t in tags] == [10_000, 4, 0]
    assert schemes.validate_tags(tags[0], "IOB2") is None


def test_training_leaves_long_sentences_out_with_a_warning(tmp_path, capsys):
    path = write(tmp_path / "train.conll", conll(20) + "\n" + "\n".join(["john O"] * 10_000) + "\n")
    with pytest.warns(UserWarning, match="1 training sentence longer than max_length=200 left out"):
        status, err = run(capsys, "fit", "--data.train", path, "--data.max_length", 200, *options(tmp_path))
    assert status == 0, err


# ------------------------------------------------------------------------------------------------ config
def test_unknown_config_key_on_the_command_line(tmp_path, capsys, train):
    status, err = run(capsys, "fit", "--data.train", train, "--model.nonexistent", 3, *options(tmp_path))
    assert status != 0
    assert "model.nonexistent" in err and "Traceback" not in err


def test_unknown_config_key_in_a_yaml_file(tmp_path, capsys, train):
    config = write(tmp_path / "bad.yaml", f"data:\n  train: {train}\nmodel:\n  nonexistent: 3\n")
    status, err = run(capsys, "fit", "--config", config, *options(tmp_path))
    assert status != 0
    assert "model.nonexistent" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------- checkpoints
def test_load_with_weights_only_and_tag(trained):
    folder, _ = trained
    tagger = Tagger.load(folder / "best.ckpt")
    tags = tagger.tag([["john", "went", "to", "paris"], "mary saw acme", [], ["john"] * 10_000])
    assert [len(t) for t in tags] == [4, 3, 0, 10_000]
    assert all(t in {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"} for sent in tags for t in sent)


def test_load_without_vocabulary(tmp_path, trained):
    folder, _ = trained
    checkpoint = torch.load(folder / "best.ckpt", weights_only=True)
    del checkpoint[VOCAB_KEY]
    path = tmp_path / "novocab" / "model.ckpt"
    path.parent.mkdir()
    torch.save(checkpoint, path)
    with pytest.raises(SeqtagInputError) as info:
        Tagger.load(path)
    assert str(info.value) == (
        f"{path}: the checkpoint holds no vocabulary and {path.parent / 'vocab.json'} is missing"
    )


@pytest.mark.parametrize("types", [("PER", "LOC", "MISC"), ("PER", "LOC")], ids=["unknown-type", "fewer"])
def test_checkpoint_with_another_label_set(tmp_path, capsys, trained, types):
    """The labels come from the checkpoint: test data with a type the model never saw is named; a subset is fine."""
    folder, _ = trained
    other = write(tmp_path / "other.conll", conll(20, types=types))
    args = ["test", "--data.train", other, "--data.test", other, "--ckpt_path", folder / "best.ckpt"]
    status, err = run(capsys, *args, *options(tmp_path))
    if "MISC" in types:
        assert status == 2
        assert error_line(err) == (
            f"seqtag: error: {other}: labels never seen in training: ['B-MISC', 'E-MISC', 'S-MISC'] (set "
            f"data.unknown_labels=O to count them as outside any span, with a warning)"
        )
    else:
        assert status == 0


# ----------------------------------------------------------------------------------------- nothing lost
def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch, train):
    loss = Tagger.loss

    def nan_from_epoch_1(self, emissions, tag_ids, mask):
        value = loss(self, emissions, tag_ids, mask)
        return value * float("nan") if self.current_epoch >= 1 else value

    monkeypatch.setattr(Tagger, "loss", nan_from_epoch_1)
    status, err = run(capsys, "fit", "--data.train", train, *options(tmp_path, epochs=3))
    assert status == 2
    assert error_line(err).startswith("seqtag: error: train/loss is nan at epoch 1, step ")
    checkpoint = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0
    assert all(torch.isfinite(w).all() for w in checkpoint["state_dict"].values() if w.is_floating_point())


PAUSE_CALLBACK = '''
import time
from lightning.pytorch.callbacks import Callback


class PauseAfterEpoch1(Callback):
    """Stands still once the checkpoint of epoch 1 is written, so the test kills the run at a known point."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            time.sleep(600)
'''


def test_run_killed_mid_training_resumes_to_the_same_weights(tmp_path):
    train = write(tmp_path / "train.conll", conll(160, seed=1))
    dev = write(tmp_path / "dev.conll", conll(30, seed=2))
    write(tmp_path / "pause" / "pause_callback.py", PAUSE_CALLBACK)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "WANDB_SILENT": "true"}

    def fit(root: str, *extra: str, pause: bool = False, background: bool = False):
        args = [
            sys.executable, "-m", "seqtag.cli", "fit", "--data.train", str(train), "--data.validation", str(dev),
            "--data.batch_size", "8", "--model.word_dropout", "0.1", "--model.optimizer.lr", "0.03",
            *options(tmp_path, root, epochs=4), *extra,
        ]  # fmt: skip
        environment = env
        if pause:
            args += ["--trainer.callbacks+=pause_callback.PauseAfterEpoch1"]
            environment = {**env, "PYTHONPATH": os.pathsep.join([str(tmp_path / "pause"), str(ROOT)])}
        if background:
            log = (tmp_path / "killed.log").open("w")
            return subprocess.Popen(args, env=environment, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        result = subprocess.run(args, env=environment, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]

    killed = fit("resumed", pause=True, background=True)
    last = tmp_path / "resumed" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 300
    try:
        while True:
            assert killed.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "killed.log").read_text()[-3000:]
            if last.exists() and torch.load(last, weights_only=True)["epoch"] >= 1:
                break
            time.sleep(0.05)
    finally:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
    assert killed.returncode == -signal.SIGKILL
    assert not list(last.parent.glob(".*.tmp"))  # no half-written checkpoint left behind

    fit("resumed", "--ckpt_path", "last")
    fit("uninterrupted")
    resumed = torch.load(last, weights_only=True)
    whole = torch.load(tmp_path / "uninterrupted" / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == whole["epoch"] == 3
    assert resumed["global_step"] == whole["global_step"]
    for name, weight in whole["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], weight), name
    scores = [
        {key: state.get("best_model_score", state.get("best_score")) for key, state in ckpt["callbacks"].items()}
        for ckpt in (resumed, whole)
    ]
    assert scores[0] == scores[1]
    assert any(value is not None and value > 0 for value in scores[1].values())  # the model learned something


def test_resumed_fit_goes_on_in_the_wandb_run_and_folder_of_its_checkpoint(tmp_path):
    """W&B gives every fit a new run id and so a new checkpoint folder: `--ckpt_path last` must still find the last
    checkpoint, and the resumed fit must go on in its run and folder (where the best model so far is)."""
    train = write(tmp_path / "train.conll", conll(40, seed=1))
    runs = tmp_path / "runs"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}

    def fit(*extra: str) -> str:
        args = [
            sys.executable, "-m", "seqtag.cli", "fit", "--data.train", str(train), "--data.validation", str(train),
            "--data.batch_size", "8", "--data.cache_dir", str(tmp_path / "cache"), *TINY_MODEL,
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            "--trainer.default_root_dir", str(runs), "--trainer.logger.init_args.save_dir", str(runs), *extra,
        ]  # fmt: skip
        result = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stderr

    fit("--trainer.max_epochs", "1")
    (first,) = (runs / "seqtag").glob("*/checkpoints/last.ckpt")
    steps_per_epoch = torch.load(first, weights_only=True)["global_step"]
    log = fit("--trainer.max_epochs", "2", "--ckpt_path", "last")
    assert "exists and is not empty" not in log  # Lightning's warning about a used folder: here it is the run's own
    folders = [path.parent.parent for path in (runs / "seqtag").glob("*/checkpoints/last.ckpt")]
    assert folders == [first.parent.parent]
    last = torch.load(first, weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 2 * steps_per_epoch  # resumed, not restarted
    offline_runs = sorted(path.name.rsplit("-", 1)[-1] for path in (runs / "wandb").glob("offline-run-*"))
    assert offline_runs == [folders[0].name] * 2  # the second fit logged into the first one's W&B run


def test_resuming_into_another_folder_keeps_the_best_model_to_beat(tmp_path, monkeypatch):
    """A checkpoint resumed into a new folder: the best model so far stays best until an epoch beats its score."""
    from types import SimpleNamespace

    from seqtag.callbacks import BestCheckpoint

    best = write(tmp_path / "old" / "best.ckpt", "")
    score = torch.tensor(0.9)
    state = {
        "monitor": "val/f1", "best_model_score": score, "best_model_path": str(best), "current_score": score,
        "dirpath": str(best.parent), "best_k_models": {str(best): score}, "kth_best_model_path": str(best),
        "kth_value": score, "last_model_path": str(tmp_path / "old" / "last.ckpt"),
    }  # fmt: skip
    callback = BestCheckpoint(monitor="val/f1", dirpath=tmp_path / "new")
    callback.load_state_dict(state)
    trainer = SimpleNamespace(strategy=SimpleNamespace(reduce_boolean_decision=lambda decision, all=True: decision))
    assert callback.best_model_path == str(best) and callback.best_model_score == score
    assert not callback.check_monitor_top_k(trainer, torch.tensor(0.85))  # a worse epoch is not saved as best
    assert callback.check_monitor_top_k(trainer, torch.tensor(0.95))

    monkeypatch.chdir(tmp_path)  # the same folder, written relative: everything is restored, as in one folder
    callback = BestCheckpoint(monitor="val/f1")
    callback.dirpath = "old"  # as setup() resolves it from a relative logger save_dir
    callback.load_state_dict(state)
    assert callback.last_model_path == state["last_model_path"] and callback.best_model_score == score


def test_plateau_scheduler_without_validation_is_a_clear_error(tmp_path, capsys):
    path = write(tmp_path / "train.conll", conll(20))
    scheduler = "--model.lr_scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau"
    status, err = run(capsys, "fit", "--data.train", path, scheduler, *options(tmp_path))
    assert status == 2
    assert "ReduceLROnPlateau steps on the validation metric" in err and "Traceback" not in err
