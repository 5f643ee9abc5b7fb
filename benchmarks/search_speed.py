"""What one episode of the mask search costs, beside a dense forward pass of the same batch.

Run by hand (nothing here is collected by pytest)::

    python benchmarks/search_speed.py            # the full run: about 6 minutes on 2 CPU cores
    python benchmarks/search_speed.py --quick    # a smoke run: well under a minute

BasicCNN (or ``--model resnet18``) at initialisation, a reward batch of 256 CIFAR-sized inputs, 70% of the filters
pruned. Timed side by side with :class:`torch.utils.benchmark.Timer` (no grad; batch norms normalise by the
batch's statistics, as the search's rewards do):

- ``dense forward``: the unpruned network on the batch, the unit every other row is divided by;
- ``keep vectors``: :func:`torch_rlprune.masks.keep_vectors` of a candidate, the host-side work every view does
  before it runs;
- ``sliced view``: this package's evaluation, :class:`torch_rlprune.search.evaluation.CandidateModel` with
  ``mode="slice"``: index-select the kept channels of every tensor and run the sliced network through
  :func:`torch.func.functional_call`, at widths padded to a few per layer (zeroed channels) so that oneDNN meets
  few shapes; then the same at the exact widths, which run without oneDNN (what a view cost before the padding);
- ``masked view``: the same with ``mode="mask"``: zero the pruned channels' tensors and run the dense network,
  which is what the method's original implementation did per candidate;
- ``search episode``: a whole ``RLStructuredPruning`` search through :func:`torch_rlprune.global_structured`
  (sampling, evaluation with the accuracy reward, policy updates, history) divided by its episodes; it evaluates
  with ``evaluation="auto"``, which slices on the CPU and masks on a GPU. Then the same search with the reward
  recalibrated (:class:`torch_rlprune.rewards.Recalibrated`: the candidate's norm statistics re-estimated on 4
  batches before every reward, as ``quality.py`` rewards).

Then the peak memory of a ``--episodes`` long search, measured in a fresh process: its peak resident set size
(``VmHWM``) beside that of the same process set up without searching, with the default allocator settings and
with two settings that keep the CPU allocator from holding on to freed memory, and
``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import resource
import statistics
import sys
import time

import torch
from torch import nn
from torch.utils import benchmark

import torch_rlprune as rlp
from _machine import OtherLoad, available_cores, print_header, print_table
from torch_rlprune.search.keepsets import sample_keep
from torch_rlprune.search.evaluation import CandidateEvaluator, CandidateModel
from torch_rlprune.masks import keep_vectors

GOAL = 0.25  # one episode should cost at most this share of a dense forward pass at 70% sparsity
AMOUNT = 0.7


def setup(batch: int, device: str, arch: str = "basiccnn") -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    if arch == "basiccnn":
        model = rlp.models.BasicCNN().to(device)
    else:
        import torchvision

        model = torchvision.models.resnet18(num_classes=10).to(device)
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, x, y


def random_keeps(groups: rlp.ChannelGroups, n: int) -> list[list[torch.Tensor]]:
    """``n`` uniformly random keep-sets of 30% of the filters, split per group."""
    sizes = [g.size for g in groups]
    n_keep = sum(sizes) - round(AMOUNT * sum(sizes))
    flat, _ = sample_keep(torch.zeros(n, sum(sizes)), n_keep, sizes, [1] * len(sizes), torch.Generator().manual_seed(0))
    return [list(k.split(sizes)) for k in flat]


def timed_ms(timers: dict[str, benchmark.Timer], rounds: int, min_run_time: float) -> dict[str, float]:
    """Median ms per call of each timer, over ``rounds`` interleaved rounds."""
    runs: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(rounds):
        for name, timer in timers.items():
            runs[name] += timer.blocked_autorange(min_run_time=min_run_time).times
    return {name: statistics.median(times) * 1e3 for name, times in runs.items()}


RECALIBRATION_BATCHES = 4  # what benchmarks/quality.py's reward (acc-recal) re-estimates the norms on


def search(model: nn.Module, x: torch.Tensor, y: torch.Tensor, episodes: int,
           recalibrate: bool = False) -> rlp.search.SearchResult:  # fmt: skip
    """A default RLStructuredPruning search rewarded by accuracy on ``(x, y)``; with ``recalibrate``, after
    re-estimating the candidate's norm statistics on as many batches of the same shape (``rewards.Recalibrated``)."""
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    reward = rlp.rewards.Accuracy([(x, y)])
    if recalibrate:
        reward = rlp.rewards.Recalibrated(reward, [(x, y)] * RECALIBRATION_BATCHES, batches=RECALIBRATION_BATCHES)
    return rlp.global_structured(convs, rlp.RLStructuredPruning, amount=AMOUNT, model=model,
                                 example_inputs=x[:1], reward=reward, episodes=episodes, seed=0,
                                 progress=False)  # fmt: skip


