"""seqtag's speed as a user meets it, beside the step figures of ``scripts/bench_speed.py``, for one config:

    .venv/bin/python scripts/bench_e2e.py --config configs/bench/ncrfpp_size.yaml --data-root data --threads 1
    .venv/bin/python scripts/bench_e2e.py --config configs/bench/flair_size.yaml --data-root data --append docs/speed.md

Each part runs in a process of its own, one after the other (``OMP_NUM_THREADS`` = ``--threads``):

1. **steps**: ``bench_speed.py`` (training steps and emissions + Viterbi over batches built beforehand, no Lightning).
2. **fit epoch**: ``bench_speed.py --fit``: a real ``seqtag fit`` of ``--fit-epochs`` epochs (validation off, the
   learning-rate schedule off), each timed from its first to its last batch (Lightning's loop, data loading,
   callbacks in); the median of all but the first counts. Its checkpoint is kept for 3 and 4.
3. **test loop**: ``trainer.test`` of that checkpoint on ``data.test`` as ``seqtag test`` builds it (loss, Viterbi,
   span F1 and tag confusion, batch ``data.eval_batch_size``), one untimed warm-up pass, the best of
   ``--repeats`` timed passes; the report written after the loop is not in it.
4. **predict process**: the wall time of ``seqtag predict --ckpt_path best.ckpt --data.predict <test file>
   --predict_output OUT``, from start to exit, and its peak RSS.

A markdown table is printed (``--append`` adds it to a file with the command, machine and date).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT_TEST = """
import json, sys, time, warnings
import torch
sys.path.insert(0, {scripts!r})
import bench_speed
from seqtag.cli import cli_main
torch.set_num_threads({threads})
args = ["--config", {config!r}, *{paths!r}, "--trainer.logger=false", "--trainer.accelerator=cpu",
        "--trainer.devices=1", "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", {root!r}]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    cli = cli_main(args, run=False)
    model, dm, trainer = cli.model, cli.datamodule, cli.trainer
    trainer.test(model, datamodule=dm, ckpt_path={ckpt!r}, verbose=False)
    n, best = len(dm.sentences("test")), 0.0
    for _ in range({repeats}):
        start = time.perf_counter()
        trainer.test(model, datamodule=dm, verbose=False)
        best = max(best, n / (time.perf_counter() - start))
print(json.dumps({{"test_sps": best, "test_f1": float(model.test_results.get("f1", float("nan")))}}))
"""


def run(command: list[str], threads: int) -> tuple[str, float, float]:
    """(stdout, wall seconds, peak RSS MiB of the child) of a command; stops with its output when it fails."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_WAIT_POLICY=os.environ.get("OMP_WAIT_POLICY", "PASSIVE"))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, env=env, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak RSS (Linux: KiB)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read()
        if child.returncode:
            sys.stderr.write(stdout[-2000:] + err.read()[-4000:])
            raise SystemExit(f"failed with exit code {child.returncode}: {shlex.join(command)}")
    return stdout, wall, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--data-root", default="data", help="folder that replaces 'data/' in config paths")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fit-epochs", type=int, default=2, help="fit epochs; the median of all but the first counts")
    parser.add_argument("--repeats", type=int, default=2, help="timed test passes (the best counts)")
    parser.add_argument("--append", help="markdown file to append the table to")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE))
    import bench_speed  # noqa: E402 (the data paths of the config, the machine line)

    paths = bench_speed.data_overrides(argparse.Namespace(config=args.config, data_root=args.data_root))
    common = ["--config", args.config, "--data-root", args.data_root, "--threads", str(args.threads)]
    python = sys.executable
    with tempfile.TemporaryDirectory() as scratch:
        out, _, _ = run([python, str(HERE / "bench_speed.py"), *common, "--skip", "vectors"], args.threads)
        cells = out.strip().splitlines()[-1].strip("|").split("|")
        step_train, step_decode = float(cells[6].replace(",", "")), float(cells[10].replace(",", ""))
        fit = [python, str(HERE / "bench_speed.py"), "--fit", *common, "--ddp-epochs", str(args.fit_epochs - 1)]
        out, _, _ = run([*fit, f"--trainer.default_root_dir={scratch}/fit"], args.threads)
        line = next(x for x in out.splitlines() if x.startswith("epoch seconds:"))
        epochs = [float(x) for x in line.split(":")[1].split(",")]
        epoch_s = bench_speed.median_after_first(epochs)
        checkpoint = next(Path(scratch, "fit").rglob("best.ckpt"))
        code = SCRIPT_TEST.format(
            scripts=str(HERE), threads=args.threads, config=args.config, paths=paths, root=f"{scratch}/test",
            ckpt=str(checkpoint), repeats=args.repeats,
        )  # fmt: skip
        out, _, _ = run([python, "-c", code], args.threads)
        test = json.loads(out.strip().splitlines()[-1])
        test_file = _data_path(args.config, paths, "test")
        seqtag = str(Path(python).with_name("seqtag"))
        output = Path(scratch, "predictions.conll")
        predict = [seqtag, "predict", "--ckpt_path", str(checkpoint), "--data.predict", test_file]
        _, predict_s, predict_mib = run([*predict, "--predict_output", str(output)], args.threads)
    train_sentences = _train_sentences(args.config, paths)
    header = (
        "| config | threads | steps: train sent/s | fit epoch: train sent/s | steps: decode sent/s "
        "| test loop: sent/s (loss, Viterbi, span F1) | `seqtag predict` wall s | predict peak RSS MiB |\n"
        + "|---" * 8
        + "|"
    )
    row = (
        f"| {Path(args.config).stem} | {args.threads} | {step_train:,.0f} | {train_sentences / epoch_s:,.0f} "
        f"| {step_decode:,.0f} | {test['test_sps']:,.0f} | {predict_s:.2f} | {predict_mib:,.0f} |"
    )
    print(header)
    print(row)
    if args.append:
        command = shlex.join([sys.executable, *sys.argv])
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        machine = bench_speed.machine(argparse.Namespace(threads=args.threads, device="cpu"))
        with Path(args.append).open("a") as f:
            f.write(f"\n`{command}`  \n{machine}; {date}\n\n{header}\n{row}\n")
    return 0


def _data_path(config: str, paths: list[str], split: str) -> str:
    """The config's ``data.<split>``, as resolved under ``--data-root`` when it starts with ``data/``."""
    import yaml

    if f"--data.{split}" in paths:
        return paths[paths.index(f"--data.{split}") + 1]
    return str((yaml.safe_load(Path(config).read_text()) or {})["data"][split])


def _train_sentences(config: str, paths: list[str]) -> int:
    """Sentences in one epoch of the config's training data."""
    from seqtag.data.datamodule import TaggingDataModule  # noqa: E402

    train = _data_path(config, paths, "train")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return len(TaggingDataModule(train=train).sentences("train"))


if __name__ == "__main__":
    sys.exit(main())
