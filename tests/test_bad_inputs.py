"""Every public entry point, given wrong input, fails with a clear ValueError/TypeError and leaves the model as it was.

Each case builds a fresh BasicCNN (a quarter of the width), calls one function wrongly, and checks the error type,
that the message names the problem, and that the model's state_dict, its pruning status and its modes are
unchanged.
"""

import math
import os

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune.search.controller import ReinforceController
from torch_rlprune.search.evaluation import CandidateEvaluator
from torch_rlprune.lottery import LotteryTicket, Snapshot, rewind
from torch_rlprune.search import AnnealingStrategy, RandomStrategy, run_search

from conftest import conv_pairs

X = torch.randn(8, 3, 32, 32)
Y = torch.randint(0, 10, (8,))


def convs(model):
    return conv_pairs(model)


def gs(net, method=prune.LnStructured, **kwargs):
    kwargs = {"n": 1, "amount": 0.5, "model": net, "example_inputs": X[:1], **kwargs}
    if method is not prune.LnStructured:
        kwargs.pop("n")
    return rlp.global_structured(convs(net), method, **kwargs)


def search(net, method=rlp.RLStructuredPruning, **kwargs):
    kwargs = {"reward": rlp.rewards.Accuracy([(X, Y)]), "episodes": 4, "progress": False, **kwargs}
    return gs(net, method, **kwargs)


def nan_reward(view):
    return math.nan


