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


def labelled_batches(n, size=4):
    """``n`` batches of one input each time; batch ``i``'s targets are all ``i``, so a reward tells which it read."""
    return [(torch.full((size, 3), float(i)), torch.full((size,), i, dtype=torch.long)) for i in range(n)]


class Echo(nn.Module):
    """Predicts class ``round(x[0])``: correct on exactly the batches labelled with their own index."""

    def forward(self, x):
        return nn.functional.one_hot(x[:, 0].round().long(), 8).float()


@pytest.mark.parametrize("name", ["accuracy", "loss", "macs"])
def test_a_reward_pool_scores_each_call_on_the_next_set_of_batches_in_turn(name):
    # Batch i holds targets i and inputs that Echo maps to class i, except batches 0-1, shifted to be wrong.
    data = labelled_batches(7)
    data[0] = (data[0][0] + 1, data[0][1])
    data[1] = (data[1][0] + 1, data[1][1])
    reward = rlp.rewards.make_reward(name, data, batches=2, pool=3, example_inputs=torch.zeros(1, 3))
    scores = [reward(Echo()) for _ in range(6)]
    assert scores[:3] == scores[3:]  # the sets come back in turn, the seventh batch is never read
    assert scores[0] < scores[1] == scores[2]  # the first set is the wrong one, the others are right
    unpooled = rlp.rewards.make_reward(name, data, batches=2, example_inputs=torch.zeros(1, 3))
    assert [unpooled(Echo()) for _ in range(3)] == [scores[0]] * 3


def test_a_reward_pool_needs_batches_and_enough_of_them():
    data = labelled_batches(5)
    with pytest.raises(ValueError, match="need 6 batches.*yielded 5"):
        rlp.rewards.Accuracy(data, batches=2, pool=3)(Echo())
    with pytest.raises(ValueError, match="pass batches too"):
        rlp.rewards.Accuracy(data, pool=2)
    for pool in (0, 1.5, True):
        with pytest.raises(ValueError, match="pool must be a positive int"):
            rlp.rewards.NegativeLoss(data, batches=1, pool=pool)


def test_a_registered_reward_without_a_pool_is_built_and_refuses_one(monkeypatch):
    class Constant:
        def __init__(self, loader, batches):
            self.batches = batches

        def __call__(self, model):
            return 1.0

    monkeypatch.setitem(rlp.rewards.REWARDS, "constant", Constant)
    assert rlp.rewards.make_reward("constant", labelled_batches(2), batches=2).batches == 2
    with pytest.raises(ValueError, match="reward 'constant' takes no pool"):
        rlp.rewards.make_reward("constant", labelled_batches(2), batches=1, pool=2)
