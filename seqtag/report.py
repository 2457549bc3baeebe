"""Test reports: printed, and written next to the checkpoint by ``seqtag test``.

Files (each written atomically, so a reader sees the old file or the new one):

- ``test_report.json``: the results of ``Tagger.on_test_epoch_end`` plus, for plain classes, per-tag scores.
- ``test_report.md``: overall scores and a per-type table with support (spans), or token accuracy and a per-tag
  table (plain classes such as POS tags).
- ``test_f1_per_type.png``: a bar plot of per-type (or per-tag) F1.
- ``test_confusion.png``: token-level gold vs predicted tags, in the data's scheme.

When the trainer logs to Weights & Biases, the per-type scores go there as a ``wandb.Table`` and both plots as
``wandb.Image``s.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import WandbLogger
from matplotlib.figure import Figure

from seqtag.atomic import atomic_open, atomic_write_text
from seqtag.conlleval import precision_recall_f1

REPORT_JSON = "test_report.json"
REPORT_MD = "test_report.md"
F1_PLOT = "test_f1_per_type.png"
CONFUSION_PLOT = "test_confusion.png"


def per_tag_scores(confusion: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Token-level precision, recall, F1 and support (gold tokens) of each tag of a confusion matrix.

    Example:
        >>> per_tag_scores({"labels": ["NOUN", "VERB"], "matrix": [[3, 1], [0, 2]]})["NOUN"]
        {'precision': 1.0, 'recall': 0.75, 'f1': 0.8571428571428571, 'support': 4}
    """
    matrix = confusion["matrix"]
    scores = {}
    for k, label in enumerate(confusion["labels"]):
        gold = sum(matrix[k])
        predicted = sum(row[k] for row in matrix)
        p, r, f = precision_recall_f1(matrix[k][k], predicted, gold)
        scores[label] = {"precision": p, "recall": r, "f1": f, "support": gold}
    return scores


def score_rows(results: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(name, scores)`` per span type, or per tag for plain classes, sorted by name."""
    table = results.get("per_type")
    if table is None:
        table = results.get("per_tag") or (per_tag_scores(results["confusion"]) if "confusion" in results else {})
    return sorted(table.items())


def markdown_table(results: dict[str, Any]) -> str:
    """Overall and per-type scores as markdown tables (percentages)."""
    rows = score_rows(results)
    lines = []
    if "per_type" not in results:
        lines += ["| metric | value |", "|---|---|", f"| token accuracy | {100 * results['accuracy']:.2f} |", ""]
        if not rows:
            return "\n".join(lines)
    name = "type" if "per_type" in results else "tag"
    lines += [f"| {name} | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for tag, s in rows:
        lines.append(
            f"| {tag} | {100 * s['precision']:.2f} | {100 * s['recall']:.2f} | {100 * s['f1']:.2f} | {s['support']} |"
        )
    if "per_type" in results:
        support = sum(s["support"] for _, s in rows)
        lines.append(
            f"| **overall** | {100 * results['precision']:.2f} | {100 * results['recall']:.2f} | "
            f"{100 * results['f1']:.2f} | {support} |"
        )
        lines += ["", f"Token accuracy: {100 * results['accuracy']:.2f}"]
    return "\n".join(lines) + "\n"


def print_report(results: dict[str, Any]) -> None:
    print(markdown_table(results))


def f1_figure(results: dict[str, Any]) -> Figure:
    """Horizontal bars of per-type (or per-tag) F1 in percent, with each type's support in its label."""
    rows = score_rows(results)
    fig = Figure(figsize=(6, 1.2 + 0.3 * max(len(rows), 1)), layout="constrained")
    ax = fig.add_subplot()
    names = [f"{name} ({s['support']})" for name, s in rows]
    values = [100 * s["f1"] for _, s in rows]
    bars = ax.barh(range(len(rows)), values, color="tab:blue")
    ax.bar_label(bars, fmt="%.1f", padding=2, fontsize=8)
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 110)
    ax.set_xlabel("F1 (%)")
    overall = (
        f"overall F1 {100 * results['f1']:.2f}" if "f1" in results else f"accuracy {100 * results['accuracy']:.2f}"
    )
    ax.set_title(f"Test F1 per {'type' if 'per_type' in results else 'tag'} ({overall})")
    return fig


def confusion_figure(confusion: dict[str, Any]) -> Figure:
    """Gold (rows) vs predicted (columns) tags; colour is the share of the gold row, text the count."""
    labels, matrix = confusion["labels"], confusion["matrix"]
    k = len(labels)
    size = min(4 + 0.45 * k, 20)
    fig = Figure(figsize=(size, size * 0.9), layout="constrained")
    ax = fig.add_subplot()
    shares = [[count / max(sum(row), 1) for count in row] for row in matrix]
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of gold tag")
    ax.set_xticks(range(k), labels, rotation=90)
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title("Test tags: gold vs predicted (token counts)")
    if k <= 30:
        for i in range(k):
            for j in range(k):
                if matrix[i][j]:
                    color = "white" if shares[i][j] > 0.5 else "black"
                    ax.text(j, i, str(matrix[i][j]), ha="center", va="center", fontsize=7, color=color)
    return fig


def atomic_save_figure(fig: Figure, path: Path) -> None:
    """Saves a figure as PNG atomically."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def report_folder(trainer: L.Trainer, ckpt_path: str | None) -> Path:
    """The checkpoint's folder, or the trainer's ``default_root_dir`` without a checkpoint."""
    return Path(ckpt_path).parent if ckpt_path and Path(ckpt_path).exists() else Path(trainer.default_root_dir)


def log_to_wandb(logger: WandbLogger, results: dict[str, Any], images: dict[str, Path]) -> None:
    """Per-type scores as a ``wandb.Table`` and the plots as ``wandb.Image``s, under ``test/``."""
    import wandb

    columns = ["type", "precision", "recall", "f1", "support"]
    data = [[name, s["precision"], s["recall"], s["f1"], s["support"]] for name, s in score_rows(results)]
    payload: dict[str, Any] = {"test/per_type": wandb.Table(columns=columns, data=data)}
    for key, path in images.items():
        payload[f"test/{key}"] = wandb.Image(str(path))
    logger.experiment.log(payload)
    summary = {key: results[key] for key in ("precision", "recall", "f1", "accuracy") if key in results}
    logger.experiment.summary.update({f"test/{key}": value for key, value in summary.items()})


def write_report(trainer: L.Trainer, model: L.LightningModule, results: dict[str, Any], ckpt_path: str | None) -> Path:
    """Writes the report files beside the checkpoint (or in ``default_root_dir``) and logs them to W&B.

    Returns:
        The path of ``test_report.md``.
    """
    folder = report_folder(trainer, ckpt_path)
    results = dict(results)
    if "per_type" not in results and "confusion" in results:
        results["per_tag"] = per_tag_scores(results["confusion"])
    atomic_write_text(folder / REPORT_JSON, json.dumps(results, indent=2, default=float) + "\n")
    atomic_write_text(folder / REPORT_MD, markdown_table(results))
    images: dict[str, Path] = {}
    if score_rows(results):
        images["f1_per_type"] = folder / F1_PLOT
        atomic_save_figure(f1_figure(results), images["f1_per_type"])
    if "confusion" in results:
        images["confusion"] = folder / CONFUSION_PLOT
        atomic_save_figure(confusion_figure(results["confusion"]), images["confusion"])
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            log_to_wandb(logger, results, images)
    print(f"Test report written to {folder / REPORT_MD}")
    return folder / REPORT_MD
