"""Tagging through onnxruntime with a graph from ``seqtag export``: no torch, no Lightning.

:class:`OnnxTagger` reads ``tagger.onnx`` and the ``tagger.vocab.json`` beside it and gives the records of
``Tagger.predict`` (:mod:`seqtag.records`): the same tokenizer, vocabulary and id encoding, the graph for the tag ids
and the CRF's forward-backward scores, and span confidences and marginals computed from those as
:mod:`seqtag.confidence` computes them. ``seqtag predict --onnx tagger.onnx --data.predict FILE`` runs it on a file
(:func:`predict_main`)::

    from seqtag.onnx_runner import OnnxTagger

    tagger = OnnxTagger("tagger.onnx")
    tagger.predict("Angela Merkel visited Paris.")   # [{"tokens": [...], "tags": [...], "spans": [...]}]

The graph alone, ids in and tag ids out (``OnnxTagger.encode`` makes the ids as ``seqtag`` does; docs/export.md
says what they are)::

    import numpy as np
    import onnxruntime as ort

    tagger = OnnxTagger("tagger.onnx")
    ids = tagger.encode([["EU", "rejects", "German", "call"], ["Peter", "Blackburn"]])
    # word_ids, casing_ids (B, T), char_ids (B, T, C), lengths (B,): int64, padded with 0
    session = ort.InferenceSession("tagger.onnx")
    ids["forward_backward"] = np.array(False)  # CRF graphs: True also gives log_alpha, log_beta, log_z
    tag_ids = session.run(["tag_ids"], ids)[0]  # (B, T) label ids, 0 at padding
    [[tagger.labels[i] for i in row[:n]] for row, n in zip(tag_ids, ids["lengths"])]
    # [['S-ORG', 'O', 'S-MISC', 'O'], ['B-PER', 'E-PER']]: the training scheme's labels

Numbers: the graph's emissions differ from torch's by float32 rounding (about 1e-7 relative), so the tags are the
same but for exact near-ties, and confidences and marginals agree to about 1e-5.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqtag.console import flag
from seqtag.data import schemes
from seqtag.data.predict_input import read_sentences
from seqtag.data.vocab import Vocab
from seqtag.errors import SeqtagInputError

# The vocabulary file's format marker, written by seqtag.export.
FORMAT = "seqtag-onnx"
FORMAT_VERSION = 1
# Padded tokens per sentence of a batch's budget, as seqtag.data.sampler.EVAL_TOKENS_PER_SENTENCE.
TOKENS_PER_SENTENCE = 64
# Sentences read, tagged and written at a time by predict_main: memory stays flat however long the input.
CHUNK_SENTENCES = 10_000


def vocab_path(onnx_path: str | Path) -> Path:
    """The vocabulary file beside an exported graph: ``tagger.onnx`` → ``tagger.vocab.json``."""
    path = Path(onnx_path)
    return path.with_name(path.stem + ".vocab.json")


def _log_sum_exp(x: np.ndarray, axis: int) -> np.ndarray:
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(x - peak), axis=axis)) + np.squeeze(peak, axis=axis)


def _scheme_tables(labels: Sequence[str], scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """``begins[previous, tag]`` (a span starts at ``tag`` after ``previous``) and ``closes[tag, next]`` (a span
    ending in ``tag`` is closed by ``next``), read off ``schemes.get_spans`` as :mod:`seqtag.confidence` does."""
    pairs = [[schemes.get_spans([a, b], scheme) for b in labels] for a in labels]
    begins = np.array([[any(start == 1 for _, start, _ in spans) for spans in row] for row in pairs], dtype=bool)
    closes = np.array([[any((s, e) == (0, 1) for _, s, e in spans) for spans in row] for row in pairs], dtype=bool)
    return begins.reshape(len(labels), len(labels)), closes.reshape(len(labels), len(labels))


class OnnxTagger:
    """A tagger exported by ``seqtag export``, run by onnxruntime.

    Args:
        path: the ``.onnx`` file; its vocabulary is read from :func:`vocab_path` beside it.
        threads: onnxruntime's intra-op threads. Default: onnxruntime's (one per physical core)

    Raises:
        SeqtagInputError: for a missing file or a vocabulary file of another format.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise SeqtagInputError("tagging with an ONNX graph needs onnxruntime: pip install 'seqtag[onnx]'") from None

        path = Path(path)
        meta_path = vocab_path(path)
        for needed in (path, meta_path):
            if not needed.is_file():
                raise SeqtagInputError(
                    f"{needed}: not found (seqtag export writes the graph and the vocabulary beside it)"
                )
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SeqtagInputError(f"{meta_path}: not a seqtag ONNX vocabulary file: {err}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            found = (meta.get("format"), meta.get("version")) if isinstance(meta, dict) else type(meta).__name__
            raise SeqtagInputError(
                f"{meta_path}: expected a {FORMAT} vocabulary file of version {FORMAT_VERSION}, got {found}"
            )
        self.meta = meta
        self.vocab = Vocab.from_dict(meta["vocab"])
        if meta.get("pretrained_words"):
            self.vocab.attach_pretrained(meta["pretrained_words"].split("\n"))
        self.labels: list[str] = list(meta["labels"])
        self.scheme: str | None = meta["scheme"]
        self.data_scheme: str | None = meta["data_scheme"]
        self.tokenize_mode: str = meta["tokenize_mode"]
        self.reading: dict[str, Any] = dict(meta.get("reading", {}))
        self.crf = meta["head"] == "crf"
        if self.crf:
            scores = meta["crf"]
            self.transitions = np.array(scores["transitions"], dtype=np.float64)  # (K, K), forbidden at -1e4
            self.start = np.array(scores["start"], dtype=np.float64)  # (K,)
            self.end = np.array(scores["end"], dtype=np.float64)  # (K,)
        self._tables = _scheme_tables(self.labels, self.scheme) if self.scheme else None
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only: not the notes on initializers the optimizer folded away
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]

    # ------------------------------------------------------------------------------------------------ ids
    def encode(self, token_lists: Sequence[Sequence[str]], features: Sequence | None = None) -> dict[str, np.ndarray]:
        """The graph's inputs for non-empty sentences, padded with 0 (the ids of ``TaggingDataModule``'s batches).

        Shape:
            returns: ``word_ids``, ``casing_ids`` (B, T); ``char_ids`` (B, T, C); ``lengths`` (B,); ``feature_ids``
            (B, T, F) for a model with feature columns. All int64.
        """
        rows = [self.vocab.encode_tokens(tokens) for tokens in token_lists]
        batch, length = len(rows), max(len(r["word_ids"]) for r in rows)
        chars = max(len(c) for r in rows for c in r["char_ids"])
        word_ids = np.zeros((batch, length), dtype=np.int64)
        casing_ids = np.zeros((batch, length), dtype=np.int64)
        char_ids = np.zeros((batch, length, chars), dtype=np.int64)
        for b, row in enumerate(rows):
            n = len(row["word_ids"])
            word_ids[b, :n] = row["word_ids"]
            casing_ids[b, :n] = row["casing_ids"]
            for t, ids in enumerate(row["char_ids"]):
                char_ids[b, t, : len(ids)] = ids
        feed = {
            "word_ids": word_ids,
            "char_ids": char_ids,
            "casing_ids": casing_ids,
            "lengths": np.array([len(r["word_ids"]) for r in rows], dtype=np.int64),
        }
        if "feature_ids" in self.input_names:
            num_features = len(self.vocab.features)
            feature_ids = np.zeros((batch, length, num_features), dtype=np.int64)
            for b, columns in enumerate(features):
                ids = self.vocab.encode_features(columns)  # (T, F)
                feature_ids[b, : len(ids)] = np.asarray(ids, dtype=np.int64).reshape(-1, num_features)
            feed["feature_ids"] = feature_ids
        return feed

    def run(self, feed: dict[str, np.ndarray], forward_backward: bool = False) -> dict[str, np.ndarray]:
        """The graph's outputs by name (``tag_ids``, ``emissions``, and for a CRF ``log_alpha``, ``log_beta``,
        ``log_z``, -inf unless ``forward_backward``)."""
        feed = dict(feed)
        if "forward_backward" in self.input_names:
            feed["forward_backward"] = np.array(forward_backward)
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed)))

    # ------------------------------------------------------------------------------------------------ tagging
    def tag(
        self, sentences: Sequence[Sequence[str] | str], batch_size: int = 256, features: Sequence | None = None
    ) -> list[list[str]]:
        """Tags sentences, in the data's scheme, as ``Tagger.tag`` does: token lists, or strings tokenized as the
        training data was (each one sentence)."""
        from seqtag.tokenize import tokenize

        token_lists = [
            [t.text for sentence in tokenize(s, self.tokenize_mode) for t in sentence]
            if isinstance(s, str)
            else list(s)
            for s in sentences
        ]
        return [out["tags"] for out in self.decode(token_lists, batch_size, features)]

    def predict(
        self,
        inputs: str | Sequence[str | Sequence[str]],
        n_best: int = 0,
        marginals: bool = False,
        batch_size: int = 256,
        features: Sequence | None = None,
    ) -> list[dict[str, Any]]:
        """Records of raw text or token lists, as ``Tagger.predict`` gives them (``n_best`` is not in the graph).

        Raises:
            SeqtagInputError: for ``n_best``, or features given with raw text.
        """
        from seqtag.records import sentence_record, split_inputs

        if n_best:
            raise SeqtagInputError("n-best tag sequences are not in the ONNX graph: tag with the checkpoint for them")
        if isinstance(inputs, str):
            inputs = [inputs]
        if features is not None and any(isinstance(item, str) for item in inputs):
            raise SeqtagInputError("features go with token-list inputs only (raw text has no feature columns)")
        sentences, origins, texts = split_inputs(inputs, self.tokenize_mode)
        token_lists = [[t[0] for t in sentence] for sentence in sentences]
        outputs = self.decode(token_lists, batch_size, features, spans=True, marginals=marginals)
        records = []
        for sentence, origin, text, out in zip(sentences, origins, texts, outputs):
            record: dict[str, Any] = {"input": origin}
            record.update(sentence_record(sentence, out["tags"], out["spans"], text, None, out.get("marginals")))
            records.append(record)
        return records

    def decode(
        self,
        token_lists: Sequence[Sequence[str]],
        batch_size: int = 256,
        features: Sequence | None = None,
        spans: bool = False,
        marginals: bool = False,
    ) -> list[dict[str, Any]]:
        """Per sentence, as :func:`seqtag.tagging.decode_outputs`: ``tags`` in the data's scheme, and as asked
        ``spans`` [(type, start, end, confidence)] and ``marginals`` [{tag: probability} per token]."""
        num_features = len(self.vocab.features)
        if num_features and features is None:
            raise SeqtagInputError(
                f"this tagger reads {num_features} feature columns besides the tokens: pass features=[per sentence, "
                f"{num_features} lists of values, one per token]"
            )
        if features is not None and len(features) != len(token_lists):
            raise SeqtagInputError(f"{len(token_lists)} sentences but features for {len(features)}")
        results: list[dict[str, Any]] = [{"tags": [], "spans": []} for _ in token_lists]
        nonempty = sorted((i for i, tokens in enumerate(token_lists) if tokens), key=lambda i: len(token_lists[i]))
        for indices in _batches(nonempty, [len(token_lists[i]) for i in nonempty], batch_size):
            batch_features = [features[i] for i in indices] if features is not None else None
            feed = self.encode([token_lists[i] for i in indices], batch_features)
            scores = self.crf and (spans and self.scheme is not None or marginals)
            out = self.run(feed, forward_backward=bool(scores))
            for i, result in zip(indices, self._outputs(feed["lengths"], out, spans, marginals)):
                results[i] = result
        return results

    def _outputs(
        self, lengths: np.ndarray, out: dict[str, np.ndarray], spans: bool, marginals: bool
    ) -> Iterator[dict[str, Any]]:
        """Tags, spans with confidence and marginals of each row of a batch, from the graph's outputs."""
        emissions = out["emissions"]  # (B, T, K)
        probs = None
        if not self.crf and (spans or marginals):
            shifted = np.exp(emissions - emissions.max(axis=2, keepdims=True))
            probs = shifted / shifted.sum(axis=2, keepdims=True)  # (B, T, K) float32, as torch.softmax
        table = None
        if marginals and self.crf:
            # float64: log_alpha + log_beta is hundreds of nats, where float32 keeps 5 digits after the point.
            with np.errstate(invalid="ignore"):  # -inf at padding
                table = np.exp(out["log_alpha"] + out["log_beta"] - out["log_z"][:, None, None])  # (B, T, K)
        for b, n in enumerate(lengths.tolist()):
            tag_ids = out["tag_ids"][b, :n].tolist()
            tags = [self.labels[t] for t in tag_ids]
            result: dict[str, Any] = {"tags": self._to_data_tags(tags), "spans": []}
            if spans and self.scheme:
                found = schemes.get_spans(tags, self.scheme)
                if self.crf:
                    confidences = [self._crf_confidence(out, b, n, tag_ids, s, e) for _, s, e in found]
                else:
                    token = np.log(np.maximum(probs[b, np.arange(n), tag_ids].astype(np.float64), np.finfo(float).tiny))
                    confidences = [min(1.0, math.exp(float(token[s:e].sum()))) for _, s, e in found]
                result["spans"] = [(t, s, e, c) for (t, s, e), c in zip(found, confidences)]
            if marginals:
                rows = (table if self.crf else probs)[b, :n].tolist()
                result["marginals"] = [{k: p for k, p in zip(self.labels, row) if p >= 5e-4} for row in rows]
            yield result

    def _crf_confidence(
        self, out: dict[str, np.ndarray], b: int, n: int, tags: list[int], start: int, end: int
    ) -> float:
        """The probability of a span: its tokens carry its tags, entered and left as the scheme allows (the
        log-space branch of ``ConditionalRandomField.segment_log_probs``)."""
        begins, closes = self._tables
        transitions = self.transitions
        emissions = out["emissions"][b].astype(np.float64)  # (T, K)
        first, last = tags[start], tags[end - 1]
        if start == 0:
            head = self.start[first]
        else:
            into = out["log_alpha"][b, start - 1] + transitions[:, first]  # (K,)
            head = _log_sum_exp(np.where(begins[:, first], into, -np.inf), 0)
        inside = emissions[start, first]
        for t in range(start + 1, end):
            inside += transitions[tags[t - 1], tags[t]] + emissions[t, tags[t]]
        if end == n:
            tail = self.end[last]
        else:
            onward = transitions[last] + emissions[end] + out["log_beta"][b, end]  # (K,)
            tail = _log_sum_exp(np.where(closes[last], onward, -np.inf), 0)
        return min(1.0, math.exp(float(head + inside + tail - out["log_z"][b])))

    def _to_data_tags(self, tags: list[str]) -> list[str]:
        if self.scheme and self.data_scheme and self.data_scheme != self.scheme:
            return schemes.convert(tags, self.scheme, self.data_scheme)
        return tags


