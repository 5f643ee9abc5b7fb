r"""The thesis pipeline end to end: train to epoch ``k``, search a mask, rewind, slim, train, report.

:func:`run_pipeline` is what ``torch-rlprune run`` does, and :func:`compare` what ``torch-rlprune compare``
does; the examples and the quickstart call them too. One run, for a :class:`PipelineConfig`:

1. load the data (:func:`torch_rlprune.data.load_data`): ``train``, a ``val`` split carved out of the training
   data, and ``test``. The search is rewarded on ``val`` only; ``test`` is read once, for the final report;
2. build the model (``"basiccnn"``, or any torchvision classification model by name) under ``seed`` and take a
   :class:`~torch_rlprune.LotteryTicket` snapshot ``"init"``;
3. train the dense model for ``epochs`` epochs (the *dense control*), taking snapshot ``"epoch<k>"`` after
   ``k = rewind_epoch`` of them, and measure it on ``test``;
4. rewind the dense model to epoch ``k`` and search the mask there with ``method`` at ``amount`` of the filters
   (:func:`torch_rlprune.global_structured`; a search method is rewarded on ``reward_batches`` validation
   batches);
5. rewind the kept filters to ``"init"`` (or to epoch ``k`` with ``rewind_to="k"``), slice the pruned ones out
   (:func:`torch_rlprune.slim`), train the small network with the dense control's schedule, and measure it.

"Amount" counts filters (output channels of convolutions), never parameters.

**The run folder.** Every step writes into one folder, which the next step reads:

====================  ==================================================================================
``config.json``       the settings (:class:`PipelineConfig`), written by the first step, read by the others
``log.txt``           what every step printed, with times
``snapshots/``        ``init.pt`` and ``epoch<k>.pt``: the weights to rewind to (:class:`~torch_rlprune.lottery.Snapshot`)
``dense.json``        the dense control: test accuracy, parameters, MACs, latency, training history
``search.pt``         the search checkpoint (search methods only); ``torch-rlprune search --resume`` continues it
``history.csv``       one row per evaluated mask: episode, reward, best reward so far, the method's statistics
``search.json``       the search: method, reward, time, evaluations, best reward, filters per layer
``mask.pt``           the mask: kept filter indices of every pruned channel group (:func:`save_mask`, :func:`load_mask`)
``ticket.pt``         the pruned network at the rewind point, sliced (:func:`torch_rlprune.save`; load it with
                      :func:`torch_rlprune.load` into a fresh model of the architecture)
``model.pt``          the trained pruned network, sliced (:func:`torch_rlprune.save` / :func:`torch_rlprune.load`)
``train.json``        the pruned network's training history and test metrics
``report.json``       the report (:class:`Report`): dense vs pruned accuracy, params, MACs, latency, search time,
                      filters per layer; ``report.md`` is the same as a Markdown page
====================  ==================================================================================

:func:`search_step`, :func:`slim_step` and :func:`train_step` are the three steps of ``run`` on their own
(``torch-rlprune search``, ``slim`` and ``train``); :func:`run_pipeline` runs them in a row on data loaded once.

Example:
    >>> import tempfile
    >>> from torch_rlprune.pipeline import PipelineConfig, run_pipeline
    >>> config = PipelineConfig(width=0.125, epochs=1, rewind_epoch=1, episodes=4, latency_time=0.01)
    >>> report = run_pipeline(config, tempfile.mkdtemp())           # doctest: +SKIP
    >>> report.pruned.filters, report.dense.filters                  # doctest: +SKIP
    (36, 120)
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import difflib
import json
import logging
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn
from torch.nn.utils import prune

from .data import Splits, batches, load_data
from .groups import CONV_TYPES, channel_groups
from .lottery import LotteryTicket, Snapshot, rewind
from .masks import alive_channels, apply_channel_masks
from .methods import RandomSearchPruning, RLStructuredPruning, SimulatedAnnealingPruning, global_structured
from .metrics import filters_per_layer, model_stats
from .rewards import Accuracy, MACsAware, NegativeLoss
from .serialization import atomic_save, group_records, load, match_records, read_checked, save
from .slicing import KEPT_ATTR, slim
from .training import evaluate, train

__all__ = [
    "PipelineConfig",
    "Metrics",
    "Report",
    "Workspace",
    "METHODS",
    "SEARCH_METHODS",
    "REWARDS",
    "run_pipeline",
    "search_step",
    "slim_step",
    "train_step",
    "compare",
    "save_mask",
    "load_mask",
    "unslice",
    "measure",
    "cpu_latency",
    "model_names",
    "OUTPUTS",
]

PathLike = Union[str, os.PathLike]
Log = Callable[[str], Any]

#: Search methods, rewarded on validation data, and their pruning method classes.
SEARCH_METHODS = {"rl": RLStructuredPruning, "sa": SimulatedAnnealingPruning, "random": RandomSearchPruning}
#: Every method name: the search methods, then the criteria of :mod:`torch_rlprune.criteria` (no data needed,
#: except ``"snip"``, which scores one training batch, and ``"same_sign"``, which compares with the init weights).
#: ``"random"`` is the best of ``episodes`` random masks (random search); ``"random_mask"`` is one random mask.
METHODS = (*SEARCH_METHODS, "l1", "l2", "snip", "synflow", "bn_scale", "same_sign", "random_mask")
#: Rewards of the search methods: validation accuracy, minus the validation loss, AMC's ``-error * log(MACs)``.
REWARDS = ("accuracy", "loss", "macs")
#: Every file a step writes into the run folder (see the module description), by the step that writes it.
OUTPUTS = {
    "search": ("config.json", "snapshots", "dense.json", "search.pt", "history.csv", "search.json", "mask.pt"),
    "slim": ("ticket.pt",),
    "train": ("dense.json", "model.pt", "train.json", "report.json", "report.md"),
}
MASK_FORMAT = "torch-rlprune/mask"
SEARCH_FIELDS = ("method", "reward", "reward_batches", "seconds", "evaluations", "best_reward", "interrupted")


def _silent(message: str) -> None:
    pass


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------


@dataclass
class PipelineConfig:
    r"""The settings of one pipeline run; every field has the default of ``torch-rlprune run``.

    Args:
        model (str): ``"basiccnn"`` or a torchvision classification model such as ``"resnet18"`` (built with
            ``torchvision.models.get_model(name, num_classes=...)``, untrained). Default: ``"basiccnn"``.
        width (float): filter multiplier of ``"basiccnn"``. Default: 1.0.
        data (str): ``"digits"`` (offline), ``"cifar10"`` or ``"imagefolder:PATH"``. Default: ``"digits"``.
        data_root (str, optional): the folder of ``"cifar10"``.
        download (bool): let ``"cifar10"`` download the data. Default: ``False``.
        image_size (int, optional): resize the images. Default: the dataset's size.
        val_fraction (float): fraction of the training data held out as the validation split the search is
            rewarded on. Default: 0.1.
        augment (bool, optional): random crops and flips while training. Default: on, except for ``"digits"``.
        method (str): one of :data:`METHODS`. Default: ``"rl"``.
        amount (float): fraction of the filters to prune, in (0, 1). Default: 0.7.
        min_keep (int or float): filters every layer keeps at least, as a count (int) or as a fraction of the
            layer's filters (float, rounded up). Default: 0.05, a floor that keeps a search at high sparsity from
            starving the early layers (see :doc:`search`).
        episodes (int): masks a search method evaluates. Default: 300.
        reward (str): one of :data:`REWARDS`. Default: ``"accuracy"``.
        reward_batches (int): validation batches each reward reads. Default: 2.
        rewind_epoch (int): ``k``, the epoch whose weights the mask is searched at (0: at init). Default: 2.
        rewind_to (str): ``"init"`` or ``"k"``: where the kept filters are rewound before the final training.
            Default: ``"init"``.
        epochs (int): training epochs of the dense control and of the pruned network. Default: 8.
        batch_size (int): training and evaluation batch size. Default: 128.
        lr (float): initial learning rate of SGD with a cosine schedule. Default: 0.05.
        seed (int): seeds the validation split, the initialisation, the data order and the search. Default: 0.
        device (str): ``"cpu"``, ``"cuda"``, ... Default: ``"cpu"``.
        latency_batch (int): batch size of the CPU latency measurement. Default: 8.
        latency_threads (int): CPU threads of the latency measurement; one thread gives numbers that other jobs
            on the machine disturb least. Default: 1.
        latency_time (float): seconds each latency measurement runs at least. Default: 0.5.
    """

    model: str = "basiccnn"
    width: float = 1.0
    data: str = "digits"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None
    val_fraction: float = 0.1
    augment: bool | None = None
    method: str = "rl"
    amount: float = 0.7
    min_keep: float | int = 0.05
    episodes: int = 300
    reward: str = "accuracy"
    reward_batches: int = 2
    rewind_epoch: int = 2
    rewind_to: str = "init"
    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.05
    seed: int = 0
    device: str = "cpu"
    latency_batch: int = 8
    latency_threads: int = 1
    latency_time: float = 0.5

    def validate(self) -> PipelineConfig:
        """Check every setting; raise a ``ValueError`` naming the first bad one and its fix. Returns ``self``."""
        check_model_name(self.model)
        if self.model != "basiccnn" and self.width != 1.0:
            raise ValueError(f"width applies to basiccnn only; {self.model} is built at its own width.")
        _positive("width", self.width, float)
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}.")
        if self.reward not in REWARDS:
            raise ValueError(f"unknown reward {self.reward!r}; choose one of {', '.join(REWARDS)}.")
        if isinstance(self.amount, bool) or not isinstance(self.amount, (int, float)) or not 0 < self.amount < 1:
            raise ValueError(
                f"amount must be a fraction of the filters strictly between 0 and 1 (0.7 prunes 70%), got "
                f"{self.amount!r}."
            )
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {self.val_fraction!r}.")
        for name in ("episodes", "reward_batches", "epochs", "batch_size", "latency_batch", "latency_threads"):
            _positive(name, getattr(self, name), int)
        mk = self.min_keep
        if isinstance(mk, bool) or not isinstance(mk, (int, float)) or mk < 0 or (isinstance(mk, float) and mk > 1):
            raise ValueError(f"min_keep must be a count >= 0 (int) or a fraction in [0, 1] (float), got {mk!r}.")
        for name in ("rewind_epoch", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}.")
        if self.rewind_epoch > self.epochs:
            raise ValueError(
                f"rewind_epoch ({self.rewind_epoch}) is beyond the {self.epochs} training epochs; the mask is "
                "searched at epoch k of the dense training, so use k <= epochs."
            )
        if self.rewind_to not in ("init", "k"):
            raise ValueError(f"rewind_to must be 'init' or 'k' (the rewind epoch), got {self.rewind_to!r}.")
        _positive("lr", self.lr, float)
        _positive("latency_time", self.latency_time, float)
        if self.image_size is not None:
            _positive("image_size", self.image_size, int)
        kind, _, path = self.data.partition(":")
        if kind == "imagefolder" and path and not Path(path).expanduser().is_dir():
            raise ValueError(f"the data folder {path} does not exist; give the folder holding train/ and test/.")
        if kind == "cifar10":
            if self.data_root is None:
                raise ValueError("--data cifar10 needs --data-root DIR, the folder holding cifar-10-batches-py.")
            if not self.download and not Path(self.data_root).expanduser().is_dir():
                raise ValueError(
                    f"the data root {self.data_root} does not exist; pass the folder holding "
                    "cifar-10-batches-py, or add --download to fetch CIFAR-10 into it."
                )
        elif kind not in ("digits", "imagefolder") or (kind == "digits" and path):
            raise ValueError(f"unknown data {self.data!r}; use digits, cifar10 or imagefolder:PATH.")
        if self.data_root is not None and kind != "cifar10" and not Path(self.data_root).expanduser().is_dir():
            raise ValueError(f"the data root {self.data_root} does not exist.")
        try:
            device = torch.device(self.device)
        except RuntimeError as error:
            raise ValueError(f"unknown device {self.device!r} ({error}); use cpu, cuda or cuda:N.") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {self.device!r} was asked for, but CUDA is not available here; use cpu.")
        return self

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PipelineConfig:
        """Settings from :meth:`to_dict` (unknown keys are ignored, missing ones take their defaults)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def searches(self) -> bool:
        """Whether :attr:`method` searches by reward (and so writes a search checkpoint and history)."""
        return self.method in SEARCH_METHODS

    @property
    def rewind_name(self) -> str:
        """The snapshot the kept filters are rewound to before the final training."""
        return snapshot_name(self.rewind_epoch if self.rewind_to == "k" else 0)


