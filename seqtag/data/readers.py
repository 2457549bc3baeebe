"""Readers: every source becomes sentences of ``{"tokens": list[str], "tags": list[str], "document": int}``.

``document`` groups the sentences of one document: it is the position of the document's first sentence in the
source. Documents start at ``-DOCSTART-`` lines in CoNLL files, at ``# newdoc`` comments in CoNLL-U, after blank
lines in plain text, and at ``-DOCSTART-`` rows or from a ``document`` field in JSON, parquet, saved and hub
datasets (without either, each row is a document of its own). A file without markers is one document.

With feature columns (e.g. the POS column of CoNLL-2000), a sentence also has ``"features": list[list[str]]``,
one list of T values per feature column, in the order the columns were asked for.

Formats: CoNLL column files (space or TAB separated, ``-DOCSTART-`` skipped, ``.gz``), CoNLL-U (UPOS or XPOS,
multiword ranges ``3-4`` and empty nodes ``8.1`` skipped), plain text for prediction (one sentence per line),
JSON / JSON lines, parquet, ``Dataset.save_to_disk`` folders and Hugging Face hub names.

Why our own CoNLL reader rather than the ``conll`` builder of ``datasets``: that builder pads or truncates a row
with the wrong number of columns without a word, and keeps CoNLL-U multiword ranges and empty nodes as tokens.
Ours refuses bad rows with the file and line; the result still goes through ``Dataset.from_generator``, so it is
cached as Arrow like any other dataset.
"""

from __future__ import annotations

import codecs
import contextlib
import gzip
import itertools
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datasets

from seqtag.data.diagnose import json_lines_line, json_problem, root_cause
from seqtag.errors import DataFormatError, SeqtagInputError

Sentence = dict[str, list]

# Columns are separated by runs of spaces or TABs only: other Unicode spaces (no-break space, zero-width
# characters) can be part of a token.
_COLUMN_SEPARATOR = re.compile(r"[ \t]+")

FILE_FORMATS = ("conll", "conllu", "text", "json", "parquet", "disk", "hub")
# Field names tried, in order, when a field-based source (JSON, parquet, hub) does not name its tag field.
TAG_FIELDS = ("tags", "ner_tags", "upos", "pos_tags", "chunk_tags", "labels", "xpos")
TOKEN_FIELDS = ("tokens", "words", "form")


DOCUMENT_MARKER = "-DOCSTART-"
NO_SENTENCE = "no sentence found (the file is empty or holds only blank lines)"
ONLY_MARKERS = f"no sentences: the file holds only {DOCUMENT_MARKER} lines"

# Where the tokens of a sentence come from: the line of each token in a text file, or the row of a field-based
# source (JSON, parquet, saved and hub datasets). Kept only to name the line of a bad tag.
_Where = Sequence[int] | int


def _sentence(tokens: list[str], tags: list[str], features: list[list[str]], document: int) -> Sentence:
    """A sentence row; ``features`` (one list per feature column) only when there are feature columns."""
    sentence: Sentence = {"tokens": tokens, "tags": tags, "document": document}
    if features:
        sentence["features"] = features
    return sentence


class _Documents:
    """Numbers documents by the position of their first sentence, as sentences are yielded."""

    def __init__(self) -> None:
        self.count = 0  # sentences yielded so far
        self.current = 0
        self.starting = True  # the next sentence opens a document

    def start(self) -> None:
        self.starting = True

    def next_sentence(self) -> int:
        if self.starting:
            self.current, self.starting = self.count, False
        self.count += 1
        return self.current


