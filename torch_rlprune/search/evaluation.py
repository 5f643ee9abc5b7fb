"""Evaluating candidate keep-sets fast: the model's own modules run on candidate tensors, without copying it.

A search evaluates hundreds of candidate masks. Copying the model for each costs more than the evaluation. Here
a candidate runs the model's own modules through :func:`torch.func.functional_call` on substituted tensors, in
one of two ways:

- ``"slice"``: every channel-group tensor index-selected to the kept channels, so the forward pass is that of the
  sliced network and its cost falls with sparsity. On a GPU it measured slower than masking
  (``benchmarks/search_speed.py``), likely because every candidate brings new tensor shapes.
- ``"mask"``: every channel-group tensor multiplied by its keep vector, as the method's original implementation
  did: a dense forward pass per candidate, but always the same shapes.

On the CPU a sliced candidate runs *padded*: each group keeps its count rounded up to a multiple of
1/:data:`PAD_STEPS` of its size, the rounding filled with pruned channels whose tensors are zeroed, and whose
consumers' columns are zeroed too, so that they change nothing. oneDNN, which ran a sliced BasicCNN 2.4 times
as fast, compiles and keeps a kernel for every shape it meets; exact counts brought new shapes with every candidate
and grew a 500-episode search by 1.3 GiB, padded ones bring at most :data:`PAD_STEPS` widths per group.
Where padding could change the result (a norm over the channels), the groups concerned run at their exact counts,
and if one padded candidate does not compute what the exact one does, all do, with oneDNN off.

Both compute what the sliced network computes: the candidate-masked model without the pruned channels. The two
agree wherever a pruned channel outputs zero, as it does when its filter, bias and norm entries are all masked;
where it would output a constant (an activation with ``f(0) != 0`` such as a sigmoid, a norm without affine
parameters in eval mode), the masked model differs by that constant, which :func:`torch_rlprune.slim` folds into
the consumers. Nothing of the model is modified, except (with ``"slice"``) the ``groups`` count of tied depthwise
convs, which is set for the duration of the call and restored, as are the modules' size attributes (split sizes
and slice bounds, :func:`torch_rlprune.register_size_attribute`) and, with ``"mask"``, forward hooks that make norms
over the channels compute over the kept ones only.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._pytree import tree_flatten

from .. import metrics
from ..metrics import ModelStats
from .._inputs import ExampleInputs, as_input_tuple, device_of
from .._state import preserved_state, pruning_hooks
from ..groups import ChannelGroup, groups_kept, size_attributes_of
from ..layers import channel_dims, layer_of
from ..masks import KeepVectors, keep_vectors, on_kept_channels
from ..slicing import sliced_tensors

__all__ = ["CandidateEvaluator", "CandidateModel", "zeroed_tensors", "MODES", "PAD_STEPS"]

#: How a candidate can run: ``"auto"`` picks ``"slice"`` on the CPU and ``"mask"`` elsewhere.
MODES = ("auto", "slice", "mask")
#: The widths a padded group runs at on the CPU: multiples of 1/PAD_STEPS of its size. A 500-episode BasicCNN
#: search grew its peak memory by 51-117 MiB with 8 (five runs) and by 373 MiB with 16 (one); 6 was slower and no
#: leaner (96-98 MiB), and with 4 the padding cost more time than oneDNN saved.
PAD_STEPS = 8


@contextlib.contextmanager
def _onednn_off(off: bool) -> Iterator[None]:
    before = torch.backends.mkldnn.enabled
    if off:
        torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


class CandidateModel(nn.Module):
    """A view of a model with only a candidate's channels: calling it computes what the sliced model computes.

    It is what a reward callable receives during a search. It computes what the sliced network computes (up to
    float rounding; see the module description for where that differs from the candidate-masked model), at the
    cost of the sliced network (``mode="slice"``) or of the dense one (``mode="mask"``). Its
    :meth:`named_parameters` and :meth:`named_buffers` (and so ``parameters()`` and ``buffers()``) are the
    candidate's: sliced (or zeroed) where the candidate cuts them, the model's own elsewhere, so that a reward that
    reads them (a weight penalty, a parameter count) sees the candidate and not the full model. They hold the exact
    counts; the padding of the CPU's sliced views (see the module description) stays inside :meth:`forward` (and
    :meth:`substitute`).

    Args:
        evaluator (CandidateEvaluator): what made the view (see :meth:`CandidateEvaluator.view`).
        keep (sequence of torch.Tensor): one boolean keep mask per channel group.
        vectors (KeepVectors): ``keep_vectors(evaluator.groups, keep)``.
        padded (bool): with ``mode="slice"``, run at the padded widths. Default: ``False``.

    Attributes:
        keep (list of torch.Tensor): the candidate, one boolean keep mask per channel group.
    """

    def __init__(
        self, evaluator: CandidateEvaluator, keep: Sequence[torch.Tensor], vectors: KeepVectors, padded: bool = False
    ) -> None:
        super().__init__()
        self.model = evaluator.model
        self.keep = list(keep)
        self._evaluator = evaluator
        self._vectors = vectors
        self._kept_in_run: KeepVectors = {}
        #: tensors a reward may train in place (see substitute): a padded view pads them at every call
        self._live: dict[str, torch.Tensor] = {}
        #: what the forward pass runs: the vectors ``patched`` sets tied convs by and the substituted tensors
        self._run_vectors: KeepVectors = {}
        #: the keep masks the forward pass runs (padded ones for a padded view), which size attributes follow
        self._run_keep = self.keep
        if evaluator.mode == "mask":  # one copy to the device for all vectors, not one per tensor they scale
            flat = torch.cat([v.reshape(-1) for v in vectors.values()]).to(evaluator.device) if vectors else None
            parts = flat.split([v.numel() for v in vectors.values()]) if flat is not None else ()
            self._run_vectors, self._tensors = vectors, self._named(zeroed_tensors, dict(zip(vectors, parts)))
        elif padded:
            self._run_keep = evaluator._padding(keep)
            selected = keep_vectors(evaluator.groups, self._run_keep)
            # which of the channels the padded view runs are the candidate's
            self._kept_in_run = {key: vectors[key][selected[key]] for key in vectors}

            def padded_tensors(module: nn.Module, selection: KeepVectors) -> Iterator[tuple[str, torch.Tensor]]:
                sliced = dict(sliced_tensors(module, selection))
                return iter({**sliced, **dict(zeroed_tensors(module, self._kept_in_run, sliced))}.items())

            self._run_vectors, self._tensors = selected, self._named(padded_tensors, selected)
        else:
            self._run_vectors, self._tensors = vectors, self._named(sliced_tensors, vectors)
        self._padded = padded and evaluator.mode == "slice"

    def _named(
        self, substitute: Callable[[nn.Module, KeepVectors], Iterator[tuple[str, torch.Tensor]]], vectors: KeepVectors
    ) -> dict[str, torch.Tensor]:
        names = self._evaluator.names
        return {
            f"{names[module]}.{name}" if names[module] else name: tensor
            for module in {m for m, _ in self._vectors}
            for name, tensor in substitute(module, vectors)
        }

    def _substituted(self, named: Iterator[tuple[str, torch.Tensor]], prefix: str) -> Iterator[tuple[str, torch.Tensor]]:
        """``named`` as the candidate has them; a padded view's read from what it runs (norms may have updated
        them), one at a time as the caller asks."""
        lead = f"{prefix}.model." if prefix else "model."
        for name, tensor in named:
            if name in self._live:
                tensor = self._live[name]
            elif name in self._tensors:
                tensor = self._resized(name, self._tensors[name], pad=False) if self._padded else self._tensors[name]
            yield lead + name, tensor

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
        # Unpadded sliced views on the CPU bring oneDNN a new shape each: it would keep a kernel for every one.
        exact_on_cpu = self._evaluator.mode == "slice" and not self._padded and self._evaluator.device.type == "cpu"
        tensors = {**self._tensors, **{name: self._resized(name, t, pad=True) for name, t in self._live.items()}}
        with self._evaluator.patched(self._run_vectors, self._run_keep), _onednn_off(exact_on_cpu):
            return functional_call(self.model, tensors, args, kwargs, strict=False)

    @property
    def mode(self) -> str:
        """``"slice"`` or ``"mask"``: how this view runs (see :class:`CandidateEvaluator`)."""
        return self._evaluator.mode

    def substitute(self, tensors: dict[str, torch.Tensor]) -> CandidateModel:
        """This candidate with some of its tensors replaced, e.g. re-estimated norm statistics.

        A padded view stays padded. It computes with zero-padded copies of the tensors that do not require grad,
        which is what a norm updating its statistics in place (:class:`~torch_rlprune.search.rewards.Recalibrated`)
        writes to and what :meth:`named_buffers` then reads; the tensors that require grad, which a reward may
        train in place (:class:`~torch_rlprune.search.rewards.ShortTrained`), are padded anew at every call, so
        that the steps and the gradients reach them.

        Args:
            tensors (dict): tensors named as in the model (``"features.3.running_mean"``, not ``"model.…"``),
                each shaped as the candidate has it (see :meth:`named_buffers`).

        Returns:
            CandidateModel: a view of the same candidate computing with ``tensors``; this one is unchanged.
        """
        view = copy.copy(self)
        if not self._padded:
            view._tensors = {**self._tensors, **tensors}
            return view
        live = {name: t for name, t in tensors.items() if t.requires_grad}
        fixed = {name: self._resized(name, t, pad=True) for name, t in tensors.items() if not t.requires_grad}
        view._tensors = {name: t for name, t in {**self._tensors, **fixed}.items() if name not in live}
        view._live = {**{name: t for name, t in self._live.items() if name not in fixed}, **live}
        return view

    def _resized(self, name: str, tensor: torch.Tensor, pad: bool) -> torch.Tensor:
        """A tensor the view cuts, between the candidate's shape and the padded one: zeros where the padded view
        runs extra channels (``pad=True``), or those entries dropped (``pad=False``)."""
        owner, _, attribute = name.rpartition(".")
        module = self.model.get_submodule(owner)
        for dim in channel_dims(module, attribute, tensor):
            kept = self._kept_in_run.get((module, dim))
            if kept is None or kept.all():
                continue
            rows = kept.nonzero().reshape(-1).to(tensor.device)
            if not pad and tensor.shape[dim] == kept.numel():
                tensor = tensor.index_select(dim, rows)
            elif pad and tensor.shape[dim] == rows.numel():
                shape = [*tensor.shape[:dim], kept.numel(), *tensor.shape[dim + 1 :]]
                tensor = tensor.new_zeros(shape).index_copy(dim, rows, tensor)
        return tensor

    def macs(self) -> int:
        """Multiply-accumulates per example of the sliced network (as :func:`torch_rlprune.metrics.count_macs`)."""
        return self._evaluator.macs(self._vectors)

    def stats(self) -> ModelStats:
        """Parameters, MACs per example and filters of the sliced network, dense and kept (as
        :func:`torch_rlprune.metrics.model_stats` counts them).

        Returns:
            ModelStats: the counts; ``params_kept`` and ``macs_kept`` are what a budget limits.
        """
        return self._evaluator.stats(self._vectors)


def _on_kept(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor, kept: torch.Tensor, dim: int) -> Any:
    """Forward hook of a masked candidate's norm over the channels: what the sliced norm computes (over the
    channels the candidate keeps and the model's own masks have not pruned)."""
    mask = getattr(module, "weight_mask", None)
    if mask is not None:
        kept = kept.to(mask.device) & mask.ne(0)
    return None if bool(kept.all()) else on_kept_channels(module, args[0], output, kept, dim)


