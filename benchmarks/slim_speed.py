"""How much faster is a sliced model than a masked one, and how long does ``slim`` take?

Run by hand (nothing here is collected by pytest)::

    python benchmarks/slim_speed.py                  # the full run: a few minutes on 2 CPU cores
    python benchmarks/slim_speed.py --quick          # a smoke run: well under a minute
    python benchmarks/slim_speed.py --round-to 8,16  # the multiples table 2 compares (the default)

Table 1, for BasicCNN and torchvision's resnet18 at several filter sparsities (global L1 structured pruning
with :func:`torch_rlprune.global_structured`): parameters and MACs per example dense and after (from
:func:`torch_rlprune.metrics.model_stats`), and the CPU latency of the dense model, the masked model (same
architecture, ``torch.nn.utils.prune`` masks and hooks in place) and the sliced model (:func:`torch_rlprune.slim`),
each measured with :class:`torch.utils.benchmark.Timer` in eval mode under ``torch.no_grad()``. The realised
speed-up (masked / sliced latency) is compared with the theoretical one (dense MACs / sliced MACs); the goal is
realised >= 0.7 x theoretical.

Table 2, for the same two models at one sparsity: the latency of the sliced model pruned without rounding beside
the same pruning with ``round_to`` (every layer keeps a multiple of 8, 16, ... filters; see
:func:`torch_rlprune.global_structured`), timed side by side in the same interleaved rounds, with the filters and
MACs each keeps: whether widths that suit SIMD registers save more time than the filters rounding adds cost.

Table 3, on torchvision's resnet50 at 50%: the time ``slim`` takes with and without ``verify`` (and the two
forward passes that the check adds, of the masked and of the sliced model), beside the time
Torch-Pruning (``pip install -e '.[bench]'``) takes to build its dependency graph and physically prune exactly the
same channels from a fresh copy of the unpruned model, and whether each result computes what the masked model
computes.
"""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torchvision
from torch import nn
from torch.nn.utils import prune
from torch.utils import benchmark

import torch_rlprune as rlp
from _machine import OtherLoad, available_cores, human, print_header, print_table
from torch_rlprune.metrics import model_stats

GOAL = 0.7  # realised speed-up must reach this fraction of the theoretical one
ATOL = RTOL = 1e-4  # slim's default tolerances, also used to judge Torch-Pruning's result


@dataclass(frozen=True)
class Config:
    sparsities: tuple[float, ...]
    batch: int
    resnet18_size: int
    resnet50_size: int
    min_runs: int  # timed runs per latency measurement (at least), after warm-up
    min_run_time: float  # seconds per latency measurement (at least)
    rounds: int  # interleaved rounds of dense / masked / sliced timing
    repeats: int  # repeats of each slim / Torch-Pruning timing (median reported)
    round_to_sparsity: float  # the sparsity of the round_to comparison


FULL = Config(sparsities=(0.5, 0.7, 0.9), batch=64, resnet18_size=224, resnet50_size=224,
              min_runs=4, min_run_time=1.0, rounds=2, repeats=3, round_to_sparsity=0.7)  # fmt: skip
QUICK = Config(sparsities=(0.5,), batch=16, resnet18_size=64, resnet50_size=112,
               min_runs=1, min_run_time=0.1, rounds=1, repeats=2, round_to_sparsity=0.5)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------


def torch_pruning_version() -> str:
    """The installed distribution's version (``torch_pruning.__version__`` lags behind it in 1.6.1)."""
    try:
        return importlib.metadata.version("torch-pruning")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def convs_of(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]


def masked_copy(dense: nn.Module, amount: float, example: torch.Tensor, round_to: int | None = None) -> nn.Module:
    """A copy of ``dense`` with ``amount`` of its filters masked by global L1 structured pruning."""
    model = copy.deepcopy(dense)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convs that reach the output (none in these models) would warn
        rlp.global_structured(convs_of(model), prune.LnStructured, n=1, amount=amount, round_to=round_to,
                              model=model, example_inputs=example)  # fmt: skip
    return model.eval()


