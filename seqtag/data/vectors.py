"""Pretrained word vectors: GloVe (no header), word2vec text and fastText ``.vec`` (header line ``count dim``),
optionally gzipped; word2vec binary (GoogleNews ``.bin``); fastText models (``.bin``, see
:mod:`seqtag.data.fasttext_model`). The format is told by the file's content, not its name.

Only the vectors of wanted words are parsed (splitting a line's floats is most of the cost of text files; a binary
file's vectors are copied straight from its bytes), and the result is cached as a ``.npz`` next to the ``datasets``
cache, keyed by the file and the wanted words. Load times and memory of each format: docs/vectors.md.
"""

from __future__ import annotations

import gzip
import hashlib
import mmap
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from seqtag.errors import DataFormatError, SeqtagInputError


def _cache_dir() -> Path:
    root = os.environ.get("SEQTAG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "seqtag"
    )
    return Path(root) / "vectors"


TEXT, WORD2VEC_BINARY, FASTTEXT = "text", "word2vec_binary", "fasttext"
_MAX_WORD_BYTES = 10_000
_TEXT_BYTES = frozenset(b"0123456789.-+eEinfaINFA \t\r\n")  # what the values of a text vectors file are made of


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def vectors_format(path: str | Path) -> str:
    """The format of a vectors file, from its first bytes: ``fasttext`` (a fastText model, magic number),
    ``word2vec_binary`` (a ``count dim`` header line followed by raw float32 values) or ``text``."""
    from seqtag.data.fasttext_model import FASTTEXT_MAGIC

    path = Path(path)
    with _open_binary(path) as f:
        head = f.read(4096)
    if len(head) >= 4 and int.from_bytes(head[:4], "little", signed=True) == FASTTEXT_MAGIC:
        return FASTTEXT
    first, newline, rest = head.partition(b"\n")
    fields = first.split()
    if not newline or len(fields) != 2 or not all(field.isdigit() for field in fields):
        return TEXT  # GloVe: no header
    # A word, a space, then either text values up to the end of the line, or dim raw float32 values (which hold
    # bytes that no number is written with, or too few spaces).
    values = rest.lstrip(b"\n").partition(b" ")[2]
    line, complete, _ = values.partition(b"\n")
    if set(line) <= _TEXT_BYTES and (len(line.split()) == int(fields[1]) or not complete):
        return TEXT
    return WORD2VEC_BINARY


