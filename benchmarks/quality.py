"""Which filters to keep? The thesis experiment, scaled to a small CPU machine.

Run by hand (nothing here is collected by pytest)::

    python benchmarks/quality.py                     # defaults: about an hour on 2 CPU cores (see README.md)
    python benchmarks/quality.py --train-subset 512 --epochs 1 --episodes 8 --sparsities 0.7 --methods rl,l1
                                                     # smoke run: about a minute

For every seed, a BasicCNN is initialised and trained densely with the schedule every network here gets (the
dense control; its weights after epoch k are the rewind point k). At every rewind point k in ``--ks`` (k=0: the
initial weights) and every filter sparsity, each method chooses a mask on that network:

- ``rl``: :class:`torch_rlprune.RLStructuredPruning` (REINFORCE),
- ``sa``: :class:`torch_rlprune.SimulatedAnnealingPruning`,
- ``random``: :class:`torch_rlprune.RandomSearchPruning` (best of ``--episodes`` random masks),
- ``l1``: ``prune.LnStructured`` with ``n=1`` (filter magnitude),
- ``snip``: the SNIP criterion on the validation batches the searches are rewarded on,

all through :func:`torch_rlprune.global_structured`; the three searches evaluate the same number of masks
(``--episodes``) with the same reward. The mask is then applied at initialisation (the weights are rewound to
their initial values, masks kept), the pruned filters are sliced out (:func:`torch_rlprune.slim`) and the small
network is trained with the same schedule as the dense control. Test accuracy is read once, at the end.

The reward is computed on ``--val-batches`` batches of a validation split carved out of the training data (never
the test data). ``--reward auto`` (the default) uses minus the loss at k=0 and the accuracy at k>0: at
initialisation every mask scores about 10% accuracy, so accuracy cannot tell masks apart there, while the loss
can.

Every finished run is written at once to ``--out`` (atomically), and a restarted script skips the runs already
there; the dense weights at each rewind point are kept beside it (``<out>.states/``).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from _machine import OtherLoad, available_cores, human, print_header, print_table
from torch_rlprune.data import ImageTensorDataset, batches, load_data
from torch_rlprune.serialization import atomic_write
from torch_rlprune.evaluation import CandidateEvaluator
from torch_rlprune.training import evaluate, train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
SEARCHES = {"rl": rlp.RLStructuredPruning, "sa": rlp.SimulatedAnnealingPruning, "random": rlp.RandomSearchPruning}
METHODS = ("rl", "sa", "random", "l1", "snip")
# Settings that change the numbers: a results file made with other values is not resumed.
RESULT_SETTINGS = ("data", "train_subset", "epochs", "batch_size", "lr", "augment", "episodes", "val_batches",
                   "val_batch_size", "val_fraction", "reward", "min_keep")  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", default=f"imagefolder:{DEFAULT_DATA}",
                   help="dataset spec for torch_rlprune.data.load_data (default: the shared CIFAR-10 JPEG copy)")
    p.add_argument("--train-subset", type=int, default=8000, help="train on the first N images of a fixed "
                   "permutation of the training split; 0 = all (default: 8000)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of the one training schedule (default: 5)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")
    # 0.05 makes the dense BasicCNN's loss jump (its Linear layer reads 8192 features) and costs it 7 points in
    # this short schedule; 0.01 trains dense and pruned networks better.
    p.add_argument("--lr", type=float, default=0.01, help="initial SGD learning rate, cosine to 0 (default: 0.01)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="no random crop and flip")
    p.add_argument("--sparsities", default="0.5,0.7,0.8,0.9", help="filter sparsities (default: 0.5,0.7,0.8,0.9)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)} (default: all)")
    p.add_argument("--ks", default="0,1", help="rewind points searched at, in epochs; 0 = init (default: 0,1)")
    p.add_argument("--seeds", default="0,1,2", help="seeds (default: 0,1,2)")
    p.add_argument("--episodes", type=int, default=192,
                   help="rewards evaluated per search, the same for rl, sa and random (default: 192)")
    p.add_argument("--min-keep", default="1", help="filters every layer keeps at least, a count (int) or a "
                   "fraction of the layer (float), for every method (default: 1)")
    p.add_argument("--val-batches", type=int, default=2, help="validation batches per reward (default: 2)")
    p.add_argument("--val-batch-size", type=int, default=256, help="validation batch size (default: 256)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the training data held out (0.1)")
    p.add_argument("--reward", choices=("auto", "accuracy", "loss"), default="auto",
                   help="search reward: auto = minus the loss at k=0, accuracy at k>0 (default: auto)")
    p.add_argument("--out", default="results.json", help="results file, checkpointed after every run")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = p.parse_args(argv)
    try:
        args.sparsities = [float(s) for s in args.sparsities.split(",")]
        args.ks = [int(k) for k in args.ks.split(",")]
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as error:
        p.error(f"--sparsities, --ks and --seeds are comma-separated numbers ({error})")
    try:
        args.min_keep = float(args.min_keep) if "." in args.min_keep else int(args.min_keep)
    except ValueError:
        p.error(f"--min-keep must be an int or a float, got {args.min_keep!r}")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if not all(0 < s < 1 for s in args.sparsities):
        p.error("--sparsities must lie in (0, 1)")
    if any(k < 0 or k > args.epochs for k in args.ks):
        p.error(f"--ks must lie in [0, --epochs={args.epochs}]")
    if min(args.epochs, args.episodes, args.val_batches, args.batch_size, args.val_batch_size) < 1:
        p.error("--epochs, --episodes, --val-batches, --batch-size and --val-batch-size must be >= 1")
    return args


# ------------------------------------------------------------------------------------------------ results file


def run_key(method: str, k: int | None, sparsity: float, seed: int) -> str:
    return f"{method}|{'-' if k is None else k}|{sparsity:g}|{seed}"


def atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=1).encode()))


class Results:
    """The results file: the settings and one record per finished run, rewritten after every run."""

    def __init__(self, path: Path, settings: dict[str, Any]) -> None:
        self.path, self.settings = path, settings
        self.runs: list[dict[str, Any]] = []
        if path.exists():
            old = json.loads(path.read_text())
            mismatch = {k: (old["settings"].get(k), settings[k]) for k in RESULT_SETTINGS
                        if old["settings"].get(k) != settings[k]}  # fmt: skip
            if mismatch:
                detail = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in mismatch.items())
                sys.exit(f"{path} holds runs made with other settings ({detail}). Pass another --out, or delete it.")
            self.runs = old["runs"]
            print(f"resuming {path}: {len(self.runs)} run(s) done")
        self.done = {r["key"] for r in self.runs}

    def add(self, record: dict[str, Any]) -> None:
        self.runs.append(record)
        self.done.add(record["key"])
        atomic_write_json(self.path, {"settings": self.settings, "environment": environment(),
                                      "updated": datetime.datetime.now().isoformat(timespec="seconds"),
                                      "runs": self.runs})  # fmt: skip


def environment() -> dict[str, Any]:
    import platform

    return {"python": platform.python_version(), "torch": torch.__version__, "torch_rlprune": rlp.__version__,
            "threads": torch.get_num_threads(), "cores": available_cores()}  # fmt: skip


# ------------------------------------------------------------------------------------------------ pieces


def subset(dataset: ImageTensorDataset, n: int) -> ImageTensorDataset:
    if n <= 0 or n >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return ImageTensorDataset(dataset.images[order], dataset.targets[order], dataset.mean, dataset.std,
                              dataset.classes)  # fmt: skip


def new_model(splits: Any, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return rlp.models.BasicCNN(num_classes=splits.num_classes, in_channels=splits.in_channels,
                               input_size=splits.image_size)  # fmt: skip


def convs_of(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]


def rewind(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (a dense model's state_dict) into ``model``, into ``<name>_orig`` where pruned; masks stay."""
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    with torch.no_grad():
        for name, value in state.items():
            target = tensors.get(name)
            if target is None:
                target = tensors.get(name + "_orig")
            if target is None:
                raise KeyError(f"rewind: the model has neither {name} nor {name}_orig")
            target.copy_(value)


