"""Pruning a whole model's filters at once: the structured twin of :func:`torch.nn.utils.prune.global_unstructured`."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Callable, Union

import torch
from torch import nn
from torch.nn.utils import prune

from . import criteria
from ._inputs import ExampleInputs, device_of
from .groups import CONV_TYPES, ChannelGroup, ChannelGroups, channel_groups
from .masks import alive_channels, apply_channel_masks, effective_weight
from .search import (
    AnnealingStrategy,
    RandomStrategy,
    RandomWidthStrategy,
    ReinforceStrategy,
    RoundedStrategy,
    SearchResult,
    SearchStrategy,
    WidthReinforceStrategy,
    run_search,
)
from .search.controller import ReinforceController
from .search.evaluation import MODES, CandidateEvaluator
from .search.features import filter_features
from .search.rewards import check_reward
from .masks import keep_vectors
from .search.widths import keep_top
from .selection import (
    NORMALIZATIONS,
    Budget,
    fewest_to_prune,
    channels_to_prune,
    check_budget,
    check_round_to,
    keep_floors,
    min_keep_counts,
    normalize_scores,
    select_channels,
    validate_amount,
)

__all__ = [
    "global_structured",
    "RLStructuredPruning",
    "SimulatedAnnealingPruning",
    "RandomSearchPruning",
    "RandomWidthPruning",
    "SEARCH_METHODS",
    "rl_structured",
    "takes_budget",
]

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
    if issubclass(pruning_method, _SearchPruning):
        return None
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
    """A filter member's per-filter scores at the group's channels, ``(size, expand)``: a tied conv may see a
    slice, and one channel of a grouped conv stands for a whole group of filters."""
    member = group.filters[member_index]
    weight = getattr(member.module, "weight_orig", member.module.weight)
    if member_scores.dim() != 1 or member_scores.shape[0] != weight.shape[0]:
        raise ValueError(
            f"{_CALLER}: the score of {member.name!r} has shape {tuple(member_scores.shape)}; it needs the weight's "
            f"shape {tuple(weight.shape)} or one score per filter, ({weight.shape[0]},)."
        )
    return member.gather(member_scores, group.size)


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
            rows.append(torch.linalg.vector_norm(_per_channel(tensor.float().abs(), group, i).cpu(), ord=n, dim=1))
        # The Ln norm of the concatenated rows of all coupled filters equals the Ln norm of their per-filter norms.
        scores.append(torch.linalg.vector_norm(torch.stack(rows), ord=n, dim=0))
    return scores


def _criterion_scores(
    groups: list[ChannelGroup], scores_by_param: ImportanceScores
) -> list[torch.Tensor]:
    scores = []
    for group in groups:
        rows = [
            _per_channel(scores_by_param[(m.module, "weight")].detach().double(), group, i).cpu().sum(dim=1)
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
    round_to: int | None = None,
    normalize: str = "mean",
    groups: ChannelGroups | None = None,
    **kwargs: Any,
) -> SearchResult | None:
    r"""Globally prune filters of the convolutions in ``parameters`` by ranking them across layers.

    The structured counterpart of :func:`torch.nn.utils.prune.global_unstructured`. The model's channel groups
    (see :func:`torch_rlprune.channel_groups`) are the unit of pruning: pruning a channel masks that filter in
    every convolution that produces it (convolutions whose outputs meet in a residual add share one mask), in tied
    depthwise convolutions and in the batch norms that follow. A group takes part when any of its convolutions is
    listed in ``parameters``; listed convolutions whose channels cannot be pruned (they reach the network output,
    are cut at a constant split point, or pass through an op the tracer does not model) are skipped with a warning.

    Masks are ordinary :mod:`torch.nn.utils.prune` masks (``weight_orig``, ``weight_mask`` and a forward pre-hook,
    added with :func:`~torch.nn.utils.prune.custom_from_mask`), so ``prune.is_pruned(model)`` is ``True``,
    ``prune.remove`` makes them permanent, and pruning again composes with the masks already there.

    **Scores.** ``prune.LnStructured`` ranks a channel by the :math:`L_n` norm of all its filters' weights (or
    of ``importance_scores`` where given), ``prune.RandomStructured`` at random, and a criterion name
    (``"l1"``, ``"l2"``, ``"random"``, ``"bn_scale"``, ``"bn_output"``, ``"snip"``, ``"synflow"``,
    ``"same_sign"``; see
    :mod:`torch_rlprune.criteria`) by that criterion, summed over a group's convolutions. Layers differ in
    width and weight scale, so before the global ranking every group's scores are divided by the **mean score of
    its alive channels** (``normalize="mean"``; ``"max"``, ``"l2"`` and ``"none"`` are the alternatives): a
    channel is then pruned for being weak relative to its own layer. ``normalize="rank"`` ranks within each group
    instead, so that every group loses the same fraction of its channels (uniform pruning, up to rounding and
    ``min_keep``).

    **Amount.** ``amount`` counts channels (filters): a float is the fraction of the listed groups' channels that
    are still unpruned, an int their number. A channel of a coupled group counts once. Like the built-in methods,
    pruning an already pruned model prunes ``amount`` of what is left. A budget instead, ``rlp.MACs(0.25)`` or
    ``rlp.Params(0.25)``, keeps at most that share of the sliced model's MACs per example or of its parameters
    (see :class:`~torch_rlprune.selection.Budget`); rankings and the width searches take one.

    **Rounding.** With ``round_to=8`` (or 16, ...) every group keeps a multiple of 8 of its unpruned channels, or
    all of them, so that the sliced layers (see :func:`torch_rlprune.slim`) have widths that fill SIMD registers
    and tensor-core tiles. Each group's ``min_keep`` is rounded up to a multiple (a group of fewer than 8 channels
    stays whole unless ``min_keep=0``), and the channels a group may lose are cut, in the group's order of score,
    into blocks of 8 that compete in the global ranking by their mean score, each pruned whole. Rounding goes
    towards keeping: at most ``amount`` filters are pruned, and fewer by less than ``round_to`` in all. The searches honour it too: each keep-set they propose is rounded the same way before it
    is evaluated (see :class:`torch_rlprune.search.RoundedStrategy`).

    Args:
        parameters (Iterable of (module, name) tuples): ``(conv, "weight")`` pairs whose filters may be pruned.
        pruning_method (type or str): ``prune.LnStructured``, ``prune.RandomStructured``, or a criterion name.
        importance_scores (dict, optional): maps ``(conv, "weight")`` to a tensor of the weight's shape or to
            one score per filter; used in place of the weights by ``prune.LnStructured``.
        model (torch.nn.Module): the model the convolutions belong to, traced to find the channel groups.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts (batch size 1 is enough).
        amount (int, float or Budget): the number (int) or fraction (float in [0, 1]) of unpruned filters to
            prune, or a :class:`~torch_rlprune.MACs` or :class:`~torch_rlprune.Params` budget.
        min_keep (int or float): filters each group keeps at least, as a count (default 1) or as a fraction of the
            group's channels. Pass 0 to allow a layer to lose every filter.
        round_to (int, optional): every group keeps a multiple of this many channels, or all of them, as
            described above. Default: ``None`` (no rounding; ``1`` is the same).
        normalize (str): how scores are made comparable across groups, as described above. Default: ``"mean"``.
        groups (ChannelGroups, optional): channel groups already computed for ``model``; saves a trace.
        kwargs: the method's own arguments: ``n`` for ``prune.LnStructured``; ``seed`` for
            ``prune.RandomStructured`` and ``"random"``; the criterion's arguments (e.g. ``inputs`` and
            ``targets`` for ``"snip"``, ``init_state`` for ``"same_sign"``).

    Returns:
        The :class:`~torch_rlprune.search.SearchResult` when ``pruning_method`` searches by reward
        (:class:`RLStructuredPruning`, :class:`SimulatedAnnealingPruning`, :class:`RandomSearchPruning`, whose
        arguments ``reward``, ``episodes``, ``seed``... go in ``kwargs``); ``None`` otherwise.

    Raises:
        TypeError: ``pruning_method`` is not structured or offers no scores, arguments of the wrong type.
        ValueError: an amount out of range or beyond what ``min_keep`` allows (rounded up to ``round_to``), a
            ``round_to`` below 1, an empty ``parameters``, a parameter that is not a convolution weight, no
            prunable group among ``parameters``.

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

        Keeping multiples of 16 filters in every layer, for tensor cores:

        >>> model = rlp.models.BasicCNN()
        >>> convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
        >>> rlp.global_structured(convs, prune.LnStructured, n=1, amount=0.7, round_to=16,
        ...                       model=model, example_inputs=torch.randn(1, 3, 32, 32))
        >>> small = rlp.slim(model, torch.randn(1, 3, 32, 32))
        >>> widths = [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)]
        >>> all(w % 16 == 0 for w in widths), sum(widths)  # 30% of 960 filters kept, 288, is a multiple of 16
        (True, 288)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_CALLER}: model= must be the torch.nn.Module the parameters belong to.")
    pairs = _check_parameters(parameters, model)
    criterion = _check_method(pruning_method, kwargs)
    block = check_round_to(round_to, _CALLER)
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
    chosen = ChannelGroups([g for g in groups if any(id(m.module) in listed for m in g.filters)], groups.excluded,
                           groups.sizes)  # fmt: skip
    covered = {id(m.module) for g in chosen for m in g.filters}
    name_of = {id(m): n for n, m in model.named_modules()}
    skipped = [f"'{name_of[id(m)]}' ({groups.excluded.get(name_of[id(m)], 'not reached by the traced forward')})"
               for m, _ in pairs if id(m) not in covered]  # fmt: skip
    if not chosen:
        raise ValueError(f"{_CALLER}: none of the given convolutions has prunable filters: {'; '.join(skipped)}.")
    if skipped:
        warnings.warn(f"{_CALLER}: skipping convolutions whose filters cannot be pruned: {'; '.join(skipped)}.")

    alive = [alive_channels(g) for g in chosen]
    sizes = [int(a.sum()) for a in alive]
    keep_min = min_keep_counts([g.size for g in chosen], min_keep, _CALLER)
    if isinstance(amount, Budget) and not takes_budget(pruning_method, **kwargs):
        name = pruning_method if isinstance(pruning_method, str) else pruning_method.__name__
        raise ValueError(
            f"{_CALLER}: {name} keeps a filter count and cannot meet a {type(amount).__name__} budget: use a ranking "
            "or a search over layer widths (RLStructuredPruning(policy='widths'), RandomWidthPruning), or pass a "
            "filter amount."
        )
    budget = _cost_budget(model, chosen, alive, example_inputs, amount, block)
    # Before any scoring or search, which may take long, so that an impossible budget fails at once.
    n_prune = 0 if budget else channels_to_prune(amount, sum(sizes), _CALLER)
    most = sum(sizes) - sum(keep_floors(keep_min, sizes, block))
    check_budget(sizes, n_prune, keep_min, _CALLER, block)

    if isinstance(pruning_method, type) and issubclass(pruning_method, _SearchPruning):
        if importance_scores is not None:
            raise ValueError(f"{_CALLER}: {pruning_method.__name__} searches by reward; it takes no importance_scores.")
        method = pruning_method(amount, min_keep=min_keep, round_to=round_to, **kwargs)
        keep = method.search_groups(model, chosen, alive, n_prune, keep_min, example_inputs, budget)
        apply_channel_masks(chosen, keep)
        return method.result
    if criterion is not None:
        # A criterion that prunes as it scores (SynFlow) works on the chosen groups and their budget only.
        context = {"example_inputs": example_inputs, "groups": chosen,
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
    if budget:
        cost_of, target = budget
        n_prune = fewest_to_prune(lambda n: cost_of(select_channels(scores, alive, n, keep_min, _CALLER, block)),
                                  most, target, _CALLER)  # fmt: skip
    keep = select_channels(scores, alive, n_prune, keep_min, caller=_CALLER, round_to=block)
    apply_channel_masks(chosen, keep)


def _refuse_tied_weights(model: nn.Module, groups: Sequence[ChannelGroup], budget: str) -> None:
    """Raise if a parameter that pruning may cut is shared between modules: the counts hold it once, but modules
    that keep different channels of it each get their own slice, so the sliced model could exceed the budget."""
    owners: dict[int, list[str]] = {}
    for name, module in model.named_modules():
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), []).append(name)
    members = {m.name for g in groups for m in g.members}
    for names in owners.values():
        if len(names) > 1 and members.intersection(names):
            raise ValueError(
                f"{_CALLER}: {', '.join(repr(n) for n in names)} share a parameter, which a {budget} budget cannot "
                "count once they keep different channels of it; pass a filter amount or a MACs budget."
            )


