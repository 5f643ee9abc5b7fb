"""Channel groups: which filters of a model can be pruned, and what else must follow when one is.

A *channel group* is one index space of channels. Its members are

* the convolutions that **produce** it (one, or several whose outputs meet in a residual add or another
  elementwise op, or are multiplied together as in squeeze-and-excitation),
* depthwise and grouped convolutions **tied** to it (their output channels of group ``i`` depend on their input
  channels of group ``i`` only),
* the per-channel **norm** layers that normalise it (modules, or a norm module's own ``F.batch_norm`` call),
* the **consumers** whose input channels (or flattened input features) it feeds: convolutions, and a
  ``Linear`` after ``flatten``, where every channel owns ``expand`` consecutive features.

Removing channel ``c`` of a group removes rows ``offset + c * expand ...`` of every producer and tied conv, the
same entries of every norm, and the matching input slice of every consumer; the network stays well formed.
``expand`` is more than 1 where one channel of the group stands for several entries: the features of one channel
after ``flatten``, or a whole group of a grouped convolution, which can only lose whole groups. ``offset`` places
the group in a concatenation, or in the part of a conv's output that a ``split`` or a slice ``x[:, a:b]`` picks.

The groups are found by tracing the model with :mod:`torch.fx` and propagating the example inputs' shapes through
the graph. Whatever the tracer does not understand is treated conservatively: the channels that reach it are
*excluded* (never pruned), as are the network's inputs and outputs, the outputs of ``Linear`` layers, and the
channels before a constant split point (the model's code would cut at the same index after slicing).
"""

from __future__ import annotations

import contextlib
import enum
import io
import itertools
import math
import operator
import weakref
from collections.abc import Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from . import channel_ops
from ._inputs import ExampleInputs, as_input_tuple
from ._spaces import Spaces
from ._state import hook_tensors_kept, preserved_state

__all__ = ["Role", "Member", "ChannelGroup", "ChannelGroups", "SizeAttribute", "channel_groups", "CONV_TYPES",
           "size_attributes_of"]

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)



class Role(enum.Enum):
    """How a module takes part in a channel group."""

    #: a convolution whose output channels are the group: weight dim 0 and bias are indexed by channel.
    PRODUCER = "producer"
    #: a depthwise convolution: weight dim 0 and bias are indexed by channel, and ``groups`` follows the count.
    TIED = "tied"
    #: a per-channel norm layer: weight, bias and running statistics are indexed by channel.
    NORM = "norm"
    #: a consumer: weight dim 1 (input channels or flattened features) is indexed by channel.
    CONSUMER = "consumer"
    #: a module whose stored per-channel vector (shape ``(C, 1, ...)``, such as ConvNeXt's layer scale) multiplies
    #: or shifts the channels, or whose stored tensor meets them along another dim (a class token, a position
    #: embedding, an attention's query and key rows): it is cut with them, but needs no mask of its own.
    SCALE = "scale"


@dataclass(frozen=True)
class Member:
    """One module's part in a :class:`ChannelGroup`.

    Channel ``c`` of the group is the slice ``offset + c * expand ... offset + (c + 1) * expand - 1`` of the
    member's dimension :attr:`dim`: ``expand`` is 1 except for a ``Linear`` after ``flatten``, where it is the
    number of spatial positions per channel, and ``offset`` is non-zero where the group is one slice of a concat.
    ``normalizes`` is set for a LayerNorm over the channels: the dim of the module's input that it normalises;
    ``stored`` names the tensor of a :attr:`Role.SCALE` member and ``axis`` its dim that holds the channels.
    """

    name: str
    module: nn.Module = field(compare=False, repr=False)
    role: Role
    offset: int = 0
    expand: int = 1
    normalizes: int | None = None
    stored: str | None = None
    axis: int = 0

    @property
    def dim(self) -> int:
        """The dimension of the member's weight (or ``stored`` tensor) that the group's channels index."""
        return 1 if self.role is Role.CONSUMER else self.axis

    def indices(self, channels: torch.Tensor) -> torch.Tensor:
        """Map group channel indices to indices along :attr:`dim` of this member's tensors.

        Args:
            channels (torch.Tensor): 1-D integer tensor of channel indices of the group.

        Returns:
            A 1-D ``long`` tensor, ``expand`` entries per channel, in channel order.
        """
        channels = channels.to(torch.long).reshape(-1)
        start = self.offset + channels * self.expand
        return (start[:, None] + torch.arange(self.expand, device=channels.device)).reshape(-1)

    def gather(self, values: torch.Tensor, size: int) -> torch.Tensor:
        """The entries of ``values`` (one per index along :attr:`dim`) that channels ``0 .. size - 1`` own.

        Args:
            values (torch.Tensor): a 1-D tensor as long as the member's dimension :attr:`dim`, e.g. per-filter
                scores of a producer.
            size (int): the group's channel count.

        Returns:
            A tensor of shape ``(size, expand)``: row ``c`` holds what channel ``c`` owns (several filters where
            one channel stands for a whole group of a grouped convolution, or several features after ``flatten``).
        """
        return values[self.indices(torch.arange(size, device=values.device))].reshape(size, self.expand)


@dataclass(frozen=True)
class ChannelGroup:
    """One prunable index space of channels and every module that shares it.

    Attributes:
        size (int): number of channels.
        members (tuple of Member): producers first, in graph order, then tied convs, norms and consumers.
    """

    size: int
    members: tuple[Member, ...]

    @property
    def name(self) -> str:
        """The first producer's name, with the number of coupled producers when there are several (a producer
        whose output is cut into pieces pruned alike, as by ``chunk``, counts once)."""
        names = dict.fromkeys(m.name for m in self.producers)
        extra = f" (+{len(names) - 1} coupled)" if len(names) > 1 else ""
        return next(iter(names)) + extra

    def _with(self, role: Role) -> tuple[Member, ...]:
        return tuple(m for m in self.members if m.role is role)

    @property
    def producers(self) -> tuple[Member, ...]:
        return self._with(Role.PRODUCER)

    @property
    def tied(self) -> tuple[Member, ...]:
        return self._with(Role.TIED)

    @property
    def norms(self) -> tuple[Member, ...]:
        return self._with(Role.NORM)

    @property
    def consumers(self) -> tuple[Member, ...]:
        return self._with(Role.CONSUMER)

    @property
    def filters(self) -> tuple[Member, ...]:
        """Members whose weight dim 0 holds one filter per channel: producers and tied depthwise convs."""
        return tuple(m for m in self.members if m.role in (Role.PRODUCER, Role.TIED))

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(self._with(r))} {r.value}" for r in Role if self._with(r))
        return f"ChannelGroup({self.name!r}, size={self.size}, {counts})"


@dataclass(frozen=True)
class SizeAttribute:
    """A module attribute that holds channel counts the module's forward splits or slices by (see
    :func:`torch_rlprune.register_size_attribute`), and the groups whose channels it counts.

    Attributes:
        owner (str): the module's name.
        module (torch.nn.Module): the module.
        attribute (str): the attribute's name.
        kind (str): ``"sizes"`` (a list of piece sizes), ``"size"`` (the size of every one of equal pieces),
            ``"total"`` (the total of equal pieces), ``"bound"`` (the count before a slice bound), ``"width"``
            (the channel count a reshape gives: ``x.reshape(n, self.width, -1)``) or ``"heads"`` (an attention's
            number of heads, which the tracer ties to the channels).
        counts (tuple of int): the counts it holds now, one per piece (one for the other kinds).
        spans (tuple): ``(piece, group, offset, expand)``: channel ``c`` of ``group`` is entry ``offset + c *
            expand`` of that piece (of the first piece where the pieces are equal).
        pieces (int): for ``"total"``, how many equal pieces it counts.
    """

    owner: str
    module: nn.Module = field(compare=False, repr=False)
    attribute: str
    kind: str
    counts: tuple[int, ...]
    spans: tuple[tuple[int, ChannelGroup, int, int], ...] = field(repr=False)
    pieces: int = 1

    def value(self, keep: dict[int, torch.Tensor]) -> int | list[int] | tuple[int, ...]:
        """What the attribute holds once the groups are cut to ``keep``.

        Args:
            keep (dict): boolean keep masks by ``id`` of their group; a group not in it keeps every channel.

        Returns:
            The counts in the form the attribute had: a list or tuple for ``"sizes"``, an int otherwise.
        """
        counts = list(self.counts)
        for piece, group, _, expand in self.spans:
            kept = keep.get(id(group))
            if kept is not None:
                counts[piece] -= expand * self.pieces * int((~kept.cpu()).sum())
        if self.kind != "sizes":
            return counts[0]
        return counts if isinstance(getattr(self.module, self.attribute), list) else tuple(counts)


