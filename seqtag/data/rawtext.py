"""Raw text to tag: each line is tokenized as the model's training data was (:mod:`seqtag.tokenize`), and may hold
several sentences; blank lines separate documents. Tokens keep their character offsets into their line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from seqtag.data.readers import _open_lines
from seqtag.errors import DataFormatError

RAW_TEXT_COLUMNS = ("tokens", "tags", "document", "char_starts", "char_ends", "line", "text")


def read_raw_text(path: str | Path, encoding: str = "utf-8", mode: str = "words") -> Iterator[dict[str, Any]]:
    """Yields the sentences of a raw text file.

    Each sentence: ``tokens``, ``tags`` (empty), ``document`` (the index of its document's first sentence),
    ``char_starts``/``char_ends`` (offsets of its tokens into its line), ``line`` (1-based) and ``text`` (the line).
    ``mode``: ``words`` or ``chars`` (see :func:`seqtag.tokenize.tokenize`).
    """
    from seqtag.tokenize import tokenize

    path = Path(path)
    count = 0
    document = 0
    new_document = True
    for lineno, line in _open_lines(path, encoding):
        sentences = tokenize(line, mode) if line.strip() else []
        if not sentences:
            new_document = True
            continue
        for sentence in sentences:
            if new_document:
                document, new_document = count, False
            yield {
                "tokens": [t.text for t in sentence],
                "tags": [],
                "document": document,
                "char_starts": [t.char_start for t in sentence],
                "char_ends": [t.char_end for t in sentence],
                "line": lineno,
                "text": line,
            }
            count += 1
    if not count:
        raise DataFormatError(path, None, "no sentence found (the file is empty or holds only blank lines)")
