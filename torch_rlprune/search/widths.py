r"""Searching layer widths: keep-sets chosen as one keep fraction per group, the filters inside by a ranking.

What a pruned network is worth follows mostly from how many filters each layer keeps, much less from which ones
(EagleEye, Li et al. 2020; the project's quality benchmark). A search over the ``G`` widths of a network learns
from far fewer evaluations than one over its ``N`` filters. Here an action is a vector of per-group keep
fractions; :func:`counts_for_fractions` projects it onto the budget (exactly ``n_keep`` filters, at least
``min_keep[g]`` and at most the group's size in group ``g``) and :func:`keep_top` keeps the highest-ranked
filters of each group (by default their L1 norms). The projection and the ranking are fixed functions of the
action, so for REINFORCE they belong to the environment: the log-probability of the fractions drawn is exact and
the gradient estimate unbiased for the expected reward of the keep-sets they give.

- :class:`RandomWidthStrategy`: uniformly random fractions, the EagleEye baseline (best of many random widths).
- :class:`WidthReinforceStrategy`: REINFORCE over a Gaussian policy on the logits of the fractions
  (:class:`WidthPolicy`), with rewards standardised within each batch so that a noisy reward moves each
  width's logit by about ``lr`` per update whatever its scale. With ``filters="learned"`` (its default) the
  filters inside each group are part of the action too: drawn without replacement from a Plackett-Luce policy
  whose per-filter logits start from the ranking (:class:`FilterOrder`), so that the search starts where the
  ranking is and can still learn which filters matter where the ranking is wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .strategies import BlindStrategy, seeded_generator

__all__ = ["counts_for_fractions", "keep_top", "RandomWidthStrategy", "WidthPolicy", "FilterOrder",
           "WidthReinforceStrategy"]


#: the filter logits' learning rate, as a multiple of the widths' ``lr``
FILTER_LR_RATIO = 3.0


def counts_for_fractions(
    fractions: torch.Tensor,
    group_sizes: Sequence[int],
    n_keep: int,
    min_keep: Sequence[int],
    *,
    cost: Callable[[torch.Tensor], float] | None = None,
    budget: float | None = None,
) -> torch.Tensor:
    r"""Integer filter counts per group, proportional to ``fractions * group_sizes`` and exactly on the budget.

    Each row's targets :math:`t_g = f_g s_g` are scaled by the one factor :math:`\lambda` for which
    :math:`\sum_g \mathrm{clamp}(\lambda t_g, m_g, s_g) = n_{keep}` (found by bisection), then rounded by largest
    remainders so that the counts add up to ``n_keep`` exactly without leaving ``[min_keep[g], size[g]]``.

    With ``cost`` and ``budget`` (e.g. the MACs of the network that keeps ``counts``, and the most it may have)
    the budget is ``cost(counts) <= budget`` instead of the filter total: :math:`\lambda` is the largest whose
    rounded-down counts fit, and the rounding then adds filters by largest remainder while they still fit.

    Args:
        fractions (torch.Tensor): ``[n, G]`` positive keep fractions (only their ratios matter).
        group_sizes (sequence of int): filters per group.
        n_keep (int): filters kept in all, between ``sum(min_keep)`` and ``sum(group_sizes)`` (ignored with
            ``cost``).
        min_keep (sequence of int): filters each group keeps at least.
        cost (callable, optional): ``cost(counts) -> float`` of one ``[G]`` row of counts, growing with each count.
        budget (float, optional): the largest ``cost`` allowed; needed with ``cost``.

    Returns:
        torch.Tensor: ``[n, G]`` long counts, each row summing to ``n_keep`` (or within the cost budget).

    Example:
        >>> import torch
        >>> counts_for_fractions(torch.tensor([[0.5, 0.5], [1.0, 0.1]]), [10, 30], 20, [1, 1]).tolist()
        [[5, 15], [10, 10]]
    """
    sizes = torch.tensor(list(group_sizes), dtype=torch.float64)
    floors = torch.tensor(list(min_keep), dtype=torch.float64)
    targets = fractions.detach().double().cpu().clamp(min=1e-9) * sizes
    if cost is not None:
        return torch.stack([_within_cost(row, sizes, floors, cost, budget) for row in targets])

    def total(scale: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(scale[:, None] * targets, floors), sizes).sum(1)

    # The largest useful scale makes every group full; the smallest puts every group on its floor.
    low = torch.zeros(len(targets), dtype=torch.float64)
    high = (sizes / targets).amax(1)
    for _ in range(60):
        mid = (low + high) / 2
        below = total(mid) < n_keep
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    real = torch.minimum(torch.maximum(high[:, None] * targets, floors), sizes)
    counts = real.floor()
    remainder = real - counts
    missing = (n_keep - counts.sum(1)).long()
    for row in range(len(counts)):
        room = counts[row] < sizes
        order = torch.argsort(torch.where(room, remainder[row], torch.full_like(remainder[row], -1.0)), descending=True)
        counts[row, order[: int(missing[row])]] += 1
    return counts.long()


def _within_cost(
    targets: torch.Tensor, sizes: torch.Tensor, floors: torch.Tensor, cost: Callable[[torch.Tensor], float], budget: Any
) -> torch.Tensor:
    if budget is None:
        raise ValueError("counts_for_fractions: a cost needs a budget.")

    def counts_at(scale: float) -> torch.Tensor:
        return torch.minimum(torch.maximum(scale * targets, floors), sizes).floor().long()

    if cost(counts_at(0.0)) > budget:
        raise ValueError("counts_for_fractions: even the smallest counts (min_keep) exceed the budget; lower min_keep.")
    low, high = 0.0, float((sizes / targets).max())
    for _ in range(40):
        mid = (low + high) / 2
        low, high = (mid, high) if cost(counts_at(mid)) <= budget else (low, mid)
    counts = counts_at(low)
    remainder = torch.minimum(torch.maximum(low * targets, floors), sizes) - counts
    for g in torch.argsort(remainder, descending=True).tolist():
        if counts[g] < sizes[g]:
            counts[g] += 1
            if cost(counts) > budget:
                counts[g] -= 1
    return counts


def keep_top(counts: torch.Tensor, ranking: torch.Tensor, group_sizes: Sequence[int]) -> torch.Tensor:
    """Keep-sets holding the ``counts[:, g]`` highest-ranked filters of every group ``g``.

    Args:
        counts (torch.Tensor): ``[n, G]`` filters to keep per group.
        ranking (torch.Tensor): ``[N]`` per-filter scores, higher kept first (ties broken by position).
        group_sizes (sequence of int): filters per group, summing to ``N``.

    Returns:
        torch.Tensor: ``[n, N]`` boolean keep-sets.

    Example:
        >>> import torch
        >>> keep_top(torch.tensor([[1, 2]]), torch.tensor([0.1, 0.9, 0.5, 0.2, 0.7]), [2, 3]).int().tolist()
        [[0, 1, 1, 0, 1]]
    """
    rows = []
    for scores in ranking.detach().cpu().split(list(group_sizes)):
        order = torch.argsort(scores, descending=True, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(len(order))
        rows.append(rank)
    rank = torch.cat(rows)
    group_of = torch.repeat_interleave(torch.arange(len(group_sizes)), torch.tensor(list(group_sizes)))
    return rank[None, :] < counts.cpu()[:, group_of]


def _keep_for(strategy: Any, fractions: torch.Tensor) -> torch.Tensor:
    """The keep-sets of a width strategy's fractions: projected onto its budget, the top of its ranking kept."""
    counts = counts_for_fractions(fractions, strategy.group_sizes, strategy.n_keep, strategy.min_keep,
                                  cost=strategy.cost, budget=strategy.budget)  # fmt: skip
    return keep_top(counts, strategy.ranking, strategy.group_sizes)


