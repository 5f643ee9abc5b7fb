"""torch_rlprune.pipeline: settings, masks on disk, unslicing trained weights, reports and comparisons."""

import dataclasses

import pytest
import torch
import torch.nn as nn
import torch.nn.utils.prune as prune

import torch_rlprune as rlp
from torch_rlprune import pipeline
from torch_rlprune.pipeline import Metrics, PipelineConfig, Report


def pruned_model(model, x, amount=0.5):
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    rlp.global_structured(convs, prune.LnStructured, n=1, amount=amount, model=model, example_inputs=x)
    return model


def test_default_config_is_valid_and_round_trips():
    config = PipelineConfig().validate()
    assert (config.model, config.method, config.amount, config.data) == ("basiccnn", "rl", 0.7, "digits")
    assert PipelineConfig.from_dict({**config.to_dict(), "unknown": 1}) == config
    assert config.searches and not PipelineConfig(method="l1").searches
    assert PipelineConfig(rewind_to="k", rewind_epoch=3).rewind_name == "epoch3"
    assert PipelineConfig(rewind_to="k", rewind_epoch=0).rewind_name == "init"


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model": "resnet81"}, "did you mean resnet18"),
        ({"model": "resnet18", "width": 0.5}, "width applies to basiccnn only"),
        ({"method": "obd"}, "unknown method"),
        ({"reward": "f1"}, "unknown reward"),
        ({"amount": 1.0}, "strictly between 0 and 1"),
        ({"amount": 0}, "strictly between 0 and 1"),
        ({"episodes": 0}, "episodes must be a positive int"),
        ({"reward_pool": 0}, "reward_pool must be a positive int"),
        ({"finalists": 300}, "finalists must be an int >= 0 and below episodes"),
        ({"budget": "flops"}, "unknown budget 'flops'; choose one of filters, macs, params"),
        ({"budget": "macs", "method": "sa"}, "sa keeps a filter count: a macs budget needs a criterion or a search"),
        ({"budget": "params", "policy": "filters"}, "rl with policy filters keeps a filter count"),
        ({"budget": "macs", "method": "synflow"}, "synflow keeps a filter count"),
        ({"rewind_epoch": 5, "epochs": 3}, "beyond the 3 training epochs"),
        ({"rewind_to": "epoch2"}, "'init' or 'k'"),
        ({"data": "cifar10"}, "needs --data-root"),
        ({"data": "cifar10", "data_root": "/nonexistent/cifar"}, "does not exist"),
        ({"data": "imagefolder:/nonexistent/images"}, "does not exist"),
        ({"data": "svhn"}, "unknown data"),
        ({"device": "tpu9"}, "unknown device"),
        ({"val_fraction": 0.0}, "val_fraction"),
        ({"min_keep": 1.5}, "min_keep must be"),
        ({"min_keep": -1}, "min_keep must be"),
    ],
)
def test_bad_settings_name_the_fix(changes, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(PipelineConfig(), **changes).validate()


def test_build_model_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a = pipeline.build_model(PipelineConfig(width=0.25, seed=3), num_classes=10)
    b = pipeline.build_model(PipelineConfig(width=0.25, seed=3), num_classes=10)
    c = pipeline.build_model(PipelineConfig(width=0.25, seed=4), num_classes=10)
    assert torch.equal(a.fc.weight, b.fc.weight) and not torch.equal(a.fc.weight, c.fc.weight)
    assert torch.equal(torch.random.get_rng_state(), state)
    resnet = pipeline.build_model(PipelineConfig(model="resnet18"), num_classes=7)
    assert resnet.fc.out_features == 7


def test_mask_round_trip_and_wrong_architecture(tmp_path):
    x = torch.randn(1, 3, 32, 32)
    model = pruned_model(rlp.models.BasicCNN(width=0.25), x, amount=0.6)
    pipeline.save_mask(model, tmp_path / "mask.pt", x)
    fresh = pipeline.load_mask(tmp_path / "mask.pt", rlp.models.BasicCNN(width=0.25), x)
    assert rlp.metrics.filters_per_layer(fresh, x) == rlp.metrics.filters_per_layer(model, x)
    for a, b in zip(model.modules(), fresh.modules()):
        if hasattr(a, "weight_mask"):
            assert torch.equal(a.weight_mask, b.weight_mask)
    with pytest.raises(ValueError, match="does not have"):
        pipeline.load_mask(tmp_path / "mask.pt", rlp.models.BasicCNN(width=0.5), x)
    rlp.save(model, tmp_path / "model.pt", x)
    with pytest.raises(ValueError, match="not a mask file"):
        pipeline.load_mask(tmp_path / "model.pt", rlp.models.BasicCNN(width=0.25), x)


@pytest.mark.parametrize("kinds", [["plain", "residual", "plain"], ["residual", "concat", "depthwise", "plain"]])
def test_unslice_puts_trained_weights_back_so_that_save_load_gives_them(kinds, blocks_net, tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8)
    model = blocks_net(kinds, width=6)
    pruned_model(model, x, amount=0.4)
    small = rlp.slim(model, x)
    with torch.no_grad():  # "training": every parameter and running statistic of the small model changes
        for p in small.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        for name, b in small.named_buffers():
            if name.endswith("running_var"):
                b.mul_(1.5)
            elif name.endswith("running_mean"):
                b.add_(0.1)
    pipeline.unslice(small, model)
    small.eval()
    model.eval()
    assert torch.allclose(model(x), small(x), atol=1e-5)
    rlp.save(model, tmp_path / "m.pt", x)
    loaded = rlp.load(tmp_path / "m.pt", blocks_net(kinds, width=6), x).eval()
    assert torch.allclose(loaded(x), small(x), atol=1e-5)


def test_unslice_refuses_another_model():
    x = torch.randn(1, 3, 32, 32)
    small = rlp.slim(pruned_model(rlp.models.BasicCNN(width=0.25), x), x)
    with pytest.raises(ValueError, match="unslice"):
        pipeline.unslice(small, rlp.models.BasicCNN(width=0.5))


def make_report():
    config = PipelineConfig(width=0.25, epochs=3).to_dict()
    data = {"spec": "digits", "train": 100, "val": 10, "test": 20}
    return Report(config, data, Metrics(0.95, 1000, 50000, 240, 2.0), Metrics(0.9, 150, 9000, 72, 0.5),
                  {"method": "rl", "reward": "accuracy", "seconds": 3.2, "evaluations": 16, "best_reward": 0.8,
                   "interrupted": False}, {"features.0": [12, 16], "features.4": [60, 224]}, {"search": 3.2})  # fmt: skip


def test_report_round_trip_summary_and_markdown():
    report = make_report()
    assert report.sparsity == pytest.approx(0.7)
    assert Report.from_dict(report.to_dict()) == report
    summary = report.summary()
    assert "95.0%" in summary and "90.0%" in summary and "-5.0 points" in summary
    assert "4.00x faster" in summary and "70.0% pruned" in summary and "16 masks evaluated" in summary
    page = report.markdown()
    assert "| features.0 | 12 | 16 | 75.0% |" in page and "validation split" in page and "test split" in page


def test_comparison_table_averages_seeds():
    rows = [{"method": m, "amount": a, "seed": s, "accuracy": acc, "params": 10, "macs": 20, "filters": 4,
             "latency_ms": 1.0, "sparsity": a, "search_seconds": 0.0}
            for m, a, s, acc in (("dense", 0.0, 0, 0.9), ("dense", 0.0, 1, 0.92), ("l1", 0.5, 0, 0.8), ("l1", 0.5, 1, 0.84))]  # fmt: skip
    table = pipeline.comparison_table(rows)
    assert [(r["method"], r["seeds"]) for r in table] == [("dense", 2), ("l1", 2)]
    assert table[1]["accuracy"] == pytest.approx(0.82) and table[1]["accuracy_std"] == pytest.approx(0.0283, abs=1e-4)
    assert "| l1 | 0.50 | 2 | 82.0% ± 2.8 |" in pipeline.comparison_markdown(rows)


def test_compare_rejects_unknown_methods_before_training():
    with pytest.raises(ValueError, match="unknown method"):
        pipeline.compare(PipelineConfig(), ["l1", "obd"], [0.5])
    with pytest.raises(ValueError, match="strictly between"):
        pipeline.compare(PipelineConfig(), ["l1"], [0.5, 1.5])
    with pytest.raises(ValueError, match="sa keeps a filter count"):  # sa, not rl
        pipeline.compare(PipelineConfig(budget="macs"), ["rl", "sa"], [0.5])
