import copy
import io
import itertools
import math
from collections import Counter

import pytest
import torch

from torch_rlprune.search.controller import FilterPolicy, ReinforceController
from torch_rlprune.search.keepsets import entropy_estimate, log_prob, sample_keep

BASIC_CNN_SIZES = [64, 128, 256, 512]


pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------------------------------------------------------
# Brute force on a tiny case
# ---------------------------------------------------------------------------------------------------------------


def _pl(logits, sequence, pool):
    """Probability of drawing ``sequence`` one by one from ``pool`` with probability proportional to exp(logit)."""
    pool, p = list(pool), 1.0
    for s in sequence:
        p *= math.exp(logits[s]) / sum(math.exp(logits[i]) for i in pool)
        pool.remove(s)
    return p


def _draw_entropies(logits, sequence, pool):
    pool, total = list(pool), 0.0
    for s in sequence:
        z = sum(math.exp(logits[i]) for i in pool)
        total -= sum(math.exp(logits[i]) / z * (logits[i] - math.log(z)) for i in pool)
        pool.remove(s)
    return total


def brute_force(logits, sizes, min_keep, n_keep):
    """Every ordered action of the two-stage scheme -> (probability, summed per-draw entropy), by explicit products."""
    starts = [sum(sizes[:g]) for g in range(len(sizes))]
    groups = [list(range(start, start + size)) for start, size in zip(starts, sizes)]
    actions = {}
    for parts in itertools.product(*[itertools.permutations(g, m) for g, m in zip(groups, min_keep)]):
        p1 = math.prod(_pl(logits, part, g) for part, g in zip(parts, groups))
        h1 = sum(_draw_entropies(logits, part, g) for part, g in zip(parts, groups))
        first = sum(parts, ())
        rest = [i for i in range(sum(sizes)) if i not in first]
        for second in itertools.permutations(rest, n_keep - len(first)):
            actions[first + second] = (p1 * _pl(logits, second, rest), h1 + _draw_entropies(logits, second, rest))
    return actions


def set_probabilities(actions):
    sets = Counter()
    for order, (p, _) in actions.items():
        sets[frozenset(order)] += p
    return sets


LOGITS = [0.9, -0.4, 0.2, 1.5, -1.1]
TINY = [  # (sizes, min_keep, n_keep)
    ([2, 3], [1, 1], 3),
    ([2, 3], [0, 0], 3),
    ([2, 3], [2, 1], 4),  # group 0 wholly drawn in stage 1: its leftover pool is empty
]


@pytest.mark.parametrize("sizes,min_keep,n_keep", TINY)
def test_log_prob_and_entropy_match_brute_force(sizes, min_keep, n_keep):
    actions = brute_force(LOGITS, sizes, min_keep, n_keep)
    assert math.isclose(sum(p for p, _ in actions.values()), 1.0, rel_tol=1e-12)
    orders = torch.tensor(list(actions))
    logits = torch.tensor(LOGITS, dtype=torch.float64)
    expected = torch.tensor([math.log(p) for p, _ in actions.values()], dtype=torch.float64)
    torch.testing.assert_close(log_prob(logits, orders, sizes, min_keep), expected, rtol=0, atol=1e-12)
    entropies = entropy_estimate(logits, orders, sizes, min_keep)
    torch.testing.assert_close(entropies, torch.tensor([h for _, h in actions.values()], dtype=torch.float64))
    # The chain rule of entropy: the estimate's expectation is the entropy of the ordered action.
    probs = expected.exp()
    torch.testing.assert_close((probs * entropies).sum(), -(probs * expected).sum())


def _within(frequencies, probabilities, n):
    """Every frequency within 5 standard errors of its probability (impossible outcomes never seen)."""
    return all(
        abs(frequencies.get(k, 0.0) - p) <= 5 * math.sqrt(p * (1 - p) / n) for k, p in probabilities.items()
    ) and set(frequencies) <= {k for k, p in probabilities.items() if p > 0}


