"""Checks of what users pass in: example inputs, and the device they must share with the model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Union

import torch
from torch import nn

#: What ``example_inputs`` may be: one tensor, or a sequence of tensors passed positionally.
ExampleInputs = Union[torch.Tensor, Sequence[torch.Tensor]]


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter (the CPU for a model without parameters)."""
    return next(iter(model.parameters()), torch.empty(0)).device


def check_device(model: nn.Module, tensors: Sequence[torch.Tensor], caller: str, what: str) -> None:
    """Raise ``ValueError`` if ``tensors`` are not on the device that holds all of ``model``'s parameters.

    Only parameters are looked at: a model without any is not checked. A model spread over several devices is left
    to its own forward, which knows where each input belongs.
    """
    devices = {p.device for p in model.parameters()}
    if len(devices) != 1:
        return
    (device,) = devices
    stray = next((t.device for t in tensors if t.device != device), None)
    if stray is not None:
        raise ValueError(
            f"{caller}: {what} are on {stray} but the model's parameters are on {device}; "
            f"move them with .to({str(device)!r}) (or the model with model.to({str(stray)!r}))."
        )


def as_input_tuple(example_inputs: Any, caller: str, model: nn.Module | None = None) -> tuple[torch.Tensor, ...]:
    """Normalise ``example_inputs`` (a tensor or a sequence of tensors) to a tuple, or raise ``TypeError``.

    Given ``model``, also raise ``ValueError`` if the inputs are not on its device (see :func:`check_device`).
    """
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs and all(
        isinstance(t, torch.Tensor) for t in example_inputs
    ):
        if model is not None:
            check_device(model, example_inputs, caller, "example_inputs")
        return tuple(example_inputs)
    raise TypeError(
        f"{caller}: example_inputs must be a tensor or a tuple of tensors that the model accepts, "
        f"e.g. torch.randn(1, 3, 32, 32); got {type(example_inputs).__name__}."
    )
