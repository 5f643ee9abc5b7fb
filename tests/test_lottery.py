import os
import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune import lottery, serialization
from torch_rlprune.lottery import LotteryTicket, Snapshot, iterative_pruning, reinitialize, rewind
from torch_rlprune.slicing import KEPT_ATTR

from conftest import Blocks, conv_pairs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def data(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def train_steps(model, x, y, steps=3, lr=0.05):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    model.eval()


def prune_half(model, x):
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x[:1])


def masks_of(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k.endswith("_mask")}


def dense_state(model):
    """Effective dense tensors by plain name: ``*_orig`` under the plain name, masks left out."""
    return {k: v.clone() for k, v in lottery._dense(model.state_dict()).items()}


@pytest.fixture
def trained_pruned():
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25)
    x, y = data()
    ticket = LotteryTicket(model)
    train_steps(model, x, y)
    prune_half(model, x)
    return model, ticket, x, y


def assert_rewound_to(model, snapshot):
    for key, value in dense_state(model).items():
        assert torch.equal(value, snapshot.state[key]), key


def test_rewind_restores_unpruned_weights_and_keeps_the_masks(trained_pruned):
    model, ticket, _, _ = trained_pruned
    init = ticket["init"]
    masks = masks_of(model)
    assert any(not torch.equal(v, init.state[k]) for k, v in dense_state(model).items())

    assert ticket.rewind(model, "init") is model

    assert_rewound_to(model, init)
    for key, mask in masks_of(model).items():
        assert torch.equal(mask, masks[key]), key
    for conv, _ in conv_pairs(model):
        pruned = ~conv.weight_mask.flatten(1).any(1)
        assert 0 < int(pruned.sum()) < pruned.numel()
        assert torch.equal(conv.weight, conv.weight_orig * conv.weight_mask)  # refreshed before any forward
        assert conv.weight[pruned].abs().sum() == 0 and conv.bias[pruned].abs().sum() == 0
        # Kept filters are back at init, but for the columns of pruned channels of the conv before (masked too).
        expected = init.state[f"{name_of(model, conv)}.weight"] * conv.weight_mask
        assert torch.equal(conv.weight[~pruned], expected[~pruned]) and conv.weight[~pruned].any()


def name_of(model, module):
    return next(n for n, m in model.named_modules() if m is module)


def test_rewind_restores_batch_norm_running_statistics(trained_pruned):
    model, ticket, _, _ = trained_pruned
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(bn.num_batches_tracked) == 3 for bn in bns)
    assert all(not torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean)) for bn in bns)
    ticket.rewind(model, "init")
    for bn in bns:
        assert torch.equal(bn.running_mean, torch.zeros_like(bn.running_mean))
        assert torch.equal(bn.running_var, torch.ones_like(bn.running_var))
        assert int(bn.num_batches_tracked) == 0


def test_snapshots_of_dense_and_pruned_models_share_names_and_shapes(trained_pruned):
    model, ticket, _, _ = trained_pruned
    pruned = Snapshot.capture(model, "pruned")
    assert pruned.shapes == ticket["init"].shapes
    assert not any(k.endswith(("_orig", "_mask")) for k in pruned.state)


@pytest.mark.parametrize("inplace", [False, True])
def test_rewinding_a_sliced_model_equals_slicing_the_rewound_masked_model(trained_pruned, inplace):
    model, ticket, x, y = trained_pruned
    sliced = rlp.slim(rlp.slicing.copy_pruned(model), x[:1], inplace=inplace)
    train_steps(sliced, x, y)  # the sliced model trains on: its values now differ from both snapshots

    ticket.rewind(sliced, "init")
    expected = rlp.slim(ticket.rewind(model, "init"), x[:1])

    assert sliced.state_dict().keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        assert torch.equal(sliced.state_dict()[key], value), key
    assert torch.equal(sliced.eval()(x), expected.eval()(x))


def test_rewinding_a_model_sliced_twice_composes_the_kept_channels(trained_pruned):
    model, ticket, x, _ = trained_pruned
    once = rlp.slim(model, x[:1])
    first = once.features[4]._rlprune_kept[0][1].clone()
    prune_half(once, x)
    kept_now = once.features[4].weight_mask.flatten(1).any(1).nonzero().reshape(-1)
    twice = rlp.slim(once, x[:1])
    ticket.rewind(twice, "init")
    size, kept = getattr(twice.features[4], KEPT_ATTR)[0]
    assert size == 32 and torch.equal(kept, first[kept_now])
    init = ticket["init"].state
    in_kept = getattr(twice.features[4], KEPT_ATTR)[1][1]
    assert torch.equal(twice.features[4].weight, init["features.4.weight"][kept][:, in_kept])
    assert torch.equal(twice.features[7].running_var, init["features.7.running_var"][kept])


