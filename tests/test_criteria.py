import copy

import pytest
import torch
from torch import nn

from torch_rlprune import criteria
from torch_rlprune.groups import channel_groups
from torch_rlprune.masks import apply_channel_masks
from torch_rlprune.models import BasicCNN

from conftest import Blocks

X4 = torch.randn(6, 1, 4, 4)
X32 = torch.randn(1, 3, 32, 32)


def tiny():
    """Conv(1 -> 3, 3x3) -> BN -> ReLU -> Flatten -> Linear(12 -> 2) on 4x4 inputs.

    Channel c of the conv feeds columns 4c .. 4c+3 of the Linear.
    """
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))


def small_cnn():
    torch.manual_seed(0)
    return BasicCNN(width=0.25)  # filters 16, 32, 64, 128


def convs_of(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def scores_of(scores, model):
    return [scores[(conv, "weight")] for conv in convs_of(model)]


def call(name, model, x, targets=None, init_state=None):
    """Run a criterion with the arguments it needs."""
    if name in ("bn_scale", "bn_output", "synflow"):
        return criteria.get(name)(model, x)
    if name == "snip":
        return criteria.snip(model, x, torch.arange(x.shape[0]) % 2 if targets is None else targets)
    if name == "same_sign":
        return criteria.same_sign(model, init_state or {k: -v for k, v in model.state_dict().items()})
    if name == "random":
        return criteria.random(model, seed=0)
    return criteria.get(name)(model)


ALL = sorted(criteria.CRITERIA)


# ---- hand-built cases ---------------------------------------------------------------------------------------


def test_l1_l2_equal_hand_computed_norms():
    model = tiny()
    with torch.no_grad():
        w = model[0].weight
        w[0].fill_(1.0)  # L1 9, L2 3
        w[1].fill_(-2.0)  # L1 18, L2 6
        w[2].zero_()
        w[2, 0, 1, 1] = 0.5  # L1 0.5, L2 0.5
    l1 = criteria.l1(model)[(model[0], "weight")]
    l2 = criteria.l2(model)[(model[0], "weight")]
    assert torch.allclose(l1, torch.tensor([9.0, 18.0, 0.5]))
    assert torch.allclose(l2, torch.tensor([3.0, 6.0, 0.5]))
    assert l1.argmax() == l2.argmax() == 1
    assert l1.dtype == l2.dtype == torch.float32 and not l1.requires_grad


def test_bn_scale_follows_gamma():
    model = tiny()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, -3.0, 1.0]))
    groups = channel_groups(model, X4)
    for scores in (criteria.bn_scale(model, X4), criteria.bn_scale(model, groups=groups)):
        assert list(scores) == [(model[0], "weight")]
        assert torch.allclose(scores[(model[0], "weight")], torch.tensor([0.1, 3.0, 1.0]))


def test_bn_output_weighs_gamma_by_the_running_spread_and_zeroes_dead_channels():
    model = tiny()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([0.1, -3.0, 1.0]))
        model[1].running_var.copy_(torch.tensor([1.0, 1e-45, 3.0]))  # channel 1 never varied: its norm outputs beta
    scores = criteria.bn_output(model, X4)[(model[0], "weight")]
    eps = model[1].eps
    assert torch.allclose(scores, torch.tensor([0.1 * (1 / (1 + eps)) ** 0.5, 0.0, (3 / (3 + eps)) ** 0.5]))
    assert criteria.bn_scale(model, X4)[(model[0], "weight")][1] == 3.0  # |gamma| alone keeps the dead channel


def test_bn_scale_without_affine_counts_one():
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, affine=False), nn.Flatten(), nn.Linear(12, 2))
    assert torch.equal(criteria.bn_scale(model, X4)[(model[0], "weight")], torch.ones(3))


