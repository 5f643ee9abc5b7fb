"""Comparing methods: every method at every amount through one pipeline, as tables and a plot."""

from __future__ import annotations

import csv
import dataclasses
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._files import write_json
from ..lottery import LotteryTicket
from ..slicing import slim
from .config import Log, PathLike, PipelineConfig, silent, snapshot_name
from .measuring import measure
from .wording import human_count, model_label, plural
from .steps import prune_model
from .workspace import Workspace


def compare(
    config: PipelineConfig,
    methods: Sequence[str],
    amounts: Sequence[float],
    seeds: Sequence[int] = (0,),
    out: PathLike | None = None,
    *,
    progress: bool = False,
    log: Log = silent,
    workspace: Workspace | None = None,
) -> list[dict[str, Any]]:
    r"""Every method at every amount (for every seed) through one pipeline and one training schedule.

    Per seed, the dense model is trained once (snapshot at ``config.rewind_epoch``) and measured; then for each
    method and amount a copy at epoch ``k`` is pruned, rewound (``config.rewind_to``), sliced, trained with the
    same schedule and measured on the test split. ``workspace`` holds data already loaded for one of the seeds.
    With ``out``, writes ``compare.csv``, ``compare.md``,
    ``compare.json`` and, where matplotlib is installed, ``compare.png`` (accuracy against sparsity and against
    MACs).

    Returns:
        list of dict: one row per network: ``method`` (``"dense"`` for the control), ``amount``, ``seed``,
        ``accuracy``, ``params``, ``macs``, ``filters``, ``latency_ms``, ``sparsity``, ``search_seconds``,
        ``evaluations``, ``best_reward``.
    """
    if not methods or not amounts or not seeds:
        raise ValueError("compare needs at least one method, one amount and one seed.")
    first = dataclasses.replace(config, seed=seeds[0])
    if workspace is None or workspace.config != first:
        workspace = Workspace(first)
    for method in methods:  # every pairing, before any training
        for amount in amounts:
            workspace.check_reward_data(dataclasses.replace(first, method=method, amount=amount).validate())
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        ws = (workspace if workspace.config == dataclasses.replace(config, seed=seed)
              else Workspace(dataclasses.replace(config, seed=seed)))
        c = ws.config
        k = c.rewind_epoch
        model = ws.build_model()
        ticket = LotteryTicket(model, epochs=(k,) if k else ())
        log(f"seed {seed}: training the dense {c.model} for {c.epochs} epochs")
        started = time.perf_counter()
        ws.train(model, c.epochs, lambda r, t=ticket: t.step(r["epoch"]) and None, progress, None, "dense")
        dense = measure(model, ws)
        rows.append({"method": "dense", "amount": 0.0, "seed": seed, **dataclasses.asdict(dense), "sparsity": 0.0,
                     "search_seconds": 0.0, "evaluations": 0, "best_reward": None,
                     "train_seconds": time.perf_counter() - started})  # fmt: skip
        log(f"  dense: test accuracy {dense.accuracy:.2%}")
        for amount in amounts:
            for method in methods:
                pruned = ws.build_model()
                ticket.rewind(pruned, snapshot_name(k))
                search = prune_model(ws, pruned, ticket["init"].state, method=method, amount=amount, progress=progress)
                ticket.rewind(pruned, c.rewind_name)
                small = slim(pruned, ws.example_inputs)
                started = time.perf_counter()
                ws.train(small, c.epochs, None, progress, None, "pruned")
                metrics = measure(small, ws)
                rows.append({"method": method, "amount": amount, "seed": seed, **dataclasses.asdict(metrics),
                             "sparsity": 1 - metrics.filters / dense.filters, "search_seconds": search["seconds"],
                             "evaluations": search["evaluations"], "best_reward": search["best_reward"],
                             "train_seconds": time.perf_counter() - started})  # fmt: skip
                log(f"  {method} at {amount:.0%}: test accuracy {metrics.accuracy:.2%}, "
                    f"MACs {human_count(metrics.macs)}, search {search['seconds']:.1f} s")  # fmt: skip
    if out is not None:
        write_comparison(rows, out, config, log=log)
    return rows


_CSV_FIELDS = ("method", "amount", "seed", "accuracy", "params", "macs", "filters", "latency_ms", "sparsity",
               "search_seconds", "evaluations", "best_reward", "train_seconds")  # fmt: skip


