"""Token text in batches (``token_codes``): exact round trips, and the same codes from every batch builder."""

import datasets
import torch

from seqtag.data.datamodule import collate, iter_batches
from seqtag.data.packed import PackedSplit
from seqtag.data.token_text import decode_token_codes, flat_token_codes, pad_token_codes
from seqtag.data.vocab import Vocab

SENTENCES = [["Ça", "va", "😀", ""], ["Zürich", "a\u200bb"], ["東京"]]  # non-BMP, empty, zero-width space, CJK


def test_codes_round_trip_any_string():
    codes = pad_token_codes(SENTENCES)
    assert codes.dtype == torch.int32 and codes.shape == (3, 4, 6)
    assert decode_token_codes(codes, torch.tensor([4, 2, 1])) == SENTENCES
    surrogate = [["a\udcffb"]]  # text decoded with surrogateescape (Python lists only: Arrow refuses it)
    assert decode_token_codes(pad_token_codes(surrogate), torch.tensor([1])) == surrogate
    flat, lengths = flat_token_codes([t for s in SENTENCES for t in s])
    assert lengths.tolist() == [2, 2, 1, 0, 6, 3, 2] and len(flat) == 16


def test_packed_batches_carry_the_same_codes_as_collate():
    vocab = Vocab.build([["Ça", "va"], ["Zürich"]], ["O"])
    rows = []
    for i, tokens in enumerate(SENTENCES):
        row = vocab.encode_tokens(tokens)
        rows.append({**row, "tag_ids": [], "index": i, "document": i})
    encoded = datasets.Dataset.from_list(rows)
    packed = PackedSplit(encoded, SENTENCES)
    for indices in ([0, 1, 2], [2, 0], [1]):
        batch = packed.batch(indices)
        expected = collate([{**rows[i], "tokens": SENTENCES[i]} for i in indices])
        assert torch.equal(batch["token_codes"], expected["token_codes"])
        assert decode_token_codes(batch["token_codes"], batch["lengths"]) == [SENTENCES[i] for i in indices]
    assert "token_codes" not in PackedSplit(encoded).batch([0])  # only when asked for
    with_column = PackedSplit(encoded.add_column("tokens", SENTENCES))  # a ``tokens`` column (streamed chunks)
    assert torch.equal(with_column.batch([0, 1])["token_codes"], packed.batch([0, 1])["token_codes"])
    (batch,) = iter_batches(vocab, SENTENCES, 8, with_text=True)
    order = batch["index"].tolist()
    assert decode_token_codes(batch["token_codes"], batch["lengths"]) == [SENTENCES[i] for i in order]
    assert "token_codes" not in next(iter_batches(vocab, SENTENCES, 8))
