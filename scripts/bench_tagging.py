"""What tagging new text is worth and costs, on a trained span model and a labelled test file:

1. span F1 with the pretrained table for words unseen in training, and without it (such words are then UNK);
2. calibration of span confidence: expected calibration error (10 equal-width bins) and a reliability plot;
3. speed, 1 thread: decoding with Viterbi alone against Viterbi plus spans with confidence, on the same emissions,
   and whole tagging (model included) both ways.

    python scripts/bench_tagging.py runs/.../best.ckpt data/conll2003/eng.testb --plot docs/reliability.png

Writes a JSON summary with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seqtag.data import schemes
from seqtag.data.readers import read_conll
from seqtag.tagger import Tagger, length_mask
from seqtag.tagging import DecodeOptions, decode_outputs


def span_f1(gold: list[list[str]], predicted: list[list[str]], scheme: str) -> float:
    """conlleval's micro F1 over exact spans."""
    correct = found = wanted = 0
    for g, p in zip(gold, predicted):
        gold_spans, predicted_spans = set(schemes.get_spans(g, scheme)), set(schemes.get_spans(p, scheme))
        correct += len(gold_spans & predicted_spans)
        found += len(predicted_spans)
        wanted += len(gold_spans)
    precision, recall = correct / max(found, 1), correct / max(wanted, 1)
    return 100 * 2 * precision * recall / max(precision + recall, 1e-12)


def calibration(records: list[dict], gold: list[list[str]], scheme: str, bins: int = 10) -> dict:
    """Expected calibration error of span confidence: |accuracy - confidence| per bin, weighted by the bin's share."""
    pairs = []
    for record, tags in zip(records, gold):
        gold_spans = set(schemes.get_spans(tags, scheme))  # (type, start, end exclusive)
        for span in record["spans"]:
            pairs.append((span["confidence"], (span["type"], span["start"], span["end"]) in gold_spans))
    table = []
    ece = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        inside = [(c, ok) for c, ok in pairs if low <= c < high or (b == bins - 1 and c == 1.0)]
        if not inside:
            table.append({"bin": [low, high], "count": 0})
            continue
        confidence = sum(c for c, _ in inside) / len(inside)
        accuracy = sum(ok for _, ok in inside) / len(inside)
        ece += len(inside) / len(pairs) * abs(accuracy - confidence)
        table.append({"bin": [low, high], "count": len(inside), "confidence": confidence, "accuracy": accuracy})
    return {"ece": ece, "spans": len(pairs), "bins": table}


def plot(result: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in result["bins"] if b["count"]]
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect calibration")
    ax.bar([sum(b["bin"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=0.09, alpha=0.7, label="accuracy")
    ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", color="black", label="per bin")
    for b in bins:
        ax.annotate(str(b["count"]), (sum(b["bin"]) / 2, b["accuracy"]), ha="center", va="bottom", fontsize=7)
    ax.set_xlabel("span confidence")
    ax.set_ylabel("fraction of spans correct")
    ax.set_title(f"{title}\nECE {result['ece']:.4f} over {result['spans']} predicted spans", fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


@torch.inference_mode()
def time_decoding(tagger: Tagger, sentences: list[list[str]], repeats: int) -> dict:
    """Seconds per pass over the sentences: the decoding step alone (emissions computed once) and whole tagging."""
    from seqtag.data.datamodule import iter_batches

    batches = [b for b in iter_batches(tagger.vocab, sentences, 256)]
    emissions = [(tagger(b), length_mask(b["lengths"], b["word_ids"].shape[1])) for b in batches]
    result = {}
    for name, options in (("viterbi", DecodeOptions()), ("viterbi_spans_confidence", DecodeOptions(spans=True))):
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            for e, m in emissions:
                decode_outputs(tagger, e, m, options)
            best = min(best, time.perf_counter() - start)
        result[f"decode_{name}_s"] = best
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            tagger._decode_token_lists(sentences, 256, None, None, options)
            best = min(best, time.perf_counter() - start)
        result[f"tag_{name}_s"] = best
    result["decode_ratio"] = result["decode_viterbi_spans_confidence_s"] / result["decode_viterbi_s"]
    result["tag_ratio"] = result["tag_viterbi_spans_confidence_s"] / result["tag_viterbi_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("test", type=Path, help="a CoNLL file with gold tags in its last column")
    parser.add_argument("--plot", type=Path, help="reliability plot (PNG)")
    parser.add_argument("--json", type=Path, help="write the figures as JSON")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    tagger = Tagger.load(args.checkpoint)
    rows = list(read_conll(args.test, tag_column=-1))
    sentences, gold = [r["tokens"] for r in rows], [r["tags"] for r in rows]
    scheme = tagger.vocab.data_scheme
    vocab = tagger.vocab
    unseen = sum(1 for s in sentences for t in s if vocab.normalize(t) not in vocab.word_index)
    with_table = sum(1 for s in sentences for t in s if vocab.word_id(t) >= len(vocab.words))
    summary: dict = {
        "checkpoint": str(args.checkpoint),
        "test": str(args.test),
        "vocabulary": f"{len(vocab.words)} training words; pretrained table of {len(vocab.pretrained_words)} words",
        "test_tokens": sum(map(len, sentences)),
        "test_tokens_not_in_vocabulary": unseen,
        "of_which_in_pretrained_table": with_table,
    }
    records = tagger.predict(sentences)
    summary["f1_with_table"] = span_f1(gold, [r["tags"] for r in records], scheme)
    summary["calibration"] = calibration(records, gold, scheme)
    table = (list(vocab.pretrained_words), tagger.embedder.pretrained_table)
    vocab.attach_pretrained([])
    tagger.embedder.set_pretrained_table(None)
    summary["f1_without_table"] = span_f1(gold, tagger.tag(sentences), scheme)
    vocab.attach_pretrained(table[0])
    tagger.embedder.set_pretrained_table(table[1])
    summary["speed_1_thread"] = time_decoding(tagger, sentences, args.repeats)
    print(json.dumps({k: v for k, v in summary.items() if k != "calibration"}, indent=2))
    print(f"span confidence ECE: {summary['calibration']['ece']:.4f} over {summary['calibration']['spans']} spans")
    for b in summary["calibration"]["bins"]:
        if b["count"]:
            print(f"  [{b['bin'][0]:.1f}, {b['bin'][1]:.1f}): {b['count']:5d} spans, confidence {b['confidence']:.3f}, "
                  f"correct {b['accuracy']:.3f}")  # fmt: skip
    if args.plot:
        plot(summary["calibration"], args.plot, f"{args.test.name}: CRF span marginals")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
