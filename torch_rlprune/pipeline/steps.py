"""The steps of a run (search, slim, train) and :func:`run_pipeline`, which runs them in a row."""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import criteria
from .._files import write_json
from ..data import batches
from ..groups import CONV_TYPES
from ..lottery import LotteryTicket, Snapshot, rewind
from ..methods import RLStructuredPruning, global_structured
from ..metrics import filters_per_layer
from ..search.rewards import make_reward
from ..serialization import load, save
from ..slicing import slim
from .config import CRITERION_METHODS, METHODS, SEARCH_METHODS, Log, PathLike, PipelineConfig, silent, snapshot_name
from .maskfile import load_mask, save_mask, unslice
from .measuring import Metrics, measure
from .report import Report
from .workspace import Workspace

#: Every file a step writes into the run folder (see the package description), by the step that writes it.
OUTPUTS = {
    "search": ("config.json", "snapshots", "dense.json", "search.pt", "history.csv", "search.json", "mask.pt"),
    "slim": ("ticket.pt",),
    "train": ("dense.json", "model.pt", "train.json", "report.json", "report.md"),
}
SEARCH_FIELDS = ("method", "reward", "reward_batches", "reward_pool", "recalibrate", "finalists", "seconds",
                 "evaluations", "best_reward", "final_rewards", "interrupted")  # fmt: skip


def _read_json(path: Path, step: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run 'torch-rlprune {step} --out {path.parent}' first.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path} is not valid JSON ({error}); it was damaged after the step that wrote it. Run 'torch-rlprune "
            f"{step} --out {path.parent} --overwrite' to write it again."
        ) from None


def read_config(out: PathLike) -> PipelineConfig:
    """The :class:`PipelineConfig` of the run in folder ``out`` (from its ``config.json``)."""
    return PipelineConfig.from_dict(_read_json(Path(out) / "config.json", "search")["config"])


def _convs(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, CONV_TYPES)]


def _reward(ws: Workspace, final: bool = False) -> Callable[[nn.Module], float]:
    """The search's reward, or with ``final`` the one that re-scores its finalists: the same kind of reward on the
    validation batches after those the search's pool reads."""
    c = ws.config
    # Calibration batches come without augmentation: they stand for the data the network will see.
    calibration = batches(ws.splits.train, c.batch_size, shuffle=True, generator=torch.Generator().manual_seed(c.seed),
                          device=ws.device) if c.recalibrate else None  # fmt: skip
    loader = ws.fresh_val_batches() if final else ws.val_loader()
    return make_reward(c.reward, loader, c.reward_batches, example_inputs=ws.example_inputs, recalibrate=calibration,
                       recalibrate_batches=c.recalibrate or 1, pool=1 if final else c.reward_pool)  # fmt: skip


