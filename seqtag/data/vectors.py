"""Pretrained word vectors from text files: GloVe (no header), word2vec text and fastText ``.vec`` (header line
``count dim``), optionally gzipped.

Only the vectors of wanted words are parsed (splitting a line's floats is most of the cost), and the result is
cached as a ``.npz`` next to the ``datasets`` cache, keyed by the file and the wanted words.
"""

from __future__ import annotations

import gzip
import hashlib
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


def read_vectors(
    path: str | Path, wanted: Iterable[str] | None = None, limit: int | None = None
) -> tuple[dict[str, np.ndarray], int]:
    """Reads word vectors from a text file.

    Args:
        path: GloVe / word2vec / fastText text file, ``.gz`` accepted.
        wanted: words to keep; a word is also kept when only its lowercased form is wanted, so cased vectors
            serve a lowercased vocabulary. None keeps all. Default: None
        limit: stop after this many vectors of the file (vector files list frequent words first). Default: None

    Returns:
        (word → float32 vector, dimension). When a file holds a word twice, the first wins.

    Raises:
        DataFormatError: a line whose number of values differs from the dimension.
    """
    path = Path(path)
    if not path.is_file():
        raise SeqtagInputError(f"{path}: word vector file not found")
    wanted_set = None if wanted is None else set(wanted)
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
            key = word
            if wanted_set is not None and word not in wanted_set:
                key = word.lower()
                if key not in wanted_set:
                    continue
            if word in vectors or (key != word and key in vectors):
                continue
            values = np.array(rest.split(" "), dtype=np.float32)
            if values.shape[0] != dim:
                raise DataFormatError(path, lineno, f"expected {dim} values, got {values.shape[0]}", line[:80])
            vectors[key] = values
            if limit is not None and len(vectors) >= limit:
                break
    if dim is None:
        raise DataFormatError(path, None, "no vectors found")
    return vectors, dim


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