def _cost_budget(
    model: nn.Module,
    groups: Sequence[ChannelGroup],
    alive: Sequence[torch.Tensor],
    example_inputs: ExampleInputs,
    amount: Any,
    block: int,
) -> tuple[Callable[[Sequence[torch.Tensor]], int], float] | None:
    """For a :class:`Budget` (MACs, parameters), the cost of a keep-set over ``groups`` and the most it may keep;
    else ``None``."""
    if not isinstance(amount, Budget):
        validate_amount(amount, _CALLER)
        return None
    if block > 1:
        raise ValueError(
            f"{_CALLER}: round_to with a {type(amount).__name__} budget is not supported yet; pass a filter amount."
        )
    if amount.kept == "params_kept":
        _refuse_tied_weights(model, groups, type(amount).__name__)
    evaluator = CandidateEvaluator(model, groups, example_inputs)

    def cost_of(keep: Sequence[torch.Tensor]) -> int:
        return getattr(evaluator.stats(keep_vectors(groups, keep)), amount.kept)

    return cost_of, amount.fraction * cost_of(alive)


# --------------------------------------------------------------------------------------------------------------
# Methods that search for the mask: REINFORCE, simulated annealing, random search
# --------------------------------------------------------------------------------------------------------------


class _SearchPruning(prune.BasePruningMethod):
    """Shared machinery of the pruning methods that search keep-sets by their reward (see subclasses)."""

    PRUNING_TYPE = "structured"
    kind = ""
    default_batch = 1

    def __init__(
        self,
        amount: float | int,
        reward: Callable[[nn.Module], float],
        dim: int = 0,
        *,
        episodes: int = 1000,
        batch: int | None = None,
        seed: int | None = None,
        min_keep: float | int = 1,
        round_to: int | None = None,
        norms: str = "batch",
        evaluation: str = "auto",
        progress: bool = True,
        writer: Any = None,
        callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
        checkpoint: Any = None,
        checkpoint_every: int = 50,
        resume: Any = None,
        distributed: Any = False,
        finalists: int = 0,
        final_reward: Callable[[nn.Module], float] | None = None,
        _target: tuple[nn.Module, str] | None = None,
        **options: Any,
    ) -> None:
        name = type(self).__name__
        validate_amount(amount, name)
        if not callable(reward):
            raise TypeError(
                f"{name}: reward must be a callable reward(model) -> float, such as "
                "torch_rlprune.search.rewards.Accuracy(val_loader, batches=2); got "
                f"{type(reward).__name__}."
            )
        if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
            raise ValueError(f"{name}: episodes must be an int >= 1 (rewards to evaluate), got {episodes!r}.")
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ValueError(f"{name}: batch must be an int >= 1 (candidates per step) or None, got {batch!r}.")
        if dim != 0:
            raise ValueError(f"{name}: dim={dim} is not supported; filters are pruned along dim 0.")
        if isinstance(finalists, bool) or not isinstance(finalists, int) or not 0 <= finalists < episodes:
            raise ValueError(f"{name}: finalists must be an int in [0, episodes), got {finalists!r}.")
        if finalists and not callable(final_reward):
            raise ValueError(
                f"{name}: finalists={finalists} needs final_reward, a reward on validation batches the search does "
                "not use (e.g. rlp.rewards.Accuracy(other_val_loader)), to re-score the finalists with."
            )
        self.finalists, self.final_reward = finalists, final_reward
        self.round_to = check_round_to(round_to, name)
        unknown = set(options) - set(self.option_names)
        if unknown:
            raise TypeError(f"{name} got unexpected argument(s) {', '.join(sorted(unknown))}; it takes "
                            f"{', '.join(self.option_names) or 'no method options'}.")  # fmt: skip
        self.amount, self.reward, self.dim = amount, reward, dim
        self.episodes, self.batch, self.seed = episodes, self.default_batch if batch is None else batch, seed
        if evaluation not in MODES:
            raise ValueError(f"{name}: evaluation must be one of {', '.join(map(repr, MODES))}, got {evaluation!r}.")
        self.min_keep, self.norms, self.evaluation, self.options = min_keep, norms, evaluation, options
        self.run_options = {"progress": progress, "writer": writer, "callbacks": callbacks, "checkpoint": checkpoint,
                            "checkpoint_every": checkpoint_every, "resume": resume,
                            "distributed": distributed}  # fmt: skip
        self._target = _target
        self._cost: tuple[Callable[[torch.Tensor], int], float] | None = None  # a cost budget, see search_groups
        # The features' column that width searches rank filters by inside a group: relative L1 unless a saliency
        # was given to search_groups (then its column, the last).
        self._rank_column = 0
        #: the :class:`~torch_rlprune.search.SearchResult` of the last search
        self.result: SearchResult | None = None

    option_names: tuple[str, ...] = ()

    def _strategy(
        self, features: torch.Tensor, group_sizes: list[int], n_keep: int, min_keep: list[int], device: torch.device
    ) -> SearchStrategy:
        raise NotImplementedError

    def search(
        self,
        features: torch.Tensor,
        group_sizes: list[int],
        n_keep: int,
        min_keep: list[int],
        evaluate: Callable[..., float],
        device: torch.device,
    ) -> SearchResult:
        """Run the search over ``sum(group_sizes)`` filters and remember its result in :attr:`result`.

        ``evaluate(keep)`` returns the reward of a keep-set, ``evaluate(keep, reward)`` that of another reward.
        With ``finalists``, the search spends that many of its ``episodes`` re-scoring its best keep-sets with
        ``final_reward`` and keeps the one that scores highest there: the best of many noisy rewards is
        overrated, and fresh data tells the finalists apart without that bias.
        """
        strategy = self._strategy(features, group_sizes, n_keep, min_keep, device)
        if self.round_to > 1:
            # Column 0 of both callers' features is the filter's L1 norm relative to its layer's mean.
            strategy = RoundedStrategy(strategy, self.round_to, min_keep, features[:, 0])
        result = run_search(strategy, evaluate, episodes=self.episodes - self.finalists, batch=self.batch,
                            finalists=self.finalists, **self.run_options)  # fmt: skip
        if self.finalists and not result.interrupted:
            result.final_rewards = [check_reward(evaluate(keep, self.final_reward), self.final_reward)
                                    for _, keep in result.finalists]  # fmt: skip
            chosen = max(range(len(result.finalists)), key=result.final_rewards.__getitem__)
            result.best_reward, result.best_keep = result.finalists[chosen]
            result.evaluations += len(result.finalists)
        self.result = result
        return self.result

    @classmethod
    def apply(cls, module, name, amount, reward, importance_scores=None, **kwargs):  # type: ignore[override]
        r"""Prune ``module.<name>``'s filters (dim 0) found by the search, as ``prune.LnStructured.apply`` does.

        During the search the module's ``name`` holds each candidate's masked tensor and ``reward(module)`` is
        called; a reward for one layer is usually a closure over the whole model, e.g.
        ``reward=lambda _: accuracy(model)``.
        """
        return super().apply(module, name, amount, reward, importance_scores=importance_scores,
                             _target=(module, name), **kwargs)  # fmt: skip

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        if self._target is None:
            raise TypeError(f"{type(self).__name__}.compute_mask needs a module: use .apply(module, name, ...).")
        module, name = self._target
        orig = getattr(module, name + "_orig")
        current = getattr(module, name + "_mask", torch.ones_like(orig))
        alive = current.flatten(1).ne(0).any(dim=1).cpu()
        n_alive = int(alive.sum())
        n_prune = channels_to_prune(self.amount, n_alive, type(self).__name__)
        keep_min = keep_floors(min_keep_counts([alive.numel()], self.min_keep, type(self).__name__), [n_alive],
                               self.round_to)  # fmt: skip
        check_budget([n_alive], n_prune, keep_min, type(self).__name__, self.round_to)
        rows = alive.nonzero().reshape(-1)
        weights = orig.detach()[rows.to(orig.device)].flatten(1).float()
        features = torch.stack([_relative(weights.abs().sum(1)), _relative(weights.norm(dim=1))], dim=1).cpu()
        had, before = hasattr(module, name), getattr(module, name, None)

        def candidate_mask(keep: torch.Tensor) -> torch.Tensor:
            full = torch.zeros(alive.numel(), dtype=torch.bool)
            full[rows[keep.cpu()]] = True
            return current * full.to(current.device).view(-1, *([1] * (current.dim() - 1)))

        def evaluate(keep: torch.Tensor, reward: Callable[[nn.Module], Any] = self.reward) -> float:
            setattr(module, name, orig * candidate_mask(keep))
            return check_reward(reward(module), reward)

        try:
            result = self.search(features, [n_alive], n_alive - n_prune, keep_min, evaluate, orig.device)
        finally:
            if had:
                setattr(module, name, before)
            elif name in module.__dict__:
                delattr(module, name)
        mask = candidate_mask(result.best_keep)
        # Inside a PruningContainer, t holds only the rows still alive.
        return (mask if t.shape[0] == mask.shape[0] else mask[rows.to(mask.device)]).to(default_mask) * default_mask

    def search_groups(
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        alive: Sequence[torch.Tensor],
        n_prune: int,
        keep_min: Sequence[int],
        example_inputs: ExampleInputs,
        budget: tuple[Callable[[Sequence[torch.Tensor]], int], float] | None = None,
    ) -> list[torch.Tensor]:
        """Search the alive channels of ``groups`` for the best keep-set of their size minus ``n_prune``, or,
        with a ``budget`` (the cost of a keep-set, such as its MACs, and the most it may keep), the best within it."""
        if budget is not None and not self.widths_only:
            raise ValueError(
                f"{type(self).__name__}: a MACs or parameter budget needs a search over layer widths, whose proposals "
                "can be sized to it: RLStructuredPruning(policy='widths') or RandomWidthPruning; or pass a filter "
                "amount."
            )
        sizes = [int(a.sum()) for a in alive]
        floors = keep_floors(keep_min, sizes, self.round_to)
        check_budget(sizes, n_prune, floors, type(self).__name__, self.round_to)
        rows = torch.cat([a for a in alive])
        saliency = self.options.get("saliency")
        if saliency is None and self.ranks_by_bn_output:
            saliency = _bn_output_of(model, groups, example_inputs)
        features = filter_features(model, groups, saliency=saliency)[rows]
        self._rank_column = features.shape[1] - 1 if saliency is not None else 0
        evaluator = CandidateEvaluator(model, groups, example_inputs, norms=self.norms, mode=self.evaluation)
        bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()

        def unflatten(flat: torch.Tensor) -> list[torch.Tensor]:
            keep = []
            for a, lo, hi in zip(alive, bounds, bounds[1:]):
                k = torch.zeros_like(a)
                k[a.nonzero().reshape(-1)] = flat[lo:hi].cpu()
                keep.append(k)
            return keep

        def evaluate(flat: torch.Tensor, reward: Callable[[nn.Module], Any] = self.reward) -> float:
            with torch.no_grad():
                return check_reward(reward(evaluator.view(unflatten(flat))), reward)

        self._cost = None
        if budget is not None:
            cost_of, most = budget
            # The width searches keep the highest-ranked filters of each group, so a count per group is a keep-set,
            # and it has a cost.
            ranking = self._ranking(features)
            self._cost = (lambda counts: cost_of(unflatten(keep_top(counts[None], ranking, sizes)[0])), most)
        device = device_of(model)
        with evaluator.active():
            result = self.search(features, sizes, sum(sizes) - n_prune, floors, evaluate, device)
        return unflatten(result.best_keep)

    #: whether the method proposes layer widths, and so can size them to a MACs or parameter budget
    widths_only = False
    #: whether, given no ``saliency``, it ranks a model's filters by :func:`~torch_rlprune.criteria.bn_output`
    #: where batch norms follow all of them (through :func:`global_structured`), instead of by L1 norm
    ranks_by_bn_output = False

    @classmethod
    def proposes_widths(cls, options: Mapping[str, Any]) -> bool:
        """Whether the method, given ``options``, searches over layer widths through :func:`global_structured`.

        Args:
            options (dict): the method's options, as :func:`global_structured` passes them.

        Returns:
            bool: what :attr:`widths_only` will be.

        Example:
            >>> RandomWidthPruning.proposes_widths({}), SimulatedAnnealingPruning.proposes_widths({})
            (True, False)
        """
        return cls.widths_only

    def _ranking(self, features: torch.Tensor) -> torch.Tensor:
        """What width searches rank filters by inside a group: the saliency column if any, else relative L1."""
        column = features[:, self._rank_column]
        # L1 breaks the saliency's ties: at initialisation bn_output is the same for every filter (gamma 1, var 1).
        return column if self._rank_column == 0 else column + 1e-3 * features[:, 0]

    def _width_budget(self) -> dict[str, Any]:
        """The ``cost`` and ``budget`` options of a width strategy: the cost budget of the search, if any."""
        return {} if self._cost is None else {"cost": self._cost[0], "budget": self._cost[1]}


