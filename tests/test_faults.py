"""Faults without loss: a search killed hard between checkpoints resumes from its last atomic checkpoint."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from torch_rlprune.controller import ReinforceController
from torch_rlprune.search import ReinforceStrategy, run_search

SIZES, N_KEEP, FLOOR = [40, 40], 24, [1, 1]
HIDDEN = torch.arange(80) % 3 == 0

# The child runs the same search; after 20 evaluations (checkpoints at 8 and 16) it says so and hangs, to be killed.
CHILD = textwrap.dedent(
    """
    import pathlib, sys, time
    import torch
    from torch_rlprune.controller import ReinforceController
    from torch_rlprune.search import ReinforceStrategy, run_search

    hidden = torch.arange(80) % 3 == 0
    calls = []

    def reward(keep):
        calls.append(1)
        if len(calls) == 21:
            pathlib.Path(sys.argv[2]).write_text("ready")
            time.sleep(600)
        return float((keep & hidden).sum()) / 24

    strategy = ReinforceStrategy(ReinforceController(torch.zeros(80, 1), [40, 40], 24, [1, 1], seed=5))
    run_search(strategy, reward, episodes=48, batch=4, checkpoint=sys.argv[1], checkpoint_every=8, progress=False)
    """
)


def planted(keep):
    return float((keep & HIDDEN).sum()) / N_KEEP


def strategy():
    return ReinforceStrategy(ReinforceController(torch.zeros(80, 1), SIZES, N_KEEP, FLOOR, seed=5))


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_search_killed_hard_resumes_from_its_last_checkpoint(tmp_path):
    checkpoint, ready = tmp_path / "search.pt", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(checkpoint), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, "the search process ended before it was killed"
            assert time.monotonic() < deadline, "the search process never got to its 21st evaluation"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    # The kill came between checkpoints: the file holds the state after 16 evaluations, whole.
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["evaluations"] == 16

    resumed = run_search(strategy(), planted, episodes=48, batch=4, resume=checkpoint, progress=False)
    full = run_search(strategy(), planted, episodes=48, batch=4, progress=False)
    assert [r["reward"] for r in resumed.history] == [r["reward"] for r in full.history]
    assert torch.equal(resumed.best_keep, full.best_keep) and resumed.evaluations == 48
