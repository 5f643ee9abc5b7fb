r"""The ``torch-rlprune`` command: find a structured winning ticket, slim it, train it, and report.

Subcommands (``torch-rlprune <command> --help`` lists every flag):

``run``
    the whole pipeline: train the dense model (the control) with a snapshot at the rewind epoch ``k``, search
    the mask at epoch ``k``, rewind the kept filters to init (or ``k``), slice the pruned ones out, train the
    small network with the same schedule, and write the report. With no flags it prunes 70% of BasicCNN's
    filters with the REINFORCE search on the offline ``digits`` data in a few minutes on 2 CPU cores.
``search``, ``slim``, ``train``
    the three steps of ``run`` one at a time, each reading what the previous one wrote into the run folder.
``compare``
    several methods at several amounts (and seeds) with one training schedule: ``compare.md``,
    ``compare.csv`` and ``compare.png``.

The validation split that rewards the search is carved out of the training data; the test split is used only for
the final report. "Amount" counts filters (output channels of convolutions), never parameters.

**The run folder** (``--out DIR``)::

    DIR/config.json        the settings; written by run/search, read by slim and train
    DIR/log.txt            everything the steps printed, with times
    DIR/snapshots/         init.pt and epoch<k>.pt: the weights to rewind to (torch_rlprune.lottery.Snapshot)
    DIR/dense.json         the dense control: test accuracy, params, MACs, latency
    DIR/search.pt          the search checkpoint ('search --resume' continues it); search methods only
    DIR/history.csv        one row per evaluated mask (episode, reward, best reward, ...); search methods only
    DIR/search.json        method, reward, search time, evaluations, best reward, filters per layer
    DIR/mask.pt            kept filter indices per channel group (torch_rlprune.pipeline.load_mask)
    DIR/ticket.pt          the pruned network at the rewind point, sliced: torch_rlprune.load(path, fresh_model, x)
    DIR/model.pt           the trained pruned network, sliced: torch_rlprune.load(path, fresh_model, x)
    DIR/train.json         the pruned network's training history and test metrics
    DIR/report.json        dense vs pruned: accuracy, params, MACs, CPU latency, search time, filters per layer
    DIR/report.md          the same as Markdown

``search`` writes config.json to mask.pt, ``slim`` writes ticket.pt, ``train`` writes model.pt, train.json,
the report and, when ``search`` did not train it, dense.json. ``compare --out DIR`` writes compare.csv,
compare.json, compare.md, compare.png and log.txt.

Errors a user can make end with one line ``torch-rlprune: error: ...`` on stderr and exit status 2 when found
while checking the arguments (before any work), 1 when found during the work; ``--traceback`` shows the full
traceback instead.

Example:
    >>> main(["run", "--method", "magnitude"])
    2
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from . import __version__
from . import pipeline as pl
from .selection import BUDGETS

__all__ = ["main", "build_parser", "UsageError"]

PROG = "torch-rlprune"
#: Settings ``--quick`` changes (flags given explicitly still win): a run of seconds, for trying things out and tests.
QUICK = {"width": 0.25, "epochs": 1, "rewind_epoch": 1, "episodes": 16, "reward_batches": 1, "latency_batch": 2,
         "latency_time": 0.05}  # fmt: skip
_PIPELINE_FIELDS = [f.name for f in dataclasses.fields(pl.PipelineConfig)]


class UsageError(Exception):
    """A mistake in the command line or its arguments, found before any work: exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors become one line ``torch-rlprune: error: ...`` (via :class:`UsageError`)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.split()[1] if len(self.prog.split()) > 1 else None
        hint = f" (see '{PROG} {command} --help')" if command else f" (see '{PROG} --help')"
        raise UsageError(message + hint)