def _bn_output_of(
    model: nn.Module, groups: Sequence[ChannelGroup], example_inputs: ExampleInputs
) -> ImportanceScores | None:
    """:func:`criteria.bn_output`'s scores if a batch norm follows some filter of every group, else ``None``."""
    try:
        scores = criteria.bn_output(model, example_inputs)
    except ValueError:  # no batch norm anywhere
        return None
    return scores if all(any((m.module, "weight") in scores for m in g.filters) for g in groups) else None


def _relative(values: torch.Tensor) -> torch.Tensor:
    mean = values.mean()
    return values / mean if mean > 0 else torch.zeros_like(values)


class RLStructuredPruning(_SearchPruning):
    r"""Prune the filters that a REINFORCE controller learns to drop, rewarded by the pruned network's quality.

    The action is a keep-set of exactly the budgeted number of filters (and at least ``min_keep`` per layer) with
    an exact log-probability, so that the REINFORCE estimate :math:`(R - b)\,\nabla \log p(\text{action})` is
    unbiased. Two policies draw it:

    - ``policy="widths"``, the default through :func:`global_structured`: a keep fraction per channel group
      (Gaussian logits, projected onto the budget), and inside each group the filters drawn without replacement
      from a Plackett-Luce policy whose logits start from a ranking, :func:`torch_rlprune.criteria.bn_output`
      where batch norms follow the filters (it needs no data and ranks channels that never fire last), else the
      L1 norm (``filters="learned"``); ``filters="ranked"`` keeps each group's top of the ranking instead.
      Rewards are standardised within each batch. See :class:`torch_rlprune.search.widths.WidthReinforceStrategy`.
    - ``policy="filters"``, the default for one tensor (:meth:`apply`, :func:`rl_structured`, which have one
      width): a Plackett-Luce policy over all filters, drawn by the Gumbel-top-k trick, whose logits come from a
      small network shared across filters fed per-filter features (relative L1 norm, BN scale, layer depth and
      width; see :func:`torch_rlprune.search.features.filter_features`) plus a learnable per-filter term; trained
      with Adam, a moving-average baseline and an entropy bonus (see
      :class:`torch_rlprune.search.controller.ReinforceController`).

    Either is updated every ``batch`` episodes; the best keep-set seen becomes the mask. Why the width policy is
    the default, with the numbers: ``docs/search.rst``, "Which reward and which policy".

    Through :func:`torch_rlprune.global_structured` the search runs over the channel groups of a whole model and
    each candidate is evaluated without a copy of the model (see :class:`torch_rlprune.search.evaluation.CandidateModel`):
    ``reward`` receives a module that computes what the candidate-masked model computes, with batch norms
    normalising by the batch's own statistics (``norms="batch"``; ``"eval"`` uses the running statistics); on the
    CPU it runs the sliced network, at a cost that falls with sparsity. The model's weights, buffers, modes and
    ``requires_grad`` are as before once the search ends; only the masks are new.

    Args:
        amount (int or float): filters to prune: a fraction of the unpruned ones or their number.
        reward (callable): ``reward(model) -> float``, higher is better, computed on validation data (see
            :mod:`torch_rlprune.search.rewards`).
        dim (int): must be 0 (filters). Default: 0.
        episodes (int): rewards to evaluate in all. Default: 1000, as many as EagleEye evaluates; with 500 the
            width policy found 0.85-0.88 of the filters a planted problem wants, with 1000 0.95-0.98
            (``tests/test_widths.py``).
        batch (int): episodes per policy update. Default: 8.
        seed (int, optional): the same seed gives the same search and the same mask.
        min_keep (int or float): filters each layer keeps at least. Default: 1.
        round_to (int, optional): every layer keeps a multiple of this many filters (or all of them): each
            proposed keep-set is rounded before it is evaluated (see :class:`torch_rlprune.search.RoundedStrategy`),
            keeping at least the budget and less than ``round_to`` filters over it. Default: ``None``.
        norms (str): ``"batch"`` or ``"eval"``, the statistics batch norms use while evaluating. Default:
            ``"batch"``.
        evaluation (str): how a candidate runs: ``"slice"`` (the sliced network), ``"mask"`` (the dense one with
            the pruned weights zeroed) or ``"auto"``, slicing on the CPU and masking on a GPU (see
            :class:`torch_rlprune.search.evaluation.CandidateEvaluator`); used by :func:`global_structured` only.
            Default: ``"auto"``.
        progress (bool): tqdm progress bar where installed. Default: ``True``.
        writer (SummaryWriter, optional): TensorBoard writer for the search history.
        callbacks (sequence of callable): called with every history record.
        checkpoint (path, optional): file the search state is written to atomically every ``checkpoint_every``
            episodes; ``resume`` continues from such a file.
        distributed (bool or ProcessGroup): share each batch's evaluations between the processes of a
            :mod:`torch.distributed` job (see :func:`torch_rlprune.search.run_search`); every rank gets the mask
            a single process would find with the same seed. Default: ``False``.
        finalists (int): spend this many of the ``episodes`` re-scoring the best keep-sets found with
            ``final_reward`` and keep the one scoring highest there (the best of many noisy rewards is
            overrated; fresh data is not). Default: 0.
        final_reward (callable, optional): the reward the finalists are re-scored with, on validation batches
            that ``reward`` does not use. Needed with ``finalists``.
        policy (str): ``"widths"`` or ``"filters"``, as above. Default: ``"widths"`` through
            :func:`global_structured`, ``"filters"`` for one tensor.
        saliency (dict, optional): per-filter scores keyed by ``(conv, "weight")``, such as
            :func:`torch_rlprune.criteria.snip` returns: with ``policy="filters"`` one more feature per filter for
            the policy (see :func:`torch_rlprune.search.features.filter_features`), with ``policy="widths"`` the
            ranking inside each group (instead of ``bn_output`` or L1); used by :func:`global_structured` only.
        filters, lr, std, min_std, max_std: options of the width policy (see
            :class:`~torch_rlprune.search.widths.WidthReinforceStrategy`).
        lr, entropy_coef, baseline, baseline_decay, hidden: options of the per-filter policy (see
            :class:`~torch_rlprune.search.controller.ReinforceController`).

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> import torch_rlprune as rlp
        >>> model = rlp.models.BasicCNN(width=0.25)
        >>> x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
        >>> convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
        >>> result = rlp.global_structured(
        ...     convs, rlp.RLStructuredPruning, amount=0.5, model=model, example_inputs=x[:1],
        ...     reward=rlp.rewards.NegativeLoss([(x, y)]), episodes=16, seed=0, progress=False)
        >>> result.evaluations, sum(int(m.weight_mask.flatten(1).any(1).sum()) for m, _ in convs)
        (16, 120)
    """

    kind = "rl"
    default_batch = 8
    #: the options each ``policy`` takes (besides ``policy`` itself)
    policy_options = {"filters": ("lr", "entropy_coef", "baseline", "baseline_decay", "hidden", "saliency"),
                      "widths": ("filters", "lr", "std", "min_std", "max_std", "saliency")}  # fmt: skip
    option_names = ("policy", *dict.fromkeys(o for names in policy_options.values() for o in names))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # One tensor has one width: what there is to learn is which filters it keeps.
        policy = self._policy_of(self.options, "widths" if self._target is None else "filters")
        other = sorted(set(self.options) - {"policy", *self.policy_options[policy]})
        if other:
            raise TypeError(f"RLStructuredPruning: {', '.join(other)} are not options of policy={policy!r}; it takes "
                            f"{', '.join(self.policy_options[policy])}.")  # fmt: skip
        self.policy = policy
        self.widths_only = self.ranks_by_bn_output = policy == "widths"

    @classmethod
    def proposes_widths(cls, options: Mapping[str, Any]) -> bool:
        """The width policy, the default over a whole model, proposes widths (see :meth:`_SearchPruning.proposes_widths`).

        Example:
            >>> RLStructuredPruning.proposes_widths({}), RLStructuredPruning.proposes_widths({"policy": "filters"})
            (True, False)
        """
        return cls._policy_of(options, "widths") == "widths"

    @classmethod
    def _policy_of(cls, options: Mapping[str, Any], default: str) -> str:
        policy = options.get("policy", default)
        if policy not in cls.policy_options:
            raise ValueError(f"RLStructuredPruning: policy must be one of {', '.join(map(repr, cls.policy_options))}, "
                             f"got {policy!r}.")  # fmt: skip
        return policy

    def _strategy(self, features, group_sizes, n_keep, min_keep, device):  # type: ignore[no-untyped-def]
        options = {k: v for k, v in self.options.items() if k not in ("saliency", "policy")}
        if self.policy == "widths":
            return WidthReinforceStrategy(group_sizes, n_keep, min_keep, self._ranking(features),
                                          seed=self.seed, **self._width_budget(), **options)  # fmt: skip
        controller = ReinforceController(features, group_sizes, n_keep, min_keep, seed=self.seed, device=device,
                                         **options)  # fmt: skip
        return ReinforceStrategy(controller)