class RandomWidthStrategy(BlindStrategy):
    """Keep fractions drawn uniformly from ``[low, high]`` per group, projected onto the budget, filters by rank.

    The EagleEye baseline: the best of many random layer widths, the filters inside each layer by their L1 norms.

    Args:
        group_sizes (sequence of int): filters per group.
        n_keep (int): filters every keep-set holds.
        min_keep (sequence of int): filters each group keeps at least.
        ranking (torch.Tensor): ``[N]`` per-filter scores; each group keeps its highest.
        low (float): smallest fraction drawn. Default: 0.05.
        high (float): largest fraction drawn. Default: 1.0.
        seed (int, optional): seeds the draws.
        cost, budget: size the widths to ``cost(counts) <= budget`` instead of ``n_keep`` filters (see
            :func:`counts_for_fractions`).

    Example:
        >>> import torch
        >>> strategy = RandomWidthStrategy([8, 8], n_keep=6, min_keep=[1, 1], ranking=torch.arange(16.0), seed=0)
        >>> keep, _ = strategy.propose(2)
        >>> keep.sum(1).tolist(), bool(keep[0, 7] or not keep[0, :8].any())  # the top of group 0 comes first
        ([6, 6], True)
    """

    kind = "random-width"

    def __init__(
        self,
        group_sizes: Sequence[int],
        n_keep: int,
        min_keep: Sequence[int],
        ranking: torch.Tensor,
        *,
        low: float = 0.05,
        high: float = 1.0,
        seed: int | None = None,
        cost: Callable[[torch.Tensor], float] | None = None,
        budget: float | None = None,
    ) -> None:
        if not 0 < low <= high:
            raise ValueError(f"RandomWidthStrategy: need 0 < low <= high, got low={low!r}, high={high!r}.")
        super().__init__(seed)
        self.group_sizes, self.n_keep, self.min_keep = list(group_sizes), n_keep, list(min_keep)
        self.ranking, self.low, self.high = ranking.detach().cpu(), float(low), float(high)
        self.cost, self.budget = cost, budget

    def propose(self, n: int) -> tuple[torch.Tensor, Any]:
        fractions = self.low + (self.high - self.low) * torch.rand(n, len(self.group_sizes), generator=self.generator)
        return _keep_for(self, fractions), None


