"""Running a model without leaving a trace on it.

Scoring, shape propagation and rewards all run forward passes through the user's model. None of them may change
what the user will see afterwards: train/eval flags, batch-norm running statistics, and the global RNG stay as
they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import prune

__all__ = ["preserved_state", "pruning_methods", "pruning_hooks", "hook_tensors_kept"]


def pruning_methods(model: nn.Module) -> list[tuple[nn.Module, prune.BasePruningMethod]]:
    """Every ``torch.nn.utils.prune`` hook of ``model``'s modules, with its module."""
    return [
        (module, hook)
        for module in model.modules()
        for hook in module._forward_pre_hooks.values()
        if isinstance(hook, prune.BasePruningMethod)
    ]


def pruning_hooks(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """``(module, name)`` of every tensor a ``torch.nn.utils.prune`` hook recomputes before each forward."""
    return [(module, hook._tensor_name) for module, hook in pruning_methods(model)]


@contextlib.contextmanager
def hook_tensors_kept(model: nn.Module) -> Iterator[None]:
    """Put back, on exit, the tensors that pruning hooks set on ``model``'s modules inside the block.

    A hook sets ``<name>`` on its module at every forward; under :mod:`torch.fx` tracing of a module that is
    traced into, what it sets is a proxy, which must not outlive the trace.
    """
    computed = [(module, name, module.__dict__.get(name)) for module, name in pruning_hooks(model)]
    try:
        yield
    finally:
        for module, name, value in computed:
            if value is None:
                module.__dict__.pop(name, None)
            else:
                module.__dict__[name] = value


@contextlib.contextmanager
def preserved_state(model: nn.Module, norms: str = "eval") -> Iterator[nn.Module]:
    """Run ``model`` inside the block; on exit restore its modes, norm statistics and the RNG.

    Args:
        model: the model to protect.
        norms: ``"eval"`` puts the whole model in eval mode (norms use their running statistics);
            ``"batch"`` puts batch-norm layers in train mode, so they normalise with the statistics of the batch
            at hand, and everything else (dropout included) in eval mode. Running statistics that the batch mode
            updates are restored on exit either way.
    """
    if norms not in ("eval", "batch"):
        raise ValueError(f"norms must be 'eval' or 'batch', got {norms!r}")
    modes = {m: m.training for m in model.modules()}
    saved = {
        m: {k: b.detach().clone() for k, b in m.named_buffers(recurse=False) if b is not None}
        for m in model.modules()
        if isinstance(m, _BatchNorm)
    }
    model.eval()
    if norms == "batch":
        for m in saved:
            m.train()
    try:
        with torch.random.fork_rng(devices=[]):
            yield model
    finally:
        for m, training in modes.items():
            m.training = training
        with torch.no_grad():
            for m, buffers in saved.items():
                for k, value in buffers.items():
                    getattr(m, k).copy_(value)
