"""The channel tracer on the patterns of real model zoos: each is pruned and sliced, and the slice must be exact."""

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune import Role
from torch_rlprune.masks import keep_vectors
from torch_rlprune.search.evaluation import CandidateEvaluator, CandidateModel

from conftest import conv_pairs

# The last conv of these small nets reaches the output, which global_structured says every time.
pytestmark = pytest.mark.filterwarnings("ignore:global_structured. skipping convolutions")


class BatchNormAct(nn.BatchNorm2d):
    """A norm that calls ``F.batch_norm`` itself and applies an activation, as timm's ``BatchNormAct2d``."""

    def __init__(self, channels):
        super().__init__(channels)
        self.act = nn.SiLU()

    def forward(self, x):
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return self.act(x)


class Ghost(nn.Module):
    """GhostNet's module: a conv, a cheap depthwise conv of its output, both concatenated, cut to ``out``."""

    def __init__(self, cin, out):
        super().__init__()
        self.out = out
        init = (out + 1) // 2
        self.primary = nn.Sequential(nn.Conv2d(cin, init, 1), BatchNormAct(init))
        self.cheap = nn.Sequential(nn.Conv2d(init, init, 3, padding=1, groups=init), BatchNormAct(init))

    def forward(self, x):
        x1 = self.primary(x)
        return torch.cat([x1, self.cheap(x1)], dim=1)[:, : self.out]


class CrossStage(nn.Module):
    """CSPNet's stage: one conv's output split in two halves, one through a block, concatenated again."""

    def __init__(self, cin, width):
        super().__init__()
        self.width = width
        self.down = nn.Conv2d(cin, 2 * width, 1)
        self.block = nn.Sequential(nn.Conv2d(width, 3 * width, 3, padding=1), BatchNormAct(3 * width))
        self.fuse = nn.Conv2d(4 * width, 8, 1)

    def forward(self, x):
        xs, xb = self.down(x).split(self.width, dim=1)
        return self.fuse(torch.cat([xs, self.block(xb)], dim=1))


class DualPath(nn.Module):
    """DPN's block: a fixed prefix of a conv's channels joins the residual, the rest the dense path."""

    def __init__(self, cin, prefix):
        super().__init__()
        self.prefix = prefix
        self.conv = nn.Conv2d(cin, prefix + 6, 1)
        self.resid = nn.Conv2d(cin, prefix, 1)
        self.dense = nn.Conv2d(6, 4, 1)
        self.head = nn.Conv2d(prefix + 4, 3, 1)

    def forward(self, x):
        out = self.conv(x)
        resid = self.resid(x) + out[:, : self.prefix]
        return self.head(torch.cat([resid, self.dense(out[:, self.prefix :])], dim=1))


class ResNeXtBlock(nn.Module):
    """A bottleneck with a grouped 3x3 conv and a residual add."""

    def __init__(self, channels, width, groups):
        super().__init__()
        self.reduce = nn.Sequential(nn.Conv2d(channels, width, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.grouped = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, groups=groups), nn.BatchNorm2d(width))
        self.expand = nn.Conv2d(width, channels, 1)

    def forward(self, x):
        return x + self.expand(torch.relu(self.grouped(self.reduce(x))))


class Siamese(nn.Module):
    """One conv applied to two inputs, as in a network that shares a layer between branches."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.shared = nn.Conv2d(6, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        a = self.shared(self.stem(x))
        b = self.shared(self.stem(x.flip(-1)))
        return self.head(self.bn(a) + self.bn(b))


class Shuffle(nn.Module):
    """ShuffleNet's block: ``chunk`` in two halves, whose sizes follow the tensor rather than a constant."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.branch = nn.Sequential(nn.Conv2d(4, 6, 1), nn.ReLU(), nn.Conv2d(6, 4, 1))
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        a, b = self.stem(x).chunk(2, dim=1)
        return self.head(torch.cat([a, self.branch(b)], dim=1))


class Chunks(nn.Module):
    def forward(self, x):
        return torch.cat(x.chunk(2, dim=1)[::-1], dim=1)  # 7 channels: pieces of 4 and 3


def names(members):
    return {m.name for m in members}


def _randomize_norms(model):
    # Fresh norms are the identity at eval; random statistics make a wrongly sliced channel visible.
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
    return model.eval()


def _prune_and_slim(model, x, amount=0.5):
    """Prune half the prunable filters, slice, and return (masked model, sliced model)."""
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=amount, model=model, example_inputs=x)
    small = rlp.slim(model, x)  # verifies against the masked model
    with torch.no_grad():
        other = torch.randn_like(x)
        torch.testing.assert_close(small(other), model(other), atol=1e-5, rtol=1e-4)
    return model, small