def train_loader(args: argparse.Namespace, train_set: ImageTensorDataset, seed: int) -> Any:
    return batches(train_set, args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed),
                   augment=args.augment)  # fmt: skip


def fit(args: argparse.Namespace, model: nn.Module, train_set: ImageTensorDataset, seed: int,
        callback: Any = None) -> list[dict[str, Any]]:  # fmt: skip
    """The one training schedule every network here gets."""
    return train(model, train_loader(args, train_set, seed), args.epochs, lr=args.lr, seed=seed, callback=callback)


def reward_for(args: argparse.Namespace, k: int, val_loader: Any) -> tuple[str, Any]:
    kind = args.reward if args.reward != "auto" else ("loss" if k == 0 else "accuracy")
    cls = rlp.rewards.NegativeLoss if kind == "loss" else rlp.rewards.Accuracy
    return kind, cls(val_loader, batches=args.val_batches)


def mask_reward(model: nn.Module, example: torch.Tensor, reward: Any) -> float:
    """The reward of the model's current masks, computed as the searches compute it (sliced, batch-norm stats)."""
    groups = rlp.channel_groups(model, example)
    evaluator = CandidateEvaluator(model, groups, example)
    with evaluator.active(), torch.no_grad():
        return float(reward(evaluator.view([rlp.alive_channels(g) for g in groups])))


