"""The summary `seqtag fit` prints of what it read, checked against counts made from the files' text."""

import gzip
from collections import Counter
from pathlib import Path

from seqtag.data.datamodule import TaggingDataModule
from seqtag.data.summary import format_summary, label_counts, summarize, unseen_labels, vector_coverage
from seqtag.data.vocab import Vocab
from tests.conftest import write

QUICKSTART = Path(__file__).resolve().parent.parent.parent / "seqtag" / "examples" / "quickstart"


def sentences_of(path: Path) -> list[list[tuple[str, str]]]:
    """(token, tag) pairs per sentence, read independently of seqtag's readers."""
    blocks = [b for b in path.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    return [[tuple(line.split()) for line in block.splitlines()] for block in blocks]


def quickstart(tmp_path, **kwargs) -> TaggingDataModule:
    return TaggingDataModule(
        str(QUICKSTART / "train.conll"),
        validation=str(QUICKSTART / "dev.conll"),
        test=str(QUICKSTART / "test.conll"),
        cache_dir=str(tmp_path / "cache"),
        **kwargs,
    )


def test_quickstart_summary_counts_what_the_files_hold(tmp_path):
    summary = summarize(quickstart(tmp_path))
    assert [s.name for s in summary.splits] == ["train", "validation", "test"]
    for split, name in zip(summary.splits, ("train", "dev", "test")):
        sentences = sentences_of(QUICKSTART / f"{name}.conll")
        assert (split.sentences, split.tokens) == (len(sentences), sum(map(len, sentences)))
        # IOB2: every span starts with a B- tag.
        starts = Counter(tag[2:] for s in sentences for _, tag in s if tag.startswith("B-"))
        assert split.labels == starts and sum(starts.values()) > 0
    assert (summary.data_scheme, summary.train_scheme, summary.scheme_detected) == ("IOB2", "BIOES", True)
    assert not summary.has_documents and summary.vectors is None

    text = format_summary(summary)
    lines = text.splitlines()
    assert len(lines) <= 12 and max(map(len, lines)) <= 120
    assert "IOB2 in the data (detected), BIOES in training" in text
    train = summary.splits[0]
    assert f"{train.sentences:,} sentences, {train.tokens:,} tokens" in text
    top, count = train.labels.most_common(1)[0]
    assert f"4 types: {top} {count:,}" in text
    assert "validation: none; test: none" in text
    assert "none marked in train" in text


def test_vector_coverage_of_the_training_words(tmp_path):
    train = sentences_of(QUICKSTART / "train.conll")
    words = Counter(token.lower() for s in train for token, _ in s)
    # Every third training word type has a vector; one of them only in a cased form, which lookup lowercases.
    chosen = sorted(words)[::3]
    lines = [f"{w.capitalize() if i == 0 else w} 0.1 0.2 0.3" for i, w in enumerate(chosen)]
    vectors = tmp_path / "vectors.txt.gz"
    with gzip.open(vectors, "wt", encoding="utf-8") as f:
        f.write("\n".join([*lines, "unrelated 0.5 0.5 0.5"]) + "\n")
    summary = summarize(quickstart(tmp_path, word_vectors=str(vectors), lowercase=True))
    v = summary.vectors
    assert (v.types_with, v.types) == (len(chosen), len(words))
    assert (v.tokens_with, v.tokens) == (sum(words[w] for w in chosen), sum(words.values()))
    text = format_summary(summary)
    assert f"{len(chosen):,} of {len(words):,} training word types" in text and str(vectors) in text


def test_plain_classes_and_labels_unseen_in_training(tmp_path):
    train = write(tmp_path / "train.conll", "The DET\ndog NOUN\nbarks VERB\n\nDogs NOUN\nbark VERB\n")
    dev = write(tmp_path / "dev.conll", "Wow INTJ\n!  PUNCT\n\nA DET\ncat NOUN\n")
    dm = TaggingDataModule(
        str(train), validation=str(dev), tag_scheme="none", unknown_labels="O", cache_dir=str(tmp_path / "cache")
    )
    summary = summarize(dm)
    assert summary.data_scheme is None
    assert summary.splits[0].labels == Counter({"NOUN": 2, "VERB": 2, "DET": 1})
    text = format_summary(summary)
    assert "none: the labels are plain classes" in text
    assert "3 labels: NOUN 2, VERB 2, DET 1" in text
    assert "labels never seen in training: validation: INTJ 1, PUNCT 1" in text


def test_the_pure_functions():
    tags = [["B-PER", "I-PER", "O", "S-LOC"], ["B-LOC", "E-LOC"]]
    assert label_counts(tags, "BIOES") == Counter({"LOC": 2, "PER": 1})  # B-PER I-PER is one span in BIOES' rules
    assert label_counts(tags, None)["B-PER"] == 1
    assert unseen_labels(Counter({"GPE": 3, "LOC": 1}), {"LOC", "PER"}) == Counter({"GPE": 3})
    normalize = Vocab([], [], [], lowercase=True).normalize
    coverage = vector_coverage([["Paris", "paris", "Oslo"]], normalize, {"paris"})
    assert (coverage.types_with, coverage.types, coverage.tokens_with, coverage.tokens) == (1, 2, 2, 3)