def test_a_model_rebuilt_by_load_rewinds_too(trained_pruned, tmp_path):
    model, ticket, x, _ = trained_pruned
    rlp.save(model, tmp_path / "small.pt", x[:1])
    loaded = rlp.load(tmp_path / "small.pt", rlp.models.BasicCNN(width=0.25), x[:1])
    ticket.rewind(loaded, "init")
    expected = rlp.slim(ticket.rewind(model, "init"), x[:1])
    assert torch.equal(loaded.eval()(x), expected.eval()(x))


def test_a_snapshot_of_another_architecture_is_refused_naming_the_first_mismatch():
    snapshot = Snapshot.capture(rlp.models.BasicCNN(width=0.5), "wide")
    with pytest.raises(ValueError, match=r"'features\.0\.weight' should have shape \(16, 3, 3, 3\) but the "
                                         r"snapshot's has shape \(32, 3, 3, 3\)"):  # fmt: skip
        rewind(rlp.models.BasicCNN(width=0.25), snapshot)
    with pytest.raises(ValueError, match=r"snapshot 'blocks' does not fit this model: it has no 'features\.0\.weight'"):
        rewind(rlp.models.BasicCNN(width=0.25), Snapshot.capture(Blocks(["plain"]), "blocks"))


def test_a_failed_rewind_leaves_the_model_untouched(trained_pruned):
    model, ticket, x, _ = trained_pruned
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init = ticket["init"]
    state = dict(init.state)
    state["fc.weight"] = state["fc.weight"][:, :-1]  # the last tensor in order: every other one fits
    with pytest.raises(ValueError, match="'fc.weight'"):
        rewind(model, Snapshot("broken", state))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key

    # A snapshot of a sliced model cannot give back the channels slicing dropped.
    sliced = rlp.slim(model, x[:1])
    with pytest.raises(ValueError, match="sliced away"):
        rewind(model, Snapshot.capture(sliced, "sliced"))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_reinitialize_changes_every_weight_but_no_shape_and_keeps_the_masks(trained_pruned):
    model, _, _, _ = trained_pruned
    before = dense_state(model)
    masks = masks_of(model)
    rng = torch.get_rng_state()
    assert reinitialize(model, seed=3) is model
    assert torch.equal(torch.get_rng_state(), rng)  # a seeded reinit leaves the global random state alone

    after = dense_state(model)
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            name = name_of(model, module)
            assert (after[f"{name}.weight"] != before[f"{name}.weight"]).all(), name
            assert (after[f"{name}.bias"] != before[f"{name}.bias"]).all(), name
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.running_mean, torch.zeros_like(module.running_mean))
            assert int(module.num_batches_tracked) == 0
            assert torch.equal(module.weight_orig, torch.ones_like(module.weight_orig))
    for key, mask in masks_of(model).items():
        assert torch.equal(mask, masks[key])
    for conv, _ in conv_pairs(model):
        assert torch.equal(conv.weight, conv.weight_orig * conv.weight_mask)

    # Same seed, same weights; and rewinding to a random snapshot of that seed is the same control.
    other = rlp.slicing.copy_pruned(model)
    reinitialize(other, seed=3)
    assert all(torch.equal(v, after[k]) for k, v in dense_state(other).items())
    rewind(other, LotteryTicket.random_like(model, seed=5))
    reinitialize(model, seed=5)
    assert all(torch.equal(v, dense_state(model)[k]) for k, v in dense_state(other).items())


def test_reinitialize_keeps_a_sliced_model_s_shapes(trained_pruned):
    model, _, x, _ = trained_pruned
    sliced = rlp.slim(model, x[:1])
    before = dense_state(sliced)
    reinitialize(sliced)
    after = dense_state(sliced)
    assert {k: v.shape for k, v in after.items()} == {k: v.shape for k, v in before.items()}
    assert not torch.equal(after["features.4.weight"], before["features.4.weight"])
    sliced(x)


def test_reinitialize_refuses_a_module_without_reset_parameters_and_changes_nothing():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.scale

    model = nn.Sequential(nn.Linear(3, 3), Scale())
    before = dense_state(model)
    with pytest.raises(ValueError, match=r"'1' \(Scale\) own parameters but have no reset_parameters"):
        reinitialize(model)
    assert all(torch.equal(v, before[k]) for k, v in dense_state(model).items())