def episode_table(args: argparse.Namespace) -> float:
    """Print the per-episode costs; return the default evaluation's cost as a share of a dense forward pass."""
    model, x, y = setup(args.batch, args.device, args.model)
    groups = rlp.channel_groups(model, x[:1])
    evaluators = {mode: CandidateEvaluator(model, groups, x[:1], norms="batch", mode=mode) for mode in ("slice", "mask")}
    auto = CandidateEvaluator(model, groups, x[:1]).mode
    # As in a search, candidates keep other channel counts each time, so most calls meet new tensor shapes
    # (oneDNN builds its kernels per shape); 512 are more than the timed calls of one row.
    keeps = random_keeps(groups, 512)
    cycle = {"i": 0}

    def next_index() -> int:
        cycle["i"] = (cycle["i"] + 1) % len(keeps)
        return cycle["i"]

    def vectors_only() -> rlp.masks.KeepVectors:
        return keep_vectors(groups, keeps[next_index()])

    def sliced_episode() -> torch.Tensor:
        return evaluators["slice"].view(keeps[next_index()])(x)

    def masked_episode() -> torch.Tensor:
        return evaluators["mask"].view(keeps[next_index()])(x)

    def exact_episode() -> torch.Tensor:  # what a sliced view cost before it was padded
        keep = keeps[next_index()]
        return CandidateModel(evaluators["slice"], keep, keep_vectors(groups, keep))(x)

    sync = "torch.cuda.synchronize()" if x.is_cuda else "pass"
    stmts = {
        "dense forward": "model(x)",
        "keep vectors (host-side work of every view)": "vectors_only()",
        "sliced view (mode='slice')": "sliced_episode()",
        "sliced view, exact widths, oneDNN off": "exact_episode()",
        "masked view (mode='mask')": "masked_episode()",
    }
    env = {"model": model, "x": x, "vectors_only": vectors_only, "sliced_episode": sliced_episode,
           "exact_episode": exact_episode, "masked_episode": masked_episode}  # fmt: skip
    timers = {
        name: benchmark.Timer(stmt=f"with torch.no_grad():\n    {stmt}\n{sync}", globals=env,
                              num_threads=torch.get_num_threads())  # fmt: skip
        for name, stmt in stmts.items()
    }
    load = OtherLoad()
    with evaluators["slice"].active(), torch.no_grad():
        for fn in (lambda: model(x), vectors_only, sliced_episode, exact_episode, masked_episode):  # warm-up
            fn()
        ms = timed_ms(timers, args.rounds, args.min_run_time)

    search(*setup(args.batch, args.device, args.model), 8)  # warm-up
    for recalibrate, row in ((False, "search episode (RLStructuredPruning, accuracy reward)"),
                             (True, f"search episode, norms recalibrated on {RECALIBRATION_BATCHES} batches")):  # fmt: skip
        model, x, y = setup(args.batch, args.device, args.model)  # a fresh model: a search prunes its own
        started = time.perf_counter()
        result = search(model, x, y, args.episodes, recalibrate)
        ms[row] = (time.perf_counter() - started) / result.evaluations * 1e3

    dense = ms["dense forward"]
    rows = [[name, f"{value:.2f}", f"{value / dense:.3f}", f"{1e3 / value:.1f}"] for name, value in ms.items()]
    filters = sum(g.size for g in groups)
    title = (f"{args.model} ({filters} filters) at init, reward batch {args.batch}x3x32x32, {AMOUNT:.0%} of the filters "
             f"pruned, device {args.device}, {torch.get_num_threads()} threads; median over {args.rounds} "
             f"interleaved round(s) of torch.utils.benchmark.Timer.blocked_autorange, no_grad, BN on batch "
             f"statistics; each search row is one {result.evaluations}-episode search's wall time / episodes")  # fmt: skip
    print_table(title, ["per episode", "ms", "x dense forward", "episodes/s"], rows)
    print(load.report())
    share = ms["sliced view (mode='slice')" if auto == "slice" else "masked view (mode='mask')"] / dense
    search_share = ms["search episode (RLStructuredPruning, accuracy reward)"] / dense
    print(f"\nevaluation='auto' is {auto!r} here: {share:.3f} of a dense forward (goal <= {GOAL}: "
          f"{'met' if share <= GOAL else 'MISSED'}); "
          f"whole search episode: {search_share:.3f}")
    return share