def test_bn_scale_sums_the_norms_of_coupled_filters():
    # plain conv -> depthwise conv (tied) -> residual conv (coupled by the add): one group, three norms.
    model = Blocks(["plain", "depthwise", "residual"])
    x = torch.randn(2, 3, 8, 8)
    blocks = model.blocks
    with torch.no_grad():
        for block, gamma in zip(blocks, (1.0, -2.0, 4.0)):
            block["bn"].weight.fill_(gamma)
    scores = criteria.bn_scale(model, x)
    assert set(scores) == {(b["conv"], "weight") for b in blocks}, "the stem has no norm and is left out"
    shares = [scores[(block["conv"], "weight")] for block in blocks]
    assert all(torch.equal(shares[0], share) for share in shares), "coupled convs share the group's scale equally"
    assert torch.allclose(sum(shares), torch.full((4,), 7.0)), "the shares add up to the summed |gamma|"


def test_snip_ignores_a_filter_the_loss_does_not_read():
    model = tiny()
    with torch.no_grad():
        model[4].weight[:, 0:4] = 0  # columns of channel 0
    scores = criteria.snip(model, X4, torch.tensor([0, 1, 0, 1, 0, 1]))[(model[0], "weight")]
    assert scores[0] == 0
    assert (scores[1:] > 0).all()


def test_snip_matches_a_reference_with_batch_statistics():
    model = small_cnn().train()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    reference = copy.deepcopy(model).eval()
    for m in reference.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()  # normalise with the batch's statistics; dropout stays off
    nn.functional.cross_entropy(reference(x), y).backward()
    expected = [(c.weight * c.weight.grad).abs().flatten(1).sum(1) for c in convs_of(reference)]
    for got, want in zip(scores_of(criteria.snip(model, x, y), model), expected):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-9)


def test_snip_is_deterministic_under_dropout_and_scores_frozen_weights():
    model = small_cnn().train()
    for p in model.parameters():
        p.requires_grad_(False)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    a, b = criteria.snip(model, x, y), criteria.snip(model, x, y)
    assert all(torch.equal(a[k], b[k]) for k in a), "dropout must be off"
    assert all(s.sum() > 0 for s in a.values())


def test_same_sign_zeroes_flipped_filters():
    model = tiny()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    w0 = init["0.weight"]
    with torch.no_grad():
        w = model[0].weight
        w[0] = -w0[0]  # every sign flipped
        w[1] = 2 * w0[1]  # signs kept
        w[2] = w0[2]
        w[2, 0, 0, 0] = -w0[2, 0, 0, 0]  # one sign flipped
    scores = criteria.same_sign(model, init)[(model[0], "weight")]
    assert scores[0] == 0
    assert torch.isclose(scores[1], 2 * w0[1].abs().sum())
    assert torch.isclose(scores[2], w0[2].abs().sum() - w0[2, 0, 0, 0].abs())


def test_synflow_scores_zero_where_the_path_is_cut():
    model = tiny()
    with torch.no_grad():
        model[4].weight[:, 4:8] = 0  # columns of channel 1
    scores = criteria.synflow(model, X4[:1])[(model[0], "weight")]
    assert scores[1] == 0
    assert scores[0] > 0 and scores[2] > 0


class TwoBranches(nn.Module):
    """Bias-free: stem -> (a + b) -> Linear. SynFlow's conservation law makes each cut's scores sum to R."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(1, 3, 3, bias=False)
        self.a = nn.Conv2d(3, 4, 1, bias=False)
        self.b = nn.Conv2d(3, 4, 1, bias=False)
        self.fc = nn.Linear(4 * 16, 2, bias=False)

    def forward(self, x):
        s = torch.relu(self.stem(x))
        return self.fc(torch.flatten(self.a(s) + self.b(s), 1))


def test_synflow_scores_are_shares_of_a_conserved_flow():
    model = TwoBranches()
    scores = criteria.synflow(model, torch.randn(1, 1, 6, 6))
    stem, a, b = (scores[(m, "weight")] for m in (model.stem, model.a, model.b))
    assert torch.isclose(stem.sum(), torch.tensor(1.0))
    assert torch.isclose(a.sum() + b.sum(), torch.tensor(1.0)), "the flow through a and b together is all of R"
    assert not torch.equal(a, b), "each coupled producer is scored by its own filters"


def test_synflow_flow_stays_positive_whatever_the_running_means():
    model = tiny()
    model[1].running_mean.fill_(100.0)  # would push every channel below zero, into the ReLU's dead zone
    assert (criteria.synflow(model, X4[:1])[(model[0], "weight")] > 0).all()


@pytest.mark.parametrize("amount, min_keep, zeros", [(0.5, 1, 120), (0.9, 4, 216), (30, 1, 30)])
def test_synflow_prunes_amount_of_the_alive_channels(amount, min_keep, zeros):
    model = small_cnn()
    scores = scores_of(criteria.synflow(model, X32, amount=amount, min_keep=min_keep, iterations=4), model)
    assert sum(int((s == 0).sum()) for s in scores) == zeros
    assert all(int((s > 0).sum()) >= min_keep for s in scores)


def test_synflow_one_shot_scores_every_filter():
    model = small_cnn()
    scores = scores_of(criteria.synflow(model, X32), model)
    assert all((s > 0).all() and torch.isfinite(s).all() for s in scores)


class LinearOnTheStream(nn.Module):
    """A conv stem whose channels a channels-last MLP adds to, as in ConvNeXt: a Linear produces them too."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 8, 3)
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x.mean((1, 2)))


