"""The trained starting point of the quality benchmarks: a dense BasicCNN on the whole CIFAR-10 training split.

Run by hand, or let ``quality.py`` and ``reward_fidelity.py`` call it (they train it when it is missing)::

    python benchmarks/dense.py                      # about 35 minutes on 2 CPU cores (30 epochs of ~65 s)
    python benchmarks/dense.py --dense-epochs 1 --dense-dir /tmp/dense   # smoke run

The data are the shared CIFAR-10 copy, split 45,000 train / 5,000 validation by a seeded permutation (the
validation images are the searches' rewards, never the test split). The network is trained once with one fixed
schedule (SGD, cosine learning rate, random crop and flip), checkpointed after every epoch
(``torch_rlprune.training.train(checkpoint=...)``), so an interrupted run resumes where it stopped. The result is
``<out>/dense.pt`` (the weights, the settings, the history, the test accuracy), the same without the weights in
``<out>.json`` (``results/dense.json``, kept in git), and the weights at every epoch in ``<out>/epoch<k>.pt`` (the
rewind points of protocol P2); a finished file is reused as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from torch_rlprune.data import Splits, batches, load_data
from torch_rlprune.models import BasicCNN
from torch_rlprune._files import atomic_save, atomic_write
from torch_rlprune.training import evaluate, train

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "dense"
# Settings that change the network: a dense.pt made with others is not reused.
SETTINGS = ("data", "epochs", "lr", "dropout", "batch_size", "seed", "val_fraction")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options that pick the dense network; the scripts that start from it take the same ones."""
    p.add_argument("--data", default=f"imagefolder:{DEFAULT_DATA}", help="dataset spec for load_data "
                   "(default: the shared CIFAR-10 JPEG copy)")  # fmt: skip
    p.add_argument("--dense-dir", default=str(DEFAULT_OUT), help=f"where the dense network lives (default: {DEFAULT_OUT})")
    p.add_argument("--dense-epochs", dest="epochs", type=int, default=40, help="dense training epochs (default: 40)")
    p.add_argument("--dense-lr", dest="lr", type=float, default=0.02, help="dense SGD learning rate (default: 0.02)")
    # BasicCNN underfits CIFAR-10 with dropout: 0.3 left it at 57% test accuracy after 8 of 30 epochs, and 0.1
    # ended 30 epochs at 77.3% test with 76% training accuracy (results/dense_p1_77.json). Augmentation and weight
    # decay regularise it enough.
    p.add_argument("--dense-dropout", dest="dropout", type=float, default=0.0, help="BasicCNN dropout (default: 0)")
    p.add_argument("--batch-size", type=int, default=128, help="training batch size (default: 128)")
    p.add_argument("--data-seed", dest="seed", type=int, default=0, help="seed of the split and the dense run (0)")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of the training split held out (0.1)")


def splits(args: argparse.Namespace) -> Splits:
    """The 45k / 5k / 10k splits of the benchmark."""
    return load_data(args.data, val_fraction=args.val_fraction, seed=args.seed)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    return {key: getattr(args, key) for key in SETTINGS}


def dense_network(args: argparse.Namespace, data: Splits, log: Any = print) -> tuple[BasicCNN, dict[str, Any]]:
    """Train (or resume, or reuse) the dense network; returns it in eval mode and its record.

    The record holds ``settings``, ``history`` (one entry per epoch), ``test_accuracy`` and ``val_accuracy``.
    """
    out = Path(args.dense_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / "dense.pt"
    model = BasicCNN(num_classes=data.num_classes, in_channels=data.in_channels, dropout=args.dropout)
    if final.exists():
        record = torch.load(final, weights_only=True)
        if record["settings"] != settings(args):
            raise SystemExit(f"{final} was trained with {record['settings']}, not {settings(args)}; "
                             "pass another --dense-dir")  # fmt: skip
        model.load_state_dict(record["state_dict"])
        _summary(out, record)
        return model.eval(), record

    torch.manual_seed(args.seed)
    model = BasicCNN(num_classes=data.num_classes, in_channels=data.in_channels, dropout=args.dropout)
    atomic_save(model.state_dict(), out / "epoch0.pt")
    loader = batches(data.train, args.batch_size, shuffle=True, augment=True,
                     generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
    started = time.perf_counter()

    def each(record: dict[str, Any]) -> None:
        atomic_save(model.state_dict(), out / f"epoch{record['epoch']}.pt")
        log(f"dense epoch {record['epoch']}/{args.epochs}: loss {record['loss']:.3f}, train acc "
            f"{record['accuracy']:.3f}, {record['seconds']:.0f} s")  # fmt: skip

    history = train(model, loader, args.epochs, lr=args.lr, seed=args.seed, callback=each,
                    checkpoint=out / "training.ckpt")  # fmt: skip
    test_loader = batches(data.test, 1000)
    record = {"settings": settings(args), "history": history, "state_dict": model.state_dict(),
              "test_accuracy": evaluate(model, test_loader), "val_accuracy": evaluate(model, batches(data.val, 1000)),
              "seconds": time.perf_counter() - started, "torch_threads": torch.get_num_threads()}  # fmt: skip
    atomic_save(record, final)
    _summary(out, record)
    (out / "training.ckpt").unlink(missing_ok=True)
    log(f"dense: test accuracy {record['test_accuracy']:.4f}, validation {record['val_accuracy']:.4f}")
    return model.eval(), record


def _summary(out: Path, record: dict[str, Any]) -> None:
    """``<dense-dir>.json`` beside the weights' folder: the record without the weights, small enough for git."""
    summary = {k: v for k, v in record.items() if k != "state_dict"}
    atomic_write(out.with_suffix(".json"), lambda f: f.write(json.dumps(summary, indent=1).encode()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(p)
    args = p.parse_args(argv)
    _, record = dense_network(args, splits(args), log=lambda line: print(line, flush=True))
    print(f"test accuracy {record['test_accuracy']:.4f} after {len(record['history'])} epochs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
