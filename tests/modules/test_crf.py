"""ConditionalRandomField against brute-force enumeration of every tag path."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from seqtag.modules.crf import ConditionalRandomField


def random_constraints(k: int, gen: torch.Generator) -> list[tuple[int, int]]:
    allowed = torch.rand(k + 2, k + 2, generator=gen) < 0.65
    return [(i, j) for i in range(k + 2) for j in range(k + 2) if allowed[i, j]]


def make_crf(k: int, constrained: bool, seed: int, start_end: bool = True) -> ConditionalRandomField:
    gen = torch.Generator().manual_seed(seed)
    constraints = random_constraints(k, gen) if constrained else None
    crf = ConditionalRandomField(k, constraints, include_start_end_transitions=start_end).double()
    with torch.no_grad():
        crf.transitions.copy_(torch.randn(k, k, generator=gen, dtype=torch.float64))
        if start_end:
            crf.start_transitions.copy_(torch.randn(k, generator=gen, dtype=torch.float64))
            crf.end_transitions.copy_(torch.randn(k, generator=gen, dtype=torch.float64))
    return crf


@torch.no_grad()
def path_scores(crf: ConditionalRandomField, emissions: torch.Tensor, mask: torch.Tensor) -> dict[tuple, float]:
    """Score of every allowed path over the real tokens of one sequence: emissions (T, K), mask (T,)."""
    k = crf.num_tags
    allowed = crf.constraint_mask.bool()
    emissions = emissions.detach()
    real = [i for i in range(emissions.size(0)) if mask[i]]
    start = crf.start_transitions if crf.include_start_end_transitions else torch.zeros(k, dtype=torch.float64)
    end = crf.end_transitions if crf.include_start_end_transitions else torch.zeros(k, dtype=torch.float64)
    scores = {}
    for path in itertools.product(range(k), repeat=len(real)):
        hops = [(k, path[0])] + list(zip(path[:-1], path[1:])) + [(path[-1], k + 1)]
        if not all(allowed[a, b] for a, b in hops):
            continue
        s = start[path[0]].detach() + end[path[-1]] + sum(emissions[i, y] for i, y in zip(real, path))
        s = s + sum(crf.transitions[a, b] for a, b in zip(path[:-1], path[1:]))
        scores[path] = float(s)
    return scores


def random_case(seed: int, b: int = 3):
    """Tiny random inputs; every sequence has at least one allowed path."""
    gen = torch.Generator().manual_seed(1000 + seed)
    k = 3 + seed % 2
    t = 1 + seed % 4
    constrained = seed % 3 != 0
    while True:
        crf = make_crf(k, constrained, seed)
        emissions = torch.randn(b, t, k, generator=gen, dtype=torch.float64)
        mask = torch.rand(b, t, generator=gen) < 0.7
        mask[:, 0] = True
        table = [path_scores(crf, emissions[i], mask[i]) for i in range(b)]
        if all(table):
            return crf, emissions, mask, table
        seed += 100


def spread(tags_real: tuple, mask: torch.Tensor) -> torch.Tensor:
    """Place the tags of the real tokens into a (T,) tensor with 0 at masked positions."""
    out = torch.zeros(mask.size(0), dtype=torch.long)
    out[mask] = torch.tensor(tags_real, dtype=torch.long)
    return out


@pytest.mark.parametrize("seed", range(24))
def test_log_partition_matches_brute_force(seed):
    crf, emissions, mask, table = random_case(seed)
    expected = torch.tensor(
        [math.log(sum(math.exp(s) for s in scores.values())) for scores in table], dtype=torch.float64
    )
    torch.testing.assert_close(crf.log_partition(emissions, mask), expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(24))
def test_tree_log_partition_matches_brute_force(seed):
    """The pairwise (GPU) reduction, run here on CPU, against every path."""
    crf, emissions, mask, table = random_case(seed)
    expected = torch.tensor(
        [math.log(sum(math.exp(s) for s in scores.values())) for scores in table], dtype=torch.float64
    )
    checked, mask = crf._check(emissions, None, mask)
    tree = crf._log_partition_tree(checked, mask, *crf._scores(checked.dtype))
    torch.testing.assert_close(tree, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize("t", [1, 2, 3, 5, 8, 13, 40])
def test_tree_log_partition_equals_loop_with_gradients(t):
    """Values and gradients agree with the forward algorithm, also for sequences with no allowed path."""
    gen = torch.Generator().manual_seed(t)
    k, b = 6, 7
    crf = make_crf(k, constrained=True, seed=t)
    emissions = (3 * torch.randn(b, t, k, generator=gen, dtype=torch.float64)).requires_grad_()
    lengths = torch.randint(1, t + 1, (b,), generator=gen)
    lengths[0] = t
    mask = torch.arange(t) < lengths[:, None]
    results = []
    for algorithm in (crf._log_partition_loop, crf._log_partition_tree):
        checked, checked_mask = crf._check(emissions, None, mask)
        value = algorithm(checked, checked_mask, *crf._scores(checked.dtype))
        params = [emissions, crf.transitions, crf.start_transitions]
        grads = torch.autograd.grad(value.sum(), params, allow_unused=True, materialize_grads=True)
        assert all(torch.isfinite(g).all() for g in grads)
        results.append((value, grads))
    (loop, loop_grads), (tree, tree_grads) = results
    torch.testing.assert_close(tree, loop, rtol=1e-12, atol=1e-9)
    for tree_grad, loop_grad in zip(tree_grads, loop_grads):
        torch.testing.assert_close(tree_grad, loop_grad, rtol=0, atol=1e-9)


@pytest.mark.parametrize("seed", range(24))
def test_forward_is_path_score_minus_log_partition(seed):
    crf, emissions, mask, table = random_case(seed)
    gen = torch.Generator().manual_seed(seed)
    golds, expected = [], []
    for i, scores in enumerate(table):
        paths = sorted(scores)
        gold = paths[int(torch.randint(len(paths), (1,), generator=gen))]
        golds.append(spread(gold, mask[i]))
        expected.append(scores[gold] - math.log(sum(math.exp(s) for s in scores.values())))
    tags = torch.stack(golds)
    torch.testing.assert_close(
        crf(emissions, tags, mask), torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-9
    )


@pytest.mark.parametrize("seed", range(24))
def test_decode_is_brute_force_argmax(seed):
    crf, emissions, mask, table = random_case(seed)
    decoded = crf.decode(emissions, mask)
    assert decoded.dtype == torch.long and decoded.shape == mask.shape
    for i, scores in enumerate(table):
        best = max(scores, key=scores.get)
        assert decoded[i].tolist() == spread(best, mask[i]).tolist()
        # The decoded path is one of the allowed paths (brute force lists only those).
        assert tuple(decoded[i][mask[i]].tolist()) in scores


def test_forbidden_gold_path_scores_near_minus_1e4():
    crf = ConditionalRandomField(2, constraints=[(2, 0), (2, 1), (0, 1), (1, 1), (1, 3), (0, 3)])
    emissions = torch.zeros(1, 2, 2)
    assert crf(emissions, torch.tensor([[1, 0]])).item() < -5000  # 1 -> 0 is forbidden
    assert crf(emissions, torch.tensor([[0, 1]])).item() > -50


def test_forbidden_transitions_get_no_gradient():
    crf = make_crf(4, constrained=True, seed=3).float()
    emissions = torch.randn(5, 6, 4)
    tags = crf.decode(emissions)
    (-crf(emissions, tags).sum()).backward()
    forbidden = crf.constraint_mask[:4, :4] == 0
    assert forbidden.any()
    assert (crf.transitions.grad[forbidden] == 0).all()
    assert (crf.start_transitions.grad[crf.constraint_mask[4, :4] == 0] == 0).all()
    assert (crf.end_transitions.grad[crf.constraint_mask[:4, 5] == 0] == 0).all()


def test_gradcheck():
    crf = make_crf(3, constrained=True, seed=4)
    gen = torch.Generator().manual_seed(0)
    emissions = torch.randn(2, 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, False, True]])
    tags = torch.tensor([[0, 1, 2], [2, 0, 1]])
    names = ["transitions", "start_transitions", "end_transitions"]
    params = tuple(getattr(crf, n).detach().clone().requires_grad_() for n in names)

    def log_likelihood(emissions, *values):
        return torch.func.functional_call(crf, dict(zip(names, values)), (emissions, tags, mask))

    assert torch.autograd.gradcheck(log_likelihood, (emissions, *params))
    assert torch.autograd.gradcheck(lambda e: crf.log_partition(e, mask), (emissions,))


@pytest.mark.parametrize("constrained", [False, True])
def test_masked_positions_do_not_matter(constrained):
    crf = make_crf(4, constrained, seed=7)
    gen = torch.Generator().manual_seed(1)
    emissions = torch.randn(4, 6, 4, generator=gen, dtype=torch.float64)
    tags = torch.randint(4, (4, 6), generator=gen)
    mask = torch.rand(4, 6, generator=gen) < 0.6
    mask[:, 0] = True
    mask[0] = True
    other_emissions = torch.where(mask.unsqueeze(2), emissions, torch.randn(4, 6, 4, dtype=torch.float64) * 50)
    other_emissions[~mask.unsqueeze(2).expand_as(emissions) & (torch.rand(4, 6, 4) < 0.2)] = float("inf")
    other_tags = torch.where(mask, tags, -100)

    results = []
    for e, y in [(emissions, tags), (other_emissions, other_tags)]:
        e = e.clone().requires_grad_()
        crf.zero_grad()
        ll = crf(e, y, mask)
        ll.sum().backward()
        results.append((ll.detach(), crf.log_partition(e, mask).detach(), crf.decode(e, mask), e.grad))
        results[-1] += (crf.transitions.grad.clone(),)
    for a, b in zip(*results):
        torch.testing.assert_close(a[mask] if a.dim() == 3 else a, b[mask] if b.dim() == 3 else b, rtol=0, atol=1e-12)
    assert (results[1][3][~mask] == 0).all()
    assert (results[0][2][~mask] == 0).all()


def test_prefix_mask_equals_truncated_sequence():
    crf = make_crf(4, constrained=True, seed=1)
    emissions = torch.randn(1, 7, 4, dtype=torch.float64)
    tags = torch.randint(4, (1, 7))
    mask = torch.tensor([[True] * 4 + [False] * 3])
    torch.testing.assert_close(crf(emissions, tags, mask), crf(emissions[:, :4], tags[:, :4]))
    assert crf.decode(emissions, mask)[:, :4].tolist() == crf.decode(emissions[:, :4]).tolist()


def test_without_start_end_transitions_matches_brute_force():
    crf = make_crf(3, constrained=True, seed=2, start_end=False)
    assert crf.start_transitions is None and "start_transitions" not in crf.state_dict()
    emissions = torch.randn(2, 3, 3, dtype=torch.float64)
    mask = torch.ones(2, 3, dtype=torch.bool)
    table = [path_scores(crf, emissions[i], mask[i]) for i in range(2)]
    expected = torch.tensor(
        [math.log(sum(math.exp(s) for s in scores.values())) for scores in table], dtype=torch.float64
    )
    torch.testing.assert_close(crf.log_partition(emissions, mask), expected, rtol=0, atol=1e-9)


def test_float32_matches_float64_and_autocast():
    crf64 = make_crf(5, constrained=True, seed=5)
    crf32 = make_crf(5, constrained=True, seed=5).float()
    emissions = torch.randn(3, 8, 5, dtype=torch.float64)
    tags = crf64.decode(emissions)
    ll64 = crf64(emissions, tags)
    ll32 = crf32(emissions.float(), tags)
    assert ll32.dtype == torch.float32
    torch.testing.assert_close(ll32.double(), ll64, rtol=1e-5, atol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ll_bf16 = crf32(emissions.to(torch.bfloat16), tags)
        decoded = crf32.decode(emissions.to(torch.bfloat16))
    assert ll_bf16.dtype == torch.float32 and torch.isfinite(ll_bf16).all()
    assert decoded.shape == (3, 8)


def test_constraint_mask_is_persistent_buffer():
    crf = ConditionalRandomField(2, constraints=[(2, 0), (0, 1), (1, 3)])
    state = crf.state_dict()
    assert state["constraint_mask"].shape == (4, 4)
    assert "constraint_mask" not in dict(crf.named_parameters())
    fresh = ConditionalRandomField(2)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.constraint_mask, crf.constraint_mask)
    assert fresh.decode(torch.randn(1, 2, 2)).tolist() == [[0, 1]]


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="num_tags should be a positive int, got 0"):
        ConditionalRandomField(0)
    with pytest.raises(ValueError, match=r"constraints should be .* got \(0, 5\)"):
        ConditionalRandomField(3, constraints=[(0, 5)])
    crf = ConditionalRandomField(3)
    with pytest.raises(ValueError, match=r"Expected emissions of shape \(B, T >= 1, 3\), got \(2, 4, 5\)"):
        crf.decode(torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match=r"Expected tags of shape \(2, 4\), got \(2, 3\)"):
        crf(torch.randn(2, 4, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"Expected mask\[:, 0\] to be all True"):
        crf.log_partition(torch.randn(1, 2, 3), torch.tensor([[False, True]]))


@pytest.mark.parametrize("scale", [1.0, 30.0, 300.0])
def test_confident_emissions_in_float32_match_float64(scale):
    """Large emission gaps (a confident model) under BIOES constraints: the float32 log-likelihood and its gradient
    stay finite and equal the float64 ones, and the gradient is the brute-force marginal."""
    from seqtag.data import schemes

    labels = schemes.labels_for_scheme(["LOC", "PER"], "BIOES")
    crf = ConditionalRandomField(len(labels), schemes.allowed_transitions(labels, "BIOES"))
    gen = torch.Generator().manual_seed(3)
    emissions = torch.randn(4, 6, len(labels), generator=gen, dtype=torch.float64) * scale
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 4:] = False
    tags = crf.decode(emissions, mask)
    grads = {}
    for dtype in (torch.float32, torch.float64):
        e = emissions.to(dtype).detach().clone().requires_grad_()
        crf.to(dtype).zero_grad()
        ll = crf(e, tags, mask)
        ll.sum().backward()
        assert torch.isfinite(ll).all() and torch.isfinite(e.grad).all()
        grads[dtype] = (ll.double(), e.grad.double())
    tolerance = 1e-4 * scale
    torch.testing.assert_close(grads[torch.float32][0], grads[torch.float64][0], rtol=1e-5, atol=tolerance)
    torch.testing.assert_close(grads[torch.float32][1], grads[torch.float64][1], rtol=0, atol=1e-4)
    # d log p / d emissions = gold indicator - marginals; the marginals by brute force on the short sequence.
    crf.double()
    short = emissions[1:2, :4]
    e = short.detach().clone().requires_grad_()
    crf.log_partition(e).sum().backward()
    scores = path_scores(crf, short[0], torch.ones(4, dtype=torch.bool))
    total = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
    marginals = torch.zeros(4, len(labels), dtype=torch.float64)
    for path, s in scores.items():
        for i, y in enumerate(path):
            marginals[i, y] += math.exp(s - total)
    torch.testing.assert_close(e.grad[0], marginals, rtol=0, atol=1e-9)


# ---------------------------------------------------------------------------------------------- inference


@torch.no_grad()
def enumerate_paths(
    crf: ConditionalRandomField, emissions: torch.Tensor, with_start: bool = True, with_end: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every tag sequence over the rows of ``emissions`` (n, K): (paths (P, n), scores (P,) float64, allowed (P,)).

    A score sums the emissions of all n tokens, the transitions between them and, if asked, the start and end
    transitions, with the learned values; ``allowed`` says whether the constraints allow the path (START and END
    hops only when they are included).
    """
    n, k = emissions.shape
    paths = torch.tensor(list(itertools.product(range(k), repeat=n)), dtype=torch.long).view(-1, n)
    mask = crf.constraint_mask.bool()
    zeros = torch.zeros(k, dtype=torch.float64)
    start = crf.start_transitions.double() if crf.include_start_end_transitions else zeros
    end = crf.end_transitions.double() if crf.include_start_end_transitions else zeros
    scores = emissions.double()[torch.arange(n), paths].sum(1)
    scores += crf.transitions.double()[paths[:, :-1], paths[:, 1:]].sum(1)
    allowed = mask[paths[:, :-1], paths[:, 1:]].all(1)
    if with_start:
        scores += start[paths[:, 0]]
        allowed &= mask[k, paths[:, 0]]
    if with_end:
        scores += end[paths[:, -1]]
        allowed &= mask[paths[:, -1], k + 1]
    return paths, scores, allowed


