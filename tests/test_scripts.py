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
