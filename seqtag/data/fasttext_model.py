"""fastText model files (``.bin``): word vectors for any word, from the model's words and character n-grams.

A fastText ``.bin`` holds the model's dictionary (its words, most frequent first) and an input matrix of
``nwords + bucket`` rows: one per word, then one per hash bucket of character n-grams. The vector of a word is the
mean of its own row (when the word is in the dictionary) and the rows of its n-grams (``minn`` to ``maxn``
characters of ``<word>``, hashed with 32-bit FNV-1a into ``bucket`` rows), exactly as fastText's
``getWordVector`` computes it; a word outside the dictionary still gets the mean of its n-gram rows.

The file is read by a reader of our own: the header and dictionary are parsed, the input matrix is memory-mapped,
never read whole, and the n-grams of many words are hashed at once with numpy. Measured with a model trained on
CoNLL-2003 ``eng.train`` (dim 100, fastText's default 2,000,000 buckets: a 767 MiB file), the vectors of the 23,623
training words (``python scripts/bench_vectors.py``, AMD EPYC, 2 shared cores, 2026-11-30): this reader 2.2 s and
147 MiB of heap; the ``fasttext`` bindings (``load_model`` + ``get_word_vector``) 2.2 s and 818 MiB, as they read
both matrices whole; gensim's ``load_facebook_vectors`` 14.6 s and 1,579 MiB. The official 300-dimensional models
hold 2,000,000 words and 2,000,000 buckets in 7.2 GB: the libraries read at least the 4.8 GB input matrix into
memory (the bindings also the 2.4 GB output matrix), this reader only the rows it touches (pages of the file, which
the kernel can drop) and keeps its dictionary (a synthetic model of 2,000,000 words opens
in 4 s with 366 MiB of heap). The tests compare our vectors with the ``fasttext`` bindings' (or gensim's) when one is
installed; neither is needed to read a model.

Quantized models (``.ftz``) are not read: their rows are product-quantized codes.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from seqtag.data.vocab import UNK_ID, Vocab
from seqtag.errors import SeqtagInputError

FASTTEXT_MAGIC = 793712314
_MAX_VERSION = 12
_ARGS = struct.Struct("<12id")  # dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate, t
_DICT_HEADER = struct.Struct("<3iqq")  # size, nwords, nlabels, ntokens, pruneidx_size
_MATRIX_HEADER = struct.Struct("<?qq")  # quantized, rows, columns

# fastText hashes each byte as a *signed* char widened to 32 bits: bytes >= 0x80 become 0xFFFFFFxx.
_SIGNED_BYTE = [b if b < 0x80 else b | 0xFFFFFF00 for b in range(256)]
_FNV_OFFSET, _FNV_PRIME = 2166136261, 16777619


def is_fasttext_model(path: str | Path) -> bool:
    """Whether a file starts with the fastText model magic number (``.bin`` and ``.ftz`` files)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return len(head) == 4 and struct.unpack("<i", head)[0] == FASTTEXT_MAGIC


