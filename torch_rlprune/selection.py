"""From per-channel scores to keep masks, under a global budget and a per-group minimum."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "validate_amount",
    "channels_to_prune",
    "min_keep_counts",
    "check_budget",
    "select_channels",
    "normalize_scores",
]

NORMALIZATIONS = ("mean", "max", "l2", "none")


def validate_amount(amount: object, caller: str) -> None:
    """Raise if ``amount`` is not a float in [0, 1] or a non-negative int (the convention of ``torch.nn.utils.prune``)."""
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


def check_budget(alive: Sequence[int], n_prune: int, min_keep: Sequence[int], caller: str) -> None:
    """Raise ``ValueError`` if ``n_prune`` channels cannot go while group ``i`` keeps ``min_keep[i]`` of ``alive[i]``."""
    free = sum(max(a - k, 0) for a, k in zip(alive, min_keep))
    if n_prune > free:
        raise ValueError(
            f"{caller}: cannot prune {n_prune} filters while every layer keeps its minimum (min_keep); "
            f"at most {free} can go. Lower amount or min_keep."
        )


def normalize_scores(scores: torch.Tensor, alive: torch.Tensor, how: str) -> torch.Tensor:
    """Divide one group's scores by the mean, max or L2 norm of its alive channels' scores (or leave them)."""
    if how == "none":
        return scores
    live = scores[alive]
    if live.numel() == 0:
        return scores
    scale = {"mean": live.mean, "max": live.max, "l2": live.norm}[how]()
    return scores / scale if scale > 0 else scores


def select_channels(
    scores: Sequence[torch.Tensor],
    alive: Sequence[torch.Tensor],
    n_prune: int,
    min_keep: Sequence[int],
    caller: str = "select_channels",
) -> list[torch.Tensor]:
    """Prune the ``n_prune`` lowest-scoring alive channels over all groups, keeping ``min_keep[i]`` in group ``i``.

    In each group the ``min_keep`` best alive channels are protected; the rest compete in one global ranking.
    Ties are broken by group order, then channel order, so the result is deterministic.

    Args:
        scores (sequence of torch.Tensor): per-channel scores, one 1-D tensor per group (higher is more important).
        alive (sequence of torch.Tensor): boolean tensors, ``True`` for channels not yet pruned.
        n_prune (int): how many alive channels to prune in all.
        min_keep (sequence of int): channels each group keeps at least.

    Returns:
        One boolean keep mask per group (already pruned channels stay ``False``).

    Raises:
        ValueError: if ``n_prune`` alive channels cannot go without breaking a group's minimum.
    """
    candidates_score: list[torch.Tensor] = []
    candidates_at: list[tuple[int, torch.Tensor]] = []
    keep = [a.clone() for a in alive]
    for g, (s, a, k) in enumerate(zip(scores, alive, min_keep)):
        idx = a.nonzero().reshape(-1)
        order = torch.sort(s[idx].double().cpu(), descending=True, stable=True).indices
        free = idx[order[min(k, idx.numel()) :]]
        candidates_score.append(s[free].double().cpu())
        candidates_at.append((g, free))
    check_budget([int(a.sum()) for a in alive], n_prune, list(min_keep), caller)
    if n_prune == 0:
        return keep
    flat = torch.cat(candidates_score)
    owner = torch.cat([torch.full((f.numel(),), g) for g, f in candidates_at])
    channel = torch.cat([f for _, f in candidates_at])
    chosen = torch.sort(flat, stable=True).indices[:n_prune]
    for g, c in zip(owner[chosen].tolist(), channel[chosen].tolist()):
        keep[g][c] = False
    return keep
