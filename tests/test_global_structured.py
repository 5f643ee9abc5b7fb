import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune.masks import alive_channels

from conftest import Blocks, conv_pairs

X32 = torch.randn(1, 3, 32, 32)


def filter_rows_alive(module):
    return module.weight_mask.flatten(1).any(1)


def pruned_count(groups):
    return sum(int((~alive_channels(g)).sum()) for g in groups)


@pytest.mark.parametrize("amount", [0.5, 0.9])
@pytest.mark.parametrize(
    "method, kwargs", [(prune.LnStructured, {"n": 1}), (prune.RandomStructured, {"seed": 0})], ids=["L1", "random"]
)
@pytest.mark.parametrize("arch", ["basiccnn", "resnet18", "mobilenet_v2"])
def test_prunes_exact_budget_keeps_groups_consistent(arch, method, kwargs, amount):
    if arch == "basiccnn":
        model, x = rlp.models.BasicCNN(), X32
    else:
        model, x = getattr(torchvision.models, arch)(), torch.randn(1, 3, 32, 32)
    groups = rlp.channel_groups(model, x)
    total = sum(g.size for g in groups)
    rlp.global_structured(conv_pairs(model), method, amount=amount, model=model, example_inputs=x, groups=groups, **kwargs)

    assert prune.is_pruned(model)
    assert pruned_count(groups) == round(amount * total)
    for g in groups:
        alive = alive_channels(g)
        assert alive.any(), f"group {g.name} lost every filter"
        for m in g.filters:
            rows = m.module.weight_mask.movedim(0, 0)[m.indices(torch.arange(g.size))].flatten(1).any(1)
            assert torch.equal(rows, alive), f"{m.name} disagrees with its group {g.name}"
            if m.module.bias is not None:
                assert torch.equal(m.module.bias_mask[m.indices(torch.arange(g.size))].bool(), alive)
        for m in g.norms:
            assert torch.equal(m.module.weight_mask[m.indices(torch.arange(g.size))].bool(), alive)
            assert torch.equal(m.module.bias_mask[m.indices(torch.arange(g.size))].bool(), alive)

    for module in list(model.modules()):
        for name in ("weight", "bias"):
            if hasattr(module, name + "_mask"):
                prune.remove(module, name)
    assert not prune.is_pruned(model)
    model.eval()(x)


def test_pruned_channels_are_exactly_zero_downstream():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(2, 3, 32, 32)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=2, amount=0.6, model=model, example_inputs=x)
    groups = rlp.channel_groups(model, x)
    seen = {}
    hooks = [m.register_forward_hook(lambda mod, i, o, name=n: seen.__setitem__(name, o))
             for n, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.MaxPool2d))]  # fmt: skip
    model(x)
    for h in hooks:
        h.remove()
    stage1 = groups.group_of(model.conv1)
    dead = ~alive_channels(stage1)
    assert dead.any()
    for name in ("bn1", "maxpool", "layer1.0.bn2", "layer1.1.bn2"):
        assert seen[name][:, dead].abs().max() == 0, name


def test_l1_prunes_the_smallest_filters_relative_to_their_layer():
    model = nn.Sequential(nn.Conv2d(1, 4, 1, bias=False), nn.ReLU(), nn.Conv2d(4, 4, 1, bias=False), nn.Flatten())
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]).view(4, 1, 1, 1))
        model[2].weight.copy_(100 * torch.tensor([5.0, 1.0, 9.0, 9.0]).view(4, 1, 1, 1).expand(4, 4, 1, 1) / 4)
    x = torch.randn(1, 1, 3, 3)
    # the last conv reaches the network output, so only model[0]'s four channels are candidates
    with pytest.warns(UserWarning, match="reaches the network output"):
        rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=2, model=model, example_inputs=x)
    assert filter_rows_alive(model[0]).tolist() == [False, False, True, True]


def test_mean_normalisation_makes_layers_comparable():
    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1))
        with torch.no_grad():
            model[2].weight.mul_(1000)
        return model

    x = torch.randn(1, 3, 9, 9)
    raw, normalised = make(), make()
    for model, how in ((raw, "none"), (normalised, "mean")):
        with pytest.warns(UserWarning):
            rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, model=model,
                                  example_inputs=x, normalize=how)  # fmt: skip
    assert int(filter_rows_alive(raw[0]).sum()) == 1  # unnormalised: the small-scale layer takes the whole cut
    kept = [int(filter_rows_alive(normalised[i]).sum()) for i in (0, 2)]
    assert 1 < kept[0] < 8 and 1 < kept[1] < 8


