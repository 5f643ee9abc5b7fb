r"""Lottery tickets: snapshots of a model's weights, rewinding a pruned model to them, and the controls.

A winning ticket is a subnetwork that, rewound to its weights at initialisation (or at an early epoch ``k``) and
trained alone, does as well as the whole network (Frankle & Carbin, 2019; Frankle et al., 2020 for rewinding to
``k``). Here the subnetwork is a set of filters: find a mask at epoch ``k`` (by RL, annealing or a criterion),
rewind the kept filters to a snapshot, slice the pruned ones out with :func:`torch_rlprune.slim` and train.

A :class:`Snapshot` holds the *effective dense* values of a model: every parameter under its plain name (for a
pruned model, ``<name>_orig`` is stored as ``<name>``; masks are not stored) and every persistent buffer (batch
norm running statistics and ``num_batches_tracked``). Snapshots of a dense model, of its masked version and of
its sliced version thus share their names, and one snapshot of the dense model rewinds all three.

The control that tells a ticket from a mere architecture (Liu et al., 2019) is the same pruned network with a
fresh random initialisation: :func:`reinitialize`, or rewinding to :meth:`LotteryTicket.random_snapshot`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.nn.utils import prune

from . import metrics
from ._files import atomic_save, read_checked
from ._inputs import ExampleInputs
from .layers import channel_dims
from .slicing import KEPT_ATTR, copy_pruned

__all__ = ["Snapshot", "LotteryTicket", "rewind", "reinitialize", "iterative_pruning", "RoundRecord"]

FORMAT = "torch-rlprune/snapshot"
VERSION = 1

PathLike = Union[str, os.PathLike]
#: Per sliced module name: ``{dim: (size before slicing, kept indices)}``, as :func:`torch_rlprune.slim` records.
Kept = dict[str, dict[int, tuple[int, torch.Tensor]]]
SnapshotLike = Union["Snapshot", Mapping[str, Any], PathLike]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\Z")


def _check_model(model: object, caller: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller}: model must be a torch.nn.Module, got {type(model).__name__}.")


def _check_epoch(epoch: object, caller: str) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(
            f"{caller}: an epoch must be a non-negative int (the number of epochs trained so far), got {epoch!r}."
        )
    return epoch


def _dense(state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` with ``<name>_orig`` renamed to ``<name>`` and ``<name>_mask`` dropped, tensors only."""
    dense = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue  # a module's extra state is not a weight
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state:
            key = key[: -len("_orig")]
        dense[key] = value
    return dense


def _kept_records(model: nn.Module) -> Kept:
    return {
        name: dict(record)
        for name, module in model.named_modules(remove_duplicate=False)
        if (record := getattr(module, KEPT_ATTR, None))
    }