def peak_rss_kib() -> int:
    """This process's peak resident set size in KiB.

    ``VmHWM`` where Linux has it: ``ru_maxrss`` survives ``execve``, so a spawned child would report its parent's
    peak if the parent's was higher.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _peak(batch: int, device: str, arch: str, episodes: int, queue: multiprocessing.Queue) -> None:
    torch.set_num_threads(1)
    model, x, y = setup(batch, device, arch)
    with torch.no_grad():
        model(x)  # the dense forward pass every run pays once, so the baseline holds its buffers too
    base_kib = peak_rss_kib()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    if episodes:
        search(model, x, y, episodes)
    cuda = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    queue.put((base_kib, peak_rss_kib(), cuda))


# Every candidate has other tensor shapes. With glibc's default malloc settings and oneDNN's primitive cache, the
# compiled primitives and freed activations of hundreds of shapes stayed in the process: the resident set grew by
# ~500 MiB over the first ~200 episodes, then levelled off. The evaluator now runs sliced CPU candidates at padded
# widths, a few per group (search.evaluation.PAD_STEPS), which bounds the shapes; the two settings below, read by
# a new process only, are kept for comparison.
ENVIRONMENTS = {
    "": {},
    "MALLOC_MMAP_THRESHOLD_=65536": {"MALLOC_MMAP_THRESHOLD_": "65536"},
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY=0": {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0"},
}


def _in_fresh_process(env: dict[str, str], *args: object) -> tuple[int, int, int | None]:
    context = multiprocessing.get_context("spawn")
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        queue = context.Queue()
        process = context.Process(target=_peak, args=(*args, queue))
        process.start()
    finally:
        for key, value in saved.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value
    result = queue.get()
    process.join()
    return result


def peak_memory(args: argparse.Namespace) -> None:
    """Peak memory of a search, each measurement in a fresh process (a peak never goes down)."""
    rows = []
    runs = [("", 0)] + [(name, args.episodes) for name in ENVIRONMENTS if args.device == "cpu" or not name]
    for name, episodes in runs:
        base_kib, peak_kib, cuda = _in_fresh_process(ENVIRONMENTS[name], args.batch, args.device, args.model, episodes)
        label = "set-up only (model, batch, one dense forward)" if episodes == 0 else f"{episodes}-episode RL search"
        rows.append([label, name or "(default)", f"{peak_kib / 1024:.0f}", f"{(peak_kib - base_kib) / 1024:.0f}",
                     "" if cuda is None else f"{cuda / 2**20:.0f}"])  # fmt: skip
    print_table(f"Peak memory of {args.model}, each row a fresh process (1 thread), reward batch {args.batch}",
                ["process", "environment", "peak RSS MiB", "peak RSS above set-up MiB", "CUDA max allocated MiB"], rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="batch 32, 40 episodes, short timings")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory table (needs no quiet machine)")
    parser.add_argument("--batch", type=int, default=256, help="reward batch size (default: %(default)s)")
    parser.add_argument("--episodes", type=int, default=500, help="episodes of the timed search (default: %(default)s)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    parser.add_argument("--model", default="basiccnn", choices=["basiccnn", "resnet18"], help="(default: %(default)s)")
    parser.add_argument("--threads", type=int, default=available_cores(),
                        help="torch threads (default: the cores available, %(default)s here)")  # fmt: skip
    args = parser.parse_args(argv)
    args.rounds, args.min_run_time = (1, 0.2) if args.quick else (3, 1.0)
    if args.quick:
        args.batch, args.episodes = 32, 40
    torch.set_num_threads(args.threads)
    print_header(f"search_speed.py{' --quick' if args.quick else ''}")
    started = time.perf_counter()
    if not args.memory_only:
        episode_table(args)
    peak_memory(args)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
