"""The Tagger with every encoder cell and head: one training step lowers nothing to NaN, decoding is well formed."""

import contextlib

import pytest
import torch

from seqtag.data import schemes
from seqtag.data.datamodule import collate
from seqtag.errors import SeqtagInputError
from seqtag.tagger import Tagger, length_mask

LABELS = schemes.labels_for_scheme(["LOC", "PER"], "BIOES")


def batch() -> dict[str, torch.Tensor]:
    rows = [
        {
            "word_ids": [2, 3, 4],
            "char_ids": [[2, 3], [4], [5, 6]],
            "casing_ids": [3, 3, 5],
            "tag_ids": [0, 1, 3],
            "index": 0,
        },
        {"word_ids": [5], "char_ids": [[2]], "casing_ids": [4], "tag_ids": [4], "index": 1},
    ]
    return collate(rows)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("head", ["crf", "softmax"])
def test_every_cell_and_head_trains_and_decodes(cell, head):
    torch.manual_seed(0)
    model = Tagger(LABELS, "BIOES", vocab_size=8, num_chars=8, word_dim=8, char_dim=4, char_hidden=4,
                   hidden_size=6, cell=cell, head=head, dropout=0.0)  # fmt: skip
    b = batch()
    emissions = model(b)
    mask = length_mask(b["lengths"], emissions.shape[1])
    assert emissions.shape == (2, 3, len(LABELS))
    loss = model.loss(emissions, b["tag_ids"], mask)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert torch.isfinite(loss) and grads and all(torch.isfinite(g).all() for g in grads)
    tags = model.decode(emissions.detach(), mask)
    assert tags.shape == (2, 3) and int(tags[1, 1:].abs().sum()) == 0
    if head == "crf":  # constrained decoding always yields valid BIOES
        for row, n in zip(tags.tolist(), b["lengths"].tolist()):
            assert schemes.validate_tags([LABELS[t] for t in row[:n]], "BIOES") is None


@pytest.mark.parametrize("char_encoder", ["cnn", "lstm"])
def test_unpadded_batch_equals_the_same_sentences_in_a_padded_batch(char_encoder):
    """A batch of one length skips every masking step; its emissions equal those computed with padding."""
    torch.manual_seed(0)
    model = Tagger(LABELS, "BIOES", vocab_size=8, num_chars=8, word_dim=8, char_dim=4, char_hidden=4,
                   hidden_size=6, char_encoder=char_encoder, dropout=0.0).eval()  # fmt: skip
    rows = [
        {"word_ids": [2, 3, 4], "char_ids": [[2, 3], [4], [5, 6, 7]], "casing_ids": [3, 3, 5], "tag_ids": [0, 1, 3]},
        {"word_ids": [5, 6, 2], "char_ids": [[2], [3, 3], [6]], "casing_ids": [4, 3, 3], "tag_ids": [4, 0, 0]},
    ]
    longer = {"word_ids": [5] * 5, "char_ids": [[2]] * 5, "casing_ids": [4] * 5, "tag_ids": [0] * 5}
    rows = [dict(row, index=i) for i, row in enumerate([*rows, longer])]
    unpadded, padded = collate(rows[:2]), collate(rows)
    with torch.no_grad():
        alone = model(unpadded)  # (2, 3, K)
        among = model(padded)[:2, :3]
    assert alone.shape == (2, 3, len(LABELS))
    torch.testing.assert_close(alone, among, atol=1e-6, rtol=0)


def test_reference_lstm_implementation_equals_torch():
    torch.manual_seed(0)
    kwargs = dict(vocab_size=8, num_chars=8, word_dim=8, char_dim=4, char_hidden=4, hidden_size=6, dropout=0.0)
    fast = Tagger(LABELS, "BIOES", **kwargs)
    reference = Tagger(LABELS, "BIOES", implementation="reference", **kwargs)
    reference.load_state_dict(fast.state_dict())
    b = batch()
    assert torch.allclose(fast(b), reference(b), atol=1e-5)


def test_label_smoothing_mixes_the_uniform_target_into_the_softmax_loss():
    torch.manual_seed(0)
    sizes = dict(vocab_size=8, num_chars=8, word_dim=8, char_dim=4, char_hidden=4, hidden_size=6, dropout=0.0)
    smoothed = Tagger(LABELS, "BIOES", head="softmax", label_smoothing=0.1, **sizes)
    b = batch()
    emissions = smoothed(b)
    mask = length_mask(b["lengths"], emissions.shape[1])
    log_probs = emissions[mask].log_softmax(-1)  # (N, K)
    nll = -log_probs.gather(1, b["tag_ids"][mask][:, None]).mean()
    uniform = -log_probs.mean()
    loss = smoothed.loss(emissions, b["tag_ids"], mask)
    assert loss.item() == pytest.approx((0.9 * nll + 0.1 * uniform).item(), rel=1e-5)
    with pytest.raises(SeqtagInputError, match="softmax head"):
        Tagger(LABELS, "BIOES", head="crf", label_smoothing=0.1, **sizes)


