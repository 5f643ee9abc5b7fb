import copy
import math

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp
from torch_rlprune.search.controller import ReinforceController
from torch_rlprune.search.evaluation import PAD_STEPS, CandidateEvaluator, CandidateModel
from torch_rlprune.masks import alive_channels, apply_channel_masks, keep_vectors
from torch_rlprune.search import AnnealingStrategy, RandomStrategy, ReinforceStrategy, run_search
from torch_rlprune.search.loop import TRIM_EVERY

from conftest import conv_pairs

# The planted problem: 4 layers of 50 filters, keep 60; the reward is the fraction of a hidden set of 60 kept.
SIZES, N_KEEP, FLOOR = [50, 50, 50, 50], 60, [1, 1, 1, 1]
HIDDEN = torch.zeros(200, dtype=torch.bool)
HIDDEN[torch.randperm(200, generator=torch.Generator().manual_seed(7))[:N_KEEP]] = True
BUDGET = 2000  # evaluations, the same for every strategy


def planted(keep):
    return float((keep & HIDDEN).sum()) / N_KEEP


@pytest.mark.usefixtures("one_thread")
def test_rl_solves_the_planted_problem_and_beats_random_search():
    rl = ReinforceStrategy(ReinforceController(torch.zeros(200, 1), SIZES, N_KEEP, FLOOR, seed=0))
    rl_result = run_search(rl, planted, episodes=BUDGET, batch=16, progress=False)
    random_result = run_search(RandomStrategy(SIZES, N_KEEP, FLOOR, seed=0), planted, episodes=BUDGET, progress=False)
    assert rl_result.best_reward >= 0.95
    assert random_result.best_reward < 0.6
    assert rl_result.evaluations == random_result.evaluations == BUDGET


@pytest.mark.usefixtures("one_thread")
def test_annealing_improves_on_its_start():
    sa = AnnealingStrategy(SIZES, N_KEEP, FLOOR, episodes=BUDGET, t_start=0.05, seed=0)
    result = run_search(sa, planted, episodes=BUDGET, progress=False)
    start = result.history[0]["reward"]
    assert result.best_reward >= start + 0.4
    assert all(sum(r["kept"]) == N_KEEP and min(r["kept"]) >= 1 for r in result.history)
    assert result.history[-1]["temperature"] < result.history[0]["temperature"]


def test_history_callbacks_and_writer_see_every_evaluation():
    class Writer:
        def __init__(self):
            self.tags = {}

        def add_scalar(self, tag, value, step):
            self.tags.setdefault(tag, []).append(step)

    seen, writer = [], Writer()
    rl = ReinforceStrategy(ReinforceController(torch.zeros(200, 1), SIZES, N_KEEP, FLOOR, seed=0))
    result = run_search(rl, planted, episodes=24, batch=8, callbacks=[seen.append], writer=writer, progress=False)
    assert [r["episode"] for r in seen] == list(range(24)) == [r["episode"] for r in result.history]
    assert all("entropy" in r and r["best_reward"] >= r["reward"] for r in seen)
    assert writer.tags["search/best_reward"] == list(range(24)) and len(writer.tags["kept/group3"]) == 24
    assert result.wall_time > 0


@pytest.mark.parametrize("batch", [1, 8])
def test_a_search_gives_freed_memory_back_every_few_evaluations(monkeypatch, batch):
    calls = []
    monkeypatch.setattr("torch_rlprune.search.loop.release_freed_memory", lambda: calls.append(len(calls)))
    rl = ReinforceStrategy(ReinforceController(torch.zeros(200, 1), SIZES, N_KEEP, FLOOR, seed=0))
    run_search(rl, planted, episodes=20, batch=batch, progress=False)
    assert len(calls) == 20 // TRIM_EVERY  # after 8 and 16 evaluations, whatever the step size


class PredictsZero(nn.Module):
    def forward(self, x):
        return torch.stack([torch.ones(len(x)), torch.zeros(len(x))], dim=1)