class _Formatter(argparse.HelpFormatter):
    """Wraps the description paragraph by paragraph, and adds the defaults to the flags' help."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=30, width=min(110, shutil.get_terminal_size((100, 20)).columns))

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return "\n\n".join(super(_Formatter, self)._fill_text(part, width, indent) for part in text.split("\n\n"))

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" not in text and action.default not in (None, False, argparse.SUPPRESS) and action.option_strings:
            text += " (default: %(default)s)"
        return text


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction strictly between 0 and 1 (0.7 prunes 70% of the filters)")
    return value


def _count(minimum: int):  # type: ignore[no-untyped-def]
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is below {minimum}")
        return value

    parse.__name__ = "int"
    return parse


def _min_keep(text: str) -> float | int:
    try:
        value: float | int = float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is neither a count (int) nor a fraction (float)") from None
    if value < 0 or (isinstance(value, float) and value > 1):
        raise argparse.ArgumentTypeError(f"{text} is neither a count >= 0 nor a fraction in [0, 1]")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


DATA_HELP = (
    "The validation split that rewards the search is carved out of the training data (--val-fraction); the test "
    "split is used only for the final report."
)


def _add_common(parser: argparse.ArgumentParser, *, out_required: bool, tensorboard: bool = True) -> None:
    group = parser.add_argument_group("output and machine")
    group.add_argument("--out", metavar="DIR", required=out_required,
                       help="the run folder" + ("" if out_required else " (default: runs/<command>-<date>-<time>)"))  # fmt: skip
    group.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    group.add_argument("--device", help="where to train and search: cpu, cuda, cuda:1, ... (default: the run's)"
                       if out_required else "where to train and search: cpu, cuda, cuda:1, ... (default: cpu)")  # fmt: skip
    group.add_argument("--workers", type=_count(1), metavar="N",
                       help="CPU threads PyTorch uses (the data is held in memory; no loader processes) "
                       "(default: PyTorch's choice)")  # fmt: skip
    if tensorboard:
        group.add_argument("--tensorboard", metavar="DIR",
                           help="log the search history and training curves for TensorBoard into DIR "
                           "(needs: pip install tensorboard)")  # fmt: skip
    group.add_argument("--quiet", action="store_true", help="no progress bars or log lines; only the final summary")
    group.add_argument("--traceback", action="store_true", help="show the full traceback of an error")


def _add_pipeline(parser: argparse.ArgumentParser, *, single: bool) -> None:
    d = pl.PipelineConfig()
    data = parser.add_argument_group("data and model")
    data.add_argument("--data", metavar="SPEC",
                      help=f"digits (scikit-learn's handwritten digits, offline), cifar10, or imagefolder:PATH (a folder "
                      f"with train/ and test/, one subfolder per class) (default: {d.data})")  # fmt: skip
    data.add_argument("--data-root", metavar="DIR", help="the folder of cifar10 (holding cifar-10-batches-py)")
    data.add_argument("--download", action="store_true", help="let cifar10 download the data into --data-root")
    data.add_argument("--image-size", type=_count(1), metavar="N", help="resize the images to N x N (default: as stored; 32 for digits)")
    data.add_argument("--val-fraction", type=_fraction, metavar="F",
                      help=f"fraction of the training data held out as the validation split (default: {d.val_fraction})")  # fmt: skip
    data.add_argument("--augment", action=argparse.BooleanOptionalAction,
                      help="random crops and flips while training (default: on, except for digits)")
    data.add_argument("--model", metavar="NAME",
                      help=f"basiccnn, a torchvision classification model such as resnet18, or timm:NAME for a timm "
                      f"model such as timm:resnet18 (needs: pip install timm), built untrained with the classes and "
                      f"channels of the data (default: {d.model})")  # fmt: skip
    data.add_argument("--width", type=_positive_float, metavar="W", help=f"filter multiplier of basiccnn (default: {d.width})")
    if single:
        data.add_argument("--weights", metavar="FILE",
                          help="start from a trained network: a state_dict file of the model (torch.save(model."
                          "state_dict(), FILE)); the mask is searched at these weights, no dense training, and "
                          "the pruned network is fine-tuned for --epochs")  # fmt: skip
    data.add_argument("--seed", type=_count(0), help=f"seeds the split, the init, the data order and the search (default: {d.seed})")

    prune = parser.add_argument_group("pruning")
    if single:
        prune.add_argument("--method", choices=pl.METHODS, metavar="METHOD",
                           help=f"a search: {', '.join(pl.SEARCH_METHODS)} (rl: REINFORCE, sa: simulated annealing, "
                           f"random: best of --episodes random masks, random_width: best of random layer widths), "
                           f"or a criterion: {', '.join(pl.CRITERION_METHODS)} (default: {d.method})")  # fmt: skip
        prune.add_argument("--amount", type=_fraction, metavar="F",
                           help=f"fraction of the filters to prune, in (0, 1) (default: {d.amount})")
    else:
        prune.add_argument("--methods", nargs="+", choices=pl.METHODS, metavar="METHOD",
                           help="methods to compare, as for run --method (default: rl sa l1 random_mask)")
        prune.add_argument("--amounts", nargs="+", type=_fraction, metavar="F",
                           help="fractions of the filters to prune (default: 0.5 0.7)")
        prune.add_argument("--seeds", nargs="+", type=_count(0), metavar="S",
                           help="seeds; each trains its own dense model (default: 0)")
    prune.add_argument("--budget", choices=("filters", *BUDGETS),
                       help=f"what --amount is a share of: filters, or the sliced network's MACs per example or "
                       f"parameters (--amount 0.7 then leaves at most 30%% of them) (default: {d.budget})")  # fmt: skip
    prune.add_argument("--episodes", type=_count(1), metavar="N",
                       help=f"masks a search method (rl, sa, random) evaluates (default: {d.episodes})")
    prune.add_argument("--reward", choices=pl.REWARDS,
                       help=f"search reward on the validation split: accuracy, loss (minus the loss), macs "
                       f"(AMC's -error*log(MACs)) (default: {d.reward})")  # fmt: skip
    prune.add_argument("--reward-batches", type=_count(1), metavar="N",
                       help=f"validation batches each reward reads (default: {d.reward_batches})")
    prune.add_argument("--reward-pool", type=_count(1), metavar="K",
                       help=f"sets of --reward-batches validation batches the search's steps score on in turn, so "
                       f"that a long search does not learn a few images; needs --finalists (default: "
                       f"{d.reward_pool})")  # fmt: skip
    prune.add_argument("--finalists", type=_count(0), metavar="K",
                       help=f"re-score the search's K best masks on the validation batches after those the rewards "
                       f"read, within --episodes, and keep the best there; 0: the mask of highest reward "
                       f"(default: {d.finalists})")  # fmt: skip
    prune.add_argument("--recalibrate", type=_count(0), metavar="N",
                       help=f"re-estimate every candidate's batch-norm statistics on N training batches before its "
                       f"reward (adaptive BN); 0: off (default: {d.recalibrate})")  # fmt: skip
    prune.add_argument("--policy", choices=pl.POLICIES,
                       help=f"the REINFORCE policy of --method rl: widths (a keep fraction per layer, the filters "
                       f"inside learnt from their bn_output ranking) or filters (a logit per filter) "
                       f"(default: {d.policy})")  # fmt: skip
    prune.add_argument("--min-keep", type=_min_keep, metavar="N|F",
                       help=f"filters every layer keeps at least: a count (1) or a fraction of the layer (0.05) "
                       f"(default: {d.min_keep})")  # fmt: skip
    prune.add_argument("--rewind-epoch", type=_count(0), metavar="K",
                       help=f"search the mask at the weights after K epochs of dense training; 0: at init "
                       f"(default: {d.rewind_epoch})")  # fmt: skip
    prune.add_argument("--rewind-to", choices=("init", "k"),
                       help=f"rewind the kept filters to init or to epoch K before training them (default: {d.rewind_to})")

    training = parser.add_argument_group("training (one schedule for the dense control and the pruned network)")
    training.add_argument("--epochs", type=_count(1), metavar="N", help=f"training epochs (default: {d.epochs})")
    training.add_argument("--batch-size", type=_count(1), metavar="N", help=f"batch size (default: {d.batch_size})")
    training.add_argument("--lr", type=_positive_float, help=f"initial learning rate, SGD with cosine decay (default: {d.lr})")
    training.add_argument("--latency-batch", type=_count(1), metavar="N",
                          help=f"batch size of the CPU latency measurement (default: {d.latency_batch})")
    training.add_argument("--latency-threads", type=_count(1), metavar="N",
                          help=f"CPU threads of the latency measurement (default: {d.latency_threads})")
    training.add_argument("--quick", action="store_true",
                          help="a run of seconds to try things out: basiccnn at width 0.25, 1 epoch, 16 episodes "
                          "(flags given explicitly still win)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The ``torch-rlprune`` argument parser."""
    parser = _Parser(prog=PROG, formatter_class=_Formatter,
                     description="Find structured winning tickets: which conv filters to keep, searched early in "
                     "training by REINFORCE, simulated annealing or a criterion; then rewind, slim and train.\n\n"
                     + DATA_HELP, epilog="Run 'torch-rlprune <command> --help' for the flags of a command.")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="<command>", parser_class=_Parser)
    commands.required = True

    run = commands.add_parser("run", formatter_class=_Formatter, help="the whole pipeline: search, rewind, slim, train, report",
                              description="Train the dense model (snapshot at epoch K), search the mask at epoch K, rewind "
                              "the kept filters, slice the pruned ones out, train the small network with the same "
                              "schedule, and report dense vs pruned accuracy, params, MACs, CPU latency and search time. "
                              "With no flags: BasicCNN, RL at 0.7 of the filters, offline digits data, a few minutes on "
                              "2 CPU cores.\n\n" + DATA_HELP)  # fmt: skip
    _add_pipeline(run, single=True)
    _add_common(run, out_required=False)

    search = commands.add_parser("search", formatter_class=_Formatter, help="step 1: train to epoch K and search the mask",
                                 description="Step 1 of run: train the dense model for K epochs (of the --epochs "
                                 "schedule), search the mask there, and write config.json, snapshots/, mask.pt, "
                                 "search.json and the search checkpoint and history into the run folder.\n\n" + DATA_HELP)  # fmt: skip
    _add_pipeline(search, single=True)
    search.add_argument("--resume", action="store_true",
                        help="continue the search checkpointed in --out (settings from its config.json; --episodes "
                        "may raise the total)")  # fmt: skip
    _add_common(search, out_required=False)

    slim = commands.add_parser("slim", formatter_class=_Formatter, help="step 2: rewind the kept filters and slice the model",
                               description="Step 2 of run: read config.json, mask.pt and snapshots/ from the run "
                               "folder, rewind the kept filters, slice the pruned ones out, and write ticket.pt.")  # fmt: skip
    slim.add_argument("--rewind-to", choices=("init", "k"), help="override the run's rewind point")
    _add_common(slim, out_required=True, tensorboard=False)

    train = commands.add_parser("train", formatter_class=_Formatter, help="step 3: train the slimmed network and report",
                                description="Step 3 of run: train the network of ticket.pt with the run's schedule (and "
                                "the dense control, if search did not), evaluate both on the test split, and write "
                                "model.pt, report.json and report.md.\n\n" + DATA_HELP)  # fmt: skip
    _add_common(train, out_required=True)

    compare = commands.add_parser("compare", formatter_class=_Formatter, help="several methods x amounts x seeds, one schedule",
                                  description="Prune with every method at every amount (for every seed) through the same "
                                  "pipeline and training schedule; write compare.md, compare.csv, compare.json and, with "
                                  "matplotlib, compare.png (accuracy vs sparsity and vs MACs).\n\n" + DATA_HELP)  # fmt: skip
    _add_pipeline(compare, single=False)
    _add_common(compare, out_required=False, tensorboard=False)
    return parser


