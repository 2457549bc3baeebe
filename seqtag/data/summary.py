"""What a fit reads, said before the first epoch: each split's sentences and tokens, the tag schemes, the labels with
their counts, the vocabulary, how much of the training text has a pretrained vector, and the labels of the
validation and test data that training never saw.

A wrong tag column, a scheme read differently than meant, vectors that cover little of the text or a path to the
wrong file then show in ten lines, not in a score hours later. The counts are pure functions of the sentences
(:func:`split_size`, :func:`label_counts`, :func:`vector_coverage`, :func:`unseen_labels`); :func:`summarize`
gathers them from a :class:`~seqtag.data.datamodule.TaggingDataModule` and :func:`format_summary` writes them as
plain text. ``seqtag fit`` prints :func:`describe` of its data once, on the first process.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from seqtag.data import schemes
from seqtag.errors import SeqtagInputError

if TYPE_CHECKING:
    from seqtag.data.datamodule import TaggingDataModule

WIDTH = 118  # wrapped lines stay under the 120 columns of a terminal
MAX_LABELS = 40  # a tag set larger than this (fine-grained POS) is cut, with the number left out


def split_size(token_lists: Iterable[Sequence[str]]) -> tuple[int, int]:
    """(sentences, tokens) of a split."""
    sentences = tokens = 0
    for tokens_of_sentence in token_lists:
        sentences += 1
        tokens += len(tokens_of_sentence)
    return sentences, tokens


def label_counts(tag_lists: Iterable[Sequence[str]], scheme: str | None) -> Counter[str]:
    """Spans per type for span tags in ``scheme``, or tags per label for plain classes (``scheme`` None)."""
    if scheme is None:
        return Counter(tag for tags in tag_lists for tag in tags)
    return Counter(type_ for tags in tag_lists for type_, _, _ in schemes.get_spans(tags, scheme))


def unseen_labels(counts: Counter[str], known: Container[str]) -> Counter[str]:
    """The labels (span types or tags) of ``counts`` not in ``known``, with their counts."""
    return Counter({label: n for label, n in counts.items() if label not in known})


@dataclass
class VectorCoverage:
    """How many training word types (as the vocabulary normalizes them) and tokens have a pretrained vector."""

    types_with: int
    types: int
    tokens_with: int
    tokens: int


def vector_coverage(
    token_lists: Iterable[Sequence[str]], normalize: Callable[[str], str], vectors: Container[str]
) -> VectorCoverage:
    """The pretrained vectors' coverage of ``token_lists``: a token has one when its normalized form, or that form
    lowercased, is in ``vectors`` (the lookup the vocabulary makes)."""
    counts = Counter(normalize(token) for tokens in token_lists for token in tokens)
    covered = {word for word in counts if word in vectors or word.lower() in vectors}
    return VectorCoverage(len(covered), len(counts), sum(counts[word] for word in covered), sum(counts.values()))


@dataclass
class SplitSummary:
    name: str
    source: str
    sentences: int
    tokens: int
    documents: int
    labels: Counter[str]


@dataclass
class DataSummary:
    """What :func:`format_summary` writes; ``splits`` starts with the training split."""

    splits: list[SplitSummary]
    data_scheme: str | None
    scheme_detected: bool
    train_scheme: str | None
    vocab_size: int
    num_chars: int
    num_labels: int
    has_documents: bool
    vectors: VectorCoverage | None = None
    vectors_source: str | None = None
    unreadable: dict[str, str] = field(default_factory=dict)


def summarize(datamodule: TaggingDataModule) -> DataSummary:
    """The summary of a datamodule's training, validation and test data (the splits it has)."""
    hp = datamodule.hparams
    splits: list[SplitSummary] = []
    unreadable: dict[str, str] = {}
    for name in ("train", "validation", "test"):
        present = datamodule.has_validation if name == "validation" else getattr(hp, name) is not None
        if not present:
            continue
        try:
            data = datamodule.sentences(name)
        except SeqtagInputError as err:  # test data fit does not need: said here, raised by `seqtag test`
            if name == "test":
                unreadable[name] = str(err)
                continue
            raise
        source = getattr(hp, name)
        if name == "validation" and source is None:
            source = f"the last {hp.validation_from_train:.0%} of {hp.train}"
        data = data.select_columns(["tokens", "tags", "document"])[:]  # one read of the columns, as lists
        if name == "train":
            train_tokens = data["tokens"]
        sentences, tokens = split_size(data["tokens"])
        documents = len(set(data["document"]))
        labels = label_counts(data["tags"], datamodule.data_scheme)
        splits.append(SplitSummary(name, str(source), sentences, tokens, documents, labels))
    coverage = None
    vectors = datamodule.training_vectors
    if vectors is not None and splits and splits[0].name == "train":
        coverage = vector_coverage(train_tokens, datamodule.vocab.normalize, vectors)
    return DataSummary(
        splits=splits,
        data_scheme=datamodule.data_scheme,
        scheme_detected=hp.tag_scheme == "auto",
        train_scheme=datamodule.scheme,
        vocab_size=datamodule.vocab_size,
        num_chars=datamodule.num_chars,
        num_labels=len(datamodule.labels),
        has_documents=datamodule.has_documents,
        vectors=coverage,
        vectors_source=hp.word_vectors,
        unreadable=unreadable,
    )


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _labels_text(counts: Counter[str]) -> str:
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    # No-break spaces keep each label with its count when the line is wrapped (see _line).
    text = ", ".join(f"{label}\N{NO-BREAK SPACE}{n:,}" for label, n in ordered[:MAX_LABELS])
    if len(ordered) > MAX_LABELS:
        text += f", and {len(ordered) - MAX_LABELS} more"
    return text or "none"


