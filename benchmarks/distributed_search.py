"""Episodes per second of a search spread over 1 and 2 processes with torch.distributed.

Run by hand (nothing here is collected by pytest)::

    python benchmarks/distributed_search.py            # about 1 minute on 2 CPU cores
    python benchmarks/distributed_search.py --quick    # a smoke run

The same ``RLStructuredPruning`` search of BasicCNN's filters (70% pruned, a NegativeLoss reward on a batch of
``--batch`` inputs, ``--episodes`` evaluations, 8 candidates per policy update) runs in one process, then in
``--world`` processes started with :func:`torch.multiprocessing.spawn` (gloo on the CPU, NCCL with ``--device
cuda`` and as many GPUs), each rank evaluating its share of every batch of candidates. The cores are split
between the ranks (torch threads per rank = cores / ranks), so on one machine the comparison is what the search's
parallelism buys over intra-op threading of the same cores. Every rank must return the mask the single process
found; the script checks it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import torch_rlprune as rlp
from _machine import OtherLoad, available_cores, print_header, print_table


def search(args: argparse.Namespace, distributed: bool, device: str) -> tuple[float, torch.Tensor, int]:
    """Seconds the search took, the mask it found, and its evaluations."""
    torch.manual_seed(0)
    model = rlp.models.BasicCNN().to(device)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    if distributed:
        dist.barrier()
    started = time.perf_counter()
    result = rlp.global_structured(convs, rlp.RLStructuredPruning, amount=0.7, model=model, example_inputs=x[:1],
                                   reward=rlp.rewards.NegativeLoss([(x, y)]), episodes=args.episodes, batch=8,
                                   seed=0, progress=False, distributed=distributed)  # fmt: skip
    return time.perf_counter() - started, result.best_keep, result.evaluations


def _rank(rank: int, world: int, init_file: str, out_dir: str, args: argparse.Namespace) -> None:
    torch.set_num_threads(max(1, args.threads // world))
    device = "cpu"
    if args.device == "cuda":
        torch.cuda.set_device(rank)
        device = f"cuda:{rank}"
    backend = "nccl" if args.device == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        seconds, keep, evaluations = search(args, True, device)
        torch.save({"seconds": seconds, "keep": keep, "evaluations": evaluations}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 32, 16 episodes")
    parser.add_argument("--batch", type=int, default=256, help="reward batch size (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=480, help="evaluations per search (default: %(default)s)")
    parser.add_argument("--world", type=int, default=2, help="processes of the distributed run (default: 2)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="torch threads in all, split between the ranks (default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.episodes = 32, 16
    print_header(f"distributed_search.py{' --quick' if args.quick else ''}")
    load = OtherLoad()

    torch.set_num_threads(args.threads)
    search(args, False, args.device if args.device == "cpu" else "cuda:0")  # warm-up
    alone_s, alone_keep, evaluations = search(args, False, args.device if args.device == "cpu" else "cuda:0")
    rows = [["1", str(args.threads), f"{alone_s:.1f}", f"{evaluations / alone_s:.2f}", "1.00", "(reference)"]]

    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_rank, args=(args.world, os.path.join(tmp, "init"), tmp, args), nprocs=args.world, join=True)
        ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(args.world)]
    seconds = max(r["seconds"] for r in ranks)
    same = all(torch.equal(r["keep"], alone_keep) and r["evaluations"] == evaluations for r in ranks)
    rows.append([str(args.world), f"{max(1, args.threads // args.world)} each", f"{seconds:.1f}",
                 f"{evaluations / seconds:.2f}", f"{alone_s / seconds:.2f}", "yes" if same else "NO"])  # fmt: skip
    print_table(f"RLStructuredPruning of BasicCNN at 70%, NegativeLoss on a batch of {args.batch}, {evaluations} "
                f"episodes, 8 per update, device {args.device}; seconds from the first episode to the mask",
                ["processes", "threads", "seconds", "episodes/s", "speed-up", "same mask as 1 process?"], rows)  # fmt: skip
    print(load.report())
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
