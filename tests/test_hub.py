"""Hub model folders: checkpoint → folder → tagger gives the same records; a Hub name resolves from the local Hub
cache offline; the card carries the metadata and test scores; `seqtag predict --model`; what `push_to_hub` uploads
(with the upload calls replaced: no network here)."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file

from seqtag import hub
from seqtag.cli import main
from seqtag.commands.hub import model_as_checkpoint
from seqtag.data.vocab import Vocab
from seqtag.errors import SeqtagInputError
from seqtag.hub_card import model_card
from seqtag.tagger import Tagger
from tests.conftest import write
from tests.test_cli import QUICKSTART, ROOT
from tests.test_predict import NEW_TEXT, vectors_file

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SENTENCES = ["Angela Merkel met Emmanuel Macron in Paris.", ["Krakow", "beat", "Tbilisi", "2-1", "on", "Tuesday", "."]]


def quiet(tmp: Path) -> list[str]:
    return [
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--data.cache_dir", str(tmp / "cache"),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny model with a pretrained table, and the test_report.json `seqtag test` wrote beside it."""
    tmp = tmp_path_factory.mktemp("fit")
    split = (QUICKSTART / "train.conll").read_text().split("\n\n")
    train = write(tmp / "train.conll", "\n\n".join(split[:200]) + "\n")
    dev = write(tmp / "dev.conll", "\n\n".join(split[200:240]) + "\n")
    test = write(tmp / "test.conll", "\n\n".join(split[240:300]) + "\n")
    status = main([
        "fit", "--config", str(ROOT / "configs" / "quickstart.yaml"), "--data.train", str(train),
        "--data.validation", str(dev), "--data.test", str(test), "--data.word_vectors", str(vectors_file(tmp / "v.gz")),
        "--data.lowercase", "true", "--model.word_dim", "8", "--model.hidden_size", "16", "--trainer.max_epochs", "2",
        "--trainer.default_root_dir", str(tmp / "runs"), *quiet(tmp),
    ])  # fmt: skip
    assert status == 0
    best = tmp / "runs" / "checkpoints" / "best.ckpt"
    assert main(["test", "--ckpt_path", str(best), *quiet(tmp)]) == 0
    assert (best.parent / "test_report.json").is_file()
    return best


@pytest.fixture(scope="module")
def folder(checkpoint, tmp_path_factory):
    return hub.save_checkpoint_file(
        checkpoint, tmp_path_factory.mktemp("hub") / "tiny", repo_id="me/tiny", language="en", tags=["ner"]
    )


@pytest.fixture
def seqtag_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQTAG_CACHE", str(tmp_path / "seqtag-cache"))
    return tmp_path / "seqtag-cache"