def _open_lines(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Yields (line number, line without its end of line), decoding each line on its own.

    Decoding line by line lets a decoding error name the line and the byte offset. A UTF-8 BOM and CRLF line
    endings are accepted.
    """
    if not path.exists():
        raise SeqtagInputError(f"{path}: no such file")
    if path.is_dir():
        raise SeqtagInputError(f"{path}: is a folder, expected a file")
    opener = gzip.open if path.suffix == ".gz" else open
    offset = 0
    with opener(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode(encoding)
            except UnicodeDecodeError as err:
                raise DataFormatError(
                    path,
                    lineno,
                    f"bytes that are not {encoding} at byte offset {offset + err.start} of the file (set data.encoding "
                    f"to the file's encoding, e.g. latin-1 or cp1252)",
                ) from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            offset += len(raw)
            yield lineno, line.rstrip("\r\n")


def read_conll(
    path: str | Path,
    token_column: int = 0,
    tag_column: int | None = -1,
    delimiter: str | None = None,
    encoding: str = "utf-8",
    feature_columns: Sequence[int] = (),
) -> Iterator[Sentence]:
    """Reads a CoNLL column file: one token per line, a blank line between sentences.

    Args:
        path: the file (``.gz`` is decompressed).
        token_column: index of the token column. Default: 0
        tag_column: index of the tag column (negative counts from the end), or None for a file without tags.
            Default: -1 (the last column, as in CoNLL-2000 and CoNLL-2003).
        delimiter: column separator; None means runs of spaces or TABs. Default: None
        encoding: text encoding. Default: ``"utf-8"``
        feature_columns: indices of columns read as input features (e.g. ``[1]`` for the POS column of CoNLL-2000
            and CoNLL-2003). Default: none

    Yields:
        ``{"tokens": [...], "tags": [...]}`` per sentence (``tags`` is empty when ``tag_column`` is None), plus
        ``"features"`` (one list per feature column) when ``feature_columns`` is given.

    Raises:
        DataFormatError: a row whose number of columns differs from the first row's, a missing column,
            an empty token, or a file with no sentence.
    """
    return (s for s, _ in _read_conll(path, token_column, tag_column, delimiter, encoding, feature_columns))


def _read_conll(
    path: str | Path,
    token_column: int,
    tag_column: int | None,
    delimiter: str | None,
    encoding: str,
    feature_columns: Sequence[int],
) -> Iterator[tuple[Sentence, _Where]]:
    """``read_conll`` with the line of each token."""
    path = Path(path)
    feature_columns = list(feature_columns)
    tokens: list[str] = []
    tags: list[str] = []
    features: list[list[str]] = [[] for _ in feature_columns]
    num_columns = None
    found = False
    markers = 0
    first = 0  # the line of the sentence's first token: its tokens are on consecutive lines
    documents = _Documents()

    for lineno, line in _open_lines(path, encoding):
        if not line.strip(" \t"):
            if tokens:
                found = True
                yield _sentence(tokens, tags, features, documents.next_sentence()), range(first, first + len(tokens))
                tokens, tags, features = [], [], [[] for _ in feature_columns]
            continue
        if delimiter is None and "\t" in line:
            # Splitting on runs of TABs would silently shift the columns after an empty field.
            cells = line.rstrip(" \t").split("\t")
            empty = [i for i, cell in enumerate(cells) if not cell.strip(" ")]
            if empty:
                what = "empty token" if empty[0] == token_column % len(cells) else "empty field"
                raise DataFormatError(path, lineno, f"{what} (column {empty[0] + 1} of this TAB-separated line)", line)
        fields = _COLUMN_SEPARATOR.split(line.strip(" \t")) if delimiter is None else line.split(delimiter)
        if fields[0] == DOCUMENT_MARKER:
            if tokens:  # a marker right after a sentence, without a blank line, still ends it
                found = True
                yield _sentence(tokens, tags, features, documents.next_sentence()), range(first, first + len(tokens))
                tokens, tags, features = [], [], [[] for _ in feature_columns]
            markers += 1
            documents.start()
            continue
        if num_columns is None:
            num_columns = len(fields)
            named = [("token_column", token_column), ("tag_column", tag_column)]
            named += [("feature_columns", column) for column in feature_columns]
            for name, column in named:
                if column is not None and not -num_columns <= column < num_columns:
                    raise DataFormatError(
                        path, lineno, f"{name}={column} does not exist: the file has {num_columns} columns", line
                    )
            if tag_column is not None and tag_column % num_columns in {c % num_columns for c in feature_columns}:
                raise SeqtagInputError(
                    f"{path}: feature_columns {feature_columns} include the tag column {tag_column}: the model would "
                    f"read the answer"
                )
        elif len(fields) != num_columns:
            raise DataFormatError(path, lineno, f"expected {num_columns} columns, got {len(fields)}", line)
        token = fields[token_column]
        if not token:
            raise DataFormatError(path, lineno, "empty token", line)
        if not tokens:
            first = lineno
        tokens.append(token)
        if tag_column is not None:
            tag = fields[tag_column]
            if not tag:
                raise DataFormatError(path, lineno, "empty tag", line)
            tags.append(tag)
        for values, column in zip(features, feature_columns):
            values.append(fields[column])
    if tokens:
        found = True
        yield _sentence(tokens, tags, features, documents.next_sentence()), range(first, first + len(tokens))
    if not found:
        raise DataFormatError(path, None, ONLY_MARKERS if markers else NO_SENTENCE)


_NEWDOC = re.compile(r"#\s*newdoc\b")
CONLLU_FIELDS = {"lemma": 2, "upos": 3, "xpos": 4, "feats": 5, "deprel": 7}


def read_conllu(
    path: str | Path, tag_field: str = "upos", encoding: str = "utf-8", feature_fields: Sequence[str] = ()
) -> Iterator[Sentence]:
    """Reads a CoNLL-U file, one sentence per block, tagging syntactic words.

    Multiword-token ranges (``3-4``) and empty nodes (``8.1``) are skipped: the words of a range follow it on
    lines of their own, and empty nodes are not in the surface text.

    Args:
        path: the ``.conllu`` file (``.gz`` accepted).
        tag_field: ``"upos"`` (column 4) or ``"xpos"`` (column 5). Default: ``"upos"``
        encoding: text encoding. Default: ``"utf-8"``
        feature_fields: fields read as input features, among ``lemma``, ``upos``, ``xpos``, ``feats``,
            ``deprel``. Default: none

    Raises:
        DataFormatError: a row without 10 TAB-separated columns, or a file with no sentence.
    """
    if tag_field not in ("upos", "xpos"):
        raise SeqtagInputError(f"tag_column for CoNLL-U should be one of 'upos', 'xpos', got {tag_field!r}")
    unknown = [f for f in feature_fields if f not in CONLLU_FIELDS]
    if unknown:
        raise SeqtagInputError(f"feature_columns for CoNLL-U should be among {list(CONLLU_FIELDS)}, got {unknown}")
    if tag_field in feature_fields:
        raise SeqtagInputError(
            f"{path}: feature_columns include the tag field {tag_field!r}: the model would read the answer"
        )
    return (s for s, _ in _read_conllu(Path(path), tag_field, encoding, feature_fields))


def _read_conllu(
    path: Path, tag_field: str, encoding: str, feature_fields: Sequence[str]
) -> Iterator[tuple[Sentence, _Where]]:
    """``read_conllu`` with the line of each token."""
    path = Path(path)
    tag_index = CONLLU_FIELDS[tag_field]
    feature_indices = [CONLLU_FIELDS[f] for f in feature_fields]
    tokens: list[str] = []
    tags: list[str] = []
    features: list[list[str]] = [[] for _ in feature_indices]
    lines: list[int] = []
    found = False
    documents = _Documents()

    for lineno, line in _open_lines(path, encoding):
        if not line.strip():
            if tokens:
                found = True
                yield _sentence(tokens, tags, features, documents.next_sentence()), lines
                tokens, tags, features, lines = [], [], [[] for _ in feature_indices], []
            continue
        if line.startswith("#"):
            if _NEWDOC.match(line):
                documents.start()
            continue
        fields = line.split("\t")
        if len(fields) != 10:
            raise DataFormatError(path, lineno, f"expected 10 TAB-separated columns, got {len(fields)}", line)
        word_id = fields[0]
        if "-" in word_id or "." in word_id:
            continue
        if not word_id.isdigit():
            raise DataFormatError(path, lineno, f"expected an integer word ID, got {word_id!r}", line)
        if not fields[1]:
            raise DataFormatError(path, lineno, "empty FORM", line)
        tokens.append(fields[1])
        tags.append(fields[tag_index])
        lines.append(lineno)
        for values, index in zip(features, feature_indices):
            values.append(fields[index])
    if tokens:
        found = True
        yield _sentence(tokens, tags, features, documents.next_sentence()), lines
    if not found:
        raise DataFormatError(path, None, NO_SENTENCE)


def read_text(path: str | Path, encoding: str = "utf-8") -> Iterator[Sentence]:
    """Reads plain text to tag: one sentence per line, tokens separated by whitespace; blank lines end a document."""
    return (s for s, _ in _read_text(Path(path), encoding))


def _read_text(path: Path, encoding: str) -> Iterator[tuple[Sentence, _Where]]:
    found = False
    documents = _Documents()
    for lineno, line in _open_lines(path, encoding):
        tokens = line.split()
        if tokens:
            found = True
            yield {"tokens": tokens, "tags": [], "document": documents.next_sentence()}, [lineno] * len(tokens)
        else:
            documents.start()
    if not found:
        raise DataFormatError(path, None, NO_SENTENCE)


def guess_format(source: str) -> str:
    """The format of a source from its name: a file's extension, a folder's content, else a hub name."""
    path = Path(_strip_split(source)[0])
    name = path.name.lower().removesuffix(".gz")
    if path.is_dir():
        return "disk"
    if path.exists():
        if name.endswith(".conllu"):
            return "conllu"
        if name.endswith((".json", ".jsonl")):
            return "json"
        if name.endswith(".parquet"):
            return "parquet"
        return "conll"
    if "/" in source and not source.startswith((".", "/", "~")) and source.count("/") == 1:
        return "hub"
    raise SeqtagInputError(f"{source}: no such file or folder (and not a Hugging Face hub name like 'owner/name')")


def sniff_predict_format(path: str | Path, encoding: str = "utf-8") -> str:
    """``"conll"`` when the file looks like columns (one token per line, blank lines between sentences), else
    ``"text"`` (one sentence per line).

    The first 2000 lines decide; when they hold no blank line yet, the file is read on to its first one, so that a
    sentence of more than 2000 tokens in columns is not taken for 2000 sentences of text.
    """
    blank = 0
    widths: set[int] = set()
    lines = 0
    for _, line in _open_lines(Path(path), encoding):
        if not line.strip():
            blank += 1
            if lines >= 2000:
                break
            continue
        widths.add(len(_COLUMN_SEPARATOR.split(line.strip(" \t"))))
        if len(widths) > 1:
            break  # lines of different widths: text
        lines += 1
        if lines >= 2000 and blank:
            break
    return "conll" if (blank > 0 and len(widths) == 1 and max(widths) <= 12) or lines == 1 and widths == {1} else "text"


def count_columns(path: str | Path, encoding: str = "utf-8") -> int:
    """Columns of the first token line of a CoNLL file (0 for a file without one)."""
    for _, line in _open_lines(Path(path), encoding):
        fields = _COLUMN_SEPARATOR.split(line.strip(" \t"))
        if line.strip() and fields[0] != DOCUMENT_MARKER:
            return len(fields)
    return 0


def _strip_split(source: str) -> tuple[str, str | None]:
    """``"name:split"`` → (name, split); a plain name → (name, None). Windows drive letters are left alone."""
    if ":" in source and not Path(source).exists():
        name, _, split = source.rpartition(":")
        if name and "/" not in split and len(name) > 1:
            return name, split
    return source, None


def _field(columns: list[str], wanted: int | str | None, defaults: tuple[str, ...], source: str, what: str) -> str:
    if isinstance(wanted, str):
        if wanted not in columns:
            raise SeqtagInputError(f"{source}: no {what} field {wanted!r}; the fields are {columns}")
        return wanted
    for name in defaults:
        if name in columns:
            return name
    raise SeqtagInputError(
        f"{source}: cannot tell which field holds the {what}s; the fields are {columns} (set the data option "
        f"{'token_column' if what == 'token' else 'tag_column'} to a field name)"
    )


def _class_names(dataset: datasets.Dataset, field: str) -> list[str] | None:
    """The names of a ``Sequence(ClassLabel)`` field, or None for a field of strings."""
    inner = getattr(dataset.features[field], "feature", None)
    return getattr(inner, "names", None)


def _from_hf(
    dataset: datasets.Dataset,
    source: str,
    token_column: Any,
    tag_column: Any,
    with_tags: bool,
    feature_columns: Sequence[Any] = (),
) -> Iterator[tuple[Sentence, _Where]]:
    """Yields sentences of a field-based dataset with their row, turning ClassLabel ids into their names.

    Documents: a ``document`` field (each new value starts one), else ``-DOCSTART-`` rows (as in the hub's
    ``conll2003``; they are skipped), else every row is a document of its own.
    """
    columns = list(dataset.column_names)
    token_field = _field(columns, token_column, TOKEN_FIELDS, source, "token")
    tag_field = _field(columns, tag_column, TAG_FIELDS, source, "tag") if with_tags else None
    feature_fields = [_field(columns, str(f), (), source, "feature") for f in feature_columns]
    names = _class_names(dataset, tag_field) if tag_field is not None else None
    feature_names = [_class_names(dataset, f) for f in feature_fields]
    document_field = "document" if "document" in columns else None
    has_markers = document_field is None and any(list(t) == [DOCUMENT_MARKER] for t in dataset[token_field])
    documents = _Documents()
    previous_document = None
    found = False
    for i, row in enumerate(dataset):
        tokens = [str(t) for t in row[token_field]]
        if has_markers and tokens == [DOCUMENT_MARKER]:
            documents.start()
            continue
        if document_field is not None:
            if row[document_field] != previous_document:
                documents.start()
            previous_document = row[document_field]
        elif not has_markers:
            documents.start()
        tags = []
        if tag_field is not None:
            tags = [names[t] if names is not None else str(t) for t in row[tag_field]]
            if len(tags) != len(tokens):
                raise DataFormatError(source, i + 1, f"{len(tokens)} tokens but {len(tags)} tags in row {i}")
        sentence: Sentence = {"tokens": tokens, "tags": tags, "document": documents.next_sentence()}
        if feature_fields:
            sentence["features"] = []
            for field, field_names in zip(feature_fields, feature_names):
                values = [field_names[v] if field_names is not None else str(v) for v in row[field]]
                if len(values) != len(tokens):
                    raise DataFormatError(
                        source, i + 1, f"{len(tokens)} tokens but {len(values)} values of {field!r} in row {i}"
                    )
                sentence["features"].append(values)
        found = True
        yield sentence, i
    if not found:
        raise DataFormatError(
            source, None, f"no sentences: only {DOCUMENT_MARKER} rows" if len(dataset) else NO_SENTENCE
        )


def iter_sentences(
    source: str,
    format: str = "auto",
    token_column: int | str | None = None,
    tag_column: int | str | None = None,
    split: str = "train",
    with_tags: bool = True,
    encoding: str = "utf-8",
    hub_config: str | None = None,
    feature_columns: Sequence[int | str] | None = None,
) -> Iterator[Sentence]:
    """Sentences from any supported source, each ``{"tokens": [...], "tags": [...]}`` (and ``"features"``).

    Args:
        source: a file, a ``save_to_disk`` folder or a hub name; ``"name:split"`` picks a split of a folder or
            hub dataset holding several (otherwise ``split`` is used).
        format: one of ``"auto"``, ``"conll"``, ``"conllu"``, ``"text"``, ``"json"``, ``"parquet"``, ``"disk"``,
            ``"hub"``. Default: ``"auto"`` (from the extension; a name like ``owner/name`` that is no file is a
            hub name).
        token_column: CoNLL column index, or field name for field-based sources. Default: first column / a field
            named tokens or words.
        tag_column: CoNLL column index, ``"upos"``/``"xpos"`` for CoNLL-U, or a field name. Default: the last
            column / UPOS / the first of ``tags``, ``ner_tags``, ``upos``, ``pos_tags``, ``chunk_tags``.
        split: the split to take from a multi-split source. Default: ``"train"``
        with_tags: False for text to tag (CoNLL tag column then optional). Default: True
        encoding: text encoding of files. Default: ``"utf-8"``
        hub_config: the configuration name of a hub dataset. Default: None
        feature_columns: columns read as input features: CoNLL column indices, CoNLL-U field names (``lemma``,
            ``upos``, ``xpos``, ``feats``, ``deprel``) or field names. Default: none
    """
    located = _located(
        source, format, token_column, tag_column, split, with_tags, encoding, hub_config, feature_columns
    )
    return (sentence for sentence, _ in located)


def _located(
    source: str,
    format: str = "auto",
    token_column: int | str | None = None,
    tag_column: int | str | None = None,
    split: str = "train",
    with_tags: bool = True,
    encoding: str = "utf-8",
    hub_config: str | None = None,
    feature_columns: Sequence[int | str] | None = None,
) -> Iterator[tuple[Sentence, _Where]]:
    """``iter_sentences`` with where each sentence comes from; options are checked when called, not when read."""
    fmt = guess_format(source) if format == "auto" else format
    if fmt not in FILE_FORMATS:
        raise SeqtagInputError(f"format should be one of {('auto',) + FILE_FORMATS}, got {format!r}")
    name, named_split = _strip_split(source)
    split = named_split or split
    features = list(feature_columns or [])
    if fmt == "conll":
        tag = (-1 if with_tags else None) if tag_column is None else int(tag_column)
        try:
            columns = [int(c) for c in features]
        except ValueError:
            raise SeqtagInputError(
                f"{name}: feature_columns of a CoNLL column file are column indices, got {features}"
            ) from None
        return _read_conll(name, int(token_column or 0), tag, None, encoding, columns)
    if fmt == "conllu":
        fields = [str(f) for f in features]
        read_conllu(name, str(tag_column or "upos"), encoding, fields)  # checks the options now
        return _read_conllu(Path(name), str(tag_column or "upos"), encoding, fields)
    if fmt == "text":
        if features:
            raise SeqtagInputError(
                f"{name}: plain text has only tokens, but the model reads feature columns {features}: give a CoNLL "
                f"file with those columns"
            )
        return _read_text(Path(name), encoding)
    if fmt in ("json", "parquet"):
        dataset = _load_file(Path(name), fmt, encoding)
    elif fmt == "disk":
        import datasets

        try:
            loaded = datasets.load_from_disk(name)
        except FileNotFoundError:
            raise SeqtagInputError(
                f"{name}: is a folder but not a dataset saved with `save_to_disk`; give a data file instead"
            ) from None
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise SeqtagInputError(f"{name}: no split {split!r}; the splits are {list(loaded)}")
            loaded = loaded[split]
        dataset = loaded
    else:
        dataset = load_hub(name, split, hub_config)
    return _from_hf(dataset, source, token_column, tag_column, with_tags, features)


def load_hub(name: str, split: str, config: str | None = None) -> datasets.Dataset:
    """A split of a Hugging Face hub dataset (needs internet the first time, then the local cache).

    ``HF_HUB_OFFLINE=1`` makes the lookup use the cache only, without network retries.
    """
    import datasets

    try:
        return datasets.load_dataset(name, config, split=split)
    except Exception as err:  # the hub raises many types: connection, missing repo, missing split
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (HF_HUB_OFFLINE=1 is set: only the local cache is used)" if offline else ""
        raise SeqtagInputError(f"{name}: cannot load split {split!r} from the Hugging Face hub{hint}: {err}") from err


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """Silences the log lines ``datasets`` writes when a file fails: seqtag reports the failure itself."""
    import datasets

    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)


def _check_encoding(path: Path, encoding: str) -> None:
    """Raises ``DataFormatError`` naming the line of the first bytes that are not ``encoding``."""
    decoder = codecs.getincrementaldecoder(encoding)()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        for _ in _open_lines(path, encoding):  # finds the line and raises
            pass
        raise


def _load_file(path: Path, fmt: str, encoding: str) -> datasets.Dataset:
    """A JSON, JSON lines or parquet file read by ``datasets``; a file it cannot read is reported with the line and
    column of a JSON syntax error, or with the cause for parquet."""
    import datasets
    import pyarrow.parquet

    if not path.exists():
        raise SeqtagInputError(f"{path}: no such file")
    options = {}
    if fmt == "json":
        # pyarrow takes any bytes as UTF-8 and fails only when a string is read back, with no line to name.
        _check_encoding(path, encoding)
        options["encoding"] = encoding
    try:
        with _quiet_datasets():
            return datasets.load_dataset(fmt, data_files=str(path), split="train", **options)
    except Exception as err:
        if fmt == "json":
            raise json_problem(path, _open_lines(path, encoding), err) from err
        try:
            empty = pyarrow.parquet.read_metadata(path).num_rows == 0
        except Exception:  # unreadable: the first error says why
            empty = False
        if empty:
            raise DataFormatError(path, None, "no sentence found (the file holds no rows)") from err
        raise SeqtagInputError(f"{path}: not a readable parquet file: {root_cause(err)}") from err


def tag_error(source: str, sentence: int, position: int, problem: str, **options: Any) -> SeqtagInputError:
    """The error to raise for a bad tag, naming its file and line.

    Readers do not keep lines: the source is read again up to the sentence, only when an error is reported.

    Args:
        source: the source the tags were read from (see ``iter_sentences``).
        sentence: the sentence, from 0, in the order ``iter_sentences`` yields them.
        position: the token in the sentence, from 0.
        problem: what is wrong, naming the tag.
        options: the reading options of ``iter_sentences`` (``format``, ``tag_column``, ``encoding``...).

    Returns:
        ``DataFormatError`` ``"{path}:{line}: {problem}"`` for CoNLL and CoNLL-U files, the same with
        ``"token {position + 1} ({token!r}): "`` before the problem for JSON lines, and
        ``"{source}: row {row} (from 0), token {position + 1} ({token!r}): {problem}"`` for other field-based
        sources (a JSON list, parquet, saved and hub datasets).
    """
    found = next(itertools.islice(_located(source, **options), sentence, None), None)
    if found is None:
        return SeqtagInputError(f"{source}: sentence {sentence + 1}: {problem}")
    found_sentence, where = found
    name = _strip_split(source)[0]
    if not isinstance(where, int):
        return DataFormatError(name, where[position], problem)
    token = f"token {position + 1} ({found_sentence['tokens'][position]!r})"
    if Path(name).is_file() and guess_format(name) == "json":
        lineno = json_lines_line(_open_lines(Path(name), options.get("encoding", "utf-8")), where)
        if lineno is not None:
            return DataFormatError(name, lineno, f"{token}: {problem}")
    return SeqtagInputError(f"{source}: row {where} (from 0), {token}: {problem}")


def source_fingerprint(source: str) -> str:
    """Changes when a local file changes, so the Arrow cache of a source is never stale."""
    path = Path(_strip_split(source)[0])
    if path.exists():
        stat = path.stat()
        return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return source


def _generate(**kwargs: Any) -> Iterator[Sentence]:
    kwargs.pop("fingerprint")
    yield from iter_sentences(**kwargs)


def text_features(with_inputs: bool = False) -> datasets.Features:
    """The schema of sentences as read: string ``tokens`` and ``tags``, the ``document`` number, and with feature
    columns (``with_inputs``) their (F, T) strings as ``features``."""
    import datasets

    strings = datasets.List(datasets.Value("string"))
    schema = {"tokens": strings, "tags": strings, "document": datasets.Value("int64")}
    if with_inputs:
        schema["features"] = datasets.List(strings)
    return datasets.Features(schema)


@contextlib.contextmanager
def _no_progress_bars() -> Iterator[None]:
    """Reading a local file takes seconds at most, and its progress bar would call every file the "train split" (the
    one split of a ``from_generator`` dataset), validation and test files too: no bar."""
    import datasets

    was_disabled = datasets.utils.are_progress_bars_disabled()
    datasets.utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.utils.enable_progress_bars()


def read_dataset(source: str, cache_dir: str | None = None, **options: Any) -> datasets.Dataset:
    """A source as an Arrow-backed ``datasets.Dataset`` with string ``tokens`` and ``tags``.

    Reading is cached by ``datasets`` (keyed on the options and the file's size and modification time).
    Errors in the file are raised before anything is cached. ``options`` are those of :func:`iter_sentences`.
    """
    import datasets

    kwargs = {"source": source, "fingerprint": source_fingerprint(source), **options}
    if kwargs.get("feature_columns") is not None:
        # A tuple: `datasets` shards generators over list-valued arguments, which would split the columns apart.
        kwargs["feature_columns"] = tuple(kwargs["feature_columns"])
    schema = text_features(bool(options.get("feature_columns")))
    fmt = options.get("format", "auto")
    if fmt == "hub" or (fmt == "auto" and guess_format(source) in ("hub", "disk")):
        # Already Arrow: read straight from it without a second cache.
        rows = list(iter_sentences(source, **options))
        return datasets.Dataset.from_list(rows, features=schema)
    guess_format(source)  # a missing file is reported before datasets sees it
    try:
        with _no_progress_bars():
            return datasets.Dataset.from_generator(_generate, features=schema, gen_kwargs=kwargs, cache_dir=cache_dir)
    except Exception as err:
        # datasets wraps errors raised by the generator in its own type: give the user ours.
        cause: BaseException | None = err
        while cause is not None:
            if isinstance(cause, SeqtagInputError):
                raise cause from None
            cause = cause.__cause__ or cause.__context__
        raise


def to_dataset_dict(splits: dict[str, datasets.Dataset]) -> datasets.DatasetDict:
    """The splits in the common schema, ``tags`` typed as ``ClassLabel`` over the labels of all splits."""
    import datasets

    labels = sorted({t for ds in splits.values() for tags in ds["tags"] for t in tags}, key=lambda t: (t != "O", t))
    features = datasets.Features(
        {
            "tokens": datasets.List(datasets.Value("string")),
            "tags": datasets.List(datasets.ClassLabel(names=labels)),
            "document": datasets.Value("int64"),
        }
    )
    if any("features" in ds.column_names for ds in splits.values()):
        features["features"] = text_features(with_inputs=True)["features"]
    return datasets.DatasetDict({name: ds.cast(features) for name, ds in splits.items()})
