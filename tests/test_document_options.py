"""Document options switch themselves off on training data without document markers, once, and the checkpoint
reloads to the model as built."""

import json
import warnings

import pytest
import torch

from seqtag.cli import cli_main
from seqtag.data import schemes
from seqtag.data.datamodule import TaggingDataModule
from seqtag.modules.encoder import DocumentEncoder, RNNEncoder
from seqtag.tagger import Tagger
from tests.conftest import write

SENTENCES = [
    "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n",
    "Peter B-PER\nBlackburn I-PER\n",
    "BRUSSELS B-LOC\n1996-08-22 O\n",
    "Germany B-LOC\nsays O\nno O\n",
]
LABELS = schemes.labels_for_scheme(["LOC", "MISC", "ORG", "PER"], "BIOES")
TURNED_OFF = "turned off: the training data marks no documents"


def with_documents(tmp_path):
    """Two news stories, split at -DOCSTART- lines."""
    story = "\n".join(SENTENCES)
    return write(tmp_path / "docs.conll", f"-DOCSTART- O\n\n{story}\n-DOCSTART- O\n\n{story}")


def without_documents(tmp_path):
    return write(tmp_path / "plain.conll", "\n".join(SENTENCES * 2))


def data(tmp_path, train, **kwargs):
    return TaggingDataModule(str(train), cache_dir=str(tmp_path / "cache"), **kwargs)


def test_the_datamodule_knows_whether_the_training_data_marks_documents(tmp_path):
    assert data(tmp_path, with_documents(tmp_path)).has_documents
    assert not data(tmp_path, without_documents(tmp_path)).has_documents  # one document: the whole file
    one_story = write(tmp_path / "one.conll", "-DOCSTART- O\n\n" + "\n".join(SENTENCES))
    assert not data(tmp_path, one_story).has_documents
    rows = [{"tokens": s.split()[::2], "tags": s.split()[1::2]} for s in SENTENCES]
    lines = write(tmp_path / "rows.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    assert not data(tmp_path, lines).has_documents  # every row a document of its own
    documents = [{**r, "document": i // 2} for i, r in enumerate(rows)]
    fields = write(tmp_path / "docs.jsonl", "".join(json.dumps(r) + "\n" for r in documents))
    assert data(tmp_path, fields).has_documents


def test_the_model_is_built_without_document_modules_and_reloads_so(recwarn):
    options = dict(vocab_size=10, num_chars=10, word_dim=8, char_dim=4, char_hidden=4, hidden_size=6)
    model = Tagger(LABELS, "BIOES", document_memory=True, document_context=True, documents_available=False, **options)
    (warning,) = [w for w in recwarn if TURNED_OFF in str(w.message)]
    assert "model.document_memory and model.document_context turned off" in str(warning.message)
    assert model.memory is None and isinstance(model.encoder, RNNEncoder) and not model.reads_documents
    assert not model.hparams.document_memory and not model.hparams.document_context

    recwarn.clear()
    reloaded = Tagger(**model.hparams)  # what Tagger.load and --ckpt_path do
    assert not [w for w in recwarn if TURNED_OFF in str(w.message)]
    assert reloaded.state_dict().keys() == model.state_dict().keys()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # documents in the data: no warning, the modules are built
        reading = Tagger(LABELS, "BIOES", document_memory=True, document_context=True, **options)
    assert reading.memory is not None and isinstance(reading.encoder, DocumentEncoder)


@pytest.mark.parametrize("marked", [False, True])
def test_fit_turns_the_document_options_off_without_markers(tmp_path, marked, recwarn):
    train = with_documents(tmp_path) if marked else without_documents(tmp_path)
    args = [
        "fit", f"--data.train={train}", f"--data.validation={train}", f"--data.cache_dir={tmp_path / 'cache'}",
        "--model.document_memory=true", "--model.document_context=true",
        "--model.word_dim=8", "--model.char_dim=4", "--model.char_hidden=4", "--model.hidden_size=6",
        "--trainer.max_epochs=1", "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path / 'runs'}",
    ]  # fmt: skip
    cli = cli_main(args)
    said = [w for w in recwarn if TURNED_OFF in str(w.message)]
    assert len(said) == (0 if marked else 1)
    assert cli.model.reads_documents == marked
    # Batches of a document_context model get their document layout before they move to the device.
    batch = cli.datamodule.on_before_batch_transfer(next(iter(cli.datamodule.train_dataloader())), 0)
    assert ("document_source" in batch) == marked and ("document_target" in batch) == marked
    if marked:
        cli.model.eval()
        plain = {key: value for key, value in batch.items() if not key.startswith("document_") or key == "document"}
        torch.testing.assert_close(cli.model(batch), cli.model(plain), rtol=0, atol=0)
    best = cli.trainer.checkpoint_callback.best_model_path
    saved = torch.load(best, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert saved["documents_available"] == marked and saved["document_memory"] == marked
    loaded = Tagger.load(best)
    assert loaded.reads_documents == marked
    assert loaded.state_dict().keys() == cli.model.state_dict().keys()
