"""Speed benchmark of a seqtag config: training and decoding throughput, word-vector loading time, peak memory.

    .venv/bin/python scripts/bench_speed.py --config configs/bench/ncrfpp_size.yaml --threads 2
    .venv/bin/python scripts/bench_speed.py --config configs/bench/flair_size.yaml --threads 2 \
        --append docs/benchmarks.md
    .venv/bin/python scripts/bench_speed.py --config configs/bench/flair_size.yaml --device cuda --precision bf16-mixed
    .venv/bin/python scripts/bench_speed.py --config configs/conll2003.yaml --device cuda --fit

``--fit`` times a real ``seqtag fit`` in this process instead: the median training epoch after the first, data
loading and the Lightning loop included (``--trainer.devices=N --trainer.strategy=ddp`` for DDP). ``--ddp N`` runs
``--fit`` with 1 and with N processes and prints the speed-up. ``--profile N`` prints where the time of N training
steps goes (torch.profiler: host time, kernel launches and host syncs per step, top operators).

The model and data module are built from the config by ``seqtag.cli.cli_main(..., run=False)``; paths in the config
that start with ``data/`` are resolved under ``--data-root``, and any further ``--section.key value`` arguments are
passed on to the CLI (e.g. ``--data.batch_size 10``). What is timed:

* training: ``Tagger.training_step`` + backward + gradient clipping (the config's; 5.0 by default) + optimizer step over
  ``--epochs`` full epochs of ``data.train`` after ``--warmup`` batches; batches are collated beforehand, so
  data loading is excluded.
* decoding: emissions + Viterbi under ``torch.inference_mode`` over ``data.test`` (eng.testb) in length-sorted
  batches of ``--eval-batch-size`` sentences, with ``--decode-threads`` threads and ``--decode-precision``
  (``bf16-true`` runs the model in bfloat16, as ``seqtag predict --trainer.precision=bf16-true``; the CRF still
  computes in float32).
* word vectors: ``load_vectors_cached`` of ``data.word_vectors`` for the data's words, cold (fresh cache folder)
  and warm (cached).
* peak RSS of the process (``resource.getrusage``).

Throughput is sentences (and tokens) per second of timed work. A markdown table row is printed; ``--append`` adds
it to a file with the command, machine and date.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before torch loads OpenMP: idle OpenMP threads sleep instead of spinning (matters when cores are shared).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shlex  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

HEADER = (
    "| config | device | precision | threads | batch | bucketing | train sent/s | train tok/s | decode threads "
    "| decode batch | decode sent/s | GloVe cold s | GloVe warm s | peak RSS MiB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)
DATA_KEYS = ("train", "validation", "test", "word_vectors")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine(args: argparse.Namespace) -> str:
    text = (
        f"{cpu_model()}, {os.cpu_count()} cores, torch {torch.__version__}, {args.threads} threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
    )
    if args.device == "cuda":
        text += f", {torch.cuda.get_device_name()}"
    return text


def data_overrides(args: argparse.Namespace) -> list[str]:
    """``--data.KEY PATH`` options that put the config's ``data/...`` paths under ``--data-root``."""
    config = yaml.safe_load(Path(args.config).read_text()) or {}
    overrides = []
    for key in DATA_KEYS:
        value = (config.get("data") or {}).get(key)
        if isinstance(value, str) and value.startswith("data/"):
            overrides += [f"--data.{key}", str(Path(args.data_root) / value[len("data/") :])]
    return overrides


def build(args: argparse.Namespace, extra: list[str]):
    """The CLI's model and data module for the config, data paths resolved under --data-root."""
    from seqtag.cli import cli_main

    cli_args = ["--config", args.config, *data_overrides(args), "--trainer.logger=false", "--trainer.accelerator=cpu"]
    cli_args += extra
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = cli_main(cli_args, run=False)
    args.clip = cli.trainer.gradient_clip_val  # the config's (seqtag's default 5.0; null: none, as NCRF++)
    if cli.model.reads_documents and cli.datamodule.hparams.batch_by_document is None:
        cli.datamodule.hparams.batch_by_document = True  # what a Trainer would pick for this model
    return cli.model, cli.datamodule


