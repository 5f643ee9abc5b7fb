"""Channel masks as ordinary :mod:`torch.nn.utils.prune` masks.

Pruning channel ``c`` of a group masks row ``c`` of every filter member's weight (producers and tied depthwise
convs) and bias, entry ``c`` of every norm's weight and bias, and column ``c`` of every consumer's weight, through
:func:`prune.custom_from_mask`. The pruned channel is then zero wherever the group's tensor flows, and whatever it
still carries on the way (a constant shift after it, as timm's ``LearnableAffineBlock`` adds, or ``sigmoid(0)``)
reaches no consumer: the masked model computes what the sliced one does.
Masks compose with earlier ones the way :class:`prune.PruningContainer` composes them: by multiplication.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.utils import prune

from ._state import pruning_methods
from .groups import ChannelGroup, Member, Role
from .layers import channel_dims, children_read, layer_of, weight_and_bias

__all__ = ["effective_weight", "on_kept_channels", "alive_channels", "apply_channel_masks", "masked_tensors",
           "keep_vectors", "KeepVectors"]

#: For each (module, dim) that a channel group indexes, which entries along that dim survive.
KeepVectors = dict[tuple[nn.Module, int], torch.Tensor]


def effective_weight(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The tensor ``module`` currently computes with under ``name``: ``<name>_orig * <name>_mask`` when pruned.

    Unlike ``getattr(module, name)``, which a pruning hook refreshes only at the next forward pass, this reflects
    changes made to ``<name>_orig`` since (for example by an optimizer step).

    Args:
        module (torch.nn.Module): the module.
        name (str): the parameter name, e.g. ``"weight"``.

    Returns:
        The effective tensor (attached to autograd as the parameter is).
    """
    mask = getattr(module, name + "_mask", None)
    if mask is None:
        return getattr(module, name)
    return getattr(module, name + "_orig") * mask


def masked_tensors(member: Member) -> tuple[str, ...]:
    """Names of the ``member``'s tensors that a channel mask covers (``weight`` and ``bias`` where present; a
    consumer's ``weight`` only, along its input dim; see :func:`torch_rlprune.layers.weight_and_bias`)."""
    if member.role is Role.SCALE:  # what it meets at a pruned channel is zero, and the consumers' columns are masked
        return ()
    weight, bias = weight_and_bias(member.module)
    if member.role is Role.CONSUMER:
        return (weight,)
    return tuple(
        n for n in (weight, bias) if getattr(member.module, n + "_orig", getattr(member.module, n, None)) is not None
    )


def _rows_alive(mask: torch.Tensor, member: Member, size: int) -> torch.Tensor:
    idx = member.indices(torch.arange(size, device=mask.device))
    return mask.movedim(member.dim, 0)[idx].reshape(size, -1).ne(0).any(dim=1)


def alive_channels(group: ChannelGroup) -> torch.Tensor:
    """Which channels of ``group`` are not yet pruned.

    A channel counts as pruned as soon as one masked member (a producer or tied conv's weight, a norm's weight)
    has it fully masked; a group whose members disagree is thus read the strict way.

    Args:
        group (ChannelGroup): the group.

    Returns:
        A boolean tensor of length ``group.size``.
    """
    alive = torch.ones(group.size, dtype=torch.bool)
    for member in group.members:
        if member.role in (Role.CONSUMER, Role.SCALE):
            continue
        mask = getattr(member.module, weight_and_bias(member.module)[0] + "_mask", None)
        if mask is not None:
            alive &= _rows_alive(mask, member, group.size).cpu()
    return alive


def apply_channel_masks(groups: Sequence[ChannelGroup], keep: Sequence[torch.Tensor]) -> None:
    """Mask the channels that ``keep`` marks ``False`` in every member of each group.

    Every producer and tied conv gets ``weight_mask`` (dim 0) and ``bias_mask``, every norm ``weight_mask`` and
    ``bias_mask``, every consumer ``weight_mask`` (dim 1), applied with
    :func:`torch.nn.utils.prune.custom_from_mask` so that ``prune.is_pruned`` and ``prune.remove`` work as for any
    pruning method, and so that masks compose with earlier ones.

    Args:
        groups (sequence of ChannelGroup): the groups to mask.
        keep (sequence of torch.Tensor): one boolean tensor of length ``group.size`` per group.
    """
    for group, kept in zip(groups, keep):
        if kept.shape != (group.size,):
            raise ValueError(f"keep mask for group {group.name!r} has shape {tuple(kept.shape)}, need ({group.size},)")
        for member in group.members:
            # A consumer of a group pruned whole (min_keep=0) would have every column masked, so its own filters
            # would read as pruned: it keeps its columns, which meet zeros.
            if member.role is Role.CONSUMER and not kept.any():
                continue
            for tensor_name in masked_tensors(member):
                param = getattr(member.module, tensor_name)
                pruned = (~kept).nonzero().reshape(-1).to(param.device)
                mask = torch.ones_like(param)
                mask.index_fill_(member.dim, member.indices(pruned), 0)
                prune.custom_from_mask(member.module, tensor_name, mask=mask)
            if member.normalizes is not None and not any(
                getattr(h, "func", None) is _normalize_kept for h in member.module._forward_hooks.values()
            ):
                member.module.register_forward_hook(functools.partial(_normalize_kept, dim=member.normalizes))
            if children_read(member.module) and not any(
                h is _refresh_children for h in member.module._forward_pre_hooks.values()
            ):
                member.module.register_forward_pre_hook(_refresh_children)


