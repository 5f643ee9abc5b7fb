"""A structured lottery ticket of BasicCNN, against the random re-initialisation control.

The thesis pipeline: build BasicCNN and remember its initial weights, train it to epoch ``k``, search which
filters to keep with REINFORCE (rewarded by the masked network's accuracy on validation batches carved out of the
training set), rewind the kept filters to their initial values, slice the pruned ones out, and train the small
network. The control trains the same small architecture from a fresh random initialisation (Liu et al. 2019);
a ticket is worth something where it beats the control. Both arms see the same batches in the same order.

With CIFAR-10 at ``../shared/data/cifar10-jpeg`` (ImageFolder layout; ``--data-root``) it uses that; otherwise,
or with ``--synthetic``, a small random dataset with one learnable pattern per class, so it runs anywhere::

    python examples/lottery_basiccnn.py --k 2 --epochs 10 --episodes 200 --amount 0.7
    python examples/lottery_basiccnn.py --synthetic --width 0.25 --train-size 512 --epochs 2 --episodes 16
"""

from __future__ import annotations

import argparse
import copy
from itertools import islice
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import torch_rlprune as rlp

DEFAULT_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg"
CIFAR_MEAN = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
CIFAR_STD = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)


def read_folder(folder: Path, limit: int, generator: torch.Generator) -> TensorDataset:
    """Decode an ImageFolder split into uint8 tensors once (a random ``limit`` of it when ``limit`` > 0)."""
    from torchvision.datasets import ImageFolder
    from torchvision.io import ImageReadMode, read_image

    samples = ImageFolder(str(folder)).samples
    order = torch.randperm(len(samples), generator=generator)
    chosen = order[:limit] if limit > 0 else order
    images = torch.stack([read_image(samples[i][0], ImageReadMode.RGB) for i in chosen.tolist()])
    return TensorDataset(images, torch.tensor([samples[i][1] for i in chosen.tolist()]))


def synthetic(n: int, generator: torch.Generator, patterns: torch.Tensor) -> TensorDataset:
    labels = torch.randint(0, 10, (n,), generator=generator)
    return TensorDataset(torch.randn(n, 3, 32, 32, generator=generator) + patterns[labels], labels)


def prepare(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = x.to(device)
    if x.dtype == torch.uint8:  # real images are kept as bytes: a quarter of the memory of floats
        x = (x.float() / 255 - CIFAR_MEAN.to(device)) / CIFAR_STD.to(device)
    return x


def train(model: nn.Module, data: TensorDataset, epochs: int, args: argparse.Namespace, seed: int,
          ticket: rlp.LotteryTicket | None = None) -> None:  # fmt: skip
    """Plain SGD with momentum and a cosine schedule; the same seed gives the same batches and dropout."""
    torch.manual_seed(seed)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, epochs * len(loader)))
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(prepare(x, args.device)), y.to(args.device)).backward()
            optimizer.step()
            schedule.step()
        if ticket is not None:
            ticket.step(epoch)
    model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: TensorDataset, args: argparse.Namespace) -> float:
    model.eval()
    correct = 0
    for x, y in DataLoader(data, batch_size=256):
        correct += int((model(prepare(x, args.device)).argmax(1).cpu() == y).sum())
    return correct / len(data)


