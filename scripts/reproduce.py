"""Trains and tests a benchmark config over several seeds and records mean ± std in docs/benchmarks.md.

    python scripts/reproduce.py conll2003 --seeds 3 --data-root data
    python scripts/reproduce.py ud_ewt_upos conll2000_chunk --seeds 3 --data-root data -- --trainer.accelerator=gpu
    python scripts/reproduce.py conll2003 conll2000_chunk --config configs/ner.yaml --data-root data -- \
        --model.word_dim=50

Each benchmark is ``configs/<name>.yaml`` (``conll2000_pos``, CoNLL-2000's part-of-speech column, is
``configs/pos.yaml``); ``--data-root`` holds ``conll2003/``, ``ud_english_ewt/``, ``conll2000/``
and ``embeddings/`` laid out as in the configs. Each seed is a W&B run named ``<bench>-seed<k>`` in the group
``<bench>`` (offline without a login). Arguments after ``--`` go to every ``seqtag fit``. ``--config`` runs one
other config on every benchmark given (such as ``configs/ner.yaml``, written for new data, on the benchmarks'
files): runs are then named ``<bench>-<config>-seed<k>`` in the group ``<bench>-<config>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent

# The data files of each benchmark, relative to --data-root.
BENCHMARKS = {
    "conll2003": {
        "train": "conll2003/eng.train",
        "validation": "conll2003/eng.testa",
        "test": "conll2003/eng.testb",
        "metric": "f1",
    },
    "ud_ewt_upos": {
        "train": "ud_english_ewt/en_ewt-ud-train.conllu",
        "validation": "ud_english_ewt/en_ewt-ud-dev.conllu",
        "test": "ud_english_ewt/en_ewt-ud-test.conllu",
        "metric": "accuracy",
    },
    "conll2000_chunk": {
        "train": "conll2000/train.txt",
        "test": "conll2000/test.txt",
        "metric": "f1",
        # No dev set: the last 10% of train, whatever validation file another config names.
        "options": ["--data.validation=null", "--data.validation_from_train=0.1"],
    },
    # The same files' part-of-speech column (Penn Treebank tags, 44 in train; assigned by the Brill tagger in this
    # release, not by hand): a second POS benchmark beside UD EWT's UPOS, read with configs/pos.yaml.
    "conll2000_pos": {
        "train": "conll2000/train.txt",
        "test": "conll2000/test.txt",
        "metric": "accuracy",
        "config": "pos.yaml",
        "options": [
            "--data.validation=null",
            "--data.validation_from_train=0.1",
            "--data.tag_column=1",
            "--data.tag_scheme=none",
            "--model.word_dim=50",
        ],
    },
}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}, {platform.python_version()}"


def run(args: list[str], log: Path) -> str:
    command = [sys.executable, "-m", "seqtag.cli", *args]
    with log.open("w") as f:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=f, text=True)
    f_out = result.stdout
    log.with_suffix(".out").write_text(f_out)
    if result.returncode != 0:
        raise SystemExit(f"failed ({result.returncode}): {' '.join(command)}\nsee {log}")
    return f_out


def run_seed(
    bench: str,
    seed: int,
    data_root: Path,
    out: Path,
    extra: list[str],
    name: str | None = None,
    group: str | None = None,
    config: Path | None = None,
) -> dict:
    """Trains, then tests the best checkpoint; ``name`` (the run folder and W&B run) defaults to ``<bench>-seed<k>``
    (``<bench>-<config>-seed<k>`` with a ``config`` other than the benchmark's own)."""
    spec = BENCHMARKS[bench]
    tag = f"{bench}-{config.stem}" if config is not None else bench
    name = name or f"{tag}-seed{seed}"
    data = [f"--data.{split}={data_root / spec[split]}" for split in ("train", "validation", "test") if split in spec]
    data.append(f"--data.word_vectors={data_root / 'embeddings' / 'glove.6B.50d.txt.gz'}")
    data += spec.get("options", [])
    root = out / name
    config = config or ROOT / "configs" / spec.get("config", f"{bench}.yaml")
    common = [f"--config={config}", *data, "--trainer.enable_progress_bar=false"]
    logger = [
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.logger.init_args.name={name}",
        f"--trainer.logger.init_args.group={group or tag}",
    ]
    timing = root.with_suffix(".fit.json")
    if timing.exists():  # trained by an earlier call that stopped later: reuse the fit, only test again
        stdout, fit_seconds = root.with_suffix(".fit.out").read_text(), json.loads(timing.read_text())["seconds"]
    else:
        start = time.perf_counter()
        stdout = run(
            ["fit", *common, f"--seed_everything={seed}", f"--trainer.default_root_dir={root}", *logger, *extra],
            root.with_suffix(".fit.log"),
        )
        fit_seconds = time.perf_counter() - start
        timing.write_text(json.dumps({"seconds": fit_seconds}))
    best = Path(stdout.split("Best checkpoint: ")[-1].split()[0])
    last = torch.load(best.parent / "last.ckpt", map_location="cpu", weights_only=True)
    epochs = last["epoch"] + 1
    # The best validation score, which selected the checkpoint (what choices between configs are made on).
    scores = [state["best_model_score"] for state in last.get("callbacks", {}).values() if "best_model_score" in state]
    dev = 100 * float(scores[0]) if scores and scores[0] is not None else None
    # The test run gets the same options as the fit (extra included), so it builds the same model and vocabulary.
    test = ["test", *common, f"--ckpt_path={best}", f"--trainer.default_root_dir={root}", *extra]
    run(test, root.with_suffix(".test.log"))
    report = json.loads((best.parent / "test_report.json").read_text())
    return {
        "seed": seed,
        "score": 100 * report[spec["metric"]],
        "dev": dev,
        "epochs": epochs,
        "minutes": fit_seconds / 60,
        "ckpt": str(best),
    }


MARKER = "<!-- new seed results go above this line -->"


def record(path: Path, text: str) -> None:
    """Inserts ``text`` above the marker line of the benchmarks page, or appends it when there is none."""
    page = path.read_text() if path.exists() else ""
    page = page.replace(MARKER, text + "\n" + MARKER, 1) if MARKER in page else page + text
    path.write_text(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmarks", nargs="+", choices=sorted(BENCHMARKS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--data-root", type=Path, default=Path("data"))
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce"))
    parser.add_argument("--record", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--config", type=Path, default=None, help="one config for every benchmark")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    args.out.mkdir(parents=True, exist_ok=True)
    config = args.config.resolve() if args.config is not None else None
    for bench in args.benchmarks:
        results = [
            run_seed(bench, seed, args.data_root.resolve(), args.out.resolve(), extra, config=config)
            for seed in range(args.first_seed, args.first_seed + args.seeds)
        ]
        scores = [r["score"] for r in results]
        mean = statistics.mean(scores)
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        metric = "F1" if BENCHMARKS[bench]["metric"] == "f1" else "accuracy"
        per_seed = ", ".join(
            f"seed {r['seed']}: {r['score']:.2f} ({r['epochs']} ep, {r['minutes']:.1f} min"
            + (f", best dev {r['dev']:.2f})" if r["dev"] is not None else ")")
            for r in results
        )
        command = "python scripts/reproduce.py " + " ".join(sys.argv[1:])
        title = f"{bench} with {args.config}" if args.config is not None else bench
        lines = [
            f"\n### {title}: test {metric} {mean:.2f} ± {std:.2f} (mean ± std of {len(scores)} seeds)\n",
            f"- per seed: {per_seed}",
            f"- command: `{command}`",
            f"- machine: {machine()}; date: {date.today().isoformat()}\n",
        ]
        print("\n".join(lines))
        record(args.record, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