SIZES = dict(vocab_size=8, num_chars=8, word_dim=8, char_dim=4, char_hidden=4, hidden_size=6, dropout=0.0)
PARIS = {"word_ids": [2, 3], "char_ids": [[2, 3], [4]], "casing_ids": [3, 3], "tag_ids": [0, 1], "index": 0}
AGAIN = {"word_ids": [4, 2, 5], "char_ids": [[5], [2, 3], [6]], "casing_ids": [3, 3, 5], "tag_ids": [0] * 3, "index": 1}


def first_sentence_emissions(model: Tagger) -> dict[str, torch.Tensor]:
    """Emissions (T, K) of PARIS alone, followed by AGAIN in its document, with AGAIN in another document, and with
    AGAIN first in the batch but still after it in reading order."""
    with torch.no_grad():
        return {
            "alone": model(collate([dict(PARIS, document=0)]))[0],
            "together": model(collate([dict(PARIS, document=0), dict(AGAIN, document=0)]))[0],
            "apart": model(collate([dict(PARIS, document=0), dict(AGAIN, document=1)]))[0],
            "swapped": model(collate([dict(AGAIN, document=0), dict(PARIS, document=0)]))[1],
        }


def test_document_memory_reads_the_other_sentences_of_the_document():
    """With document_memory, a sentence's emissions depend on the other sentences of its document, and only on
    those: the same sentences in another document change nothing."""
    torch.manual_seed(0)
    model = Tagger(LABELS, "BIOES", document_memory=True, **SIZES).eval()
    out = first_sentence_emissions(model)
    torch.testing.assert_close(out["apart"][:2], out["alone"], atol=1e-6, rtol=0)
    assert not torch.allclose(out["together"][0], out["alone"][0])  # word 2 occurs in the other sentence
    torch.testing.assert_close(out["together"][1], out["alone"][1], atol=1e-6, rtol=0)  # word 3 does not
    batch = collate([dict(PARIS, document=0), dict(AGAIN, document=0)])
    loss = model.train().loss(model(batch), batch["tag_ids"], length_mask(batch["lengths"], 3))
    loss.backward()
    assert torch.isfinite(loss) and model.projection.weight.grad.shape == (len(LABELS), 4 * 6 + 1)


def test_document_context_reads_the_neighbouring_sentences():
    """With document_context, every token of a sentence depends on the sentences of its document, in reading
    order, and not on other documents."""
    torch.manual_seed(0)
    model = Tagger(LABELS, "BIOES", document_context=True, **SIZES).eval()
    out = first_sentence_emissions(model)
    torch.testing.assert_close(out["apart"][:2], out["alone"], atol=1e-6, rtol=0)
    for t in range(2):  # both tokens read the next sentence, through the backward direction
        assert not torch.allclose(out["together"][t], out["alone"][t])
    torch.testing.assert_close(out["swapped"][:2], out["together"][:2], atol=1e-6, rtol=0)  # reading order
    assert model.reads_documents and model.document_option == "document_context"
    with pytest.raises(SeqtagInputError, match="implementation='torch'"):
        Tagger(LABELS, "BIOES", document_context=True, implementation="reference", **SIZES)


def test_training_marks_the_vocabularys_singletons(tmp_path):
    """Fitting gives the embedder the words seen once in the training data, which singleton_dropout replaces."""
    import lightning as L

    from seqtag.data.datamodule import TaggingDataModule
    from tests.conftest import write

    train = write(tmp_path / "train.conll", "Peter I-PER\nsays O\n\nPeter I-PER\nLeft O\n\nin O\nParis I-LOC\n")
    data = TaggingDataModule(str(train), validation=str(train), cache_dir=str(tmp_path / "cache"), batch_size=2)
    model = Tagger(data.labels, data.scheme, vocab_size=data.vocab_size, num_chars=data.num_chars, word_dim=4,
                   char_dim=4, char_hidden=4, hidden_size=4, singleton_dropout=0.5)  # fmt: skip
    trainer = L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, datamodule=data)
    marked = {data.vocab.words[i] for i in model.embedder.singletons.nonzero().flatten().tolist()}
    assert marked == {"says", "Left", "in", "Paris"}


