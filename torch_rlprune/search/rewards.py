"""Rewards for the mask search: how good a pruned network is, measured on validation data.

A reward is any callable ``reward(model) -> float``, higher is better. During a search ``model`` is a
:class:`~torch_rlprune.search.evaluation.CandidateModel`: it computes what the candidate-masked network computes. The
rewards here read a few batches of a loader once, keep them on the model's device, and reuse them for every
candidate. Pass a loader of *validation* data carved out of the training set: a mask chosen by its test accuracy
makes that test accuracy meaningless.
"""

from __future__ import annotations

import contextvars
import inspect
import math
import numbers
from collections.abc import Iterable
from typing import Any, Callable

import numpy
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from .._inputs import device_of
from ..metrics import count_macs
from .evaluation import CandidateModel

__all__ = [
    "Accuracy",
    "NegativeLoss",
    "MACsAware",
    "Recalibrated",
    "ShortTrained",
    "REWARDS",
    "make_reward",
    "search_step",
    "check_reward",
]


#: The step of the search that is running, set by :func:`~torch_rlprune.search.run_search` while it evaluates a
#: step's candidates: a reward with a pool scores every candidate of a step on the same set (the step's candidates
#: are compared with each other), and the set follows from the step, so that a resumed search and the processes of
#: a distributed one see the sets an uninterrupted single process would.
search_step: contextvars.ContextVar[int | None] = contextvars.ContextVar("search_step", default=None)


