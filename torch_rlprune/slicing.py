"""Physically removing pruned channels: from a masked model to a smaller dense one.

The channel groups say which tensors a channel touches; the masks say which channels are gone. Slicing keeps,
for every ``(module, dim)`` that a group indexes, the entries of the surviving channels: producer and tied conv
rows and biases, norm weights, biases and running statistics, and consumer input columns (``expand`` features
per channel after ``flatten``). The attributes that carry a channel count (``out_channels``, ``in_channels``,
``groups`` of a depthwise conv, ``num_features``, ``in_features``) follow.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune
from torch.utils._pytree import tree_flatten

from ._inputs import ExampleInputs, as_input_tuple
from ._state import preserved_state, pruning_hooks, pruning_methods
from .groups import CONV_TYPES, ChannelGroup, ChannelGroups, Member, Role, channel_groups, size_attributes_of
from .layers import channel_dims, children_read, layer_of, weight_and_bias
from .masks import KeepVectors, keep_vectors, masked_tensors

__all__ = ["slim", "check_consistent", "sliced_tensors", "copy_pruned"]


def _rows_alive(
    module: nn.Module, name: str, member_rows: torch.Tensor, size: int, seen: dict[tuple[int, str], torch.Tensor]
) -> torch.Tensor | None:
    """Which of a group's channels the mask ``<name>_mask`` of ``module`` keeps (``None`` without a mask).

    Each mask is reduced to one flag per row once (``seen``), since several groups may index one module.
    """
    mask = getattr(module, name + "_mask", None)
    if mask is None:
        return None
    key = (id(module), name)
    if key not in seen:
        seen[key] = mask.reshape(mask.shape[0], -1).any(dim=1).cpu()
    return seen[key][member_rows].reshape(size, -1).any(dim=1)


def check_consistent(groups: Sequence[ChannelGroup]) -> list[torch.Tensor]:
    """Check that the masks inside each group agree, and return each group's keep mask.

    The weights of a group's producers and tied convs must all prune the same channels (a member without a mask
    prunes none). Biases and norms may keep a pruned channel (``slim`` then folds what it outputs into the
    consumers), but may not prune a channel that the weights keep.

    Args:
        groups (sequence of ChannelGroup): the groups to check.

    Returns:
        list of torch.Tensor: one boolean keep mask per group, the channels its filters' weights keep.

    Raises:
        ValueError: the members of a group disagree; the message names the group and the member.

    Example:
        >>> import torch
        >>> import torch.nn.utils.prune as prune
        >>> import torch_rlprune as rlp
        >>> model = rlp.models.BasicCNN()
        >>> groups = rlp.channel_groups(model, torch.randn(1, 3, 32, 32))
        >>> _ = prune.ln_structured(model.features[0], "weight", amount=0.5, n=1, dim=0)
        >>> [int(k.sum()) for k in check_consistent(groups)]
        [32, 128, 256, 512]
        >>> _ = prune.l1_unstructured(model.features[3], "weight", amount=48)
        >>> check_consistent(groups)
        Traceback (most recent call last):
        ...
        ValueError: masks disagree inside channel group 'features.0': features.3.weight prunes channels ...
    """
    keeps = []
    seen: dict[tuple[int, str], torch.Tensor] = {}
    for group in groups:
        everything = torch.arange(group.size)
        alive = torch.ones(group.size, dtype=torch.bool)
        for member in group.filters:
            weight = weight_and_bias(member.module)[0]
            rows = _rows_alive(member.module, weight, member.indices(everything), group.size, seen)
            alive &= True if rows is None else rows
        for member in group.members:
            if member.role is Role.CONSUMER:  # a column mask is sliced with its column: never inexact
                continue
            for name in masked_tensors(member):
                rows = _rows_alive(member.module, name, member.indices(everything), group.size, seen)
                if rows is None:
                    rows = torch.ones(group.size, dtype=torch.bool)
                must_match = name == weight_and_bias(member.module)[0] and member.role is not Role.NORM
                wrong = (rows != alive) if must_match else (alive & ~rows)
                if wrong.any():
                    what = "keeps" if must_match and rows[wrong].all() else "prunes"
                    raise ValueError(
                        f"masks disagree inside channel group {group.name!r}: {member.name}.{name} {what} channels "
                        f"{wrong.nonzero().reshape(-1)[:5].tolist()} unlike the rest of the group"
                        + (" (its output is cut into pieces pruned alike, channel c of each together)"
                           if sum(m.module is member.module for m in group.filters) > 1 else "")  # fmt: skip
                        + ". Coupled convs, tied depthwise convs and their norms must be pruned together: use "
                        "torch_rlprune.global_structured or apply_channel_masks rather than pruning one layer."
                    )
        keeps.append(alive)
    return keeps


def _slice(tensor: torch.Tensor, dim: int, keep: torch.Tensor) -> torch.Tensor:
    return tensor.index_select(dim, keep.nonzero().reshape(-1).to(tensor.device))


def sliced_tensors(module: nn.Module, vectors: KeepVectors) -> Iterator[tuple[str, torch.Tensor]]:
    """The parameters and buffers of ``module`` that ``vectors`` cut, each sliced to its surviving entries.

    ``weight`` loses rows (dim 0) and, for a consumer, columns (dim 1); ``bias`` and a norm's running statistics
    lose entries (:func:`torch_rlprune.layers.channel_dims` says which dims of which tensors). The ``_orig`` and
    ``_mask`` tensors of a pruned module are sliced like the tensor they stand for.

    Args:
        module (torch.nn.Module): a member of some channel groups.
        vectors (KeepVectors): from :func:`torch_rlprune.masks.keep_vectors`.

    Yields:
        ``(name, tensor)`` for every tensor of ``module`` that loses entries, named as in
        ``module.named_parameters(recurse=False)`` and ``module.named_buffers(recurse=False)``.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> from torch_rlprune.masks import keep_vectors
        >>> model = rlp.models.BasicCNN()
        >>> groups = rlp.channel_groups(model, torch.randn(1, 3, 32, 32))
        >>> vectors = keep_vectors(groups[:1], [torch.arange(64) < 10])
        >>> {name: tuple(t.shape) for name, t in sliced_tensors(model.features[4], vectors)}
        {'weight': (128, 10, 3, 3)}
    """
    for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
        sliced = tensor
        for dim in channel_dims(module, name, tensor):
            keep = vectors.get((module, dim))
            if keep is not None and keep.numel() == sliced.shape[dim]:
                sliced = _slice(sliced, dim, keep)
        if sliced is not tensor:
            yield name, sliced


def copy_pruned(model: nn.Module, *, for_removal: bool = False) -> nn.Module:
    """``copy.deepcopy`` that also works on pruned models.

    A pruning hook leaves ``<name>`` as a tensor computed from ``<name>_orig``, which deepcopy refuses while it
    is attached to autograd; it is recomputed at every forward, so the copy may hold a detached one. With
    ``for_removal=True`` the copy shares ``<name>_orig``, ``<name>_mask``, the computed tensor and the pruning
    hooks (with the masks they hold) with ``model`` instead of copying them, for a caller that replaces them at once
    (as :func:`slim` does, writing to none of them).

    Args:
        model (torch.nn.Module): the model, pruned or not.
        for_removal (bool): share the pruned tensors and hooks instead of copying them. Default: ``False``.

    Returns:
        torch.nn.Module: the copy.

    Example:
        >>> import torch
        >>> import torch.nn.utils.prune as prune
        >>> conv = prune.ln_structured(torch.nn.Conv2d(3, 4, 3), "weight", amount=0.5, n=1, dim=0)
        >>> twin = copy_pruned(conv)
        >>> torch.equal(twin.weight_mask, conv.weight_mask), twin.weight_mask is conv.weight_mask
        (True, False)
    """
    computed = [(m, name, getattr(m, name)) for m, name in pruning_hooks(model)]
    try:
        for module, name, value in computed:
            setattr(module, name, value.detach())
        shared = [getattr(m, name + s) for m, name in pruning_hooks(model) for s in ("", "_orig", "_mask")]
        shared += [hook for _, hook in pruning_methods(model)]
        return copy.deepcopy(model, {id(t): t for t in shared} if for_removal else None)
    finally:
        for module, name, value in computed:
            setattr(module, name, value)


#: A consumer that reads pruned channels of a group: ``(group, consumer member, the pruned channels)``.
_Reader = tuple[ChannelGroup, Member, torch.Tensor]


def _unmasked_readers(groups: Sequence[ChannelGroup], keeps: Sequence[torch.Tensor]) -> list[_Reader]:
    """The consumers whose columns for pruned channels are not all masked (after ``prune.ln_structured`` on a conv
    alone; :func:`~torch_rlprune.apply_channel_masks` masks them): what those channels carry may need folding."""
    readers = []
    for group, kept in zip(groups, keeps):
        channels = (~kept).nonzero().reshape(-1)
        for member in group.consumers if len(channels) else ():
            module = member.module
            name = weight_and_bias(module)[0]
            weight, mask = getattr(module, name + "_orig", getattr(module, name)), getattr(module, name + "_mask", None)
            idx = member.indices(channels).to(weight.device)
            kept_by_mask = None if mask is None else mask.index_select(1, idx)
            if kept_by_mask is not None and not kept_by_mask.any():  # the usual case, and the cheap check
                continue
            if (weight.index_select(1, idx) * (1 if kept_by_mask is None else kept_by_mask)).any():
                readers.append((group, member, channels))
    return readers


def _run_masked(
    model: nn.Module, inputs: tuple[torch.Tensor, ...], consumers: set[nn.Module]
) -> tuple[Any, dict[nn.Module, torch.Tensor]]:
    """The masked model's output on ``inputs`` in eval mode, and what each of ``consumers`` received: one forward
    pass serves both the folding of constants and the verification."""
    seen: dict[nn.Module, torch.Tensor] = {}
    handles = [m.register_forward_pre_hook(lambda mod, args: seen.__setitem__(mod, args[0])) for m in consumers]
    try:
        with preserved_state(model, "eval"), torch.no_grad():
            output = model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    return output, seen


def _fold_constants(seen: dict[nn.Module, torch.Tensor], readers: list[_Reader], target: dict[str, nn.Module]) -> None:
    """Move what pruned channels still feed their consumers into the consumers' biases.

    A pruned filter whose bias or following norm shift was left unmasked (as after ``prune.ln_structured`` on a
    conv alone) outputs a constant instead of zero. Removing it is exact only if that constant is folded into the
    consumer's bias, which is possible when the consumer sees it at every position: a ``Linear``, or a conv
    without padding.
    """
    for group, member, channels in readers:
        if member.module not in seen:
            parent, _, child = member.name.rpartition(".")
            if parent in target and child in children_read(target[parent]):
                raise ValueError(
                    f"slim: pruned channels of group {group.name!r} still reach {member.name!r}, whose tensors "
                    f"{parent!r} reads without calling it, so slim cannot see what they carry there. Mask the "
                    "group completely, as torch_rlprune.global_structured and apply_channel_masks do."
                )
            continue  # not called by the forward pass at all (an auxiliary head in eval mode)
        idx = member.indices(channels).to(seen[member.module].device)
        along = 1 if isinstance(member.module, CONV_TYPES) else -1  # a Linear or an attention reads the last dim
        values = seen[member.module].index_select(along, idx).movedim(along, 0).reshape(idx.numel(), -1)
        if not values.any():
            continue
        constant = values[:, 0]
        scale = values.abs().max()
        if (values - constant[:, None]).abs().max() > 1e-6 * scale:
            raise ValueError(
                f"slim: pruned channels of group {group.name!r} still carry varying values into "
                f"{member.name!r}, so removing them would change the output; mask them completely (weights "
                "of every coupled conv) with torch_rlprune.global_structured or apply_channel_masks."
            )
        module = target[member.name]
        if not isinstance(module, (nn.Linear, *CONV_TYPES)):  # an attention: its query, key and value may differ
            raise ValueError(
                f"slim: pruned channels of group {group.name!r} feed the constant {constant[0].item():.4g} (and "
                f"others) into {member.name!r} ({type(module).__name__}), which slim cannot fold a constant into. "
                "Mask their biases and norms too (torch_rlprune.global_structured and apply_channel_masks do)."
            )
        padding = getattr(module, "padding", "valid")
        if padding == "same" or not isinstance(padding, str) and any(padding):
            raise ValueError(
                f"slim: pruned channels of group {group.name!r} feed the constant {constant[0].item():.4g} "
                f"(and others) into {member.name!r}, whose zero padding makes removing them inexact. Mask "
                "their biases and norms too (torch_rlprune.global_structured and apply_channel_masks do)."
            )
        weight = module.weight.detach().index_select(1, idx.to(module.weight.device))
        shift = (weight * constant.to(weight).view(1, -1, *([1] * (weight.dim() - 2)))).flatten(1).sum(1)
        if module.bias is None:
            module.bias = nn.Parameter(torch.zeros_like(shift), requires_grad=module.weight.requires_grad)
        with torch.no_grad():
            module.bias.add_(shift)


def _unmask(model: nn.Module) -> None:
    """``prune.remove`` for every pruned tensor of ``model``, into new tensors.

    ``prune.remove`` writes the masked values into the ``<name>_orig`` parameter object; here that object may be
    shared with the masked model (see :func:`copy_pruned`), so the result is a new parameter instead.
    """
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, prune.BasePruningMethod):
                name = hook._tensor_name
                orig, mask = module._parameters.pop(name + "_orig"), module._buffers.pop(name + "_mask")
                del module._forward_pre_hooks[key]
                module.__dict__.pop(name, None)
                module._parameters[name] = nn.Parameter(
                    orig.detach() * mask.to(orig.dtype), requires_grad=orig.requires_grad
                )


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Put ``value`` (a fresh tensor: an ``index_select`` of the old one) in the place of ``name``."""
    if name in module._parameters:
        old = module._parameters[name]
        module._parameters[name] = nn.Parameter(value.detach(), requires_grad=old.requires_grad)
    else:
        module._buffers[name] = value.detach()