def _out_channels(model):
    return {n: m.out_channels for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def test_functional_batch_norm_inside_a_norm_module_is_a_norm_member():
    model = _randomize_norms(nn.Sequential(nn.Conv2d(3, 8, 3), BatchNormAct(8), nn.Conv2d(8, 4, 1)))
    x = torch.randn(2, 3, 8, 8)
    (group,) = rlp.channel_groups(model, x)
    assert [(m.name, m.role) for m in group.members] == [("0", Role.PRODUCER), ("1", Role.NORM), ("2", Role.CONSUMER)]
    masked, small = _prune_and_slim(model, x)
    assert small[1].num_features == small[0].out_channels == 4
    # Tracing the masked model (slim does) went through the pruning hooks of the traced-into norm: the tensors they
    # set must be tensors again afterwards, not torch.fx proxies.
    assert type(masked[1].weight) is torch.Tensor and copy.deepcopy(masked) is not None


def test_ghost_module_is_pruned_where_its_cut_is_the_whole_concat():
    model = _randomize_norms(nn.Sequential(Ghost(3, 8), nn.Conv2d(8, 2, 1)))
    x = torch.randn(2, 3, 6, 6)
    (group,) = rlp.channel_groups(model, x)
    assert [(m.name, m.role, m.offset) for m in group.members if m.role is not Role.NORM] == [
        ("0.primary.0", Role.PRODUCER, 0), ("0.cheap.0", Role.TIED, 0), ("1", Role.CONSUMER, 0), ("1", Role.CONSUMER, 4),
    ]  # fmt: skip
    _, small = _prune_and_slim(model, x)
    assert small[1].in_channels == 2 * small[0].primary[0].out_channels < 8


def test_ghost_module_cut_inside_the_concat_keeps_its_channels():
    # [:, :7] of 8 channels: the model's code slices at 7 whatever is pruned, so everything before 7 must stay.
    groups = rlp.channel_groups(nn.Sequential(Ghost(3, 7), nn.Conv2d(7, 2, 1)), torch.randn(1, 3, 6, 6))
    assert len(groups) == 0
    assert "sliced at fixed positions by function 'getitem'" in groups.excluded["0.primary.0"]


def test_split_with_constant_size_lets_only_the_last_piece_shrink():
    model = _randomize_norms(CrossStage(3, 4))
    x = torch.randn(2, 3, 6, 6)
    groups = rlp.channel_groups(model, x)
    by_producer = {(g.producers[0].name, g.producers[0].offset): g for g in groups}
    # down's second half (offset 4) feeds only the block and may shrink; its first half is cut at a constant.
    assert ("down", 4) in by_producer and by_producer["down", 4].size == 4
    assert ("down", 0) not in by_producer and "split into pieces of fixed size" in groups.excluded["down"]
    assert names(by_producer["down", 4].consumers) == {"block.0"}
    assert by_producer["block.0", 0].consumers[0].offset == 4  # fuse reads the block after xs
    _, small = _prune_and_slim(model, x)
    assert small.down.out_channels < 8 and small.block[0].in_channels == small.down.out_channels - 4


def test_prefix_slice_fixes_the_prefix_and_frees_the_rest():
    model = DualPath(3, 5).eval()
    x = torch.randn(2, 3, 6, 6)
    groups = rlp.channel_groups(model, x)
    conv_groups = [g for g in groups if g.producers[0].name == "conv"]
    assert [(g.size, g.producers[0].offset) for g in conv_groups] == [(6, 5)]
    assert names(conv_groups[0].consumers) == {"dense"}
    # The residual is added to the fixed prefix, so it stays too.
    assert "sliced at fixed positions" in groups.excluded["resid"]
    _, small = _prune_and_slim(model, x)
    assert small.conv.out_channels == 5 + small.dense.in_channels < 11


def test_grouped_convs_in_residual_blocks_slice_exactly():
    model = _randomize_norms(nn.Sequential(nn.Conv2d(3, 16, 3), ResNeXtBlock(16, 8, 4), ResNeXtBlock(16, 12, 3)))
    x = torch.randn(2, 3, 8, 8)
    groups = rlp.channel_groups(model, x)
    grouped = {m.name: (g.size, m.expand) for g in groups for m in g.tied}
    assert grouped == {"1.grouped.0": (4, 2), "2.grouped.0": (3, 4)}
    _, small = _prune_and_slim(model, x)
    for block in (small[1], small[2]):
        conv = block.grouped[0]
        assert conv.out_channels == conv.in_channels == conv.groups * (conv.weight.shape[1])
    assert small[1].grouped[0].groups < 4 or small[2].grouped[0].groups < 3


def test_depthwise_conv_with_a_channel_multiplier():
    model = _randomize_norms(
        nn.Sequential(nn.Conv2d(3, 6, 1), nn.Conv2d(6, 12, 3, groups=6), nn.BatchNorm2d(12), nn.Conv2d(12, 2, 1))
    )
    x = torch.randn(2, 3, 6, 6)
    (group,) = rlp.channel_groups(model, x)
    assert [(m.name, m.expand) for m in group.filters] == [("0", 1), ("1", 2)]
    _, small = _prune_and_slim(model, x)
    assert small[1].groups == small[0].out_channels and small[1].out_channels == 2 * small[0].out_channels


def test_module_called_twice_shares_its_channels():
    model = _randomize_norms(Siamese())
    x = torch.randn(2, 3, 6, 6)
    groups = rlp.channel_groups(model, x)
    assert [(names(g.producers), names(g.norms), names(g.consumers)) for g in groups] == [
        ({"stem"}, set(), {"shared"}), ({"shared"}, {"bn"}, {"head"}),
    ]  # fmt: skip
    _, small = _prune_and_slim(model, x)
    assert small.shared.out_channels == small.bn.num_features < 8


def test_chunk_into_equal_halves_prunes_channel_c_of_both_together():
    model, x = Shuffle(), torch.randn(2, 3, 4, 4)
    groups = rlp.channel_groups(model, x)
    stem = groups[0]
    assert stem.name == "stem" and stem.size == 4 and [(m.name, m.offset) for m in stem.producers] == [
        ("stem", 0), ("stem", 4),
    ]  # fmt: skip
    assert {(m.name, m.offset) for m in stem.consumers} == {("head", 0), ("branch.0", 0)}
    _, small = _prune_and_slim(model, x)  # the halves stay equal, so chunk cuts the sliced tensor where it should
    assert small.stem.out_channels == 2 * small.branch[0].in_channels < 8


def test_chunk_into_unequal_pieces_keeps_them():
    model = nn.Sequential(nn.Conv2d(3, 7, 1), Chunks(), nn.Conv2d(7, 2, 1))
    groups = rlp.channel_groups(model, torch.randn(1, 3, 4, 4))
    assert "split into pieces of fixed size" in groups.excluded["0"]


class FunctionalLinear(nn.Linear):
    """A ``Linear`` whose forward torch.fx traces into, as timm's: it calls ``F.linear`` with its own weight."""

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class PadSame(nn.Conv2d):
    """A conv that pads by the input's size, as timm's ``Conv2dSame``: torch.fx cannot trace its forward."""

    def forward(self, x):
        if x.shape[-1] % 2:  # control flow on a traced value
            x = F.pad(x, (0, 1, 0, 1))
        return F.conv2d(x, self.weight, self.bias, self.stride)


def test_linear_subclass_calling_f_linear_consumes_the_flattened_channels():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), FunctionalLinear(8 * 4 * 4, 5))
    x = torch.randn(2, 3, 6, 6)
    (group,) = rlp.channel_groups(model, x)
    assert [(m.name, m.role, m.expand) for m in group.members] == [("0", Role.PRODUCER, 1), ("3", Role.CONSUMER, 16)]
    _, small = _prune_and_slim(model, x)
    assert small[3].in_features == 16 * small[0].out_channels == 64