class _CachedBatches:
    """``batches`` (inputs, targets) pairs of a loader, fetched once and kept on the model's device: its first
    ``batches``, or with ``pool=k`` its first ``k * batches`` split into ``k`` sets that :meth:`get` hands out in
    turn: one set per search step (:data:`search_step`), or per call outside a search."""

    def __init__(self, loader: Iterable[Any], batches: int | None, name: str, pool: int = 1) -> None:
        if isinstance(loader, (torch.Tensor, str, bytes)) or not isinstance(loader, Iterable):
            raise TypeError(f"{name}: loader must be an iterable of (inputs, targets) batches, e.g. a DataLoader.")
        if batches is not None and (isinstance(batches, bool) or not isinstance(batches, int) or batches < 1):
            raise ValueError(f"{name}: batches must be a positive int or None (all batches), got {batches!r}.")
        if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
            raise ValueError(f"{name}: pool must be a positive int, got {pool!r}.")
        if pool > 1 and batches is None:
            raise ValueError(f"{name}: pool={pool} splits the loader into sets of `batches` batches; pass batches too.")
        self.loader, self.batches, self.name, self.pool = loader, batches, name, pool
        self.turn = 0
        self._cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def get(self, model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of this call: always the same ones, or with a pool the set of this search step (outside a
        search, the next set)."""
        device = device_of(model)
        if self._cache is None or self._cache[0][0].device != device:
            wanted = None if self.batches is None else self.batches * self.pool
            cache = []
            for i, batch in enumerate(self.loader):
                if wanted is not None and i >= wanted:
                    break
                if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
                    raise TypeError(f"{self.name}: every batch must be an (inputs, targets) pair.")
                cache.append((batch[0].to(device), batch[1].to(device)))
            if not cache:
                raise ValueError(f"{self.name}: the loader yielded no batch; pass validation data.")
            if self.pool > 1 and len(cache) < wanted:
                raise ValueError(
                    f"{self.name}: pool={self.pool} sets of {self.batches} batches need {wanted} batches, but the "
                    f"loader yielded {len(cache)}; lower pool or batches, or pass more validation data."
                )
            self._cache = cache
        if self.pool == 1:
            return self._cache
        turn = search_step.get()
        if turn is None:
            turn, self.turn = self.turn, self.turn + 1
        start = (turn % self.pool) * self.batches
        return self._cache[start : start + self.batches]


class Accuracy:
    r"""Top-1 accuracy of the model on the first ``batches`` batches of ``loader`` (all of them by default).

    A search that scores every candidate on the same few images learns those images: over 1,000 rewards on 512
    validation images, the filters it picked scored higher there and fine-tuned worse (see :doc:`search`). With
    ``pool=k`` each step of a search scores its candidates on the next of ``k`` sets of ``batches`` batches
    instead, in turn (outside a search, each call takes the next set). The best reward of a search then compares
    candidates scored on different sets: re-score its finalists on fresh batches (``finalists=``,
    ``final_reward=``).

    Args:
        loader (iterable): yields ``(inputs, targets)`` batches of validation data, e.g. a
            :class:`torch.utils.data.DataLoader`. The batches are read once and cached on the model's device.
        batches (int, optional): how many batches to use. Default: all.
        pool (int): sets of ``batches`` batches (the loader's first ``pool * batches``) that a search's steps take in
            turn. Default: 1 (the same batches every call).

    Example:
        >>> import torch
        >>> from torch_rlprune.search.rewards import Accuracy
        >>> data = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))]
        >>> model = torch.nn.Linear(3, 2)
        >>> 0.0 <= Accuracy(data)(model) <= 1.0
        True
    """

    def __init__(self, loader: Iterable[Any], batches: int | None = None, pool: int = 1) -> None:
        self.data = _CachedBatches(loader, batches, type(self).__name__, pool)

    def __call__(self, model: nn.Module) -> float:
        correct = total = 0
        for inputs, targets in self.data.get(model):
            correct += int((model(inputs).argmax(dim=1) == targets).sum())
            total += targets.numel()
        return correct / total


class NegativeLoss:
    r"""Minus the mean loss of the model on the first ``batches`` batches of ``loader``.

    Smoother than accuracy where accuracy barely moves, as at initialisation: two masks that both score 10% can
    differ a lot in loss.

    Args:
        loader (iterable): yields ``(inputs, targets)`` batches of validation data.
        batches (int, optional): how many batches to use. Default: all.
        loss_fn (callable): ``loss_fn(outputs, targets)``, averaged over the batch. Default: cross-entropy.
        pool (int): sets of ``batches`` batches that a search's steps take in turn (see :class:`Accuracy`).
            Default: 1.

    Example:
        >>> import torch
        >>> from torch_rlprune.search.rewards import NegativeLoss
        >>> data = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))]
        >>> NegativeLoss(data)(torch.nn.Linear(3, 2)) < 0
        True
    """

    def __init__(
        self,
        loader: Iterable[Any],
        batches: int | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
        pool: int = 1,
    ) -> None:
        self.data = _CachedBatches(loader, batches, type(self).__name__, pool)
        self.loss_fn = loss_fn

    def __call__(self, model: nn.Module) -> float:
        data = self.data.get(model)
        losses = [float(self.loss_fn(model(x), y).detach()) * y.shape[0] for x, y in data]
        return -sum(losses) / sum(y.shape[0] for _, y in data)


class MACsAware:
    r"""AMC's reward (He et al., 2018): :math:`-\text{error} \cdot \log(\text{MACs})`.

    Rewards accuracy and, at equal accuracy, fewer multiply-accumulates. The error is ``1 - Accuracy``; the MACs
    are those of the sliced network (:meth:`CandidateModel.macs`, or :func:`torch_rlprune.metrics.count_macs`
    on ``example_inputs`` for an ordinary model).

    Args:
        loader (iterable): yields ``(inputs, targets)`` batches of validation data.
        batches (int, optional): how many batches to use. Default: all.
        example_inputs (torch.Tensor, optional): needed only to count the MACs of a model that is not a
            candidate view.
        pool (int): sets of ``batches`` batches that a search's steps take in turn (see :class:`Accuracy`).
            Default: 1.

    Example:
        >>> import torch
        >>> from torch_rlprune.search.rewards import MACsAware
        >>> data = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))]
        >>> MACsAware(data, example_inputs=torch.randn(1, 3))(torch.nn.Linear(3, 2)) <= 0
        True
    """

    def __init__(
        self,
        loader: Iterable[Any],
        batches: int | None = None,
        example_inputs: torch.Tensor | None = None,
        pool: int = 1,
    ) -> None:
        self.accuracy = Accuracy(loader, batches, pool)
        self.example_inputs = example_inputs

    def __call__(self, model: nn.Module) -> float:
        macs_of = getattr(model, "macs", None)
        if callable(macs_of):
            macs = macs_of()
        elif self.example_inputs is not None:
            macs = count_macs(model, self.example_inputs)
        else:
            raise TypeError("MACsAware: pass example_inputs to count the MACs of a model that is not a candidate.")
        return -(1.0 - self.accuracy(model)) * math.log(max(macs, 2))


class _WithTensors(nn.Module):
    """``module`` computing with some of its tensors replaced (through :func:`torch.func.functional_call`)."""

    def __init__(self, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.module, self.tensors = module, tensors

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.module, self.tensors, args, kwargs, strict=False)


class Recalibrated:
    r"""Any reward, computed after re-estimating the batch-norm statistics of the network it is given.

    Cutting filters changes what every later layer sees, so the running statistics that the dense network
    learnt no longer fit the pruned one, and a candidate evaluated with them scores far below what it is worth
    after fine-tuning; evaluating with each batch's own statistics (``norms="batch"``) fits better but depends
    on the validation batch. EagleEye (Li et al., 2020, "adaptive batch normalization") re-estimates the
    statistics on a few training batches, then evaluates in eval mode; their rewards ranked candidates by their
    fine-tuned accuracy far better. This wrapper does that for any reward: for every candidate it computes fresh
    running statistics of all batch norms (a cumulative average over ``batches`` batches of ``loader``, with
    dropout off), then calls ``reward`` on the network computing with them, its norms in eval mode. Neither the
    model's own statistics nor its modes change.

    Args:
        reward (callable): the reward to compute, e.g. :class:`Accuracy` on validation batches.
        loader (iterable): yields ``(inputs, targets)`` batches of *training* data; the first ``batches`` are
            read once and reused for every candidate, so that candidates are compared on the same images.
        batches (int): how many batches to estimate the statistics on. Default: 4.

    Example:
        >>> import torch
        >>> from torch_rlprune.search.rewards import Accuracy, Recalibrated
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
        >>> train = [(torch.randn(16, 3) * 5 + 3, torch.zeros(16, dtype=torch.long))]
        >>> val = [(torch.randn(8, 3) * 5 + 3, torch.zeros(8, dtype=torch.long))]
        >>> score = Recalibrated(Accuracy(val), train, batches=1)(model)
        >>> 0.0 <= score <= 1.0, float(model[1].running_mean.abs().sum())  # the model's own statistics unchanged
        (True, 0.0)
    """

    def __init__(self, reward: Callable[[nn.Module], Any], loader: Iterable[Any], batches: int = 4) -> None:
        if not callable(reward):
            raise TypeError(f"Recalibrated: reward must be a callable reward(model) -> float, got {type(reward).__name__}.")
        if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
            raise ValueError(f"Recalibrated: batches must be a positive int, got {batches!r}.")
        self.reward = reward
        self.data = _CachedBatches(loader, batches, "Recalibrated")
        self.__name__ = f"Recalibrated({getattr(reward, '__name__', type(reward).__name__)})"

    def __call__(self, model: nn.Module) -> Any:
        base = model.model if isinstance(model, CandidateModel) else model
        prefix = "model." if isinstance(model, CandidateModel) else ""
        current = dict(model.named_buffers())
        norms = [(n, m) for n, m in base.named_modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
        fresh: dict[str, torch.Tensor] = {}
        for name, norm in norms:
            mean = current[f"{prefix}{name}.running_mean"]
            fresh[f"{name}.running_mean"] = torch.zeros_like(mean)
            fresh[f"{name}.running_var"] = torch.ones_like(mean)
            fresh[f"{name}.num_batches_tracked"] = torch.zeros_like(norm.num_batches_tracked)
        view = model.substitute(fresh) if isinstance(model, CandidateModel) else _WithTensors(model, fresh)
        modes = {m: m.training for m in base.modules()}
        momenta = {m: m.momentum for _, m in norms}
        try:
            base.eval()
            for _, norm in norms:
                norm.train()
                norm.momentum = None  # a cumulative average: every calibration batch counts the same
            with torch.no_grad():
                for inputs, _ in self.data.get(base):
                    view(inputs)
            for _, norm in norms:
                norm.eval()
            return self.reward(view)
        finally:
            for module, training in modes.items():
                module.training = training
            for norm, momentum in momenta.items():
                norm.momentum = momentum


class ShortTrained:
    r"""Any reward, computed after a few SGD steps of the network it is given, from its current weights.

    A candidate's worth to a user is its accuracy after fine-tuning, and a few steps of it tell filters that the
    network can do without from filters it cannot quickly replace better than its accuracy as cut. For every
    candidate this trains copies of its parameters (the candidate's own, sliced ones; norm statistics copied too)
    for ``steps`` steps of SGD with momentum on batches of ``loader`` (the model in train mode, dropout
    included), then calls ``reward`` on the network computing with them. The model itself is not changed.
    Compose it with :class:`Recalibrated` to re-estimate the norm statistics after the steps:
    ``ShortTrained(Recalibrated(Accuracy(val), train), train, steps=20)``.

    Candidates must run sliced (``evaluation="slice"``, the default on the CPU): a masked candidate would let the
    steps revive the pruned channels.

    Args:
        reward (callable): the reward to compute after the steps.
        loader (iterable): yields ``(inputs, targets)`` batches of *training* data; the first ``steps`` are read
            once and reused for every candidate.
        steps (int): SGD steps. Default: 20.
        lr (float): learning rate. Default: 0.01.
        momentum (float): SGD momentum. Default: 0.9.
        loss_fn (callable): ``loss_fn(logits, targets)``. Default: cross-entropy.

    Example:
        >>> import torch
        >>> from torch_rlprune.rewards import NegativeLoss, ShortTrained
        >>> model = torch.nn.Linear(3, 2)
        >>> data = [(torch.randn(16, 3), torch.randint(0, 2, (16,)))]
        >>> before = NegativeLoss(data)(model)
        >>> ShortTrained(NegativeLoss(data), data, steps=30, lr=0.1)(model) > before  # fits its batch better
        True
        >>> NegativeLoss(data)(model) == before  # the model is unchanged
        True
    """

    def __init__(
        self,
        reward: Callable[[nn.Module], Any],
        loader: Iterable[Any],
        steps: int = 20,
        lr: float = 0.01,
        momentum: float = 0.9,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    ) -> None:
        if not callable(reward):
            raise TypeError(f"ShortTrained: reward must be a callable reward(model) -> float, got {type(reward).__name__}.")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"ShortTrained: steps must be a positive int, got {steps!r}.")
        for name, value in (("lr", lr), ("momentum", momentum)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"ShortTrained: {name} must be a finite number >= 0, got {value!r}.")
        self.reward, self.steps, self.lr, self.momentum, self.loss_fn = reward, steps, float(lr), float(momentum), loss_fn
        self.data = _CachedBatches(loader, steps, "ShortTrained")
        self.__name__ = f"ShortTrained({getattr(reward, '__name__', type(reward).__name__)})"

    def __call__(self, model: nn.Module) -> Any:
        candidate = isinstance(model, CandidateModel)
        if candidate and model.mode != "slice":
            raise ValueError(
                "ShortTrained: candidates evaluated with evaluation='mask' would revive their pruned channels; "
                "search with evaluation='slice'."
            )
        base = model.model if candidate else model
        prefix = "model." if candidate else ""
        params = {n.removeprefix(prefix): p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
        buffers = {n.removeprefix(prefix): b.detach().clone() for n, b in model.named_buffers()}
        tensors = {**buffers, **params}
        view = model.substitute(tensors) if candidate else _WithTensors(model, tensors)
        velocity = {n: torch.zeros_like(p) for n, p in params.items()}
        modes = {m: m.training for m in base.modules()}
        batches = self.data.get(base)
        try:
            base.train()
            with torch.enable_grad():
                for step in range(self.steps):
                    inputs, targets = batches[step % len(batches)]
                    loss = self.loss_fn(view(inputs), targets)
                    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
                    with torch.no_grad():
                        for (name, param), grad in zip(params.items(), grads):
                            if grad is not None:
                                velocity[name].mul_(self.momentum).add_(grad)
                                param.sub_(self.lr * velocity[name])
        finally:
            for module, training in modes.items():
                module.training = training
        for param in params.values():
            param.requires_grad_(False)
        return self.reward(view)


#: The rewards by name, as the command's ``--reward`` offers them. A new reward is added here; it is built as
#: ``cls(loader, batches)``, with ``pool=`` and ``example_inputs=`` too where its signature has them.
REWARDS: dict[str, type] = {"accuracy": Accuracy, "loss": NegativeLoss, "macs": MACsAware}


def make_reward(
    name: str,
    loader: Iterable[Any],
    batches: int | None = None,
    *,
    example_inputs: torch.Tensor | None = None,
    recalibrate: Iterable[Any] | None = None,
    recalibrate_batches: int = 4,
    pool: int = 1,
) -> Callable[[nn.Module], Any]:
    """The reward called ``name`` in :data:`REWARDS`, on ``batches`` batches of ``loader``.

    Args:
        name (str): a key of :data:`REWARDS`.
        loader (iterable): validation batches.
        batches (int, optional): how many of them. Default: all.
        pool (int): sets of ``batches`` batches that a search's steps take in turn (see :class:`Accuracy`).
            Default: 1.
        example_inputs (torch.Tensor, optional): for the rewards that count MACs.
        recalibrate (iterable, optional): training batches: wrap the reward in :class:`Recalibrated`.
        recalibrate_batches (int): how many of them re-estimate the statistics. Default: 4.

    Returns:
        callable: the reward.

    Example:
        >>> import torch
        >>> data = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))]
        >>> type(make_reward("loss", data)).__name__, type(make_reward("accuracy", data, recalibrate=data)).__name__
        ('NegativeLoss', 'Recalibrated')
    """
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; choose one of {', '.join(REWARDS)}.")
    cls = REWARDS[name]
    accepted = inspect.signature(cls).parameters
    extra = {"example_inputs": example_inputs} if "example_inputs" in accepted else {}
    if "pool" in accepted:
        extra["pool"] = pool
    elif pool != 1:
        raise ValueError(f"reward {name!r} takes no pool; pass pool=1, or give {cls.__name__} a pool argument.")
    reward = cls(loader, batches, **extra)
    return reward if recalibrate is None else Recalibrated(reward, recalibrate, batches=recalibrate_batches)


def check_reward(value: Any, reward: Any) -> float:
    """Return ``value`` as a float, or raise a ``ValueError``/``TypeError`` naming the reward if it is not finite.

    Args:
        value: what ``reward(model)`` returned.
        reward: the reward, for the message.

    Returns:
        float: the value.

    Example:
        >>> check_reward(0.5, "accuracy")
        0.5
    """
    name = getattr(reward, "__name__", type(reward).__name__)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numpy.bool_)):
        value = float(value)  # numpy's float32 and int64 too
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"reward {name} returned {type(value).__name__}; a reward must return a number (float).")
    if not math.isfinite(value):
        raise ValueError(
            f"reward {name} returned {value}; a reward must be finite. Check the validation data and the model "
            "(a NaN often means a pruned layer lost every channel: raise min_keep)."
        )
    return float(value)
