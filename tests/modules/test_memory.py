import torch

from seqtag.modules.memory import DocumentMemory


def brute_force(states, word_ids, documents, mask):
    """The memory written as its definition: loops over every pair of tokens."""
    batch, length, size = states.shape
    out = torch.zeros(batch, length, size + 1, dtype=states.dtype)
    for b in range(batch):
        for t in range(length):
            if not mask[b, t] or word_ids[b, t] <= 1:
                continue
            others = [
                states[c, s]
                for c in range(batch)
                for s in range(length)
                if mask[c, s] and (c, s) != (b, t) and documents[c] == documents[b] and word_ids[c, s] == word_ids[b, t]
            ]
            if others:
                out[b, t, :size] = torch.stack(others).mean(0)
            out[b, t, size] = torch.log1p(torch.tensor(float(len(others)), dtype=states.dtype))
    return out


def test_memory_is_the_mean_of_the_other_occurrences_in_the_document():
    torch.manual_seed(0)
    word_ids = torch.tensor([[5, 6, 5, 1], [6, 5, 1, 0], [5, 7, 0, 0], [7, 7, 5, 0]])  # 1 = UNK, 0 = padding
    documents = torch.tensor([0, 0, 4, 4])
    lengths = torch.tensor([4, 3, 2, 3])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    states = torch.randn(4, 4, 3, dtype=torch.float64, requires_grad=True)
    memory = DocumentMemory(vocab_size=8)
    out = memory(states, word_ids, documents, mask)
    torch.testing.assert_close(out, brute_force(states.detach(), word_ids, documents, mask), rtol=0, atol=1e-12)
    # Word 5 occurs twice in document 0's first sentence and once in its second: three occurrences.
    torch.testing.assert_close(out[0, 0, :3], (states[0, 2] + states[1, 1]).detach() / 2)
    assert out[0, 3].abs().sum() == 0 and out[1, 3].abs().sum() == 0  # UNK and padding get nothing
    # Documents are apart: word 5 of document 4 sees only its own document's other occurrence.
    torch.testing.assert_close(out[2, 0, :3], states[3, 2].detach())
    assert torch.autograd.gradcheck(lambda s: memory(s, word_ids, documents, mask), (states,))


def test_unpadded_call_equals_the_masked_one():
    torch.manual_seed(0)
    states = torch.randn(2, 3, 4)
    word_ids = torch.tensor([[2, 3, 2], [3, 3, 4]])
    documents = torch.tensor([9, 9])
    memory = DocumentMemory(vocab_size=5)
    full = torch.ones(2, 3, dtype=torch.bool)
    torch.testing.assert_close(memory(states, word_ids, documents, None), memory(states, word_ids, documents, full))


def test_memory_has_fixed_shapes_and_no_host_sync():
    """On the meta device a tensor has no data: an operation whose output shape depends on values (boolean
    indexing, torch.unique, nonzero), which needs a host sync on a GPU, raises there."""
    states = torch.randn(3, 5, 4, device="meta")
    word_ids = torch.randint(0, 9, (3, 5)).to("meta")
    documents = torch.tensor([0, 0, 1]).to("meta")
    mask = torch.ones(3, 5, dtype=torch.bool).to("meta")
    assert DocumentMemory(vocab_size=9)(states, word_ids, documents, mask).shape == (3, 5, 5)
