"""The search loop shared by REINFORCE, simulated annealing and random search.

A *strategy* proposes keep-sets over ``N`` filters (the alive channels of the searched groups, concatenated in
group order), every one of exactly ``n_keep`` filters with at least ``min_keep[g]`` in group ``g``, and learns
from their rewards. :func:`run_search` asks it for candidates, evaluates them, keeps the best, records the
history, reports progress, checkpoints atomically and resumes, and returns the best keep-set found when
interrupted with Ctrl-C rather than losing the search.
"""

from __future__ import annotations

import copy
import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

import torch

from .controller import ReinforceController, sample_keep
from .rewards import check_reward
from .selection import select_channels
from .serialization import atomic_save, read_checked

__all__ = [
    "SearchStrategy",
    "ReinforceStrategy",
    "AnnealingStrategy",
    "RandomStrategy",
    "RoundedStrategy",
    "SearchResult",
    "run_search",
]

PathLike = Union[str, os.PathLike]


class SearchStrategy(Protocol):
    """What :func:`run_search` needs of a strategy."""

    kind: str
    group_sizes: list[int]
    n_keep: int

    def propose(self, n: int) -> tuple[torch.Tensor, Any]:
        """``n`` candidate keep-sets as a ``[n, N]`` boolean tensor, and whatever :meth:`observe` needs back."""

    def observe(self, token: Any, keep: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        """Learn from the rewards of the candidates of one :meth:`propose`; return statistics to record."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where the strategy is."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class ReinforceStrategy:
    """REINFORCE over keep-sets (:class:`~torch_rlprune.controller.ReinforceController`); records the entropy.

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


class RandomStrategy:
    """Uniformly random keep-sets (honouring ``min_keep``): the baseline every search must beat.

    Args:
        group_sizes (sequence of int): filters per group.
        n_keep (int): filters every keep-set holds.
        min_keep (sequence of int): filters each group keeps at least.
        seed (int, optional): seeds the sampling.
    """

    kind = "random"

    def __init__(self, group_sizes: Sequence[int], n_keep: int, min_keep: Sequence[int], seed: int | None = None) -> None:
        self.group_sizes, self.n_keep, self.min_keep = list(group_sizes), n_keep, list(min_keep)
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)

    def propose(self, n: int) -> tuple[torch.Tensor, Any]:
        flat = torch.zeros(n, sum(self.group_sizes))
        keep, _ = sample_keep(flat, self.n_keep, self.group_sizes, self.min_keep, self.generator)
        return keep, None

    def observe(self, token: Any, keep: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


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
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
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


@dataclass
class SearchResult:
    """What a search found.

    Attributes:
        best_keep (torch.Tensor): ``[N]`` boolean keep-set with the highest reward seen.
        best_reward (float): its reward.
        history (list of dict): one record per evaluation: ``episode``, ``reward``, ``best_reward``,
            ``kept`` (filters kept per group) and the strategy's statistics (``entropy`` for REINFORCE,
            ``temperature`` for annealing).
        wall_time (float): seconds spent searching, over all resumed runs.
        evaluations (int): rewards computed, over all resumed runs.
        interrupted (bool): the search stopped early on ``KeyboardInterrupt``.
        finalists (list of tuple): with ``run_search(finalists=k)``, the ``k`` distinct keep-sets of highest
            reward, ``(reward, keep)``, best first.
        final_rewards (list of float): the finalists' rewards on fresh data, where a pruning method re-scored
            them (its ``final_reward``); ``best_keep`` is then the finalist that scored highest there.
    """

    best_keep: torch.Tensor
    best_reward: float
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time: float = 0.0
    evaluations: int = 0
    interrupted: bool = False
    finalists: list[tuple[float, torch.Tensor]] = field(default_factory=list)
    final_rewards: list[float] = field(default_factory=list)

    def _admit(self, reward: float, keep: torch.Tensor, places: int) -> None:
        if places < 1 or any(torch.equal(keep, k) for _, k in self.finalists):
            return
        if len(self.finalists) < places or reward > self.finalists[-1][0]:
            self.finalists.append((reward, keep))
            self.finalists.sort(key=lambda pair: -pair[0])
            del self.finalists[places:]


def _progress(total: int, initial: int, enabled: bool, desc: str) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is an optional extra
        return None
    return tqdm(total=total, initial=initial, desc=desc, unit="ep", leave=False)


def _log(writer: Any, record: dict[str, Any]) -> None:
    for key, value in record.items():
        if key not in ("episode", "kept") and isinstance(value, (int, float)):
            writer.add_scalar(f"search/{key}", value, record["episode"])
    for g, count in enumerate(record["kept"]):
        writer.add_scalar(f"kept/group{g}", count, record["episode"])


def _checkpoint(path: PathLike, strategy: SearchStrategy, result: SearchResult) -> None:
    atomic_save(
        {
            "kind": strategy.kind,
            "group_sizes": list(strategy.group_sizes),
            "n_keep": strategy.n_keep,
            "strategy": strategy.state_dict(),
            "best_keep": result.best_keep,
            "best_reward": result.best_reward,
            "history": result.history,
            "wall_time": result.wall_time,
            "evaluations": result.evaluations,
            "finalists": result.finalists,
        },
        path,
    )


def _check_writable(path: PathLike) -> None:
    """Fail before the search, not after an hour of it, where the checkpoint cannot be written."""
    if os.path.isdir(path):
        raise ValueError(
            f"run_search: the checkpoint {os.fspath(path)!r} is a directory; pass a file path inside it, e.g. "
            f"{os.path.join(os.fspath(path), 'search.pt')!r}."
        )
    folder = os.path.dirname(os.path.abspath(path))
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ValueError(
            f"run_search: cannot write the checkpoint {os.fspath(path)!r} ({exc.strerror or exc}); choose a folder "
            "that exists and is writable."
        ) from exc


def _resume(path: PathLike, strategy: SearchStrategy, n_keep: int) -> SearchResult:
    state = read_checked(path, "search checkpoint", "resume")
    mine = (strategy.kind, list(strategy.group_sizes), n_keep)
    theirs = (state.get("kind"), state.get("group_sizes"), state.get("n_keep")) if isinstance(state, dict) else None
    if theirs != mine:
        raise ValueError(
            f"resume: {path} belongs to another search (strategy, group sizes, filters kept = {theirs}, this one "
            f"is {mine}); resume with the same method, model, amount, min_keep and round_to, or start a new "
            "checkpoint."
        )
    strategy.load_state_dict(state["strategy"])
    return SearchResult(state["best_keep"], state["best_reward"], state["history"], state["wall_time"],
                        state["evaluations"], finalists=state.get("finalists", []))  # fmt: skip


class _Ranks:
    """This process's share of the candidates when a search runs on several processes (``torch.distributed``).

    Every rank holds the same strategy, seeded alike, so every rank proposes the same candidates; rank ``r``
    evaluates candidates ``r, r + W, r + 2W, ...`` and one all-reduce gives every rank every reward, so all ranks
    learn the same thing and end with the same result as one process would.
    """

    def __init__(self, distributed: Any) -> None:
        self.group = None
        self.rank, self.size = 0, 1
        if distributed is False or distributed is None:
            return
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "run_search: distributed search needs torch.distributed initialised in every process (launch with "
                "torchrun and call torch.distributed.init_process_group()), or pass distributed=False."
            )
        self.group = None if distributed is True else distributed
        self.rank, self.size = dist.get_rank(self.group), dist.get_world_size(self.group)
        backend = dist.get_backend(self.group)
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def mine(self, n: int) -> range:
        return range(self.rank, n, self.size)

    def share(self, rewards: torch.Tensor, failed: bool) -> torch.Tensor:
        """Sum every rank's rewards (each holds zeros where others evaluated); raise on all if one failed."""
        if self.size == 1:
            return rewards
        import torch.distributed as dist

        packed = torch.cat([rewards, torch.tensor([float(failed)], dtype=rewards.dtype)]).to(self.device)
        dist.all_reduce(packed, group=self.group)
        packed = packed.cpu()
        if packed[-1] > 0 and not failed:
            raise RuntimeError(f"run_search: the reward failed on {int(packed[-1])} other rank(s); see their error.")
        return packed[:-1]


