"""Tests for torch_rlprune.metrics: counts of dense models, of masked models, and against physically sliced ones."""

from __future__ import annotations

import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import torch_rlprune as rlp
from torch_rlprune.metrics import (
    LayerStats,
    ModelStats,
    count_macs,
    count_params,
    filters_per_layer,
    model_stats,
)

CONVS = ["features.0", "features.4", "features.8", "features.12"]
NORMS = ["features.3", "features.7", "features.11", "features.15"]
# (out, in, output side) of BasicCNN's convolutions on a 32 x 32 input.
CONV_SHAPES = [(64, 3, 15), (128, 64, 13), (256, 128, 6), (512, 256, 4)]


def _x(batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32)


def _layers(stats: ModelStats) -> dict[str, LayerStats]:
    return {layer.name: layer for layer in stats.layers}


def _group(groups: rlp.ChannelGroups, name: str) -> rlp.ChannelGroup:
    return next(g for g in groups if g.producers[0].name == name)


def _mask(model: nn.Module, x: torch.Tensor, name: str, pruned: list[int]) -> rlp.ChannelGroups:
    """Mask channels ``pruned`` of the group produced by conv ``name``; return the model's groups."""
    groups = rlp.channel_groups(model, x)
    group = _group(groups, name)
    keep = torch.ones(group.size, dtype=torch.bool)
    keep[pruned] = False
    rlp.apply_channel_masks([group], [keep])
    return groups


# ---- dense ---------------------------------------------------------------------------------------------------


def test_dense_basic_cnn_counts():
    model = rlp.models.BasicCNN()
    stats = model_stats(model, _x())
    layers = _layers(stats)

    assert stats.params == stats.params_kept == sum(p.numel() for p in model.parameters()) == 1_634_826
    assert stats.filters == stats.filters_kept == 960
    assert stats.sparsity == 0.0
    assert [layers[n].filters for n in CONVS] == [64, 128, 256, 512]
    assert layers["features.0"].macs == 64 * 3 * 9 * 15 * 15
    for name, (out, inp, side) in zip(CONVS, CONV_SHAPES):
        assert layers[name].macs == layers[name].macs_kept == out * inp * 9 * side * side
        assert layers[name].params == out * inp * 9 + out
        assert layers[name].kind == "Conv2d" and layers[name].conv
    for name, (out, _, side) in zip(NORMS, CONV_SHAPES):
        assert layers[name].macs == out * side * side
        assert layers[name].filters == out and not layers[name].conv
    assert layers["fc"].macs == 512 * 16 * 10
    assert layers["fc"].filters == 10 and not layers["fc"].conv
    # Only conv, linear and norm layers (the only modules with parameters here) are listed.
    assert set(layers) == set(CONVS) | set(NORMS) | {"fc"}
    assert stats.macs == sum(layer.macs for layer in stats.layers) == 42_475_392


def test_macs_are_per_example():
    model = rlp.models.BasicCNN()
    assert count_macs(model, _x(4)) == count_macs(model, _x(1)) == 42_475_392


def test_dense_model_needs_no_trace():
    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
                return self.conv(x)
            return self.conv(-x)

    model = Untraceable()
    with pytest.raises(ValueError):
        rlp.channel_groups(model, torch.randn(1, 3, 8, 8))
    stats = model_stats(model, torch.randn(1, 3, 8, 8))
    assert stats.params == 4 * 27 + 4
    assert stats.macs == 4 * 27 * 36
    assert count_params(model) == 112
    assert filters_per_layer(model) == {"conv": (4, 4)}


def test_shared_parameters_count_once_and_repeated_calls_add_macs():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.a = nn.Linear(4, 4, bias=False)
            self.b = nn.Linear(4, 4, bias=False)
            self.b.weight = self.a.weight
            self.scale = nn.Parameter(torch.ones(4))  # owned by the root module, counted in full

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.conv(self.conv(x)).mean((2, 3))
            return self.b(self.a(x)) * self.scale

    model = Twice()
    stats = model_stats(model, torch.randn(2, 4, 5, 5))
    layers = _layers(stats)
    assert stats.params == sum(p.numel() for p in model.parameters()) == 4 * 36 + 4 + 16 + 4
    assert layers["a"].params == 16 and layers["b"].params == 0
    assert layers[""].params == 4 and layers[""].macs == 0
    assert layers["conv"].macs == 2 * 4 * 36 * 25
    assert layers["a"].macs == layers["b"].macs == 16


