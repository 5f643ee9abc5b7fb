import runpy
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name, argv, monkeypatch):
    monkeypatch.setattr("sys.argv", [name, *argv])
    return runpy.run_path(str(EXAMPLES / name), run_name="example")["main"](argv)


@pytest.mark.parametrize("criterion", ["ln", "l1", "synflow", "bn_scale"])
def test_prune_basiccnn_prunes_the_asked_fraction(criterion, monkeypatch, capsys):
    stats = run_example("prune_basiccnn.py", ["--amount", "0.7", "--criterion", criterion], monkeypatch)
    assert stats.filters_kept == 960 - round(0.7 * 960)
    assert stats.params_kept < stats.params and stats.macs_kept < stats.macs
    out = capsys.readouterr().out
    assert "features.12" in out and "filter sparsity 70.0%" in out