def hub_cache(folder: Path, cache: Path, repo_id: str) -> Path:
    """The folder's files laid out as huggingface_hub caches a download: content-addressed blobs, a snapshot of
    relative links per commit, and the branch's commit in refs/main."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in folder.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copy(file, repo / "blobs" / blob)
        (snapshot / file.name).symlink_to(Path("..") / ".." / "blobs" / blob)
    write(repo / "refs" / "main", COMMIT)
    return snapshot


# ----------------------------------------------------------------------------------------------- round trip
def test_folder_tags_exactly_as_the_checkpoint(checkpoint, folder):
    original, shared = Tagger.load(checkpoint), Tagger.from_pretrained(folder)
    # Words unseen in training still have their pretrained vector: the table and its words travelled.
    assert shared.vocab.word_id("Tbilisi") >= len(shared.vocab.words)
    assert shared.vocab.pretrained_words == original.vocab.pretrained_words
    assert torch.equal(shared.embedder.pretrained_table, original.embedder.pretrained_table)
    for name, tensor in original.state_dict().items():
        assert torch.equal(shared.state_dict()[name], tensor), name
    records = original.predict(SENTENCES + [NEW_TEXT], n_best=3, marginals=True)
    assert shared.predict(SENTENCES + [NEW_TEXT], n_best=3, marginals=True) == records
    assert any(r["spans"] for r in records)  # a model that tags something, so equality means something
    assert shared.tag(SENTENCES) == original.tag(SENTENCES)


def test_folder_is_safetensors_json_and_text(checkpoint, folder):
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md", "config.json", "model.safetensors", "pretrained_words.txt", "vocab.json",
    ]  # fmt: skip
    saved = torch.load(checkpoint, weights_only=True)
    tensors = load_file(folder / "model.safetensors")
    assert set(tensors) == set(saved["state_dict"]) | {hub.PRETRAINED_TENSOR}
    config = json.loads((folder / "config.json").read_text())
    assert config["library_name"] == "seqtag" and config["format"] == hub.FORMAT_VERSION
    assert "optimizer" not in config["model"] and config["model"]["labels"] == saved["hyper_parameters"]["labels"]
    assert config["data"]["train"] == saved["datamodule_hyper_parameters"]["train"]
    words = (folder / "pretrained_words.txt").read_text().splitlines()
    assert len(words) == config["pretrained_words"] == tensors[hub.PRETRAINED_TENSOR].shape[0] > 0
    assert json.loads((folder / "vocab.json").read_text()) == saved["seqtag_vocab"]
    for file in folder.iterdir():  # no pickle: torch.save writes a zip ("PK"), pickle protocol 2+ starts 0x80
        assert file.read_bytes()[:2] not in (b"PK", b"\x80\x02", b"\x80\x04", b"\x80\x05"), file


def test_save_pretrained_of_a_loaded_model_keeps_data_and_scores(checkpoint, folder, tmp_path):
    again = Tagger.from_pretrained(folder).save_pretrained(tmp_path / "again", "me/tiny", "en", ["ner"])
    assert json.loads((again / "config.json").read_text()) == json.loads((folder / "config.json").read_text())
    assert (again / "README.md").read_text() == (folder / "README.md").read_text()
    loaded = Tagger.load(checkpoint).save_pretrained(tmp_path / "from_load", "me/tiny", "en", ["ner"])
    assert (loaded / "README.md").read_text() == (folder / "README.md").read_text()


# ----------------------------------------------------------------------------------------------------- card
def test_model_card_has_hub_metadata_and_test_scores(checkpoint, folder):
    card = ModelCard.load(folder / "README.md")
    assert card.data.library_name == "seqtag" and card.data.pipeline_tag == "token-classification"
    assert card.data.language == "en"
    assert {"seqtag", "token-classification", "bilstm-crf", "ner"} <= set(card.data.tags)
    report = json.loads((checkpoint.parent / "test_report.json").read_text())
    text = card.text
    assert (
        f"| **overall** | {100 * report['precision']:.2f} | {100 * report['recall']:.2f} | {100 * report['f1']:.2f}"
        in text
    )
    assert "Span types (4): `LOC`, `MISC`, `ORG`, `PER`" in text and "**IOB2**" in text
    assert f"- train: `{checkpoint.parent.parent.parent / 'train.conll'}`" in text
    assert 'Tagger.from_pretrained("me/tiny")' in text and "seqtag predict --model me/tiny" in text


def test_card_of_a_hub_dataset_has_model_index_and_no_language_unless_given():
    config = {
        "seqtag_version": "0.1.0",
        "model": {"labels": ["O", "B-PER", "I-PER"], "scheme": "IOB2", "cell": "lstm", "head": "crf"},
        "data": {"train": "eriktks/conll2003", "test": "eriktks/conll2003:test", "hub_config": "conll2003"},
        "test_results": {"precision": 0.9, "recall": 0.8, "f1": 0.847, "accuracy": 0.95, "per_type": {}},
        "pretrained_words": 0,
    }
    card = ModelCard(model_card(config, {"labels": ["O", "B-PER", "I-PER"]}, "me/ner"))
    assert card.data.language is None and card.data.datasets == ["eriktks/conll2003"]
    f1 = [r for r in card.data.eval_results if r.metric_type == "f1"][0]
    assert (f1.dataset_type, f1.dataset_split, f1.dataset_config, f1.metric_value) == (
        "eriktks/conll2003", "test", "conll2003", 0.847,
    )  # fmt: skip
    assert "[eriktks/conll2003](https://huggingface.co/datasets/eriktks/conll2003)" in card.text
    plain = dict(config, model={"labels": ["NOUN", "VERB"], "scheme": None}, test_results=None, data={})
    text = model_card(plain, {"labels": ["NOUN", "VERB"]}, "me/pos")
    assert "Plain classes, one per token (2): `NOUN`, `VERB`" in text and "model-index" not in text


# ------------------------------------------------------------------------------------------- Hub and cache
def test_hub_name_resolves_from_the_local_hub_cache_offline(checkpoint, folder, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "hf"
    snapshot = hub_cache(folder, cache, "me/tiny")
    expected = Tagger.load(checkpoint).predict(SENTENCES, n_best=2)
    for name, revision in (("me/tiny", None), ("me/tiny", "main"), (f"me/tiny@{COMMIT}", None)):
        tagger = Tagger.from_pretrained(name, revision=revision, cache_dir=cache)
        assert tagger.predict(SENTENCES, n_best=2) == expected
    assert hub.resolve_folder("me/tiny", cache_dir=cache) == snapshot
    with pytest.raises(SeqtagInputError, match="me/other .* not in the local cache"):
        Tagger.from_pretrained("me/other", cache_dir=cache)
    with pytest.raises(SeqtagInputError, match="not a model folder, nor a Hugging Face Hub model name"):
        Tagger.from_pretrained(str(tmp_path / "missing" / "deeper" / "folder"))


def test_broken_folders_say_which_file(folder, tmp_path):
    def broken(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        return copy

    missing = broken("missing")
    (missing / "vocab.json").unlink()
    with pytest.raises(SeqtagInputError, match="vocab.json is missing"):
        Tagger.from_pretrained(missing)
    short = broken("short")
    words = (short / "pretrained_words.txt").read_text().splitlines()
    (short / "pretrained_words.txt").write_text("\n".join(words[:-1]) + "\n")
    with pytest.raises(SeqtagInputError, match=f"{len(words) - 1} words, but model.safetensors holds {len(words)}"):
        Tagger.from_pretrained(short)
    bad = broken("bad")
    (bad / "config.json").write_text('{\n  "library_name": "seqtag",\n  oops\n}\n')
    with pytest.raises(SeqtagInputError, match=r"config.json:3: not valid JSON"):
        Tagger.from_pretrained(bad)
    newer = broken("newer")
    config = json.loads((newer / "config.json").read_text())
    (newer / "config.json").write_text(json.dumps(dict(config, format=hub.FORMAT_VERSION + 1)))
    with pytest.raises(SeqtagInputError, match="upgrade seqtag"):
        Tagger.from_pretrained(newer)


# ------------------------------------------------------------------------------------------- command line
def test_model_argument_is_rewritten_only_for_model_folders_and_hub_names(folder, tmp_path, seqtag_cache):
    config = write(tmp_path / "model.yaml", "hidden_size: 8\n")
    for args in (
        ["predict", "--model", str(config)],
        ["predict", "--model", "seqtag.tagger.Tagger"],
        ["predict", "--model", "configs/missing.yaml"],
        ["fit", "--model", str(folder)],
        ["predict", "--model.hidden_size", "8"],
    ):
        assert model_as_checkpoint(args) == args
    for args in (
        ["predict", "--model", str(folder), "--n_best", "2"],
        ["predict", f"--model={folder}", "--n_best", "2"],
    ):
        rewritten = model_as_checkpoint(args)
        assert rewritten[:2] == ["predict", "--ckpt_path"] and rewritten[3:] == ["--n_best", "2"]
        assert Path(rewritten[2]).parent.parent == seqtag_cache / "hub"
    # Converted once: the same folder gives the same file, not rewritten.
    path = Path(model_as_checkpoint(["test", "--model", str(folder)])[2])
    written = path.stat().st_mtime_ns
    assert model_as_checkpoint(["validate", "--model", str(folder)])[2] == str(path)
    assert path.stat().st_mtime_ns == written
    with pytest.raises(SeqtagInputError, match="give it or --ckpt_path, not both"):
        model_as_checkpoint(["predict", "--model", str(folder), "--ckpt_path", "best.ckpt"])
    with pytest.raises(SeqtagInputError, match="holds no config.json and model.safetensors"):
        model_as_checkpoint(["predict", "--model", str(tmp_path)])


def test_predict_with_model_folder_and_hub_name(checkpoint, folder, tmp_path, seqtag_cache, monkeypatch):
    text = write(tmp_path / "new.txt", NEW_TEXT)
    outputs = {}
    for name, model in (("ckpt", ["--ckpt_path", str(checkpoint)]), ("folder", ["--model", str(folder)])):
        outputs[name] = tmp_path / f"{name}.jsonl"
        args = ["predict", *model, "--data.predict", str(text), "--predict_output", str(outputs[name]), "--n_best", "2"]
        assert main([*args, "--trainer.logger=false", "--trainer.enable_progress_bar=false"]) == 0
    assert outputs["folder"].read_text() == outputs["ckpt"].read_text()
    assert len(outputs["ckpt"].read_text().splitlines()) == 3
    # A Hub name, found offline in the Hub cache (the HF_HUB_CACHE a user sets: read by huggingface_hub at import).
    hub_cache(folder, tmp_path / "hf", "me/tiny")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "hub.jsonl"
    args = ["predict", "--model", "me/tiny", "--data.predict", str(text), "--predict_output", str(out), "--n_best", "2"]
    assert main([*args, "--trainer.logger=false", "--trainer.enable_progress_bar=false"]) == 0
    assert out.read_text() == outputs["ckpt"].read_text()


# ---------------------------------------------------------------------------------------------- uploading
@pytest.fixture
def uploads(monkeypatch):
    """HfApi.create_repo and upload_folder replaced: each call is recorded, with the uploaded files' contents."""
    calls: list[dict] = []

    def create_repo(self, repo_id, **kwargs):
        calls.append({"create_repo": repo_id, **kwargs})
        return f"https://huggingface.co/{repo_id}"

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
        calls.append({"upload_folder": repo_id, "files": files, **kwargs})
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{repo_id}/commit/{COMMIT}", commit_message=kwargs["commit_message"],
            commit_description="", oid=COMMIT,
        )  # fmt: skip

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_push_to_hub_uploads_the_model_folder(checkpoint, folder, tmp_path, uploads):
    tagger = Tagger.load(checkpoint)
    url = tagger.push_to_hub("me/tiny", True, "hf_x", "first", language="en", tags=["ner"])
    assert url == f"https://huggingface.co/me/tiny/commit/{COMMIT}"
    create, upload = uploads
    assert create["create_repo"] == "me/tiny" and create["private"] is True and create["exist_ok"] is True
    assert create["token"] == "hf_x" and create["repo_type"] == "model"
    assert upload["upload_folder"] == "me/tiny" and upload["commit_message"] == "first"
    assert upload["delete_patterns"] == ["pretrained_words.txt"]  # a stale list from an earlier upload goes
    assert sorted(upload["files"]) == sorted(p.name for p in folder.iterdir())
    for name, content in upload["files"].items():  # what a download gives back: the same folder
        assert content == (folder / name).read_bytes(), name
    uploaded = tmp_path / "uploaded"
    uploaded.mkdir()
    for name, content in upload["files"].items():
        (uploaded / name).write_bytes(content)
    assert Tagger.from_pretrained(uploaded).predict(SENTENCES) == tagger.predict(SENTENCES)


