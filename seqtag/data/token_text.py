"""The tokens as written, carried in a batch as tensors.

A model that splits words into its own pieces (``model.transformer``: a Hugging Face tokenizer) needs the tokens'
text, not their vocabulary ids, which lose every word unseen in training, nor ``char_ids``, which lose the
characters unseen in training and cut long tokens. Batches then carry ``token_codes``: each token's Unicode code
points, padded with 0, so the batch stays a dict of tensors (moved to the device, split and gathered like the rest)
and the text needs no vocabulary.

Example:
    >>> codes = pad_token_codes([["EU", "rejects"], ["Ça"]])
    >>> codes.shape
    torch.Size([2, 2, 7])
    >>> decode_token_codes(codes, torch.tensor([2, 1]))
    [['EU', 'rejects'], ['Ça']]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

KEY = "token_codes"  # the batch entry: (B, T, L) int32 code points, 0 = padding
# A string that is not valid Unicode (a lone surrogate from bytes decoded with surrogateescape) still round-trips.
_ERRORS = "surrogatepass"


def flat_token_codes(tokens: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The code points of ``tokens`` end to end, and each token's length in code points.

    Shape:
        returns: codes (M,) int32, M = the total length;  lengths (N,) long, N = ``len(tokens)``
    """
    text = "".join(tokens).encode("utf-32-le", _ERRORS)
    codes = torch.from_numpy(np.frombuffer(text, dtype=np.int32).copy())
    lengths = torch.tensor([len(token) for token in tokens], dtype=torch.long)
    return codes, lengths


def pad_token_codes(sentences: Sequence[Sequence[str]]) -> torch.Tensor:
    """The ``token_codes`` of a batch of token lists.

    Shape:
        returns: (B, T, L) int32, T the longest sentence, L the longest token (at least 1)
    """
    width = max((len(tokens) for tokens in sentences), default=0)
    longest = max((len(token) for tokens in sentences for token in tokens), default=0)
    codes = torch.zeros(len(sentences), width, max(longest, 1), dtype=torch.int32)
    for b, tokens in enumerate(sentences):
        for t, token in enumerate(tokens):
            if token:
                codes[b, t, : len(token)] = torch.from_numpy(
                    np.frombuffer(token.encode("utf-32-le", _ERRORS), dtype=np.int32).copy()
                )
    return codes


def decode_token_codes(codes: torch.Tensor, lengths: torch.Tensor) -> list[list[str]]:
    """The token lists of ``token_codes`` (trailing zeros of a token are padding).

    Shape:
        codes: (B, T, L) int;  lengths: (B,) long, sentence lengths
    """
    array = codes.detach().to("cpu", torch.int32).numpy()
    width = array.shape[2]
    sentences = []
    for row, length in zip(array, lengths.tolist()):
        text = row[:length].tobytes().decode("utf-32-le", _ERRORS)  # the tokens side by side, each `width` long
        sentences.append([text[t * width : (t + 1) * width].rstrip("\x00") for t in range(length)])
    return sentences
