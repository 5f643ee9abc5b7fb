"""round_to: every channel group keeps a multiple of round_to channels (or all it has), the total stays within
round_to of the budget on the side of keeping, every method honours it, and sliced widths come out as multiples."""

import warnings

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune.masks import alive_channels
from torch_rlprune.selection import keep_floors, select_channels

from conftest import Blocks, conv_pairs

MODELS = {
    "basiccnn": (lambda: rlp.models.BasicCNN(), 32),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), 32),
    "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(weights=None), 32),
}
slow = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def prune_rounded(arch, amount, round_to, method=(prune.LnStructured, {"n": 1}), **kwargs):
    """The model pruned by global_structured with round_to; its channel groups; the kept total asked for."""
    make, side = MODELS[arch]
    torch.manual_seed(0)
    model = make().eval()
    x = torch.randn(1, 3, side, side)
    groups = rlp.channel_groups(model, x)
    total = sum(g.size for g in groups)
    pruning_method, method_kwargs = method
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # listed convs whose channels reach the output are skipped, as documented
        rlp.global_structured(conv_pairs(model), pruning_method, amount=amount, round_to=round_to, model=model,
                              example_inputs=x, groups=groups, **method_kwargs, **kwargs)  # fmt: skip
    return model, x, groups, total - round(amount * total)


def assert_rounded(groups, budget, round_to):
    """Every group keeps a multiple of round_to or all of its channels, never none; the total is the budget
    rounded up, short of one more round_to (within one round_to of the budget in all, not merely per group)."""
    kept = [int(alive_channels(g).sum()) for g in groups]
    for g, k in zip(groups, kept):
        assert k % round_to == 0 or k == g.size, f"{g.name} keeps {k} of {g.size}"
        assert k > 0, f"{g.name} lost every channel"
    assert budget <= sum(kept) < budget + round_to, (sum(kept), budget)
    return kept


@pytest.mark.parametrize("round_to", [8, 16])
@pytest.mark.parametrize("amount", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("arch", list(MODELS))
def test_every_group_keeps_a_multiple(arch, amount, round_to, one_thread):
    _, _, groups, budget = prune_rounded(arch, amount, round_to)
    assert_rounded(groups, budget, round_to)


@pytest.mark.parametrize("method", [(prune.RandomStructured, {"seed": 0}), ("l2", {}), ("bn_scale", {})])
def test_every_ranking_method_honours_round_to(method, one_thread):
    _, _, groups, budget = prune_rounded("resnet18", 0.6, 8, method=method)
    assert_rounded(groups, budget, 8)


def test_round_to_1_is_no_rounding(one_thread):
    plain, _, _, _ = prune_rounded("resnet18", 0.5, None)
    ones, _, _, _ = prune_rounded("resnet18", 0.5, 1)
    masks = [(n, b) for n, b in plain.named_buffers() if n.endswith("_mask")]
    assert masks
    for (name, mask), (_, other) in zip(masks, ((n, b) for n, b in ones.named_buffers() if n.endswith("_mask"))):
        assert torch.equal(mask, other), name


@pytest.mark.parametrize("round_to", [8, 16])
@pytest.mark.parametrize("arch", ["basiccnn", "resnet18"])
def test_sliced_widths_are_multiples(arch, round_to, one_thread):
    model, x, groups, budget = prune_rounded(arch, 0.7, round_to)
    dense_widths = [g.size for g in groups]
    small = rlp.slim(model, x)  # verified against the masked model
    widths = [m.out_channels for m in small.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % round_to == 0 for w in widths), widths
    assert sum(int(alive_channels(g).sum()) for g in groups) < sum(dense_widths)


def test_pruning_again_rounds_what_is_left(one_thread):
    """A group left at a width that is no multiple by earlier, unrounded pruning keeps a multiple or stays whole."""
    model = rlp.models.BasicCNN().eval()
    x = torch.randn(1, 3, 32, 32)
    groups = rlp.channel_groups(model, x)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.33, model=model, example_inputs=x,
                          groups=groups)  # fmt: skip
    before = [int(alive_channels(g).sum()) for g in groups]
    assert any(b % 8 for b in before)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.4, round_to=8, model=model,
                          example_inputs=x, groups=groups)  # fmt: skip
    after = [int(alive_channels(g).sum()) for g in groups]
    assert all(a % 8 == 0 or a == b for a, b in zip(after, before)), (before, after)
    assert sum(before) - round(0.4 * sum(before)) <= sum(after) < sum(before) - round(0.4 * sum(before)) + 8