def comparison_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows averaged over seeds: one per (method, amount), with the accuracy's mean and standard deviation.

    Example:
        >>> rows = [{"method": "l1", "amount": 0.5, "seed": s, "accuracy": a, "params": 10, "macs": 20,
        ...          "filters": 4, "latency_ms": 1.0, "sparsity": 0.5, "search_seconds": 0.1}
        ...         for s, a in ((0, 0.8), (1, 0.9))]
        >>> [(r["method"], round(r["accuracy"], 3), round(r["accuracy_std"], 3), r["seeds"]) for r in comparison_table(rows)]
        [('l1', 0.85, 0.071, 2)]
    """
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["amount"]), []).append(row)
    table = []
    for (method, amount), members in groups.items():
        acc = [r["accuracy"] for r in members]
        mean = {k: statistics.fmean(r[k] for r in members)
                for k in ("params", "macs", "filters", "latency_ms", "sparsity", "search_seconds")}  # fmt: skip
        table.append({"method": method, "amount": amount, "seeds": len(members), "accuracy": statistics.fmean(acc),
                      "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0, **mean})  # fmt: skip
    return table


def comparison_markdown(rows: Sequence[dict[str, Any]], config: PipelineConfig | None = None) -> str:
    """The comparison as a Markdown table (means over seeds, accuracy ± standard deviation)."""
    lines = ["# torch-rlprune comparison", ""]
    if config is not None:
        lines += [
            (f"{model_label(config.to_dict())} on {config.data}; mask searched at epoch {config.rewind_epoch}, kept "
             f"filters rewound to {'init' if config.rewind_to == 'init' else 'epoch ' + str(config.rewind_epoch)}; "
             f"every network trained {plural(config.epochs, 'epoch')} with one schedule. Search methods: "
             f"{config.search_summary}. Accuracy on the test split. Amount counts {config.amount_description}."),
            "",
        ]
    lines += ["| method | amount | seeds | test accuracy | params | MACs | filters | CPU latency (ms) | search (s) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in comparison_table(rows):
        std = f" ± {100 * r['accuracy_std']:.1f}" if r["seeds"] > 1 else ""
        lines.append(
            f"| {r['method']} | {r['amount']:.2f} | {r['seeds']} | {100 * r['accuracy']:.1f}%{std} | "
            f"{r['params']:,.0f} | {r['macs']:,.0f} | {r['filters']:.0f} | {r['latency_ms']:.2f} | "
            f"{r['search_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def comparison_plot(rows: Sequence[dict[str, Any]], path: PathLike, counts: str = "filters") -> bool:
    """Plot test accuracy against the amount pruned (a share of the ``counts``: filters, or a budget's cost) and
    against MACs into a PNG; ``False`` without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return False
    table = comparison_table(rows)
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    by_sparsity, by_macs = figure.subplots(1, 2)
    dense = [r for r in table if r["method"] == "dense"]
    for r in dense:
        by_sparsity.axhline(100 * r["accuracy"], color="black", linestyle="--", linewidth=1, label="dense")
        by_macs.scatter([r["macs"]], [100 * r["accuracy"]], color="black", marker="*", s=80, label="dense", zorder=3)
    for method in dict.fromkeys(r["method"] for r in table if r["method"] != "dense"):
        points = sorted((r for r in table if r["method"] == method), key=lambda r: r["amount"])
        acc = [100 * r["accuracy"] for r in points]
        err = [100 * r["accuracy_std"] for r in points]
        by_sparsity.errorbar([r["amount"] for r in points], acc, yerr=err, marker="o", capsize=3, label=method)
        by_macs.errorbar([r["macs"] for r in points], acc, yerr=err, marker="o", capsize=3, label=method)
    by_sparsity.set(xlabel=f"{counts} pruned (fraction)", ylabel="test accuracy (%)", title="accuracy vs sparsity")
    by_macs.set(xlabel="MACs per example", ylabel="test accuracy (%)", title="accuracy vs MACs", xscale="log")
    by_macs.xaxis.set_minor_formatter(NullFormatter())
    for axes in (by_sparsity, by_macs):
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.savefig(str(path), dpi=120)
    return True


def write_comparison(rows: Sequence[dict[str, Any]], out: PathLike, config: PipelineConfig | None = None,
                     log: Log = silent) -> list[Path]:  # fmt: skip
    """Write ``compare.csv``, ``compare.json``, ``compare.md`` and ``compare.png`` (with matplotlib) into ``out``.

    Returns:
        list of Path: the files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    write_json(out / "compare.json", {"config": config.to_dict() if config else None, "rows": list(rows)})
    (out / "compare.md").write_text(comparison_markdown(rows, config))
    written = [out / "compare.csv", out / "compare.json", out / "compare.md"]
    if comparison_plot(rows, out / "compare.png", config.amount_counts if config else "filters"):
        written.append(out / "compare.png")
    else:
        log('matplotlib is not installed, so no compare.png: pip install "torch-rlprune[plot]" (or matplotlib).')
    return written
