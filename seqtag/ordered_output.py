"""Output in input order from results that arrive out of order, and one file from the parts of several processes.

``seqtag predict`` tags its input a chunk at a time (:mod:`seqtag.data.streaming`), in batches of similar lengths, so
a chunk's sentences come back out of order. :class:`ChunkOrderedWriter` keeps each sentence's text until every
sentence before it has been written, then writes the run that became contiguous: it holds about one chunk.

Under DDP, process r tags chunks r, r + P, r + 2P, ... and writes them, in order, to a part file of its own;
:func:`merge_parts` then takes the chunks from the parts in turn, giving the file a single process writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import BinaryIO

COPY_BLOCK = 1 << 20


class ChunkOrderedWriter:
    """Writes texts given by input position, in input order, as soon as all those before them are written.

    The input is cut into consecutive chunks, numbered from 0; this writer gets chunks ``first``, ``first + step``,
    ``first + 2 * step``, ... (a process's share of them), each whole. Texts may arrive in any order within and
    across its chunks.

    Args:
        file: a binary file open for writing.
        first: the first chunk of this writer's share. Default: 0
        step: the distance between its chunks (the number of processes). Default: 1

    Example:
        >>> import io
        >>> out = io.BytesIO()
        >>> writer = ChunkOrderedWriter(out)
        >>> writer.add(0, 0, 3, [(2, "c"), (0, "a")])
        >>> out.getvalue()
        b'a'
        >>> writer.add(0, 0, 3, [(1, "b")])
        >>> writer.finish()
        [(0, 3)]
        >>> out.getvalue()
        b'abc'
    """

    def __init__(self, file: BinaryIO, first: int = 0, step: int = 1) -> None:
        if step < 1 or not 0 <= first < step:
            raise ValueError(f"first should be in [0, step) and step >= 1, got first={first}, step={step}")
        self.file = file
        self.step = step
        self.chunk = first  # the chunk being written (or next to start)
        self._chunks: dict[int, tuple[int, int]] = {}  # chunk -> (start, end) of the chunks seen, not yet written
        self._pending: dict[int, bytes] = {}  # input position -> text, waiting for the positions before it
        self._next: int | None = None  # the next position to write, inside self.chunk; None before it starts
        self._end = 0
        self._chunk_bytes = 0
        self.table: list[tuple[int, int]] = []  # (chunk, bytes) of each chunk written, in order
        self.sentences = 0

    @property
    def pending(self) -> int:
        """Texts waiting for earlier ones."""
        return len(self._pending)

    def add(self, chunk: int, chunk_start: int, chunk_size: int, texts: Iterable[tuple[int, str]]) -> None:
        """Adds texts of chunk ``chunk`` (positions ``chunk_start`` to ``chunk_start + chunk_size - 1``) as
        ``(position, text)`` pairs, and writes whatever became contiguous."""
        if chunk % self.step != self.chunk % self.step or chunk < self.chunk:
            raise ValueError(f"chunk {chunk} is not one of this writer's chunks to come (next: {self.chunk})")
        if chunk != self.chunk or self._next is None:  # not the chunk being written (already taken out)
            self._chunks.setdefault(chunk, (chunk_start, chunk_start + chunk_size))
        for position, text in texts:
            self._pending[position] = text.encode("utf-8")
        self._write_ready()

    def _write_ready(self) -> None:
        while True:
            if self._next is None:
                if self.chunk not in self._chunks:
                    return
                self._next, self._end = self._chunks.pop(self.chunk)
                self._chunk_bytes = 0
            while self._next < self._end and self._next in self._pending:
                data = self._pending.pop(self._next)
                self.file.write(data)
                self._chunk_bytes += len(data)
                self._next += 1
                self.sentences += 1
            if self._next < self._end:
                return
            self.table.append((self.chunk, self._chunk_bytes))
            self.chunk += self.step
            self._next = None

    def finish(self) -> list[tuple[int, int]]:
        """Checks that every chunk begun was written whole; returns the table of ``(chunk, bytes)`` written."""
        if self._pending or self._next is not None or self._chunks:
            raise RuntimeError(
                f"predictions missing: chunk {self.chunk} stopped at sentence {self._next}, "
                f"{len(self._pending)} sentences waiting, chunks {sorted(self._chunks)} not begun"
            )
        return list(self.table)


def merge_parts(parts: Sequence[str | Path], tables: Sequence[Sequence[tuple[int, int]]], out: BinaryIO) -> None:
    """Writes the chunks of the part files to ``out`` in chunk order.

    Args:
        parts: the part files, one per process; each holds its chunks in increasing order.
        tables: per part, the ``(chunk, bytes)`` of each of its chunks, in file order (``ChunkOrderedWriter.table``).
        out: a binary file.

    Raises:
        RuntimeError: the chunks of all parts together are not 0, 1, 2, ... without a gap or a repeat.
    """
    order = sorted((chunk, size, part) for part, table in enumerate(tables) for chunk, size in table)
    if [chunk for chunk, _, _ in order] != list(range(len(order))):
        raise RuntimeError(f"the parts' chunks are not 0..{len(order) - 1}: {[chunk for chunk, _, _ in order]}")
    files = [open(path, "rb") for path in parts]
    try:
        for _, size, part in order:
            remaining = size
            while remaining:
                block = files[part].read(min(remaining, COPY_BLOCK))
                if not block:
                    raise RuntimeError(f"{parts[part]}: ends {remaining} bytes before its table says")
                out.write(block)
                remaining -= len(block)
    finally:
        for f in files:
            f.close()
