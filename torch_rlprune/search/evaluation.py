"""Evaluating candidate keep-sets fast: the model's own modules run on candidate tensors, without copying it.

A search evaluates hundreds of candidate masks. Copying the model for each costs more than the evaluation. Here
a candidate runs the model's own modules through :func:`torch.func.functional_call` on substituted tensors, in
one of two ways:

- ``"slice"``: every channel-group tensor index-selected to the kept channels, so the forward pass is that of the
  sliced network and its cost falls with sparsity. On a GPU it measured slower than masking
  (``benchmarks/search_speed.py``), likely because every candidate brings new tensor shapes.
- ``"mask"``: every channel-group tensor multiplied by its keep vector, as the method's original implementation
  did: a dense forward pass per candidate, but always the same shapes.

Both compute what the sliced network computes: the candidate-masked model without the pruned channels. The two
agree wherever a pruned channel outputs zero, as it does when its filter, bias and norm entries are all masked;
where it would output a constant (an activation with ``f(0) != 0`` such as a sigmoid, a norm without affine
parameters in eval mode), the masked model differs by that constant, which :func:`torch_rlprune.slim` folds into
the consumers. Nothing of the model is modified, except (with ``"slice"``) the ``groups`` count of tied depthwise
convs, which is set for the duration of the call and restored.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from .. import metrics
from .._inputs import ExampleInputs, as_input_tuple, device_of
from .._state import preserved_state, pruning_hooks
from ..groups import ChannelGroup, groups_kept
from ..masks import KeepVectors, keep_vectors
from ..slicing import cut_along_channels, sliced_tensors

__all__ = ["CandidateEvaluator", "CandidateModel", "zeroed_tensors", "MODES"]

#: How a candidate can run: ``"auto"`` picks ``"slice"`` on the CPU and ``"mask"`` elsewhere.
MODES = ("auto", "slice", "mask")


class CandidateModel(nn.Module):
    """A view of a model with only a candidate's channels: calling it computes what the sliced model computes.

    It is what a reward callable receives during a search. It computes what the sliced network computes (up to
    float rounding; see the module description for where that differs from the candidate-masked model), at the
    cost of the sliced network (``mode="slice"``) or of the dense one (``mode="mask"``). Its
    :meth:`named_parameters` and :meth:`named_buffers` (and so ``parameters()`` and ``buffers()``) are the
    candidate's: sliced (or zeroed) where the candidate cuts them, the model's own elsewhere, so that a reward that
    reads them (a weight penalty, a parameter count) sees the candidate and not the full model.

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
        if evaluator.mode == "slice":
            substitute, used = sliced_tensors, vectors
        else:  # one copy to the device for all vectors, not one per tensor they scale
            flat = torch.cat([v.reshape(-1) for v in vectors.values()]).to(evaluator.device) if vectors else None
            parts = flat.split([v.numel() for v in vectors.values()]) if flat is not None else ()
            substitute, used = zeroed_tensors, dict(zip(vectors, parts))
        self._tensors = {
            f"{names[module]}.{name}" if names[module] else name: tensor
            for module in {m for m, _ in vectors}
            for name, tensor in substitute(module, used)
        }

    def _substituted(self, named: Iterator[tuple[str, torch.Tensor]], prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
        lead = f"{prefix}.model." if prefix else "model."
        for name, tensor in named:
            yield lead + name, self._tensors.get(name, tensor)

    def named_parameters(  # type: ignore[override]
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """The model's parameters as the candidate has them, named as in ``self.model``, prefixed ``model.``."""
        return self._substituted(self.model.named_parameters("", recurse, remove_duplicate), prefix)

    def named_buffers(  # type: ignore[override]
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """The model's buffers as the candidate has them (running statistics sliced or zeroed)."""
        return self._substituted(self.model.named_buffers("", recurse, remove_duplicate), prefix)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with self._evaluator.patched(self._vectors if self._evaluator.mode == "slice" else {}):
            return functional_call(self.model, self._tensors, args, kwargs, strict=False)

    @property
    def mode(self) -> str:
        """``"slice"`` or ``"mask"``: how this view runs (see :class:`CandidateEvaluator`)."""
        return self._evaluator.mode

    def substitute(self, tensors: dict[str, torch.Tensor]) -> CandidateModel:
        """This candidate with some of its tensors replaced, e.g. re-estimated norm statistics.

        Args:
            tensors (dict): tensors named as in the model (``"features.3.running_mean"``, not ``"model.…"``),
                each shaped as the candidate has it (see :meth:`named_buffers`).

        Returns:
            CandidateModel: a view of the same candidate computing with ``tensors``; this one is unchanged.
        """
        view = copy.copy(self)
        view._tensors = {**self._tensors, **tensors}
        return view

    def macs(self) -> int:
        """Multiply-accumulates per example of the sliced network (as :func:`torch_rlprune.metrics.count_macs`)."""
        return self._evaluator.macs(self._vectors)


def zeroed_tensors(module: nn.Module, vectors: KeepVectors) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of ``module`` that ``vectors`` cut, multiplied by their keep vectors.

    The counterpart of :func:`torch_rlprune.slicing.sliced_tensors` that keeps every shape: a pruned channel's
    filter rows, bias, norm entries and running statistics become zero, and so do a consumer's weight columns that
    read it, so that what a pruned channel carries never reaches a kept one (the sliced network's semantics). A
    pruned module's ``<name>_orig`` is scaled, and its hook multiplies by ``<name>_mask`` as usual. The running
    statistics are new tensors, so a forward pass in train mode does not update the model's own.

    Args:
        module (torch.nn.Module): a member of some channel groups.
        vectors (KeepVectors): from :func:`torch_rlprune.masks.keep_vectors`.

    Yields:
        ``(name, tensor)`` for every tensor of ``module`` that a pruned channel zeroes, with its own shape.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> from torch_rlprune.masks import keep_vectors
        >>> model = rlp.models.BasicCNN()
        >>> groups = rlp.channel_groups(model, torch.randn(1, 3, 32, 32))
        >>> vectors = keep_vectors(groups[:1], [torch.arange(64) < 10])
        >>> weight = dict(zeroed_tensors(model.features[4], vectors))["weight"]
        >>> weight.shape, int(weight.flatten(2).any(2).any(0).sum())
        (torch.Size([128, 64, 3, 3]), 10)
    """
    out, inp = vectors.get((module, 0)), vectors.get((module, 1))
    for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
        base = name.removesuffix("_orig")
        if not cut_along_channels(name, tensor):
            continue
        scaled = tensor
        for dim, keep in ((0, out), (1, inp if base == "weight" else None)):
            if keep is not None and tensor.dim() > dim:
                shape = [1] * tensor.dim()
                shape[dim] = -1
                scaled = scaled * keep.to(device=tensor.device, dtype=tensor.dtype).view(shape)
        if scaled is not tensor:
            yield name, scaled


class CandidateEvaluator:
    r"""Turns keep-sets over channel groups into runnable views of ``model`` (see :class:`CandidateModel`).

    Args:
        model (torch.nn.Module): the model; it is not copied, and a view changes none of its tensors (the groups'
            norms compute with copies of their statistics). Outside :meth:`active` a view runs in the model's
            current mode, so in train mode the norms outside the groups update their statistics, as in any
            forward pass.
        groups (sequence of ChannelGroup): the channel groups the candidates choose from.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts, used once to count the
            output positions of every layer for :meth:`CandidateModel.macs`.
        norms (str): which statistics batch norms use while :meth:`active`: ``"batch"`` (default) normalises
            with each batch's own statistics, which is what a network at initialisation or early in training
            needs, since its running statistics describe weights that no longer exist once channels are cut;
            ``"eval"`` uses the running statistics. Running statistics are restored afterwards either way.
        mode (str): how a view runs: ``"slice"`` (the sliced network), ``"mask"`` (the dense network with the
            pruned channels' weights zeroed), or ``"auto"`` (default): ``"slice"`` on the CPU, ``"mask"`` on a
            GPU. See the module description.

    Example:
        >>> import torch
        >>> import torch_rlprune as rlp
        >>> from torch_rlprune.search.evaluation import CandidateEvaluator
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
        self,
        model: nn.Module,
        groups: Sequence[ChannelGroup],
        example_inputs: ExampleInputs,
        norms: str = "batch",
        mode: str = "auto",
    ) -> None:
        if norms not in ("batch", "eval"):
            raise ValueError(f"CandidateEvaluator: norms must be 'batch' or 'eval', got {norms!r}.")
        if mode not in MODES:
            raise ValueError(f"CandidateEvaluator: mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}.")
        #: the device of the model's parameters, where ``"mask"`` views put their keep vectors
        self.device = device_of(model)
        if mode == "auto":
            mode = "slice" if self.device.type == "cpu" else "mask"
        #: ``"slice"`` or ``"mask"``: how views run (``"auto"`` resolved).
        self.mode = mode
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
                conv.groups = groups_kept(conv, int(vectors[conv, 0].sum()))
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
        """Put the model in the evaluation mode of ``norms``; restore its modes, statistics and the RNG on exit.

        Sliced views on the CPU also run without oneDNN (``torch.backends.mkldnn``) inside the block: oneDNN keeps
        a compiled primitive for every convolution shape it meets, up to 1,024 of them, and every candidate brings
        new shapes, so a 500-episode search held about 500 MiB more at its peak with it than without.
        """
        onednn = torch.backends.mkldnn.enabled
        if self.mode == "slice" and self.device.type == "cpu":
            torch.backends.mkldnn.enabled = False
        try:
            with preserved_state(self.model, self.norms):
                yield self
        finally:
            torch.backends.mkldnn.enabled = onednn