def read_vectors(
    path: str | Path, wanted: Iterable[str] | None = None, limit: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Reads word vectors from a vectors file of any supported format (see :func:`vectors_format`).

    Args:
        path: GloVe / word2vec / fastText text file (``.gz`` accepted), word2vec binary file (``.gz`` accepted), or
            fastText model (``.bin``).
        wanted: words to keep; a word is also kept when only its lowercased form is wanted, so cased vectors
            serve a lowercased vocabulary. A fastText model gives every other wanted word its subword vector (see
            :meth:`~seqtag.data.fasttext_model.FastTextModel.lookup`). None keeps all. Default: None
        limit: stop after this many vectors of the file (vector files list frequent words first). Default: None

    Returns:
        (word → float32 vector, dimension). When a file holds a word twice, the first wins.

    Raises:
        DataFormatError: a text line whose number of values differs from the dimension, a binary file cut short.
    """
    path = Path(path)
    if not path.is_file():
        raise SeqtagInputError(f"{path}: word vector file not found")
    kind = vectors_format(path)
    wanted_set = None if wanted is None else set(wanted)
    if kind == FASTTEXT:
        return _read_fasttext(path, wanted_set, limit)
    if kind == WORD2VEC_BINARY:
        return _read_word2vec_binary(path, wanted_set, limit)
    return _read_text(path, wanted_set, limit)


def _key(word: str, wanted: set[str] | None, vectors: dict) -> str | None:
    """Under which word a file's vector is kept (the word, or its lowercased form when only that is wanted), or
    None when it is not wanted or already there."""
    key = word
    if wanted is not None and word not in wanted:
        key = word.lower()
        if key not in wanted:
            return None
    if word in vectors or (key != word and key in vectors):
        return None
    return key


def _read_text(path: Path, wanted: set[str] | None, limit: int | None) -> tuple[dict[str, np.ndarray], int]:
    vectors: dict[str, np.ndarray] = {}
    dim = None
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip()
            if not line:
                continue
            word, _, rest = line.partition(" ")
            if lineno == 1 and word.isdigit() and rest.strip().isdigit():
                dim = int(rest)  # word2vec / fastText header: "count dim"
                continue
            if dim is None:
                dim = rest.count(" ") + 1
            key = _key(word, wanted, vectors)
            if key is None:
                continue
            try:
                values = np.array(rest.split(" "), dtype=np.float32)
            except ValueError:
                raise DataFormatError(path, lineno, f"expected a word and {dim} numbers", line[:80]) from None
            if values.shape[0] != dim:
                raise DataFormatError(path, lineno, f"expected {dim} values, got {values.shape[0]}", line[:80])
            vectors[key] = values
            if limit is not None and len(vectors) >= limit:
                break
    if dim is None:
        raise DataFormatError(path, None, "no vectors found")
    return vectors, dim


def _read_word2vec_binary(path: Path, wanted: set[str] | None, limit: int | None) -> tuple[dict[str, np.ndarray], int]:
    """word2vec's binary format: a text line ``count dim``, then per word its UTF-8 bytes, a space and ``dim``
    little-endian float32 values, with or without a newline after each vector. An uncompressed file is memory-mapped
    (only wanted vectors are copied out of it); a ``.gz`` one is decompressed in memory."""
    with _open_binary(path) as f:
        if path.suffix == ".gz":
            data = f.read()
        else:
            try:
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except ValueError:  # an empty file cannot be mapped
                data = b""
    end = data.find(b"\n")
    header = data[: max(end, 0)].split()
    if end < 0 or len(header) != 2 or not all(h.isdigit() for h in header):
        raise DataFormatError(
            path, 1, "expected a word2vec binary header 'count dim'", bytes(data[:80]).decode(errors="replace")
        )
    count, dim = int(header[0]), int(header[1])
    size, width = len(data), int(header[1]) * 4
    vectors: dict[str, np.ndarray] = {}
    pos = end + 1
    for i in range(count):
        if pos < size and data[pos] == 10:  # the newline word2vec.c writes after each vector
            pos += 1
        space = data.find(b" ", pos, pos + _MAX_WORD_BYTES)
        if space < 0 or space + 1 + width > size:
            if space < 0 and pos + _MAX_WORD_BYTES < size:
                problem = f"no word followed by a space at byte {pos}"
            else:
                problem = f"the file is cut short: it has {size} bytes"
            raise SeqtagInputError(
                f"{path}: vector {i + 1} of the {count} its header announces: {problem} (each vector is a word, a "
                f"space and {dim} float32 values, {width} bytes): not a word2vec binary file, or a truncated one"
            )
        word = data[pos:space].decode("utf-8", errors="replace")
        pos = space + 1 + width
        key = _key(word, wanted, vectors)
        if key is None:
            continue
        vectors[key] = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1).astype(np.float32)
        if limit is not None and len(vectors) >= limit:
            break
    return vectors, dim


def _read_fasttext(path: Path, wanted: set[str] | None, limit: int | None) -> tuple[dict[str, np.ndarray], int]:
    from seqtag.data.fasttext_model import FastTextModel

    if path.suffix == ".gz":
        raise SeqtagInputError(f"{path}: a gzipped fastText model cannot be memory-mapped: decompress it first")
    model = FastTextModel(path)
    if wanted is None:
        words = model.words[:limit]
        return dict(zip(words, model.vectors(words))), model.dim
    vectors = model.lookup(wanted)
    if limit is not None:
        vectors = dict(list(vectors.items())[:limit])
    return vectors, model.dim


def load_vectors_cached(path: str | Path, wanted: Iterable[str]) -> tuple[dict[str, np.ndarray], int]:
    """:func:`read_vectors` with a cache keyed by the file (path, size, mtime) and the wanted words."""
    path = Path(path)
    if not path.is_file():
        raise SeqtagInputError(f"{path}: word vector file not found")
    wanted = sorted(set(wanted))
    stat = path.stat()
    key = hashlib.sha256(
        f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode() + "\n".join(wanted).encode()
    ).hexdigest()[:24]
    cache = _cache_dir() / f"{key}.npz"
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        words = data["words"].tolist()
        matrix = data["matrix"]
        return dict(zip(words, matrix)), int(data["dim"])
    vectors, dim = read_vectors(path, wanted)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    words = list(vectors)
    matrix = np.stack([vectors[w] for w in words]) if words else np.zeros((0, dim), np.float32)
    np.savez(tmp, words=np.array(words, dtype=str), matrix=matrix, dim=dim)
    os.replace(tmp, cache)
    return vectors, dim


def embedding_matrix(words: list[str], vectors: dict[str, np.ndarray], dim: int, seed: int = 0) -> np.ndarray:
    """A (V, dim) matrix: pretrained rows where a vector exists, small uniform random rows elsewhere, zeros for
    padding (id 0)."""
    rng = np.random.default_rng(seed)
    scale = np.sqrt(3.0 / dim)
    matrix = rng.uniform(-scale, scale, size=(len(words), dim)).astype(np.float32)
    for i, w in enumerate(words):
        vector = vectors.get(w)
        if vector is None:
            vector = vectors.get(w.lower())
        if vector is not None:
            matrix[i] = vector
    matrix[0] = 0.0
    return matrix


def load_table_cached(path: str | Path, limit: int) -> tuple[list[str], np.ndarray]:
    """The first ``limit`` vectors of a file as (words, (P, dim) float32 matrix), cached like
    :func:`load_vectors_cached`: the pretrained table a model keeps for words unseen in training."""
    path = Path(path)
    if not path.is_file():
        raise SeqtagInputError(f"{path}: word vector file not found")
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:table:{limit}".encode()).hexdigest()[:24]
    cache = _cache_dir() / f"{key}.npz"
    if cache.exists():
        data = np.load(cache, allow_pickle=False)
        return data["words"].tolist(), data["matrix"]
    vectors, dim = read_vectors(path, None, limit)
    words = list(vectors)
    matrix = np.stack([vectors[w] for w in words]) if words else np.zeros((0, dim), np.float32)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, words=np.array(words, dtype=str), matrix=matrix)
    os.replace(tmp, cache)
    return words, matrix
