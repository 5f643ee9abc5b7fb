r"""Parameters, MACs and filters of a dense or channel-masked model.

A model pruned with channel masks (:func:`torch_rlprune.apply_channel_masks`, :func:`torch_rlprune.global_structured`)
is counted as the smaller dense model that physically removing the masked channels would give: a pruned channel
takes with it its producers' rows and biases, its tied depthwise filters, its norm entries, and the matching input
columns of every consumer (``expand`` features per channel for a ``Linear`` after ``flatten``). Which channels are
pruned is read per channel group with :func:`torch_rlprune.alive_channels`; masks that do not remove whole channels
(unstructured ``torch.nn.utils.prune`` masks) do not change the counts.

Amount semantics:

* **filters** are the output channels of convolutions (``Conv1d``, ``Conv2d``, ``Conv3d``). Per layer, the same
  columns also report the output features of ``Linear`` layers and the channels of norms, but model totals and
  :attr:`ModelStats.sparsity` count convolutions only.
* **MACs** (multiply-accumulates) are per example: the count for one forward pass on ``example_inputs``, divided
  by its batch size (the first dimension of its first tensor). Only convolutions, ``Linear`` layers and
  batch/instance/group/layer norms are counted: a convolution or ``Linear`` costs one MAC per weight entry and
  output position, a norm one per output element, an attention (``MultiheadAttention``, Swin's window attention)
  one per entry of its query, key, value and output projections and token of the sequence each one reads (not
  the products of queries, keys and values).
  Biases, activations, pooling and elementwise ops are free.
* **params** are all parameters of the model, each tensor once even when shared between modules.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ._inputs import ExampleInputs, as_input_tuple
from ._state import preserved_state
from .groups import CONV_TYPES, ChannelGroup, channel_groups, check_groups_of
from .layers import LAYER_TYPES, channel_dims, children_read, layer_of, weight_and_bias
from .masks import KeepVectors, keep_vectors

__all__ = ["LayerStats", "ModelStats", "KeepSetCounter", "model_stats", "count_params", "count_macs",
           "filters_per_layer"]




@dataclass
class LayerStats:
    r"""Counts for one module of a model: dense, and kept once masked channels are removed.

    Args:
        name (str): qualified name of the module in the model (``""`` for the model itself).
        kind (str): class name of the module, e.g. ``"Conv2d"``.
        filters (int or None): output channels of a convolution, output features of a ``Linear``, channels of a
            batch, instance or group norm; ``None`` for other modules.
        filters_kept (int or None): how many of ``filters`` remain.
        params (int): parameters the module owns (shared tensors are counted at their first owner only).
        params_kept (int): how many of ``params`` remain.
        macs (int): multiply-accumulates per example, summed over every call of the module in the forward pass.
        macs_kept (int): how many of ``macs`` remain.
        conv (bool): whether the module is a convolution, whose filters count towards the model's totals.
            Default: ``False``.

    Example:
        >>> from torch_rlprune.metrics import LayerStats
        >>> layer = LayerStats("conv", "Conv2d", 8, 6, 224, 168, 1800, 1350, conv=True)
        >>> layer.params - layer.params_kept
        56
    """

    name: str
    kind: str
    filters: int | None
    filters_kept: int | None
    params: int
    params_kept: int
    macs: int
    macs_kept: int
    conv: bool = False


@dataclass
class ModelStats:
    r"""Per-layer counts of a model, with totals; ``str()`` gives :meth:`table`.

    Args:
        layers (list of LayerStats): one entry per module that owns parameters or is counted for MACs, in
            ``model.named_modules()`` order.

    Example:
        >>> from torch_rlprune.metrics import LayerStats, ModelStats
        >>> stats = ModelStats([
        ...     LayerStats("conv", "Conv2d", 8, 6, 224, 168, 1800, 1350, conv=True),
        ...     LayerStats("fc", "Linear", 10, 10, 90, 70, 80, 60),
        ... ])
        >>> stats.params, stats.params_kept, stats.filters, stats.filters_kept, stats.sparsity
        (314, 238, 8, 6, 0.25)
    """

    layers: list[LayerStats]

    @property
    def params(self) -> int:
        """Parameters of the dense model."""
        return sum(layer.params for layer in self.layers)

    @property
    def params_kept(self) -> int:
        """Parameters left once masked channels are removed."""
        return sum(layer.params_kept for layer in self.layers)

    @property
    def macs(self) -> int:
        """MACs per example of the dense model."""
        return sum(layer.macs for layer in self.layers)

    @property
    def macs_kept(self) -> int:
        """MACs per example left once masked channels are removed."""
        return sum(layer.macs_kept for layer in self.layers)

    @property
    def filters(self) -> int:
        """Output channels of all convolutions."""
        return sum(layer.filters or 0 for layer in self.layers if layer.conv)

    @property
    def filters_kept(self) -> int:
        """Output channels of all convolutions left unmasked."""
        return sum(layer.filters_kept or 0 for layer in self.layers if layer.conv)

    @property
    def sparsity(self) -> float:
        """Fraction of convolution filters removed: ``1 - filters_kept / filters`` (0.0 for a model without any)."""
        return 1.0 - self.filters_kept / self.filters if self.filters else 0.0

    def table(self) -> str:
        r"""A fixed-width table of every layer's counts (kept / dense), with a totals row.

        Returns:
            The table as one string, lines separated by ``"\n"``.

        Example:
            >>> from torch_rlprune.metrics import LayerStats, ModelStats
            >>> print(ModelStats([LayerStats("conv", "Conv2d", 8, 6, 224, 168, 1800, 1350, conv=True)]).table())
            kept/dense per layer; filters = output channels of convolutions; MACs per example
            (Linear and norm rows show out features and channels as filters; the total counts convolutions only)
            layer  kind    filters   params         MACs
            conv   Conv2d      6/8  168/224  1,350/1,800
            total              6/8  168/224  1,350/1,800
            filter sparsity 25.0%
        """

        def pair(kept: int | None, dense: int | None) -> str:
            return "-" if dense is None else f"{kept:,}/{dense:,}"

        rows = [["layer", "kind", "filters", "params", "MACs"]]
        rows += [
            [
                layer.name or "(model)",
                layer.kind,
                pair(layer.filters_kept, layer.filters),
                pair(layer.params_kept, layer.params),
                pair(layer.macs_kept, layer.macs),
            ]
            for layer in self.layers
        ]
        rows.append([
            "total",
            "",
            pair(self.filters_kept, self.filters),
            pair(self.params_kept, self.params),
            pair(self.macs_kept, self.macs),
        ])
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "kept/dense per layer; filters = output channels of convolutions; MACs per example",
            "(Linear and norm rows show out features and channels as filters; the total counts convolutions only)",
        ]
        for row in rows:
            # Names left-aligned, counts right-aligned so that their digits line up.
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
            cells += [cell.rjust(width) for cell, width in zip(row[2:], widths[2:])]
            lines.append("  ".join(cells).rstrip())
        lines.append(f"filter sparsity {self.sparsity:.1%}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# --------------------------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------------------------


def _check_model(model: object, caller: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller}: model must be a torch.nn.Module, got {type(model).__name__}.")


def _tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module``'s parameter ``name``, read from ``<name>_orig`` where pruning replaced it by a computed tensor."""
    orig = getattr(module, name + "_orig", None)
    return orig if isinstance(orig, torch.Tensor) else getattr(module, name, None)