def test_synflow_scores_the_convs_of_a_group_that_a_linear_also_produces():
    model, x = LinearOnTheStream(), torch.randn(1, 3, 6, 6)
    assert {m.name for m in channel_groups(model, x).group_of(model.stem).producers} == {"stem", "fc2"}
    scores = criteria.synflow(model, x, amount=0.25, iterations=2)[(model.stem, "weight")]
    assert scores.shape == (8,) and int((scores == 0).sum()) == 2 and (scores[scores != 0] > 0).all()


def test_synflow_prunes_coupled_filters_together():
    model = Blocks(["plain", "depthwise", "residual"])  # stem group (4 channels) + one coupled group (4)
    scores = criteria.synflow(model, torch.randn(1, 3, 8, 8), amount=0.25)
    first, *rest = [scores[(b["conv"], "weight")] for b in model.blocks]
    assert all(torch.equal(first == 0, other == 0) for other in rest)
    assert int((first == 0).sum()) + int((scores[(model.stem, "weight")] == 0).sum()) == 2


def test_synflow_counts_amount_of_what_is_left_in_a_pruned_model():
    model = small_cnn()
    groups = channel_groups(model, X32)
    keep = [torch.ones(g.size, dtype=torch.bool) for g in groups]
    keep[1][:8] = False
    apply_channel_masks(groups, keep)
    scores = scores_of(criteria.synflow(model, X32, groups=groups, amount=0.5), model)
    assert (scores[1][:8] == 0).all()
    assert sum(int((s == 0).sum()) for s in scores) == 8 + 116


def test_synflow_refuses_a_budget_min_keep_forbids():
    with pytest.raises(ValueError, match="min_keep"):
        criteria.synflow(small_cnn(), X32, amount=0.99, min_keep=4)


# ---- random ---------------------------------------------------------------------------------------------------


def test_random_is_reproducible_by_seed():
    model = small_cnn()
    a, b, c = (scores_of(criteria.random(model, seed=s), model) for s in (1, 1, 2))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, z) for x, z in zip(a, c))
    assert all(((s >= 0) & (s < 1)).all() for s in a)
    torch.manual_seed(5)
    d = scores_of(criteria.random(model), model)
    torch.manual_seed(5)
    e = scores_of(criteria.random(model), model)
    assert all(torch.equal(x, y) for x, y in zip(d, e)), "seed=None draws from the global RNG"


# ---- contract shared by every criterion --------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
def test_criterion_leaves_the_model_unchanged(name, pruned):
    model = small_cnn().train()
    if pruned:
        groups = channel_groups(model, X32)
        apply_channel_masks(groups, [torch.arange(g.size) % 3 != 0 for g in groups])
    model.fc.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: m.training for n, m in model.named_modules()}
    requires = {n: p.requires_grad for n, p in model.named_parameters()}
    recomputed = {n: m.__dict__.get("weight") for n, m in model.named_modules()}
    x = torch.randn(4, 3, 32, 32)
    rng = torch.get_rng_state()

    call(name, model, x)

    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == {n: m.training for n, m in model.named_modules()}
    assert requires == {n: p.requires_grad for n, p in model.named_parameters()}
    assert all(p.grad is None for p in model.parameters())
    assert all(m.__dict__.get("weight") is recomputed[n] for n, m in model.named_modules())
    if name != "random":
        assert torch.equal(rng, torch.get_rng_state())


