import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune import Role

from conftest import Blocks


def names(members):
    return {m.name for m in members}


def test_basiccnn_has_four_groups_with_linear_consumer():
    groups = rlp.channel_groups(rlp.models.BasicCNN(), torch.randn(1, 3, 32, 32))
    assert [g.size for g in groups] == [64, 128, 256, 512]
    assert [names(g.producers) for g in groups] == [{"features.0"}, {"features.4"}, {"features.8"}, {"features.12"}]
    assert [names(g.norms) for g in groups] == [{"features.3"}, {"features.7"}, {"features.11"}, {"features.15"}]
    assert [names(g.consumers) for g in groups] == [{"features.4"}, {"features.8"}, {"features.12"}, {"fc"}]
    fc = groups[3].consumers[0]
    assert (fc.expand, fc.offset, fc.dim) == (16, 0, 1)
    assert groups.excluded == {}


def test_width_multiplier_scales_groups():
    groups = rlp.channel_groups(rlp.models.BasicCNN(width=0.25), torch.randn(1, 3, 32, 32))
    assert [g.size for g in groups] == [16, 32, 64, 128]


def test_resnet18_couples_residual_adds_per_stage():
    model = torchvision.models.resnet18()
    groups = rlp.channel_groups(model, torch.randn(1, 3, 64, 64))
    assert len(groups) == 12
    by_producers = {frozenset(names(g.producers)): g for g in groups}
    stage1 = by_producers[frozenset({"conv1", "layer1.0.conv2", "layer1.1.conv2"})]
    assert names(stage1.norms) == {"bn1", "layer1.0.bn2", "layer1.1.bn2"}
    assert names(stage1.consumers) == {"layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.downsample.0"}
    stage4 = by_producers[frozenset({"layer4.0.conv2", "layer4.0.downsample.0", "layer4.1.conv2"})]
    assert names(stage4.consumers) == {"layer4.1.conv1", "fc"}
    assert next(m for m in stage4.consumers if m.name == "fc").expand == 1
    inner = [g for g in groups if len(g.producers) == 1]
    assert sorted(next(iter(names(g.producers))) for g in inner) == sorted(
        f"layer{s}.{b}.conv1" for s in range(1, 5) for b in range(2)
    )


def test_mobilenet_v2_ties_depthwise_convs():
    model = torchvision.models.mobilenet_v2()
    groups = rlp.channel_groups(model, torch.randn(1, 3, 32, 32))
    modules = dict(model.named_modules())
    expansions = [g for g in groups if g.tied]
    assert len(expansions) == 17  # the stem and the 16 blocks with an expansion conv
    for g in expansions:
        (dw,) = g.tied
        conv = modules[dw.name]
        assert conv.groups == conv.in_channels == conv.out_channels == g.size
        assert len(g.norms) == 2  # the expansion's BN and the depthwise conv's BN
    assert groups.excluded == {}