@pytest.mark.parametrize("sizes,min_keep,n_keep", TINY[:2])
def test_sample_frequencies_match_brute_force(sizes, min_keep, n_keep):
    n = 20_000
    actions = brute_force(LOGITS, sizes, min_keep, n_keep)
    logits = torch.tensor(LOGITS).expand(n, -1)
    keep, orders = sample_keep(logits, n_keep, sizes, min_keep, torch.Generator().manual_seed(0))
    assert torch.equal(keep, torch.zeros_like(keep).scatter_(1, orders, True))
    seen_orders = {k: c / n for k, c in Counter(map(tuple, orders.tolist())).items()}
    seen_sets = {k: c / n for k, c in Counter(frozenset(row.nonzero().flatten().tolist()) for row in keep).items()}
    assert _within(seen_orders, {k: p for k, (p, _) in actions.items()}, n)
    assert _within(seen_sets, set_probabilities(actions), n)


def test_tolerance_catches_wrong_schemes():
    """The frequency check above would fail for the mistakes it is meant to catch."""
    n, sizes, n_keep = 20_000, [2, 3], 3
    truth = set_probabilities(brute_force(LOGITS, sizes, [1, 1], n_keep))
    # Deterministic top-k: one set always.
    top = frozenset(torch.tensor(LOGITS).topk(n_keep).indices.tolist())
    assert not _within({top: 1.0}, truth, n)
    # A missing stage: one Plackett-Luce draw of 3, ignoring the minimum (exact, by brute force).
    one_stage = set_probabilities(brute_force(LOGITS, sizes, [0, 0], n_keep))
    assert not _within({k: p for k, p in one_stage.items() if p > 0}, truth, n)
    # Stage 2 reusing stage 1's Gumbel keys instead of fresh ones.
    g = torch.Generator().manual_seed(1)
    keys = torch.tensor(LOGITS) - torch.log(-torch.log(torch.rand(n, 5, generator=g)))
    first = torch.stack([keys[:, :2].argmax(1), 2 + keys[:, 2:].argmax(1)], dim=1)
    last = keys.scatter(1, first, float("-inf")).argmax(1, keepdim=True)
    shared = Counter(frozenset(row) for row in torch.cat([first, last], dim=1).tolist())
    assert not _within({k: c / n for k, c in shared.items()}, truth, n)


@pytest.mark.parametrize("sizes,min_keep,n_keep", TINY + [([2, 3], [1, 1], 5)])
def test_gradients_are_exact_and_finite(sizes, min_keep, n_keep):
    logits = torch.tensor(LOGITS, dtype=torch.float64, requires_grad=True)
    order = sample_keep(logits, n_keep, sizes, min_keep, torch.Generator().manual_seed(3))[1]
    for fn in (log_prob, entropy_estimate):
        assert torch.autograd.gradcheck(lambda x: fn(x, order, sizes, min_keep), (logits,))


def test_batched_calls_match_single_rows():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 960, generator=g)
    keep, orders = sample_keep(logits, 300, BASIC_CNN_SIZES, [5, 10, 20, 40], g)
    assert keep.shape == (6, 960) and orders.shape == (6, 300)
    batched = log_prob(logits, orders, BASIC_CNN_SIZES, [5, 10, 20, 40])
    single = torch.stack([log_prob(logits[i], orders[i], BASIC_CNN_SIZES, [5, 10, 20, 40]) for i in range(6)])
    torch.testing.assert_close(batched, single)
    # One row of logits broadcasts over a batch of orders.
    shared = log_prob(logits[0], orders, BASIC_CNN_SIZES, [5, 10, 20, 40])
    assert shared.shape == (6,) and torch.isclose(shared[0], batched[0])


