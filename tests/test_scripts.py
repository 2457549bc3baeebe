"""The benchmark scripts run on the quickstart data (scripts/unknown_words.py is tested with a trained model in
test_cli.py)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_speed_profiles_training_steps():
    result = subprocess.run(
        [sys.executable, ROOT / "scripts" / "bench_speed.py", "--config", ROOT / "configs" / "quickstart.yaml",
         "--threads", "1", "--profile", "3", "--warmup", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    timed = next(line for line in result.stdout.splitlines() if "steps, not profiled" in line)
    assert timed.startswith("3 steps") and float(timed.split(": ")[1].split()[0]) > 0
    # The operator table of the profiled steps.
    assert "Self CPU time total" in result.stdout and "aten::" in result.stdout
    assert "kernel launches" not in result.stdout  # counted on a GPU only


def test_bench_e2e_reports_the_fit_epoch_the_test_loop_and_a_predict_process():
    result = subprocess.run(
        [sys.executable, ROOT / "scripts" / "bench_e2e.py", "--config", ROOT / "configs" / "quickstart.yaml",
         "--threads", "1", "--repeats", "1"],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    row = result.stdout.strip().splitlines()[-1].strip("|").split("|")
    assert row[0].strip() == "quickstart"
    figures = [float(cell.replace(",", "")) for cell in row[2:]]
    assert len(figures) == 6 and all(value > 0 for value in figures)


def test_bench_scale_times_each_length_and_batch():
    result = subprocess.run(
        [sys.executable, ROOT / "scripts" / "bench_scale.py", "--config", ROOT / "configs" / "quickstart.yaml",
         "--threads", "1", "--lengths", "3", "7", "--batches", "1", "4"],
        capture_output=True, text=True, cwd=ROOT, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 3 |") or line.startswith("| 7 |")]
    assert len(rows) == 2 and all(len(row.strip("|").split("|")) == 5 for row in rows)


def test_bench_floor_counts_every_lstm_call_and_reports_the_ceilings():
    import importlib.util

    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    spec = importlib.util.spec_from_file_location("bench_floor", ROOT / "scripts" / "bench_floor.py")
    bench_floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_floor)
    lstm = torch.nn.LSTM(6, 5, num_layers=2, bidirectional=True, batch_first=True)
    weights = sum(p.numel() for name, p in lstm.named_parameters() if name.startswith("weight"))
    inputs = torch.randn(3, 4, 6)
    packed = pack_padded_sequence(inputs, torch.tensor([4, 2, 1]), batch_first=True)
    with bench_floor.LSTMMeter() as meter:
        lstm(inputs)  # 12 positions
        lstm(packed)  # 7 real tokens
    assert meter.flops == 2 * weights * (12 + 7) and meter.seconds > 0
    assert torch._VF.lstm is meter._original  # restored

    result = subprocess.run(
        [sys.executable, ROOT / "scripts" / "bench_floor.py", "--config", ROOT / "configs" / "quickstart.yaml",
         "--repeats", "1", "--target", "100"],
        capture_output=True, text=True, cwd=ROOT, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert float(lines["test loop"].split()[0].replace(",", "")) > 0
    share = int(lines["LSTMs"].split("= ")[1].split("%")[0])
    assert 0 < share < 100
    assert "oneDNN" in lines["float32 matrix products"] and lines["target 100 sentences/s"].startswith("10.000 ms")
