import copy
import warnings

import pytest
import torch
import torchvision
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune import slicing

from conftest import Blocks, conv_pairs

ARCHS = {
    "basiccnn": (lambda: rlp.models.BasicCNN(), 32),
    "resnet18": (torchvision.models.resnet18, 32),
    "mobilenet_v2": (torchvision.models.mobilenet_v2, 32),
    "densenet121": (torchvision.models.densenet121, 32),
    "shufflenet_v2": (torchvision.models.shufflenet_v2_x0_5, 32),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, 32),
    "vgg11_bn": (lambda: torchvision.models.vgg11_bn(num_classes=10), 32),
    "convnext_tiny": (lambda: torchvision.models.convnext_tiny(num_classes=10), 32),
}


def randomise_norms(model):
    """Non-trivial running statistics, so that eval-mode norms are not the identity."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            with torch.no_grad():
                m.bias.copy_(torch.rand(m.num_features, generator=g) - 0.5)
        if isinstance(m, nn.LayerNorm):  # normalises over channels: a wrong cut changes every channel
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


def masked(arch, amount, seed=0):
    make, side = ARCHS[arch]
    torch.manual_seed(seed)
    model = make()
    randomise_norms(model)
    x = torch.randn(2, 3, side, side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rlp.global_structured(conv_pairs(model), prune.RandomStructured, amount=amount, seed=seed, model=model,
                              example_inputs=x[:1])  # fmt: skip
    return model.eval(), x


@pytest.mark.parametrize("amount", [0.3, 0.7])
@pytest.mark.parametrize("arch", list(ARCHS))
def test_slim_computes_what_the_masked_model_computes(arch, amount):
    model, x = masked(arch, amount)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small = rlp.slim(model, x, verify=False)
    with torch.no_grad():
        expected, got = model(x), small.eval()(x)
    assert torch.allclose(expected, got, atol=1e-5, rtol=1e-4), (expected - got).abs().max()
    assert not prune.is_pruned(small)
    assert all(p.is_leaf for p in small.parameters())
    predicted = rlp.metrics.model_stats(model, x[:1])
    assert sum(p.numel() for p in small.parameters()) == predicted.params_kept
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "slim changed its input"


def test_basiccnn_at_70_percent_matches_metrics_and_trains():
    torch.manual_seed(0)
    model = rlp.models.BasicCNN()
    x = torch.randn(1, 3, 32, 32)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.7, model=model, example_inputs=x)
    predicted = rlp.metrics.filters_per_layer(model, x)
    small = rlp.slim(model, x)
    convs = {n: m for n, m in small.named_modules() if isinstance(m, nn.Conv2d)}
    assert {n: m.out_channels for n, m in convs.items()} == {n: kept for n, (kept, _) in predicted.items()}
    assert sum(p.numel() for p in small.parameters()) == rlp.metrics.count_params(model, x)
    assert small.fc.in_features == 16 * convs["features.12"].out_channels

    data, labels = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    optimizer = torch.optim.SGD(small.parameters(), lr=0.05)
    small.train()
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(small(data), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_slim_keeps_dtype_device_and_requires_grad():
    model = rlp.models.BasicCNN(width=0.25).double()
    model.features[0].weight.requires_grad_(False)
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=2, amount=0.5, model=model, example_inputs=x)
    small = rlp.slim(model, x)
    assert all(p.dtype == torch.float64 for p in small.parameters())
    assert not small.features[0].weight.requires_grad and small.features[4].weight.requires_grad


def test_per_layer_ln_structured_is_sliced_exactly_by_folding_constants():
    # prune.ln_structured masks conv weights only: pruned filters still emit their bias, and BN turns that into a
    # constant that the next layer must receive as a bias.
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25)
    randomise_norms(model)
    for m, _ in conv_pairs(model):
        prune.ln_structured(m, "weight", amount=0.5, n=1, dim=0)
    x = torch.randn(4, 3, 32, 32)
    small = rlp.slim(model, x)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), small.eval()(x), atol=1e-5)
    assert [m.out_channels for m, _ in conv_pairs(small)] == [8, 16, 32, 64]


def test_verification_names_the_layer_where_outputs_part(monkeypatch):
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25)
    randomise_norms(model)
    prune.ln_structured(model.features[4], "weight", amount=0.5, n=1, dim=0)
    monkeypatch.setattr(slicing, "_fold_constants", lambda *args: None)
    with pytest.raises(ValueError, match=r"first part at 'features.8' \(Conv2d\)"):
        rlp.slim(model, torch.randn(2, 3, 32, 32))


def test_unfoldable_constant_is_refused():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 3, padding=1))
    randomise_norms(model)
    prune.ln_structured(model[0], "weight", amount=2, n=1, dim=0)
    with pytest.raises(ValueError, match="zero padding makes removing them inexact"):
        rlp.slim(model, torch.randn(1, 3, 8, 8))


def test_model_without_masks_gives_an_equal_copy():
    model = rlp.models.BasicCNN(width=0.25).eval()
    x = torch.randn(2, 3, 32, 32)
    small = rlp.slim(model, x)
    assert small is not model
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), small.state_dict().values()))
    assert rlp.slim(model, x, inplace=True) is model


def test_disagreeing_masks_in_a_coupled_group_are_refused():
    model = torchvision.models.resnet18()
    prune.ln_structured(model.layer1[0].conv2, "weight", amount=0.5, n=1, dim=0)
    with pytest.raises(ValueError, match=r"masks disagree inside channel group 'conv1 \(\+2 coupled\)'"):
        rlp.slim(model, torch.randn(1, 3, 32, 32))


def test_bad_inputs_are_refused():
    model, x = masked("basiccnn", 0.5)
    with pytest.raises(ValueError, match="does not run on example_inputs of shape"):
        rlp.slim(model, torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="example_inputs must be a tensor"):
        rlp.slim(model, None)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        rlp.slim(model.state_dict(), x)


def test_untraceable_model_error_names_the_module():
    class Gate(nn.Module):
        def forward(self, x):
            return x if x.mean() > 0 else -x

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Gate(), nn.Conv2d(4, 2, 3))
    prune.ln_structured(model[0], "weight", amount=1, n=1, dim=0)
    with pytest.raises(ValueError, match=r"inside module '1'"):
        rlp.slim(model, torch.randn(1, 3, 8, 8))


def test_inplace_slims_the_model_object_itself():
    model, x = masked("resnet18", 0.5)
    conv = model.layer1[0].conv1
    expected = model(x)
    result = rlp.slim(model, x, inplace=True)
    assert result is model and model.layer1[0].conv1 is conv
    assert not prune.is_pruned(model)
    assert conv.weight.shape[0] < 64
    with torch.no_grad():
        assert torch.allclose(model(x), expected, atol=1e-5)


def test_sliced_model_survives_deepcopy_jit_trace_and_export():
    model, x = masked("resnet18", 0.5)
    small = rlp.slim(model, x).eval()
    with torch.no_grad():
        expected = small(x)
        assert torch.allclose(copy.deepcopy(small)(x), expected)
        assert torch.allclose(torch.jit.trace(small, x)(x), expected, atol=1e-6)
        assert torch.allclose(torch.export.export(small, (x,)).module()(x), expected, atol=1e-6)


kinds = st.lists(st.sampled_from(["plain", "residual", "depthwise", "concat", "se"]), min_size=1, max_size=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kinds=kinds, amount=st.floats(0.05, 0.8), seed=st.integers(0, 100))
def test_slim_equals_masked_on_random_nets(kinds, amount, seed):
    torch.manual_seed(seed)
    model = Blocks(kinds)
    randomise_norms(model)
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            rlp.global_structured(conv_pairs(model), prune.RandomStructured, amount=amount, seed=seed, model=model,
                                  example_inputs=x[:1])  # fmt: skip
        except ValueError:
            return  # no prunable group in this net: nothing to slice
    small = rlp.slim(model, x, verify=False)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), small.eval()(x), atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for p in small.parameters()) == rlp.metrics.count_params(model, x[:1])


class _Amplifier(nn.Module):
    """conv -> BN -> sigmoid -> conv -> a batch norm over channels that never vary (variance 0, tiny eps) -> fc.

    Pruned channels of the first conv output sigmoid(0) = 0.5, which slim folds into the second conv's bias; the
    fold rounds differently from the masked conv, and the last norm multiplies that rounding by ~1e5, as a trained
    network's dead channels do (their running variance decays to ~0).
    """

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 4, 3), nn.BatchNorm2d(4, eps=1e-10)  # no padding: the fold is exact
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        x = torch.sigmoid(self.bn1(self.conv1(x)))
        return self.fc(self.bn2(self.conv2(x)).flatten(1))


def test_slim_accepts_float32_rounding_that_the_network_amplifies_but_not_a_wrong_slice():
    torch.manual_seed(0)
    model = _Amplifier().eval()
    x = torch.randn(4, 3, 6, 6)
    keep = torch.tensor([True, False] * 4)
    # Masks on the first conv and norm only, as a user pruning layer by layer makes them: conv2 still reads the
    # pruned channels' 0.5 (apply_channel_masks would mask its columns, and there would be nothing to fold).
    prune.custom_from_mask(model.conv1, "weight", keep.view(-1, 1, 1, 1).expand_as(model.conv1.weight))
    for module, name in ((model.conv1, "bias"), (model.bn1, "weight"), (model.bn1, "bias")):
        prune.custom_from_mask(module, name, keep)
    with torch.no_grad():  # the second norm centres its input exactly and divides by ~sqrt(1e-10)
        # The pruned channels' 0.5 meets integer weights and a zero bias, so that slim folds them exactly, into a
        # bias far larger than what the kept channels add: float32 rounds that sum where the masked conv adds them.
        model.conv2.weight[:, ~keep] = torch.randint(-8, 9, model.conv2.weight[:, ~keep].shape).float()
        model.conv2.bias.zero_()
        model.conv2.weight[:, keep] *= 1e-3
        model.bn2.running_mean.copy_(model.conv2(torch.sigmoid(model.bn1(model.conv1(x)))).mean((0, 2, 3)))
        model.bn2.running_var.zero_()
    loose = rlp.slim(model, x, verify=False)
    with torch.no_grad():
        masked, sliced = model(x), loose.eval()(x)
    assert not torch.allclose(masked, sliced, atol=1e-4, rtol=1e-4)  # float32 parts them...
    assert torch.allclose(model.double()(x.double()), loose.double()(x.double()), atol=1e-4, rtol=1e-4)  # ...float64 not
    model.float()
    small = rlp.slim(model, x)  # verified: in float64 the two agree
    assert small.conv1.out_channels == 4
    # A wrong slice still fails: see test_verification_names_the_layer_where_outputs_part (its gap survives float64).
