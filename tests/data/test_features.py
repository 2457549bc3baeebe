"""Feature columns: extra input columns (e.g. POS tags given with the data) read, encoded, batched and embedded."""

import json

import datasets
import pytest
import torch

from seqtag.data.datamodule import TaggingDataModule, collate, iter_batches
from seqtag.data.readers import iter_sentences, read_conll, read_conllu
from seqtag.errors import DataFormatError, SeqtagInputError
from seqtag.tagger import Tagger
from tests.conftest import write

CHUNKS = "He PRP B-NP\nreckons VBZ B-VP\nthe DT B-NP\ndeficit NN I-NP\n\nRates NNS B-NP\nrose VBD B-VP\n"
CONLLU = "# text = I ran\n1\tI\tI\tPRON\tPRP\t_\t2\tnsubj\t_\t_\n2\tran\trun\tVERB\tVBD\t_\t0\troot\t_\t_\n\n"


def test_conll_feature_columns(tmp_path):
    path = write(tmp_path / "train.txt", CHUNKS)
    first = next(read_conll(path, feature_columns=[1]))
    assert first == {
        "tokens": ["He", "reckons", "the", "deficit"],
        "tags": ["B-NP", "B-VP", "B-NP", "I-NP"],
        "document": 0,
        "features": [["PRP", "VBZ", "DT", "NN"]],
    }
    assert "features" not in next(read_conll(path))
    with pytest.raises(SeqtagInputError, match="include the tag column -1"):
        next(read_conll(path, feature_columns=[2]))
    with pytest.raises(DataFormatError, match=r"train.txt:1: feature_columns=5 does not exist"):
        next(read_conll(path, feature_columns=[5]))
    with pytest.raises(SeqtagInputError, match="are column indices"):
        next(iter_sentences(str(path), format="conll", feature_columns=["pos"]))


def test_conllu_feature_fields(tmp_path):
    path = write(tmp_path / "a.conllu", CONLLU)
    assert next(read_conllu(path, feature_fields=["xpos", "lemma"]))["features"] == [["PRP", "VBD"], ["I", "run"]]
    with pytest.raises(SeqtagInputError, match="include the tag field 'upos'"):
        next(read_conllu(path, feature_fields=["upos"]))
    with pytest.raises(SeqtagInputError, match=r"among \['lemma'"):
        next(read_conllu(path, feature_fields=["head"]))


def test_field_based_features_turn_class_ids_into_names(tmp_path):
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "pos_tags": datasets.List(datasets.ClassLabel(names=["DT", "NN"])),
            "chunk_tags": datasets.List(datasets.ClassLabel(names=["B-NP", "I-NP"])),
        }
    )
    rows = {"tokens": [["the", "deficit"]], "pos_tags": [[0, 1]], "chunk_tags": [[0, 1]]}
    datasets.Dataset.from_dict(rows, features=features).save_to_disk(str(tmp_path / "disk"))
    sentence = next(iter_sentences(str(tmp_path / "disk"), tag_column="chunk_tags", feature_columns=["pos_tags"]))
    assert sentence == {
        "tokens": ["the", "deficit"],
        "tags": ["B-NP", "I-NP"],
        "document": 0,
        "features": [["DT", "NN"]],
    }
    with pytest.raises(SeqtagInputError, match="no feature field 'pos'"):
        next(iter_sentences(str(tmp_path / "disk"), tag_column="chunk_tags", feature_columns=["pos"]))


def small_conll2000(shared_data, tmp_path, count):
    blocks = (shared_data / "conll2000" / "train.txt").read_text().split("\n\n")
    return write(tmp_path / "train.txt", "\n\n".join(blocks[:count]) + "\n"), blocks


def test_real_data_batches_carry_feature_ids(shared_data, tmp_path):
    train, blocks = small_conll2000(shared_data, tmp_path, 300)
    test = write(tmp_path / "test.txt", "\n\n".join(blocks[300:400]) + "\n")
    # Data to tag: tokens and the POS column only, so there is no gold column.
    two_columns = "\n".join(" ".join(line.split()[:2]) for line in blocks[400].splitlines())
    predict = write(tmp_path / "tokens_pos.txt", two_columns + "\n")
    dm = TaggingDataModule(
        str(train),
        test=str(test),
        predict=str(predict),
        feature_columns=[1],
        batch_size=16,
        cache_dir=str(tmp_path / "cache"),
    )
    pos_values = dm.vocab.features[0]
    assert pos_values[:2] == ["<pad>", "<unk>"] and {"NN", "VBZ", "DT"} <= set(pos_values)
    assert dm.feature_sizes == [len(pos_values)]
    for stage in ("fit", "test", "predict"):
        dm.setup(stage)
    assert dm.sentences("predict")[0]["tags"] == []
    for split, loader in (("train", dm.train_dataloader()), ("test", dm.test_dataloader())):
        encoded = dm._encode_split(split)
        for batch in loader:
            rows = [encoded[i] for i in batch["index"].tolist()]
            expected = collate(rows)
            assert batch.keys() == expected.keys() and "feature_ids" in batch
            for key in expected:
                assert torch.equal(batch[key], expected[key]), (split, key)
    # The ids are the POS column's values.
    raw = dm.sentences("test")[0]
    batch = collate([dm._encode_split("test")[0]])
    assert [pos_values[i] for i in batch["feature_ids"][0, :, 0].tolist()] == [
        v if v in dm.vocab.feature_index[0] else "<unk>" for v in raw["features"][0]
    ]
    # Plain text (one sentence per line) is read as a column file and refused at its first uneven line.
    text = write(tmp_path / "raw.txt", "He reckons the deficit\nRates rose\n")
    plain = TaggingDataModule(str(train), predict=str(text), feature_columns=[1], cache_dir=str(tmp_path / "c2"))
    with pytest.raises(DataFormatError, match="raw.txt:2: expected 4 columns, got 2"):
        plain.setup("predict")
    with pytest.raises(SeqtagInputError, match="plain text has only tokens"):
        iter_sentences(str(text), format="text", feature_columns=[1])