def test_linear_subclass_calling_f_linear_with_another_weight_is_opaque():
    class Tied(nn.Linear):
        def forward(self, x):
            return F.linear(x, self.weight[:, :-1], self.bias)

    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), Tied(9, 5))
    groups = rlp.channel_groups(model, torch.randn(1, 3, 4, 4))
    assert len(groups) == 0 and "function 'linear'" in groups.excluded["0"]


def test_conv_subclass_that_torch_fx_cannot_trace_is_taken_whole_as_a_conv():
    model = _randomize_norms(nn.Sequential(PadSame(3, 8, 3, stride=2), nn.BatchNorm2d(8), PadSame(8, 4, 3)))
    x = torch.randn(2, 3, 7, 7)
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(model)
    (group,) = rlp.channel_groups(model, x)
    assert [(m.name, m.role) for m in group.members] == [("0", Role.PRODUCER), ("1", Role.NORM), ("2", Role.CONSUMER)]
    _, small = _prune_and_slim(model, x)
    assert type(small[0]) is PadSame and small[0].out_channels == small[2].in_channels == 4


def test_untraceable_module_that_is_no_layer_still_names_itself():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    model = nn.Sequential(nn.Conv2d(3, 8, 1), Branchy(), nn.Conv2d(8, 2, 1))
    with pytest.raises(ValueError, match=r"inside module '1'.*leaf_modules=\['1'\]"):
        rlp.channel_groups(model, torch.randn(1, 3, 4, 4))


