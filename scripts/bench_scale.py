"""How seqtag's throughput grows with sentence length and batch size, and the memory of a very long sentence.

    .venv/bin/python scripts/bench_scale.py --config configs/bench/ncrfpp_size.yaml --data-root data --threads 1

The model is the config's, built as ``seqtag fit`` builds it (untrained: speed does not depend on the weights).
Batches are synthetic: sentences of exactly L tokens (so no padding, as exact-length bucketing gives), words drawn
from the vocabulary, 3-9 characters each.

* **decode**: emissions + Viterbi under ``torch.inference_mode`` for batches of B sentences of L tokens, the best of
  3 timed runs of at least 0.3 s each after a warm-up: tokens/s and sentences/s.
* **train**: one training step (forward, CRF loss, backward, SGD step) on such a batch: tokens/s.
* **long sentence**: in a fresh process, the growth of peak RSS (Linux: ``VmHWM``, reset through
  ``/proc/self/clear_refs`` after loading) while tagging one sentence of 10,000 tokens through ``Tagger.predict``
  (spans with confidence), and its wall time.

1 vs 2 processes (DDP) is ``scripts/bench_speed.py --ddp 2`` (a real ``seqtag fit`` epoch with each).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent
LONG_SENTENCE = """
import sys, time, torch
torch.set_num_threads({threads})
from seqtag.tagger import Tagger
tagger = Tagger.load({ckpt!r})
words = [w for w in tagger.vocab.words[2:2002]]
tokens = [words[(i * 7919) % len(words)] for i in range({tokens})]
def kib(field):
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(field))
tagger.predict([["warm", "up"]])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the current RSS
before = kib("VmRSS:")
start = time.perf_counter()
records = tagger.predict([tokens])
seconds = time.perf_counter() - start
print(len(records[0]["tags"]), (kib("VmHWM:") - before) / 1024, seconds)
"""


def batch_of(vocab_size: int, num_chars: int, batch: int, length: int, generator: torch.Generator) -> dict:
    word_ids = torch.randint(2, vocab_size, (batch, length), generator=generator)
    chars = torch.randint(2, num_chars, (batch, length, 9), generator=generator)
    char_lengths = torch.randint(3, 10, (batch, length, 1), generator=generator)
    char_ids = torch.where(torch.arange(9) < char_lengths, chars, 0)
    return {
        "word_ids": word_ids,
        "char_ids": char_ids,
        "casing_ids": torch.randint(1, 8, (batch, length), generator=generator),
        "tag_ids": torch.randint(0, 1, (batch, length), generator=generator),
        "lengths": torch.full((batch,), length),
        "index": torch.arange(batch),
        "document": torch.arange(batch),
    }


def best_rate(work, items: int) -> float:
    """Items per second of ``work()``: the best of 3 runs of at least 0.3 s, after one warm-up call."""
    work()
    best = 0.0
    for _ in range(3):
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < 0.3:
            work()
            calls += 1
        best = max(best, calls * items / (time.perf_counter() - start))
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--lengths", type=int, nargs="+", default=[5, 20, 50, 100])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10, 32, 256])
    parser.add_argument("--ckpt", help="a checkpoint for the long-sentence row (default: none, the row is skipped)")
    parser.add_argument("--long-tokens", type=int, default=10_000)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    import bench_speed

    model, dm = bench_speed.build(argparse.Namespace(**vars(args), device="cpu"), [])
    vocab_size, num_chars = len(dm.vocab.words), len(dm.vocab.chars)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    generator = torch.Generator().manual_seed(0)
    from seqtag.network import length_mask

    print(f"{Path(args.config).stem}, {args.threads} thread(s); tokens/s (sentences/s)\n")
    header = "| L \\ B | " + " | ".join(f"decode B={b}" for b in args.batches)
    header += " | " + " | ".join(f"train B={b}" for b in args.batches) + " |"
    print(header)
    print("|---" * (1 + 2 * len(args.batches)) + "|")
    for length in args.lengths:
        cells = []
        for size in args.batches:
            batch = batch_of(vocab_size, num_chars, size, length, generator)
            model.eval()

            def decode(batch: dict = batch, length: int = length) -> None:
                with torch.inference_mode():
                    emissions = model(batch)
                    model.decode(emissions, length_mask(batch["lengths"], length))

            rate = best_rate(decode, size * length)
            cells.append(f"{rate:,.0f} ({rate / length:,.0f})")
        for size in args.batches:
            batch = batch_of(vocab_size, num_chars, size, length, generator)
            model.train()

            def step(batch: dict = batch, length: int = length) -> None:
                emissions = model(batch)
                model.loss(emissions, batch["tag_ids"], length_mask(batch["lengths"], length)).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)

            rate = best_rate(step, size * length)
            cells.append(f"{rate:,.0f} ({rate / length:,.0f})")
        print(f"| {length} | " + " | ".join(cells) + " |")
    if args.ckpt:
        code = LONG_SENTENCE.format(threads=args.threads, ckpt=args.ckpt, tokens=args.long_tokens)
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        tags, mib, seconds = out.stdout.split()[-3:]
        print(
            f"\nOne sentence of {int(tags):,} tokens through Tagger.predict (spans with confidence): peak RSS "
            f"+{float(mib):,.0f} MiB ({float(mib) * 1024 / int(tags):.1f} KiB a token), {float(seconds):.2f} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