def test_random_snapshot_has_the_init_shapes_and_rewinds_a_sliced_model(trained_pruned):
    model, ticket, x, _ = trained_pruned
    random = ticket.random_snapshot(seed=0)
    assert "random" in ticket and random.shapes == ticket["init"].shapes
    assert not torch.equal(random.state["features.0.weight"], ticket["init"].state["features.0.weight"])
    sliced = rlp.slim(model, x[:1])
    ticket.rewind(sliced, "random")
    expected = rlp.slim(rewind(model, random), x[:1])
    assert torch.equal(sliced.eval()(x), expected.eval()(x))


def test_step_snapshots_exactly_the_listed_epochs():
    model = rlp.models.BasicCNN(width=0.125)
    x, y = data(n=4)
    ticket = LotteryTicket(model, epochs=(5, 0, 2))
    assert ticket.epochs == (0, 2, 5)
    taken = {}
    for epoch in range(7):
        if epoch:
            train_steps(model, x, y, steps=1)
        snapshot = ticket.step(epoch)
        assert (snapshot is not None) == (epoch in (0, 2, 5))
        if snapshot is not None:
            taken[epoch] = dense_state(model)
    assert ticket.names == ["init", "epoch0", "epoch2", "epoch5"]
    for epoch, state in taken.items():
        assert all(torch.equal(ticket[f"epoch{epoch}"].state[k], v) for k, v in state.items())
    assert not torch.equal(ticket["epoch2"].state["fc.weight"], ticket["epoch5"].state["fc.weight"])


def test_disk_snapshots_load_with_weights_only_and_carry_names_and_shapes(tmp_path):
    model = rlp.models.BasicCNN(width=0.125)
    ticket = LotteryTicket(model, epochs=(1,), directory=tmp_path / "ticket")
    x, y = data(n=4)
    train_steps(model, x, y, steps=1)
    ticket.step(1)
    assert sorted(os.listdir(tmp_path / "ticket")) == ["epoch1.pt", "init.pt"]
    assert ticket.path("epoch1") == tmp_path / "ticket" / "epoch1.pt"

    raw = torch.load(tmp_path / "ticket" / "init.pt", weights_only=True)
    assert raw["format"] == "torch-rlprune/snapshot" and raw["names"][0] == "features.0.weight"
    assert raw["shapes"]["features.0.weight"] == [8, 3, 3, 3] and raw["shapes"]["fc.weight"] == [10, 64 * 16]

    prune_half(model, x)
    ticket.rewind(model, "init")
    assert_rewound_to(model, ticket["init"])
    ticket.rewind(model, tmp_path / "ticket" / "epoch1.pt")  # a path works as well as a name
    assert_rewound_to(model, Snapshot.load(tmp_path / "ticket" / "epoch1.pt"))


@pytest.mark.parametrize("failing", ["torch.save", "os.replace"])
def test_an_interrupted_write_leaves_the_previous_snapshot_intact(tmp_path, monkeypatch, failing):
    model = nn.Linear(4, 2)
    ticket = LotteryTicket(model, directory=tmp_path)
    old = Snapshot.load(tmp_path / "init.pt")
    with torch.no_grad():
        model.weight.add_(1.0)

    def torn_save(obj, f, *args, **kwargs):
        f.write(b"half a snapshot")
        raise OSError("disk full")

    def no_replace(*args, **kwargs):
        raise OSError("power cut")

    if failing == "torch.save":
        monkeypatch.setattr(torch, "save", torn_save)
    else:
        monkeypatch.setattr(serialization.os, "replace", no_replace)
    with pytest.raises(OSError):
        ticket.snapshot("init")
    monkeypatch.undo()

    assert os.listdir(tmp_path) == ["init.pt"]  # no temporary file left behind
    kept = Snapshot.load(tmp_path / "init.pt")
    assert all(torch.equal(kept.state[k], v) for k, v in old.state.items())
    assert not torch.equal(kept.state["weight"], model.weight.detach())