class AffineShift(nn.Module):
    """timm's ``LearnableAffineBlock``: a scalar scale and shift, so a pruned (zero) channel leaves it non-zero."""

    def __init__(self):
        super().__init__()
        self.scale, self.shift = nn.Parameter(torch.tensor([1.5])), nn.Parameter(torch.tensor([0.7]))

    def forward(self, x):
        return self.scale * x + self.shift


def test_pruned_channels_carrying_a_constant_into_zero_padding_are_masked_in_the_consumer():
    # The constant meets the next conv's zero border: only masking that conv's columns makes removing them exact.
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), AffineShift(), nn.Conv2d(8, 4, 3, padding=1))
    model = _randomize_norms(model)
    x = torch.randn(2, 3, 8, 8)
    masked, small = _prune_and_slim(model, x)
    pruned = (masked[0].weight_mask.flatten(1).sum(1) == 0).nonzero().reshape(-1)
    assert len(pruned) == 4 and small[3].in_channels == 4
    assert not masked[3].weight_mask[:, pruned].any() and masked[3].weight_mask[:, ~torch.isin(torch.arange(8), pruned)].all()


def test_save_and_load_a_model_whose_conv_output_is_split(tmp_path):
    model = _randomize_norms(CrossStage(3, 4))
    x = torch.randn(2, 3, 6, 6)
    _, small = _prune_and_slim(model, x)
    rlp.save(model, tmp_path / "m.pt", x)
    loaded = rlp.load(tmp_path / "m.pt", _randomize_norms(CrossStage(3, 4)), x)
    assert _out_channels(loaded) == _out_channels(small)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), small(x))


class ChannelAffine(nn.Module):
    """A per-channel scale and shift that torch.fx cannot trace (its forward branches on the data)."""

    def __init__(self, channels):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(channels) + 0.5)
        self.bias = nn.Parameter(torch.rand(channels) - 0.5)

    def forward(self, x):
        if x.isnan().any():
            raise ValueError("nan")
        return x * self.weight[:, None, None] + self.bias[:, None, None]


class Gate(nn.Module):
    """Two inputs multiplied channel by channel."""

    def forward(self, a, b):
        if a.shape != b.shape:
            raise ValueError("shapes")
        return a * b


def test_registered_norm_module_is_taken_whole_and_sliced():
    model = nn.Sequential(nn.Conv2d(3, 6, 3), ChannelAffine(6), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()
    x = torch.randn(2, 3, 6, 6)
    with pytest.raises(ValueError, match="torch.fx could not trace"):
        rlp.channel_groups(model, x)
    rlp.register_channel_op(ChannelAffine, "norm")
    (group,) = rlp.channel_groups(model, x)
    assert [(m.name, m.role) for m in group.members] == [("0", Role.PRODUCER), ("1", Role.NORM), ("3", Role.CONSUMER)]
    _, small = _prune_and_slim(model, x)
    assert small[1].weight.shape == small[1].bias.shape == (small[0].out_channels,) == (3,)


def test_registered_elementwise_module_couples_its_inputs():
    class TwoBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.gate, self.head = nn.Conv2d(3, 5, 1), nn.Conv2d(3, 5, 1), Gate(), nn.Conv2d(5, 2, 1)

        def forward(self, x):
            return self.head(self.gate(self.a(x), torch.sigmoid(self.b(x))))

    rlp.register_channel_op(Gate, "elementwise")
    model = TwoBranch().eval()
    x = torch.randn(2, 3, 4, 4)
    (group,) = rlp.channel_groups(model, x)
    assert names(group.producers) == {"a", "b"}
    _, small = _prune_and_slim(model, x)
    assert small.a.out_channels == small.b.out_channels == small.head.in_channels < 5


@pytest.mark.parametrize(
    "op, kind, error, message",
    [
        (ChannelAffine, "linear", ValueError, "kind must be one of 'passthrough', 'elementwise', 'norm'"),
        (torch.sigmoid, "norm", ValueError, "kind 'norm' is for module types"),
        (42, "passthrough", TypeError, "op must be an nn.Module subclass, a function or a tensor method name"),
    ],
    ids=["unknown-kind", "norm-function", "not-an-op"],
)
def test_register_channel_op_refuses_bad_input(op, kind, error, message):
    with pytest.raises(error, match=message):
        rlp.register_channel_op(op, kind)


class ConvNeXtBlock(nn.Module):
    """ConvNeXt's block: depthwise conv, then channels last: LayerNorm, Linear, GELU, Linear, a layer scale."""

    def __init__(self, channels):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.pw1, self.pw2 = nn.Linear(channels, 4 * channels), nn.Linear(4 * channels, channels)
        self.gamma = nn.Parameter(torch.rand(channels) + 0.5)

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.gamma * self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + y.permute(0, 3, 1, 2)


def _convnext(channels=8):
    model = nn.Sequential(nn.Conv2d(3, channels, 2, stride=2), ConvNeXtBlock(channels), ConvNeXtBlock(channels),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3))  # fmt: skip
    with torch.no_grad():  # LayerNorm's fresh affine is the identity; make a wrong cut visible
        for block in (model[1], model[2]):
            block.norm.weight.uniform_(0.5, 1.5)
            block.norm.bias.uniform_(-0.5, 0.5)
    return model.eval()


