"""Peak memory and wall time of ``seqtag predict`` as the input grows: CoNLL-2003 ``eng.testb`` repeated to N
sentences, as raw text (one sentence per line) and as a CoNLL column file, tagged with a trained checkpoint under
``/usr/bin/time -v``, one torch thread. Prints a Markdown table (sentences, format, peak RSS, wall time, output
sentences).

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_predict_memory.py --ckpt <best.ckpt> \
        --data data/conll2003/eng.testb --sizes 10000 100000 1000000

``--pythonpath`` runs another copy of the package (e.g. an older commit unpacked with ``git archive``) to compare.
Inputs are written once into ``--workdir`` and reused.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from itertools import cycle, islice
from pathlib import Path


def read_sentences(path: Path) -> list[list[str]]:
    """The sentences of a CoNLL file as lists of lines (``-DOCSTART-`` lines left out)."""
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            if not line.startswith("-DOCSTART-"):
                current.append(line)
        elif current:
            sentences.append(current)
            current = []
    if current:
        sentences.append(current)
    return sentences


def write_inputs(source: Path, size: int, folder: Path) -> dict[str, Path]:
    """``size`` sentences of ``source`` (repeated as needed) as raw text and as CoNLL; files are reused."""
    paths = {"text": folder / f"input{size}.txt", "conll": folder / f"input{size}.conll"}
    if all(path.exists() for path in paths.values()):
        return paths
    sentences = read_sentences(source)
    with open(paths["text"], "w", encoding="utf-8") as text, open(paths["conll"], "w", encoding="utf-8") as conll:
        for lines in islice(cycle(sentences), size):
            text.write(" ".join(line.split()[0] for line in lines) + "\n")
            conll.write("\n".join(lines) + "\n\n")
    return paths


def parse_time(stderr: str) -> tuple[float, float, float]:
    """(peak RSS in MiB, wall seconds, CPU seconds (user + system)) from the report of ``/usr/bin/time -v``."""
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr).group(1)) / 1024
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", stderr).group(1)
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", stderr).group(1)) for kind in ("User", "System"))
    return rss, seconds, cpu


def count_output(path: Path, fmt: str) -> int:
    """Sentences in a prediction file: lines of JSONL, blank-line-separated blocks of CoNLL."""
    n = 0
    with open(path, encoding="utf-8") as f:
        if fmt == "jsonl":
            return sum(1 for _ in f)
        previous = ""
        for line in f:
            if not line.strip() and previous.strip():
                n += 1
            previous = line
    return n


def run(ckpt: str, path: Path, output: Path, workdir: Path, pythonpath: str | None, extra: list[str]) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", WANDB_MODE="offline")
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    command = [
        "/usr/bin/time", "-v", sys.executable, "-m", "seqtag.cli", "predict", "--ckpt_path", ckpt,
        "--data.predict", str(path), "--predict_output", str(output), "--data.cache_dir", str(workdir / "cache"),
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.accelerator=cpu", *extra,
    ]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=workdir)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    rss, wall, cpu = parse_time(proc.stderr)
    return {"rss": rss, "wall": wall, "cpu": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a trained tagger checkpoint")
    parser.add_argument("--data", required=True, type=Path, help="a CoNLL file to repeat (eng.testb)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--formats", nargs="+", default=["text", "conll"], choices=["text", "conll"])
    parser.add_argument("--workdir", type=Path, default=None, help="inputs, outputs, cache. Default: a temp folder")
    parser.add_argument("--pythonpath", default=None, help="PYTHONPATH of the runs (another copy of seqtag)")
    parser.add_argument("--label", default="", help="a name for this code in the table (e.g. before / after)")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `seqtag predict` options")
    args = parser.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"{args.data}: no such file")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_predict_"))
    workdir.mkdir(parents=True, exist_ok=True)
    # CPU time beside wall time: on a shared machine the wall time also counts the waits for a core.
    print("| code | sentences | input | peak RSS | wall time | CPU time | output sentences |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        inputs = write_inputs(args.data, size, workdir)
        for fmt in args.formats:
            output = workdir / f"out{size}.{fmt}.conll"
            result = run(args.ckpt, inputs[fmt], output, workdir, args.pythonpath, args.extra)
            written = count_output(output, "conll")
            output.unlink()
            print(
                f"| {args.label} | {size:,} | {fmt} | {result['rss']:,.0f} MiB | {result['wall']:,.1f} s "
                f"| {result['cpu']:,.1f} s | {written:,} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
