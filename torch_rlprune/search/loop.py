"""The search loop shared by every search method.

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

from .._files import atomic_save, read_checked
from .._memory import release_freed_memory
from .rewards import check_reward, search_step

__all__ = ["SearchStrategy", "SearchResult", "run_search"]

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


#: Evaluations between two returns of freed heap memory to the system (see :func:`release_freed_memory`).
TRIM_EVERY = 8


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
                step = search_step.set(result.evaluations // batch)
                try:
                    for i in ranks.mine(len(keep)):
                        rewards[i] = check_reward(evaluate(keep[i]), evaluate)
                except Exception:
                    ranks.share(rewards, failed=True)
                    raise
                finally:
                    search_step.reset(step)
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
            if result.evaluations // TRIM_EVERY > (result.evaluations - len(records)) // TRIM_EVERY:
                release_freed_memory()
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