def test_min_keep_count_and_fraction():
    model = rlp.models.BasicCNN(width=0.25)
    pairs = conv_pairs(model)
    rlp.global_structured(pairs, prune.LnStructured, n=1, amount=240 - 4, model=model, example_inputs=X32)
    assert [int(filter_rows_alive(m).sum()) for m, _ in pairs] == [1, 1, 1, 1]

    model = rlp.models.BasicCNN(width=0.25)
    pairs = conv_pairs(model)
    rlp.global_structured(pairs, prune.RandomStructured, seed=1, amount=0.5, min_keep=0.5, model=model,
                          example_inputs=X32)  # fmt: skip
    assert [int(filter_rows_alive(m).sum()) for m, _ in pairs] == [8, 16, 32, 64]

    model = rlp.models.BasicCNN(width=0.25)
    with pytest.raises(ValueError, match="at most 236 can go"):
        rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=1.0, model=model, example_inputs=X32)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=1.0, min_keep=0, model=model,
                          example_inputs=X32)  # fmt: skip
    assert not any(filter_rows_alive(m).any() for m, _ in conv_pairs(model))


def test_pruning_again_composes_masks():
    model = rlp.models.BasicCNN(width=0.25)
    pairs = conv_pairs(model)
    rlp.global_structured(pairs, prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=X32)
    first = [filter_rows_alive(m).clone() for m, _ in pairs]
    rlp.global_structured(pairs, prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=X32)
    second = [filter_rows_alive(m) for m, _ in pairs]
    assert sum(int(s.sum()) for s in second) == 60  # 240 -> 120 -> 60
    assert all(not (s & ~f).any() for f, s in zip(first, second)), "a pruned filter came back"
    hooks = [h for h in pairs[0][0]._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]
    assert sorted(h._tensor_name for h in hooks) == ["bias", "weight"]
    assert all(isinstance(h, prune.PruningContainer) and len(h) == 2 for h in hooks)


def test_importance_scores_override_the_weights():
    model = rlp.models.BasicCNN(width=0.25)
    pairs = conv_pairs(model)
    scores = {(m, "weight"): torch.arange(m.out_channels, dtype=torch.float) + 1 for m, _ in pairs}
    rlp.global_structured(pairs, prune.LnStructured, scores, n=1, amount=0.5, model=model, example_inputs=X32)
    for m, _ in pairs:
        alive = filter_rows_alive(m)
        assert alive.tolist() == sorted(alive.tolist()), "a low-score filter survived a high-score one"


def test_random_structured_is_seeded():
    masks = []
    for seed in (0, 0, 1):
        model = rlp.models.BasicCNN(width=0.25)
        rlp.global_structured(conv_pairs(model), prune.RandomStructured, seed=seed, amount=0.5, model=model,
                              example_inputs=X32)  # fmt: skip
        masks.append(torch.cat([filter_rows_alive(m) for m, _ in conv_pairs(model)]))
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_coupled_group_is_pruned_whole_when_one_conv_is_listed():
    model = Blocks(["plain", "residual", "residual"])
    x = torch.randn(1, 3, 8, 8)
    one = [(model.blocks[1]["conv"], "weight")]
    rlp.global_structured(one, prune.LnStructured, n=2, amount=2, model=model, example_inputs=x)
    coupled = [model.blocks[0]["conv"], model.blocks[1]["conv"], model.blocks[2]["conv"]]
    rows = [filter_rows_alive(m) for m in coupled]
    assert int((~rows[0]).sum()) == 2 and all(torch.equal(rows[0], r) for r in rows)
    assert not hasattr(model.stem, "weight_mask")


BAD = [
    (dict(amount=-0.1), ValueError, r"not a fraction in \[0, 1\]"),
    (dict(amount=1.5), ValueError, r"not a fraction in \[0, 1\]"),
    (dict(amount=-3), ValueError, "negative"),
    (dict(amount=10_000), ValueError, "more than the 240 prunable filters"),
    (dict(amount=True), TypeError, "amount must be a float"),
    (dict(amount="half"), TypeError, "amount must be a float"),
    (dict(min_keep=-1), ValueError, "min_keep=-1 is negative"),
    (dict(normalize="z"), ValueError, "normalize='z'"),
    (dict(pruning_method=prune.L1Unstructured), TypeError, "global_unstructured"),
    (dict(pruning_method=prune.Identity), TypeError, "global_unstructured"),
    (dict(pruning_method=prune.CustomFromMask), TypeError, "needs a structured method"),
    (dict(pruning_method=nn.Conv2d), TypeError, "pruning_method must be"),
    (dict(n=None, pruning_method=prune.LnStructured), TypeError, "needs the norm order n"),
    (dict(nn=1), TypeError, "takes no argument"),
    (dict(dim=1), ValueError, "dim=1 is not supported"),
    (dict(parameters=[]), ValueError, "parameters is empty"),
    (dict(parameters="weight"), TypeError, "iterable of \\(module, name\\) pairs"),
    (dict(parameters=[("conv", "weight")]), TypeError, "must be a \\(module, name\\) tuple"),
    (dict(parameters="fc"), ValueError, "not a convolution weight"),
    (dict(parameters="missing"), ValueError, "has no parameter 'kernel'"),
    (dict(parameters="bias"), ValueError, "not a convolution weight"),
    (dict(parameters="foreign"), ValueError, "not a submodule of model"),
    (dict(importance_scores=[1.0]), TypeError, "importance_scores must be a dict"),
    (dict(groups=[1]), TypeError, "ChannelGroups"),
    (dict(example_inputs=torch.randn(1, 3, 8, 8)), ValueError, "does not run on example_inputs"),
]