@dataclass(frozen=True, repr=False)
class Snapshot:
    r"""The effective dense weights and buffers of a model at one moment, by name.

    Take one with :meth:`capture` (or through a :class:`LotteryTicket`), load it back with :func:`rewind`.
    Tensors are held on the CPU. A snapshot of a sliced model also carries which channels each sliced module
    kept, so that it can later rewind a model sliced further.

    Args:
        name (str): what the snapshot is called, e.g. ``"init"`` or ``"epoch2"``.
        state (dict of str to torch.Tensor): parameters (under their plain names) and persistent buffers.
        kept (dict): for every sliced module, ``{dim: (size before slicing, kept indices)}``. Default: empty.

    Example:
        >>> import torch
        >>> from torch_rlprune.lottery import Snapshot
        >>> snap = Snapshot.capture(torch.nn.BatchNorm1d(3), "init")
        >>> snap
        Snapshot('init', 5 tensors)
        >>> snap.shapes["weight"], snap.shapes["num_batches_tracked"]
        ((3,), ())
    """

    name: str
    state: dict[str, torch.Tensor]
    kept: Kept = field(default_factory=dict)

    @classmethod
    def capture(cls, model: nn.Module, name: str = "snapshot") -> Snapshot:
        """Copy the effective dense values of ``model`` (see the class description) to the CPU.

        Args:
            model (torch.nn.Module): the model, dense, masked or sliced.
            name (str): the snapshot's name. Default: ``"snapshot"``.

        Returns:
            Snapshot: the copy; later changes to ``model`` do not reach it.
        """
        _check_model(model, "Snapshot.capture")
        state = {k: v.detach().to("cpu", copy=True) for k, v in _dense(model.state_dict(keep_vars=True)).items()}
        return cls(name, state, _kept_records(model))

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every tensor, by name."""
        return {k: tuple(v.shape) for k, v in self.state.items()}

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as plain data (tensors, strings, numbers), as :meth:`save` writes it."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "names": list(self.state),
            "shapes": {k: list(s) for k, s in self.shapes.items()},
            "state": dict(self.state),
            "kept": {m: {d: (size, idx) for d, (size, idx) in r.items()} for m, r in self.kept.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "the snapshot") -> Snapshot:
        """Rebuild a snapshot from :meth:`to_dict`'s output, checking that it is whole.

        Raises:
            ValueError: ``data`` is not a snapshot of this format, or its names, shapes and tensors disagree.
        """
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"{source} is not a torch-rlprune snapshot (written by Snapshot.save or LotteryTicket).")
        if data.get("version") != VERSION:
            raise ValueError(f"{source} has snapshot format version {data.get('version')!r}; this release reads {VERSION}.")
        state, shapes, names = data.get("state"), data.get("shapes"), data.get("names")
        if not isinstance(state, Mapping) or not isinstance(shapes, Mapping) or list(state) != list(names or ()):
            raise ValueError(f"{source} is damaged: its list of names does not match its tensors.")
        for key, tensor in state.items():
            if not isinstance(tensor, torch.Tensor) or list(tensor.shape) != list(shapes.get(key, ())):
                raise ValueError(f"{source} is damaged: {key!r} does not have the shape recorded for it.")
        kept: Kept = {}
        for module, record in dict(data.get("kept") or {}).items():
            kept[module] = {}
            try:
                for dim, (size, idx) in record.items():
                    if idx.dim() != 1 or idx.numel() and (idx[0] < 0 or idx[-1] >= size or (idx.diff() <= 0).any()):
                        raise ValueError
                    kept[module][int(dim)] = (int(size), idx.to(torch.long))
            except (TypeError, ValueError, AttributeError):
                raise ValueError(f"{source} is damaged: the kept channels of {module!r} are not sorted indices.") from None
        return cls(str(data.get("name", "snapshot")), dict(state), kept)

    def save(self, path: PathLike) -> None:
        """Write the snapshot to ``path`` atomically (a temporary file, then a rename).

        The file holds only tensors, strings and numbers: it loads with ``torch.load(weights_only=True)``.
        """
        atomic_save(self.to_dict(), path)

    @classmethod
    def load(cls, path: PathLike) -> Snapshot:
        """Read a snapshot written by :meth:`save` (with ``torch.load(weights_only=True)``, onto the CPU).

        Raises:
            FileNotFoundError: there is no such file.
            ValueError: the file is not a whole torch-rlprune snapshot.
        """
        data = read_checked(path, "snapshot", "Snapshot.load", "cpu")
        return cls.from_dict(data, source=str(path))

    def __repr__(self) -> str:
        sliced = f", {len(self.kept)} sliced modules" if self.kept else ""
        return f"Snapshot({self.name!r}, {len(self.state)} tensors{sliced})"


def _resolve(to: object, caller: str) -> Snapshot:
    if isinstance(to, Snapshot):
        return to
    if isinstance(to, Mapping):
        if "format" in to:
            return Snapshot.from_dict(to)
        if to and all(isinstance(v, torch.Tensor) for v in to.values()):
            # A plain state_dict, of a dense or a pruned model.
            return Snapshot("state_dict", _dense(to))
        raise TypeError(f"{caller}: a mapping to rewind to must be a snapshot's to_dict() or a model's state_dict().")
    if isinstance(to, (str, os.PathLike)):
        if not Path(to).is_file():
            raise ValueError(
                f"{caller}: {str(to)!r} is not a snapshot file. To rewind to a named snapshot, call "
                f"ticket.rewind(model, {str(to)!r}) on the LotteryTicket that took it."
            )
        return Snapshot.load(to)
    raise TypeError(
        f"{caller}: cannot rewind to a {type(to).__name__}; pass a Snapshot, a snapshot name (through "
        "LotteryTicket.rewind), the path of a snapshot file, or a state_dict."
    )


def _positions(
    key: str, dim: int, model_side: tuple[int, torch.Tensor], snap_side: tuple[int, torch.Tensor], name: str,
    caller: str,
) -> torch.Tensor:
    """Where the channels the model holds along ``dim`` sit in the snapshot's tensor."""
    (model_size, held), (snap_size, stored) = model_side, snap_side
    if model_size != snap_size:
        raise ValueError(
            f"{caller}: snapshot {name!r} does not fit this model: {key!r} had {snap_size} channels along dim "
            f"{dim} before slicing in the snapshot, but {model_size} in the model. Rewind only to snapshots of the "
            "same architecture."
        )
    if held.numel() and not stored.numel():
        pos, found = held, False
    else:
        pos = torch.searchsorted(stored, held).clamp(max=max(stored.numel() - 1, 0))
        found = bool((stored[pos] == held).all()) if held.numel() else True
    if not found:
        raise ValueError(
            f"{caller}: snapshot {name!r} was taken after channels of {key!r} (dim {dim}) that this model still has "
            "were sliced away; rewind to a snapshot taken before slicing, e.g. the dense one at init."
        )
    return pos


