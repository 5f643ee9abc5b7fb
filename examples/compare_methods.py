"""Several pruning methods at one or two sparsities, through one pipeline and one training schedule.

Every method prunes the same dense BasicCNN at epoch ``k`` (REINFORCE, simulated annealing and random search
rewarded on validation data; the L1 and SynFlow criteria and a random mask need none), the kept filters are
rewound to init, sliced out and trained with the dense control's schedule, and the table shows test accuracy,
parameters, MACs and CPU latency side by side. ``torch-rlprune compare`` does the same and also writes the tables
and a plot (see :func:`torch_rlprune.pipeline.compare`)::

    python examples/compare_methods.py                           # a few minutes on 2 CPU cores
    python examples/compare_methods.py --methods l1 sa --amounts 0.5 0.8
"""

from __future__ import annotations

import argparse

from torch_rlprune import pipeline


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", choices=pipeline.METHODS, default=["rl", "sa", "l1", "random_mask"])
    parser.add_argument("--amounts", nargs="+", type=float, default=[0.7], help="fractions of the filters to prune")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=4, help="training epochs of every network (default 4)")
    parser.add_argument("--episodes", type=int, default=150, help="masks every search evaluates (default 150)")
    parser.add_argument("--width", type=float, default=0.5, help="BasicCNN filter multiplier (default 0.5)")
    parser.add_argument("--tiny", action="store_true", help="width 0.125, 1 epoch, 8 episodes: for tests")
    args = parser.parse_args(argv)
    if args.tiny:
        args.width, args.epochs, args.episodes = 0.125, 1, 8

    config = pipeline.PipelineConfig(width=args.width, epochs=args.epochs, episodes=args.episodes,
                                     rewind_epoch=min(2, args.epochs), latency_time=0.1)  # fmt: skip
    rows = pipeline.compare(config, args.methods, args.amounts, args.seeds, log=print)
    print()
    print(pipeline.comparison_markdown(rows, config))
    return rows


if __name__ == "__main__":
    main()