def to_device(batch: dict[str, torch.Tensor], device: torch.device, model) -> dict[str, torch.Tensor]:
    """``batch`` on ``device``, with the document layout the data module adds for a ``document_context`` model."""
    if getattr(model, "joins_documents", False):
        from seqtag.modules.encoder import with_document_layout

        batch = with_document_layout(batch)
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def training_step(model, args, device: torch.device):
    """A function ``step(batch, i)``: forward, backward, gradient clipping (the config's ``trainer.gradient_clip_val``)
    and optimizer step, as in a fit."""
    model.train()
    optimizer = model.configure_optimizers()
    if isinstance(optimizer, dict):
        optimizer = optimizer["optimizer"]
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16-mixed")

    def step(batch, i):
        with autocast:
            loss = model.training_step(batch, i)
        loss.backward()
        if getattr(args, "clip", 5.0):
            torch.nn.utils.clip_grad_norm_(params, args.clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def bench_train(model, dm, args, device: torch.device) -> tuple[float, float]:
    """(sentences/s, tokens/s) of training steps over args.epochs epochs after args.warmup batches."""
    step = training_step(model, args, device)
    loader = dm.train_dataloader()
    sentences = tokens = 0
    elapsed = 0.0
    for epoch in range(args.epochs + 1):  # epoch 0 only warms up
        loader.batch_sampler.set_epoch(epoch)
        batches = [to_device(b, device, model) for b in loader]
        if epoch == 0:
            for i, batch in enumerate(batches[: args.warmup]):
                step(batch, i)
            continue
        if args.max_batches:
            batches = batches[: args.max_batches]
        sync(device)
        start = time.perf_counter()
        for i, batch in enumerate(batches):
            step(batch, i)
        sync(device)
        elapsed += time.perf_counter() - start
        sentences += sum(len(b["lengths"]) for b in batches)
        tokens += sum(int(b["lengths"].sum()) for b in batches)
    return sentences / elapsed, tokens / elapsed


def profile_train(model, dm, args, device: torch.device) -> None:
    """Prints a torch.profiler view of ``args.profile`` training steps after ``args.warmup``: host milliseconds,
    kernel launches, host syncs and device-busy milliseconds per step, and the operators that take most host time."""
    from torch.profiler import ProfilerActivity, profile

    step = training_step(model, args, device)
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(0)
    batches = [to_device(b, device, model) for b in loader][: args.warmup + args.profile]
    for i, batch in enumerate(batches[: args.warmup]):
        step(batch, i)
    timed = batches[args.warmup :]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    start = time.perf_counter()
    for i, batch in enumerate(timed):
        step(batch, i)
    sync(device)
    print(f"{len(timed)} steps, not profiled: {1000 * (time.perf_counter() - start) / len(timed):.2f} ms/step")
    with profile(activities=activities) as prof:
        for i, batch in enumerate(timed):
            step(batch, i)
        sync(device)
    events = prof.key_averages()
    if device.type == "cuda":  # on CPU there are no kernel launches or device syncs to count
        per_step = {e.key: e.count / len(timed) for e in events}
        launches = sum(n for key, n in per_step.items() if key in ("cudaLaunchKernel", "cudaLaunchKernelExC"))
        syncs = sum(n for key, n in per_step.items() if key in ("cudaStreamSynchronize", "cudaDeviceSynchronize"))
        busy = sum(e.self_device_time_total for e in events if e.device_type.name == "CPU") / len(timed) / 1000
        print(f"per step: {launches:.0f} kernel launches, {syncs:.1f} host syncs, device busy {busy:.2f} ms")
    print(events.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=50))


def bench_decode(model, dm, args, device: torch.device) -> float:
    """Sentences/s of emissions + Viterbi over the test split in sorted batches."""
    from seqtag.tagger import length_mask

    model.eval()
    dm.hparams.eval_batch_size = args.eval_batch_size
    dm.hparams.eval_bucketing = dm.eval_bucketing(device.type)  # as under a Trainer on this device
    batches = [to_device(b, device, model) for b in dm.test_dataloader()]
    precision = args.decode_precision or args.precision
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed")
    if precision == "bf16-true":  # as `--trainer.precision=bf16-true`: weights and activations in bfloat16
        model.to(torch.bfloat16)
    best = 0.0
    with torch.inference_mode(), autocast:
        for _ in range(args.decode_repeats + 1):  # the first pass warms up
            sync(device)
            start = time.perf_counter()
            for batch in batches:
                emissions = model(batch)
                model.decode(emissions, length_mask(batch["lengths"], emissions.shape[1]))
            sync(device)
            best = max(best, sum(len(b["lengths"]) for b in batches) / (time.perf_counter() - start))
    return best