def test_hub_command_saves_and_pushes(checkpoint, folder, tmp_path, uploads, capsys):
    out = tmp_path / "saved"
    argv = ["hub", "save", "--ckpt_path", str(checkpoint), "--output", str(out), "--language", "en"]
    assert main([*argv, "--repo_id", "me/tiny", "--tags", "ner"]) == 0
    assert "Model folder written to" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {p.name: p.read_bytes() for p in folder.iterdir()}
    assert main(["hub", "push", "--ckpt_path", str(checkpoint), "--repo_id", "me/tiny", "--language", "en",
                 "--tags", "ner"]) == 0  # fmt: skip
    assert main(["hub", "push", "--folder", str(out), "--repo_id", "me/copy", "--private"]) == 0
    assert "Pushed to https://huggingface.co/me/copy" in capsys.readouterr().out
    from_checkpoint, from_folder = uploads[1], uploads[3]
    assert from_checkpoint["files"] == from_folder["files"] == {p.name: p.read_bytes() for p in folder.iterdir()}
    assert uploads[2]["private"] is True and uploads[0]["private"] is False
    # A folder that is not a model is not uploaded.
    os.makedirs(tmp_path / "empty")
    assert main(["hub", "push", "--folder", str(tmp_path / "empty"), "--repo_id", "me/x"]) == 2
    assert "config.json is missing" in capsys.readouterr().err and len(uploads) == 4


