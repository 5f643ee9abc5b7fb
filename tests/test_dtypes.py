"""Half-precision models and channels_last inputs: searched, masked and sliced like float32 ones."""

import pytest
import torch
from torch.nn.utils import prune

import torch_rlprune as rlp

from conftest import conv_pairs

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 5e-2, torch.float16: 1e-2}


@pytest.mark.parametrize("evaluation", ["slice", "mask"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_search_mask_and_slim_keep_the_models_dtype_and_layout(dtype, channels_last, evaluation):
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25).to(dtype)
    x = torch.randn(16, 3, 32, 32).to(dtype)
    y = torch.randint(0, 10, (16,))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    result = rlp.global_structured(conv_pairs(model), rlp.RLStructuredPruning, amount=0.5, model=model,
                                   example_inputs=x[:1], reward=rlp.rewards.NegativeLoss([(x, y)]), episodes=8,
                                   seed=0, evaluation=evaluation, progress=False)  # fmt: skip
    assert result.evaluations == 8 and torch.isfinite(torch.tensor(result.best_reward))
    for conv, _ in conv_pairs(model):
        assert conv.weight_mask.dtype == dtype and conv.weight_orig.dtype == dtype
    tol = TOLERANCE[dtype]
    small = rlp.slim(model, x[:1], atol=tol, rtol=tol)
    assert all(p.dtype == dtype for p in small.parameters()) and not prune.is_pruned(small)
    with torch.no_grad():
        assert torch.allclose(small.eval()(x).float(), model.eval()(x).float(), atol=tol, rtol=tol)
    assert sum(m.out_channels for m in small.modules() if isinstance(m, torch.nn.Conv2d)) == 120