def _update_counts(module: nn.Module, tied: bool) -> None:
    """Make the attributes that carry channel counts agree with the sliced tensors."""
    layer = layer_of(module)
    if layer is not None:
        layer.follow(module, tied)


#: Attribute of every sliced module: ``{dim: (size before any slicing, kept indices along dim)}``. Rewinding a
#: sliced model (:func:`torch_rlprune.lottery.rewind`) slices a dense snapshot with it.
KEPT_ATTR = "_rlprune_kept"


def _record_kept(module: nn.Module, dim: int, keep: torch.Tensor) -> None:
    kept = keep.nonzero().reshape(-1).cpu()
    record = getattr(module, KEPT_ATTR, {})
    if dim in record:  # sliced before: keep indices into the original, not into the previous slice
        size, previous = record[dim]
        kept = previous[kept]
    else:
        size = keep.numel()
    # A new dict, so that a model copied before this slicing keeps its own record.
    setattr(module, KEPT_ATTR, {**record, dim: (size, kept)})


def apply_slices(vectors: KeepVectors, tied: set[nn.Module]) -> None:
    """Slice every module of ``vectors`` in place to its surviving entries and update its channel counts.

    Every sliced module records, per sliced dim, its size before any slicing and the indices it kept (see
    ``KEPT_ATTR``); slicing again composes the records.

    Args:
        vectors (KeepVectors): keep vectors keyed by the modules to slice.
        tied (set of torch.nn.Module): the depthwise convs among them, whose ``groups`` follow the channel count.
    """
    with torch.no_grad():
        for module in {m for m, _ in vectors}:
            for name, value in list(sliced_tensors(module, vectors)):
                _set_tensor(module, name, value)
            _update_counts(module, module in tied)
        for (module, dim), keep in vectors.items():
            _record_kept(module, dim, keep)