def latencies_ms(models: dict[str, nn.Module], x: torch.Tensor, cfg: Config, threads: int) -> dict[str, float]:
    """Median latency in ms of each ``model(x)`` (eval mode, no grad).

    The models are measured in ``cfg.rounds`` interleaved rounds (dense, masked, sliced, dense, ...) so that a
    slow stretch of the machine hits all of them alike; each model gets at least ``cfg.min_runs`` timed runs in all,
    after warm-up, and the median is over every run of every round.
    """
    timers, min_run_time = {}, {}
    with torch.no_grad():
        for name, model in models.items():
            model.eval()
            model(x)  # warm-up: oneDNN primitives, allocator
            start = time.perf_counter()
            model(x)
            once = time.perf_counter() - start
            timers[name] = benchmark.Timer(
                stmt="with torch.no_grad():\n    model(x)",
                globals={"model": model, "x": x, "torch": torch},
                num_threads=threads,
            )
            min_run_time[name] = max(cfg.min_run_time, cfg.min_runs * once) / cfg.rounds
    runs: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(cfg.rounds):
        for name, timer in timers.items():
            runs[name] += timer.blocked_autorange(min_run_time=min_run_time[name]).times
    return {name: statistics.median(times) * 1e3 for name, times in runs.items()}


def timed(fn: Callable[..., object], repeats: int, setup: Callable[[], object] | None = None) -> tuple[float, object]:
    """Median wall time in seconds of ``fn()`` (or ``fn(setup())``, ``setup`` untimed) over ``repeats`` calls."""
    times, result = [], None
    for _ in range(repeats):
        args = () if setup is None else (setup(),)
        start = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def max_abs_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return (a.eval()(x) - b.eval()(x)).abs().max().item()


def close(a: nn.Module, b: nn.Module, x: torch.Tensor) -> bool:
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=ATOL, rtol=RTOL)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# Table 1: latency of dense, masked and sliced models
# ----------------------------------------------------------------------------------------------------------------


def latency_table(name: str, dense: nn.Module, size: int, cfg: Config, threads: int) -> list[str]:
    """Print the latency table of one model; return the rows that miss the goal."""
    dense.eval()
    example = torch.randn(1, 3, size, size)
    x = torch.randn(cfg.batch, 3, size, size)
    header = ["sparsity", "params dense -> after", "MACs dense -> after", "dense ms", "masked ms", "sliced ms",
              "realised x", "theoretical x", "realised/theor.", f">= {GOAL}?"]  # fmt: skip
    rows, misses = [], []
    load = OtherLoad()
    for amount in cfg.sparsities:
        masked = masked_copy(dense, amount, example)
        stats = model_stats(masked, example)
        sliced = rlp.slim(masked, example)  # verified against the masked model on `example`
        sliced_macs = model_stats(sliced, example).macs
        if sliced_macs != stats.macs_kept or n_params(sliced) != stats.params_kept:
            print(f"  WARNING {name} @ {amount:.0%}: the sliced model has {sliced_macs} MACs and {n_params(sliced)} "
                  f"params, model_stats predicted {stats.macs_kept} and {stats.params_kept}")  # fmt: skip
        ms = latencies_ms({"dense": dense, "masked": masked, "sliced": sliced}, x, cfg, threads)
        dense_ms, masked_ms, sliced_ms = ms["dense"], ms["masked"], ms["sliced"]
        realised = masked_ms / sliced_ms
        theoretical = stats.macs / sliced_macs
        ratio = realised / theoretical
        ok = ratio >= GOAL
        if not ok:
            misses.append(f"{name} @ {amount:.0%}: realised {realised:.2f}x of theoretical {theoretical:.2f}x "
                          f"(ratio {ratio:.2f})")  # fmt: skip
        rows.append([
            f"{amount:.0%} ({stats.sparsity:.1%})",
            f"{human(stats.params)} -> {human(stats.params_kept)}",
            f"{human(stats.macs)} -> {human(sliced_macs)}",
            f"{dense_ms:.1f}", f"{masked_ms:.1f}", f"{sliced_ms:.1f}",
            f"{realised:.2f}", f"{theoretical:.2f}", f"{ratio:.2f}", "yes" if ok else "NO",
        ])  # fmt: skip
    title = (f"{name}: input {cfg.batch}x3x{size}x{size} (batch {cfg.batch}), {threads} threads, "
             f"latency = median over {cfg.rounds} interleaved round(s) of torch.utils.benchmark.Timer.blocked_autorange, "
             "eval, no_grad; masked = prune masks and hooks in place; "
             "MACs per example")  # fmt: skip
    print_table(title, header, rows)
    print(load.report())
    return misses


# ----------------------------------------------------------------------------------------------------------------
# Table 2: latency of the sliced model with and without round_to
# ----------------------------------------------------------------------------------------------------------------


def conv_widths(model: nn.Module) -> list[int]:
    return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]


