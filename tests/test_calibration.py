"""Temperature scaling of confidences: the scaled CRF keeps its best paths, and the fitted temperature makes an
over-confident model's confidences match how often it is right."""

import torch

from seqtag.calibration import expected_calibration_error, fit_temperature, log_loss
from seqtag.data import schemes
from seqtag.modules.crf import ConditionalRandomField


class OverConfident:
    """A plain-class tagger stub whose emissions are 4x too sharp: the right tag has probability p on each token,
    and the emissions are 4 * log of those probabilities."""

    labels = ["A", "B", "C"]
    scheme = None
    crf = None
    training = False
    device = torch.device("cpu")

    def __init__(self, batches):
        self.emissions = {}
        generator = torch.Generator().manual_seed(0)
        for i, batch in enumerate(batches):
            gold = batch["tag_ids"]
            # Calibrated probabilities: the gold tag gets 0.7, the others 0.15; the argmax is right 70% of the time
            # because a third of the tokens have their 0.7 on a wrong tag.
            wrong = torch.rand(gold.shape, generator=generator) < 0.3
            top = torch.where(wrong, (gold + 1) % 3, gold)
            probs = torch.full((*gold.shape, 3), 0.15).scatter(-1, top[..., None], 0.7)
            self.emissions[i] = 4 * probs.log()
            batch["index"] = torch.tensor([i])

    def __call__(self, batch):
        return self.emissions[int(batch["index"][0])]

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def decode(self, emissions, mask):
        return emissions.argmax(-1)


def test_fitted_temperature_undoes_over_confidence():
    batches = [
        {"tag_ids": torch.randint(0, 3, (16, 20), generator=torch.Generator().manual_seed(i)),
         "lengths": torch.full((16,), 20)}
        for i in range(8)
    ]  # fmt: skip
    model = OverConfident(batches)
    result = fit_temperature(model, batches)
    assert abs(result.temperature - 4.0) < 0.3  # the sharpening it has to undo
    assert result.ece_before > 0.2 and result.ece_after < 0.03


def test_scaled_crf_keeps_the_best_paths_and_constraints():
    labels = schemes.labels_for_scheme(["PER", "LOC"], "IOB2")
    crf = ConditionalRandomField(len(labels), schemes.allowed_transitions(labels, "IOB2"))
    torch.nn.init.normal_(crf.transitions)
    emissions = torch.randn(3, 6, len(labels))
    for factor in (0.25, 0.5, 2.0):
        scaled = crf.scaled(factor)
        assert torch.equal(scaled.constraint_mask, crf.constraint_mask)
        assert torch.equal(scaled.decode(emissions * factor), crf.decode(emissions))
        # At factor 1 / T the distribution is p^(1/T), renormalized: the marginals flatten as T grows.
    flat = crf.scaled(0.25).marginals(emissions * 0.25).max(-1).values.mean()
    sharp = crf.marginals(emissions).max(-1).values.mean()
    assert flat < sharp


def test_log_loss_and_calibration_error():
    units = torch.tensor([[0.9, 1.0], [0.9, 1.0], [0.9, 0.0], [0.2, 0.0]], dtype=torch.float64)
    assert abs(expected_calibration_error(units) - (0.75 * abs(2 / 3 - 0.9) + 0.25 * 0.2)) < 1e-9
    assert log_loss(units) > log_loss(torch.tensor([[0.99, 1.0]], dtype=torch.float64))