def test_group_and_layer_norm_macs():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.GroupNorm(2, 4), nn.Flatten(), nn.LayerNorm(100))
    layers = _layers(model_stats(model, torch.randn(3, 3, 5, 5)))
    assert (layers["1"].macs, layers["1"].filters, layers["1"].params) == (100, 4, 8)
    assert (layers["3"].macs, layers["3"].filters, layers["3"].params) == (100, None, 200)
    assert layers["0"].macs == 12 * 25


# ---- masked --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 37])
def test_masked_conv2_group(k):
    model = rlp.models.BasicCNN()
    x = _x()
    dense = _layers(model_stats(model, x))
    groups = _mask(model, x, "features.4", list(range(0, 2 * k, 2)))
    stats = model_stats(model, x)
    layers = _layers(stats)
    kept = 128 - k

    conv2, norm2, conv3 = layers["features.4"], layers["features.7"], layers["features.8"]
    assert (conv2.filters_kept, conv2.filters) == (kept, 128)
    assert conv2.params_kept == kept * 64 * 9 + kept
    assert conv2.params == dense["features.4"].params
    assert (norm2.params_kept, norm2.filters_kept) == (2 * kept, kept)
    assert norm2.macs_kept == kept * 13 * 13
    assert conv3.params_kept == 256 * kept * 9 + 256
    assert conv3.filters_kept == 256  # conv3's own filters are untouched; only its input columns go
    assert conv2.macs_kept == kept * 64 * 9 * 13 * 13
    assert conv3.macs_kept == 256 * kept * 9 * 6 * 6
    assert dense["features.8"].macs - conv3.macs_kept == 256 * k * 9 * 36
    for name in ("features.0", "features.12", "fc"):
        assert layers[name] == dense[name]
    assert stats.filters_kept == 960 - k
    assert stats.sparsity == pytest.approx(k / 960)
    removed = k * 64 * 9 + k + 2 * k + 256 * k * 9
    assert stats.params_kept == stats.params - removed
    # The masked model's parameters are still all there; only the count of what slimming would keep changes.
    assert stats.params == sum(p.numel() for p in model.parameters())
    assert model_stats(model, x, groups) == stats


def test_masked_last_conv_shrinks_linear_by_spatial_positions():
    model = rlp.models.BasicCNN()
    x = _x()
    k = 5
    _mask(model, x, "features.12", [0, 100, 200, 300, 511])
    layers = _layers(model_stats(model, x))
    assert layers["fc"].params - layers["fc"].params_kept == 10 * 16 * k  # 16 features of 4 x 4 per channel
    assert layers["fc"].macs - layers["fc"].macs_kept == 10 * 16 * k
    assert layers["fc"].filters_kept == 10
    assert layers["features.12"].filters_kept == 512 - k


def test_masked_norm_without_affine():
    model = nn.Sequential(nn.Conv1d(2, 6, 3), nn.InstanceNorm1d(6), nn.Conv1d(6, 4, 1))
    x = torch.randn(1, 2, 10)
    groups = _mask(model, x, "0", [1, 4])
    layers = _layers(model_stats(model, x, groups))
    assert (layers["1"].params, layers["1"].filters_kept) == (0, 4)
    assert (layers["1"].macs, layers["1"].macs_kept) == (6 * 8, 4 * 8)
    assert (layers["0"].params_kept, layers["0"].macs_kept) == (4 * 6 + 4, 4 * 6 * 8)
    assert (layers["2"].params_kept, layers["2"].macs_kept) == (4 * 4 + 4, 4 * 4 * 8)