def _positive(name: str, value: Any, kind: type) -> None:
    types = (int, float) if kind is float else (int,)
    if isinstance(value, bool) or not isinstance(value, types) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a positive {'number' if kind is float else 'int'}, got {value!r}.")


def snapshot_name(epoch: int) -> str:
    """``"init"`` for epoch 0, ``"epoch<k>"`` otherwise: the names :class:`~torch_rlprune.LotteryTicket` uses."""
    return "init" if epoch == 0 else f"epoch{epoch}"


def model_names() -> list[str]:
    """The model names :class:`PipelineConfig` accepts: ``"basiccnn"`` and torchvision's classification models.

    Example:
        >>> names = model_names()
        >>> names[0], "resnet18" in names
        ('basiccnn', True)
    """
    import torchvision

    return ["basiccnn", *torchvision.models.list_models(module=torchvision.models)]


def check_model_name(name: str) -> None:
    """Raise a ``ValueError`` (with close matches) unless ``name`` is one of :func:`model_names`.

    Example:
        >>> check_model_name("resnet81")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown model 'resnet81'; did you mean resnet18, ...? Use basiccnn or a torchvision ...
    """
    names = model_names()
    if name not in names:
        close = difflib.get_close_matches(str(name), names, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else "."
        raise ValueError(
            f"unknown model {name!r}{hint} Use basiccnn or a torchvision classification model "
            "(torchvision.models.list_models())."
        )


def build_model(config: PipelineConfig, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A freshly initialised model as ``config`` names it, built under ``config.seed`` (the same seed, the same init).

    The global random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if config.model == "basiccnn":
            from .models import BasicCNN

            return BasicCNN(num_classes, in_channels, width=config.width, input_size=image_size)
        import torchvision

        check_model_name(config.model)
        if in_channels != 3:
            raise ValueError(f"{config.model} takes 3-channel images; the data has {in_channels} channels.")
        return torchvision.models.get_model(config.model, weights=None, num_classes=num_classes)


# --------------------------------------------------------------------------------------------------------------
# Data and models of one run
# --------------------------------------------------------------------------------------------------------------


class Workspace:
    """The data of a run and what is built from it: loaders, example inputs and fresh models.

    Args:
        config (PipelineConfig): the run's settings (checked with :meth:`PipelineConfig.validate`).
        splits (Splits, optional): data already loaded with the same settings.
    """

    def __init__(self, config: PipelineConfig, splits: Splits | None = None) -> None:
        self.config = config.validate()
        if splits is None:
            splits = load_data(config.data, config.data_root, val_fraction=config.val_fraction,
                               download=config.download, seed=config.seed, image_size=config.image_size)  # fmt: skip
        self.splits = splits
        self.device = torch.device(config.device)
        #: one validation image: traces the model, checks slicing, counts MACs per example
        self.example_inputs = splits.val.batch(torch.arange(1))[0].to(self.device)
        self.augment = config.augment if config.augment is not None else not config.data.startswith("digits")
        self._check_model_runs()

    def _check_model_runs(self) -> None:
        model = self.build_model().eval()
        shape = "x".join(map(str, self.example_inputs.shape[1:]))
        try:
            with torch.no_grad():
                output = model(self.example_inputs)
        except Exception as error:  # whatever the model raises, the cause is the image size it was given
            raise ValueError(
                f"{self.config.model} does not run on the {shape} images of {self.config.data} "
                f"({type(error).__name__}: {' '.join(str(error).split())}); pass --image-size to resize them "
                "(e.g. 224 for vision transformers)."
            ) from error
        if not isinstance(output, torch.Tensor) or output.shape != (1, self.splits.num_classes):
            raise ValueError(
                f"{self.config.model} returns {type(output).__name__} of shape {getattr(output, 'shape', '?')} on one "
                f"image; the pipeline needs a classifier returning logits [batch, {self.splits.num_classes}]."
            )

    def build_model(self) -> nn.Module:
        """The model at its seeded initialisation, on the run's device."""
        s = self.splits
        return build_model(self.config, s.num_classes, s.in_channels, s.image_size).to(self.device)

    def train_loader(self) -> Iterable[Any]:
        """Training batches, shuffled (and augmented) the same way in every run with the same seed."""
        generator = torch.Generator().manual_seed(self.config.seed)
        return batches(self.splits.train, self.config.batch_size, shuffle=True, generator=generator,
                       augment=self.augment, device=self.device)  # fmt: skip

    def val_loader(self) -> Iterable[Any]:
        """Validation batches, in order: what search rewards read."""
        return batches(self.splits.val, self.config.batch_size, device=self.device)

    def test_loader(self) -> Iterable[Any]:
        """Test batches, in order: read for the final report only."""
        return batches(self.splits.test, max(self.config.batch_size, 256), device=self.device)

    def describe(self) -> dict[str, Any]:
        """Sizes of the splits and what each one is used for."""
        s = self.splits
        return {"spec": self.config.data, "train": len(s.train), "val": len(s.val), "test": len(s.test),
                "classes": s.num_classes, "image": [s.in_channels, s.image_size, s.image_size],
                "use": "val (carved out of the training data) rewards the search; test is for this report only"}  # fmt: skip


# --------------------------------------------------------------------------------------------------------------
# Masks and unslicing
# --------------------------------------------------------------------------------------------------------------


def save_mask(model: nn.Module, path: PathLike, example_inputs: Any) -> None:
    """Write the kept filters of a masked model, per channel group, to ``path`` (atomically).

    The file holds only tensors, strings and numbers (``torch.load(weights_only=True)`` reads it); every group
    is named by its producer convs. :func:`load_mask` puts the mask on a fresh model of the same architecture.

    Example:
        >>> import os, tempfile, torch
        >>> import torch.nn.utils.prune as prune
        >>> import torch_rlprune as rlp
        >>> x = torch.randn(1, 3, 32, 32)
        >>> model = rlp.models.BasicCNN(width=0.25)
        >>> convs = [(m, "weight") for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        >>> rlp.global_structured(convs, prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x)
        >>> path = os.path.join(tempfile.mkdtemp(), "mask.pt")
        >>> save_mask(model, path, x)
        >>> other = load_mask(path, rlp.models.BasicCNN(width=0.25), x)
        >>> rlp.metrics.filters_per_layer(other, x) == rlp.metrics.filters_per_layer(model, x)
        True
    """
    groups = channel_groups(model, example_inputs)
    records = group_records(groups, [alive_channels(g) for g in groups])
    atomic_save({"format": MASK_FORMAT, "version": 1, "groups": records}, path)


def load_mask(path: PathLike, model: nn.Module, example_inputs: Any) -> nn.Module:
    """Mask the filters of an unpruned ``model`` as :func:`save_mask` recorded them; returns ``model``.

    Raises:
        ValueError: the file is not a mask, or was saved from another architecture.
    """
    data = read_checked(path, "mask file", "load_mask", "cpu")
    if not isinstance(data, dict) or data.get("format") != MASK_FORMAT:
        raise ValueError(f"{path} is not a mask file written by torch_rlprune.pipeline.save_mask.")
    matched = match_records(channel_groups(model, example_inputs), data["groups"], path, "load_mask")
    apply_channel_masks([g for g, _ in matched], [k for _, k in matched])
    return model


_PER_CHANNEL = ("weight", "bias", "running_mean", "running_var")


def unslice(sliced: nn.Module, masked: nn.Module) -> nn.Module:
    """Copy the weights of a sliced model back into the kept positions of the masked model it was sliced from.

    The inverse of :func:`torch_rlprune.slim` for the weights: after training the small network, this puts its
    weights into the masked full-size model, which :func:`torch_rlprune.save` can then write (and
    :func:`torch_rlprune.load` rebuild). ``masked`` must carry the same masks ``sliced`` was cut with; its pruned
    positions keep whatever they held (they are masked). Returns ``masked``.

    Example:
        >>> import torch
        >>> import torch.nn.utils.prune as prune
        >>> import torch_rlprune as rlp
        >>> x = torch.randn(2, 3, 32, 32)
        >>> model = rlp.models.BasicCNN(width=0.25).eval()
        >>> convs = [(m, "weight") for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        >>> rlp.global_structured(convs, prune.LnStructured, n=1, amount=0.5, model=model, example_inputs=x)
        >>> small = rlp.slim(model, x)
        >>> with torch.no_grad():
        ...     _ = small.fc.weight.mul_(2.0)
        >>> torch.allclose(unslice(small, model)(x), small(x), atol=1e-5)
        True
    """
    modules = dict(masked.named_modules())
    with torch.no_grad():
        for name, small in sliced.named_modules():
            target_module = modules.get(name)
            if target_module is None:
                raise ValueError(f"unslice: the masked model has no module {name!r}; pass the model sliced from it.")
            record = getattr(small, KEPT_ATTR, None) or {}
            for tensor_name, value in (*small.named_parameters(recurse=False), *small.named_buffers(recurse=False)):
                target = getattr(target_module, tensor_name + "_orig", None)
                if target is None:
                    target = getattr(target_module, tensor_name)
                per_channel = tensor_name in _PER_CHANNEL and value.dim() > 0
                dims = [d for d in (0, 1) if per_channel and d in record and (d == 0 or tensor_name == "weight")]
                for dim in dims:
                    if target.dim() <= dim or record[dim][0] != target.shape[dim]:
                        raise ValueError(
                            f"unslice: {name}.{tensor_name} was sliced from {record[dim][0]} entries along dim {dim}, "
                            f"but the masked model's has shape {tuple(target.shape)}; pass the masked model it was "
                            "sliced from."
                        )
                rows = record[0][1].to(target.device) if 0 in dims else None
                cols = record[1][1].to(target.device) if 1 in dims else None
                if cols is not None:
                    part = target.index_select(0, rows) if rows is not None else target.clone()
                    part.index_copy_(1, cols, value)
                else:
                    part = value
                if rows is not None:
                    target.index_copy_(0, rows, part)
                elif part.shape != target.shape:
                    raise ValueError(f"unslice: {name}.{tensor_name} has shape {tuple(value.shape)} but the masked "
                                     f"model's has {tuple(target.shape)}; pass the masked model it was sliced from.")
                else:
                    target.copy_(part)
    for module in masked.modules():  # the pruning hooks recompute ``weight`` only at the next forward
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))
    return masked