def fnv1a(data: bytes) -> int:
    """fastText's 32-bit FNV-1a hash of a byte string (bytes taken as signed chars)."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ _SIGNED_BYTE[b]) * _FNV_PRIME) & 0xFFFFFFFF
    return h


class FastTextModel:
    """The word vectors of a fastText ``.bin`` model, for words in its dictionary and any other word.

    Args:
        path: a fastText model file (``fasttext`` ``save_model``, gensim ``save_facebook_model``, the official
            ``cc.*.bin`` / ``wiki.*.bin`` files).

    Attributes:
        words: the dictionary's words, most frequent first (the order of the ``.vec`` file fastText writes beside it).
        dim: the vectors' size. ``minn``, ``maxn``, ``bucket``: the n-gram settings.

    Raises:
        SeqtagInputError: not a fastText model, a quantized one, or a file cut short (naming the file).

    Example:
        >>> model = FastTextModel("cc.en.300.bin")  # doctest: +SKIP
        >>> model.vectors(["Paris", "Parisienne-ish"]).shape  # doctest: +SKIP
        (2, 300)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        buf = self._buffer
        magic, version = self._unpack(struct.Struct("<2i"), 0, "header")
        if magic != FASTTEXT_MAGIC:
            raise SeqtagInputError(f"{self.path}: not a fastText model file (no fastText magic number at its start)")
        if version > _MAX_VERSION:
            raise SeqtagInputError(f"{self.path}: fastText file format version {version} (known: up to 12)")
        args = self._unpack(_ARGS, 8, "header")
        self.dim, self.bucket, self.minn, self.maxn = args[0], args[8], args[9], args[10]
        if version == 11 and args[7] == 3:  # as fastText does: old supervised models had no character n-grams
            self.maxn = 0
        pos = 8 + _ARGS.size
        size, nwords, _nlabels, _ntokens, pruneidx_size = self._unpack(_DICT_HEADER, pos, "dictionary")
        pos += _DICT_HEADER.size
        words: list[bytes] = []
        for i in range(size):
            end = buf.find(b"\0", pos)
            if end < 0 or end + 10 > len(buf):
                raise SeqtagInputError(
                    f"{self.path}: the file is cut short in its dictionary (entry {i + 1} of {size})"
                )
            if i < nwords:
                words.append(buf[pos:end])
            pos = end + 10  # the word, its terminating NUL, int64 count, int8 type (words come before labels)
        if pruneidx_size > 0:
            raise SeqtagInputError(f"{self.path}: a quantized fastText model (.ftz) cannot be read: use the .bin")
        quantized, rows, columns = self._unpack(_MATRIX_HEADER, pos, "input matrix header")
        if quantized:
            raise SeqtagInputError(f"{self.path}: a quantized fastText model (.ftz) cannot be read: use the .bin")
        pos += _MATRIX_HEADER.size
        if columns != self.dim or rows != nwords + self.bucket:
            raise SeqtagInputError(
                f"{self.path}: the input matrix is {rows} x {columns}, expected {nwords + self.bucket} x {self.dim} "
                f"(words + buckets, dim): not a fastText model file, or a corrupt one"
            )
        if pos + rows * columns * 4 > len(buf):
            raise SeqtagInputError(
                f"{self.path}: the file is cut short: its input matrix needs {rows * columns * 4} bytes from byte "
                f"{pos}, the file has {len(buf)} bytes"
            )
        self.matrix = np.frombuffer(buf, dtype="<f4", count=rows * columns, offset=pos).reshape(rows, columns)
        self.words = [w.decode("utf-8", errors="replace") for w in words]
        self.index = {w: i for i, w in enumerate(self.words)}
        self._nwords = nwords

    def __getstate__(self) -> dict:
        return {"path": str(self.path)}  # a memory map does not pickle: the copy maps the file again

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    def _unpack(self, layout: struct.Struct, pos: int, what: str) -> tuple:
        if pos + layout.size > len(self._buffer):
            raise SeqtagInputError(
                f"{self.path}: the file is cut short in its {what} (byte {pos} of {len(self._buffer)})"
            )
        return layout.unpack_from(self._buffer, pos)

    def ngram_rows(self, word: str) -> list[int]:
        """The input-matrix rows of a word's character n-grams (``minn`` to ``maxn`` characters of ``<word>``)."""
        data = f"<{word}>".encode()
        size, minn, maxn, bucket, offset = len(data), self.minn, self.maxn, self.bucket, self._nwords
        if maxn <= 0 or word == "</s>":
            return []
        rows = []
        for i in range(size):
            if data[i] & 0xC0 == 0x80:  # n-grams start at a character, not inside one
                continue
            h, j, n = _FNV_OFFSET, i, 0
            while j < size and n < maxn:
                h = ((h ^ _SIGNED_BYTE[data[j]]) * _FNV_PRIME) & 0xFFFFFFFF
                j += 1
                while j < size and data[j] & 0xC0 == 0x80:
                    h = ((h ^ _SIGNED_BYTE[data[j]]) * _FNV_PRIME) & 0xFFFFFFFF
                    j += 1
                n += 1
                # single characters count, but not "<" or ">" alone
                if n >= minn and not (n == 1 and (i == 0 or j == size)):
                    rows.append(offset + h % bucket)
        return rows

    def rows(self, word: str) -> list[int]:
        """The input-matrix rows whose mean is the word's vector: its own (if in the dictionary), then its n-grams'."""
        own = self.index.get(word)
        return ([own] if own is not None else []) + self.ngram_rows(word)

    def batch_rows(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`rows` of many words at once, the n-grams hashed with numpy: (owner, row) int64 pairs, ``owner``
        the word's position in ``words``, in no particular order. Each step of the loop takes the next byte of every
        n-gram of every word (an n-gram has at most ``maxn`` characters of at most 4 UTF-8 bytes)."""
        owners = [np.array([i for i, w in enumerate(words) if w in self.index], dtype=np.int64)]
        rows = [np.array([self.index[words[i]] for i in owners[0].tolist()], dtype=np.int64)]
        if self.maxn > 0 and words:
            encoded = [f"<{w}>".encode() if w != "</s>" else b"" for w in words]
            lengths = np.array([len(e) for e in encoded])
            width = int(lengths.max()) + 1
            steps = min(width, 4 * self.maxn)
            data = np.zeros((len(words), width + steps), dtype=np.uint8)  # zero padding: no character starts there
            flat = np.frombuffer(b"".join(encoded), dtype=np.uint8)
            word_of = np.repeat(np.arange(len(words)), lengths)
            data[word_of, np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)] = flat
            position = np.arange(width + steps)[None, :]
            inside = position < lengths[:, None]
            starts_char = inside & ((data & 0xC0) != 0x80)  # (N, width + steps): a character starts at this byte
            next_starts = np.zeros_like(starts_char)
            next_starts[:, :-1] = starts_char[:, 1:]
            ends_char = inside & (next_starts | (position + 1 == lengths[:, None]))  # the last byte of a character
            signed = data.astype(np.uint32)
            signed[data >= 0x80] |= np.uint32(0xFFFFFF00)  # bytes hash as signed chars
            start = np.arange(width)[None, :]  # (1, width): the n-gram's first byte
            hashes = np.full((len(words), width), _FNV_OFFSET, dtype=np.uint32)
            chars = np.zeros((len(words), width), dtype=np.int64)  # characters taken so far
            first = starts_char[:, :width]
            for step in range(steps):
                active = first & inside[:, step : step + width] & (chars < self.maxn)
                hashes = np.where(active, (hashes ^ signed[:, step : step + width]) * np.uint32(_FNV_PRIME), hashes)
                done = active & ends_char[:, step : step + width]
                chars += done
                # single characters count, but not "<" or ">" alone
                edge = (start == 0) | (start + step + 1 == lengths[:, None])
                emit = done & (chars >= self.minn) & ~((chars == 1) & edge)
                owner, _ = np.nonzero(emit)
                owners.append(owner.astype(np.int64))
                rows.append(self._nwords + (hashes[emit] % np.uint32(self.bucket)).astype(np.int64))
        return np.concatenate(owners), np.concatenate(rows)

    def vectors(self, words: Sequence[str], batch: int = 4096) -> np.ndarray:
        """The (N, dim) float32 vectors of ``words``, as fastText's ``get_word_vector`` gives them (zeros for a
        word outside the dictionary that has no n-gram)."""
        out = np.zeros((len(words), self.dim), dtype=np.float32)
        for begin in range(0, len(words), batch):
            chunk = words[begin : begin + batch]
            owners, rows = self.batch_rows(chunk)
            if not len(rows):
                continue
            order = np.argsort(owners, kind="stable")
            counts = np.bincount(owners, minlength=len(chunk))
            has = counts > 0
            starts = (np.cumsum(counts) - counts)[has]
            sums = np.add.reduceat(self.matrix[rows[order]], starts, axis=0, dtype=np.float64)  # (words with rows, dim)
            out[begin : begin + len(chunk)][has] = (sums / counts[has, None]).astype(np.float32)
        return out

    def lookup(self, wanted: Iterable[str]) -> dict[str, np.ndarray]:
        """Vectors of wanted words: a word of the dictionary gets its vector; else the first dictionary word whose
        lowercased form it is (so cased vectors serve a lowercased vocabulary, as for text files); else its
        subword vector (words without any n-gram row, when ``maxn`` is 0, get none)."""
        wanted = set(wanted)
        chosen = {w: w for w in wanted if w in self.index}
        missing = wanted - chosen.keys()
        if missing:
            for word in self.words:
                lower = word.lower()
                if lower in missing and lower not in chosen:
                    chosen[lower] = word
        sources = {key: word for key, word in chosen.items()}
        for word in missing - chosen.keys():
            if self.maxn > 0:
                sources[word] = word
        keys = sorted(sources)
        matrix = self.vectors([sources[k] for k in keys])
        return dict(zip(keys, matrix))


class SubwordTable:
    """A model's pretrained table grown by the subword vectors of words it cannot find, from a fastText model.

    The table holds the vectors of words outside the vocabulary (word ids from ``len(vocab.words)`` on; see
    :meth:`Vocab.attach_pretrained <seqtag.data.vocab.Vocab.attach_pretrained>`). Before a text is encoded,
    :meth:`add` appends each of its words that the vocabulary and the table miss, with the vector fastText gives it
    from its character n-grams; ids already given never change. The rows live in a buffer that grows by half when
    full, so adding words to a large table does not copy it each time.

    Args:
        model: the fastText model the table's words came from.
        table: (P, dim) the table's rows (the vocabulary's ``pretrained_words``), or None for none.
    """

    def __init__(self, model: FastTextModel, table: torch.Tensor | None) -> None:
        self.model = model
        rows = torch.zeros((0, model.dim)) if table is None else table.detach().to("cpu", torch.float32)
        self._buffer = rows
        self._size = rows.shape[0]

    @classmethod
    def for_file(cls, path: str | Path, table: torch.Tensor | None) -> SubwordTable | None:
        """A subword table when ``path`` is a fastText model (``.bin``), else None (other formats have no
        vectors for words outside the file)."""
        return cls(FastTextModel(path), table) if is_fasttext_model(path) else None

    @property
    def table(self) -> torch.Tensor:
        """(P', dim) float32: the table's rows, the added words' included (a view of the buffer)."""
        return self._buffer[: self._size]

    def add(self, vocab: Vocab, sentences: Iterable[Sequence[str]]) -> int:
        """Adds the words of ``sentences`` that ``vocab`` maps to UNK (their normalized form, as the vocabulary
        looks words up) to its pretrained words and to the table, with their subword vectors; a word with no
        n-gram (``maxn`` 0) stays UNK. Returns how many words were added."""
        if len(vocab.pretrained_words) != self._size:
            raise ValueError(
                f"the vocabulary has {len(vocab.pretrained_words)} pretrained words, the table {self._size}"
            )
        new: dict[str, None] = {}
        seen: set[str] = set()
        for tokens in sentences:
            for token in tokens:
                if token in seen:
                    continue
                seen.add(token)
                if vocab.word_id(token) == UNK_ID:
                    new[vocab.normalize(token)] = None
        words = list(new) if self.model.maxn > 0 else []
        if not words:
            return 0
        vectors = torch.from_numpy(self.model.vectors(words))
        needed = self._size + len(words)
        if needed > self._buffer.shape[0]:
            grown = torch.empty((max(needed, self._buffer.shape[0] * 3 // 2), self.model.dim))
            grown[: self._size] = self._buffer[: self._size]
            self._buffer = grown
        self._buffer[self._size : needed] = vectors
        self._size = needed
        vocab.add_pretrained(words)
        return len(words)
