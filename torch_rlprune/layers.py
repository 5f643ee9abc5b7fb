"""What each layer type holds per channel: the one table that slicing and metrics read.

A row says, for one family of layer types, how many entries one output position holds (what multiply-accumulates
and filter counts are measured in), which tensors hold its weights, and which attributes carry a channel count, so
that slicing can make them agree with the sliced tensors. Which dims of which tensors a channel cut reaches is
:func:`channel_dims`; how the tracer maps channels through each op is :mod:`torch_rlprune.channel_ops`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from . import channel_ops
from ._types import by_type
from .groups import CONV_TYPES, groups_kept

__all__ = ["Layer", "LAYERS", "layer_of", "LAYER_TYPES", "channel_dims", "weight_and_bias", "PER_CHANNEL",
           "children_read"]


@dataclass(frozen=True)
class Layer:
    """One family of layer types.

    Attributes:
        types (tuple of type): the module types (subclasses included).
        width (callable): ``module -> int``, the entries one output position holds: channels, features, or the
            normalised shape of a LayerNorm.
        follow (callable): ``(module, tied) -> None``, sets the count attributes from the (sliced) tensors;
            ``tied`` is true for a depthwise or grouped conv that a channel group cuts in whole groups.
        filters (bool): whether its outputs count as filters in reports (not a LayerNorm's normalised entries).
        weight (str): the tensor whose rows (dim 0) are its outputs and whose columns (dim 1) read its inputs.
        bias (str): the tensor with one entry per row of ``weight``.
        counts (callable, optional): ``(module, width) -> dict``, the count attributes for ``width`` input
            channels, for a layer whose forward reads counts its tensors' shapes do not give (an attention's heads):
            what :attr:`follow` sets, and what a search's sliced candidates set for the length of a call.
    """

    types: tuple[type, ...]
    width: Callable[[nn.Module], int]
    follow: Callable[[nn.Module, bool], None]
    filters: bool = True
    weight: str = "weight"
    bias: str = "bias"
    counts: Callable[[nn.Module, int], dict[str, int]] | None = None


def _follow_conv(conv: nn.Module, tied: bool) -> None:
    if tied:
        conv.groups = groups_kept(conv, conv.weight.shape[0])
    conv.out_channels = conv.weight.shape[0]
    conv.in_channels = conv.weight.shape[1] * conv.groups


def _follow_linear(linear: nn.Module, tied: bool) -> None:
    linear.out_features, linear.in_features = linear.weight.shape


def _follow_norm(norm: nn.Module, tied: bool) -> None:
    norm.num_features = (norm.weight if norm.weight is not None else norm.running_mean).shape[0]


def _follow_layer_norm(norm: nn.Module, tied: bool) -> None:
    if norm.weight is not None:
        norm.normalized_shape = tuple(norm.weight.shape)


def _attention_counts(attention: nn.Module, width: int) -> dict[str, int]:
    # The channel tracer cuts whole heads (see torch_rlprune.channel_groups), so the head size stays.
    return {"embed_dim": width, "kdim": width, "vdim": width, "num_heads": width // attention.head_dim}


def _follow_attention(attention: nn.Module, tied: bool) -> None:
    for name, value in _attention_counts(attention, attention.in_proj_weight.shape[1]).items():
        setattr(attention, name, value)


def _follow_nothing(module: nn.Module, tied: bool) -> None:
    """GroupNorm normalises groups of channels together, so the tracer never cuts one."""


#: The layer types slicing and metrics know, most specific first.
LAYERS = (
    Layer(CONV_TYPES, lambda m: m.out_channels, _follow_conv),
    Layer((nn.Linear,), lambda m: m.out_features, _follow_linear),
    Layer((_NormBase,), lambda m: m.num_features, _follow_norm),
    Layer((nn.GroupNorm,), lambda m: m.num_channels, _follow_nothing),
    Layer((nn.LayerNorm,), lambda m: math.prod(m.normalized_shape), _follow_layer_norm, filters=False),
    # Its own forward reads out_proj's tensors, so out_proj (a Linear) is a layer of its own here and in the groups.
    Layer((nn.MultiheadAttention,), lambda m: m.embed_dim, _follow_attention, filters=False,
          weight="in_proj_weight", bias="in_proj_bias", counts=_attention_counts),
)
#: Every type of :data:`LAYERS`: the modules that multiply-accumulates are counted for.
LAYER_TYPES = tuple(t for layer in LAYERS for t in layer.types)


def layer_of(module: nn.Module) -> Layer | None:
    """The row of :data:`LAYERS` for ``module``, or ``None`` for a module the table does not know.

    Example:
        >>> import torch.nn as nn
        >>> layer_of(nn.Conv2d(3, 8, 3)).width(nn.Conv2d(3, 8, 3)), layer_of(nn.ReLU())
        (8, None)
    """
    return next((layer for layer in LAYERS if isinstance(module, layer.types)), None)


#: Modules whose forward reads tensors of child modules without calling them, by type or ``"module.QualName"``.
_CHILDREN_READ: dict[type | str, tuple[str, ...]] = {
    nn.MultiheadAttention: ("out_proj",),
    "torchvision.models.swin_transformer.ShiftedWindowAttention": ("qkv", "proj"),
}


def children_read(module: nn.Module) -> tuple[str, ...]:
    """The children of ``module`` whose tensors its forward reads without calling them: their pruning hooks, which
    recompute a masked tensor before each call of its own module, must then run before ``module``'s call.

    Args:
        module (torch.nn.Module): any module.

    Returns:
        tuple of str: the children's names, empty for most modules.

    Example:
        >>> import torch.nn as nn
        >>> children_read(nn.MultiheadAttention(8, 2)), children_read(nn.Conv2d(3, 8, 3))
        (('out_proj',), ())
    """
    return by_type(module, _CHILDREN_READ) or ()


#: Per-channel tensors of a layer besides its weight and bias: cut along their only dimension.
PER_CHANNEL = ("running_mean", "running_var")


def channel_dims(module: nn.Module, name: str, tensor: torch.Tensor | None) -> tuple[int, ...]:
    """The dims of ``module``'s tensor ``name`` (``_orig`` and ``_mask`` included) that a channel cut may reach.

    A layer's weight is cut along its rows and columns, its bias and running statistics along their only dim, and
    any other vector a module stores per channel, shaped ``(C, 1, ...)`` (ConvNeXt's layer scale), along dim 0. A
    window attention's tensors held per head (:func:`torch_rlprune.channel_ops.head_tensors`) are cut along their
    head dim, and its other tensors not at all. Any other module that is no layer (a model holding a class token
    ``(1, 1, C)`` or a position embedding ``(1, N, C)``) may have any dim of its tensors cut: the channel groups
    say which (the keep vectors' dims) and slicing cuts only those. Only modules a group names are cut.

    Args:
        module (torch.nn.Module): the module that owns the tensor.
        name (str): the tensor's name in ``module``, e.g. ``"weight_orig"``.
        tensor (torch.Tensor or None): the tensor.

    Returns:
        tuple of int: the dims, possibly empty.

    Example:
        >>> import torch.nn as nn
        >>> conv = nn.Conv2d(3, 8, 3)
        >>> channel_dims(conv, "weight", conv.weight), channel_dims(conv, "bias", conv.bias)
        ((0, 1), (0,))
    """
    if tensor is None or tensor.dim() == 0:
        return ()
    base = name.removesuffix("_orig").removesuffix("_mask")
    per_head = channel_ops.head_tensors(module)
    if per_head is not None:  # declared, not guessed: its other tensors (Swin's position index) have no channels
        return tuple(axis for path, axis in per_head if path == base)
    layer = layer_of(module)
    weight, bias = weight_and_bias(module)
    if base == weight:
        return (0, 1) if tensor.dim() > 1 else (0,)
    if base in (bias, *PER_CHANNEL) or tensor.shape[0] > 1 and all(s == 1 for s in tensor.shape[1:]):
        return (0,)
    return tuple(d for d, size in enumerate(tensor.shape) if size > 1) if layer is None else ()


def weight_and_bias(module: nn.Module) -> tuple[str, str]:
    """The names of ``module``'s weight and bias: ``("weight", "bias")`` except where :data:`LAYERS` says otherwise.

    Args:
        module (torch.nn.Module): any module.

    Returns:
        tuple of str: the weight's name (its rows are the outputs, its columns read the inputs) and the bias's.

    Example:
        >>> import torch.nn as nn
        >>> weight_and_bias(nn.Conv2d(3, 8, 3)), weight_and_bias(nn.MultiheadAttention(8, 2))
        (('weight', 'bias'), ('in_proj_weight', 'in_proj_bias'))
    """
    layer = layer_of(module)
    return (layer.weight, layer.bias) if layer is not None else ("weight", "bias")
