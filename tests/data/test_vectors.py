"""Vector files: word2vec binary written with numpy and read back as its text twin; fastText models trained here
(tiny, dim 8) read by our reader and compared with what the fastText library computes, down to a word unseen in
training that a loaded tagger meets in new text."""

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.fasttext_model import FastTextModel, SubwordTable, fnv1a
from seqtag.data.vectors import load_table_cached, load_vectors_cached, read_vectors, vectors_format
from seqtag.data.vocab import UNK_ID, Vocab
from seqtag.errors import SeqtagInputError
from tests.conftest import write

QUICKSTART = Path(__file__).resolve().parents[2] / "seqtag" / "examples" / "quickstart"
WORDS = ["Paris", "paris", "berlin", "Zoë", "the", "EU", "北京"]


@pytest.fixture(autouse=True)
def vectors_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQTAG_CACHE", str(tmp_path / "seqtag-cache"))


def random_vectors(n: int = len(WORDS), dim: int = 5) -> np.ndarray:
    return np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)


def write_word2vec_binary(path: Path, words: list[str], matrix: np.ndarray, newline: bool = True) -> Path:
    """word2vec's binary format, as word2vec.c writes it (newline=True) or gensim does (False)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(f"{len(words)} {matrix.shape[1]}\n".encode())
        for word, vector in zip(words, matrix):
            f.write(word.encode() + b" " + vector.astype("<f4").tobytes() + (b"\n" if newline else b""))
    return path


def write_text(path: Path, words: list[str], matrix: np.ndarray, header: bool) -> Path:
    lines = [f"{len(words)} {matrix.shape[1]}"] if header else []
    lines += [word + " " + " ".join(repr(float(x)) for x in vector) for word, vector in zip(words, matrix)]
    return write(path, "\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------- word2vec binary
@pytest.mark.parametrize("newline", [True, False])
@pytest.mark.parametrize("suffix", [".bin", ".bin.gz", ".vectors"])
def test_word2vec_binary_reads_back_as_its_text_twin(tmp_path, newline, suffix):
    matrix = random_vectors()
    binary = write_word2vec_binary(tmp_path / f"w2v{suffix}", WORDS, matrix, newline)
    text = write_text(tmp_path / "w2v.txt", WORDS, matrix, header=True)
    glove = write_text(tmp_path / "glove.txt", WORDS, matrix, header=False)
    assert [vectors_format(p) for p in (binary, text, glove)] == ["word2vec_binary", "text", "text"]
    for wanted in (None, {"paris", "zoë", "北京", "absent"}):
        got, dim = read_vectors(binary, wanted)
        expected, text_dim = read_vectors(text, wanted)
        assert dim == text_dim == 5 and list(got) == list(expected)
        for word in expected:
            np.testing.assert_array_equal(got[word], expected[word])
    got, _ = read_vectors(binary)
    np.testing.assert_array_equal(np.stack(list(got.values())), matrix)  # every value, bit for bit


def test_word2vec_binary_lowercase_fallback_and_limit(tmp_path):
    matrix = random_vectors()
    path = write_word2vec_binary(tmp_path / "w2v.bin", WORDS, matrix)
    vectors, _ = read_vectors(path, {"paris", "eu", "zoë"})
    # "Paris" comes first: the lowercased vocabulary's "paris" gets its vector, not the file's later "paris"
    np.testing.assert_array_equal(vectors["paris"], matrix[0])
    np.testing.assert_array_equal(vectors["eu"], matrix[5])
    np.testing.assert_array_equal(vectors["zoë"], matrix[3])
    assert list(read_vectors(path, None, limit=3)[0]) == ["Paris", "paris", "berlin"]
    words, table = load_table_cached(path, 2)
    assert words == ["Paris", "paris"] and table.shape == (2, 5)
    cached, dim = load_vectors_cached(path, ["berlin"])
    again, _ = load_vectors_cached(path, ["berlin"])  # from the .npz cache
    np.testing.assert_array_equal(cached["berlin"], matrix[2])
    np.testing.assert_array_equal(again["berlin"], matrix[2])


@pytest.mark.parametrize("cut", [7, 25])
def test_truncated_word2vec_binary_names_the_file(tmp_path, cut):
    path = write_word2vec_binary(tmp_path / "w2v.bin", WORDS, random_vectors())
    path.write_bytes(path.read_bytes()[:-cut])  # inside the last vector, or inside the last word
    with pytest.raises(SeqtagInputError, match=r"w2v\.bin: vector 7 of the 7 .* cut short"):
        read_vectors(path)
    bad_header = tmp_path / "header.bin"
    bad_header.write_bytes(b"7 5\n" + b"\x00\x81" * 10)
    with pytest.raises(SeqtagInputError, match=r"header\.bin"):
        read_vectors(bad_header)


# ----------------------------------------------------------------------------------------------------- fastText
def write_fasttext(path: Path, words: list[str], dim: int, bucket: int, minn: int = 3, maxn: int = 6) -> np.ndarray:
    """A fastText model file (format version 12) of ``words`` with random input rows; returns its input matrix."""
    import struct

    matrix = np.random.default_rng(1).uniform(-1, 1, (len(words) + bucket, dim)).astype(np.float32)
    with open(path, "wb") as f:
        f.write(struct.pack("<2i", 793712314, 12))
        f.write(struct.pack("<12id", dim, 5, 5, 1, 5, 1, 2, 2, bucket, minn, maxn, 100, 1e-4))
        f.write(struct.pack("<3iqq", len(words), len(words), 0, 100, -1))
        f.write(b"".join(w.encode() + b"\0" + struct.pack("<qb", 10, 0) for w in words))
        f.write(struct.pack("<?qq", False, *matrix.shape) + matrix.tobytes())
        f.write(struct.pack("<?qq", False, len(words), dim) + np.zeros((len(words), dim), np.float32).tobytes())
    return matrix


def test_fasttext_reader_on_a_file_written_here(tmp_path):
    """The format and the n-gram rows, without any fastText library: the numpy-hashed rows of many words equal the
    byte-by-byte reference (signed bytes, n-grams starting at UTF-8 characters), and vectors are their means."""
    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ-'.0") + ["é", "ü", "北", "京", "🙂"]
    unseen = ["".join(rng.choice(alphabet, size=rng.integers(0, 12))) for _ in range(500)] + ["</s>", "x", ""]
    vocabulary = ["</s>", "the", "Paris", "Zoë", "北京"]
    matrix = write_fasttext(tmp_path / "m.bin", vocabulary, dim=4, bucket=97)
    model = FastTextModel(tmp_path / "m.bin")
    assert model.words == vocabulary and (model.dim, model.minn, model.maxn, model.bucket) == (4, 3, 6, 97)
    words = vocabulary + unseen
    owners, rows = model.batch_rows(words)
    for i, word in enumerate(words):
        assert sorted(rows[owners == i].tolist()) == sorted(model.rows(word)), word
    assert model.rows("Zoë")[0] == 3 and len(model.rows("Zoë")) == 1 + 3 + 2 + 1  # own row, 3-, 4-, 5-grams of <Zoë>
    assert model.rows("</s>") == [0]
    expected = np.stack([matrix[model.rows(w)].mean(axis=0) if model.rows(w) else np.zeros(4) for w in words])
    np.testing.assert_allclose(model.vectors(words, batch=64), expected, rtol=1e-5, atol=1e-6)
    assert vectors_format(tmp_path / "m.bin") == "fasttext"
    assert list(read_vectors(tmp_path / "m.bin", None, limit=2)[0]) == ["</s>", "the"]
    with pytest.raises(SeqtagInputError, match="gzipped fastText model"):
        gz = tmp_path / "m.bin.gz"
        gz.write_bytes(gzip.compress((tmp_path / "m.bin").read_bytes()))
        read_vectors(gz)


def quickstart_sentences(limit: int) -> list[list[str]]:
    blocks = (QUICKSTART / "train.conll").read_text(encoding="utf-8").strip().split("\n\n")[:limit]
    return [[line.split()[0] for line in block.splitlines()] for block in blocks]


class Reference:
    """What a fastText library computes for a model file: the ``fasttext`` bindings, else gensim."""

    def __init__(self, path: Path, library: str) -> None:
        self.library = library
        if library == "fasttext":
            import fasttext

            self.model = fasttext.load_model(str(path))
            self.words = self.model.words
        else:
            from gensim.models.fasttext import load_facebook_vectors

            self.model = load_facebook_vectors(str(path))
            self.words = list(self.model.index_to_key)

    def vector(self, word: str) -> np.ndarray:
        return self.model.get_word_vector(word) if self.library == "fasttext" else self.model[word]


@pytest.fixture(scope="session")
def fasttext_model(tmp_path_factory) -> tuple[Path, Reference]:
    """A skipgram fastText model (dim 8, n-grams of 3-6 characters in 5,000 buckets) trained on 400 sentences of
    the quickstart data, with the ``fasttext`` bindings or else gensim; skipped when neither is installed."""
    folder = tmp_path_factory.mktemp("fasttext")
    sentences = quickstart_sentences(400)
    path = folder / "tiny.bin"
    try:
        import fasttext

        corpus = write(folder / "corpus.txt", "\n".join(" ".join(s) for s in sentences) + "\n")
        options = {"dim": 8, "minCount": 2, "bucket": 5000, "minn": 3, "maxn": 6, "epoch": 2, "thread": 1}
        fasttext.train_unsupervised(str(corpus), model="skipgram", verbose=0, **options).save_model(str(path))
        return path, Reference(path, "fasttext")
    except ImportError:
        pass
    gensim = pytest.importorskip("gensim", reason="needs the fasttext or gensim package to train a fastText model")
    from gensim.models.fasttext import FastText, save_facebook_model

    model = FastText(sentences, vector_size=8, min_count=2, bucket=5000, min_n=3, max_n=6, epochs=2, workers=1)
    save_facebook_model(model, str(path))
    assert gensim
    return path, Reference(path, "gensim")


UNSEEN = ["Zorblaxé", "zorblax", "Krakowianka", "北京欢迎你", "x"]  # not in the model's dictionary


def test_fasttext_vectors_equal_the_librarys(fasttext_model):
    path, reference = fasttext_model
    model = FastTextModel(path)
    assert vectors_format(path) == "fasttext" and model.dim == 8
    assert model.words == reference.words  # the dictionary, most frequent first
    assert not set(UNSEEN) & set(model.words)
    words = model.words[:100] + UNSEEN
    expected = np.stack([reference.vector(w) for w in words])
    np.testing.assert_allclose(model.vectors(words), expected, rtol=1e-5, atol=1e-7)
    assert np.abs(model.vectors(UNSEEN[:4])).sum(axis=1).min() > 0  # words outside the dictionary have a vector
    assert fnv1a("é".encode()) == ((((2166136261 ^ 0xFFFFFFC3) * 16777619) & 0xFFFFFFFF ^ 0xFFFFFFA9) * 16777619) % (
        1 << 32
    )  # bytes hash as signed chars, as fastText does
    copy = pickle.loads(pickle.dumps(model))  # maps the file again
    np.testing.assert_array_equal(copy.vectors(UNSEEN), model.vectors(UNSEEN))


def test_fasttext_read_vectors_gives_wanted_words_a_vector(fasttext_model):
    path, reference = fasttext_model
    model = FastTextModel(path)
    cased = next(w for w in model.words if w[0].isupper() and w.lower() not in model.index)
    vectors, dim = read_vectors(path, {"the", cased.lower(), "zorblax"})
    assert dim == 8 and set(vectors) == {"the", cased.lower(), "zorblax"}
    np.testing.assert_allclose(vectors[cased.lower()], reference.vector(cased), rtol=1e-5, atol=1e-7)  # its cased form
    np.testing.assert_allclose(vectors["zorblax"], reference.vector("zorblax"), rtol=1e-5, atol=1e-7)  # subwords
    words, table = load_table_cached(path, 30)
    assert words == model.words[:30]
    np.testing.assert_allclose(table, np.stack([reference.vector(w) for w in words]), rtol=1e-5, atol=1e-7)


def test_fasttext_file_cut_short_names_the_file(fasttext_model, tmp_path):
    path, _ = fasttext_model
    cut = tmp_path / "cut.bin"
    data = path.read_bytes()
    for size in (40, 2000, len(data) // 2):
        cut.write_bytes(data[:size])
        with pytest.raises(SeqtagInputError, match=r"cut\.bin: .*cut short"):
            FastTextModel(cut)


def test_subword_table_adds_unseen_words_once(fasttext_model):
    path, reference = fasttext_model
    vocab = Vocab.build([["the", "Paris"]], ["O"])
    model = FastTextModel(path)
    table = torch.from_numpy(model.vectors(model.words[:10]))
    vocab.attach_pretrained(model.words[:10])
    subwords = SubwordTable(model, table)
    assert subwords.add(vocab, [["the", "Zorblaxé", model.words[3]], ["Zorblaxé", "zorblax"]]) == 2
    base = len(vocab.words) + 10
    assert vocab.word_id("Zorblaxé") == base and vocab.word_id("zorblax") == base + 1
    assert vocab.word_id(model.words[3]) == len(vocab.words) + 3  # ids given before do not change
    assert subwords.add(vocab, [["zorblax", "Krakowianka"]]) == 1  # only the new word
    assert subwords.table.shape == (13, 8)
    np.testing.assert_allclose(subwords.table[10], reference.vector("Zorblaxé"), rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(subwords.table[:10], table)


def train_tagger(tmp_path: Path, vectors: Path):
    """A tiny model fitted for one step with the fastText model as ``data.word_vectors``, and its checkpoint."""
    import lightning as L

    from seqtag.tagger import Tagger

    sentences = (QUICKSTART / "train.conll").read_text().split("\n\n")[:40] + ["Blorptown B-LOC\nvotes O\n"]
    train = write(tmp_path / "train.conll", "\n\n".join(sentences))
    dev = write(tmp_path / "dev.conll", "Zorblaxé B-PER\nvisited O\nKrakowianka B-LOC\n")
    data = TaggingDataModule(str(train), validation=str(dev), word_vectors=str(vectors), keep_vectors=50,
                             cache_dir=str(tmp_path / "cache"), batch_size=8)  # fmt: skip
    model = Tagger(data.labels, data.scheme, vocab_size=data.vocab_size, num_chars=data.num_chars, word_dim=8,
                   char_dim=4, char_hidden=4, hidden_size=4)  # fmt: skip
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0)  # fmt: skip
    trainer.fit(model, datamodule=data)
    trainer.save_checkpoint(tmp_path / "model.ckpt")
    return data, model, tmp_path / "model.ckpt"


def test_fasttext_vectors_through_training_and_tagging(fasttext_model, tmp_path):
    from seqtag.tagger import Tagger

    path, reference = fasttext_model
    data, model, checkpoint = train_tagger(tmp_path, path)
    vocab = data.vocab
    # Training words start from their fastText vector, words outside the model's dictionary from their subwords.
    rows = data.pretrained_embeddings()
    inside = next(w for w in vocab.words[2:] if w in reference.words)
    outside = "Blorptown"
    assert outside in vocab.word_index and outside not in reference.words
    for word in (inside, outside):
        np.testing.assert_allclose(rows[vocab.word_index[word]], reference.vector(word), rtol=1e-5, atol=1e-7)
    # Dev words unseen in training and outside the table (the model's first 50 words) got their subword vector.
    words, table = data.pretrained_table()
    first = [w for w in load_table_cached(path, 50)[0] if w not in vocab.word_index]
    assert words[: len(first)] == first and words[len(first) :] == ["Zorblaxé", "visited", "Krakowianka"]
    row = words.index("Zorblaxé")
    assert len(words) == table.shape[0] and vocab.word_id("Zorblaxé") == len(vocab.words) + row
    np.testing.assert_allclose(table[row], reference.vector("Zorblaxé"), rtol=1e-5, atol=1e-7)
    assert torch.equal(model.embedder.pretrained_table, table)  # the model tags dev words with these rows

    # Tagging new text: the checkpoint alone knows its table's words; other unseen words are UNK ...
    alone = Tagger.load(checkpoint)
    assert alone.vocab.word_id("Zorblaxé") > UNK_ID and alone.vocab.word_id("Qwertzuiop") == UNK_ID
    # ... and with the fastText model given, any word gets the vector fastText computes for it.
    tagger = Tagger.load(checkpoint, word_vectors=path, keep_vectors=50)
    records = tagger.predict([["Qwertzuiop", "visited", "Zorblaxé"]])
    assert len(records[0]["tags"]) == 3
    new_id = tagger.vocab.word_id("Qwertzuiop")
    assert new_id == len(tagger.vocab.words) + len(first)  # the first row after the file's table
    embedded = tagger.embedder._word_vectors(torch.tensor([[new_id]]))[0, 0].detach()
    assert embedded.abs().sum() > 0
    np.testing.assert_allclose(embedded.numpy(), reference.vector("Qwertzuiop"), rtol=1e-5, atol=1e-7)
    assert tagger.tag([["Qwertzuiop"]]) and tagger.vocab.word_id("Qwertzuiop") == new_id  # added once

    # The same through the data module `seqtag predict` and `seqtag test` use with --data.word_vectors: the words of
    # the data to tag join the table before it is encoded.
    text = write(tmp_path / "new.txt", "Qwertzuiop visited Blorptown and Zorblaxé .\n")
    data = TaggingDataModule(vocab=str(checkpoint), predict=str(text), word_vectors=str(path), keep_vectors=50,
                             cache_dir=str(tmp_path / "cache"))  # fmt: skip
    data.setup("predict")
    words, table = data.pretrained_table()
    assert words[len(first) :] == ["Qwertzuiop", "visited", "Zorblaxé"]  # "and", "." and "Blorptown" are known
    assert data.vocab.encode_tokens(["Qwertzuiop"])["word_ids"] == [len(data.vocab.words) + len(first)]
    np.testing.assert_allclose(table[len(first)], reference.vector("Qwertzuiop"), rtol=1e-5, atol=1e-7)