def _line(key: str, text: str) -> str:
    """``key`` then ``text``, wrapped under the text."""
    wrapped = textwrap.fill(
        text, WIDTH, initial_indent=f"  {key:<12}", subsequent_indent=" " * 14, break_on_hyphens=False
    )
    return wrapped.replace("\N{NO-BREAK SPACE}", " ")


def format_summary(summary: DataSummary) -> str:
    """About ten lines of plain text."""
    lines = ["Data:"]
    width = max((len(f"{s.sentences:,}") for s in summary.splits), default=1)
    token_width = max((len(f"{s.tokens:,}") for s in summary.splits), default=1)
    for split in summary.splits:
        documents = f", {split.documents:,} documents" if summary.has_documents else ""
        lines.append(
            f"  {split.name:<12}{split.sentences:>{width},} sentences, {split.tokens:>{token_width},} tokens"
            f"{documents}  {split.source}"
        )
    for name, error in summary.unreadable.items():
        lines.append(_line(name, f"not read: {error}"))
    spans = summary.data_scheme is not None
    if spans:
        how = "detected" if summary.scheme_detected else "declared"
        lines.append(f"  {'scheme':<12}{summary.data_scheme} in the data ({how}), {summary.train_scheme} in training")
    else:
        lines.append(f"  {'scheme':<12}none: the labels are plain classes")
    train = summary.splits[0] if summary.splits and summary.splits[0].name == "train" else None
    if train is not None:
        what = "spans" if spans else "tags"
        kinds = "types" if spans else "labels"
        lines.append(_line(f"train {what}", f"{len(train.labels)} {kinds}: {_labels_text(train.labels)}"))
    lines.append(
        f"  {'vocabulary':<12}{summary.vocab_size:,} words, {summary.num_chars:,} characters, "
        f"{summary.num_labels} labels in training"
    )
    if summary.vectors is not None:
        v = summary.vectors
        lines.append(
            _line(
                "vectors",
                f"{v.types_with:,} of {v.types:,} training word types ({_percent(v.types_with, v.types)}) and "
                f"{v.tokens_with:,} of {v.tokens:,} tokens ({_percent(v.tokens_with, v.tokens)}) have a vector in "
                f"{summary.vectors_source}",
            )
        )
    if train is not None and len(summary.splits) > 1:
        parts = []
        for split in summary.splits[1:]:
            unseen = unseen_labels(split.labels, train.labels)
            parts.append(f"{split.name}: {_labels_text(unseen)}")
        kinds = "span types" if spans else "labels"
        lines.append(_line("unseen", f"{kinds} never seen in training: {'; '.join(parts)}"))
    if not summary.has_documents:
        lines.append(f"  {'documents':<12}none marked in train (no -DOCSTART-, '# newdoc' or document field)")
    return "\n".join(lines)


def describe(datamodule: TaggingDataModule) -> str:
    """:func:`format_summary` of :func:`summarize`."""
    return format_summary(summarize(datamodule))
