"""Do the lottery-ticket claims hold? Protocol P2: search at epoch k of the dense run, rewind, train again.

Run by hand (nothing here is collected by pytest)::

    python benchmarks/lottery.py            # 4 methods x 2 rewinds x 3 seeds, each trained for the dense
                                            # schedule: most of a day on 2 CPU cores, resumable run by run
    python benchmarks/lottery.py --report   # the tables of the runs done so far
    python benchmarks/lottery.py --data digits --dense-dir /tmp/dense --dense-epochs 2 --search-epoch 1 \\
        --methods rl,l1-global --seeds 0 --episodes 8 --val-batch-size 32 --out /tmp/p2.json   # smoke run

The method's thesis searched a mask early in training and rewound the kept filters, as lottery tickets do. Here
every method of ``quality.py`` (:data:`quality.METHODS`, with the same reward and evaluation budget) prunes the
dense network *as it was after epoch k* (``--search-epoch``; ``dense.py`` keeps the weights of every epoch) to
``--amount`` of its filters. The kept filters are then rewound (:func:`torch_rlprune.lottery.rewind`, the masks
kept) to the initial weights (``init``) or to those of epoch k (``k``), and the pruned network, sliced, is trained
with the dense network's own schedule (its epochs, learning rate, batch size and augmentation) and tested once.
One search serves both rewinds of a method and seed. The table gives the test accuracy, mean ± std over seeds,
and the paired per-seed difference to the best baseline of its column; the dense network's is the reference.
Protocol P1 (prune the trained network, fine-tune) is ``quality.py``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

import torch

import dense
import protocol
import quality
import torch_rlprune as rlp
from _machine import OtherLoad, print_header, print_table

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "lottery_p2.json"
REWINDS = ("init", "k")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    dense.add_arguments(p)
    protocol.add_arguments(p)
    p.add_argument("--amount", type=float, default=0.8, help="share of the filters pruned (default: 0.8)")
    p.add_argument("--search-epoch", type=int, default=2, help="k: the dense epoch searched at (default: 2)")
    p.add_argument("--methods", default="rl,l1-global,random-width-bnout,random",
                   help=f"subset of {','.join(quality.METHODS)} (default: rl,l1-global,random-width-bnout,random)")
    p.add_argument("--seeds", default="0,1,2", help="seeds (default: 0,1,2)")
    p.add_argument("--episodes", type=int, default=192, help="rewards evaluated per search (default: 192)")
    p.add_argument("--min-keep", type=float, default=0.05, help="share of every layer kept at least (0.05)")
    p.add_argument("--finalists", type=int, default=4, help="best keep-sets re-scored on fresh batches (4)")
    p.add_argument("--reward", default="acc-recal", choices=list(protocol.REWARDS), help="(default: acc-recal)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"results file (default: {DEFAULT_OUT})")
    p.add_argument("--report", action="store_true", help="print the tables of the runs in --out, run nothing")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(quality.METHODS))
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(quality.METHODS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error("--seeds are comma-separated ints")
    if not 0 < args.amount < 1:
        p.error("--amount is a share of the filters, in (0, 1)")
    if not 0 <= args.search_epoch <= args.epochs:
        p.error(f"--search-epoch must be within the dense run's 0..{args.epochs} epochs")
    return args


def report(args: argparse.Namespace, runs: list[dict[str, Any]], dense_accuracy: float) -> None:
    def accuracies(method: str, rewind: str) -> dict[int, float]:
        return {r["seed"]: r["test_accuracy"] for r in runs
                if (r["method"], r["rewind"]) == (method, rewind) and r["seed"] in args.seeds}  # fmt: skip

    best = {r: protocol.best_of({m: accuracies(m, r) for m in args.methods if m not in quality.OURS}) for r in REWINDS}
    rows = [[method, *(protocol.paired_cell(method, best[r], lambda m: accuracies(m, r)) for r in REWINDS)]
            for method in args.methods]  # fmt: skip
    print_table(f"Test accuracy (%) of the dense network's filters found at epoch {args.search_epoch}, "
                f"{args.amount:.0%} pruned, rewound and trained for {args.epochs} epochs (the dense schedule; the "
                f"dense network: {100 * dense_accuracy:.2f}%); mean ± std over seeds {args.seeds}; in brackets the "
                "paired per-seed difference to the best baseline of the column",
                ["method", "rewound to init", f"rewound to epoch {args.search_epoch}"], rows)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_header("lottery.py")
    data = dense.splits(args)
    model, record = dense.dense_network(args, data, log=lambda line: print(line, flush=True))
    settings = {**dense.settings(args), **protocol.settings(args),
                "episodes": args.episodes, "finalists": args.finalists, "reward": args.reward,
                "min_keep": args.min_keep, "amount": args.amount, "search_epoch": args.search_epoch}  # fmt: skip
    results = protocol.Results(Path(args.out), settings)
    if args.report:
        report(args, results.runs, record["test_accuracy"])
        return 0
    snapshots = {"init": torch.load(Path(args.dense_dir) / "epoch0.pt", weights_only=True),
                 "k": torch.load(Path(args.dense_dir) / f"epoch{args.search_epoch}.pt", weights_only=True)}  # fmt: skip
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
    # The pruned networks train with the dense network's schedule, not quality.py's fine-tuning one.
    schedule = argparse.Namespace(**{**vars(args), "finetune_epochs": args.epochs, "finetune_lr": args.lr})
    load = OtherLoad()
    load.start()
    plan = [(seed, method) for seed in args.seeds for method in args.methods]
    for index, (seed, method) in enumerate(plan, 1):
        todo = [r for r in REWINDS if f"{method}|{r}|{seed}" not in results.done]
        if not todo:
            continue
        reward, val = protocol.search_inputs(args, data)  # per run: a --reward-pool starts its turns afresh
        searched = copy.deepcopy(model)
        searched.load_state_dict(snapshots["k"])
        start = time.perf_counter()
        evaluations = quality.METHODS[method](searched, example, args.amount, args, reward, seed, val)
        search_seconds = time.perf_counter() - start
        for rewind in todo:
            # rewind writes every weight and buffer, and fine_tune trains a sliced copy: the masks serve again.
            outcome = protocol.fine_tune(schedule, rlp.lottery.rewind(searched, snapshots[rewind]), data, example, seed)
            results.add({"key": f"{method}|{rewind}|{seed}", "method": method, "rewind": rewind, "seed": seed,
                         "evaluations": evaluations, "search_seconds": search_seconds, **outcome})  # fmt: skip
            print(f"[{index}/{len(plan)}] {method:12s} rewound to {rewind:4s} seed {seed}: test "
                  f"{outcome['test_accuracy']:.4f} widths {outcome['widths']} search {search_seconds:.0f}s "
                  f"training {outcome['finetune_seconds']:.0f}s", flush=True)  # fmt: skip
    report(args, results.runs, record["test_accuracy"])
    print(load.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
