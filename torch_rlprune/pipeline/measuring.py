"""Measuring a network for the report: test accuracy, size, MACs, filters and CPU latency."""

from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._inputs import device_of
from ..metrics import model_stats
from ..training import evaluate
from .workspace import Workspace


@dataclass
class Metrics:
    """What the report says about one network.

    Attributes:
        accuracy (float): top-1 accuracy on the test split.
        params (int): parameters.
        macs (int): multiply-accumulates per example.
        filters (int): output channels of all convolutions.
        latency_ms (float): median CPU time of one forward pass on ``latency_batch`` examples with
            ``latency_threads`` threads, in ms.
    """

    accuracy: float
    params: int
    macs: int
    filters: int
    latency_ms: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Metrics:
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


def cpu_latency(
    model: nn.Module, example_inputs: torch.Tensor, batch: int = 8, min_time: float = 0.5, threads: int = 1
) -> float:
    """Median time of one forward pass on the CPU, in milliseconds, measured with :mod:`torch.utils.benchmark`.

    The model runs on the CPU (a copy, if it lives elsewhere) in eval mode without gradients, on ``batch`` copies
    of ``example_inputs``'s first example, with ``threads`` CPU threads (default 1).

    Example:
        >>> import torch
        >>> cpu_latency(torch.nn.Linear(4, 2), torch.randn(1, 4), batch=2, min_time=0.01) > 0
        True
    """
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)  # importing torch.utils.benchmark warns about CUDA_HOME on CPU-only machines
    try:
        from torch.utils import benchmark
    finally:
        logger.setLevel(level)

    device = device_of(model)
    work = model if device.type == "cpu" else copy.deepcopy(model).cpu()
    x = example_inputs[:1].detach().cpu().expand(batch, *example_inputs.shape[1:]).contiguous()
    training = work.training
    work.eval()
    try:
        with torch.no_grad():
            work(x)  # warm-up
            timer = benchmark.Timer(stmt="model(x)", globals={"model": work, "x": x},
                                    num_threads=threads)  # fmt: skip
            measurement = timer.blocked_autorange(min_run_time=min_time)
    finally:
        work.train(training)
    return measurement.median * 1000.0


def measure(model: nn.Module, workspace: Workspace) -> Metrics:
    """Test accuracy, parameters, MACs, filters and CPU latency of a dense or sliced ``model``."""
    stats = model_stats(model, workspace.example_inputs)
    config = workspace.config
    return Metrics(
        accuracy=evaluate(model, workspace.test_loader()),
        params=stats.params_kept,
        macs=stats.macs_kept,
        filters=stats.filters_kept,
        latency_ms=cpu_latency(model, workspace.example_inputs, config.latency_batch, config.latency_time,
                               config.latency_threads),
    )
