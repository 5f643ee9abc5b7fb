"""Protocol P1 of the quality benchmarks: prune the trained dense network, fine-tune with one fixed schedule, test.

Shared by ``quality.py`` and ``reward_fidelity.py``: the rewards a search can use (:data:`REWARDS`, one table), the
fine-tuning schedule every pruned network gets (:func:`fine_tune`), and the resumable results file
(:class:`Results`).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

import torch_rlprune as rlp
from _machine import available_cores
from torch_rlprune.data import Splits, batches
from torch_rlprune.search.evaluation import CandidateEvaluator
from torch_rlprune._files import atomic_write
from torch_rlprune.training import evaluate, train


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of the protocol: the rewards' data and the fine-tuning schedule."""
    p.add_argument("--finetune-epochs", type=int, default=5, help="fine-tuning epochs of every pruned network (5)")
    p.add_argument("--finetune-lr", type=float, default=0.01, help="fine-tuning SGD learning rate, cosine (0.01)")
    p.add_argument("--val-batches", type=int, default=2, help="validation batches per reward (default: 2)")
    p.add_argument("--val-batch-size", type=int, default=256, help="validation batch size (default: 256)")
    p.add_argument("--calibration-batches", type=int, default=4,
                   help="training batches that re-estimate the norm statistics of a recalibrated reward (4)")
    p.add_argument("--short-steps", type=int, default=20,
                   help="SGD steps of a short-trained reward (acc-short, loss-short), at --finetune-lr (20)")
    p.add_argument("--reward-pool", type=int, default=1,
                   help="sets of --val-batches validation batches that the search reward scores on in turn, one set "
                   "per reward (default 1: the same batches every time)")  # fmt: skip
    p.add_argument("--final-reward", default=None, choices=list(REWARDS),
                   help="the reward that re-scores a search's finalists, on the batches after the pool (default: "
                   "the search's --reward)")  # fmt: skip
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice); two "
                   "scripts side by side on 2 cores run best with 1 each")  # fmt: skip


#: Settings of the protocol that change the numbers: a results file made with others is not resumed.
SETTINGS = ("finetune_epochs", "finetune_lr", "val_batches", "val_batch_size", "calibration_batches", "short_steps",
            "batch_size")  # fmt: skip


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """:data:`SETTINGS` of this run, with ``reward_pool`` where it is not 1 and ``final_reward`` where it is given
    (files from before them had neither)."""
    chosen = {k: getattr(args, k) for k in SETTINGS}
    if args.reward_pool != 1:
        chosen["reward_pool"] = args.reward_pool
    if args.final_reward is not None:
        chosen["final_reward"] = args.final_reward
    return chosen


def validation_loader(args: argparse.Namespace, data: Splits, offset: int = 0, sets: int = 1) -> Any:
    """``sets`` times ``--val-batches`` fixed batches of the validation split, starting ``offset`` batches in (fresh
    batches for re-scoring); a seeded permutation so that every batch mixes the classes."""
    order = torch.randperm(len(data.val), generator=torch.Generator().manual_seed(0))
    size, count = args.val_batch_size, sets * args.val_batches
    picked = order[offset * size : (offset + count) * size]
    if len(picked) < count * size:
        raise SystemExit(f"the validation split has too few images for {offset + count} batches of {size}")
    subset = torch.utils.data.TensorDataset(*data.val.batch(picked))
    return batches(subset, size)


def calibration_loader(args: argparse.Namespace, data: Splits) -> Any:
    """Training batches (no augmentation) for recalibrated rewards; the first ``--calibration-batches`` are used."""
    return batches(data.train, args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(1))


def _variant(measure: type, norms: str, recalibrated: bool = False,
             trained: bool = False) -> Callable[[argparse.Namespace, Splits, int, int], tuple[Any, str]]:  # fmt: skip
    def build(args: argparse.Namespace, data: Splits, offset: int, pool: int) -> tuple[Any, str]:
        reward = measure(validation_loader(args, data, offset, pool), batches=args.val_batches, pool=pool)
        if recalibrated:
            reward = rlp.rewards.Recalibrated(reward, calibration_loader(args, data), batches=args.calibration_batches)
        if trained:
            reward = rlp.rewards.ShortTrained(reward, calibration_loader(args, data), steps=args.short_steps,
                                              lr=args.finetune_lr)  # fmt: skip
        return reward, norms

    return build


#: Reward variants by name, each building ``(reward, norms of its evaluator)``.
REWARDS: dict[str, Callable[[argparse.Namespace, Splits, int, int], tuple[Any, str]]] = {
    "acc-batch": _variant(rlp.rewards.Accuracy, "batch"),
    "loss-batch": _variant(rlp.rewards.NegativeLoss, "batch"),
    "acc-eval": _variant(rlp.rewards.Accuracy, "eval"),
    "loss-eval": _variant(rlp.rewards.NegativeLoss, "eval"),
    "acc-recal": _variant(rlp.rewards.Accuracy, "eval", recalibrated=True),
    "loss-recal": _variant(rlp.rewards.NegativeLoss, "eval", recalibrated=True),
    "acc-short": _variant(rlp.rewards.Accuracy, "eval", recalibrated=True, trained=True),
    "loss-short": _variant(rlp.rewards.NegativeLoss, "eval", recalibrated=True, trained=True),
}


def make_reward(name: str, args: argparse.Namespace, data: Splits, offset: int = 0, pool: int = 1) -> tuple[Any, str]:
    """The reward called ``name`` in :data:`REWARDS` on the validation batches from ``offset`` (``pool`` sets of
    them, taken in turn), and its ``norms``."""
    return REWARDS[name](args, data, offset, pool)


