"""Test reports: printed, and written next to the checkpoint as JSON and a markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L

from seqtag.data.vocab import atomic_write_text


def markdown_table(results: dict[str, Any]) -> str:
    """Overall and per-type scores as a markdown table (percentages)."""
    if "per_type" not in results:
        return f"| metric | value |\n|---|---|\n| accuracy | {100 * results['accuracy']:.2f} |\n"
    lines = ["| type | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for type_, s in sorted(results["per_type"].items()):
        lines.append(
            f"| {type_} | {100 * s['precision']:.2f} | {100 * s['recall']:.2f} | {100 * s['f1']:.2f} | {s['support']} |"
        )
    support = sum(s["support"] for s in results["per_type"].values())
    lines.append(
        f"| **overall** | {100 * results['precision']:.2f} | {100 * results['recall']:.2f} | "
        f"{100 * results['f1']:.2f} | {support} |"
    )
    return "\n".join(lines) + "\n"


def print_report(results: dict[str, Any]) -> None:
    print(markdown_table(results))


def write_report(trainer: L.Trainer, model: L.LightningModule, results: dict[str, Any], ckpt_path: str | None) -> Path:
    """Writes ``test_report.json`` and ``test_report.md`` beside the checkpoint (or in the run folder)."""
    folder = Path(ckpt_path).parent if ckpt_path and Path(ckpt_path).exists() else Path(trainer.default_root_dir)
    atomic_write_text(folder / "test_report.json", json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(folder / "test_report.md", markdown_table(results))
    print(f"Test report written to {folder / 'test_report.md'}")
    return folder / "test_report.md"