class ChannelGroups(Sequence[ChannelGroup]):
    """The prunable channel groups of a model, in graph order, and the convolutions that are excluded.

    Attributes:
        excluded (dict[str, str]): name of every convolution whose output channels cannot be pruned, with the
            reason (for example ``"reaches the network output"`` or ``"feeds grouped convolution 'conv2'"``).
        sizes (tuple of SizeAttribute): the module attributes that count channels of the groups and that slicing
            sets (see :func:`torch_rlprune.register_size_attribute`).
    """

    def __init__(
        self, groups: Iterable[ChannelGroup], excluded: dict[str, str], sizes: Iterable[SizeAttribute] = ()
    ) -> None:
        self._groups = tuple(groups)
        self.excluded = dict(excluded)
        self.sizes = tuple(sizes)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):  # a slice is a ChannelGroups too: slicing a model needs its sizes
            return ChannelGroups(self._groups[index], self.excluded, self.sizes)
        return self._groups[index]

    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self._groups)

    def __repr__(self) -> str:
        lines = [f"ChannelGroups({len(self)} groups, {sum(g.size for g in self)} channels"]
        lines += [f"  {g!r}" for g in self]
        lines += [f"  excluded {name!r}: {why}" for name, why in self.excluded.items()]
        return "\n".join(lines) + "\n)"

    def group_of(self, module: nn.Module) -> ChannelGroup | None:
        """The group whose filters (producer or tied rows) include ``module``'s output channels, if any."""
        for group in self:
            if any(m.module is module for m in group.filters):
                return group
        return None


def size_attributes_of(groups: Sequence[ChannelGroup], model: nn.Module, caller: str) -> tuple[SizeAttribute, ...]:
    """The :attr:`ChannelGroups.sizes` of ``groups``, or none for a plain sequence of groups of a model that reads
    no split size or bound from an attribute; a ``ValueError`` where it may (the sizes would be lost)."""
    if isinstance(groups, ChannelGroups):
        return groups.sizes
    if any(channel_ops.size_attribute(m) is not None for m in model.modules()):
        raise ValueError(
            f"{caller}: groups must be the ChannelGroups that channel_groups() returns (or a slice of it, "
            "groups[a:b], or ChannelGroups(chosen, groups.excluded, groups.sizes)), not a plain sequence: the model "
            "has modules whose split sizes or slice bounds slicing sets (register_size_attribute), which "
            "ChannelGroups.sizes lists."
        )
    return ()


# --------------------------------------------------------------------------------------------------------------
# Tracing
# --------------------------------------------------------------------------------------------------------------


class _Segment(NamedTuple):
    """A run of channels along a tensor's dim 1: ``channels`` channels of ``space``, ``expand`` entries each."""

    space: int
    channels: int
    expand: int = 1


_Layout = tuple[_Segment, ...]


class _Stored(NamedTuple):
    """A tensor a module stores (``get_attr``), or a view of one: ``lead`` dims of the view come before the
    tensor's first (``None``: a reshaped tensor with one dim longer than 1, which holds the channels)."""

    target: str
    shape: torch.Size
    lead: int | None = 0

    def axis(self, view_dim: int) -> int | None:
        """The stored tensor's dim that dim ``view_dim`` of the view is, or ``None``."""
        if self.lead is None:
            long = [d for d, size in enumerate(self.shape) if size > 1]
            return long[0] if len(long) == 1 else None
        axis = view_dim - self.lead
        return axis if 0 <= axis < len(self.shape) else None


@dataclass(frozen=True)
class _Piece:
    """A stand-in member of a space while tracing: channel ``c`` is entry ``offset + c * expand`` of piece
    ``index`` of what attribute ``attribute`` of module ``owner`` counts (``Spaces`` rewrites offset and expand)."""

    owner: str
    attribute: str
    index: int
    offset: int = 0
    expand: int = 1


_CAT_FUNCTIONS = {torch.cat, torch.concat, torch.concatenate}
_SPLIT_FUNCTIONS = {torch.split, torch.chunk, torch.tensor_split}
_SPLIT_METHODS = {"split", "chunk", "tensor_split"}
_REDUCE_FUNCTIONS = {torch.mean, torch.sum, torch.amax, torch.amin}
_REDUCE_METHODS = {"mean", "sum", "amax", "amin"}
_FLATTEN_FUNCTIONS = {torch.flatten}
_RESHAPE_METHODS = {"view", "reshape", "flatten"}
_VIEW_METHODS = {"view", "reshape", "unsqueeze", "expand", "expand_as", "to", "type_as"}
# Functional layers and the module types whose tensors they may use: a module whose forward calls one (timm's
# BatchNormAct2d, a LayerNorm2d, timm's Linear) is then one member, like nn.BatchNorm2d, nn.LayerNorm or nn.Linear.
_LAYER_FUNCTIONS = {
    F.batch_norm: _BatchNorm, F.instance_norm: _InstanceNorm, F.layer_norm: nn.LayerNorm, F.linear: nn.Linear,
}  # fmt: skip


_COMPARISONS = (operator.eq, operator.ne, operator.lt, operator.le, operator.gt, operator.ge)