def test_mobilenet_v2_depthwise_group():
    model = torchvision.models.mobilenet_v2(num_classes=10)
    x = torch.randn(1, 3, 32, 32)
    dense = model_stats(model, x)
    assert dense.params == sum(p.numel() for p in model.parameters())

    k = 7
    groups = _mask(model, x, "features.2.conv.0.0", list(range(k)))
    group = _group(groups, "features.2.conv.0.0")
    assert [m.name for m in group.tied] == ["features.2.conv.1.0"]
    stats = model_stats(model, x, groups)
    layers, before = _layers(stats), _layers(dense)

    def drop(name: str, what: str) -> int:
        return getattr(before[name], what) - getattr(layers[name], what + "_kept")

    # 16 -> 96 expansion (1x1, 16 x 16 positions), 3x3 depthwise with stride 2 (8 x 8), 96 -> 24 projection.
    assert drop("features.2.conv.0.0", "params") == k * 16
    assert drop("features.2.conv.1.0", "params") == k * 9
    assert drop("features.2.conv.0.1", "params") == drop("features.2.conv.1.1", "params") == 2 * k
    assert drop("features.2.conv.2", "params") == 24 * k
    assert stats.params_kept == dense.params - 53 * k
    assert drop("features.2.conv.0.0", "macs") == k * 16 * 16 * 16
    assert drop("features.2.conv.1.0", "macs") == k * 9 * 8 * 8
    assert drop("features.2.conv.0.1", "macs") == k * 16 * 16
    assert drop("features.2.conv.1.1", "macs") == k * 8 * 8
    assert drop("features.2.conv.2", "macs") == 24 * k * 8 * 8
    assert layers["features.2.conv.1.0"].filters_kept == 96 - k
    assert stats.filters_kept == dense.filters - 2 * k  # the expansion conv and its tied depthwise conv
    assert layers["classifier.1"] == before["classifier.1"]


# ---- against a physically sliced model -----------------------------------------------------------------------


class _Small(nn.Module):
    """Conv-BN-ReLU-Conv-Flatten-Linear on 8 x 8 inputs, with ``c1`` and ``c2`` channels."""

    def __init__(self, c1: int, c2: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c1, 3, padding=1)
        self.bn = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, stride=2)
        self.fc = nn.Linear(c2 * 9, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv2(torch.relu(self.bn(self.conv1(x)))), 1))


def _sliced(model: _Small, keep1: torch.Tensor, keep2: torch.Tensor) -> _Small:
    """The dense model that physically removing the channels not in ``keep1`` / ``keep2`` gives."""
    small = _Small(int(keep1.sum()), int(keep2.sum()))
    with torch.no_grad():
        small.conv1.weight.copy_(model.conv1.weight[keep1])
        small.conv1.bias.copy_(model.conv1.bias[keep1])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(small.bn, name).copy_(getattr(model.bn, name)[keep1])
        small.conv2.weight.copy_(model.conv2.weight[keep2][:, keep1])
        small.conv2.bias.copy_(model.conv2.bias[keep2])
        small.fc.weight.copy_(model.fc.weight.reshape(5, -1, 9)[:, keep2].reshape(5, -1))
        small.fc.bias.copy_(model.fc.bias)
    return small.eval()


def _check_against_sliced(keep1: torch.Tensor, keep2: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = _Small(len(keep1), len(keep2)).eval()
    with torch.no_grad():  # non-trivial running statistics, so that the output comparison means something
        model.bn.running_mean.uniform_(-1, 1)
        model.bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 8, 8)
    small = _sliced(model, keep1, keep2)
    groups = rlp.channel_groups(model, x)
    assert [g.name for g in groups] == ["conv1", "conv2"]
    rlp.apply_channel_masks(groups, [keep1, keep2])
    # The reference really is the masked model with the channels cut out.
    torch.testing.assert_close(model(x), small(x))

    masked, reference = model_stats(model, x), model_stats(small, x)
    assert reference.params == reference.params_kept and reference.macs == reference.macs_kept
    assert masked.params_kept == reference.params
    assert masked.macs_kept == reference.macs
    assert masked.filters_kept == reference.filters
    for got, want in zip(masked.layers, reference.layers):
        assert got.name == want.name
        assert (got.params_kept, got.macs_kept, got.filters_kept) == (want.params, want.macs, want.filters)


