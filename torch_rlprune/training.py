"""A small, plain training loop: SGD with momentum and weight decay, cosine learning rate, accuracy.

Enough to train a network before a search (to rewind point k), the pruned network after it, and the dense
control, all with one identical schedule. It works on any classifier returning logits, including a model pruned
with :mod:`torch.nn.utils.prune` masks (the optimizer updates ``weight_orig``; the forward pre-hook keeps pruned
entries at zero) and a physically slimmed one.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

from ._files import atomic_save, read_checked
from ._inputs import device_of

__all__ = ["train", "evaluate"]

SCHEDULES = ("cosine", "constant")


def _check_model(model: Any, caller: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{caller}: model must be a torch.nn.Module, got {type(model).__name__}.")


def _check_loader(loader: Any, caller: str) -> None:
    if isinstance(loader, (torch.Tensor, str, bytes)) or not isinstance(loader, Iterable):
        raise TypeError(
            f"{caller}: loader must be an iterable of (inputs, targets) batches, such as "
            "torch_rlprune.data.batches(dataset, 128) or a torch.utils.data.DataLoader; got "
            f"{type(loader).__name__}."
        )


def _unpack(batch: Any, device: torch.device, caller: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
        raise TypeError(f"{caller}: every batch must be an (inputs, targets) pair, got {type(batch).__name__}.")
    return batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)


@contextlib.contextmanager
def _modes_restored(model: nn.Module):  # type: ignore[no-untyped-def]
    modes = {m: m.training for m in model.modules()}
    try:
        yield
    finally:
        for m, training in modes.items():
            m.training = training


def _progress_bar(total: int | None, desc: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:
        warnings.warn('train: progress=True needs tqdm: pip install "torch-rlprune[progress]" (or tqdm).')
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=False)


def train(
    model: nn.Module,
    loader: Iterable[Any],
    epochs: int,
    *,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    schedule: str = "cosine",
    device: torch.device | str | None = None,
    progress: bool = False,
    callback: Callable[[dict[str, Any]], Any] | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    seed: int | None = None,
    checkpoint: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    r"""Train a classifier with SGD (momentum, weight decay) and a cosine learning-rate schedule.

    The learning rate follows :class:`torch.optim.lr_scheduler.CosineAnnealingLR` from ``lr`` to 0 over all
    ``epochs``, stepped after every batch when ``len(loader)`` is known (after every epoch otherwise);
    ``schedule="constant"`` keeps it at ``lr``. Only parameters with ``requires_grad`` are trained. The model is
    in train mode during training; its modes are restored afterwards.

    Pruned models train as they are: the optimizer updates ``weight_orig`` and the pruning hooks recompute
    ``weight = weight_orig * weight_mask`` on every forward pass, so pruned filters stay exactly zero.

    Args:
        model (torch.nn.Module): the classifier; it returns logits.
        loader (iterable): yields ``(inputs, targets)`` batches anew on every pass, e.g.
            :func:`torch_rlprune.data.batches` with ``shuffle=True`` or a ``DataLoader``.
        epochs (int): passes over ``loader``; 0 trains nothing.
        lr (float): initial learning rate. Default: 0.05.
        momentum (float): SGD momentum. Default: 0.9.
        weight_decay (float): L2 weight decay. Default: 5e-4.
        schedule (str): ``"cosine"`` or ``"constant"``. Default: ``"cosine"``.
        device (torch.device or str, optional): move the model and the batches there. Default: the device of the
            model's parameters.
        progress (bool): a tqdm progress bar per epoch (needs ``tqdm``). Default: ``False``.
        callback (callable, optional): called with every epoch's record (below) once the epoch ends; if it
            returns ``True`` training stops there (the schedule stays the one for ``epochs``, so this gives
            the weights at epoch ``k`` of a longer run).
        loss_fn (callable): ``loss_fn(logits, targets)``, averaged over the batch. Default: cross-entropy.
        seed (int, optional): seeds the global RNG for the duration of the call (dropout, and a loader that uses
            the global RNG), which is restored afterwards. Default: ``None`` (the global RNG as it is).
        checkpoint (str or path, optional): after every epoch, write the model's and the optimizer's state, the
            schedule, the history and the random states (the global RNG's, and the loader's ``generator``'s
            where it has one, as :func:`~torch_rlprune.data.batches` and ``DataLoader`` do) to this file,
            atomically. A call that finds the file resumes after its last epoch, so an interrupted run loses at
            most one epoch and ends with the same weights as an uninterrupted one. The file must come from a
            call with the same ``epochs``. Default: ``None`` (nothing written).

    Returns:
        list of dict: one record per epoch: ``epoch`` (from 1), ``loss`` (mean training loss), ``accuracy``
        (training accuracy, on augmented batches and with dropout on), ``lr`` (at the start of the epoch),
        ``examples`` and ``seconds``.

    Raises:
        TypeError: ``model`` is not a module, ``loader`` not an iterable of pairs.
        ValueError: bad ``epochs``, ``lr`` or ``schedule``, an empty loader, a loss that is not finite, or a
            ``checkpoint`` that is a directory, unreadable, or from a run with other ``epochs``.

    Example:
        >>> import torch
        >>> from torch_rlprune.training import train
        >>> x = torch.randn(64, 2)
        >>> y = (x[:, 0] > 0).long()
        >>> history = train(torch.nn.Linear(2, 2), [(x, y)], epochs=20, lr=0.5, seed=0)
        >>> len(history), history[-1]["loss"] < history[0]["loss"]
        (20, True)
    """
    _check_model(model, "train")
    _check_loader(loader, "train")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"train: epochs must be an int >= 0, got {epochs!r}.")
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"train: {name} must be a finite number >= 0, got {value!r}.")
    if lr <= 0:
        raise ValueError(f"train: lr must be positive, got {lr!r}.")
    if schedule not in SCHEDULES:
        raise ValueError(f"train: schedule must be one of {', '.join(map(repr, SCHEDULES))}, got {schedule!r}.")
    if device is not None:
        model.to(device)
    device = device_of(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("train: the model has no parameter with requires_grad=True to train.")
    if checkpoint is not None and Path(checkpoint).is_dir():
        raise ValueError(f"train: checkpoint={str(checkpoint)!r} is a directory; pass a file path inside it.")
    if epochs == 0:
        return []

    optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    try:
        steps_per_epoch: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        steps_per_epoch = None
    per_step = bool(steps_per_epoch)
    scheduler = None
    if schedule == "cosine":
        total = epochs * steps_per_epoch if per_step else epochs  # type: ignore[operator]
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)

    history: list[dict[str, Any]] = []
    generator = getattr(loader, "generator", None)
    generator = generator if isinstance(generator, torch.Generator) else None
    resumed = _resume(checkpoint, epochs, model, optimizer, scheduler, generator) if checkpoint is not None else None
    if resumed is not None:
        history = resumed["history"]
    rng = None
    if seed is not None:
        # The CPU's state is always forked. Leave device_type out for a CPU model: before 2.12 torch parsed it
        # (default "cuda") and refused None.
        on_cpu = device.type == "cpu"
        rng = torch.random.fork_rng(devices=[]) if on_cpu else torch.random.fork_rng(device_type=device.type)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_modes_restored(model))
        if rng is not None:
            stack.enter_context(rng)
            torch.manual_seed(seed)
        if resumed is not None:
            torch.set_rng_state(resumed["rng"])
        model.train()
        for epoch in range(len(history) + 1, epochs + 1):
            start = time.perf_counter()
            epoch_lr = optimizer.param_groups[0]["lr"]
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)
            correct = torch.zeros((), dtype=torch.long, device=device)
            seen = 0
            bar = _progress_bar(steps_per_epoch, f"epoch {epoch}/{epochs}") if progress else None
            try:
                for batch in loader:
                    inputs, targets = _unpack(batch, device, "train")
                    logits = model(inputs)
                    loss = loss_fn(logits, targets)
                    if not torch.isfinite(loss):
                        raise ValueError(
                            f"train: the loss became {float(loss.detach())} in epoch {epoch}; lower lr (now "
                            f"{optimizer.param_groups[0]['lr']:.3g}) or check the data."
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    if scheduler is not None and per_step:
                        scheduler.step()
                    n = targets.shape[0]
                    seen += n
                    loss_sum += loss.detach().double() * n
                    correct += (logits.detach().argmax(dim=1) == targets).sum()
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
            finally:
                if bar is not None:
                    bar.close()
            if seen == 0:
                raise ValueError("train: the loader yielded no batch; pass training data.")
            if scheduler is not None and not per_step:
                scheduler.step()
            record = {"epoch": epoch, "loss": float(loss_sum) / seen, "accuracy": int(correct) / seen,
                      "lr": epoch_lr, "examples": seen, "seconds": time.perf_counter() - start}  # fmt: skip
            history.append(record)
            if checkpoint is not None:
                state = {"epochs": epochs, "history": history, "model": model.state_dict(),
                         "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                         "scheduler": None if scheduler is None else scheduler.state_dict(),
                         "generator": None if generator is None else generator.get_state()}  # fmt: skip
                atomic_save(state, checkpoint)
            if callback is not None and callback(record) is True:
                break
    return history


def _resume(
    checkpoint: str | os.PathLike,
    epochs: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator | None,
) -> dict[str, Any] | None:
    try:
        state = read_checked(checkpoint, "training checkpoint", "train")
    except FileNotFoundError:
        return None
    if not isinstance(state, dict) or state.get("epochs") != epochs:
        found = state.get("epochs") if isinstance(state, dict) else None
        raise ValueError(
            f"train: checkpoint {str(checkpoint)!r} is from a run of {found} epochs, not {epochs}; delete it or "
            "pass another path."
        )
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise ValueError(
            f"train: checkpoint {str(checkpoint)!r} does not fit this model ({exc}); delete it or pass another path."
        ) from exc
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if generator is not None and state["generator"] is not None:
        generator.set_state(state["generator"])
    return state


def evaluate(model: nn.Module, loader: Iterable[Any], *, device: torch.device | str | None = None) -> float:
    r"""Top-1 accuracy of a classifier over all batches of ``loader``, in eval mode and without gradients.

    The model's train/eval modes are restored afterwards.

    Args:
        model (torch.nn.Module): the classifier; it returns logits.
        loader (iterable): yields ``(inputs, targets)`` batches.
        device (torch.device or str, optional): where to compute. Default: the device of the model's parameters
            (the model is not moved; pass a model already on ``device``).

    Returns:
        float: the fraction of examples whose arg-max logit is the target.

    Raises:
        TypeError: ``model`` is not a module, ``loader`` not an iterable of pairs.
        ValueError: the loader yields no example.

    Example:
        >>> import torch
        >>> from torch_rlprune.training import evaluate
        >>> model = torch.nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.eye(2)), model.bias.zero_()
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
        >>> evaluate(model, [(x, torch.tensor([0, 1, 1]))])
        0.6666666666666666
        >>> model.training
        True
    """
    _check_model(model, "evaluate")
    _check_loader(loader, "evaluate")
    device = device_of(model) if device is None else torch.device(device)
    correct = total = 0
    with _modes_restored(model), torch.no_grad():
        model.eval()
        for batch in loader:
            inputs, targets = _unpack(batch, device, "evaluate")
            correct += int((model(inputs).argmax(dim=1) == targets).sum())
            total += targets.shape[0]
    if total == 0:
        raise ValueError("evaluate: the loader yielded no example; pass evaluation data.")
    return correct / total