def test_two_feature_columns_stay_two(tmp_path):
    train = write(tmp_path / "train.conll", "EU NNP B-NP I-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP I-PER\n")
    dm = TaggingDataModule(str(train), feature_columns=[1, 2], cache_dir=str(tmp_path / "cache"))
    assert len(dm.sentences("train")) == 2
    assert dm.sentences("train")[0]["features"] == [["NNP", "VBZ"], ["B-NP", "B-VP"]]
    assert dm.vocab.features == [["<pad>", "<unk>", "NNP", "VBZ"], ["<pad>", "<unk>", "B-NP", "B-VP"]]
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["feature_ids"].shape[-1] == 2


def test_data_without_the_models_feature_columns_is_refused(tmp_path):
    train = write(tmp_path / "train.txt", CHUNKS)
    dm = TaggingDataModule(str(train), feature_columns=[1], cache_dir=str(tmp_path / "cache"))
    dm.vocab.save(tmp_path / "vocab.json")
    without = TaggingDataModule(test=str(train), vocab=str(tmp_path / "vocab.json"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(SeqtagInputError, match="reads 1 feature columns but data.feature_columns is None"):
        without.setup("test")


def test_tagger_embeds_features_and_tags_with_them(tmp_path):
    train = write(tmp_path / "train.txt", CHUNKS)
    dm = TaggingDataModule(str(train), feature_columns=[1], cache_dir=str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = Tagger(dm.labels, dm.scheme, dm.vocab_size, dm.num_chars, word_dim=8, hidden_size=8,
                   feature_sizes=dm.feature_sizes, feature_dim=4).eval()  # fmt: skip
    model.vocab = dm.vocab
    assert model.embedder.output_size == 8 + 50 + 4
    tokens = [["He", "reckons", "the", "deficit"]]
    batch = next(iter_batches(dm.vocab, tokens, 8, [[["PRP", "VBZ", "DT", "NN"]]]))
    other = next(iter_batches(dm.vocab, tokens, 8, [[["NN", "NN", "NN", "NN"]]]))
    assert torch.equal(batch["word_ids"], other["word_ids"])
    assert not torch.allclose(model(batch), model(other))  # the POS column reaches the emissions
    tags = model.tag(tokens, features=[[["PRP", "VBZ", "DT", "NN"]]])
    assert len(tags[0]) == 4 and set(tags[0]) <= set(dm.vocab.labels) | {"O"}
    with pytest.raises(SeqtagInputError, match="reads 1 feature columns besides the tokens"):
        model.tag(tokens)
    with pytest.raises(SeqtagInputError, match="expected 1 feature columns of 4 values each"):
        model.tag(tokens, features=[[["PRP"]]])


def test_cli_fits_and_tags_with_the_pos_column(shared_data, tmp_path):
    from tests.test_cli import ROOT, seqtag

    train, blocks = small_conll2000(shared_data, tmp_path, 200)
    predict = write(tmp_path / "tokens_pos.txt", "He PRP\nreckons VBZ\nthe DT\ndeficit NN\n\nRates NNS\nrose VBD\n")
    args = [
        "--config", ROOT / "configs" / "conll2000_chunk.yaml", "--data.train", train, "--data.test", train,
        "--data.word_vectors=null", "--data.cache_dir", tmp_path / "cache", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", tmp_path / "runs",
    ]  # fmt: skip
    fit = seqtag("fit", *args, "--trainer.max_epochs", 1, "--model.num_layers", 1, "--model.hidden_size", 16)
    best = fit.stdout.split("Best checkpoint: ")[1].split()[0]
    assert Tagger.load(best).embedder.features[0].num_embeddings == len(Tagger.load(best).vocab.features[0])
    out = tmp_path / "pred.conll"
    options = ["--model.num_layers", 1, "--model.hidden_size", 16, "--ckpt_path", best]
    seqtag("predict", *args, *options, "--data.predict", predict, "--predict_output", out)
    rows = [line.split() for line in out.read_text().splitlines() if line]
    assert [r[0] for r in rows] == ["He", "reckons", "the", "deficit", "Rates", "rose"]
    # token, the POS column the model read, prediction: the file had no gold column
    assert [r[1] for r in rows] == ["PRP", "VBZ", "DT", "NN", "NNS", "VBD"] and all(len(r) == 3 for r in rows)
    jsonl = tmp_path / "pred.jsonl"
    seqtag("predict", *args, *options, "--data.predict", predict, "--predict_output", jsonl, "--predict_format=jsonl")
    record = json.loads(jsonl.read_text().splitlines()[1])
    assert [t["text"] for t in record["tokens"]] == ["Rates", "rose"] and record["features"] == [["NNS", "VBD"]]
    assert len(record["tags"]) == 2
    scored = tmp_path / "scored.conll"  # with gold chunks: token, POS, gold, prediction, as conlleval reads
    seqtag("predict", *args, *options, "--data.predict", train, "--predict_output", scored)
    first = scored.read_text().split("\n\n")[0].splitlines()
    assert [line.split()[:3] for line in first] == [line.split() for line in blocks[0].splitlines()]
    assert seqtag("score", scored, "--json").returncode == 0