class WidthPolicy(nn.Module):
    r"""A Gaussian over the logits of ``G`` keep fractions: :math:`z_g \sim \mathcal N(\mu_g, \sigma_g^2)`,
    fraction :math:`\mathrm{sigmoid}(z_g)`.

    Args:
        groups (int): number of groups.
        start (float): the fraction every group starts at (its logit is the initial mean).
        std (float): the initial standard deviation of every logit.

    Example:
        >>> import torch
        >>> policy = WidthPolicy(3, start=0.25, std=0.5)
        >>> z = policy.sample(4, torch.Generator().manual_seed(0))
        >>> z.shape, policy.log_prob(z).shape
        (torch.Size([4, 3]), torch.Size([4]))
    """

    def __init__(self, groups: int, start: float, std: float) -> None:
        super().__init__()
        start = min(max(start, 1e-3), 1 - 1e-3)
        self.mean = nn.Parameter(torch.full((groups,), math.log(start / (1 - start))))
        self.log_std = nn.Parameter(torch.full((groups,), math.log(std)))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``[n, G]`` logits drawn from the policy (no gradient)."""
        noise = torch.randn(n, self.mean.numel(), generator=generator)
        return (self.mean + self.log_std.exp() * noise).detach()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """The exact log-density of each row of ``z``, differentiable in the policy's parameters."""
        return torch.distributions.Normal(self.mean, self.log_std.exp()).log_prob(z).sum(1)