def round_to_table(name: str, dense: nn.Module, size: int, multiples: list[int], cfg: Config, threads: int) -> None:
    """Print the latency of ``dense`` sliced at one sparsity without rounding and with each of ``multiples``."""
    dense.eval()
    example = torch.randn(1, 3, size, size)
    x = torch.randn(cfg.batch, 3, size, size)
    amount = cfg.round_to_sparsity
    sliced = {"none": rlp.slim(masked_copy(dense, amount, example), example)}
    for round_to in multiples:
        sliced[str(round_to)] = rlp.slim(masked_copy(dense, amount, example, round_to), example)
    load = OtherLoad()
    ms = latencies_ms(sliced, x, cfg, threads)
    macs = {key: model_stats(model, example).macs for key, model in sliced.items()}
    header = ["round_to", "filters kept", "widths multiples?", "MACs", "sliced ms", "MACs / none", "speed-up / none"]
    rows = []
    for key, model in sliced.items():
        widths = conv_widths(model)
        multiple = "" if key == "none" else "yes" if all(w % int(key) == 0 for w in widths) else "NO"
        rows.append([key, str(sum(widths)), multiple, human(macs[key]), f"{ms[key]:.2f}",
                     f"{macs[key] / macs['none']:.3f}", f"{ms['none'] / ms[key]:.2f}"])  # fmt: skip
    title = (f"{name}: {amount:.0%} of filters (global L1), sliced, input {cfg.batch}x3x{size}x{size}, {threads} "
             f"threads, latency = median over {cfg.rounds} interleaved round(s) of all rows; filters kept = summed "
             "conv widths (coupled convs each count)")  # fmt: skip
    print_table(title, header, rows)
    print(load.report())


# ----------------------------------------------------------------------------------------------------------------
# Table 3: time to slim resnet50, and Torch-Pruning's time to prune the same channels
# ----------------------------------------------------------------------------------------------------------------


def pruned_channels(masked: nn.Module, example: torch.Tensor) -> list[tuple[str, list[int]]]:
    """For every channel group with pruned channels: its first producer's name and the rows it lost."""
    plan = []
    for group in rlp.channel_groups(masked, example):
        gone = (~rlp.alive_channels(group)).nonzero().reshape(-1)
        if gone.numel():
            first = group.producers[0]
            plan.append((first.name, first.indices(gone).tolist()))
    return plan


def torch_pruning_run(tp, fresh: nn.Module, example: torch.Tensor, plan: list[tuple[str, list[int]]]) -> nn.Module:
    """Build Torch-Pruning's dependency graph of ``fresh`` and prune exactly ``plan``'s channels, in place."""
    modules = dict(fresh.named_modules())
    graph = tp.DependencyGraph().build_dependency(fresh, example_inputs=example)
    for name, idxs in plan:
        graph.get_pruning_group(modules[name], tp.prune_conv_out_channels, idxs=idxs).prune()
    return fresh


