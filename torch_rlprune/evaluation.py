"""Evaluating candidate keep-sets fast: the sliced tensors of the model, run without copying it.

A search evaluates hundreds of candidate masks. Copying the model for each, or masking the dense weights and
running the dense network (what the method's original implementation did), costs a dense forward pass per
candidate whatever the sparsity. Here a candidate runs the model's own modules through
:func:`torch.func.functional_call` with every channel-group tensor index-selected to the kept channels, so the
forward pass is that of the sliced network and its cost falls with sparsity. Nothing of the model is modified,
except the ``groups`` count of tied depthwise convs, which is set for the duration of the call and restored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from . import metrics
from ._state import preserved_state
from .groups import ChannelGroup, ExampleInputs, as_input_tuple
from .masks import KeepVectors, keep_vectors
from .slicing import pruning_hooks, sliced_tensors

__all__ = ["CandidateEvaluator", "CandidateModel"]


class CandidateModel(nn.Module):
    """A view of a model with only a candidate's channels: calling it computes what the sliced model computes.

    It is what a reward callable receives during a search. It computes exactly what the candidate-masked model
    computes (up to float rounding), at the cost of the sliced network. Its parameters are the original model's.

    Attributes:
        keep (list of torch.Tensor): the candidate, one boolean keep mask per channel group.
    """

    def __init__(self, evaluator: CandidateEvaluator, keep: Sequence[torch.Tensor], vectors: KeepVectors) -> None:
        super().__init__()
        self.model = evaluator.model
        self.keep = list(keep)
        self._evaluator = evaluator
        self._vectors = vectors
        names = evaluator.names
        self._tensors = {
            f"{names[module]}.{name}" if names[module] else name: tensor
            for module in {m for m, _ in vectors}
            for name, tensor in sliced_tensors(module, vectors)
        }

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self._evaluator.patched(self._vectors):
            return functional_call(self.model, self._tensors, args, kwargs, strict=False)

    def macs(self) -> int:
        """Multiply-accumulates per example of the sliced network (as :func:`torch_rlprune.metrics.count_macs`)."""
        return self._evaluator.macs(self._vectors)


class CandidateEvaluator:
    r"""Turns keep-sets over channel groups into runnable views of ``model`` (see :class:`CandidateModel`).

    Args:
        model (torch.nn.Module): the model; it is not copied and, outside :meth:`active`, not changed.
        groups (sequence of ChannelGroup): the channel groups the candidates choose from.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts, used once to count the
            output positions of every layer for :meth:`CandidateModel.macs`.
        norms (str): which statistics batch norms use while :meth:`active`: ``"batch"`` (default) normalises
            with each batch's own statistics, which is what a network at initialisation or early in training
            needs, since its running statistics describe weights that no longer exist once channels are cut;
            ``"eval"`` uses the running statistics. Running statistics are restored afterwards either way.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> from torch_rlprune.evaluation import CandidateEvaluator
        >>> model = rlp.models.BasicCNN()
        >>> x = torch.randn(8, 3, 32, 32)
        >>> groups = rlp.channel_groups(model, x[:1])
        >>> evaluator = CandidateEvaluator(model, groups, x[:1])
        >>> keep = [torch.arange(g.size) < g.size // 4 for g in groups]
        >>> with evaluator.active(), torch.no_grad():
        ...     logits = evaluator.view(keep)(x)
        >>> logits.shape, evaluator.view(keep).macs() < rlp.metrics.count_macs(model, x[:1]) // 10
        (torch.Size([8, 10]), True)
    """

    def __init__(
        self, model: nn.Module, groups: Sequence[ChannelGroup], example_inputs: ExampleInputs, norms: str = "batch"
    ) -> None:
        if norms not in ("batch", "eval"):
            raise ValueError(f"CandidateEvaluator: norms must be 'batch' or 'eval', got {norms!r}.")
        self.model = model
        self.groups = list(groups)
        self.norms = norms
        self.names = {m: n for n, m in model.named_modules()}
        self._tied = {m.module for g in self.groups for m in g.tied}
        self._hooked = pruning_hooks(model)
        inputs = as_input_tuple(example_inputs, "CandidateEvaluator", model)
        self._positions = metrics._output_positions(model, inputs, "CandidateEvaluator")
        self._batch = metrics._batch_size(inputs)

    def view(self, keep: Sequence[torch.Tensor]) -> CandidateModel:
        """The model restricted to the channels ``keep`` marks, one boolean tensor per group."""
        if len(keep) != len(self.groups):
            raise ValueError(f"view: need one keep mask per group ({len(self.groups)}), got {len(keep)}.")
        return CandidateModel(self, keep, keep_vectors(self.groups, keep))

    def macs(self, vectors: KeepVectors) -> int:
        return metrics.ModelStats(metrics._layer_stats(self.model, vectors, self._positions, self._batch)).macs_kept

    @contextlib.contextmanager
    def patched(self, vectors: KeepVectors) -> Iterator[None]:
        """Set the ``groups`` of tied depthwise convs to their kept channel count, restoring it on exit.

        Also restores the tensors that pruning hooks recompute: inside the call a hook sets ``<name>`` to the
        candidate's sliced tensor, which must not outlive the call.
        """
        saved = {}
        for conv in self._tied:
            if (conv, 0) in vectors:
                saved[conv] = conv.groups
                conv.groups = int(vectors[conv, 0].sum())
        hooked = [(module, name, module.__dict__.get(name)) for module, name in self._hooked]
        try:
            yield
        finally:
            for conv, groups in saved.items():
                conv.groups = groups
            for module, name, value in hooked:
                if value is None:
                    module.__dict__.pop(name, None)
                else:
                    setattr(module, name, value)

    @contextlib.contextmanager
    def active(self) -> Iterator[CandidateEvaluator]:
        """Put the model in the evaluation mode of ``norms``; restore its modes, statistics and the RNG on exit."""
        with preserved_state(self.model, self.norms):
            yield self