def test_variational_dropout_draws_one_mask_per_sentence():
    torch.manual_seed(0)
    model = Tagger(LABELS, "BIOES", variational_dropout=True, **{**SIZES, "dropout": 0.5})
    assert type(model.dropout).__name__ == "LockedDropout" and model.dropout.p == 0.5
    b = batch()
    emissions = model.train()(b)
    loss = model.loss(emissions, b["tag_ids"], length_mask(b["lengths"], emissions.shape[1]))
    loss.backward()
    assert torch.isfinite(loss)
    assert type(Tagger(LABELS, "BIOES", **SIZES).dropout).__name__ == "Dropout"


@pytest.mark.parametrize("head", ["crf", "softmax"])
def test_loss_reduction_sum_is_the_mean_times_the_count(head):
    sizes = dict(vocab_size=8, num_chars=8, word_dim=8, char_dim=4, char_hidden=4, hidden_size=6, dropout=0.0)
    torch.manual_seed(0)
    mean = Tagger(LABELS, "BIOES", head=head, **sizes)
    summed = Tagger(LABELS, "BIOES", head=head, loss_reduction="sum", **sizes)
    summed.load_state_dict(mean.state_dict())
    b = batch()
    emissions = mean(b)
    mask = length_mask(b["lengths"], emissions.shape[1])
    count = 2 if head == "crf" else int(mask.sum())  # sentences for the CRF, tokens for softmax
    assert torch.allclose(summed.loss(emissions, b["tag_ids"], mask), mean.loss(emissions, b["tag_ids"], mask) * count)
    with pytest.raises(SeqtagInputError, match="loss_reduction"):
        Tagger(LABELS, "BIOES", loss_reduction="max", **sizes)


@pytest.mark.parametrize("char_encoder", ["cnn", "lstm"])
def test_char_dropout_acts_in_training_only(char_encoder):
    torch.manual_seed(0)
    model = Tagger(LABELS, "BIOES", vocab_size=8, num_chars=8, word_dim=0, char_encoder=char_encoder, char_dim=16,
                   char_hidden=8, hidden_size=6, dropout=0.0, char_dropout=0.5)  # fmt: skip
    b = batch()
    model.eval()
    assert torch.equal(model(b), model(b))
    model.train()
    assert not torch.equal(model(b), model(b))


def test_the_network_takes_the_taggers_model_arguments_with_the_same_defaults():
    import inspect

    from seqtag.network import TaggerNetwork

    tagger = dict(inspect.signature(Tagger.__init__).parameters)
    network = dict(inspect.signature(TaggerNetwork.__init__).parameters)
    for name in ("optimizer", "lr_scheduler"):  # the LightningModule's own
        tagger.pop(name)
    assert list(tagger) == list(network)
    assert {k: p.default for k, p in tagger.items()} == {k: p.default for k, p in network.items()}


def test_document_model_step_has_fixed_shapes_and_no_host_sync(monkeypatch):
    """The shipped CoNLL-2003 model (character CNN, casing, word and singleton dropout, document context and memory,
    CRF; here with the language-modelling loss too) with a batch that carries its document layout, as the data module
    gives it: emissions and loss run on the meta device, where any host read or value-dependent shape raises (what
    would stall a GPU step); on the CPU the layout changes nothing."""
    from seqtag.modules.encoder import document_layout

    torch.manual_seed(0)
    options = dict(SIZES, casing_dim=3, word_dropout=0.05, singleton_dropout=0.5)
    model = Tagger(LABELS, "BIOES", document_context=True, document_memory=True, lm_weight=0.1, **options).eval()
    batch = collate([dict(PARIS, document=0), dict(AGAIN, document=0), dict(PARIS, document=1, index=2)])
    with_layout = {**batch, **document_layout(batch["lengths"], batch["document"], batch["index"], 3)}
    with torch.no_grad():
        torch.testing.assert_close(model(with_layout), model(batch), rtol=0, atol=0)
    model.to("meta").train()
    meta = {key: value.to("meta") for key, value in with_layout.items()}
    emissions = model(meta)
    assert emissions.shape == (3, 3, len(LABELS)) and emissions.device.type == "meta"
    with pytest.raises((NotImplementedError, RuntimeError)):
        model({key: meta[key] for key in batch})  # without its layout the batch is read on the host
    # autocast has no meta device; the CRF only turns it off
    monkeypatch.setattr(torch, "autocast", lambda device_type, enabled: contextlib.nullcontext())
    assert model.loss(emissions, meta["tag_ids"], length_mask(meta["lengths"], 3)).shape == ()
    states, mask, _ = model.encode(meta)  # the language-modelling loss off the CPU: fixed shapes too
    assert model.neighbour_loss(states, meta["word_ids"], mask).shape == ()


