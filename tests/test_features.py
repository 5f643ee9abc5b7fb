import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune import criteria
from torch_rlprune.search.features import FEATURE_NAMES, feature_names, filter_features
from torch_rlprune.groups import channel_groups
from torch_rlprune.models import BasicCNN

SIZES = [64, 128, 256, 512]


@pytest.fixture
def basic():
    torch.manual_seed(0)
    model = BasicCNN()
    return model, channel_groups(model, torch.randn(1, 3, 32, 32))


def _column(name, saliency=None):
    return feature_names(saliency).index(name)


def _per_group(x):
    return x.split(SIZES)


def test_shape_dtype_and_names(basic):
    model, groups = basic
    x = filter_features(model, groups)
    assert x.shape == (960, len(FEATURE_NAMES)) and x.dtype == torch.float32 and x.device.type == "cpu"
    assert torch.isfinite(x).all()
    assert feature_names() == FEATURE_NAMES


def test_depth_and_width_columns_are_exact(basic):
    model, groups = basic
    x = filter_features(model, groups)
    depth = torch.cat([torch.full((s,), g / 3) for g, s in enumerate(SIZES)])
    width = torch.cat([torch.full((s,), s / 512) for s in SIZES])
    log_width = torch.cat([torch.full((s,), math.log1p(s) / math.log1p(512)) for s in SIZES])
    assert torch.equal(x[:, _column("depth")], depth)
    assert torch.equal(x[:, _column("width")], width)
    assert torch.equal(x[:, _column("log_width")], log_width)


def test_relative_columns_average_one_per_group(basic):
    model, groups = basic
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(-2, 2)
    x = filter_features(model, groups)
    for name in ("l1", "bn_scale"):
        for block in _per_group(x[:, _column(name)]):
            assert math.isclose(float(block.double().mean()), 1.0, rel_tol=1e-5)


def test_l1_column_is_the_relative_l1_norm(basic):
    model, groups = basic
    conv = model.features[4]  # producer of group 1
    with torch.no_grad():
        conv.weight[5] *= 10
    column = _per_group(filter_features(model, groups)[:, _column("l1")])[1]
    l1 = conv.weight.detach().abs().flatten(1).sum(1)
    torch.testing.assert_close(column, l1 / l1.mean())
    assert int(column.argmax()) == 5


def test_l1_uses_the_masked_weight(basic):
    model, groups = basic
    mask = torch.ones_like(model.features[0].weight)
    mask[3] = 0
    prune.custom_from_mask(model.features[0], "weight", mask)
    assert filter_features(model, groups)[3, _column("l1")] == 0


def test_bn_scale_column(basic):
    model, groups = basic
    with torch.no_grad():
        model.features[3].weight.fill_(0.5)
        model.features[3].weight[7] = -3.0  # |gamma| counts
    column = filter_features(model, groups)[:64, _column("bn_scale")]
    expected = torch.full((64,), 0.5)
    expected[7] = 3.0
    torch.testing.assert_close(column, expected / expected.mean())


def test_group_without_norm_gets_ones():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    groups = channel_groups(model, torch.randn(1, 3, 8, 8))
    x = filter_features(model, groups)
    assert [g.size for g in groups] == [6, 4]
    assert torch.equal(x[:6, _column("bn_scale")], torch.ones(6))


def test_coupled_producers_add_up(blocks_net):
    torch.manual_seed(0)
    model = blocks_net(["plain", "residual"])
    groups = channel_groups(model, torch.randn(1, 3, 8, 8))
    coupled = next(g for g in groups if len(g.producers) > 1)
    start = sum(g.size for g in groups[: list(groups).index(coupled)])
    l1 = sum(m.module.weight.detach().abs().flatten(1).sum(1) for m in coupled.producers)
    column = filter_features(model, groups)[start : start + coupled.size, _column("l1")]
    torch.testing.assert_close(column, l1 / l1.mean())


def test_saliency_column(basic):
    model, groups = basic
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    saliency = {(m, "weight"): torch.arange(1.0, m.out_channels + 1) for m in convs}
    x = filter_features(model, groups, saliency=saliency)
    assert x.shape == (960, len(FEATURE_NAMES) + 1)
    assert feature_names(saliency)[-1] == "saliency"
    for block, size in zip(_per_group(x[:, -1]), SIZES):
        expected = torch.arange(1.0, size + 1)
        torch.testing.assert_close(block, expected / expected.mean())
    assert torch.equal(x[:, :-1], filter_features(model, groups))


def test_snip_saliency(basic):
    model, groups = basic
    scores = criteria.snip(model, torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)))
    column = filter_features(model, groups, saliency=scores)[:, -1]
    assert torch.isfinite(column).all() and (column >= 0).all()


def test_bad_inputs(basic):
    model, groups = basic
    with pytest.raises(TypeError, match="torch.nn.Module"):
        filter_features("model", groups)
    with pytest.raises(TypeError, match="ChannelGroups"):
        filter_features(model, groups[0])
    with pytest.raises(ValueError, match="empty"):
        filter_features(model, [])
    with pytest.raises(ValueError, match="another model"):
        filter_features(BasicCNN(), groups)
    with pytest.raises(TypeError, match="saliency"):
        filter_features(model, groups, saliency=[1.0])
    with pytest.raises(ValueError, match="no score"):
        filter_features(model, groups, saliency={(model.features[0], "weight"): torch.ones(64)})


def test_relative_columns_are_scaled_over_the_unpruned_channels_only():
    model = rlp.models.BasicCNN(width=0.25)
    x = torch.randn(1, 3, 32, 32)
    groups = rlp.channel_groups(model, x)
    before = filter_features(model, groups)
    keep = [torch.arange(g.size) % 2 == 0 for g in groups]  # half of every layer pruned
    rlp.apply_channel_masks(groups, keep)
    after = filter_features(model, groups)
    kept = torch.cat(keep)
    # A pruned channel scores 0, yet the kept ones keep their mean of 1 rather than doubling it.
    for group_rows in after[:, :2][kept].split([int(k.sum()) for k in keep]):
        torch.testing.assert_close(group_rows.mean(0), torch.ones(2), rtol=1e-5, atol=1e-5)
    assert not after[~kept, 0].any()
    torch.testing.assert_close(after[:, 2:], before[:, 2:])  # depth and widths describe the layers as built
