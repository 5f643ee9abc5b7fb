"""Transformer blocks: nn.MultiheadAttention, class tokens and position embeddings on the residual stream, and
torchvision's Swin window attention."""

import copy

import pytest
import torch
from torch import nn
from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformer, SwinTransformerBlockV2
from torchvision.models.vision_transformer import VisionTransformer

import torch_rlprune as rlp
from torch_rlprune.lottery import Snapshot
from torch_rlprune.masks import apply_channel_masks
from torch_rlprune.pipeline.maskfile import unslice
from torch_rlprune.search.evaluation import CandidateEvaluator

HEADS, HIDDEN = 4, 48  # heads of 12 channels


def small_vit(seed=0):
    torch.manual_seed(seed)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=HEADS, hidden_dim=HIDDEN,
                              mlp_dim=64, num_classes=10).eval()  # fmt: skip
    nn.init.normal_(model.heads.head.weight)  # torchvision starts the head at zero: every output would be 0
    return model, torch.randn(3, 3, 32, 32)


def stream_keep(groups, heads):
    """Keep masks: the residual stream keeps ``heads`` (whole heads), every MLP group a random half."""
    stream = torch.zeros(groups[0].size, dtype=torch.bool)
    stream[list(heads)] = True
    return [stream] + [torch.rand(g.size) < 0.5 for g in groups[1:]]