def convs_of(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]


def candidate_reward(model: nn.Module, example: torch.Tensor, keep: list[torch.Tensor], reward: Any, norms: str) -> float:
    """``reward`` of the keep-set ``keep`` (one boolean tensor per channel group), computed as a search computes it."""
    groups = rlp.channel_groups(model, example)
    evaluator = CandidateEvaluator(model, groups, example, norms=norms)
    with evaluator.active(), torch.no_grad():
        return float(reward(evaluator.view(keep)))


def fine_tune(args: argparse.Namespace, pruned: nn.Module, data: Splits, example: torch.Tensor, seed: int) -> dict[str, Any]:
    """Slice ``pruned`` (a model with masks), train it with the one fine-tuning schedule, and test it."""
    small = rlp.slim(pruned, example)
    stats = rlp.metrics.model_stats(small, example)
    loader = batches(data.train, args.batch_size, shuffle=True, augment=True,
                     generator=torch.Generator().manual_seed(seed))  # fmt: skip
    test = batches(data.test, 1000)
    before = evaluate(small, test)
    start = time.perf_counter()
    history = train(small, loader, args.finetune_epochs, lr=args.finetune_lr, seed=seed)
    return {"test_accuracy": evaluate(small, test), "test_accuracy_before": before, "params": stats.params_kept,
            "macs": stats.macs_kept, "widths": [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)],
            "finetune_seconds": time.perf_counter() - start, "final_loss": history[-1]["loss"] if history else None}  # fmt: skip


def environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "torch_rlprune": rlp.__version__,
            "threads": torch.get_num_threads(), "cores": available_cores(), "device": "cpu"}  # fmt: skip


def search_inputs(args: argparse.Namespace, data: Splits) -> tuple[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]]:
    """What every search of a table gets: ``(reward, norms, final reward)`` and the validation batches as one
    ``(inputs, targets)`` pair (what SNIP scores on). The search's reward takes ``--reward-pool`` sets of
    validation batches in turn (one set by default); the finalists are re-scored on the batches after them, with
    ``--final-reward`` (the same kind of reward by default)."""
    if args.reward_pool < 1:
        raise SystemExit(f"--reward-pool must be at least 1, got {args.reward_pool}")
    search, norms = make_reward(args.reward, args, data, pool=args.reward_pool)
    final, final_norms = make_reward(args.final_reward or args.reward, args, data,
                                     offset=args.reward_pool * args.val_batches)  # fmt: skip
    if final_norms != norms:  # the search's evaluator computes both
        raise SystemExit(f"--final-reward {args.final_reward} evaluates with norms={final_norms!r}, --reward "
                         f"{args.reward} with {norms!r}; choose two of the same norms")  # fmt: skip
    pairs = list(validation_loader(args, data))
    return (search, norms, final), (torch.cat([x for x, _ in pairs]), torch.cat([y for _, y in pairs]))


def mean_std(values: list[float]) -> str:
    """Accuracies (fractions) as percent, mean ± std; ``-`` for none."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}"
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def best_of(baselines: dict[str, dict[int, float]]) -> str | None:
    """The method of highest mean accuracy among ``{method: {seed: accuracy}}`` (those with runs), if any."""
    done = {m: runs for m, runs in baselines.items() if runs}
    return max(done, key=lambda m: statistics.fmean(done[m].values())) if done else None


def paired_cell(method: str, best: str | None, accuracies: Callable[[str], dict[int, float]]) -> str:
    """A table cell: the method's mean ± std over seeds and, unless it is the best baseline, in brackets the mean
    ± std of its per-seed differences to that baseline (over the seeds both ran)."""
    mine = accuracies(method)
    cell = mean_std(list(mine.values()))
    reference = accuracies(best) if best else {}
    paired = [mine[seed] - reference[seed] for seed in mine if seed in reference]
    if paired and method != best:
        cell += f"  ({100 * statistics.fmean(paired):+.2f}"
        cell += f" ± {100 * statistics.stdev(paired):.2f})" if len(paired) > 1 else ")"
    return cell


class Results:
    """A results file: the settings and one record per finished run, rewritten atomically after every run.

    A restarted script skips the runs already there; a file made with other settings is refused. Processes that
    share the file (each running other runs) merge their runs into it under a lock, so none overwrites another's.
    """

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path, self.settings = path, settings
        self.runs = self._read()
        if self.runs:
            print(f"resuming {path}: {len(self.runs)} run(s) done", flush=True)
        self.done = {r["key"] for r in self.runs}

    def _read(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        old = json.loads(self.path.read_text())
        mismatch = {k: (old["settings"].get(k), v) for k, v in self.settings.items() if old["settings"].get(k) != v}
        if mismatch:
            detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in mismatch.items())
            sys.exit(f"{self.path} holds runs made with other settings ({detail}). Pass another --out, or delete it.")
        return old["runs"]

    def add(self, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            there = {r["key"]: r for r in self._read()}
            self.runs = [*there.values(), *(r for r in self.runs if r["key"] not in there), record]
            self.done = {r["key"] for r in self.runs}
            payload = {"settings": self.settings, "environment": environment(),
                       "updated": datetime.datetime.now().isoformat(timespec="seconds"), "runs": self.runs}  # fmt: skip
            atomic_write(self.path, lambda f: f.write(json.dumps(payload, indent=1).encode()))
