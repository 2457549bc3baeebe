"""Contextual character features from pretrained character language models (Akbik et al. 2018, "Contextual String
Embeddings for Sequence Labeling").

A sentence's text is its tokens joined by spaces, read with a line break on each side (the LMs of ``seqtag lm`` are
trained on one sentence per line). For token t spanning characters [s_t, e_t) of that text:

- the forward LM's top-layer state after reading character e_t - 1 (the word and everything to its left);
- the backward LM's state after reading character s_t from the right (the word and everything to its right).

The two are concatenated, (B, T, H_fw + H_bw). The tagger's character ids are mapped to each LM's own character ids
through a lookup buffer, so batches need nothing beyond ``char_ids``; characters beyond ``MAX_CHARS_PER_TOKEN`` of a
token are not in ``char_ids`` and so not in the text.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from seqtag.data.charlm import CharVocab
from seqtag.errors import SeqtagInputError
from seqtag.modules.charlm import VOCAB_KEY, CharLanguageModel

SPECS_KEY = "seqtag_char_lm"  # the LMs' hyperparameters and vocabularies inside a tagger checkpoint
KEYS = {"forward": "fw", "backward": "bw"}  # module names ("forward" is taken by nn.Module)


def read_char_lm(source: str | dict, direction: str) -> tuple[CharLanguageModel, dict]:
    """A character LM from a ``seqtag lm fit`` checkpoint (weights loaded) or from a spec dict written by
    :meth:`CharLMEmbedder.specs` (weights left to the tagger's state_dict). Returns the model and its hyperparameters,
    which are not read back from ``lm.hparams``: under LightningCLI's instantiation, a module built inside the model's
    ``__init__`` records the model's hyperparameters in ``save_hyperparameters``."""
    if isinstance(source, dict):
        hparams, chars, state_dict = source["hyper_parameters"], source["vocab"], None
    else:
        path = Path(source)
        if not path.is_file():
            raise SeqtagInputError(f"model.char_lm_{direction} should be a `seqtag lm fit` checkpoint, got {path}")
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        if VOCAB_KEY not in checkpoint:
            raise SeqtagInputError(f"{path}: not a character LM checkpoint (no {VOCAB_KEY!r} entry)")
        hparams, state_dict = checkpoint["hyper_parameters"], checkpoint["state_dict"]
        chars = CharVocab.from_json(checkpoint[VOCAB_KEY]).chars
    keys = ("vocab_size", "direction", "embedding_dim", "hidden_size", "num_layers", "dropout", "implementation")
    defaults = inspect.signature(CharLanguageModel.__init__).parameters
    hparams = {k: hparams.get(k, defaults[k].default) for k in keys}
    if hparams["direction"] != direction:
        raise SeqtagInputError(
            f"model.char_lm_{direction} should be a {direction} LM, got a {hparams['direction']} one: {source}"
        )
    lm = CharLanguageModel(**hparams)
    if state_dict is not None:
        lm.load_state_dict(state_dict)
    lm.vocab = CharVocab(list(chars))
    return lm, hparams


class CharLMEmbedder(nn.Module):
    """Flair-style token features from a forward and/or a backward character LM.

    Args:
        forward_lm: a forward ``seqtag lm fit`` checkpoint path (or its spec dict), or None.
        backward_lm: a backward checkpoint path (or spec dict), or None.
        num_chars: the tagger's character vocabulary size; :meth:`set_chars` fills the id maps from it.
        finetune: train the LMs with the tagger; otherwise they are frozen and kept in eval mode. Default: False

    Shape:
        char_ids: (B, T, C) long, the tagger's ids padded with 0;  mask: (B, T) bool;
        returns: (B, T, output_size), zeros at padding positions

    Example:
        >>> fw = CharLanguageModel(vocab_size=4, hidden_size=8)
        >>> fw.vocab = CharVocab(["<unk>", "\\n", " ", "a"])
        >>> spec = {"hyper_parameters": dict(fw.hparams), "vocab": fw.vocab.chars}
        >>> embedder = CharLMEmbedder(spec, None, num_chars=3)
        >>> embedder.set_chars(["<pad>", "<unk>", "a"])
        >>> embedder(torch.tensor([[[2, 2], [2, 0]]]), torch.tensor([[True, True]])).shape
        torch.Size([1, 2, 8])
    """

    def __init__(
        self,
        forward_lm: str | dict | None,
        backward_lm: str | dict | None,
        num_chars: int,
        finetune: bool = False,
    ) -> None:
        super().__init__()
        if forward_lm is None and backward_lm is None:
            raise SeqtagInputError("CharLMEmbedder needs a forward or a backward LM, got neither")
        self.finetune = finetune
        self.lms = nn.ModuleDict()
        self.lm_hparams: dict[str, dict] = {}
        for direction, source in (("forward", forward_lm), ("backward", backward_lm)):
            if source is None:
                continue
            lm, hparams = read_char_lm(source, direction)
            self.lm_hparams[direction] = hparams
            lm.requires_grad_(finetune)
            self.lms[KEYS[direction]] = lm
            # tagger char id → LM char id; 0 (LM UNK) until set_chars
            self.register_buffer(f"{KEYS[direction]}_map", torch.zeros(num_chars, dtype=torch.long))
        self.num_chars = num_chars
        self.output_size = sum(h["hidden_size"] for h in self.lm_hparams.values())
        self.train()

    def set_chars(self, chars: Sequence[str]) -> None:
        """Fills the id maps from the tagger's character vocabulary (index 0 = PAD, 1 = UNK)."""
        if len(chars) != self.num_chars:
            raise SeqtagInputError(f"Expected {self.num_chars} characters (num_chars), got {len(chars)}")
        for key, lm in self.lms.items():
            ids = [lm.vocab.index.get(c, 0) for c in chars]
            ids[:2] = [0, 0]  # PAD and UNK → the LM's UNK
            getattr(self, f"{key}_map").copy_(torch.tensor(ids, dtype=torch.long))

    def train(self, mode: bool = True) -> CharLMEmbedder:
        super().train(mode)
        if not self.finetune:
            self.lms.eval()  # frozen LMs run without dropout
        return self

    def specs(self) -> dict[str, dict]:
        """Each LM's hyperparameters and vocabulary: with the state_dict, all a reload needs."""
        return {
            direction: {"hyper_parameters": dict(hparams), "vocab": list(self.lms[KEYS[direction]].vocab.chars)}
            for direction, hparams in self.lm_hparams.items()
        }

    def text_ids(self, char_ids: torch.Tensor, mask: torch.Tensor, lookup: torch.Tensor, lm: CharLanguageModel):
        """Each sentence's text ("\\n" + tokens joined by " " + "\\n") in one LM's ids, and word boundaries.

        Shape:
            returns: text (B, L) long, padded with "\\n";  lengths (B,);  starts, ends (B, T) long, [s_t, e_t)
        """
        b, t, c = char_ids.shape
        newline, space = lm.vocab.index.get("\n", 0), lm.vocab.index.get(" ", 0)
        counts = ((char_ids != 0).sum(-1) * mask).long()  # (B, T)
        widths = (counts + 1) * mask  # a token and the separator after it
        starts = 1 + torch.cumsum(widths, dim=1) - widths  # (B, T)
        ends = starts + counts  # (B, T)
        lengths = 1 + widths.sum(1) + (mask.sum(1) == 0).long()  # the last separator is the closing "\n"
        text = torch.full((b, int(lengths.max())), space, dtype=torch.long, device=char_ids.device)  # (B, L)
        rows = torch.arange(b, device=char_ids.device)
        text[:, 0] = newline
        beyond = torch.arange(text.shape[1], device=text.device)[None, :] >= lengths[:, None] - 1  # (B, L)
        text[beyond] = newline
        real = (char_ids != 0) & mask[..., None]  # (B, T, C)
        positions = starts[..., None] + torch.arange(c, device=char_ids.device)  # (B, T, C)
        text[rows[:, None, None].expand(b, t, c)[real], positions[real]] = lookup[char_ids[real]]
        return text, lengths, starts, ends

    def forward(self, char_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        parts = []
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            for key, lm in self.lms.items():
                text, lengths, starts, ends = self.text_ids(char_ids, mask, getattr(self, f"{key}_map"), lm)
                if key == "fw":
                    states, _ = lm.hidden_states(text)  # (B, L, H)
                    index = (ends - 1).clamp(min=0)  # (B, T): after the word's last character
                else:
                    # each row reversed within its own length, so that padding stays at the end
                    positions = torch.arange(text.shape[1], device=text.device)[None, :]
                    reverse = (lengths[:, None] - 1 - positions).clamp(min=0)  # (B, L)
                    states, _ = lm.hidden_states(text.gather(1, reverse))  # (B, L, H)
                    index = (lengths[:, None] - 1 - starts).clamp(min=0)  # (B, T): after the word's first character
                picked = states.gather(1, index[..., None].expand(-1, -1, states.shape[-1]))  # (B, T, H)
                parts.append(picked * mask[..., None])
        return torch.cat(parts, dim=-1)  # (B, T, H_fw + H_bw)
