"""The data ``seqtag predict`` tags, read a sentence at a time, for the paths that tag without the data module
(:mod:`seqtag.commands.predict`, :mod:`seqtag.onnx_runner`); ``TaggingDataModule.predict_sentences`` reads the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from seqtag.errors import SeqtagInputError

# Data options that say how to read a file to tag: a checkpoint keeps them, and tagging takes them from it unless
# given (seqtag predict with or without Lightning, seqtag export).
READING_OPTIONS = (
    "format",
    "token_column",
    "tag_column",
    "hub_config",
    "feature_columns",
    "encoding",
    "eval_batch_size",
)


def read_sentences(source: str, options: dict[str, Any], mode: str) -> Iterator[dict[str, Any]]:
    """The data to tag, a sentence at a time, read as ``seqtag predict --ckpt_path`` reads it (``TaggingDataModule``'s
    predict split): a column file's gold tags are kept when it has a column beyond the tokens and features, and a
    file that is not columns is raw text, tokenized in ``mode``."""
    from seqtag.data.rawtext import read_raw_text
    from seqtag.data.readers import count_columns, iter_sentences, sniff_predict_format

    fmt, encoding = options.get("format") or "auto", options.get("encoding") or "utf-8"
    feature_columns = options.get("feature_columns")
    with_tags = False
    if fmt == "auto" and not source.endswith((".conllu", ".json", ".jsonl", ".parquet")):
        try:
            fmt = "conll" if feature_columns else sniff_predict_format(source, encoding)
            with_tags = fmt == "conll" and count_columns(source, encoding) > 1 + len(feature_columns or [])
        except SeqtagInputError:
            pass  # the reader reports the missing file
    if fmt == "text":
        return read_raw_text(source, encoding, mode)
    return iter_sentences(
        source,
        format=fmt,
        token_column=options.get("token_column"),
        tag_column=options.get("tag_column"),
        split="predict",
        with_tags=with_tags,
        encoding=encoding,
        hub_config=options.get("hub_config"),
        feature_columns=feature_columns,
    )
