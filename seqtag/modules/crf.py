"""Linear-chain conditional random field over tag sequences.

Follows the AllenNLP ``ConditionalRandomField`` (constraints as ``(from, to)`` pairs with START = K and
END = K + 1, forward algorithm with masked steps carrying ``alpha``), with two changes:

* constraints are applied in the log-likelihood as well as in Viterbi decoding, so training fits a
  distribution over valid tag sequences only;
* Viterbi runs over the whole batch at once and backtracks with ``gather``; the only Python loops are
  over time.

For inference it adds per-token marginals from a forward-backward pass in scaled probabilities (one
``(K, K) @ (K, B)`` product per step, with an exact log-space fallback), the probability of tag segments on
top of it (span confidences), and exact k-best decoding by list Viterbi.

References: Lafferty et al. 2001, "Conditional Random Fields"; Lample et al. 2016, "Neural Architectures
for Named Entity Recognition"; allenai/allennlp ``allennlp/modules/conditional_random_field.py``; Rabiner 1989,
"A Tutorial on Hidden Markov Models", §V.A (scaling); Seshadri & Sundberg 1994, "List Viterbi Decoding
Algorithms with Applications".
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from seqtag.modules.crf_nll import negative_log_likelihood

# Score given to a forbidden transition. Finite, so logsumexp and its gradient never meet ``-inf - -inf``;
# exp(-1e4) is exactly 0 in float32 and float64, so forbidden paths carry no probability mass.
FORBIDDEN_SCORE = -1e4
# Largest (B, T/2, K, K, K) intermediate of the tree-shaped log partition (2**25 floats: 128 MiB in float32).
TREE_MAX_ELEMENTS = 2**25
# Largest |log sum_y alpha_t(y) beta_t(y) - log Z| the scaled forward-backward accepts at a token (see
# _forward_backward_scaled): float64 rounding stays far below it, and lost mass above it sends the sequence to the
# exact log-space passes. It bounds the error of marginals and span probabilities at about K times this.
CONSISTENCY_TOLERANCE = 1e-9
# Tokens per pass of that check: its (chunk, K, B) float64 temporaries stay below a megabyte for B = 256, K = 17.
MASS_CHUNK = 8
# Off-diagonal of the log-semiring identity. Not FORBIDDEN_SCORE: exp(x - 1e30) is 0 for any score x, so a product
# with the identity is exact even next to forbidden (-1e4) entries; and not -inf, whose products would give
# logsumexp(-inf, ..., -inf) and NaN gradients.
IDENTITY_OFF_DIAGONAL = -1e30


class _Lattice(NamedTuple):
    """Forward and backward scores of a right-padded batch in scaled form, float64 (see ``_forward_backward_scaled``).

    Tag-major: ``log_alpha[b, t] = log(forward[t, :, b] * factors[t, :, b]) + alpha_shift[t, 0, b]``,
    ``log_beta[b, t] = log(beta_reversed[r, :, b]) + beta_shift[r, 0, b]`` with ``r = T - 1 - t``, for ``t >= 1``
    ``factors[t, y, b] = exp(emissions[b, t, y] - peaks[t, 0, b])``, and ``exp_transitions = exp(transitions -
    transition_max)``. Values past a sequence's end are unspecified.
    """

    forward: Tensor  # (T, K, B)
    alpha_shift: Tensor  # (T, 1, B)
    beta_reversed: Tensor  # (T, K, B) in reverse token order
    beta_shift: Tensor  # (T, 1, B) in reverse token order
    factors: Tensor  # (T, K, B)
    peaks: Tensor  # (T, 1, B)
    exp_transitions: Tensor  # (K, K)
    transition_max: Tensor  # ()
    log_z: Tensor  # (B,)


class _Exact(NamedTuple):
    """Log-space forward-backward scores of the sequences ``rows`` of a batch, where the scaled form underflows."""

    rows: Tensor  # (R,) batch indices
    log_alpha: Tensor  # (R, T, K)
    log_beta: Tensor  # (R, T, K)


class ConditionalRandomField(nn.Module):
    r"""Linear-chain CRF: scores tag sequences given per-token emission scores.

    The score of tags :math:`y_1 \dots y_n` over the real tokens of a sequence is

    .. math::
        s(y) = \text{start}_{y_1} + \sum_{t=1}^{n} e_{t, y_t} + \sum_{t=2}^{n} A_{y_{t-1}, y_t} + \text{end}_{y_n}

    and the model is :math:`p(y \mid e) = \exp(s(y)) / Z` with :math:`Z = \sum_{y'} \exp(s(y'))`.

    Constraints: ``constraints`` lists the *allowed* ``(from, to)`` transitions, with START = ``num_tags`` and
    END = ``num_tags + 1`` (as returned by ``seqtag.data.schemes.allowed_transitions``). Every pair not listed
    is forbidden and scores ``FORBIDDEN_SCORE`` (-1e4) instead of its learned value, in :meth:`forward`,
    :meth:`log_partition` **and** :meth:`decode`. Unlike AllenNLP, which applies constraints only when decoding,
    the log-likelihood is therefore normalized over valid sequences only, and the learned scores of forbidden
    transitions get no gradient. A gold sequence that breaks a constraint gets a log-likelihood near -1e4.

    Masking: positions where ``mask`` is False are skipped; the chain links consecutive real tokens. Tags and
    emissions at masked positions never affect any result. ``mask[:, 0]`` must be all True.

    Precision: everything is computed in at least float32 (float16/bfloat16 emissions are upcast and autocast is
    disabled inside), float64 stays float64. The inference methods :meth:`forward_backward`, :meth:`marginals`,
    :meth:`segment_log_probs` compute in float64 and return the same dtype as :meth:`forward`; like
    :meth:`decode` and :meth:`nbest` they take no gradients.

    Args:
        num_tags: number of tags K. Default: required.
        constraints: allowed ``(from_tag, to_tag)`` pairs over ids ``0 .. K + 1``; ``None`` allows everything.
            Default: ``None``
        include_start_end_transitions: learn ``start_transitions`` and ``end_transitions``; if False they are
            fixed at zero (constraints on START/END still apply). Default: ``True``

    Attributes:
        transitions: (K, K) learned score of going from tag i to tag j.
        start_transitions: (K,) learned score of starting with each tag (only if
            ``include_start_end_transitions``).
        end_transitions: (K,) learned score of ending with each tag (only if ``include_start_end_transitions``).
        constraint_mask: (K + 2, K + 2) float buffer, 1.0 where the transition is allowed.

    Shape:
        emissions: (B, T, K) float
        tags: (B, T) long
        mask: (B, T) bool
        returns: (B,) float from :meth:`forward` / :meth:`log_partition`, (B, T) long from :meth:`decode`

    Example:
        >>> crf = ConditionalRandomField(3, constraints=[(3, 0), (0, 1), (1, 1), (1, 4), (0, 4)])
        >>> emissions = torch.randn(2, 4, 3)
        >>> mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
        >>> crf(emissions, torch.zeros(2, 4, dtype=torch.long), mask).shape
        torch.Size([2])
        >>> crf.decode(emissions, mask)[1, 2:].tolist()
        [0, 0]
    """

    def __init__(
        self,
        num_tags: int,
        constraints: list[tuple[int, int]] | None = None,
        include_start_end_transitions: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags < 1:
            raise ValueError(f"num_tags should be a positive int, got {num_tags!r}")
        self.num_tags = num_tags
        self.include_start_end_transitions = include_start_end_transitions

        if constraints is None:
            constraint_mask = torch.ones(num_tags + 2, num_tags + 2)
        else:
            constraint_mask = torch.zeros(num_tags + 2, num_tags + 2)
            for pair in constraints:
                if len(pair) != 2 or not all(0 <= int(i) < num_tags + 2 for i in pair):
                    raise ValueError(
                        f"constraints should be (from, to) pairs of tag ids in [0, {num_tags + 1}], got {pair!r}"
                    )
                constraint_mask[int(pair[0]), int(pair[1])] = 1.0
        # Persistent, so a checkpoint carries its constraints.
        self.register_buffer("constraint_mask", constraint_mask)

        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        if include_start_end_transitions:
            self.start_transitions = nn.Parameter(torch.empty(num_tags))
            self.end_transitions = nn.Parameter(torch.empty(num_tags))
        else:
            self.register_parameter("start_transitions", None)
            self.register_parameter("end_transitions", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-normal transitions and standard-normal start/end scores, as in AllenNLP."""
        nn.init.xavier_normal_(self.transitions)
        if self.include_start_end_transitions:
            nn.init.normal_(self.start_transitions)
            nn.init.normal_(self.end_transitions)

    def extra_repr(self) -> str:
        s = f"num_tags={self.num_tags}"
        if not bool(self.constraint_mask.all()):
            s += ", constraints=True"
        if not self.include_start_end_transitions:
            s += ", include_start_end_transitions=False"
        return s

    # ------------------------------------------------------------------------------------------------ helpers

    def _scores(self, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """Transition, start and end scores with forbidden entries replaced by ``FORBIDDEN_SCORE``.

        Args:
            dtype: compute dtype.

        Returns:
            ``(transitions (K, K), start (K,), end (K,))`` in ``dtype``.
        """
        k = self.num_tags
        allowed = self.constraint_mask > 0.5  # (K+2, K+2)
        forbidden = torch.tensor(FORBIDDEN_SCORE, dtype=dtype, device=allowed.device)
        transitions = torch.where(allowed[:k, :k], self.transitions.to(dtype), forbidden)  # (K, K)
        if self.include_start_end_transitions:
            start = self.start_transitions.to(dtype)
            end = self.end_transitions.to(dtype)
        else:
            start = end = torch.zeros(k, dtype=dtype, device=allowed.device)
        start = torch.where(allowed[k, :k], start, forbidden)  # (K,)
        end = torch.where(allowed[:k, k + 1], end, forbidden)  # (K,)
        return transitions, start, end

    def _compute_dtype(self, emissions: Tensor) -> torch.dtype:
        """The dtype results are computed and returned in: float32, or float64 if emissions or parameters are."""
        return torch.promote_types(torch.promote_types(emissions.dtype, self.transitions.dtype), torch.float32)

    def _check(
        self, emissions: Tensor, tags: Tensor | None, mask: Tensor | None, zero_padding: bool = True
    ) -> tuple[Tensor, Tensor]:
        """Validate shapes and return ``(emissions, mask)`` in compute dtype / bool.

        Args:
            emissions: (B, T, K) float.
            tags: (B, T) long or None.
            mask: (B, T) or None (all True).
            zero_padding: set emissions at masked positions to 0; callers whose results never read them skip it.

        Returns:
            Emissions in ``max(float32, dtype)`` and a bool mask.
        """
        if emissions.dim() != 3 or emissions.size(2) != self.num_tags or emissions.size(1) == 0:
            raise ValueError(f"Expected emissions of shape (B, T >= 1, {self.num_tags}), got {tuple(emissions.shape)}")
        b, t, _ = emissions.shape
        if tags is not None and tags.shape != (b, t):
            raise ValueError(f"Expected tags of shape {(b, t)}, got {tuple(tags.shape)}")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=emissions.device)
        elif mask.shape != (b, t):
            raise ValueError(f"Expected mask of shape {(b, t)}, got {tuple(mask.shape)}")
        # Callers pass uint8/long/bool masks; indexing and torch.where need bool.
        mask = mask.to(torch.bool)
        if mask.device.type == "cpu":
            if not bool(mask[:, 0].all()):
                raise ValueError("Expected mask[:, 0] to be all True, got a sequence that starts with padding")
        else:
            # On an accelerator, checked without waiting for the device (no host sync in every training step).
            torch._assert_async(mask[:, 0].all(), "Expected mask[:, 0] to be all True")
        dtype = self._compute_dtype(emissions)
        if not zero_padding:
            return emissions.to(dtype).contiguous(), mask
        # Zero padded emissions so that inf/nan there cannot leak into results or gradients.
        emissions = torch.where(mask.unsqueeze(2), emissions.to(dtype), 0)
        return emissions, mask

    # ------------------------------------------------------------------------------------------------ public

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor | None = None) -> Tensor:
        """Log-likelihood ``log p(tags | emissions)`` of each sequence.

        Args:
            emissions: unnormalized tag scores.
            tags: gold tag ids; values at masked positions are ignored (any integer is fine).
            mask: True for real tokens. Default: all True.

        Returns:
            Log-likelihood per sequence; sum or mean it and negate for a loss.

        Shape:
            emissions: (B, T, K) float
            tags: (B, T) long
            mask: (B, T) bool
            returns: (B,) float
        """
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            emissions, mask = self._check(emissions, tags, mask, zero_padding=False)
            transitions, start, end = self._scores(emissions.dtype)
            # On CPU, unpadded batches (exact-length bucketing, the default there) take the scaled algorithm with a
            # hand-written gradient: forward and backward 0.48 vs 0.87 ms for 10 sentences of 14 tokens, K = 17.
            if emissions.device.type == "cpu" and bool(mask.all()):
                nll = negative_log_likelihood(emissions, tags.long(), transitions, start, end)
                if bool(torch.isfinite(nll).all()):
                    return -nll
            emissions = torch.where(mask.unsqueeze(2), emissions, 0)  # inf/nan at padding cannot leak
            return self._path_score(emissions, tags, mask, transitions, start, end) - self._log_partition(
                emissions, mask, transitions, start, end
            )

    def log_partition(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Log of the sum of ``exp(score)`` over every allowed tag sequence (forward algorithm).

        Shape:
            emissions: (B, T, K) float
            mask: (B, T) bool
            returns: (B,) float
        """
        with torch.autocast(device_type=emissions.device.type, enabled=False):
            emissions, mask = self._check(emissions, None, mask)
            return self._log_partition(emissions, mask, *self._scores(emissions.dtype))

    def decode(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Most likely allowed tag sequence of each batch element (Viterbi), padded with 0.

        Shape:
            emissions: (B, T, K) float
            mask: (B, T) bool
            returns: (B, T) long, 0 where ``mask`` is False
        """
        with torch.no_grad(), torch.autocast(device_type=emissions.device.type, enabled=False):
            emissions, mask = self._check(emissions, None, mask)
            transitions, start, end = self._scores(emissions.dtype)
            b, _, k = emissions.shape
            keep = torch.arange(k, device=emissions.device).expand(b, k)  # (B, K) identity backpointers
            score = start + emissions[:, 0]  # (B, K)
            backpointers = []
            # On CPU, exact-length batches (the default there) skip the masking: one host check per batch.
            padded = emissions.device.type != "cpu" or not bool(mask.all())
            steps = zip(emissions.unbind(1)[1:], mask.unsqueeze(2).unbind(1)[1:])  # (B, K), (B, 1) per step
            for emission, step in steps:
                # score[b, prev, None] + transitions[prev, cur] -> best prev for each cur
                best, prev = (score.unsqueeze(2) + transitions).max(dim=1)  # (B, K), (B, K)
                if padded:
                    score = torch.where(step, best + emission, score)
                    # A masked step keeps every tag: tag at i is the tag at i - 1.
                    backpointers.append(torch.where(step, prev, keep))
                else:
                    score = best + emission
                    backpointers.append(prev)
            tag = (score + end).argmax(dim=1, keepdim=True)  # (B, 1)
            path = [tag]
            for pointers in reversed(backpointers):
                tag = pointers.gather(1, tag)  # (B, 1)
                path.append(tag)
            path.reverse()
            tags = torch.cat(path, dim=1)  # (B, T)
            return tags.masked_fill(~mask, 0)

    def scaled(self, factor: float) -> ConditionalRandomField:
        """A copy whose learned scores are multiplied by ``factor`` (constraints kept): with emissions multiplied by
        the same factor it is the CRF at temperature ``1 / factor``, whose probabilities are calibrated by
        temperature scaling (Guo et al. 2017) while its Viterbi path stays the same."""
        copy = ConditionalRandomField(self.num_tags, None, self.include_start_end_transitions)
        copy.load_state_dict(self.state_dict())  # the constraints are a buffer: copied as they are
        with torch.no_grad():
            for parameter in copy.parameters():
                parameter.mul_(factor)
        return copy.to(self.transitions.device)

    def forward_backward(self, emissions: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Forward and backward log-scores of every tag at every token, and the log partition (no gradients).

        ``log_alpha[b, t, y]`` is the log-sum of ``exp(score)`` over the allowed tag prefixes of tokens ``0..t``
        that end in ``y``: start transition, transitions and emissions up to and including token ``t``.
        ``log_beta[b, t, y]`` is the same over the allowed continuations after tag ``y`` at ``t``: transitions and
        emissions of the later tokens and the end transition, but not emission ``t`` (at the last real token it is
        ``end[y]``). So ``log_alpha + log_beta - log_z`` is ``log p(y_t = y)``.

        Tags that no allowed path reaches at ``t`` get ``-inf``, as do masked positions. Scores several hundred
        nats below the best tag's at that token lose precision and then become ``-inf`` as float64 underflows;
        ``log_z`` and the marginals are not affected. A sequence without any allowed path is scored as
        :meth:`log_partition` scores it, with forbidden transitions at ``FORBIDDEN_SCORE``. See
        :meth:`_forward_backward_scaled` for the algorithm.

        Shape:
            emissions: (B, T, K) float
            mask: (B, T) bool
            returns: (B, T, K), (B, T, K), (B,) float
        """
        with torch.no_grad(), torch.autocast(device_type=emissions.device.type, enabled=False):
            emissions, mask = self._check(emissions, None, mask)
            b, t, k = emissions.shape
            lengths = mask.sum(1)  # (B,)
            order = None
            if not torch.equal(mask, self._right_padded(lengths, t)):
                # The passes need right padding: real tokens first (stable sort), results put back below.
                order = torch.argsort((~mask).to(torch.uint8), dim=1, stable=True).unsqueeze(2).expand(b, t, k)
                emissions = emissions.gather(1, order)  # (B, T, K)
            lattice, exact = self._lattice(emissions, lengths, self._scores(torch.float64))
            log_alpha = (lattice.forward * lattice.factors).log_() + lattice.alpha_shift  # (T, K, B)
            log_beta = (lattice.beta_reversed.log() + lattice.beta_shift).flip(0)  # (T, K, B)
            log_alpha, log_beta = log_alpha.permute(2, 0, 1), log_beta.permute(2, 0, 1)  # (B, T, K)
            if exact is not None:
                log_alpha[exact.rows], log_beta[exact.rows] = exact.log_alpha, exact.log_beta
            padding = ~self._right_padded(lengths, t).unsqueeze(2)  # (B, T, 1)
            log_alpha = log_alpha.masked_fill(padding, float("-inf"))
            log_beta = log_beta.masked_fill(padding, float("-inf"))
            if order is not None:
                log_alpha = torch.empty_like(log_alpha).scatter_(1, order, log_alpha)
                log_beta = torch.empty_like(log_beta).scatter_(1, order, log_beta)
            dtype = emissions.dtype
            return log_alpha.to(dtype), log_beta.to(dtype), lattice.log_z.to(dtype)

    def marginals(self, emissions: Tensor, mask: Tensor | None = None) -> Tensor:
        """Probability of each tag at each token under the CRF, ``p(y_t = y | emissions)`` (no gradients).

        Shape:
            emissions: (B, T, K) float
            mask: (B, T) bool
            returns: (B, T, K) float; each real token's row sums to 1, masked positions are all 0
        """
        log_alpha, log_beta, log_z = self.forward_backward(emissions, mask)
        # exp(-inf) = 0 at masked positions and for unreachable tags.
        return torch.exp(log_alpha + log_beta - log_z[:, None, None])  # (B, T, K)

    def segment_log_probs(
        self,
        emissions: Tensor,
        mask: Tensor | None,
        tags: Tensor,
        segments: Tensor,
        before: Tensor | None = None,
        after: Tensor | None = None,
    ) -> Tensor:
        """Log-probability of tag segments: a run of given tags, entered and left only through given tags.

        For segment ``n = (b, start, end)`` of sequence ``b`` (``end`` exclusive) this is the log-probability that
        tokens ``start .. end - 1`` carry the tags ``tags[b, start:end]``, that the tag ``p`` before ``start``
        satisfies ``before[p, tags[b, start]]`` (the sequence start always does) and that the tag ``q`` after the
        segment satisfies ``after[tags[b, end - 1], q]`` (the sequence end always does). With
        ``before = after = None`` it is the probability of those tags alone. Computed from :meth:`_lattice` at the
        segment ends only, so many segments cost little more than one forward-backward pass. No gradients.

        Args:
            emissions: unnormalized tag scores.
            mask: True for real tokens, right padded (real tokens first), or None (all True).
            tags: tag ids; values at masked positions are ignored.
            segments: ``(batch index, start, end)`` rows with ``0 <= start < end <= length``.
            before: which previous tags may enter a segment, by its first tag. Default: any.
            after: which next tags may follow a segment, by its last tag. Default: any.

        Returns:
            Log-probability of each segment.

        Raises:
            ValueError: for a mask with padding between real tokens, or a segment outside its sequence.

        Shape:
            emissions: (B, T, K) float
            mask: (B, T) bool
            tags: (B, T) long
            segments: (N, 3) long
            before, after: (K, K) bool, ``[previous tag, next tag]``
            returns: (N,) float
        """
        with torch.no_grad(), torch.autocast(device_type=emissions.device.type, enabled=False):
            # Padded emissions are left as they are: with right padding, they only reach values past each
            # sequence's end (the lattice's garbage, prefix sums after the last token), never a result.
            emissions, mask = self._check(emissions, tags, mask, zero_padding=False)
            b, t, k = emissions.shape
            lengths = mask.sum(1)  # (B,)
            if not torch.equal(mask, self._right_padded(lengths, t)):
                raise ValueError("Expected a right-padded mask (real tokens first), got padding between real tokens")
            if segments.dim() != 2 or segments.size(1) != 3:
                raise ValueError(f"Expected segments of shape (N, 3), got {tuple(segments.shape)}")
            for name, table in (("before", before), ("after", after)):
                if table is not None and table.shape != (k, k):
                    raise ValueError(f"Expected {name} of shape {(k, k)}, got {tuple(table.shape)}")
            index, starts, ends = segments.long().unbind(1)  # (N,) each
            length = lengths[index.clamp(0, b - 1)]  # (N,)
            if len(index) and not bool(
                ((index >= 0) & (index < b) & (starts >= 0) & (starts < ends) & (ends <= length)).all()
            ):
                raise ValueError("Expected segments (b, start, end) with 0 <= b < B and 0 <= start < end <= length")
            dtype = emissions.dtype
            scores = self._scores(torch.float64)
            lattice, exact = self._lattice(emissions, lengths, scores)
            transitions, start_scores, end_scores = scores
            everything = torch.ones(k, k, dtype=torch.bool, device=emissions.device)
            before = everything if before is None else before.to(device=emissions.device, dtype=torch.bool)
            after = everything if after is None else after.to(device=emissions.device, dtype=torch.bool)
            tags = torch.where(mask, tags.long(), 0)  # (B, T)
            first, last = tags[index, starts], tags[index, ends - 1]  # (N,)
            prev = (starts - 1).clamp_min(0)  # (N,) token before the segment, or any valid position
            has_next = ends < length  # (N,)
            nxt = torch.where(has_next, ends, length - 1)  # (N,) token after the segment, or any valid one

            # Into the segment: log sum over allowed p of exp(log_alpha[start - 1, p] + transitions[p, first]).
            # Out of it: log sum over allowed q of exp(transitions[last, q] + emissions[end, q] + log_beta[end, q]).
            # Both in the lattice's scaled probabilities, adding back what they were divided by: the transition
            # maximum, the alpha and beta shifts and, for the emissions (factors) of token ``end``, their peak.
            exp_transitions = lattice.exp_transitions
            alpha = lattice.forward[prev, :, index] * lattice.factors[prev, :, index]  # (N, K)
            head = (alpha * (exp_transitions * before)[:, first].T).sum(1).log()  # (N,)
            head += lattice.transition_max + lattice.alpha_shift[prev, 0, index]
            step = t - 1 - nxt  # (N,) where the backward pass holds token nxt
            beta = lattice.beta_reversed[step, :, index] * lattice.factors[nxt, :, index]  # (N, K)
            tail = (beta * (exp_transitions * after)[last]).sum(1).log()  # (N,)
            tail += lattice.transition_max + lattice.peaks[nxt, 0, index] + lattice.beta_shift[step, 0, index]
            if exact is not None:
                # The same sums in log space for the segments of the sequences the lattice cannot hold.
                row_of = torch.full_like(lengths, -1)
                row_of[exact.rows] = torch.arange(len(exact.rows), device=row_of.device)
                redo = (row_of[index] >= 0).nonzero().squeeze(1)  # (M,) segments
                row, first_r, last_r = row_of[index[redo]], first[redo], last[redo]  # (M,)
                into = exact.log_alpha[row, prev[redo]] + transitions[:, first_r].T  # (M, K)
                head[redo] = torch.logsumexp(into.masked_fill(~before[:, first_r].T, -math.inf), 1)
                out = transitions[last_r] + emissions[index[redo], nxt[redo]].double()  # (M, K)
                out += exact.log_beta[row, nxt[redo]]
                tail[redo] = torch.logsumexp(out.masked_fill(~after[last_r], -math.inf), 1)
            head = torch.where(starts > 0, head, start_scores[first])  # (N,)
            tail = torch.where(has_next, tail, end_scores[last])  # (N,)

            # The segment itself: token t scores emission t and the transition into t; float64 like the lattice,
            # also because prefix sums are subtracted.
            token = emissions.gather(2, tags.unsqueeze(2)).squeeze(2).double()  # (B, T)
            token[:, 1:] += transitions[tags[:, :-1], tags[:, 1:]]
            prefix = token.cumsum(1)  # (B, T)
            inside = prefix[index, ends - 1] - prefix[index, starts] + emissions[index, starts, first].double()
            return (head + inside + tail - lattice.log_z[index]).to(dtype)  # (N,)

    def nbest(self, emissions: Tensor, mask: Tensor | None, k: int) -> tuple[Tensor, Tensor]:
        """The ``k`` most likely allowed tag sequences of each batch element (list Viterbi), best first.

        Exact: for every token and tag the ``k`` best partial paths are kept, and each step picks, for every tag,
        the ``k`` best extensions out of ``K * k`` candidates. ``k = 1`` is :meth:`decode`. When a sequence has
        fewer than ``k`` allowed tag sequences, the remaining rows get log-probability ``-inf`` (their tags are
        meaningless), as does a sequence with no allowed path at all.

        Args:
            emissions: unnormalized tag scores.
            mask: True for real tokens, or None (all True).
            k: number of sequences to return.

        Returns:
            ``(tags, log_probs)``: tag ids, 0 where ``mask`` is False, and ``log p(tags | emissions)``, the
            same value :meth:`forward` gives for those tags.

        Raises:
            ValueError: if ``k`` is not a positive int.

        Shape:
            emissions: (B, T, K) float
            mask: (B, T) bool
            returns: (B, k, T) long, (B, k) float, sorted by decreasing log-probability
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k should be a positive int, got {k!r}")
        with torch.no_grad(), torch.autocast(device_type=emissions.device.type, enabled=False):
            emissions, mask = self._check(emissions, None, mask)
            transitions, start, end = self._scores(emissions.dtype)
            if k == 1:
                # The same path as decode, ties included.
                tags = self.decode(emissions, mask).unsqueeze(1)  # (B, 1, T)
                scores = self._path_score(emissions, tags[:, 0], mask, transitions, start, end).unsqueeze(1)
            else:
                tags, scores = self._list_viterbi(emissions, mask, transitions, start, end, k)
            log_z = self._log_partition(emissions, mask, transitions, start, end)  # (B,)
            # Ranking by FORBIDDEN_SCORE puts every allowed path before any forbidden one; the forbidden ones and
            # the filler rows (score -inf) are then marked -inf.
            valid = self._allowed_paths(tags, mask) & (scores > float("-inf"))
            log_probs = torch.where(valid, scores - log_z.unsqueeze(1), float("-inf"))  # (B, k)
            return tags.masked_fill(~mask.unsqueeze(1), 0), log_probs

    # ------------------------------------------------------------------------------------------------ algorithms

    @staticmethod
    def _log_partition(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
        """Log partition: the tree reduction on accelerators when it fits in memory, else the forward algorithm.

        On a GPU the forward algorithm's loop launches about 10 small kernels per time step, forward and backward,
        and training is bound by those launches; the tree needs ``log2(T)`` levels. On a CPU the tree's ``K``-fold
        extra arithmetic costs more than the loop.
        """
        b, t, k = emissions.shape
        if emissions.device.type != "cpu" and b * (t // 2) * k**3 <= TREE_MAX_ELEMENTS:
            return ConditionalRandomField._log_partition_tree(emissions, mask, transitions, start, end)
        if emissions.device.type == "cpu":
            log_z = ConditionalRandomField._log_partition_scaled(emissions, mask, transitions, start, end)
            if bool(torch.isfinite(log_z).all()):
                return log_z
        return ConditionalRandomField._log_partition_loop(emissions, mask, transitions, start, end)

    @staticmethod
    def _log_partition_scaled(
        emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
    ) -> Tensor:
        """Forward algorithm in probability space, normalized at every step (as ``_forward_backward_scaled``, in the
        compute dtype): a step is one ``(B, K) @ (K, K)`` product instead of a ``(B, K, K)`` log-sum-exp.

        With ``E = exp(transitions - c)`` and ``P_t = exp(e_t - m_t)`` (``c``, ``m_t`` the largest transition and
        emission scores), ``x_t = (x_{t-1} E) * P_t / s_t`` with ``s_t`` its sum, and ``log Z = log(x_{T-1} .
        exp(end)) + sum_t (log s_t + m_t + c)``. It equals the log-space loop to float rounding (1e-7 relative) and,
        forward and backward, took 0.83 vs 1.07 ms for batches of 10 sentences of 14 tokens (K = 17, 1 CPU thread),
        0.9 vs 2.2 ms for 32, 2.1 vs 20.6 ms for 256 of 20. A sequence whose every path underflows gives a
        non-finite value; the caller then takes the log-space loop.

        Returns:
            (B,) log partition.
        """
        shift = transitions.amax()
        exp_transitions = (transitions - shift).exp()  # (K, K) in [0, 1]; forbidden transitions are 0
        peaks = emissions.amax(2, keepdim=True)  # (B, T, 1)
        factors = (emissions - peaks).exp()  # (B, T, K)
        alpha = start + emissions[:, 0]  # (B, K)
        first = alpha.amax(1, keepdim=True)  # (B, 1)
        x = (alpha - first).exp()
        sums = []
        padded = not bool(mask.all())  # exact-length batches (the default on CPU) skip the masking
        for factor, step in zip(factors.unbind(1)[1:], mask.unsqueeze(2).unbind(1)[1:]):  # (B, K), (B, 1)
            nxt = (x @ exp_transitions) * factor
            total = nxt.sum(1, keepdim=True)  # (B, 1)
            if padded:
                x = torch.where(step, nxt / total, x)
                total = torch.where(step, total, 1.0)
            else:
                x = nxt / total
            sums.append(total)
        end_max = end.amax()
        log_z = first.squeeze(1) + end_max + (x * (end - end_max).exp()).sum(1).log()  # (B,)
        if sums:
            steps = mask[:, 1:]
            log_z = log_z + torch.cat(sums, 1).log().sum(1) + (peaks[:, 1:, 0] * steps).sum(1) + shift * steps.sum(1)
        return log_z

    @staticmethod
    def _log_partition_tree(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
        """Log partition as a product of per-step matrices in the log semiring, multiplied pairwise.

        Step ``i`` is the matrix ``M_i[prev, cur] = transitions[prev, cur] + emissions[i, cur]``; a masked step is
        the identity (0 on the diagonal, ``IDENTITY_OFF_DIAGONAL`` elsewhere), so it carries ``alpha`` unchanged as
        in the loop. ``log Z = logsumexp(start + e_0) M_1 ... M_{T-1} (end)``, and the product is associative, so
        neighbours are multiplied level by level.

        Args:
            emissions: (B, T, K) compute dtype.
            mask: (B, T) bool.
            transitions, start, end: constrained scores from :meth:`_scores`.

        Returns:
            (B,) log partition.
        """
        k = emissions.shape[2]
        identity = torch.full((k, k), IDENTITY_OFF_DIAGONAL, dtype=emissions.dtype, device=emissions.device)
        identity.fill_diagonal_(0.0)
        steps = transitions + emissions[:, 1:].unsqueeze(2)  # (B, T-1, K, K): [b, i, prev, cur]
        steps = torch.where(mask[:, 1:, None, None], steps, identity)
        while steps.shape[1] > 1:
            if steps.shape[1] % 2:
                steps = torch.cat([steps, identity.expand(steps.shape[0], 1, k, k)], dim=1)
            left, right = steps[:, 0::2], steps[:, 1::2]  # (B, N/2, K, K) each
            # (left @ right)[i, j] in the log semiring: logsumexp over the middle tag m of left[i, m] + right[m, j].
            steps = torch.logsumexp(left.unsqueeze(4) + right.unsqueeze(2), dim=3)  # (B, N/2, K, K)
        alpha = start + emissions[:, 0]  # (B, K)
        if steps.shape[1] == 1:
            alpha = torch.logsumexp(alpha.unsqueeze(2) + steps[:, 0], dim=1)  # (B, K)
        return torch.logsumexp(alpha + end, dim=1)  # (B,)

    @staticmethod
    def _log_partition_loop(emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor) -> Tensor:
        """Forward algorithm.

        Args:
            emissions: (B, T, K) compute dtype.
            mask: (B, T) bool.
            transitions, start, end: constrained scores from :meth:`_scores`.

        Returns:
            (B,) log partition.
        """
        alpha = start + emissions[:, 0]  # (B, K): log-sum of all paths ending in each tag
        for emission, step in zip(emissions.unbind(1)[1:], mask.unsqueeze(2).unbind(1)[1:]):  # (B, K), (B, 1)
            # alpha[b, prev, None] + transitions[prev, cur] + emissions[b, None, cur], summed over prev
            nxt = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emission  # (B, K)
            alpha = torch.where(step, nxt, alpha)
        return torch.logsumexp(alpha + end, dim=1)  # (B,)

    @staticmethod
    def _path_score(
        emissions: Tensor, tags: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
    ) -> Tensor:
        """Score of the gold path over the real tokens.

        Args:
            emissions: (B, T, K) compute dtype.
            tags: (B, T) any integers at masked positions.
            mask: (B, T) bool.
            transitions, start, end: constrained scores from :meth:`_scores`.

        Returns:
            (B,) gold path score.
        """
        b, t, k = emissions.shape
        tags = torch.where(mask, tags.long(), 0)  # (B, T) masked ids made safe to index
        score = start[tags[:, 0]]  # (B,)
        score = score + torch.where(mask, emissions.gather(2, tags.unsqueeze(2)).squeeze(2), 0).sum(1)
        # Index of the last real token at or before each position (mask[:, 0] is True, so never -1).
        positions = torch.arange(t, device=mask.device).expand(b, t)
        last_real = torch.where(mask, positions, -1).cummax(dim=1).values  # (B, T)
        prev_tags = tags.gather(1, last_real[:, :-1])  # (B, T-1) tag of the real token before i
        score = score + torch.where(mask[:, 1:], transitions[prev_tags, tags[:, 1:]], 0).sum(1)
        last_tags = tags.gather(1, last_real[:, -1:]).squeeze(1)  # (B,)
        return score + end[last_tags]

    # ------------------------------------------------------------------------------------------------ inference

    @staticmethod
    def _right_padded(lengths: Tensor, t: int) -> Tensor:
        """(B,) lengths -> (B, T) bool mask of the first ``lengths[b]`` positions."""
        return torch.arange(t, device=lengths.device) < lengths.unsqueeze(1)

    def _lattice(
        self, emissions: Tensor, lengths: Tensor, scores: tuple[Tensor, Tensor, Tensor]
    ) -> tuple[_Lattice, _Exact | None]:
        """Forward-backward scores of right-padded, checked emissions.

        :meth:`_forward_backward_scaled` computes them; the sequences where it underflows are recomputed by
        :meth:`_forward_backward_log` and returned beside the lattice (their ``log_z`` is updated in it), since the
        scaled form cannot hold them.

        Args:
            emissions: (B, T, K) from :meth:`_check`, right padded.
            lengths: (B,) number of real tokens.
            scores: ``self._scores(torch.float64)``.

        Returns:
            ``(lattice, exact)``; ``exact`` is None when every sequence is exact in the lattice.
        """
        # float64: products of two small probabilities are common, and float32 would make them denormal (slow on
        # CPUs) or zero; float64 leaves room for score gaps of about 700 nats.
        transitions, start, end = scores
        lattice, ok = self._forward_backward_scaled(emissions, lengths, transitions, start, end)
        if bool(ok.all()):
            return lattice, None
        rows = (~ok).nonzero().squeeze(1)  # (R,)
        mask = self._right_padded(lengths[rows], emissions.shape[1])  # (R, T)
        log_alpha, log_beta, log_z = self._forward_backward_log(emissions[rows].double(), mask, transitions, start, end)
        lattice.log_z[rows] = log_z
        return lattice, _Exact(rows, log_alpha, log_beta)

    @staticmethod
    def _forward_backward_scaled(
        emissions: Tensor, lengths: Tensor, transitions: Tensor, start: Tensor, end: Tensor
    ) -> tuple[_Lattice, Tensor]:
        """Forward and backward passes in probability space with one normalization per step (Rabiner 1989, §V.A).

        In log space every step takes ``B * K * K`` exponentials; here a step is one batched product of both passes'
        ``(K, B)`` states with the exponentiated transitions, and the emissions are exponentiated once, before the
        loop. With
        ``E = exp(transitions - c)``, ``c`` the largest transition score (so ``E`` lies in [0, 1], and forbidden
        transitions are ``exp(FORBIDDEN_SCORE) = 0``), and ``P_t = exp(e_t - m_t)``, ``m_t`` the largest emission:

        * forward, ``x_t ∝ exp(alpha_t - e_t)``: ``x_{t+1} = E^T (x_t * P_t)``, and ``x_0 * P_0 ∝ exp(alpha_0)``;
        * backward, ``z_t ∝ exp(beta_t)``: ``z_t = E (z_{t+1} * P_{t+1})``, reset to ``exp(end)`` at the last token
          of each sequence (the steps past it compute garbage that the reset discards).

        Both passes advance in the same loop iteration. Every other step the new states are divided by their sums
        (in between they change at most K-fold) and the logs of the sums go into a running shift. Float64 then
        holds every tag within several hundred nats of its token's best, which loses nothing unless scores
        contradict each other by that much: a tag that the forward pass dropped can still carry most of Z through
        its backward score. So a sequence is reported in ``ok``, for recomputation in log space, when
        ``sum_y alpha_t(y) beta_t(y)`` misses ``Z`` by more than ``CONSISTENCY_TOLERANCE`` at some token, which also
        catches states that underflowed and sequences without any allowed path.

        Args:
            emissions: (B, T, K) float, right padded, contiguous.
            lengths: (B,) number of real tokens, at least 1.
            transitions, start, end: constrained scores from :meth:`_scores`, float64.

        Returns:
            ``(lattice, ok (B,) bool)``.
        """
        b, t, k = emissions.shape
        f64 = torch.float64
        # One shift for all transitions is enough in float64: learned scores span far less than 700 nats.
        transition_max = transitions.amax()
        exp_transitions = (transitions - transition_max).exp()  # (K, K) [prev, cur]

        factors = torch.empty(t, k, b, dtype=f64, device=emissions.device)  # (T, K, B) P_t
        factors.view(t * k, b).copy_(emissions.reshape(b, t * k).T)  # a 2-D transpose is the fast one
        peaks = emissions.amax(2).T.unsqueeze(1).to(f64)  # (T, 1, B), reduced over the contiguous tag axis
        factors.sub_(peaks).exp_()
        alpha = start.unsqueeze(1) + emissions[:, 0].T.to(f64)  # (K, B) alpha_0
        peaks[0] = alpha.amax(0, keepdim=True)
        factors[0] = (alpha - peaks[0]).exp()  # x_0 = 1; the backward pass never reads P_0

        end_max = end.amax()
        last_state = (end - end_max).exp().unsqueeze(1)  # (K, 1) z at the last token, up to end_max
        is_last = (lengths == torch.arange(1, t + 1, device=lengths.device).unsqueeze(1)).unsqueeze(1)  # (T, 1, B)
        # states[i, 0] is x of token i, states[i, 1] is z of token T - 1 - i. Few large allocations matter:
        # freeing megabytes per call makes the allocator hand them back to the system, and the page faults of the
        # next call cost more than the arithmetic.
        states = torch.empty(t, 2, k, b, dtype=f64, device=emissions.device)
        states[0, 0] = 1.0
        states[0, 1] = torch.where(is_last[t - 1], last_state, 0.0)
        matrices = torch.stack([exp_transitions.T, exp_transitions])  # (2, K, K): forward [cur, prev], backward
        weighted = torch.empty(2, k, b, dtype=f64, device=emissions.device)  # each step's x * P and z * P
        sums = torch.ones(t, 2, 1, b, dtype=f64, device=emissions.device)  # what states[i] was divided by
        # Views made once: at about 15 us per step, indexing in the loop would cost a tenth of it.
        forward, backward = states[:, 0].unbind(0), states[:, 1].unbind(0)  # T x (K, B)
        state_steps, factor_steps, sum_steps = states.unbind(0), factors.unbind(0), sums.unbind(0)
        last_tokens = set((lengths - 1).tolist())
        for i in range(1, t):
            # One batched product for both passes: x_i = E^T (x_{i-1} * P_{i-1}), z = E (z * P) of token T - 1 - i.
            torch.mul(forward[i - 1], factor_steps[i - 1], out=weighted[0])
            torch.mul(backward[i - 1], factor_steps[t - i], out=weighted[1])
            torch.bmm(matrices, weighted, out=state_steps[i])
            if i % 2 == 0 or i == t - 1:  # values shrink or grow at most K-fold a step: every other one will do
                torch.sum(state_steps[i], 1, keepdim=True, out=sum_steps[i])
                state_steps[i].mul_(sum_steps[i].reciprocal())
            if t - 1 - i in last_tokens:  # some sequences start their backward pass at token T - 1 - i
                torch.where(is_last[t - 1 - i], last_state, backward[i], out=backward[i])

        # Step i divided by transition_max, by the peak of the emissions it multiplied (forward: token i - 1,
        # backward: token T - i) and by the new state's sum; a running sum gives each state's shift. The backward
        # pass of a sequence of n tokens starts afresh at step T - n (token n - 1, shift end_max): earlier steps
        # computed garbage and count nothing. Forward garbage past a sequence's end only reaches later tokens.
        increments = torch.zeros(t, 2, 1, b, dtype=f64, device=emissions.device)  # (T, 2, 1, B)
        torch.stack([peaks[:-1], peaks.flip(0)[:-1]], 1, out=increments[1:])
        increments[1:] += sums[1:].log_() + transition_max
        steps = torch.arange(t, device=emissions.device).view(t, 1)
        increments[:, 1].masked_fill_((steps <= t - lengths).unsqueeze(1), 0.0)
        shifts = increments.cumsum(0)  # (T, 2, 1, B)
        alpha_shift = shifts[:, 0] + peaks  # (T, 1, B)
        beta_shift = shifts[:, 1] + end_max  # (T, 1, B) in the backward pass's order, as beta_reversed
        forward_states, beta_reversed = states[:, 0], states[:, 1]  # (T, K, B) each
        batch = torch.arange(b, device=emissions.device)
        last = lengths - 1
        # Z = sum over the last token's tags of alpha * exp(end).
        alpha = forward_states[last, :, batch] * factors[last, :, batch]  # (B, K)
        log_z = (alpha * last_state.T).sum(1).log() + alpha_shift[last, 0, batch] + end_max
        lattice = _Lattice(
            forward_states,
            alpha_shift,
            beta_reversed,
            beta_shift,
            factors,
            peaks,
            exp_transitions,
            transition_max,
            log_z,
        )

        # Every token's sum_y alpha_t(y) beta_t(y) must be Z. A tag dropped by one pass (under 1e-308 of its token's
        # mass) can carry most of Z once the other pass's scores are counted, and then the sum falls short at some
        # token; a state that underflowed altogether, or lost precision as a denormal, or a sequence without any
        # allowed path (Z = 0) fail the same test. Checked a few tokens at a time to keep the temporaries small.
        mass = torch.empty(t, b, dtype=f64, device=emissions.device)
        for first in range(0, t, MASS_CHUNK):
            stop = min(t, first + MASS_CHUNK)
            alpha = forward_states[first:stop] * factors[first:stop]  # (chunk, K, B)
            torch.sum(alpha.mul_(beta_reversed[t - stop : t - first].flip(0)), 1, out=mass[first:stop])
        mass = mass.log_() + alpha_shift[:, 0] + beta_shift[:, 0].flip(0)  # (T, B)
        consistent = ((mass - log_z).abs() <= CONSISTENCY_TOLERANCE) | (steps >= lengths)  # (T, B)
        return lattice, consistent.all(0)

    @staticmethod
    def _forward_backward_log(
        emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Forward and backward algorithms in log space: slower, but exact for any scores.

        Args:
            emissions: (B, T, K).
            mask: (B, T) bool, right padded.
            transitions, start, end: constrained scores from :meth:`_scores`.

        Returns:
            ``(log_alpha (B, T, K), log_beta (B, T, K), log_z (B,))``; values at padded positions are finite but
            unspecified.
        """
        steps = mask.unsqueeze(2).unbind(1)  # T x (B, 1)
        alpha = start + emissions[:, 0]  # (B, K)
        alphas = [alpha]
        for emission, step in zip(emissions.unbind(1)[1:], steps[1:]):
            # alpha[b, prev, None] + transitions[prev, cur], summed over prev
            nxt = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emission  # (B, K)
            alpha = torch.where(step, nxt, alpha)
            alphas.append(alpha)
        log_z = torch.logsumexp(alpha + end, dim=1)  # (B,): masked steps carried the last real alpha
        beta = end.expand_as(alpha)  # (B, K)
        betas = [beta]
        for emission, step in zip(reversed(emissions.unbind(1)[1:]), reversed(steps[1:])):
            # transitions[cur, nxt] + emission[b, None, nxt] + beta[b, None, nxt], summed over nxt
            nxt = torch.logsumexp(transitions + (emission + beta).unsqueeze(1), dim=2)  # (B, K)
            # Before a masked step the token is the last real one (right padding): its beta is the end score.
            beta = torch.where(step, nxt, end)
            betas.append(beta)
        return torch.stack(alphas, 1), torch.stack(betas[::-1], 1), log_z

    @staticmethod
    def _list_viterbi(
        emissions: Tensor, mask: Tensor, transitions: Tensor, start: Tensor, end: Tensor, k: int
    ) -> tuple[Tensor, Tensor]:
        """The ``k`` best tag sequences by score, forbidden transitions at ``FORBIDDEN_SCORE``.

        State ``score[b, tag, rank]`` is the ``rank``-th best score of a path over the tokens so far that ends in
        ``tag``; missing ranks are ``-inf``. A backpointer stores ``prev_tag * k + prev_rank``.

        Args:
            emissions: (B, T, K).
            mask: (B, T) bool.
            transitions, start, end: constrained scores from :meth:`_scores`.
            k: number of paths.

        Returns:
            ``(tags (B, k, T), scores (B, k))``; rows with score ``-inf`` hold arbitrary tags.
        """
        b, _, num_tags = emissions.shape
        score = emissions.new_full((b, num_tags, k), float("-inf"))  # (B, K, k)
        score[:, :, 0] = start + emissions[:, 0]
        keep = torch.arange(num_tags * k, device=emissions.device).expand(b, num_tags * k)  # identity pointers
        backpointers = []
        for emission, step in zip(emissions.unbind(1)[1:], mask.unbind(1)[1:]):  # (B, K), (B,)
            # candidates[b, prev * k + rank, cur] = score[b, prev, rank] + transitions[prev, cur]
            candidates = (score.unsqueeze(3) + transitions.unsqueeze(1)).reshape(b, num_tags * k, num_tags)
            best, pointers = candidates.topk(k, dim=1)  # (B, k, K) sorted by score for each cur
            new = best.transpose(1, 2) + emission.unsqueeze(2)  # (B, K, k)
            score = torch.where(step.view(b, 1, 1), new, score)
            # A masked step keeps every path: the state at i is the state at i - 1.
            backpointers.append(torch.where(step.unsqueeze(1), pointers.transpose(1, 2).reshape(b, -1), keep))
        scores, state = (score + end.unsqueeze(1)).reshape(b, num_tags * k).topk(k, dim=1)  # (B, k), (B, k)
        path = [state // k]
        for pointers in reversed(backpointers):
            state = pointers.gather(1, state)  # (B, k) flat prev_tag * k + prev_rank
            path.append(state // k)
        path.reverse()
        return torch.stack(path, dim=2), scores  # (B, k, T), (B, k)

    def _allowed_paths(self, tags: Tensor, mask: Tensor) -> Tensor:
        """Whether each tag sequence uses only allowed transitions (START and END included).

        Args:
            tags: (B, N, T) long, any tag ids at masked positions.
            mask: (B, T) bool with ``mask[:, 0]`` True.

        Returns:
            (B, N) bool.
        """
        b, n, t = tags.shape
        k = self.num_tags
        allowed = self.constraint_mask > 0.5  # (K+2, K+2)
        positions = torch.arange(t, device=mask.device).expand(b, t)
        # Index of the last real token at or before each position, as in _path_score.
        last_real = torch.where(mask, positions, -1).cummax(dim=1).values  # (B, T)
        index = last_real.unsqueeze(1).expand(b, n, t)  # (B, N, T)
        prev_tags = tags.gather(2, index[:, :, :-1])  # (B, N, T-1) tag of the real token before each position
        hops = allowed[prev_tags, tags[:, :, 1:]] | ~mask[:, None, 1:]  # (B, N, T-1)
        last_tags = tags.gather(2, index[:, :, -1:]).squeeze(2)  # (B, N)
        return allowed[k, tags[:, :, 0]] & allowed[last_tags, k + 1] & hops.all(2)
