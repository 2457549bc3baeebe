"""Temperature scaling of a tagger's confidences on validation data (Guo et al. 2017, "On Calibration of Modern
Neural Networks").

A maximum-likelihood tagger is over-confident: on CoNLL-2003 test, spans given 0.995 were right 94.5% of the time.
Dividing every score (emissions and CRF transitions) by one temperature T > 1 softens the probabilities without
changing the best tags. T is the value that minimizes the log loss of the confidences of what the model predicts
on the validation data: for span tasks, each predicted span's confidence against whether it is a gold span; for
plain classes, each token's probability of its predicted tag against whether it is the gold tag. ``seqtag fit``
does this with the best checkpoint when it has validation data, and stores T as ``model.confidence_temperature``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from seqtag.data import schemes

# Search range of the temperature (log-spaced golden-section search): beyond it a model is broken, not miscalibrated.
LOWEST, HIGHEST = 0.25, 8.0


@dataclass
class Calibration:
    """The fitted temperature and the expected calibration error (10 equal-width bins) before and after it."""

    temperature: float
    ece_before: float
    ece_after: float
    units: int  # predicted spans (span tasks) or tokens (plain classes) it was fitted on

    def __str__(self) -> str:
        what = "spans" if self.units else "units"
        return (
            f"temperature {self.temperature:.3f} (expected calibration error on the validation data "
            f"{self.ece_before:.4f} -> {self.ece_after:.4f}, {self.units:,} predicted {what})"
        )


@torch.inference_mode()
def collect(model: Any, batches: Iterable[dict[str, torch.Tensor]]) -> list[tuple[torch.Tensor, ...]]:
    """(emissions, mask, predicted ids, gold ids) of each validation batch, computed once."""
    from seqtag.tagger import length_mask

    was_training = model.training
    model.eval()
    out = []
    for batch in batches:
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        emissions = model(batch).float()
        mask = length_mask(batch["lengths"], emissions.shape[1])
        out.append((emissions, mask, model.decode(emissions, mask), batch["tag_ids"]))
    model.train(was_training)
    return out


def confidences(model: Any, collected: list[tuple[torch.Tensor, ...]], temperature: float) -> torch.Tensor:
    """(N, 2) float64: the confidence of each predicted unit at ``temperature`` and 1.0 where it is right."""
    from seqtag import confidence

    labels, scheme = model.labels, model.scheme
    crf = model.crf.scaled(1.0 / temperature) if model.crf is not None else None
    rows: list[tuple[float, float]] = []
    for emissions, mask, predicted, gold in collected:
        scores = emissions / temperature
        if scheme:
            if crf is not None:
                found = confidence.span_confidences(crf, scores, mask, predicted, labels, scheme)
            else:
                found = confidence.span_confidences_softmax(scores.softmax(-1), predicted, mask, labels, scheme)
            for b, spans in enumerate(found):
                n = int(mask[b].sum())
                truth = set(schemes.get_spans([labels[t] for t in gold[b, :n].tolist()], scheme))
                rows += [(c, float((t, s, e) in truth)) for t, s, e, c in spans]
        else:
            probs = crf.marginals(scores, mask) if crf is not None else scores.softmax(-1)  # (B, T, K)
            chosen = probs.gather(-1, predicted[..., None]).squeeze(-1)  # (B, T)
            rows += list(zip(chosen[mask].tolist(), (predicted == gold)[mask].float().tolist()))
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 2)


def log_loss(units: torch.Tensor) -> float:
    p = units[:, 0].clamp(1e-6, 1 - 1e-6)
    y = units[:, 1]
    return float(-(y * p.log() + (1 - y) * (1 - p).log()).mean())


def expected_calibration_error(units: torch.Tensor, bins: int = 10) -> float:
    """Σ over equal-width confidence bins of (share of units) × |accuracy − mean confidence|."""
    index = (units[:, 0] * bins).long().clamp(max=bins - 1)
    error = 0.0
    for b in range(bins):
        inside = units[index == b]
        if len(inside):
            error += len(inside) / len(units) * abs(float(inside[:, 1].mean() - inside[:, 0].mean()))
    return error


def fit_temperature(model: Any, batches: Iterable[dict[str, torch.Tensor]], steps: int = 24) -> Calibration | None:
    """The temperature minimizing the log loss of the model's confidences on ``batches`` (labelled batches as the
    data module gives them), by golden-section search over log T in [0.25, 8]. None without predicted units."""
    collected = collect(model, batches)
    before = confidences(model, collected, 1.0)
    if len(before) == 0 or before[:, 1].min() == before[:, 1].max() == 1.0 and len(before) < 10:
        return None
    low, high = math.log(LOWEST), math.log(HIGHEST)
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = (log_loss(confidences(model, collected, math.exp(x))) for x in (a, b))
    for _ in range(steps):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = log_loss(confidences(model, collected, math.exp(a)))
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = log_loss(confidences(model, collected, math.exp(b)))
    temperature = math.exp((low + high) / 2)
    after = confidences(model, collected, temperature)
    if log_loss(after) >= log_loss(before):  # never worse than leaving it alone
        temperature, after = 1.0, before
    return Calibration(temperature, expected_calibration_error(before), expected_calibration_error(after), len(after))


def calibrate_checkpoint(path: str | Path, batches: Iterable[dict[str, torch.Tensor]]) -> Calibration | None:
    """Fits the temperature of the tagger in checkpoint ``path`` on ``batches`` and writes it into the checkpoint's
    hyperparameters (atomically), so ``Tagger.load``, ``seqtag test`` and ``seqtag predict`` use it."""
    from seqtag.atomic import atomic_open
    from seqtag.data.vocab import load_checkpoint
    from seqtag.tagger import Tagger

    model = Tagger.load(path)
    model.confidence_temperature = model.hparams.confidence_temperature = 1.0
    if model.transformer is not None:
        model.transformer.use_cache(True)  # within `seqtag fit`: the fit's vectors of the validation sentences
    try:
        result = fit_temperature(model, batches)
    finally:
        if model.transformer is not None:
            model.transformer.use_cache(False)
    if result is None:
        return None
    checkpoint = load_checkpoint(path)
    checkpoint["hyper_parameters"]["confidence_temperature"] = result.temperature
    with atomic_open(path, "wb") as f:
        torch.save(checkpoint, f)
    return result