def _tensors_of(output: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)]


def _first_divergence(
    masked: nn.Module, sliced: nn.Module, inputs: tuple[torch.Tensor, ...], out_keep: dict[str, torch.Tensor],
    atol: float, rtol: float,
) -> str:
    outputs: list[dict[str, Any]] = [{}, {}]
    handles = []
    for record, model in zip(outputs, (masked, sliced)):
        for name, module in model.named_modules():
            if name:
                handles.append(module.register_forward_hook(
                    lambda mod, args, out, name=name, record=record: record.setdefault(name, out)))  # fmt: skip
    try:
        for model in (masked, sliced):
            with preserved_state(model, "eval"), torch.no_grad():
                model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    for name, a in outputs[0].items():
        b = outputs[1].get(name)
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            continue
        if a.shape != b.shape and name in out_keep and a.dim() > 1 and a.shape[1] == out_keep[name].numel():
            a = _slice(a, 1, out_keep[name])
        if a.shape == b.shape and not torch.allclose(a, b, atol=atol, rtol=rtol):
            return f"'{name}' ({type(dict(masked.named_modules())[name]).__name__})"
    return "the model's own forward (no submodule output differs)"


def _verify(
    masked: nn.Module, sliced: nn.Module, inputs: tuple[torch.Tensor, ...], masked_output: Any,
    out_keep: dict[str, torch.Tensor], atol: float, rtol: float,
) -> None:
    with preserved_state(sliced, "eval"), torch.no_grad():
        expected, got = _tensors_of(masked_output), _tensors_of(sliced(*inputs))
    shapes_match = len(expected) == len(got) and all(a.shape == b.shape for a, b in zip(expected, got))
    if shapes_match and all(torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(expected, got)):
        return
    if shapes_match and _agree_in_double(masked, sliced, inputs, atol, rtol):
        return
    gap = max(((a - b).abs().max().item() for a, b in zip(expected, got)), default=float("nan")) if shapes_match else None
    where = _first_divergence(masked, sliced, inputs, out_keep, atol, rtol)
    raise ValueError(
        "slim: the sliced model does not compute what the masked model computes "
        + (f"(largest difference {gap:.3g}, atol={atol}, rtol={rtol})" if gap is not None else "(output shapes differ)")
        + f"; they first part at {where}. Please report this model; pass verify=False to skip the check."
    )


