"""Distributed search: two CPU processes with gloo find what one process finds with the same seed and budget."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import torch_rlprune as rlp
from torch_rlprune.search.controller import ReinforceController
from torch_rlprune.masks import alive_channels
from torch_rlprune.search import AnnealingStrategy, ReinforceStrategy, run_search

from conftest import conv_pairs

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

SIZES, N_KEEP, FLOOR = [30, 30], 20, [1, 1]
HIDDEN = torch.arange(60) % 3 == 0


def planted(keep):
    return float((keep & HIDDEN).sum()) / N_KEEP


def searches(distributed):
    """The searches every process runs: planted-problem RL and SA, and an RL search of a small model's filters
    rewarded on a pool of validation sets."""
    calls = []

    def counted(keep):
        calls.append(1)
        return planted(keep)

    rl = run_search(ReinforceStrategy(ReinforceController(torch.zeros(60, 1), SIZES, N_KEEP, FLOOR, seed=3)), counted,
                    episodes=40, batch=4, progress=False, distributed=distributed)  # fmt: skip
    sa = run_search(AnnealingStrategy(SIZES, N_KEEP, FLOOR, episodes=30, seed=3), planted, episodes=30, batch=2,
                    progress=False, distributed=distributed)  # fmt: skip
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    found = rlp.global_structured(conv_pairs(model), rlp.RLStructuredPruning, amount=0.5, model=model,
                                  example_inputs=x[:1], episodes=16, batch=4, seed=0, progress=False,
                                  # a pool of 4 sets: each rank must score a step on the set a single process would
                                  reward=rlp.rewards.NegativeLoss(list(zip(x.split(8), y.split(8))), batches=1, pool=4),
                                  distributed=distributed)  # fmt: skip
    mask = torch.cat([alive_channels(g) for g in rlp.channel_groups(model, x[:1])])
    return {
        "rl_rewards": [r["reward"] for r in rl.history],
        "rl_best": rl.best_keep,
        "rl_calls": len(calls),
        "sa_rewards": [r["reward"] for r in sa.history],
        "sa_best": sa.best_keep,
        "model_rewards": [r["reward"] for r in found.history],
        "model_mask": mask,
    }


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.save(searches(True), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_find_what_one_process_finds(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the ranks run one thread each; the losses must round alike
    try:
        alone = searches(False)
    finally:
        torch.set_num_threads(threads)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for got in ranks:
        for key in ("rl_rewards", "sa_rewards", "model_rewards"):
            assert got[key] == alone[key], key
        for key in ("rl_best", "sa_best", "model_mask"):
            assert torch.equal(got[key], alone[key]), key
    # Each rank evaluated its half of the candidates.
    assert [got["rl_calls"] for got in ranks] == [20, 20] and alone["rl_calls"] == 40


def test_distributed_search_without_a_process_group_is_refused():
    with pytest.raises(ValueError, match="init_process_group"):
        run_search(ReinforceStrategy(ReinforceController(torch.zeros(60, 1), SIZES, N_KEEP, FLOOR, seed=3)), planted,
                   episodes=4, progress=False, distributed=True)  # fmt: skip


def _failing_worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)

    def reward(keep):
        if rank == 1:
            raise ValueError("validation data missing on this rank")
        return planted(keep)

    try:
        run_search(ReinforceStrategy(ReinforceController(torch.zeros(60, 1), SIZES, N_KEEP, FLOOR, seed=3)), reward,
                   episodes=8, batch=2, progress=False, distributed=True)  # fmt: skip
    except Exception as error:  # recorded for the test to read
        with open(f"{out_dir}/rank{rank}.txt", "w") as f:
            f.write(f"{type(error).__name__}: {error}")
    finally:
        dist.destroy_process_group()


def test_a_reward_failing_on_one_rank_stops_every_rank(tmp_path):
    mp.spawn(_failing_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    errors = [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)]
    assert errors[0].startswith("RuntimeError") and "failed on 1 other rank" in errors[0]
    assert errors[1] == "ValueError: validation data missing on this rank"