def _arg(node: fx.Node, index: int, key: str, default: Any = None) -> Any:
    """Argument ``index`` of a call, given by position or by keyword ``key``."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(key, default)


def _shape(node: Any) -> torch.Size | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    shape = getattr(meta, "shape", None)
    return shape if isinstance(shape, torch.Size) else None


def _piece_shapes(node: fx.Node) -> list[torch.Size] | None:
    """The shapes of the tensors a node returns as a tuple (``split``, ``chunk``)."""
    meta = node.meta.get("tensor_meta")
    if not isinstance(meta, (tuple, list)):
        return None
    shapes = [getattr(m, "shape", None) for m in meta]
    return shapes if all(isinstance(s, torch.Size) for s in shapes) else None


def _op_name(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"module '{node.target}' ({type(modules[str(node.target)]).__name__})"
    if node.op == "call_method":
        return f"method '.{node.target}()'"
    target = getattr(node.target, "__name__", str(node.target))
    return f"function '{target}'"


def _owner(node: fx.Node) -> str:
    """The name of the module whose forward ran ``node`` (``""``: the model's own)."""
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else ""
    return owner if isinstance(owner, str) else ""


def _extent(layout: _Layout) -> int:
    return sum(seg.channels * seg.expand for seg in layout)


def _bounds(layout: _Layout) -> list[int]:
    """Positions along the channel dim where one segment ends and the next begins, with 0 and the end."""
    return [0, *itertools.accumulate(seg.channels * seg.expand for seg in layout)]


class _GroupBuilder:
    """Walks a shape-propagated graph and assigns every tensor's dim 1 to channel spaces."""

    def __init__(self, gm: fx.GraphModule, model: nn.Module) -> None:
        self.gm = gm
        # The model's own modules: the graph module holds only those it calls, and bare stand-ins for the
        # owners of the tensors it reads (a norm module whose forward was traced into).
        self.modules = dict(model.named_modules())
        self.spaces = Spaces()
        self.layouts: dict[fx.Node, _Layout | None] = {}
        # The layouts of the tensors a split returns, for the getitem nodes that pick them.
        self.pieces: dict[fx.Node, list[_Layout]] = {}
        # For a module with state called more than once: the input layout of its first call and what it returned.
        self.calls: dict[str, tuple[_Layout, _Layout | None]] = {}
        # Where the channels are in a tensor whose layout is not along dim 1 (after a permute to channels last).
        self.cdim: dict[fx.Node, int] = {}
        # Stored tensors (and views of them) that may meet channels elementwise or in a concat along another dim.
        self.stored: dict[fx.Node, _Stored] = {}
        # Per (owner, attribute) that holds split sizes or a bound: its kind, its value, and the pieces it counts.
        self.bindings: dict[tuple[str, str], tuple[str, Any, list[_Layout], int]] = {}
        # Attributes also read where slicing could not follow them: they must keep their value.
        self.unbound: dict[tuple[str, str], str] = {}

    def dim_of(self, node: fx.Node) -> int:
        return self.cdim.get(node, 1)

    def at_dim1(self, node: fx.Node) -> bool:
        """Whether every traced input of ``node`` has its channels along dim 1 (what most ops here assume)."""
        return all(self.dim_of(n) == 1 for n, _ in self.input_layouts(node))

    # ---- layouts -------------------------------------------------------------------------------------------
    def resolve(self, layout: _Layout) -> _Layout:
        """``layout`` in terms of the current spaces (those it named may have been refined or coarsened since)."""
        return tuple(
            _Segment(leaf, self.spaces.size[leaf], seg.expand * unit)
            for seg in layout
            for leaf, unit in self.spaces.leaves(seg.space)
        )

    def layout_of(self, node: Any) -> _Layout | None:
        layout = self.layouts.get(node) if isinstance(node, fx.Node) else None
        return None if layout is None else self.resolve(layout)

    def fresh(self, node: fx.Node, why: str) -> _Layout | None:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        return (_Segment(self.spaces.new(shape[1], fixed=why), shape[1]),)

    def fix(self, layout: _Layout | None, why: str) -> None:
        for seg in layout or ():
            self.spaces.fix(seg.space, why)

    def input_layouts(self, node: fx.Node) -> list[tuple[fx.Node, _Layout]]:
        found: list[tuple[fx.Node, _Layout | None]] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append((n, self.layout_of(n))) or n)
        return [(n, lay) for n, lay in found if lay is not None]

    def unknown(self, node: fx.Node, why: str | None = None) -> _Layout | None:
        why = why or f"reaches {_op_name(node, self.modules)}, which the channel tracer does not model"
        constants: list[int] = []  # a size attribute read by an op not followed (narrow) must keep its value
        fx.node.map_aggregate((node.args, node.kwargs), lambda a: constants.append(a) if type(a) is int else None)
        if node.target not in _COMPARISONS:  # a check on a size (ViT's ``h == self.image_size``) cuts nothing
            self.keep_attribute(node, constants)
        for _, layout in self.input_layouts(node):
            self.fix(layout, why)
        return self.fresh(node, why)

    def cut(self, layout: _Layout, bounds: Sequence[int]) -> list[_Layout] | None:
        """The parts of ``layout`` between consecutive ``bounds`` (positions along the channel dim), refining the
        spaces that a bound falls inside; ``None`` where a bound splits a unit that must stay whole."""
        layout = self.resolve(layout)
        for seg, start in zip(layout, _bounds(layout)):
            inside = [(b - start) for b in bounds if start < b < start + seg.channels * seg.expand]
            if any(b % seg.expand for b in inside) or not self.spaces.refine(seg.space, [b // seg.expand for b in inside]):
                return None
        layout = self.resolve(layout)
        starts = _bounds(layout)
        return [tuple(seg for seg, s in zip(layout, starts) if lo <= s < hi) for lo, hi in zip(bounds, bounds[1:])]

    def unify(self, layouts: list[_Layout], why: str) -> _Layout | None:
        """Make the layouts of tensors that meet elementwise one: the same spaces at the same positions."""
        layouts = [self.resolve(layout) for layout in layouts]
        bounds = sorted({b for layout in layouts for b in _bounds(layout)})
        parts = [self.cut(layout, bounds) for layout in layouts] if len({_extent(l) for l in layouts}) == 1 else None
        if parts is None or any(p is None for p in parts):
            for layout in layouts:
                self.fix(layout, why)
            return layouts[0]
        for aligned in zip(*parts):  # one stretch between two bounds, in every layout
            unit = math.lcm(*(seg.expand for part in aligned for seg in part))
            segments = [seg for part in aligned for seg in part]
            merged = len(segments) == len(aligned) and all(
                self.spaces.coarsen(seg.space, unit // seg.expand) for seg in segments
            )
            if merged:
                first, *others = (self.resolve((seg,))[0].space for seg in segments)
                merged = all([self.spaces.union(first, other) for other in others])
            if not merged:  # a stretch that cannot be one space: nothing in these layouts is pruned
                for layout in layouts:
                    self.fix(layout, why)
                return self.resolve(layouts[0])
        return self.resolve(layouts[0])

    def add_members(
        self, layout: _Layout, name: str, role: Role, normalizes: int | None = None, stored: str | None = None,
        axis: int = 0, start: int = 0, unit: int = 1,
    ) -> None:
        """Make module ``name`` a member of ``layout``'s spaces, at ``start`` along its dim; ``unit`` channels make
        one entry of its tensor (an attention's head size, for a tensor with one entry per head)."""
        for seg, offset in zip(layout, _bounds(layout)):
            member = Member(name, self.modules[name], role, (start + offset) // unit, seg.expand // unit, normalizes,
                            stored, axis)  # fmt: skip
            self.spaces.add(seg.space, len(self.layouts), member)

    def add_stored(self, layout: _Layout, node: fx.Node, view_dim: int, channels: int) -> bool:
        """Cut the stored tensor that ``node`` views along the dim that meets ``layout``'s channels at
        ``view_dim``; ``False`` where that dim is not one entry per channel."""
        stored = self.stored[node]
        axis = stored.axis(view_dim)
        if axis is None or stored.shape[axis] != channels:
            return False
        owner, _, attribute = stored.target.rpartition(".")
        self.add_members(layout, owner, Role.SCALE, stored=attribute, axis=axis)
        return True

    def scope_input(self, owner: str) -> fx.Node | None:
        """The tensor that the traced-into module ``owner`` received: the first traced tensor from outside its scope
        that a node inside it reads (a pruning hook's nodes come first and read stored tensors only)."""
        for node in self.gm.graph.nodes:
            if owner in (node.meta.get("nn_module_stack") or {}):
                for arg in node.all_input_nodes:
                    if owner not in (arg.meta.get("nn_module_stack") or {}) and self.layouts.get(arg) is not None:
                        return arg
        return None

    # ---- ops -----------------------------------------------------------------------------------------------
    def single_input(self, node: fx.Node) -> tuple[fx.Node, _Layout] | None:
        arg = node.args[0] if node.args else None
        layout = self.layout_of(arg)
        return None if layout is None else (arg, layout)  # type: ignore[return-value]

    def passthrough(self, node: fx.Node) -> _Layout | None:
        src = self.single_input(node)
        out = _shape(node)
        if src is None:
            return self.unknown(node)
        in_shape, dim = _shape(src[0]), self.dim_of(src[0])
        if out is None or in_shape is None or len(out) != len(in_shape) or out[dim] != in_shape[dim]:
            return self.unknown(node)
        self.cdim[node] = dim
        return src[1]

    def permute(self, node: fx.Node) -> _Layout | None:
        """``permute`` or ``transpose``: the channels move to another dim."""
        src = self.single_input(node)
        dims = node.args[1:] if node.op == "call_method" else node.args[1:2]
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else tuple(dims)
        in_shape = _shape(src[0]) if src else None
        if node.target in ("transpose", torch.transpose) and in_shape is not None:
            dims = tuple(node.args[1:3]) if len(node.args) >= 3 else ()
            if len(dims) == 2 and all(isinstance(d, int) for d in dims):
                order = list(range(len(in_shape)))
                a, b = (d % len(in_shape) for d in dims)
                order[a], order[b] = order[b], order[a]
                dims = tuple(order)
        if src is None or in_shape is None or not all(isinstance(d, int) for d in dims) or len(dims) != len(in_shape):
            return self.unknown(node)
        self.cdim[node] = [d % len(in_shape) for d in dims].index(self.dim_of(src[0]))
        return src[1]

    def stored_view(self, node: fx.Node) -> _Layout | None:
        """A view of a stored tensor: still one where the dims that may hold channels stay known (a reshaped
        per-channel vector, ``gamma.reshape(1, -1, 1, 1)``; a class token expanded over the batch)."""
        stored, shape, method = self.stored[node.args[0]], _shape(node), str(node.target)  # type: ignore[index]
        if shape is None:
            return self.unknown(node)
        if method in ("to", "type_as"):
            self.stored[node] = stored
        elif method in ("expand", "expand_as") and stored.lead is not None:
            added = len(shape) - len(_shape(node.args[0]))  # type: ignore[arg-type]
            self.stored[node] = stored._replace(lead=stored.lead + added)
        elif sum(s > 1 for s in stored.shape) == 1:
            self.stored[node] = stored._replace(lead=None)
        else:
            return self.fresh(node, f"meets the stored tensor '{stored.target}'")
        return None

    def elementwise(self, node: fx.Node) -> _Layout | None:
        out = _shape(node)
        if out is None or len(out) < 2:
            return self.unknown(node)
        why = f"meets another channel layout in {_op_name(node, self.modules)}"
        # Inputs are aligned from the right, as broadcasting does; each traced input says where its channels are.
        dims = {len(out) - len(_shape(src)) + self.dim_of(src) for src, _ in self.input_layouts(node) if _shape(src)}
        if len(dims) > 1:
            return self.unknown(node)
        dim = dims.pop() if dims else 1
        joined: list[_Layout] = []
        scales: list[tuple[fx.Node, int]] = []
        for src in node.all_input_nodes:
            shape, layout = _shape(src), self.layout_of(src)
            if shape is None or (layout is None and src not in self.stored):
                continue
            at = dim - (len(out) - len(shape))  # the input's dim that meets the channels
            if at < 0 or shape[at] == 1:
                continue  # broadcast along channels: every channel sees the same value
            if src in self.stored and shape[at] == out[dim]:
                scales.append((src, at))  # a stored tensor along the channels, cut with them
            elif layout is not None and shape[at] == out[dim] and self.dim_of(src) == at:
                joined.append(layout)
            else:
                return self.unknown(node)
        if not joined:
            return self.fresh(node, f"is computed by {_op_name(node, self.modules)} from no traced channels")
        layout = self.unify(joined, why)
        for src, at in scales:
            if not self.add_stored(layout, src, at, out[dim]):
                return self.unknown(node)
        self.cdim[node] = dim
        return layout

    def cat(self, node: fx.Node) -> _Layout | None:
        out = _shape(node)
        tensors = _arg(node, 0, "tensors")
        dim = _arg(node, 1, "dim", 0)
        if out is None or not isinstance(tensors, (list, tuple)) or not isinstance(dim, int):
            return self.unknown(node)
        traced = [t for t in tensors if self.layout_of(t) is not None]
        channel_dims = {self.dim_of(t) for t in traced}
        stored = [t for t in tensors if t not in traced and t in self.stored]
        if not traced or len(traced) + len(stored) != len(tensors) or len(channel_dims) != 1:
            return self.unknown(node)
        self.cdim[node] = channel_dim = channel_dims.pop()
        layouts = [self.layout_of(t) for t in traced]
        if dim % len(out) != channel_dim:  # along tokens or positions: the channels of every piece are the same
            why = f"meets another channel layout in {_op_name(node, self.modules)}"
            layout = self.unify(layouts, why)  # type: ignore[arg-type]
            if not all(self.add_stored(layout, t, channel_dim, out[channel_dim]) for t in stored):
                return self.unknown(node)
            return layout
        if stored:
            return self.unknown(node)
        return tuple(seg for layout in layouts for seg in layout)  # type: ignore[union-attr]

    def owner_attribute(self, node: fx.Node, constant: Any) -> tuple[str, str, Any, int] | None:
        """``(owner, attribute, value, share)`` where the module whose forward runs ``node`` has a size attribute
        (see :func:`torch_rlprune.register_size_attribute`) that holds ``constant`` (``share`` 1), or, registered
        with ``total_of=n``, ``n`` times it (``share`` n: the forward splits by ``self.total // n``)."""
        owner = _owner(node)
        module = self.modules.get(owner)
        found = channel_ops.size_attribute(module) if module is not None else None
        if found is None:
            return None
        attribute, total_of = found
        value = getattr(module, attribute, None)
        if isinstance(value, (list, tuple)) and isinstance(constant, (list, tuple)) and list(value) == list(constant):
            return owner, attribute, value, 1  # type: ignore[return-value]
        if type(value) is int and type(constant) is int and value == constant:
            return owner, attribute, value, 1  # type: ignore[return-value]
        if type(value) is int and type(constant) is int and total_of is not None and value == constant * total_of:
            return owner, attribute, value, total_of  # type: ignore[return-value]
        return None

    def keep_attribute(self, node: fx.Node, constants: Sequence[Any]) -> None:
        """A split or slice that uses a size attribute's value where slicing cannot follow it: the attribute, and
        the channels it counts elsewhere, must stay as they are."""
        for constant in constants:
            found = self.owner_attribute(node, constant)
            if found is not None:
                owner, attribute, _, _ = found
                where = f"module '{owner}'" if owner else "the model"
                self.unbound.setdefault((owner, attribute), f"is counted by attribute '{attribute}' of {where}, "
                                        f"which {_op_name(node, self.modules)} also reads")  # fmt: skip

    def bind(self, found: tuple[str, str, Any, int], kind: str, parts: list[_Layout], why: str, unit: int = 1) -> None:
        """Let slicing set the attribute ``found`` names to the kept counts of ``parts`` (the pieces it counts; for
        ``"total"``, the first of its equal ones), in ``unit`` channels (an attention's head size, for its heads).

        Another use of the same attribute must count as many channels: its pieces are joined with the first's.
        """
        owner, attribute, value, pieces = found
        if (owner, attribute) in self.bindings:
            first_kind, _, first_parts, _ = self.bindings[owner, attribute]
            if first_kind != kind or len(first_parts) != len(parts):  # read two ways: it must keep its value
                self.unbound.setdefault((owner, attribute), why)
                for part in parts:
                    self.fix(part, why)
                return
            for first, part in zip(first_parts, parts):
                self.unify([first, part], why)
            return
        self.bindings[owner, attribute] = (kind, value, parts, pieces)
        for index, part in enumerate(parts):
            part = self.resolve(part)
            for seg, offset in zip(part, _bounds(part)):
                self.spaces.add(seg.space, len(self.layouts),
                                _Piece(owner, attribute, index, offset // unit, seg.expand // unit))

    def split(self, node: fx.Node) -> None:
        """``split``/``chunk``: remember each piece's layout for the ``getitem`` that picks it.

        The sizes are constants of the model's code, which slicing does not change: the pieces keep their sizes,
        except the last one of ``split(x, size)``, which takes whatever is left. Where the sizes come from a size
        attribute of the module, slicing sets it instead; equal pieces (``chunk``, or ``split`` by such an
        attribute) are then pruned alike, channel ``c`` of every piece together, so that they stay equal.
        """
        src = self.single_input(node)
        shapes = _piece_shapes(node)
        in_shape = _shape(src[0]) if src else None
        size = _arg(node, 1, "split_size_or_sections")
        dim = _arg(node, 2, "dim", 0)
        if src is None or shapes is None or in_shape is None or not isinstance(dim, int) or not self.at_dim1(node):
            self.unknown(node)
            return None
        if dim % len(in_shape) != 1:
            self.pieces[node] = [src[1]] * len(shapes)
            return None
        parts = self.cut(src[1], [0, *itertools.accumulate(s[1] for s in shapes)])
        if parts is None:
            self.unknown(node, f"is split by {_op_name(node, self.modules)} inside a unit that must stay whole")
            return None
        why = f"is split into pieces of fixed size by {_op_name(node, self.modules)}"
        equal = len({_extent(part) for part in parts}) == 1
        found = self.owner_attribute(node, size) if node.target in (torch.split, "split") else None
        share = found[3] if found is not None else 0
        if found is not None and isinstance(size, (list, tuple)):
            self.bind(found, "sizes", parts, why)
        elif equal and len(parts) > 1 and (share in (1, len(parts)) or node.target in (torch.chunk, "chunk")):
            self.unify(parts, why)
            parts = [self.resolve(part) for part in parts]
            if found is not None:  # the attribute holds a piece's size, or (share > 1) their total
                self.bind(found, "size" if share == 1 else "total", parts[:1], why)
        else:
            sizes = list(size) if isinstance(size, (list, tuple)) else [size]
            self.keep_attribute(node, [size, *sizes])
            last_may_shrink = node.target in (torch.split, "split") and isinstance(size, int)
            for part in parts[:-1] if last_may_shrink else parts:
                self.fix(part, why)
        self.pieces[node] = parts
        return None

    def getitem(self, node: fx.Node) -> _Layout | None:
        source, index = node.args[0], node.args[1] if len(node.args) > 1 else None
        if source in self.pieces:  # run() has fixed the pieces where the index is not an int: a tuple again
            if source in self.cdim:
                self.cdim[node] = self.cdim[source]
            return self.pieces[source][index] if isinstance(index, int) else None
        layout, in_shape, out = self.layout_of(source), _shape(source), _shape(node)
        if layout is None:
            return None if out is None else self.fresh(node, f"is computed by {_op_name(node, self.modules)}")
        index = index if isinstance(index, tuple) else (index,)
        if out is None or in_shape is None or index.count(Ellipsis) > 1 or None in index:
            return self.unknown(node)
        if Ellipsis in index:
            at = index.index(Ellipsis)
            index = index[:at] + (slice(None),) * (len(in_shape) - len(index) + 1) + index[at + 1 :]
        if self.dim_of(source) != 1:
            return self.pick(node, index, layout, in_shape, out)
        if len(out) != len(in_shape):
            return self.unknown(node)
        if not all(isinstance(i, slice) for i in index) or index[0] != slice(None):
            return self.unknown(node)
        channels = index[1] if len(index) > 1 else slice(None)
        constants = [c for c in (channels.start, channels.stop) if c is not None]
        if any(not isinstance(c, int) or c < 0 for c in constants):  # counted from the end: slicing moves them
            return self.unknown(node)
        start, stop, step = channels.indices(in_shape[1])
        if step != 1:
            return self.unknown(node)
        if (start, stop) == (0, in_shape[1]):
            self.keep_attribute(node, constants)
            return layout
        parts = self.cut(layout, sorted({0, start, stop, _extent(layout)}))
        if parts is None:
            return self.unknown(node, f"is sliced by {_op_name(node, self.modules)} inside a unit that must stay whole")
        # The bounds are constants of the model's code: channels before a bound that is not the end must stay
        # for the slice to pick the same ones, unless the bound is a size attribute of the module, which slicing
        # then sets.
        layout = self.resolve(layout)
        fixed_until = stop if stop < in_shape[1] else start
        before = tuple(seg for seg, s in zip(layout, _bounds(layout)) if s < fixed_until)
        why = f"is sliced at fixed positions by {_op_name(node, self.modules)}"
        found = self.owner_attribute(node, fixed_until) if start == 0 or stop == in_shape[1] else None
        if found is not None and found[3] == 1:
            self.bind(found, "bound", [before], why)
        else:
            self.keep_attribute(node, constants)
            self.fix(before, why)
        layout = self.resolve(layout)
        return tuple(seg for seg, s in zip(layout, _bounds(layout)) if start <= s < stop)

    def pick(
        self, node: fx.Node, index: tuple, layout: _Layout, in_shape: torch.Size, out: torch.Size
    ) -> _Layout | None:
        """Indexing a tensor whose channels are not along dim 1 (``x[:, 0]`` picks the class token of channels-last
        tokens): the channels pass whole, other dims may be picked or sliced."""
        channel_dim = self.dim_of(node.args[0])  # type: ignore[arg-type]
        index = index + (slice(None),) * (len(in_shape) - len(index))
        if len(index) != len(in_shape) or not all(isinstance(i, (int, slice)) for i in index) or (
            index[channel_dim] != slice(None)
        ) or len(out) != len(in_shape) - sum(isinstance(i, int) for i in index):
            return self.unknown(node)
        self.cdim[node] = channel_dim - sum(isinstance(i, int) for i in index[:channel_dim])
        return layout

    def flatten(self, node: fx.Node, start: int, end: int) -> _Layout | None:
        src = self.single_input(node)
        in_shape = _shape(src[0]) if src else None
        if src is None or in_shape is None:
            return self.unknown(node)
        if self.dim_of(src[0]) != 1:
            return self.unknown(node)
        start, end = start % len(in_shape), end % len(in_shape)
        if start >= 2:
            return src[1]
        if start == 1 and end == len(in_shape) - 1:
            spatial = math.prod(in_shape[2:])
            return tuple(_Segment(s.space, s.channels, s.expand * spatial) for s in src[1])
        return self.unknown(node)

    def reshape(self, node: fx.Node) -> _Layout | None:
        src = self.single_input(node)
        out = _shape(node)
        in_shape = _shape(src[0]) if src else None
        if src is None or out is None or in_shape is None or len(in_shape) < 2 or len(out) < 2:
            return self.unknown(node)
        if self.dim_of(src[0]) != 1:
            return self.unknown(node)
        keeps_channels = out[:2] == in_shape[:2]
        if not keeps_channels and not (len(out) == 2 and out[0] == in_shape[0] and out[1] == math.prod(in_shape[1:])):
            return self.unknown(node)
        # The size given for dim 1 must follow the channels once they are cut: -1, or a size read at run time
        # (``x.size(1)``), or a size attribute of the module, which slicing sets; a number in the code stays.
        given_as = node.kwargs.get("shape", node.kwargs.get("size"))
        sizes = [None, -1] if str(node.target) == "flatten" else list(node.args[1:]) or [given_as]
        sizes = list(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (list, tuple)) else sizes
        given = sizes[1] if len(sizes) > 1 else None
        if type(given) is int and given != -1:
            why = f"is reshaped to a fixed channel count by {_op_name(node, self.modules)}"
            found = self.owner_attribute(node, given) if keeps_channels else None
            if found is not None and found[3] == 1:
                self.bind(found, "width", [src[1]], why)
            else:
                self.keep_attribute(node, [given])
                self.fix(src[1], why)
        return src[1] if keeps_channels else self.flatten(node, 1, -1)

    def reduce(self, node: fx.Node) -> _Layout | None:
        src = self.single_input(node)
        out = _shape(node)
        in_shape = _shape(src[0]) if src else None
        dims = _arg(node, 1, "dim")
        if src is None or out is None or in_shape is None or dims is None or len(out) < 2:
            return self.unknown(node)
        dims = [dims] if isinstance(dims, int) else list(dims)
        channel_dim = self.dim_of(src[0])
        if not all(isinstance(d, int) for d in dims) or any(d % len(in_shape) in (0, channel_dim) for d in dims):
            return self.unknown(node)
        if len(out) < len(in_shape):  # the reduced dims before the channels are gone
            channel_dim -= sum(d % len(in_shape) < channel_dim for d in dims)
        self.cdim[node] = channel_dim
        return src[1]

    def conv(self, node: fx.Node, name: str, conv: nn.Module) -> _Layout | None:
        src = self.single_input(node)
        if src is None or self.dim_of(src[0]) != 1:
            return self.unknown(node)
        layout = src[1]
        assert isinstance(conv, CONV_TYPES)
        if conv.groups == 1:
            self.add_members(layout, name, Role.CONSUMER)
            space = self.spaces.new(conv.out_channels)
            self.spaces.add(space, len(self.layouts), Member(name, conv, Role.PRODUCER))
            return (_Segment(space, conv.out_channels),)
        # A depthwise or grouped conv: a unit of its input channels must be whole groups, so that whole groups go
        # and the rest stay equal; each unit then stands for the same groups of its output channels.
        per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        aligned = all(
            start % per_in == 0 and (seg.channels * seg.expand) % per_in == 0
            and (per_in % seg.expand == 0 or seg.expand % per_in == 0)
            for seg, start in zip(layout, _bounds(layout))
        )  # fmt: skip
        if not aligned or not all(
            self.spaces.coarsen(seg.space, max(per_in // seg.expand, 1)) for seg in layout
        ):
            why = f"feeds grouped convolution '{name}' (groups={conv.groups}) across its groups"
            self.fix(layout, why)
            return self.opaque_conv(node, name, why)
        out = tuple(_Segment(s.space, s.channels, s.expand * per_out // per_in) for s in self.resolve(layout))
        self.add_members(out, name, Role.TIED)
        return out

    def opaque_conv(self, node: fx.Node, name: str, why: str) -> _Layout | None:
        """A conv whose filters cannot be pruned: its output is a fixed space it is listed as producing."""
        layout = self.fresh(node, why)
        if layout is not None:
            self.spaces.add(layout[0].space, len(self.layouts), Member(name, self.modules[name], Role.PRODUCER))
        return layout

    def linear(self, node: fx.Node, name: str, linear: nn.Linear) -> _Layout | None:
        """A ``Linear`` over the channels (the last dim: after ``flatten``, or channels last as in ConvNeXt): it
        consumes them and produces new ones, along the same dim."""
        src = self.single_input(node)
        in_shape = _shape(src[0]) if src else None
        if src is None or in_shape is None or self.dim_of(src[0]) != len(in_shape) - 1:
            return self.unknown(node)
        self.add_members(src[1], name, Role.CONSUMER)
        space = self.spaces.new(linear.out_features)
        self.spaces.add(space, len(self.layouts), Member(name, linear, Role.PRODUCER))
        self.cdim[node] = len(in_shape) - 1
        return (_Segment(space, linear.out_features),)

    def attention(self, node: fx.Node, name: str, attention: nn.MultiheadAttention) -> None:
        """``nn.MultiheadAttention`` over its input's channels (the last dim), as in a transformer's residual
        stream: it must return as many channels as it reads, so its heads are tied to them by index.

        Head ``h`` reads and writes channels ``h * head_dim ... (h + 1) * head_dim - 1``: pruning those channels
        prunes that head (its query, key and value rows, the matching ``out_proj`` columns and rows) and leaves the
        head size, and so the attention's scale, as it was. The output is the pair ``(output, weights)``; the
        ``getitem`` that picks the output reads it from ``self.pieces``.
        """
        inputs = [_arg(node, i, key) for i, key in enumerate(("query", "key", "value"))]
        layouts = [self.layout_of(x) for x in inputs]
        shapes = [_shape(x) for x in inputs]
        # The attention weights, where the model uses them, and a mask per head have one entry per head: cutting
        # a head would change them. A mask per head is 3-D, (batch * heads, target, source).
        mask = _arg(node, 5, "attn_mask")
        weights_used = _arg(node, 4, "need_weights", True) is not False and any(
            not (user.target is operator.getitem and (user.args[1] == 0 or not user.users)) for user in node.users
        )
        per_head_mask = isinstance(mask, fx.Node) and (_shape(mask) is None or len(_shape(mask)) != 2)
        why = f"passes through attention '{name}'" + (
            ", whose attention weights the model uses (one map per head)" if weights_used
            else ", which is given a mask per head" if per_head_mask
            else ", which needs its heads tied to the channels"
        )  # fmt: skip
        if any(lay is None or shape is None or self.dim_of(x) != len(shape) - 1
               for x, lay, shape in zip(inputs, layouts, shapes)) or weights_used or per_head_mask or (
            attention.kdim != attention.embed_dim or attention.vdim != attention.embed_dim
            or attention.bias_k is not None or attention.add_zero_attn
        ):  # fmt: skip
            for layout in layouts:
                self.fix(layout, why)
            return None  # the getitem that picks the output gives it a fixed space
        layout = self.tie_heads(self.unify(layouts, why), attention.head_dim, why)  # type: ignore[arg-type]
        out_proj = f"{name}.out_proj"
        self.add_members(layout, name, Role.CONSUMER)
        for start in range(0, 3 * attention.embed_dim, attention.embed_dim):  # query, key and value rows
            self.add_members(layout, name, Role.SCALE, stored="in_proj_weight", start=start)
        self.add_members(layout, out_proj, Role.PRODUCER)
        self.add_members(layout, out_proj, Role.CONSUMER)
        self.cdim[node] = len(shapes[0]) - 1  # type: ignore[arg-type]
        self.pieces[node] = [layout, None]
        self.calls[name] = (layout, layout)  # called again: reused() keeps it whole
        return None

    def tie_heads(self, layout: _Layout, head: int, why: str) -> _Layout:
        """Make every unit of ``layout``'s spaces whole heads of ``head`` channels (channel ``c`` is in head ``c //
        head``), or fix the layout where a unit would split a head."""
        aligned = all(
            start % head == 0 and (seg.channels * seg.expand) % head == 0
            and (head % seg.expand == 0 or seg.expand % head == 0)
            for seg, start in zip(layout, _bounds(layout))
        )  # fmt: skip
        if not aligned or not all(self.spaces.coarsen(seg.space, max(head // seg.expand, 1)) for seg in layout):
            self.fix(layout, why)
        return self.resolve(layout)

    def window_attention(self, node: fx.Node) -> _Layout | None:
        """torchvision's Swin attention: ``shifted_window_attention(x, qkv.weight, proj.weight, ..., num_heads,
        ...)``, called by its module with the tensors of the module's ``qkv`` and ``proj`` Linears.

        As for ``nn.MultiheadAttention``, the heads are tied to the channels (the last dim) by index: pruning head
        ``h`` cuts its query, key and value rows of ``qkv``, its columns of ``proj`` and its entry of every tensor
        the module holds per head (:func:`torch_rlprune.channel_ops.head_tensors`: the relative position bias);
        slicing sets the module's ``num_heads``.
        """
        owner = _owner(node)
        module = self.modules.get(owner)
        x = node.args[0] if node.args else None
        layout, shape = self.layout_of(x), _shape(x)
        heads = _arg(node, 5, "num_heads")
        per_head = channel_ops.head_tensors(module) if module is not None else None
        weights = [a.target if isinstance(a, fx.Node) and a.op == "get_attr" else None for a in node.args[1:3]]
        why = f"passes through window attention '{owner}', which needs its heads tied to the channels"
        if (
            layout is None or shape is None or self.dim_of(x) != len(shape) - 1 or per_head is None
            or type(heads) is not int or heads != getattr(module, "num_heads", None) or shape[-1] % heads
            or weights != [f"{owner}.qkv.weight", f"{owner}.proj.weight"]
        ):  # fmt: skip
            for _, lay in self.input_layouts(node):
                self.fix(lay, why)
            return self.fresh(node, why)
        channels = shape[-1]
        head = channels // heads
        layout = self.tie_heads(layout, head, why)
        qkv, proj = f"{owner}.qkv", f"{owner}.proj"
        self.add_members(layout, qkv, Role.CONSUMER)
        for start in range(0, 3 * channels, channels):  # query, key and value rows
            self.add_members(layout, qkv, Role.SCALE, stored="weight", start=start)
        self.add_members(layout, proj, Role.CONSUMER)
        self.add_members(layout, proj, Role.PRODUCER)
        if all(seg.expand % head == 0 for seg in layout):  # else tie_heads fixed it: nothing is cut
            for path, axis in per_head:
                holder, _, tensor = f"{owner}.{path}".rpartition(".")
                self.add_members(layout, holder, Role.SCALE, stored=tensor, axis=axis, unit=head)
            self.bind((owner, "num_heads", heads, 1), "heads", [layout], why, unit=head)
        self.cdim[node] = len(shape) - 1
        return layout

    def patch_merge(self, node: fx.Node) -> _Layout | None:
        """Swin's patch merging: four strided views of the input (channels last) concatenated along the channels."""
        src = self.single_input(node)
        in_shape, out = (_shape(src[0]) if src else None), _shape(node)
        if src is None or in_shape is None or out is None or self.dim_of(src[0]) != len(in_shape) - 1 or (
            out[-1] != 4 * in_shape[-1]
        ):
            return self.unknown(node)
        self.cdim[node] = len(out) - 1
        return self.resolve(src[1]) * 4

    def channel_norm(self, node: fx.Node, name: str, norm: nn.Module, dim: int) -> _Layout | None:
        """A norm over the channels at ``dim`` (a LayerNorm over them alone, or a module registered as
        ``"channel_norm"``): a norm member whose statistics cover the kept channels only
        (:func:`torch_rlprune.masks.apply_channel_masks` makes the masked model compute them so)."""
        src = self.single_input(node)
        in_shape = _shape(src[0]) if src else None
        if src is None or in_shape is None or self.dim_of(src[0]) != dim or (
            isinstance(norm, nn.LayerNorm) and tuple(norm.normalized_shape) != (in_shape[dim],)
        ):
            return self.unknown(node)
        # The masked model must normalise over the kept channels only, in the module's own input.
        module_input = src[0] if node.op == "call_module" else self.scope_input(name)
        weight = getattr(norm, "weight", None)
        if weight is None or module_input is None or module_input not in self.layouts:
            return self.unknown(node, f"is normalised over its channels by '{name}', which has no weight to mask")
        if tuple(weight.shape) != (in_shape[dim],):
            return self.unknown(node, f"is normalised by '{name}', whose weight does not hold one entry per channel")
        self.add_members(src[1], name, Role.NORM, normalizes=self.dim_of(module_input))
        self.cdim[node] = dim
        return src[1]

    def norm(self, node: fx.Node, name: str) -> _Layout | None:
        src = self.single_input(node)
        if src is None or self.dim_of(src[0]) != 1:
            return self.unknown(node)
        self.add_members(src[1], name, Role.NORM)
        return src[1]

    def functional_layer(self, node: fx.Node) -> _Layout | None:
        """``F.batch_norm``, ``F.instance_norm``, ``F.layer_norm`` or ``F.linear`` called by the layer module (a
        subclass of the matching ``torch.nn`` type) whose forward is being traced, with a weight of its shape."""
        owner = _owner(node)
        module = self.modules.get(owner)
        if not isinstance(module, _LAYER_FUNCTIONS[node.target]):
            return self.unknown(node)
        if owner in self.calls:
            return self.reused(node, owner, module)
        in_shape = _shape(node.args[0]) if node.args else None
        if node.target is F.linear:
            weight = _arg(node, 1, "weight")
            if _shape(weight) != module.weight.shape:  # not the module's weight: slicing could not cut it
                return self.unknown(node)
            out = self.linear(node, owner, module)
        elif node.target is F.layer_norm:
            out = self.channel_norm(node, owner, module, len(in_shape) - 1) if in_shape else self.unknown(node)
        else:
            out = self.norm(node, owner)
        src = self.single_input(node)
        if out is not None and src is not None:
            self.calls[owner] = (src[1], out)
        return out

    def reused(self, node: fx.Node, name: str, module: nn.Module) -> _Layout | None:
        """A module with state called again: its input channels meet the first call's, its output is the same."""
        src = self.single_input(node)
        first_input, first_output = self.calls[name]
        shareable = (isinstance(module, CONV_TYPES) or channel_ops.module_kind(module) == "norm") and first_input
        if src is None or not shareable:
            why = f"passes through module '{name}', which is called more than once"
            for _, layout in self.input_layouts(node):
                self.fix(layout, why)
            self.fix(first_input, why)
            self.fix(first_output, why)
            return self.fresh(node, why)
        self.unify([first_input, src[1]], f"meets another channel layout in module '{name}', called twice")
        # Every call returns the channels of the first: a conv's own filters, or the (now shared) input's.
        return None if first_output is None else self.resolve(first_output)

    def call_module(self, node: fx.Node) -> _Layout | None:
        name = str(node.target)
        module = self.modules[name]
        if name in self.calls:
            return self.reused(node, name, module)
        src = self.single_input(node)
        kind = channel_ops.module_kind(module)
        if isinstance(module, CONV_TYPES):
            out = self.conv(node, name, module)
        elif kind == "norm":
            out = self.norm(node, name)
        elif isinstance(module, nn.Linear):
            out = self.linear(node, name, module)
        elif isinstance(module, nn.LayerNorm) and src is not None and _shape(src[0]) is not None:
            out = self.channel_norm(node, name, module, len(_shape(src[0])) - 1)  # type: ignore[arg-type]
        elif kind == "channel_norm" and src is not None:
            out = self.channel_norm(node, name, module, self.dim_of(src[0]))
        elif isinstance(module, nn.MultiheadAttention):
            return self.attention(node, name, module)
        elif isinstance(module, nn.Flatten):
            return self.flatten(node, module.start_dim, module.end_dim)
        elif isinstance(module, nn.PReLU) and module.num_parameters == 1 or kind == "passthrough":
            return self.passthrough(node)
        elif kind == "elementwise":
            return self.elementwise(node)
        else:
            return self.unknown(node)
        if src is not None:
            self.calls[name] = (src[1], out)
        return out

    def call_function(self, node: fx.Node) -> _Layout | None:
        target = node.target
        kind = channel_ops.function_kind(target)
        if kind == "passthrough":
            return self.passthrough(node)
        if kind == "elementwise":
            return self.elementwise(node)
        if kind == "window_attention":
            return self.window_attention(node)
        if kind == "patch_merge":
            return self.patch_merge(node)
        if target in _CAT_FUNCTIONS:
            return self.cat(node)
        if target in (torch.permute, torch.transpose):
            return self.permute(node)
        if target in _SPLIT_FUNCTIONS:
            return self.split(node)
        if target is operator.getitem:
            return self.getitem(node)
        if target in _LAYER_FUNCTIONS:
            return self.functional_layer(node)
        if target in _REDUCE_FUNCTIONS:
            return self.reduce(node)
        if target in _FLATTEN_FUNCTIONS:
            start = _arg(node, 1, "start_dim", 0)
            end = _arg(node, 2, "end_dim", -1)
            return self.flatten(node, start, end)
        if target is getattr and _shape(node) is None:
            return None
        return self.unknown(node)

    def call_method(self, node: fx.Node) -> _Layout | None:
        method = str(node.target)
        if node.args and node.args[0] in self.stored and method in _VIEW_METHODS:
            return self.stored_view(node)
        kind = channel_ops.method_kind(method)
        if method in ("permute", "transpose"):
            return self.permute(node)
        if kind == "passthrough":
            return self.passthrough(node)
        if kind == "elementwise":
            return self.elementwise(node)
        if method in _SPLIT_METHODS:
            return self.split(node)
        if method in _REDUCE_METHODS:
            return self.reduce(node)
        if method in _RESHAPE_METHODS:
            return self.reshape(node)
        if method in ("size", "dim") or _shape(node) is None and not self.input_layouts(node):
            return None
        return self.unknown(node)

    def run(self) -> ChannelGroups:
        for node in self.gm.graph.nodes:
            # The pieces of a split reach the rest of the graph only through getitem; anything else that takes
            # the whole tuple is not followed, so its channels stay.
            picks = node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[1], int)
            for arg in node.all_input_nodes:
                if arg in self.pieces and not picks:
                    for piece in self.pieces[arg]:
                        self.fix(piece, f"reaches {_op_name(node, self.modules)} as a tuple")
            if node.op == "placeholder":
                layout = self.fresh(node, "is a network input")
            elif node.op == "get_attr":
                shape = _shape(node)
                if shape is not None and any(s > 1 for s in shape):
                    self.stored[node] = _Stored(str(node.target), shape)
                    layout = None
                else:
                    layout = self.fresh(node, f"meets the stored tensor '{node.target}'")
            elif node.op == "output":
                for _, out_layout in self.input_layouts(node):
                    self.fix(out_layout, "reaches the network output")
                layout = None
            else:
                layout = getattr(self, node.op)(node)
            self.layouts[node] = layout
        return self.collect()

    def collect(self) -> ChannelGroups:
        spaces = self.spaces
        rank = {Role.PRODUCER: 0, Role.TIED: 1, Role.NORM: 2, Role.SCALE: 3, Role.CONSUMER: 4}
        groups: list[tuple[int, ChannelGroup]] = []
        excluded: dict[str, str] = {}
        spans: dict[tuple[str, str], list[tuple[int, ChannelGroup, int, int]]] = {}
        for key, why in self.unbound.items():
            for part in self.bindings.pop(key, (None, None, [], 1))[2]:
                self.fix(part, why)
        for root in spaces.roots():
            members = [(order, m) for order, m in spaces.members[root] if isinstance(m, Member)]
            if spaces.why_fixed[root] is not None:
                for _, m in members:
                    if m.role in (Role.PRODUCER, Role.TIED) and isinstance(m.module, CONV_TYPES):
                        excluded.setdefault(m.name, spaces.why_fixed[root])  # type: ignore[arg-type]
                continue
            ordered = sorted(members, key=lambda om: (rank[om[1].role], om[0]))
            first = min(order for order, m in members if m.role is Role.PRODUCER)
            group = ChannelGroup(spaces.size[root], tuple(m for _, m in ordered))
            groups.append((first, group))
            for _, piece in spaces.members[root]:
                if isinstance(piece, _Piece):
                    spans.setdefault((piece.owner, piece.attribute), []).append(
                        (piece.index, group, piece.offset, piece.expand)
                    )
        groups.sort(key=lambda og: og[0])
        sizes = [
            SizeAttribute(owner, self.modules[owner], attribute, kind,
                          tuple(value) if kind == "sizes" else (value,), tuple(spans.get((owner, attribute), ())),
                          pieces)
            for (owner, attribute), (kind, value, _, pieces) in self.bindings.items()
        ]  # fmt: skip
        return ChannelGroups((g for _, g in groups), excluded, sizes)


class _Tracer(fx.Tracer):
    """A tracer that remembers which module it was inside when tracing failed."""

    def __init__(self, leaf_modules: Sequence[str | type]) -> None:
        super().__init__()
        self.leaf_names = {m for m in leaf_modules if isinstance(m, str)}
        self.leaf_types = tuple(m for m in leaf_modules if isinstance(m, type))
        self.stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if module_qualified_name in self.leaf_names or (self.leaf_types and isinstance(m, self.leaf_types)):
            return True
        if channel_ops.taken_whole(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m, forward, args, kwargs):  # type: ignore[no-untyped-def]
        self.stack.append(self.path_of_module(m))
        result = super().call_module(m, forward, args, kwargs)
        self.stack.pop()
        return result


def groups_kept(conv: nn.Module, out_channels: int) -> int:
    """The ``groups`` of a depthwise or grouped conv cut to ``out_channels`` filters by a channel group.

    The group's channels are whole groups of the conv (see :func:`channel_groups`), so every group keeps its width.
    """
    return out_channels * conv.groups // conv.out_channels


def check_groups_of(model: nn.Module, groups: Sequence[ChannelGroup], caller: str) -> None:
    """Raise ``ValueError`` unless every member of ``groups`` is the submodule of ``model`` it names."""
    modules = dict(model.named_modules())
    for group in groups:
        for member in group.members:
            if modules.get(member.name) is not member.module:
                raise ValueError(
                    f"{caller}: groups belong to another model (group {group.name!r} names {member.name!r}, which is "
                    f"not part of this model); pass channel_groups(model, example_inputs) of this model."
                )


# Layer types whose subclasses may be taken whole where torch.fx cannot trace their forward.
_LAYER_TYPES = (*CONV_TYPES, nn.Linear, _BatchNorm, _InstanceNorm)


def _graph(model: nn.Module, leaf_modules: Sequence[str | type], caller: str) -> fx.Graph:
    """The traced graph of ``model``; a layer subclass whose forward torch.fx cannot follow (timm's Conv2dSame
    pads by the input's size) is taken whole, every instance of it, as its base type, and slim's verification
    checks that it slices so."""
    leaves = list(leaf_modules)
    while True:
        tracer = _Tracer(leaves)
        try:
            with hook_tensors_kept(model):
                return tracer.trace(model)
        except Exception as exc:
            failed = tracer.stack[-1] if tracer.stack else ""
            layer = type(model.get_submodule(failed)) if failed else None
            if layer is not None and issubclass(layer, _LAYER_TYPES) and layer not in leaves:
                leaves.append(layer)
                continue
            where = f"inside module '{failed}'" if failed else "in its forward"
            hint = (
                f"pass leaf_modules=['{failed}'] to treat that module as opaque (its channels are then not pruned)"
                if failed
                else "make the model's forward traceable"
            )
            raise ValueError(
                f"{caller}: torch.fx could not trace {type(model).__name__} ({type(exc).__name__} {where}: {exc}). "
                f"To proceed, {hint}, or pass the channel groups explicitly."
            ) from exc


def trace(
    model: nn.Module, example_inputs: ExampleInputs, leaf_modules: Sequence[str | type] = (), caller: str = "trace"
) -> fx.GraphModule:
    """Trace ``model`` with :mod:`torch.fx` and annotate every node with the shape it produces.

    The model runs once on ``example_inputs`` in eval mode with gradients off; its modes, batch-norm statistics
    and the RNG are left as they were.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller}: model must be a torch.nn.Module, got {type(model).__name__}.")
    inputs = as_input_tuple(example_inputs, caller, model)
    with preserved_state(model, "eval"):
        graph = _graph(model, leaf_modules, caller)
        gm = fx.GraphModule(model, graph)
        # ShapeProp prints the traceback of a failing node to stderr before re-raising; the error below says it.
        try:
            with torch.no_grad(), contextlib.redirect_stderr(io.StringIO()):
                ShapeProp(gm).propagate(*inputs)
        except Exception as exc:
            shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
            cause = exc.__cause__ or exc
            raise ValueError(
                f"{caller}: the model does not run on example_inputs of shape {shapes} "
                f"({type(cause).__name__}: {cause}). Pass inputs the model accepts, on the model's device."
            ) from exc
    return gm


# Attributes that carry a module's channel counts: a model whose modules keep their identity and these counts
# has the same channel groups, so pruning, slicing and evaluating it share one trace.
_COUNT_ATTRS = ("in_channels", "out_channels", "groups", "num_features", "in_features", "out_features")
_TRACED: weakref.WeakKeyDictionary[nn.Module, tuple[Hashable, ChannelGroups]] = weakref.WeakKeyDictionary()


def _structure(model: nn.Module, inputs: tuple[torch.Tensor, ...], leaf_modules: Sequence[str | type]) -> Hashable:
    modules = tuple(
        (name, id(m), type(m), tuple(getattr(m, a, None) for a in _COUNT_ATTRS)) for name, m in model.named_modules()
    )
    shapes = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
    return modules, shapes, tuple(map(str, leaf_modules)), channel_ops.generation()


def channel_groups(
    model: nn.Module, example_inputs: ExampleInputs, leaf_modules: Sequence[str | type] = ()
) -> ChannelGroups:
    r"""Find the prunable channel groups of ``model``.

    The model is traced with :mod:`torch.fx` and run once on ``example_inputs`` (in eval mode, without gradients;
    its state is left untouched) to learn every tensor's shape. Conv1d, Conv2d and Conv3d layers are understood
    (depthwise and grouped ones pruned in whole groups), along with batch and instance norms (also where a norm
    module's forward calls ``F.batch_norm`` itself, as timm's do), ``Linear`` after ``flatten``, concatenation,
    ``split``/``chunk`` and slices along channels, residual adds and other elementwise ops, channel-preserving
    activations, pooling, dropout, reductions over spatial dims, and modules called more than once; channels last
    (``permute``, ``transpose``, ``Linear``, ``LayerNorm``), tensors the model stores on its channels (a class
    token, a position embedding), and attention (``nn.MultiheadAttention``, torchvision's Swin), whose heads are
    tied to the channels so that they are pruned in whole heads. Anything else is opaque: the channels that reach it
    are excluded, and :attr:`ChannelGroups.excluded` says why.

    The result is remembered for the model: called again with inputs of the same shapes while its modules and
    their channel counts are unchanged (pruning masks do not count), it returns the same groups without tracing.
    A model whose ``forward`` code is replaced in place is not noticed; pass a fresh instance instead.

    Args:
        model (torch.nn.Module): the model.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts (batch size 1 is enough).
        leaf_modules (sequence of str or type): submodules (by qualified name or type) not to trace into, for
            models whose forward torch.fx cannot trace; their channels are excluded from pruning.

    Returns:
        :class:`ChannelGroups`: the groups in graph order.

    Raises:
        TypeError: ``model`` is not a module or ``example_inputs`` not tensors.
        ValueError: torch.fx cannot trace the model (the message names the module and how to proceed), or the
            model does not run on ``example_inputs``.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> groups = rlp.channel_groups(rlp.models.BasicCNN(), torch.randn(1, 3, 32, 32))
        >>> [(g.name, g.size) for g in groups]
        [('features.0', 64), ('features.4', 128), ('features.8', 256), ('features.12', 512)]
        >>> groups[3].consumers[0].name, groups[3].consumers[0].expand
        ('fc', 16)
    """
    if isinstance(model, nn.Module):
        key = _structure(model, as_input_tuple(example_inputs, "channel_groups", model), leaf_modules)
        cached = _TRACED.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
    gm = trace(model, example_inputs, leaf_modules, caller="channel_groups")
    groups = _GroupBuilder(gm, model).run()
    _TRACED[model] = (key, groups)
    return groups