def test_matches_physically_sliced_model():
    keep1 = torch.tensor([1, 0, 1, 1, 0, 1, 0, 1], dtype=torch.bool)
    keep2 = torch.tensor([0, 1, 1, 1, 1, 0], dtype=torch.bool)
    _check_against_sliced(keep1, keep2)


@settings(max_examples=15, deadline=None)
@given(
    keep1=st.lists(st.booleans(), min_size=1, max_size=8).filter(any),
    keep2=st.lists(st.booleans(), min_size=1, max_size=6).filter(any),
)
def test_matches_physically_sliced_model_for_any_masks(keep1, keep2):
    _check_against_sliced(torch.tensor(keep1), torch.tensor(keep2))


# ---- convenience functions, state, table, errors -------------------------------------------------------------


def test_convenience_functions_agree_with_model_stats():
    model = rlp.models.BasicCNN()
    x = _x()
    _mask(model, x, "features.0", [3, 9])
    stats = model_stats(model, x)
    assert count_params(model, x) == stats.params_kept < stats.params
    assert count_macs(model, x) == stats.macs_kept < stats.macs
    assert filters_per_layer(model, x) == {
        "features.0": (62, 64),
        "features.4": (128, 128),
        "features.8": (256, 256),
        "features.12": (512, 512),
    }
    groups = rlp.channel_groups(model, x)
    assert count_params(model, groups=groups) == stats.params_kept
    assert filters_per_layer(model, groups=groups)["features.0"] == (62, 64)


def test_model_is_left_unchanged():
    model = rlp.models.BasicCNN()
    x = _x(2)
    _mask(model, x, "features.4", [0, 1, 2])
    model.train()
    model.features[2].eval()  # a mixed state must survive too
    wrong = torch.randn(1, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.get_rng_state()

    model_stats(model, x)
    with pytest.raises(ValueError):
        model_stats(model, wrong)

    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(not m._forward_hooks for m in model.modules())  # removed, on success and on error


def test_table_lists_every_layer_and_totals():
    model = rlp.models.BasicCNN()
    x = _x()
    _mask(model, x, "features.8", list(range(56)))
    stats = model_stats(model, x)
    table = stats.table()
    assert str(stats) == table
    assert "filters = output channels of convolutions" in table.splitlines()[0]
    assert "per example" in table.splitlines()[0]
    for name in CONVS + NORMS + ["fc"]:
        assert any(line.startswith(name + " ") for line in table.splitlines())
    total = next(line for line in table.splitlines() if line.startswith("total"))
    assert "904/960" in total
    assert f"{stats.params_kept:,}/{stats.params:,}" in total
    assert f"{stats.macs_kept:,}/{stats.macs:,}" in total
    assert "200/256" in next(line for line in table.splitlines() if line.startswith("features.8 "))
    assert "5.8%" in table


def test_errors():
    model = rlp.models.BasicCNN()
    with pytest.raises(TypeError, match="torch.nn.Module"):
        model_stats("not a model", _x())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="torch.nn.Module"):
        count_params(object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="example_inputs"):
        model_stats(model, "image")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(1, 3, 16, 16\)"):
        model_stats(model, torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match=r"\(1, 3, 16, 16\)"):
        count_macs(model, torch.randn(1, 3, 16, 16))

    _mask(model, _x(), "features.0", [0])
    with pytest.raises(ValueError, match="example_inputs"):
        count_params(model)
    with pytest.raises(ValueError, match="not part of this model"):
        model_stats(model, _x(), rlp.channel_groups(rlp.models.BasicCNN(), _x()))
    with pytest.raises(TypeError, match="ChannelGroup"):
        model_stats(model, _x(), ["features.0"])  # type: ignore[list-item]