def load(args: argparse.Namespace) -> tuple[TensorDataset, TensorDataset, TensorDataset, str]:
    generator = torch.Generator().manual_seed(args.seed)
    root = Path(args.data_root)
    if not args.synthetic and (root / "train").is_dir() and (root / "test").is_dir():
        full = read_folder(root / "train", args.train_size + args.val_size if args.train_size else 0, generator)
        test = read_folder(root / "test", args.test_size, generator)
        source = f"CIFAR-10 from {root.resolve()}"
    else:
        train_size = args.train_size or 2048
        patterns = torch.randn(10, 3, 32, 32, generator=generator)
        full = synthetic(train_size + args.val_size, generator, patterns)
        test = synthetic(args.test_size or 512, generator, patterns)
        source = "synthetic data (one random pattern per class plus noise)"
    images, labels = full.tensors
    # The reward's validation images come out of the training set: choosing masks by test accuracy would leave
    # no honest test accuracy.
    train_set = TensorDataset(images[args.val_size:], labels[args.val_size:])
    val_set = TensorDataset(images[: args.val_size], labels[: args.val_size])
    return train_set, val_set, test, source


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(DEFAULT_ROOT), help="CIFAR-10 in ImageFolder layout")
    parser.add_argument("--synthetic", action="store_true", help="use a random dataset even if CIFAR-10 is there")
    parser.add_argument("--train-size", type=int, default=0, help="training images to use (0: all)")
    parser.add_argument("--val-size", type=int, default=5000, help="training images held out for the reward")
    parser.add_argument("--test-size", type=int, default=0, help="test images to use (0: all)")
    parser.add_argument("--width", type=float, default=1.0, help="BasicCNN width multiplier (1.0: 960 filters)")
    parser.add_argument("--k", type=int, default=2, help="epochs to train before the search (default 2)")
    parser.add_argument("--rewind-to", choices=["init", "k"], default="init", help="where the kept filters go back to")
    parser.add_argument("--amount", type=float, default=0.7, help="fraction of filters to prune (default 0.7)")
    parser.add_argument("--episodes", type=int, default=200, help="REINFORCE episodes (rewards evaluated)")
    parser.add_argument("--val-batches", type=int, default=2, help="validation batches per reward")
    parser.add_argument("--epochs", type=int, default=10, help="epochs to train each arm after slicing")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    for flag in ("k", "episodes", "epochs", "val_size", "batch_size", "val_batches"):
        if getattr(args, flag) < (0 if flag == "k" else 1):
            parser.error(f"--{flag.replace('_', '-')} is too small: {getattr(args, flag)}")
    args.device = torch.device(args.device)

    train_set, val_set, test_set, source = load(args)
    print(f"data: {source}; {len(train_set)} train, {len(val_set)} validation, {len(test_set)} test images")

    torch.manual_seed(args.seed)
    model = rlp.models.BasicCNN(width=args.width).to(args.device)
    example = torch.zeros(1, 3, 32, 32, device=args.device)
    ticket = rlp.LotteryTicket(model, epochs=(args.k,))
    ticket.step(0)
    train(model, train_set, args.k, args, seed=args.seed, ticket=ticket)
    dense_accuracy = accuracy(model, test_set, args)

    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    val_batches = [(prepare(x, args.device), y.to(args.device))
                   for x, y in islice(DataLoader(val_set, batch_size=args.batch_size), args.val_batches)]  # fmt: skip
    reward = rlp.rewards.Accuracy(val_batches)
    search = rlp.global_structured(convs, rlp.RLStructuredPruning, amount=args.amount, model=model,
                                   example_inputs=example, reward=reward, episodes=args.episodes,
                                   batch=min(8, args.episodes), seed=args.seed, progress=False)  # fmt: skip

    ticket.rewind(model, "init" if args.rewind_to == "init" else f"epoch{args.k}")
    small = rlp.slim(model, example)
    control = rlp.reinitialize(copy.deepcopy(small), seed=args.seed + 1)

    arms = {}
    for arm, net in (("ticket", small), ("random_reinit", control)):
        train(net, train_set, args.epochs, args, seed=args.seed + 2)
        stats = rlp.metrics.model_stats(net, example)
        arms[arm] = {"accuracy": accuracy(net, test_set, args), "filters_kept": stats.filters_kept,
                     "params": stats.params}  # fmt: skip
    dense = rlp.metrics.model_stats(rlp.models.BasicCNN(width=args.width), example.cpu())

    print(f"\nBasicCNN width {args.width}: dense test accuracy after k={args.k} epochs {dense_accuracy:.3f}; "
          f"RL search over {search.evaluations} masks, best validation accuracy {search.best_reward:.3f}")  # fmt: skip
    print(f"pruned {args.amount:.0%} of the filters, then trained {args.epochs} epochs from:\n")
    rows = [("arm", "filters", "params", "test acc")]
    labels = {"ticket": f"ticket (rewound to {args.rewind_to})", "random_reinit": "random re-init control"}
    for arm, r in arms.items():
        rows.append((labels[arm], f"{r['filters_kept']}/{dense.filters}", f"{r['params']:,}", f"{r['accuracy']:.3f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]))
    return {
        "model": small,
        "filters": dense.filters,
        "filters_kept": arms["ticket"]["filters_kept"],
        "dense_accuracy": dense_accuracy,
        "search_reward": search.best_reward,
        **arms,
    }


if __name__ == "__main__":
    main()