def test_min_keep_is_rounded_up(one_thread):
    # min_keep=0.1 asks for 52 of the last layer's 512 filters, where the plain ranking leaves it at 85%;
    # rounded to 16, that floor must become 64, not 48.
    _, _, groups, _ = prune_rounded("basiccnn", 0.85, None, min_keep=0.1)
    assert int(alive_channels(groups[3]).sum()) == 52
    _, _, groups, budget = prune_rounded("basiccnn", 0.85, 16, min_keep=0.1)
    kept = assert_rounded(groups, budget, 16)
    assert all(k >= floor for k, floor in zip(kept, [16, 16, 32, 64])), kept


def test_a_layer_loses_every_filter_only_with_min_keep_0(one_thread):
    _, _, groups, budget = prune_rounded("basiccnn", 0.97, 16, min_keep=0)
    kept = [int(alive_channels(g).sum()) for g in groups]
    assert 0 in kept and all(k % 16 == 0 for k in kept), kept
    assert budget <= sum(kept) < budget + 16
    _, _, groups, budget = prune_rounded("basiccnn", 0.93, 16)  # the plain ranking keeps 9 of the last layer's
    assert_rounded(groups, budget, 16)


@slow
@given(kinds=st.lists(st.sampled_from(["plain", "residual", "depthwise", "concat", "se"]), min_size=1, max_size=5),
       amount=st.floats(0.0, 0.9), round_to=st.integers(2, 5), min_keep=st.integers(0, 2),
       method=st.sampled_from([(prune.LnStructured, {"n": 1}), (prune.RandomStructured, {"seed": 3})]))  # fmt: skip
def test_coupled_groups_keep_multiples(kinds, amount, round_to, min_keep, method):
    """Small nets of every coupling the tracer models (residual adds, depthwise ties, concats, SE gates)."""
    torch.manual_seed(0)
    model = Blocks(kinds)
    x = torch.randn(1, 3, 8, 8)
    groups = rlp.channel_groups(model, x)
    sizes = [g.size for g in groups]
    n_prune = round(amount * sum(sizes))
    floors = keep_floors([min(min_keep, s) for s in sizes], sizes, round_to)
    assume(n_prune <= sum(s - f for s, f in zip(sizes, floors)))  # the refusal is tested below
    pruning_method, kwargs = method
    rlp.global_structured(conv_pairs(model), pruning_method, amount=amount, min_keep=min_keep, round_to=round_to,
                          model=model, example_inputs=x, groups=groups, **kwargs)  # fmt: skip
    kept = [int(alive_channels(g).sum()) for g in groups]
    for size, floor, k in zip(sizes, floors, kept):
        assert k % round_to == 0 or k == size
        assert k >= floor
    assert sum(sizes) - n_prune <= sum(kept) < sum(sizes) - n_prune + round_to


@settings(max_examples=200, deadline=None)
@given(data=st.data(), round_to=st.integers(1, 17))
def test_select_channels_rounds_every_group(data, round_to):
    n_groups = data.draw(st.integers(1, 6))
    sizes = data.draw(st.lists(st.integers(1, 40), min_size=n_groups, max_size=n_groups))
    # Few distinct scores (one, often), so that ties within and across groups are common.
    values = st.integers(0, data.draw(st.integers(0, 3)))
    scores = [torch.tensor(data.draw(st.lists(values, min_size=s, max_size=s)), dtype=torch.float64) for s in sizes]
    alive = [torch.tensor(data.draw(st.lists(st.booleans(), min_size=s, max_size=s))) for s in sizes]
    min_keep = [data.draw(st.integers(0, s)) for s in sizes]
    n_alive = [int(a.sum()) for a in alive]
    free = sum(a - f for a, f in zip(n_alive, keep_floors(min_keep, n_alive, round_to)))
    n_prune = data.draw(st.integers(0, free))

    keep = select_channels(scores, alive, n_prune, min_keep, round_to=round_to)
    kept = [int(k.sum()) for k in keep]
    for k, a, was, m in zip(kept, n_alive, alive, keep_floors(min_keep, n_alive, round_to)):
        assert k % round_to == 0 or k == a
        assert k >= m
    for k, was in zip(keep, alive):
        assert not (k & ~was).any(), "a pruned channel came back"
    assert n_prune - round_to < sum(n_alive) - sum(kept) <= n_prune
    if round_to == 1:
        assert sum(n_alive) - sum(kept) == n_prune