def _source_for(
    key: str, target: torch.Tensor, snapshot: Snapshot, modules: dict[str, nn.Module], caller: str
) -> torch.Tensor:
    """The snapshot's value for ``key``, sliced to the channels the (possibly sliced) model still holds."""
    source = snapshot.state[key]
    module_name, _, tensor_name = key.rpartition(".")
    module = modules.get(module_name)
    model_record = getattr(module, KEPT_ATTR, None) or {}
    snap_record = snapshot.kept.get(module_name, {})
    if module is None or not (model_record or snap_record):
        return source
    for dim in channel_dims(module, tensor_name, source):
        if (dim not in model_record and dim not in snap_record) or target.dim() <= dim:
            continue
        model_side = model_record.get(dim, (target.shape[dim], torch.arange(target.shape[dim])))
        snap_side = snap_record.get(dim, (source.shape[dim], torch.arange(source.shape[dim])))
        source = source.index_select(dim, _positions(key, dim, model_side, snap_side, snapshot.name, caller))
    return source


def _plan(model: nn.Module, snapshot: Snapshot, caller: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pair every tensor of ``model`` with its value from ``snapshot``, or raise before anything is written."""
    targets = _dense(model.state_dict(keep_vars=True))
    fix = "Rewind only to snapshots of the same architecture (one of the dense model fits its pruned and sliced versions)."
    missing = [k for k in targets if k not in snapshot.state]
    if missing:
        raise ValueError(
            f"{caller}: snapshot {snapshot.name!r} does not fit this model: it has no {missing[0]!r} "
            f"({len(missing)} of the model's tensors missing). {fix}"
        )
    extra = [k for k in snapshot.state if k not in targets]
    if extra:
        raise ValueError(
            f"{caller}: snapshot {snapshot.name!r} does not fit this model: it holds {extra[0]!r}, which the model "
            f"does not have ({len(extra)} such tensors). {fix}"
        )
    modules = dict(model.named_modules(remove_duplicate=False))
    plan = []
    for key, target in targets.items():
        source = _source_for(key, target, snapshot, modules, caller)
        if source.is_meta:
            raise ValueError(
                f"{caller}: snapshot {snapshot.name!r} holds no values for {key!r}: it is a meta tensor. Capture "
                "snapshots of a model whose weights are materialised (after model.to_empty(...) and initialisation)."
            )
        if source.shape != target.shape:
            raise ValueError(
                f"{caller}: snapshot {snapshot.name!r} does not fit this model: {key!r} should have shape "
                f"{tuple(target.shape)} but the snapshot's has shape {tuple(source.shape)}. {fix}"
            )
        plan.append((target, source))
    return plan


def _pruning_hooks(module: nn.Module) -> list[prune.BasePruningMethod]:
    return [h for h in module._forward_pre_hooks.values() if isinstance(h, prune.BasePruningMethod)]


def _refresh_pruned(model: nn.Module) -> None:
    # The hook recomputes ``<name>`` only at the next forward; until then ``module.weight`` would show old values.
    for module in model.modules():
        for hook in _pruning_hooks(module):
            setattr(module, hook._tensor_name, hook.apply_mask(module))


def rewind(model: nn.Module, to: SnapshotLike) -> nn.Module:
    r"""Load a snapshot's weights and buffers into ``model``, keeping its masks: the pruned filters stay pruned.

    For a masked model the snapshot goes into the ``<name>_orig`` tensors and the ``<name>_mask`` buffers are left
    alone. For a model that :func:`torch_rlprune.slim` sliced, every sliced tensor gets the snapshot's values of
    the channels it kept (``slim`` records them on each sliced module), so a snapshot of the dense model rewinds
    its sliced version too. Batch-norm running statistics and ``num_batches_tracked`` are restored. Parameters are
    written in place, so an optimizer keeps pointing at them; its state (momentum, Adam moments, learning-rate
    schedule) is the caller's to reset, usually by building a new optimizer.

    Everything is checked before anything is written: if the snapshot does not fit, ``model`` is left as it was.
    A failure while writing (out of memory, Ctrl-C) puts back the values already overwritten, from a copy of the
    model's tensors that ``rewind`` holds on the CPU until it returns.

    Where ``slim`` folded constants into consumer biases (pruned channels whose bias or norm shift was left
    unmasked) or made masks it could not slice permanent, the rewound sliced model holds the snapshot's plain
    values there; masks from :func:`torch_rlprune.global_structured` need neither.

    Args:
        model (torch.nn.Module): the model to rewind: dense, masked or sliced.
        to (Snapshot, dict, str or os.PathLike): a :class:`Snapshot`, its :meth:`~Snapshot.to_dict`, a
            ``state_dict()`` of the same architecture, or the path of a snapshot file. Snapshot *names* are
            resolved by :meth:`LotteryTicket.rewind`.

    Returns:
        torch.nn.Module: ``model``.

    Raises:
        TypeError: ``model`` is not a module or ``to`` not a snapshot.
        ValueError: the snapshot comes from another architecture; the message names the first tensor that does
            not fit, with both shapes.

    Example:
        >>> import torch
        >>> import torch.nn.utils.prune as prune
        >>> from torch_rlprune.lottery import Snapshot, rewind
        >>> conv = torch.nn.Conv2d(3, 4, 3)
        >>> init = Snapshot.capture(conv, "init")
        >>> _ = prune.ln_structured(conv, "weight", amount=0.5, n=1, dim=0)
        >>> with torch.no_grad():
        ...     _ = conv.weight_orig.add_(1.0)
        >>> _ = rewind(conv, init)
        >>> torch.equal(conv.weight_orig, init.state["weight"]), int(conv.weight_mask.flatten(1).any(1).sum())
        (True, 2)
    """
    _check_model(model, "rewind")
    snapshot = _resolve(to, "rewind")
    plan = _plan(model, snapshot, "rewind")
    # On the CPU: a copy on the model's device could be the allocation that fails.
    backup = [target.detach().to("cpu", copy=True) for target, _ in plan]
    try:
        with torch.no_grad():
            for target, source in plan:
                target.copy_(source)
        _refresh_pruned(model)
    except BaseException:
        with torch.no_grad():
            for (target, _), old in zip(plan, backup):
                target.copy_(old)
        _refresh_pruned(model)
        raise
    return model


def _reset(module: nn.Module) -> None:
    """``module.reset_parameters()``, writing into ``<name>_orig`` where ``<name>`` is pruned."""
    hooks = _pruning_hooks(module)
    for hook in hooks:
        # reset_parameters initialises ``self.weight``; for a pruned module that is a computed tensor, so point
        # the name at the stored original for the call.
        module.__dict__[hook._tensor_name] = module._parameters[hook._tensor_name + "_orig"]
    try:
        module.reset_parameters()  # type: ignore[operator]
    finally:
        for hook in hooks:
            module.__dict__[hook._tensor_name] = hook.apply_mask(module)


def reinitialize(model: nn.Module, seed: int | None = None) -> nn.Module:
    r"""Give ``model`` a fresh random initialisation, keeping its architecture: the random re-init control.

    Every module that owns parameters is reset by its own ``reset_parameters()`` (norms without parameters by
    ``reset_running_stats()``); masks are kept, so a masked model stays pruned, and a sliced model keeps its
    shapes (its layers are then initialised for their sliced sizes, as Liu et al. 2019 train a pruned
    architecture from scratch). Parameters are written in place; optimizer state is the caller's.

    Args:
        model (torch.nn.Module): the model, dense, masked or sliced.
        seed (int, optional): seeds the initialisation without touching the global random state; the same seed
            gives the same weights. Default: ``None`` (draw from the global random state).

    Returns:
        torch.nn.Module: ``model``.

    Raises:
        TypeError: ``model`` is not a module.
        ValueError: a module owns parameters but has no ``reset_parameters()``; nothing is changed then.

    Example:
        >>> import torch
        >>> from torch_rlprune.lottery import reinitialize
        >>> conv = torch.nn.Conv2d(3, 4, 3)
        >>> before = conv.weight.detach().clone()
        >>> _ = reinitialize(conv, seed=0)
        >>> bool((conv.weight != before).all()), tuple(conv.weight.shape)
        (True, (4, 3, 3, 3))
    """
    _check_model(model, "reinitialize")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"reinitialize: seed must be an int or None, got {seed!r}.")
    owners = [(n, m) for n, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None]
    missing = [f"'{n}' ({type(m).__name__})" for n, m in owners if not callable(getattr(m, "reset_parameters", None))]
    if missing:
        raise ValueError(
            f"reinitialize: {', '.join(missing)} own parameters but have no reset_parameters(), so they cannot be "
            "re-initialised; give them one (initialising their parameters in place)."
        )
    owned = {id(m) for _, m in owners}
    norms = [m for m in model.modules() if isinstance(m, _NormBase) and id(m) not in owned]
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == "cuda"})
    backup = Snapshot.capture(model)
    try:
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                # Scrambled, so that a model built after torch.manual_seed(s) and re-initialised with seed=s does
                # not get its own initial weights back: the control would then be the ticket itself.
                torch.manual_seed((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**63)
            for _, module in owners:
                _reset(module)
            for module in norms:
                module.reset_running_stats()
    except BaseException:
        rewind(model, backup)
        raise
    return model


class LotteryTicket:
    r"""Snapshots of a model's weights over training, to rewind a pruned version of it to.

    The weights and buffers at construction are snapshot ``"init"``. Take more with :meth:`snapshot`, or let
    :meth:`step` take them at the epochs listed in ``epochs`` from inside your own training loop. With a
    ``directory`` every snapshot is written there as ``<name>.pt`` (atomically; loadable with
    ``torch.load(weights_only=True)``) and only its path is held in memory.

    Args:
        model (torch.nn.Module): the model whose snapshots are taken.
        epochs (sequence of int): the epochs at which :meth:`step` takes a snapshot, e.g. ``(0, 2, 5, 90)``;
            epoch ``k`` means "after ``k`` epochs of training". Default: none.
        directory (str or os.PathLike, optional): where to write the snapshots (created if needed). Default:
            keep them in memory (on the CPU).

    Example:
        >>> import torch
        >>> import torch.nn.utils.prune as prune
        >>> import torch_rlprune as rlp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
        >>> ticket = rlp.LotteryTicket(model, epochs=(1,))
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> for epoch in range(1, 3):                 # your training loop
        ...     model(torch.randn(2, 3, 5, 5)).sum().backward()
        ...     optimizer.step()
        ...     _ = ticket.step(epoch)                # snapshots "epoch1" only
        >>> ticket.names
        ['init', 'epoch1']
        >>> _ = prune.ln_structured(model[0], "weight", amount=0.5, n=1, dim=0)
        >>> _ = ticket.rewind(model, "init")
        >>> torch.equal(model[0].weight_orig, ticket["init"].state["0.weight"])
        True
    """

    def __init__(self, model: nn.Module, epochs: Sequence[int] = (), directory: PathLike | None = None) -> None:
        _check_model(model, "LotteryTicket")
        if isinstance(epochs, (int, str, bytes)) or not isinstance(epochs, (Sequence, set, frozenset)):
            raise TypeError(f"LotteryTicket: epochs must be a sequence of ints such as (0, 2, 5), got {epochs!r}.")
        self.epochs: tuple[int, ...] = tuple(sorted({_check_epoch(e, "LotteryTicket") for e in epochs}))
        self.directory: Path | None = None
        if directory is not None:
            if not isinstance(directory, (str, os.PathLike)):
                raise TypeError(f"LotteryTicket: directory must be a path or None, got {type(directory).__name__}.")
            self.directory = Path(directory)
            if self.directory.exists() and not self.directory.is_dir():
                raise ValueError(f"LotteryTicket: directory {str(directory)!r} is a file; pass a folder for snapshots.")
            self.directory.mkdir(parents=True, exist_ok=True)
        self.model = model
        self._snapshots: dict[str, Snapshot | Path] = {}
        self.snapshot("init")

    def _store(self, snapshot: Snapshot) -> Snapshot:
        if self.directory is None:
            self._snapshots[snapshot.name] = snapshot
        else:
            path = self.directory / f"{snapshot.name}.pt"
            snapshot.save(path)
            self._snapshots[snapshot.name] = path
        return snapshot

    def snapshot(self, name: str | None = None, *, epoch: int | None = None, model: nn.Module | None = None) -> Snapshot:
        r"""Take a snapshot of the model now, under ``name`` or ``"epoch<epoch>"``; a name taken before is replaced.

        Args:
            name (str, optional): the snapshot's name: letters, digits, ``_``, ``.`` and ``-``.
            epoch (int, optional): instead of ``name``: the number of epochs trained so far.
            model (torch.nn.Module, optional): snapshot this model instead of the ticket's own (for example its
                sliced copy).

        Returns:
            Snapshot: the snapshot taken.
        """
        if (name is None) == (epoch is None):
            raise ValueError("LotteryTicket.snapshot: pass a name or an epoch, e.g. snapshot('epoch2') or snapshot(epoch=2).")
        if epoch is not None:
            name = f"epoch{_check_epoch(epoch, 'LotteryTicket.snapshot')}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(
                f"LotteryTicket.snapshot: {name!r} is not a usable snapshot name; use up to 100 letters, digits, "
                "'_', '.' and '-', starting with a letter or digit (it names a file when snapshots go to disk)."
            )
        model = self.model if model is None else model
        _check_model(model, "LotteryTicket.snapshot")
        return self._store(Snapshot.capture(model, name))

    def step(self, epoch: int) -> Snapshot | None:
        r"""Call at the end of every epoch: takes snapshot ``"epoch<epoch>"`` if ``epoch`` is one of :attr:`epochs`.

        Args:
            epoch (int): the number of epochs trained so far.

        Returns:
            Snapshot or None: the snapshot taken, if any.
        """
        if _check_epoch(epoch, "LotteryTicket.step") in self.epochs:
            return self.snapshot(epoch=epoch)
        return None

    @staticmethod
    def random_like(model: nn.Module, seed: int | None = None, name: str = "random") -> Snapshot:
        r"""A snapshot of ``model``'s shapes with fresh random values: what :func:`reinitialize` would give it.

        ``model`` is not changed. Rewinding to ``random_like(model, seed)`` equals ``reinitialize(model, seed)``.

        Args:
            model (torch.nn.Module): the model whose architecture (dense, masked or sliced) to copy.
            seed (int, optional): the same seed gives the same values. Default: ``None``.
            name (str): the snapshot's name. Default: ``"random"``.

        Returns:
            Snapshot: the random snapshot.
        """
        _check_model(model, "LotteryTicket.random_like")
        return Snapshot.capture(reinitialize(copy_pruned(model), seed), name)

    def random_snapshot(self, seed: int | None = None, name: str = "random") -> Snapshot:
        r"""Take a random snapshot of the ticket's model (see :meth:`random_like`) and keep it under ``name``.

        Rewinding a pruned model to it is the random re-initialisation control.

        Args:
            seed (int, optional): the same seed gives the same values. Default: ``None``.
            name (str): the snapshot's name. Default: ``"random"``.

        Returns:
            Snapshot: the random snapshot.
        """
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"LotteryTicket.random_snapshot: {name!r} is not a usable snapshot name.")
        return self._store(self.random_like(self.model, seed, name))

    @property
    def names(self) -> list[str]:
        """The names of the snapshots taken, in the order they were first taken."""
        return list(self._snapshots)

    def path(self, name: str) -> Path | None:
        """The file that holds snapshot ``name``, or ``None`` when snapshots are kept in memory."""
        entry = self._lookup(name)
        return entry if isinstance(entry, Path) else None

    def _lookup(self, name: str) -> Snapshot | Path:
        if name not in self._snapshots:
            known = ", ".join(repr(n) for n in self._snapshots)
            raise ValueError(
                f"LotteryTicket: no snapshot named {name!r}; the ticket has {known}. Take it first with "
                f"ticket.snapshot({name!r}), or list its epoch in LotteryTicket(..., epochs=...) and call ticket.step."
            )
        return self._snapshots[name]

    def __getitem__(self, name: str) -> Snapshot:
        entry = self._lookup(name)
        return Snapshot.load(entry) if isinstance(entry, Path) else entry

    def __contains__(self, name: object) -> bool:
        return name in self._snapshots

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._snapshots))

    def __len__(self) -> int:
        return len(self._snapshots)

    def __repr__(self) -> str:
        where = "in memory" if self.directory is None else f"in {str(self.directory)!r}"
        return f"LotteryTicket(snapshots={self.names}, epochs={list(self.epochs)}, {where})"

    def resolve(self, to: SnapshotLike) -> Snapshot:
        """The snapshot ``to`` stands for: a name of this ticket, a :class:`Snapshot`, a dict or a file path."""
        if isinstance(to, str) and (to in self._snapshots or not Path(to).is_file()):
            return self[to]
        return _resolve(to, "LotteryTicket.rewind")

    def rewind(self, model: nn.Module, to: SnapshotLike = "init") -> nn.Module:
        r"""Rewind ``model`` to one of this ticket's snapshots (or any snapshot); see :func:`rewind`.

        Args:
            model (torch.nn.Module): the model to rewind: dense, masked or sliced.
            to (str, Snapshot, dict or os.PathLike): a snapshot name such as ``"init"`` or ``"epoch2"``, or
                anything :func:`rewind` accepts. Default: ``"init"``.

        Returns:
            torch.nn.Module: ``model``.
        """
        _check_model(model, "LotteryTicket.rewind")
        return rewind(model, self.resolve(to))


@dataclass
class RoundRecord:
    r"""One round of :func:`iterative_pruning`: the network trained in it, and how far it was pruned after.

    Args:
        round (int): the round, from 0.
        sparsity (float): filter sparsity of the network trained in this round (0.0 in round 0).
        filters_kept (int): convolution filters it kept.
        params_kept (int): parameters it kept (masked channels counted as removed).
        macs_kept (int): MACs per example it kept.
        accuracy (Any): what ``train_fn`` returned.
        pruned_to (float): filter sparsity after this round's pruning, the next round's ``sparsity``.
    """

    round: int
    sparsity: float
    filters_kept: int
    params_kept: int
    macs_kept: int
    accuracy: Any
    pruned_to: float


def iterative_pruning(
    model: nn.Module,
    train_fn: Callable[[nn.Module, int], Any],
    prune_fn: Callable[[nn.Module, int], Any],
    rounds: int,
    rewind_to: SnapshotLike = "init",
    ticket: LotteryTicket | None = None,
    *,
    example_inputs: ExampleInputs,
) -> list[RoundRecord]:
    r"""Train, prune, rewind, and again: iterative magnitude (or any) pruning with rewinding.

    Every round calls ``train_fn(model, round)``, then ``prune_fn(model, round)`` (which prunes a further fraction
    by any method, for example :func:`torch_rlprune.global_structured` with L1, annealing or RL), then rewinds the
    model to ``rewind_to`` with its new masks kept. After the last round the model is pruned and rewound, ready
    for its final training. ``train_fn`` builds its own optimizer each round: optimizer state is not rewound.

    A snapshot name in ``rewind_to`` is looked up in ``ticket`` once round 0 has trained, so ``train_fn`` may take
    it there (``ticket.step(epoch)``); that snapshot is then used in every round, even if later rounds take
    another of the same name.

    Args:
        model (torch.nn.Module): the model, dense or already pruned.
        train_fn (callable): ``train_fn(model, round)`` trains the model; what it returns (say the accuracy) goes
            into the round's record.
        prune_fn (callable): ``prune_fn(model, round)`` prunes the model further.
        rounds (int): how many rounds.
        rewind_to (str, Snapshot, dict or os.PathLike): where to rewind, as for :meth:`LotteryTicket.rewind`.
            Default: ``"init"``.
        ticket (LotteryTicket, optional): the ticket holding the snapshots. Default: a new ticket whose ``"init"``
            is the model as passed in.
        example_inputs (torch.Tensor or tuple of torch.Tensor): inputs the model accepts, to count filters,
            parameters and MACs with :func:`torch_rlprune.metrics.model_stats`.

    Returns:
        list of :class:`RoundRecord`: one per round.

    Example:
        >>> import torch
        >>> import torch.nn as nn
        >>> import torch.nn.utils.prune as prune
        >>> import torch_rlprune as rlp
        >>> from torch_rlprune.lottery import iterative_pruning
        >>> model = rlp.models.BasicCNN(width=0.125)
        >>> x = torch.randn(1, 3, 32, 32)
        >>> def prune_fn(model, round):
        ...     convs = [(m, "weight") for m in model.modules() if isinstance(m, nn.Conv2d)]
        ...     rlp.global_structured(convs, prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x)
        >>> records = iterative_pruning(model, lambda model, round: 0.0, prune_fn, rounds=2, example_inputs=x)
        >>> [(r.round, r.sparsity, r.pruned_to) for r in records]
        [(0, 0.0, 0.5), (1, 0.5, 0.75)]
    """
    _check_model(model, "iterative_pruning")
    for arg, fn in (("train_fn", train_fn), ("prune_fn", prune_fn)):
        if not callable(fn):
            raise TypeError(f"iterative_pruning: {arg} must be a callable fn(model, round), got {type(fn).__name__}.")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"iterative_pruning: rounds must be a positive int, got {rounds!r}.")
    if ticket is None:
        ticket = LotteryTicket(model)
    elif not isinstance(ticket, LotteryTicket):
        raise TypeError(f"iterative_pruning: ticket must be a LotteryTicket or None, got {type(ticket).__name__}.")
    target = None if isinstance(rewind_to, str) else ticket.resolve(rewind_to)

    records = []
    trained = metrics.model_stats(model, example_inputs)
    for round_ in range(rounds):
        accuracy = train_fn(model, round_)
        if target is None:
            target = ticket.resolve(rewind_to)
        prune_fn(model, round_)
        rewind(model, target)
        pruned = metrics.model_stats(model, example_inputs)
        records.append(RoundRecord(round_, trained.sparsity, trained.filters_kept, trained.params_kept,
                                   trained.macs_kept, accuracy, pruned.sparsity))  # fmt: skip
        trained = pruned
    return records
