"""CharLMEmbedder: shapes, word boundaries against the LMs run over text prefixes, frozen vs fine-tuned, and a tagger
trained with it through the real CLI that reloads without the LM files."""

from pathlib import Path

import pytest
import torch

from seqtag.data.charlm import CharVocab
from seqtag.data.datamodule import collate
from seqtag.data.vocab import Vocab
from seqtag.errors import SeqtagInputError
from seqtag.modules.charlm import VOCAB_KEY, CharLanguageModel
from seqtag.modules.contextual import CharLMEmbedder
from seqtag.tagger import Tagger
from tests.test_cli import ROOT, seqtag, small_split

SENTENCES = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["é"]]
LM_TEXT = "EU rejects German call to boycott British lamb .\nPeter Blackburn\n"


def save_lm(path: Path, direction: str, hidden_size: int, seed: int) -> CharLanguageModel:
    """A randomly initialised LM saved in the layout of a `seqtag lm fit` checkpoint."""
    torch.manual_seed(seed)
    vocab = CharVocab.build(LM_TEXT)
    lm = CharLanguageModel(len(vocab.chars), direction, embedding_dim=6, hidden_size=hidden_size)
    lm.vocab = vocab
    checkpoint = {"hyper_parameters": dict(lm.hparams), "state_dict": lm.state_dict(), VOCAB_KEY: vocab.to_json()}
    torch.save(checkpoint, path)
    return lm.eval()


@pytest.fixture
def lms(tmp_path):
    fw = save_lm(tmp_path / "fw.ckpt", "forward", 7, 0)
    bw = save_lm(tmp_path / "bw.ckpt", "backward", 5, 1)
    return tmp_path / "fw.ckpt", tmp_path / "bw.ckpt", fw, bw


def batch_of(sentences):
    vocab = Vocab.build(sentences, ["O"])
    rows = [{**vocab.encode_tokens(s), "tag_ids": [], "index": i} for i, s in enumerate(sentences)]
    batch = collate(rows)
    mask = torch.arange(batch["char_ids"].shape[1])[None, :] < batch["lengths"][:, None]
    return vocab, batch["char_ids"], mask


def test_shapes_and_padding(lms):
    fw_path, bw_path, _, _ = lms
    vocab, char_ids, mask = batch_of(SENTENCES)
    embedder = CharLMEmbedder(str(fw_path), str(bw_path), num_chars=len(vocab.chars))
    embedder.set_chars(vocab.chars)
    out = embedder(char_ids, mask)
    assert out.shape == (3, 4, 7 + 5) and embedder.output_size == 12
    assert (out[~mask] == 0).all() and (out[mask].abs().sum(-1) > 0).all()


def test_states_at_word_boundaries_equal_the_lms_over_text_prefixes(lms):
    fw_path, bw_path, fw, bw = lms
    vocab, char_ids, mask = batch_of(SENTENCES)
    embedder = CharLMEmbedder(str(fw_path), str(bw_path), num_chars=len(vocab.chars))
    embedder.set_chars(vocab.chars)
    out = embedder(char_ids, mask)
    for b, tokens in enumerate(SENTENCES):
        text = " ".join(tokens)
        start = 0
        for t, token in enumerate(tokens):
            end = start + len(token)
            left = "\n" + text[:end]  # the forward LM has read up to the word's last character
            right = (text[start:] + "\n")[::-1]  # the backward LM has read from the end down to its first character
            expected_fw = fw.hidden_states(fw.vocab.encode(left)[None])[0][0, -1]
            expected_bw = bw.hidden_states(bw.vocab.encode(right)[None])[0][0, -1]
            torch.testing.assert_close(out[b, t, :7], expected_fw)
            torch.testing.assert_close(out[b, t, 7:], expected_bw)
            start = end + 1


def test_text_uses_the_lm_vocabulary_with_unknown_characters_as_unk(lms):
    fw_path, _, fw, _ = lms
    vocab, char_ids, mask = batch_of([["é", "EU"]])
    embedder = CharLMEmbedder(str(fw_path), None, num_chars=len(vocab.chars))
    embedder.set_chars(vocab.chars)
    text, lengths, starts, ends = embedder.text_ids(char_ids, mask, embedder.fw_map, embedder.lms["fw"])
    assert fw.vocab.decode(text[0].tolist()) == "\n\ufffd EU\n"  # "é" is not in the LM's text: UNK
    assert lengths.tolist() == [6] and starts.tolist() == [[1, 3]] and ends.tolist() == [[2, 5]]


