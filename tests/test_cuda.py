"""The same pruning on a CUDA model as on the CPU: masks live on the model's device, results agree."""

import pytest
import torch
from torch.nn.utils import prune

import torch_rlprune as rlp

from conftest import Blocks, conv_pairs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def pruned_pair(method, **kwargs):
    models = []
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = Blocks(["plain", "residual", "depthwise", "se", "plain"]).to(device)
        x = torch.randn(1, 3, 8, 8, device=device)
        rlp.global_structured(conv_pairs(model), method, amount=0.5, model=model, example_inputs=x, **kwargs)
        models.append((model, x))
    return models


@pytest.mark.parametrize("method, kwargs", [(prune.LnStructured, {"n": 1}), ("synflow", {}), ("l2", {})])
def test_masks_live_on_the_device_and_match_the_cpu(method, kwargs):
    (cpu, x_cpu), (gpu, x_gpu) = pruned_pair(method, **kwargs)
    assert prune.is_pruned(gpu)
    for (name, a), (_, b) in zip(cpu.named_buffers(), gpu.named_buffers()):
        if name.endswith("_mask"):
            assert b.device.type == "cuda"
            assert torch.equal(a, b.cpu()), name
    assert rlp.metrics.model_stats(gpu, x_gpu).params_kept == rlp.metrics.model_stats(cpu, x_cpu).params_kept
    gpu.eval()(x_gpu)


def test_snip_scores_on_the_device():
    model = rlp.models.BasicCNN(width=0.25).cuda()
    x, y = torch.randn(8, 3, 32, 32, device="cuda"), torch.randint(0, 10, (8,), device="cuda")
    scores = rlp.criteria.snip(model, x, y)
    assert all(s.device.type == "cuda" and torch.isfinite(s).all() for s in scores.values())
    rlp.global_structured(conv_pairs(model), "snip", amount=0.5, model=model, example_inputs=x[:1], inputs=x, targets=y)
    assert rlp.metrics.model_stats(model, x[:1]).filters_kept == 120
