"""Which results repeat bit for bit: the same seeded work in fresh processes, on one device, under three settings.

Run by hand (nothing here is collected by pytest)::

    python benchmarks/determinism.py                  # on the CPU: about 2 minutes on 2 cores
    python benchmarks/determinism.py --device cuda    # on a GPU, with one CPU process to compare against

Every process seeds everything with the same seeds and, on BasicCNN (width 0.5) and synthetic CIFAR-sized data:

- ``training``: ``--steps`` SGD steps of :func:`torch_rlprune.training.train` (forward and backward passes);
- ``SNIP scores``: :func:`torch_rlprune.criteria.snip` on one batch (one backward pass);
- ``RL search`` and ``SA search``: ``--episodes`` evaluations of the accuracy reward through
  :func:`torch_rlprune.global_structured`; the result is the mask and the reward history;
- ``slim output``: the RL-pruned model sliced by :func:`torch_rlprune.slim` and run on a batch.

Settings: ``default`` (PyTorch's defaults), ``cudnn.benchmark`` (cuDNN times several algorithms per shape and keeps
the fastest), and ``deterministic`` (:func:`torch.use_deterministic_algorithms` with
``CUBLAS_WORKSPACE_CONFIG=:4096:8``). A cell says how many distinct results ``--runs`` processes gave (1: bit for
bit the same every time) and the largest difference between them; on a GPU, the last column says whether the
device's result equals the CPU's.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import torch
from _machine import print_header, print_table

import torch_rlprune as rlp

SETTINGS = ("default", "cudnn.benchmark", "deterministic")
ITEMS = ("training", "SNIP scores", "RL search", "SA search", "slim output")


def work(device: str, steps: int, episodes: int) -> dict[str, list[torch.Tensor]]:
    """The seeded work of one process; every result as a list of CPU tensors."""
    torch.manual_seed(0)
    x = torch.randn(512, 3, 32, 32)
    y = torch.randint(0, 10, (512,))
    model = rlp.models.BasicCNN(width=0.5).to(device)
    data = rlp.data.batches(torch.utils.data.TensorDataset(x, y), 64, shuffle=True,
                            generator=torch.Generator().manual_seed(0), drop_last=True, device=device)  # fmt: skip
    rlp.training.train(model, _Steps(data, steps), 1, lr=0.02, seed=0)
    out = {"training": [t.detach().cpu() for t in model.state_dict().values()]}

    x_dev, y_dev = x[:128].to(device), y[:128].to(device)
    out["SNIP scores"] = [s.cpu() for s in rlp.criteria.snip(model, x_dev, y_dev).values()]
    reward = rlp.rewards.Accuracy([(x[128:384], y[128:384])])
    for name, method in (("RL search", rlp.RLStructuredPruning), ("SA search", rlp.SimulatedAnnealingPruning)):
        pruned = rlp.slicing.copy_pruned(model)
        pruned_convs = [(m, "weight") for m in pruned.modules() if isinstance(m, torch.nn.Conv2d)]
        result = rlp.global_structured(pruned_convs, method, amount=0.7, model=pruned, example_inputs=x_dev[:1],
                                       reward=reward, episodes=episodes, seed=0, progress=False)  # fmt: skip
        masks = [b.cpu() for n, b in pruned.named_buffers() if n.endswith("_mask")]
        out[name] = [*masks, torch.tensor([r["reward"] for r in result.history], dtype=torch.float64)]
        if name == "RL search":
            with torch.no_grad():
                out["slim output"] = [rlp.slim(pruned, x_dev[:1]).eval()(x_dev).cpu()]
    return out


class _Steps:
    """The first ``steps`` batches of each pass over ``loader``."""

    def __init__(self, loader, steps: int) -> None:
        self.loader, self.steps = loader, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        for i, batch in enumerate(self.loader):
            if i == self.steps:
                return
            yield batch


def child(args: argparse.Namespace) -> None:
    if args.setting == "cudnn.benchmark":
        torch.backends.cudnn.benchmark = True
    elif args.setting == "deterministic":
        torch.use_deterministic_algorithms(True)
    torch.save(work(args.device, args.steps, args.episodes), args.save)


def run_child(device: str, setting: str, args: argparse.Namespace, folder: str, i: int) -> dict[str, list[torch.Tensor]] | str:
    """The child's results, or the last line of its error output if it failed."""
    path = os.path.join(folder, f"{device}-{setting}-{i}.pt")
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"} if setting == "deterministic" else dict(os.environ)
    command = [sys.executable, __file__, "--child", "--device", device, "--setting", setting, "--save", path,
               "--steps", str(args.steps), "--episodes", str(args.episodes)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
    return torch.load(path, weights_only=True)


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def largest_difference(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float("inf")
    return max((x.double() - y.double()).abs().max().item() for x, y in zip(a, b) if x.numel())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=3, help="fresh processes per setting (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=8, help="SGD steps of the training (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=48, help="evaluations of each search (default: %(default)s)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--setting", default="default", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    print_header("benchmarks/determinism.py")
    print(f"device {args.device}, {args.runs} processes per setting, {args.steps} training steps, "
          f"{args.episodes} evaluations per search")  # fmt: skip
    on_gpu = args.device != "cpu"
    with tempfile.TemporaryDirectory() as folder:
        reference = run_child("cpu", "default", args, folder, 0) if on_gpu else None
        if isinstance(reference, str):
            print(f"the CPU run to compare against failed: {reference}")
        rows = []
        for setting in SETTINGS:
            results = [run_child(args.device, setting, args, folder, i) for i in range(args.runs)]
            failure = next((r for r in results if isinstance(r, str)), None)
            if failure is not None:
                rows.append([f"all, {setting}", "failed", failure[:100]] + ([""] if on_gpu else []))
                continue
            for item in ITEMS:
                runs = [r[item] for r in results]
                distinct = []
                for r in runs:
                    if not any(same(r, d) for d in distinct):
                        distinct.append(r)
                gap = max(largest_difference(runs[0], r) for r in runs)
                row = [f"{item}, {setting}", str(len(distinct)), f"{gap:.3g}"]
                if isinstance(reference, dict):
                    row.append("yes" if same(runs[0], reference[item]) else
                               f"no (differs by {largest_difference(runs[0], reference[item]):.3g})")  # fmt: skip
                elif on_gpu:
                    row.append("(CPU run failed)")
                rows.append(row)
    header = ["result, setting", f"distinct results in {args.runs} runs", "largest difference"]
    print_table(f"Repeatability on {args.device}", header + (["equal to the CPU's"] if on_gpu else []), rows)


if __name__ == "__main__":
    main()