# --------------------------------------------------------------------------------------------------------------
# Checks done before any work
# --------------------------------------------------------------------------------------------------------------


def _config(args: argparse.Namespace, method: str | None = None) -> pl.PipelineConfig:
    """The settings the flags give; ``method`` for a command that takes several (compare checks its first)."""
    values: dict[str, Any] = {} if method is None else {"method": method}
    if args.quick:
        values.update(QUICK)
        if (args.model or "basiccnn") != "basiccnn":
            values.pop("width")
    for name in _PIPELINE_FIELDS:
        value = getattr(args, name, None)
        if value is not None and not (value is False and name == "download"):
            values[name] = value
    config = pl.PipelineConfig(**values)
    if getattr(args, "rewind_epoch", None) is None and config.rewind_epoch > config.epochs:
        config.rewind_epoch = config.epochs  # the default k, cut to a shorter schedule
    if getattr(args, "rewind_epoch", None) is None and config.weights is not None:
        config.rewind_epoch = 0  # a trained network is searched as it is
    return _validated(config)


def _validated(config: pl.PipelineConfig, where: str = "") -> pl.PipelineConfig:
    """``config.validate()``, with a bad setting or a model whose package is missing as a :class:`UsageError`."""
    try:
        return config.validate()
    except (ValueError, ImportError) as error:
        raise UsageError(f"{error}{where}") from None


