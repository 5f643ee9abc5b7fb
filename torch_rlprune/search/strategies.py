"""The search strategies: how candidates are proposed and what is learnt from their rewards.

Each implements :class:`~torch_rlprune.search.loop.SearchStrategy` for :func:`~torch_rlprune.search.run_search`:
REINFORCE over filters (:class:`ReinforceStrategy`), uniformly random keep-sets (:class:`RandomStrategy`),
simulated annealing (:class:`AnnealingStrategy`), and any of them rounded to whole blocks of filters
(:class:`RoundedStrategy`). The layer-width strategies live in :mod:`torch_rlprune.search.widths`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ..selection import select_channels
from .controller import ReinforceController
from .keepsets import sample_keep
from .loop import SearchStrategy

__all__ = ["ReinforceStrategy", "RandomStrategy", "AnnealingStrategy", "RoundedStrategy"]


class ReinforceStrategy:
    """REINFORCE over keep-sets (:class:`~torch_rlprune.search.controller.ReinforceController`); records the entropy.

    Args:
        controller (ReinforceController): the policy and its optimiser.
    """

    kind = "rl"

    def __init__(self, controller: ReinforceController) -> None:
        self.controller = controller
        self.group_sizes = list(controller.group_sizes)
        self.n_keep = controller.n_keep

    def propose(self, n: int) -> tuple[torch.Tensor, Any]:
        keep, orders = self.controller.sample(n)
        return keep, orders

    def observe(self, token: Any, keep: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        return self.controller.update(token, rewards)

    def state_dict(self) -> dict[str, Any]:
        return self.controller.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.controller.load_state_dict(state)


def seeded_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed``, or from the system's entropy when ``seed`` is ``None``.

    Args:
        seed (int, optional): the seed.

    Returns:
        torch.Generator: the generator.

    Example:
        >>> import torch
        >>> torch.equal(torch.rand(2, generator=seeded_generator(3)), torch.rand(2, generator=seeded_generator(3)))
        True
    """
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