# ---------------------------------------------------------------------------------------------------------------
# Sampling on the BasicCNN layout
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("min_keep", [[1, 1, 1, 1], [16, 0, 64, 128], [64, 128, 256, 0]])
def test_min_keep_and_budget_respected(min_keep):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(50, 960, generator=g)
    logits[:, :64] -= 20  # group 0 would get nothing without its minimum
    n_keep = max(sum(min_keep), 300)
    keep, orders = sample_keep(logits, n_keep, BASIC_CNN_SIZES, min_keep, g)
    assert (keep.sum(1) == n_keep).all()
    counts = torch.stack([block.sum(1) for block in keep.split(BASIC_CNN_SIZES, dim=1)], dim=1)
    assert (counts >= torch.tensor(min_keep)).all()
    assert (counts[:, 0] == min_keep[0]).all()
    # The stage-1 draws come group after group, min_keep[g] of group g each.
    group_of = torch.repeat_interleave(torch.arange(4), torch.tensor(BASIC_CNN_SIZES))
    stage1 = torch.repeat_interleave(torch.arange(4), torch.tensor(min_keep))
    assert torch.equal(group_of[orders[:, : sum(min_keep)]], stage1.expand(50, -1))
    assert torch.isfinite(log_prob(logits, orders, BASIC_CNN_SIZES, min_keep)).all()


def test_sample_keep_follows_its_generator():
    logits = torch.randn(960)
    a = sample_keep(logits, 200, BASIC_CNN_SIZES, [1] * 4, torch.Generator().manual_seed(5))
    b = sample_keep(logits, 200, BASIC_CNN_SIZES, [1] * 4, torch.Generator().manual_seed(5))
    c = sample_keep(logits, 200, BASIC_CNN_SIZES, [1] * 4, torch.Generator().manual_seed(6))
    assert torch.equal(a[1], b[1]) and not torch.equal(a[1], c[1])


# ---------------------------------------------------------------------------------------------------------------
# The controller
# ---------------------------------------------------------------------------------------------------------------


def _controller(seed, **kwargs):
    return ReinforceController(torch.randn(960, 5, generator=torch.Generator().manual_seed(9)), BASIC_CNN_SIZES,
                               300, [1] * 4, seed=seed, **kwargs)  # fmt: skip


def _reward(keep):
    # Deterministic in the keep-set: favours the even filters.
    return keep[:, ::2].sum(1) / keep.sum(1)


def _run(ctrl, rounds, n=6):
    history = []
    for _ in range(rounds):
        keep, orders = ctrl.sample(n)
        history.append((orders, ctrl.update(orders, _reward(keep))))
    return history


def _same_history(a, b):
    return all(torch.equal(oa, ob) and sa == sb for (oa, sa), (ob, sb) in zip(a, b))


def test_same_seed_same_samples_and_updates():
    a, b, c = _controller(1), _controller(1), _controller(2)
    run_a, run_b, run_c = _run(a, 4), _run(b, 4), _run(c, 4)
    assert _same_history(run_a, run_b)
    assert all(torch.equal(p, q) for p, q in zip(a.policy.parameters(), b.policy.parameters()))
    assert not torch.equal(run_a[0][0], run_c[0][0])


def test_state_dict_round_trip_resumes_exactly():
    original = _controller(1, baseline="ema")
    _run(original, 3)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    resumed = _controller(77)
    resumed.load_state_dict(torch.load(buffer, weights_only=False))
    assert resumed.steps == 3
    assert _same_history(_run(original, 3), _run(resumed, 3))
    assert all(torch.equal(p, q) for p, q in zip(original.policy.parameters(), resumed.policy.parameters()))
    assert torch.equal(original.best_guess(), resumed.best_guess())


def test_load_state_dict_refuses_another_setup():
    state = copy.deepcopy(_controller(1).state_dict())
    other = ReinforceController(torch.zeros(960, 5), BASIC_CNN_SIZES, 200, [1] * 4, seed=0)
    with pytest.raises(ValueError, match="n_keep"):
        other.load_state_dict(state)


