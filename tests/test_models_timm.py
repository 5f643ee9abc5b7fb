"""``--model timm:NAME``: timm models through the one table of model specs, its errors, and the command end to end.

The command runs with --quick on the offline digits data and one CPU thread; timm's ResNet-18 at 32 x 32 keeps
search and slim to seconds (train rebuilds the model the way slim does). Skipped without timm, which is optional.
"""

import json
import sys

import pytest
import torch

import torch_rlprune as rlp
from torch_rlprune import pipeline
from torch_rlprune.pipeline import PipelineConfig

from conftest import QUICK, assert_user_error, run_main

timm = pytest.importorskip("timm")


def test_timm_spec_builds_a_timm_model_with_the_data_shape():
    source, name = pipeline.resolve_model("timm:resnet18")
    assert (source.prefix, name) == ("timm", "resnet18")
    config = PipelineConfig(model="timm:resnet18", seed=3).validate()
    model = pipeline.build_model(config, num_classes=7, in_channels=1)
    assert isinstance(model, timm.models.ResNet)
    assert model.fc.out_features == 7 and model.conv1.in_channels == 1
    again = pipeline.build_model(config, num_classes=7, in_channels=1)
    assert torch.equal(model.conv1.weight, again.conv1.weight)  # seeded: a later step rebuilds the same init
    assert "timm:resnet18" in pipeline.model_names()


def test_unknown_timm_name_suggests_close_ones():
    with pytest.raises(ValueError, match=r"unknown model 'timm:resnet81'; did you mean timm:resnet18"):
        PipelineConfig(model="timm:resnet81").validate()
    # A bare name's error points at timm too, and an unknown prefix lists what there is.
    with pytest.raises(ValueError, match=r"timm:NAME"):
        pipeline.check_model_name("resnet81")
    with pytest.raises(ValueError, match=r"unknown model 'tim:resnet18'; use basiccnn, .* or timm:NAME"):
        pipeline.check_model_name("tim:resnet18")


def test_missing_timm_names_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # "import timm" now raises ImportError
    with pytest.raises(ImportError, match="pip install timm"):
        PipelineConfig(model="timm:resnet18").validate()
    pipeline.check_model_name("resnet18")  # the other sources do not need timm
    assert "resnet18" in pipeline.model_names() and not any(n.startswith("timm:") for n in pipeline.model_names())


def test_command_errors_are_one_line_before_any_work(tmp_path, monkeypatch):
    out = tmp_path / "x"
    assert_user_error(run_main(["run", "--model", "timm:resnet81", "--out", str(out)]), 2, "timm:resnet18")
    monkeypatch.setitem(sys.modules, "timm", None)
    assert_user_error(run_main(["run", "--model", "timm:resnet18", "--out", str(out)]), 2, "pip install timm")
    assert not out.exists()


def test_command_search_then_slim_rebuilds_the_timm_model(tmp_path, monkeypatch):
    out = tmp_path / "run"
    code, _, err = run_main(["search", *QUICK, "--model", "timm:resnet18", "--out", str(out)])
    assert code == 0, err
    assert json.loads((out / "config.json").read_text())["config"]["model"] == "timm:resnet18"
    assert (out / "mask.pt").is_file()

    # slim rebuilds the model from config.json (as train does), so it too needs timm and says so in one line.
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "timm", None)
        assert_user_error(run_main(["slim", "--quiet", "--out", str(out)]), 2, "pip install timm", "config.json")
    assert not (out / "ticket.pt").exists()

    code, _, err = run_main(["slim", "--workers", "1", "--quiet", "--out", str(out)])
    assert code == 0, err
    x = torch.randn(1, 3, 32, 32)
    dense = timm.create_model("resnet18", num_classes=10)
    small = rlp.load(out / "ticket.pt", timm.create_model("resnet18", num_classes=10), x).eval()
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in dense.parameters()) / 2
    assert small(x).shape == (1, 10)