def test_the_residual_stream_of_a_vit_is_pruned_in_whole_heads():
    model, x = small_vit()
    groups = rlp.channel_groups(model, x)
    assert not groups.excluded
    stream = groups[0]
    assert stream.size == HEADS  # one unit per head: channels h * 12 ... h * 12 + 11
    parts = {(m.name, m.role, m.stored, m.axis, m.offset, m.expand) for m in stream.members}
    attention = "encoder.layers.encoder_layer_0.self_attention"
    assert ("", rlp.Role.SCALE, "class_token", 2, 0, HIDDEN // HEADS) in parts
    assert ("encoder", rlp.Role.SCALE, "pos_embedding", 2, 0, HIDDEN // HEADS) in parts
    assert {(m.offset, m.stored) for m in stream.members if m.name == attention and m.role is rlp.Role.SCALE} == {
        (0, "in_proj_weight"), (HIDDEN, "in_proj_weight"), (2 * HIDDEN, "in_proj_weight")
    }  # fmt: skip
    assert (attention + ".out_proj", rlp.Role.PRODUCER, None, 0, 0, HIDDEN // HEADS) in parts
    # The model reshapes the patch embedding to `hidden_dim` channels: slicing sets it.
    assert [(s.owner, s.attribute, s.kind) for s in groups.sizes] == [("", "hidden_dim", "width")]


def test_a_sliced_vit_computes_what_the_masked_one_does_and_is_counted_as_it():
    model, x = small_vit()
    groups = rlp.channel_groups(model, x)
    apply_channel_masks(groups, stream_keep(groups, [0, 2]))
    with torch.no_grad():
        expected = model(x)
    stats = rlp.metrics.model_stats(model, x)
    small = rlp.slim(model, x)
    attention = small.encoder.layers[0].self_attention
    assert (attention.embed_dim, attention.num_heads, attention.head_dim, small.hidden_dim) == (24, 2, 12, 24)
    assert small.class_token.shape == (1, 1, 24) and small.encoder.pos_embedding.shape == (1, 17, 24)
    with torch.no_grad():
        assert torch.allclose(small(x), expected, atol=1e-5)
    assert stats.params_kept == sum(p.numel() for p in small.parameters())
    assert stats.macs_kept == rlp.metrics.model_stats(small, x).macs


def test_a_masked_attention_trains_with_the_masks_of_its_out_proj():
    # MultiheadAttention reads out_proj.weight without calling out_proj, whose pruning hook would refresh it.
    model, x = small_vit()
    groups = rlp.channel_groups(model, x)
    apply_channel_masks(groups, stream_keep(groups, [1, 2, 3]))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    out_proj = model.encoder.layers[1].self_attention.out_proj
    with torch.no_grad():
        expected = model(x)
        assert torch.equal(out_proj.weight, out_proj.weight_orig * out_proj.weight_mask)
        assert torch.allclose(rlp.slim(model, x)(x), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["slice", "mask"])
def test_search_candidates_of_a_vit_compute_what_the_masked_model_does(mode):
    model, x = small_vit()
    groups = rlp.channel_groups(model, x)
    keep = stream_keep(groups, [0, 3])
    evaluator = CandidateEvaluator(model, groups, x, mode=mode)
    with evaluator.active(), torch.no_grad():
        got = evaluator.view(keep)(x)
    assert model.encoder.layers[0].self_attention.num_heads == HEADS  # restored after the call
    apply_channel_masks(groups, keep)
    with torch.no_grad():
        assert torch.allclose(got, model(x), atol=1e-5)


def test_a_sliced_vit_rewinds_and_unslices():
    model, x = small_vit()
    init = Snapshot.capture(model, "init")
    groups = rlp.channel_groups(model, x)
    apply_channel_masks(groups, stream_keep(groups, [0, 1]))
    small = rlp.slim(model, x)
    rlp.rewind(small, init)
    assert torch.equal(small.class_token, init.state["class_token"][..., :24])
    rows = torch.cat([torch.arange(24) + start for start in (0, HIDDEN, 2 * HIDDEN)])
    key = "encoder.layers.encoder_layer_0.self_attention.in_proj_weight"
    assert torch.equal(small.encoder.layers[0].self_attention.in_proj_weight, init.state[key][rows][:, :24])
    with torch.no_grad():
        small.encoder.pos_embedding.add_(1.0)
    back = unslice(small, model)
    with torch.no_grad():
        assert torch.allclose(back(x), small(x), atol=1e-5)


def test_a_vit_whose_image_size_equals_its_width_is_pruned():
    # ViT checks ``h == self.image_size``; that the value is also ``hidden_dim`` must not pin the stream.
    torch.manual_seed(0)
    model = VisionTransformer(image_size=HIDDEN, patch_size=8, num_layers=1, num_heads=HEADS, hidden_dim=HIDDEN,
                              mlp_dim=64, num_classes=10).eval()  # fmt: skip
    groups = rlp.channel_groups(model, torch.randn(1, 3, HIDDEN, HIDDEN))
    assert not groups.excluded
    assert groups[0].size == HEADS


class Tokens(nn.Module):
    """Patch embedding, one attention over its tokens, a head: ``attention(t, t, t, **call)``."""

    def __init__(self, returns_weights=False, **call):
        super().__init__()
        self.embed = nn.Conv2d(3, 8, 2, stride=2)
        self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 2)
        self.returns_weights, self.call = returns_weights, call

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)
        call = {k: v.repeat(x.shape[0], 1, 1) if k == "attn_mask" and v.dim() == 3 else v for k, v in self.call.items()}
        out, weights = self.attention(t, t, t, **call)
        logits = self.head((t + out).mean(1))
        return (logits, weights) if self.returns_weights else logits


@pytest.mark.parametrize("call, returns_weights, why", [
    ({}, True, "attention weights the model uses"),
    ({"average_attn_weights": False}, True, "attention weights the model uses"),
    ({"need_weights": False, "attn_mask": torch.randn(2, 4, 4)}, False, "a mask per head"),
])  # fmt: skip
def test_attention_weights_used_or_a_mask_per_head_keep_the_heads(call, returns_weights, why):
    # Both hold one map per head: cutting a head would change what the model returns or what the mask matches.
    model, x = Tokens(returns_weights, **call).eval(), torch.randn(2, 3, 4, 4)
    assert why in rlp.channel_groups(model, x).excluded["embed"]


def test_attention_weights_left_unused_and_a_mask_shared_by_the_heads_let_heads_go():
    torch.manual_seed(0)
    model, x = Tokens(attn_mask=torch.randn(4, 4)).eval(), torch.randn(2, 3, 4, 4)  # weights computed, unused
    groups = rlp.channel_groups(model, x)
    assert not groups.excluded and [g.size for g in groups] == [2]
    apply_channel_masks(groups, [torch.tensor([False, True])])
    with torch.no_grad():
        expected = model(x)
    small = rlp.slim(model, x)
    assert small.attention.num_heads == 1
    with torch.no_grad():
        assert torch.allclose(small(x), expected, atol=1e-6)


def test_attention_macs_count_each_projection_over_the_tokens_it_reads():
    class Cross(nn.Module):
        def __init__(self, kdim):
            super().__init__()
            self.attention = nn.MultiheadAttention(8, 2, kdim=kdim, vdim=kdim, batch_first=True)

        def forward(self, query, memory):
            return self.attention(query, memory, memory, need_weights=False)[0]

    query, memory = torch.randn(2, 1, 8), torch.randn(2, 100, 6)
    macs = {layer.name: layer.macs for layer in rlp.metrics.model_stats(Cross(6), (query, memory)).layers}
    assert macs["attention"] == 1 * 8 * 8 + 2 * 100 * 8 * 6  # query over 1 token, key and value over 100
    assert macs["attention.out_proj"] == 1 * 8 * 8
    memory = torch.randn(2, 100, 8)  # the same width: one in_proj_weight
    macs = {layer.name: layer.macs for layer in rlp.metrics.model_stats(Cross(8), (query, memory)).layers}
    assert macs["attention"] == 1 * 8 * 8 + 2 * 100 * 8 * 8


def test_attentions_that_cannot_follow_the_channels_keep_them():
    class Block(nn.Module):
        def __init__(self, shared):
            super().__init__()
            self.embed = nn.Conv1d(3, 8, 1)
            self.other = nn.Conv1d(3, 8, 1)
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)
            self.shared = shared
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            q, k = self.embed(x).transpose(1, 2), self.other(x).transpose(1, 2)
            out = self.attention(q, k, k, need_weights=False)[0]
            out = self.attention(out, out, out)[0] if self.shared else out
            return self.head(out.mean(1))

    x = torch.randn(2, 3, 5)
    plain = rlp.channel_groups(Block(shared=False), x)
    assert not plain.excluded  # query and key/value inputs meet in the attention: one group of 2 heads
    assert [g.size for g in plain] == [2]
    reused = rlp.channel_groups(Block(shared=True), x)
    assert "called more than once" in reused.excluded["embed"]
    block = Block(shared=False)
    block.other = nn.Conv1d(3, 4, 1)
    block.attention = nn.MultiheadAttention(8, 2, kdim=4, vdim=4, batch_first=True)  # separate key/value weights
    assert "needs its heads tied" in rlp.channel_groups(block, x).excluded["embed"]


