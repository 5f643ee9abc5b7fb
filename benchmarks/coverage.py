"""How much of the torchvision and timm model zoos can torch_rlprune prune, and slice exactly?

Run by hand (nothing here is collected by pytest)::

    python benchmarks/coverage.py                  # every model: under an hour on 2 CPU cores
    python benchmarks/coverage.py --only resnet18,timm:efficientnet_b0 --out /tmp/coverage_smoke.json
                                                   # smoke run: three models, about half a minute

Every torchvision classification model and a choice of timm convolutional networks (small variants of the
families timm users bring) is built with random weights and ``num_classes=10``, in eval mode, and given one input
size: 64x64 where the model accepts it, its native size otherwise (ViT, MaxViT, Inception v3). The weights are
brought to life first: parameters that are constant at init (norm affines, layer scales, zero-initialised gains,
zero biases) are redrawn and batch norms take the statistics of a random batch, since at init some branches, or
the whole output, do not depend on the input, and an error in slicing them would go unseen. Per model:

* **prunable**: the share of conv filters (output channels of every ``Conv1d/2d/3d``, as
  :func:`torch_rlprune.metrics.filters_per_layer` counts them) that lie in a channel group of
  :func:`torch_rlprune.channel_groups`, as producer or tied depthwise rows. The rest is excluded by the tracer;
  ``top exclusion`` is the reason that excludes the most filters. Where torch.fx cannot trace a module, the
  tracer's error names it and advises ``leaf_modules=[name]``; the script follows that advice, one error at a
  time, as a user would, and the row says how many modules it took as opaque.
* Half of the prunable filters are then pruned with ``rlp.global_structured(convs, prune.LnStructured, n=1,
  amount=0.5, ...)`` and sliced out with ``rlp.slim(model, x, verify=False)`` (timed: ``slim s``), and **rel err**
  is ``max|sliced(x') - masked(x')| / max|masked(x')|`` on a fresh random batch ``x'`` of 2 (eval, no_grad);
  ``params after`` is the sliced model's share of the dense parameters.
* **Torch-Pruning** on a fresh copy of the same model (same seed, same example input): ``BasePruner`` with
  ``MagnitudeImportance(p=1)``, ``pruning_ratio=0.5``, per-layer ratios, the classifier (the layer with
  ``num_classes`` outputs) ignored. ``TP s`` times building its dependency graph plus ``step()``; ``TP`` says
  whether its pruned model still runs on ``x'`` with the dense output shape (Torch-Pruning does not check this
  itself, nor does this script compare its outputs: it prunes other channels than ours).

Every model is measured in its own process, within ``--timeout-s`` and ``--memory-gib`` of address space, so that
a crash, a hang or a runaway allocation costs one row; its row is appended at once to ``--out`` (written
atomically), and a rerun skips the models already there unless ``--fresh``. Errors are reported in the row as
their type and the start of their message (the results file keeps all of it, and where it was raised). timm and
Torch-Pruning are optional: ``pip install -e '.[bench]'``; without timm its models are left out, without
Torch-Pruning its columns stay empty.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import gc
import importlib.metadata
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import prune

import torch_rlprune as rlp
from _machine import OtherLoad, available_cores, print_header, print_table
from torch_rlprune.groups import CONV_TYPES
from torch_rlprune.metrics import filters_per_layer
from torch_rlprune._files import atomic_write

NUM_CLASSES = 10
AMOUNT = 0.5
SMALL_INPUT = 64
TORCHVISION_SIZES = (SMALL_INPUT, 224)  # 224 for ViT, MaxViT and Inception v3 (which needs 75 at least)
COVERED = 0.8  # a model counts as covered when this share of its conv filters is prunable
EXACT = 1e-4  # slim's default tolerance, as a relative error
# Outputs on two random inputs this close (relative) are equal to float precision: the network's features have
# vanished and rel err cannot see a slicing error. (Larger but small differences are normal: two noise images
# have the same statistics, so globally pooled features nearly agree; the features are alive all the same.)
IGNORES_INPUT = 1e-6
REASON_CHARS = 60  # of a message or reason, after its type or filter count
INSTALL_HINT = "pip install -e '.[bench]'"

# Small variants of the families timm users bring, by family.
TIMM_MODELS = (
    # ResNet and its descendants
    "resnet10t", "resnet18", "resnet26d", "resnet50", "resnetv2_50", "resnext26ts", "resnext50_32x4d",
    "seresnet18", "seresnext26d_32x4d", "ecaresnet26t", "skresnet18", "resnest14d", "res2net50_14w_8s",
    "res2next50", "gernet_s", "tresnet_m", "nf_resnet26",
    # RegNet
    "regnetx_002", "regnety_002", "regnetz_b16", "nf_regnet_b0",
    # mobile and NAS networks
    "mobilenetv2_050", "mobilenetv3_small_050", "mobilenetv3_large_100", "mobilenetv4_conv_small", "mnasnet_small",
    "spnasnet_100", "semnasnet_050", "fbnetc_100", "fbnetv3_b", "hardcorenas_a", "lcnet_050", "tinynet_a",
    "mixnet_s", "ghostnet_050", "ghostnetv2_100", "repghostnet_050", "rexnet_100",
    # EfficientNet
    "efficientnet_b0", "efficientnet_lite0", "tf_efficientnet_b0", "efficientnetv2_rw_t",
    # dense and multi-branch
    "densenet121", "dpn48b", "dla34", "dla46_c", "hrnet_w18_small", "selecsls42b", "vovnet39a", "ese_vovnet19b_dw",
    "inception_v3", "xception41",
    # CSP and Darknet
    "cspresnet50", "cspdarknet53", "cs3darknet_s", "darknet17",
    # re-parameterisable and recent conv nets
    "repvgg_a0", "mobileone_s0", "repvit_m0_9", "convnext_atto", "convnextv2_atto", "hgnetv2_b0", "eca_nfnet_l0",
    "edgenext_xx_small", "fastvit_t8", "efficientvit_b0",
)  # fmt: skip


def optional_import(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        return None


def version_of(distribution: str) -> str:
    """The installed distribution's version (``torch_pruning.__version__`` lags behind it in 1.6.1)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe(error: BaseException) -> str:
    """An exception as one line: its type and message (shortened for the table, not in the results file)."""
    message = " ".join(str(error).split())
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def raised_at(error: BaseException) -> str:
    """Where the exception was raised, for whoever fixes it: ``file:line in function``."""
    frame = traceback.extract_tb(error.__traceback__)[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


def short(text: str) -> str:
    """``"Type: message"`` (or ``"N filters: reason"``) with the message cut to ``REASON_CHARS``."""
    head, sep, message = text.partition(": ")
    return text if len(message) <= REASON_CHARS else f"{head}{sep}{message[:REASON_CHARS]}..."


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------------
# One model, in a worker process
# ----------------------------------------------------------------------------------------------------------------


def build(zoo: str, name: str) -> nn.Module:
    """The model with the weights of seed 0, so that both libraries get the same network."""
    torch.manual_seed(0)
    if zoo == "torchvision":
        model = torchvision.models.get_model(name, weights=None, num_classes=NUM_CLASSES)
    else:
        model = __import__("timm").create_model(name, pretrained=False, num_classes=NUM_CLASSES)
    return model.eval()


def bring_to_life(model: nn.Module, size: int) -> nn.Module:
    """Make every channel reach the output, so that ``rel err`` would see a slicing error anywhere.

    At init, whole branches are invisible: residual gains initialised to zero (timm's ``zero_init_last``),
    ConvNeXt's layer scale of 1e-6, and batch norms whose statistics (0, 1) do not match small weights
    (GoogLeNet's std of 0.01 shrinks the signal below float precision: its output does not depend on its input).
    So the parameters that are constant at init (norm affines, layer scales, gains, zero biases) are redrawn, and
    every batch norm takes the statistics of its input on a random batch, in graph order.
    """
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not param.numel() or not bool((param == param.flatten()[0]).all()):
                continue
            if name.endswith("bias"):
                param.normal_(0, 0.1)
            else:
                param.uniform_(0.5, 1.5)
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.running_mean is not None]
    if norms:
        handles = [m.register_forward_pre_hook(set_statistics) for m in norms]
        with torch.no_grad():
            model(torch.randn(8, 3, size, size))
        for handle in handles:
            handle.remove()
    return model