def _default_out(command: str) -> Path:
    return Path("runs") / f"{command}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def _check_writable(path: Path, what: str = "--out") -> None:
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a folder; choose a folder.")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise UsageError(f"cannot write to {what} {path}: {error.strerror or error}.") from None


# Snapshots at init and at the rewind epoch, the ticket and the trained model: each at most the dense model's size.
_MODEL_COPIES = 4
_SPACE_MARGIN = 16 * 2**20  # logs, reports, the mask and the search checkpoint


def _check_space(path: Path, workspace: Any) -> None:
    """Refuse a run whose files would not fit on the disk of ``path``, before it trains or searches."""
    model_bytes = sum(p.numel() * p.element_size() for p in workspace.build_model().parameters())
    needed = _MODEL_COPIES * model_bytes + _SPACE_MARGIN
    free = shutil.disk_usage(path).free
    if free < needed:
        raise UsageError(
            f"only {free / 2**20:.0f} MiB free at {path}; the run writes about {needed / 2**20:.0f} MiB "
            f"({_MODEL_COPIES} copies of the {model_bytes / 2**20:.1f} MiB model, logs and reports). Free some "
            "space or choose another --out."
        )


def _new_run_folder(path: Path, overwrite: bool, stale: Sequence[str]) -> None:
    """A folder for a new run: refuse to overwrite an earlier run without ``--overwrite``; check it is writable."""
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise UsageError(f"{path} is not empty; pass --overwrite to replace the run there, or choose another --out.")
    _check_writable(path)
    if overwrite:
        _remove_outputs(path, stale)