def test_frozen_by_default_and_finetuned_on_request(lms):
    fw_path, bw_path, _, _ = lms
    vocab, char_ids, mask = batch_of(SENTENCES)
    frozen = CharLMEmbedder(str(fw_path), str(bw_path), num_chars=len(vocab.chars)).train()
    assert not any(p.requires_grad for p in frozen.parameters())
    assert not any(m.training for m in frozen.lms.modules()), "frozen LMs run without dropout"
    assert not frozen(char_ids, mask).requires_grad
    tuned = CharLMEmbedder(str(fw_path), str(bw_path), num_chars=len(vocab.chars), finetune=True).train()
    tuned.set_chars(vocab.chars)
    tuned(char_ids, mask).sum().backward()
    assert tuned.lms["fw"].lstm.weight_hh_l0.grad is not None


def test_checkpoint_errors(lms, tmp_path):
    fw_path, _, _, _ = lms
    with pytest.raises(SeqtagInputError, match="should be a backward LM, got a forward one"):
        CharLMEmbedder(None, str(fw_path), num_chars=4)
    with pytest.raises(SeqtagInputError, match="char_lm_forward should be a `seqtag lm fit` checkpoint"):
        CharLMEmbedder(str(tmp_path / "missing.ckpt"), None, num_chars=4)
    with pytest.raises(SeqtagInputError, match="needs a forward or a backward LM"):
        CharLMEmbedder(None, None, num_chars=4)


def test_tagger_fit_through_the_cli_and_reload_without_the_lm_files(tmp_path):
    """A forward LM from `seqtag lm fit` (one epoch) and a backward one saved here feed a tagger trained for an
    epoch; the LM files are then deleted and `Tagger.load` still tags the same way."""
    train, dev = small_split(tmp_path, "train", 60), small_split(tmp_path, "dev", 20)
    seqtag(
        "lm", "fit", "--data.train", train, "--data.format", "conll", "--data.seq_len", 20,
        "--model.hidden_size", 8, "--model.embedding_dim", 4, "--trainer.max_epochs", 1,
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", tmp_path / "lm",
    )  # fmt: skip
    fw_path = tmp_path / "fw.ckpt"
    (tmp_path / "lm" / "checkpoints" / "last.ckpt").rename(fw_path)
    bw_path = tmp_path / "bw.ckpt"
    save_lm(bw_path, "backward", 5, 1)
    fit = seqtag(
        "fit", "--config", ROOT / "configs" / "quickstart.yaml",
        "--data.train", train, "--data.validation", dev, "--data.cache_dir", tmp_path / "cache",
        "--model.char_lm_forward", fw_path, "--model.char_lm_backward", bw_path,
        "--model.hidden_size", 16, "--trainer.max_epochs", 1,
        "--trainer.logger=false", "--trainer.enable_progress_bar=false", "--trainer.default_root_dir", tmp_path / "run",
    )  # fmt: skip
    best = Path(fit.stdout.split("Best checkpoint: ")[1].split()[0])
    best = best if best.is_absolute() else ROOT / best
    sentences = [["Peter", "Blackburn", "visited", "Brussels", "."], ["EU", "rejects", "it"]]
    before = Tagger.load(best).tag(sentences)
    fw_path.unlink()
    bw_path.unlink()
    tagger = Tagger.load(best)
    assert tagger.char_lm is not None and tagger.char_lm.output_size == 8 + 5
    assert (tagger.char_lm.fw_map > 0).sum() > 10, "the character maps are restored from the checkpoint"
    assert tagger.tag(sentences) == before
    # `seqtag test` with the training's options (LM paths included) uses the checkpoint's LMs too.
    test = seqtag(
        "test", "--config", ROOT / "configs" / "quickstart.yaml",
        "--data.train", train, "--data.test", dev, "--data.cache_dir", tmp_path / "cache",
        "--model.char_lm_forward", fw_path, "--model.char_lm_backward", bw_path, "--model.hidden_size", 16,
        "--ckpt_path", best, "--trainer.logger=false", "--trainer.enable_progress_bar=false",
        "--trainer.default_root_dir", tmp_path / "run",
    )  # fmt: skip
    assert "test/f1" in test.stdout
