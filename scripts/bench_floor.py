"""How close a config's ``seqtag test`` loop is to what the CPU's arithmetic allows.

    .venv/bin/python scripts/bench_floor.py --config configs/bench/flair_size.yaml --data-root data
    .venv/bin/python scripts/bench_floor.py --config configs/bench/ncrfpp_size.yaml --data-root data --target 13000

The model and the test loop are built as ``seqtag test --config X`` builds them (an untrained model: the loop's cost
does not depend on the weights). After an untrained warm-up pass, ``--repeats`` timed passes of ``trainer.test``
run with every LSTM call (``torch.lstm``, the character and word BiLSTMs alike) timed and its floating-point work
counted: for each layer and direction, 2 x (4H x (input + H)) per token, i.e. the input and recurrent products; the
gates' element-wise work is left out, so the count is a lower bound. The CPU's float32 matrix-product rate is
measured on the same threads, through ``torch.mm`` and through oneDNN (square products of 256, 512 and 1024; the
best counts as the peak).

Printed: sentences per second of the whole loop, the LSTMs' share of its time and the rate they reach, the loop's
rate if it did nothing but its LSTM calls (``LSTM-only``), and if those ran at the measured peak (``at peak``).
``--target`` says which of these a sentences-per-second figure needs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

HERE = Path(__file__).resolve().parent


class LSTMMeter:
    """Wraps ``torch.lstm`` (what ``nn.LSTM`` and seqtag's encoders call) to time it and count its products."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.flops = 0
        self.by_size: dict[int, list[float]] = {}  # hidden size -> [seconds, flops]
        self._original = torch._VF.lstm

    def __enter__(self) -> LSTMMeter:
        def timed(*args):
            tokens, params = _tokens_and_params(args)
            start = time.perf_counter()
            out = self._original(*args)
            seconds = time.perf_counter() - start
            # Weight matrices only (biases are 1-d): 2 flops per multiply-add, per token.
            flops = 2 * tokens * sum(p.numel() for p in params if p.dim() == 2)
            self.seconds += seconds
            self.flops += flops
            size = self.by_size.setdefault(params[1].shape[1], [0.0, 0])  # weight_hh_l0: (4H, H)
            size[0] += seconds
            size[1] += flops
            return out

        torch._VF.lstm = timed
        torch.lstm = timed
        return self

    def __exit__(self, *exc) -> None:
        torch._VF.lstm = self._original
        torch.lstm = self._original


def _tokens_and_params(args: tuple) -> tuple[int, list[torch.Tensor]]:
    """Positions an LSTM call computes, and its weights, for both of ``torch.lstm``'s signatures."""
    if isinstance(args[1], torch.Tensor) and args[1].dim() == 1:  # packed: data, batch_sizes, hx, params, ...
        return args[0].shape[0], list(args[3])
    data, params = args[0], list(args[2])  # padded: input, hx, params, ...
    return data.shape[0] * data.shape[1] if data.dim() == 3 else data.shape[0], params


def matmul_peak() -> dict[str, float]:
    """Float32 matrix-product rates in flop/s on the current threads, best of square products of 256 to 1024: through
    ``torch.mm`` (the BLAS torch was built with, MKL in the CPU wheels) and through oneDNN (the library of torch's CPU
    LSTM kernel), which can differ by 2x on one CPU (MKL takes a slower path on AMD processors)."""
    rates = {"torch.mm": 0.0, "oneDNN": 0.0}
    for n in (256, 512, 1024):
        a, b = torch.randn(n, n), torch.randn(n, n)
        calls = {"torch.mm": lambda a=a, b=b: a @ b}
        if torch.backends.mkldnn.is_available():
            a_dnn, b_dnn = a.to_mkldnn(), b.to_mkldnn()
            calls["oneDNN"] = lambda a=a_dnn, b=b_dnn: torch._C._nn.mkldnn_linear(a, b)
        for name, call in calls.items():
            for _ in range(3):
                call()
            repeats = max(3, int(2e9 / (2 * n**3)))
            start = time.perf_counter()
            for _ in range(repeats):
                call()
            rates[name] = max(rates[name], repeats * 2 * n**3 / (time.perf_counter() - start))
    return rates


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a seqtag YAML config")
    parser.add_argument("--data-root", default="data", help="folder that replaces 'data/' in config paths")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed test passes (the fastest counts)")
    parser.add_argument("--target", type=float, help="a sentences-per-second figure to compare with")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    import bench_speed

    from seqtag.cli import cli_main

    cli_args = ["--config", args.config, *bench_speed.data_overrides(args), "--trainer.logger=false"]
    cli_args += ["--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.enable_progress_bar=false"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = cli_main(cli_args, run=False)
        model, dm, trainer = cli.model, cli.datamodule, cli.trainer
        trainer.test(model, datamodule=dm, verbose=False)  # warm-up: encodes and caches the split
        sentences = len(dm.sentences("test"))
        passes = []
        for _ in range(args.repeats):
            with LSTMMeter() as meter:
                start = time.perf_counter()
                trainer.test(model, datamodule=dm, verbose=False)
                passes.append((time.perf_counter() - start, meter.seconds, meter.flops, meter.by_size))
    total, lstm, flops, by_size = min(passes, key=lambda p: p[0])
    rates = matmul_peak()
    peak = max(rates.values())
    loop_sps, lstm_only_sps, at_peak_sps = sentences / total, sentences / lstm, sentences * peak / flops
    print(f"config: {args.config}; threads: {args.threads}; test sentences: {sentences:,}")
    print("float32 matrix products: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in rates.items() if v))
    print(f"LSTM work: {flops / 1e9:.2f} GFLOP per pass ({flops / sentences / 1e6:.2f} MFLOP per sentence)")
    print(f"test loop: {loop_sps:,.0f} sentences/s ({total:.3f} s per pass)")
    print(f"LSTMs: {lstm:.3f} s = {lstm / total:.0%} of the loop, {flops / lstm / 1e9:.1f} GFLOP/s")
    for hidden, (seconds, work) in sorted(by_size.items(), reverse=True):
        rate = work / seconds / 1e9
        print(f"  LSTMs of {hidden} per direction: {seconds:.3f} s, {work / 1e9:.2f} GFLOP, {rate:.1f} GFLOP/s")
    print(f"LSTM-only ceiling: {lstm_only_sps:,.0f} sentences/s; at peak: {at_peak_sps:,.0f} sentences/s")
    if args.target:
        per_sentence = {  # ms
            "target": 1e3 / args.target,
            "lstm": lstm / sentences * 1e3,
            "rest": (total - lstm) / sentences * 1e3,
            "peak": flops / sentences / peak * 1e3,
        }
        print(
            f"target {args.target:,.0f} sentences/s: {per_sentence['target']:.3f} ms per sentence, of which the LSTMs "
            f"take {per_sentence['lstm']:.3f} ms, leaving {per_sentence['target'] - per_sentence['lstm']:.3f} ms "
            f"(now {per_sentence['rest']:.3f} ms) for the rest; the LSTMs at peak alone would need "
            f"{per_sentence['peak']:.3f} ms"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