def bench_ddp(args, extra: list[str], processes: int) -> float:
    """Seconds per training epoch of a real ``seqtag fit`` on ``--device`` with ``processes`` processes (DDP when > 1).

    Runs this script with ``--fit`` in a new process, which times the epochs inside the fit (rank 0 when DDP), so
    start-up and process spawning are left out.
    """
    command = [sys.executable, str(Path(__file__).resolve()), "--fit", "--config", args.config]
    command += ["--data-root", args.data_root, "--threads", str(args.threads), "--device", args.device]
    command += ["--precision", args.precision, "--ddp-epochs", str(args.ddp_epochs), *extra]
    command += [f"--trainer.devices={processes}"] + (["--trainer.strategy=ddp"] if processes > 1 else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    line = next((x for x in done.stdout.splitlines() if x.startswith("epoch seconds:")), None)
    if done.returncode or line is None:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"seqtag fit failed with exit code {done.returncode}: {shlex.join(command)}")
    epochs = [float(x) for x in line.split(":", 1)[1].split(",")]
    return median_after_first(epochs)


def median_after_first(epochs: list[float]) -> float:
    """Median epoch time, leaving out the first epoch, which warms up (the only one if there is one)."""
    timed = sorted(epochs[1:] or epochs)
    return timed[len(timed) // 2]


def bench_vectors(dm) -> tuple[float, float]:
    """Seconds to load the data's word vectors with a fresh cache folder, then with the cache filled."""
    from seqtag.data import vectors as vectors_module
    from seqtag.data.vocab import Vocab

    hp = dm.hparams
    probe = Vocab([], [], [], lowercase=hp.lowercase, zero_digits=hp.zero_digits)
    wanted = set()
    for split in ("train", "validation", "test"):
        if getattr(hp, split) is not None:
            wanted |= {probe.normalize(t) for tokens in dm.sentences(split)["tokens"] for t in tokens}
    saved = os.environ.get("SEQTAG_CACHE")
    times = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["SEQTAG_CACHE"] = cache
        try:
            for _ in range(2):
                start = time.perf_counter()
                vectors_module.load_vectors_cached(hp.word_vectors, wanted)
                times.append(time.perf_counter() - start)
        finally:
            if saved is None:
                os.environ.pop("SEQTAG_CACHE", None)
            else:
                os.environ["SEQTAG_CACHE"] = saved
    return times[0], times[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a seqtag YAML config")
    parser.add_argument("--data-root", default="data", help="folder that replaces 'data/' in config paths")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--decode-threads", type=int, help="torch threads for decoding (default: --threads)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    parser.add_argument(
        "--decode-precision", choices=["32", "bf16-mixed", "bf16-true"], help="for decoding (default: --precision)"
    )
    parser.add_argument("--epochs", type=int, default=1, help="timed training epochs")
    parser.add_argument("--warmup", type=int, default=20, help="untimed training batches first")
    parser.add_argument("--max-batches", type=int, default=0, help="time only this many batches per epoch (0 = all)")
    parser.add_argument("--eval-batch-size", type=int, default=512, help="sentences per decoding batch")
    parser.add_argument("--decode-repeats", type=int, default=2, help="timed decoding passes (the best counts)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["train", "decode", "vectors"], help="parts to skip")
    parser.add_argument("--append", help="markdown file to append the result to")
    parser.add_argument(
        "--ddp",
        type=int,
        default=0,
        help="instead: epoch time of a real `seqtag fit` with 1 and with this many CPU processes (DDP)",
    )
    parser.add_argument(
        "--ddp-epochs", type=int, default=2, help="timed epochs, after a first untimed one, of each --fit or --ddp run"
    )
    parser.add_argument(
        "--fit", action="store_true", help="instead: epoch time of a real `seqtag fit` in one process on --device"
    )
    parser.add_argument(
        "--profile", type=int, default=0, help="instead: profile this many training steps (after --warmup)"
    )
    args, extra = parser.parse_known_args(argv)
    if args.ddp:
        return main_ddp(args, extra)
    if args.fit:
        return main_fit(args, extra)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, dm = build(args, extra)
    dm.setup("fit")
    dm.setup("test")
    matrix = dm.pretrained_embeddings()
    if matrix is not None:
        model.embedder.load_pretrained(matrix)
    table = dm.pretrained_table()  # test words outside the training vocabulary have ids in this fixed table
    if table is not None:
        model.embedder.set_pretrained_table(table[1])
    model.vocab = dm.vocab
    model.to(device)
    torch.manual_seed(0)
    if args.profile:
        profile_train(model, dm, args, device)
        return 0

    nan = float("nan")
    train_sps = train_tps = decode_sps = cold = warm = nan
    if "train" not in args.skip:
        train_sps, train_tps = bench_train(model, dm, args, device)
    if "decode" not in args.skip:
        torch.set_num_threads(args.decode_threads or args.threads)
        decode_sps = bench_decode(model, dm, args, device)
        torch.set_num_threads(args.threads)
    if "vectors" not in args.skip and dm.hparams.word_vectors:
        cold, warm = bench_vectors(dm)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux

    bucketing = dm.hparams.bucketing
    if dm.eval_bucketing(args.device) != bucketing:
        bucketing += f" / {dm.eval_bucketing(args.device)}"  # training / decoding
    precision = args.precision
    if args.decode_precision and args.decode_precision != args.precision:
        precision = f"{args.precision} / {args.decode_precision}"  # training / decoding
    row = (
        f"| {Path(args.config).stem} | {args.device} | {precision} | {args.threads} | {dm.hparams.batch_size} "
        f"| {bucketing} | {train_sps:,.0f} | {train_tps:,.0f} | {args.decode_threads or args.threads} "
        f"| {args.eval_batch_size} | {decode_sps:,.0f} | {cold:.2f} | {warm:.2f} "
        f"| {peak:,.0f} |"
    )
    report(args, HEADER, row)
    return 0


def report(args: argparse.Namespace, header: str, row: str) -> None:
    """Prints the table; with ``--append``, adds it to that file with the command, machine and date."""
    print(header)
    print(row)
    if args.append:
        path = Path(args.append)
        command = shlex.join([f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}", sys.executable, *sys.argv])
        date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        text = "" if path.exists() else "# seqtag speed benchmarks\n\nRows written by `scripts/bench_speed.py`.\n"
        text += f"\n`{command}`  \n{machine(args)}; {date}\n\n{header}\n{row}\n"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(text)


def main_ddp(args: argparse.Namespace, extra: list[str]) -> int:
    one = bench_ddp(args, extra, 1)
    many = bench_ddp(args, extra, args.ddp)
    header = (
        "| config | threads/process | processes | s/epoch (1 process) | s/epoch (DDP) | speed-up |\n" + "|---" * 6 + "|"
    )
    row = f"| {Path(args.config).stem} | {args.threads} | {args.ddp} | {one:.1f} | {many:.1f} | {one / many:.2f}x |"
    report(args, header, row)
    return 0


def bench_fit(args: argparse.Namespace, extra: list[str]) -> list[float]:
    """Seconds of each training epoch of a real ``seqtag fit`` in this process (the Trainer's loop, data loading
    and callbacks included), over ``1 + args.ddp_epochs`` epochs; validation and the learning-rate schedule off."""
    import lightning as L

    from seqtag.cli import cli_main

    class EpochTimes(L.Callback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            sync(pl_module.device)
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            sync(pl_module.device)
            self.seconds.append(time.perf_counter() - self.start)

    accelerator = "gpu" if args.device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as root:
        cli_args = ["--config", args.config, *data_overrides(args), "--trainer.logger=false"]
        cli_args += [
            "--trainer.enable_progress_bar=false",
            f"--trainer.accelerator={accelerator}",
            "--trainer.devices=1",
        ]
        cli_args += [f"--trainer.precision={args.precision}", f"--trainer.max_epochs={1 + args.ddp_epochs}"]
        cli_args += ["--trainer.limit_val_batches=0", f"--trainer.default_root_dir={root}", "--model.lr_scheduler=null"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cli = cli_main([*cli_args, *extra], run=False)
            timer = EpochTimes()
            cli.trainer.callbacks.append(timer)
            cli.trainer.fit(cli.model, cli.datamodule)
    return timer.seconds


def main_fit(args: argparse.Namespace, extra: list[str]) -> int:
    torch.set_num_threads(args.threads)
    epochs = bench_fit(args, extra)
    if int(os.environ.get("LOCAL_RANK", 0)) or int(os.environ.get("NODE_RANK", 0)):
        return 0  # a DDP rank that Lightning started: rank 0 reports
    seconds = median_after_first(epochs)
    print("epoch seconds:", ", ".join(f"{s:.2f}" for s in epochs))
    header = "| config | device | precision | batch | s/epoch (seqtag fit, no validation) |\n" + "|---" * 5 + "|"
    batch = next((extra[i + 1] for i, a in enumerate(extra[:-1]) if a == "--data.batch_size"), None)
    batch = batch or (yaml.safe_load(Path(args.config).read_text()) or {}).get("data", {}).get("batch_size", "-")
    row = f"| {Path(args.config).stem} | {args.device} | {args.precision} | {batch} | {seconds:.2f} |"
    report(args, header, row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
