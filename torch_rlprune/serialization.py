"""Saving a pruned model without pickling code, and rebuilding it from the original architecture.

The file holds only tensors, strings and numbers, so it loads with ``torch.load(weights_only=True)``: for every
channel group the producer names and the kept channel indices, and the ``state_dict`` of the sliced model. To
load it, build the original (unpruned) architecture as usual; :func:`load` traces it, masks the same channels,
slices them out with :func:`torch_rlprune.slim` and loads the weights.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import nn
from torch.nn.utils import prune

from ._files import atomic_save, read_checked
from ._inputs import ExampleInputs
from .groups import ChannelGroup, ChannelGroups, channel_groups
from .masks import apply_channel_masks
from .slicing import check_consistent, slim

__all__ = ["save", "load"]

FORMAT = "torch-rlprune/sliced"
VERSION = 1

PathLike = Union[str, os.PathLike]


def _key(group: ChannelGroup) -> tuple[str, ...]:
    # A conv whose output is split holds several groups; the first filter of each names it.
    return tuple(sorted(m.name + (f"@{m.offset}" if m.offset else "") for m in group.producers))


def save(
    model: nn.Module, path: PathLike, example_inputs: ExampleInputs, *, groups: ChannelGroups | None = None
) -> None:
    r"""Save a masked model as its sliced weights plus the kept channels of every group.

    The model itself is not changed. The file is written atomically (a temporary file, then a rename).

    Args:
        model (torch.nn.Module): the masked model (as pruned by :func:`torch_rlprune.global_structured`).
        path (str or os.PathLike): where to write.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts.
        groups (ChannelGroups, optional): channel groups already computed for ``model``; saves a trace.

    Example:
        >>> import tempfile, os
        >>> import torch
        >>> import torch.nn as nn
        >>> import torch.nn.utils.prune as prune
        >>> import torch_rlprune as rlp
        >>> model = rlp.models.BasicCNN()
        >>> x = torch.randn(1, 3, 32, 32)
        >>> convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
        >>> rlp.global_structured(convs, prune.LnStructured, n=1, amount=0.7, model=model, example_inputs=x)
        >>> path = os.path.join(tempfile.mkdtemp(), "basiccnn.pt")
        >>> rlp.save(model, path, x)
        >>> small = rlp.load(path, rlp.models.BasicCNN(), x)
        >>> torch.allclose(small.eval()(x), rlp.slim(model, x).eval()(x))
        True
    """
    if groups is None:
        groups = channel_groups(model, example_inputs)
    keeps = check_consistent(groups)
    sliced = slim(model, example_inputs, groups=groups) if prune.is_pruned(model) else model
    atomic_save(
        {
            "format": FORMAT,
            "version": VERSION,
            "groups": group_records(groups, keeps),
            "state_dict": sliced.state_dict(),
        },
        path,
    )


def group_records(groups: Sequence[ChannelGroup], keeps: Sequence[torch.Tensor]) -> list[dict[str, Any]]:
    """The kept channels of every group that lost some, each group named by its producer convs."""
    return [{"producers": list(_key(g)), "size": g.size, "kept": k.nonzero().reshape(-1)}
            for g, k in zip(groups, keeps) if not k.all()]  # fmt: skip


def match_records(
    groups: Sequence[ChannelGroup], stored: list[dict[str, Any]], path: PathLike, caller: str
) -> list[tuple[ChannelGroup, torch.Tensor]]:
    """Each record of :func:`group_records` paired with the group of ``groups`` it names, as a keep mask."""
    by_key = {_key(g): g for g in groups}
    matched = []
    for entry in stored:
        group = by_key.get(tuple(entry["producers"]))
        if group is None or group.size != entry["size"]:
            raise ValueError(
                f"{caller}: {path} was saved from another architecture: it prunes the channels produced by "
                f"{', '.join(entry['producers'])} ({entry['size']} channels), which this model does not have. "
                "Build the model exactly as it was built before pruning (a file saved by a torch_rlprune whose "
                "tracer grouped this model's channels otherwise, before it could prune them, no longer matches)."
            )
        keep = torch.zeros(group.size, dtype=torch.bool)
        keep[entry["kept"]] = True
        matched.append((group, keep))
    return matched


def load(
    path: PathLike, model: nn.Module, example_inputs: ExampleInputs, *, map_location: Any = None
) -> nn.Module:
    r"""Rebuild a model saved by :func:`save` from a fresh instance of its original architecture.

    ``model`` is masked, sliced in place and given the saved weights, as :meth:`torch.nn.Module.load_state_dict`
    fills a model in place; it is also returned.

    Args:
        path (str or os.PathLike): the file written by :func:`save`.
        model (torch.nn.Module): an unpruned instance of the architecture that was saved.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts.
        map_location: passed to :func:`torch.load`.

    Returns:
        torch.nn.Module: ``model``, now the sliced model with the saved weights.

    Raises:
        ValueError: the file is not a torch-rlprune save, or comes from another architecture.
    """
    data = read_checked(path, "torch-rlprune file", "load", map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"load: {path} is not a file written by torch_rlprune.save.")
    if data.get("version") != VERSION:
        raise ValueError(f"load: {path} has format version {data.get('version')}; this release reads {VERSION}.")
    if prune.is_pruned(model):
        raise ValueError("load: pass a fresh, unpruned instance of the saved architecture.")
    matched = match_records(channel_groups(model, example_inputs), data["groups"], path, "load")
    apply_channel_masks([g for g, _ in matched], [k for _, k in matched])
    slim(model, example_inputs, inplace=True, verify=False)
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"load: the weights in {path} do not fit this architecture: {exc}") from exc
    return model