def choose_mask(method: str, model: nn.Module, sparsity: float, example: torch.Tensor, reward: Any,
                val_inputs: tuple[torch.Tensor, torch.Tensor], args: argparse.Namespace, seed: int) -> int:  # fmt: skip
    """Prune ``model`` in place with ``method``; return the number of rewards the method evaluated."""
    common = {"model": model, "example_inputs": example, "amount": sparsity, "min_keep": args.min_keep}
    if method in SEARCHES:
        result = rlp.global_structured(convs_of(model), SEARCHES[method], reward=reward, episodes=args.episodes,
                                       seed=seed, progress=False, **common)  # fmt: skip
        return result.evaluations
    if method == "l1":
        rlp.global_structured(convs_of(model), prune.LnStructured, n=1, **common)
    else:
        rlp.global_structured(convs_of(model), "snip", inputs=val_inputs[0], targets=val_inputs[1], **common)
    return 0


# ------------------------------------------------------------------------------------------------ the experiment


def dense_states(args: argparse.Namespace, splits: Any, train_set: ImageTensorDataset, test_loader: Any,
                 results: Results, seed: int, example: torch.Tensor, state_dir: Path) -> dict[int, dict]:  # fmt: skip
    """Train the dense control (unless done) and return its weights at every rewind point in ``--ks``."""
    model = new_model(splits, seed)
    states = {0: copy.deepcopy(model.state_dict())}
    wanted = sorted(k for k in set(args.ks) if k > 0)
    paths = {k: state_dir / f"seed{seed}-k{k}.pt" for k in wanted}
    for k, path in paths.items():
        if path.exists():
            states[k] = torch.load(path)
    missing = [k for k in wanted if k not in states]
    key = run_key("dense", None, 0.0, seed)
    if key in results.done and not missing:
        return states

    def snapshot(record: dict[str, Any]) -> bool:
        if record["epoch"] in missing:
            states[record["epoch"]] = copy.deepcopy(model.state_dict())
            state_dir.mkdir(parents=True, exist_ok=True)
            torch.save(states[record["epoch"]], paths[record["epoch"]])
        # Once the control is done, only the missing rewind points are needed.
        return key in results.done and record["epoch"] >= max(missing)

    start = time.perf_counter()
    history = fit(args, model, train_set, seed, callback=snapshot)
    seconds = time.perf_counter() - start
    if key not in results.done:
        stats = rlp.metrics.model_stats(model, example)
        results.add({"key": key, "method": "dense", "k": None, "sparsity": 0.0, "seed": seed,
                     "test_acc": evaluate(model, test_loader), "val_reward": None, "reward": None,
                     "params": stats.params_kept, "macs": stats.macs_kept, "filters": stats.filters_kept,
                     "filters_per_layer": [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)],
                     "search_seconds": 0.0, "train_seconds": seconds, "evaluations": 0,
                     "final_train_loss": history[-1]["loss"]})  # fmt: skip
        print(f"dense seed {seed}: test acc {results.runs[-1]['test_acc']:.4f}  train {seconds:.0f}s", flush=True)
    return states


def one_run(args: argparse.Namespace, splits: Any, train_set: ImageTensorDataset, test_loader: Any, method: str,
            k: int, sparsity: float, seed: int, states: dict[int, dict], reward_kind: str, reward: Any,
            val_inputs: tuple[torch.Tensor, torch.Tensor], example: torch.Tensor) -> dict[str, Any]:  # fmt: skip
    model = new_model(splits, seed)
    model.load_state_dict(states[k])
    start = time.perf_counter()
    evaluations = choose_mask(method, model, sparsity, example, reward, val_inputs, args, seed)
    search_seconds = time.perf_counter() - start
    val_reward = mask_reward(model, example, reward)
    rewind(model, states[0])  # the mask is applied at initialisation
    small = rlp.slim(model, example)
    stats = rlp.metrics.model_stats(small, example)
    start = time.perf_counter()
    history = fit(args, small, train_set, seed)
    train_seconds = time.perf_counter() - start
    return {"key": run_key(method, k, sparsity, seed), "method": method, "k": k, "sparsity": sparsity, "seed": seed,
            "test_acc": evaluate(small, test_loader), "val_reward": val_reward, "reward": reward_kind,
            "params": stats.params, "macs": stats.macs, "filters": stats.filters,
            "filters_per_layer": [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)],
            "search_seconds": search_seconds, "train_seconds": train_seconds, "evaluations": evaluations,
            "final_train_loss": history[-1]["loss"]}  # fmt: skip


