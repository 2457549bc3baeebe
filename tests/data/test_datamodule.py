import gzip

import pytest
import torch

from seqtag.data.datamodule import TaggingDataModule, collate
from seqtag.data.sampler import BucketBatchSampler, document_batches
from seqtag.data.vectors import read_vectors
from seqtag.data.vocab import Vocab, casing
from seqtag.errors import SeqtagInputError
from tests.conftest import write

IOB1 = "EU I-ORG\nrejects O\nGerman I-MISC\ncall O\n\nPeter I-PER\nBlackburn I-PER\n\nin O\nParis I-LOC\n"


def make_dm(tmp_path, **kwargs):
    train = write(tmp_path / "train.conll", IOB1)
    dev = write(tmp_path / "dev.conll", "Paris I-LOC\nsays O\n\nEU I-ORG\n")
    return TaggingDataModule(str(train), validation=str(dev), cache_dir=str(tmp_path / "cache"), **kwargs)


def test_vocab_and_labels_exist_after_init(tmp_path):
    dm = make_dm(tmp_path)
    assert dm.data_scheme == "IOB1" and dm.scheme == "BIOES"
    assert dm.labels[0] == "O" and "S-ORG" in dm.labels and "E-PER" in dm.labels
    assert dm.vocab.words[:2] == ["<pad>", "<unk>"] and "EU" in dm.vocab.word_index
    assert dm.vocab_size == len(dm.vocab.words) and dm.num_chars == len(dm.vocab.chars)


def test_eval_bucketing_follows_the_device(tmp_path):
    dm = make_dm(tmp_path)
    assert dm.eval_bucketing("cpu") == "exact" and dm.eval_bucketing("cuda") == "sorted"
    assert dm.eval_bucketing() == "exact"  # no trainer: CPU
    assert make_dm(tmp_path, bucketing="none").eval_bucketing("cpu") == "none"
    assert make_dm(tmp_path, eval_bucketing="exact").eval_bucketing("cuda") == "exact"
    dm = make_dm(tmp_path, eval_bucketing="sorted")
    dm.setup("fit")
    assert [b["lengths"].tolist() for b in dm.val_dataloader()] in ([[2, 1]], [[1, 2]])  # one padded batch
    with pytest.raises(SeqtagInputError, match="eval_bucketing should be one of"):
        make_dm(tmp_path, eval_bucketing="gpu")


def test_batches_are_padded_and_tags_in_training_scheme(tmp_path):
    dm = make_dm(tmp_path, bucketing="sorted")  # both dev sentences in one padded batch
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert batch["word_ids"].shape == batch["tag_ids"].shape == batch["casing_ids"].shape
    assert batch["char_ids"].dim() == 3 and batch["lengths"].tolist() == [2, 1] or batch["lengths"].tolist() == [1, 2]
    labels = dm.labels
    for row, n in zip(batch["tag_ids"].tolist(), batch["lengths"].tolist()):
        tags = [labels[t] for t in row[:n]]
        assert tags in (["S-LOC", "O"], ["S-ORG"])
    # "says" is not a training word
    unk = dm.vocab.word_index.get("says", 1)
    assert unk == 1