def _remove_outputs(path: Path, names: Sequence[str]) -> None:
    for name in names:
        target = path / name
        if name == "snapshots" and target.is_dir():
            for snapshot in target.iterdir():
                if re.fullmatch(r"(init|epoch\d+)\.pt", snapshot.name):
                    snapshot.unlink()
        elif target.is_file():
            target.unlink()


def _existing_run(path: Path, needs: Sequence[tuple[str, str]]) -> None:
    if not (path / "config.json").is_file():
        raise UsageError(f"{path} holds no run (no config.json); start one with '{PROG} search --out {path}'.")
    for name, step in needs:
        if not (path / name).exists():
            raise UsageError(f"{path / name} not found; run '{PROG} {step} --out {path}' first.")
    _check_writable(path)


@contextlib.contextmanager
def _writer(directory: str | None) -> Iterator[Any]:
    """A TensorBoard writer for ``--tensorboard DIR`` (``None`` without it), closed however the step ends."""
    if directory is None:
        yield None
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UsageError("--tensorboard needs TensorBoard: pip install tensorboard") from None
    _check_writable(Path(directory), "--tensorboard")
    writer = SummaryWriter(log_dir=directory)
    try:
        yield writer
    finally:
        writer.close()


# --------------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------------


class RunLog:
    """Prints progress lines (unless ``quiet``) and appends them, with times, to a log file."""

    def __init__(self, path: Path | None, quiet: bool, fresh: bool = False) -> None:
        self.path, self.quiet = path, quiet
        if path is not None and fresh:
            path.write_text("")

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(f"{datetime.datetime.now():%Y-%m-%d %H:%M:%S}  {message}\n")


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:], widths[1:]))]).rstrip() for r in rows
    )