def run_search(
    strategy: SearchStrategy,
    evaluate: Callable[[torch.Tensor], Any],
    *,
    episodes: int,
    batch: int = 1,
    callbacks: Sequence[Callable[[dict[str, Any]], None]] = (),
    writer: Any = None,
    checkpoint: PathLike | None = None,
    checkpoint_every: int = 50,
    resume: PathLike | None = None,
    progress: bool = True,
    distributed: Any = False,
    finalists: int = 0,
) -> SearchResult:
    r"""Evaluate ``episodes`` candidates proposed by ``strategy``, ``batch`` at a time, and keep the best.

    Args:
        strategy (SearchStrategy): proposes keep-sets and learns from their rewards.
        evaluate (callable): ``evaluate(keep) -> float``, the reward of one ``[N]`` boolean keep-set.
        episodes (int): evaluations in all, counting those of the run being resumed.
        batch (int): candidates per proposal (REINFORCE's episodes per update). Default: 1.
        callbacks (sequence of callable): each called with every history record as it is made.
        writer (torch.utils.tensorboard.SummaryWriter, optional): receives ``search/reward``,
            ``search/best_reward``, the strategy's statistics, and ``kept/<group>`` per evaluation.
        checkpoint (str or os.PathLike, optional): file to write the search state to, atomically, every
            ``checkpoint_every`` evaluations, at the end, and on interruption.
        checkpoint_every (int): evaluations between checkpoints. Default: 50.
        resume (str or os.PathLike, optional): a checkpoint to continue from; the search then ends with the
            result an uninterrupted run would have given.
        progress (bool): show a tqdm progress bar where tqdm is installed. Default: ``True``.
        distributed (bool or ProcessGroup): ``True`` (the default group) or a process group to share the
            evaluations of every batch between the processes of a :mod:`torch.distributed` job, each rank
            evaluating every ``world_size``-th candidate. Every rank must call ``run_search`` with the same
            arguments and an identically seeded strategy; every rank then returns the same result, equal to a
            one-process search with the same seed and ``episodes``. Only rank 0 shows progress, writes to
            ``writer`` and writes ``checkpoint``; every rank reads ``resume``, so it must be on a shared file
            system. Use a ``batch`` that is a multiple of the world size, or some ranks idle. Default: ``False``.
        finalists (int): also keep the ``finalists`` distinct keep-sets of highest reward, in
            :attr:`SearchResult.finalists`, e.g. to re-score them on fresh data. Default: 0.

    Returns:
        SearchResult: the best keep-set, its reward, the history, the time and the number of evaluations.

    Raises:
        ValueError: ``episodes`` or ``batch`` below 1, a reward that is NaN or infinite, a checkpoint of another
            search, a ``checkpoint`` path that cannot be written (checked before the first evaluation).
        TypeError: a reward that is not a number.

    Example:
        >>> import torch
        >>> from torch_rlprune.search import RandomStrategy, run_search
        >>> strategy = RandomStrategy([4, 4], n_keep=3, min_keep=[1, 1], seed=0)
        >>> result = run_search(strategy, lambda keep: float(keep[:2].sum()), episodes=20, progress=False)
        >>> result.evaluations, result.best_reward
        (20, 2.0)
    """
    if isinstance(finalists, bool) or not isinstance(finalists, int) or finalists < 0:
        raise ValueError(f"run_search: finalists must be an int >= 0, got {finalists!r}.")
    for name, value in (("episodes", episodes), ("batch", batch), ("checkpoint_every", checkpoint_every)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"run_search: {name} must be an int, got {type(value).__name__}.")
        if value < 1:
            raise ValueError(f"run_search: {name}={value}; it must be at least 1.")
    ranks = _Ranks(distributed)
    if not ranks.leader:
        writer, checkpoint, progress = None, None, False
    if checkpoint is not None:
        _check_writable(checkpoint)
    if resume is not None:
        result = _resume(resume, strategy, strategy.n_keep)
    else:
        result = SearchResult(torch.zeros(sum(strategy.group_sizes), dtype=torch.bool), -math.inf)
    bounds = torch.tensor([0, *strategy.group_sizes]).cumsum(0).tolist()
    bar = _progress(episodes, result.evaluations, progress, strategy.kind)
    since_checkpoint = 0
    started = time.perf_counter()
    try:
        while result.evaluations < episodes:
            # A step interrupted between proposing and learning is undone, so that a checkpoint written on
            # Ctrl-C holds a state the search can continue from exactly.
            before = copy.deepcopy(strategy.state_dict()) if checkpoint is not None else None
            try:
                keep, token = strategy.propose(min(batch, episodes - result.evaluations))
                rewards = torch.zeros(len(keep), dtype=torch.float64)
                try:
                    for i in ranks.mine(len(keep)):
                        rewards[i] = check_reward(evaluate(keep[i]), evaluate)
                except Exception:
                    ranks.share(rewards, failed=True)
                    raise
                rewards = ranks.share(rewards, failed=False)
                stats = strategy.observe(token, keep, rewards)
            except KeyboardInterrupt:
                if before is not None:
                    strategy.load_state_dict(before)
                raise
            records = []
            for k, r in zip(keep, rewards.tolist()):
                if r > result.best_reward:
                    result.best_keep, result.best_reward = k.clone().cpu(), r
                result._admit(r, k.clone().cpu(), finalists)
                counts = [int(k[a:b].sum()) for a, b in zip(bounds, bounds[1:])]
                records.append({"episode": result.evaluations + len(records), "reward": r,
                                "best_reward": result.best_reward, "kept": counts, **stats})  # fmt: skip
            result.history.extend(records)
            result.evaluations += len(records)
            for record in records:
                for callback in callbacks:
                    callback(record)
                if writer is not None:
                    _log(writer, record)
            if bar is not None:
                bar.update(len(records))
                bar.set_postfix(best=f"{result.best_reward:.4g}")
            since_checkpoint += len(records)
            if checkpoint is not None and since_checkpoint >= checkpoint_every:
                result.wall_time += time.perf_counter() - started
                started = time.perf_counter()
                _checkpoint(checkpoint, strategy, result)
                since_checkpoint = 0
    except KeyboardInterrupt:
        result.interrupted = True
    finally:
        if bar is not None:
            bar.close()
    result.wall_time += time.perf_counter() - started
    if checkpoint is not None:
        _checkpoint(checkpoint, strategy, result)
    return result
