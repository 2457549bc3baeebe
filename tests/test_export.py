"""ONNX export: the graph tags as the torch model does (every sentence length, batches of 1 and many), the runner
writes the records and files of `seqtag predict --ckpt_path`, without torch; options that cannot export say so."""

import json
import subprocess
import sys
from pathlib import Path

import lightning
import numpy as np
import pytest
import torch

from seqtag.cli import main
from seqtag.data import schemes
from seqtag.data.datamodule import iter_batches
from seqtag.data.readers import read_conll
from seqtag.data.vocab import Vocab
from seqtag.errors import SeqtagInputError
from seqtag.export import TaggerGraph, check_exportable, export_graph, export_metadata
from seqtag.tagger import Tagger, length_mask
from tests.conftest import write
from tests.test_cli import QUICKSTART

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from seqtag.onnx_runner import OnnxTagger, vocab_path  # noqa: E402

TEXT = "Angela Merkel met Emmanuel Macron in Paris.\nEU rejects German call to boycott British lamb.\n\nKrakow rocks!\n"
PRETRAINED = ["angela", "merkel", "macron", "krakow", "was", "by", "with", "he"]  # unseen in the quickstart data


def build(seed: int = 0, features: int = 0, **options) -> Tagger:
    """A tagger with random weights over the quickstart data's vocabulary (BIOES tags of IOB2 data), with a
    pretrained vector table for a few words it never saw; ``features`` feature columns of 3 values."""
    sentences = list(read_conll(QUICKSTART / "train.conll"))
    types = sorted({schemes.split_tag(t)[1] for s in sentences for t in s["tags"]} - {None})
    labels = schemes.labels_for_scheme(types, "BIOES")
    train_features = [[[("a", "b", "c")[i % 3] for i in range(len(s["tokens"]))]] * features for s in sentences]
    vocab = Vocab.build(
        [s["tokens"] for s in sentences],
        labels,
        lowercase=True,
        scheme="BIOES",
        data_scheme="IOB2",
        train_features=train_features if features else (),
    )
    vocab.attach_pretrained(PRETRAINED)
    torch.manual_seed(seed)
    settings = dict(word_dim=16, char_encoder="lstm", char_dim=8, char_hidden=8, casing_dim=4, hidden_size=16)
    settings.update(options)
    model = Tagger(
        labels,
        "BIOES",
        vocab_size=len(vocab.words),
        num_chars=len(vocab.chars),
        feature_sizes=[len(values) for values in vocab.features] or None,
        **settings,
    )
    model.vocab = vocab
    model.embedder.set_pretrained_table(torch.randn(len(PRETRAINED), settings["word_dim"]))
    return model.eval()