def test_baselines():
    ema = ReinforceController(torch.zeros(10, 1), [10], 3, [0], seed=0, baseline_decay=0.5)
    first = ema.update(ema.sample(2)[1], torch.tensor([1.0, 3.0]))
    assert first["baseline"] == 2.0  # no history yet: its own mean
    second = ema.update(ema.sample(2)[1], torch.tensor([0.0, 0.0]))
    assert second["baseline"] == 2.0 * 0.25 + 0.5 * 0.5 * 1.0 + 0.5 * 3.0  # one decay step per earlier episode
    loo = ReinforceController(torch.zeros(10, 1), [10], 3, [0], seed=0, baseline="batch")
    stats = loo.update(loo.sample(3)[1], torch.tensor([1.0, 2.0, 6.0]))
    assert math.isclose(stats["baseline"], (4.0 + 3.5 + 1.5) / 3)


@pytest.mark.parametrize("baseline", ["ema", "batch"])
def test_update_follows_the_reinforce_loss(baseline):
    ctrl = ReinforceController(torch.randn(30, 3), [10, 20], 8, [2, 1], seed=0, baseline=baseline, entropy_coef=0.05)
    ctrl.update(*_episode(ctrl))  # so that the moving average has a history
    keep, orders = ctrl.sample(5)
    rewards = keep[:, :10].sum(1).float()
    logits = ctrl.policy().detach().requires_grad_()
    stats = ctrl.update(orders, rewards)
    b = torch.full((5,), stats["baseline"]) if baseline == "ema" else (rewards.sum() - rewards) / 4
    loss = -((rewards - b) * log_prob(logits, orders, [10, 20], [2, 1])).mean()
    loss = loss - 0.05 * entropy_estimate(logits, orders, [10, 20], [2, 1]).mean()
    loss.backward()
    assert math.isclose(stats["loss"], loss.item(), rel_tol=1e-5)
    # The per-filter term enters the logits as it is, so its gradient is the loss's gradient in the logits.
    torch.testing.assert_close(ctrl.policy.filter_logit.grad, logits.grad)


def _episode(ctrl):
    keep, orders = ctrl.sample(5)
    return orders, keep[:, :10].sum(1).float()


def _planted(features, episodes=3000, batch=20):
    n, n_keep = 200, 60
    hidden = torch.zeros(n, dtype=torch.bool)
    hidden[torch.randperm(n, generator=torch.Generator().manual_seed(0))[:n_keep]] = True
    ctrl = ReinforceController(features, [50] * 4, n_keep, [1] * 4, seed=0)
    reached = None
    for done in range(batch, episodes + 1, batch):
        keep, orders = ctrl.sample(batch)
        stats = ctrl.update(orders, (keep & hidden).sum(1) / n_keep)
        if reached is None and (ctrl.best_guess() & hidden).sum() / n_keep >= 0.95:
            reached = done
    # Random search with the same budget: the best of as many uniformly random keep-sets.
    picks = torch.rand(episodes, n, generator=torch.Generator().manual_seed(1)).topk(n_keep).indices
    best_random = float(hidden[picks].sum(1).max()) / n_keep
    return reached, stats["mean_reward"], best_random


@pytest.mark.parametrize("features", ["constant", "random"])
def test_learns_a_planted_set_that_no_feature_shows(features):
    g = torch.Generator().manual_seed(2)
    x = torch.ones(200, 4) if features == "constant" else torch.randn(200, 4, generator=g)
    reached, final_mean, best_random = _planted(x)
    assert reached is not None and reached <= 3000, "the greedy keep-set never held 95% of the planted filters"
    assert final_mean >= 0.9  # the sampled keep-sets, not only the greedy one, are mostly right
    assert best_random < 0.6


# ---------------------------------------------------------------------------------------------------------------
# Policy and bad inputs
# ---------------------------------------------------------------------------------------------------------------