def _comparison_summary(rows: Sequence[dict[str, Any]]) -> str:
    table = [("method", "amount", "seeds", "test accuracy", "params", "MACs", "latency (ms)", "search (s)")]
    for r in pl.comparison_table(rows):
        std = f" ± {100 * r['accuracy_std']:.1f}" if r["seeds"] > 1 else ""
        table.append((r["method"], f"{r['amount']:.2f}", str(r["seeds"]), f"{100 * r['accuracy']:.1f}%{std}",
                      f"{r['params']:,.0f}", f"{r['macs']:,.0f}", f"{r['latency_ms']:.2f}", f"{r['search_seconds']:.1f}"))  # fmt: skip
    return _table(table)


# --------------------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------------------


def _all_outputs() -> list[str]:
    return [name for names in pl.OUTPUTS.values() for name in names]


def _cmd_run(args: argparse.Namespace) -> int:
    config = _config(args)
    out = Path(args.out) if args.out else _default_out("run")
    _new_run_folder(out, args.overwrite, _all_outputs())
    with _writer(args.tensorboard) as writer:
        workspace = pl.Workspace(config)  # loads the data and checks the model on it before the run folder fills
        _check_space(out, workspace)
        log = RunLog(out / "log.txt", args.quiet, fresh=True)
        log(f"{PROG} run -> {out}")
        report = pl.run_pipeline(config, out, writer=writer, progress=not args.quiet, log=log, workspace=workspace)
    print(report.summary())
    print(f"run folder: {out} (report.md, model.pt: torch_rlprune.load(path, fresh_model, example_inputs))")
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else _default_out("search")
    if args.resume:
        if not args.out:
            raise UsageError("--resume needs --out, the run folder of the search to continue.")
        _existing_run(out, [("snapshots", "search")])
        config = pl.read_config(out)
        if args.episodes is not None:
            config.episodes = args.episodes
        if args.device is not None:
            config.device = args.device
        _validated(config)
        if not config.searches:
            raise UsageError(f"the run in {out} used the criterion {config.method}, which has no search to resume.")
    else:
        config = _config(args)
        _new_run_folder(out, args.overwrite, _all_outputs())
    with _writer(args.tensorboard) as writer:
        workspace = pl.Workspace(config)
        _check_space(out, workspace)
        log = RunLog(out / "log.txt", args.quiet, fresh=not args.resume)
        log(f"{PROG} search -> {out}")
        summary = pl.search_step(config, out, workspace=workspace, resume=args.resume, writer=writer,
                                 progress=not args.quiet, log=log)  # fmt: skip
    rows = [("layer", "kept", "dense")] + [(n, str(k), str(t)) for n, (k, t) in summary["filters_per_layer"].items()]
    kept = sum(k for k, _ in summary["filters_per_layer"].values())
    total = sum(t for _, t in summary["filters_per_layer"].values())
    print(_table(rows))
    best = f", best reward {summary['best_reward']:.4g}" if summary["evaluations"] else ""
    print(f"{config.method}: {kept}/{total} filters kept, {summary['seconds']:.1f} s{best}; mask in {out / 'mask.pt'}")
    print(f"next: {PROG} slim --out {out}")
    return 0


def _step_config(out: Path, args: argparse.Namespace) -> pl.Workspace:
    config = pl.read_config(out)
    if getattr(args, "rewind_to", None):
        config.rewind_to = args.rewind_to
    if args.device is not None:
        config.device = args.device
    return _validated(config, f" (settings from {out / 'config.json'})")