@pytest.mark.parametrize(("options", "fused"), [({}, True), ({"weight_decay": 1e-3}, True), ({"momentum": 0.9}, None)])
def test_sgd_without_momentum_steps_fused_and_bit_for_bit_the_same(options, fused):
    """configure_optimizers fuses plain SGD on the CPU (one pass per parameter); the weights after 20 steps equal
    those of the optimizer as configured, to the bit. SGD with momentum is left as configured."""
    import functools

    from seqtag.optim import fused_when_identical

    weights = {}
    for name, make in [("configured", lambda opt: opt), ("chosen", fused_when_identical)]:
        torch.manual_seed(0)
        model = Tagger(LABELS, "BIOES", optimizer=functools.partial(torch.optim.SGD, lr=0.1, **options), **SIZES)
        optimizer = model.configure_optimizers() if name == "chosen" else make(model.optimizer_factory(
            [p for p in model.parameters() if p.requires_grad]))  # fmt: skip
        assert optimizer.param_groups[0]["fused"] is (fused if name == "chosen" else None)
        for step in range(20):
            b = batch()
            loss = model.loss(model(b), b["tag_ids"], length_mask(b["lengths"], 3)) * (1 + step % 3)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        weights[name] = [p.detach().clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(weights["configured"], weights["chosen"]))


def test_lm_weight_adds_the_neighbour_loss_in_training_only():
    sizes = dict(vocab_size=8, num_chars=8, word_dim=8, char_dim=4, char_hidden=4, hidden_size=6, dropout=0.0)
    torch.manual_seed(0)
    plain = Tagger(LABELS, "BIOES", **sizes)
    with_lm = Tagger(LABELS, "BIOES", lm_weight=0.5, lm_words=5, **sizes)
    assert plain.neighbour_lm is None and with_lm.neighbour_lm.num_words == 5
    with_lm.load_state_dict(plain.state_dict(), strict=False)  # the same tagger, plus the LM heads
    b = batch()
    states, mask, _ = with_lm.encode(b)
    expected = plain._common_step(b, "train") + 0.5 * with_lm.neighbour_lm(states, b["word_ids"], mask).mean()
    logged = {}
    with_lm.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    loss = with_lm._common_step(b, "train")
    torch.testing.assert_close(loss, expected)
    # train/loss stays the tagging loss, comparable with val/loss; the added term is logged apart.
    torch.testing.assert_close(logged["train/loss"] + logged["train/lm_loss"], expected)
    torch.testing.assert_close(logged["train/loss"], plain._common_step(b, "train"))
    assert loss > plain._common_step(b, "train")
    loss.backward()
    assert with_lm.neighbour_lm.next_word[0].weight.grad.abs().sum() > 0
    # Evaluation scores the tags alone.
    torch.testing.assert_close(with_lm._common_step(b, "val"), plain._common_step(b, "val"))
    # A softmax head averages per token: so does the language-modelling loss.
    softmax = Tagger(LABELS, "BIOES", head="softmax", lm_weight=0.5, lm_words=5, **sizes)
    states, mask, _ = softmax.encode(b)
    per_sentence = softmax.neighbour_lm(states, b["word_ids"], mask)
    torch.testing.assert_close(softmax.neighbour_loss(states, b["word_ids"], mask), 0.5 * per_sentence.sum() / 4)
    with pytest.raises(SeqtagInputError, match="lm_weight"):
        Tagger(LABELS, "BIOES", lm_weight=-1.0, **sizes)


def test_epoch_summary_prints_the_tagging_loss_of_a_step_with_lm_weight():
    """A tagger with lm_weight returns {"loss": total, "tagging_loss": ...}: the epoch line's train/loss is the
    tagging loss, comparable with val/loss and with a tagger without the term."""
    from seqtag.callbacks import EpochSummary

    summary = EpochSummary()
    summary.on_train_epoch_start(None, None)
    summary.on_train_batch_end(None, None, {"loss": torch.tensor(12.0), "tagging_loss": torch.tensor(2.0)}, None, 0)
    summary.on_train_batch_end(None, None, torch.tensor(4.0), None, 1)
    assert float(summary._loss_sum) / summary._batches == 3.0
    torch.manual_seed(0)
    model = Tagger(LABELS, "BIOES", vocab_size=8, num_chars=8, word_dim=8, char_dim=4, char_hidden=4, hidden_size=6,
                   lm_weight=0.5)  # fmt: skip
    model.log = lambda *args, **kwargs: None
    out = model.training_step(batch(), 0)
    assert set(out) == {"loss", "tagging_loss"} and out["loss"] > out["tagging_loss"] > 0