def _agree_in_double(
    masked: nn.Module, sliced: nn.Module, inputs: tuple[torch.Tensor, ...], atol: float, rtol: float
) -> bool:
    """Whether the two models agree when both compute in float64, for a float32 model that they part in.

    A trained network can amplify float32 rounding a hundredfold per layer: a batch norm over a channel that never
    fires has a running variance near 0 and scales by up to ``1/sqrt(eps)``. The sliced model sums over fewer
    channels, so its rounding differs, and after a few such layers the two part by more than any tolerance that
    would still catch a wrong slice. In float64 that rounding is ~1e-9 times smaller and only a real difference
    remains.
    """
    tensors = [t for t in (*masked.parameters(), *masked.buffers()) if t.is_floating_point()]
    if not tensors or any(t.dtype == torch.float64 for t in tensors):
        return False
    wide_masked, wide_sliced = copy_pruned(masked).double(), copy.deepcopy(sliced).double()
    wide = tuple(t.double() if t.is_floating_point() else t for t in inputs)
    with preserved_state(wide_masked, "eval"), preserved_state(wide_sliced, "eval"), torch.no_grad():
        expected, got = _tensors_of(wide_masked(*wide)), _tensors_of(wide_sliced(*wide))
    return all(torch.allclose(a, b, atol=atol, rtol=rtol) for a, b in zip(expected, got))


