"""Which pruned network should a user keep? Protocol P1: prune a trained network, fine-tune, test.

Run by hand (nothing here is collected by pytest)::

    python benchmarks/quality.py            # 4 targets x 11 methods x 3 seeds: hours on 2 CPU cores, resumable
    python benchmarks/quality.py --targets 0.8 --methods l1-global,rl --seeds 0 --episodes 8 \\
        --finetune-epochs 1 --out /tmp/quality.json        # smoke run

Two processes may share one ``--out`` (with disjoint ``--methods`` and ``--threads 1`` each, the fastest way
through the table on 2 cores): every run is merged into the file under a lock.

Every method prunes the same trained dense BasicCNN (``dense.py``: the whole CIFAR-10 training split less 5,000
validation images, trained once and cached) to each target of ``--targets`` (a share of the filters pruned, or
``macsF``: at most the share F of the MACs kept, ``amount=rlp.MACs(F)``, for the methods that can meet it: the
rankings and the width searches); the pruned network is
sliced (:func:`torch_rlprune.slim`), fine-tuned with one fixed schedule (``--finetune-epochs`` epochs of SGD,
cosine learning rate from ``--finetune-lr``, crop and flip; the same for every method) and tested once. Methods
(:data:`METHODS`, all through :func:`torch_rlprune.global_structured`):

- ``l1-global``: filters ranked by L1 norm over the whole network, each layer's norms divided by their mean;
- ``l1-uniform``: the same fraction of every layer, by L1 norm (``normalize="rank"``);
- ``snip``: the SNIP criterion on the validation batches the searches are rewarded on;
- ``random``, ``random-width``, ``sa``: searches, each evaluating ``--episodes`` candidates with the same reward
  (``--reward``, a variant of ``protocol.REWARDS``): uniformly random keep-sets, random layer widths with L1
  inside each layer (the EagleEye baseline), simulated annealing;
- ``random-width-bnout``, ``random-width-snip``: random widths keeping each layer's filters of highest
  :func:`torch_rlprune.criteria.bn_output` (the ranking ``rl`` starts from) or SNIP score;
- ``rl``: :class:`torch_rlprune.RLStructuredPruning` with its defaults (layer widths, the filters inside learnt
  from the ``bn_output`` ranking); ``rl-ranked``: the same keeping each layer's top ``bn_output`` filters
  (``filters="ranked"``); ``rl-filters``: its per-filter policy (``policy="filters"``), the default before.

Every search spends ``--finalists`` of its episodes re-scoring its best keep-sets on the next validation batches
(with ``--final-reward``, by default the search's own reward). With ``--reward-pool K`` the search's steps score
on K sets of validation batches in turn (``pool=`` of :class:`torch_rlprune.rewards.Accuracy`).
The runs of an older dense network and method list are in ``results/quality_p1_dense77.{json,txt}``.

The seed is the search's seed and the fine-tuning's (order of the batches, augmentation). The table gives the
test accuracy, mean ± std over seeds, and for every method the paired per-seed difference to the best baseline of
its column (the best mean among the methods that are not ``rl*``). Every finished run is written at once to
``--out`` (atomically); a restarted script skips the runs already there.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch.nn.utils import prune

import dense
import protocol
import torch_rlprune as rlp
from _machine import OtherLoad, print_header, print_table

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "quality_p1.json"


def _criterion(**options: Any) -> Callable[..., int]:
    def run(model: Any, example: torch.Tensor, amount: float, args: argparse.Namespace, reward: Any, seed: int,
            val: tuple[torch.Tensor, torch.Tensor]) -> int:  # fmt: skip
        method = options.get("method", prune.LnStructured)
        extra = {k: v for k, v in options.items() if k != "method"}
        if method == "snip":
            extra |= {"inputs": val[0], "targets": val[1]}
        rlp.global_structured(protocol.convs_of(model), method, model=model, example_inputs=example, amount=amount,
                              min_keep=args.min_keep, **extra)  # fmt: skip
        return 0

    return run


def _search(method: type, saliency: str | None = None, **options: Any) -> Callable[..., int]:
    """A search; with ``saliency`` (``"snip"`` on the reward's validation batches, or ``"bn_output"``), given those
    scores as its ``saliency``."""

    def run(model: Any, example: torch.Tensor, amount: float, args: argparse.Namespace, reward: Any, seed: int,
            val: tuple[torch.Tensor, torch.Tensor]) -> int:  # fmt: skip
        if saliency == "snip":
            options["saliency"] = rlp.criteria.snip(model, val[0], val[1])
        elif saliency == "bn_output":
            options["saliency"] = rlp.criteria.bn_output(model, example)
        result = rlp.global_structured(protocol.convs_of(model), method, model=model, example_inputs=example,
                                       amount=amount, min_keep=args.min_keep, reward=reward[0], norms=reward[1],
                                       episodes=args.episodes,
                                       seed=seed, progress=False, finalists=args.finalists,
                                       final_reward=reward[2], **options)  # fmt: skip
        return result.evaluations

    return run


#: Every method of the table: how it prunes a model in place (returning the rewards it evaluated).
METHODS: dict[str, Callable[..., int]] = {
    "rl": _search(rlp.RLStructuredPruning),
    "rl-ranked": _search(rlp.RLStructuredPruning, filters="ranked"),
    "rl-filters": _search(rlp.RLStructuredPruning, policy="filters"),
    "l1-global": _criterion(n=1),
    "l1-uniform": _criterion(n=1, normalize="rank"),
    "snip": _criterion(method="snip"),
    "random": _search(rlp.RandomSearchPruning),
    "sa": _search(rlp.SimulatedAnnealingPruning),
    "random-width": _search(rlp.RandomWidthPruning),
    "random-width-bnout": _search(rlp.RandomWidthPruning, saliency="bn_output"),
    "random-width-snip": _search(rlp.RandomWidthPruning, saliency="snip"),
}
OURS = ("rl", "rl-ranked", "rl-filters")
#: The methods that can meet a MACs budget: rankings, and searches that propose layer widths.
MACS_METHODS = ("rl", "rl-ranked", "l1-global", "l1-uniform", "snip", "random-width", "random-width-bnout",
                "random-width-snip")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    dense.add_arguments(p)
    protocol.add_arguments(p)
    p.add_argument("--targets", default="0.8,0.9,macs0.25,0.7", help="filter sparsities and MACs budgets (macsF: "
                   "keep at most F of the MACs), run in this order (default: 0.8,0.9,macs0.25,0.7)")  # fmt: skip
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--seeds", default="0,1,2", help="seeds (default: 0,1,2)")
    p.add_argument("--episodes", type=int, default=192, help="rewards evaluated per search (default: 192)")
    p.add_argument("--min-keep", type=float, default=0.05, help="share of every layer each method keeps at least "
                   "(default: 0.05, the command's; a search may otherwise starve a layer at 90%%)")  # fmt: skip
    p.add_argument("--finalists", type=int, default=4, help="best keep-sets every search re-scores on fresh "
                   "validation batches, within its --episodes (default: 4)")  # fmt: skip
    p.add_argument("--reward", default="acc-recal", choices=list(protocol.REWARDS),
                   help="the searches' reward (default: acc-recal)")  # fmt: skip
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"results file (default: {DEFAULT_OUT})")
    p.add_argument("--report", action="store_true", help="print the tables of the runs in --out, run nothing")
    args = p.parse_args(argv)
    try:
        args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
        for target in args.targets:
            amount_of(target)
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as error:
        p.error(f"--targets are sparsities in (0, 1) or macsF, --seeds comma-separated ints ({error})")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if args.episodes < 1:
        p.error("--episodes must be at least 1")
    return args


def amount_of(target: str) -> float | rlp.MACs:
    """``"0.8"``: prune 80% of the filters; ``"macs0.25"``: keep at most 25% of the MACs."""
    if target.startswith("macs"):
        return rlp.MACs(float(target[4:]))
    amount = float(target)
    if not 0 < amount < 1:
        raise ValueError(f"sparsity {target} is not in (0, 1)")
    return amount


def label(target: str) -> str:
    amount = amount_of(target)
    return f"{amount.fraction:.0%} MACs" if isinstance(amount, rlp.MACs) else f"{amount:.0%}"


def report(args: argparse.Namespace, runs: list[dict[str, Any]], dense_accuracy: float) -> None:
    def accuracies(method: str, target: str) -> dict[int, float]:
        return {r["seed"]: r["test_accuracy"] for r in runs if (r["method"], r["target"]) == (method, target)
                and r["seed"] in args.seeds}  # fmt: skip

    rows = []
    best = {s: protocol.best_of({m: accuracies(m, s) for m in args.methods if m not in OURS}) for s in args.targets}
    for method in args.methods:
        cells = []
        for s in args.targets:
            if not accuracies(method, s) and s.startswith("macs") and method not in MACS_METHODS:
                cells.append("n/a")
            else:
                cells.append(protocol.paired_cell(method, best[s], lambda m: accuracies(m, s)))
        rows.append([method, *cells])
    print_table(f"Test accuracy (%) after pruning the dense network ({100 * dense_accuracy:.2f}%) and "
                f"{args.finetune_epochs} epochs of fine-tuning; mean ± std over seeds {args.seeds}; in brackets "
                "the paired per-seed difference to the best baseline of the column (mean ± std); columns: the "
                "target (filter sparsity, or MACs kept); n/a: the method keeps a filter count", ["method",
                *(label(t) for t in args.targets)], rows)  # fmt: skip
    for s in args.targets:
        if best[s]:
            print(f"best baseline at {label(s)}: {best[s]}")
    rows = []
    for method in args.methods:
        done = [r for r in runs if r["method"] == method]
        if done:
            rows.append([method, str(len(done)), f"{statistics.fmean(r['search_seconds'] for r in done):.1f}",
                         f"{statistics.fmean(r['finetune_seconds'] for r in done):.1f}",
                         f"{statistics.fmean(r['macs'] for r in done) / 1e6:.2f}"])  # fmt: skip
    print_table("Cost per run (seconds) and MACs per example of the pruned networks (millions, mean over runs)",
                ["method", "runs", "search s", "fine-tune s", "MMACs"], rows)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_header("quality.py")
    data = dense.splits(args)
    model, record = dense.dense_network(args, data, log=lambda line: print(line, flush=True))
    print(f"dense network: test accuracy {record['test_accuracy']:.4f}", flush=True)
    example = torch.zeros(1, data.in_channels, data.image_size, data.image_size)
    settings = {**dense.settings(args), **protocol.settings(args),
                "episodes": args.episodes, "finalists": args.finalists, "reward": args.reward,
                "min_keep": args.min_keep}  # fmt: skip
    results = protocol.Results(Path(args.out), settings)
    if args.report:
        report(args, results.runs, record["test_accuracy"])
        return 0
    load = OtherLoad()
    load.start()
    plan = [(t, seed, m) for t in args.targets for seed in args.seeds for m in args.methods
            if m in MACS_METHODS or not t.startswith("macs")]  # fmt: skip
    for index, (target, seed, method) in enumerate(plan, 1):
        key = f"{method}|{target}|{seed}"
        if key in results.done:
            continue
        reward, val = protocol.search_inputs(args, data)  # per run: a --reward-pool starts its turns afresh
        pruned = copy.deepcopy(model)
        start = time.perf_counter()
        evaluations = METHODS[method](pruned, example, amount_of(target), args, reward, seed, val)
        search_seconds = time.perf_counter() - start
        groups = rlp.channel_groups(pruned, example)
        reward_value = protocol.candidate_reward(pruned, example, [rlp.alive_channels(g) for g in groups], *reward[:2])
        outcome = protocol.fine_tune(args, pruned, data, example, seed)
        results.add({"key": key, "method": method, "target": target, "seed": seed, "reward": reward_value,
                     "evaluations": evaluations, "search_seconds": search_seconds, **outcome})  # fmt: skip
        print(f"[{index}/{len(plan)}] {method:12s} {label(target)} seed {seed}: test {outcome['test_accuracy']:.4f} "
              f"reward {reward_value:.4f} widths {outcome['widths']} search {search_seconds:.0f}s "
              f"fine-tune {outcome['finetune_seconds']:.0f}s", flush=True)  # fmt: skip
    report(args, results.runs, record["test_accuracy"])
    print(load.report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