def test_channels_last_layernorm_linear_and_layer_scale_follow_the_channels():
    model = _convnext()
    x = torch.randn(2, 3, 8, 8)
    groups = rlp.channel_groups(model, x)
    stream = next(g for g in groups if g.producers[0].name == "0")
    assert names(stream.producers) == {"0", "1.pw2", "2.pw2"}
    assert names(stream.tied) == {"1.dwconv", "2.dwconv"}
    assert [(m.name, m.normalizes) for m in stream.norms] == [("1.norm", 3), ("2.norm", 3)]
    assert [(m.name, m.role, m.stored) for m in stream.members if m.role is Role.SCALE] == [
        ("1", Role.SCALE, "gamma"), ("2", Role.SCALE, "gamma"),
    ]  # fmt: skip
    assert names(stream.consumers) == {"1.pw1", "2.pw1", "5"}
    hidden = [g for g in groups if g.producers[0].name.endswith("pw1")]
    assert [names(g.consumers) for g in hidden] == [{"1.pw2"}, {"2.pw2"}]
    _, small = _prune_and_slim(model, x)
    block = small[1]
    kept = small[0].out_channels
    assert kept < 8 and block.norm.normalized_shape == (kept,) and block.gamma.shape == (kept,)
    assert block.pw1.in_features == block.pw2.out_features == kept and small[5].in_features == kept


def test_masked_layernorm_normalises_over_the_kept_channels_only():
    model = _convnext()
    x = torch.randn(2, 3, 8, 8)
    masked, small = _prune_and_slim(model, x)  # exact: the masked LayerNorm ignores pruned channels
    hooks = masked[1].norm._forward_hooks
    assert len(hooks) == 1
    with torch.no_grad():
        with_hook = masked(x)
        saved = dict(hooks)
        hooks.clear()  # a plain LayerNorm counts the pruned (zero) channels in its statistics
        without = masked(x)
        hooks.update(saved)
    assert not torch.allclose(with_hook, without, atol=1e-4)
    torch.testing.assert_close(small(x), with_hook, atol=1e-5, rtol=1e-4)


def _response_norm_type():
    """A fresh copy of ConvNeXt V2's global response norm (channels last), so that registering it in one test
    leaves the other tests' tracer as it was."""

    class ResponseNorm(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.weight = nn.Parameter(torch.rand(channels) + 0.5)
            self.bias = nn.Parameter(torch.rand(channels) - 0.5)

        def forward(self, x):
            spread = x.norm(p=2, dim=(1, 2), keepdim=True)  # per channel, over the positions
            return x + self.bias + self.weight * x * (spread / (spread.mean(dim=-1, keepdim=True) + 1e-6))

    return ResponseNorm


class ConvNeXtV2Block(ConvNeXtBlock):
    """ConvNeXt V2's block: the layer scale gives way to a global response norm between the two Linear layers."""

    def __init__(self, channels, norm_type):
        super().__init__(channels)
        self.grn = norm_type(4 * channels)

    def forward(self, x):
        y = self.pw2(self.grn(F.gelu(self.pw1(self.norm(self.dwconv(x).permute(0, 2, 3, 1))))))
        return x + y.permute(0, 3, 1, 2)


def test_a_module_registered_as_channel_norm_is_sliced_exactly():
    norm_type = _response_norm_type()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 2, stride=2), ConvNeXtV2Block(8, norm_type), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(8, 3)).eval()  # fmt: skip
    x = torch.randn(2, 3, 8, 8)
    assert not any(g.producers[0].name == "1.pw1" for g in rlp.channel_groups(model, x))  # traced into: x.norm()
    rlp.register_channel_op(norm_type, "channel_norm")
    hidden = next(g for g in rlp.channel_groups(model, x) if g.producers[0].name == "1.pw1")
    assert [(m.name, m.role, m.normalizes) for m in hidden.norms] == [("1.grn", Role.NORM, 3)]
    assert names(hidden.consumers) == {"1.pw2"}

    groups = rlp.channel_groups(model, x)
    keep = [torch.arange(g.size) % 3 != 1 for g in groups]
    candidates = {}
    for mode in ("slice", "mask"):  # how a search runs its candidates on the CPU and on a GPU
        evaluator = CandidateEvaluator(model, groups, x, norms="eval", mode=mode)
        with evaluator.active(), torch.no_grad():
            candidates[mode] = CandidateModel(evaluator, keep, keep_vectors(groups, keep))(x)
    rlp.apply_channel_masks(groups, keep)
    masked, small = model, rlp.slim(model, x)  # slim verifies the sliced model against the masked one
    kept = small[1].pw1.out_features
    assert kept == 21 and small[1].grn.weight.shape == small[1].grn.bias.shape == (kept,)
    hooks = masked[1].grn._forward_hooks
    with torch.no_grad():
        with_hook = masked(x)
        saved = dict(hooks)
        hooks.clear()  # without it the pruned (zero) channels lower the mean over the channels
        without = masked(x)
        hooks.update(saved)
    assert not torch.allclose(with_hook, without, atol=1e-4)
    torch.testing.assert_close(small(x), with_hook, atol=1e-5, rtol=1e-4)
    for candidate in candidates.values():
        torch.testing.assert_close(candidate, with_hook, atol=1e-5, rtol=1e-4)