def test_policy_starts_uniform_and_standardises_features():
    features = torch.cat([torch.arange(10.0)[:, None] * 100, torch.ones(10, 1)], dim=1)
    policy = FilterPolicy(features, hidden=4)
    assert torch.equal(policy(), torch.zeros(10))
    assert torch.allclose(policy.features.mean(0), torch.zeros(2), atol=1e-6)
    assert torch.allclose(policy.features[:, 0].std(unbiased=False), torch.tensor(1.0))
    assert torch.equal(policy.features[:, 1], torch.zeros(10))
    assert policy.filter_logit.shape == (10,)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: sample_keep(torch.zeros(10), 11, [4, 6], [1, 1]), ValueError, "n_keep=11"),
        (lambda: sample_keep(torch.zeros(10), 1, [4, 6], [1, 1]), ValueError, "sum\\(min_keep\\)=2"),
        (lambda: sample_keep(torch.zeros(10), 3.0, [4, 6], [1, 1]), TypeError, "n_keep must be an int"),
        (lambda: sample_keep(torch.zeros(9), 3, [4, 6], [1, 1]), ValueError, "10 filters"),
        (lambda: sample_keep(torch.zeros(10), 3, [4, 6], [1]), ValueError, "one minimum per group"),
        (lambda: sample_keep(torch.zeros(10), 5, [4, 6], [5, 0]), ValueError, "min_keep\\[0\\]=5"),
        (lambda: sample_keep(torch.zeros(10), 3, [4, 0, 6], [1, 0, 1]), ValueError, "positive ints"),
        (lambda: sample_keep(torch.zeros(10), 3, 10, [1]), TypeError, "group_sizes"),
        (lambda: log_prob(torch.zeros(10), torch.tensor([5, 0, 1]), [4, 6], [1, 1]), ValueError, "two-stage"),
        (lambda: log_prob(torch.zeros(10), torch.tensor([0, 5, 5]), [4, 6], [1, 1]), ValueError, "repeats"),
        (lambda: log_prob(torch.zeros(10), torch.tensor([0, 5, 10]), [4, 6], [1, 1]), ValueError, "outside"),
        (lambda: ReinforceController(torch.zeros(9, 2), [4, 6], 3, [1, 1]), ValueError, "9 rows"),
        (lambda: ReinforceController(torch.zeros(10, 2), [4, 6], 30, [1, 1]), ValueError, "n_keep=30"),
        (lambda: ReinforceController(torch.zeros(10, 2), [4, 6], 3, [1, 1], baseline="mean"), ValueError, "baseline"),
        (lambda: ReinforceController(torch.zeros(10, 2), [4, 6], 3, [1, 1], lr=0), ValueError, "lr"),
        (lambda: ReinforceController(torch.zeros(10, 2), [4, 6], 3, [1, 1], entropy_coef=-1), ValueError, "entropy"),
        (lambda: ReinforceController(torch.zeros(10, 2), [4, 6], 3, [1, 1], baseline_decay=1), ValueError, "decay"),
        (lambda: ReinforceController(torch.zeros(10, 2), [4, 6], 3, [1, 1], seed=1.5), TypeError, "seed"),
        (lambda: ReinforceController(torch.zeros(10, 2), [4, 6], 3, [1, 1]).sample(2.5), TypeError, "n must be an int"),
        (lambda: ReinforceController(torch.zeros(10, 2), [4, 6], 3, [1, 1]).sample(0), ValueError, "at least one"),
    ],
)
def test_bad_inputs(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_update_checks_its_inputs():
    ctrl = ReinforceController(torch.zeros(10, 2), [4, 6], 3, [1, 1], seed=0)
    keep, orders = ctrl.sample(4)
    with pytest.raises(ValueError, match="one reward per episode"):
        ctrl.update(orders, torch.zeros(3))
    with pytest.raises(ValueError, match=r"\[n, 3\]"):
        ctrl.update(orders[:, :2], torch.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        ctrl.update(orders, torch.tensor([0.0, float("nan"), 0.0, 0.0]))
