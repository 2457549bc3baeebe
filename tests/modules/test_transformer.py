"""TransformerEmbedder on a tiny randomly initialised BERT written to a temporary folder (no Hub): shapes, pooling
and windows against the encoder run by hand, the scalar mix, frozen and fine-tuned parameter groups, and a tagger
that trains, saves, and tags again from its checkpoint alone."""

import json
import shutil
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from seqtag.cli import cli_main  # noqa: E402
from seqtag.data.token_text import pad_token_codes  # noqa: E402
from seqtag.errors import SeqtagInputError  # noqa: E402
from seqtag.modules.transformer import (  # noqa: E402
    SPEC_KEY,
    TransformerEmbedder,
    parse_layers,
    sharing_kept_vectors,
)
from seqtag.tagger import Tagger  # noqa: E402
from tests.test_cli import QUICKSTART, ROOT, small_split  # noqa: E402

LETTERS = "abcdefghijklmnopqrstuvwxyz"
# Whole words, and every letter alone and as a continuation: any lowercase word has subwords, most several.
VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "eu", "re", "##jects", "german", "call", "to", "boy",
    "##cott", "british", "lamb", ".", ",", "peter", "black", "##burn", *LETTERS, *[f"##{c}" for c in LETTERS],
]  # fmt: skip
MAX_POSITIONS = 16  # 14 subwords of a sentence per window, besides [CLS] and [SEP]