def test_a_channel_norm_needs_one_weight_entry_per_channel():
    class SharedScale(nn.Module):  # one weight for all channels: nothing to mask per channel
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return self.weight * x / x.mean(dim=1, keepdim=True)

    rlp.register_channel_op(SharedScale, "channel_norm")
    model = nn.Sequential(nn.Conv2d(3, 8, 3), SharedScale(), nn.Conv2d(8, 4, 1))
    groups = rlp.channel_groups(model, torch.randn(1, 3, 8, 8))
    assert list(groups) == [] and "whose weight does not hold one entry per channel" in groups.excluded["0"]


class Scales(nn.Module):
    """Res2Net's block: split into equal pieces of ``width``, each piece added to the previous piece's conv."""

    def __init__(self, width=4, scale=3):
        super().__init__()
        self.width = width
        self.conv1 = nn.Conv2d(3, width * scale, 1)
        self.convs = nn.ModuleList(nn.Conv2d(width, width, 3, padding=1) for _ in range(scale - 1))
        self.conv3 = nn.Conv2d(width * scale, 2, 1)

    def forward(self, x):
        pieces = torch.split(torch.relu(self.conv1(x)), self.width, 1)
        out, sp = [], pieces[0]
        for i, conv in enumerate(self.convs):
            sp = torch.relu(conv(sp if i == 0 else sp + pieces[i]))
            out.append(sp)
        return self.conv3(torch.cat([*out, pieces[-1]], 1))


def _candidates_match_the_slice(model, x, keep):
    """Every way a search runs a candidate computes what the masked and sliced model does; returns the slice."""
    groups = rlp.channel_groups(model, x)
    outputs = {}
    for mode in ("slice", "mask"):
        evaluator = CandidateEvaluator(model, groups, x, norms="eval", mode=mode)
        views = {mode: CandidateModel(evaluator, keep, keep_vectors(groups, keep))}
        if mode == "slice" and evaluator.padded:
            views["padded"] = evaluator.view(keep)
        with evaluator.active(), torch.no_grad():
            outputs.update({name: view(x) for name, view in views.items()})
    rlp.apply_channel_masks(groups, keep)
    small = rlp.slim(model, x)  # raises unless the sliced model computes what the masked one does
    assert "padded" in outputs
    for name, out in outputs.items():
        torch.testing.assert_close(out, small(x), atol=1e-5, rtol=1e-4, msg=name)
    return small


def test_equal_pieces_of_a_size_attribute_are_pruned_alike_and_the_attribute_follows():
    class Registered(Scales):  # registrations last: a class of this test's own leaves the others' tracer as it was
        pass

    torch.manual_seed(0)
    model, x = Registered().eval(), torch.randn(2, 3, 6, 6)
    assert "split into pieces of fixed size" in rlp.channel_groups(model, x).excluded["conv1"]
    rlp.register_size_attribute(Registered, "width")
    groups = rlp.channel_groups(model, x)
    pieces = next(g for g in groups if "conv1" in names(g.producers))
    assert pieces.size == 4 and names(pieces.producers) == {"conv1", "convs.0"}  # piece 1 meets convs.0
    assert sorted(m.offset for m in pieces.members if m.name == "conv1") == [0, 4, 8]  # channel c of each piece
    (size,) = groups.sizes
    assert (size.owner, size.attribute, size.kind, size.counts) == ("", "width", "size", (4,))
    keep = [torch.tensor([True, False, True, False]) if g is pieces else torch.ones(g.size, dtype=torch.bool)
            for g in groups]  # fmt: skip
    small = _candidates_match_the_slice(model, x, keep)
    assert small.width == 2 and small.conv1.out_channels == 6 and model.width == 4  # the masked model keeps its own