def set_statistics(norm: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
    """A pre-hook: the batch norm's running statistics become those of its input, which it then normalises."""
    dims = [d for d in range(args[0].dim()) if d != 1]
    norm.running_mean.copy_(args[0].mean(dims))
    norm.running_var.copy_(args[0].var(dims))


def candidate_sizes(zoo: str, model: nn.Module) -> tuple[int, ...]:
    if zoo == "torchvision":
        return TORCHVISION_SIZES
    cfg = model.pretrained_cfg
    native = cfg["input_size"][-1]
    return (native,) if cfg.get("fixed_input_size") else (SMALL_INPUT, native)


def accepted_input(zoo: str, model: nn.Module) -> tuple[int, torch.Size]:
    """The first candidate input size the model runs on, and its output shape there."""
    error: Exception | None = None
    for size in candidate_sizes(zoo, model):
        try:
            with torch.no_grad():
                return size, model(torch.randn(1, 3, size, size)).shape
        except Exception as exc:  # the model refuses this size: try the next
            error = exc
    raise ValueError(f"no input size in {candidate_sizes(zoo, model)} works ({describe(error)})")


def coverage(groups: rlp.ChannelGroups, dense: dict[str, tuple[int, int]]) -> tuple[int, str | None]:
    """How many conv filters are a producer or tied row of some group (a conv split over several groups counts
    once), and the reason that keeps the most of the others out, with their count."""
    rows: dict[str, set[int]] = collections.defaultdict(set)
    for group in groups:
        for member in group.filters:
            rows[member.name].update(member.indices(torch.arange(group.size)).tolist())
    prunable, lost = 0, collections.Counter()
    for name, (_, total) in dense.items():
        covered = min(len(rows[name]), total)
        prunable += covered
        if covered < total:  # convs the traced forward never calls (aux heads in eval) are in no group either
            lost[groups.excluded.get(name, "not reached by the traced forward")] += total - covered
    if not lost:
        return prunable, None
    why, filters = lost.most_common(1)[0]
    return prunable, f"{filters} filters: {why}"


def relative_error(masked: nn.Module, sliced: nn.Module, x: torch.Tensor) -> tuple[float, float]:
    """``max|sliced(x) - masked(x)| / max|masked(x)|``, and how much the masked output differs between the
    examples of ``x`` on the same scale: near 0, the output ignores the input and the error says nothing."""
    with torch.no_grad():
        reference = masked.eval()(x)
        diff = (sliced.eval()(x) - reference).abs().max().item()
    scale = reference.abs().max().item()
    if scale == 0:
        return (0.0 if diff == 0 else float("inf")), 0.0
    return diff / scale, (reference[0] - reference[1]).abs().max().item() / scale


#: What the tracer's error says to do with a module torch.fx cannot trace.
ADVICE = re.compile(r"pass leaf_modules=\['([^']+)'\]")


def traced_as_advised(model: nn.Module, x: torch.Tensor) -> tuple[rlp.ChannelGroups, list[str]]:
    """The channel groups of ``model``, and the modules taken as opaque (``leaf_modules``) because the tracer's
    error asked for them, one error at a time, as a user following it would."""
    leaves: list[str] = []
    while True:
        try:
            return rlp.channel_groups(model, x, leaf_modules=leaves), leaves
        except ValueError as error:
            advised = ADVICE.search(str(error))
            if advised is None or advised.group(1) in leaves:
                raise
            leaves.append(advised.group(1))


def prune_with_rlp(model: nn.Module, x: torch.Tensor, check: torch.Tensor, params: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        dense = filters_per_layer(model)
        out["filters"] = sum(total for _, total in dense.values())
        out["prunable"] = 0.0  # until the trace says otherwise: a model the tracer refuses has nothing prunable
        groups, leaves = traced_as_advised(model, x)
        if leaves:
            out["leaf_modules"] = leaves
        prunable, out["top_exclusion"] = coverage(groups, dense)
        out["prunable"] = prunable / out["filters"] if out["filters"] else None
        if not prunable:  # global_structured would raise ValueError: nothing to prune
            return out
        convs = [(m, "weight") for m in model.modules() if isinstance(m, CONV_TYPES)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # it warns about every excluded conv; top_exclusion says why
            rlp.global_structured(convs, prune.LnStructured, n=1, amount=AMOUNT, model=model, example_inputs=x,
                                  groups=groups)  # fmt: skip
        start = time.perf_counter()
        sliced = rlp.slim(model, x, verify=False, groups=groups)
        out["slim_s"] = time.perf_counter() - start
        out["params_after"] = n_params(sliced) / params
        out["rel_err"], out["output_spread"] = relative_error(model, sliced, check)
    except Exception as exc:  # the row reports it; the other measurements go on
        out.update(error=describe(exc), error_at=raised_at(exc))
    return out


def prune_with_tp(
    tp: Any, fresh: Callable[[], nn.Module], x: torch.Tensor, check: torch.Tensor, params: int, out_shape: list[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    try:
        model = fresh()
        classifier = [m for m in model.modules()
                      if (isinstance(m, nn.Linear) and m.out_features == NUM_CLASSES)
                      or (isinstance(m, CONV_TYPES) and m.out_channels == NUM_CLASSES)]  # fmt: skip
        start = time.perf_counter()
        pruner = tp.pruner.BasePruner(model, x, importance=tp.importance.MagnitudeImportance(p=1),
                                      pruning_ratio=AMOUNT, ignored_layers=classifier)  # fmt: skip
        pruner.step()
        out["tp_s"] = time.perf_counter() - start
        out["tp_params_after"] = n_params(model) / params
        with torch.no_grad():
            shape = list(model(check).shape)
        expected = [len(check), *out_shape[1:]]
        out["tp"] = "runs" if shape == expected else f"output shape {shape}, dense {expected}"
    except Exception as exc:
        out["tp"] = describe(exc)
    return out


def measure(zoo: str, name: str, save: Any) -> None:
    """Measure one model, calling ``save(row)`` before each stage so that a crash or a timeout leaves a trace."""
    row: dict[str, Any] = {"zoo": zoo, "model": name, "date": datetime.datetime.now().isoformat(timespec="seconds"),
                           "stage": "build"}  # fmt: skip
    save(row)
    try:
        model = build(zoo, name)
        size, out_shape = accepted_input(zoo, model)
        bring_to_life(model, size)
    except Exception as exc:
        row.update(stage="done", error=describe(exc), error_at=raised_at(exc),
                   tp="not run: the model does not build or run")
        save(row)
        return
    params = n_params(model)
    row.update(input=size, params=params, stage="rlp")
    save(row)
    torch.manual_seed(1)
    x, check = torch.randn(1, 3, size, size), torch.randn(2, 3, size, size)
    row.update(prune_with_rlp(model, x, check, params))
    del model  # the largest models need the memory for the fresh copy, cycles included
    gc.collect()
    tp = optional_import("torch_pruning")
    if tp is None:
        row["tp"] = f"not installed: {INSTALL_HINT}"
    else:
        row["stage"] = "tp"
        save(row)
        row.update(prune_with_tp(tp, lambda: bring_to_life(build(zoo, name), size), x, check, params, list(out_shape)))
    row["stage"] = "done"
    save(row)


def limit_memory(gib: float) -> None:
    """Make allocations beyond ``gib`` of address space fail in this process (the row reports a MemoryError)
    rather than wake the kernel's OOM killer, which may pick another process on the machine."""
    limit = int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def worker(key: str, threads: int, memory_gib: float, path: Path) -> int:
    limit_memory(memory_gib)
    torch.set_num_threads(threads)
    zoo, name = key.split(":", 1)
    measure(zoo, name, lambda row: write_json(path, row))
    return 0


# ----------------------------------------------------------------------------------------------------------------
# The run: one worker process per model
# ----------------------------------------------------------------------------------------------------------------


def write_json(path: Path, payload: Any) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(payload, indent=1).encode()))


def model_keys(zoos: list[str], only: list[str], limit: int | None) -> list[str]:
    """``zoo:name`` of the models to measure; ``only`` entries may name the zoo (``timm:resnet18``) or not."""
    keys = []
    if "torchvision" in zoos:
        keys += [f"torchvision:{n}" for n in torchvision.models.list_models(module=torchvision.models)]
    if "timm" in zoos:
        if optional_import("timm") is None:
            print(f"timm is not installed, its models are left out: {INSTALL_HINT}")
        else:
            keys += [f"timm:{n}" for n in TIMM_MODELS]
    if only:
        unknown = [o for o in only if not any(o in (k, k.split(":", 1)[1]) for k in keys)]
        if unknown:
            raise SystemExit(f"--only: no such model in {', '.join(zoos)}: {', '.join(unknown)}")
        keys = [k for k in keys if k in only or k.split(":", 1)[1] in only]
    return keys[:limit]


def failure(returncode: int, stderr: str) -> str:
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    lines = stderr.strip().splitlines()
    return f"exit {returncode}: {lines[-1] if lines else 'no message'}"


def run_isolated(key: str, threads: int, memory_gib: float, timeout_s: float | None) -> dict[str, Any]:
    """Measure one model in a fresh process; a crash or a timeout is reported in the row of the stage it hit."""
    zoo, name = key.split(":", 1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "row.json"
        command = [sys.executable, __file__, "--worker", key, "--threads", str(threads),
                   "--memory-gib", str(memory_gib), "--worker-out", str(path)]  # fmt: skip
        start = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
            problem = None if done.returncode == 0 else failure(done.returncode, done.stderr)
        except subprocess.TimeoutExpired:
            problem = f"timeout after {timeout_s:.0f} s"
        row = json.loads(path.read_text()) if path.exists() else {"zoo": zoo, "model": name, "stage": "start"}
    row["seconds"] = time.perf_counter() - start
    if row["stage"] != "done":
        row["stopped"] = f"{problem or 'the worker stopped'} during stage {row['stage']}"
        if row["stage"] == "tp":
            row["tp"] = row["stopped"]
        else:
            row.update(error=row["stopped"], tp="not run")
    return row


def physical_memory_gib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def load_results(path: Path) -> dict[str, dict[str, Any]]:
    return json.loads(path.read_text()) if path.exists() else {}


# ----------------------------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------------------------


def pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def seconds(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table_row(row: dict[str, Any]) -> list[str]:
    rel_err = row.get("rel_err")
    note = row.get("error") or row.get("top_exclusion") or ""
    if row.get("leaf_modules"):
        note = f"{len(row['leaf_modules'])} modules opaque, as the tracer's error advises; {note}"
    if row.get("output_spread", 1) < IGNORES_INPUT:
        note = f"the output ignores the input: rel err says nothing. {note}"
    return [
        row["model"], row["zoo"], str(row.get("input", "")), str(row.get("filters", "")), pct(row.get("prunable")),
        pct(row.get("params_after")), seconds(row.get("slim_s")), "" if rel_err is None else f"{rel_err:.1e}",
        seconds(row.get("tp_s")), pct(row.get("tp_params_after")), short(row.get("tp", "")),
        f"{row['seconds']:.0f}", short(note),
    ]  # fmt: skip


def left_aligned(cells: list[list[str]], columns: tuple[int, ...]) -> list[list[str]]:
    """Pad the text ``columns`` to their width, since ``print_table`` right-aligns every column but the first."""
    for column in columns:
        width = max(len(row[column]) for row in cells)
        for row in cells:
            row[column] = row[column].ljust(width)
    return cells


def share(count: int, total: int) -> str:
    return f"{count} ({count / total:.0%})" if total else "0"


def print_summary(rows: list[dict[str, Any]]) -> None:
    n = len(rows)
    covered = sum(1 for r in rows if (r.get("prunable") or 0) >= COVERED)
    exact = sum(1 for r in rows if r.get("rel_err") is not None and r["rel_err"] <= EXACT)
    ours_failed = [r for r in rows if "error" in r]
    tp_runs = sum(1 for r in rows if r.get("tp") == "runs")
    tp_pruned = sum(1 for r in rows if "tp_s" in r)
    print(f"\nmodels: {n}")
    print(f"  torch_rlprune: >= {COVERED:.0%} of conv filters prunable: {share(covered, n)}; "
          f"pruned and sliced with rel err <= {EXACT:g}: {share(exact, n)}; failed: {share(len(ours_failed), n)}")
    print(f"  Torch-Pruning: pruned: {share(tp_pruned, n)}; pruned model runs with the dense output shape: "
          f"{share(tp_runs, n)}")  # fmt: skip
    for r in rows:
        if "stopped" in r:
            print(f"  crashed or timed out: {r['zoo']}:{r['model']}: {r['stopped']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="torchvision,timm", help="zoos to measure (default: %(default)s)")
    parser.add_argument("--only", default="", help="comma-separated model names, optionally as zoo:name")
    parser.add_argument("--limit", type=int, default=None, help="measure the first N selected models only")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "coverage.json",
                        help="results file, written after every model (default: %(default)s)")  # fmt: skip
    parser.add_argument("--fresh", action="store_true", help="measure again the selected models already in --out")
    parser.add_argument("--timeout-s", type=float, default=300.0,
                        help="per model; the largest take ~100 s on 2 busy cores (default: %(default)s)")  # fmt: skip
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="torch threads (default: the cores available, %(default)s here)")  # fmt: skip
    # regnet_y_128gf needs about 20 GiB (its masked model and slim's copy of it); swin under Torch-Pruning, any.
    parser.add_argument("--memory-gib", type=float, default=round(0.85 * physical_memory_gib(), 1),
                        help="address space each model's process may use (default: 85%% of the machine's memory, "
                             "%(default)s GiB here)")  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # zoo:name, measured in this process
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.threads, args.memory_gib, args.worker_out)

    zoos = [z for z in args.models.split(",") if z]
    bad = set(zoos) - {"torchvision", "timm"}
    if bad:
        parser.error(f"--models: unknown zoo {', '.join(sorted(bad))}; choose torchvision and/or timm")
    torch.set_num_threads(args.threads)  # for the header; each worker sets its own
    print_header("coverage.py")
    print(f"timm {version_of('timm')}, torch_pruning {version_of('torch-pruning')}")
    if optional_import("torch_pruning") is None:
        print(f"Torch-Pruning is not installed, its columns stay empty: {INSTALL_HINT}")
    keys = model_keys(zoos, [o for o in args.only.split(",") if o], args.limit)
    results = load_results(args.out)
    todo = [k for k in keys if args.fresh or k not in results]
    print(f"{len(keys)} models, {len(keys) - len(todo)} already in {args.out}, {len(todo)} to measure; "
          f"each in its own process, at most {args.timeout_s:.0f} s and {args.memory_gib} GiB")  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    load = OtherLoad()
    for i, key in enumerate(todo, 1):
        results[key] = run_isolated(key, args.threads, args.memory_gib, args.timeout_s)
        write_json(args.out, results)
        trouble = results[key].get("error") or ""
        print(f"[{i}/{len(todo)}] {key}: {results[key]['seconds']:.0f} s {short(trouble)}", file=sys.stderr)

    rows = [results[k] for k in keys]
    header = ["model", "zoo", "input", "filters", "prunable", "params after", "slim s", "rel err", "TP s",
              "TP params after", "TP", "total s", "note (error, or the top exclusion)"]  # fmt: skip
    title = (f"Coverage: amount={AMOUNT} of the prunable filters, global L1 (ours) / per-layer magnitude "
             f"(Torch-Pruning); num_classes={NUM_CLASSES}, random weights (constant ones redrawn, batch-norm "
             f"statistics from a random batch), eval, {args.threads} threads; input = side of the square example "
             "input; params after = share of the dense parameters")  # fmt: skip
    if rows:
        print_table(title, header, left_aligned([table_row(r) for r in rows], (1, 10, 12)))
    if todo:
        print(load.report())
    print_summary(rows)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
