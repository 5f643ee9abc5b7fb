"""Faults without loss: a search killed mid-way resumes from its last atomic checkpoint to the uninterrupted result,
and a failure inside ``slim`` or ``rewind`` leaves the input model exactly as it was.
"""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune import lottery, slicing
from torch_rlprune.search.controller import ReinforceController
from torch_rlprune.search import ReinforceStrategy, run_search

from conftest import conv_pairs

SIZES, N_KEEP, FLOOR = [40, 40], 24, [1, 1]
HIDDEN = torch.arange(80) % 3 == 0

# The child runs the same search; after 20 evaluations (checkpoints at 8 and 16) it says so and hangs, to be killed.
CHILD = textwrap.dedent(
    """
    import pathlib, signal, sys, time
    import torch
    from torch_rlprune.search.controller import ReinforceController
    from torch_rlprune.search import ReinforceStrategy, run_search

    # Ctrl-C's KeyboardInterrupt, even where the test runner was started in the background with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

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


# SIGKILL lands between checkpoints: the file holds the state after 16 evaluations, whole. SIGINT raises
# KeyboardInterrupt in the reward; the step holding the 21st evaluation is rolled back and the search saves the
# state after 20 before it returns.
@pytest.mark.parametrize("sig, saved_at", [("SIGKILL", 16), ("SIGINT", 20)])
def test_a_killed_search_resumes_from_its_last_checkpoint(tmp_path, sig, saved_at):
    if not hasattr(signal, sig):
        pytest.skip(f"needs {sig}")
    checkpoint, ready = tmp_path / "search.pt", tmp_path / "ready"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(checkpoint), str(ready)])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert child.poll() is None, "the search process ended before it was killed"
            assert time.monotonic() < deadline, "the search process never got to its 21st evaluation"
            time.sleep(0.05)
        os.kill(child.pid, getattr(signal, sig))
        child.wait(timeout=60)
    finally:
        child.kill()
        child.wait()
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["evaluations"] == saved_at

    resumed = run_search(strategy(), planted, episodes=48, batch=4, resume=checkpoint, progress=False)
    full = run_search(strategy(), planted, episodes=48, batch=4, progress=False)
    assert [r["reward"] for r in resumed.history] == [r["reward"] for r in full.history]
    assert torch.equal(resumed.best_keep, full.best_keep) and resumed.evaluations == 48


def pruned_model():
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25).train()
    x = torch.randn(2, 3, 32, 32)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x[:1])
    return model, x


def state_of(model):
    """Everything a failure could leave behind: tensors, hooks, the computed weights and the modes."""
    hooks = [(name, type(m).__name__, len(m._forward_pre_hooks)) for name, m in model.named_modules()]
    computed = {(id(m), name): getattr(m, name).clone() for m, name in slicing.pruning_hooks(model)}
    tensors = {k: v.clone() for k, v in model.state_dict().items()}
    return tensors, hooks, computed, [m.training for m in model.modules()]


def assert_same_state(before, after):
    (t0, h0, c0, m0), (t1, h1, c1, m1) = before, after
    assert t0.keys() == t1.keys() and all(torch.equal(t0[k], t1[k]) for k in t0)
    assert h0 == h1 and m0 == m1
    assert c0.keys() == c1.keys() and all(torch.equal(c0[k], c1[k]) for k in c0)


def fail_after(real, calls=1):
    """``real``, which raises after its first ``calls`` calls have done their work."""
    done = []

    def wrapper(*args, **kwargs):
        result = real(*args, **kwargs)
        done.append(1)
        if len(done) >= calls:
            raise RuntimeError("simulated failure")
        return result

    return wrapper


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("step", ["_fold_constants", "apply_slices", "_verify"])
def test_a_failure_inside_slim_leaves_the_model_untouched(monkeypatch, step, inplace):
    model, x = pruned_model()
    before = state_of(model)
    monkeypatch.setattr(slicing, step, fail_after(getattr(slicing, step)))
    with pytest.raises(RuntimeError, match="simulated failure"):
        rlp.slim(model, x, inplace=inplace)
    assert_same_state(before, state_of(model))
    assert prune.is_pruned(model)
    monkeypatch.undo()
    assert isinstance(rlp.slim(model, x, inplace=inplace), torch.nn.Module)


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_failure_while_rewinding_puts_back_what_was_written(monkeypatch, failure):
    model, x = pruned_model()
    init = lottery.Snapshot.capture(rlp.models.BasicCNN(width=0.25), "init")
    with torch.no_grad():
        model(x)  # the computed weights are current, as after any forward
    before = state_of(model)
    real = lottery._refresh_pruned
    calls = []

    def refresh(module):
        calls.append(1)
        if len(calls) == 1:  # every tensor has been written by now
            raise failure("simulated failure")
        real(module)

    monkeypatch.setattr(lottery, "_refresh_pruned", refresh)
    with pytest.raises(failure):
        lottery.rewind(model, init)
    assert_same_state(before, state_of(model))
    lottery.rewind(model, init)
    assert torch.equal(model.features[0].weight_orig, init.state["features.0.weight"])


@pytest.mark.parametrize("sliced", [False, True])
def test_a_write_failing_part_way_through_a_rewind_is_undone(monkeypatch, sliced):
    model, x = pruned_model()
    if sliced:
        model = rlp.slim(model, x)
    init = lottery.Snapshot.capture(rlp.models.BasicCNN(width=0.25), "init")
    with torch.no_grad():
        model(x)
    before = state_of(model)
    real = lottery._plan

    def plan(*args):
        pairs = real(*args)
        target, source = pairs[5]
        pairs[5] = (target, torch.empty_like(source, device="meta"))  # copying out of it raises
        return pairs

    monkeypatch.setattr(lottery, "_plan", plan)
    with pytest.raises(NotImplementedError):
        lottery.rewind(model, init)
    assert_same_state(before, state_of(model))


def test_a_snapshot_without_values_is_refused_before_anything_is_written():
    model, _ = pruned_model()
    with torch.device("meta"):
        ghost = rlp.models.BasicCNN(width=0.25)
    before = state_of(model)
    with pytest.raises(ValueError, match="meta tensor"):
        lottery.rewind(model, ghost.state_dict())
    assert_same_state(before, state_of(model))
