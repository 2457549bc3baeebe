"""Data to tag, streamed: ``seqtag predict`` reads its input in chunks, so memory stays flat however long it is.

The sentences of the reader (a generator: :func:`seqtag.data.readers.iter_sentences`,
:func:`seqtag.data.rawtext.read_raw_text`) are cut into chunks of ``chunk_size``; each chunk is encoded, packed
(:class:`~seqtag.data.packed.PackedSplit`) and cut into batches the way a whole split is (exact or sorted length
buckets, the padded-token budget, or whole documents), and its batches are yielded before the next chunk is read.
Every batch carries its sentences as read (:class:`StreamedSentences`), so the prediction writer needs nothing else
to write them, in input order, through a reorder buffer of at most a chunk or so.

For a model that reads documents, a chunk ends only where a batch of whole documents of the whole input starts, so
its batches are exactly those of the whole input (a long document is cut into pieces of ``batch_size`` sentences
anyway; see :func:`~seqtag.data.sampler.document_batches`).

Several processes (DDP) and DataLoader workers share the chunks: chunk ``k`` goes to process ``k % P`` and, within
it, to worker ``(k // P) % W``. Every process and worker reads the whole input (only its own chunks are encoded and
tagged): a bad line stops every process alike, and documents and sentence positions are numbered as in one process.
Reading costs about 30 us of CPU a sentence for raw text (tokenizing) and 14 us for CoNLL, a twentieth of what the
CoNLL-2003 BiLSTM-CRF takes to tag one on a CPU core; on GPUs, where tagging is far faster, reading is the limit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import count
from typing import Any

from torch.utils.data import IterableDataset, get_worker_info

from seqtag.data.packed import PackedSplit
from seqtag.data.sampler import BucketBatchSampler, document_batches, eval_max_tokens
from seqtag.data.vocab import Vocab
from seqtag.errors import SeqtagInputError

Sentence = dict[str, Any]


STREAM_ERROR = "input_error"  # the key of the item a DataLoader worker yields for bad input


def raise_stream_error(batch: Any) -> None:
    """Raises, in the main process, the input error a DataLoader worker met (see :class:`PredictStream`)."""
    if isinstance(batch, dict) and STREAM_ERROR in batch:
        raise SeqtagInputError(batch[STREAM_ERROR])


class StreamedSentences:
    """The sentences of a streamed batch as read, with their chunk.

    A plain object, not a dict or list, so Lightning moves the batch to the device without walking every token.

    Attributes:
        chunk: the chunk's number, from 0.
        chunk_start: the position of the chunk's first sentence in the input.
        chunk_size: the number of sentences in the chunk.
        rows: the batch's sentences, in the order of the batch's rows (``tokens``, ``tags``, ``document``, and the
            reader's other fields: ``features``; ``line``, ``text``, ``char_starts``, ``char_ends`` for raw text).
    """

    __slots__ = ("chunk", "chunk_start", "chunk_size", "rows")

    def __init__(self, chunk: int, chunk_start: int, chunk_size: int, rows: list[Sentence]) -> None:
        self.chunk = chunk
        self.chunk_start = chunk_start
        self.chunk_size = chunk_size
        self.rows = rows

    def __repr__(self) -> str:
        return f"StreamedSentences(chunk={self.chunk}, {len(self.rows)} of {self.chunk_size} sentences)"


def chunk_owner(chunk: int, num_replicas: int) -> int:
    """The process (rank) that tags chunk ``chunk``."""
    return chunk % num_replicas


def chunks(sentences: Iterable[Sentence], size: int, piece: int | None = None) -> Iterator[list[Sentence]]:
    """Consecutive chunks of ``size`` sentences (the last one shorter).

    With ``piece``, the batch size of document batches, a chunk ends where the batches of whole documents of the
    whole input (:func:`~seqtag.data.sampler.document_batches`) start a new batch, at or after ``size`` sentences:
    the chunks' document batches are then exactly those of the whole input, however long a document is.
    """
    if size < 1:
        raise ValueError(f"size should be >= 1, got {size}")
    chunk: list[Sentence] = []
    for sentence in sentences:
        chunk.append(sentence)
        if piece is None and len(chunk) == size:
            yield chunk
            chunk = []
        elif piece is not None and len(chunk) == size + piece:
            cut = _batch_start_from(chunk, size, piece)
            yield chunk[:cut]
            chunk = chunk[cut:]
    if chunk:
        yield chunk


def _batch_start_from(sentences: list[Sentence], start: int, piece: int) -> int:
    """The first position from ``start`` on where a document batch of ``sentences`` begins.

    ``sentences`` begin where a batch of the whole input begins. Each batch but the last is then one of the whole
    input's: greedy packing closed it because the next piece did not fit, and that piece only grows as more of its
    document is read. A batch holds at most ``piece`` sentences, so with ``start + piece`` sentences the last batch
    begins at ``start`` or later.
    """
    position = 0
    for batch in document_batches([int(s["document"]) for s in sentences], piece):
        if position >= start:
            return position
        position += len(batch)
    raise AssertionError(f"no batch starts between {start} and {len(sentences)}")  # see above: cannot happen


def chunk_batches(
    lengths: list[int], documents: list[int], batch_size: int, bucketing: str, by_document: bool
) -> list[list[int]]:
    """The batches of a chunk (lists of positions in it), cut as the data module cuts evaluation batches: whole
    documents when ``by_document`` (:func:`~seqtag.data.sampler.document_batches`), else length buckets of at most
    ``batch_size`` sentences within the padded-token budget (:class:`~seqtag.data.sampler.BucketBatchSampler`)."""
    if by_document:
        return document_batches(documents, batch_size)
    sampler = BucketBatchSampler(
        lengths, batch_size, shuffle=False, bucketing=bucketing, max_tokens=eval_max_tokens(batch_size)
    )
    return list(sampler)


def encode_sentence(vocab: Vocab, sentence: Sentence) -> dict[str, list]:
    """The ids of a sentence to tag: ``word_ids``, ``char_ids``, ``casing_ids`` and, when the model reads feature
    columns, ``feature_ids``."""
    ids = vocab.encode_tokens(sentence["tokens"])
    if vocab.features:
        ids["feature_ids"] = vocab.encode_features(sentence["features"])
    return ids


def encode_with_text(encode: Callable[[Sentence], dict[str, list]], sentence: Sentence) -> dict[str, list]:
    """A sentence's ids (``encode``) and its tokens as read, which batches then carry as ``token_codes`` (for a
    model with ``model.transformer``)."""
    return {**encode(sentence), "tokens": list(sentence["tokens"])}


class PredictStream(IterableDataset):
    """Batches of the data to tag, read and encoded a chunk at a time.

    Each batch is that of :class:`~seqtag.data.packed.PackedSplit` (``word_ids``, ``char_ids``, ``casing_ids``,
    ``tag_ids`` (empty), ``lengths``, ``index``, ``document``, ``feature_ids`` with feature columns), ``index`` being
    the sentences' positions in the whole input, plus ``sentences``: a :class:`StreamedSentences`.

    Args:
        read: returns a new iterator over the input's sentences (called once per pass, in every process and worker).
        encode: one sentence's ids: ``word_ids``, ``char_ids``, ``casing_ids`` and, with feature columns,
            ``feature_ids``.
        batches: the batches of a chunk, as lists of positions in the chunk, from its sentences' lengths and
            document ids.
        chunk_size: sentences per chunk.
        document_piece: for batches of whole documents, their batch size (see :func:`chunks`). Default: None
        num_replicas: number of processes. Default: 1
        rank: this process's rank. Default: 0
    """

    def __init__(
        self,
        read: Callable[[], Iterable[Sentence]],
        encode: Callable[[Sentence], dict[str, list]],
        batches: Callable[[list[int], list[int]], list[list[int]]],
        chunk_size: int,
        document_piece: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size should be >= 1, got {chunk_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank should be in [0, {num_replicas}), got {rank}")
        self.read = read
        self.encode = encode
        self.batches = batches
        self.chunk_size = chunk_size
        self.document_piece = document_piece
        self.num_replicas = num_replicas
        self.rank = rank

    def __iter__(self) -> Iterator[dict[str, Any]]:
        worker = get_worker_info()
        if worker is None:
            yield from self._batches(1, 0)
            return
        try:
            yield from self._batches(worker.num_workers, worker.id)
        except SeqtagInputError as err:
            # The DataLoader would re-raise it in the main process wrapped in the worker's traceback: the message
            # travels as data instead (see ``raise_stream_error``), to be raised there as the one paragraph it is.
            yield {STREAM_ERROR: str(err)}

    def _batches(self, workers: int, worker_id: int) -> Iterator[dict[str, Any]]:
        start = 0
        for number, chunk in zip(count(), chunks(self.read(), self.chunk_size, self.document_piece)):
            first, start = start, start + len(chunk)
            mine = chunk_owner(number, self.num_replicas) == self.rank
            if mine and (number // self.num_replicas) % workers == worker_id:
                yield from self._chunk_batches(number, first, chunk)

    def _chunk_batches(self, number: int, first: int, chunk: list[Sentence]) -> Iterator[dict[str, Any]]:
        packed = PackedSplit(self._encoded(first, chunk))
        documents = [int(sentence["document"]) for sentence in chunk]
        for positions in self.batches(packed.lengths.tolist(), documents):
            batch = packed.batch(positions)
            batch["sentences"] = StreamedSentences(number, first, len(chunk), [chunk[i] for i in positions])
            yield batch

    def _encoded(self, first: int, chunk: list[Sentence]) -> dict[str, list]:
        """The chunk as the columns of an encoded split, Python lists (see :class:`PackedSplit`)."""
        ids = [self.encode(sentence) for sentence in chunk]
        columns: dict[str, list] = {key: [row[key] for row in ids] for key in ids[0]}
        columns["tag_ids"] = [[] for _ in chunk]  # predictions need no gold ids; the writer reads the tags as read
        columns["index"] = list(range(first, first + len(chunk)))
        columns["document"] = [int(sentence["document"]) for sentence in chunk]
        return columns
