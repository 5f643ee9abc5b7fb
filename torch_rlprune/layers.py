"""What each layer type holds per channel: the one table that slicing and metrics read.

A row says, for one family of layer types, how many entries one output position holds (what multiply-accumulates
and filter counts are measured in) and which attributes carry a channel count, so that slicing can make them agree
with the sliced tensors. Which tensors a channel cut reaches is :func:`torch_rlprune.slicing.cut_along_channels`;
how the tracer maps channels through each op is :mod:`torch_rlprune.channel_ops`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from .groups import CONV_TYPES, groups_kept

__all__ = ["Layer", "LAYERS", "layer_of", "LAYER_TYPES"]


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
    """

    types: tuple[type, ...]
    width: Callable[[nn.Module], int]
    follow: Callable[[nn.Module, bool], None]
    filters: bool = True


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


def _follow_nothing(module: nn.Module, tied: bool) -> None:
    """GroupNorm normalises groups of channels together, so the tracer never cuts one."""


#: The layer types slicing and metrics know, most specific first.
LAYERS = (
    Layer(CONV_TYPES, lambda m: m.out_channels, _follow_conv),
    Layer((nn.Linear,), lambda m: m.out_features, _follow_linear),
    Layer((_NormBase,), lambda m: m.num_features, _follow_norm),
    Layer((nn.GroupNorm,), lambda m: m.num_channels, _follow_nothing),
    Layer((nn.LayerNorm,), lambda m: math.prod(m.normalized_shape), _follow_layer_norm, filters=False),
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