def pooled_planted(seen=None):
    """The planted reward plus a hundredth of an accuracy on a pool of 3 sets scored 0, 0.5 and 1 (appended to
    ``seen``): what a pooled reward gives depends on the set it takes."""
    labels = ([1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0])
    pool = rlp.rewards.Accuracy([(torch.zeros(4, 1), torch.tensor(y)) for y in labels], batches=1, pool=3)

    def reward(keep):
        score = pool(PredictsZero())
        if seen is not None:
            seen.append(score)
        return planted(keep) + 0.01 * score

    return reward


@pytest.mark.parametrize("kind", ["rl", "sa", "random", "rl with a pooled reward"])
def test_resume_after_interruption_ends_like_an_uninterrupted_run(kind, tmp_path):
    def strategy():
        if kind.startswith("rl"):
            return ReinforceStrategy(ReinforceController(torch.zeros(200, 1), SIZES, N_KEEP, FLOOR, seed=3))
        if kind == "sa":
            return AnnealingStrategy(SIZES, N_KEEP, FLOOR, episodes=80, seed=3)
        return RandomStrategy(SIZES, N_KEEP, FLOOR, seed=3)

    sets = []
    reward = pooled_planted(sets) if kind.endswith("pooled reward") else planted
    full = run_search(strategy(), reward, episodes=80, batch=4, progress=False)

    calls = []
    reward = pooled_planted() if kind.endswith("pooled reward") else planted

    def flaky(keep):
        calls.append(1)
        if len(calls) == 43:
            raise KeyboardInterrupt
        return reward(keep)

    path = tmp_path / "search.pt"
    stopped = run_search(strategy(), flaky, episodes=80, batch=4, checkpoint=path, checkpoint_every=8, progress=False)
    # The step holding the 43rd evaluation is rolled back, so the stop lands on a step boundary before it.
    done = stopped.evaluations
    assert stopped.interrupted and 38 <= done < 43 and len(stopped.history) == done
    assert stopped.best_reward == max(r["reward"] for r in full.history[:done])
    reward = pooled_planted() if kind.endswith("pooled reward") else planted  # a new process: the pool starts afresh
    resumed = run_search(strategy(), reward, episodes=80, batch=4, checkpoint=path, resume=path, progress=False)
    assert not resumed.interrupted and resumed.evaluations == 80
    assert [r["reward"] for r in resumed.history] == [r["reward"] for r in full.history]
    assert torch.equal(resumed.best_keep, full.best_keep) and resumed.best_reward == full.best_reward
    if kind.endswith("pooled reward"):  # each step's candidates on one set, the sets in turn
        assert sets == [[0.0, 0.5, 1.0][(e // 4) % 3] for e in range(80)]


def test_resume_refuses_a_checkpoint_of_another_search(tmp_path):
    path = tmp_path / "search.pt"
    run_search(RandomStrategy(SIZES, N_KEEP, FLOOR, seed=0), planted, episodes=5, checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="belongs to another search"):
        run_search(RandomStrategy(SIZES, 50, FLOOR, seed=0), planted, episodes=10, resume=path, progress=False)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable search checkpoint"):
        run_search(RandomStrategy(SIZES, N_KEEP, FLOOR, seed=0), planted, episodes=10, resume=path, progress=False)


@pytest.mark.parametrize("make", [torchvision.models.mobilenet_v2, torchvision.models.resnet18])
@pytest.mark.parametrize("norms", ["eval", "batch"])
@pytest.mark.parametrize("mode", ["slice", "mask"])
def test_candidate_view_computes_what_the_masked_model_computes(make, norms, mode):
    torch.manual_seed(0)
    model = make(num_classes=10)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 32, 32)
    groups = rlp.channel_groups(model, x[:1])
    keep = [torch.rand(g.size) < 0.4 for g in groups]
    for k in keep:
        k[0] = True
    evaluator = CandidateEvaluator(model, groups, x[:1], norms=norms, mode=mode)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with evaluator.active(), torch.no_grad():
        got = evaluator.view(keep)(x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    apply_channel_masks(groups, keep)
    with torch.no_grad():
        model.train() if norms == "batch" else model.eval()
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.eval()
        expected = model(x)
    assert torch.allclose(got, expected, atol=1e-4, rtol=1e-4)
    assert evaluator.view(keep).macs() == rlp.metrics.count_macs(model, x[:1])


@pytest.mark.parametrize("mode", ["slice", "mask"])
def test_candidate_view_of_a_pruned_model_composes_masks_and_leaves_its_tensors(mode):
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25).eval()
    x = torch.randn(4, 3, 32, 32)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x[:1])
    groups = rlp.channel_groups(model, x[:1])
    keep = [alive_channels(g) & (torch.rand(g.size) < 0.7) for g in groups]
    for k, g in zip(keep, groups):
        k[alive_channels(g).nonzero()[0]] = True
    evaluator = CandidateEvaluator(model, groups, x[:1], norms="eval", mode=mode)
    with evaluator.active(), torch.no_grad():
        got = evaluator.view(keep)(x)
    # The pruning hooks recompute `weight` inside the view's call; what they leave must be the model's own.
    for m, _ in conv_pairs(model):
        assert torch.equal(m.weight, m.weight_orig * m.weight_mask)
    apply_channel_masks(groups, keep)
    with torch.no_grad():
        assert torch.allclose(got, model(x), atol=1e-5)


def test_auto_evaluation_slices_on_the_cpu_and_masks_elsewhere():
    model, x, _ = small_problem()
    groups = rlp.channel_groups(model, x[:1])
    assert CandidateEvaluator(model, groups, x[:1]).mode == "slice"
    with torch.device("meta"):
        ghost = rlp.models.BasicCNN(width=0.25)
    assert CandidateEvaluator(ghost, rlp.channel_groups(ghost, x[:1].to("meta")), x[:1].to("meta")).mode == "mask"


def test_both_evaluations_find_the_same_mask():
    masks = []
    for mode in ("slice", "mask"):
        model, x, y = small_problem()
        rlp.global_structured(conv_pairs(model), rlp.RLStructuredPruning, amount=0.5, model=model,
                              example_inputs=x[:1], reward=rlp.rewards.Accuracy([(x, y)]), episodes=24, seed=0,
                              evaluation=mode, progress=False)  # fmt: skip
        masks.append(torch.cat([alive_channels(g) for g in rlp.channel_groups(model, x[:1])]))
    assert torch.equal(*masks)


def test_searching_a_pruned_model_again_prunes_its_alive_filters():
    model, x, y = small_problem()
    reward = rlp.rewards.Accuracy([(x, y)])
    for alive in (120, 60):
        rlp.global_structured(conv_pairs(model), rlp.RandomSearchPruning, amount=0.5, model=model,
                              example_inputs=x[:1], reward=reward, episodes=4, seed=0, progress=False)  # fmt: skip
        groups = rlp.channel_groups(model, x[:1])
        assert sum(int(alive_channels(g).sum()) for g in groups) == alive


def small_problem(seed=0):
    torch.manual_seed(seed)
    model = rlp.models.BasicCNN(width=0.25)
    x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    return model, x, y


@pytest.mark.parametrize("method", [rlp.RLStructuredPruning, rlp.SimulatedAnnealingPruning, rlp.RandomSearchPruning])
def test_global_search_is_seeded_and_leaves_the_model_as_it_was(method):
    masks = []
    for seed in (0, 0, 1):
        model, x, y = small_problem()
        model.train()
        model.features[0].weight.requires_grad_(False)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        result = rlp.global_structured(conv_pairs(model), method, amount=0.5, model=model, example_inputs=x[:1],
                                       reward=rlp.rewards.NegativeLoss([(x, y)]), episodes=24, seed=seed,
                                       progress=False)  # fmt: skip
        assert result.evaluations == 24 and math.isfinite(result.best_reward)
        after = model.state_dict()
        for key, value in before.items():
            now = after[key] if key in after else after[key.replace("weight", "weight_orig").replace("bias", "bias_orig")]
            assert torch.equal(value, now), f"the search changed {key}"
        assert model.training and all(m.training for m in model.modules())
        assert not model.features[0].weight_orig.requires_grad and model.features[4].weight_orig.requires_grad
        assert all(p.grad is None for p in model.parameters())
        groups = rlp.channel_groups(model, x[:1])
        assert sum(int((~alive_channels(g)).sum()) for g in groups) == 120
        masks.append(torch.cat([alive_channels(g) for g in groups]))
    assert torch.equal(masks[0], masks[1]) and not torch.equal(masks[0], masks[2])


def test_global_search_keeps_the_best_mask_on_interrupt():
    model, x, y = small_problem()
    accuracy = rlp.rewards.Accuracy([(x, y)])
    calls = []

    def reward(view):
        calls.append(1)
        if len(calls) > 12:
            raise KeyboardInterrupt
        return accuracy(view)

    result = rlp.global_structured(conv_pairs(model), rlp.RLStructuredPruning, amount=0.5, model=model,
                                   example_inputs=x[:1], reward=reward, episodes=100, batch=4, seed=0,
                                   progress=False)  # fmt: skip
    assert result.interrupted and result.evaluations == 12
    assert prune.is_pruned(model)
    groups = rlp.channel_groups(model, x[:1])
    assert torch.equal(torch.cat([alive_channels(g) for g in groups]), result.best_keep)


def test_a_saliency_feature_that_shows_the_answer_speeds_up_the_search():
    model, x, _ = small_problem()
    hidden = [torch.rand(g.size, generator=torch.Generator().manual_seed(i)) < 0.5
              for i, g in enumerate(rlp.channel_groups(model, x[:1]))]  # fmt: skip

    def reward(view):
        return float(sum((k & h).sum() for k, h in zip(view.keep, hidden))) / float(sum(h.sum() for h in hidden))

    best = {}
    for name in ("plain", "saliency"):
        m = copy.deepcopy(model)
        saliency = {(g.producers[0].module, "weight"): h.float() for g, h in zip(rlp.channel_groups(m, x[:1]), hidden)}
        options = {"saliency": saliency} if name == "saliency" else {}
        result = rlp.global_structured(conv_pairs(m), rlp.RLStructuredPruning, amount=0.5, model=m,
                                       example_inputs=x[:1], reward=reward, episodes=200, seed=0, progress=False,
                                       **options)  # fmt: skip
        best[name] = result.best_reward
    assert best["saliency"] >= best["plain"] + 0.15


@pytest.mark.parametrize(
    "bad, error, message",
    [
        (lambda view: float("nan"), ValueError, "must be finite"),
        (lambda view: float("inf"), ValueError, "must be finite"),
        (lambda view: "good", TypeError, "must return a number"),
        (None, TypeError, "reward must be a callable"),
    ],
)
def test_bad_rewards_are_refused(bad, error, message):
    model, x, y = small_problem()
    with pytest.raises(error, match=message):
        rlp.global_structured(conv_pairs(model), rlp.RLStructuredPruning, amount=0.5, model=model,
                              example_inputs=x[:1], reward=bad, episodes=8, progress=False)  # fmt: skip
    assert not prune.is_pruned(model)


def test_bad_search_arguments_are_refused():
    model, x, y = small_problem()
    reward = rlp.rewards.Accuracy([(x, y)])
    args = dict(amount=0.5, model=model, example_inputs=x[:1], reward=reward, progress=False)
    with pytest.raises(ValueError, match="episodes must be an int >= 1"):
        rlp.global_structured(conv_pairs(model), rlp.RLStructuredPruning, episodes=0, **args)
    with pytest.raises(ValueError, match="at most 236 can go"):
        rlp.global_structured(conv_pairs(model), rlp.SimulatedAnnealingPruning, **{**args, "amount": 1.0})
    with pytest.raises(TypeError, match="unexpected argument"):
        rlp.global_structured(conv_pairs(model), rlp.SimulatedAnnealingPruning, lr=0.1, **args)
    with pytest.raises(TypeError, match="model= must be the torch.nn.Module"):
        rlp.global_structured(conv_pairs(model), rlp.RLStructuredPruning, **{**args, "model": None})
    assert not prune.is_pruned(model)


def test_rl_structured_prunes_one_layer_by_reward():
    conv = nn.Conv2d(3, 10, 3)
    wanted = torch.zeros(10, dtype=torch.bool)
    wanted[[1, 4, 8]] = True

    def reward(module):
        return float((module.weight.flatten(1).abs().sum(1) > 0)[wanted].sum())

    rlp.rl_structured(conv, "weight", amount=7, reward=reward, episodes=240, seed=0, progress=False)
    assert conv.weight_mask.flatten(1).any(1).tolist() == wanted.tolist()
    assert not hasattr(conv, "weight") or torch.equal(conv.weight, conv.weight_orig * conv.weight_mask)


def test_a_reward_may_return_any_real_number_numpy_included():
    import numpy

    from torch_rlprune.search.rewards import check_reward

    assert check_reward(numpy.float32(0.25), "r") == 0.25 and isinstance(check_reward(numpy.int64(3), "r"), float)
    with pytest.raises(TypeError, match="must return a number"):
        check_reward(numpy.bool_(True), "r")


@pytest.mark.parametrize("mode", ["slice", "mask"])
def test_a_reward_reading_the_view_parameters_sees_the_candidate(mode):
    model = rlp.models.BasicCNN(width=0.25)
    x = torch.randn(2, 3, 32, 32)
    groups = rlp.channel_groups(model, x[:1])
    keep = [torch.arange(g.size) < g.size // 2 for g in groups]
    view = CandidateEvaluator(model, groups, x[:1], mode=mode).view(keep)
    sliced = {n: t for n, t in view.named_parameters()}
    assert set(sliced) == {"model." + n for n, _ in model.named_parameters()}
    conv = sliced["model.features.0.weight"]
    if mode == "slice":
        assert conv.shape[0] == groups[0].size // 2
        masked = copy.deepcopy(model)
        rlp.apply_channel_masks(rlp.channel_groups(masked, x[:1]), keep)
        small = rlp.slim(masked, x[:1])
        assert sum(p.numel() for p in view.parameters()) == sum(p.numel() for p in small.parameters())
    else:
        assert conv.shape[0] == groups[0].size and not conv[groups[0].size // 2 :].any()
    assert sum(1 for _ in view.buffers()) == sum(1 for _ in model.buffers())


def test_finalists_are_rescored_on_the_final_reward_within_the_budget(tmp_path):
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.125)
    x = torch.randn(4, 3, 32, 32)
    convs = [(m, "weight") for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    first = convs[0][0]

    def kept_first(view):  # the "true" quality: filters kept in the first layer (the candidate's sliced weight)
        return float(dict(view.named_parameters())["model.features.0.weight"].shape[0])

    noise = torch.Generator().manual_seed(1)

    def noisy(view):  # the search's reward: the truth buried in noise
        return kept_first(view) + 20 * float(torch.randn((), generator=noise))

    seen = []

    def final(view):
        seen.append(kept_first(view))
        return seen[-1]

    result = rlp.global_structured(convs, rlp.RandomWidthPruning, amount=0.5, model=model, example_inputs=x[:1],
                                   reward=noisy, episodes=24, seed=0, progress=False, finalists=4,
                                   final_reward=final)  # fmt: skip
    assert result.evaluations == 24 and len(result.history) == 20
    assert len(result.finalists) == 4 and result.final_rewards == seen
    rewards = [r for r, _ in result.finalists]
    assert rewards == sorted(rewards, reverse=True) and rewards[0] == max(r["reward"] for r in result.history)
    chosen = max(range(4), key=seen.__getitem__)
    assert torch.equal(result.best_keep, result.finalists[chosen][1])
    assert int(first.weight_mask.flatten(1).any(1).sum()) == max(seen)


def test_finalists_survive_a_resumed_search(tmp_path):
    strategy = lambda: RandomStrategy([6, 6], n_keep=5, min_keep=[1, 1], seed=2)  # noqa: E731
    reward = lambda keep: float(keep[:6].sum()) + 0.01 * float(keep.nonzero()[0])  # noqa: E731
    whole = run_search(strategy(), reward, episodes=30, finalists=3, progress=False)
    run_search(strategy(), reward, episodes=12, finalists=3, progress=False, checkpoint=tmp_path / "s.pt")
    resumed = run_search(strategy(), reward, episodes=30, finalists=3, progress=False, resume=tmp_path / "s.pt")
    assert [r for r, _ in resumed.finalists] == [r for r, _ in whole.finalists]
    assert len({tuple(k.tolist()) for _, k in whole.finalists}) == 3


def test_finalists_need_a_final_reward_and_fit_the_budget():
    with pytest.raises(ValueError, match="needs final_reward"):
        rlp.RLStructuredPruning(0.5, reward=lambda m: 0.0, finalists=2)
    with pytest.raises(ValueError, match=r"finalists must be an int in \[0, episodes\)"):
        rlp.RLStructuredPruning(0.5, reward=lambda m: 0.0, episodes=4, finalists=4, final_reward=lambda m: 0.0)
    with pytest.raises(ValueError, match="finalists must be an int >= 0"):
        run_search(RandomStrategy([2], 1, [1], seed=0), lambda k: 0.0, episodes=2, finalists=-1, progress=False)


def _input_widths(view, x, modules):
    """The channels each of ``modules`` receives when ``view`` runs on ``x``, and whether oneDNN was on."""
    seen = {}
    handles = [m.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0].shape[1]))
               for i, m in enumerate(modules)]  # fmt: skip
    handles.append(modules[0].register_forward_pre_hook(
        lambda mod, args: seen.__setitem__("onednn", torch.backends.mkldnn.enabled)))  # fmt: skip
    try:
        with torch.no_grad():
            out = view(x)
    finally:
        for handle in handles:
            handle.remove()
    return out, seen