@pytest.mark.parametrize("change, error, message", BAD, ids=[f"{i}-{'-'.join(b[0])}" for i, b in enumerate(BAD)])  # stable ids: no tensor reprs
def test_bad_input_is_refused_and_model_unchanged(change, error, message):
    model = rlp.models.BasicCNN(width=0.25)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = dict(parameters=conv_pairs(model), pruning_method=prune.LnStructured, n=1, amount=0.5, model=model,
                example_inputs=X32)  # fmt: skip
    special = {
        "fc": [(model.fc, "weight")],
        "missing": [(model.features[0], "kernel")],
        "bias": [(model.features[0], "bias")],
        "foreign": [(nn.Conv2d(1, 1, 1), "weight")],
    }
    args.update(change)
    if isinstance(args["parameters"], str) and args["parameters"] in special:
        args["parameters"] = special[args["parameters"]]
    if args.get("n", 1) is None:
        del args["n"]
    if args["pruning_method"] is not prune.LnStructured:
        args.pop("n", None)
    params, method = args.pop("parameters"), args.pop("pruning_method")
    with pytest.raises(error, match=message):
        rlp.global_structured(params, method, **args)
    assert not prune.is_pruned(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_no_prunable_group_is_an_error_naming_the_reason():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PixelShuffle(2), nn.Flatten(), nn.LazyLinear(2))
    model(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="PixelShuffle"):
        rlp.global_structured([(model[0], "weight")], prune.LnStructured, n=1, amount=0.5, model=model,
                              example_inputs=torch.randn(1, 3, 8, 8))  # fmt: skip


def test_criterion_by_name_matches_the_builtin_method():
    masks = []
    for method, kwargs in ((prune.LnStructured, {"n": 1}), ("l1", {})):
        torch.manual_seed(0)
        model = rlp.models.BasicCNN(width=0.25)
        rlp.global_structured(conv_pairs(model), method, amount=0.6, model=model, example_inputs=X32, **kwargs)
        masks.append(torch.cat([filter_rows_alive(m) for m, _ in conv_pairs(model)]))
    assert torch.equal(masks[0], masks[1])


@pytest.mark.parametrize("name", ["l2", "random", "bn_scale", "snip", "synflow", "same_sign"])
def test_every_criterion_prunes_the_budget_by_name(name):
    torch.manual_seed(0)
    model = Blocks(["plain", "residual", "depthwise", "plain"])
    x = torch.randn(4, 3, 8, 8)
    extra = {
        "random": {"seed": 0},
        "snip": {"inputs": x, "targets": torch.tensor([0, 1, 2, 0])},
        "same_sign": {"init_state": {k: v.clone() for k, v in model.state_dict().items()}},
    }.get(name, {})
    groups = rlp.channel_groups(model, x[:1])
    if name == "bn_scale":  # the stem has no norm to read a scale from
        groups = rlp.ChannelGroups([g for g in groups if g.norms], groups.excluded)
    pairs = [(m.module, "weight") for g in groups for m in g.producers]
    rlp.global_structured(pairs, name, amount=0.5, model=model, example_inputs=x[:1], groups=groups, **extra)
    assert pruned_count(groups) == round(0.5 * sum(g.size for g in groups))
    assert all(alive_channels(g).any() for g in groups)


def test_criterion_name_and_importance_scores_are_exclusive():
    model = rlp.models.BasicCNN(width=0.25)
    with pytest.raises(ValueError, match="not both"):
        rlp.global_structured(conv_pairs(model), "l1", {}, amount=0.5, model=model, example_inputs=X32)
    with pytest.raises(ValueError, match="unknown criterion|known"):
        rlp.global_structured(conv_pairs(model), "magnitude", amount=0.5, model=model, example_inputs=X32)
    assert not prune.is_pruned(model)
