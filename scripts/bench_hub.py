"""What a Hub model folder costs and whether it tags as its checkpoint does.

    python scripts/bench_hub.py CHECKPOINT --data ../shared/data/conll2003/eng.testb [--sentences 500]

Writes the checkpoint as a model folder (with the scores of the test_report.json beside it, if any), then prints as
JSON: the checkpoint's and each file's size, the time to write the folder, to load the checkpoint (``Tagger.load``)
and the folder (``Tagger.from_pretrained``, median of 3), to convert the folder into the checkpoint file ``seqtag
predict --model`` runs (first time, then cached), and whether both models give identical records (tags, spans with
confidence, 3-best, marginals) on the first sentences of a CoNLL file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from seqtag import hub
from seqtag.tagger import Tagger


def seconds(function, repeat: int = 3) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def forget_checkpoint() -> bool:
    """Empties load_checkpoint's memory of the last file read, so that each Tagger.load reads the file."""
    import seqtag.data.vocab

    if hasattr(seqtag.data.vocab, "_LAST_CHECKPOINT"):
        seqtag.data.vocab._LAST_CHECKPOINT = None
    return True


def conll_sentences(path: Path, count: int) -> list[list[str]]:
    sentences, tokens = [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if not line.strip() or line.startswith("-DOCSTART-"):
            if tokens:
                sentences.append(tokens)
                tokens = []
            if len(sentences) == count:
                break
            continue
        tokens.append(line.split()[0])
    return sentences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="a CoNLL file whose first sentences are tagged")
    parser.add_argument("--sentences", type=int, default=500)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["SEQTAG_CACHE"] = str(Path(tmp) / "cache")
        folder = Path(tmp) / "model"
        write, _ = seconds(lambda: hub.save_checkpoint_file(options.checkpoint, folder), repeat=1)
        load, original = seconds(lambda: Tagger.load(options.checkpoint) if forget_checkpoint() else None)
        load_folder, shared = seconds(lambda: Tagger.from_pretrained(folder))
        convert, _ = seconds(lambda: hub.checkpoint_file(folder), repeat=1)
        cached, _ = seconds(lambda: hub.checkpoint_file(folder))
        sentences = conll_sentences(options.data, options.sentences)
        tag, records = seconds(lambda: original.predict(sentences, n_best=3, marginals=True), repeat=1)
        identical = shared.predict(sentences, n_best=3, marginals=True) == records
        result = {
            "checkpoint_mb": round(options.checkpoint.stat().st_size / 2**20, 2),
            "folder_mb": {p.name: round(p.stat().st_size / 2**20, 3) for p in sorted(folder.iterdir())},
            "write_folder_s": round(write, 3),
            "load_checkpoint_s": round(load, 3),
            "load_folder_s": round(load_folder, 3),
            "convert_for_cli_s": round(convert, 3),
            "convert_cached_s": round(cached, 4),
            "sentences": len(sentences),
            "tag_s": round(tag, 2),
            "spans": sum(len(r["spans"]) for r in records),
            "identical_records": identical,
            "card_has_scores": "| **overall** |" in (folder / "README.md").read_text(),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
