"""Ablation of the CoNLL-2003 config: trains and tests one seed per variant and writes a table to docs/benchmarks.md.

    python scripts/ablate.py --data-root data
    python scripts/ablate.py no_vectors softmax --data-root data --seed 1234

Each variant is ``configs/conll2003.yaml`` with one part removed (the options below). ``full`` is the config itself.
The runs are W&B runs named ``conll2003-<variant>`` in the group ``conll2003-ablation``.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reproduce import ROOT, machine, record, run_seed  # noqa: E402

VARIANTS = {
    "full": ("the shipped config", []),
    "no_vectors": ("no pretrained vectors (random 50-d word embeddings)", ["--data.word_vectors=null"]),
    "no_chars": ("no character features", ["--model.char_encoder=none"]),
    "softmax": ("softmax head instead of CRF", ["--model.head=softmax"]),
    "iob2": ("trained in IOB2 instead of BIOES", ["--data.train_scheme=IOB2"]),
    "no_document_memory": ("no document memory", ["--model.document_memory=false"]),
    "no_document_context": ("sentence BiLSTM instead of the document BiLSTM", ["--model.document_context=false"]),
    "no_singleton_dropout": ("no singleton dropout", ["--model.singleton_dropout=0"]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="*", help=f"some of {', '.join(VARIANTS)} (default: all)")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--record", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    args.variants = args.variants or list(VARIANTS)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for variant in args.variants:
        what, options = VARIANTS[variant]
        result = run_seed(
            "conll2003",
            args.seed,
            args.data_root.resolve(),
            args.out.resolve(),
            options,
            name=f"conll2003-{variant}",
            group="conll2003-ablation",
        )
        flags = " ".join(options) or "-"
        score, epochs, minutes = result["score"], result["epochs"], result["minutes"]
        row = f"| {variant} | {what} | `{flags}` | {score:.2f} | {epochs} | {minutes:.1f} |"
        print(row, flush=True)
        rows.append(row)
    command = "python scripts/ablate.py " + " ".join(sys.argv[1:])
    text = "\n".join(
        [
            f"\n### conll2003 ablation, seed {args.seed}\n",
            "| variant | what changes | options | test F1 | epochs | fit minutes |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            f"- command: `{command}`",
            f"- machine: {machine()}; date: {date.today().isoformat()}\n",
        ]
    )
    record(args.record, text)


if __name__ == "__main__":
    main()