def test_concat_offsets_and_flattened_linear():
    class Cat(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(3, 6, 3)
            self.c = nn.Conv2d(10, 5, 1)
            self.fc = nn.Linear(10 * 4, 2)

        def forward(self, x):
            y = torch.cat([self.a(x), self.b(x)], 1)
            return self.c(y).sum() + self.fc(torch.flatten(nn.functional.adaptive_max_pool2d(y, 2), 1))

    groups = rlp.channel_groups(Cat(), torch.randn(1, 3, 8, 8))
    ga, gb = groups
    assert {(m.name, m.offset, m.expand) for m in ga.consumers} == {("c", 0, 1), ("fc", 0, 4)}
    assert {(m.name, m.offset, m.expand) for m in gb.consumers} == {("c", 4, 1), ("fc", 16, 4)}
    assert "c" in groups.excluded  # its output reaches the network output through .sum()
    idx = gb.consumers[1].indices(torch.tensor([0, 2]))
    assert idx.tolist() == [16, 17, 18, 19, 24, 25, 26, 27]


def test_squeeze_excitation_couples_the_gate():
    groups = rlp.channel_groups(Blocks(["plain", "se"]), torch.randn(1, 3, 8, 8))
    main = next(g for g in groups if "blocks.0.conv" in names(g.producers))
    assert names(main.producers) == {"blocks.0.conv", "blocks.1.fc2"}
    assert {"blocks.1.fc1", "head"} <= names(main.consumers)


def test_conv1d_and_conv3d():
    for conv, bn, shape in ((nn.Conv1d, nn.BatchNorm1d, (1, 2, 16)), (nn.Conv3d, nn.BatchNorm3d, (1, 2, 6, 6, 6))):
        model = nn.Sequential(conv(2, 5, 3), bn(5), nn.ReLU(), conv(5, 7, 3), nn.Flatten(), nn.LazyLinear(3))
        model(torch.randn(shape))
        groups = rlp.channel_groups(model, torch.randn(shape))
        assert [g.size for g in groups] == [5, 7]
        assert names(groups[0].norms) == {"1"}
        assert groups[1].consumers[0].name == "5"


def test_grouped_conv_is_pruned_in_whole_groups_and_network_output_is_excluded():
    model = nn.Sequential(nn.Conv2d(4, 8, 1), nn.Conv2d(8, 12, 3, groups=2), nn.Conv2d(12, 6, 1), nn.Conv2d(6, 2, 1))
    groups = rlp.channel_groups(model, torch.randn(1, 4, 5, 5))
    assert [names(g.producers) for g in groups] == [{"0"}, {"2"}]
    # One channel of the first group is one group of the grouped conv: 4 of conv 0's filters, 6 of conv 1's.
    assert groups[0].size == 2
    assert [(m.name, m.role, m.expand) for m in groups[0].members] == [
        ("0", Role.PRODUCER, 4), ("1", Role.TIED, 6), ("2", Role.CONSUMER, 6),
    ]  # fmt: skip
    assert groups.excluded == {"3": "reaches the network output"}


def test_grouped_conv_whose_groups_straddle_two_spaces_is_excluded():
    class Straddle(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 5, 1)
            self.grouped = nn.Conv2d(8, 8, 3, groups=2)
            self.head = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            return self.head(self.grouped(torch.cat([self.a(x), self.b(x)], dim=1)))

    groups = rlp.channel_groups(Straddle(), torch.randn(1, 3, 5, 5))
    assert len(groups) == 0
    assert "feeds grouped convolution 'grouped' (groups=2) across its groups" in groups.excluded["a"]


def test_unmodelled_ops_exclude_their_channels():
    model = torchvision.models.shufflenet_v2_x0_5()
    groups = rlp.channel_groups(model, torch.randn(1, 3, 32, 32))
    assert "view" in groups.excluded["stage2.0.branch2.5"]
    assert len(groups) > 0  # the inner branch convs stay prunable


def test_untraceable_model_names_the_module_and_leaf_modules_fix_it():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), DataDependent(), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match=r"inside module '2'.*leaf_modules=\['2'\]"):
        rlp.channel_groups(model, torch.randn(1, 3, 8, 8))
    groups = rlp.channel_groups(model, torch.randn(1, 3, 8, 8), leaf_modules=["2"])
    assert len(groups) == 0
    assert "module '2' (DataDependent)" in groups.excluded["0"]
    groups = rlp.channel_groups(model, torch.randn(1, 3, 8, 8), leaf_modules=[DataDependent])
    assert "0" in groups.excluded


def test_bad_inputs():
    model = rlp.models.BasicCNN()
    with pytest.raises(ValueError, match=r"does not run on example_inputs of shape \(1, 3, 8, 8\)"):
        rlp.channel_groups(model, torch.randn(1, 3, 8, 8))
    with pytest.raises(TypeError, match="example_inputs must be a tensor"):
        rlp.channel_groups(model, [[1.0]])
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        rlp.channel_groups("BasicCNN", torch.randn(1, 3, 32, 32))


def test_tracing_leaves_model_state_untouched():
    model = rlp.models.BasicCNN(width=0.25).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rlp.channel_groups(model, torch.randn(4, 3, 32, 32))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_group_of_finds_filters_of_producers_and_tied_convs():
    model = torchvision.models.mobilenet_v2()
    groups = rlp.channel_groups(model, torch.randn(1, 3, 32, 32))
    dw = model.features[2].conv[1][0]
    assert groups.group_of(dw) is groups.group_of(model.features[2].conv[0][0])
    assert groups.group_of(model.classifier[1]) is None
    assert all(m.role in (Role.PRODUCER, Role.TIED) for m in groups[0].filters)


def test_groups_are_traced_once_per_structure_and_input_shape():
    model = rlp.models.BasicCNN(width=0.25)
    x = torch.randn(1, 3, 32, 32)
    groups = rlp.channel_groups(model, x)
    assert rlp.channel_groups(model, x) is groups
    assert rlp.channel_groups(model, torch.randn(2, 3, 32, 32)) is not groups  # another input shape
    groups = rlp.channel_groups(model, x)
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    rlp.global_structured(convs, prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x)
    assert rlp.channel_groups(model, x) is groups  # masks leave the channels where they were
    rlp.slim(model, x, inplace=True)
    sliced = rlp.channel_groups(model, x)
    assert sliced is not groups
    assert [g.size for g in sliced] == [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
    model.features[0] = copy.deepcopy(model.features[0])  # a new module object, equal to the old
    assert rlp.channel_groups(model, x) is not sliced
