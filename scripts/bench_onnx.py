"""Tagging through onnxruntime against torch, on CPU with one thread, on the same batches of a labelled file.

    python scripts/bench_onnx.py /tmp/gpu1/conll2003-ner-seed1.ckpt ../shared/data/conll2003/eng.testb

The checkpoint is exported to a temporary folder (or ``--onnx`` names an export of it). The file's sentences are
sorted by length and cut into batches of ``--batch_size``; both sides get the same id tensors
(``TaggingDataModule``'s collate). Measured, best of ``--repeats`` runs each (the two sides take turns, as other
processes may share the machine):

1. tag ids: ``Tagger.forward`` + ``Tagger.decode`` (Viterbi) against the graph's ``tag_ids`` (forward-backward off);
2. records: tokens to tags in the data's scheme plus spans with their confidence, ``Tagger.predict``'s path
   (``_decode_token_lists`` with spans) against ``OnnxTagger.decode(..., spans=True)``, encoding included;

and the agreement: sentences and tokens with the same tags, spans found by both, and the largest difference of
their confidences. ``--json`` writes the figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from seqtag.data.datamodule import collate
from seqtag.data.readers import read_conll
from seqtag.export import export_checkpoint
from seqtag.onnx_runner import OnnxTagger
from seqtag.tagger import Tagger, length_mask
from seqtag.tagging import DecodeOptions

INPUTS = ("word_ids", "char_ids", "casing_ids", "lengths")


def best_times(runs: list, repeats: int) -> tuple[list[float], list]:
    """The shortest of ``repeats`` timed runs of each function, after one warm-up run each, and their last results.
    The functions take turns, so that a busy spell of the machine slows both sides alike."""
    results = [run() for run in runs]
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for k, run in enumerate(runs):
            start = time.perf_counter()
            results[k] = run()
            times[k].append(time.perf_counter() - start)
    return [min(t) for t in times], results


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("data", help="a CoNLL file (its tokens are tagged)")
    parser.add_argument("--onnx", default=None, help="an export of the checkpoint. Default: exported here")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    torch.set_num_threads(1)
    model = Tagger.load(args.checkpoint)
    with tempfile.TemporaryDirectory() as tmp:
        graph = Path(args.onnx) if args.onnx else export_checkpoint(args.checkpoint, Path(tmp) / "tagger.onnx")[0]
        onnx = OnnxTagger(graph, threads=1)

    sentences = [s["tokens"] for s in read_conll(args.data)]
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    batches = []
    for start in range(0, len(order), args.batch_size):
        rows = []
        for i in order[start : start + args.batch_size]:
            row = model.vocab.encode_tokens(sentences[i])
            rows.append({**row, "tag_ids": [], "index": i})
        batches.append(collate(rows))
    feeds = [{name: batch[name].numpy() for name in INPUTS} for batch in batches]

    @torch.inference_mode()
    def torch_tags() -> list[np.ndarray]:
        out = []
        for batch in batches:
            emissions = model(batch)
            out.append(model.decode(emissions, length_mask(batch["lengths"], emissions.shape[1])).numpy())
        return out

    def onnx_tags() -> list[np.ndarray]:
        return [onnx.run(feed)["tag_ids"] for feed in feeds]

    def torch_records() -> list[dict]:
        return model._decode_token_lists(sentences, args.batch_size, None, None, DecodeOptions(spans=True))

    def onnx_records() -> list[dict]:
        return onnx.decode(sentences, args.batch_size, spans=True)

    tokens = sum(map(len, sentences))
    figures: dict = {
        "checkpoint": args.checkpoint,
        "data": args.data,
        "sentences": len(sentences),
        "tokens": tokens,
        "batch_size": args.batch_size,
        "threads": 1,
        "machine": f"{cpu_name()}, {torch.get_num_threads()} thread",
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "date": datetime.date.today().isoformat(),
    }
    (seconds_torch, seconds_onnx), (tags_torch, tags_onnx) = best_times([torch_tags, onnx_tags], args.repeats)
    same_rows = sum(int((a == b).all(axis=1).sum()) for a, b in zip(tags_torch, tags_onnx))
    same_tokens = sum(
        int(((a == b) & (np.arange(a.shape[1]) < batch["lengths"].numpy()[:, None])).sum())
        for a, b, batch in zip(tags_torch, tags_onnx, batches)
    )
    figures["tag_ids"] = {
        "torch_sentences_per_s": len(sentences) / seconds_torch,
        "onnx_sentences_per_s": len(sentences) / seconds_onnx,
        "same_sentences": same_rows,
        "same_tokens": same_tokens,
    }
    (seconds_torch, seconds_onnx), (records_torch, records_onnx) = best_times(
        [torch_records, onnx_records], args.repeats
    )
    spans_torch = {(i, s[:3]): s[3] for i, r in enumerate(records_torch) for s in r["spans"]}
    spans_onnx = {(i, s[:3]): s[3] for i, r in enumerate(records_onnx) for s in r["spans"]}
    shared = spans_torch.keys() & spans_onnx.keys()
    figures["records"] = {
        "torch_sentences_per_s": len(sentences) / seconds_torch,
        "onnx_sentences_per_s": len(sentences) / seconds_onnx,
        "same_tags": sum(a["tags"] == b["tags"] for a, b in zip(records_torch, records_onnx)),
        "spans": [len(spans_torch), len(spans_onnx), len(shared)],
        "max_confidence_difference": max((abs(spans_torch[k] - spans_onnx[k]) for k in shared), default=0.0),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