def _groups_of(
    model: nn.Module, example_inputs: ExampleInputs | None, groups: Sequence[ChannelGroup] | None, caller: str
) -> Sequence[ChannelGroup]:
    if groups is not None:
        return groups
    # A model without masks has nothing to remove, and tracing it would fail on models torch.fx cannot trace.
    if not any(name.endswith("_mask") for name, _ in model.named_buffers()):
        return ()
    if example_inputs is None:
        raise ValueError(
            f"{caller}: the model carries pruning masks, and finding which channels they remove needs its channel "
            "groups; pass example_inputs (e.g. torch.randn(1, 3, 32, 32)) or groups=channel_groups(model, inputs)."
        )
    return channel_groups(model, example_inputs)


def _keep_vectors(model: nn.Module, groups: Sequence[ChannelGroup], caller: str) -> KeepVectors:
    for group in groups:
        if not isinstance(group, ChannelGroup):
            raise TypeError(f"{caller}: groups must hold ChannelGroup objects, got {type(group).__name__}.")
    check_groups_of(model, groups, caller)
    return keep_vectors(groups)


def _kept_entries(module: nn.Module, shape: torch.Size, keep: KeepVectors) -> int:
    """Entries of a tensor of ``shape`` owned by ``module`` that survive removal along every kept dim."""
    return math.prod(
        int(keep[module, dim].sum()) if (module, dim) in keep and keep[module, dim].numel() == size else size
        for dim, size in enumerate(shape)
    )


def _batch_size(inputs: tuple[torch.Tensor, ...]) -> int:
    first = inputs[0]
    return int(first.shape[0]) if first.dim() > 0 and first.shape[0] > 0 else 1