def scheme_crf(scheme: str | None, seed: int, labels_scheme: str = "BIOES") -> ConditionalRandomField:
    """A float64 CRF over ``labels_for_scheme(["PER", "LOC"], labels_scheme)`` with random scores, constrained by
    ``scheme`` (None: unconstrained)."""
    from seqtag.data import schemes

    labels = schemes.labels_for_scheme(["PER", "LOC"], labels_scheme)
    k = len(labels)
    constraints = schemes.allowed_transitions(labels, scheme) if scheme else None
    crf = ConditionalRandomField(k, constraints).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        crf.transitions.copy_(torch.randn(k, k, generator=gen, dtype=torch.float64))
        crf.start_transitions.copy_(torch.randn(k, generator=gen, dtype=torch.float64))
        crf.end_transitions.copy_(torch.randn(k, generator=gen, dtype=torch.float64))
    return crf


def padded_batch(k: int, seed: int, lengths: tuple[int, ...] = (5, 3, 1, 4), scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    t = max(lengths)
    emissions = scale * torch.randn(len(lengths), t, k, generator=gen, dtype=torch.float64)
    mask = torch.arange(t) < torch.tensor(lengths).unsqueeze(1)
    return emissions, mask


def brute_force_lattice(crf, emissions, mask):
    """log_alpha, log_beta, log_z and marginals of one batch over the allowed paths, by enumeration."""
    b, t, k = emissions.shape
    log_alpha = torch.full((b, t, k), -math.inf, dtype=torch.float64)
    log_beta = torch.full((b, t, k), -math.inf, dtype=torch.float64)
    marginals = torch.zeros(b, t, k, dtype=torch.float64)
    log_z = torch.empty(b, dtype=torch.float64)
    for i in range(b):
        real = mask[i].nonzero().squeeze(1)
        e = emissions[i, real]  # (n, K)
        n = len(real)
        paths, scores, allowed = enumerate_paths(crf, e)
        log_z[i] = torch.logsumexp(scores[allowed], 0)
        probs = torch.where(allowed, scores - log_z[i], -math.inf).exp()
        for j in range(n):
            marginals[i, real[j]] = torch.zeros(k, dtype=torch.float64).index_add_(0, paths[:, j], probs)
            prefixes, prefix_scores, ok = enumerate_paths(crf, e[: j + 1], with_end=False)
            suffixes, suffix_scores, ok_s = enumerate_paths(crf, e[j:], with_start=False)
            suffix_scores = suffix_scores - e[j, suffixes[:, 0]]  # beta excludes emission j
            for y in range(k):
                pick = ok & (prefixes[:, -1] == y)
                log_alpha[i, real[j], y] = torch.logsumexp(prefix_scores[pick], 0) if pick.any() else -math.inf
                pick = ok_s & (suffixes[:, 0] == y)
                log_beta[i, real[j], y] = torch.logsumexp(suffix_scores[pick], 0) if pick.any() else -math.inf
    return log_alpha, log_beta, log_z, marginals


def assert_log_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal where ``expected`` is finite; where it is -inf (no allowed path), ``actual`` is -inf or near -1e4."""
    finite = torch.isfinite(expected)
    torch.testing.assert_close(actual[finite], expected[finite], rtol=0, atol=1e-9)
    assert (actual[~finite] < -5000).all()


@pytest.mark.parametrize("seed", range(24))
def test_forward_backward_matches_brute_force(seed):
    """Random constraints, masks with holes: log_alpha, log_beta, log_z and marginals against every path."""
    crf, emissions, mask, _ = random_case(seed)
    log_alpha, log_beta, log_z = crf.forward_backward(emissions, mask)
    expected = brute_force_lattice(crf, emissions, mask)
    assert_log_close(log_alpha, expected[0])
    assert_log_close(log_beta, expected[1])
    torch.testing.assert_close(log_z, expected[2], rtol=0, atol=1e-9)
    torch.testing.assert_close(crf.marginals(emissions, mask), expected[3], rtol=0, atol=1e-9)


@pytest.mark.parametrize("scheme", ["BIOES", "IOB2", None])
@pytest.mark.parametrize("seed", range(3))
def test_forward_backward_scheme_labels_match_brute_force(scheme, seed):
    """9 BIOES labels (scheme None: unconstrained) or 5 IOB2 labels, lengths 1..5 in a padded batch."""
    crf = scheme_crf(scheme, seed, labels_scheme=scheme or "BIOES")
    emissions, mask = padded_batch(crf.num_tags, seed, scale=2.0)
    log_alpha, log_beta, log_z = crf.forward_backward(emissions, mask)
    expected = brute_force_lattice(crf, emissions, mask)
    assert_log_close(log_alpha, expected[0])
    assert_log_close(log_beta, expected[1])
    torch.testing.assert_close(log_z, expected[2], rtol=0, atol=1e-9)
    torch.testing.assert_close(log_z, crf.log_partition(emissions, mask), rtol=0, atol=1e-9)
    marginals = crf.marginals(emissions, mask)
    torch.testing.assert_close(marginals, expected[3], rtol=0, atol=1e-9)
    torch.testing.assert_close(marginals.sum(2), mask.double(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_log_space_passes_match_brute_force(seed):
    """The log-space fallback on its own (right-padded masks)."""
    crf, emissions, _, _ = random_case(seed)
    crf = scheme_crf("BIOES" if seed % 2 else None, seed)
    emissions, mask = padded_batch(crf.num_tags, seed, lengths=(4, 1, 3))
    log_alpha, log_beta, log_z = crf._forward_backward_log(emissions, mask, *crf._scores(torch.float64))
    expected = brute_force_lattice(crf, emissions, mask)
    assert_log_close(torch.where(mask.unsqueeze(2), log_alpha, -math.inf), expected[0])
    assert_log_close(torch.where(mask.unsqueeze(2), log_beta, -math.inf), expected[1])
    torch.testing.assert_close(log_z, expected[2], rtol=0, atol=1e-9)


@pytest.mark.parametrize("scheme", ["BIOES", "IOB2"])
def test_extreme_emissions_fall_back_to_log_space_exactly(scheme):
    """Emission gaps of hundreds of nats underflow the scaled passes in some sequences; those are recomputed."""
    crf = scheme_crf(scheme, 0, labels_scheme=scheme)
    emissions, mask = padded_batch(crf.num_tags, 0, lengths=(5, 4, 1, 3, 5, 2), scale=600.0)
    checked, _ = crf._check(emissions, None, mask)
    with torch.no_grad():
        _, ok = crf._forward_backward_scaled(checked, mask.sum(1), *crf._scores(torch.float64))
    assert not ok.all() and ok.any()
    log_alpha, log_beta, log_z = crf.forward_backward(emissions, mask)
    expected = brute_force_lattice(crf, emissions, mask)
    torch.testing.assert_close(log_z, expected[2], rtol=1e-14, atol=0)
    torch.testing.assert_close(crf.marginals(emissions, mask), expected[3], rtol=0, atol=1e-9)
    for actual, wanted in ((log_alpha, expected[0]), (log_beta, expected[1])):
        # Scores hundreds of nats below a token's best come out inexact, then -inf, as float64 underflows.
        best = wanted.amax(2, keepdim=True).expand_as(wanted)
        near = wanted > best - 300
        torch.testing.assert_close(actual[near], wanted[near], rtol=0, atol=1e-9)
        far = ~near & torch.isfinite(best)
        assert (actual[far] < best[far] - 250).all()
        assert (actual[~mask] == -math.inf).all()


def test_forward_backward_without_allowed_path_matches_log_partition():
    """No allowed path: scored like log_partition, forbidden transitions at FORBIDDEN_SCORE; rows still sum to 1."""
    crf = ConditionalRandomField(2, constraints=[(2, 0), (0, 1), (1, 3)]).double()  # only 0 -> 1 -> END
    emissions = torch.randn(2, 3, 2, dtype=torch.float64)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    log_alpha, log_beta, log_z = crf.forward_backward(emissions, mask)
    torch.testing.assert_close(log_z, crf.log_partition(emissions, mask), rtol=0, atol=1e-9)
    assert log_z[0] < -5000 and log_z[1] > -50  # 0 1 ? has no allowed path, 0 1 has one
    marginals = crf.marginals(emissions, mask)
    assert torch.isfinite(marginals).all()
    torch.testing.assert_close(marginals.sum(2), mask.double(), rtol=0, atol=1e-9)


def test_marginals_dtype_padding_and_autocast():
    crf = scheme_crf("BIOES", 3).float()
    emissions = torch.randn(3, 6, crf.num_tags)
    mask = torch.arange(6) < torch.tensor([[6], [2], [4]])
    marginals = crf.marginals(emissions, mask)
    assert marginals.dtype == torch.float32 and marginals.shape == (3, 6, crf.num_tags)
    assert (marginals[~mask] == 0).all()
    torch.testing.assert_close(marginals.sum(2)[mask], torch.ones(int(mask.sum())), rtol=0, atol=1e-6)
    reference = crf.double().marginals(emissions.double(), mask)
    torch.testing.assert_close(marginals.double(), reference, rtol=0, atol=1e-6)
    crf.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert crf.marginals(emissions.bfloat16(), mask).dtype == torch.float32
    emissions.requires_grad_()
    assert not crf.marginals(emissions, mask).requires_grad  # an inference tool


def brute_force_nbest(crf, emissions, mask, k):
    """For each sequence, its k best allowed (tags over the real tokens, log-probability), best first."""
    out = []
    for i in range(emissions.size(0)):
        paths, scores, allowed = enumerate_paths(crf, emissions[i, mask[i]])
        log_probs = scores - torch.logsumexp(scores[allowed], 0)
        order = torch.argsort(torch.where(allowed, log_probs, -math.inf), descending=True)[:k]
        out.append([(paths[j].tolist(), log_probs[j].item()) for j in order if allowed[j]])
    return out


@pytest.mark.parametrize("k", [2, 5, 40])
@pytest.mark.parametrize("seed", range(12))
def test_nbest_matches_brute_force(seed, k):
    """Random constraints, masks with holes; k = 40 exceeds the number of allowed sequences, often by far."""
    crf, emissions, mask, _ = random_case(seed)
    tags, log_probs = crf.nbest(emissions, mask, k)
    assert tags.shape == (3, k, emissions.size(1)) and tags.dtype == torch.long and log_probs.shape == (3, k)
    for i, expected in enumerate(brute_force_nbest(crf, emissions, mask, k)):
        got = log_probs[i, : len(expected)]
        torch.testing.assert_close(got, torch.tensor([p for _, p in expected], dtype=torch.float64), rtol=0, atol=1e-9)
        assert [tags[i, r][mask[i]].tolist() for r in range(len(expected))] == [p for p, _ in expected]
        assert (log_probs[i, len(expected) :] == -math.inf).all()
        assert (tags[i][:, ~mask[i]] == 0).all()


@pytest.mark.parametrize("scheme", ["BIOES", None])
def test_nbest_scheme_labels_match_brute_force(scheme):
    crf = scheme_crf(scheme, 5)
    emissions, mask = padded_batch(crf.num_tags, 5, lengths=(4, 2, 1, 3))
    tags, log_probs = crf.nbest(emissions, mask, 12)  # 9 paths of length 1 under BIOES constraints: 5
    for i, expected in enumerate(brute_force_nbest(crf, emissions, mask, 12)):
        torch.testing.assert_close(
            log_probs[i, : len(expected)],
            torch.tensor([p for _, p in expected], dtype=torch.float64),
            rtol=0,
            atol=1e-9,
        )
        assert [tags[i, r][mask[i]].tolist() for r in range(len(expected))] == [p for p, _ in expected]
        assert (log_probs[i, len(expected) :] == -math.inf).all()
    # Allowed rows are scored as forward scores them.
    valid = log_probs > -math.inf
    flat_tags = tags.flatten(0, 1)
    forward = crf(emissions.repeat_interleave(12, 0), flat_tags, mask.repeat_interleave(12, 0)).view(4, 12)
    torch.testing.assert_close(log_probs[valid], forward[valid], rtol=0, atol=1e-9)


@pytest.mark.parametrize("constrained", [True, False])
def test_nbest_k1_is_decode(constrained):
    crf = scheme_crf("BIOES" if constrained else None, 7).float()
    gen = torch.Generator().manual_seed(7)
    emissions = 3 * torch.randn(64, 12, crf.num_tags, generator=gen)
    mask = torch.arange(12) < torch.randint(1, 13, (64, 1), generator=gen)
    mask[:, 0] = True
    decoded = crf.decode(emissions, mask)
    tags, log_probs = crf.nbest(emissions, mask, 1)
    assert torch.equal(tags[:, 0], decoded)
    torch.testing.assert_close(log_probs[:, 0], crf(emissions, decoded, mask))
    top, _ = crf.nbest(emissions, mask, 4)
    assert torch.equal(top[:, 0], decoded)  # ties aside, the list Viterbi's best is Viterbi's


def test_nbest_without_allowed_path_and_bad_k():
    crf = ConditionalRandomField(2, constraints=[(2, 0), (0, 1), (1, 3)]).double()  # only 0 -> 1 -> END
    emissions = torch.randn(1, 3, 2, dtype=torch.float64)
    tags, log_probs = crf.nbest(emissions, None, 3)
    assert (log_probs == -math.inf).all() and tags.shape == (1, 3, 3)
    tags, log_probs = crf.nbest(emissions[:, :2], None, 3)
    assert tags[0, 0].tolist() == [0, 1] and log_probs[0, 0].item() == pytest.approx(0.0, abs=1e-12)
    assert (log_probs[0, 1:] == -math.inf).all()
    for k in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="k should be a positive int"):
            crf.nbest(emissions, None, k)


@pytest.mark.parametrize("seed", range(6))
def test_segment_log_probs_match_brute_force(seed):
    """Random entry/exit tables and segments, against every path."""
    crf = scheme_crf("BIOES" if seed % 2 else None, seed)
    k = crf.num_tags
    emissions, mask = padded_batch(k, seed, lengths=(5, 2, 1, 4), scale=2.0)
    gen = torch.Generator().manual_seed(seed)
    before = torch.rand(k, k, generator=gen) < 0.5
    after = torch.rand(k, k, generator=gen) < 0.5
    tags = torch.randint(k, mask.shape, generator=gen)
    if seed % 2:
        tags = crf.decode(emissions, mask)  # allowed tags, so that the probabilities are not all 0
    segments = [(i, s, e) for i, n in enumerate(mask.sum(1).tolist()) for s in range(n) for e in range(s + 1, n + 1)]
    got = crf.segment_log_probs(emissions, mask, tags, torch.tensor(segments), before, after).exp()
    plain = crf.segment_log_probs(emissions, mask, tags, torch.tensor(segments)).exp()
    enumerated = {}
    for (i, s, e), p, p_plain in zip(segments, got.tolist(), plain.tolist()):
        n = int(mask[i].sum())
        if i not in enumerated:
            paths, scores, allowed = enumerate_paths(crf, emissions[i, :n])
            enumerated[i] = paths, torch.where(allowed, scores - torch.logsumexp(scores[allowed], 0), -math.inf).exp()
        paths, probs = enumerated[i]
        inside = (paths[:, s:e] == tags[i, s:e]).all(1)
        enter = before[paths[:, s - 1], tags[i, s]] if s > 0 else torch.ones_like(inside)
        leave = after[tags[i, e - 1], paths[:, e]] if e < n else torch.ones_like(inside)
        assert p == pytest.approx(probs[inside & enter & leave].sum().item(), abs=1e-12)
        assert p_plain == pytest.approx(probs[inside].sum().item(), abs=1e-12)


def test_segment_log_probs_bad_input():
    crf = scheme_crf("BIOES", 0)
    emissions, mask = padded_batch(crf.num_tags, 0, lengths=(3, 2))
    tags = crf.decode(emissions, mask)
    with pytest.raises(ValueError, match="right-padded"):
        crf.segment_log_probs(
            emissions, torch.tensor([[True, False, True], [True, True, False]]), tags, torch.zeros(0, 3)
        )
    for segment in ([0, 1, 1], [1, 0, 3], [2, 0, 1], [0, -1, 2]):
        with pytest.raises(ValueError, match="Expected segments"):
            crf.segment_log_probs(emissions, mask, tags, torch.tensor([segment]))
    with pytest.raises(ValueError, match=r"Expected before of shape \(9, 9\)"):
        crf.segment_log_probs(
            emissions, mask, tags, torch.tensor([[0, 0, 1]]), before=torch.ones(3, 3, dtype=torch.bool)
        )
    assert crf.segment_log_probs(emissions, mask, tags, torch.zeros(0, 3, dtype=torch.long)).shape == (0,)


@pytest.mark.parametrize("scheme", ["IOB1", "BIOES"])
def test_scaled_passes_agree_with_log_space_on_long_contradictory_sequences(scheme):
    """Emissions of scale 600 over 30 tokens: the forward pass can drop a tag (under 1e-308 of its token's mass)
    whose backward score is hundreds of nats ahead, so that it carries most of Z. Such sequences must be found and
    recomputed: log Z, the marginals and segment probabilities equal those of the log-space passes."""
    from seqtag.data import schemes

    torch.manual_seed(0)
    labels = schemes.labels_for_scheme(["PER", "LOC", "ORG", "MISC"], scheme)
    crf = ConditionalRandomField(len(labels), schemes.allowed_transitions(labels, scheme)).double()
    emissions = 600 * torch.randn(64, 30, len(labels), dtype=torch.float64)
    mask = torch.arange(30) < torch.randint(1, 31, (64, 1))
    mask[:, 0] = True
    checked, _ = crf._check(emissions, None, mask)
    log_alpha, log_beta, log_z = crf._forward_backward_log(checked, mask, *crf._scores(torch.float64))
    torch.testing.assert_close(crf.log_partition(emissions, mask), log_z, rtol=1e-12, atol=0)
    torch.testing.assert_close(crf.forward_backward(emissions, mask)[2], log_z, rtol=1e-12, atol=0)
    expected = torch.where(mask.unsqueeze(2), log_alpha + log_beta - log_z[:, None, None], -math.inf).exp()
    torch.testing.assert_close(crf.marginals(emissions, mask), expected, rtol=0, atol=1e-9)
    tags = crf.decode(emissions, mask)
    lengths = mask.sum(1)
    segments = torch.stack([torch.arange(64), lengths // 3, lengths // 3 + 1], 1)
    got = crf.segment_log_probs(emissions, mask, tags, segments).exp()
    rows = torch.arange(64)
    torch.testing.assert_close(got, expected[rows, lengths // 3, tags[rows, lengths // 3]], rtol=0, atol=1e-9)


def test_docstring_examples():
    import doctest

    import seqtag.modules.crf

    assert doctest.testmod(seqtag.modules.crf).failed == 0


def test_the_scaled_forward_algorithm_equals_the_log_space_one_and_gives_way_when_it_underflows():
    from seqtag.data.schemes import allowed_transitions, labels_for_scheme

    labels = labels_for_scheme(["PER", "LOC"], "BIOES")
    crf = ConditionalRandomField(len(labels), allowed_transitions(labels, "BIOES"))
    torch.nn.init.normal_(crf.transitions, std=2.0)
    generator = torch.Generator().manual_seed(3)
    emissions = torch.randn(40, 12, len(labels), generator=generator) * 6
    mask = torch.arange(12)[None, :] < torch.randint(1, 13, (40,), generator=generator)[:, None]
    scores = crf._scores(emissions.dtype)
    scaled = ConditionalRandomField._log_partition_scaled(emissions, mask, *scores)
    log_space = ConditionalRandomField._log_partition_loop(emissions, mask, *scores)
    assert torch.allclose(scaled, log_space, rtol=1e-6, atol=1e-4)
    # The first token is O; after it, every allowed tag (O, B-, S-) is 200 below the forbidden ones (I-, E-): in
    # probability space, float32 holds none of those paths (exp(-200) underflows), in log space they are fine.
    extreme = torch.full((2, 4, len(labels)), -200.0)
    extreme[:, :, [i for i, label in enumerate(labels) if label[0] in "IE"]] = 0.0
    extreme[:, 0] = -1000.0
    extreme[:, 0, labels.index("O")] = 0.0
    everything = torch.ones(2, 4, dtype=torch.bool)
    assert not torch.isfinite(ConditionalRandomField._log_partition_scaled(extreme, everything, *scores)).all()
    exact = ConditionalRandomField._log_partition_loop(extreme, everything, *scores)
    assert torch.isfinite(exact).all()
    assert torch.equal(crf.log_partition(extreme), exact)


@pytest.mark.parametrize("t", [1, 2, 9])
@pytest.mark.parametrize("constrained", [False, True])
def test_unpadded_nll_gradient_equals_autograd_of_the_log_space_loop(t, constrained):
    """The hand-written gradient of unpadded batches (crf_nll) against autograd through the forward algorithm."""
    from seqtag.modules.crf_nll import negative_log_likelihood

    crf = make_crf(5, constrained, seed=t)
    gen = torch.Generator().manual_seed(t)
    emissions = (3 * torch.randn(6, t, 5, generator=gen, dtype=torch.float64)).requires_grad_()
    tags = torch.randint(0, 5, (6, t), generator=gen)
    upstream = torch.randn(6, generator=gen, dtype=torch.float64)
    inputs = [emissions, crf.transitions, crf.start_transitions, crf.end_transitions]
    everything = torch.ones(6, t, dtype=torch.bool)
    scores = crf._scores(torch.float64)
    expected = crf._log_partition_loop(emissions, everything, *scores) - crf._path_score(
        emissions, tags, everything, *scores
    )
    expected_grads = torch.autograd.grad((expected * upstream).sum(), inputs)
    got = negative_log_likelihood(emissions, tags, *crf._scores(torch.float64))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-9)
    got_grads = torch.autograd.grad((got * upstream).sum(), inputs)
    for got_grad, expected_grad in zip(got_grads, expected_grads):
        torch.testing.assert_close(got_grad, expected_grad, rtol=1e-9, atol=1e-12)
    # The module takes it for an unpadded batch on the CPU and returns the log-likelihood.
    log_likelihood = crf(emissions, tags)
    torch.testing.assert_close(log_likelihood, -expected, rtol=1e-12, atol=1e-9)
    assert type(log_likelihood.grad_fn.next_functions[0][0]).__name__ == "_ScaledNegLogLikelihoodBackward"


def test_unpadded_nll_gradcheck_and_second_backward():
    from seqtag.modules.crf_nll import negative_log_likelihood

    gen = torch.Generator().manual_seed(5)
    values = [torch.randn(*shape, generator=gen, dtype=torch.float64).requires_grad_() for shape in [(3, 4, 4), (4, 4)]]
    values += [torch.randn(4, generator=gen, dtype=torch.float64).requires_grad_() for _ in range(2)]
    tags = torch.randint(0, 4, (3, 4), generator=gen)
    assert torch.autograd.gradcheck(lambda e, tr, s, en: negative_log_likelihood(e, tags, tr, s, en), values)
    nll = negative_log_likelihood(values[0], tags, *values[1:]).sum()
    first = torch.autograd.grad(nll, values, retain_graph=True)
    second = torch.autograd.grad(nll, values)  # the saved states are left as they were
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_unpadded_float32_batch_that_underflows_falls_back_to_log_space():
    """An unpadded float32 batch whose scaled passes underflow gets the log-space value and gradient."""
    from seqtag.data.schemes import allowed_transitions, labels_for_scheme
    from seqtag.modules.crf_nll import negative_log_likelihood

    labels = labels_for_scheme(["PER", "LOC"], "BIOES")
    crf = ConditionalRandomField(len(labels), allowed_transitions(labels, "BIOES"))
    extreme = torch.full((2, 4, len(labels)), -200.0)
    extreme[:, :, [i for i, label in enumerate(labels) if label[0] in "IE"]] = 0.0
    extreme[:, 0] = -1000.0
    extreme[:, 0, labels.index("O")] = 0.0
    extreme.requires_grad_()
    tags = torch.full((2, 4), labels.index("O"))
    assert not torch.isfinite(negative_log_likelihood(extreme, tags, *crf._scores(torch.float32))).all()
    log_likelihood = crf(extreme, tags)
    everything = torch.ones(2, 4, dtype=torch.bool)
    scores = crf._scores(torch.float32)
    exact = crf._path_score(extreme, tags, everything, *scores) - crf._log_partition_loop(extreme, everything, *scores)
    assert torch.isfinite(log_likelihood).all()
    assert torch.equal(log_likelihood, exact)
    (gradient,) = torch.autograd.grad(log_likelihood.sum(), extreme)
    assert torch.isfinite(gradient).all()