def _adopt(model: nn.Module, result: nn.Module) -> None:
    """Give every module of ``model`` the state of its counterpart in ``result``, keeping the module objects."""
    pairs = list(zip(model.modules(), result.modules()))
    original = {id(r): m for m, r in pairs}
    for module, counterpart in pairs:
        children = {k: None if c is None else original[id(c)] for k, c in counterpart._modules.items()}
        # Clear first: attributes that pruning hooks set (the computed ``weight``) must not shadow the parameters.
        module.__dict__.clear()
        module.__dict__.update(counterpart.__dict__)
        module._modules = children


def slim(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    inplace: bool = False,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    groups: ChannelGroups | None = None,
) -> nn.Module:
    r"""Physically remove the pruned channels of a masked model, giving a smaller dense model.

    Every pruned channel of every channel group (see :func:`torch_rlprune.channel_groups`) leaves the model:
    the producer convs' output channels and biases, the tied depthwise convs' filters (their ``groups`` follow),
    the norms' weights, biases and running statistics, and the consumers' input channels (for a ``Linear`` after
    ``flatten``, the spatial positions of each channel). Pruning masks and hooks are made permanent and removed
    (as :func:`torch.nn.utils.prune.remove` does); parameters are fresh leaves with the original ``dtype``,
    device and ``requires_grad``. Masks on convs that no group can slice (for example the last conv before the
    output) stay as zeros in the dense weights.

    Masks from :func:`torch_rlprune.global_structured` or :func:`torch_rlprune.apply_channel_masks` also cover the
    consumers' columns, so nothing a pruned channel carries reaches the rest of the network. Masks made layer by
    layer (``prune.ln_structured`` on a conv alone) leave the bias or a norm's shift, and the pruned channel then
    outputs a constant, which is folded into the consumers' biases when that is exact (a ``Linear``, or a conv
    without padding); otherwise ``slim`` refuses with an explanation.

    With ``verify=True`` (the default) both models run on ``example_inputs`` in eval mode and ``slim`` raises if
    their outputs differ by more than the tolerance, naming the first submodule where they part.

    Every sliced module remembers which of its original channels it kept, so that
    :func:`torch_rlprune.lottery.rewind` can load a snapshot of the dense model into the sliced one.

    Args:
        model (torch.nn.Module): the masked model. A model without masks is returned as an equal copy (or as
            itself with ``inplace=True``).
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts, used to trace it and to
            verify the result.
        inplace (bool): modify ``model`` itself instead of a copy; it is changed only once the result has been
            built and verified. Default: ``False``.
        verify (bool): compare the outputs of the sliced and the masked model. Default: ``True``.
        atol (float): absolute tolerance of the comparison. Default: ``1e-4``.
        rtol (float): relative tolerance of the comparison. Default: ``1e-4``.
        groups (ChannelGroups, optional): channel groups already computed for ``model``; saves a trace.

    Returns:
        torch.nn.Module: the sliced model (``model`` itself when ``inplace=True``).

    Raises:
        TypeError: ``model`` is not a module or ``example_inputs`` not tensors.
        ValueError: masks that disagree inside a coupled group (the message names the group), inputs of the
            wrong shape, a model torch.fx cannot trace, or a sliced model that does not match the masked one.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> import torch.nn.utils.prune as prune
        >>> import torch_rlprune as rlp
        >>> model = rlp.models.BasicCNN()
        >>> x = torch.randn(1, 3, 32, 32)
        >>> convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
        >>> rlp.global_structured(convs, prune.LnStructured, n=1, amount=0.7, model=model, example_inputs=x)
        >>> small = rlp.slim(model, x)
        >>> sum(m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d))
        288
        >>> small.fc.in_features == 16 * small.features[12].out_channels
        True
        >>> prune.is_pruned(small)
        False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"slim: model must be a torch.nn.Module, got {type(model).__name__}.")
    inputs = as_input_tuple(example_inputs, "slim", model)
    if not prune.is_pruned(model):
        return model if inplace else copy_pruned(model)
    if groups is None:
        groups = channel_groups(model, inputs)
    keeps = check_consistent(groups)

    readers = _unmasked_readers(groups, keeps)
    consumers = {member.module for _, member, _ in readers}
    masked_output, seen = _run_masked(model, inputs, consumers) if verify or consumers else (None, {})

    result = copy_pruned(model, for_removal=True)
    target = dict(result.named_modules())
    _unmask(result)
    _fold_constants(seen, readers, target)

    name_of = {id(m): n for n, m in model.named_modules()}
    kept = keep_vectors(groups, keeps)
    vectors = {(target[name_of[id(m)]], dim): v for (m, dim), v in kept.items() if not v.all()}
    tied = {target[m.name] for g in groups for m in g.tied}
    apply_slices(vectors, tied)
    by_group = {id(g): k for g, k in zip(groups, keeps)}
    for size in size_attributes_of(groups, model, "slim"):  # split sizes and bounds the forward reads
        setattr(target[name_of[id(size.module)]], size.attribute, size.value(by_group))

    if verify:
        out_keep = {name_of[id(m)]: v for (m, dim), v in kept.items() if dim == 0}
        _verify(model, result, inputs, masked_output, out_keep, atol, rtol)
    if inplace:
        _adopt(model, result)
        return model
    return result
