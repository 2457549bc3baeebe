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
