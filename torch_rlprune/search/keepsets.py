r"""Keep-sets as a distribution: two-stage Plackett-Luce sampling, its exact log-probability and entropy.

The prunable channels ("filters") of all channel groups are concatenated in group order into one vector of ``N``
filters (see :func:`torch_rlprune.search.features.filter_features`). A policy gives every filter a logit; an *action* is
a keep-set of exactly ``n_keep`` filters, of which every group ``g`` holds at least ``min_keep[g]``, and a reward
(say, the accuracy of the network pruned to the keep-set) scores it. :class:`ReinforceController` learns the
logits from the rewards with the score-function (REINFORCE) estimator.

**The sampling scheme.** A keep-set is drawn without replacement from the Plackett-Luce distribution over the
logits, in two stages:

1. in each group ``g``, ``min_keep[g]`` channels are drawn one by one among the group's channels, each with
   probability proportional to :math:`e^{\text{logit}}` among the group's channels not drawn yet;
2. the remaining ``n_keep - sum(min_keep)`` channels are drawn one by one among all channels not drawn in
   stage 1, each with probability proportional to :math:`e^{\text{logit}}` among those still available.

Both stages use the Gumbel-top-``k`` trick: adding independent Gumbel noise to the logits and taking the ``k``
largest keys in decreasing order draws exactly such a sequence. Stage 2 draws fresh noise: reusing stage 1's keys
would condition the channels that stage 1 passed over to have small keys, which is no longer Plackett-Luce.

**Why the estimator is unbiased.** The action actually sampled is the *ordered* sequence of draws
:math:`s = (s_1, \dots, s_{n_\text{keep}})`, and its exact probability is the product of the draws'
probabilities,

.. math::
    \log p(s) = \sum_j \Big( \ell_{s_j} - \log \sum_{i \in P_j} e^{\ell_i} \Big),

where :math:`P_j` is the pool still available at draw ``j`` (its group's undrawn channels in stage 1, every
channel not drawn so far in stage 2). The reward depends on the set only, which is a function of the sequence,
so :math:`E_s[R(\text{set}(s))\, \nabla \log p(s)] = \nabla E_s[R]`: the ordinary score-function identity holds
for the sequence, and subtracting a baseline that does not depend on :math:`s` keeps it unbiased. The probability
of a *set* would need a sum over all its orders, which is intractable; the sequence probability is exact and
cheap. A deterministic top-``k`` of the logits, by contrast, samples nothing: the keep-set has probability 1,
and the log-softmax terms one might train on are not the log-probability of the action taken, so the "gradient"
does not estimate the gradient of any expected reward.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["sample_keep", "log_prob", "entropy_estimate"]


# --------------------------------------------------------------------------------------------------------------
# Validation and the index layout of the two-stage scheme
# --------------------------------------------------------------------------------------------------------------


def is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_layout(group_sizes: Any, min_keep: Any, n_keep: Any, caller: str) -> tuple[list[int], list[int], int]:
    if isinstance(group_sizes, (str, bytes)) or not isinstance(group_sizes, Sequence) or not group_sizes:
        raise TypeError(
            f"{caller}: group_sizes must be a non-empty sequence of ints, the channel count of every group in "
            f"order, e.g. [g.size for g in groups]; got {group_sizes!r}."
        )
    bad = [g for g, s in enumerate(group_sizes) if not (is_int(s) and s > 0)]
    if bad:
        raise ValueError(
            f"{caller}: group_sizes must hold positive ints, but group_sizes[{bad[0]}] is {group_sizes[bad[0]]!r}."
        )
    if isinstance(min_keep, (str, bytes)) or not isinstance(min_keep, Sequence):
        raise TypeError(
            f"{caller}: min_keep must be a sequence of ints, one per group (use [k] * len(group_sizes) for the "
            f"same minimum everywhere); got {type(min_keep).__name__}."
        )
    if len(min_keep) != len(group_sizes):
        raise ValueError(
            f"{caller}: min_keep has {len(min_keep)} entries but group_sizes has {len(group_sizes)}; give one "
            "minimum per group."
        )
    bad = [g for g, m in enumerate(min_keep) if not is_int(m)]
    if bad:
        raise TypeError(f"{caller}: min_keep must hold ints, but min_keep[{bad[0]}] is {min_keep[bad[0]]!r}.")
    bad = [g for g, (m, s) in enumerate(zip(min_keep, group_sizes)) if not 0 <= m <= s]
    if bad:
        g = bad[0]
        raise ValueError(
            f"{caller}: min_keep[{g}]={min_keep[g]} is outside [0, {group_sizes[g]}], the size of group {g}; "
            "a group cannot keep more channels than it has."
        )
    if not is_int(n_keep):
        raise TypeError(f"{caller}: n_keep must be an int (a number of filters), got {type(n_keep).__name__}.")
    total, forced = sum(group_sizes), sum(min_keep)
    if not forced <= n_keep <= total:
        raise ValueError(
            f"{caller}: n_keep={n_keep} must lie between sum(min_keep)={forced} and the number of filters "
            f"{total}; raise n_keep or lower min_keep."
        )
    return [int(s) for s in group_sizes], [int(m) for m in min_keep], int(n_keep)


@dataclass(frozen=True)
class _Bucket:
    """Segments of similar length of a flat axis, gathered into the rows of one padded ``[G_b, S]`` block.

    Every segment is padded to ``S`` with the index of a pad slot appended to the flat axis, and buckets hold
    lengths within a factor of two, so the blocks together are at most twice as large as the axis: one block
    for all segments would be ``G * max(length)``, which a network with many narrow layers and a few wide ones
    blows up.
    """

    segments: torch.Tensor  # [G_b] which segments
    index: torch.Tensor  # [G_b, S] flat position of every slot; the pad slot past a segment's end
    k: int  # the most entries any segment of the bucket wants
    take: torch.Tensor  # which entries of the [G_b, k] block of each segment's first k, flattened, are wanted
    dest: torch.Tensor  # where each wanted entry goes in the stage-1 sequence


def _buckets(lengths: torch.Tensor, wanted: torch.Tensor, draw_start: torch.Tensor) -> list[_Bucket]:
    """Bucket the segments of ``lengths`` that want at least one entry; ``wanted[g]`` entries of segment ``g``.

    Entry ``r`` of segment ``g``'s row goes to position ``draw_start[g] + r`` of the stage-1 sequence.
    """
    starts = torch.cumsum(lengths, 0) - lengths
    total = int(lengths.sum())
    live = (wanted > 0).nonzero().flatten()
    width = torch.ceil(torch.log2(lengths[live].double())).long()  # 0 for a length of 1
    found = []
    for w in torch.unique(width).tolist():
        segments = live[width == w]
        span = torch.arange(int(lengths[segments].max()), device=lengths.device)
        index = torch.where(span < lengths[segments, None], starts[segments, None] + span, total)
        k = torch.arange(int(wanted[segments].max()), device=lengths.device)
        used = k < wanted[segments, None]
        take = used.flatten().nonzero().flatten()
        dest = (draw_start[segments, None] + k)[used]
        found.append(_Bucket(segments, index, k.numel(), take, dest))
    return found


@dataclass(frozen=True)
class DrawPlan:
    """Index layout of the two-stage scheme for given group sizes, minimums and ``n_keep``."""

    n: int
    n_keep: int
    n_groups: int
    forced: int  # draws of stage 1: sum(min_keep)
    group_id: torch.Tensor  # [N] group of every filter
    stage1_group: torch.Tensor  # [forced] group of every stage-1 draw
    channels: list[_Bucket]  # the groups over the N filters, wanting min_keep[g] each (for sampling)
    draws: list[_Bucket]  # the groups' runs over the stage-1 draws, wanting all of each run (for log_prob)
    channels_inverse: torch.Tensor  # puts the buckets' concatenated entries into stage-1 order
    draws_inverse: torch.Tensor


def draw_plan(group_sizes: Sequence[int], min_keep: Sequence[int], n_keep: int, device: torch.device) -> DrawPlan:
    sizes = torch.tensor(group_sizes, dtype=torch.long, device=device)
    mins = torch.tensor(min_keep, dtype=torch.long, device=device)
    groups = torch.arange(len(group_sizes), device=device)
    draw_start = torch.cumsum(mins, 0) - mins
    channels = _buckets(sizes, mins, draw_start)
    draws = _buckets(mins, mins, draw_start)

    def inverse(buckets: list[_Bucket]) -> torch.Tensor:
        dest = torch.cat([b.dest for b in buckets]) if buckets else torch.zeros(0, dtype=torch.long, device=device)
        return torch.argsort(dest)

    return DrawPlan(
        n=int(sizes.sum()),
        n_keep=n_keep,
        n_groups=len(group_sizes),
        forced=int(mins.sum()),
        group_id=torch.repeat_interleave(groups, sizes),
        stage1_group=torch.repeat_interleave(groups, mins),
        channels=channels,
        draws=draws,
        channels_inverse=inverse(channels),
        draws_inverse=inverse(draws),
    )


def _check_logits(logits: Any, n: int, caller: str) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"{caller}: logits must be a floating-point tensor of shape [N] or [B, N].")
    if logits.dim() not in (1, 2) or logits.shape[-1] != n:
        raise ValueError(
            f"{caller}: logits have shape {tuple(logits.shape)} but the groups hold {n} filters; pass [N] or "
            f"[B, N] with N = sum(group_sizes) = {n}."
        )
    return logits


# --------------------------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------------------------


def gumbel(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    uniform = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    # rand may return exactly 0, whose key would be -inf and tie with the keys masked out of stage 2.
    return -torch.log(-torch.log(uniform.clamp_min(torch.finfo(like.dtype).tiny)))


def top_sequence(keys1: torch.Tensor, keys2: torch.Tensor, plan: DrawPlan) -> tuple[torch.Tensor, torch.Tensor]:
    """The two-stage draw given each stage's keys ([B, N]): top keys per group, then top keys of the rest."""
    batch = keys1.shape[0]
    if plan.forced:
        padded = torch.cat([keys1, keys1.new_full((batch, 1), float("-inf"))], dim=-1)
        picks = []
        for bucket in plan.channels:
            # The top keys of every group of the bucket, in decreasing order; padding (-inf) never makes the cut.
            top = padded[:, bucket.index].topk(bucket.k, dim=-1, sorted=True).indices
            chosen = bucket.index.expand(batch, -1, -1).gather(-1, top)
            picks.append(chosen.flatten(1)[:, bucket.take])
        first = torch.cat(picks, dim=-1)[:, plan.channels_inverse]
        keys2 = keys2.scatter(-1, first, float("-inf"))
    else:
        first = keys1.new_empty((batch, 0), dtype=torch.long)
    second = keys2.topk(plan.n_keep - plan.forced, dim=-1, sorted=True).indices
    order = torch.cat([first, second], dim=-1)
    keep = torch.zeros(keys1.shape, dtype=torch.bool, device=keys1.device).scatter_(-1, order, True)
    return keep, order


