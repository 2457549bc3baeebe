"""The one exception type that seqtag raises for bad input and bad configuration.

The CLI prints it as one paragraph (no traceback unless ``--debug`` or ``SEQTAG_DEBUG=1``) and exits with status 2.
"""

from __future__ import annotations

from pathlib import Path


class SeqtagInputError(ValueError):
    """Bad user input: a data file, a config value, a checkpoint that does not fit the data."""


class DataFormatError(SeqtagInputError):
    """A data file that cannot be read as declared.

    The message starts with ``"{path}:{lineno}: "`` so editors and terminals can jump to the line.

    Example:
        >>> str(DataFormatError("train.conll", 1043, "expected 4 columns, got 3", "EU NNP B-NP"))
        "train.conll:1043: expected 4 columns, got 3: 'EU NNP B-NP'"
    """

    def __init__(self, path: str | Path, lineno: int | None, message: str, line: str | None = None) -> None:
        where = f"{path}:{lineno}" if lineno is not None else f"{path}"
        text = f"{where}: {message}"
        if line is not None:
            text += f": {line!r}"
        super().__init__(text)
        self.path = str(path)
        self.lineno = lineno


class NonFiniteLossError(SeqtagInputError):
    """The training loss became NaN or infinite (usually a learning rate too high for the data)."""