@pytest.mark.parametrize("bad", [0, -8])
def test_round_to_below_1_is_a_value_error(bad):
    model = rlp.models.BasicCNN()
    with pytest.raises(ValueError, match=r"round_to=-?\d+; pass an int >= 1"):
        rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, round_to=bad, model=model,
                              example_inputs=torch.randn(1, 3, 32, 32))  # fmt: skip
    assert not prune.is_pruned(model)


@pytest.mark.parametrize("bad", [8.0, "8", True])
def test_round_to_of_another_type_is_a_type_error(bad):
    model = rlp.models.BasicCNN()
    with pytest.raises(TypeError, match="round_to must be an int >= 1"):
        rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, round_to=bad, model=model,
                              example_inputs=torch.randn(1, 3, 32, 32))  # fmt: skip


def test_budget_beyond_the_rounded_floors_is_refused():
    # Every layer of this net is narrower than 8, so with round_to=8 each keeps all of its channels.
    model = Blocks(["plain", "residual"])
    with pytest.raises(ValueError, match=r"min_keep rounded up to a multiple of round_to=8\); at most 0 can go"):
        rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, round_to=8, model=model,
                              example_inputs=torch.randn(1, 3, 8, 8))  # fmt: skip
    assert not prune.is_pruned(model)


def test_search_methods_validate_round_to():
    with pytest.raises(ValueError, match="round_to=0"):
        rlp.RLStructuredPruning(0.5, lambda m: 0.0, round_to=0)
    with pytest.raises(TypeError, match="round_to must be an int"):
        rlp.SimulatedAnnealingPruning(0.5, lambda m: 0.0, round_to=2.5)


@pytest.mark.parametrize("method", [rlp.RLStructuredPruning, rlp.SimulatedAnnealingPruning, rlp.RandomSearchPruning])
def test_searches_evaluate_and_return_rounded_keep_sets(method, one_thread):
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25)  # 16 + 32 + 64 + 128 filters
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    convs = conv_pairs(model)
    result = rlp.global_structured(convs, method, amount=0.6, round_to=8, model=model, example_inputs=x[:1],
                                   reward=rlp.rewards.NegativeLoss([(x, y)]), episodes=12, seed=0,
                                   progress=False)  # fmt: skip
    budget = 240 - round(0.6 * 240)
    for record in result.history:  # every candidate evaluated was rounded
        assert all(k % 8 == 0 for k in record["kept"]), record["kept"]
        assert budget <= sum(record["kept"]) < budget + 8
    kept = [int(m.weight_mask.flatten(1).any(1).sum()) for m, _ in convs]
    assert all(k % 8 == 0 and k > 0 for k in kept), kept
    assert kept == [int(result.best_keep[a:b].sum()) for a, b in [(0, 16), (16, 48), (48, 112), (112, 240)]]


def test_one_layer_search_rounds():
    conv = nn.Conv2d(3, 40, 3)
    rlp.rl_structured(conv, "weight", amount=0.5, reward=lambda m: 0.0, episodes=4, seed=0, progress=False,
                      round_to=16)  # fmt: skip
    assert int(conv.weight_mask.flatten(1).any(1).sum()) == 32  # 20 rounded up to a multiple of 16


def test_rounded_search_does_not_resume_an_unrounded_one(tmp_path):
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    common = dict(amount=0.5, example_inputs=x[:1], reward=rlp.rewards.NegativeLoss([(x, y)]), seed=0,
                  progress=False)  # fmt: skip
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25)
    rlp.global_structured(conv_pairs(model), rlp.RandomSearchPruning, model=model, episodes=2,
                          checkpoint=tmp_path / "plain.pt", **common)  # fmt: skip
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25)
    with pytest.raises(ValueError, match="round_to"):
        rlp.global_structured(conv_pairs(model), rlp.RandomSearchPruning, model=model, episodes=4, round_to=8,
                              resume=tmp_path / "plain.pt", **common)  # fmt: skip