def sample_keep(
    logits: torch.Tensor,
    n_keep: int,
    group_sizes: Sequence[int],
    min_keep: Sequence[int],
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Sample a keep-set of exactly ``n_keep`` filters from the two-stage Plackett-Luce distribution.

    Stage 1 draws ``min_keep[g]`` channels of every group ``g`` without replacement among the group's channels;
    stage 2 draws the remaining ``n_keep - sum(min_keep)`` without replacement among all channels not drawn yet
    (see :mod:`torch_rlprune.search.controller`). Each stage is one Gumbel-top-``k``: no Python loop over draws.

    Args:
        logits (torch.Tensor): finite logits of shape ``[N]`` or ``[B, N]`` (``B`` independent samples, one per
            row), ``N = sum(group_sizes)``.
        n_keep (int): filters to keep, between ``sum(min_keep)`` and ``N``.
        group_sizes (sequence of int): channels per group; the filters of group ``g`` are the ``group_sizes[g]``
            consecutive entries after those of the groups before it.
        min_keep (sequence of int): channels that every group keeps at least.
        generator (torch.Generator, optional): source of randomness, on the device of ``logits``; the global
            generator if ``None``.

    Returns:
        tuple: ``keep``, a boolean tensor shaped like ``logits`` with ``n_keep`` ``True`` entries per row, and
        ``order``, the ``long`` tensor of shape ``[n_keep]`` (or ``[B, n_keep]``) of the sampled sequence: the
        stage-1 draws group after group, then the stage-2 draws, each stage in draw order. Pass ``order`` to
        :func:`log_prob`.

    Raises:
        TypeError: arguments of the wrong type.
        ValueError: inconsistent sizes, or ``n_keep`` outside ``[sum(min_keep), N]``.

    Example:
        >>> import math
        >>> import torch
        >>> from torch_rlprune.search.keepsets import sample_keep, log_prob
        >>> logits = torch.zeros(10)
        >>> keep, order = sample_keep(logits, 4, [3, 7], [2, 1], torch.Generator().manual_seed(0))
        >>> int(keep.sum()), int(keep[:3].sum()) >= 2, int(keep[3:].sum()) >= 1
        (4, True, True)
        >>> torch.equal(keep.nonzero().flatten(), order.sort().values)
        True
        >>> # 3 * 2 ways for group 0's two draws, 7 for group 1's, then 7 channels left for the last draw
        >>> math.isclose(float(log_prob(logits, order, [3, 7], [2, 1]).exp()), 1 / (3 * 2 * 7 * 7), rel_tol=1e-5)
        True
    """
    caller = "sample_keep"
    group_sizes, min_keep, n_keep = check_layout(group_sizes, min_keep, n_keep, caller)
    logits = _check_logits(logits, sum(group_sizes), caller)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{caller}: generator must be a torch.Generator or None, got {type(generator).__name__}.")
    plan = draw_plan(group_sizes, min_keep, n_keep, logits.device)
    rows = logits.detach().reshape(-1, plan.n)
    keep, order = top_sequence(rows + gumbel(rows, generator), rows + gumbel(rows, generator), plan)
    if logits.dim() == 1:
        return keep[0], order[0]
    return keep, order


# --------------------------------------------------------------------------------------------------------------
# Log-probability and entropy
# --------------------------------------------------------------------------------------------------------------


def _masked_logsumexp(values: torch.Tensor, drop: torch.Tensor, group_id: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per-group logsumexp ([B, G]) of ``values`` ([B, N]) over the entries not in ``drop``; -inf for none.

    Written out rather than with ``torch.logsumexp`` so that an empty pool (every channel drawn) gives -inf with
    a zero gradient instead of NaN.
    """
    index = group_id.expand_as(values)
    kept = values.masked_fill(drop, float("-inf"))
    top = torch.full(values.shape[:-1] + (n_groups,), float("-inf"), dtype=values.dtype, device=values.device)
    top = top.scatter_reduce(-1, index, kept.detach(), "amax")
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    total = torch.zeros_like(top).scatter_add(-1, index, torch.exp(kept - top.gather(-1, index)))
    nonempty = total > 0
    return torch.where(nonempty, torch.log(torch.where(nonempty, total, torch.ones_like(total))) + top, -math.inf)


def _reverse_logcumsumexp(values: torch.Tensor) -> torch.Tensor:
    return values.flip(-1).logcumsumexp(-1).flip(-1)


def _pool_logsumexp(values: torch.Tensor, order: torch.Tensor, plan: DrawPlan) -> torch.Tensor:
    r"""For every draw ``j`` of ``order`` ([B, k]), :math:`\log \sum_{i \in P_j} e^{v_i}` over its pool ([B, k]).

    The pool of draw ``j`` is the draw itself, the later draws of the same stage (and, in stage 1, the same
    group), and the pool's channels that are never drawn in that stage. Laying the draws out in draw order, the
    first part is a reverse cumulative logsumexp; the undrawn channels add one constant per pool.
    """
    batch = values.shape[0]
    drawn = values.gather(-1, order)
    kept = torch.zeros_like(values, dtype=torch.bool).scatter_(-1, order, True)
    only = torch.zeros(plan.n, dtype=torch.long, device=values.device)
    rest2 = _masked_logsumexp(values, kept, only, 1)  # -inf when every filter is kept
    second = torch.logaddexp(_reverse_logcumsumexp(drawn[:, plan.forced :]), rest2)
    if not plan.forced:
        return second
    # Stage 1 pools are per group: lay each group's draws out in its own row, padded at the end, where a tiny
    # finite value adds nothing to the sums (-inf would make logcumsumexp's gradient NaN).
    first_drawn = torch.zeros_like(kept).scatter_(-1, order[:, : plan.forced], True)
    rest1 = _masked_logsumexp(values, first_drawn, plan.group_id, plan.n_groups)  # [B, G]
    pad = torch.full((batch, 1), torch.finfo(values.dtype).min, dtype=values.dtype, device=values.device)
    padded = torch.cat([drawn[:, : plan.forced], pad], dim=-1)
    pieces = []
    for bucket in plan.draws:
        rows = _reverse_logcumsumexp(padded[:, bucket.index])  # [B, G_b, S]
        pieces.append(torch.logaddexp(rows, rest1[:, bucket.segments, None]).flatten(1)[:, bucket.take])
    first = torch.cat(pieces, dim=-1)[:, plan.draws_inverse]
    return torch.cat([first, second], dim=-1)


def _prepare(
    logits: Any, order: Any, group_sizes: Any, min_keep: Any, caller: str
) -> tuple[torch.Tensor, torch.Tensor, DrawPlan, bool]:
    """Validate ``order`` against the scheme and bring ``logits`` and ``order`` to matching [B, ...] shapes."""
    if not isinstance(order, torch.Tensor) or order.dtype != torch.long or order.dim() not in (1, 2):
        raise TypeError(f"{caller}: order must be the long tensor of shape [n_keep] or [B, n_keep] of sample_keep.")
    group_sizes, min_keep, n_keep = check_layout(group_sizes, min_keep, order.shape[-1], caller)
    logits = _check_logits(logits, sum(group_sizes), caller)
    plan = draw_plan(group_sizes, min_keep, n_keep, logits.device)
    batched = logits.dim() == 2 or order.dim() == 2
    rows = logits.reshape(-1, plan.n)
    orders = order.to(logits.device).reshape(-1, n_keep)
    if rows.shape[0] != orders.shape[0]:
        if rows.shape[0] == 1:
            rows = rows.expand(orders.shape[0], -1)
        elif orders.shape[0] == 1:
            orders = orders.expand(rows.shape[0], -1)
        else:
            raise ValueError(f"{caller}: {rows.shape[0]} rows of logits but {orders.shape[0]} orders; pass as many.")
    if n_keep and not (0 <= int(orders.min()) and int(orders.max()) < plan.n):
        raise ValueError(f"{caller}: order holds indices outside [0, {plan.n}); it must index the N filters.")
    distinct = torch.zeros(orders.shape[0], plan.n, dtype=torch.bool, device=orders.device).scatter_(-1, orders, True)
    if not bool((distinct.sum(-1) == n_keep).all()):
        raise ValueError(f"{caller}: order repeats a filter; a keep sequence draws every filter at most once.")
    if plan.forced and not bool((plan.group_id[orders[:, : plan.forced]] == plan.stage1_group).all()):
        raise ValueError(
            f"{caller}: order does not follow the two-stage scheme: its first sum(min_keep)={plan.forced} entries "
            "must be min_keep[g] channels of each group g, group after group, as sample_keep returns them."
        )
    return rows, orders, plan, batched


def log_prob(
    logits: torch.Tensor, order: torch.Tensor, group_sizes: Sequence[int], min_keep: Sequence[int]
) -> torch.Tensor:
    r"""The exact log-probability of a keep sequence under the two-stage Plackett-Luce scheme.

    .. math::
        \log p(s) = \sum_j \Big( \ell_{s_j} - \log \sum_{i \in P_j} e^{\ell_i} \Big),

    where :math:`P_j` is the pool of draw ``j``: the channels of its group not drawn before it, for the first
    ``sum(min_keep)`` draws (stage 1), and every channel not drawn before it, for the rest (stage 2). The
    denominators of all draws come from one reverse cumulative logsumexp over the draws in order, plus the
    logsumexp of the pool's never-drawn channels; there is no loop over draws.

    Args:
        logits (torch.Tensor): finite logits of shape ``[N]`` or ``[B, N]``; gradients flow to them.
        order (torch.Tensor): the sequence from :func:`sample_keep`, shape ``[n_keep]`` or ``[B, n_keep]``.
            Logits of one row are broadcast over a batch of orders and the other way round.
        group_sizes (sequence of int): channels per group, as passed to :func:`sample_keep`.
        min_keep (sequence of int): per-group minimums, as passed to :func:`sample_keep`.

    Returns:
        torch.Tensor: the log-probability, a scalar, or one per row when either input has a batch dim.

    Raises:
        TypeError: arguments of the wrong type.
        ValueError: inconsistent sizes, or an ``order`` that repeats a filter or does not follow the scheme.

    Example:
        >>> import torch
        >>> from torch_rlprune.search.keepsets import log_prob
        >>> logits = torch.tensor([0.0, 1.0, 2.0])
        >>> # p(draw 2, then 1) = e^2 / (1 + e + e^2) * e / (1 + e)
        >>> lp = log_prob(logits, torch.tensor([2, 1]), [3], [0])
        >>> torch.allclose(lp, logits.softmax(0)[2].log() + logits[:2].softmax(0)[1].log())
        True
    """
    rows, orders, plan, batched = _prepare(logits, order, group_sizes, min_keep, "log_prob")
    result = (rows.gather(-1, orders) - _pool_logsumexp(rows, orders, plan)).sum(-1)
    return result if batched else result[0]


def entropy_estimate(
    logits: torch.Tensor, order: torch.Tensor, group_sizes: Sequence[int], min_keep: Sequence[int]
) -> torch.Tensor:
    r"""The summed entropy of the per-draw distributions along a sampled keep sequence: the entropy bonus.

    Draw ``j`` of the sequence is a categorical distribution :math:`p_j = \operatorname{softmax}(\ell)` over its
    pool :math:`P_j` (see :func:`log_prob`); this returns :math:`\sum_j H(p_j)`. By the chain rule of entropy
    its expectation over sequences is exactly the entropy of the distribution of ordered actions, so it is an
    unbiased, cheap estimate of that entropy. Its gradient, taken with the sequence held fixed, is the usual
    per-step entropy bonus of autoregressive policies: it pushes every draw's distribution towards uniform,
    which keeps the search exploring, but it omits the score-function term of the entropy's exact gradient.

    Each :math:`H(p_j) = \log Z_j - c + E_{p_j}[c - \ell]` with :math:`c` above every logit, and
    :math:`\log(Z_j E_{p_j}[c - \ell]) = \log \sum_{i \in P_j} e^{\ell_i + \log(c - \ell_i)}` is one more pool
    logsumexp, so the whole sum is vectorised as :func:`log_prob` is.

    Args:
        logits (torch.Tensor): finite logits of shape ``[N]`` or ``[B, N]``; gradients flow to them.
        order (torch.Tensor): the sequence from :func:`sample_keep`, shape ``[n_keep]`` or ``[B, n_keep]``.
        group_sizes (sequence of int): channels per group, as passed to :func:`sample_keep`.
        min_keep (sequence of int): per-group minimums, as passed to :func:`sample_keep`.

    Returns:
        torch.Tensor: the summed entropy in nats, a scalar, or one per row when either input has a batch dim.

    Raises:
        TypeError: arguments of the wrong type.
        ValueError: inconsistent sizes, or an ``order`` that repeats a filter or does not follow the scheme.

    Example:
        >>> import math
        >>> import torch
        >>> from torch_rlprune.search.keepsets import entropy_estimate
        >>> # uniform logits: draws from pools of 4 and then 3 channels
        >>> h = entropy_estimate(torch.zeros(4), torch.tensor([0, 1]), [4], [0])
        >>> math.isclose(float(h), math.log(4) + math.log(3), rel_tol=1e-6)
        True
    """
    rows, orders, plan, batched = _prepare(logits, order, group_sizes, min_keep, "entropy_estimate")
    # c is a constant shift that keeps c - logit >= 1; the value does not depend on it, so it needs no gradient.
    c = rows.detach().amax(-1, keepdim=True) + 1.0
    log_z = _pool_logsumexp(rows, orders, plan)
    log_gap = _pool_logsumexp(rows + torch.log(c - rows), orders, plan)
    result = (log_z - c + torch.exp(log_gap - log_z)).sum(-1)
    return result if batched else result[0]
