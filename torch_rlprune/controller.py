r"""A REINFORCE search over which filters to keep.

The prunable channels ("filters") of all channel groups are concatenated in group order into one vector of ``N``
filters (see :func:`torch_rlprune.features.filter_features`). A policy gives every filter a logit; an *action* is
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
from torch import nn

__all__ = ["FilterPolicy", "ReinforceController", "sample_keep", "log_prob", "entropy_estimate"]

BASELINES = ("ema", "batch")


# --------------------------------------------------------------------------------------------------------------
# Validation and the index layout of the two-stage scheme
# --------------------------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_layout(group_sizes: Any, min_keep: Any, n_keep: Any, caller: str) -> tuple[list[int], list[int], int]:
    if isinstance(group_sizes, (str, bytes)) or not isinstance(group_sizes, Sequence) or not group_sizes:
        raise TypeError(
            f"{caller}: group_sizes must be a non-empty sequence of ints, the channel count of every group in "
            f"order, e.g. [g.size for g in groups]; got {group_sizes!r}."
        )
    bad = [g for g, s in enumerate(group_sizes) if not (_is_int(s) and s > 0)]
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
    bad = [g for g, m in enumerate(min_keep) if not _is_int(m)]
    if bad:
        raise TypeError(f"{caller}: min_keep must hold ints, but min_keep[{bad[0]}] is {min_keep[bad[0]]!r}.")
    bad = [g for g, (m, s) in enumerate(zip(min_keep, group_sizes)) if not 0 <= m <= s]
    if bad:
        g = bad[0]
        raise ValueError(
            f"{caller}: min_keep[{g}]={min_keep[g]} is outside [0, {group_sizes[g]}], the size of group {g}; "
            "a group cannot keep more channels than it has."
        )
    if not _is_int(n_keep):
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
class _Plan:
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


def _plan(group_sizes: Sequence[int], min_keep: Sequence[int], n_keep: int, device: torch.device) -> _Plan:
    sizes = torch.tensor(group_sizes, dtype=torch.long, device=device)
    mins = torch.tensor(min_keep, dtype=torch.long, device=device)
    groups = torch.arange(len(group_sizes), device=device)
    draw_start = torch.cumsum(mins, 0) - mins
    channels = _buckets(sizes, mins, draw_start)
    draws = _buckets(mins, mins, draw_start)

    def inverse(buckets: list[_Bucket]) -> torch.Tensor:
        dest = torch.cat([b.dest for b in buckets]) if buckets else torch.zeros(0, dtype=torch.long, device=device)
        return torch.argsort(dest)

    return _Plan(
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


def _gumbel(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    uniform = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    # rand may return exactly 0, whose key would be -inf and tie with the keys masked out of stage 2.
    return -torch.log(-torch.log(uniform.clamp_min(torch.finfo(like.dtype).tiny)))


def _top_sequence(keys1: torch.Tensor, keys2: torch.Tensor, plan: _Plan) -> tuple[torch.Tensor, torch.Tensor]:
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
    (see :mod:`torch_rlprune.controller`). Each stage is one Gumbel-top-``k``: no Python loop over draws.

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
        >>> from torch_rlprune.controller import sample_keep, log_prob
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
    group_sizes, min_keep, n_keep = _check_layout(group_sizes, min_keep, n_keep, caller)
    logits = _check_logits(logits, sum(group_sizes), caller)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{caller}: generator must be a torch.Generator or None, got {type(generator).__name__}.")
    plan = _plan(group_sizes, min_keep, n_keep, logits.device)
    rows = logits.detach().reshape(-1, plan.n)
    keep, order = _top_sequence(rows + _gumbel(rows, generator), rows + _gumbel(rows, generator), plan)
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


def _pool_logsumexp(values: torch.Tensor, order: torch.Tensor, plan: _Plan) -> torch.Tensor:
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
) -> tuple[torch.Tensor, torch.Tensor, _Plan, bool]:
    """Validate ``order`` against the scheme and bring ``logits`` and ``order`` to matching [B, ...] shapes."""
    if not isinstance(order, torch.Tensor) or order.dtype != torch.long or order.dim() not in (1, 2):
        raise TypeError(f"{caller}: order must be the long tensor of shape [n_keep] or [B, n_keep] of sample_keep.")
    group_sizes, min_keep, n_keep = _check_layout(group_sizes, min_keep, order.shape[-1], caller)
    logits = _check_logits(logits, sum(group_sizes), caller)
    plan = _plan(group_sizes, min_keep, n_keep, logits.device)
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
        >>> from torch_rlprune.controller import log_prob
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
        >>> from torch_rlprune.controller import entropy_estimate
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


# --------------------------------------------------------------------------------------------------------------
# The policy and the controller
# --------------------------------------------------------------------------------------------------------------


class FilterPolicy(nn.Module):
    r"""One logit per filter: a small MLP shared by all filters, plus a learnt term of each filter's own.

    ``logit_i = mlp(x_i) + b_i``, where ``x_i`` is row ``i`` of the features, standardised per column, and ``mlp``
    is ``Linear(F, hidden) -> Tanh -> Linear(hidden, 1)``. The shared MLP generalises across filters from what
    the features show (a filter with small weights is often unimportant); the per-filter term :math:`b` can learn
    whatever no feature shows. The MLP's output layer and :math:`b` start at zero, so the initial policy is
    uniform: every keep-set of a given size is equally likely, and the search starts out as a random search.

    Args:
        features (torch.Tensor): ``[N, F]`` per-filter features, e.g. from
            :func:`torch_rlprune.features.filter_features`. Stored, standardised (zero mean and unit variance
            per column; a constant column becomes 0), in the buffer ``features``.
        hidden (int): width of the MLP's hidden layer. Default: 32.

    Example:
        >>> import torch
        >>> from torch_rlprune.controller import FilterPolicy
        >>> policy = FilterPolicy(torch.randn(960, 5))
        >>> policy().shape, bool((policy() == 0).all())
        (torch.Size([960]), True)
    """

    def __init__(self, features: torch.Tensor, hidden: int = 32) -> None:
        super().__init__()
        if not isinstance(features, torch.Tensor) or not features.is_floating_point() or features.dim() != 2:
            raise TypeError("FilterPolicy: features must be a floating-point tensor of shape [N, F].")
        if features.shape[0] < 1 or not bool(torch.isfinite(features).all()):
            raise ValueError(f"FilterPolicy: features of shape {tuple(features.shape)} need N >= 1 finite rows.")
        if not _is_int(hidden) or hidden < 1:
            raise ValueError(f"FilterPolicy: hidden must be a positive int, got {hidden!r}.")
        x = features.detach().float()
        std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.zeros(x.shape[1], device=x.device)
        self.register_buffer("features", (x - x.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std)))
        self.mlp = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.filter_logit = nn.Parameter(torch.zeros(x.shape[0], device=x.device))
        self.mlp.to(x.device)

    def forward(self) -> torch.Tensor:
        """The ``[N]`` logits."""
        return self.mlp(self.features).squeeze(-1) + self.filter_logit


class ReinforceController:
    r"""Learn which ``n_keep`` filters to keep by REINFORCE over two-stage Plackett-Luce keep sequences.

    Each round, :meth:`sample` draws ``n`` keep-sets (episodes) from the policy, the caller scores them with a
    reward (higher is better, e.g. the accuracy of the pruned network), and :meth:`update` takes one Adam step on

    .. math::
        L = -\frac{1}{n} \sum_e (R_e - b_e) \log p(s_e) - \beta \, \frac{1}{n} \sum_e \hat H(s_e),

    with the exact sequence log-probability :func:`log_prob`, the entropy bonus :func:`entropy_estimate` and a
    baseline :math:`b` that does not depend on the episode's own action, so the gradient estimate is unbiased
    (see :mod:`torch_rlprune.controller` for why the sequence, not the set, is the action).

    Baselines:

    * ``"ema"`` (default): an exponential moving average of the rewards of earlier updates, one step per
      episode, ``b <- decay * b + (1 - decay) * R_e``, so that ``decay=0.9`` averages over about the last ten
      episodes whatever the batch size. The first update has no history and uses its own mean reward.
    * ``"batch"``: leave-one-out: episode ``e`` uses the mean reward of the *other* episodes of the update
      (0 for a single episode, so use it with several episodes per update).

    The entropy bonus is summed over the draws of a sequence (see :func:`entropy_estimate`) and weighed against
    :math:`R - b`: keep ``entropy_coef`` well below the spread of the rewards between episodes, or it holds the
    policy near uniform.

    Args:
        features (torch.Tensor): ``[N, F]`` per-filter features (:func:`torch_rlprune.features.filter_features`).
        group_sizes (sequence of int): channels per group, summing to ``N``, in the order of the features' rows.
        n_keep (int): filters every keep-set holds, between ``sum(min_keep)`` and ``N``.
        min_keep (sequence of int): channels each group keeps at least, e.g. ``selection.min_keep_counts(...)``.
        lr (float): Adam's learning rate. Default: 0.1 (the logits need to move by several units; Adam moves each
            parameter by about ``lr`` per update).
        entropy_coef (float): weight :math:`\beta` of the entropy bonus. Default: 0.001.
        baseline (str): ``"ema"`` or ``"batch"``. Default: ``"ema"``.
        baseline_decay (float): decay of the ``"ema"`` baseline, in ``[0, 1)``. Default: 0.9.
        hidden (int): hidden width of the policy's MLP. Default: 32.
        seed (int, optional): seeds the policy's initialisation and the sampling generator; the same seed gives
            the same samples and, for the same rewards, the same updates. If ``None``, a seed is drawn from the
            global RNG (so :func:`torch.manual_seed` fixes it too).
        device (str or torch.device): where the policy lives and samples are drawn. Default: ``"cpu"``.

    Attributes:
        policy (FilterPolicy): the policy network.
        optimizer (torch.optim.Adam): its optimizer.
        generator (torch.Generator): the source of the samples' randomness.
        group_sizes (list of int): channels per group, as validated.
        min_keep (list of int): per-group minimums, as validated.
        n_keep (int): filters per keep-set.
        steps (int): updates taken.

    Example:
        >>> import torch
        >>> from torch_rlprune.controller import ReinforceController
        >>> wanted = torch.zeros(20, dtype=torch.bool)
        >>> wanted[[0, 1, 2, 10, 11]] = True  # the reward: the share of these five filters kept
        >>> ctrl = ReinforceController(torch.zeros(20, 1), [10, 10], n_keep=5, min_keep=[1, 1], seed=0)
        >>> for _ in range(40):
        ...     keep, orders = ctrl.sample(8)
        ...     stats = ctrl.update(orders, (keep & wanted).sum(1) / 5.0)
        >>> sorted(stats)
        ['baseline', 'entropy', 'loss', 'mean_reward']
        >>> int((ctrl.best_guess() & wanted).sum())
        5
    """

    def __init__(
        self,
        features: torch.Tensor,
        group_sizes: Sequence[int],
        n_keep: int,
        min_keep: Sequence[int],
        *,
        lr: float = 0.1,
        entropy_coef: float = 0.001,
        baseline: str = "ema",
        baseline_decay: float = 0.9,
        hidden: int = 32,
        seed: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        caller = "ReinforceController"
        group_sizes, min_keep, n_keep = _check_layout(group_sizes, min_keep, n_keep, caller)
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            raise TypeError(f"{caller}: features must be a tensor of shape [N, F], one row per filter.")
        if features.shape[0] != sum(group_sizes):
            raise ValueError(
                f"{caller}: features have {features.shape[0]} rows but group_sizes add up to {sum(group_sizes)}; "
                "pass one row per channel of the groups, in group order."
            )
        if not (_is_real(lr) and 0 < lr < math.inf):
            raise ValueError(f"{caller}: lr must be a positive number, got {lr!r}.")
        if not (_is_real(entropy_coef) and 0 <= entropy_coef < math.inf):
            raise ValueError(
                f"{caller}: entropy_coef must be a non-negative number (0 turns the bonus off), got {entropy_coef!r}."
            )
        if baseline not in BASELINES:
            raise ValueError(f"{caller}: baseline must be one of {BASELINES}, got {baseline!r}.")
        if not (_is_real(baseline_decay) and 0 <= baseline_decay < 1):
            raise ValueError(f"{caller}: baseline_decay must be a number in [0, 1), got {baseline_decay!r}.")
        if seed is not None and not _is_int(seed):
            raise TypeError(f"{caller}: seed must be an int or None, got {type(seed).__name__}.")
        device = torch.device(device)
        if seed is None:
            seed = int(torch.randint(2**62, (1,)))

        self.group_sizes, self.min_keep, self.n_keep = group_sizes, min_keep, n_keep
        self.entropy_coef, self.baseline, self.baseline_decay = float(entropy_coef), baseline, float(baseline_decay)
        self.hidden = hidden
        # The MLP's initialisation draws from the global RNG; seeding a forked copy makes it follow `seed` alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = FilterPolicy(features.to(device), hidden=hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=float(lr))
        self.generator = torch.Generator(device=device).manual_seed(int(seed))
        self.steps = 0
        self._ema: float | None = None
        self._plan = _plan(group_sizes, min_keep, n_keep, device)

    @property
    def device(self) -> torch.device:
        """The device of the policy."""
        return self.policy.filter_logit.device

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` keep-sets from the current policy.

        Args:
            n (int): number of episodes.

        Returns:
            tuple: ``keep``, a ``[n, N]`` boolean tensor, and ``orders``, the ``[n, n_keep]`` sequences to pass to
            :meth:`update`.

        Example:
            >>> import torch
            >>> from torch_rlprune.controller import ReinforceController
            >>> keep, orders = ReinforceController(torch.zeros(6, 1), [6], 2, [0], seed=0).sample(3)
            >>> keep.shape, orders.shape, keep.sum(1).tolist()
            (torch.Size([3, 6]), torch.Size([3, 2]), [2, 2, 2])
        """
        if not _is_int(n):
            raise TypeError(f"ReinforceController.sample: n must be an int (episodes to draw), got {type(n).__name__}.")
        if n < 1:
            raise ValueError(f"ReinforceController.sample: n={n}; draw at least one episode.")
        with torch.no_grad():
            rows = self.policy().expand(int(n), -1)
            return _top_sequence(rows + _gumbel(rows, self.generator), rows + _gumbel(rows, self.generator), self._plan)

    def update(self, orders: torch.Tensor, rewards: torch.Tensor | Sequence[float]) -> dict[str, float]:
        """Take one policy-gradient step from the episodes ``orders`` and their ``rewards``.

        The log-probabilities are recomputed under the current policy, so :meth:`sample` needs no graph; the
        orders must come from the policy as it was before this update for the estimate to be on-policy.

        Args:
            orders (torch.Tensor): ``[n, n_keep]`` sequences from :meth:`sample`.
            rewards (torch.Tensor or sequence of float): ``n`` rewards, higher is better.

        Returns:
            dict: ``"loss"``, ``"entropy"`` (mean summed entropy of the episodes, nats), ``"baseline"`` (mean
            baseline used) and ``"mean_reward"``, as floats.

        Example:
            >>> import torch
            >>> from torch_rlprune.controller import ReinforceController
            >>> ctrl = ReinforceController(torch.zeros(6, 1), [6], 2, [0], seed=0)
            >>> keep, orders = ctrl.sample(4)
            >>> ctrl.update(orders, keep[:, 0].float())["mean_reward"] == keep[:, 0].float().mean().item()
            True
        """
        caller = "ReinforceController.update"
        if not isinstance(orders, torch.Tensor) or orders.dim() != 2 or orders.shape[1] != self.n_keep:
            raise ValueError(f"{caller}: orders must be the [n, {self.n_keep}] tensor returned by sample().")
        rewards = torch.as_tensor(rewards, dtype=torch.float32, device=self.device).detach()
        if rewards.shape != (orders.shape[0],):
            raise ValueError(
                f"{caller}: {orders.shape[0]} orders but rewards of shape {tuple(rewards.shape)}; pass one reward "
                "per episode."
            )
        if not bool(torch.isfinite(rewards).all()):
            raise ValueError(f"{caller}: rewards must be finite, got {rewards.tolist()}.")

        n = rewards.numel()
        mean_reward = float(rewards.double().mean())
        if self.baseline == "batch":
            b = (rewards.sum() - rewards) / (n - 1) if n > 1 else torch.zeros_like(rewards)
        else:
            b = torch.full_like(rewards, mean_reward if self._ema is None else self._ema)

        logits = self.policy()
        logp = log_prob(logits, orders, self.group_sizes, self.min_keep)
        entropy = entropy_estimate(logits, orders, self.group_sizes, self.min_keep).mean()
        loss = -((rewards - b) * logp).mean() - self.entropy_coef * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

        if self.baseline == "ema":
            # One decay step per episode, in episode order: the average follows the rewards at the same pace
            # whatever the batch size (per update, a batch of 20 would lag 20 times as many episodes behind).
            ema = mean_reward if self._ema is None else self._ema
            for reward in rewards.double().tolist():
                ema = self.baseline_decay * ema + (1 - self.baseline_decay) * reward
            self._ema = ema
        self.steps += 1
        return {
            "loss": float(loss.detach()),
            "entropy": float(entropy.detach()),
            "baseline": float(b.double().mean()),
            "mean_reward": mean_reward,
        }

    def best_guess(self) -> torch.Tensor:
        """The greedy keep-set: the top logits of each group up to its minimum, then the top logits of the rest.

        Returns:
            torch.Tensor: an ``[N]`` boolean mask with ``n_keep`` entries set.

        Example:
            >>> import torch
            >>> from torch_rlprune.controller import ReinforceController
            >>> ctrl = ReinforceController(torch.zeros(6, 1), [3, 3], 2, [1, 1], seed=0)
            >>> with torch.no_grad():
            ...     _ = ctrl.policy.filter_logit.copy_(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0]))
            >>> ctrl.best_guess().nonzero().flatten().tolist()
            [0, 3]
        """
        with torch.no_grad():
            logits = self.policy()[None]
            return _top_sequence(logits, logits, self._plan)[0][0]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the search bit-exactly, including the sampling generator's state.

        As with :meth:`torch.nn.Module.state_dict`, the tensors share storage with the live ones: save the dict
        (:func:`torch.save`) or deep-copy it to keep a snapshot.

        Returns:
            dict: ``"config"`` (what must match on loading), ``"policy"``, ``"optimizer"`` (which holds ``lr``),
            ``"generator"``, ``"baseline"`` (the moving average, ``None`` before the first update), ``"steps"``,
            ``"entropy_coef"`` and ``"baseline_decay"``.

        Example:
            >>> import copy
            >>> import torch
            >>> from torch_rlprune.controller import ReinforceController
            >>> a = ReinforceController(torch.zeros(6, 1), [6], 2, [0], seed=0)
            >>> b = ReinforceController(torch.zeros(6, 1), [6], 2, [0], seed=1)
            >>> b.load_state_dict(copy.deepcopy(a.state_dict()))
            >>> torch.equal(a.sample(5)[1], b.sample(5)[1])
            True
        """
        return {
            "config": self._config(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": self._ema,
            "steps": self.steps,
            "entropy_coef": self.entropy_coef,
            "baseline_decay": self.baseline_decay,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; sampling and updates then continue exactly as they would have.

        Args:
            state_dict (dict): a dict returned by :meth:`state_dict` of a controller with the same group sizes,
                ``n_keep``, ``min_keep``, feature count, hidden width and kind of baseline. The learning rate,
                entropy coefficient and baseline decay are taken from the state.

        Raises:
            TypeError: ``state_dict`` is not such a dict.
            ValueError: the state comes from a controller set up differently.
        """
        if not isinstance(state_dict, dict) or "config" not in state_dict:
            raise TypeError("ReinforceController.load_state_dict: pass a dict returned by state_dict().")
        theirs, ours = state_dict["config"], self._config()
        different = sorted(k for k in ours if theirs.get(k) != ours[k])
        if different:
            raise ValueError(
                f"ReinforceController.load_state_dict: the state was saved with other {', '.join(different)} "
                f"({', '.join(f'{k}={theirs.get(k)!r}' for k in different)}); build the controller as it was built."
            )
        self.policy.load_state_dict(state_dict["policy"])
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.generator.set_state(state_dict["generator"])
        self._ema = state_dict["baseline"]
        self.steps = int(state_dict["steps"])
        self.entropy_coef = float(state_dict["entropy_coef"])
        self.baseline_decay = float(state_dict["baseline_decay"])

    def _config(self) -> dict[str, Any]:
        return {
            "group_sizes": list(self.group_sizes),
            "min_keep": list(self.min_keep),
            "n_keep": self.n_keep,
            "n_features": int(self.policy.features.shape[1]),
            "hidden": self.hidden,
            "baseline": self.baseline,
        }