def test_a_fixed_channel_count_in_a_reshape_keeps_the_channels_unless_registered():
    class Head(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 1)
            self.channels = 8
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            y = self.conv(x).reshape(x.shape[0], self.channels, -1)
            return self.fc(y.mean(2))

    class ByKeyword(Head):
        def forward(self, x):
            return self.fc(self.conv(x).reshape(shape=(x.shape[0], 8, -1)).mean(2))

    x = torch.randn(2, 3, 4, 4)
    assert "reshaped to a fixed channel count" in rlp.channel_groups(Head(), x).excluded["conv"]
    assert "reshaped to a fixed channel count" in rlp.channel_groups(ByKeyword(), x).excluded["conv"]

    class Registered(Head):
        pass

    rlp.register_size_attribute(Registered, "channels")
    model = Registered()
    groups = rlp.channel_groups(model, x)
    apply_channel_masks(groups, [torch.arange(8) % 3 == 0])
    with torch.no_grad():
        expected = model(x)
    small = rlp.slim(model, x)
    assert small.channels == 3
    with torch.no_grad():
        assert torch.allclose(small(x), expected, atol=1e-6)


def test_a_vit_search_prunes_heads_and_slices(one_thread):
    model, x = small_vit()
    reward = rlp.rewards.Accuracy([(x, torch.tensor([0, 1, 2]))], batches=1)
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    rlp.global_structured(convs, rlp.RLStructuredPruning, amount=0.5, model=model, example_inputs=x,
                          reward=reward, episodes=8, seed=0, progress=False)  # fmt: skip
    with torch.no_grad():
        expected = model(x)
    small = rlp.slim(model, x)
    assert small.encoder.layers[0].self_attention.num_heads == 2
    with torch.no_grad():
        assert torch.allclose(small(x), expected, atol=1e-5)
    assert copy.deepcopy(small)(x).shape == (3, 10)


def small_swin(v2, seed=0):
    torch.manual_seed(seed)
    kind = dict(block=SwinTransformerBlockV2, downsample_layer=PatchMergingV2) if v2 else {}
    model = SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[2, 2],
                            num_classes=3, **kind).eval()  # fmt: skip
    with torch.no_grad():  # at init the position biases are near zero and the norms' affines constant
        for name, p in model.named_parameters():
            if p.dim() == 1 or "relative_position" in name:
                p.normal_()
    return model, torch.randn(2, 3, 16, 16)


@pytest.mark.parametrize("v2", [False, True])
def test_a_swin_is_pruned_in_whole_heads_and_sliced_exactly_after_training_masked(v2):
    model, x = small_swin(v2)
    macs = {layer.name: layer.macs for layer in rlp.metrics.model_stats(model, x).layers}
    assert (macs["features.1.0.attn.qkv"], macs["features.1.0.attn.proj"]) == (64 * 16 * 48, 64 * 16 * 16)  # 8x8 tokens
    groups = rlp.channel_groups(model, x)
    assert not groups.excluded
    assert [g.size for g in groups if g.producers[0].name == "features.0.0"] == [2]  # 16 channels, heads of 8
    assert {(s.owner, s.attribute, s.kind) for s in groups.sizes} == {
        (f"features.{stage}.{block}.attn", "num_heads", "heads") for stage in (1, 3) for block in (0, 1)
    }  # fmt: skip
    torch.manual_seed(1)
    keep = [torch.arange(g.size) == 1 if g.size <= 4 else torch.rand(g.size) < 0.5 for g in groups]
    apply_channel_masks(groups, keep)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(2):  # the attention reads qkv.weight and proj.weight without calling qkv and proj
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        expected = model(x)
    stats = rlp.metrics.model_stats(model, x)
    small = rlp.slim(model, x)
    assert stats.params_kept == sum(p.numel() for p in small.parameters())
    assert stats.macs_kept == rlp.metrics.model_stats(small, x).macs
    attention = small.features[3][1].attn
    assert [small.features[s][b].attn.num_heads for s in (1, 3) for b in (0, 1)] == [1, 1, 1, 1]
    assert attention.qkv.weight.shape == (24, 8) and attention.proj.weight.shape == (8, 8)
    per_head = (attention.logit_scale.shape[0], attention.cpb_mlp[2].out_features) if v2 else (
        attention.relative_position_bias_table.shape[1],)  # fmt: skip
    assert set(per_head) == {1}
    with torch.no_grad():
        assert torch.allclose(small(x), expected, atol=1e-5)