def _batches(order: list[int], lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive runs of ``order`` (sorted by length) of at most ``batch_size`` sentences and at most
    ``batch_size * TOKENS_PER_SENTENCE`` padded tokens, as prediction batches are cut; a longer sentence is alone."""
    budget = batch_size * TOKENS_PER_SENTENCE
    batch: list[int] = []
    for i, length in zip(order, lengths):
        if batch and (len(batch) == batch_size or (len(batch) + 1) * length > budget):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


# ---------------------------------------------------------------------------------------------- seqtag predict
def _chunks(rows: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seqtag predict --onnx",
        description="Tag a file with a graph from `seqtag export`, through onnxruntime (no torch): the same output "
        "as `seqtag predict --ckpt_path`. Reading options default to the checkpoint's, kept at export.",
    )
    parser.add_argument("--onnx", required=True, help="the exported graph (its NAME.vocab.json beside it)")
    parser.add_argument("--data.predict", dest="predict", required=True, help="the file to tag (text or columns)")
    parser.add_argument("--predict_output", default=None, help="default: runs/predictions/<input>.pred.<format>")
    parser.add_argument("--predict_format", choices=("conll", "jsonl"), default=None)
    parser.add_argument(
        "--marginals", type=flag, nargs="?", const=True, default=False, help="per-token tag probabilities"
    )
    parser.add_argument("--n_best", type=int, default=0, help="not in the graph: only 0")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime's threads. Default: one per core")
    parser.add_argument("--trainer.default_root_dir", dest="root", default="runs", help="for the default output path")
    for name in ("format", "token_column", "tag_column", "hub_config", "encoding"):
        parser.add_argument(f"--data.{name}", dest=name, default=None)
    parser.add_argument("--data.feature_columns", dest="feature_columns", type=json.loads, default=None)
    parser.add_argument("--data.eval_batch_size", dest="batch_size", type=int, default=None)
    return parser


def predict_main(args: list[str]) -> int:
    """``seqtag predict --onnx tagger.onnx --data.predict FILE [--predict_output OUT]``: returns the exit status."""
    from seqtag.atomic import atomic_open
    from seqtag.records import output_format, prediction_text

    parser = _parser()
    options, unknown = parser.parse_known_args(args)
    if unknown:
        raise SeqtagInputError(
            f"seqtag predict --onnx: unknown options {unknown}; it takes --data.predict, --predict_output, "
            f"--predict_format, --marginals, --threads and the data reading options (see --help)"
        )
    if options.n_best:
        raise SeqtagInputError("--n_best: the k best tag sequences are not in the ONNX graph; tag with --ckpt_path")
    fmt = output_format(options.predict_output, options.predict_format, marginals=options.marginals)
    tagger = OnnxTagger(options.onnx, options.threads)
    reading = dict(tagger.reading)
    for key in ("format", "token_column", "tag_column", "hub_config", "encoding", "feature_columns"):
        if getattr(options, key) is not None:
            reading[key] = getattr(options, key)
    if len(tagger.vocab.features) != len(reading.get("feature_columns") or []):
        raise SeqtagInputError(
            f"the model reads {len(tagger.vocab.features)} feature columns but data.feature_columns is "
            f"{reading.get('feature_columns')}: use the training's data options"
        )
    batch_size = options.batch_size or reading.get("eval_batch_size") or 256
    source = Path(options.predict.rstrip("/"))
    output = Path(options.predict_output or Path(options.root, "predictions", f"{source.name}.pred.{fmt}"))
    count = 0
    rows = read_sentences(options.predict, reading, tagger.tokenize_mode)
    with atomic_open(output, "w") as file:
        for chunk in _chunks(rows, CHUNK_SENTENCES):
            features = [row["features"] for row in chunk] if tagger.vocab.features else None
            outputs = tagger.decode(
                [row["tokens"] for row in chunk],
                batch_size,
                features,
                spans=fmt == "jsonl",
                marginals=options.marginals,
            )
            file.write("".join(prediction_text(row, out, fmt) for row, out in zip(chunk, outputs)))
            count += len(chunk)
    print(f"Predictions for {count} sentences written to {output}")
    sys.stdout.flush()
    return 0