def mean_std(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> None:
    seeds = set(args.seeds)
    runs = [r for r in runs if r["seed"] in seeds]
    cols = [f"{s:.0%}" for s in args.sparsities]
    rows = []
    dense = [r["test_acc"] for r in runs if r["method"] == "dense"]
    rows.append(["dense (0% pruned)", *([mean_std(dense)] * len(cols))])
    for method in args.methods:
        for k in args.ks:
            cells = [mean_std([r["test_acc"] for r in runs if (r["method"], r["k"], r["sparsity"]) == (method, k, s)])
                     for s in args.sparsities]  # fmt: skip
            rows.append([f"{method}, k={k}", *cells])
    print_table(f"Test accuracy (%) after {args.epochs} epochs, mean ± std over seeds {sorted(seeds)}; columns: "
                "filter sparsity", ["method", *cols], rows)  # fmt: skip

    rows = []
    for s in args.sparsities:
        done = [r for r in runs if r["sparsity"] == s and r["method"] != "dense"]
        if done:
            params = statistics.fmean(r["params"] for r in done)
            macs = statistics.fmean(r["macs"] for r in done)
            rows.append([f"{s:.0%}", human(params), human(macs)])
    if dense:
        d = next(r for r in runs if r["method"] == "dense")
        rows.insert(0, ["0%", human(d["params"]), human(d["macs"])])
    if rows:
        print_table("Size of the trained networks (mean over methods; MACs per example)",
                    ["sparsity", "params", "MACs"], rows)  # fmt: skip

    rows = []
    for method in ["dense", *args.methods]:
        done = [r for r in runs if r["method"] == method]
        if not done:
            continue
        search = [r["search_seconds"] for r in done]
        evals = sum(r["evaluations"] for r in done)
        per_eval = f"{1000 * sum(search) / evals:.0f}" if evals else "-"
        rows.append([method, str(len(done)), f"{statistics.fmean(search):.1f}", per_eval,
                     f"{statistics.fmean(r['train_seconds'] for r in done):.1f}"])  # fmt: skip
    print_table("Time per run (seconds; search = choosing the mask, train = the training schedule)",
                ["method", "runs", "search s", "ms per reward", "train s"], rows)  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print_header("quality.py")
    load = OtherLoad()
    out = Path(args.out)
    settings = {k: getattr(args, k) for k in RESULT_SETTINGS} | {
        "sparsities": args.sparsities, "methods": args.methods, "ks": args.ks, "seeds": args.seeds}  # fmt: skip
    results = Results(out, settings)
    state_dir = out.with_name(out.name + ".states")

    start = time.perf_counter()
    splits = load_data(args.data, val_fraction=args.val_fraction, seed=0)
    train_set = subset(splits.train, args.train_subset)
    print(f"data {args.data}: {len(train_set)} training images (of {len(splits.train)}), {len(splits.val)} "
          f"validation, {len(splits.test)} test; loaded in {time.perf_counter() - start:.1f}s", flush=True)
    test_loader = batches(splits.test, 500)
    val_loader = batches(splits.val, args.val_batch_size)
    val_batches = [b for _, b in zip(range(args.val_batches), val_loader)]
    val_inputs = (torch.cat([x for x, _ in val_batches]), torch.cat([y for _, y in val_batches]))
    example = torch.zeros(1, splits.in_channels, splits.image_size, splits.image_size)
    rewards = {k: reward_for(args, k, val_loader) for k in args.ks}

    total = len(args.seeds) * len(args.ks) * len(args.sparsities) * len(args.methods)
    done = 0
    for seed in args.seeds:
        pending = [run_key(m, k, sp, seed) for k in args.ks for sp in args.sparsities for m in args.methods]
        if run_key("dense", None, 0.0, seed) in results.done and all(key in results.done for key in pending):
            done += len(pending)
            continue
        states = dense_states(args, splits, train_set, test_loader, results, seed, example, state_dir)
        for k in args.ks:
            reward_kind, reward = rewards[k]
            for sparsity in args.sparsities:
                for method in args.methods:
                    done += 1
                    if run_key(method, k, sparsity, seed) in results.done:
                        continue
                    record = one_run(args, splits, train_set, test_loader, method, k, sparsity, seed, states,
                                     reward_kind, reward, val_inputs, example)  # fmt: skip
                    results.add(record)
                    print(f"[{done}/{total}] {method:6s} k={k} sparsity {sparsity:.0%} seed {seed}: test acc "
                          f"{record['test_acc']:.4f}  val {reward_kind} reward {record['val_reward']:.4f}  "
                          f"filters {record['filters_per_layer']}  search {record['search_seconds']:.1f}s  "
                          f"train {record['train_seconds']:.1f}s",
                          flush=True)  # fmt: skip
    report(args, results.runs)
    print(f"\nresults: {out}  ({len(results.runs)} runs); wall time this session "
          f"{time.perf_counter() - start:.0f}s")  # fmt: skip
    print(load.report())
    return {"settings": settings, "runs": results.runs}


if __name__ == "__main__":
    main()
