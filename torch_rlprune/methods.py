"""Pruning a whole model's filters at once: the structured twin of :func:`torch.nn.utils.prune.global_unstructured`."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Callable, Union

import torch
from torch import nn
from torch.nn.utils import prune

from . import criteria
from .groups import CONV_TYPES, ChannelGroup, ChannelGroups, ExampleInputs, channel_groups
from .masks import alive_channels, apply_channel_masks, effective_weight
from .selection import NORMALIZATIONS, channels_to_prune, min_keep_counts, normalize_scores, select_channels

__all__ = ["global_structured"]

Parameters = Iterable[tuple[nn.Module, str]]
ImportanceScores = Mapping[tuple[nn.Module, str], torch.Tensor]
PruningMethod = Union[type[prune.BasePruningMethod], str]

_CALLER = "global_structured"
# Context a criterion may ask for by naming it in its signature.
_CRITERION_CONTEXT = ("example_inputs", "groups", "amount", "min_keep")


def _check_parameters(parameters: Parameters, model: nn.Module) -> list[tuple[nn.Module, str]]:
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        raise TypeError(f"{_CALLER}: parameters must be an iterable of (module, name) pairs, e.g. "
                        "[(m, 'weight') for m in model.modules() if isinstance(m, nn.Conv2d)].")  # fmt: skip
    pairs = list(parameters)
    if not pairs:
        raise ValueError(f"{_CALLER}: parameters is empty; pass the (conv, 'weight') pairs whose filters to prune.")
    in_model = {id(m) for m in model.modules()}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], nn.Module) and isinstance(pair[1], str)):
            raise TypeError(f"{_CALLER}: every entry of parameters must be a (module, name) tuple, got {pair!r}.")
        module, name = pair
        if not hasattr(module, name) and not hasattr(module, name + "_orig"):
            raise ValueError(f"{_CALLER}: {type(module).__name__} has no parameter {name!r}; pass (module, 'weight').")
        if not isinstance(module, CONV_TYPES) or name != "weight":
            raise ValueError(
                f"{_CALLER}: ({type(module).__name__}, {name!r}) is not a convolution weight. Structured pruning "
                "here removes filters of Conv1d/Conv2d/Conv3d layers; the layers they feed (including Linear) "
                "follow automatically. Pass only (conv, 'weight') pairs."
            )
        if id(module) not in in_model:
            raise ValueError(f"{_CALLER}: a {type(module).__name__} in parameters is not a submodule of model.")
    return pairs


def _check_method(pruning_method: Any, kwargs: dict[str, Any]) -> Callable[..., Any] | None:
    """Validate the method; for a criterion name return the criterion function."""
    if isinstance(pruning_method, str):
        return criteria.get(pruning_method)
    if not (isinstance(pruning_method, type) and issubclass(pruning_method, prune.BasePruningMethod)):
        raise TypeError(
            f"{_CALLER}: pruning_method must be a torch.nn.utils.prune method class (e.g. prune.LnStructured) "
            f"or a criterion name such as 'l1' or 'snip'; got {pruning_method!r}."
        )
    if pruning_method.PRUNING_TYPE != "structured":
        raise TypeError(
            f"{_CALLER}: {pruning_method.__name__} has PRUNING_TYPE={pruning_method.PRUNING_TYPE!r}; this function "
            "needs a structured method. For unstructured methods use torch.nn.utils.prune.global_unstructured."
        )
    if kwargs.get("dim", 0) != 0:
        raise ValueError(f"{_CALLER}: dim={kwargs['dim']} is not supported; filters are pruned along dim 0.")
    own_kwargs = {prune.LnStructured: {"n", "dim"}, prune.RandomStructured: {"seed", "dim"}}.get(pruning_method)
    if own_kwargs is None:
        raise TypeError(
            f"{_CALLER}: {pruning_method.__name__} exposes no per-filter scores to rank globally. Use "
            "prune.LnStructured, prune.RandomStructured, a criterion name (see torch_rlprune.criteria.CRITERIA), "
            "or prune.LnStructured with importance_scores computed by your own criterion."
        )
    if pruning_method is prune.LnStructured and "n" not in kwargs:
        raise TypeError(f"{_CALLER}: prune.LnStructured needs the norm order n, e.g. n=1 for the L1 norm.")
    if set(kwargs) - own_kwargs:
        unexpected = ", ".join(sorted(set(kwargs) - own_kwargs))
        raise TypeError(f"{_CALLER}: {pruning_method.__name__} takes no argument(s) {unexpected}.")
    return None


def _per_channel(member_scores: torch.Tensor, group: ChannelGroup, member_index: int) -> torch.Tensor:
    """Pick a filter member's per-filter scores at the group's channels (a tied conv may see a slice)."""
    member = group.filters[member_index]
    return member_scores.reshape(-1)[member.indices(torch.arange(group.size, device=member_scores.device))]


def _ln_scores(
    groups: list[ChannelGroup], n: float, importance_scores: ImportanceScores
) -> list[torch.Tensor]:
    scores = []
    for group in groups:
        rows = []
        for i, member in enumerate(group.filters):
            tensor = importance_scores.get((member.module, "weight"))
            tensor = (effective_weight(member.module) if tensor is None else tensor).detach()
            if tensor.dim() > 1:
                tensor = torch.linalg.vector_norm(tensor.flatten(1).float(), ord=n, dim=1)
            rows.append(_per_channel(tensor.float().abs(), group, i).cpu())
        # The Ln norm of the concatenated rows of all coupled filters equals the Ln norm of their per-filter norms.
        scores.append(torch.linalg.vector_norm(torch.stack(rows), ord=n, dim=0))
    return scores


def _criterion_scores(
    groups: list[ChannelGroup], scores_by_param: ImportanceScores
) -> list[torch.Tensor]:
    scores = []
    for group in groups:
        rows = [
            _per_channel(scores_by_param[(m.module, "weight")].detach().double(), group, i).cpu()
            for i, m in enumerate(group.filters)
            if (m.module, "weight") in scores_by_param
        ]
        if not rows:
            raise ValueError(
                f"{_CALLER}: no importance score for group {group.name!r} (the criterion skipped its convs); "
                "choose another criterion or pass importance_scores for those convs."
            )
        scores.append(torch.stack(rows).sum(dim=0))
    return scores


def global_structured(
    parameters: Parameters,
    pruning_method: PruningMethod,
    importance_scores: ImportanceScores | None = None,
    *,
    model: nn.Module,
    example_inputs: ExampleInputs,
    amount: float | int,
    min_keep: float | int = 1,
    normalize: str = "mean",
    groups: ChannelGroups | None = None,
    **kwargs: Any,
) -> None:
    r"""Globally prune filters of the convolutions in ``parameters`` by ranking them across layers.

    The structured counterpart of :func:`torch.nn.utils.prune.global_unstructured`. The model's channel groups
    (see :func:`torch_rlprune.channel_groups`) are the unit of pruning: pruning a channel masks that filter in
    every convolution that produces it (convolutions whose outputs meet in a residual add share one mask), in tied
    depthwise convolutions and in the batch norms that follow. A group takes part when any of its convolutions is
    listed in ``parameters``; listed convolutions whose channels cannot be pruned (they reach the network output,
    feed a grouped convolution, or pass through an op the tracer does not model) are skipped with a warning.

    Masks are ordinary :mod:`torch.nn.utils.prune` masks (``weight_orig``, ``weight_mask`` and a forward pre-hook,
    added with :func:`~torch.nn.utils.prune.custom_from_mask`), so ``prune.is_pruned(model)`` is ``True``,
    ``prune.remove`` makes them permanent, and pruning again composes with the masks already there.

    **Scores.** ``prune.LnStructured`` ranks a channel by the :math:`L_n` norm of all its filters' weights (or
    of ``importance_scores`` where given), ``prune.RandomStructured`` at random, and a criterion name
    (``"l1"``, ``"l2"``, ``"random"``, ``"bn_scale"``, ``"snip"``, ``"synflow"``, ``"same_sign"``; see
    :mod:`torch_rlprune.criteria`) by that criterion, summed over a group's convolutions. Layers differ in
    width and weight scale, so before the global ranking every group's scores are divided by the **mean score of
    its alive channels** (``normalize="mean"``; ``"max"``, ``"l2"`` and ``"none"`` are the alternatives): a
    channel is then pruned for being weak relative to its own layer.

    **Amount.** ``amount`` counts channels (filters), never parameters: a float is the fraction of the listed
    groups' channels that are still unpruned, an int their number. A channel of a coupled group counts once.
    Like the built-in methods, pruning an already pruned model prunes ``amount`` of what is left.

    Args:
        parameters (Iterable of (module, name) tuples): ``(conv, "weight")`` pairs whose filters may be pruned.
        pruning_method (type or str): ``prune.LnStructured``, ``prune.RandomStructured``, or a criterion name.
        importance_scores (dict, optional): maps ``(conv, "weight")`` to a tensor of the weight's shape or to
            one score per filter; used in place of the weights by ``prune.LnStructured``.
        model (torch.nn.Module): the model the convolutions belong to, traced to find the channel groups.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts (batch size 1 is enough).
        amount (int or float): the number (int) or fraction (float in [0, 1]) of unpruned filters to prune.
        min_keep (int or float): filters each group keeps at least, as a count (default 1) or as a fraction of the
            group's channels. Pass 0 to allow a layer to lose every filter.
        normalize (str): how scores are made comparable across groups, as described above. Default: ``"mean"``.
        groups (ChannelGroups, optional): channel groups already computed for ``model``; saves a trace.
        kwargs: the method's own arguments: ``n`` for ``prune.LnStructured``; ``seed`` for
            ``prune.RandomStructured`` and ``"random"``; the criterion's arguments (e.g. ``inputs`` and
            ``targets`` for ``"snip"``, ``init_state`` for ``"same_sign"``).

    Raises:
        TypeError: ``pruning_method`` is not structured or offers no scores, arguments of the wrong type.
        ValueError: an amount out of range or beyond what ``min_keep`` allows, an empty ``parameters``, a
            parameter that is not a convolution weight, no prunable group among ``parameters``.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> import torch.nn.utils.prune as prune
        >>> import torch_rlprune as rlp
        >>> model = rlp.models.BasicCNN()
        >>> convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
        >>> rlp.global_structured(convs, prune.LnStructured, n=1, amount=0.5,
        ...                       model=model, example_inputs=torch.randn(1, 3, 32, 32))
        >>> prune.is_pruned(model)
        True
        >>> sum(int(m.weight_mask.flatten(1).any(1).sum()) for m, _ in convs)
        480
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_CALLER}: model= must be the torch.nn.Module the parameters belong to.")
    pairs = _check_parameters(parameters, model)
    criterion = _check_method(pruning_method, kwargs)
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"{_CALLER}: normalize={normalize!r}; choose one of {', '.join(NORMALIZATIONS)}.")
    if importance_scores is not None:
        if not isinstance(importance_scores, Mapping):
            raise TypeError(f"{_CALLER}: importance_scores must be a dict mapping (module, name) to a tensor.")
        if criterion is not None:
            raise ValueError(f"{_CALLER}: pass either a criterion name or importance_scores, not both.")
    if groups is None:
        groups = channel_groups(model, example_inputs)
    elif not isinstance(groups, ChannelGroups):
        raise TypeError(f"{_CALLER}: groups must be the ChannelGroups returned by channel_groups().")

    listed = {id(m) for m, _ in pairs}
    chosen = [g for g in groups if any(id(m.module) in listed for m in g.filters)]
    covered = {id(m.module) for g in chosen for m in g.filters}
    name_of = {id(m): n for n, m in model.named_modules()}
    skipped = [f"'{name_of[id(m)]}' ({groups.excluded.get(name_of[id(m)], 'not reached by the traced forward')})"
               for m, _ in pairs if id(m) not in covered]  # fmt: skip
    if not chosen:
        raise ValueError(f"{_CALLER}: none of the given convolutions has prunable filters: {'; '.join(skipped)}.")
    if skipped:
        warnings.warn(f"{_CALLER}: skipping convolutions whose filters cannot be pruned: {'; '.join(skipped)}.")

    alive = [alive_channels(g) for g in chosen]
    n_prune = channels_to_prune(amount, int(sum(int(a.sum()) for a in alive)), _CALLER)
    keep_min = min_keep_counts([g.size for g in chosen], min_keep, _CALLER)

    if criterion is not None:
        # A criterion that prunes as it scores (SynFlow) works on the chosen groups and their budget only.
        context = {"example_inputs": example_inputs, "groups": ChannelGroups(chosen, groups.excluded),
                   "amount": n_prune, "min_keep": min_keep}  # fmt: skip
        accepted = inspect.signature(criterion).parameters
        call_kwargs = {k: v for k, v in context.items() if k in accepted} | kwargs
        scores = _criterion_scores(chosen, criterion(model, **call_kwargs))
    elif pruning_method is prune.RandomStructured:
        generator = None if kwargs.get("seed") is None else torch.Generator().manual_seed(kwargs["seed"])
        scores = [torch.rand(g.size, generator=generator) for g in chosen]
    else:
        scores = _ln_scores(chosen, kwargs["n"], importance_scores or {})

    for group, s in zip(chosen, scores):
        if not torch.isfinite(s).all():
            raise ValueError(f"{_CALLER}: scores of group {group.name!r} contain NaN or inf; check the criterion.")
    scores = [normalize_scores(s, a, normalize) for s, a in zip(scores, alive)]
    keep = select_channels(scores, alive, n_prune, keep_min, caller=_CALLER)
    apply_channel_masks(chosen, keep)
