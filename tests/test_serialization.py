import json
import os
import stat

import pytest
import torch
import torchvision
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune import serialization

from conftest import conv_pairs

X = torch.randn(2, 3, 32, 32)


def pruned(make, amount=0.6):
    torch.manual_seed(0)
    model = make()
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=amount, model=model, example_inputs=X[:1])
    return model.eval()


@pytest.mark.parametrize("make", [rlp.models.BasicCNN, torchvision.models.resnet18], ids=["basiccnn", "resnet18"])
def test_round_trip_rebuilds_the_sliced_model(make, tmp_path):
    model = pruned(make)
    path = tmp_path / "model.pt"
    rlp.save(model, path, X[:1])
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "torch-rlprune/sliced" and raw["groups"]
    loaded = rlp.load(path, make(), X[:1]).eval()
    expected = rlp.slim(model, X).eval()
    assert not prune.is_pruned(loaded)
    with torch.no_grad():
        assert torch.allclose(loaded(X), expected(X), atol=1e-6)
    assert {k: v.shape for k, v in loaded.state_dict().items()} == {k: v.shape for k, v in expected.state_dict().items()}
    assert prune.is_pruned(model), "save leaves the masked model as it was"


def test_other_architecture_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    rlp.save(pruned(rlp.models.BasicCNN), path, X[:1])
    with pytest.raises(ValueError, match="saved from another architecture"):
        rlp.load(path, rlp.models.BasicCNN(width=0.5), X[:1])
    with pytest.raises(ValueError, match="another architecture"):
        rlp.load(path, torchvision.models.resnet18(), X[:1])


def test_corrupt_and_foreign_files_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    rlp.save(pruned(rlp.models.BasicCNN), path, X[:1])
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable torch-rlprune file"):
        rlp.load(truncated, rlp.models.BasicCNN(), X[:1])
    foreign = tmp_path / "foreign.pt"
    torch.save(rlp.models.BasicCNN().state_dict(), foreign)
    with pytest.raises(ValueError, match="not a file written by torch_rlprune.save"):
        rlp.load(foreign, rlp.models.BasicCNN(), X[:1])
    with pytest.raises(ValueError, match="fresh, unpruned instance"):
        rlp.load(path, pruned(rlp.models.BasicCNN), X[:1])


def test_interrupted_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    rlp.save(pruned(rlp.models.BasicCNN, 0.5), path, X[:1])
    before = path.read_bytes()

    def crash(obj, f):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(serialization.torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        rlp.save(pruned(rlp.models.BasicCNN, 0.8), path, X[:1])
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"], "no temporary file left behind"


@pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")
def test_files_written_atomically_get_the_mode_a_plain_open_gives(tmp_path):
    from torch_rlprune._files import atomic_save, write_json

    old = os.umask(0o027)
    try:
        write_json(tmp_path / "run.json", {"accuracy": 0.5})
        atomic_save({"step": 1}, tmp_path / "search.pt")
        (tmp_path / "plain.txt").write_text("x")
    finally:
        os.umask(old)
    expected = stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode)
    assert expected == 0o640
    for name in ("run.json", "search.pt"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name
    assert json.loads((tmp_path / "run.json").read_text()) == {"accuracy": 0.5}