class FilterOrder(nn.Module):
    r"""A Plackett-Luce policy over the order of the filters inside each group, started from a ranking.

    Every filter has a logit :math:`l_j`; a group's order is drawn without replacement with probabilities
    proportional to :math:`e^{l_j}` (by the Gumbel-top-k trick), and a group keeping :math:`c` filters keeps the
    first :math:`c` drawn. The log-probability of that ordered prefix,
    :math:`\sum_{i<c} \big(l_{o_i} - \log \sum_{k \ge i} e^{l_{o_k}}\big)`, is exact, so REINFORCE over it is
    unbiased for the expected reward of the kept sets. The logits start at ``spread`` times each filter's
    percentile in its group's ranking (ties share one), so the top of the ranking is drawn first most of the
    time; a filter ``k`` places below a group's cut-off is kept in place of the last one kept about
    :math:`1/(1 + e^{\text{spread} \cdot k / (\text{size} - 1)})` of the time, so the draws explore around the
    cut-off and learning moves filters across it.

    Args:
        ranking (torch.Tensor): ``[N]`` per-filter scores, higher first.
        group_sizes (sequence of int): filters per group, summing to ``N``.
        spread (float): the logit gap between a group's best and worst ranked filter. Default: 40.

    Example:
        >>> import torch
        >>> order = FilterOrder(torch.tensor([0.1, 0.9, 0.5, 0.2, 0.7]), [2, 3], spread=0.0)
        >>> keep, orders = order.sample(torch.tensor([[1, 2]]), torch.Generator().manual_seed(0))
        >>> keep.sum().item(), round(order.log_prob(orders, torch.tensor([[1, 2]])).exp().item(), 4)  # 1/2 * 1/6
        (3, 0.0833)
    """

    def __init__(self, ranking: torch.Tensor, group_sizes: Sequence[int], spread: float = 40.0) -> None:
        super().__init__()
        self.group_sizes = list(group_sizes)
        logits = []
        for scores in ranking.detach().cpu().double().split(self.group_sizes):
            ordered = scores.sort().values
            below = torch.searchsorted(ordered, scores, right=False)
            upto = torch.searchsorted(ordered, scores, right=True)
            percentile = (below + upto - 1).double() / 2 / max(len(scores) - 1, 1)
            logits.append(spread * percentile)
        self.logit = nn.Parameter(torch.cat(logits).float())

    def sample(self, counts: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``[n, N]`` keep-sets holding ``counts[:, g]`` filters drawn from each group ``g``, and the ``[n, N]``
        orders drawn (each group's positions, best first, within the group)."""
        n = len(counts)
        uniform = torch.rand(n, self.logit.numel(), generator=generator).clamp_(1e-12, 1 - 1e-12)
        keys = self.logit.detach() - torch.log(-torch.log(uniform))
        orders = torch.cat([k.argsort(1, descending=True) for k in keys.split(self.group_sizes, 1)], 1)
        keep = torch.zeros(n, self.logit.numel(), dtype=torch.bool)
        start = 0
        for g, size in enumerate(self.group_sizes):
            taken = torch.arange(size)[None, :] < counts[:, g : g + 1]
            keep[:, start : start + size].scatter_(1, orders[:, start : start + size], taken)
            start += size
        return keep, orders

    def log_prob(self, orders: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The exact log-probability of each row's ordered prefixes, differentiable in the logits."""
        total = torch.zeros(len(orders))
        start = 0
        for g, size in enumerate(self.group_sizes):
            drawn = self.logit[start : start + size][orders[:, start : start + size]]
            remaining = torch.logcumsumexp(drawn.flip(1), 1).flip(1)
            taken = torch.arange(size)[None, :] < counts[:, g : g + 1]
            total = total + ((drawn - remaining) * taken).sum(1)
            start += size
        return total

    def top(self, counts: torch.Tensor) -> torch.Tensor:
        """The keep-sets of the ``counts`` filters of highest logit in each group."""
        return keep_top(counts, self.logit.detach(), self.group_sizes)


class WidthReinforceStrategy:
    r"""REINFORCE over layer widths: a :class:`WidthPolicy` trained with Adam on standardised rewards.

    Each step draws ``n`` logit vectors, turns them into keep-sets (:func:`counts_for_fractions`,
    :func:`keep_top`) and, once rewarded, takes one Adam step on

    .. math::
        L = -\frac{1}{n} \sum_e A_e \log p(z_e), \qquad A_e = \frac{R_e - \bar R}{\mathrm{std}(R) + \epsilon},

    where :math:`\bar R` is the mean of the *other* episodes' rewards of the step (leave-one-out, so the
    baseline does not depend on the episode's own action) and :math:`\mathrm{std}(R)` the spread of the step's
    rewards (which biases the estimate slightly, for a step size that does not follow the reward's scale).
    Standardising makes the step size independent of the
    reward's scale and noise: Adam moves each mean by about ``lr`` per step, towards the widths that scored above
    their batch. The standard deviations are learnt too, within ``[min_std, max_std]``, so that the policy
    narrows once it is sure and never collapses to a point. With ``filters="learned"`` the filters kept inside
    each group are drawn from a :class:`FilterOrder` started at the ranking, and :math:`\log p` is the sum of
    both exact log-probabilities; with ``"ranked"`` each group keeps the top of the ranking.

    Args:
        group_sizes (sequence of int): filters per group.
        n_keep (int): filters every keep-set holds.
        min_keep (sequence of int): filters each group keeps at least.
        ranking (torch.Tensor): ``[N]`` per-filter scores; each group keeps its highest (``"ranked"``), or they
            start the filter policy (``"learned"``).
        filters (str): ``"learned"`` or ``"ranked"``, how the filters inside a group are chosen. Default:
            ``"learned"``.
        lr (float): Adam's learning rate of the widths; the filter logits learn at :data:`FILTER_LR_RATIO` times
            it. Default: 0.1.
        std (float): initial standard deviation of the logits. Default: 0.5.
        min_std (float): smallest standard deviation. Default: 0.05.
        max_std (float): largest standard deviation. Default: 1.0.
        seed (int, optional): seeds the draws.
        cost, budget: size the widths to ``cost(counts) <= budget`` instead of ``n_keep`` filters (see
            :func:`counts_for_fractions`).

    Example:
        >>> import torch
        >>> strategy = WidthReinforceStrategy([10, 10], n_keep=8, min_keep=[1, 1], ranking=torch.zeros(20),
        ...                                   seed=0)
        >>> for _ in range(30):  # the reward: filters kept in the second group
        ...     keep, token = strategy.propose(8)
        ...     _ = strategy.observe(token, keep, keep[:, 10:].sum(1).double())
        >>> int(strategy.best_guess()[10:].sum()) >= 7
        True
    """

    kind = "rl-widths"

    def __init__(
        self,
        group_sizes: Sequence[int],
        n_keep: int,
        min_keep: Sequence[int],
        ranking: torch.Tensor,
        *,
        filters: str = "learned",
        lr: float = 0.1,
        std: float = 0.5,
        min_std: float = 0.05,
        max_std: float = 1.0,
        seed: int | None = None,
        cost: Callable[[torch.Tensor], float] | None = None,
        budget: float | None = None,
    ) -> None:
        for name, value in (("lr", lr), ("std", std), ("min_std", min_std), ("max_std", max_std)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"WidthReinforceStrategy: {name} must be a positive number, got {value!r}.")
        if not min_std <= std <= max_std:
            raise ValueError(f"WidthReinforceStrategy: need min_std <= std <= max_std, got {min_std}, {std}, {max_std}.")
        if filters not in ("learned", "ranked"):
            raise ValueError(f"WidthReinforceStrategy: filters must be 'learned' or 'ranked', got {filters!r}.")
        self.group_sizes, self.n_keep, self.min_keep = list(group_sizes), n_keep, list(min_keep)
        self.ranking = ranking.detach().cpu()
        self.bounds = (math.log(min_std), math.log(max_std))
        self.cost, self.budget = cost, budget
        # Only the ratios of the fractions matter; start where the sigmoid is steepest when the budget is no count.
        start = 0.5 if cost is not None else n_keep / sum(self.group_sizes)
        self.policy = WidthPolicy(len(self.group_sizes), start, std)
        self.order = FilterOrder(self.ranking, self.group_sizes) if filters == "learned" else None
        # A filter carries a small share of the reward's signal, a width a large one: with the same step its logit
        # learnt too slowly to find which filters a planted problem wants (tests/test_widths.py); 5 or 8 times the
        # step overshot and found fewer.
        learnt = [{"params": self.policy.parameters()}]
        if self.order is not None:
            learnt.append({"params": self.order.parameters(), "lr": FILTER_LR_RATIO * float(lr)})
        self.optimizer = torch.optim.Adam(learnt, lr=float(lr))
        self.generator = seeded_generator(seed)
        self.steps = 0

    def _counts(self, z: torch.Tensor) -> torch.Tensor:
        return counts_for_fractions(torch.sigmoid(z), self.group_sizes, self.n_keep, self.min_keep,
                                    cost=self.cost, budget=self.budget)  # fmt: skip

    def propose(self, n: int) -> tuple[torch.Tensor, Any]:
        z = self.policy.sample(n, self.generator)
        counts = self._counts(z)
        if self.order is None:
            return keep_top(counts, self.ranking, self.group_sizes), (z, counts, None)
        keep, orders = self.order.sample(counts, self.generator)
        return keep, (z, counts, orders)

    def observe(self, token: Any, keep: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        rewards = rewards.detach().double().cpu()
        n = len(rewards)
        stats = {"mean_reward": float(rewards.mean()), "width_std": float(self.policy.log_std.detach().exp().mean())}
        if n < 2:  # one episode has no other to compare with: nothing to learn
            return stats
        others_mean = (rewards.sum() - rewards) / (n - 1)
        centred = rewards - others_mean
        scale = rewards.std() if n > 2 else centred.abs().mean()
        advantage = (centred / (scale + 1e-12)).float() if scale > 0 else torch.zeros(n)
        # Comparing the draws of filters at one width with each other (a baseline free of the widths' effect) was
        # tried and learnt the planted problem less well: one or three twins are a noisier baseline than seven.
        z, counts, orders = token
        log_prob = self.policy.log_prob(z)
        if orders is not None:
            log_prob = log_prob + self.order.log_prob(orders, counts)
        loss = -(advantage * log_prob).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.policy.log_std.clamp_(*self.bounds)
        self.steps += 1
        return stats

    def best_guess(self) -> torch.Tensor:
        """The keep-set of the policy's mean widths (and, with learned filters, each group's highest logits)."""
        counts = self._counts(self.policy.mean.detach()[None])
        return keep_top(counts, self.ranking, self.group_sizes)[0] if self.order is None else self.order.top(counts)[0]

    def state_dict(self) -> dict[str, Any]:
        order = {} if self.order is None else {"order": self.order.logit.detach().clone()}
        return {"policy": {k: v.clone() for k, v in self.policy.state_dict().items()}, **order,
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
                "steps": self.steps}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if ("order" in state) != (self.order is not None):
            raise ValueError("WidthReinforceStrategy: the checkpoint was written with another `filters` option.")
        self.policy.load_state_dict(state["policy"])
        if self.order is not None:
            with torch.no_grad():
                self.order.logit.copy_(state["order"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.steps = state["steps"]