class SimulatedAnnealingPruning(_SearchPruning):
    r"""Prune the filters that simulated annealing over keep-sets finds, the thesis' final method.

    Same interface, reward, budget and evaluation as :class:`RLStructuredPruning`; the search is
    :class:`torch_rlprune.search.AnnealingStrategy`: swap ``k`` kept and pruned filters, accept by the Metropolis
    rule, with a geometric temperature schedule and a neighbourhood that shrinks as the temperature falls.

    It takes the arguments of :class:`RLStructuredPruning` (``amount``, ``reward``, ``episodes``, ``seed``,
    ``min_keep``, ``round_to``, ``norms``, ``checkpoint``, ...), with ``batch`` neighbours per step (default 1),
    and these options:

    Args:
        t_start (float): initial temperature, in reward units. Default: 0.05.
        t_end (float): final temperature. Default: 0.0005.
        swaps (int, optional): swaps of the first neighbourhoods. Default: 5% of the filters kept.
        start (torch.Tensor, optional): the keep-set to start from, over the searched filters in group order.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> conv = torch.nn.Conv2d(3, 8, 3)
        >>> wanted = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 0])
        >>> reward = lambda m: float((m.weight.flatten(1).abs().sum(1) > 0).float() @ wanted)
        >>> method = rlp.SimulatedAnnealingPruning.apply(conv, "weight", 6, reward, episodes=60, seed=0,
        ...                                              progress=False)
        >>> conv.weight_mask.flatten(1).any(1).nonzero().flatten().tolist()
        [0, 3]
    """

    kind = "sa"
    option_names = ("t_start", "t_end", "swaps", "start")

    def _strategy(self, features, group_sizes, n_keep, min_keep, device):  # type: ignore[no-untyped-def]
        return AnnealingStrategy(group_sizes, n_keep, min_keep, self.episodes, seed=self.seed, **self.options)