# --------------------------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------------------------


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

    device = next(iter(model.parameters()), torch.empty(0)).device
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


# --------------------------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------------------------


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else words or word + 's'}"


def _model_label(config: dict[str, Any]) -> str:
    width = config.get("width", 1.0)
    return config["model"] + (f" (width {width})" if config["model"] == "basiccnn" and width != 1.0 else "")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:,.0f}"


@dataclass
class Report:
    """The result of a pipeline run: the dense control against the pruned network.

    Attributes:
        config (dict): the settings (:meth:`PipelineConfig.to_dict`).
        data (dict): the splits' sizes and uses (:meth:`Workspace.describe`).
        dense (Metrics): the dense control, trained with the same schedule.
        pruned (Metrics): the pruned, rewound, sliced and trained network.
        search (dict): ``method``, ``reward``, ``seconds``, ``evaluations``, ``best_reward`` (``None`` for a
            criterion) and ``interrupted``.
        filters_per_layer (dict): convolution name -> ``[kept, dense]`` filters.
        timings (dict): seconds per phase.
    """

    config: dict[str, Any]
    data: dict[str, Any]
    dense: Metrics
    pruned: Metrics
    search: dict[str, Any]
    filters_per_layer: dict[str, list[int]]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        """Fraction of the convolution filters removed."""
        return 1.0 - self.pruned.filters / self.dense.filters if self.dense.filters else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["sparsity"] = self.sparsity
        data["amount_counts"] = "filters (output channels of convolutions)"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(data["config"], data["data"], Metrics.from_dict(data["dense"]), Metrics.from_dict(data["pruned"]),
                   data["search"], data["filters_per_layer"], data.get("timings", {}))  # fmt: skip

    def _rows(self) -> list[tuple[str, str, str, str]]:
        d, p = self.dense, self.pruned
        speedup = d.latency_ms / p.latency_ms if p.latency_ms > 0 else float("nan")
        batch = self.config.get("latency_batch", "?")
        threads = self.config.get("latency_threads", 1)
        return [
            ("test accuracy", _pct(d.accuracy), _pct(p.accuracy), f"{100 * (p.accuracy - d.accuracy):+.1f} points"),
            ("parameters", f"{d.params:,}", f"{p.params:,}", _pct(p.params / d.params)),
            ("MACs per example", f"{d.macs:,}", f"{p.macs:,}", _pct(p.macs / d.macs)),
            (f"CPU latency (batch {batch}, {threads} thread{'s' if threads != 1 else ''})", f"{d.latency_ms:.2f} ms", f"{p.latency_ms:.2f} ms", f"{speedup:.2f}x faster"),
            ("conv filters", f"{d.filters:,}", f"{p.filters:,}", f"{_pct(self.sparsity)} pruned"),
        ]

    def _search_line(self) -> str:
        s = self.search
        if s.get("evaluations"):
            best = f", best reward {s['best_reward']:.4g} ({s['reward']} on validation data)"
            what = f"{s['evaluations']} masks evaluated in {s['seconds']:.1f} s{best}"
        else:
            what = f"criterion, {s['seconds']:.2f} s"
        return f"search: {s['method']}, {what}" + (" (interrupted)" if s.get("interrupted") else "")

    def _headline(self) -> str:
        c = self.config
        model = _model_label(c)
        rewound = "init" if c["rewind_to"] == "init" else f"epoch {c['rewind_epoch']}"
        return (
            f"{model} on {c['data']}, {c['method']} at amount {c['amount']} of the filters; mask searched at epoch "
            f"{c['rewind_epoch']}, kept filters rewound to {rewound}; dense and pruned trained "
            f"{_plural(c['epochs'], 'epoch')}"
        )

    def summary(self) -> str:
        """A fixed-width table for the terminal."""
        rows = [("", "dense", "pruned", "pruned vs dense"), *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = [self._headline()]
        for row in rows:
            lines.append("  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:]))]).rstrip())
        lines.append(self._search_line())
        if "total" in self.timings:
            lines.append(f"total time {self.timings['total']:.1f} s")
        return "\n".join(lines)

    def markdown(self) -> str:
        """The report as a Markdown page."""
        d = self.data
        lines = [
            "# torch-rlprune run report",
            "",
            self._headline() + ".",
            "",
            (f"Data: {d['spec']}, {d['train']:,} training / {d['val']:,} validation / {d['test']:,} test images. "
             "The validation split, carved out of the training data, rewards the search; the test split is used "
             "for this report only. Amount counts filters (output channels of convolutions)."),
            "",
            "| | dense | pruned | pruned vs dense |",
            "| --- | ---: | ---: | ---: |",
            *(f"| {a} | {b} | {c} | {e} |" for a, b, c, e in self._rows()),
            "",
            self._search_line()[0].upper() + self._search_line()[1:] + ".",
            "",
            "## Filters per layer",
            "",
            "| layer | kept | dense | kept % |",
            "| --- | ---: | ---: | ---: |",
            *(f"| {n} | {k} | {t} | {_pct(k / t)} |" for n, (k, t) in self.filters_per_layer.items()),
        ]
        if self.timings:
            lines += ["", "## Time", "", "| phase | seconds |", "| --- | ---: |"]
            lines += [f"| {k} | {v:.1f} |" for k, v in self.timings.items()]
        return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _read_json(path: Path, step: str) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run 'torch-rlprune {step} --out {path.parent}' first.")
    return json.loads(path.read_text())


def read_config(out: PathLike) -> PipelineConfig:
    """The :class:`PipelineConfig` of the run in folder ``out`` (from its ``config.json``)."""
    return PipelineConfig.from_dict(_read_json(Path(out) / "config.json", "search")["config"])


def _convs(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, CONV_TYPES)]


def _reward(ws: Workspace) -> Callable[[nn.Module], float]:
    c = ws.config
    if c.reward == "accuracy":
        return Accuracy(ws.val_loader(), batches=c.reward_batches)
    if c.reward == "loss":
        return NegativeLoss(ws.val_loader(), batches=c.reward_batches)
    return MACsAware(ws.val_loader(), batches=c.reward_batches, example_inputs=ws.example_inputs)


def prune_model(
    ws: Workspace,
    model: nn.Module,
    init_state: dict[str, torch.Tensor] | None = None,
    *,
    method: str | None = None,
    amount: float | None = None,
    checkpoint: PathLike | None = None,
    resume: PathLike | None = None,
    writer: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Mask ``amount`` of ``model``'s filters with ``method`` (defaults: the config's) through ``global_structured``.

    ``init_state`` (a snapshot's state at init) is what ``"same_sign"`` compares the weights with.

    Returns the search summary: ``method``, ``reward``, ``seconds``, ``evaluations``, ``best_reward``,
    ``interrupted`` and the ``history`` (a list of records, empty for a criterion).
    """
    c = ws.config
    method = c.method if method is None else method
    amount = c.amount if amount is None else amount
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    convs = _convs(model)
    common = {"model": model, "example_inputs": ws.example_inputs, "amount": amount, "min_keep": c.min_keep}
    start = time.perf_counter()
    result = None
    if method in SEARCH_METHODS:
        result = global_structured(
            convs, SEARCH_METHODS[method], **common, reward=_reward(ws), episodes=c.episodes, seed=c.seed,
            progress=progress, writer=writer, checkpoint=checkpoint, resume=resume,
        )
    elif method == "snip":
        x, y = next(iter(batches(ws.splits.train, c.batch_size, shuffle=True,
                                 generator=torch.Generator().manual_seed(c.seed), device=ws.device)))  # fmt: skip
        global_structured(convs, "snip", **common, inputs=x, targets=y)
    elif method == "same_sign":
        if init_state is None:
            raise ValueError("same_sign compares with the weights at init; pass init_state.")
        global_structured(convs, "same_sign", **common, init_state=init_state)
    elif method == "random_mask":
        global_structured(convs, "random", **common, seed=c.seed)
    else:
        global_structured(convs, method, **common)
    seconds = time.perf_counter() - start
    return {
        "method": method,
        "amount": amount,
        "reward": c.reward if result is not None else None,
        "reward_batches": c.reward_batches if result is not None else None,
        "seconds": result.wall_time if result is not None else seconds,
        "evaluations": result.evaluations if result is not None else 0,
        "best_reward": result.best_reward if result is not None else None,
        "interrupted": bool(result.interrupted) if result is not None else False,
        "history": result.history if result is not None else [],
    }


def _train(ws: Workspace, model: nn.Module, epochs: int, callback: Callable[[dict[str, Any]], Any] | None,
           progress: bool, writer: Any, tag: str) -> list[dict[str, Any]]:  # fmt: skip
    c = ws.config

    def each(record: dict[str, Any]) -> Any:
        if writer is not None:
            for key in ("loss", "accuracy", "lr"):
                writer.add_scalar(f"{tag}/{key}", record[key], record["epoch"])
        return callback(record) if callback is not None else None

    return train(model, ws.train_loader(), epochs, lr=c.lr, seed=c.seed, progress=progress, callback=each)


def _history_csv(path: Path, history: Sequence[dict[str, Any]]) -> None:
    keys: list[str] = []
    for record in history:
        keys += [k for k in record if k not in keys]
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for record in history:
            writer.writerow({k: " ".join(map(str, v)) if isinstance(v, list) else v for k, v in record.items()})
    os.replace(tmp, path)


def _dense_record(ws: Workspace, model: nn.Module, history: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    return {**dataclasses.asdict(measure(model, ws)), "epochs": ws.config.epochs, "train_seconds": seconds,
            "history": history}  # fmt: skip


def search_step(
    config: PipelineConfig,
    out: PathLike,
    *,
    workspace: Workspace | None = None,
    dense: bool = False,
    resume: bool = False,
    writer: Any = None,
    progress: bool = False,
    log: Log = _silent,
) -> dict[str, Any]:
    """Step 1: train to epoch ``k``, search the mask there, and write it to the run folder ``out``.

    Writes ``config.json``, ``snapshots/``, ``mask.pt``, ``search.json`` and, for a search method, ``search.pt``
    and ``history.csv``. With ``dense=True`` the dense model trains all ``config.epochs`` epochs (snapshot at
    ``k`` on the way) and is measured into ``dense.json`` before it is rewound to ``k`` for the search; otherwise
    it trains only the first ``k`` epochs of that schedule. With ``resume=True`` and a ``snapshots/epoch<k>.pt``
    in ``out``, the training is skipped and the search continues from ``search.pt``.

    Returns:
        dict: the search summary, as written to ``search.json``.
    """
    ws = workspace or Workspace(config)
    c = ws.config
    out = Path(out)
    (out / "snapshots").mkdir(parents=True, exist_ok=True)
    _write_json(out / "config.json", {"format": "torch-rlprune/run", "version": 1, "config": c.to_dict(),
                                      "data": ws.describe(), "torch": torch.__version__})  # fmt: skip
    k = c.rewind_epoch
    at_k = snapshot_name(k)
    model = ws.build_model()
    started = time.perf_counter()
    train_seconds = 0.0
    checkpoint = out / "search.pt"
    snapshots = out / "snapshots"
    if resume and (snapshots / f"{at_k}.pt").is_file() and (snapshots / "init.pt").is_file():
        log(f"resuming: weights at {at_k} from {snapshots}, search from {checkpoint}")
        rewind(model, snapshots / f"{at_k}.pt")
    else:
        ticket = LotteryTicket(model, epochs=(k,) if k else (), directory=out / "snapshots")
        epochs = c.epochs if dense else k
        if epochs:
            log(f"training the dense {c.model} for {epochs} epoch(s){f' (snapshot at epoch {k})' if k else ''}")

            def step(record: dict[str, Any]) -> bool:
                ticket.step(record["epoch"])
                log(f"  dense epoch {record['epoch']}/{c.epochs}: loss {record['loss']:.4f}, "
                    f"train accuracy {record['accuracy']:.2%}, {record['seconds']:.1f} s")  # fmt: skip
                return not dense and record["epoch"] >= k

            history = _train(ws, model, c.epochs, step, progress, writer, "dense")
            train_seconds = time.perf_counter() - started
            if dense:
                record = _dense_record(ws, model, history, train_seconds)
                _write_json(out / "dense.json", record)
                log(f"dense control: test accuracy {record['accuracy']:.2%}")
                ticket.rewind(model, at_k)
        resume = False
    log(f"pruning {c.amount:.0%} of the filters with {c.method}"
        + (f" ({c.episodes} episodes, reward {c.reward} on {c.reward_batches} validation batches)" if c.searches else ""))  # fmt: skip
    init_state = Snapshot.load(snapshots / "init.pt").state
    summary = prune_model(ws, model, init_state, checkpoint=checkpoint if c.searches else None,
                          resume=checkpoint if resume and checkpoint.is_file() else None, writer=writer,
                          progress=progress)  # fmt: skip
    history = summary.pop("history")
    if history:
        _history_csv(out / "history.csv", history)
    save_mask(model, out / "mask.pt", ws.example_inputs)
    summary["filters_per_layer"] = {n: list(v) for n, v in filters_per_layer(model, ws.example_inputs).items()}
    summary["dense_train_seconds"] = train_seconds
    _write_json(out / "search.json", summary)
    best = f", best reward {summary['best_reward']:.4g}" if summary["evaluations"] else ""
    log(f"mask found in {summary['seconds']:.1f} s{best}; "
        f"{sum(k for k, _ in summary['filters_per_layer'].values())} filters kept")  # fmt: skip
    return summary


def slim_step(
    out: PathLike, *, rewind_to: str | None = None, workspace: Workspace | None = None, log: Log = _silent
) -> nn.Module:
    """Step 2: rewind the kept filters, slice the pruned ones out, and write ``ticket.pt``.

    Reads ``config.json``, ``mask.pt`` and ``snapshots/`` from the run folder ``out``. ``rewind_to``
    (``"init"`` or ``"k"``) overrides the config's and is recorded in ``config.json``.

    Returns:
        torch.nn.Module: the sliced network at the rewind point.
    """
    out = Path(out)
    config = read_config(out)
    if rewind_to is not None:
        config.rewind_to = rewind_to
    ws = workspace if workspace is not None else Workspace(config)
    ws.config.rewind_to = config.rewind_to
    data = _read_json(out / "config.json", "search")
    data["config"] = ws.config.to_dict()
    _write_json(out / "config.json", data)
    model = ws.build_model()
    if not (out / "mask.pt").is_file():
        raise FileNotFoundError(f"{out / 'mask.pt'} not found; run 'torch-rlprune search --out {out}' first.")
    load_mask(out / "mask.pt", model, ws.example_inputs)
    rewind(model, out / "snapshots" / f"{ws.config.rewind_name}.pt")
    save(model, out / "ticket.pt", ws.example_inputs)
    small = slim(model, ws.example_inputs)
    log(f"rewound the kept filters to {ws.config.rewind_name} and sliced the model: "
        f"{sum(p.numel() for p in small.parameters()):,} parameters; wrote {out / 'ticket.pt'}")  # fmt: skip
    return small


def train_step(
    out: PathLike,
    *,
    workspace: Workspace | None = None,
    writer: Any = None,
    progress: bool = False,
    log: Log = _silent,
) -> Report:
    """Step 3: train the sliced network of ``ticket.pt``, measure it, and write ``model.pt`` and the report.

    Reads ``config.json``, ``ticket.pt``, ``mask.pt``, ``search.json`` and ``dense.json`` from the run folder
    ``out``. Without a ``dense.json`` (``torch-rlprune search`` trains only to epoch ``k``) the dense control
    is trained first, from ``snapshots/init.pt`` with the same schedule.

    Returns:
        Report: the report, also written to ``report.json`` and ``report.md``.
    """
    out = Path(out)
    config = read_config(out)
    ws = workspace if workspace is not None else Workspace(config)
    c = ws.config
    search = _read_json(out / "search.json", "search")
    for name, step in (("ticket.pt", "slim"), ("mask.pt", "search")):
        if not (out / name).is_file():
            raise FileNotFoundError(f"{out / name} not found; run 'torch-rlprune {step} --out {out}' first.")
    timings = {"dense training": float(search.get("dense_train_seconds", 0.0)), "search": float(search["seconds"])}
    if (out / "dense.json").is_file():
        dense_record = json.loads((out / "dense.json").read_text())
        timings["dense training"] = float(dense_record.get("train_seconds", timings["dense training"]))
    else:
        log(f"training the dense control for {c.epochs} epoch(s) (same schedule)")
        model = ws.build_model()
        rewind(model, out / "snapshots" / "init.pt")
        started = time.perf_counter()
        history = _train(ws, model, c.epochs, None, progress, writer, "dense")
        dense_record = _dense_record(ws, model, history, time.perf_counter() - started)
        timings["dense training"] = dense_record["train_seconds"]
        _write_json(out / "dense.json", dense_record)

    small = load(out / "ticket.pt", ws.build_model(), ws.example_inputs, map_location=ws.device)
    log(f"training the pruned network for {c.epochs} epoch(s)")
    started = time.perf_counter()

    def each(record: dict[str, Any]) -> None:
        log(f"  pruned epoch {record['epoch']}/{c.epochs}: loss {record['loss']:.4f}, "
            f"train accuracy {record['accuracy']:.2%}, {record['seconds']:.1f} s")  # fmt: skip

    history = _train(ws, small, c.epochs, each, progress, writer, "pruned")
    timings["pruned training"] = time.perf_counter() - started
    pruned = measure(small, ws)
    log(f"pruned network: test accuracy {pruned.accuracy:.2%}")

    masked = load_mask(out / "mask.pt", ws.build_model(), ws.example_inputs)
    unslice(small, masked)
    save(masked, out / "model.pt", ws.example_inputs)
    check = load(out / "model.pt", ws.build_model(), ws.example_inputs, map_location=ws.device).eval()
    with torch.no_grad():
        if not torch.allclose(check(ws.example_inputs), small.eval()(ws.example_inputs), atol=1e-4, rtol=1e-4):
            raise RuntimeError(f"{out / 'model.pt'} does not reload as the trained network; please report this.")
    _write_json(out / "train.json", {**dataclasses.asdict(pruned), "epochs": c.epochs, "history": history})

    report = Report(
        config=c.to_dict(),
        data=ws.describe(),
        dense=Metrics.from_dict(dense_record),
        pruned=pruned,
        search={k: search[k] for k in SEARCH_FIELDS},
        filters_per_layer=search["filters_per_layer"],
        timings=timings,
    )
    _write_json(out / "report.json", report.to_dict())
    (out / "report.md").write_text(report.markdown())
    log(f"wrote {out / 'model.pt'}, {out / 'report.json'} and {out / 'report.md'}")
    return report


def run_pipeline(
    config: PipelineConfig,
    out: PathLike,
    *,
    writer: Any = None,
    progress: bool = False,
    log: Log = _silent,
    workspace: Workspace | None = None,
) -> Report:
    r"""Run the whole pipeline (see the module description) into the run folder ``out``.

    The three steps :func:`search_step` (with the dense control trained in full), :func:`slim_step` and
    :func:`train_step`, on data loaded once.

    Args:
        config (PipelineConfig): the settings.
        out (str or os.PathLike): the run folder (created if needed; files of an earlier run are replaced).
        writer (SummaryWriter, optional): TensorBoard writer for the search history and the training curves.
        progress (bool): tqdm progress bars. Default: ``False``.
        log (callable): receives every progress message. Default: none.
        workspace (Workspace, optional): data already loaded for ``config``.

    Returns:
        Report: dense vs pruned accuracy, parameters, MACs, latency, search time, filters per layer.
    """
    started = time.perf_counter()
    ws = workspace or Workspace(config)
    log(f"data {config.data}: {len(ws.splits.train)} train, {len(ws.splits.val)} validation (search reward), "
        f"{len(ws.splits.test)} test (final report only)")  # fmt: skip
    search_step(ws.config, out, workspace=ws, dense=True, writer=writer, progress=progress, log=log)
    slim_step(out, workspace=ws, log=log)
    report = train_step(out, workspace=ws, writer=writer, progress=progress, log=log)
    report.timings["total"] = time.perf_counter() - started
    _write_json(Path(out) / "report.json", report.to_dict())
    (Path(out) / "report.md").write_text(report.markdown())
    return report


# --------------------------------------------------------------------------------------------------------------
# Comparing methods
# --------------------------------------------------------------------------------------------------------------


def compare(
    config: PipelineConfig,
    methods: Sequence[str],
    amounts: Sequence[float],
    seeds: Sequence[int] = (0,),
    out: PathLike | None = None,
    *,
    progress: bool = False,
    log: Log = _silent,
    workspace: Workspace | None = None,
) -> list[dict[str, Any]]:
    r"""Every method at every amount (for every seed) through one pipeline and one training schedule.

    Per seed, the dense model is trained once (snapshot at ``config.rewind_epoch``) and measured; then for each
    method and amount a copy at epoch ``k`` is pruned, rewound (``config.rewind_to``), sliced, trained with the
    same schedule and measured on the test split. ``workspace`` holds data already loaded for one of the seeds.
    With ``out``, writes ``compare.csv``, ``compare.md``,
    ``compare.json`` and, where matplotlib is installed, ``compare.png`` (accuracy against sparsity and against
    MACs).

    Returns:
        list of dict: one row per network: ``method`` (``"dense"`` for the control), ``amount``, ``seed``,
        ``accuracy``, ``params``, ``macs``, ``filters``, ``latency_ms``, ``sparsity``, ``search_seconds``,
        ``evaluations``, ``best_reward``.
    """
    if not methods or not amounts or not seeds:
        raise ValueError("compare needs at least one method, one amount and one seed.")
    for method in methods:
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}.")
    for amount in amounts:
        dataclasses.replace(config, amount=amount).validate()
    rows: list[dict[str, Any]] = []
    for seed in seeds:
        ws = (workspace if workspace is not None and workspace.config == dataclasses.replace(config, seed=seed)
              else Workspace(dataclasses.replace(config, seed=seed)))
        c = ws.config
        k = c.rewind_epoch
        model = ws.build_model()
        ticket = LotteryTicket(model, epochs=(k,) if k else ())
        log(f"seed {seed}: training the dense {c.model} for {c.epochs} epochs")
        started = time.perf_counter()
        _train(ws, model, c.epochs, lambda r, t=ticket: t.step(r["epoch"]) and None, progress, None, "dense")
        dense = measure(model, ws)
        rows.append({"method": "dense", "amount": 0.0, "seed": seed, **dataclasses.asdict(dense), "sparsity": 0.0,
                     "search_seconds": 0.0, "evaluations": 0, "best_reward": None,
                     "train_seconds": time.perf_counter() - started})  # fmt: skip
        log(f"  dense: test accuracy {dense.accuracy:.2%}")
        for amount in amounts:
            for method in methods:
                pruned = ws.build_model()
                ticket.rewind(pruned, snapshot_name(k))
                search = prune_model(ws, pruned, ticket["init"].state, method=method, amount=amount, progress=progress)
                ticket.rewind(pruned, c.rewind_name)
                small = slim(pruned, ws.example_inputs)
                started = time.perf_counter()
                _train(ws, small, c.epochs, None, progress, None, "pruned")
                metrics = measure(small, ws)
                rows.append({"method": method, "amount": amount, "seed": seed, **dataclasses.asdict(metrics),
                             "sparsity": 1 - metrics.filters / dense.filters, "search_seconds": search["seconds"],
                             "evaluations": search["evaluations"], "best_reward": search["best_reward"],
                             "train_seconds": time.perf_counter() - started})  # fmt: skip
                log(f"  {method} at {amount:.0%}: test accuracy {metrics.accuracy:.2%}, MACs {_count(metrics.macs)}, "
                    f"search {search['seconds']:.1f} s")  # fmt: skip
    if out is not None:
        write_comparison(rows, out, config, log=log)
    return rows


_CSV_FIELDS = ("method", "amount", "seed", "accuracy", "params", "macs", "filters", "latency_ms", "sparsity",
               "search_seconds", "evaluations", "best_reward", "train_seconds")  # fmt: skip


def comparison_table(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows averaged over seeds: one per (method, amount), with the accuracy's mean and standard deviation.

    Example:
        >>> rows = [{"method": "l1", "amount": 0.5, "seed": s, "accuracy": a, "params": 10, "macs": 20,
        ...          "filters": 4, "latency_ms": 1.0, "sparsity": 0.5, "search_seconds": 0.1}
        ...         for s, a in ((0, 0.8), (1, 0.9))]
        >>> [(r["method"], round(r["accuracy"], 3), round(r["accuracy_std"], 3), r["seeds"]) for r in comparison_table(rows)]
        [('l1', 0.85, 0.071, 2)]
    """
    groups: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["method"], row["amount"]), []).append(row)
    table = []
    for (method, amount), members in groups.items():
        acc = [r["accuracy"] for r in members]
        mean = {k: statistics.fmean(r[k] for r in members)
                for k in ("params", "macs", "filters", "latency_ms", "sparsity", "search_seconds")}  # fmt: skip
        table.append({"method": method, "amount": amount, "seeds": len(members), "accuracy": statistics.fmean(acc),
                      "accuracy_std": statistics.stdev(acc) if len(acc) > 1 else 0.0, **mean})  # fmt: skip
    return table