def test_sliced_cpu_views_run_padded_widths_that_compute_the_exact_candidate():
    # oneDNN keeps a kernel per convolution shape: exact counts bring new shapes with every candidate.
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25)
    x = torch.randn(4, 3, 32, 32)
    groups = rlp.channel_groups(model, x[:1])
    evaluator = CandidateEvaluator(model, groups, x[:1])
    assert evaluator.mode == "slice" and evaluator.padded
    consumers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))][1:]
    steps = [math.ceil(g.size / PAD_STEPS) for g in groups]
    g = torch.Generator().manual_seed(0)
    widths = [set() for _ in consumers]
    with evaluator.active():
        for _ in range(30):
            keep = [torch.rand(grp.size, generator=g) < torch.rand((), generator=g) for grp in groups]
            for k in keep:
                k[0] = True
            view = evaluator.view(keep)
            padded, seen = _input_widths(view, x, consumers)
            exact, seen_exact = _input_widths(CandidateModel(evaluator, keep, keep_vectors(groups, keep)), x, consumers)
            torch.testing.assert_close(padded, exact, atol=1e-5, rtol=1e-4)
            assert seen["onednn"] and not seen_exact["onednn"]  # exact counts run without oneDNN
            for i, (k, step, grp) in enumerate(zip(keep, steps, groups)):
                expand = 16 if i == len(groups) - 1 else 1  # the Linear reads 4x4 positions per channel
                assert seen_exact[i] == int(k.sum()) * expand
                assert seen[i] == min(grp.size, math.ceil(int(k.sum()) / step) * step) * expand
                widths[i].add(seen[i])
            # What a reward reads is the candidate's own tensors; tensors it may train run at the exact counts.
            weight = dict(view.named_parameters())["model.features.0.weight"]
            assert weight.shape[0] == int(keep[0].sum()) and view.model.features[0].weight.shape[0] == groups[0].size
            assert _input_widths(view.substitute({}), x, consumers)[1] == seen
    assert all(1 < len(w) <= PAD_STEPS for w in widths)
    assert torch.backends.mkldnn.enabled