def _output_width(module: nn.Module) -> int:
    """Output entries that make up one position: channels, features, or the normalised shape of a LayerNorm."""
    return layer_of(module).width(module)  # type: ignore[union-attr]


#: Per MAC-bearing module, the positions its calls produced: ``(outputs,)`` for a layer, ``(query, key, value)``
#: tokens for an attention, whose key and value projections run over their own sequences.
_Positions = dict[nn.Module, tuple[int, ...]]


def _add(positions: _Positions, module: nn.Module, counts: tuple[int, ...]) -> None:
    positions[module] = tuple(a + b for a, b in zip(positions.get(module, (0,) * len(counts)), counts))


def _tokens(tensor: Any) -> int:
    return tensor.numel() // tensor.shape[-1] if isinstance(tensor, torch.Tensor) and tensor.dim() else 0


def _output_positions(model: nn.Module, inputs: tuple[torch.Tensor, ...], caller: str) -> _Positions:
    """Run ``model`` once and count, per MAC-bearing module, the positions of all its calls."""
    positions: _Positions = {}

    def record(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: object) -> None:
        output = output[0] if isinstance(output, tuple) and output else output  # attention: (output, weights)
        if not isinstance(output, torch.Tensor):
            return
        if isinstance(module, nn.MultiheadAttention):
            given = [args[i] if len(args) > i else kwargs.get(key) for i, key in enumerate(("query", "key", "value"))]
            _add(positions, module, tuple(_tokens(x) for x in given))
        elif isinstance(module, LAYER_TYPES):
            _add(positions, module, (output.numel() // _output_width(module),))
        for name in children_read(module):  # applied by module's forward, once per token of its output
            _add(positions, module.get_submodule(name), (_tokens(output),))

    handles = [
        m.register_forward_hook(record, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, LAYER_TYPES) or children_read(m)
    ]
    try:
        with preserved_state(model, "eval"), torch.no_grad():
            model(*inputs)
    except Exception as exc:
        shapes = ", ".join(str(tuple(t.shape)) for t in inputs)
        raise ValueError(
            f"{caller}: the model does not run on example_inputs of shape {shapes} ({type(exc).__name__}: {exc}). "
            "Pass inputs the model accepts, on the model's device."
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
    return positions


def _own_params(model: nn.Module) -> Iterator[tuple[str, nn.Module, list[tuple[str, torch.Tensor]]]]:
    """Every module with its directly owned parameters, by base name (``weight`` for ``weight_orig``)."""
    seen: set[int] = set()
    for name, module in model.named_modules():
        params = []
        for pname, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            base = pname.removesuffix("_orig")
            params.append((base if base != pname and hasattr(module, base + "_mask") else pname, param))
        yield name, module, params


def _attention_macs(attention: nn.MultiheadAttention, keep: KeepVectors, tokens: tuple[int, ...]) -> tuple[int, int]:
    """MACs of an attention's query, key and value projections over their tokens, dense and kept: the groups cut
    whole heads (rows of each projection) and the channels read (columns, where key and value read the same
    width as the query)."""
    heads_kept = keep.get((attention, 0))
    read_kept = keep.get((attention, 1))
    embed = attention.embed_dim
    macs = kept = 0
    for i, (n, width) in enumerate(zip(tokens, (embed, attention.kdim, attention.vdim))):
        rows = embed if heads_kept is None else int(heads_kept[i * embed : (i + 1) * embed].sum())
        macs += n * embed * width
        kept += n * rows * (width if read_kept is None else int(read_kept.sum()))
    return macs, kept


def _layer_stats(
    model: nn.Module, keep: KeepVectors, positions: _Positions | None, batch_size: int
) -> list[LayerStats]:
    layers = []
    for name, module, params in _own_params(model):
        layer = layer_of(module)
        counted = layer is not None
        if not params and not counted:
            continue
        n_params = sum(p.numel() for _, p in params)
        n_kept = sum(
            _kept_entries(module, p.shape, keep) if channel_dims(module, base, p) else p.numel()
            for base, p in params
        )  # fmt: skip
        filters = filters_kept = None
        macs = macs_kept = 0
        calls = positions.get(module, (0,)) if positions is not None else (0,)
        if isinstance(module, nn.MultiheadAttention):
            macs, macs_kept = (total // batch_size for total in _attention_macs(module, keep, calls))
        elif counted:
            if isinstance(module, (*CONV_TYPES, nn.Linear)):
                weight = _tensor(module, weight_and_bias(module)[0])
                per_position, per_position_kept = weight.numel(), _kept_entries(module, weight.shape, keep)
            else:
                per_position = _output_width(module)
                per_position_kept = int(keep[module, 0].sum()) if (module, 0) in keep else per_position
            if layer.filters:  # type: ignore[union-attr]
                filters = _output_width(module)
                filters_kept = int(keep[module, 0].sum()) if (module, 0) in keep else filters
            macs = calls[0] * per_position // batch_size
            macs_kept = calls[0] * per_position_kept // batch_size
        layers.append(
            LayerStats(
                name,
                type(module).__name__,
                filters,
                filters_kept,
                n_params,
                n_kept,
                macs,
                macs_kept,
                conv=isinstance(module, CONV_TYPES),
            )
        )
    return layers


class KeepSetCounter:
    r"""Counts of the network that keeps some channels of ``model``, for many keep-sets, without re-running it.

    The model runs once here to count every layer's output positions; each call then counts parameters, MACs per
    example and filters of the network that keeps the channels of its keep vectors (as
    :func:`model_stats` counts a masked model), which is what a search needs for every candidate of a budget.

    Args:
        model (torch.nn.Module): the model.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts.
        caller (str): the function named in error messages. Default: ``"KeepSetCounter"``.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> from torch_rlprune.masks import keep_vectors
        >>> model, x = rlp.models.BasicCNN(), torch.randn(1, 3, 32, 32)
        >>> groups = rlp.channel_groups(model, x)
        >>> counter = KeepSetCounter(model, x)
        >>> half = counter(keep_vectors(groups, [torch.arange(g.size) % 2 == 0 for g in groups]))
        >>> half.filters_kept, half.params_kept < half.params // 3
        (480, True)
    """

    def __init__(self, model: nn.Module, example_inputs: ExampleInputs, caller: str = "KeepSetCounter") -> None:
        _check_model(model, caller)
        inputs = as_input_tuple(example_inputs, caller, model)
        self.model = model
        self._positions = _output_positions(model, inputs, caller)
        self._batch_size = _batch_size(inputs)

    def __call__(self, keep: KeepVectors) -> ModelStats:
        """The counts of the network that keeps ``keep``.

        Args:
            keep (KeepVectors): keep vectors, from :func:`torch_rlprune.masks.keep_vectors`.

        Returns:
            ModelStats: the counts, dense and kept.
        """
        return ModelStats(_layer_stats(self.model, keep, self._positions, self._batch_size))


def _stats(
    model: nn.Module,
    example_inputs: ExampleInputs | None,
    groups: Sequence[ChannelGroup] | None,
    caller: str,
    with_macs: bool,
) -> ModelStats:
    _check_model(model, caller)
    # Counted before tracing so that inputs of the wrong shape are reported by this function, in its own words.
    counter = KeepSetCounter(model, example_inputs, caller) if with_macs else None
    keep = _keep_vectors(model, _groups_of(model, example_inputs, groups, caller), caller)
    return counter(keep) if counter is not None else ModelStats(_layer_stats(model, keep, None, 1))


def model_stats(
    model: nn.Module, example_inputs: ExampleInputs, groups: Sequence[ChannelGroup] | None = None
) -> ModelStats:
    r"""Count the parameters, MACs per example and filters of ``model``, dense and with masked channels removed.

    The model runs once on ``example_inputs`` (in eval mode, without gradients, with forward hooks that are
    removed afterwards) to learn every layer's output size; its modes, batch-norm statistics and the RNG are left
    as they were. Masked channels are read from the channel groups with :func:`torch_rlprune.alive_channels` and
    count as removed from every member of their group, as if the model had been physically slimmed.

    Args:
        model (torch.nn.Module): the model, dense or masked with :func:`torch_rlprune.apply_channel_masks`.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts; MACs are divided by
            their batch size (the first dimension of the first tensor).
        groups (sequence of ChannelGroup, optional): the model's channel groups. Default: ``None``, which traces
            them with :func:`torch_rlprune.channel_groups` if the model has any ``*_mask`` buffer, and uses none
            otherwise (so a dense model need not be traceable by :mod:`torch.fx`).

    Returns:
        :class:`ModelStats`: per-layer counts and totals.

    Raises:
        TypeError: ``model`` is not a module, ``example_inputs`` not tensors, or ``groups`` not channel groups.
        ValueError: the model does not run on ``example_inputs`` (the message gives their shapes), cannot be
            traced, or ``groups`` belong to another model.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> from torch_rlprune.metrics import model_stats
        >>> model = rlp.models.BasicCNN()
        >>> inputs = torch.randn(1, 3, 32, 32)
        >>> stats = model_stats(model, inputs)
        >>> stats.params, stats.filters, stats.macs
        (1634826, 960, 42475392)
        >>> groups = rlp.channel_groups(model, inputs)
        >>> keep = [torch.arange(g.size) % 2 == 0 for g in groups]  # drop every other channel of every group
        >>> rlp.apply_channel_masks(groups, keep)
        >>> stats = model_stats(model, inputs, groups)
        >>> stats.filters_kept, stats.sparsity
        (480, 0.5)
        >>> stats.params_kept, stats.macs_kept
        (430346, 10749888)
    """
    return _stats(model, example_inputs, groups, "model_stats", with_macs=True)


def count_params(
    model: nn.Module, example_inputs: ExampleInputs | None = None, groups: Sequence[ChannelGroup] | None = None
) -> int:
    r"""Count the parameters of ``model`` left once its masked channels are removed.

    Every parameter tensor counts once, even when shared between modules. No forward pass is run.

    Args:
        model (torch.nn.Module): the model, dense or masked.
        example_inputs (torch.Tensor or tuple of torch.Tensor, optional): inputs the model accepts; needed only
            to trace the channel groups of a masked model when ``groups`` is not given. Default: ``None``.
        groups (sequence of ChannelGroup, optional): the model's channel groups. Default: ``None`` (as in
            :func:`model_stats`).

    Returns:
        int: the number of parameters kept (all of them for a dense model).

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: the model is masked but neither ``example_inputs`` nor ``groups`` is given.

    Example:
        >>> import torch
        >>> from torch_rlprune.metrics import count_params
        >>> count_params(torch.nn.Linear(4, 3))
        15
    """
    return _stats(model, example_inputs, groups, "count_params", with_macs=False).params_kept


def count_macs(model: nn.Module, example_inputs: ExampleInputs, groups: Sequence[ChannelGroup] | None = None) -> int:
    r"""Count the multiply-accumulates per example of ``model`` left once its masked channels are removed.

    Args:
        model (torch.nn.Module): the model, dense or masked.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts; the count is divided by
            their batch size.
        groups (sequence of ChannelGroup, optional): the model's channel groups. Default: ``None`` (as in
            :func:`model_stats`).

    Returns:
        int: MACs per example of convolutions, ``Linear`` layers and norms.

    Raises:
        TypeError: ``model`` is not a module or ``example_inputs`` not tensors.
        ValueError: as for :func:`model_stats`.

    Example:
        >>> import torch
        >>> from torch_rlprune.metrics import count_macs
        >>> count_macs(torch.nn.Conv2d(3, 8, 3), torch.randn(2, 3, 10, 10))  # 8 * 3 * 3 * 3 weights x 8 * 8 positions
        13824
    """
    return _stats(model, example_inputs, groups, "count_macs", with_macs=True).macs_kept


def filters_per_layer(
    model: nn.Module, example_inputs: ExampleInputs | None = None, groups: Sequence[ChannelGroup] | None = None
) -> dict[str, tuple[int, int]]:
    r"""Kept and dense output channels of every convolution of ``model``.

    Args:
        model (torch.nn.Module): the model, dense or masked.
        example_inputs (torch.Tensor or tuple of torch.Tensor, optional): inputs the model accepts; needed only
            to trace the channel groups of a masked model when ``groups`` is not given. Default: ``None``.
        groups (sequence of ChannelGroup, optional): the model's channel groups. Default: ``None`` (as in
            :func:`model_stats`).

    Returns:
        dict[str, tuple[int, int]]: convolution name -> ``(kept, dense)`` filter counts, in module order.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: the model is masked but neither ``example_inputs`` nor ``groups`` is given.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> from torch_rlprune.metrics import filters_per_layer
        >>> model = rlp.models.BasicCNN()
        >>> inputs = torch.randn(1, 3, 32, 32)
        >>> groups = rlp.channel_groups(model, inputs)
        >>> rlp.apply_channel_masks(groups[:1], [torch.arange(64) < 40])
        >>> filters_per_layer(model, inputs)
        {'features.0': (40, 64), 'features.4': (128, 128), 'features.8': (256, 256), 'features.12': (512, 512)}
    """
    stats = _stats(model, example_inputs, groups, "filters_per_layer", with_macs=False)
    # Both counts are set for every convolution.
    return {layer.name: (layer.filters_kept, layer.filters) for layer in stats.layers if layer.conv}  # type: ignore