def test_push_in_offline_mode_says_why_and_sends_nothing(folder, monkeypatch, capsys):
    # huggingface_hub refuses every request in offline mode before it is sent: the real upload path, no network.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert main(["hub", "push", "--folder", str(folder), "--repo_id", "me/x"]) == 2
    error = capsys.readouterr().err
    assert "me/x: the upload to the Hugging Face Hub failed" in error and "offline mode" in error
    assert main(["hub", "push", "--folder", str(folder), "--repo_id", "me/x", "--language", "en"]) == 2
    assert "a --folder is uploaded as it is" in capsys.readouterr().err


def test_character_lms_document_memory_and_feature_columns_travel(tmp_path):
    """A tagger built here (random weights: no training needed to compare outputs) with every option that brings
    state besides the weights: character LMs (their files deleted before saving), document memory, a feature column,
    casing, a pretrained table."""
    from tests.modules.test_contextual import save_lm

    save_lm(tmp_path / "fw.ckpt", "forward", 7, 0)
    save_lm(tmp_path / "bw.ckpt", "backward", 5, 1)
    sentences = [["Peter", "Blackburn", "visited", "Brussels"], ["EU", "rejects", "Peter"]]
    features = [[["NNP", "NNP", "VBD", "NNP"]], [["NNP", "VBZ", "NNP"]]]
    labels = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    vocab = Vocab.build(sentences, labels, scheme="BIOES", data_scheme="IOB2", train_features=features)
    vocab.attach_pretrained(["zebra", "quokka"])
    torch.manual_seed(0)
    tagger = Tagger(
        labels, "BIOES", len(vocab.words), len(vocab.chars), word_dim=6, char_hidden=4, casing_dim=3,
        feature_sizes=[len(vocab.features[0])], feature_dim=2, hidden_size=5, document_memory=True,
        char_lm_forward=str(tmp_path / "fw.ckpt"), char_lm_backward=str(tmp_path / "bw.ckpt"),
    ).eval()  # fmt: skip
    tagger.vocab = vocab
    tagger.char_lm.set_chars(vocab.chars)
    tagger.embedder.set_pretrained_table(torch.randn(2, 6))
    new = [["Zebra", "Peter", "quokka", "Brussels"], ["Blackburn", "rejects", "EU"]]
    new_features = [[["NNP", "NNP", "NN", "NNP"]], [["NNP", "VBZ", "NNP"]]]
    expected = tagger.predict(new, n_best=2, marginals=True, features=new_features)
    (tmp_path / "fw.ckpt").unlink()
    (tmp_path / "bw.ckpt").unlink()
    shared = Tagger.from_pretrained(tagger.save_pretrained(tmp_path / "folder"))
    assert shared.char_lm is not None and shared.memory is not None
    assert torch.equal(shared.char_lm.fw_map, tagger.char_lm.fw_map)
    assert shared.predict(new, n_best=2, marginals=True, features=new_features) == expected
    assert shared.tag(new, features=new_features, documents=[0, 0]) == tagger.tag(new, features=new_features)
    config = json.loads((tmp_path / "folder" / "config.json").read_text())
    assert config["model"]["char_lm_forward"]["hyper_parameters"]["hidden_size"] == 7  # the spec, not a path