@pytest.mark.parametrize("name", ALL)
def test_keys_are_every_conv_with_one_score_per_filter(name):
    model = small_cnn()
    scores = call(name, model, torch.randn(2, 3, 32, 32))
    assert list(scores) == [(conv, "weight") for conv in convs_of(model)]
    assert [s.shape for s in scores.values()] == [(16,), (32,), (64,), (128,)]
    assert all(s.dtype == torch.float32 and not s.requires_grad and (s >= 0).all() for s in scores.values())


@pytest.mark.parametrize("name", sorted(set(ALL) - {"random"}))
def test_pruned_filters_score_zero(name):
    model = small_cnn()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    groups = channel_groups(model, X32)
    keep = [torch.ones(g.size, dtype=torch.bool) for g in groups]
    for k in keep:
        k[::4] = False
    apply_channel_masks(groups, keep)
    scores = scores_of(call(name, model, torch.randn(4, 3, 32, 32), init_state=init), model)
    for s, k in zip(scores, keep):
        assert (s[~k] == 0).all()
        assert (s[k] > 0).any()


# ---- errors ---------------------------------------------------------------------------------------------------


def test_get_rejects_unknown_names():
    assert criteria.get("snip") is criteria.snip
    assert set(criteria.CRITERIA) == {"l1", "l2", "random", "bn_scale", "bn_output", "snip", "synflow", "same_sign"}
    with pytest.raises(ValueError, match="unknown criterion 'l3'; known criteria: l1, l2, random"):
        criteria.get("l3")
    with pytest.raises(TypeError, match="must be a str"):
        criteria.get(criteria.l1)


def test_same_sign_rejects_a_snapshot_of_another_architecture():
    model = small_cnn()
    other = BasicCNN(width=0.5).state_dict()
    with pytest.raises(ValueError, match=r"'features\.0\.weight'.*same architecture"):
        criteria.same_sign(model, other)
    with pytest.raises(ValueError, match=r"no 'features\.0\.weight' \(nor 'features\.0\.weight_orig'\)"):
        criteria.same_sign(model, {"fc.weight": torch.zeros(1)})
    with pytest.raises(TypeError, match="mapping"):
        criteria.same_sign(model, [torch.zeros(1)])


def test_same_sign_reads_weight_orig_of_a_pruned_snapshot():
    model = small_cnn()
    snapshot = small_cnn()
    groups = channel_groups(snapshot, X32)
    apply_channel_masks(groups, [torch.ones(g.size, dtype=torch.bool) for g in groups])
    init = snapshot.state_dict()
    assert "features.0.weight_orig" in init
    scores = scores_of(criteria.same_sign(model, init), model)
    assert torch.allclose(scores[0], model.features[0].weight.detach().abs().flatten(1).sum(1))


def test_snip_rejects_mismatched_batches():
    model = small_cnn()
    with pytest.raises(ValueError, match="batch size"):
        criteria.snip(model, torch.randn(4, 3, 32, 32), torch.zeros(3, dtype=torch.long))
    with pytest.raises(TypeError, match="targets must be a tensor"):
        criteria.snip(model, torch.randn(4, 3, 32, 32), [0, 1, 2, 3])
    with pytest.raises(TypeError, match="inputs must be a tensor"):
        criteria.snip(model, "images", torch.zeros(4, dtype=torch.long))


def test_group_criteria_need_groups_or_inputs():
    with pytest.raises(TypeError, match="pass example_inputs"):
        criteria.bn_scale(small_cnn())
    no_norm = nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2))
    with pytest.raises(ValueError, match="no BatchNorm follows any prunable convolution.*another criterion"):
        criteria.bn_scale(no_norm, X4)
    with pytest.raises(ValueError, match="groups belong to another model"):
        criteria.synflow(small_cnn(), X32, groups=channel_groups(small_cnn(), X32))


def test_a_model_without_convolutions_is_refused():
    with pytest.raises(ValueError, match="no Conv1d, Conv2d or Conv3d"):
        criteria.l1(nn.Linear(3, 2))
