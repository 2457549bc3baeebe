import pytest
import torch

from seqtag.modules.embeddings import CharCNN, TokenEmbedder


def padded_conv_reference(cnn: CharCNN, char_ids: torch.Tensor) -> torch.Tensor:
    """Conv1d over each zero-padded token, max over its real characters: the textbook char CNN."""
    h = cnn.conv(cnn.embedding(char_ids).transpose(1, 2))  # (N, F, C)
    return h.masked_fill((char_ids == 0).unsqueeze(1), float("-inf")).amax(dim=2)


@pytest.mark.parametrize("kernel_size", [1, 3, 5])
def test_char_cnn_equals_conv1d_over_padded_tokens(kernel_size):
    torch.manual_seed(0)
    cnn = CharCNN(num_chars=20, char_dim=7, num_filters=11, kernel_size=kernel_size).double()
    lengths = torch.tensor([1, 4, 9, 2, 9, 3])
    char_ids = torch.zeros(len(lengths), 9, dtype=torch.long)
    for row, n in enumerate(lengths):
        char_ids[row, :n] = torch.randint(1, 20, (int(n),))

    ref = padded_conv_reference(cnn, char_ids)
    ref_grads = torch.autograd.grad(ref.sum(), list(cnn.parameters()))
    # forward() on CPU is the end-to-end layout; forward_padded() is what runs on a GPU.
    for out in (cnn(char_ids), cnn.forward_end_to_end(char_ids), cnn.forward_padded(char_ids)):
        grads = torch.autograd.grad(out.sum(), list(cnn.parameters()))
        assert out.shape == (6, 11)
        torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
        for grad, ref_grad in zip(grads, ref_grads):
            torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=0)


def test_char_cnn_token_does_not_see_its_neighbours():
    torch.manual_seed(0)
    cnn = CharCNN(num_chars=20, char_dim=5, num_filters=4)
    alone = cnn(torch.tensor([[3, 4, 5]]))
    among = cnn(torch.tensor([[7, 8, 0], [3, 4, 5], [9, 0, 0]]))[1:2]
    torch.testing.assert_close(alone, among)


def test_char_cnn_rejects_even_kernel():
    with pytest.raises(ValueError, match="odd"):
        CharCNN(num_chars=5, kernel_size=4)


def test_singleton_dropout_replaces_only_singletons_and_only_in_training():
    """About half the occurrences of the marked words become UNK in training; other words never do; evaluation
    sees every word."""
    torch.manual_seed(0)
    embedder = TokenEmbedder(vocab_size=10, num_chars=5, word_dim=4, char_encoder="none", singleton_dropout=0.5)
    embedder.set_singletons([3, 7])
    word_ids = torch.tensor([[2, 3, 7, 9]]).repeat(2000, 1)  # (B, T)
    casing_ids = torch.ones_like(word_ids)
    unk = embedder.words.weight[1]
    vectors = embedder(word_ids, None, casing_ids, None)  # (B, T, 4)
    replaced = (vectors == unk).all(-1)  # (B, T)
    assert not replaced[:, [0, 3]].any()
    assert 0.45 < replaced[:, 1].float().mean() < 0.55 and 0.45 < replaced[:, 2].float().mean() < 0.55
    embedder.eval()
    assert not (embedder(word_ids, None, casing_ids, None) == unk).all(-1).any()
    with pytest.raises(ValueError, match="singleton_dropout"):
        TokenEmbedder(vocab_size=10, num_chars=5, singleton_dropout=1.0)


def test_the_pretrained_table_moves_with_the_module_but_is_no_buffer_for_ddp_to_broadcast():
    embedder = TokenEmbedder(vocab_size=5, num_chars=4, word_dim=3, char_encoder="none")
    embedder.set_pretrained_table(torch.ones(7, 3))
    assert "pretrained_table" not in dict(embedder.named_buffers())  # DDP broadcasts buffers at every step
    embedder.to(torch.float64)
    assert embedder.pretrained_table.dtype == torch.float64 and embedder.pretrained_table.shape == (7, 3)
    assert embedder(torch.tensor([[6]]), torch.ones(1, 1, 1, dtype=torch.long), torch.ones(1, 1, dtype=torch.long),
                    None).dtype == torch.float64  # fmt: skip
