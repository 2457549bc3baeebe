"""Cost of span confidences next to plain Viterbi decoding, on CoNLL-2003-shaped eval batches.

    .venv/bin/python scripts/bench_confidence.py
    .venv/bin/python scripts/bench_confidence.py --o-bias 0    # dense spans: a span every 1.6 tokens
    .venv/bin/python scripts/bench_confidence.py --lengths-from ../shared/data/conll2003/eng.testb

A BIOES CRF over 4 span types (17 tags, constraints from ``allowed_transitions``) decodes random emissions in
batches of ``--batch-size`` sentences whose longest sentence has T = 5, 10, ..., 40 tokens; the other lengths lie
in [3T/4, T], as in length-sorted eval batches. ``--lengths-from`` takes the batches from a CoNLL file's sentence
lengths instead: sorted and cut into batches of ``--batch-size``, as seqtag's ``sorted`` eval bucketing does (for
eng.testb: 14 batches, half of them no longer than 10 tokens). For each batch it times ``crf.decode`` alone and
``crf.decode`` followed by ``seqtag.confidence.span_confidences`` (forward-backward, span extraction, one
probability per span and the Python lists), best of ``--repeat`` rounds, and prints milliseconds per batch and
their ratio; the last row sums all batches.

Emissions are ``--scale`` times standard-normal noise plus ``--o-bias`` on the ``O`` tag. The default bias gives
what CoNLL-2003 eng.testb has, a span every 7 to 8 tokens and about 16% of tokens inside spans (without it, random
emissions give a span every 1.6 tokens, and per-span work grows with them).

Times are process CPU time by default (``--clock cpu``): on a shared machine it is far steadier than wall time,
and with one thread it is the same quantity; ``--clock wall`` measures wall time.
"""

from __future__ import annotations

import argparse
import os

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning (matters when cores are shared).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from seqtag.confidence import span_confidences  # noqa: E402
from seqtag.data.schemes import allowed_transitions, labels_for_scheme  # noqa: E402
from seqtag.modules.crf import ConditionalRandomField  # noqa: E402


def best_ms(fns: list[Callable[[], object]], repeat: int, number: int, clock: Callable[[], float]) -> list[float]:
    """Best of ``repeat`` rounds of the mean time of ``number`` calls of each function, in milliseconds.

    The functions take turns within each round, so a burst of load from other processes hits all of them alike.
    """
    best = [float("inf")] * len(fns)
    for fn in fns:
        fn()
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = clock()
            for _ in range(number):
                fn()
            best[i] = min(best[i], (clock() - start) / number)
    return [b * 1e3 for b in best]


def conll_batches(path: Path, batch_size: int) -> list[torch.Tensor]:
    """Sentence lengths of a CoNLL file (blank-line separated, ``-DOCSTART-`` lines skipped), sorted and cut into
    batches: a (B,) long tensor per batch."""
    lengths, n = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if n:
                lengths.append(n)
            n = 0
        elif not line.startswith("-DOCSTART-"):
            n += 1
    if n:
        lengths.append(n)
    lengths.sort()
    return [torch.tensor(lengths[i : i + batch_size]) for i in range(0, len(lengths), batch_size)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--scale", type=float, default=4.0, help="emission scale")
    parser.add_argument("--o-bias", type=float, default=10.0, help="added to the O tag's emissions")
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--number", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lengths-from", type=Path, help="CoNLL file whose sentence lengths shape the batches")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    labels = labels_for_scheme(["PER", "LOC", "ORG", "MISC"], "BIOES")
    crf = ConditionalRandomField(len(labels), allowed_transitions(labels, "BIOES")).eval()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(
        f"BIOES, K={len(labels)}, B={args.batch_size}, threads={torch.get_num_threads()}, scale={args.scale}, "
        f"o_bias={args.o_bias}, clock={args.clock}"
    )
    if args.lengths_from:
        print(f"batches: sentence lengths of {args.lengths_from}, sorted")
        batches = conll_batches(args.lengths_from, args.batch_size)
    else:
        batches = []
        for t in range(5, 41, 5):
            lengths = torch.randint(max(1, 3 * t // 4), t + 1, (args.batch_size,))
            lengths[0] = t
            batches.append(lengths)
    print("| T | spans/batch | decode ms | decode + span_confidences ms | ratio |")
    print("|---|---|---|---|---|")
    totals = [0.0, 0.0]
    with torch.inference_mode():
        for lengths in batches:
            t = int(lengths.max())
            emissions = args.scale * torch.randn(len(lengths), t, len(labels))
            emissions[:, :, labels.index("O")] += args.o_bias
            mask = torch.arange(t) < lengths.unsqueeze(1)

            def with_confidence(emissions: torch.Tensor = emissions, mask: torch.Tensor = mask) -> list:
                tags = crf.decode(emissions, mask)
                return span_confidences(crf, emissions, mask, tags, labels, "BIOES")

            spans = sum(len(s) for s in with_confidence())
            plain, full = best_ms(
                [lambda e=emissions, m=mask: crf.decode(e, m), with_confidence], args.repeat, args.number, clock
            )
            totals[0] += plain
            totals[1] += full
            print(f"| {t} | {spans} | {plain:.2f} | {full:.2f} | {full / plain:.2f} |")
    print(f"| all | | {totals[0]:.2f} | {totals[1]:.2f} | {totals[1] / totals[0]:.2f} |")


if __name__ == "__main__":
    main()