class RandomSearchPruning(_SearchPruning):
    r"""Prune the best of ``episodes`` uniformly random keep-sets: the baseline that searches must beat.

    Same interface, reward, budget and evaluation as :class:`RLStructuredPruning`, so that RL, simulated
    annealing and random search are compared on equal evaluation budgets.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> conv = torch.nn.Conv2d(3, 8, 3)
        >>> method = rlp.RandomSearchPruning.apply(conv, "weight", 0.5, lambda m: 0.0, episodes=4, seed=0,
        ...                                        progress=False)
        >>> int(conv.weight_mask.flatten(1).any(1).sum()), method.result.evaluations
        (4, 4)
    """

    kind = "random"

    def _strategy(self, features, group_sizes, n_keep, min_keep, device):  # type: ignore[no-untyped-def]
        return RandomStrategy(group_sizes, n_keep, min_keep, seed=self.seed)


class RandomWidthPruning(_SearchPruning):
    r"""Prune to the best of ``episodes`` random layer widths, each layer keeping its largest-L1 filters.

    The EagleEye-style baseline (Li et al., 2020): every candidate draws one keep fraction per channel group
    uniformly from ``[low, high]``, projects the fractions onto the budget
    (:func:`torch_rlprune.search.widths.counts_for_fractions`) and keeps the filters of largest L1 norm in each group
    (:class:`torch_rlprune.search.widths.RandomWidthStrategy`). Same interface, reward, budget and evaluation as
    :class:`RLStructuredPruning`, so that the searches are compared on equal evaluation budgets.

    Args:
        low (float): smallest keep fraction drawn. Default: 0.05.
        high (float): largest keep fraction drawn. Default: 1.0.
        saliency (dict, optional): per-filter scores keyed by ``(conv, "weight")``, such as
            :func:`torch_rlprune.criteria.snip` returns: each group keeps its filters of highest saliency instead of
            largest L1 norm (through :func:`global_structured`).

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> model = rlp.models.BasicCNN(width=0.25)
        >>> x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
        >>> convs = [(m, "weight") for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        >>> result = rlp.global_structured(
        ...     convs, rlp.RandomWidthPruning, amount=0.5, model=model, example_inputs=x[:1],
        ...     reward=rlp.rewards.NegativeLoss([(x, y)]), episodes=8, seed=0, progress=False)
        >>> result.evaluations, sum(int(m.weight_mask.flatten(1).any(1).sum()) for m, _ in convs)
        (8, 120)
    """

    kind = "random-width"
    option_names = ("low", "high", "saliency")
    widths_only = True

    def _strategy(self, features, group_sizes, n_keep, min_keep, device):  # type: ignore[no-untyped-def]
        options = {k: v for k, v in self.options.items() if k != "saliency"}
        return RandomWidthStrategy(group_sizes, n_keep, min_keep, self._ranking(features), seed=self.seed,
                                   **self._width_budget(), **options)  # fmt: skip


