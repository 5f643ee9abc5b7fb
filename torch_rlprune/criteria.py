"""Importance criteria: one score per convolution filter.

Every criterion takes the model (and whatever data it needs) and returns a dict that maps ``(conv, "weight")``
to a 1-D ``float32`` tensor with one score per output channel (filter) of ``conv``, on the device of the conv's
weight. Scores are non-negative, and a higher score means *more important*: a filter to keep. The dict can be
passed as ``importance_scores`` or used through its name (see :data:`CRITERIA`), e.g.
``global_structured(..., pruning_method="snip", inputs=x, targets=y)``. Scores add up over the convolutions that
produce one channel (see :func:`torch_rlprune.channel_groups`): a channel is ranked by the sum of its filters'
scores.

Models already pruned with :mod:`torch.nn.utils.prune` masks are scored by the weights they compute with
(``weight_orig * weight_mask``). No criterion changes the model: parameters, buffers, train/eval flags,
``requires_grad`` and ``.grad`` are as they were afterwards.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.utils import prune

from ._inputs import ExampleInputs, as_input_tuple, check_device
from ._state import preserved_state
from . import channel_ops
from .groups import (
    CONV_TYPES,
    ChannelGroup,
    ChannelGroups,
    Member,
    channel_groups,
    check_groups_of,
)
from .masks import alive_channels, effective_weight
from .selection import channels_to_prune, min_keep_counts, select_channels

__all__ = ["l1", "l2", "random", "bn_scale", "bn_output", "snip", "synflow", "same_sign", "CRITERIA", "get",
           "group_gamma", "scaling_norms"]

Scores = dict[tuple[nn.Module, str], torch.Tensor]


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------


def _named_convs(model: nn.Module, caller: str) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller}: model must be a torch.nn.Module, got {type(model).__name__}.")
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, CONV_TYPES)]
    if not convs:
        raise ValueError(
            f"{caller}: {type(model).__name__} has no Conv1d, Conv2d or Conv3d layer; the criteria score "
            "convolution filters."
        )
    return convs


def _qualified(module_name: str, attr: str) -> str:
    return f"{module_name}.{attr}" if module_name else attr


def _recomputed_tensors(model: nn.Module) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """The tensors that pruning hooks store as ``<name>`` next to ``<name>_orig``, recomputed at every forward."""
    return [
        (m, attr, value)
        for m in model.modules()
        for attr, value in vars(m).items()
        if isinstance(value, torch.Tensor) and hasattr(m, attr + "_orig")
    ]


def _restore(recomputed: list[tuple[nn.Module, str, torch.Tensor]]) -> None:
    for module, attr, value in recomputed:
        setattr(module, attr, value)


def _resolve_groups(
    model: nn.Module, example_inputs: ExampleInputs | None, groups: ChannelGroups | None, caller: str
) -> ChannelGroups:
    if groups is None:
        if example_inputs is None:
            raise TypeError(
                f"{caller} needs the model's channel groups: pass example_inputs (e.g. torch.randn(1, 3, 32, 32)) "
                "or groups=channel_groups(model, example_inputs)."
            )
        # Tracing runs a forward pass, in which pruning hooks replace <name> by a tensor computed without grad.
        recomputed = _recomputed_tensors(model)
        try:
            return channel_groups(model, example_inputs)
        finally:
            _restore(recomputed)
    if not isinstance(groups, ChannelGroups):
        raise TypeError(f"{caller}: groups must be the ChannelGroups returned by channel_groups(model, ...).")
    check_groups_of(model, groups, caller)
    return groups


def _spread(
    groups: Sequence[ChannelGroup], group_scores: Sequence[torch.Tensor]
) -> tuple[dict[nn.Module, torch.Tensor], dict[nn.Module, torch.Tensor]]:
    """Write each group's scores into the filters of its producers and tied convs.

    A tied depthwise conv after a concat spans several groups, each at its own offset, so the per-conv vector is
    assembled slice by slice; the second dict marks which of its filters some group covered.
    """
    values: dict[nn.Module, torch.Tensor] = {}
    covered: dict[nn.Module, torch.Tensor] = {}
    for group, scores in zip(groups, group_scores):
        for member in group.filters:
            conv = member.module
            if conv not in values:
                filters = effective_weight(conv).shape[0]  # a producer may be a Linear over channels
                values[conv] = torch.zeros(filters, dtype=scores.dtype)
                covered[conv] = torch.zeros(filters, dtype=torch.bool)
            rows = member.indices(torch.arange(group.size))
            values[conv][rows] = scores.cpu().repeat_interleave(member.expand)
            covered[conv][rows] = True
    return values, covered


def _per_filter(values: torch.Tensor) -> torch.Tensor:
    """Sum a weight-shaped tensor of non-negative entries over everything but the filter dim."""
    return values.flatten(1).sum(dim=1)


# --------------------------------------------------------------------------------------------------------------
# Magnitude and random
# --------------------------------------------------------------------------------------------------------------


def _norm_scores(model: nn.Module, order: int, caller: str) -> Scores:
    return {
        (conv, "weight"): torch.linalg.vector_norm(effective_weight(conv).detach().flatten(1).float(), order, dim=1)
        for _, conv in _named_convs(model, caller)
    }


def l1(model: nn.Module) -> Scores:
    r"""Score every convolution filter by the L1 norm of its weights.

    The score of filter ``i`` of a conv is :math:`\sum |W_{i,\dots}|`, the sum of the absolute values of
    ``weight[i]`` (the effective, masked weight of an already pruned conv).

    Args:
        model (torch.nn.Module): the model whose ``Conv1d``, ``Conv2d`` and ``Conv3d`` layers to score.

    Returns:
        dict: maps ``(conv, "weight")`` to a ``float32`` tensor of length ``conv.out_channels``.

    Raises:
        ValueError: the model has no convolution.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch_rlprune import criteria
        >>> conv = nn.Conv2d(1, 2, kernel_size=2, bias=False)
        >>> with torch.no_grad():
        ...     _ = conv.weight.copy_(torch.tensor([[[[1.0, -2.0], [0.0, 1.0]]], [[[0.5, 0.5], [0.5, 0.5]]]]))
        >>> criteria.l1(nn.Sequential(conv))[(conv, "weight")]
        tensor([4., 2.])
    """
    return _norm_scores(model, 1, "l1")


def l2(model: nn.Module) -> Scores:
    r"""Score every convolution filter by the L2 norm of its weights.

    The score of filter ``i`` of a conv is :math:`\sqrt{\sum W_{i,\dots}^2}` over ``weight[i]`` (the effective,
    masked weight of an already pruned conv).

    Args:
        model (torch.nn.Module): the model whose ``Conv1d``, ``Conv2d`` and ``Conv3d`` layers to score.

    Returns:
        dict: maps ``(conv, "weight")`` to a ``float32`` tensor of length ``conv.out_channels``.

    Raises:
        ValueError: the model has no convolution.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch_rlprune import criteria
        >>> conv = nn.Conv1d(1, 2, kernel_size=2, bias=False)
        >>> with torch.no_grad():
        ...     _ = conv.weight.copy_(torch.tensor([[[3.0, -4.0]], [[1.0, 0.0]]]))
        >>> criteria.l2(nn.Sequential(conv))[(conv, "weight")]
        tensor([5., 1.])
    """
    return _norm_scores(model, 2, "l2")


def random(model: nn.Module, *, seed: int | None = None) -> Scores:
    r"""Score every convolution filter with a uniform random number in :math:`[0, 1)`.

    The baseline that pruning criteria have to beat. Convolutions are visited in ``model.named_modules()``
    order, so a seed fixes every score.

    Args:
        model (torch.nn.Module): the model whose ``Conv1d``, ``Conv2d`` and ``Conv3d`` layers to score.
        seed (int, optional): seed of a private :class:`torch.Generator`; the same seed gives the same scores.
            If ``None`` (default), the scores come from the global RNG, as in
            :class:`torch.nn.utils.prune.RandomStructured`.

    Returns:
        dict: maps ``(conv, "weight")`` to a ``float32`` tensor of length ``conv.out_channels``.

    Raises:
        TypeError: ``seed`` is not an int.
        ValueError: the model has no convolution.

    Example:
        >>> import torch
        >>> from torch_rlprune import criteria
        >>> from torch_rlprune.models import BasicCNN
        >>> model = BasicCNN(width=0.25)
        >>> a, b = criteria.random(model, seed=0), criteria.random(model, seed=0)
        >>> all(torch.equal(a[key], b[key]) for key in a)
        True
        >>> [len(s) for s in a.values()]
        [16, 32, 64, 128]
    """
    convs = _named_convs(model, "random")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
        raise TypeError(f"random: seed must be an int or None, got {type(seed).__name__}.")
    generator = None if seed is None else torch.Generator().manual_seed(int(seed))
    return {
        (conv, "weight"): torch.rand(conv.out_channels, generator=generator).to(conv.weight.device)
        for _, conv in convs
    }


# --------------------------------------------------------------------------------------------------------------
# Batch-norm scale
# --------------------------------------------------------------------------------------------------------------


def scaling_norms(group: ChannelGroup) -> tuple[Member, ...]:
    """The norms of ``group`` whose weight scales each channel, so that a weight of zero silences it: batch,
    instance and layer norms, not a ``"channel_norm"`` module such as ConvNeXt V2's global response norm, whose
    weight scales a term added to the channel.

    Args:
        group (ChannelGroup): a channel group.

    Returns:
        tuple of Member: those norm members, in the group's order.
    """
    return tuple(m for m in group.norms if channel_ops.module_kind(m.module) != "channel_norm")


def group_gamma(group: ChannelGroup, spread: bool = False) -> torch.Tensor:
    r"""Per channel of ``group``, the summed :math:`|\gamma|` of its :func:`scaling_norms` (what :func:`bn_scale`
    ranks by).

    Args:
        group (ChannelGroup): a channel group; a norm without an affine weight scales by 1.
        spread (bool): multiply each :math:`|\gamma|` by the share of the channel's running standard deviation
            that survives the normalisation, :math:`\sqrt{v / (v + \epsilon)}` (what :func:`bn_output` ranks by).
            Default: ``False``.

    Returns:
        torch.Tensor: ``[group.size]`` float values on the CPU.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> model = rlp.models.BasicCNN()
        >>> group = rlp.channel_groups(model, torch.randn(1, 3, 32, 32))[0]
        >>> group_gamma(group).tolist()[:3]  # gamma starts at 1
        [1.0, 1.0, 1.0]
    """
    total = torch.zeros(group.size)
    for member in scaling_norms(group):
        gamma = effective_weight(member.module, "weight")
        scale = torch.ones(member.module.num_features) if gamma is None else gamma.detach().abs().float().cpu()
        variance = getattr(member.module, "running_var", None)
        if spread and variance is not None:
            eps = member.module.eps
            scale = scale * (variance.detach().float().cpu() / (variance.detach().float().cpu() + eps)).sqrt()
        if gamma is None and not spread:  # affine=False: the norm scales every channel by 1
            total += member.expand
        else:
            total += member.gather(scale, group.size).sum(dim=1)
    return total


def bn_scale(
    model: nn.Module, example_inputs: ExampleInputs | None = None, *, groups: ChannelGroups | None = None
) -> Scores:
    r"""Score every filter by the absolute scale :math:`|\gamma|` of the batch norm that normalises its channel.

    The criterion of network slimming (Liu et al., 2017): a channel that its batch norm scales towards zero
    contributes little downstream. The norms of a channel are found through the model's channel groups (see
    :func:`torch_rlprune.channel_groups`); where several norms normalise one channel (coupled convolutions of a
    residual block), their :math:`|\gamma|` add up, and the convolutions producing the channel share that sum
    equally, so that their scores add up to it as the scores of all criteria do.
    A norm without affine weight counts as :math:`|\gamma| = 1`.

    Convolutions whose channel no norm normalises (or which are in no group) are left out of the dict.

    Args:
        model (torch.nn.Module): the model to score.
        example_inputs (torch.Tensor or tuple of torch.Tensor, optional): inputs the model accepts, used to find
            the channel groups. Not needed when ``groups`` is given.
        groups (ChannelGroups, optional): channel groups already computed for ``model``; saves a trace.

    Returns:
        dict: maps ``(conv, "weight")`` to a ``float32`` tensor of length ``conv.out_channels``.

    Raises:
        TypeError: neither ``example_inputs`` nor ``groups`` is given.
        ValueError: no batch norm follows any prunable convolution, or ``groups`` belong to another model.

    Example:
        >>> import torch
        >>> from torch_rlprune import criteria
        >>> from torch_rlprune.models import BasicCNN
        >>> model = BasicCNN(width=0.25)
        >>> bn = model.features[3]
        >>> with torch.no_grad():
        ...     _ = bn.weight.fill_(0.5)
        ...     bn.weight[0] = -2.0
        >>> scores = criteria.bn_scale(model, torch.randn(1, 3, 32, 32))
        >>> scores[(model.features[0], "weight")][:3]
        tensor([2.0000, 0.5000, 0.5000])
    """
    return _batch_norm_scores(model, example_inputs, groups, "bn_scale", spread=False)


def bn_output(
    model: nn.Module, example_inputs: ExampleInputs | None = None, *, groups: ChannelGroups | None = None
) -> Scores:
    r"""Score every filter by the spread of its batch norm's output: :math:`|\gamma| \sqrt{v / (v + \epsilon)}`.

    For a trained network, no data needed. The running variance :math:`v` says how much the channel varies
    before its norm; a channel whose ReLU never fires has :math:`v \approx 0`, and its norm outputs the constant
    :math:`\beta`, whatever :math:`|\gamma|` and its filter's weights are. Such filters are common in trained
    networks, and magnitude criteria (L1, :func:`bn_scale`) keep them. On BasicCNN trained on CIFAR-10 and pruned
    to 80% of its filters, a width search keeping each layer's top filters by this score reached 75.6% after
    fine-tuning, against 65.3% by L1 and 75.6% by SNIP (one seed; ``benchmarks/README.md``). Norms without running
    statistics (layer and group norms) count their :math:`|\gamma|` alone. Channels are found, shared and
    summed as by :func:`bn_scale`.

    Args:
        model (torch.nn.Module): the model to score, trained (at initialisation every :math:`v` is 1 and this is
            :func:`bn_scale` scaled by about 1).
        example_inputs (torch.Tensor or tuple of torch.Tensor, optional): inputs the model accepts, used to find
            the channel groups. Not needed when ``groups`` is given.
        groups (ChannelGroups, optional): channel groups already computed for ``model``; saves a trace.

    Returns:
        dict: maps ``(conv, "weight")`` to a ``float32`` tensor of length ``conv.out_channels``.

    Raises:
        TypeError: neither ``example_inputs`` nor ``groups`` is given.
        ValueError: no batch norm follows any prunable convolution, or ``groups`` belong to another model.

    Example:
        >>> import torch
        >>> from torch_rlprune import criteria
        >>> from torch_rlprune.models import BasicCNN
        >>> model = BasicCNN(width=0.25)
        >>> bn = model.features[3]
        >>> with torch.no_grad():
        ...     _ = bn.running_var.fill_(4.0)
        ...     bn.running_var[1] = 0.0  # a channel that never fired
        >>> criteria.bn_output(model, torch.randn(1, 3, 32, 32))[(model.features[0], "weight")][:3]
        tensor([1.0000, 0.0000, 1.0000])
    """
    return _batch_norm_scores(model, example_inputs, groups, "bn_output", spread=True)


def _batch_norm_scores(
    model: nn.Module, example_inputs: ExampleInputs | None, groups: ChannelGroups | None, name: str, spread: bool
) -> Scores:
    convs = _named_convs(model, name)
    groups = _resolve_groups(model, example_inputs, groups, name)
    normed = [g for g in groups if scaling_norms(g)]
    values, covered = _spread(normed, [group_gamma(g, spread) / len(g.filters) for g in normed])
    scores = {
        (conv, "weight"): values[conv].to(conv.weight.device)
        for _, conv in convs
        if conv in covered and covered[conv].all()
    }
    if not scores:
        raise ValueError(
            f"{name}: no BatchNorm follows any prunable convolution of this model, so there is no scale to "
            "rank filters by; pick another criterion, such as 'l1' or 'synflow'."
        )
    return scores


# --------------------------------------------------------------------------------------------------------------
# SNIP
# --------------------------------------------------------------------------------------------------------------


def _check_batch(inputs: Any, targets: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(inputs, torch.Tensor):
        inputs = (inputs,)
    if not (isinstance(inputs, (tuple, list)) and inputs and all(isinstance(t, torch.Tensor) for t in inputs)):
        raise TypeError(
            "snip: inputs must be a tensor (or a tuple of tensors) holding one batch the model accepts, "
            f"e.g. images of shape (N, 3, 32, 32); got {type(inputs).__name__}."
        )
    if not isinstance(targets, torch.Tensor):
        raise TypeError(
            f"snip: targets must be a tensor with the batch's labels, e.g. class indices of shape (N,); "
            f"got {type(targets).__name__}."
        )
    batch, labels = tuple(inputs[0].shape[:1]), tuple(targets.shape[:1])
    if not batch or batch != labels:
        raise ValueError(
            f"snip: inputs hold a batch of shape {tuple(inputs[0].shape)} but targets have shape "
            f"{tuple(targets.shape)}; their first dimensions (the batch size) must match: pass the labels of the "
            "same batch."
        )
    return tuple(inputs)


def snip(
    model: nn.Module,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    targets: torch.Tensor,
    *,
    loss_fn: Callable[[Any, torch.Tensor], torch.Tensor] = F.cross_entropy,
) -> Scores:
    r"""Score every filter by its SNIP connection sensitivity on one batch.

    SNIP (Lee et al., 2019) estimates how much the loss :math:`L` changes when a weight is removed by
    :math:`|w \cdot \partial L / \partial w|`; a filter's score is the sum over its weights. Batch norms
    normalise with the batch's own statistics (their running statistics are restored afterwards) and dropout
    is off, so the scores are deterministic. Gradients are taken with :func:`torch.func.functional_call` on
    detached copies of the conv weights: no ``.grad`` of the model is touched, and frozen parameters are scored
    too.

    Args:
        model (torch.nn.Module): the model to score.
        inputs (torch.Tensor or tuple of torch.Tensor): one batch of inputs the model accepts.
        targets (torch.Tensor): the batch's targets, as ``loss_fn`` expects them (the same batch size).
        loss_fn (callable): ``loss_fn(model(*inputs), targets)`` returns a scalar loss.
            Default: :func:`torch.nn.functional.cross_entropy`.

    Returns:
        dict: maps ``(conv, "weight")`` to a ``float32`` tensor of length ``conv.out_channels``.

    Raises:
        TypeError: ``inputs`` or ``targets`` are not tensors.
        ValueError: their batch sizes differ, or ``loss_fn`` does not return a scalar.

    Example:
        >>> import torch
        >>> from torch_rlprune import criteria
        >>> from torch_rlprune.models import BasicCNN
        >>> model = BasicCNN(width=0.25)
        >>> scores = criteria.snip(model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
        >>> [len(s) for s in scores.values()]
        [16, 32, 64, 128]
        >>> all(p.grad is None for p in model.parameters())
        True
    """
    convs = _named_convs(model, "snip")
    inputs = _check_batch(inputs, targets)
    check_device(model, (*inputs, targets), "snip", "inputs and targets")
    # A pruned conv computes with weight_orig * weight_mask; the gradient of weight_orig is the masked gradient,
    # so |weight_orig * grad| is the sensitivity of the weight the conv actually uses.
    # A weight shared by several convs must stay one tensor, or functional_call refuses the untied values.
    by_tensor: dict[int, torch.Tensor] = {}
    leaves = {}
    for name, conv in convs:
        attr = "weight_orig" if hasattr(conv, "weight_orig") else "weight"
        weight = getattr(conv, attr)
        leaves[_qualified(name, attr)] = by_tensor.setdefault(id(weight), weight.detach().requires_grad_())
    # The pruning hook stores the recomputed weight on the module during the call; put the old one back.
    recomputed = _recomputed_tensors(model)
    try:
        with preserved_state(model, "batch"), torch.enable_grad():
            loss = loss_fn(functional_call(model, leaves, inputs), targets)
            if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                raise ValueError("snip: loss_fn must return a scalar tensor, e.g. a mean over the batch.")
            grads = (
                torch.autograd.grad(loss.reshape(()), list(leaves.values()), allow_unused=True)
                if loss.requires_grad
                else [None] * len(leaves)
            )
    finally:
        _restore(recomputed)
    scores = {}
    for (_, conv), weight, grad in zip(convs, leaves.values(), grads):
        sensitivity = torch.zeros_like(weight) if grad is None else (weight.detach() * grad).abs()
        scores[(conv, "weight")] = _per_filter(sensitivity).float()
    return scores


# --------------------------------------------------------------------------------------------------------------
# SynFlow
# --------------------------------------------------------------------------------------------------------------


def _linearized_copy(model: nn.Module) -> nn.Module:
    """A float64 eval-mode copy of ``model`` with masks folded in and every parameter replaced by its magnitude."""
    # deepcopy refuses the non-leaf tensor that a pruning hook keeps under the pruned name; the copy recomputes it
    # from <name>_orig and <name>_mask below, so a placeholder will do.
    memo: dict[int, Any] = {id(value): value.detach().clone() for _, _, value in _recomputed_tensors(model)}
    work = copy.deepcopy(model, memo)
    for module in work.modules():
        masked = [n[: -len("_mask")] for n, _ in module.named_buffers(recurse=False) if n.endswith("_mask")]
        for name in masked:
            if hasattr(module, name + "_orig"):
                prune.remove(module, name)
    work.double().eval()
    with torch.no_grad():
        for module in work.modules():
            for name, param in module.named_parameters(recurse=False):
                param.abs_()
                param.requires_grad_(isinstance(module, CONV_TYPES) and name == "weight")
        # In eval mode a norm is the affine map gamma / sigma * (x - mu) + beta. With mu = 0 it maps the positive
        # flow to positive values, as the path norm that SynFlow measures assumes, and a pruned channel (x = 0,
        # gamma = beta = 0) sends exactly nothing on.
        for module in work.modules():
            if isinstance(module, _NormBase) and module.running_mean is not None:
                module.running_mean.zero_()
    return work


def _total(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output.sum()
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)) and output:
        return torch.stack([_total(o).to(torch.float64) for o in output]).sum()
    raise TypeError(
        f"synflow: the model returned {type(output).__name__}; it must return a tensor, or a tuple, list or dict "
        "of tensors, to sum into the synaptic flow."
    )


def _flow(work: nn.Module, ones: tuple[torch.Tensor, ...], convs: dict[str, nn.Module]) -> dict[str, torch.Tensor]:
    """Per-filter SynFlow scores of the copy's convs, as shares of the total flow R."""
    weights = [conv.weight for conv in convs.values()]
    with torch.enable_grad():
        flow = _total(work(*ones))
        grads = (
            torch.autograd.grad(flow, weights, allow_unused=True) if flow.requires_grad else [None] * len(weights)
        )
    # R grows with the product of the layers' gains and overflows float32 in deep networks (ResNet-50 and up);
    # as a share of R a filter's score stays in [0, 1] for a bias-free network, and the ranking is unchanged.
    total = flow.detach().to(torch.float64)
    scale = total if total > 0 else torch.ones_like(total)
    return {
        name: torch.zeros(conv.out_channels, dtype=torch.float64, device=conv.weight.device)
        if grad is None
        else _per_filter((conv.weight.detach() * grad).abs()) / scale.to(grad.device)
        for (name, conv), grad in zip(convs.items(), grads)
    }


def _group_flow(groups: Sequence[ChannelGroup], flow: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    scores = []
    for group in groups:
        # Only convolutions are scored: a Linear that produces channels too (an MLP on the stream) has no filters.
        rows = [m.gather(flow[m.name].cpu(), group.size).sum(dim=1) for m in group.filters if m.name in flow]
        scores.append(torch.stack(rows).sum(dim=0))
    return scores


def _zero_channels(modules: dict[str, nn.Module], group: ChannelGroup, channels: torch.Tensor) -> None:
    with torch.no_grad():
        for member in (*group.filters, *group.norms):
            module = modules[member.name]
            for tensor in (module.weight, module.bias):
                if tensor is not None:
                    tensor.index_fill_(member.dim, member.indices(channels).to(tensor.device), 0)


def synflow(
    model: nn.Module,
    example_inputs: ExampleInputs,
    *,
    groups: ChannelGroups | None = None,
    amount: float | int = 0.0,
    min_keep: float | int = 1,
    iterations: int = 10,
) -> Scores:
    r"""Score every filter by Iterative Synaptic Flow (SynFlow), without data.

    SynFlow (Tanaka et al., 2020) replaces every parameter by its magnitude, feeds an all-ones input, and takes
    the sum :math:`R` of the output as the *synaptic flow* through the network. A weight's score is
    :math:`|\theta \cdot \partial R / \partial \theta|`, its share of the flow; a filter's score is the sum over
    its weights. The pruning rounds rank a channel by the sum of its filters' scores over all convolutions that
    produce it (see :func:`torch_rlprune.channel_groups`). The work is done on a float64 copy of the model in eval mode, with pruning
    masks folded in and the norms' running means set to zero so that the flow stays positive. Scores are
    returned as shares of :math:`R`, which keeps them in the ``float32`` range however deep the network.

    With ``amount > 0`` the scoring is iterative, which avoids the layer collapse of one-shot pruning: in round
    :math:`k` of ``iterations`` the copy is pruned of its lowest-scoring channels, globally across groups, until
    a fraction :math:`1 - (1 - \text{amount})^{k / \text{iterations}}` of the alive channels is gone, and the
    flow is computed again. The scores of the final copy are returned, so the channels that the iteration
    pruned score 0. The model itself is never pruned.

    Args:
        model (torch.nn.Module): the model to score.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts; only their shapes are
            used (the flow is measured on ``torch.ones`` of the same shape).
        groups (ChannelGroups, optional): channel groups already computed for ``model``; saves a trace.
        amount (int or float): channels that the iteration prunes: a fraction of the alive channels (float in
            [0, 1]) or their number (int). Default: ``0.0`` (one shot).
        min_keep (int or float): channels each group keeps at least, as a count (default 1) or as a fraction of
            the group's channels.
        iterations (int): rounds of pruning when ``amount > 0``. Default: 10.

    Returns:
        dict: maps ``(conv, "weight")`` to a ``float32`` tensor of length ``conv.out_channels``.

    Raises:
        TypeError: arguments of the wrong type.
        ValueError: ``amount`` out of range or more than ``min_keep`` allows, ``iterations < 1``, or ``groups``
            that belong to another model.

    Example:
        >>> import torch
        >>> from torch_rlprune import criteria
        >>> from torch_rlprune.models import BasicCNN
        >>> model = BasicCNN(width=0.25)  # 16 + 32 + 64 + 128 = 240 filters
        >>> scores = criteria.synflow(model, torch.randn(1, 3, 32, 32), amount=0.5)
        >>> sum(int((s == 0).sum()) for s in scores.values())
        120
    """
    caller = "synflow"
    convs = _named_convs(model, caller)
    ones = tuple(
        torch.ones_like(x, dtype=torch.float64 if x.is_floating_point() else x.dtype)
        for x in as_input_tuple(example_inputs, caller, model)
    )
    # The budget is of conv filters: a group that only Linear layers produce (a transformer's MLP) is not pruned.
    conv_names = {name for name, _ in convs}
    groups = [g for g in _resolve_groups(model, example_inputs, groups, caller)
              if any(m.name in conv_names for m in g.filters)]  # fmt: skip
    if isinstance(iterations, bool) or not isinstance(iterations, numbers.Integral):
        raise TypeError(f"{caller}: iterations must be an int, got {type(iterations).__name__}.")
    if iterations < 1:
        raise ValueError(f"{caller}: iterations={iterations}; pass 1 or more rounds.")
    alive = [alive_channels(g) for g in groups]
    n_alive = sum(int(a.sum()) for a in alive)
    n_total = channels_to_prune(amount, n_alive, caller)
    keep_min = min_keep_counts([g.size for g in groups], min_keep, caller)
    free = sum(max(int(a.sum()) - k, 0) for a, k in zip(alive, keep_min))
    if n_total > free:
        # Checked up front so that an impossible budget fails before the first round rather than the last.
        raise ValueError(
            f"{caller}: cannot prune {n_total} filters while every layer keeps its minimum (min_keep); "
            f"at most {free} can go. Lower amount or min_keep."
        )

    work = _linearized_copy(model)
    work_modules = dict(work.named_modules())
    work_convs = {name: work_modules[name] for name, _ in convs}
    with preserved_state(work, "eval"):
        flow = _flow(work, ones, work_convs)
        rounds = range(1, iterations + 1) if n_total else range(0)
        for k in rounds:
            target = round(n_alive * (1 - (1 - n_total / n_alive) ** (k / iterations)))
            done = n_alive - sum(int(a.sum()) for a in alive)
            keep = select_channels(_group_flow(groups, flow), alive, target - done, keep_min, caller)
            for group, before, after in zip(groups, alive, keep):
                _zero_channels(work_modules, group, (before & ~after).nonzero().reshape(-1))
            alive = keep
            flow = _flow(work, ones, work_convs)

    return {(conv, "weight"): flow[name].float().to(conv.weight.device) for name, conv in convs}


# --------------------------------------------------------------------------------------------------------------
# Same sign as at initialisation
# --------------------------------------------------------------------------------------------------------------


def _init_weight(init_state: Mapping[str, torch.Tensor], name: str, shape: torch.Size) -> torch.Tensor:
    keys = [_qualified(name, "weight"), _qualified(name, "weight_orig")]
    found = next((k for k in keys if k in init_state), None)
    if found is None:
        raise ValueError(
            f"same_sign: init_state has no {keys[0]!r} (nor {keys[1]!r}); the snapshot must come from the same "
            "architecture, e.g. {k: v.clone() for k, v in model.state_dict().items()} taken at initialisation."
        )
    value = init_state[found]
    if not isinstance(value, torch.Tensor) or value.shape != shape:
        got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(
            f"same_sign: init_state[{found!r}] has shape {got} but the model's weight has shape {tuple(shape)}; "
            "the snapshot must come from the same architecture."
        )
    return value


def same_sign(model: nn.Module, init_state: Mapping[str, torch.Tensor]) -> Scores:
    r"""Score every filter by the magnitude of its weights that kept the sign they had at initialisation.

    Zhou et al. (2019) found the masks of lottery tickets to work best when they keep large weights that did not
    change sign during training. Each weight counts :math:`|w|` if :math:`w \ne 0` and
    :math:`\operatorname{sign}(w) = \operatorname{sign}(w_{\text{init}})`, else 0; a filter's score is the sum.

    Args:
        model (torch.nn.Module): the (trained) model to score.
        init_state (Mapping[str, torch.Tensor]): a snapshot of the same model at initialisation, such as a copy
            of its ``state_dict()``. Each conv's weight is looked up as ``"<conv>.weight"`` or, in a snapshot of
            a pruned model, ``"<conv>.weight_orig"``. Take a copy: ``model.state_dict()`` holds references that
            training changes in place.

    Returns:
        dict: maps ``(conv, "weight")`` to a ``float32`` tensor of length ``conv.out_channels``.

    Raises:
        TypeError: ``init_state`` is not a mapping.
        ValueError: a conv's weight is missing from ``init_state`` or has another shape.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from torch_rlprune import criteria
        >>> model = nn.Sequential(nn.Conv2d(1, 2, kernel_size=1, bias=False))
        >>> init = {"0.weight": torch.tensor([[[[1.0]]], [[[1.0]]]])}
        >>> with torch.no_grad():
        ...     _ = model[0].weight.copy_(torch.tensor([[[[0.5]]], [[[-0.25]]]]))
        >>> criteria.same_sign(model, init)[(model[0], "weight")]
        tensor([0.5000, 0.0000])
    """
    convs = _named_convs(model, "same_sign")
    if not isinstance(init_state, Mapping):
        raise TypeError(
            f"same_sign: init_state must be a mapping from parameter names to tensors, such as a copy of "
            f"model.state_dict() at initialisation; got {type(init_state).__name__}."
        )
    scores = {}
    for name, conv in convs:
        weight = effective_weight(conv).detach()
        init = _init_weight(init_state, name, weight.shape).to(weight.device)
        # A weight that is zero now scores |0| whatever its sign was, so comparing signs is enough.
        kept = torch.sign(weight) == torch.sign(init)
        scores[(conv, "weight")] = _per_filter(weight.abs() * kept).float()
    return scores


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------

#: The criteria by name, as ``global_structured(..., pruning_method=name)`` accepts them.
CRITERIA: dict[str, Callable[..., Scores]] = {
    "l1": l1,
    "l2": l2,
    "random": random,
    "bn_scale": bn_scale,
    "bn_output": bn_output,
    "snip": snip,
    "synflow": synflow,
    "same_sign": same_sign,
}


def get(name: str) -> Callable[..., Scores]:
    r"""Look up a criterion by name.

    Args:
        name (str): one of the keys of :data:`CRITERIA`: ``"l1"``, ``"l2"``, ``"random"``, ``"bn_scale"``,
            ``"snip"``, ``"synflow"``, ``"same_sign"``.

    Returns:
        The criterion function.

    Raises:
        TypeError: ``name`` is not a string.
        ValueError: no criterion has that name.

    Example:
        >>> from torch_rlprune import criteria
        >>> criteria.get("l1") is criteria.l1
        True
    """
    if not isinstance(name, str):
        raise TypeError(f"criterion name must be a str such as 'l1', got {type(name).__name__}.")
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; known criteria: {', '.join(CRITERIA)}.")
    return CRITERIA[name]
