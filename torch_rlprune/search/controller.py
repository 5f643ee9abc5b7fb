r"""A REINFORCE search over which filters to keep: the per-filter policy and its controller.

The prunable channels ("filters") of all channel groups are concatenated in group order into one vector of ``N``
filters (see :func:`torch_rlprune.search.features.filter_features`). A policy gives every filter a logit; an
*action* is a keep-set of exactly ``n_keep`` filters drawn from the two-stage Plackett-Luce distribution of
:mod:`torch_rlprune.search.keepsets`, whose exact log-probability makes the REINFORCE estimate unbiased (the
derivation is there), and :class:`ReinforceController` learns the logits from the rewards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .keepsets import check_layout, draw_plan, entropy_estimate, gumbel, is_int, is_real, log_prob, top_sequence

__all__ = ["FilterPolicy", "ReinforceController"]

BASELINES = ("ema", "batch")


# --------------------------------------------------------------------------------------------------------------
# The policy and the controller
# --------------------------------------------------------------------------------------------------------------


class FilterPolicy(nn.Module):
    r"""One logit per filter: a small MLP shared by all filters, plus a learnt term of each filter's own.

    ``logit_i = mlp(x_i) + b_i``, where ``x_i`` is row ``i`` of the features, standardised per column, and ``mlp``
    is ``Linear(F, hidden) -> Tanh -> Linear(hidden, 1)``. The shared MLP generalises across filters from what
    the features show (a filter with small weights is often unimportant); the per-filter term :math:`b` can learn
    whatever no feature shows. The MLP's output layer and :math:`b` start at zero, so the initial policy is
    uniform: every keep-set of a given size is equally likely, and the search starts out as a random search.

    Args:
        features (torch.Tensor): ``[N, F]`` per-filter features, e.g. from
            :func:`torch_rlprune.search.features.filter_features`. Stored, standardised (zero mean and unit variance
            per column; a constant column becomes 0), in the buffer ``features``.
        hidden (int): width of the MLP's hidden layer. Default: 32.

    Example:
        >>> import torch
        >>> from torch_rlprune.search.controller import FilterPolicy
        >>> policy = FilterPolicy(torch.randn(960, 5))
        >>> policy().shape, bool((policy() == 0).all())
        (torch.Size([960]), True)
    """

    def __init__(self, features: torch.Tensor, hidden: int = 32) -> None:
        super().__init__()
        if not isinstance(features, torch.Tensor) or not features.is_floating_point() or features.dim() != 2:
            raise TypeError("FilterPolicy: features must be a floating-point tensor of shape [N, F].")
        if features.shape[0] < 1 or not bool(torch.isfinite(features).all()):
            raise ValueError(f"FilterPolicy: features of shape {tuple(features.shape)} need N >= 1 finite rows.")
        if not is_int(hidden) or hidden < 1:
            raise ValueError(f"FilterPolicy: hidden must be a positive int, got {hidden!r}.")
        x = features.detach().float()
        std = x.std(dim=0, unbiased=False) if x.shape[0] > 1 else torch.zeros(x.shape[1], device=x.device)
        self.register_buffer("features", (x - x.mean(dim=0)) / torch.where(std > 0, std, torch.ones_like(std)))
        self.mlp = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.Tanh(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[2].weight)
        nn.init.zeros_(self.mlp[2].bias)
        self.filter_logit = nn.Parameter(torch.zeros(x.shape[0], device=x.device))
        self.mlp.to(x.device)

    def forward(self) -> torch.Tensor:
        """The ``[N]`` logits."""
        return self.mlp(self.features).squeeze(-1) + self.filter_logit


class ReinforceController:
    r"""Learn which ``n_keep`` filters to keep by REINFORCE over two-stage Plackett-Luce keep sequences.

    Each round, :meth:`sample` draws ``n`` keep-sets (episodes) from the policy, the caller scores them with a
    reward (higher is better, e.g. the accuracy of the pruned network), and :meth:`update` takes one Adam step on

    .. math::
        L = -\frac{1}{n} \sum_e (R_e - b_e) \log p(s_e) - \beta \, \frac{1}{n} \sum_e \hat H(s_e),

    with the exact sequence log-probability :func:`log_prob`, the entropy bonus :func:`entropy_estimate` and a
    baseline :math:`b` that does not depend on the episode's own action, so the gradient estimate is unbiased
    (see :mod:`torch_rlprune.search.controller` for why the sequence, not the set, is the action).

    Baselines:

    * ``"ema"`` (default): an exponential moving average of the rewards of earlier updates, one step per
      episode, ``b <- decay * b + (1 - decay) * R_e``, so that ``decay=0.9`` averages over about the last ten
      episodes whatever the batch size. The first update has no history and uses its own mean reward.
    * ``"batch"``: leave-one-out: episode ``e`` uses the mean reward of the *other* episodes of the update
      (0 for a single episode, so use it with several episodes per update).

    The entropy bonus is summed over the draws of a sequence (see :func:`entropy_estimate`) and weighed against
    :math:`R - b`: keep ``entropy_coef`` well below the spread of the rewards between episodes, or it holds the
    policy near uniform.

    Args:
        features (torch.Tensor): ``[N, F]`` per-filter features (:func:`torch_rlprune.search.features.filter_features`).
        group_sizes (sequence of int): channels per group, summing to ``N``, in the order of the features' rows.
        n_keep (int): filters every keep-set holds, between ``sum(min_keep)`` and ``N``.
        min_keep (sequence of int): channels each group keeps at least, e.g. ``selection.min_keep_counts(...)``.
        lr (float): Adam's learning rate. Default: 0.1 (the logits need to move by several units; Adam moves each
            parameter by about ``lr`` per update).
        entropy_coef (float): weight :math:`\beta` of the entropy bonus. Default: 0.001.
        baseline (str): ``"ema"`` or ``"batch"``. Default: ``"ema"``.
        baseline_decay (float): decay of the ``"ema"`` baseline, in ``[0, 1)``. Default: 0.9.
        hidden (int): hidden width of the policy's MLP. Default: 32.
        seed (int, optional): seeds the policy's initialisation and the sampling generator; the same seed gives
            the same samples and, for the same rewards, the same updates. If ``None``, a seed is drawn from the
            global RNG (so :func:`torch.manual_seed` fixes it too).
        device (str or torch.device): where the policy lives and samples are drawn. Default: ``"cpu"``.

    Attributes:
        policy (FilterPolicy): the policy network.
        optimizer (torch.optim.Adam): its optimizer.
        generator (torch.Generator): the source of the samples' randomness.
        group_sizes (list of int): channels per group, as validated.
        min_keep (list of int): per-group minimums, as validated.
        n_keep (int): filters per keep-set.
        steps (int): updates taken.

    Example:
        >>> import torch
        >>> from torch_rlprune.search.controller import ReinforceController
        >>> wanted = torch.zeros(20, dtype=torch.bool)
        >>> wanted[[0, 1, 2, 10, 11]] = True  # the reward: the share of these five filters kept
        >>> ctrl = ReinforceController(torch.zeros(20, 1), [10, 10], n_keep=5, min_keep=[1, 1], seed=0)
        >>> for _ in range(40):
        ...     keep, orders = ctrl.sample(8)
        ...     stats = ctrl.update(orders, (keep & wanted).sum(1) / 5.0)
        >>> sorted(stats)
        ['baseline', 'entropy', 'loss', 'mean_reward']
        >>> int((ctrl.best_guess() & wanted).sum())
        5
    """

    def __init__(
        self,
        features: torch.Tensor,
        group_sizes: Sequence[int],
        n_keep: int,
        min_keep: Sequence[int],
        *,
        lr: float = 0.1,
        entropy_coef: float = 0.001,
        baseline: str = "ema",
        baseline_decay: float = 0.9,
        hidden: int = 32,
        seed: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        caller = "ReinforceController"
        group_sizes, min_keep, n_keep = check_layout(group_sizes, min_keep, n_keep, caller)
        if not isinstance(features, torch.Tensor) or features.dim() != 2:
            raise TypeError(f"{caller}: features must be a tensor of shape [N, F], one row per filter.")
        if features.shape[0] != sum(group_sizes):
            raise ValueError(
                f"{caller}: features have {features.shape[0]} rows but group_sizes add up to {sum(group_sizes)}; "
                "pass one row per channel of the groups, in group order."
            )
        if not (is_real(lr) and 0 < lr < math.inf):
            raise ValueError(f"{caller}: lr must be a positive number, got {lr!r}.")
        if not (is_real(entropy_coef) and 0 <= entropy_coef < math.inf):
            raise ValueError(
                f"{caller}: entropy_coef must be a non-negative number (0 turns the bonus off), got {entropy_coef!r}."
            )
        if baseline not in BASELINES:
            raise ValueError(f"{caller}: baseline must be one of {BASELINES}, got {baseline!r}.")
        if not (is_real(baseline_decay) and 0 <= baseline_decay < 1):
            raise ValueError(f"{caller}: baseline_decay must be a number in [0, 1), got {baseline_decay!r}.")
        if seed is not None and not is_int(seed):
            raise TypeError(f"{caller}: seed must be an int or None, got {type(seed).__name__}.")
        device = torch.device(device)
        if seed is None:
            seed = int(torch.randint(2**62, (1,)))

        self.group_sizes, self.min_keep, self.n_keep = group_sizes, min_keep, n_keep
        self.entropy_coef, self.baseline, self.baseline_decay = float(entropy_coef), baseline, float(baseline_decay)
        self.hidden = hidden
        # The MLP's initialisation draws from the global RNG; seeding a forked copy makes it follow `seed` alone.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.policy = FilterPolicy(features.to(device), hidden=hidden)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=float(lr))
        self.generator = torch.Generator(device=device).manual_seed(int(seed))
        self.steps = 0
        self._ema: float | None = None
        self._plan = draw_plan(group_sizes, min_keep, n_keep, device)

    @property
    def device(self) -> torch.device:
        """The device of the policy."""
        return self.policy.filter_logit.device

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw ``n`` keep-sets from the current policy.

        Args:
            n (int): number of episodes.

        Returns:
            tuple: ``keep``, a ``[n, N]`` boolean tensor, and ``orders``, the ``[n, n_keep]`` sequences to pass to
            :meth:`update`.

        Example:
            >>> import torch
            >>> from torch_rlprune.search.controller import ReinforceController
            >>> keep, orders = ReinforceController(torch.zeros(6, 1), [6], 2, [0], seed=0).sample(3)
            >>> keep.shape, orders.shape, keep.sum(1).tolist()
            (torch.Size([3, 6]), torch.Size([3, 2]), [2, 2, 2])
        """
        if not is_int(n):
            raise TypeError(f"ReinforceController.sample: n must be an int (episodes to draw), got {type(n).__name__}.")
        if n < 1:
            raise ValueError(f"ReinforceController.sample: n={n}; draw at least one episode.")
        with torch.no_grad():
            rows = self.policy().expand(int(n), -1)
            return top_sequence(rows + gumbel(rows, self.generator), rows + gumbel(rows, self.generator), self._plan)

    def update(self, orders: torch.Tensor, rewards: torch.Tensor | Sequence[float]) -> dict[str, float]:
        """Take one policy-gradient step from the episodes ``orders`` and their ``rewards``.

        The log-probabilities are recomputed under the current policy, so :meth:`sample` needs no graph; the
        orders must come from the policy as it was before this update for the estimate to be on-policy.

        Args:
            orders (torch.Tensor): ``[n, n_keep]`` sequences from :meth:`sample`.
            rewards (torch.Tensor or sequence of float): ``n`` rewards, higher is better.

        Returns:
            dict: ``"loss"``, ``"entropy"`` (mean summed entropy of the episodes, nats), ``"baseline"`` (mean
            baseline used) and ``"mean_reward"``, as floats.

        Example:
            >>> import torch
            >>> from torch_rlprune.search.controller import ReinforceController
            >>> ctrl = ReinforceController(torch.zeros(6, 1), [6], 2, [0], seed=0)
            >>> keep, orders = ctrl.sample(4)
            >>> ctrl.update(orders, keep[:, 0].float())["mean_reward"] == keep[:, 0].float().mean().item()
            True
        """
        caller = "ReinforceController.update"
        if not isinstance(orders, torch.Tensor) or orders.dim() != 2 or orders.shape[1] != self.n_keep:
            raise ValueError(f"{caller}: orders must be the [n, {self.n_keep}] tensor returned by sample().")
        rewards = torch.as_tensor(rewards, dtype=torch.float32, device=self.device).detach()
        if rewards.shape != (orders.shape[0],):
            raise ValueError(
                f"{caller}: {orders.shape[0]} orders but rewards of shape {tuple(rewards.shape)}; pass one reward "
                "per episode."
            )
        if not bool(torch.isfinite(rewards).all()):
            raise ValueError(f"{caller}: rewards must be finite, got {rewards.tolist()}.")

        n = rewards.numel()
        mean_reward = float(rewards.double().mean())
        if self.baseline == "batch":
            b = (rewards.sum() - rewards) / (n - 1) if n > 1 else torch.zeros_like(rewards)
        else:
            b = torch.full_like(rewards, mean_reward if self._ema is None else self._ema)

        logits = self.policy()
        logp = log_prob(logits, orders, self.group_sizes, self.min_keep)
        entropy = entropy_estimate(logits, orders, self.group_sizes, self.min_keep).mean()
        loss = -((rewards - b) * logp).mean() - self.entropy_coef * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

        if self.baseline == "ema":
            # One decay step per episode, in episode order: the average follows the rewards at the same pace
            # whatever the batch size (per update, a batch of 20 would lag 20 times as many episodes behind).
            ema = mean_reward if self._ema is None else self._ema
            for reward in rewards.double().tolist():
                ema = self.baseline_decay * ema + (1 - self.baseline_decay) * reward
            self._ema = ema
        self.steps += 1
        return {
            "loss": float(loss.detach()),
            "entropy": float(entropy.detach()),
            "baseline": float(b.double().mean()),
            "mean_reward": mean_reward,
        }

    def best_guess(self) -> torch.Tensor:
        """The greedy keep-set: the top logits of each group up to its minimum, then the top logits of the rest.

        Returns:
            torch.Tensor: an ``[N]`` boolean mask with ``n_keep`` entries set.

        Example:
            >>> import torch
            >>> from torch_rlprune.search.controller import ReinforceController
            >>> ctrl = ReinforceController(torch.zeros(6, 1), [3, 3], 2, [1, 1], seed=0)
            >>> with torch.no_grad():
            ...     _ = ctrl.policy.filter_logit.copy_(torch.tensor([5.0, 4.0, 3.0, 2.0, 1.0, 0.0]))
            >>> ctrl.best_guess().nonzero().flatten().tolist()
            [0, 3]
        """
        with torch.no_grad():
            logits = self.policy()[None]
            return top_sequence(logits, logits, self._plan)[0][0]

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the search bit-exactly, including the sampling generator's state.

        As with :meth:`torch.nn.Module.state_dict`, the tensors share storage with the live ones: save the dict
        (:func:`torch.save`) or deep-copy it to keep a snapshot.

        Returns:
            dict: ``"config"`` (what must match on loading), ``"policy"``, ``"optimizer"`` (which holds ``lr``),
            ``"generator"``, ``"baseline"`` (the moving average, ``None`` before the first update), ``"steps"``,
            ``"entropy_coef"`` and ``"baseline_decay"``.

        Example:
            >>> import copy
            >>> import torch
            >>> from torch_rlprune.search.controller import ReinforceController
            >>> a = ReinforceController(torch.zeros(6, 1), [6], 2, [0], seed=0)
            >>> b = ReinforceController(torch.zeros(6, 1), [6], 2, [0], seed=1)
            >>> b.load_state_dict(copy.deepcopy(a.state_dict()))
            >>> torch.equal(a.sample(5)[1], b.sample(5)[1])
            True
        """
        return {
            "config": self._config(),
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": self._ema,
            "steps": self.steps,
            "entropy_coef": self.entropy_coef,
            "baseline_decay": self.baseline_decay,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; sampling and updates then continue exactly as they would have.

        Args:
            state_dict (dict): a dict returned by :meth:`state_dict` of a controller with the same group sizes,
                ``n_keep``, ``min_keep``, feature count, hidden width and kind of baseline. The learning rate,
                entropy coefficient and baseline decay are taken from the state.

        Raises:
            TypeError: ``state_dict`` is not such a dict.
            ValueError: the state comes from a controller set up differently.
        """
        if not isinstance(state_dict, dict) or "config" not in state_dict:
            raise TypeError("ReinforceController.load_state_dict: pass a dict returned by state_dict().")
        theirs, ours = state_dict["config"], self._config()
        different = sorted(k for k in ours if theirs.get(k) != ours[k])
        if different:
            raise ValueError(
                f"ReinforceController.load_state_dict: the state was saved with other {', '.join(different)} "
                f"({', '.join(f'{k}={theirs.get(k)!r}' for k in different)}); build the controller as it was built."
            )
        self.policy.load_state_dict(state_dict["policy"])
        self.optimizer.load_state_dict(state_dict["optimizer"])
        self.generator.set_state(state_dict["generator"])
        self._ema = state_dict["baseline"]
        self.steps = int(state_dict["steps"])
        self.entropy_coef = float(state_dict["entropy_coef"])
        self.baseline_decay = float(state_dict["baseline_decay"])

    def _config(self) -> dict[str, Any]:
        return {
            "group_sizes": list(self.group_sizes),
            "min_keep": list(self.min_keep),
            "n_keep": self.n_keep,
            "n_features": int(self.policy.features.shape[1]),
            "hidden": self.hidden,
            "baseline": self.baseline,
        }