def _refresh_children(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of a masked module whose forward reads its children's tensors without calling them (the
    ``out_proj`` of ``nn.MultiheadAttention``, see :func:`torch_rlprune.layers.children_read`): their pruning hooks
    would recompute the masked tensors from ``<name>_orig`` (which an optimizer step changes) at each of their
    calls, which never come."""
    for name in children_read(module):
        for child, hook in pruning_methods(module.get_submodule(name)):
            hook(child, args)


def _normalize_kept(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor, dim: int) -> Any:
    """Forward hook of a norm over channels that are masked (a LayerNorm over them, a ``"channel_norm"`` module):
    compute it over the kept channels only.

    A masked channel is zero, yet the norm's statistics over the channels would still count it; the sliced model,
    which has no such channel, does not. With this hook the masked model computes what the sliced one does.
    """
    mask = getattr(module, "weight_mask", None)
    x = args[0]
    # The channel tracer must see the norm itself, not this computation, when it traces a masked model.
    if mask is None or isinstance(x, torch.fx.Proxy) or bool(mask.all()):
        return None
    return on_kept_channels(module, x, output, mask.ne(0), dim)


def on_kept_channels(
    module: nn.Module, x: torch.Tensor, output: torch.Tensor, kept: torch.Tensor, dim: int
) -> torch.Tensor:
    """What the sliced ``module`` computes from the ``kept`` channels of its input ``x``, with zeros for the others.

    The module itself runs on the kept channels, with its per-channel tensors (as they are now, masks applied)
    cut to them as slicing cuts them: for a norm whose statistics span the channels, the masked model's forward
    hook (and a search's masked candidates) thereby compute what the sliced model does.

    Args:
        module (torch.nn.Module): a norm over the channels at ``dim`` of its input.
        x (torch.Tensor): its input, with every channel.
        output (torch.Tensor): its output on ``x``, which gives the result's shape and dtype.
        kept (torch.Tensor): boolean, one entry per channel.
        dim (int): the dim of ``x`` (and of the output) that holds the channels.

    Returns:
        torch.Tensor: shaped as ``output``; zero at the channels not kept.

    Example:
        >>> import torch
        >>> norm = torch.nn.LayerNorm(4).requires_grad_(False)
        >>> x = torch.tensor([[1.0, 2.0, 0.0, 3.0]])
        >>> on_kept_channels(norm, x, norm(x), torch.tensor([True, False, True, True]), 1)  # normalises 1, 0, 3
        tensor([[-0.2673,  0.0000, -1.0690,  1.3363]])
    """
    rows = kept.nonzero().reshape(-1).to(x.device)
    twin = copy.copy(module)  # shares every attribute but the tensors, replaced below
    twin.__dict__.update(_parameters={}, _buffers={})
    for name in {n.removesuffix("_orig").removesuffix("_mask") for n in (*module._parameters, *module._buffers)}:
        tensor = effective_weight(module, name)  # None for a LayerNorm without bias
        twin.__dict__[name] = tensor.index_select(0, rows) if 0 in channel_dims(module, name, tensor) else tensor
    layer = layer_of(twin)
    if layer is not None:
        layer.follow(twin, False)  # a LayerNorm's normalized_shape
    normed = twin.forward(x.index_select(dim, rows))  # not twin(...): the module's hooks saw the real call
    return torch.zeros_like(output).index_copy(dim, rows, normed.to(output.dtype))


def _dim_size(member: Member) -> int:
    module, name = member.module, member.stored or weight_and_bias(member.module)[0]
    tensor = getattr(module, name + "_orig", getattr(module, name, None))
    if tensor is None and isinstance(module, _NormBase):  # a norm without affine parameters still has channels
        return int(module.num_features)
    return int(tensor.shape[member.dim])


def keep_vectors(groups: Sequence[ChannelGroup], keep: Sequence[torch.Tensor] | None = None) -> KeepVectors:
    """Which entries of every member's channel dimension survive when the groups' channels are cut to ``keep``.

    A module may index several groups along one dim (a conv reading a concat, a ``Linear`` after ``flatten``), so
    the vectors are accumulated per ``(module, dim)`` over all groups.

    Args:
        groups (sequence of ChannelGroup): the groups.
        keep (sequence of torch.Tensor, optional): one boolean keep mask per group; default: each group's
            :func:`alive_channels`.

    Returns:
        dict mapping ``(module, dim)`` to a boolean tensor as long as that dim (``dim`` 0 for producers, tied
        convs and norms, 1 for consumers).

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> model = rlp.models.BasicCNN()
        >>> groups = rlp.channel_groups(model, torch.randn(1, 3, 32, 32))
        >>> kept = keep_vectors(groups[3:], [torch.arange(512) < 100])
        >>> int(kept[(model.features[12], 0)].sum()), int(kept[(model.fc, 1)].sum())
        (100, 1600)
    """
    if keep is None:
        keep = [alive_channels(g) for g in groups]
    vectors: KeepVectors = {}
    for group, kept in zip(groups, keep):
        pruned = (~kept.cpu()).nonzero().reshape(-1)
        for member in group.members:
            key = (member.module, member.dim)
            if key not in vectors:
                vectors[key] = torch.ones(_dim_size(member), dtype=torch.bool)
            vectors[key][member.indices(pruned)] = False
    return vectors
