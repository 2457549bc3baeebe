"""Linear-chain conditional random field over tag sequences.

Follows the AllenNLP ``ConditionalRandomField`` (constraints as ``(from, to)`` pairs with START = K and
END = K + 1, forward algorithm with masked steps carrying ``alpha``), with two changes:

* constraints are applied in the log-likelihood as well as in Viterbi decoding, so training fits a
  distribution over valid tag sequences only;
* Viterbi runs over the whole batch at once and backtracks with ``gather``; the only Python loops are
  over time.

References: Lafferty et al. 2001, "Conditional Random Fields"; Lample et al. 2016, "Neural Architectures
for Named Entity Recognition"; allenai/allennlp ``allennlp/modules/conditional_random_field.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

# Score given to a forbidden transition. Finite, so logsumexp and its gradient never meet ``-inf - -inf``;
# exp(-1e4) is exactly 0 in float32 and float64, so forbidden paths carry no probability mass.
FORBIDDEN_SCORE = -1e4
# Largest (B, T/2, K, K, K) intermediate of the tree-shaped log partition (2**25 floats: 128 MiB in float32).
TREE_MAX_ELEMENTS = 2**25
# Off-diagonal of the log-semiring identity. Not FORBIDDEN_SCORE: exp(x - 1e30) is 0 for any score x, so a product
# with the identity is exact even next to forbidden (-1e4) entries; and not -inf, whose products would give
# logsumexp(-inf, ..., -inf) and NaN gradients.
IDENTITY_OFF_DIAGONAL = -1e30


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
    disabled inside), float64 stays float64.

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

    def _check(self, emissions: Tensor, tags: Tensor | None, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Validate shapes and return ``(emissions, mask)`` in compute dtype / bool.

        Args:
            emissions: (B, T, K) float.
            tags: (B, T) long or None.
            mask: (B, T) or None (all True).

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
        dtype = torch.promote_types(torch.promote_types(emissions.dtype, self.transitions.dtype), torch.float32)
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
            emissions, mask = self._check(emissions, tags, mask)
            transitions, start, end = self._scores(emissions.dtype)
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
            steps = zip(emissions.unbind(1)[1:], mask.unsqueeze(2).unbind(1)[1:])  # (B, K), (B, 1) per step
            for emission, step in steps:
                # score[b, prev, None] + transitions[prev, cur] -> best prev for each cur
                best, prev = (score.unsqueeze(2) + transitions).max(dim=1)  # (B, K), (B, K)
                score = torch.where(step, best + emission, score)
                # A masked step keeps every tag: tag at i is the tag at i - 1.
                backpointers.append(torch.where(step, prev, keep))
            tag = (score + end).argmax(dim=1, keepdim=True)  # (B, 1)
            path = [tag]
            for pointers in reversed(backpointers):
                tag = pointers.gather(1, tag)  # (B, 1)
                path.append(tag)
            path.reverse()
            tags = torch.cat(path, dim=1)  # (B, T)
            return tags.masked_fill(~mask, 0)

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
        return ConditionalRandomField._log_partition_loop(emissions, mask, transitions, start, end)

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