def save_checkpoint(model: Tagger, path: Path) -> Path:
    """The checkpoint a fit writes, as far as tagging and export read it."""
    torch.save(
        {
            "pytorch-lightning_version": lightning.__version__,
            "hyper_parameters": dict(model.hparams),
            "state_dict": model.state_dict(),
            "seqtag_vocab": model.vocab.to_dict(),
            "seqtag_pretrained": {"words": "\n".join(PRETRAINED), "vectors": model.embedder.pretrained_table},
            "datamodule_hyper_parameters": {"format": "auto", "encoding": "utf-8", "eval_batch_size": 256},
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(model, its checkpoint, the graph exported by `seqtag export`)."""
    tmp = tmp_path_factory.mktemp("export")
    model = build()
    checkpoint = save_checkpoint(model, tmp / "model.ckpt")
    assert main(["export", "--ckpt_path", str(checkpoint), "--output", str(tmp / "tagger.onnx")]) == 0
    assert vocab_path(tmp / "tagger.onnx") == tmp / "tagger.vocab.json"
    return Tagger.load(checkpoint), checkpoint, tmp / "tagger.onnx"


def dev_sample(data: Path, size: int = 300) -> list[list[str]]:
    """Sentences of CoNLL-2003 eng.testa: one of every length, then others, ``size`` in all."""
    sentences = [s["tokens"] for s in read_conll(data / "conll2003" / "eng.testa")]
    by_length = {}
    for tokens in sentences:
        by_length.setdefault(len(tokens), tokens)
    chosen = list(by_length.values())
    chosen += [s for s in sentences if s not in chosen][: size - len(chosen)]
    assert {len(s) for s in chosen} == {len(s) for s in sentences}
    return chosen


def test_same_tags_as_torch_on_every_sentence_length(exported, shared_data):
    model, _, graph = exported
    sentences = dev_sample(shared_data)
    assert min(map(len, sentences)) == 1 and max(map(len, sentences)) > 100
    expected = model.tag(sentences)
    tagger = OnnxTagger(graph, threads=1)
    assert tagger.tag(sentences, batch_size=256) == expected  # padded batches
    assert tagger.tag(sentences[:60], batch_size=1) == expected[:60]
    # Ids in, tag ids out: the graph on the torch model's own batches (word ids of unseen words index the table).
    unseen = 0
    for batch in iter_batches(model.vocab, sentences, 64):
        with torch.no_grad():
            emissions = model(batch)
            tag_ids = model.decode(emissions, length_mask(batch["lengths"], emissions.shape[1]))
        feed = {name: batch[name].numpy() for name in ("word_ids", "char_ids", "casing_ids", "lengths")}
        feed["forward_backward"] = np.array(False)
        np.testing.assert_array_equal(tagger.session.run(["tag_ids"], feed)[0], tag_ids.numpy())
        unseen += int((batch["word_ids"] >= len(model.vocab.words)).sum())
    assert unseen > 0  # the pretrained table took part


def test_records_match_the_checkpoints(exported):
    model, _, graph = exported
    tagger = OnnxTagger(graph)
    inputs = [TEXT, ["Krakow", "is", "in", "Poland", "."], ["x"], []]
    expected = model.predict(inputs, marginals=True)
    found = tagger.predict(inputs, marginals=True)
    assert len(found) == len(expected) == 6
    for ours, theirs in zip(found, expected):
        assert (
            ours["tokens"] == theirs["tokens"] and ours["tags"] == theirs["tags"] and ours["input"] == theirs["input"]
        )
        assert [{**s, "confidence": 0} for s in ours["spans"]] == [{**s, "confidence": 0} for s in theirs["spans"]]
        for a, b in zip(ours["spans"], theirs["spans"]):
            assert a["confidence"] == pytest.approx(b["confidence"], abs=1e-4)
        assert ("marginals" in ours) == ("marginals" in theirs) == bool(ours["tokens"])
        for a, b in zip(ours.get("marginals", []), theirs.get("marginals", [])):
            for tag in set(a) | set(b):
                assert a.get(tag, 0.0) == pytest.approx(b.get(tag, 0.0), abs=1e-4)
    assert any(record["spans"] for record in found)
    with pytest.raises(SeqtagInputError, match="n-best"):
        tagger.predict(inputs, n_best=2)


def test_predict_onnx_writes_the_checkpoints_files(exported, tmp_path):
    _, checkpoint, graph = exported
    text = write(tmp_path / "new.txt", TEXT)
    columns = write(tmp_path / "gold.conll", "EU B-ORG\nrejects O\nGerman B-MISC\n\nPeter B-PER\nBlackburn I-PER\n")
    for source, name in ((text, "new.jsonl"), (columns, "gold.jsonl"), (columns, "gold.conll")):
        ours, theirs = tmp_path / f"onnx-{name}", tmp_path / f"ckpt-{name}"
        assert (
            main(["predict", "--onnx", str(graph), "--data.predict", str(source), "--predict_output", str(ours)]) == 0
        )
        main(["predict", "--ckpt_path", str(checkpoint), "--data.predict", str(source), "--predict_output", str(theirs),
              "--trainer.logger=false", "--trainer.enable_progress_bar=false"])  # fmt: skip
        if name.endswith(".conll"):
            assert ours.read_text() == theirs.read_text()
            continue
        found = [json.loads(line) for line in ours.read_text().splitlines()]
        expected = [json.loads(line) for line in theirs.read_text().splitlines()]
        confidences = [[span.pop("confidence") for span in record["spans"]] for record in found + expected]
        assert found == expected
        assert sum(confidences[: len(found)], []) == pytest.approx(sum(confidences[len(found) :], []), abs=1e-4)


def test_the_runner_needs_neither_torch_nor_lightning(exported, tmp_path):
    _, _, graph = exported
    text = write(tmp_path / "new.txt", TEXT)
    code = (
        "import sys; from seqtag.cli import main; "
        f"status = main(['predict', '--onnx', {str(graph)!r}, '--data.predict', {str(text)!r}, "
        f"'--predict_output', {str(tmp_path / 'out.jsonl')!r}]); "
        "print(status, sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "0 []"
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3


def test_benchmark_script_compares_both_sides(exported, tmp_path):
    _, checkpoint, graph = exported
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_onnx.py"
    figures = tmp_path / "bench.json"
    command = [sys.executable, script, checkpoint, QUICKSTART / "dev.conll", "--onnx", graph, "--repeats", "1"]
    result = subprocess.run([*map(str, command), "--json", str(figures)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(figures.read_text())
    assert found["tag_ids"]["same_sentences"] == found["sentences"] > 0
    assert found["records"]["same_tags"] == found["sentences"]
    assert found["tag_ids"]["onnx_sentences_per_s"] > 0 and found["records"]["max_confidence_difference"] < 1e-4


@pytest.mark.parametrize(
    "options",
    [
        # character CNN, GRU, two layers, a feature column, softmax head
        dict(char_encoder="cnn", cell="gru", num_layers=2, features=1, head="softmax"),
        # no characters, tanh RNN, CRF
        dict(char_encoder="none", cell="rnn"),
    ],
    ids=["cnn-gru-2layers-features-softmax", "nochars-rnn-crf"],
)
def test_other_encoders_export(options, tmp_path):
    model = build(seed=1, **options)
    graph = export_graph(model, tmp_path / "tagger.onnx")
    write(vocab_path(graph), json.dumps(export_metadata(model)))
    sentences = [s["tokens"] for s in read_conll(QUICKSTART / "dev.conll")][:80] + [["Krakow"], ["a", "b"]]
    features = (
        [[["a", "b", "c", "z"][i % 4] for i in range(len(s))] for s in sentences] if model.vocab.features else None
    )
    columns = [[f] for f in features] if features else None
    tagger = OnnxTagger(graph)
    expected = model.tag(sentences, features=columns)
    assert tagger.tag(sentences, batch_size=32, features=columns) == expected
    assert tagger.tag(sentences[:10], batch_size=1, features=columns[:10] if columns else None) == expected[:10]


def test_reference_lstm_exports_as_the_torch_one():
    """The reference implementation has nn.LSTM's parameters: the graph computes the same function."""
    model = build(seed=2, implementation="reference")
    sentences = [s["tokens"] for s in read_conll(QUICKSTART / "dev.conll")][:20]
    batch = next(iter_batches(model.vocab, sentences, 32))
    with torch.no_grad():
        emissions = model(batch)
        expected = model.decode(emissions, length_mask(batch["lengths"], emissions.shape[1]))
        inputs = {k: batch[k] for k in ("word_ids", "char_ids", "casing_ids", "lengths")}
        found = TaggerGraph(model)(**inputs, forward_backward=torch.tensor(False))
    torch.testing.assert_close(
        found[1], emissions.masked_fill(~length_mask(batch["lengths"], emissions.shape[1])[..., None], 0)
    )
    assert torch.equal(found[0], expected)


@pytest.mark.parametrize(
    ("option", "value"),
    [("document_context", True), ("document_memory", True), ("char_lm_forward", {"hyper_parameters": {}})],
)
def test_options_that_cannot_export_are_named(option, value, tmp_path, capsys):
    with pytest.raises(SeqtagInputError, match=f"model.{option} cannot be exported to ONNX"):
        check_exportable({option: value})
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": {"labels": ["O", "B-X"], option: value}, "state_dict": {}}, checkpoint)
    assert main(["export", "--ckpt_path", str(checkpoint), "--output", str(tmp_path / "t.onnx")]) == 2
    assert f"model.{option} cannot be exported to ONNX" in capsys.readouterr().err
    assert not (tmp_path / "t.onnx").exists()


def test_document_memory_model_is_refused_by_the_graph():
    with pytest.raises(SeqtagInputError, match="model.document_memory"):
        TaggerGraph(build(document_memory=True))


def test_runner_errors(exported, tmp_path):
    _, _, graph = exported
    lonely = tmp_path / "lonely.onnx"
    lonely.write_bytes(graph.read_bytes())
    with pytest.raises(SeqtagInputError, match="lonely.vocab.json: not found"):
        OnnxTagger(lonely)
    write(tmp_path / "lonely.vocab.json", json.dumps({"format": "other"}))
    with pytest.raises(SeqtagInputError, match="expected a seqtag-onnx vocabulary file"):
        OnnxTagger(lonely)
    with pytest.raises(SeqtagInputError, match="--n_best"):
        main(["predict", "--onnx", str(graph), "--data.predict", "x.txt", "--n_best", "3", "--debug"])