def slim_time_table(cfg: Config) -> None:
    size, amount = cfg.resnet50_size, 0.5
    torch.manual_seed(0)
    dense = torchvision.models.resnet50().eval()
    example = torch.randn(1, 3, size, size)
    masked = masked_copy(dense, amount, example)
    stats = model_stats(masked, example)
    notes: list[str] = []
    load = OtherLoad()

    # channel_groups remembers its result per model, and pruning has traced `masked` already (what slim reuses);
    # the trace alone is timed on copies that were never traced.
    trace_s, _ = timed(lambda fresh: rlp.channel_groups(fresh, example), cfg.repeats, setup=lambda: copy.deepcopy(dense))
    groups = rlp.channel_groups(masked, example)
    verify_s, sliced = timed(lambda: rlp.slim(masked, example), cfg.repeats)
    noverify_s, sliced_nv = timed(lambda: rlp.slim(masked, example, verify=False), cfg.repeats)
    given_s, _ = timed(lambda: rlp.slim(masked, example, groups=groups), cfg.repeats)
    with torch.no_grad():  # what verify=True adds: one forward of each model (the masked one is the reference)
        masked_s, _ = timed(lambda: masked(example), cfg.repeats)
        sliced_s, _ = timed(lambda: sliced(example), cfg.repeats)
    ours_diff = max_abs_diff(masked, sliced, example)
    ours_ok = close(masked, sliced, example) and close(masked, sliced_nv, example)

    header = ["step", "seconds (median)", "params after", "max |out - masked out|", f"allclose (atol=rtol={ATOL})?"]
    rows = [
        ["rlp.channel_groups of a model not traced before", f"{trace_s:.3f}", "", "", ""],
        ["rlp.slim(verify=True) (default)", f"{verify_s:.3f}", human(n_params(sliced)), f"{ours_diff:.2e}",
         "yes" if ours_ok else "NO"],
        ["rlp.slim(verify=False)", f"{noverify_s:.3f}", human(n_params(sliced_nv)), "", ""],
        ["rlp.slim(verify=True, groups=...)", f"{given_s:.3f}", "", "", ""],
        ["  within it, the check: forward of the masked model", f"{masked_s:.3f}", "", "", ""],
        ["  within it, the check: forward of the sliced model", f"{sliced_s:.3f}", "", "", ""],
    ]  # fmt: skip
    try:
        import torch_pruning as tp
    except ImportError:
        tp = None
        notes.append("Torch-Pruning is not installed: pip install -e '.[bench]' (or pip install 'torch-pruning>=1.6') "
                     "to time it beside slim.")  # fmt: skip
    if tp is not None:
        plan = pruned_channels(masked, example)
        try:
            tp_s, tp_model = timed(
                lambda fresh: torch_pruning_run(tp, fresh, example, plan), cfg.repeats,
                setup=lambda: copy.deepcopy(dense).eval(),
            )  # fmt: skip
        except Exception as error:  # report, don't hide the rest of the run
            rows.append([f"Torch-Pruning {torch_pruning_version()}: FAILED", "", "", "", ""])
            notes.append(f"Torch-Pruning failed: {type(error).__name__}: {error}")
        else:
            tp_diff = max_abs_diff(masked, tp_model, example)
            tp_ok = close(masked, tp_model, example)
            rows.append([f"Torch-Pruning {torch_pruning_version()}: graph + prune {len(plan)} groups", f"{tp_s:.3f}",
                         human(n_params(tp_model)), f"{tp_diff:.2e}", "yes" if tp_ok else "NO"])  # fmt: skip
            if n_params(tp_model) != n_params(sliced):
                notes.append(f"Torch-Pruning's model has {n_params(tp_model)} params, slim's {n_params(sliced)}.")
            notes.append("Torch-Pruning does not check its result; the comparison above is done by this script.")
    title = (f"resnet50: {amount:.0%} of filters (global L1, achieved {stats.sparsity:.1%}), example input "
             f"1x3x{size}x{size}, {human(stats.params)} -> {human(stats.params_kept)} params; "
             f"median of {cfg.repeats} run(s), each on a fresh copy; slim includes its deepcopy of the model")  # fmt: skip
    print_table(title, header, rows)
    print(load.report())
    for note in notes:
        print(f"  note: {note}")


# ----------------------------------------------------------------------------------------------------------------


def multiples(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or any(v < 2 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated ints >= 2, e.g. 8,16")
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one sparsity, small inputs, few runs (< 1 minute)")
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="torch threads (default: the cores available, %(default)s here)")  # fmt: skip
    parser.add_argument("--round-to", type=multiples, default=[8, 16], metavar="R,R,...",
                        help="the round_to values table 2 times beside no rounding (default: 8,16)")  # fmt: skip
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    torch.set_num_threads(args.threads)

    print_header(f"slim_speed.py{' --quick' if args.quick else ''}")
    print(f"torch_pruning {torch_pruning_version()}")

    started = time.perf_counter()
    misses = []
    torch.manual_seed(0)
    misses += latency_table("BasicCNN", rlp.models.BasicCNN(), 32, cfg, args.threads)
    torch.manual_seed(0)
    misses += latency_table("resnet18 (num_classes=10)", torchvision.models.resnet18(num_classes=10),
                            cfg.resnet18_size, cfg, args.threads)  # fmt: skip
    if misses:
        print(f"\nBelow the goal (realised >= {GOAL} x theoretical):")
        for miss in misses:
            print(f"  - {miss}")
    else:
        print(f"\nEvery row meets the goal (realised >= {GOAL} x theoretical).")
    torch.manual_seed(0)
    round_to_table("BasicCNN", rlp.models.BasicCNN(), 32, args.round_to, cfg, args.threads)
    torch.manual_seed(0)
    round_to_table("resnet18 (num_classes=10)", torchvision.models.resnet18(num_classes=10), cfg.resnet18_size,
                   args.round_to, cfg, args.threads)  # fmt: skip
    slim_time_table(cfg)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