def zeroed_tensors(
    module: nn.Module, vectors: KeepVectors, tensors: dict[str, torch.Tensor] | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of ``module`` that ``vectors`` cut, multiplied by their keep vectors.

    The counterpart of :func:`torch_rlprune.slicing.sliced_tensors` that keeps every shape: a pruned channel's
    filter rows, bias, norm entries and running statistics become zero, and so do a consumer's weight columns that
    read it, so that what a pruned channel carries never reaches a kept one (the sliced network's semantics). A
    pruned module's ``<name>_orig`` is scaled, and its hook multiplies by ``<name>_mask`` as usual. The running
    statistics are new tensors, so a forward pass in train mode does not update the model's own.

    Args:
        module (torch.nn.Module): a member of some channel groups.
        vectors (KeepVectors): from :func:`torch_rlprune.masks.keep_vectors`.
        tensors (dict, optional): tensors to scale instead of the module's own ones of the same name (shaped as
            ``vectors``), e.g. sliced ones.

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
    for name, tensor in (*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)):
        tensor = tensor if tensors is None else tensors.get(name, tensor)
        scaled = tensor
        for dim in channel_dims(module, name, tensor):
            keep = vectors.get((module, dim))
            if keep is not None and keep.numel() == tensor.shape[dim]:
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
            GPU. See the module description, also for the padding of sliced views on the CPU.

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
        # layers whose forward reads counts besides their tensors' shapes (an attention's heads)
        self._counted = {m.module: layer_of(m.module) for g in self.groups for m in g.members
                         if getattr(layer_of(m.module), "counts", None) is not None}  # fmt: skip
        self._sizes = size_attributes_of(groups, model, "CandidateEvaluator")
        #: norms over the channels, and the dim of their input that holds them
        self._normalizing = {m.module: m.normalizes for g in self.groups for m in g.norms if m.normalizes is not None}
        self._hooked = pruning_hooks(model)
        inputs = as_input_tuple(example_inputs, "CandidateEvaluator", model)
        self._counter = metrics.KeepSetCounter(model, inputs, "CandidateEvaluator")
        # A norm over the channels would count the padding's zeros: such groups run at their exact counts.
        self._steps = [1 if any(m.normalizes is not None for m in g.members) else -(-g.size // PAD_STEPS)
                       for g in self.groups]  # fmt: skip
        self._inputs = inputs
        self._padded: bool | None = None if mode == "slice" and self.device.type == "cpu" else False

    @property
    def padded(self) -> bool:
        """Whether sliced views run padded (see the module description): on the CPU, where padding computes what
        the exact counts do on a trial candidate (tried at the first call, on the example inputs)."""
        if self._padded is None:
            self._padded = self._pads_exactly(self._inputs)
        return self._padded

    def _padding(self, keep: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """``keep`` with each group's first pruned channels added until its count is a multiple of its step."""
        padded = []
        for kept, step, group in zip(keep, self._steps, self.groups):
            kept = kept.cpu()
            count = int(kept.sum())
            extra = min(group.size, -(-count // step) * step) - count
            if extra > 0:
                kept = kept.clone()
                kept[(~kept).nonzero().reshape(-1)[:extra]] = True
            padded.append(kept)
        return padded

    def _pads_exactly(self, inputs: tuple[torch.Tensor, ...]) -> bool:
        # About half of every group, one more than a multiple of its step, so that every group that pads gets
        # padding; the even channels first, so that the kept ones are not all in a row.
        keep = []
        for group, step in zip(self.groups, self._steps):
            order = torch.cat([torch.arange(0, group.size, 2), torch.arange(1, group.size, 2)])
            kept = torch.zeros(group.size, dtype=torch.bool)
            kept[order[: min(group.size, group.size // 2 // step * step + 1)]] = True
            keep.append(kept)
        vectors = keep_vectors(self.groups, keep)
        try:
            with preserved_state(self.model, "eval"), torch.no_grad():
                exact = tree_flatten(CandidateModel(self, keep, vectors)(*inputs))[0]
                padded = tree_flatten(CandidateModel(self, keep, vectors, padded=True)(*inputs))[0]
        except RuntimeError:  # a shape the padding broke: run exact views
            return False
        pairs = [(a, b) for a, b in zip(exact, padded) if isinstance(a, torch.Tensor) and a.is_floating_point()]
        return len(exact) == len(padded) and all(
            a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-5 * float(a.abs().max().clamp(min=1)))
            for a, b in pairs if a.numel()
        )

    def view(self, keep: Sequence[torch.Tensor]) -> CandidateModel:
        """The model restricted to the channels ``keep`` marks, one boolean tensor per group."""
        if len(keep) != len(self.groups):
            raise ValueError(f"view: need one keep mask per group ({len(self.groups)}), got {len(keep)}.")
        return CandidateModel(self, keep, keep_vectors(self.groups, keep), padded=self.padded)

    def stats(self, vectors: KeepVectors) -> ModelStats:
        """Parameters, MACs and filters of the network that keeps ``vectors``.

        Args:
            vectors (KeepVectors): from :func:`torch_rlprune.masks.keep_vectors`.

        Returns:
            ModelStats: the counts, dense and kept.
        """
        return self._counter(vectors)

    def macs(self, vectors: KeepVectors) -> int:
        return self.stats(vectors).macs_kept

    @contextlib.contextmanager
    def patched(self, vectors: KeepVectors, keep: Sequence[torch.Tensor] = ()) -> Iterator[None]:
        """Set the ``groups`` of tied depthwise convs, the ``normalized_shape`` of LayerNorms over the channels, the
        heads of attentions and the modules' size attributes (split sizes, slice bounds) to the channels ``vectors``
        and ``keep`` (one mask per group) keep (``"slice"``), or make norms over the channels compute over the kept
        ones only (``"mask"``); restore the model on exit.

        Also restores the tensors that pruning hooks recompute: inside the call a hook sets ``<name>`` to the
        candidate's sliced tensor, which must not outlive the call.
        """
        saved, handles = [], []

        def put(module: nn.Module, attribute: str, value: Any) -> None:
            old = getattr(module, attribute)
            setattr(module, attribute, value)
            saved.append((module, attribute, old))  # once set: a failing setattr leaves nothing to restore

        hooked = [(module, name, module.__dict__.get(name)) for module, name in self._hooked]
        try:
            for norm, dim in self._normalizing.items():
                if (norm, 0) not in vectors:
                    continue
                if self.mode == "mask":  # its statistics must not count the zeroed channels
                    hook = functools.partial(_on_kept, kept=vectors[norm, 0], dim=dim)
                    handles.append(norm.register_forward_hook(hook))
                elif isinstance(norm, nn.LayerNorm):  # a "channel_norm" module takes its count from its tensors
                    put(norm, "normalized_shape", (int(vectors[norm, 0].sum()),))
            for conv in self._tied if self.mode == "slice" else ():
                if (conv, 0) in vectors:
                    put(conv, "groups", groups_kept(conv, int(vectors[conv, 0].sum())))
            for module, layer in self._counted.items() if self.mode == "slice" else ():
                if (module, 1) in vectors:
                    for attribute, value in layer.counts(module, int(vectors[module, 1].sum())).items():
                        put(module, attribute, value)
            by_group = {id(g): k for g, k in zip(self.groups, keep)}
            for size in self._sizes if self.mode == "slice" and by_group else ():
                put(size.module, size.attribute, size.value(by_group))
            yield
        finally:
            for handle in handles:
                handle.remove()
            for module, attribute, value in reversed(saved):
                setattr(module, attribute, value)
            for module, name, value in hooked:
                if value is None:
                    module.__dict__.pop(name, None)
                else:
                    setattr(module, name, value)

    @contextlib.contextmanager
    def active(self) -> Iterator[CandidateEvaluator]:
        """Put the model in the evaluation mode of ``norms``; restore its modes, statistics and the RNG on exit.

        Where sliced views cannot be padded (see the module description), oneDNN is off inside the block, so that
        the backward passes of a reward that trains a candidate do not meet new shapes either.
        """
        exact_on_cpu = self.mode == "slice" and self.device.type == "cpu" and not self.padded
        with preserved_state(self.model, self.norms), _onednn_off(exact_on_cpu):
            yield self
