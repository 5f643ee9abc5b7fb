"""The examples added with the command line, each run with tiny settings (tests/test_examples.py has the others)."""

import runpy
from pathlib import Path

import pytest
import torch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_example(name, argv, monkeypatch):
    monkeypatch.setattr("sys.argv", [name, *argv])
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"](argv)


def test_basiccnn_walkthrough(monkeypatch, capsys):
    result = run_example("basiccnn_walkthrough.py", ["--tiny"], monkeypatch)
    assert result["dense_filters"] == 120  # BasicCNN at width 0.125: 8 + 16 + 32 + 64
    assert result["filters"] == 120 - round(0.7 * 120)
    assert result["params"] < result["dense_params"] and result["macs"] < result["dense_macs"]
    assert result["evaluations"] == 8 and 0 < result["best_reward"] <= 1
    assert 0 <= result["accuracy"] <= 1
    convs = [m for m in result["model"].modules() if isinstance(m, torch.nn.Conv2d)]
    assert sum(m.out_channels for m in convs) == result["filters"]
    assert not any(hasattr(m, "weight_mask") for m in convs)  # slimmed: plain dense layers
    assert "test accuracy of the trained ticket" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["l1", "rl"])
def test_resnet18(method, monkeypatch, capsys):
    argv = ["--method", method, "--amount", "0.5", "--epochs", "0", "--finetune-epochs", "0", "--episodes", "4",
            "--latency-batch", "1"]  # fmt: skip
    result = run_example("resnet18.py", argv, monkeypatch)
    masked, pruned = result["masked"], result["pruned"]
    assert pruned.filters == masked.filters_kept and pruned.params == masked.params_kept
    assert pruned.macs == masked.macs_kept < masked.macs
    # Residual groups count once: half of the prunable channels go, so about half of the filters.
    assert 0.3 < 1 - pruned.filters / masked.filters < 0.6
    assert result["latency_ms"] > 0 and 0 <= result["accuracy"] <= 1
    assert "layer4.1.conv2" in capsys.readouterr().out


def test_compare_methods(monkeypatch, capsys):
    rows = run_example("compare_methods.py", ["--tiny", "--methods", "l1", "sa", "--amounts", "0.5"], monkeypatch)
    assert [(r["method"], r["amount"]) for r in rows] == [("dense", 0.0), ("l1", 0.5), ("sa", 0.5)]
    assert rows[1]["filters"] == rows[2]["filters"] == 60 and rows[0]["filters"] == 120
    assert rows[2]["evaluations"] == 8 and rows[1]["evaluations"] == 0
    out = capsys.readouterr().out
    assert "| l1 | 0.50 |" in out and "| sa | 0.50 |" in out
