import copy

import pytest
import torch
from torch import nn

import torch_rlprune as rlp
from torch_rlprune.search.evaluation import CandidateEvaluator
from torch_rlprune.search.rewards import NegativeLoss, Recalibrated


def trained_looking_model(seed=0):
    """A BasicCNN whose running statistics are far from what any pruned version of it would measure."""
    torch.manual_seed(seed)
    model = rlp.models.BasicCNN(width=0.25)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-2, 2)
            m.running_var.uniform_(0.5, 3)
            m.num_batches_tracked.fill_(100)
    return model


def recalibrated_by_hand(small, calibration, reward):
    """Re-estimate a sliced model's norm statistics as EagleEye does, then score it in eval mode."""
    small = copy.deepcopy(small).eval()
    for m in small.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
            m.train()
    with torch.no_grad():
        for x, _ in calibration:
            small(x)
    return reward(small.eval())


@pytest.mark.parametrize("mode", ["slice", "mask"])
def test_recalibrated_reward_of_a_candidate_is_that_of_the_sliced_recalibrated_network(mode):
    model = trained_looking_model()
    g = torch.Generator().manual_seed(1)
    calibration = [(torch.randn(32, 3, 32, 32, generator=g), torch.zeros(32, dtype=torch.long)) for _ in range(3)]
    val = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g))]
    x = val[0][0][:1]
    groups = rlp.channel_groups(model, x)
    keep = [torch.rand(g_.size, generator=g) < 0.4 for g_ in groups]
    state = copy.deepcopy(model.state_dict())
    model.train()  # the search's modes must come back as they were
    evaluator = CandidateEvaluator(model, groups, x, norms="batch", mode=mode)
    reward = Recalibrated(NegativeLoss(val), calibration, batches=2)
    with evaluator.active(), torch.no_grad():
        got = reward(evaluator.view(keep))
        plain = NegativeLoss(val)(evaluator.view(keep))

    pruned = copy.deepcopy(model)
    rlp.apply_channel_masks(rlp.channel_groups(pruned, x), keep)
    small = rlp.slim(pruned, x)
    expected = recalibrated_by_hand(small, calibration[:2], NegativeLoss(val))
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert abs(got - plain) > 1e-3  # recalibration changes the score
    assert model.training and all(m.training for m in model.modules())
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_recalibrated_works_on_an_ordinary_module_and_leaves_it_unchanged():
    model = trained_looking_model().eval()
    g = torch.Generator().manual_seed(2)
    calibration = [(torch.randn(32, 3, 32, 32, generator=g), torch.zeros(32, dtype=torch.long))]
    val = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g))]
    state = copy.deepcopy(model.state_dict())
    got = Recalibrated(NegativeLoss(val), calibration, batches=1)(model)
    assert got == pytest.approx(recalibrated_by_hand(model, calibration, NegativeLoss(val)), rel=1e-5)
    assert not model.training
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_recalibrated_rewards_guide_a_search():
    model = trained_looking_model()
    g = torch.Generator().manual_seed(3)
    data = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g))]
    convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
    reward = Recalibrated(rlp.rewards.Accuracy(data), data)
    result = rlp.global_structured(convs, rlp.RandomWidthPruning, amount=0.5, model=model, example_inputs=data[0][0][:1],
                                   reward=reward, episodes=4, seed=0, progress=False)  # fmt: skip
    assert result.evaluations == 4 and 0.0 <= result.best_reward <= 1.0


def test_recalibrated_refuses_bad_arguments():
    with pytest.raises(TypeError, match="reward must be a callable"):
        Recalibrated(0.5, [])
    with pytest.raises(ValueError, match="batches must be a positive int"):
        Recalibrated(lambda m: 0.0, [], batches=0)
    with pytest.raises(TypeError, match="loader must be an iterable"):
        Recalibrated(lambda m: 0.0, torch.zeros(3))


def test_short_trained_reward_of_a_candidate_is_that_of_the_sliced_network_trained_alike():
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25, dropout=0.0)
    g = torch.Generator().manual_seed(4)
    train = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(2)]
    val = [(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g))]
    x = val[0][0][:1]
    groups = rlp.channel_groups(model, x)
    keep = [torch.rand(g_.size, generator=g) < 0.5 for g_ in groups]
    state = copy.deepcopy(model.state_dict())
    evaluator = CandidateEvaluator(model, groups, x, norms="eval", mode="slice")
    reward = rlp.rewards.ShortTrained(NegativeLoss(val), train, steps=3, lr=0.05, momentum=0.9)
    with evaluator.active(), torch.no_grad():
        got = reward(evaluator.view(keep))
        untrained = NegativeLoss(val)(evaluator.view(keep))

    pruned = copy.deepcopy(model)
    rlp.apply_channel_masks(rlp.channel_groups(pruned, x), keep)
    small = rlp.slim(pruned, x).train()
    optimizer = torch.optim.SGD(small.parameters(), lr=0.05, momentum=0.9)
    for step in range(3):
        inputs, targets = train[step % 2]
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(small(inputs), targets).backward()
        optimizer.step()
    with torch.no_grad():
        expected = NegativeLoss(val)(small.eval())
    assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert got != pytest.approx(untrained, abs=1e-4)
    for name, value in model.state_dict().items():
        assert torch.equal(value, state[name]), name


def test_short_trained_refuses_masked_candidates_and_bad_arguments():
    model = rlp.models.BasicCNN(width=0.125)
    x = torch.randn(2, 3, 32, 32)
    groups = rlp.channel_groups(model, x[:1])
    evaluator = CandidateEvaluator(model, groups, x[:1], mode="mask")
    reward = rlp.rewards.ShortTrained(lambda m: 0.0, [(x, torch.zeros(2, dtype=torch.long))], steps=1)
    with evaluator.active(), pytest.raises(ValueError, match="evaluation='slice'"):
        reward(evaluator.view([torch.ones(g.size, dtype=torch.bool) for g in groups]))
    with pytest.raises(ValueError, match="steps must be a positive int"):
        rlp.rewards.ShortTrained(lambda m: 0.0, [], steps=0)
    with pytest.raises(ValueError, match="lr must be a finite number"):
        rlp.rewards.ShortTrained(lambda m: 0.0, [], lr=-1)
