"""The same seed gives the same masks, for every criterion and every search, within a process and across processes
(whose hash seeds differ, so no result may depend on the order of a set or the id of an object)."""

import hashlib
import os
import pathlib
import subprocess
import sys

import pytest
import torch
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune.masks import alive_channels

from conftest import conv_pairs

SEARCHES = {"rl": rlp.RLStructuredPruning, "sa": rlp.SimulatedAnnealingPruning, "random_search": rlp.RandomSearchPruning}
SEEDED = ["random", "RandomStructured", *SEARCHES]
METHODS = [*rlp.criteria.CRITERIA, "LnStructured", "RandomStructured", *SEARCHES]


def masks(method, seed=0):
    """Build, 'train' and prune a small BasicCNN with ``method``; return its keep vector over all groups."""
    torch.manual_seed(1234)  # the model and the data; the method's own seed is ``seed``
    model = rlp.models.BasicCNN(width=0.25)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    init = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        model.train()(x)
    kwargs = {
        "l1": {}, "l2": {}, "bn_scale": {}, "bn_output": {}, "synflow": {}, "random": {"seed": seed},
        "snip": {"inputs": x, "targets": y}, "same_sign": {"init_state": init},
        "LnStructured": {"n": 1}, "RandomStructured": {"seed": seed},
    }.get(method)  # fmt: skip
    if kwargs is None:
        kwargs = {"reward": rlp.rewards.NegativeLoss([(x, y)]), "episodes": 12, "seed": seed, "progress": False}
    pruning_method = getattr(prune, method, None) or SEARCHES.get(method) or method
    groups = rlp.channel_groups(model, x[:1])
    rlp.global_structured(conv_pairs(model), pruning_method, amount=0.6, model=model, example_inputs=x[:1],
                          groups=groups, **kwargs)  # fmt: skip
    return torch.cat([alive_channels(g) for g in groups])


def digest(keep):
    return hashlib.sha256(keep.numpy().tobytes()).hexdigest()[:16]


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_masks(method, one_thread):
    first, second = masks(method), masks(method)
    assert torch.equal(first, second)
    assert int((~first).sum()) == round(0.6 * first.numel())
    if method in SEEDED:  # the seed matters: another one gives another mask
        assert not torch.equal(first, masks(method, seed=1))


def test_same_masks_in_other_processes_with_other_hash_seeds(one_thread):
    here = {m: digest(masks(m)) for m in METHODS}
    script = f"import sys; sys.path.insert(0, {str(pathlib.Path(__file__).parent)!r}); import test_determinism as t; "
    script += "import torch; torch.set_num_threads(1); print({m: t.digest(t.masks(m)) for m in t.METHODS})"
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == str(here), f"PYTHONHASHSEED={hash_seed}"
