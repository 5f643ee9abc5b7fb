"""Models people bring: timm's conv families, traced, pruned and sliced exactly (skipped without timm)."""

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp

from conftest import conv_pairs

timm = pytest.importorskip("timm")

# One small member of each family whose channels reach the tracer in another way: timm's norm-and-activation
# layers (F.batch_norm called by the norm module), grouped convs, split / slice / cat, squeeze-excitation gates,
# ConvNeXt's channels-last LayerNorm, Linear layers and layer scale, timm's Linear (F.linear), Conv2dSame (which
# torch.fx cannot trace), HGNet's learnable scalar shift after each norm (pruned channels carry it), and the split
# sizes and slice bounds that MixNet, Res2Net, DPN and CSPNet read from attributes (which slicing sets).
FAMILIES = [
    "mobilenetv2_050", "regnetx_002", "ghostnet_050", "resnext26ts", "dpn68", "cspresnet50", "efficientnet_b0",
    "convnext_atto", "lcnet_050", "tf_efficientnet_b0", "hgnetv2_b0", "mixnet_s", "res2net50_14w_8s", "cs3darknet_s",
]  # fmt: skip


def _share_prunable(model, groups):
    filters = sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))
    return sum(g.size * m.expand for g in groups for m in g.filters if isinstance(m.module, nn.Conv2d)) / filters


@pytest.mark.filterwarnings("ignore:global_structured. skipping convolutions")
@pytest.mark.parametrize("name", FAMILIES)
def test_timm_model_is_mostly_prunable_and_slices_exactly(name, one_thread):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, num_classes=10).eval()
    with torch.no_grad():  # scalar gains and shifts start at 1 and 0, which would hide what pruned channels carry
        for param in model.parameters():
            if param.numel() == 1:
                param.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    groups = rlp.channel_groups(model, x)
    assert _share_prunable(model, groups) >= 0.75, groups.excluded
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x,
                          groups=groups)  # fmt: skip
    small = rlp.slim(model, x, groups=groups)  # raises unless the sliced model computes what the masked one does
    assert sum(p.numel() for p in small.parameters()) < 0.7 * sum(p.numel() for p in model.parameters())


@pytest.mark.filterwarnings("ignore:global_structured. skipping convolutions")
def test_timm_global_response_norm_is_a_channel_norm_without_registering(one_thread):
    torch.manual_seed(0)
    model = timm.create_model("convnextv2_atto", pretrained=False, num_classes=10).eval()
    grns = {n for n, m in model.named_modules() if type(m).__name__ == "GlobalResponseNorm"}
    with torch.no_grad():  # at init a GRN is the identity, which would hide a wrong slice
        for name in grns:
            model.get_submodule(name).weight.uniform_(0.5, 1.5)
            model.get_submodule(name).bias.uniform_(-0.5, 0.5)
    x = torch.randn(2, 3, 64, 64)
    groups = rlp.channel_groups(model, x)
    assert _share_prunable(model, groups) == 1.0, groups.excluded
    normalising = {m.name for g in groups for m in g.norms if m.name in grns and m.normalizes == 1}  # NCHW here
    assert grns and grns == normalising
    # A GRN's weight scales a term added to the channel, not the channel: bn_scale does not rank by it.
    ranked = {n for n, m in model.named_modules() if (m, "weight") in rlp.criteria.bn_scale(model, x, groups=groups)}
    assert ranked and not any(name.endswith("mlp.fc1") for name in ranked)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x,
                          groups=groups)  # fmt: skip
    rlp.slim(model, x, groups=groups)  # raises unless the sliced model computes what the masked one does
