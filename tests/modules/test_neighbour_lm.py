import torch
import torch.nn.functional as F

from seqtag.modules.neighbour_lm import NeighbourWordLM


def brute_force(lm, states, word_ids, lengths):
    """The loss written as its definition, one sentence and one word at a time."""
    h = lm.hidden_size
    out = []
    for b, n in enumerate(lengths.tolist()):
        total = torch.zeros((), dtype=states.dtype)
        for t in range(n - 1):
            nxt = int(word_ids[b, t + 1])
            prev = int(word_ids[b, t])
            nxt = nxt if nxt < lm.num_words else 1
            prev = prev if prev < lm.num_words else 1
            total = total - F.log_softmax(lm.next_word(states[b, t, :h]), -1)[nxt]
            total = total - F.log_softmax(lm.previous_word(states[b, t + 1, h:]), -1)[prev]
        out.append(total)
    return torch.stack(out)


def test_each_word_predicts_its_neighbours_and_rare_words_are_unk():
    torch.manual_seed(0)
    lm = NeighbourWordLM(hidden_size=3, num_words=6, hidden=4).double()
    word_ids = torch.tensor([[2, 7, 3, 5], [4, 2, 9, 0], [3, 0, 0, 0]])  # 7 and 9 are rarer than num_words: UNK
    lengths = torch.tensor([4, 3, 1])
    mask = torch.arange(4)[None, :] < lengths[:, None]
    states = torch.randn(3, 4, 6, dtype=torch.float64)
    expected = brute_force(lm, states, word_ids, lengths)
    for select in (True, False):  # the real pairs only (CPU), or every position with padding masked out
        loss = lm(states, word_ids, mask, select=select)
        assert loss.shape == (3,)
        torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
        assert loss[2] == 0  # a one-word sentence has no neighbours


def test_padding_changes_nothing_and_the_forward_half_never_sees_the_word_it_predicts():
    torch.manual_seed(1)
    lm = NeighbourWordLM(hidden_size=2, num_words=10)
    word_ids = torch.tensor([[2, 3, 4]])
    states = torch.randn(1, 3, 4)
    alone = lm(states, word_ids, torch.ones(1, 3, dtype=torch.bool))
    padded = lm(
        torch.cat([states, torch.randn(1, 2, 4)], 1),
        torch.tensor([[2, 3, 4, 0, 0]]),
        torch.tensor([[True, True, True, False, False]]),
    )
    torch.testing.assert_close(alone, padded)
    # The forward state of the last word predicts nothing; nor does the backward state of the first.
    changed = states.clone()
    changed[0, 2, :2] += 5.0
    changed[0, 0, 2:] += 5.0
    torch.testing.assert_close(lm(changed, word_ids, torch.ones(1, 3, dtype=torch.bool)), alone)