def test_a_damaged_snapshot_file_is_refused(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a snapshot")
    with pytest.raises(ValueError, match="not a readable snapshot"):
        rewind(nn.Linear(2, 2), tmp_path / "bad.pt")
    torch.save({"weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a torch-rlprune snapshot"):
        Snapshot.load(tmp_path / "other.pt")


def test_a_plain_state_dict_is_a_snapshot_too(trained_pruned):
    model, _, _, _ = trained_pruned
    dense = rlp.models.BasicCNN(width=0.25)
    rewind(model, dense.state_dict())
    assert torch.equal(model.features[0].weight_orig, dense.features[0].weight)
    assert torch.equal(model.fc.weight_orig, dense.fc.weight)  # the flattened channels of pruned filters are masked


def test_bad_inputs_are_explained():
    model = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        LotteryTicket("model")
    with pytest.raises(TypeError, match="epochs must be a sequence"):
        LotteryTicket(model, epochs=3)
    with pytest.raises(ValueError, match="non-negative int"):
        LotteryTicket(model, epochs=(0, -2))
    ticket = LotteryTicket(model, epochs=(1,))
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="an epoch must be a non-negative int"):
            ticket.step(bad)
    with pytest.raises(ValueError, match="pass a name or an epoch"):
        ticket.snapshot()
    with pytest.raises(ValueError, match="not a usable snapshot name"):
        ticket.snapshot("../escape")
    with pytest.raises(ValueError, match=r"no snapshot named 'epoch9'; the ticket has 'init'"):
        ticket.rewind(model, "epoch9")
    with pytest.raises(ValueError, match=r"ticket\.rewind\(model, 'init'\)"):
        rewind(model, "init")
    with pytest.raises(TypeError, match="cannot rewind to a int"):
        rewind(model, 3)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        rewind("model", ticket["init"])
    with pytest.raises(ValueError, match="rounds must be a positive int"):
        iterative_pruning(model, lambda m, r: None, lambda m, r: None, 0, example_inputs=torch.randn(1, 2))
    with pytest.raises(TypeError, match="prune_fn must be a callable"):
        iterative_pruning(model, lambda m, r: None, "l1", 1, example_inputs=torch.randn(1, 2))


def test_iterative_pruning_prunes_more_each_round_and_rewinds_every_round():
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25)
    x, y = data()
    ticket = LotteryTicket(model, epochs=(1,))
    seen, epoch1 = [], {}

    def train_fn(model, round_):
        seen.append(dense_state(model))
        for epoch in (1, 2):
            train_steps(model, x, y, steps=1)
            ticket.step(epoch)  # later rounds take "epoch1" again; the rewind point stays round 0's
            if round_ == 0 and epoch == 1:
                epoch1.update(ticket["epoch1"].state)
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())

    records = iterative_pruning(model, train_fn, lambda m, r: prune_half(m, x), 3, "epoch1", ticket,
                                example_inputs=x[:1])  # fmt: skip

    assert [r.round for r in records] == [0, 1, 2]
    assert [r.sparsity for r in records] == [0.0, 0.5, 0.75]
    assert [r.pruned_to for r in records] == [0.5, 0.75, 0.875]
    assert [r.filters_kept for r in records] == [240, 120, 60]
    assert records[0].params_kept > records[1].params_kept > records[2].params_kept
    assert all(0.0 <= r.accuracy <= 1.0 for r in records)
    # Every round after the first, and the final model, start from round 0's epoch-1 weights.
    for state in seen[1:] + [dense_state(model)]:
        assert all(torch.equal(value, epoch1[key]) for key, value in state.items())
    assert not torch.equal(seen[0]["fc.weight"], epoch1["fc.weight"])
    assert not torch.equal(ticket["epoch1"].state["fc.weight"], epoch1["fc.weight"])
    assert abs(rlp.metrics.model_stats(model, x[:1]).sparsity - 0.875) < 1e-9


def test_lottery_example_runs_with_tiny_settings(monkeypatch, capsys):
    argv = ["--synthetic", "--width", "0.125", "--train-size", "64", "--val-size", "32", "--test-size", "32",
            "--k", "1", "--epochs", "1", "--episodes", "4", "--amount", "0.5", "--batch-size", "32"]  # fmt: skip
    monkeypatch.setattr("sys.argv", ["lottery_basiccnn.py", *argv])
    result = runpy.run_path(str(EXAMPLES / "lottery_basiccnn.py"), run_name="example")["main"](argv)
    assert result["filters"] == 120 and result["filters_kept"] == 60
    assert sum(m.out_channels for m in result["model"].modules() if isinstance(m, nn.Conv2d)) == 60
    assert not prune.is_pruned(result["model"])
    for arm in ("ticket", "random_reinit"):
        assert 0.0 <= result[arm]["accuracy"] <= 1.0
        assert result[arm]["filters_kept"] == 60
    out = capsys.readouterr().out
    assert "ticket" in out and "random re-init" in out