def comparison_markdown(rows: Sequence[dict[str, Any]], config: PipelineConfig | None = None) -> str:
    """The comparison as a Markdown table (means over seeds, accuracy ± standard deviation)."""
    lines = ["# torch-rlprune comparison", ""]
    if config is not None:
        lines += [
            (f"{_model_label(config.to_dict())} on {config.data}; mask searched at epoch {config.rewind_epoch}, kept "
             f"filters rewound to {'init' if config.rewind_to == 'init' else 'epoch ' + str(config.rewind_epoch)}; "
             f"every network trained {_plural(config.epochs, 'epoch')} with one schedule. Search methods: "
             f"{_plural(config.episodes, 'episode')}, reward {config.reward} on "
             f"{_plural(config.reward_batches, 'validation batch', 'validation batches')}. Accuracy on the test "
             "split. Amount counts filters (output channels of convolutions)."),
            "",
        ]
    lines += ["| method | amount | seeds | test accuracy | params | MACs | filters | CPU latency (ms) | search (s) |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for r in comparison_table(rows):
        std = f" ± {100 * r['accuracy_std']:.1f}" if r["seeds"] > 1 else ""
        lines.append(
            f"| {r['method']} | {r['amount']:.2f} | {r['seeds']} | {100 * r['accuracy']:.1f}%{std} | "
            f"{r['params']:,.0f} | {r['macs']:,.0f} | {r['filters']:.0f} | {r['latency_ms']:.2f} | "
            f"{r['search_seconds']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def comparison_plot(rows: Sequence[dict[str, Any]], path: PathLike) -> bool:
    """Plot test accuracy against filter sparsity and against MACs into a PNG; ``False`` without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import NullFormatter
    except ImportError:
        return False
    table = comparison_table(rows)
    figure = Figure(figsize=(10, 4), layout="constrained")
    FigureCanvasAgg(figure)
    by_sparsity, by_macs = figure.subplots(1, 2)
    dense = [r for r in table if r["method"] == "dense"]
    for r in dense:
        by_sparsity.axhline(100 * r["accuracy"], color="black", linestyle="--", linewidth=1, label="dense")
        by_macs.scatter([r["macs"]], [100 * r["accuracy"]], color="black", marker="*", s=80, label="dense", zorder=3)
    for method in dict.fromkeys(r["method"] for r in table if r["method"] != "dense"):
        points = sorted((r for r in table if r["method"] == method), key=lambda r: r["amount"])
        acc = [100 * r["accuracy"] for r in points]
        err = [100 * r["accuracy_std"] for r in points]
        by_sparsity.errorbar([r["amount"] for r in points], acc, yerr=err, marker="o", capsize=3, label=method)
        by_macs.errorbar([r["macs"] for r in points], acc, yerr=err, marker="o", capsize=3, label=method)
    by_sparsity.set(xlabel="filters pruned (fraction)", ylabel="test accuracy (%)", title="accuracy vs sparsity")
    by_macs.set(xlabel="MACs per example", ylabel="test accuracy (%)", title="accuracy vs MACs", xscale="log")
    by_macs.xaxis.set_minor_formatter(NullFormatter())
    for axes in (by_sparsity, by_macs):
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
    figure.savefig(str(path), dpi=120)
    return True


def write_comparison(rows: Sequence[dict[str, Any]], out: PathLike, config: PipelineConfig | None = None,
                     log: Log = _silent) -> list[Path]:  # fmt: skip
    """Write ``compare.csv``, ``compare.json``, ``compare.md`` and ``compare.png`` (with matplotlib) into ``out``.

    Returns:
        list of Path: the files written.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "compare.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    _write_json(out / "compare.json", {"config": config.to_dict() if config else None, "rows": list(rows)})
    (out / "compare.md").write_text(comparison_markdown(rows, config))
    written = [out / "compare.csv", out / "compare.json", out / "compare.md"]
    if comparison_plot(rows, out / "compare.png"):
        written.append(out / "compare.png")
    else:
        log('matplotlib is not installed, so no compare.png: pip install "torch-rlprune[plot]" (or matplotlib).')
    return written
