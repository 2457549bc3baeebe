"""Long-range dependency probe: how far back can the tagger's RNN cells (tanh RNN, GRU, LSTM) carry one symbol?

Task. A sequence has length exactly ``d + 1``:

    position 0       a key symbol ``k0 .. k{K-1}`` (its class c is uniform over K classes)
    positions 1..d-1 filler symbols drawn uniformly from F symbols, independent of the key
    position d       the query symbol ``?``

The query position must be tagged ``C<c>``, every other position ``O``. The label at position d depends on
position 0 only, d steps back. The encoder is bidirectional, but the backward direction cannot help: at position d
it has read the query token alone, so the class can reach position d only through the forward direction, over
exactly d steps. At position 0 the backward direction has read everything, but position 0 is always ``O``, so there
is nothing there to learn from it. Filler is fresh for every sequence and every batch is new (infinite data), so
nothing is memorized: the score measures what the cell learns to carry, not what it overfits.

The model is seqtag's :class:`~seqtag.tagger.Tagger` (word embeddings only, no character encoder, softmax head, no
dropout), trained with Lightning's ``Trainer`` (no logger, no checkpoints) for the same number of steps, batch size,
hidden size and learning rate for every cell and distance. The loss is the Tagger's own mean cross-entropy over all
positions; the d ``O`` positions are easy and Adam's per-parameter scaling keeps the query's share of the gradient
from vanishing with d. Reported: accuracy of the best-scoring key class ``C<c>`` at the query position (``O``
excluded, so the number measures whether the class was carried, not whether the query was spotted) on 1000
held-out sequences; chance = 1/K.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/long_dependency.py           # full
    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE .venv/bin/python scripts/long_dependency.py --quick   # smoke run

Writes ``docs/long_dependency.png`` (accuracy vs distance, one line per cell) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightning as L  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import DataLoader, IterableDataset  # noqa: E402

from seqtag.tagger import Tagger  # noqa: E402

PAD, UNK = 0, 1  # reserved word ids of seqtag's vocabulary; symbols start after them
CELLS = ("rnn", "gru", "lstm", "lstm-fb1")  # lstm-fb1: LSTM whose forget-gate bias starts at 1 instead of ~0
DISTANCES = (5, 10, 20, 50, 100, 200)


def make_batch(
    batch_size: int, distance: int, num_keys: int, num_fillers: int, generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """A batch of the task in the dict :func:`seqtag.data.datamodule.collate` builds.

    Word ids: keys are ``2 .. 2+K-1``, fillers ``2+K .. 2+K+F-1``, the query ``2+K+F``. Tag ids: 0 = ``O``,
    ``1 + c`` = ``C<c>``.

    Shape:
        word_ids, casing_ids, tag_ids: (B, d+1) long;  char_ids: (B, d+1, 1) long;  lengths, index: (B,) long
    """
    b, t = batch_size, distance + 1
    keys = torch.randint(num_keys, (b,), generator=generator)  # (B,)
    word_ids = 2 + num_keys + torch.randint(num_fillers, (b, t), generator=generator)  # (B, T)
    word_ids[:, 0] = 2 + keys
    word_ids[:, -1] = 2 + num_keys + num_fillers  # the query
    tag_ids = torch.zeros(b, t, dtype=torch.long)  # (B, T)
    tag_ids[:, -1] = 1 + keys
    return {
        "word_ids": word_ids,
        "char_ids": torch.ones(b, t, 1, dtype=torch.long),  # unused: the model has no character encoder
        "casing_ids": torch.zeros(b, t, dtype=torch.long),
        "tag_ids": tag_ids,
        "lengths": torch.full((b,), t, dtype=torch.long),
        "index": torch.arange(b),
    }


class TaskStream(IterableDataset):
    """``steps`` fresh batches of the task (one per training step), from a seeded generator."""

    def __init__(self, steps: int, batch_size: int, distance: int, num_keys: int, num_fillers: int, seed: int):
        self.args = (batch_size, distance, num_keys, num_fillers)
        self.steps, self.seed = steps, seed

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            yield make_batch(*self.args, generator)


def set_forget_bias(lstm: torch.nn.LSTM, hidden_size: int, value: float) -> None:
    """Sets b_ih + b_hh of the forget gate (rows H..2H, gate order i, f, g, o) to ``value`` in every layer and
    direction (Gers et al. 2000; Jozefowicz et al. 2015). ``nn.LSTM`` draws it from U(-1/sqrt(H), 1/sqrt(H)), so
    at initialization the cell keeps about half of its memory per step."""
    with torch.no_grad():
        for name, parameter in lstm.named_parameters():
            if name.startswith("bias_ih"):
                parameter[hidden_size : 2 * hidden_size] = value
            elif name.startswith("bias_hh"):
                parameter[hidden_size : 2 * hidden_size] = 0.0


def run_one(cell: str, distance: int, args: argparse.Namespace) -> tuple[float, float]:
    """Trains one (cell, distance) configuration; returns (query accuracy on held-out data, seconds)."""
    L.seed_everything(args.seed, verbose=False)
    labels = ["O"] + [f"C{c}" for c in range(args.keys)]
    model = Tagger(
        labels=labels,
        scheme=None,
        vocab_size=2 + args.keys + args.fillers + 1,
        num_chars=2,
        word_dim=args.embedding,
        char_encoder="none",
        cell=cell.removesuffix("-fb1"),
        hidden_size=args.hidden,
        dropout=0.0,
        head="softmax",
        optimizer=lambda params: torch.optim.Adam(params, lr=args.lr),
    )
    if cell == "lstm-fb1":
        set_forget_bias(model.encoder.rnn, args.hidden, 1.0)
    stream = TaskStream(args.steps, args.batch_size, distance, args.keys, args.fillers, seed=args.seed)
    trainer = L.Trainer(
        max_steps=args.steps,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=5.0,
        accelerator="cpu",
    )
    start = time.perf_counter()
    trainer.fit(model, train_dataloaders=DataLoader(stream, batch_size=None))
    seconds = time.perf_counter() - start

    model.eval()
    generator = torch.Generator().manual_seed(10_000 + args.seed)  # held out: a different stream
    batch = make_batch(args.eval_size, distance, args.keys, args.fillers, generator)
    with torch.no_grad():
        emissions = model(batch)[:, -1, 1:]  # (B, K): the key classes' scores at the query position
    accuracy = float((emissions.argmax(dim=-1) + 1 == batch["tag_ids"][:, -1]).float().mean())
    return accuracy, seconds


def plot(results: dict[str, dict[int, float]], distances: list[int], chance: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for cell, by_distance in results.items():
        ax.plot(
            distances,
            [by_distance[d] for d in distances],
            marker="o",
            label=cell.upper().replace("-FB1", " (forget bias 1)"),
        )
    ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.2f})")
    ax.set_xscale("log")
    ax.minorticks_off()  # only the distances are labelled
    ax.set_xticks(distances, [str(d) for d in distances])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("distance d (steps between key and query)")
    ax.set_ylabel("accuracy at the query position")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run: fewer steps, distances 5/20/50")
    parser.add_argument("--cells", nargs="+", default=list(CELLS), choices=CELLS)
    parser.add_argument("--distances", nargs="+", type=int, default=list(DISTANCES))
    parser.add_argument("--steps", type=int, default=1000, help="training steps per configuration")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=32, help="hidden size per direction")
    parser.add_argument("--embedding", type=int, default=16)
    parser.add_argument("--keys", type=int, default=4, help="K, number of key classes (chance = 1/K)")
    parser.add_argument("--fillers", type=int, default=16, help="F, number of filler symbols")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--eval_size", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=Path("docs/long_dependency.png"))
    parser.add_argument("--fresh", action="store_true", help="retrain every configuration (ignore <output>.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.distances = 60, [5, 20, 50]
        if args.output == Path("docs/long_dependency.png"):
            args.output = Path("/tmp/long_dependency_quick.png")
    if min(args.distances) < 1:
        raise SystemExit(f"--distances should be >= 1, got {args.distances}")

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-run banners
    warnings.filterwarnings("ignore", message=".*(num_workers|does not have many workers|val_dataloader|treespec).*")
    # Results are kept in <output>.json with the settings that made them; a rerun with the same settings only
    # trains the missing (cell, distance) pairs. --fresh retrains everything.
    settings = {k: v for k, v in vars(args).items() if k not in ("quick", "cells", "distances", "output", "fresh")}
    cache_path = args.output.with_suffix(".json")
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() and not args.fresh else {}
    done = cache.get("results", {}) if cache.get("settings") == settings else {}
    results: dict[str, dict[int, float]] = {cell: {} for cell in args.cells}
    total = time.perf_counter()
    for cell in args.cells:
        for distance in args.distances:
            if str(distance) in done.get(cell, {}):
                results[cell][distance] = done[cell][str(distance)]
                print(f"{cell:>8}  d={distance:<4} accuracy {results[cell][distance]:.3f}  (from {cache_path})")
                continue
            accuracy, seconds = run_one(cell, distance, args)
            results[cell][distance] = accuracy
            print(f"{cell:>8}  d={distance:<4} accuracy {accuracy:.3f}  ({seconds:.0f} s)", flush=True)
            for c, by_distance in results.items():
                done.setdefault(c, {}).update({str(d): a for d, a in by_distance.items()})
            cache_path.parent.mkdir(parents=True, exist_ok=True)
            cache_path.write_text(json.dumps({"settings": settings, "results": done}, indent=1) + "\n")

    chance = 1.0 / args.keys
    title = (
        f"K={args.keys} keys, F={args.fillers} fillers; H={args.hidden}, {args.steps} steps x {args.batch_size}, "
        f"Adam lr={args.lr}"
    )
    plot(results, args.distances, chance, args.output, title)
    print(f"\nAccuracy at the query position (chance {chance:.2f}); {title}\n")
    print("| cell | " + " | ".join(f"d={d}" for d in args.distances) + " |")
    print("|---|" + "---|" * len(args.distances))
    for cell in args.cells:
        print(f"| {cell.upper()} | " + " | ".join(f"{results[cell][d]:.3f}" for d in args.distances) + " |")
    print(f"\nPlot: {args.output}; total {time.perf_counter() - total:.0f} s")


if __name__ == "__main__":
    main()