class BlindStrategy:
    """The state and the learning of a strategy that draws independent proposals and learns nothing: a seeded
    generator, which is all its checkpoint holds. Subclasses draw in :meth:`propose`."""

    def __init__(self, seed: int | None) -> None:
        self.generator = seeded_generator(seed)

    def observe(self, token: Any, keep: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class RandomStrategy(BlindStrategy):
    """Uniformly random keep-sets (honouring ``min_keep``): the baseline every search must beat.

    Args:
        group_sizes (sequence of int): filters per group.
        n_keep (int): filters every keep-set holds.
        min_keep (sequence of int): filters each group keeps at least.
        seed (int, optional): seeds the sampling.
    """

    kind = "random"

    def __init__(self, group_sizes: Sequence[int], n_keep: int, min_keep: Sequence[int], seed: int | None = None) -> None:
        super().__init__(seed)
        self.group_sizes, self.n_keep, self.min_keep = list(group_sizes), n_keep, list(min_keep)

    def propose(self, n: int) -> tuple[torch.Tensor, Any]:
        flat = torch.zeros(n, sum(self.group_sizes))
        keep, _ = sample_keep(flat, self.n_keep, self.group_sizes, self.min_keep, self.generator)
        return keep, None


class AnnealingStrategy:
    r"""Simulated annealing over keep-sets, the thesis' final method.

    From the current keep-set, a neighbour swaps ``k`` kept filters for ``k`` pruned ones (never taking a group
    below its minimum). It is accepted if its reward is higher, or else with probability
    :math:`\exp(\Delta / T)`. The temperature falls geometrically from ``t_start`` to ``t_end`` over
    ``episodes`` evaluations, and the neighbourhood shrinks with it: :math:`k = \max(1, \lceil k_0 T / T_0 \rceil)`,
    from ``k_0 = swaps`` at the start to single swaps at the end. With ``n`` candidates per step (a batch), the
    best of ``n`` neighbours is the one put to the acceptance test.

    Args:
        group_sizes (sequence of int): filters per group.
        n_keep (int): filters every keep-set holds.
        min_keep (sequence of int): filters each group keeps at least.
        episodes (int): evaluations the schedule spans.
        start (torch.Tensor, optional): ``[N]`` boolean keep-set to start from (e.g. the L1 ranking's); a random
            one by default.
        t_start (float): initial temperature, in reward units. Default: 0.05 (5 accuracy points).
        t_end (float): final temperature. Default: 0.0005.
        swaps (int, optional): swaps of the first neighbourhoods. Default: 5% of ``n_keep`` (at least 1).
        seed (int, optional): seeds the proposals and the acceptance tests.
    """

    kind = "sa"

    def __init__(
        self,
        group_sizes: Sequence[int],
        n_keep: int,
        min_keep: Sequence[int],
        episodes: int,
        *,
        start: torch.Tensor | None = None,
        t_start: float = 0.05,
        t_end: float = 0.0005,
        swaps: int | None = None,
        seed: int | None = None,
    ) -> None:
        if not 0 < t_end <= t_start:
            raise ValueError(f"AnnealingStrategy: need 0 < t_end <= t_start, got t_start={t_start}, t_end={t_end}.")
        self.group_sizes, self.n_keep, self.min_keep = list(group_sizes), n_keep, list(min_keep)
        self.t_start, self.t_end = float(t_start), float(t_end)
        self.decay = (t_end / t_start) ** (1.0 / max(1, episodes))
        self.swaps = max(1, round(0.05 * n_keep)) if swaps is None else int(swaps)
        self.generator = seeded_generator(seed)
        self.group_of = torch.repeat_interleave(torch.arange(len(group_sizes)), torch.tensor(group_sizes))
        if start is None:
            start, _ = sample_keep(torch.zeros(sum(group_sizes)), n_keep, group_sizes, min_keep, self.generator)
        elif not isinstance(start, torch.Tensor) or start.shape != (sum(group_sizes),):
            got = tuple(start.shape) if isinstance(start, torch.Tensor) else type(start).__name__
            raise ValueError(
                f"AnnealingStrategy: start must be a boolean tensor of shape ({sum(group_sizes)},), one entry per "
                f"searched filter in group order, got {got}."
            )
        elif int(start.bool().sum()) != n_keep:
            raise ValueError(
                f"AnnealingStrategy: start keeps {int(start.bool().sum())} filters but the budget keeps {n_keep}; "
                "start from a keep-set of the same amount."
            )
        self.current = start.clone().bool()
        self.current_reward: float | None = None
        self.temperature = self.t_start

    def _neighbour(self) -> torch.Tensor:
        keep = self.current.clone()
        k = max(1, math.ceil(self.swaps * self.temperature / self.t_start))
        kept_per_group = torch.bincount(self.group_of[keep], minlength=len(self.group_sizes))
        floor = torch.tensor(self.min_keep)
        for _ in range(k):
            droppable = (keep & (kept_per_group > floor)[self.group_of]).nonzero().reshape(-1)
            addable = (~keep).nonzero().reshape(-1)
            if droppable.numel() == 0 or addable.numel() == 0:
                break
            out = droppable[torch.randint(droppable.numel(), (1,), generator=self.generator)]
            into = addable[torch.randint(addable.numel(), (1,), generator=self.generator)]
            keep[out], keep[into] = False, True
            kept_per_group[self.group_of[out]] -= 1
            kept_per_group[self.group_of[into]] += 1
        return keep

    def propose(self, n: int) -> tuple[torch.Tensor, Any]:
        if self.current_reward is None:  # the start itself is evaluated first
            return self.current[None].clone(), None
        return torch.stack([self._neighbour() for _ in range(n)]), None

    def observe(self, token: Any, keep: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        best = int(rewards.argmax())
        reward = float(rewards[best])
        if self.current_reward is None:
            accepted = True
        else:
            delta = reward - self.current_reward
            accepted = delta >= 0 or float(torch.rand((), generator=self.generator)) < math.exp(delta / self.temperature)
        if accepted:
            self.current, self.current_reward = keep[best].clone(), reward
        self.temperature = max(self.t_end, self.temperature * self.decay ** len(rewards))
        return {"temperature": self.temperature, "accepted": float(accepted), "current_reward": self.current_reward}

    def state_dict(self) -> dict[str, Any]:
        return {
            "current": self.current.clone(),
            "current_reward": self.current_reward,
            "temperature": self.temperature,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.current = state["current"].clone()
        self.current_reward = state["current_reward"]
        self.temperature = state["temperature"]
        self.generator.set_state(state["generator"])


class RoundedStrategy:
    r"""Another strategy's keep-sets, rounded so that every group keeps a multiple of ``round_to`` filters.

    Each proposed keep-set is replaced by the rounded keep-set closest to it: its kept filters are ranked above
    its pruned ones (by ``tiebreak`` within each), and :func:`~torch_rlprune.selection.select_channels` cuts that
    ranking at the same budget with ``round_to``. A group thus keeps the blocks of ``round_to`` that the proposal
    mostly keeps; every group keeps a multiple of ``round_to`` filters or all of them, and the keep-set holds at
    least ``n_keep`` filters and fewer than ``n_keep + round_to``. The rounded keep-sets are what the search
    evaluates, records and returns; the strategy learns from its own proposals and their rewards. The rounding is
    a fixed function of the proposal, so for REINFORCE it is part of the environment: the gradient estimate stays
    unbiased, for the expected reward of the rounded keep-sets.

    Args:
        strategy (SearchStrategy): proposes the keep-sets to round.
        round_to (int): the multiple every group's kept filters are rounded to.
        min_keep (sequence of int): filters each group keeps at least (rounded up to a multiple of ``round_to``).
        tiebreak (torch.Tensor): ``[N]`` non-negative per-filter values, e.g. L1 norms; a rounded keep-set adds
            the pruned filters with the largest and drops the kept filters with the smallest.

    Example:
        >>> import torch
        >>> from torch_rlprune.search import RandomStrategy, RoundedStrategy
        >>> strategy = RoundedStrategy(RandomStrategy([16, 24], n_keep=20, min_keep=[1, 1], seed=0), round_to=8,
        ...                            min_keep=[1, 1], tiebreak=torch.ones(40))
        >>> keep, _ = strategy.propose(3)
        >>> [[int(k[:16].sum()), int(k[16:].sum())] for k in keep]  # 20 filters, rounded up to 24
        [[8, 16], [8, 16], [8, 16]]
    """

    def __init__(
        self, strategy: SearchStrategy, round_to: int, min_keep: Sequence[int], tiebreak: torch.Tensor
    ) -> None:
        self.strategy, self.round_to, self.min_keep = strategy, round_to, list(min_keep)
        # A checkpoint of a rounded search resumes only a search rounded alike.
        self.kind = f"{strategy.kind}, round_to={round_to}"
        self.group_sizes, self.n_keep = list(strategy.group_sizes), strategy.n_keep
        t = tiebreak.detach().double().cpu().clamp(min=0)
        # Below 0.5, so that it orders the kept filters among themselves and the pruned ones among themselves,
        # never a pruned filter above a kept one.
        self.tiebreak = 0.5 * t / (1 + t)

    def _round(self, keep: torch.Tensor) -> torch.Tensor:
        scores = (keep.cpu().double() + self.tiebreak).split(self.group_sizes)
        alive = [torch.ones(size, dtype=torch.bool) for size in self.group_sizes]
        n_prune = sum(self.group_sizes) - self.n_keep
        rounded = select_channels(scores, alive, n_prune, self.min_keep, "RoundedStrategy", self.round_to)
        return torch.cat(rounded).to(keep.device)

    def propose(self, n: int) -> tuple[torch.Tensor, Any]:
        keep, token = self.strategy.propose(n)
        return torch.stack([self._round(k) for k in keep]), (keep, token)

    def observe(self, token: Any, keep: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        # The strategy learns from its own proposals: annealing moving from a rounded keep-set would undo every
        # neighbour of a few swaps, which rounds back to the same widths, and never change a layer's width.
        proposed, inner = token
        return self.strategy.observe(inner, proposed, rewards)

    def state_dict(self) -> dict[str, Any]:
        return self.strategy.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.strategy.load_state_dict(state)
