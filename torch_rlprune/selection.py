"""From per-channel scores to keep masks, under a global budget and a per-group minimum."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

__all__ = [
    "Budget",
    "MACs",
    "Params",
    "BUDGETS",
    "fewest_to_prune",
    "validate_amount",
    "channels_to_prune",
    "min_keep_counts",
    "check_round_to",
    "keep_floors",
    "check_budget",
    "select_channels",
    "normalize_scores",
]

NORMALIZATIONS = ("mean", "max", "l2", "rank", "none")


@dataclass(frozen=True)
class Budget:
    r"""A budget in a cost of the sliced network, for ``amount=``: prune until the model keeps ``fraction`` of it.

    The cost is counted on the sliced network by :func:`torch_rlprune.metrics.model_stats`, relative to the model
    as it is (with the masks it already has). A ranking prunes the fewest of its lowest-ranked filters that bring
    the cost to the budget; a width search (``RLStructuredPruning(policy="widths")``,
    :class:`~torch_rlprune.RandomWidthPruning`) proposes only layer widths within it. The subclasses,
    :class:`MACs` and :class:`Params`, name the cost; a new kind of budget is one more subclass.

    Args:
        fraction (float): the share of the cost kept, in (0, 1].

    Example:
        >>> import torch_rlprune as rlp
        >>> [(type(b).__name__, b.kept) for b in (rlp.MACs(0.25), rlp.Params(0.5))]
        [('MACs', 'macs_kept'), ('Params', 'params_kept')]
    """

    fraction: float
    #: the :class:`~torch_rlprune.metrics.ModelStats` property that counts what the budget keeps
    kept: ClassVar[str] = ""
    #: what it counts, in words
    counts: ClassVar[str] = ""

    def __post_init__(self) -> None:
        if not self.kept:
            raise TypeError(f"{type(self).__name__} names no cost; use rlp.MACs or rlp.Params.")
        f = self.fraction
        if isinstance(f, bool) or not isinstance(f, numbers.Real) or not 0 < f <= 1:
            raise ValueError(
                f"{type(self).__name__}: fraction must lie in (0, 1] (0.25 keeps a quarter), got {f!r}."
            )


@dataclass(frozen=True)
class MACs(Budget):
    r"""A budget in multiply-accumulates per example, for ``amount=``: the model keeps ``fraction`` of its MACs.

    AMC-style users state budgets this way. The MACs are those of the sliced network per example, as
    :func:`torch_rlprune.metrics.count_macs` counts them (see :class:`Budget`).

    Args:
        fraction (float): the share of the MACs kept, in (0, 1].

    Example:
        >>> import torch
        >>> import torch.nn.utils.prune as prune
        >>> import torch_rlprune as rlp
        >>> model = rlp.models.BasicCNN()
        >>> x = torch.randn(1, 3, 32, 32)
        >>> convs = [(m, "weight") for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        >>> rlp.global_structured(convs, prune.LnStructured, n=1, amount=rlp.MACs(0.25), model=model,
        ...                       example_inputs=x)
        >>> rlp.metrics.count_macs(rlp.slim(model, x), x) <= 0.25 * rlp.metrics.count_macs(rlp.models.BasicCNN(), x)
        True
    """

    kept: ClassVar[str] = "macs_kept"
    counts: ClassVar[str] = "MACs per example"


@dataclass(frozen=True)
class Params(Budget):
    r"""A budget in parameters, for ``amount=``: the model keeps ``fraction`` of its parameters.

    The parameters are those of the sliced network, as :func:`torch_rlprune.metrics.count_params` counts them
    (see :class:`Budget`): for a model headed for a small device, size is the budget rather than compute.

    Args:
        fraction (float): the share of the parameters kept, in (0, 1].

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> model, x = rlp.models.BasicCNN(), torch.randn(1, 3, 32, 32)
        >>> rlp.global_structured([(m, "weight") for m in model.modules() if isinstance(m, torch.nn.Conv2d)], "l1",
        ...                       amount=rlp.Params(0.1), model=model, example_inputs=x)
        >>> stats = rlp.metrics.model_stats(model, x)  # the masked model, counted as sliced
        >>> 0.09 < stats.params_kept / stats.params <= 0.1
        True
    """

    kept: ClassVar[str] = "params_kept"
    counts: ClassVar[str] = "parameters"


#: Every kind of budget by the name the command gives it (``--budget``): the subclasses of :class:`Budget` above (a
#: new kind is one more of them, here).
BUDGETS: dict[str, type[Budget]] = {kind.__name__.lower(): kind for kind in Budget.__subclasses__()}


def fewest_to_prune(cost: Callable[[int], float], most: int, budget: float, caller: str) -> int:
    """The smallest ``n`` in ``[0, most]`` with ``cost(n) <= budget``, for a ``cost`` that falls as ``n`` grows.

    Args:
        cost (callable): ``cost(n)``, e.g. the MACs left after pruning the ``n`` lowest-ranked filters.
        most (int): the most that may be pruned.
        budget (float): the largest cost allowed.
        caller (str): the function named in error messages.

    Returns:
        int: the fewest to prune.

    Raises:
        ValueError: even ``cost(most)`` is above the budget.

    Example:
        >>> fewest_to_prune(lambda n: 100 - 3 * n, most=30, budget=50, caller="example")
        17
    """
    if cost(most) > budget:
        raise ValueError(
            f"{caller}: the budget keeps less than pruning every filter that min_keep allows leaves; lower "
            "min_keep or raise the budget's fraction."
        )
    low, high = -1, most  # cost(low) > budget (or low = -1), cost(high) <= budget
    while high - low > 1:
        mid = (low + high) // 2
        if cost(mid) <= budget:
            high = mid
        else:
            low = mid
    return high


def validate_amount(amount: object, caller: str) -> None:
    """Raise if ``amount`` is not a float in [0, 1] or a non-negative int (the convention of ``torch.nn.utils.prune``)."""
    if isinstance(amount, Budget):
        return
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(
            f"{caller}: amount must be a float in [0, 1] (a fraction of the filters) or a non-negative int "
            f"(a number of filters); got {type(amount).__name__}."
        )
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise ValueError(f"{caller}: amount={amount} is negative; pass a number of filters >= 0.")
    elif not 0.0 <= float(amount) <= 1.0:
        raise ValueError(
            f"{caller}: amount={amount} is not a fraction in [0, 1]; pass e.g. amount=0.7 to prune 70% of the "
            "filters, or an int to prune that many."
        )


def channels_to_prune(amount: float | int, alive: int, caller: str) -> int:
    """The number of channels ``amount`` asks to prune out of ``alive`` (rounded as ``torch.nn.utils.prune`` does)."""
    validate_amount(amount, caller)
    if isinstance(amount, Budget):
        raise TypeError(
            f"{caller}: a {type(amount).__name__} budget needs the whole model: use torch_rlprune.global_structured."
        )
    if isinstance(amount, numbers.Integral):
        if amount > alive:
            raise ValueError(
                f"{caller}: amount={amount} filters is more than the {alive} prunable filters left; "
                f"pass at most {alive}, or a fraction."
            )
        return int(amount)
    return round(float(amount) * alive)


def min_keep_counts(sizes: Sequence[int], min_keep: float | int, caller: str) -> list[int]:
    """Per-group minimum of channels kept: an int count, or a float fraction of each group (rounded up)."""
    if isinstance(min_keep, bool) or not isinstance(min_keep, numbers.Real):
        raise TypeError(f"{caller}: min_keep must be an int count or a float fraction, got {type(min_keep).__name__}.")
    if isinstance(min_keep, numbers.Integral):
        if min_keep < 0:
            raise ValueError(f"{caller}: min_keep={min_keep} is negative; pass 0 or more filters per layer.")
        return [min(int(min_keep), size) for size in sizes]
    if not 0.0 <= float(min_keep) <= 1.0:
        raise ValueError(f"{caller}: min_keep={min_keep} is not a fraction in [0, 1].")
    return [math.ceil(float(min_keep) * size) for size in sizes]


def check_round_to(round_to: object, caller: str) -> int:
    """Validate ``round_to`` (``None`` or an int >= 1); return the block size it means, 1 for ``None``."""
    if round_to is None:
        return 1
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral):
        raise TypeError(
            f"{caller}: round_to must be an int >= 1, the multiple every layer's kept filters are rounded to "
            f"(e.g. round_to=8), or None; got {type(round_to).__name__}."
        )
    if round_to < 1:
        raise ValueError(f"{caller}: round_to={round_to}; pass an int >= 1 (e.g. 8 or 16), or None not to round.")
    return int(round_to)


def keep_floors(min_keep: Sequence[int], alive: Sequence[int], round_to: int = 1) -> list[int]:
    """Channels group ``i`` keeps at least: ``min_keep[i]`` rounded up to a multiple of ``round_to``, at most
    ``alive[i]`` (a group with fewer alive channels than its rounded minimum keeps them all)."""
    return [min(-(-k // round_to) * round_to, a) for k, a in zip(min_keep, alive)]


def check_budget(alive: Sequence[int], n_prune: int, min_keep: Sequence[int], caller: str, round_to: int = 1) -> None:
    """Raise ``ValueError`` if ``n_prune`` channels cannot go while group ``i`` keeps ``min_keep[i]`` of ``alive[i]``.

    With ``round_to`` > 1 the minima are first rounded up as :func:`keep_floors` rounds them.
    """
    floors = keep_floors(min_keep, alive, round_to)
    free = sum(max(a - k, 0) for a, k in zip(alive, floors))
    if n_prune > free:
        rounded = f" rounded up to a multiple of round_to={round_to}" if round_to > 1 else ""
        fix = "Lower amount, min_keep or round_to." if round_to > 1 else "Lower amount or min_keep."
        raise ValueError(
            f"{caller}: cannot prune {n_prune} filters while every layer keeps its minimum (min_keep{rounded}); "
            f"at most {free} can go. {fix}"
        )


def normalize_scores(scores: torch.Tensor, alive: torch.Tensor, how: str) -> torch.Tensor:
    """Divide one group's scores by the mean, max or L2 norm of its alive channels' scores (or leave them).

    ``"rank"`` replaces each alive channel's score by its rank among them over their number, in ``(0, 1]``, so
    that a global ranking prunes the same fraction of every group.
    """
    if how == "none":
        return scores
    live = scores[alive]
    if live.numel() == 0:
        return scores
    if how == "rank":
        ranked = torch.zeros_like(scores, dtype=torch.float64)
        order = torch.argsort(live, stable=True)
        positions = torch.empty_like(order)
        positions[order] = torch.arange(1, len(order) + 1)
        ranked[alive] = positions.double() / len(order)
        return ranked
    scale = {"mean": live.mean, "max": live.max, "l2": live.norm}[how]()
    return scores / scale if scale > 0 else scores


def select_channels(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    n_prune: int,
    min_keep: Sequence[int],
    caller: str = "select_channels",
    round_to: int = 1,
) -> list[torch.Tensor]:
    """Prune the ``n_prune`` lowest-scoring alive channels over all groups, keeping ``min_keep[i]`` in group ``i``.

    In each group the ``min_keep`` best alive channels are protected; the rest compete in one global ranking.
    Ties are broken by group order, then channel order, so the result is deterministic.

    With ``round_to`` > 1 every group keeps a multiple of ``round_to`` alive channels, or all of them. Each
    group's minimum is rounded up to a multiple (at most the group's alive channels), and the channels below it,
    in the group's order of score, form blocks of ``round_to``; the last block holds the remainder where the
    group's alive channels are not a multiple. Blocks compete in the global ranking by their mean score, and a
    block is pruned whole, lowest first, while it fits in what is left of ``n_prune``. Rounding thus never prunes
    more than ``n_prune``, and prunes fewer by less than ``round_to`` in all. ``round_to=1`` is the plain ranking.

    Args:
        scores (sequence of torch.Tensor): per-channel scores, one 1-D tensor per group (higher is more important).
        alive (sequence of torch.Tensor): boolean tensors, ``True`` for channels not yet pruned.
        n_prune (int): how many alive channels to prune in all (at most; see ``round_to``).
        min_keep (sequence of int): channels each group keeps at least.
        caller (str): the function named in error messages.
        round_to (int): the multiple each group's kept channels are rounded to. Default: 1 (no rounding).

    Returns:
        One boolean keep mask per group (already pruned channels stay ``False``).

    Raises:
        ValueError: if ``n_prune`` alive channels cannot go without breaking a group's (rounded) minimum.

    Example:
        >>> import torch
        >>> scores = [torch.arange(20.0), torch.arange(12.0)]
        >>> alive = [torch.ones(20, dtype=torch.bool), torch.ones(12, dtype=torch.bool)]
        >>> [int(k.sum()) for k in select_channels(scores, alive, 14, [1, 1])]
        [13, 5]
        >>> [int(k.sum()) for k in select_channels(scores, alive, 14, [1, 1], round_to=8)]
        [16, 8]
    """
    sizes = [int(a.sum()) for a in alive]
    floors = keep_floors(min_keep, sizes, round_to)
    channels, block_ids, channel_scores = [], [], []
    n_blocks, offset = 0, 0
    for s, a, floor in zip(scores, alive, floors):
        idx = a.nonzero().reshape(-1)
        order = torch.sort(s[idx].double().cpu(), descending=True, stable=True).indices
        free = idx[order[floor:]]
        full, remainder = divmod(free.numel(), round_to)
        # Blocks numbered in ranking order, except that a remainder (the group's lowest channels) comes first:
        # it must go before any full block of its group, or the group would keep a count that is no multiple,
        # and on equal means the earlier block is pruned first.
        ids = torch.arange(free.numel()) // round_to + (1 if remainder else 0)
        ids[full * round_to :] = 0
        channels.append(free + offset)
        block_ids.append(ids + n_blocks)
        channel_scores.append(s[free].double().cpu())
        n_blocks += full + (1 if remainder else 0)
        offset += a.numel()
    check_budget(sizes, n_prune, floors, caller, round_to)
    if n_prune == 0:
        return [a.clone() for a in alive]
    block_of = torch.cat(block_ids)
    size = torch.bincount(block_of, minlength=n_blocks)
    mean = torch.zeros(n_blocks, dtype=torch.float64).index_add_(0, block_of, torch.cat(channel_scores)) / size
    ranked = torch.sort(mean, stable=True).indices
    # Blocks are pruned lowest first while they fit in the budget: the longest prefix of the ranking, then such
    # of the smaller remainders further on as still fit (no full block can, as less than one is left).
    fits = int((size[ranked].cumsum(0) <= n_prune).sum())
    pruned = torch.zeros(n_blocks, dtype=torch.bool)
    pruned[ranked[:fits]] = True
    left = n_prune - int(size[ranked[:fits]].sum())
    for b in ranked[fits:][size[ranked[fits:]] <= left].tolist():
        if size[b] <= left:
            pruned[b] = True
            left -= int(size[b])
    flat = torch.cat(list(alive))
    flat[torch.cat(channels)[pruned[block_of]]] = False
    return list(flat.split([a.numel() for a in alive]))
