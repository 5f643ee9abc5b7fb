"""ResNet-18 from torchvision, pruned by filters with RL or L1, slimmed, and measured.

torchvision's ``resnet18(num_classes=10)`` on scikit-learn's handwritten digits at 32 x 32 (offline; ResNet-18's
adaptive pooling takes small inputs). Its residual additions couple the convolutions that feed them: their
filters are pruned together, as one channel group, and :func:`torch_rlprune.slim` slices them out together. The
script trains the dense network briefly, prunes ``--amount`` of the filters with ``--method rl`` (REINFORCE,
rewarded by validation accuracy) or ``--method l1`` (global L1 norm, no data), slices the model, fine-tunes it,
and prints parameters, MACs, CPU latency and test accuracy of both::

    python examples/resnet18.py --method l1 --amount 0.5
    python examples/resnet18.py --method rl --amount 0.5 --episodes 100
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torchvision

import torch_rlprune as rlp
from torch_rlprune.data import batches, load_data
from torch_rlprune.pipeline import cpu_latency
from torch_rlprune.training import evaluate, train


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("rl", "l1"), default="l1", help="how to choose the filters (default l1)")
    parser.add_argument("--amount", type=float, default=0.5, help="fraction of the filters to prune (default 0.5)")
    parser.add_argument("--episodes", type=int, default=100, help="masks RL evaluates (default 100)")
    parser.add_argument("--epochs", type=int, default=1, help="dense training epochs before pruning (default 1)")
    parser.add_argument("--finetune-epochs", type=int, default=1, help="epochs to train the slimmed model (default 1)")
    parser.add_argument("--latency-batch", type=int, default=8, help="batch size of the latency measurement")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_data("digits", seed=args.seed)
    train_loader = batches(data.train, 128, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    example_inputs = data.val.batch(torch.arange(1))[0]
    torch.manual_seed(args.seed)
    model = torchvision.models.resnet18(num_classes=data.num_classes)
    if args.epochs:
        train(model, train_loader, epochs=args.epochs, seed=args.seed)

    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    if args.method == "rl":
        reward = rlp.rewards.Accuracy(batches(data.val, 128), batches=1)
        result = rlp.global_structured(convs, rlp.RLStructuredPruning, amount=args.amount, model=model,
                                       example_inputs=example_inputs, reward=reward, episodes=args.episodes,
                                       seed=args.seed, progress=False)  # fmt: skip
        print(f"RL: {result.evaluations} masks in {result.wall_time:.1f} s, best validation accuracy {result.best_reward:.1%}")
    else:
        rlp.global_structured(convs, "l1", amount=args.amount, model=model, example_inputs=example_inputs)
    masked = rlp.metrics.model_stats(model, example_inputs)  # counts masked filters as gone
    print(masked.table())

    small = rlp.slim(model, example_inputs)  # raises if the sliced model does not compute what the masked one does
    pruned = rlp.metrics.model_stats(small, example_inputs)
    dense_latency = cpu_latency(model, example_inputs, args.latency_batch, min_time=0.2)  # masked = dense cost
    small_latency = cpu_latency(small, example_inputs, args.latency_batch, min_time=0.2)
    before = evaluate(small, batches(data.test, 256))
    if args.finetune_epochs:
        train(small, train_loader, epochs=args.finetune_epochs, seed=args.seed)
    after = evaluate(small, batches(data.test, 256))

    print(f"\nparams {pruned.params:,}/{masked.params:,} ({pruned.params / masked.params:.1%}), "
          f"MACs {pruned.macs:,}/{masked.macs:,} ({pruned.macs / masked.macs:.1%}) per example, "
          f"CPU latency (batch {args.latency_batch}) {small_latency:.2f}/{dense_latency:.2f} ms")  # fmt: skip
    print(f"test accuracy {before:.1%} right after slicing, {after:.1%} after {args.finetune_epochs} epoch(s) of fine-tuning")
    return {"masked": masked, "pruned": pruned, "accuracy_before": before, "accuracy": after,
            "latency_ms": small_latency, "dense_latency_ms": dense_latency, "model": small}  # fmt: skip


if __name__ == "__main__":
    main()