def _criterion_context(ws: Workspace, name: str, init_state: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """What criterion ``name`` asks for in its signature beyond the model: a training batch, the weights at init,
    the seed. A new criterion that needs only these is run without a change here."""
    c = ws.config
    wanted = inspect.signature(criteria.get(name)).parameters
    context: dict[str, Any] = {}
    if "inputs" in wanted:
        x, y = next(iter(batches(ws.splits.train, c.batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(c.seed), device=ws.device)))  # fmt: skip
        context |= {"inputs": x, "targets": y}
    if "init_state" in wanted:
        if init_state is None:
            raise ValueError(f"{name} compares with the weights at init; pass init_state.")
        context["init_state"] = init_state
    if "seed" in wanted:
        context["seed"] = c.seed
    return context


def prune_model(
    ws: Workspace,
    model: nn.Module,
    init_state: dict[str, torch.Tensor] | None = None,
    *,
    method: str | None = None,
    amount: float | None = None,
    checkpoint: PathLike | None = None,
    resume: PathLike | None = None,
    writer: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Mask ``amount`` of ``model``'s filters (or of its ``budget``'s cost) with ``method`` (defaults: the config's)
    through ``global_structured``.

    ``init_state`` (a snapshot's state at init) is what ``"same_sign"`` compares the weights with.

    Returns the search summary: ``method``, ``reward``, ``seconds``, ``evaluations``, ``best_reward``,
    ``interrupted``, the finalists' ``final_rewards`` on fresh batches (empty without finalists) and the
    ``history`` (a list of records, empty for a criterion).
    """
    c = ws.config
    method = c.method if method is None else method
    amount = c.amount if amount is None else amount
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    convs = _convs(model)
    common = {"model": model, "example_inputs": ws.example_inputs, "amount": c.amount_for(amount),
              "min_keep": c.min_keep}
    start = time.perf_counter()
    result = None
    if method in SEARCH_METHODS:
        result = global_structured(
            convs, SEARCH_METHODS[method], **common, reward=_reward(ws), episodes=c.episodes, seed=c.seed,
            progress=progress, writer=writer, checkpoint=checkpoint, resume=resume, finalists=c.finalists,
            final_reward=_reward(ws, final=True) if c.finalists else None,
            **({"policy": c.policy} if SEARCH_METHODS[method] is RLStructuredPruning else {}),
        )
    else:
        name = CRITERION_METHODS[method]
        global_structured(convs, name, **common, **_criterion_context(ws, name, init_state))
    seconds = time.perf_counter() - start
    return {
        "method": method,
        "amount": amount,
        "reward": c.reward if result is not None else None,
        "reward_batches": c.reward_batches if result is not None else None,
        "reward_pool": c.reward_pool if result is not None else None,
        "recalibrate": c.recalibrate if result is not None else None,
        "finalists": c.finalists if result is not None else None,
        "seconds": result.wall_time if result is not None else seconds,
        "evaluations": result.evaluations if result is not None else 0,
        "best_reward": result.best_reward if result is not None else None,
        "interrupted": bool(result.interrupted) if result is not None else False,
        "final_rewards": result.final_rewards if result is not None else [],
        "history": result.history if result is not None else [],
    }


def _history_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
    keys: list[str] = []
    for record in history:
        keys += [k for k in record if k not in keys]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for record in history:
            writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in record.items()})
    os.replace(tmp, path)


def _dense_record(ws: Workspace, model: nn.Module, history: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    return {**dataclasses.asdict(measure(model, ws)), "epochs": ws.config.epochs, "train_seconds": seconds,
            "history": history}  # fmt: skip


def search_step(
    config: PipelineConfig,
    out: PathLike,
    *,
    workspace: Workspace | None = None,
    dense: bool = False,
    resume: bool = False,
    writer: Any = None,
    progress: bool = False,
    log: Log = silent,
) -> dict[str, Any]:
    """Step 1: train to epoch ``k``, search the mask there, and write it to the run folder ``out``.

    Writes ``config.json``, ``snapshots/``, ``mask.pt``, ``search.json`` and, for a search method, ``search.pt``
    and ``history.csv``. With ``dense=True`` the dense model trains all ``config.epochs`` epochs (snapshot at
    ``k`` on the way) and is measured into ``dense.json`` before it is rewound to ``k`` for the search; otherwise
    it trains only the first ``k`` epochs of that schedule. With ``resume=True`` and a ``snapshots/epoch<k>.pt``
    in ``out``, the training is skipped and the search continues from ``search.pt``.

    Returns:
        dict: the search summary, as written to ``search.json``.
    """
    ws = workspace or Workspace(config)
    c = ws.config
    out = Path(out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"format": "torch-rlprune/run", "version": 1, "config": c.to_dict(),
                                      "data": ws.describe(), "torch": torch.__version__})  # fmt: skip
    k = c.rewind_epoch
    at_k = snapshot_name(k)
    model = ws.build_model()
    started = time.perf_counter()
    train_seconds = 0.0
    checkpoint = out / "search.pt"
    snapshots = out / "snapshots"
    if resume and (snapshots / f"{at_k}.pt").is_file() and (snapshots / "init.pt").is_file():
        log(f"resuming: weights at {at_k} from {snapshots}, search from {checkpoint}")
        rewind(model, snapshots / f"{at_k}.pt")
    else:
        ticket = LotteryTicket(model, epochs=(k,) if k else (), directory=out / "snapshots")
        epochs = 0 if c.weights is not None else c.epochs if dense else k
        if c.weights is not None:  # a trained network: it is its own dense control
            record = {**_dense_record(ws, model, [], 0.0), "epochs": 0, "weights": c.weights}
            write_json(out / "dense.json", record)
            log(f"starting from the weights in {c.weights}: test accuracy {record['accuracy']:.2%}")
        if epochs:
            log(f"training the dense {c.model} for {epochs} epoch(s){f' (snapshot at epoch {k})' if k else ''}")

            def step(record: dict[str, Any]) -> bool:
                ticket.step(record["epoch"])
                log(f"  dense epoch {record['epoch']}/{c.epochs}: loss {record['loss']:.4f}, "
                    f"train accuracy {record['accuracy']:.2%}, {record['seconds']:.1f} s")  # fmt: skip
                return not dense and record["epoch"] >= k

            history = ws.train(model, c.epochs, step, progress, writer, "dense")
            train_seconds = time.perf_counter() - started
            if dense:
                record = _dense_record(ws, model, history, train_seconds)
                write_json(out / "dense.json", record)
                log(f"dense control: test accuracy {record['accuracy']:.2%}")
                ticket.rewind(model, at_k)
        resume = False
    log(f"pruning {c.amount:.0%} of the {c.amount_counts} with {c.method}"
        + (f" ({c.search_summary})" if c.searches else ""))
    init_state = Snapshot.load(snapshots / "init.pt").state
    summary = prune_model(ws, model, init_state, checkpoint=checkpoint if c.searches else None,
                          resume=checkpoint if resume and checkpoint.is_file() else None, writer=writer,
                          progress=progress)  # fmt: skip
    history = summary.pop("history")
    if history:
        _history_csv(out / "history.csv", history)
    save_mask(model, out / "mask.pt", ws.example_inputs)
    summary["filters_per_layer"] = {n: list(v) for n, v in filters_per_layer(model, ws.example_inputs).items()}
    summary["dense_train_seconds"] = train_seconds
    write_json(out / "search.json", summary)
    best = f", best reward {summary['best_reward']:.4g}" if summary["evaluations"] else ""
    if summary["final_rewards"]:
        best += f" ({max(summary['final_rewards']):.4g} on fresh batches, best of {len(summary['final_rewards'])})"
    log(f"mask found in {summary['seconds']:.1f} s{best}; "
        f"{sum(k for k, _ in summary['filters_per_layer'].values())} filters kept")  # fmt: skip
    return summary


def slim_step(
    out: PathLike, *, rewind_to: str | None = None, workspace: Workspace | None = None, log: Log = silent
) -> nn.Module:
    """Step 2: rewind the kept filters, slice the pruned ones out, and write ``ticket.pt``.

    Reads ``config.json``, ``mask.pt`` and ``snapshots/`` from the run folder ``out``. ``rewind_to``
    (``"init"`` or ``"k"``) overrides the config's and is recorded in ``config.json``.

    Returns:
        torch.nn.Module: the sliced network at the rewind point.
    """
    out = Path(out)
    config = read_config(out)
    if rewind_to is not None:
        config.rewind_to = rewind_to
    ws = workspace if workspace is not None else Workspace(config)
    ws.config.rewind_to = config.rewind_to
    data = _read_json(out / "config.json", "search")
    data["config"] = ws.config.to_dict()
    write_json(out / "config.json", data)
    model = ws.build_model()
    if not (out / "mask.pt").is_file():
        raise FileNotFoundError(f"{out / 'mask.pt'} not found; run 'torch-rlprune search --out {out}' first.")
    load_mask(out / "mask.pt", model, ws.example_inputs)
    rewind(model, out / "snapshots" / f"{ws.config.rewind_name}.pt")
    save(model, out / "ticket.pt", ws.example_inputs)
    small = slim(model, ws.example_inputs)
    log(f"rewound the kept filters to {ws.config.rewind_name} and sliced the model: "
        f"{sum(p.numel() for p in small.parameters()):,} parameters; wrote {out / 'ticket.pt'}")  # fmt: skip
    return small


def train_step(
    out: PathLike,
    *,
    workspace: Workspace | None = None,
    writer: Any = None,
    progress: bool = False,
    log: Log = silent,
) -> Report:
    """Step 3: train the sliced network of ``ticket.pt``, measure it, and write ``model.pt`` and the report.

    Reads ``config.json``, ``ticket.pt``, ``mask.pt``, ``search.json`` and ``dense.json`` from the run folder
    ``out``. Without a ``dense.json`` (``torch-rlprune search`` trains only to epoch ``k``) the dense control
    is trained first, from ``snapshots/init.pt`` with the same schedule.

    Returns:
        Report: the report, also written to ``report.json`` and ``report.md``.
    """
    out = Path(out)
    config = read_config(out)
    ws = workspace if workspace is not None else Workspace(config)
    c = ws.config
    search = _read_json(out / "search.json", "search")
    for name, step in (("ticket.pt", "slim"), ("mask.pt", "search")):
        if not (out / name).is_file():
            raise FileNotFoundError(f"{out / name} not found; run 'torch-rlprune {step} --out {out}' first.")
    timings = {"dense training": float(search.get("dense_train_seconds", 0.0)), "search": float(search["seconds"])}
    if (out / "dense.json").is_file():
        dense_record = json.loads((out / "dense.json").read_text())
        timings["dense training"] = float(dense_record.get("train_seconds", timings["dense training"]))
    else:
        log(f"training the dense control for {c.epochs} epoch(s) (same schedule)")
        model = ws.build_model()
        rewind(model, out / "snapshots" / "init.pt")
        started = time.perf_counter()
        history = ws.train(model, c.epochs, None, progress, writer, "dense")
        dense_record = _dense_record(ws, model, history, time.perf_counter() - started)
        timings["dense training"] = dense_record["train_seconds"]
        write_json(out / "dense.json", dense_record)

    small = load(out / "ticket.pt", ws.build_model(), ws.example_inputs, map_location=ws.device)
    log(f"training the pruned network for {c.epochs} epoch(s)")
    started = time.perf_counter()

    def each(record: dict[str, Any]) -> None:
        log(f"  pruned epoch {record['epoch']}/{c.epochs}: loss {record['loss']:.4f}, "
            f"train accuracy {record['accuracy']:.2%}, {record['seconds']:.1f} s")  # fmt: skip

    history = ws.train(small, c.epochs, each, progress, writer, "pruned")
    timings["pruned training"] = time.perf_counter() - started
    pruned = measure(small, ws)
    log(f"pruned network: test accuracy {pruned.accuracy:.2%}")

    masked = load_mask(out / "mask.pt", ws.build_model(), ws.example_inputs)
    unslice(small, masked)
    save(masked, out / "model.pt", ws.example_inputs)
    check = load(out / "model.pt", ws.build_model(), ws.example_inputs, map_location=ws.device).eval()
    with torch.no_grad():
        if not torch.allclose(check(ws.example_inputs), small.eval()(ws.example_inputs), atol=1e-4, rtol=1e-4):
            raise RuntimeError(f"{out / 'model.pt'} does not reload as the trained network; please report this.")
    write_json(out / "train.json", {**dataclasses.asdict(pruned), "epochs": c.epochs, "history": history})

    report = Report(
        config=c.to_dict(),
        data=ws.describe(),
        dense=Metrics.from_dict(dense_record),
        pruned=pruned,
        search={k: search.get(k) for k in SEARCH_FIELDS},  # runs searched before a field existed lack it
        filters_per_layer=search["filters_per_layer"],
        timings=timings,
    )
    write_json(out / "report.json", report.to_dict())
    (out / "report.md").write_text(report.markdown())
    log(f"wrote {out / 'model.pt'}, {out / 'report.json'} and {out / 'report.md'}")
    return report


def run_pipeline(
    config: PipelineConfig,
    out: PathLike,
    *,
    writer: Any = None,
    progress: bool = False,
    log: Log = silent,
    workspace: Workspace | None = None,
) -> Report:
    r"""Run the whole pipeline (see the package description) into the run folder ``out``.

    The three steps :func:`search_step` (with the dense control trained in full), :func:`slim_step` and
    :func:`train_step`, on data loaded once.

    Args:
        config (PipelineConfig): the settings.
        out (str or os.PathLike): the run folder (created if needed; files of an earlier run are replaced).
        writer (SummaryWriter, optional): TensorBoard writer for the search history and the training curves.
        progress (bool): tqdm progress bars. Default: ``False``.
        log (callable): receives every progress message. Default: none.
        workspace (Workspace, optional): data already loaded for ``config``.

    Returns:
        Report: dense vs pruned accuracy, parameters, MACs, latency, search time, filters per layer.
    """
    started = time.perf_counter()
    ws = workspace or Workspace(config)
    log(f"data {config.data}: {len(ws.splits.train)} train, {len(ws.splits.val)} validation (search reward), "
        f"{len(ws.splits.test)} test (final report only)")  # fmt: skip
    search_step(ws.config, out, workspace=ws, dense=True, writer=writer, progress=progress, log=log)
    slim_step(out, workspace=ws, log=log)
    report = train_step(out, workspace=ws, writer=writer, progress=progress, log=log)
    report.timings["total"] = time.perf_counter() - started
    write_json(Path(out) / "report.json", report.to_dict())
    (Path(out) / "report.md").write_text(report.markdown())
    return report
