"""Per-filter features for a learnt pruning policy.

A policy that decides which filters to keep (see :mod:`torch_rlprune.search.controller`) sees every prunable channel of
a model as one row of features. The channels of all channel groups (see :func:`torch_rlprune.channel_groups`) are
concatenated in group order, so row ``i`` of :func:`filter_features` is channel ``i - offset[g]`` of group ``g``
where ``offset[g]`` is the summed size of the groups before it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from .. import criteria
from ..groups import ChannelGroup, ChannelGroups, check_groups_of
from ..masks import alive_channels

__all__ = ["FEATURE_NAMES", "feature_names", "filter_features"]

#: Names of the columns :func:`filter_features` always returns, in order.
FEATURE_NAMES: tuple[str, ...] = ("l1", "bn_scale", "depth", "width", "log_width")

Scores = Mapping[tuple[nn.Module, str], torch.Tensor]


def feature_names(saliency: Scores | None = None) -> tuple[str, ...]:
    r"""Names of the columns that :func:`filter_features` returns for the same ``saliency`` argument.

    Args:
        saliency (dict, optional): the per-filter scores passed to :func:`filter_features`, if any.

    Returns:
        tuple of str: :data:`FEATURE_NAMES`, followed by ``"saliency"`` when ``saliency`` is given.

    Example:
        >>> from torch_rlprune.search.features import feature_names
        >>> feature_names()
        ('l1', 'bn_scale', 'depth', 'width', 'log_width')
        >>> feature_names(saliency={})[-1]
        'saliency'
    """
    return FEATURE_NAMES + (("saliency",) if saliency is not None else ())


def _relative(values: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """Divide a group's per-channel values by their mean over its unpruned channels (a pruned channel's zero
    would otherwise inflate every other one); a group of zeros (nothing to compare) stays zero."""
    mean = values[alive].mean() if alive.any() else values.new_zeros(())
    return values / mean if mean > 0 else torch.zeros_like(values)


def _group_sum(group: ChannelGroup, scores: Scores, what: str) -> torch.Tensor:
    """Sum a per-filter score dict over the group's filter members, at the group's channels."""
    rows = []
    for member in group.filters:
        per_filter = scores.get((member.module, "weight"))
        if per_filter is not None:
            # A tied depthwise conv after a concat holds several groups, each at its own offset.
            rows.append(member.gather(per_filter.detach().reshape(-1).double().cpu(), group.size).sum(dim=1))
    if not rows:
        raise ValueError(
            f"filter_features: {what} has no score for any convolution of group {group.name!r}; pass a dict "
            "keyed by (conv, 'weight') for the model's convolutions, as the functions of torch_rlprune.criteria "
            "return it."
        )
    return torch.stack(rows).sum(dim=0)


def filter_features(
    model: nn.Module, groups: ChannelGroups | Sequence[ChannelGroup], *, saliency: Scores | None = None
) -> torch.Tensor:
    r"""One row of features per prunable channel ("filter") of ``model``, for a learnt keep/prune policy.

    Rows follow the channels of ``groups`` concatenated in group order. Every column is of order 1, so that a
    policy network can take the matrix as it is (or standardise it per column). The columns
    (see :data:`FEATURE_NAMES`):

    * ``l1``: the L1 norm of the channel's weights, summed over the group's filter members (producers and tied
      depthwise convs) as :func:`torch_rlprune.criteria.l1` scores them (the effective, masked weight of a
      pruned conv), divided by the mean over the group's unpruned channels. It ranks the channel *within* its layer; the scale of
      weights, which differs between layers for reasons unrelated to importance, is divided out.
    * ``bn_scale``: the summed :math:`|\gamma|` of the norms that normalise the channel (a norm without affine
      weight counts 1), divided by the mean over the group; 1 for every channel of a group without a norm.
    * ``depth``: the group's index divided by ``max(1, n_groups - 1)``, from 0 (first group) to 1 (last).
    * ``width``: the group's size divided by the largest group size.
    * ``log_width``: :math:`\log(1 + \text{size}) / \log(1 + \text{largest size})`, which tells narrow layers
      apart better than ``width`` does.
    * ``saliency`` (only when ``saliency`` is given): the scores reduced like ``l1``: summed over the group's
      filter members, divided by the mean over the group.

    A relative column (``l1``, ``bn_scale``, ``saliency``) is 0 throughout a group whose values are all 0.

    Args:
        model (torch.nn.Module): the model whose filters to describe.
        groups (ChannelGroups or sequence of ChannelGroup): its channel groups, as
            :func:`torch_rlprune.channel_groups` returns them (or a selection of them).
        saliency (dict, optional): extra per-filter scores keyed by ``(conv, "weight")``, such as
            :func:`torch_rlprune.criteria.snip` returns; convs missing from the dict add nothing to their group's
            sum, but every group needs a score for at least one of its filter members.

    Returns:
        torch.Tensor: ``float32`` CPU tensor of shape ``[N, F]``, where ``N`` is the summed size of the groups
        and ``F`` is ``len(feature_names(saliency))``.

    Raises:
        TypeError: ``model`` is not a module, ``groups`` not channel groups, or ``saliency`` not a mapping.
        ValueError: ``groups`` is empty or belongs to another model, or ``saliency`` covers no filter of a group.

    Example:
        >>> import torch
        >>> from torch_rlprune.groups import channel_groups
        >>> from torch_rlprune.search.features import filter_features, feature_names
        >>> from torch_rlprune.models import BasicCNN
        >>> model = BasicCNN(width=0.25)
        >>> groups = channel_groups(model, torch.randn(1, 3, 32, 32))
        >>> x = filter_features(model, groups)
        >>> x.shape, feature_names()
        (torch.Size([240, 5]), ('l1', 'bn_scale', 'depth', 'width', 'log_width'))
        >>> x[[0, 16, 48, 112], 2:4]  # depth and width of each group's first channel
        tensor([[0.0000, 0.1250],
                [0.3333, 0.2500],
                [0.6667, 0.5000],
                [1.0000, 1.0000]])
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"filter_features: model must be a torch.nn.Module, got {type(model).__name__}.")
    if isinstance(groups, ChannelGroup) or not (
        isinstance(groups, Sequence) and all(isinstance(g, ChannelGroup) for g in groups)
    ):
        raise TypeError("filter_features: groups must be the ChannelGroups of channel_groups(model, example_inputs).")
    groups = list(groups)
    if not groups:
        raise ValueError("filter_features: groups is empty; the model has no prunable channel to describe.")
    check_groups_of(model, groups, "filter_features")
    if saliency is not None and not isinstance(saliency, Mapping):
        raise TypeError(
            "filter_features: saliency must be a dict of per-filter scores keyed by (conv, 'weight'), such as "
            f"criteria.snip(model, inputs, targets) returns; got {type(saliency).__name__}."
        )

    magnitude = criteria.l1(model)
    sizes = [g.size for g in groups]
    largest = max(sizes)
    last = max(1, len(groups) - 1)
    blocks = []
    for index, group in enumerate(groups):
        alive = alive_channels(group)
        columns = [
            _relative(_group_sum(group, magnitude, "the L1 criterion"), alive),
            _relative(criteria.group_gamma(group).double(), alive)
            if criteria.scaling_norms(group)
            else torch.ones(group.size, dtype=torch.float64),
            torch.full((group.size,), index / last, dtype=torch.float64),
            torch.full((group.size,), group.size / largest, dtype=torch.float64),
            torch.full((group.size,), math.log1p(group.size) / math.log1p(largest), dtype=torch.float64),
        ]
        if saliency is not None:
            columns.append(_relative(_group_sum(group, saliency, "saliency"), alive))
        blocks.append(torch.stack(columns, dim=1))
    return torch.cat(blocks).float()