#: The search methods by name: what the command's ``--method`` and the benchmarks offer beside the criteria of
#: :data:`torch_rlprune.criteria.CRITERIA`. A new search method is added here, and everything that lists methods
#: reads it.
SEARCH_METHODS: dict[str, type[_SearchPruning]] = {
    "rl": RLStructuredPruning,
    "sa": SimulatedAnnealingPruning,
    "random": RandomSearchPruning,
    "random_width": RandomWidthPruning,
}


def takes_budget(pruning_method: type | str, **options: Any) -> bool:
    r"""Whether :func:`global_structured` can prune with ``pruning_method`` under a MACs or parameter budget.

    Rankings can (``prune.LnStructured``, ``prune.RandomStructured``, a criterion that scores before pruning),
    and so can searches that propose layer widths; searches over single filters and criteria that prune as they
    score (SynFlow) keep a filter count.

    Args:
        pruning_method (type or str): as for :func:`global_structured`.
        options: the method's options (``policy`` of :class:`RLStructuredPruning`).

    Returns:
        bool: whether it takes a :class:`~torch_rlprune.selection.Budget`; ``False`` for what
        :func:`global_structured` does not take at all (an unstructured method, say).

    Raises:
        ValueError: an unknown criterion name, or an unknown ``policy`` of :class:`RLStructuredPruning`.

    Example:
        >>> takes_budget(RLStructuredPruning), takes_budget(RLStructuredPruning, policy="filters")
        (True, False)
        >>> takes_budget("l1"), takes_budget("synflow"), takes_budget(SimulatedAnnealingPruning)
        (True, False, False)
        >>> takes_budget(prune.LnStructured), takes_budget(prune.L1Unstructured)
        (True, False)
    """
    if isinstance(pruning_method, str):
        return "amount" not in inspect.signature(criteria.get(pruning_method)).parameters
    if isinstance(pruning_method, type) and issubclass(pruning_method, _SearchPruning):
        return pruning_method.proposes_widths(options)
    return pruning_method in (prune.LnStructured, prune.RandomStructured)


