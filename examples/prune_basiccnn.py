"""Global L1 structured pruning of BasicCNN, with the per-layer summary.

Prunes 70% of BasicCNN's 960 filters by the L1 norm of each filter relative to its layer's mean, then prints what
is left layer by layer (filters, parameters and MACs per example, masked filters counted as gone) and checks
that the masks are ordinary ``torch.nn.utils.prune`` masks. Runs in seconds on a CPU, with no data and no
download::

    python examples/prune_basiccnn.py --amount 0.7
"""

from __future__ import annotations

import argparse

import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

import torch_rlprune as rlp


def main(argv: list[str] | None = None) -> rlp.metrics.ModelStats:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amount", type=float, default=0.7, help="fraction of filters to prune (default 0.7)")
    parser.add_argument("--criterion", default="l1", choices=sorted(rlp.criteria.CRITERIA) + ["ln"],
                        help="'ln' uses prune.LnStructured(n=1); the others name torch_rlprune.criteria")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    model = rlp.models.BasicCNN()
    example = torch.randn(1, 3, 32, 32)
    dense = rlp.metrics.model_stats(model, example)

    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    if args.criterion == "ln":
        rlp.global_structured(convs, prune.LnStructured, n=1, amount=args.amount, model=model, example_inputs=example)
    elif args.criterion in ("snip", "same_sign"):
        parser.error(f"--criterion {args.criterion} needs data or a snapshot; the command-line tool will offer it")
    else:
        rlp.global_structured(convs, args.criterion, amount=args.amount, model=model, example_inputs=example,
                              **({"seed": args.seed} if args.criterion == "random" else {}))  # fmt: skip
    assert prune.is_pruned(model)

    pruned = rlp.metrics.model_stats(model, example)
    print(f"BasicCNN, global {args.criterion} structured pruning, amount={args.amount} of the filters\n")
    print(pruned.table())
    print(
        f"\nfilters {pruned.filters_kept}/{dense.filters}  "
        f"params {pruned.params_kept:,}/{dense.params:,} ({pruned.params_kept / dense.params:.1%})  "
        f"MACs {pruned.macs_kept:,}/{dense.macs:,} ({pruned.macs_kept / dense.macs:.1%})"
    )
    return pruned


if __name__ == "__main__":
    main()
