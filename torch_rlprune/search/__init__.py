"""The search family: choosing the filters to keep by the reward of the pruned network.

One module per idea, in the order the data flows:

- :mod:`~torch_rlprune.search.features`: per-filter features, what the per-filter policy sees;
- :mod:`~torch_rlprune.search.keepsets`: the two-stage Plackett-Luce distribution over keep-sets, its exact
  log-probability and entropy;
- :mod:`~torch_rlprune.search.controller`: the per-filter REINFORCE policy and its controller;
- :mod:`~torch_rlprune.search.widths`: searching layer widths (one keep fraction per group) instead;
- :mod:`~torch_rlprune.search.strategies`: REINFORCE, simulated annealing, random and rounded strategies;
- :mod:`~torch_rlprune.search.evaluation`: running a candidate without copying the model;
- :mod:`~torch_rlprune.search.rewards`: what a candidate is worth;
- :mod:`~torch_rlprune.search.loop`: :func:`run_search`, the loop every strategy runs in.

The pruning methods that use them (:class:`torch_rlprune.RLStructuredPruning` and its siblings) are in
:mod:`torch_rlprune.methods`.
"""

from . import controller, evaluation, features, keepsets, loop, rewards, strategies, widths
from .loop import SearchResult, SearchStrategy, run_search
from .strategies import AnnealingStrategy, RandomStrategy, ReinforceStrategy, RoundedStrategy
from .widths import RandomWidthStrategy, WidthReinforceStrategy

__all__ = [
    "controller",
    "evaluation",
    "features",
    "keepsets",
    "loop",
    "rewards",
    "strategies",
    "widths",
    "SearchStrategy",
    "SearchResult",
    "run_search",
    "ReinforceStrategy",
    "AnnealingStrategy",
    "RandomStrategy",
    "RoundedStrategy",
    "RandomWidthStrategy",
    "WidthReinforceStrategy",
]
