"""The settings of a pipeline run: :class:`PipelineConfig`, the method and reward names, and the models it builds
(``MODEL_SOURCES``, the one table of model specs)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import nn

from ..criteria import CRITERIA
from ..methods import SEARCH_METHODS, RLStructuredPruning, takes_budget
from ..selection import BUDGETS, Budget
from ..search.rewards import REWARDS as REWARD_TYPES
from .wording import plural

PathLike = Union[str, os.PathLike]
Log = Callable[[str], Any]

#: The criteria of :mod:`torch_rlprune.criteria` by the name the command gives them: ``"random"`` is random
#: *search* there (the best of ``episodes`` random masks, one of :data:`SEARCH_METHODS`), so one random mask is
#: ``"random_mask"``. They need no data, except ``"snip"`` (one training batch) and ``"same_sign"`` (the weights
#: at init).
CRITERION_METHODS = {("random_mask" if name == "random" else name): name for name in CRITERIA}
#: Every method name: the search methods (rewarded on validation data), then the criteria.
METHODS = (*SEARCH_METHODS, *CRITERION_METHODS)
#: Rewards of the search methods (see :data:`torch_rlprune.search.rewards.REWARDS`): validation accuracy, minus
#: the validation loss, AMC's ``-error * log(MACs)``.
REWARDS = tuple(REWARD_TYPES)
#: The policies of the REINFORCE search (``method="rl"``).
POLICIES = tuple(RLStructuredPruning.policy_options)


def silent(message: str) -> None:
    """A :data:`Log` that drops every message: the default of the steps that log.

    Args:
        message (str): ignored.

    Example:
        >>> silent("trained")
    """


@dataclass
class PipelineConfig:
    r"""The settings of one pipeline run; every field has the default of ``torch-rlprune run``.

    Args:
        model (str): ``"basiccnn"``, a torchvision classification model such as ``"resnet18"`` (built with
            ``torchvision.models.get_model(name, num_classes=...)``), or ``"timm:NAME"`` for a timm model (built
            with ``timm.create_model(NAME, pretrained=False, num_classes=..., in_chans=...)``; needs ``pip install
            timm``); always untrained. See :func:`resolve_model`. Default: ``"basiccnn"``.
        width (float): filter multiplier of ``"basiccnn"``. Default: 1.0.
        weights (str, optional): a ``state_dict`` file (``torch.save(model.state_dict(), path)``) of the model to
            start from, for a network already trained: the mask is searched at these weights (``rewind_epoch``
            must be 0), no dense network is trained (the report's dense row is this network as loaded), and the
            pruned network is fine-tuned from its kept weights for ``epochs`` epochs (``rewind_to="init"`` keeps
            them). Default: ``None`` (an untrained model).
        data (str): ``"digits"`` (offline), ``"cifar10"`` or ``"imagefolder:PATH"``. Default: ``"digits"``.
        data_root (str, optional): the folder of ``"cifar10"``.
        download (bool): let ``"cifar10"`` download the data. Default: ``False``.
        image_size (int, optional): resize the images. Default: the dataset's size.
        val_fraction (float): fraction of the training data held out as the validation split the search is
            rewarded on. Default: 0.1.
        augment (bool, optional): random crops and flips while training. Default: on, except for ``"digits"``.
        method (str): one of :data:`METHODS`. Default: ``"rl"``.
        amount (float): fraction of the filters to prune, in (0, 1) (of the ``budget``'s cost where it is not
            ``"filters"``). Default: 0.7.
        min_keep (int or float): filters every layer keeps at least, as a count (int) or as a fraction of the
            layer's filters (float, rounded up). Default: 0.05, a floor that keeps a search at high sparsity from
            starving the early layers (see :doc:`search`).
        episodes (int): masks a search method evaluates. Default: 300.
        reward (str): one of :data:`REWARDS`. Default: ``"accuracy"``.
        reward_batches (int): validation batches each reward reads. Default: 2.
        recalibrate (int): training batches that re-estimate every candidate's batch-norm statistics before its
            reward (:class:`torch_rlprune.rewards.Recalibrated`); 0 evaluates with each validation batch's own
            statistics. Default: 0.
        policy (str): the REINFORCE policy of ``method="rl"``: ``"widths"`` (one keep fraction per layer, the
            filters inside learnt from their :func:`~torch_rlprune.criteria.bn_output` ranking) or ``"filters"``
            (one logit per filter); see :class:`torch_rlprune.RLStructuredPruning`. Default: ``"widths"``.
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
        budget (str): what ``amount`` is a share of: ``"filters"``, or a cost of the sliced network, ``"macs"``
            (per example) or ``"params"`` (:data:`torch_rlprune.selection.BUDGETS`): ``amount=0.7`` then prunes
            until at most 30% of it is left. Rankings and the searches over layer widths (``method="rl"`` with
            ``policy="widths"``, ``"random_width"``) take such a budget. Default: ``"filters"``.
        reward_pool (int): sets of ``reward_batches`` full validation batches that the search's steps score on in
            turn, so that a long search does not learn a few images (see :class:`torch_rlprune.rewards.Accuracy`).
            Above 1 it needs ``finalists``: the best rewards then come from different sets. Default: 1.
        finalists (int): the search keeps its ``finalists`` best distinct masks and spends that many of its
            ``episodes`` re-scoring them on the ``reward_batches`` validation batches after those its rewards read,
            returning the best there (see :class:`torch_rlprune.RLStructuredPruning`); 0 returns the mask of
            highest reward. Default: 0.
    """

    model: str = "basiccnn"
    width: float = 1.0
    weights: str | None = None
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
    recalibrate: int = 0
    policy: str = "widths"
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
    budget: str = "filters"
    reward_pool: int = 1
    finalists: int = 0

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
        if self.policy not in POLICIES:
            raise ValueError(f"unknown policy {self.policy!r}; choose one of {', '.join(POLICIES)}.")
        if isinstance(self.recalibrate, bool) or not isinstance(self.recalibrate, int) or self.recalibrate < 0:
            raise ValueError(f"recalibrate must be a number of training batches >= 0, got {self.recalibrate!r}.")
        if isinstance(self.amount, bool) or not isinstance(self.amount, (int, float)) or not 0 < self.amount < 1:
            raise ValueError(
                f"amount must be a fraction of the filters strictly between 0 and 1 (0.7 prunes 70%), got "
                f"{self.amount!r}."
            )
        if self.budget != "filters":
            self._check_budget()
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got {self.val_fraction!r}.")
        for name in ("episodes", "reward_batches", "reward_pool", "epochs", "batch_size", "latency_batch",
                     "latency_threads"):
            _positive(name, getattr(self, name), int)
        finalists = self.finalists
        if isinstance(finalists, bool) or not isinstance(finalists, int) or not 0 <= finalists < self.episodes:
            raise ValueError(f"finalists must be an int >= 0 and below episodes ({self.episodes}), got {finalists!r}.")
        if self.reward_pool > 1 and not finalists:
            raise ValueError(
                f"reward_pool={self.reward_pool} scores the search's steps on different validation sets, so its best "
                "rewards are not comparable: re-score the best masks on fresh batches with finalists (e.g. 4)."
            )
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
        if self.weights is not None:
            if not Path(self.weights).expanduser().is_file():
                raise ValueError(f"the weights file {self.weights} does not exist; pass a file written by "
                                 "torch.save(model.state_dict(), path).")  # fmt: skip
            if self.rewind_epoch != 0:
                raise ValueError(
                    f"weights start from a trained network and the mask is searched at those weights; set "
                    f"rewind_epoch to 0 (it is {self.rewind_epoch})."
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

    def _check_budget(self) -> None:
        if self.budget not in BUDGETS:
            raise ValueError(f"unknown budget {self.budget!r}; choose one of filters, {', '.join(BUDGETS)}.")
        method = SEARCH_METHODS.get(self.method) or CRITERION_METHODS[self.method]
        if not takes_budget(method, policy=self.policy):
            policy = f" with policy {self.policy}" if method is RLStructuredPruning else ""
            raise ValueError(
                f"{self.method}{policy} keeps a filter count: a {self.budget} budget needs a criterion or a search "
                "over layer widths (method rl with policy widths, or random_width); or use --budget filters."
            )

    def amount_for(self, amount: float | None = None) -> float | Budget:
        """What ``global_structured`` gets as its ``amount`` for ``amount`` (default: :attr:`amount`): the fraction
        itself, or for a cost ``budget`` the :class:`~torch_rlprune.selection.Budget` that keeps the rest."""
        amount = self.amount if amount is None else amount
        return amount if self.budget == "filters" else BUDGETS[self.budget](1 - amount)

    @property
    def search_summary(self) -> str:
        """The search's budget and reward, in words, for logs and reports.

        Example:
            >>> PipelineConfig(episodes=192, reward_batches=2, reward_pool=7, finalists=4).search_summary
            'reward accuracy on 7 sets of 2 validation batches, 192 episodes, 4 finalists re-scored on fresh batches'
        """
        batches = plural(self.reward_batches, "validation batch", "validation batches")
        sets = f"{self.reward_pool} sets of " if self.reward_pool > 1 else ""
        finalists = f", {plural(self.finalists, 'finalist')} re-scored on fresh batches" if self.finalists else ""
        return f"reward {self.reward} on {sets}{batches}, {plural(self.episodes, 'episode')}{finalists}"

    @property
    def amount_counts(self) -> str:
        """What :attr:`amount` is a share of, in words."""
        return "filters" if self.budget == "filters" else BUDGETS[self.budget].counts

    @property
    def amount_description(self) -> str:
        """What :attr:`amount` counts, as the reports explain it."""
        return "filters (output channels of convolutions)" if self.budget == "filters" else self.amount_counts

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


@dataclass(frozen=True)
class ModelSource:
    r"""One family of model names a :class:`PipelineConfig` can build: how to list them and how to build one.

    A model spec is ``"PREFIX:NAME"`` for a source with a prefix (``"timm:resnet18"``), or a bare name, looked up
    in the sources without one (``"basiccnn"``, ``"resnet18"``).

    Args:
        prefix (str): what the spec starts with before the colon; ``""`` for bare names.
        names (callable): ``() -> list[str]``, the names the source builds, without the prefix. Raises
            ``ImportError`` naming the ``pip install`` when the package behind the source is missing.
        build (callable): ``(name, num_classes, in_channels, image_size, config) -> nn.Module``, a model with
            freshly initialised (untrained) weights.
        listing (str): how a user lists the names, for error messages.
    """

    prefix: str
    names: Callable[[], list[str]]
    build: Callable[[str, int, int, int, PipelineConfig], nn.Module]
    listing: str


def _build_basiccnn(
    name: str, num_classes: int, in_channels: int, image_size: int, config: PipelineConfig
) -> nn.Module:
    from ..models import BasicCNN

    return BasicCNN(num_classes, in_channels, width=config.width, input_size=image_size)


def _torchvision_names() -> list[str]:
    import torchvision

    return torchvision.models.list_models(module=torchvision.models)


def _build_torchvision(
    name: str, num_classes: int, in_channels: int, image_size: int, config: PipelineConfig
) -> nn.Module:
    import torchvision

    if in_channels != 3:
        raise ValueError(f"{name} takes 3-channel images; the data has {in_channels} channels.")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def _timm() -> Any:
    try:
        import timm
    except ImportError:  # timm is optional: only timm:NAME specs need it
        raise ImportError("--model timm:NAME needs timm, which is not installed: pip install timm") from None
    return timm


def _build_timm(
    name: str, num_classes: int, in_channels: int, image_size: int, config: PipelineConfig
) -> nn.Module:
    return _timm().create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)


#: Where model specs come from, in the order bare names are looked up: BasicCNN, torchvision's classification
#: models, and ``timm:NAME`` for timm's (``pip install timm``). Every spec is checked and built through this table.
MODEL_SOURCES = (
    ModelSource("", lambda: ["basiccnn"], _build_basiccnn, "basiccnn"),
    ModelSource("", _torchvision_names, _build_torchvision,
                "a torchvision classification model (torchvision.models.list_models())"),
    ModelSource("timm", lambda: _timm().list_models(), _build_timm, "timm:NAME (NAME from timm.list_models())"),
)  # fmt: skip


def _spec(source: ModelSource, name: str) -> str:
    return f"{source.prefix}:{name}" if source.prefix else name


def model_names() -> list[str]:
    """The model specs :class:`PipelineConfig` accepts here: ``"basiccnn"``, torchvision's classification models
    and, when timm is installed, ``"timm:NAME"`` for each of timm's models.

    Example:
        >>> names = model_names()
        >>> names[0], "resnet18" in names
        ('basiccnn', True)
    """
    names = []
    for source in MODEL_SOURCES:
        try:
            names += [_spec(source, name) for name in source.names()]
        except ImportError:
            pass  # the package of an optional source is not installed, so none of its names can be built
    return names


def resolve_model(spec: str) -> tuple[ModelSource, str]:
    """The source in ``MODEL_SOURCES``, the one table of model specs, that builds ``spec``, and its name there.

    Args:
        spec (str): ``"basiccnn"``, a torchvision name such as ``"resnet18"``, or ``"timm:NAME"``.

    Returns:
        ``(source, name)``, with the prefix stripped from ``name``.

    Raises:
        ValueError: an unknown spec, with close matches from the same source.
        ImportError: a source whose package is missing (``timm:NAME`` without timm), naming the ``pip install``.

    Example:
        >>> source, name = resolve_model("resnet18")
        >>> source.listing, name
        ('a torchvision classification model (torchvision.models.list_models())', 'resnet18')
    """
    prefix, colon, name = str(spec).partition(":")
    if not colon:
        prefix, name = "", str(spec)
    sources = [s for s in MODEL_SOURCES if s.prefix == prefix]
    if not sources:
        raise ValueError(f"unknown model {spec!r}; use {_listings(MODEL_SOURCES)}.")
    known = {}  # name -> spec, compared without the prefix that every candidate shares
    for source in sources:
        names = source.names()
        if name in names:
            return source, name
        known.update((n, _spec(source, n)) for n in names)
    close = [known[n] for n in difflib.get_close_matches(name, list(known), n=3)]
    hint = f"; did you mean {', '.join(close)}?" if close else "."
    # A bare name may have been meant for a source with a prefix, so its error lists them all.
    raise ValueError(f"unknown model {spec!r}{hint} Use {_listings(sources if prefix else MODEL_SOURCES)}.")


def _listings(sources: Sequence[ModelSource]) -> str:
    listings = [s.listing for s in sources]
    return " or ".join(filter(None, [", ".join(listings[:-1]), listings[-1]]))


def check_model_name(name: str) -> None:
    """Raise a ``ValueError`` (with close matches) unless :func:`resolve_model` knows the model spec ``name``.

    Example:
        >>> check_model_name("resnet81")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown model 'resnet81'; did you mean resnet18, ...? Use basiccnn, a torchvision ...
    """
    resolve_model(name)


def build_model(config: PipelineConfig, num_classes: int, in_channels: int = 3, image_size: int = 32) -> nn.Module:
    """A freshly initialised model as ``config`` names it, built under ``config.seed`` (the same seed, the same init).

    The global random state is left as it was.

    Args:
        config (PipelineConfig): its ``model`` spec (see :func:`resolve_model`), ``width`` and ``seed``.
        num_classes (int): classes of the data: the model's outputs.
        in_channels (int): channels of the data's images. Default: 3.
        image_size (int): side of the data's square images. Default: 32.

    Returns:
        The model, untrained, on the CPU.

    Example:
        >>> build_model(PipelineConfig(model="resnet18"), num_classes=7).fc.out_features
        7
    """
    source, name = resolve_model(config.model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return source.build(name, num_classes, in_channels, image_size, config)