@pytest.mark.parametrize("v2", [False, True])
def test_a_sliced_swin_rewinds_and_unslices_with_a_stage_down_to_one_head(v2):
    model, x = small_swin(v2)
    init = Snapshot.capture(model, "init")
    groups = rlp.channel_groups(model, x)
    torch.manual_seed(1)
    apply_channel_masks(groups, [torch.arange(g.size) == 1 if g.size <= 4 else torch.rand(g.size) < 0.5 for g in groups])
    small = rlp.slim(model, x)
    attention, dense = small.features[1][0].attn, model.features[1][0].attn
    # The position index holds no heads: it keeps every entry.
    assert torch.equal(attention.relative_position_index, dense.relative_position_index)
    rlp.rewind(small, init)
    if not v2:  # one head kept: the table keeps its column of head 1
        table = "features.1.0.attn.relative_position_bias_table"
        assert torch.equal(attention.relative_position_bias_table, init.state[table][:, 1:])
    with torch.no_grad():
        expected = small(x)
    back = unslice(small, model)
    with torch.no_grad():
        assert torch.allclose(back(x), expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["slice", "mask"])
def test_search_candidates_of_a_swin_compute_what_the_masked_model_does(mode):
    model, x = small_swin(v2=True)
    groups = rlp.channel_groups(model, x)
    torch.manual_seed(2)
    keep = [torch.arange(g.size) != 0 if g.size <= 4 else torch.rand(g.size) < 0.5 for g in groups]
    evaluator = CandidateEvaluator(model, groups, x, mode=mode)
    with evaluator.active(), torch.no_grad():
        got = evaluator.view(keep)(x)
    assert model.features[3][0].attn.num_heads == 4  # restored after the call
    apply_channel_masks(groups, keep)
    with torch.no_grad():
        assert torch.allclose(got, model(x), atol=1e-5)


def test_slim_refuses_to_fold_what_pruned_channels_feed_an_attention():
    torch.manual_seed(0)
    model, x = Tokens(need_weights=False).eval(), torch.randn(2, 3, 4, 4)
    assert [g.size for g in rlp.channel_groups(model, x)] == [2]
    # Layer by layer, as prune.ln_structured does: the pruned head's filters keep their biases, a constant.
    kept = torch.arange(8) < 4
    nn.utils.prune.custom_from_mask(model.embed, "weight", kept.view(-1, 1, 1, 1).expand_as(model.embed.weight))
    nn.utils.prune.custom_from_mask(model.attention.out_proj, "weight", kept.view(-1, 1).expand(8, 8))
    with pytest.raises(ValueError, match="feed the constant .* into 'attention' \\(MultiheadAttention\\)"):
        rlp.slim(model, x)


@pytest.mark.parametrize("verify", [True, False])
def test_slim_refuses_pruned_channels_that_reach_a_child_the_attention_reads_without_calling_it(verify):
    # Masks made layer by layer: the embedding's filters and biases, and out_proj's rows, but not the pruned head's
    # query, key and value rows, so that head still writes into out_proj, which slim never sees called.
    torch.manual_seed(0)
    model, x = Tokens(need_weights=False).eval(), torch.randn(2, 3, 4, 4)
    kept = torch.arange(8) < 4
    nn.utils.prune.custom_from_mask(model.embed, "weight", kept.view(-1, 1, 1, 1).expand_as(model.embed.weight))
    nn.utils.prune.custom_from_mask(model.embed, "bias", kept)
    nn.utils.prune.custom_from_mask(model.attention.out_proj, "weight", kept.view(-1, 1).expand(8, 8))
    with pytest.raises(ValueError, match="'attention.out_proj', whose tensors 'attention' reads without calling it"):
        rlp.slim(model, x, verify=verify)