def _cmd_slim(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _existing_run(out, [("mask.pt", "search"), ("snapshots", "search")])
    if (out / "ticket.pt").exists() and not args.overwrite:
        raise UsageError(f"{out / 'ticket.pt'} exists; pass --overwrite to replace it (and the later steps' outputs).")
    config = _step_config(out, args)
    _remove_outputs(out, ("ticket.pt", "model.pt", "train.json", "report.json", "report.md"))
    log = RunLog(out / "log.txt", args.quiet)
    log(f"{PROG} slim -> {out}")
    small = pl.slim_step(out, rewind_to=config.rewind_to, workspace=pl.Workspace(config), log=log)
    params = sum(p.numel() for p in small.parameters())
    filters = sum(m.out_channels for m in small.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
    print(f"sliced network at {config.rewind_name}: {filters} filters, {params:,} parameters; wrote {out / 'ticket.pt'}")
    print(f"next: {PROG} train --out {out}")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    _existing_run(out, [("ticket.pt", "slim"), ("mask.pt", "search"), ("search.json", "search")])
    if ((out / "model.pt").exists() or (out / "report.json").exists()) and not args.overwrite:
        raise UsageError(f"{out} already holds a trained model.pt or a report; pass --overwrite to replace them.")
    config = _step_config(out, args)
    with _writer(args.tensorboard) as writer:
        log = RunLog(out / "log.txt", args.quiet)
        log(f"{PROG} train -> {out}")
        report = pl.train_step(out, workspace=pl.Workspace(config), writer=writer, progress=not args.quiet, log=log)
    print(report.summary())
    print(f"run folder: {out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    methods = args.methods or ["rl", "sa", "l1", "random_mask"]
    config = _config(args, methods[0])
    amounts = args.amounts or [0.5, 0.7]
    seeds = args.seeds or [0]
    for method in methods:  # every pairing, before any training (a budget some methods refuse, finalists, ...)
        for amount in amounts:
            _validated(dataclasses.replace(config, method=method, amount=amount))
    out = Path(args.out) if args.out else _default_out("compare")
    _new_run_folder(out, args.overwrite, ("compare.csv", "compare.json", "compare.md", "compare.png"))
    workspace = pl.Workspace(dataclasses.replace(config, seed=seeds[0]))
    log = RunLog(out / "log.txt", args.quiet, fresh=True)
    log(f"{PROG} compare -> {out}: {', '.join(methods)} at {', '.join(map(str, amounts))}, "
        f"seed(s) {', '.join(map(str, seeds))}")  # fmt: skip
    started = time.perf_counter()
    rows = pl.compare(config, methods, amounts, seeds, out, progress=not args.quiet, log=log, workspace=workspace)
    print(_comparison_summary(rows))
    plot = " and compare.png" if (out / "compare.png").is_file() else ""
    print(f"wrote {out / 'compare.md'}, compare.csv{plot} in {time.perf_counter() - started:.0f} s")
    return 0


COMMANDS = {"run": _cmd_run, "search": _cmd_search, "slim": _cmd_slim, "train": _cmd_train, "compare": _cmd_compare}


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) not in text:
        text = f"{error.filename}: {error.strerror or text}"
    return text or type(error).__name__


def _unexpected(error: BaseException) -> str:
    """A note for an error raised outside this package, which no check of ours foresaw.

    Judged by the innermost Python frame, so an error that a torch operator implemented in C++ raises straight
    from the package's code passes for the package's own. Errors about files (missing, unreadable, not JSON) are
    the user's to fix and get no note.
    """
    frame = error.__traceback__
    while frame is not None and frame.tb_next is not None:
        frame = frame.tb_next
    where = Path(frame.tb_frame.f_code.co_filename) if frame is not None else None
    if where is None or isinstance(error, (OSError, json.JSONDecodeError)) or Path(__file__).parent in where.parents:
        return ""
    return (
        f" ({type(error).__name__} in {where.name}, which this package did not foresee: "
        "rerun with --traceback and report it)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    r"""Run the ``torch-rlprune`` command line with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    0 on success; 2 for a mistake found while checking the arguments, before any work (an unknown model or
    method, ``--model timm:NAME`` without timm, an amount outside (0, 1), a data folder that does not exist, a run
    folder that would be overwritten without ``--overwrite``, an output folder that is not writable or whose disk
    lacks the room for the run); 1 for an error the package reports during the work; 130 when interrupted. Each
    error is one line ``torch-rlprune: error: ...`` on stderr.

    Example:
        >>> main(["run", "--amount", "1.5"])
        2
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    threads = torch.get_num_threads()
    traceback = "--traceback" in argv
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit:  # --help and --version
            return int(exit.code or 0)
        if args.workers:
            torch.set_num_threads(args.workers)
        return COMMANDS[args.command](args)
    except UsageError as error:
        if traceback:
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, FileNotFoundError) as error:
        if traceback:
            raise
        print(f"{PROG}: error: {_one_line(error)}{_unexpected(error)}", file=sys.stderr)
        return 1
    except ImportError as error:
        if traceback or "pip install" not in str(error):
            raise
        print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