def rl_structured(
    module: nn.Module, name: str, amount: float | int, reward: Callable[[nn.Module], float], dim: int = 0,
    **kwargs: Any,
) -> nn.Module:
    r"""Prune filters of ``module.<name>`` chosen by :class:`RLStructuredPruning`, like ``prune.ln_structured``.

    ``reward(module)`` is called with the module holding each candidate's masked tensor; it is usually a closure
    that evaluates the whole model. To search a whole model's filters at once, with fast sliced evaluation, use
    :func:`global_structured` with ``pruning_method=RLStructuredPruning``.

    Args:
        module (torch.nn.Module): module containing the tensor to prune.
        name (str): parameter name within ``module``, e.g. ``"weight"``.
        amount (int or float): filters to prune: a fraction of the unpruned ones or their number.
        reward (callable): ``reward(module) -> float``, higher is better, on validation data.
        dim (int): must be 0. Default: 0.
        kwargs: the options of :class:`RLStructuredPruning` (``episodes``, ``batch``, ``seed``, ...).

    Returns:
        torch.nn.Module: ``module``, pruned.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> conv = torch.nn.Conv2d(3, 8, 3)
        >>> reward = lambda m: float(m.weight.flatten(1).abs().sum(1)[:4].gt(0).sum())
        >>> m = rlp.rl_structured(conv, "weight", amount=4, reward=reward, episodes=200, seed=0, progress=False)
        >>> m.weight_mask.flatten(1).any(1).tolist()
        [True, True, True, True, False, False, False, False]
    """
    RLStructuredPruning.apply(module, name, amount, reward, dim=dim, **kwargs)
    return module