def test_unknown_validation_label_policy(tmp_path):
    write(tmp_path / "dev2.conll", "Paris I-GPE\n")
    dm = TaggingDataModule(
        str(write(tmp_path / "train.conll", IOB1)),
        validation=str(tmp_path / "dev2.conll"),
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.raises(SeqtagInputError, match=r"dev2.conll: labels never seen in training: \['S-GPE'\]"):
        dm.setup("fit")
    dm = TaggingDataModule(
        str(tmp_path / "train.conll"),
        validation=str(tmp_path / "dev2.conll"),
        unknown_labels="O",
        cache_dir=str(tmp_path / "c"),
    )
    with pytest.warns(UserWarning, match="counted as 'O'"):
        dm.setup("fit")


def test_pos_labels_have_no_scheme(tmp_path):
    train = write(tmp_path / "pos.conll", "The DET\ncat NOUN\n\nruns VERB\n")
    dm = TaggingDataModule(str(train), cache_dir=str(tmp_path / "cache"))
    assert dm.scheme is None and dm.labels == ["DET", "NOUN", "VERB"]


def test_pretrained_vectors_fill_rows_and_keep_a_table_for_unseen_words(tmp_path):
    vectors = tmp_path / "glove.txt.gz"
    with gzip.open(vectors, "wt") as f:
        f.write("eu 1 0 0\nparis 0 1 0\nsays 0 0 1\nunused 1 1 1\n")
    dm = make_dm(tmp_path, word_vectors=str(vectors), lowercase=True)
    # The vocabulary is the training words': a dev word ("says") is found in the pretrained table instead.
    assert "says" not in dm.vocab.word_index and "unused" not in dm.vocab.word_index
    words, table = dm.pretrained_table()
    assert words == ["says", "unused"] and table.tolist() == [[0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    assert dm.vocab.encode_tokens(["Says", "nothing"])["word_ids"] == [dm.vocab_size, 1]
    assert TaggingDataModule(**{**dm.hparams, "keep_vectors": 0}).pretrained_table() is None
    matrix = dm.pretrained_embeddings()
    assert matrix.shape == (dm.vocab_size, 3)
    assert matrix[dm.vocab.word_index["paris"]].tolist() == [0.0, 1.0, 0.0]
    assert matrix[0].abs().sum() == 0


def test_word2vec_header_and_case_fallback(tmp_path):
    path = write(tmp_path / "w2v.vec", "2 2\nParis 0.5 1\nberlin 2 3\n")
    vectors, dim = read_vectors(path, {"paris", "berlin"})
    assert dim == 2 and vectors["paris"].tolist() == [0.5, 1.0] and "berlin" in vectors


def test_vocab_json_round_trip(tmp_path):
    vocab = Vocab.build([["EU", "EU", "rejects"]], ["O", "B-ORG"], min_count=2)
    assert vocab.words == ["<pad>", "<unk>", "EU"]
    vocab.save(tmp_path / "vocab.json")
    again = Vocab.load(tmp_path / "vocab.json")
    assert again.words == vocab.words and again.encode_tokens(["EU", "x"])["word_ids"] == [2, 1]
    assert casing("Paris") == 5 and casing("1999") == 1 and casing("EU") == 4


def test_bucket_sampler_covers_each_sentence_once_across_ranks():
    lengths = [3, 7, 1, 9, 4, 4, 2, 8, 5, 6, 10]
    seen = []
    for rank in range(2):
        sampler = BucketBatchSampler(lengths, 3, shuffle=False, num_replicas=2, rank=rank, even=False)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(len(lengths)))
    train = [list(BucketBatchSampler(lengths, 2, num_replicas=2, rank=r, pool_factor=2)) for r in range(2)]
    assert len(train[0]) == len(train[1])  # DDP steps in lock-step
    s = BucketBatchSampler(lengths, 2, pool_factor=2)
    first = list(s)
    s.set_epoch(1)
    assert sorted(i for b in first for i in b) == list(range(11)) and list(s) != first


def test_document_batches_keep_documents_whole():
    documents = [0, 0, 0, 3, 3, 5, 6, 6, 6, 6, 6]  # document 6 has more sentences than a batch
    assert document_batches(documents, 4) == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9], [10]]
    assert document_batches(documents, 100) == [list(range(11))]
    lengths = [5] * len(documents)
    sampler = BucketBatchSampler(lengths, 4, documents=documents)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    # The same batches every epoch, so every epoch has len(sampler) of them, in a new order.
    assert sorted(first) == sorted(second) == document_batches(documents, 4) and len(sampler) == 4
    assert [list(BucketBatchSampler(lengths, 4, documents=documents, seed=s)) for s in range(5)] != [first] * 5
    seen = []
    for rank in range(3):
        evaluation = BucketBatchSampler(lengths, 4, shuffle=False, num_replicas=3, rank=rank, even=False,
                                        documents=documents)  # fmt: skip
        batches = list(evaluation)
        assert len(batches) == len(evaluation)
        seen += [i for b in batches for i in b]
    assert sorted(seen) == list(range(11))
    ranks = [BucketBatchSampler(lengths, 4, num_replicas=3, rank=r, documents=documents) for r in range(3)]
    assert [len(list(r)) for r in ranks] == [len(r) for r in ranks] == [2, 2, 2]  # lock-step: some repeated


