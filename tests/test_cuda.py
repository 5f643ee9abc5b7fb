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


def small_problem(dtype=torch.float32):
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25).cuda().to(dtype)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    return model, x.cuda().to(dtype), y.cuda()


@pytest.mark.parametrize("method", [rlp.RLStructuredPruning, rlp.SimulatedAnnealingPruning, rlp.RandomSearchPruning])
def test_search_on_the_device_keeps_its_budget_and_repeats_with_its_seed(method, monkeypatch):
    # PyTorch's defaults do not promise repeatable GPU results (docs/reliability.rst); deterministic cuDNN does.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    masks = []
    for seed in (0, 0, 1):
        model, x, y = small_problem()
        # The reward's batches stay on the CPU: the reward moves them to the model's device once.
        reward = rlp.rewards.Accuracy([(x.cpu(), y.cpu())])
        result = rlp.global_structured(conv_pairs(model), method, amount=0.5, model=model, example_inputs=x[:1],
                                       reward=reward, episodes=16, seed=seed, progress=False)  # fmt: skip
        assert result.evaluations == 16 and result.best_keep.numel() == 240
        buffers = [b for n, b in model.named_buffers() if n.endswith("_mask")]
        assert buffers and all(b.device.type == "cuda" for b in buffers)
        groups = rlp.channel_groups(model, x[:1])
        masks.append(torch.cat([rlp.masks.alive_channels(g) for g in groups]).cpu())
        assert int((~masks[-1]).sum()) == 120
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_the_controller_lives_on_the_device():
    from torch_rlprune.search.controller import ReinforceController

    controller = ReinforceController(torch.randn(240, 3), [16, 32, 64, 128], 120, [1] * 4, seed=0, device="cuda")
    assert controller.device.type == "cuda" and controller.generator.device.type == "cuda"
    keep, orders = controller.sample(4)
    assert keep.device.type == "cuda" and (keep.sum(1) == 120).all()
    controller.update(orders, torch.rand(4))
    assert all(p.device.type == "cuda" for p in controller.policy.parameters())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_slim_on_the_device_matches_the_masked_model(dtype):
    model, x, _ = small_problem(dtype)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.7, model=model, example_inputs=x[:1])
    atol = 1e-4 if dtype == torch.float32 else 5e-2
    small = rlp.slim(model, x[:4], atol=atol, rtol=atol)
    assert all(p.device.type == "cuda" and p.dtype == dtype for p in small.parameters())
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), model.eval()(x), atol=atol, rtol=atol)
    assert sum(m.out_channels for m in small.modules() if isinstance(m, torch.nn.Conv2d)) == 72


def test_rewind_of_a_device_model_from_a_cpu_snapshot_is_exact():
    from torch_rlprune.lottery import LotteryTicket

    model, x, y = small_problem()
    ticket = LotteryTicket(model)
    rlp.training.train(model, [(x, y)], 2, lr=0.1)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x[:1])
    small = rlp.slim(model, x[:1])
    for target in (model, small):
        ticket.rewind(target, "init")
    assert torch.equal(model.features[0].weight_orig.cpu(), ticket["init"].state["features.0.weight"])
    assert model.features[0].weight_orig.device.type == "cuda"
    with torch.no_grad():
        torch.testing.assert_close(small.eval()(x), rlp.slim(model, x[:1]).eval()(x))


def test_cpu_inputs_for_a_device_model_are_refused_by_name():
    model, x, y = small_problem()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"example_inputs are on cpu but the model's parameters are on cuda:0"):
        rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, model=model,
                              example_inputs=x[:1].cpu())  # fmt: skip
    with pytest.raises(ValueError, match=r"inputs and targets are on cpu"):
        rlp.criteria.snip(model, x.cpu(), y.cpu())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_command_runs_on_the_device(tmp_path):
    import json

    from torch_rlprune.cli import main

    out = tmp_path / "run"
    assert main(["run", "--quick", "--workers", "1", "--quiet", "--device", "cuda", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["pruned"]["filters"] == 240 - round(0.7 * 240)
    # One epoch of training (--quick): both nets are well above the 10% of chance, not near their best.
    assert report["dense"]["accuracy"] > 0.5 and report["pruned"]["accuracy"] > 0.2
    x = rlp.data.load_data("digits", seed=0).val.batch(torch.arange(1))[0]
    small = rlp.load(out / "model.pt", rlp.models.BasicCNN(width=0.25), x)
    assert sum(m.out_channels for m in small.modules() if isinstance(m, torch.nn.Conv2d)) == report["pruned"]["filters"]
