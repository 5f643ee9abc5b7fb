"""What the channel tracer knows about each op, and how users teach it their own.

:func:`torch_rlprune.channel_groups` follows a channel through an op only when it knows how the op maps channels.
This module is the one table of that knowledge for the ops that need no special handling, by kind:

* ``"passthrough"``: output channel ``c`` depends on input channel ``c`` only (activations, pooling, dropout,
  padding);
* ``"elementwise"``: several inputs meet channel by channel (add, mul; an input of one channel broadcasts);
* ``"norm"`` (module types only): a per-channel norm whose ``weight``, ``bias``, ``running_mean`` and
  ``running_var`` are indexed by channel, and which normalises every channel on its own;
* ``"channel_norm"`` (module types only): a module with a ``weight`` (and ``bias``) of one entry per channel whose
  output also depends on statistics over all its channels, as a LayerNorm over them or ConvNeXt V2's global
  response norm; the masked model runs it on the kept channels only (see
  :func:`torch_rlprune.apply_channel_masks`), so that slicing it stays exact.

Convolutions, ``Linear``, ``flatten``, concatenation, ``split``/``chunk``, slicing and reductions are modelled by
the tracer itself. Anything else is opaque: the channels that reach it are never pruned.

A split size or slice bound is a constant of the model's code, which slicing cannot change, unless the code reads
it from an attribute of its module: :func:`register_size_attribute` names that attribute, and slicing sets it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Union

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm
from torchvision.ops import stochastic_depth

from ._types import by_type, qualified_name

__all__ = ["KINDS", "register_channel_op", "module_kind", "function_kind", "method_kind", "taken_whole", "generation",
           "register_size_attribute", "size_attribute", "head_tensors"]

#: The kinds of op a user can register.
KINDS = ("passthrough", "elementwise", "norm", "channel_norm")
#: The kinds only a module type can have: slicing cuts its tensors.
MODULE_KINDS = ("norm", "channel_norm")

Op = Union[type, Callable[..., object], str]

_MODULES: dict[type, str] = {
    **dict.fromkeys((_BatchNorm, _InstanceNorm), "norm"),
    **dict.fromkeys((
        nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Sigmoid, nn.Tanh,
        nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.Identity,
        nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
        nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
        nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
        nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.Upsample,
    ), "passthrough"),
}  # fmt: skip

#: Module types of other packages, named ``"module.QualName"`` so that the package need not be imported: timm's
#: global response norm (ConvNeXt V2) scales each channel by its share of a mean over the channels.
_KNOWN_BY_NAME: dict[str, str] = {"timm.layers.grn.GlobalResponseNorm": "channel_norm"}

#: Attention modules of other packages whose forward hands its input's channels (the last dim) and the tensors of
#: its ``qkv`` and ``proj`` Linears to a functional attention without calling those Linears: torchvision's Swin. Each
#: names the module's tensors that hold one entry per head, as ``(path, dim)``: the tracer ties the channels to the
#: heads (see :func:`torch_rlprune.channel_groups`), so pruning a head cuts its entry there too.
_WINDOW_ATTENTION_BY_NAME: dict[str, tuple[tuple[str, int], ...]] = {
    "torchvision.models.swin_transformer.ShiftedWindowAttentionV2": (("logit_scale", 0), ("cpb_mlp.2.weight", 0)),
    "torchvision.models.swin_transformer.ShiftedWindowAttention": (("relative_position_bias_table", 1),),
}

#: Functions of other packages that the tracer models itself, by ``"module.qualname"`` (torch.fx keeps them whole):
#: Swin's patch merging concatenates four strided views of its input along the channels, and its attention is the
#: functional form the modules above call.
_FUNCTIONS_BY_NAME: dict[str, str] = {
    "torchvision.models.swin_transformer._patch_merging_pad": "patch_merge",
    "torchvision.models.swin_transformer.shifted_window_attention": "window_attention",
}

#: The attribute that holds the channel counts a module's forward splits or slices its input by, per module type:
#: users' (:func:`register_size_attribute`), and other packages' by ``"module.QualName"``: MixNet's mixed conv
#: splits by ``splits``, Res2Net's block into pieces of ``width``, DPN's block at ``num_1x1_c``, CSPNet's stages in
#: halves of ``expand_chs``. Each is ``(attribute, total_of)``: ``total_of`` is ``None``, or the number of equal
#: pieces whose total the attribute holds.
_SIZES: dict[type, tuple[str, int | None]] = {}
_SIZES_BY_NAME: dict[str, tuple[str, int | None]] = {
    "timm.layers.mixed_conv2d.MixedConv2d": ("splits", None),
    "timm.models.res2net.Bottle2neck": ("width", None),
    "timm.models.dpn.DualPathBlock": ("num_1x1_c", None),
    "timm.models.cspnet.CrossStage": ("expand_chs", 2),
    "timm.models.cspnet.CrossStage3": ("expand_chs", 2),
    "torchvision.models.vision_transformer.VisionTransformer": ("hidden_dim", None),
}

# Module types registered by users, taken whole by the tracer (torch.nn's own are taken whole anyway).
_REGISTERED: set[type] = set()
# Counts registrations, so that groups traced before one are traced again.
_generation = 0

_FUNCTIONS: dict[Callable[..., object], str] = {
    **dict.fromkeys((
        F.relu, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu, F.gelu, F.silu, F.mish, F.hardswish,
        F.hardsigmoid, F.hardtanh, F.softplus, F.sigmoid, F.tanh, F.dropout, F.dropout1d, F.dropout2d,
        F.dropout3d, F.alpha_dropout, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
        F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d,
        F.adaptive_max_pool2d, F.adaptive_max_pool3d, F.interpolate, F.pad, torch.relu, torch.sigmoid, torch.tanh,
        torch.clone, torch.clamp, torch.abs, torch.neg, torch.exp, torch.erf, operator.neg, stochastic_depth,
    ), "passthrough"),
    **dict.fromkeys((
        operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul, operator.truediv,
        operator.itruediv, torch.add, torch.sub, torch.mul, torch.div, torch.maximum, torch.minimum,
    ), "elementwise"),
}  # fmt: skip

_METHODS: dict[str, str] = {
    **dict.fromkeys((
        "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "clone", "contiguous",
        "detach", "abs", "neg", "to", "float", "half", "bfloat16", "double", "type_as", "exp", "erf",
    ), "passthrough"),
    **dict.fromkeys(("add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"), "elementwise"),
}  # fmt: skip


def register_channel_op(op: Op, kind: str) -> None:
    r"""Tell :func:`torch_rlprune.channel_groups` how a custom op maps channels.

    Registered module types are not traced into: the tracer takes them whole, as it takes ``nn.ReLU``, so their
    ``forward`` need not be traceable by :mod:`torch.fx`. Subclasses of a registered type share its kind.

    Args:
        op (type, callable or str): a module type (a subclass of ``nn.Module``), a function as the model calls it
            (``my_ops.swish``), or the name of a tensor method (``"swish_"``).
        kind (str): ``"passthrough"`` (output channel ``c`` depends on input channel ``c`` only; the op holds no
            per-channel state), ``"elementwise"`` (its tensor inputs meet channel by channel), or, for a module
            type, ``"norm"`` (``weight``, ``bias`` and running statistics are per channel, and every channel is
            normalised on its own; slicing cuts those tensors and ``num_features`` where the module has it) or
            ``"channel_norm"`` (``weight``, and ``bias`` where it has one, are per channel, and the output also
            depends on statistics over the channels, at whatever dim the module's input holds them: the masked
            model then runs the module on the kept channels alone, as the sliced one does; the module must take
            its channel count from its input and tensors, as ConvNeXt V2's global response norm does).

    Raises:
        ValueError: an unknown ``kind``, or ``"norm"`` or ``"channel_norm"`` for something else than a module type.
        TypeError: ``op`` is none of the above.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> import torch_rlprune as rlp
        >>> class Swish(nn.Module):
        ...     def forward(self, x):
        ...         return x * torch.sigmoid(x) if x.sum() != 0 else x  # data-dependent: torch.fx cannot trace it
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), Swish(), nn.Conv2d(8, 4, 3))
        >>> rlp.channel_groups(model, torch.randn(1, 3, 8, 8))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: channel_groups: torch.fx could not trace Sequential ...
        >>> rlp.register_channel_op(Swish, "passthrough")
        >>> [g.name for g in rlp.channel_groups(model, torch.randn(1, 3, 8, 8))]
        ['0']
    """
    global _generation
    if kind not in KINDS:
        raise ValueError(f"register_channel_op: kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}.")
    _generation += 1
    if isinstance(op, type) and issubclass(op, nn.Module):
        _MODULES[op] = kind
        _REGISTERED.add(op)
        return
    if kind in MODULE_KINDS:
        raise ValueError(
            f"register_channel_op: kind {kind!r} is for module types, whose per-channel tensors slicing can cut; "
            f"got {op!r}. Register the module class that owns the weight and bias."
        )
    if isinstance(op, str):
        _METHODS[op] = kind
    elif callable(op):
        _FUNCTIONS[op] = kind
    else:
        raise TypeError(
            "register_channel_op: op must be an nn.Module subclass, a function or a tensor method name, "
            f"got {type(op).__name__}."
        )


def generation() -> int:
    """How many registrations the table has seen: groups traced under another generation may be out of date."""
    return _generation


def module_kind(module: nn.Module) -> str | None:
    """The kind of ``module`` (by its type or the nearest registered or known base class), or ``None``."""
    return by_type(module, _MODULES, _KNOWN_BY_NAME)


def taken_whole(module: nn.Module) -> bool:
    """Whether the tracer takes ``module`` whole instead of tracing into it: its type, or a base class, was
    registered by a user or is one of the other packages' types this table knows (torch.nn's own are taken
    whole anyway)."""
    return isinstance(module, tuple(_REGISTERED)) or any(
        qualified_name(cls) in _KNOWN_BY_NAME for cls in type(module).__mro__
    )


def register_size_attribute(module_type: type, attribute: str, total_of: int | None = None) -> None:
    r"""Tell :func:`torch_rlprune.channel_groups` that ``module_type``'s forward splits or slices its channels by
    sizes held in ``attribute``, so that the pieces can be pruned and slicing updates the attribute.

    Without this, a constant split size or slice bound keeps every channel before it (the code would cut at the
    same index after slicing). With it, where the constant the forward uses equals the attribute:

    * ``torch.split(x, self.sizes, 1)`` with a list: each piece is pruned on its own, and slicing sets the list
      to the pieces' new counts;
    * ``torch.split(x, self.size, 1)`` with an int, into equal pieces: the pieces are pruned alike (channel ``c``
      of every piece together), and slicing sets the int to the new count of each; with ``total_of=n``, the
      forward splits by ``self.total // n`` into ``n`` pieces, and slicing sets the int to their total;
    * ``x[:, :self.bound]`` or ``x[:, self.bound:]``: slicing sets the int to the new count before the bound;
    * ``x.reshape(n, self.width, -1)`` (any shape keeping dims 0 and 1): slicing sets the int to the new count.

    :func:`torch_rlprune.slim` checks the result as for any model.

    The attribute should be read as split sizes and slice bounds only: a use of its value the tracer does not
    follow keeps it (and the channels it counts) as it is, but a value derived from it (``self.b + 1``) is not
    recognised.

    Args:
        module_type (type): a subclass of ``nn.Module`` (its subclasses share the attribute).
        attribute (str): the attribute's name.
        total_of (int, optional): the attribute holds the total of this many equal pieces, which the forward
            splits by ``self.<attribute> // total_of``. Default: ``None`` (it holds the sizes themselves).

    Raises:
        TypeError: ``module_type`` is not an ``nn.Module`` subclass, ``attribute`` not a string, or ``total_of``
            not an int of at least 2.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> import torch_rlprune as rlp
        >>> class TwoKernels(nn.Module):  # MixNet's mixed convolution, in short
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.sizes = [6, 2]
        ...         self.small = nn.Conv2d(6, 6, 3, padding=1, groups=6)
        ...         self.large = nn.Conv2d(2, 2, 5, padding=2, groups=2)
        ...     def forward(self, x):
        ...         a, b = torch.split(x, self.sizes, 1)
        ...         return torch.cat([self.small(a), self.large(b)], 1)
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 1), TwoKernels(), nn.Conv2d(8, 4, 1))
        >>> x = torch.randn(1, 3, 8, 8)
        >>> rlp.channel_groups(model, x).excluded["0"]
        "is split into pieces of fixed size by function 'split'"
        >>> rlp.register_size_attribute(TwoKernels, "sizes")
        >>> groups = rlp.channel_groups(model, x)
        >>> [g.size for g in groups]
        [6, 2]
        >>> rlp.apply_channel_masks(groups, [torch.arange(6) < 3, torch.tensor([True, False])])
        >>> rlp.slim(model, x)[1].sizes
        [3, 1]
    """
    global _generation
    if not (isinstance(module_type, type) and issubclass(module_type, nn.Module)):
        raise TypeError(f"register_size_attribute: module_type must be an nn.Module subclass, got {module_type!r}.")
    if not isinstance(attribute, str):
        raise TypeError(f"register_size_attribute: attribute must be a str, got {type(attribute).__name__}.")
    if total_of is not None and (type(total_of) is not int or total_of < 2):
        raise TypeError(f"register_size_attribute: total_of must be an int >= 2 or None, got {total_of!r}.")
    _generation += 1
    _SIZES[module_type] = (attribute, total_of)


def size_attribute(module: nn.Module) -> tuple[str, int | None] | None:
    """``(attribute, total_of)`` for the attribute holding the channel counts ``module`` splits or slices by (see
    :func:`register_size_attribute`), or ``None``."""
    return by_type(module, _SIZES, _SIZES_BY_NAME)


def function_kind(function: object) -> str | None:
    """The kind of a function a traced graph calls, or ``None``: one of :data:`KINDS`, or ``"patch_merge"`` or
    ``"window_attention"`` for the other packages' functions the tracer models itself."""
    try:
        kind = _FUNCTIONS.get(function)  # type: ignore[arg-type]
    except TypeError:  # an unhashable target is nothing registered
        return None
    name = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"
    return kind or _FUNCTIONS_BY_NAME.get(name)


def head_tensors(module: nn.Module) -> tuple[tuple[str, int], ...] | None:
    """For a window attention module (torchvision's Swin), its tensors that hold one entry per head.

    Args:
        module (torch.nn.Module): any module.

    Returns:
        ``(path, dim)`` per tensor (its path from ``module``, the dim that holds the heads), or ``None`` for a module
        that is no window attention.

    Example:
        >>> from torchvision.models.swin_transformer import ShiftedWindowAttention
        >>> head_tensors(ShiftedWindowAttention(32, [2, 2], [0, 0], num_heads=2)), head_tensors(nn.ReLU())
        ((('relative_position_bias_table', 1),), None)
    """
    return by_type(module, _WINDOW_ATTENTION_BY_NAME)


def method_kind(name: str) -> str | None:
    """The kind of a tensor method, by name, or ``None``."""
    return _METHODS.get(name)
