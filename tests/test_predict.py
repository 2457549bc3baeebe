"""Tagging new text from a checkpoint alone: no config, no training files, no vectors file; raw text in, records
with offsets, spans, confidence and n-best out (through the real `seqtag` entry point and the Python API)."""

import gzip
import json
import shutil
from pathlib import Path

import pytest

from seqtag.tagger import Tagger
from tests.conftest import write
from tests.test_cli import QUICKSTART, seqtag

NEW_TEXT = (
    "Angela Merkel met Emmanuel Macron in Paris.\nDon't worry: the zorblax of Tbilisi won't stop.\n\nKrakow rocks!\n"
)
# Vectors for words that are not in the training data (and some that are); 8 dimensions.
UNSEEN = ("angela", "merkel", "macron", "krakow", "tbilisi")


def vectors_file(path: Path) -> Path:
    words = list(UNSEEN) + ["the", "in", "of", "paris", "germany"]
    with gzip.open(path, "wt") as f:
        for i, word in enumerate(words):
            f.write(word + " " + " ".join(str(((i * 7 + d) % 11) / 10 - 0.5) for d in range(8)) + "\n")
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model trained with pretrained vectors, copied alone into an empty folder."""
    tmp = tmp_path_factory.mktemp("fit")
    split = (QUICKSTART / "train.conll").read_text().split("\n\n")
    train = write(tmp / "train.conll", "\n\n".join(split[:200]) + "\n")
    dev = write(tmp / "dev.conll", "\n\n".join(split[200:240]) + "\n")
    vectors = vectors_file(tmp / "vectors.txt.gz")
    fit = seqtag(
        "fit", "--config", QUICKSTART.parent.parent.parent / "configs" / "quickstart.yaml",
        "--data.train", train, "--data.validation", dev, "--data.test", "null", "--data.word_vectors", vectors,
        "--data.lowercase", "true", "--model.word_dim", 8, "--model.hidden_size", 16, "--trainer.max_epochs", 2,
        "--data.cache_dir", tmp / "cache", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.default_root_dir", tmp / "runs",
    )  # fmt: skip
    best = Path(fit.stdout.split("Best checkpoint: ")[1].split()[0])
    assert "Confidence calibrated: temperature " in fit.stdout  # fitted on the validation data after the fit
    alone = tmp_path_factory.mktemp("alone") / "model.ckpt"
    shutil.copy(best, alone)
    return alone


def test_unseen_words_keep_their_pretrained_vectors(checkpoint):
    tagger = Tagger.load(checkpoint)
    vocab = tagger.vocab
    for word in UNSEEN:
        assert word not in vocab.word_index  # never seen in training
        assert vocab.word_id(word.capitalize()) >= len(vocab.words)  # yet it has a row: the pretrained table's
    assert vocab.word_id("qwzx") == 1  # UNK
    table = tagger.embedder.pretrained_table
    assert table.shape == (len(vocab.pretrained_words), 8)


def test_predict_raw_text_from_the_checkpoint_alone(checkpoint, tmp_path):
    text = write(tmp_path / "new.txt", NEW_TEXT)
    out = tmp_path / "out.jsonl"
    seqtag("predict", "--ckpt_path", checkpoint, "--data.predict", text, "--predict_output", out, "--n_best", 3,
           "--trainer.logger=false", cwd=tmp_path)  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    lines = NEW_TEXT.split("\n")
    assert [r["line"] for r in records] == [1, 2, 4]
    assert [t["text"] for t in records[1]["tokens"]][:3] == ["Do", "n't", "worry"]
    assert [t["text"] for t in records[0]["tokens"]][-2:] == ["Paris", "."]
    for record in records:
        line = lines[record["line"] - 1]
        for token in record["tokens"]:
            assert line[token["char_start"] : token["char_end"]] == token["text"]
        assert len(record["tags"]) == len(record["tokens"])
        for span in record["spans"]:
            assert set(span) == {"type", "start", "end", "text", "char_start", "char_end", "confidence"}
            assert line[span["char_start"] : span["char_end"]] == span["text"]
            assert 0.0 <= span["confidence"] <= 1.0
        best = record["n_best"]
        assert 1 <= len(best) <= 3 and best[0]["tags"] == record["tags"]
        probabilities = [b["probability"] for b in best]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1.0 + 1e-6


def test_test_from_the_checkpoint_alone(checkpoint, tmp_path):
    split = (QUICKSTART / "test.conll").read_text().split("\n\n")
    test = write(tmp_path / "test.conll", "\n\n".join(split[:30]) + "\n")
    result = seqtag("test", "--ckpt_path", checkpoint, "--data.test", test, "--trainer.logger=false", cwd=tmp_path)
    assert "overall" in result.stdout


def test_python_api_records(checkpoint):
    tagger = Tagger.load(checkpoint)
    text = "Peter Blackburn met Angela Merkel in Tbilisi. They talked."
    records = tagger.predict(text, n_best=2, marginals=True)
    assert len(records) == 2 and all(r["input"] == 0 for r in records)
    for record in records:
        for token in record["tokens"]:
            assert text[token["char_start"] : token["char_end"]] == token["text"]
        assert len(record["marginals"]) == len(record["tokens"])
        assert all(abs(sum(row.values()) - 1.0) < 0.01 for row in record["marginals"])
    assert tagger.tag([text.split(". ")[0] + "."])[0] == records[0]["tags"]
    tokenized = tagger.predict([["Peter", "Blackburn"]])[0]
    assert [(t["char_start"], t["char_end"]) for t in tokenized["tokens"]] == [(0, 5), (6, 15)]


@pytest.mark.parametrize("head", ["crf", "softmax"])
def test_a_character_model_tags_raw_text_character_by_character(head):
    from seqtag.data import schemes
    from seqtag.data.vocab import Vocab

    labels = schemes.labels_for_scheme(["LOC", "PER"], "BIOES")
    train = [list("北京欢迎你"), list("上海也欢迎你")]
    vocab = Vocab.build(train, labels, scheme="BIOES", data_scheme="BMES")
    tagger = Tagger(labels, "BIOES", vocab_size=len(vocab.words), num_chars=len(vocab.chars), word_dim=8,
                    char_dim=4, char_hidden=4, hidden_size=6, head=head)  # fmt: skip
    tagger.vocab = vocab
    assert tagger.tokenize_mode == "chars"
    records = tagger.predict("北京欢迎你。上海也欢迎你！", n_best=2, marginals=True)
    assert [[t["text"] for t in r["tokens"]] for r in records] == [list("北京欢迎你。"), list("上海也欢迎你！")]
    assert records[1]["tokens"][0]["char_start"] == 6
    for record in records:
        assert len(record["tags"]) == len(record["tokens"])
        assert all(tag == "O" or tag[:2] in ("B-", "M-", "E-", "S-") for tag in record["tags"])  # the data's BMES
        assert all(0.0 <= span["confidence"] <= 1.0 for span in record["spans"])
        assert record["n_best"][0]["tags"] == record["tags"]


def test_softmax_n_best_is_exact():
    import itertools

    import torch

    from seqtag.tagging import _softmax_nbest

    torch.manual_seed(0)
    probs = torch.softmax(torch.randn(2, 4, 3), dim=-1)
    mask = torch.tensor([[True] * 4, [True, True, False, False]])
    tags, log_probs = _softmax_nbest(probs, mask, 5)
    for b, length in enumerate(mask.sum(1).tolist()):
        scored = sorted(
            (sum(probs[b, t, y].log().item() for t, y in enumerate(seq)), seq)
            for seq in itertools.product(range(3), repeat=length)
        )[::-1][:5]
        assert [tuple(row[:length]) for row in tags[b].tolist()] == [seq for _, seq in scored]
        assert torch.allclose(log_probs[b], torch.tensor([s for s, _ in scored]), atol=1e-5)