def test_a_bound_held_by_a_size_attribute_follows_the_channels_before_it():
    class Registered(DualPath):
        pass

    torch.manual_seed(0)
    model, x = Registered(3, 5).eval(), torch.randn(2, 3, 6, 6)
    rlp.register_size_attribute(Registered, "prefix")
    groups = rlp.channel_groups(model, x)
    prefix = next(g for g in groups if "resid" in names(g.producers))
    assert prefix.size == 5 and names(prefix.producers) == {"conv", "resid"} and "resid" not in groups.excluded
    (size,) = groups.sizes
    assert (size.attribute, size.kind, size.counts) == ("prefix", "bound", (5,))
    keep = [torch.arange(g.size) % 2 == 0 for g in groups]
    small = _candidates_match_the_slice(model, x, keep)
    assert small.prefix == 3 and small.resid.out_channels == 3 and small.conv.out_channels == 6


def test_a_size_attribute_that_does_not_hold_the_constant_changes_nothing():
    class Elsewhere(DualPath):  # cuts at 3, while its prefix is 5
        def __init__(self):
            super().__init__(3, 5)
            self.head = nn.Conv2d(11, 3, 1)

        def forward(self, x):
            out = self.conv(x)
            return self.head(torch.cat([out[:, :3], out[:, 3:]], dim=1))

    rlp.register_size_attribute(Elsewhere, "prefix")
    groups = rlp.channel_groups(Elsewhere(), torch.randn(1, 3, 6, 6))
    assert groups.sizes == () and "sliced at fixed positions" in groups.excluded["conv"]


@pytest.mark.parametrize("module_type, attribute, total_of, error", [
    (lambda x: x, "sizes", None, "module_type must be an nn.Module subclass"),
    (nn.Conv2d, 3, None, "attribute must be a str"),
    (nn.Conv2d, "sizes", 1, "total_of must be an int >= 2"),
])  # fmt: skip
def test_register_size_attribute_refuses_bad_input(module_type, attribute, total_of, error):
    with pytest.raises(TypeError, match=error):
        rlp.register_size_attribute(module_type, attribute, total_of)


class TwoReads(nn.Module):
    """A bound read twice: once where slicing can follow it, once on a tensor that has exactly that many channels."""

    def __init__(self):
        super().__init__()
        self.bound = 4
        self.p, self.q = nn.Conv2d(3, 8, 1), nn.Conv2d(3, 4, 1)
        self.u, self.v = nn.Conv2d(4, 2, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.u(self.p(x)[:, : self.bound]) + self.v(self.q(x)[:, : self.bound])


def test_a_size_attribute_also_read_where_slicing_cannot_follow_keeps_its_channels():
    class Registered(TwoReads):
        pass

    rlp.register_size_attribute(Registered, "bound")
    model, x = Registered().eval(), torch.randn(2, 3, 4, 4)
    groups = rlp.channel_groups(model, x)
    assert groups.sizes == () and "attribute 'bound' of the model, which function 'getitem' also reads" in (
        groups.excluded["p"]
    )
    _prune_and_slim(model, x)  # q's channels are pruned, p's first four stay: the attribute keeps its value


def test_a_slice_counted_from_the_end_keeps_its_channels():
    class Tail(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.head(self.conv(x)[:, -4:])

    model, x = Tail().eval(), torch.randn(2, 3, 4, 4)
    groups = rlp.channel_groups(model, x)
    assert list(groups) == [] and "getitem" in groups.excluded["conv"]


def test_plain_sequences_of_groups_are_refused_where_size_attributes_would_be_lost():
    class Registered(Scales):
        pass

    rlp.register_size_attribute(Registered, "width")
    model, x = Registered().eval(), torch.randn(2, 3, 6, 6)
    groups = rlp.channel_groups(model, x)
    assert groups[:1].sizes == groups.sizes != ()  # a slice of ChannelGroups keeps them
    with pytest.raises(ValueError, match="not a plain sequence"):
        CandidateEvaluator(model, list(groups), x)
    rlp.apply_channel_masks(groups, [torch.arange(g.size) < 2 for g in groups])
    with pytest.raises(ValueError, match="not a plain sequence"):
        rlp.slim(model, x, groups=list(groups))


def test_layer_by_layer_masks_on_a_conv_cut_into_pieces_pruned_alike_are_refused_clearly():
    model, x = Shuffle().eval(), torch.randn(2, 3, 4, 4)
    prune.ln_structured(model.stem, "weight", amount=0.5, n=1, dim=0)  # rows, not channel c of both halves
    with pytest.raises(ValueError, match="cut into pieces pruned alike"):
        rlp.slim(model, x)


def test_a_candidate_whose_size_attribute_cannot_be_set_leaves_the_model_as_it_was():
    class ReadOnly(Scales):
        width = property(lambda self: 4)  # no setter

        def __init__(self):
            nn.Module.__init__(self)
            self.conv1, self.conv3 = nn.Conv2d(3, 12, 1), nn.Conv2d(12, 2, 1)
            self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1, groups=4) for _ in range(2))  # depthwise

    rlp.register_size_attribute(ReadOnly, "width")
    model, x = ReadOnly().eval(), torch.randn(2, 3, 6, 6)
    groups = rlp.channel_groups(model, x)
    assert groups.sizes and any(g.tied for g in groups)
    evaluator = CandidateEvaluator(model, groups, x, mode="slice")
    keep = [torch.arange(g.size) < 2 for g in groups]
    with pytest.raises(AttributeError, match="no setter|can't set attribute"), evaluator.active():
        CandidateModel(evaluator, keep, keep_vectors(groups, keep))(x)
    assert [conv.groups for conv in model.convs] == [4, 4]  # set for the call, then restored