def test_a_folder_leaves_out_the_language_modelling_heads(tmp_path):
    """lm_weight's heads train the encoder; tagging does not use them, so the folder neither stores nor builds them."""
    sentences = [["Peter", "Blackburn", "visited", "Brussels"], ["EU", "rejects", "Peter"]]
    labels = ["O", "B-PER", "I-PER", "E-PER", "S-PER"]
    vocab = Vocab.build(sentences, labels, scheme="BIOES", data_scheme="IOB2")
    torch.manual_seed(0)
    tagger = Tagger(labels, "BIOES", len(vocab.words), len(vocab.chars), word_dim=6, char_hidden=4, hidden_size=5,
                    lm_weight=0.1, lm_words=6).eval()  # fmt: skip
    tagger.vocab = vocab
    expected = tagger.predict(sentences, marginals=True)
    folder = tagger.save_pretrained(tmp_path / "folder")
    assert not [name for name in load_file(folder / "model.safetensors") if name.startswith("neighbour_lm.")]
    assert json.loads((folder / "config.json").read_text())["model"]["lm_weight"] == 0.0
    shared = Tagger.from_pretrained(folder)
    assert shared.neighbour_lm is None and shared.predict(sentences, marginals=True) == expected
    # Nor does a tagger loaded from the training checkpoint's contents.
    checkpoint = {"hyper_parameters": dict(tagger.hparams), "state_dict": tagger.state_dict()}
    assert any(name.startswith("neighbour_lm.") for name in checkpoint["state_dict"])
    loaded = Tagger.from_checkpoint(checkpoint)
    loaded.vocab = vocab
    assert loaded.neighbour_lm is None and loaded.hparams.lm_weight == 0.0
    assert loaded.predict(sentences, marginals=True) == expected


def test_state_a_folder_cannot_carry_is_an_error_not_a_broken_folder(checkpoint, tmp_path):
    saved = torch.load(checkpoint, weights_only=True)
    with pytest.raises(SeqtagInputError, match=r"holds \['seqtag_new_state'\], which a model folder"):
        hub.save_checkpoint_dict({**saved, "seqtag_new_state": {}}, tmp_path / "folder")
    assert not (tmp_path / "folder").exists()
