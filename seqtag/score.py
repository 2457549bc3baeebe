"""``seqtag score``: score a conlleval-style file of gold and predicted tags.

Usage::

    seqtag score predictions.txt                     # conlleval report, scheme detected from the gold column
    seqtag score predictions.txt --scheme iob1 --json

The input is what the CoNLL ``conlleval`` script reads: one token per line, columns separated by whitespace (or
``--delimiter``), the last two columns the gold and the predicted tag, a blank line between sentences. Lines whose
first column is ``-DOCSTART-`` are skipped. Scores come from ``seqtag.conlleval``, the same code as ``SpanF1``;
nothing here imports torch, so the command starts at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from seqtag.conlleval import format_conlleval, span_scores
from seqtag.data.schemes import SCHEMES, detect_scheme, is_span_labels, normalize_scheme, validate_tags
from seqtag.errors import DataFormatError


@dataclass
class _Sentence:
    """Gold and predicted tags of one sentence and the line number of each token."""

    gold: list[str] = field(default_factory=list)
    pred: list[str] = field(default_factory=list)
    linenos: list[int] = field(default_factory=list)
    n_columns: int = 0


def read_gold_pred(lines: Iterable[str], path: str, delimiter: str | None = None) -> Iterator[_Sentence]:
    """Read sentences of (gold, predicted) tags from conlleval input.

    Args:
        lines: the file's lines.
        path: the file name used in error messages.
        delimiter: column separator; None splits on any whitespace.

    Yields:
        One ``_Sentence`` per non-empty sentence.

    Raises:
        DataFormatError: for a line with fewer than 2 columns or a column count unlike the first token line's.
    """
    sentence = _Sentence()
    n_columns, first_lineno = None, None
    for lineno, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            if sentence.gold:
                yield sentence
            sentence = _Sentence()
            continue
        columns = line.split(delimiter) if delimiter else line.split()
        if columns[0] == "-DOCSTART-":
            continue
        if len(columns) < 2:
            raise DataFormatError(
                path, lineno, f"expected at least 2 columns (gold and predicted tag), got {len(columns)}", line
            )
        if n_columns is None:
            n_columns, first_lineno = len(columns), lineno
        elif len(columns) != n_columns:
            raise DataFormatError(
                path, lineno, f"expected {n_columns} columns as on line {first_lineno}, got {len(columns)}", line
            )
        sentence.gold.append(columns[-2])
        sentence.pred.append(columns[-1])
        sentence.linenos.append(lineno)
        sentence.n_columns = n_columns
    if sentence.gold:
        yield sentence


def _check_has_gold(sentences: list[_Sentence], path: str) -> None:
    """Raise when the file looks like tokens and predicted tags only (``seqtag predict`` on plain text): two columns,
    a "gold" column that is not all span tags and shares few values with the predicted one, as words and tags do.

    Raises:
        DataFormatError: naming the file and what it lacks.
    """
    if not sentences or sentences[0].n_columns != 2:
        return
    gold = [tag for sentence in sentences for tag in sentence.gold]
    predicted = {tag for sentence in sentences for tag in sentence.pred}
    shared = sum(tag in predicted for tag in gold) / len(gold)
    if shared < 0.5 and not is_span_labels(set(gold)):
        examples = ", ".join(repr(word) for word in list(dict.fromkeys(gold))[:3])
        raise DataFormatError(
            path,
            None,
            f"no gold tags: the file has 2 columns and the first ({examples}, ...) looks like tokens, not tags. "
            "seqtag score compares the last two columns, gold and predicted tags: tag a file that has gold tags "
            "(a CoNLL file: `seqtag predict --data.predict FILE.conll`) to get both",
        )


def _resolve_scheme(name: str, sentences: list[_Sentence], path: str) -> str:
    """The scheme named on the command line, or the one detected from the gold column for ``auto``."""
    if name != "auto":
        return normalize_scheme(name)
    scheme = detect_scheme(sentence.gold for sentence in sentences)
    if scheme is not None:
        return scheme
    for sentence in sentences:
        for tag, lineno in zip(sentence.gold, sentence.linenos):
            if not is_span_labels([tag]):
                raise DataFormatError(
                    path, lineno, f"gold tag {tag!r} is not a span tag (O or PREFIX-TYPE), cannot detect a scheme"
                )
    raise DataFormatError(path, None, "no tokens to score")


def _check_tags(sentences: list[_Sentence], scheme: str, path: str) -> None:
    """Raise for the first gold or predicted tag that is not a tag of ``scheme``."""
    for sentence in sentences:
        for gold, pred, lineno in zip(sentence.gold, sentence.pred, sentence.linenos):
            for column, tag in (("gold", gold), ("predicted", pred)):
                if validate_tags([tag], scheme) is not None:
                    raise DataFormatError(path, lineno, f"{column} tag {tag!r} is not a tag of scheme {scheme}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqtag score",
        description="Score gold vs predicted tags (last two columns) with the conlleval span rules.",
    )
    parser.add_argument("file", metavar="FILE", help="conlleval input file, or - for standard input")
    parser.add_argument(
        "--scheme",
        default="auto",
        type=str.lower,
        choices=["auto", *(s.lower() for s in SCHEMES), "bio", "bioul"],
        help="tag scheme; auto detects it from the gold column (default: auto)",
    )
    parser.add_argument("--json", action="store_true", help="print scores (fractions 0..1) and counts as JSON")
    parser.add_argument("--delimiter", default=None, help="column separator (default: any whitespace)")
    return parser


def score_main(argv: list[str] | None = None) -> int:
    """Run ``seqtag score``; returns the exit status.

    Raises:
        DataFormatError: for a malformed line or a tag that does not fit the scheme (message starts ``path:line``).
        SeqtagInputError: for a missing file.
    """
    args = _parser().parse_args(argv)
    if args.file == "-":
        path, sentences = "<stdin>", list(read_gold_pred(sys.stdin, "<stdin>", args.delimiter))
    else:
        path = args.file
        if not Path(path).is_file():
            raise DataFormatError(path, None, "no such file")
        with open(path, encoding="utf-8") as handle:
            sentences = list(read_gold_pred(handle, path, args.delimiter))
    _check_has_gold(sentences, path)
    scheme = _resolve_scheme(args.scheme, sentences, path)
    _check_tags(sentences, scheme, path)
    report = span_scores([s.gold for s in sentences], [s.pred for s in sentences], scheme)
    if args.json:
        print(json.dumps({"scheme": scheme, **report}, indent=2))
    else:
        print(format_conlleval(report))
    return 0


if __name__ == "__main__":
    sys.exit(score_main())