def test_a_size_attribute_read_as_a_split_size_and_as_a_bound_keeps_its_value():
    class Registered(TwoReads):
        def forward(self, x):
            a, _ = torch.split(self.p(x), self.bound, 1)  # two equal pieces of `bound`
            return self.u(a) + self.v(self.p(x)[:, self.bound :])  # and `bound` as a slice bound

    rlp.register_size_attribute(Registered, "bound")
    model, x = Registered().eval(), torch.randn(2, 3, 4, 4)
    groups = rlp.channel_groups(model, x)
    assert groups.sizes == () and "at fixed positions" in groups.excluded["p"]


def test_a_size_attribute_holding_the_total_of_equal_pieces_follows_their_count():
    class Halves(nn.Module):  # CSPNet's stage: split(x, self.total // 2)
        def __init__(self):
            super().__init__()
            self.total = 8
            self.down, self.block, self.fuse = nn.Conv2d(3, 8, 1), nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(8, 2, 1)

        def forward(self, x):
            xs, xb = torch.relu(self.down(x)).split(self.total // 2, dim=1)
            return self.fuse(torch.cat([xs, torch.relu(self.block(xb))], dim=1))

    class Literal(Halves):  # splits by a 4 of its own, which only happens to be half the total
        def forward(self, x):
            xs, xb = torch.relu(self.down(x)).split(4, dim=1)
            return self.fuse(torch.cat([xs, torch.relu(self.block(xb))], dim=1))

    rlp.register_size_attribute(Halves, "total", total_of=2)
    torch.manual_seed(0)
    model, x = Halves().eval(), torch.randn(2, 3, 6, 6)
    groups = rlp.channel_groups(model, x)
    (size,) = groups.sizes
    assert (size.kind, size.counts, size.pieces) == ("total", (8,), 2)
    keep = [torch.arange(g.size) % 2 == 0 for g in groups]
    small = _candidates_match_the_slice(model, x, keep)
    assert small.total == 4 and small.down.out_channels == 4 and small.block.in_channels == 2
    rlp.register_size_attribute(Literal, "total")  # without total_of, a 4 is not half of the 8 it holds
    assert rlp.channel_groups(Literal(), x).sizes == ()


@pytest.mark.parametrize("read", ["tensor_split", "split list", "narrow"])
def test_a_bound_attribute_read_by_another_split_or_narrow_keeps_its_value(read):
    class Registered(TwoReads):
        def __init__(self):
            super().__init__()
            self.q = nn.Conv2d(3, 8, 1)  # q(x)[:, :bound] can be bound: q has more channels

        def forward(self, x):
            y = self.p(x)
            if read == "tensor_split":
                other = y.tensor_split([self.bound], dim=1)[0]
            elif read == "split list":
                other = torch.split(y, [self.bound, 8 - self.bound], 1)[0]
            else:
                other = y.narrow(1, 0, self.bound)
            return self.u(self.q(x)[:, : self.bound] + other)

    rlp.register_size_attribute(Registered, "bound")
    model, x = Registered().eval(), torch.randn(2, 3, 4, 4)
    assert rlp.channel_groups(model, x).sizes == ()