def test_padding_hides_what_the_padded_channels_output_from_their_consumers():
    # A sigmoid after a norm: a padded channel outputs 0.5, which only its consumers' zeroed columns can stop.
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.Sigmoid(), nn.Conv2d(16, 16, 3),
                          nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4 * 4, 3))  # fmt: skip
    x = torch.randn(4, 3, 8, 8)
    groups = rlp.channel_groups(model, x[:1])
    evaluator = CandidateEvaluator(model, groups, x[:1])
    keep = [torch.arange(16) < 5, torch.arange(16) % 2 == 0]  # padded to 6 and 8
    with evaluator.active():
        padded, seen = _input_widths(evaluator.view(keep), x, [model[3], model[7]])
        exact = CandidateModel(evaluator, keep, keep_vectors(groups, keep))(x).detach()
    assert evaluator.padded and seen[0] == 6 and seen[1] == 8 * 16
    torch.testing.assert_close(padded, exact, atol=1e-5, rtol=1e-4)


class Quotient(nn.Module):
    """Two producers of one group divided: a padded channel would compute 0 / 0."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.head = nn.Conv2d(3, 12, 3), nn.Conv2d(3, 12, 3), nn.Conv2d(12, 4, 3)

    def forward(self, x):
        return self.head(self.a(x) / self.b(x)).mean((2, 3))


def test_a_model_that_padding_would_change_runs_exact_widths_without_onednn():
    torch.manual_seed(0)
    model, x = Quotient(), torch.randn(2, 3, 8, 8)
    groups = rlp.channel_groups(model, x[:1])
    evaluator = CandidateEvaluator(model, groups, x[:1])
    keep = [torch.arange(12) < 7]
    assert not evaluator.padded  # the trial candidate gave NaN padded
    with evaluator.active():
        assert not torch.backends.mkldnn.enabled  # also for the backward passes of a reward that trains
        out, seen = _input_widths(evaluator.view(keep), x, [model.head])
        assert seen[0] == 7 and out.isfinite().all()
        with pytest.raises(RuntimeError):
            evaluator.view(keep)(x[:, :2])
    assert torch.backends.mkldnn.enabled
    other, y = rlp.models.BasicCNN(width=0.125), torch.randn(1, 3, 32, 32)
    padded = CandidateEvaluator(other, rlp.channel_groups(other, y), y)
    with padded.active():
        assert torch.backends.mkldnn.enabled


def test_rewards_that_recalibrate_or_train_a_padded_view_get_what_the_exact_one_gives():
    torch.manual_seed(0)
    model = rlp.models.BasicCNN(width=0.25, dropout=0.0)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    groups = rlp.channel_groups(model, x[:1])
    evaluator = CandidateEvaluator(model, groups, x[:1], norms="eval")
    loss = rlp.rewards.NegativeLoss([(x, y)])

    def norm_statistics(view):  # what a reward reading the candidate's buffers sees
        return float(dict(view.named_buffers())["model.features.11.running_mean"].abs().sum())

    rewards = {
        "recalibrated": rlp.rewards.Recalibrated(loss, [(x * 2 + 1, y)], batches=1),
        "buffers after recalibrating": rlp.rewards.Recalibrated(norm_statistics, [(x * 2 + 1, y)], batches=1),
        "trained, then recalibrated": rlp.rewards.ShortTrained(
            rlp.rewards.Recalibrated(loss, [(x, y)], batches=1), [(x, y)], steps=3, lr=0.1),
        "recalibrated, then trained": rlp.rewards.Recalibrated(
            rlp.rewards.ShortTrained(loss, [(x, y)], steps=3, lr=0.1), [(x, y)], batches=1),
    }  # fmt: skip
    keep = [torch.arange(grp.size) % 3 != 1 for grp in groups]
    with evaluator.active():
        padded, exact = evaluator.view(keep), CandidateModel(evaluator, keep, keep_vectors(groups, keep))
        assert evaluator.padded
        for name, reward in rewards.items():
            assert reward(padded) == pytest.approx(reward(exact), rel=1e-4), name
        assert norm_statistics(padded) == 0.0 < rewards["buffers after recalibrating"](padded)
        assert rewards["recalibrated"](padded) != pytest.approx(loss(padded), rel=1e-3)


class ChannelsLastNorm(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.norm = nn.Conv2d(3, 16, 3), nn.LayerNorm(16)
        self.conv2, self.bn, self.conv3 = nn.Conv2d(16, 16, 3), nn.BatchNorm2d(16), nn.Conv2d(16, 4, 1)

    def forward(self, x):
        x = self.norm(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.conv3(torch.relu(self.bn(self.conv2(x)))).mean((2, 3))


def test_a_group_normalised_over_its_channels_runs_its_exact_count():
    torch.manual_seed(0)
    model = ChannelsLastNorm()
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 3, 12, 12)
    groups = rlp.channel_groups(model, x[:1])
    evaluator = CandidateEvaluator(model, groups, x[:1])
    assert [g.producers[0].name for g in groups] == ["conv1", "conv2"] and evaluator.padded
    keep = [torch.arange(16) % 3 != 1] * 2  # 11 of 16: padding would add one
    with evaluator.active():
        padded, seen = _input_widths(evaluator.view(keep), x, [model.conv2, model.conv3])
        exact, _ = _input_widths(CandidateModel(evaluator, keep, keep_vectors(groups, keep)), x, [model.conv2])
    assert seen[0] == 11 and seen[1] == 12  # the LayerNorm's group unpadded, the batch norm's padded
    torch.testing.assert_close(padded, exact, atol=1e-5, rtol=1e-4)


def _scaled_norm_model(bias=True):
    """ChannelsLastNorm in eval mode with a LayerNorm weight that makes a wrong cut visible, and a batch of 4."""
    torch.manual_seed(0)
    model = ChannelsLastNorm().eval()
    model.norm = nn.LayerNorm(16, bias=bias)
    with torch.no_grad():
        model.norm.weight.uniform_(0.5, 1.5)
    return model, torch.randn(4, 3, 12, 12)


def test_masked_candidates_normalise_over_their_kept_channels_only():
    model, x = _scaled_norm_model()
    groups = rlp.channel_groups(model, x[:1])
    keep = [torch.arange(16) % 3 != 1] * 2
    evaluator = CandidateEvaluator(model, groups, x[:1], norms="eval", mode="mask")
    with evaluator.active(), torch.no_grad():
        masked = CandidateModel(evaluator, keep, keep_vectors(groups, keep))(x)
    assert not model.norm._forward_hooks  # the hook lasts for the call only
    rlp.apply_channel_masks(groups, keep)
    with torch.no_grad():
        sliced = rlp.slim(model, x[:1])(x)
    torch.testing.assert_close(masked, sliced, atol=1e-5, rtol=1e-4)  # the zeroed channels left out of the norm


def _candidate_in_both_modes(model, groups, x, keep):
    outputs = []
    for mode in ("slice", "mask"):
        evaluator = CandidateEvaluator(model, groups, x[:1], norms="eval", mode=mode)
        with evaluator.active(), torch.no_grad():
            outputs.append(CandidateModel(evaluator, keep, keep_vectors(groups, keep))(x))
    return outputs


def test_a_layernorm_without_bias_over_masked_channels_runs_once_on_the_kept_ones():
    model, x = _scaled_norm_model(bias=False)
    groups = rlp.channel_groups(model, x[:1])
    keep = [torch.arange(16) % 3 != 1] * 2
    sliced, masked = _candidate_in_both_modes(model, groups, x, keep)
    torch.testing.assert_close(masked, sliced, atol=1e-5, rtol=1e-4)
    rlp.apply_channel_masks(groups, keep)
    calls = []
    model.norm.register_full_backward_hook(lambda module, grad_in, grad_out: calls.append(module))
    model(x).sum().backward()
    assert calls == [model.norm]  # the computation over the kept channels is not a call of its own
    with torch.no_grad():
        torch.testing.assert_close(model(x), rlp.slim(model, x[:1])(x), atol=1e-5, rtol=1e-4)


def test_a_masked_candidate_on_a_masked_model_leaves_out_the_channels_already_pruned():
    model, x = _scaled_norm_model()
    groups = rlp.channel_groups(model, x[:1])
    rlp.apply_channel_masks(groups, [torch.arange(16) % 3 != 1] * 2)
    keep = [torch.arange(16) % 4 != 0] * 2  # keeps some channels the masks pruned: they stay pruned
    sliced, masked = _candidate_in_both_modes(model, groups, x, keep)
    torch.testing.assert_close(masked, sliced, atol=1e-5, rtol=1e-4)