class NoConvs(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return y
        return -y


def corrupt(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def truncated_save(model, tmp_path):
    path = tmp_path / "model.pt"
    other = rlp.models.BasicCNN(width=0.25)
    gs(other)
    rlp.save(other, path, X[:1])
    path.write_bytes(path.read_bytes()[:100])
    return path


CASES = [
    # channel_groups
    ("groups: model not a module", lambda m, t: rlp.channel_groups("model", X[:1]), TypeError, "Module"),
    ("groups: inputs not tensors", lambda m, t: rlp.channel_groups(m, [[1.0]]), TypeError, "tensor"),
    ("groups: wrong input channels", lambda m, t: rlp.channel_groups(m, torch.randn(1, 4, 32, 32)), ValueError, "example_inputs"),
    ("groups: wrong input size", lambda m, t: rlp.channel_groups(m, torch.randn(1, 3, 16, 16)), ValueError, "example_inputs"),
    ("groups: inputs on another device", lambda m, t: rlp.channel_groups(m, X[:1].to("meta")), ValueError, "on meta but the model's parameters are on cpu"),
    ("groups: untraceable model", lambda m, t: rlp.channel_groups(Untraceable(), X[:1]), ValueError, "trace"),
    # global_structured
    ("gs: amount below 0", lambda m, t: gs(m, amount=-0.1), ValueError, "amount"),
    ("gs: amount above 1", lambda m, t: gs(m, amount=1.5), ValueError, "amount"),
    ("gs: amount a string", lambda m, t: gs(m, amount="half"), TypeError, "amount"),
    ("gs: amount NaN", lambda m, t: gs(m, amount=math.nan), ValueError, "amount"),
    ("gs: int amount too large", lambda m, t: gs(m, amount=10_000), ValueError, "amount"),
    ("gs: every filter", lambda m, t: gs(m, amount=1.0), ValueError, "min_keep"),
    ("gs: empty parameter list", lambda m, t: rlp.global_structured([], prune.LnStructured, n=1, amount=0.5, model=m, example_inputs=X[:1]), ValueError, "empty"),
    ("gs: not (module, name) pairs", lambda m, t: rlp.global_structured([m.fc], prune.LnStructured, n=1, amount=0.5, model=m, example_inputs=X[:1]), TypeError, "module, name"),
    ("gs: module without the parameter", lambda m, t: rlp.global_structured([(m.features[0], "kernel")], prune.LnStructured, n=1, amount=0.5, model=m, example_inputs=X[:1]), ValueError, "kernel"),
    ("gs: not a conv weight", lambda m, t: rlp.global_structured([(m.fc, "weight")], prune.LnStructured, n=1, amount=0.5, model=m, example_inputs=X[:1]), ValueError, "conv"),
    ("gs: unstructured method", lambda m, t: gs(m, prune.L1Unstructured), TypeError, "structured"),
    ("gs: method not a pruning method", lambda m, t: gs(m, int), TypeError, "pruning_method"),
    ("gs: inputs on another device", lambda m, t: gs(m, example_inputs=X[:1].to("meta")), ValueError, ".to('cpu')"),
    ("gs: unknown criterion", lambda m, t: gs(m, "l7"), ValueError, "l7"),
    ("gs: LnStructured without n", lambda m, t: rlp.global_structured(convs(m), prune.LnStructured, amount=0.5, model=m, example_inputs=X[:1]), TypeError, "n"),
    ("gs: model not a module", lambda m, t: gs(m, model="net"), TypeError, "model"),
    ("gs: min_keep negative", lambda m, t: gs(m, min_keep=-1), ValueError, "min_keep"),
    ("gs: unknown normalize", lambda m, t: gs(m, normalize="zscore"), ValueError, "normalize"),
    ("gs: params of another model", lambda m, t: rlp.global_structured(convs(rlp.models.BasicCNN(width=0.25)), prune.LnStructured, n=1, amount=0.5, model=m, example_inputs=X[:1]), ValueError, "model"),
    ("gs: model without convs", lambda m, t: rlp.global_structured([(NoConvs().fc, "weight")], prune.LnStructured, n=1, amount=0.5, model=NoConvs(), example_inputs=X[:1]), ValueError, "conv"),
    ("gs: the only filter of a 1-filter layer", lambda m, t: _one_filter_layer(), ValueError, "min_keep"),
    ("gs: importance score of the wrong shape", lambda m, t: rlp.global_structured(convs(m), prune.LnStructured, {(m.features[0], "weight"): torch.ones(3)}, n=1, amount=0.5, model=m, example_inputs=X[:1]), ValueError, "shape"),
    # criteria
    ("snip: targets of another batch size", lambda m, t: gs(m, "snip", inputs=X, targets=Y[:3]), ValueError, "batch"),
    ("snip: batch on another device", lambda m, t: gs(m, "snip", inputs=X.to("meta"), targets=Y), ValueError, "inputs and targets are on meta"),
    ("synflow: inputs on another device", lambda m, t: rlp.criteria.synflow(m, X[:1].to("meta")), ValueError, "example_inputs are on meta"),
    ("snip: inputs not tensors", lambda m, t: gs(m, "snip", inputs="x", targets=Y), TypeError, "tensor"),
    ("same_sign: snapshot of another model", lambda m, t: gs(m, "same_sign", init_state=nn.Conv2d(1, 1, 1).state_dict()), ValueError, "init_state"),
    # search methods
    ("rl: episodes 0", lambda m, t: search(m, episodes=0), ValueError, "episodes"),
    ("rl: episodes a float", lambda m, t: search(m, episodes=2.5), ValueError, "episodes"),
    ("rl: batch 0", lambda m, t: search(m, batch=0), ValueError, "batch must be an int >= 1"),
    ("rl: checkpoint a directory", lambda m, t: search(m, checkpoint=t), ValueError, "is a directory; pass a file path"),
    ("sa: start a list", lambda m, t: search(m, rlp.SimulatedAnnealingPruning, start=[True] * 240), ValueError,
     "start must be a boolean tensor of shape (240,)"),
    ("sa: start of another size", lambda m, t: search(m, rlp.SimulatedAnnealingPruning, start=torch.ones(10, dtype=torch.bool)),
     ValueError, "start must be a boolean tensor of shape (240,)"),
    ("sa: start keeps another count", lambda m, t: search(m, rlp.SimulatedAnnealingPruning, start=torch.ones(240, dtype=torch.bool)),
     ValueError, "start keeps 240 filters but the budget keeps 120"),
    ("rl: reward not callable", lambda m, t: search(m, reward=0.9), TypeError, "reward"),
    ("rl: reward returns NaN", lambda m, t: search(m, reward=nan_reward), ValueError, "nan_reward returned nan"),
    ("rl: reward returns inf", lambda m, t: search(m, reward=lambda v: math.inf), ValueError, "finite"),
    ("rl: reward returns a string", lambda m, t: search(m, reward=lambda v: "0.5"), TypeError, "number"),
    ("rl: reward returns a vector", lambda m, t: search(m, reward=lambda v: torch.ones(3)), TypeError, "number"),
    ("rl: reward raises", lambda m, t: search(m, reward=lambda v: 1 / 0), ZeroDivisionError, "division"),
    ("rl: unknown option", lambda m, t: search(m, temperature=3), TypeError, "unexpected"),
    ("rl: bad lr", lambda m, t: search(m, lr=-1.0), ValueError, "lr"),
    ("rl: dim 1", lambda m, t: search(m, dim=1), ValueError, "dim"),
    ("rl: with importance scores", lambda m, t: rlp.global_structured(convs(m), rlp.RLStructuredPruning, {}, amount=0.5, model=m, example_inputs=X[:1], reward=lambda v: 0.0, episodes=2, progress=False), ValueError, "importance_scores"),
    ("sa: t_end above t_start", lambda m, t: search(m, rlp.SimulatedAnnealingPruning, t_start=0.01, t_end=0.1), ValueError, "t_end"),
    ("rl: no model", lambda m, t: search(m, model=None), TypeError, "model"),
    ("rl: resume from a corrupted checkpoint", lambda m, t: search(m, resume=corrupt(t, "bad.pt", b"garbage")), ValueError, "not a readable search checkpoint"),
    ("rl: resume from a truncated checkpoint", lambda m, t: search(m, resume=truncated_save(m, t)), ValueError, "search checkpoint"),
    ("rl: checkpoint in a missing folder", lambda m, t: search(m, checkpoint=t / "no" / "such" / "search.pt"), ValueError, "cannot write the checkpoint"),
    ("rl: checkpoint in a read-only folder", lambda m, t: search(m, checkpoint=_read_only(t) / "search.pt"), ValueError, "cannot write the checkpoint"),
    ("rl: one-layer apply without a reward", lambda m, t: rlp.rl_structured(m.features[0], "weight", 0.5, reward=None), TypeError, "reward"),
    # rewards
    ("accuracy: loader a tensor", lambda m, t: rlp.rewards.Accuracy(X), TypeError, "loader"),
    ("accuracy: batches 0", lambda m, t: rlp.rewards.Accuracy([(X, Y)], batches=0), ValueError, "batches"),
    ("accuracy: empty loader", lambda m, t: rlp.rewards.Accuracy([])(m), ValueError, "no batch"),
    ("accuracy: batches without targets", lambda m, t: rlp.rewards.Accuracy([X])(m), TypeError, "pair"),
    ("macs-aware: plain module without example inputs", lambda m, t: rlp.rewards.MACsAware([(X, Y)])(m), TypeError, "example_inputs"),
    # search loop and controller
    ("run_search: batch 0", lambda m, t: run_search(RandomStrategy([4], 2, [1]), lambda k: 0.0, episodes=4, batch=0), ValueError, "batch"),
    ("run_search: episodes a float", lambda m, t: run_search(RandomStrategy([4], 2, [1]), lambda k: 0.0, episodes=4.0), TypeError, "episodes"),
    ("run_search: resume of another search", lambda m, t: run_search(AnnealingStrategy([4], 2, [1], 4), lambda k: 0.0, episodes=4, resume=_random_checkpoint(t)), ValueError, "another search"),
    ("controller: features of the wrong length", lambda m, t: ReinforceController(torch.zeros(5, 1), [4], 2, [1]), ValueError, "rows"),
    ("controller: n_keep above the filters", lambda m, t: ReinforceController(torch.zeros(4, 1), [4], 5, [1]), ValueError, "n_keep"),
    ("controller: unknown baseline", lambda m, t: ReinforceController(torch.zeros(4, 1), [4], 2, [1], baseline="median"), ValueError, "baseline"),
    ("evaluator: unknown norms", lambda m, t: CandidateEvaluator(m, rlp.channel_groups(m, X[:1]), X[:1], norms="group"), ValueError, "norms"),
    ("evaluator: unknown mode", lambda m, t: CandidateEvaluator(m, rlp.channel_groups(m, X[:1]), X[:1], mode="prune"), ValueError, "mode"),
    ("rl: unknown evaluation", lambda m, t: search(m, evaluation="dense"), ValueError, "evaluation must be"),
    ("evaluator: keep masks of the wrong count", lambda m, t: CandidateEvaluator(m, rlp.channel_groups(m, X[:1]), X[:1]).view([torch.ones(16, dtype=torch.bool)]), ValueError, "one keep mask per group"),
    # metrics
    ("metrics: model not a module", lambda m, t: rlp.metrics.model_stats(None, X[:1]), TypeError, "Module"),
    ("metrics: inputs on another device", lambda m, t: rlp.metrics.count_macs(m, X[:1].to("meta")), ValueError, "on meta"),
    ("metrics: wrong input shape", lambda m, t: rlp.metrics.count_macs(m, torch.randn(1, 3, 8, 8)), ValueError, "example_inputs"),
    # slim, save, load
    ("slim: model not a module", lambda m, t: rlp.slim("net", X[:1]), TypeError, "Module"),
    ("slim: wrong input shape", lambda m, t: rlp.slim(m, torch.randn(1, 3, 16, 16)), ValueError, "example_inputs"),
    ("slim: inputs on another device", lambda m, t: rlp.slim(m, X[:1].to("meta")), ValueError, "on meta"),
    ("slim: masks disagree in a coupled group", lambda m, t: rlp.slim(m, X[:1]), ValueError, "features"),
    ("slim: untraceable model", lambda m, t: rlp.slim(_pruned_untraceable(), X[:1]), ValueError, "trace"),
    # lottery
    ("rewind: snapshot of another width", lambda m, t: rewind(m, Snapshot.capture(rlp.models.BasicCNN(width=0.5))), ValueError, "does not fit this model"),
    ("rewind: to a number", lambda m, t: rewind(m, 3), TypeError, "cannot rewind to a int"),
    ("rewind: corrupted snapshot file", lambda m, t: rewind(m, corrupt(t, "init.pt", b"junk")), ValueError, "snapshot"),
    ("ticket: unknown snapshot name", lambda m, t: LotteryTicket(m).rewind(m, "epoch9"), ValueError, "no snapshot named 'epoch9'"),
    ("ticket: negative epoch", lambda m, t: LotteryTicket(m, epochs=(-1,)), ValueError, "non-negative int"),
    ("load: not a save file", lambda m, t: rlp.load(corrupt(t, "x.pt", b"junk"), m, X[:1]), ValueError, "torch-rlprune"),
    ("load: truncated save file", lambda m, t: rlp.load(truncated_save(m, t), m, X[:1]), ValueError, "torch-rlprune"),
    ("load: another architecture", lambda m, t: rlp.load(_saved_resnet(t), m, X[:1]), ValueError, "architecture"),
    ("load: missing file", lambda m, t: rlp.load(t / "nothing.pt", m, X[:1]), FileNotFoundError, "nothing.pt"),
]


def _read_only(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o500)
    if os.access(folder, os.W_OK):  # root ignores permissions: make the folder a file's child instead
        folder.chmod(0o700)
        (tmp_path / "file").write_text("")
        return tmp_path / "file"
    return folder


def _pruned_untraceable():
    model = Untraceable()
    prune.ln_structured(model.conv, "weight", amount=0.5, n=1, dim=0)
    return model


def _random_checkpoint(tmp_path):
    path = tmp_path / "random.pt"
    run_search(RandomStrategy([4], 2, [1], seed=0), lambda k: 0.0, episodes=2, checkpoint=path, progress=False)
    return path


def _disagreeing(model):
    """Mask ``model``, then let a norm prune a channel that the conv of its group keeps."""
    gs(model)
    kept = model.features[0].weight_mask.flatten(1).any(1).nonzero()[0]
    model.features[3].weight_mask[kept] = 0


# Cases about a pruned model get it pruned first; the model must then stay as the preparation left it.
PREPARE = {"slim: wrong input shape": gs, "slim: inputs on another device": gs, "rewind: snapshot of another width": gs, "slim: masks disagree in a coupled group": _disagreeing}


def _saved_resnet(tmp_path):
    import torchvision

    other = torchvision.models.resnet18(num_classes=10)
    path = tmp_path / "resnet.pt"
    rlp.save(masked_any(other), path, X[:1])
    return path


class OneFilter(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, 3)
        self.fc = nn.Linear(30 * 30, 10)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


def _one_filter_layer():
    net = OneFilter()
    return rlp.global_structured([(net.conv, "weight")], prune.LnStructured, n=1, amount=1, model=net,
                                 example_inputs=X[:1])  # fmt: skip


def masked_any(model):
    rlp.global_structured(convs(model), prune.LnStructured, n=1, amount=0.3, model=model, example_inputs=X[:1])
    return model


def test_the_battery_is_large_enough():
    assert len(CASES) >= 40
    assert len({name for name, *_ in CASES}) == len(CASES)


@pytest.mark.parametrize("name, call, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_a_clear_error_and_leaves_the_model_alone(name, call, error, message, tmp_path):
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25).train()
    if name in PREPARE:
        PREPARE[name](model)
    pruned = prune.is_pruned(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error) as caught:
        call(model, tmp_path)
    assert message.lower() in str(caught.value).lower(), f"{name}: message {str(caught.value)!r} lacks {message!r}"
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before), name
    assert prune.is_pruned(model) == pruned and model.training