def test_datamodule_batches_by_document_when_asked(tmp_path):
    text = "-DOCSTART- O\n\n" + "\n\n".join(["EU I-ORG", "Paris I-LOC\nsays O", "ok O"]) + "\n\n-DOCSTART- O\n\n"
    text += "\n\n".join(["Peter I-PER", "in O\nRome I-LOC"]) + "\n"
    train = write(tmp_path / "docs.conll", text)
    dm = TaggingDataModule(str(train), batch_size=3, batch_by_document=True, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    batches = [b["index"].tolist() for b in dm.train_dataloader()]
    assert sorted(batches) == [[0, 1, 2], [3, 4]]
    assert all(b["document"].unique().numel() == 1 for b in dm.train_dataloader())
    assert not TaggingDataModule(str(train), cache_dir=str(tmp_path / "cache")).batch_by_document()  # no model


def test_collate_shapes():
    rows = [
        {"word_ids": [2, 3], "char_ids": [[2], [3, 4]], "casing_ids": [1, 1], "tag_ids": [0, 1], "index": 0},
        {"word_ids": [2], "char_ids": [[2, 2, 2]], "casing_ids": [1], "tag_ids": [1], "index": 1},
    ]
    batch = collate(rows)
    assert batch["char_ids"].shape == (2, 2, 3)
    assert batch["lengths"].tolist() == [2, 1] and batch["tag_ids"][1].tolist() == [1, 0]
    assert torch.equal(batch["index"], torch.tensor([0, 1]))


@pytest.mark.parametrize("shuffle", [True, False])
def test_exact_bucketing_gives_one_length_per_batch(shuffle):
    lengths = [3, 7, 3, 9, 4, 4, 3, 8, 4, 3, 10, 3]
    for rank in range(2):
        sampler = BucketBatchSampler(lengths, 3, shuffle=shuffle, num_replicas=2, rank=rank, even=shuffle)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        if shuffle:
            assert all(len({lengths[i] for i in b}) == 1 and len(b) <= 3 for b in batches)
        else:  # evaluation: sorted by length, the sparse long lengths merged (test_sampler.py)
            assert all(len(b) <= 3 for b in batches)
            assert all(max(lengths[i] for i in a) <= min(lengths[i] for i in b) for a, b in zip(batches, batches[1:]))
    single = [i for b in BucketBatchSampler(lengths, 3, shuffle=shuffle) for i in b]
    assert sorted(single) == list(range(len(lengths)))
    with pytest.raises(ValueError, match="bucketing should be one of"):
        BucketBatchSampler(lengths, 3, bucketing="exactly")


def rows_of(encoded, positions, indices):
    return [encoded[positions[i]] for i in indices]


@pytest.mark.parametrize("bucketing", ["exact", "sorted"])
def test_loader_batches_equal_collated_rows(shared_data, tmp_path, bucketing):
    """Batches cut from the packed split equal collate() over the same Arrow rows, for real data, a filtered
    training split (positions differ from sentence indices) and a split without tags."""
    train = shared_data / "conll2003" / "eng.testa"
    text = write(tmp_path / "raw.txt", "Peter lives in Paris .\n\nEU rejects German call\nok\n")
    dm = TaggingDataModule(
        str(train),
        test=str(shared_data / "conll2003" / "eng.testb"),
        predict=str(text),
        max_length=30,
        batch_size=16,
        bucketing=bucketing,
        cache_dir=str(tmp_path / "cache"),
    )
    with pytest.warns(UserWarning, match="longer than max_length=30 left out"):
        dm.setup("fit")
    dm.setup("test")
    dm.setup("predict")
    loaders = {"train": dm.train_dataloader(), "test": dm.test_dataloader(), "predict": dm.predict_dataloader()}
    for split, loader in loaders.items():
        seen = []
        encoded = dm._encode_split(split)
        positions = {int(i): p for p, i in enumerate(encoded["index"])}
        for batch in loader:
            expected = collate(rows_of(encoded, positions, batch["index"].tolist()))
            assert batch.keys() - {"sentences"} == expected.keys()  # streamed data to tag carries its sentences
            for key in expected:
                assert torch.equal(batch[key], expected[key]), (split, key)
            seen += batch["index"].tolist()
        assert sorted(set(seen)) == sorted(encoded["index"])
    assert int(dm._encode_split("train")["index"][-1]) > len(dm._encode_split("train")) - 1  # filtered


def test_evaluation_batches_are_split_so_every_rank_has_one():
    lengths = [5, 5, 5, 3, 3]
    ranks = [
        list(BucketBatchSampler(lengths, 256, shuffle=False, num_replicas=4, rank=r, even=False, bucketing="sorted"))
        for r in range(4)
    ]
    assert all(len(batches) == 1 for batches in ranks)
    assert sorted(i for batches in ranks for batch in batches for i in batch) == [0, 1, 2, 3, 4]
    assert [len(BucketBatchSampler(lengths, 256, False, num_replicas=4, rank=r, even=False, bucketing="sorted"))
            for r in range(4)] == [1, 1, 1, 1]  # fmt: skip
    with pytest.raises(ValueError, match="2 sentences cannot be spread over 3 processes"):
        list(BucketBatchSampler([1, 2], 8, shuffle=False, num_replicas=3, rank=0, even=False))


def test_fewer_evaluation_sentences_than_processes_is_a_clear_error(tmp_path):
    from types import SimpleNamespace

    test = write(tmp_path / "test.conll", "Paris I-LOC\n")
    dm = TaggingDataModule(str(write(tmp_path / "train.conll", IOB1)), test=str(test), cache_dir=str(tmp_path / "c"))
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0)
    dm.setup("test")
    with pytest.raises(SeqtagInputError, match=r"test.conll: 1 sentences for test, fewer than the 2 processes"):
        dm.test_dataloader()
