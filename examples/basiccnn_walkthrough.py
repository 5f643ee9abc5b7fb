"""BasicCNN walkthrough: a structured winning ticket found by REINFORCE, rewound, slimmed and trained.

The picture of the design notes as a plain script, on scikit-learn's handwritten digits (no download): train the
dense BasicCNN for ``k`` epochs, let a REINFORCE controller choose which 30% of its 960 filters to keep (rewarded
by the accuracy of the pruned network on validation batches carved out of the training data), rewind the kept
filters to their initial values, slice the pruned ones out, and train the small network. The test split is read
once, at the end. ``torch-rlprune run`` does the same with reports and a run folder (see
:mod:`torch_rlprune.pipeline`)::

    python examples/basiccnn_walkthrough.py              # about a minute on 2 CPU cores
    python examples/basiccnn_walkthrough.py --tiny       # seconds: a narrow network, 1 epoch, 8 episodes
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

import torch_rlprune as rlp
from torch_rlprune.data import batches, load_data
from torch_rlprune.training import evaluate, train


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amount", type=float, default=0.7, help="fraction of the filters to prune (default 0.7)")
    parser.add_argument("--rewind-epoch", type=int, default=2, help="search the mask after k epochs (default 2)")
    parser.add_argument("--episodes", type=int, default=200, help="masks the controller evaluates (default 200)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs to train the small network (default 6)")
    parser.add_argument("--width", type=float, default=1.0, help="BasicCNN filter multiplier (default 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="width 0.125, k=1, 8 episodes, 1 epoch: for tests")
    args = parser.parse_args(argv)
    if args.tiny:
        args.width, args.rewind_epoch, args.episodes, args.epochs = 0.125, 1, 8, 1

    # 1. Data, as uint8 tensors in memory: train, a validation split carved out of it, and test.
    data = load_data("digits", seed=args.seed)  # 8x8 digits, upsampled to 3 x 32 x 32
    train_loader = batches(data.train, 128, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    val_loader = batches(data.val, 128)  # what the reward reads
    test_loader = batches(data.test, 256)  # the final report only
    example_inputs = data.val.batch(torch.arange(1))[0]

    # 2. The model, and a lottery ticket that remembers its weights at init.
    torch.manual_seed(args.seed)
    model = rlp.models.BasicCNN(num_classes=data.num_classes, width=args.width)
    ticket = rlp.LotteryTicket(model)
    dense = rlp.metrics.model_stats(model, example_inputs)

    # 3. Train k epochs and take a snapshot there: the mask is searched on these weights.
    k = args.rewind_epoch
    train(model, train_loader, epochs=k, seed=args.seed)
    ticket.snapshot(epoch=k)

    # 4. REINFORCE over keep-sets, rewarded by the validation accuracy of each pruned candidate.
    reward = rlp.rewards.Accuracy(val_loader, batches=2)
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    result = rlp.global_structured(convs, pruning_method=rlp.RLStructuredPruning, amount=args.amount,
                                   model=model, example_inputs=example_inputs,
                                   reward=reward, episodes=args.episodes, seed=args.seed, progress=False)  # fmt: skip
    assert prune.is_pruned(model)  # weight_orig / weight_mask, as with any torch.nn.utils.prune method
    print(f"searched {result.evaluations} masks in {result.wall_time:.1f} s; best validation accuracy "
          f"{result.best_reward:.1%} (the masked network at epoch {k}, before any retraining)")  # fmt: skip

    # 5. Rewind the weights to init; the masks stay.
    ticket.rewind(model, "init")

    # 6. Slice the pruned filters out: a smaller dense nn.Module, checked against the masked one.
    small = rlp.slim(model, example_inputs=example_inputs)
    pruned = rlp.metrics.model_stats(small, example_inputs)

    # 7. Train the small network, and measure it once on the test split.
    train(small, train_loader, epochs=args.epochs, seed=args.seed)
    accuracy = evaluate(small, test_loader)

    print(pruned.table())
    print(f"\nfilters {pruned.filters}/{dense.filters}, params {pruned.params:,}/{dense.params:,}, "
          f"MACs {pruned.macs:,}/{dense.macs:,} per example")  # fmt: skip
    print(f"test accuracy of the trained ticket after {args.epochs} epochs: {accuracy:.1%}")
    return {"accuracy": accuracy, "best_reward": result.best_reward, "evaluations": result.evaluations,
            "filters": pruned.filters, "dense_filters": dense.filters, "params": pruned.params,
            "dense_params": dense.params, "macs": pruned.macs, "dense_macs": dense.macs, "model": small}  # fmt: skip


if __name__ == "__main__":
    main()