def write_tiny_bert(folder, seed=0):
    """A 2-layer BERT (hidden size 16) with random weights and a WordPiece tokenizer from a vocab file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}), encoding="utf-8")
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=MAX_POSITIONS,
    )  # fmt: skip
    transformers.BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def by_hand(embedder, words, layer=-1):
    """One sentence through the encoder directly: every hidden state, and the subword positions of each word."""
    encoding = embedder.tokenizer([words], is_split_into_words=True, return_tensors="pt")
    with torch.no_grad():
        states = embedder.encoder(**encoding, output_hidden_states=True).hidden_states
    word_ids = encoding.word_ids(0)
    positions = [[p for p, w in enumerate(word_ids) if w == i] for i in range(len(words))]
    return states, positions


def embed(embedder, sentences):
    codes = pad_token_codes(sentences)
    return embedder(codes, torch.tensor([len(s) for s in sentences]))


SENTENCES = [["EU", "rejects", "German", "call", "xyz"], ["Peter", "Blackburn"]]


def test_shapes_padding_and_layers(tiny_bert):
    embedder = TransformerEmbedder(str(tiny_bert)).eval()
    out = embed(embedder, SENTENCES)
    assert out.shape == (2, 5, 16) and embedder.output_size == 16
    assert out[1, 2:].abs().sum() == 0 and out[1, :2].abs().sum() > 0  # padding positions stay zero
    assert embedder.layers == [0, 1, 2] and embedder.mix is not None  # "all": embeddings and both layers, mixed
    assert parse_layers("-1", 2) == [2] and parse_layers("0,-1", 2) == [0, 2]
    for bad in ("3", "-4", "1,1", "first", ""):
        with pytest.raises(SeqtagInputError, match="transformer_layers"):
            parse_layers(bad, 2)
    with pytest.raises(SeqtagInputError, match="transformer_pooling"):
        TransformerEmbedder(str(tiny_bert), pooling="max")
    with pytest.raises(SeqtagInputError, match="folder or Hub name"):
        TransformerEmbedder(str(tiny_bert / "missing"))


@pytest.mark.parametrize("pooling", ["first", "mean"])
@pytest.mark.parametrize("layers", ["-1", "all", "last"])
def test_pooling_equals_the_encoder_run_by_hand(tiny_bert, pooling, layers):
    embedder = TransformerEmbedder(str(tiny_bert), pooling=pooling, layers=layers).eval()
    if embedder.mix is not None:
        with torch.no_grad():
            embedder.mix.weights.copy_(torch.tensor([0.3, -1.0, 0.5]))
            embedder.mix.gamma.fill_(1.7)
    out = embed(embedder, SENTENCES)
    for b, words in enumerate(SENTENCES):
        states, positions = by_hand(embedder, words)
        if layers == "all":
            weights = torch.softmax(torch.tensor([0.3, -1.0, 0.5]), 0)
            hidden = 1.7 * sum(w * s for w, s in zip(weights, states))
        else:
            hidden = states[-1]
        assert any(len(p) > 1 for p in positions)  # "rejects" → re ##jects: pooling matters
        for t, subwords in enumerate(positions):
            picked = hidden[0, subwords[:1] if pooling == "first" else subwords]
            torch.testing.assert_close(out[b, t], picked.mean(0), atol=1e-5, rtol=1e-5)


def test_words_the_tokenizer_drops_get_the_unknown_token(tiny_bert):
    embedder = TransformerEmbedder(str(tiny_bert)).eval()
    pieces = embedder.subwords([["the", "\u200b", "", "lamb"]])[0]
    assert pieces[1] == pieces[2] == [embedder.tokenizer.unk_token_id] and len(pieces) == 4
    assert embed(embedder, [["the", "\u200b", "", "lamb"]]).shape == (1, 4, 16)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_a_long_sentence_is_read_in_windows_each_word_from_its_most_central_one(tiny_bert, pooling):
    embedder = TransformerEmbedder(str(tiny_bert), pooling=pooling, layers="-1").eval()
    words = ("the eu rejects german call to boycott british lamb , peter blackburn xyz .".split()) * 3
    pieces = embedder.subwords([words])[0]
    flat = [p for ids in pieces for p in ids]
    assert len(flat) > MAX_POSITIONS and embedder.window == MAX_POSITIONS - 2
    starts, chosen = embedder.windows(pieces)
    assert len(starts) > 2 and starts[-1] == len(flat) - embedder.window  # the last window ends with the sentence
    out = embed(embedder, [words])[0]
    offset = 0
    for t, ids in enumerate(pieces):
        start = starts[chosen[t]]
        begin, end = offset - start, offset - start + len(ids)
        assert 0 <= begin and end <= embedder.window  # the word lies wholly in its window
        best = max(min(offset - s, s + embedder.window - offset - len(ids)) for s in starts if s <= offset)
        assert min(begin, embedder.window - end) == best  # and nowhere is it more central
        window = torch.tensor([embedder.prefix + flat[start : start + embedder.window] + embedder.suffix])
        with torch.no_grad():
            hidden = embedder.encoder(input_ids=window).last_hidden_state[0]
        expected = hidden[1 + begin : 1 + (begin + 1 if pooling == "first" else end)].mean(0)
        torch.testing.assert_close(out[t], expected, atol=1e-5, rtol=1e-5)
        offset += len(ids)
    # A sentence that fits is read whole, as one window: the plain encoding (also in a batch with the long one).
    short = words[:4]
    states, positions = by_hand(embedder, short)
    both = embed(embedder, [words, short])
    for t, subwords in enumerate(positions):
        expected = states[-1][0, subwords[:1] if pooling == "first" else subwords].mean(0)
        torch.testing.assert_close(both[1, t], expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(both[0], out, atol=1e-5, rtol=1e-5)


def test_windows_go_through_in_blocks_of_similar_length_with_the_same_vectors(tiny_bert, monkeypatch):
    embedder = TransformerEmbedder(str(tiny_bert)).eval()
    long = "the eu rejects german call to boycott british lamb , peter blackburn xyz .".split() * 2
    sentences = [long, ["lamb"], ["the", "boy"], long[:6], ["peter", "blackburn", "xyz"], long[3:9]]
    whole = embed(embedder, sentences)
    shapes = []

    def record(module, args, kwargs, out):
        shapes.append(tuple(kwargs["input_ids"].shape))

    embedder.encoder.register_forward_hook(record, with_kwargs=True)
    monkeypatch.setattr("seqtag.modules.transformer.SUBWORDS_PER_CALL", 24)
    torch.testing.assert_close(embed(embedder, sentences), whole, atol=1e-5, rtol=1e-5)
    assert len(shapes) > 2 and all(w * s <= 24 or w == 1 for w, s in shapes)
    assert [s for _, s in shapes] == sorted(s for _, s in shapes)  # shortest windows first, each block trimmed
    assert shapes[0][1] < shapes[-1][1] == MAX_POSITIONS  # short windows are not padded to the batch's longest


def test_a_roberta_style_encoder_reads_pre_split_words_within_its_positions(tmp_path):
    """Byte-level BPE reads pre-split words only with a prefix space, and RoBERTa numbers positions from
    padding_idx + 1: 20 position embeddings read 18 subwords, 16 of a sentence besides <s> and </s>."""
    tokenizers = pytest.importorskip("tokenizers")
    bpe = tokenizers.ByteLevelBPETokenizer()
    text = ["EU rejects German call to boycott British lamb .", "Peter Blackburn"] * 20
    bpe.train_from_iterator(text, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp_path))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    torch.manual_seed(0)
    config = transformers.RobertaConfig(
        vocab_size=300, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=20, pad_token_id=1,
    )  # fmt: skip
    transformers.RobertaModel(config).save_pretrained(tmp_path)
    embedder = TransformerEmbedder(str(tmp_path)).eval()
    assert embedder.tokenizer.add_prefix_space and embedder.window == 16
    words = "EU rejects German call to boycott British lamb .".split() * 3
    assert (
        len(embedder.subwords([words])[0]) == len(words) and len(embedder.windows(embedder.subwords([words])[0])[0]) > 1
    )
    out = embed(embedder, [words, words[:3]])
    states, positions = by_hand(embedder, words[:3])
    for t, subwords in enumerate(positions):
        torch.testing.assert_close(out[1, t], states_mix(embedder, states)[0, subwords].mean(0), atol=1e-5, rtol=1e-5)
    rebuilt = TransformerEmbedder(embedder.spec()).eval()  # from the config and tokenizer files alone
    rebuilt.load_state_dict(embedder.state_dict())
    assert rebuilt.tokenizer.add_prefix_space and torch.equal(embed(rebuilt, [words, words[:3]]), out)


def states_mix(embedder, states):
    """The default scalar mix at its start: the mean of all hidden states."""
    return sum(states) / len(states)


def test_scalar_mix_learns_while_the_frozen_encoder_does_not(tiny_bert):
    frozen = TransformerEmbedder(str(tiny_bert)).train()
    assert not frozen.encoder.training  # no dropout in a frozen encoder
    embed(frozen, SENTENCES).pow(2).sum().backward()
    assert frozen.mix.weights.grad is not None and frozen.mix.weights.grad.abs().sum() > 0
    assert frozen.mix.gamma.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in frozen.encoder.parameters())

    tuned = TransformerEmbedder(str(tiny_bert), finetune=True).train()
    assert tuned.encoder.training
    embed(tuned, SENTENCES).pow(2).sum().backward()
    layer = tuned.encoder.encoder.layer[0].attention.self.query.weight
    assert layer.grad is not None and layer.grad.abs().sum() > 0
    assert all(not p.requires_grad for p in tuned.encoder.pooler.parameters())  # never read: no gradient reaches it


def count_encoder_calls(embedder):
    """A list that grows by the number of windows each time the encoder runs (windows of different lengths may go in
    separate calls)."""
    calls = []
    embedder.encoder.register_forward_hook(lambda module, args, kwargs, out: calls.append(len(kwargs["input_ids"])),
                                           with_kwargs=True)  # fmt: skip
    return calls


def test_a_frozen_encoder_reads_each_sentence_once_and_keeps_its_vectors(tiny_bert):
    uncached = TransformerEmbedder(str(tiny_bert), cache_mb=0).train()
    embedder = TransformerEmbedder(str(tiny_bert)).train()
    embedder.load_state_dict(uncached.state_dict())
    calls = count_encoder_calls(embedder)
    embed(embedder, SENTENCES)
    assert sum(calls) == 2 and embedder._kept.vectors == {}  # tagging new text keeps nothing
    embedder.use_cache(True)
    calls.clear()
    first = embed(embedder, SENTENCES)
    assert sum(calls) == 2 and len(embedder._kept.vectors) == 2  # both sentences read, one window each
    torch.testing.assert_close(first, embed(uncached, SENTENCES))

    third = ["the", "boy", "call"]
    again = embed(embedder, [SENTENCES[1], third, SENTENCES[1]])  # one new sentence, one met twice
    assert sum(calls) == 3 and len(embedder._kept.vectors) == 3
    torch.testing.assert_close(again, embed(uncached, [SENTENCES[1], third, SENTENCES[1]]))
    assert embedder._kept.used == sum(v.numel() * 4 for v in embedder._kept.vectors.values()) > 0

    again.pow(2).sum().backward()  # the scalar mix still learns from kept vectors
    assert embedder.mix.weights.grad.abs().sum() > 0 and embedder.mix.gamma.grad is not None

    with torch.no_grad():
        uncached.mix.weights.fill_(0.7)
    embedder.load_state_dict(uncached.state_dict())  # new weights: the kept vectors go
    assert embedder._kept.vectors == {} and embedder._kept.used == 0
    import copy

    embed(embedder, SENTENCES)
    assert (
        len(embedder._kept.vectors) == 2 and copy.deepcopy(embedder)._kept.vectors == {}
    )  # copies leave the cache behind
    embedder.use_cache(False)
    assert embedder._kept.vectors == {} and embedder._kept.used == 0


def test_the_cache_stops_at_its_size_and_fine_tuning_keeps_none(tiny_bert):
    embedder = TransformerEmbedder(str(tiny_bert)).eval()
    embedder.use_cache(True)
    one_sentence = 5 * 3 * 16 * 4  # 5 words x 3 states x hidden 16, float32
    embedder.cache_bytes = one_sentence + 10
    calls = count_encoder_calls(embedder)
    embed(embedder, SENTENCES)
    assert list(embedder._kept.vectors) == [tuple(SENTENCES[0])] and embedder._kept.used == one_sentence
    embed(embedder, SENTENCES)
    assert sum(calls) == 3  # the sentence that did not fit is read again

    tuned = TransformerEmbedder(str(tiny_bert), finetune=True).eval()
    tuned.use_cache(True)
    calls = count_encoder_calls(tuned)
    embed(tuned, SENTENCES), embed(tuned, SENTENCES)
    assert sum(calls) == 4 and tuned._kept.vectors == {}
    with pytest.raises(SeqtagInputError, match="transformer_cache_mb"):
        TransformerEmbedder(str(tiny_bert), cache_mb=-1)


def test_fits_sharing_kept_vectors_read_a_sentence_once_for_the_same_weights(tiny_bert, tmp_path):
    first, second = TransformerEmbedder(str(tiny_bert)).eval(), TransformerEmbedder(str(tiny_bert)).eval()
    other = TransformerEmbedder(str(write_tiny_bert(tmp_path / "other", seed=1))).eval()
    expected = embed(first, SENTENCES)
    assert first.fingerprint() == second.fingerprint() != other.fingerprint()
    with sharing_kept_vectors():
        first.use_cache(True)
        embed(first, SENTENCES)
        first.use_cache(False)  # one trial ends: its vectors stay with the scope
        assert first._kept.vectors == {}
        with sharing_kept_vectors():  # a nested scope (a trial's own `seqtag fit`) shares the outer one's
            calls = count_encoder_calls(second)
            second.use_cache(True)
            torch.testing.assert_close(embed(second, SENTENCES), expected)
            assert calls == [] and len(second._kept.vectors) == 2
        calls = count_encoder_calls(other)
        other.use_cache(True)  # other weights: read again
        embed(other, SENTENCES)
        assert sum(calls) == 2
    alone = TransformerEmbedder(str(tiny_bert)).eval()
    calls = count_encoder_calls(alone)
    alone.use_cache(True)  # outside any scope: its own vectors only
    embed(alone, SENTENCES)
    assert sum(calls) == 2


def test_a_frozen_fit_reads_each_sentence_once_calibration_included(tmp_path, monkeypatch):
    from seqtag import calibration

    folder = write_tiny_bert(tmp_path / "encoder")
    train, dev = small_split(tmp_path, "train", 40), small_split(tmp_path, "dev", 20)
    read, kept_at_calibration = [], []
    layer_vectors, fit_temperature = TransformerEmbedder.layer_vectors, calibration.fit_temperature

    def reading(self, sentences):
        read.extend(map(tuple, sentences))
        return layer_vectors(self, sentences)

    def calibrating(model, batches):
        kept_at_calibration.append(len(model.transformer._kept.vectors))
        return fit_temperature(model, batches)

    monkeypatch.setattr(TransformerEmbedder, "layer_vectors", reading)
    monkeypatch.setattr(calibration, "fit_temperature", calibrating)
    args = [
        "--config", ROOT / "configs" / "quickstart.yaml", "--data.train", train, "--data.validation", dev,
        "--data.test", "null", "--data.cache_dir", tmp_path / "cache", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.max_epochs=2", f"--trainer.default_root_dir={tmp_path}/runs",
        "--model.transformer", folder,
    ]  # fmt: skip
    cli_main(["fit", *map(str, args)])
    blocks = [block for path in (train, dev) for block in Path(path).read_text().split("\n\n") if block.strip()]
    sentences = {tuple(line.split()[0] for line in block.splitlines()) for block in blocks}
    assert len(read) == len(set(read)) and set(read) == sentences  # two epochs and validation: once each
    assert kept_at_calibration == [len(sentences)]  # the calibration after the fit read the fit's vectors


def test_the_trials_of_a_search_read_each_sentence_once_in_all(tmp_path, monkeypatch):
    from seqtag.cli import main

    monkeypatch.setenv("WANDB_MODE", "offline")
    folder = write_tiny_bert(tmp_path / "encoder")
    train, dev = small_split(tmp_path, "train", 40), small_split(tmp_path, "dev", 20)
    read = []
    layer_vectors = TransformerEmbedder.layer_vectors

    def reading(self, sentences):
        read.extend(map(tuple, sentences))
        return layer_vectors(self, sentences)

    monkeypatch.setattr(TransformerEmbedder, "layer_vectors", reading)
    space = tmp_path / "space.yaml"
    space.write_text("model.dropout: {type: float, low: 0.1, high: 0.5}\n", encoding="utf-8")
    args = [
        "tune", "--config", ROOT / "configs" / "quickstart.yaml", "--search", space, "--trials", "2",
        "--output", tmp_path / "tune", "--data.train", train, "--data.validation", dev, "--data.test", "null",
        "--data.cache_dir", tmp_path / "cache", "--trainer.max_epochs=1", "--trainer.enable_progress_bar=false",
        "--model.transformer", folder, "--pruner", "none",
    ]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    assert len(list((tmp_path / "tune").rglob("best.ckpt"))) == 2  # two trials trained
    assert len(read) == len(set(read)) == 60  # the 40 + 20 sentences, by the first trial only


def tagger(tiny_bert, **options):
    return Tagger(["O", "S-LOC"], "BIOES", vocab_size=6, num_chars=6, word_dim=4, char_encoder="none",
                  hidden_size=4, transformer=str(tiny_bert), **options)  # fmt: skip


def test_fine_tuning_puts_the_encoder_in_its_own_parameter_group(tiny_bert):
    model = tagger(tiny_bert, transformer_finetune=True, transformer_lr=2e-5)
    (groups,) = [model.configure_optimizers().param_groups]
    assert len(groups) == 2 and groups[0]["lr"] == 0.001 and groups[1]["lr"] == 2e-5
    encoder = {id(p) for p in model.transformer.encoder.parameters() if p.requires_grad}
    assert {id(p) for p in groups[1]["params"]} == encoder
    mix = {id(p) for p in model.transformer.mix.parameters()}
    assert mix <= {id(p) for p in groups[0]["params"]}  # the scalar mix learns at the tagger's rate

    frozen = tagger(tiny_bert)
    (group,) = frozen.configure_optimizers().param_groups
    assert not {id(p) for p in frozen.transformer.encoder.parameters()} & {id(p) for p in group["params"]}
    assert mix and {id(p) for p in frozen.transformer.mix.parameters()} <= {id(p) for p in group["params"]}


def test_a_fit_keeps_the_frozen_encoders_vectors_and_forgets_them_at_its_end(tiny_bert):
    model = tagger(tiny_bert).eval()  # no dropout: the same emissions twice
    calls = count_encoder_calls(model.transformer)
    batch = {
        "word_ids": torch.tensor([[2, 3]]), "char_ids": torch.zeros(1, 2, 1, dtype=torch.long),
        "casing_ids": torch.zeros(1, 2, dtype=torch.long), "lengths": torch.tensor([2]),
        "token_codes": pad_token_codes([["Peter", "Blackburn"]]),
    }  # fmt: skip
    model.on_fit_start()
    first, second = model(batch), model(batch)
    assert calls == [1] and len(model.transformer._kept.vectors) == 1
    torch.testing.assert_close(first, second)
    model.on_fit_end()
    model(batch)
    assert calls == [1, 1] and model.transformer._kept.vectors == {}


def test_the_transformer_alone_represents_the_words_with_word_dim_0(tiny_bert):
    model = Tagger(["O", "S-LOC"], "BIOES", vocab_size=6, num_chars=6, word_dim=0, char_encoder="none",
                   hidden_size=4, transformer=str(tiny_bert))  # fmt: skip
    assert model.embedder.output_size == 0
    batch = {
        "word_ids": torch.tensor([[2, 3]]), "char_ids": torch.zeros(1, 2, 1, dtype=torch.long),
        "casing_ids": torch.zeros(1, 2, dtype=torch.long), "lengths": torch.tensor([2]),
        "token_codes": pad_token_codes([["Peter", "Blackburn"]]),
    }  # fmt: skip
    assert model(batch).shape == (1, 2, 2)
    with pytest.raises(SeqtagInputError, match="token_codes"):
        model({k: v for k, v in batch.items() if k != "token_codes"})
    with pytest.raises(SeqtagInputError, match="representation is empty"):
        Tagger(["O"], None, vocab_size=6, num_chars=6, word_dim=0, char_encoder="none")


@pytest.mark.slow
def test_fit_save_load_and_tag_without_the_encoder_folder(tmp_path):
    """`seqtag fit --model.transformer <folder>` on quickstart data; then, with the folder deleted, the checkpoint
    alone tags as the trained model did (Tagger.load and `seqtag predict --ckpt_path`)."""
    folder = write_tiny_bert(tmp_path / "encoder")
    train, dev = small_split(tmp_path, "train", 40), small_split(tmp_path, "dev", 20)
    args = [
        "--config", ROOT / "configs" / "quickstart.yaml", "--data.train", train, "--data.validation", dev,
        "--data.test", dev, "--data.cache_dir", tmp_path / "cache", "--trainer.logger=false",
        "--trainer.enable_progress_bar=false", "--trainer.max_epochs=1", f"--trainer.default_root_dir={tmp_path}/runs",
        "--model.transformer", folder, "--model.transformer_pooling=first", "--model.transformer_finetune=true",
    ]  # fmt: skip
    cli = cli_main(["fit", *map(str, args)])
    best = cli.trainer.checkpoint_callback.best_model_path
    trained = cli.model.eval()
    sentences = [[line.split()[0] for line in block.splitlines() if line.strip()]
                 for block in (QUICKSTART / "test.conll").read_text().split("\n\n")[:12]]  # fmt: skip
    sentences.append("Peter Blackburn rejects the boycott of British lamb ; the talks resume in Brussels .".split() * 3)
    expected = trained.tag(sentences)
    with torch.inference_mode():
        emissions_before = [trained(b) for b in batches(trained, sentences)]
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    assert checkpoint[SPEC_KEY]["name"] == str(folder) and "tokenizer.json" in checkpoint[SPEC_KEY]["tokenizer"]
    assert any(name.startswith("transformer.encoder.") for name in checkpoint["state_dict"])

    shutil.rmtree(folder)
    loaded = Tagger.load(best)
    assert loaded.hparams.transformer_pooling == "first" and loaded.transformer.pooling == "first"
    assert loaded.transformer.finetune
    assert loaded.tag(sentences) == expected
    with torch.inference_mode():
        for before, batch in zip(emissions_before, batches(loaded, sentences)):
            torch.testing.assert_close(loaded(batch), before)

    folder_copy = loaded.save_pretrained(tmp_path / "model_folder")  # a Hub model folder: safetensors and JSON
    assert Tagger.from_pretrained(folder_copy).tag(sentences) == expected

    text = tmp_path / "news.txt"
    text.write_text("Peter Blackburn met officials in Brussels .\nThe EU rejects German calls .\n", encoding="utf-8")
    output = tmp_path / "news.jsonl"
    cli_main(["predict", "--ckpt_path", str(best), "--data.predict", str(text), "--predict_output", str(output),
              "--trainer.logger=false", "--trainer.enable_progress_bar=false"])  # fmt: skip
    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["tags"] for r in records] == loaded.tag([text.read_text().splitlines()[0].split(),
                                                      text.read_text().splitlines()[1].split()])  # fmt: skip


def batches(model, sentences):
    from seqtag.data.datamodule import iter_batches

    return list(iter_batches(model.vocab, sentences, 4, with_text=True))
