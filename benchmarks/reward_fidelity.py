"""Does a search reward predict what the pruned network reaches after fine-tuning?

Run by hand (nothing here is collected by pytest)::

    python benchmarks/reward_fidelity.py              # 24 masks: about 40 minutes on 2 CPU cores after dense.py
    python benchmarks/reward_fidelity.py --masks 4 --finetune-epochs 1 --out /tmp/fidelity.json   # smoke run

Starting from the trained dense BasicCNN of ``dense.py`` (protocol P1), ``--masks`` keep-sets at ``--sparsity``
of the filters are drawn with diverse layer widths: per-layer keep fractions uniform in [0.05, 1], projected onto
the budget, each layer keeping its largest-L1 filters (:class:`torch_rlprune.search.widths.RandomWidthStrategy`). Every
mask is scored by every reward variant of ``protocol.REWARDS`` exactly as a search scores a candidate (a
:class:`~torch_rlprune.search.evaluation.CandidateModel` on the validation batches), then the masked network is sliced,
fine-tuned with the P1 schedule and tested once. For every variant the script prints the Spearman rank
correlation between reward and test accuracy over the masks, with a 95% bootstrap interval (masks resampled with
replacement), beside the correlation of the test accuracy before fine-tuning, which no search can see.

Every finished mask is written at once to ``--out`` (atomically) and a restarted script skips the masks already
there.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import torch

import dense
import protocol
import torch_rlprune as rlp
from _machine import OtherLoad, print_header, print_table
from torch_rlprune.search.features import filter_features
from torch_rlprune.search.widths import RandomWidthStrategy

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "reward_fidelity.json"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    dense.add_arguments(p)
    protocol.add_arguments(p)
    p.add_argument("--masks", type=int, default=24, help="keep-sets to fine-tune (default: 24)")
    p.add_argument("--sparsity", type=float, default=0.8, help="share of the filters pruned (default: 0.8)")
    p.add_argument("--rewards", default=",".join(protocol.REWARDS),
                   help=f"reward variants (default: all of {','.join(protocol.REWARDS)})")  # fmt: skip
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples (default: 2000)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"results file (default: {DEFAULT_OUT})")
    p.add_argument("--report", action="store_true", help="print the table of the masks in --out, run nothing")
    args = p.parse_args(argv)
    args.rewards = [r for r in args.rewards.split(",") if r]
    unknown = sorted(set(args.rewards) - set(protocol.REWARDS))
    if unknown:
        p.error(f"unknown reward(s) {', '.join(unknown)}; choose from {', '.join(protocol.REWARDS)}")
    if not 0 < args.sparsity < 1 or args.masks < 3:
        p.error("--sparsity must lie in (0, 1) and --masks be at least 3")
    return args


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks from 0, ties sharing their mean rank."""
    order = values.argsort()
    r = torch.empty_like(values)
    r[order] = torch.arange(len(values), dtype=values.dtype)
    for v in values.unique():
        tied = values == v
        r[tied] = r[tied].mean()
    return r


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    rx, ry = ranks(x), ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.norm() * ry.norm()).item()
    return (rx @ ry).item() / denominator if denominator > 0 else 0.0


def bootstrap(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[float, float]:
    generator = torch.Generator().manual_seed(0)
    values = sorted(spearman(x[i], y[i]) for i in torch.randint(len(x), (n, len(x)), generator=generator))
    return values[int(0.025 * n)], values[int(0.975 * n) - 1]


def masks(args: argparse.Namespace, model: torch.nn.Module, example: torch.Tensor) -> list[list[torch.Tensor]]:
    """``--masks`` keep-sets with random widths, the same for every run of the script."""
    groups = rlp.channel_groups(model, example)
    sizes = [g.size for g in groups]
    n_keep = sum(sizes) - round(args.sparsity * sum(sizes))
    ranking = filter_features(model, groups)[:, 0]
    strategy = RandomWidthStrategy(sizes, n_keep, [1] * len(sizes), ranking, seed=0)
    flat, _ = strategy.propose(args.masks)
    return [list(k.split(sizes)) for k in flat]


def summary(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    accuracy = torch.tensor([r["test_accuracy"] for r in runs], dtype=torch.float64)
    rows = []
    columns = [*(f"reward:{name}" for name in args.rewards), "test_accuracy_before"]
    for column in columns:
        key = column.removeprefix("reward:")
        values = torch.tensor([r["rewards"][key] if column.startswith("reward:") else r[key] for r in runs],
                              dtype=torch.float64)  # fmt: skip
        low, high = bootstrap(values, accuracy, args.bootstrap)
        rows.append([key, f"{spearman(values, accuracy):+.2f}", f"[{low:+.2f}, {high:+.2f}]"])
    print_table(f"Spearman correlation with the test accuracy after {args.finetune_epochs} epochs of fine-tuning, "
                f"{len(runs)} masks at {args.sparsity:.0%} of the filters (95% bootstrap interval)",
                ["reward", "spearman", "interval"], rows)  # fmt: skip
    print(f"test accuracy after fine-tuning: {accuracy.mean():.4f} mean, {accuracy.min():.4f}-{accuracy.max():.4f}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_header("reward_fidelity.py")
    data = dense.splits(args)
    model, record = dense.dense_network(args, data)
    print(f"dense network: test accuracy {record['test_accuracy']:.4f}", flush=True)
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
    settings = {**dense.settings(args), **protocol.settings(args),
                "masks": args.masks, "sparsity": args.sparsity}  # fmt: skip
    results = protocol.Results(Path(args.out), settings)
    if args.report:
        summary(args, results.runs)
        return 0
    rewards = {name: protocol.make_reward(name, args, data) for name in args.rewards}
    load = OtherLoad()
    load.start()
    for index, keep in enumerate(masks(args, model, example)):
        key = f"mask{index}"
        if key in results.done:
            continue
        scores = {name: protocol.candidate_reward(model, example, keep, reward, norms)
                  for name, (reward, norms) in rewards.items()}  # fmt: skip
        pruned = copy.deepcopy(model)
        rlp.apply_channel_masks(rlp.channel_groups(pruned, example), keep)
        outcome = protocol.fine_tune(args, pruned, data, example, seed=index)
        results.add({"key": key, "rewards": scores, **outcome})
        print(f"{key}: widths {outcome['widths']}, test {outcome['test_accuracy']:.4f} "
              f"(before fine-tuning {outcome['test_accuracy_before']:.4f}), {outcome['finetune_seconds']:.0f} s, "
              + ", ".join(f"{n} {v:.4f}" for n, v in scores.items()), flush=True)  # fmt: skip
    summary(args, results.runs)
    print(load.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
