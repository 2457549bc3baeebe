"""Why a JSON, JSON lines or parquet file could not be read: the line and column of a JSON syntax error, else the
innermost cause that ``datasets`` / ``pyarrow`` gave.

``datasets`` reads these files with ``pyarrow`` and, when that fails, reports a ``DatasetGenerationError`` whose
message says nothing of where the file is broken (``JSON parse error: Missing a comma or ']' ... in row 1``, with
rows counted per block). These functions run only once reading has failed: they parse the file again with Python's
``json`` module, whose errors give the line and the column.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from seqtag.errors import DataFormatError, SeqtagInputError

# Characters shown on each side of a JSON syntax error.
_CONTEXT = 20


def root_cause(err: BaseException) -> str:
    """The message of the innermost exception in ``err``'s chain (the one that says what went wrong)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return str(err) or type(err).__name__


def _near(line: str, column: int) -> str:
    """The text around a 1-based column of a line, with ``...`` where it is cut."""
    start, end = max(0, column - 1 - _CONTEXT), column - 1 + _CONTEXT
    return ("..." if start else "") + line[start:end] + ("..." if end < len(line) else "")


def _syntax_error(path: Path, lineno: int, line: str, err: json.JSONDecodeError, last: bool) -> DataFormatError:
    cut = " (the file ends there: is it cut short?)" if last and err.colno > len(line.rstrip()) else ""
    return DataFormatError(path, lineno, f"invalid JSON: {err.msg} at column {err.colno}{cut}", _near(line, err.colno))


def json_problem(path: Path, lines: Iterable[tuple[int, str]], cause: BaseException) -> SeqtagInputError:
    """The error to report for a JSON or JSON lines file that ``datasets`` could not read.

    A file whose first non-blank line is a JSON object on its own is read as JSON lines: the first line that does
    not parse is reported. Any other file is parsed as one JSON document.

    Args:
        path: the file.
        lines: its ``(line number, text)`` pairs, decoded (decoding errors name their line as they are met).
        cause: what ``datasets`` raised.

    Returns:
        ``DataFormatError`` ``"{path}:{line}: invalid JSON: {what} at column {column}: '{text around it}'"`` for a
        syntax error; ``"{path}: no sentence found ..."`` for a file without rows; otherwise a
        ``SeqtagInputError`` with the innermost cause.
    """
    numbered = list(lines)
    content = [(lineno, line) for lineno, line in numbered if line.strip()]
    if not content:
        return DataFormatError(path, None, "no sentence found (the file is empty or holds only blank lines)")
    try:
        first = json.loads(content[0][1])
    except json.JSONDecodeError:
        first = None
    if isinstance(first, dict):  # JSON lines: one object per line
        for i, (lineno, line) in enumerate(content):
            try:
                json.loads(line)
            except json.JSONDecodeError as err:
                return _syntax_error(path, lineno, line, err, last=i == len(content) - 1)
    else:
        text = "\n".join(line for _, line in numbered)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            line = numbered[err.lineno - 1][1]
            return _syntax_error(path, err.lineno, line, err, last=err.pos >= len(text.rstrip()))
        if value == [] or value == {}:
            return DataFormatError(path, None, f"no sentence found (the file holds only {json.dumps(value)})")
    return SeqtagInputError(
        f"{path}: cannot read the JSON as rows of tokens and tags (one object per sentence, in a list or one per "
        f"line): {root_cause(cause)}"
    )


def json_lines_line(lines: Iterable[tuple[int, str]], row: int) -> int | None:
    """The line of row ``row`` (from 0) of a JSON lines file, or None when the file is one JSON document."""
    count = 0
    for lineno, line in lines:
        if not line.strip():
            continue  # blank lines hold no row
        if count == 0:
            try:
                if not isinstance(json.loads(line), dict):
                    return None
            except json.JSONDecodeError:
                return None  # a document spread over lines
        if count == row:
            return lineno
        count += 1
    return None
