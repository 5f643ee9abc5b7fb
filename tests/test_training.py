import copy
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune.data import ImageTensorDataset, batches
from torch_rlprune.training import evaluate, train

from conftest import conv_pairs


def colour_images(n=128, seed=0):
    """An easy 2-class problem: class 0 is reddish, class 1 bluish, with noise."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.arange(n) % 2
    images = torch.randint(0, 120, (n, 3, 32, 32), generator=g)
    images[targets == 0, 0] += 120
    images[targets == 1, 2] += 120
    return ImageTensorDataset(images.to(torch.uint8), targets)


def small_cnn(seed=0):
    torch.manual_seed(seed)
    return rlp.models.BasicCNN(num_classes=2, width=0.125)


def test_training_learns_an_easy_problem_and_evaluate_agrees():
    data = colour_images()
    model = small_cnn()
    loader = batches(data, 32, shuffle=True, generator=torch.Generator().manual_seed(0))
    before = evaluate(model, batches(data, 64))
    history = train(model, loader, epochs=4, lr=0.05, seed=0)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    assert all(h["examples"] == 128 and h["seconds"] > 0 for h in history)
    after = evaluate(model, batches(data, 64))
    assert after > 0.95 and after > before


def test_cosine_and_constant_schedules():
    x, y = torch.randn(32, 2), torch.randint(0, 2, (32,))
    loader = [(x[:16], y[:16]), (x[16:], y[16:])]
    cosine = train(nn.Linear(2, 2), loader, epochs=4, lr=0.1)
    assert [round(h["lr"], 6) for h in cosine] == [0.1, round(0.05 * (1 + 0.5**0.5), 6), 0.05,
                                                   round(0.05 * (1 - 0.5**0.5), 6)]  # fmt: skip
    assert {h["lr"] for h in train(nn.Linear(2, 2), loader, epochs=3, lr=0.1, schedule="constant")} == {0.1}

    class NoLen:  # no len(): the schedule steps once per epoch
        def __iter__(self):
            return iter(loader)

    per_epoch = train(nn.Linear(2, 2), NoLen(), epochs=2, lr=0.1)
    assert [round(h["lr"], 6) for h in per_epoch] == [0.1, 0.05]


def test_callback_sees_every_epoch_and_can_stop_early():
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    seen = []
    history = train(nn.Linear(2, 2), [(x, y)], epochs=3, callback=seen.append)
    assert seen == history and len(history) == 3
    stopped = train(nn.Linear(2, 2), [(x, y)], epochs=5, callback=lambda r: r["epoch"] == 2)
    assert len(stopped) == 2
    assert stopped[1]["lr"] < 0.05  # the schedule is the one for 5 epochs


def test_seed_makes_training_reproducible_and_keeps_the_global_rng():
    data = colour_images(64)

    def run():
        model = small_cnn(seed=1)
        loader = batches(data, 16, shuffle=True, generator=torch.Generator().manual_seed(3), augment=True)
        return model, train(model, loader, epochs=2, seed=5)

    (m1, h1), (m2, h2) = run(), run()
    assert [h["loss"] for h in h1] == [h["loss"] for h in h2]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    model, batch = nn.Linear(2, 2), [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    state = torch.get_rng_state()
    train(model, batch, epochs=1, seed=9)
    assert torch.equal(torch.get_rng_state(), state)


def test_seeded_training_works_with_the_fork_rng_of_older_torch(monkeypatch):
    # torch 2.11 (the oldest release supported) runs torch.device(device_type) on fork_rng's argument, which
    # refuses None; a seeded CPU training on a machine with CUDA failed that way before.
    real = torch.random.fork_rng

    def fork_rng(devices=None, enabled=True, device_type="cuda", **kwargs):
        torch.device(device_type)
        return real(devices=devices, enabled=enabled, device_type=device_type, **kwargs)

    monkeypatch.setattr(torch.random, "fork_rng", fork_rng)
    model, batch = nn.Linear(2, 2), [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    history = train(model, batch, epochs=1, seed=9)
    assert len(history) == 1 and math.isfinite(history[0]["loss"])


def test_modes_are_restored_and_evaluate_runs_in_eval_mode():
    data = colour_images(32)
    model = small_cnn()
    model.train()
    train(model, batches(data, 16), epochs=1)
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    train(model, batches(data, 16), epochs=1)
    assert not any(m.training for m in model.modules())
    model.train()
    a, b = evaluate(model, batches(data, 16)), evaluate(model, batches(data, 16))
    assert a == b  # dropout is off and batch norms use running statistics: deterministic
    assert model.training
    model.features[2].eval()  # a mixed state comes back as it was
    evaluate(model, batches(data, 16))
    assert model.training and not model.features[2].training


def test_training_a_pruned_model_keeps_pruned_filters_at_zero_and_slims():
    data = colour_images(64)
    model = small_cnn()
    example = torch.randn(1, 3, 32, 32)
    convs = conv_pairs(model)
    rlp.global_structured(convs, prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=example)
    masks = [m.weight_mask.clone() for m, _ in convs]
    before = [m.weight_orig.detach().clone() for m, _ in convs]
    history = train(model, batches(data, 16, shuffle=True), epochs=2)
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in history)
    for (conv, _), mask, old in zip(convs, masks, before):
        assert torch.equal(conv.weight_mask, mask)
        assert not torch.equal(conv.weight_orig, old)  # it trained
        model(example)  # the hook recomputes conv.weight
        pruned = ~mask.flatten(1).any(1)
        assert int(pruned.sum()) > 0 and bool((conv.weight[pruned] == 0).all())
    small = rlp.slim(model, example)
    accuracy = evaluate(model, batches(data, 32))
    assert evaluate(small, batches(data, 32)) == accuracy
    params = copy.deepcopy(small.state_dict())
    train(small, batches(data, 16, shuffle=True), epochs=1)
    assert any(not torch.equal(v, small.state_dict()[k]) for k, v in params.items())


def test_bad_inputs_give_clear_errors():
    model, batch = nn.Linear(2, 2), [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))]
    with pytest.raises(TypeError, match="torch.nn.Module"):
        train(lambda x: x, batch, 1)
    with pytest.raises(TypeError, match="iterable of \\(inputs, targets\\)"):
        train(model, torch.randn(4, 2), 1)
    with pytest.raises(TypeError, match="pair"):
        train(model, [torch.randn(4, 2)], 1)
    with pytest.raises(ValueError, match="epochs"):
        train(model, batch, -1)
    with pytest.raises(ValueError, match="lr"):
        train(model, batch, 1, lr=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        train(model, batch, 1, weight_decay=float("nan"))
    with pytest.raises(ValueError, match="schedule"):
        train(model, batch, 1, schedule="step")
    with pytest.raises(ValueError, match="no batch"):
        train(model, [], 1)
    with pytest.raises(ValueError, match="loss became nan"):
        train(model, [(torch.full((4, 2), float("nan")), torch.tensor([0, 1, 0, 1]))], 1)
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="requires_grad"):
        train(frozen, batch, 1)
    assert train(model, batch, 0) == []
    with pytest.raises(ValueError, match="no example"):
        evaluate(model, [])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        evaluate("model", batch)


def test_progress_bar():
    pytest.importorskip("tqdm")
    history = train(nn.Linear(2, 2), [(torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))], epochs=2, progress=True)
    assert len(history) == 2


def test_checkpoint_resumes_an_interrupted_run_to_the_same_weights(tmp_path):
    data = colour_images(64)

    def run(path, stop_at=None):
        model = small_cnn()
        loader = batches(data, 16, shuffle=True, augment=True, generator=torch.Generator().manual_seed(3))
        stop = (lambda r: r["epoch"] == stop_at) if stop_at else None
        return model, train(model, loader, epochs=4, lr=0.05, seed=0, callback=stop, checkpoint=path)

    whole, history = run(tmp_path / "whole.ckpt")
    first, stopped = run(tmp_path / "part.ckpt", stop_at=2)
    assert len(stopped) == 2
    assert not all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), whole.state_dict().values()))
    resumed, rest = run(tmp_path / "part.ckpt")  # a fresh model and loader, as after a crash
    assert [r["epoch"] for r in rest] == [1, 2, 3, 4] and rest[:2] == stopped
    assert [r["loss"] for r in rest] == [r["loss"] for r in history]
    for name, value in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], value), name
    done, again = run(tmp_path / "part.ckpt")  # a finished run trains no more
    assert again == rest and torch.equal(done.features[0].weight, whole.features[0].weight)


def test_checkpoint_errors_are_clear(tmp_path):
    x, y = torch.randn(16, 2), torch.randint(0, 2, (16,))
    with pytest.raises(ValueError, match="is a directory"):
        train(nn.Linear(2, 2), [(x, y)], epochs=1, checkpoint=tmp_path)
    train(nn.Linear(2, 2), [(x, y)], epochs=2, checkpoint=tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match="run of 2 epochs, not 3"):
        train(nn.Linear(2, 2), [(x, y)], epochs=3, checkpoint=tmp_path / "a.ckpt")
    with pytest.raises(ValueError, match="does not fit this model"):
        train(nn.Linear(2, 3), [(x, y)], epochs=2, checkpoint=tmp_path / "a.ckpt")
    (tmp_path / "bad.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable training checkpoint"):
        train(nn.Linear(2, 2), [(x, y)], epochs=2, checkpoint=tmp_path / "bad.ckpt")
