"""The data of one run and the models built from it."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import read_checked
from ..data import Splits, batches, load_data
from ..training import train
from .config import PipelineConfig, build_model


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
        self.check_reward_data()
        self._check_model_runs()

    def check_reward_data(self, config: PipelineConfig | None = None) -> None:
        """Raise a ``ValueError`` if the validation split cannot hold the full batches that the search of
        ``config`` (default: the run's) scores on: its reward pool, and one more set for its finalists.

        Called before any training, rather than found at the first reward, which comes after it.

        Args:
            config (PipelineConfig, optional): settings on this run's data, e.g. with another method.

        Example:
            >>> from torch_rlprune.pipeline import PipelineConfig, Workspace
            >>> ws = Workspace(PipelineConfig(width=0.25))  # 144 validation images: 1 batch of 128
            >>> ws.check_reward_data(PipelineConfig(reward_batches=1, reward_pool=2, finalists=1))
            Traceback (most recent call last):
            ...
            ValueError: reward_pool=2 sets of 1 validation batches and one more set for finalists=1 need 3 full ...
        """
        c = self.config if config is None else config
        full = len(self.splits.val) // c.batch_size
        sets = c.reward_pool + (c.finalists > 0)  # the finalists are re-scored on the set after the pool
        if c.searches and sets > 1 and sets * c.reward_batches > full:
            uses = f"reward_pool={c.reward_pool} sets of {c.reward_batches} validation batches" + (
                f" and one more set for finalists={c.finalists}" if c.finalists else "")
            raise ValueError(
                f"{uses} need {sets * c.reward_batches} full batches of {c.batch_size}, but the validation split of "
                f"{c.data} has {len(self.splits.val)} images ({full} full batches); lower --reward-pool, "
                "--finalists, --reward-batches or --batch-size, or raise --val-fraction."
            )

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
        """The model at its seeded initialisation, or with the config's ``weights``, on the run's device."""
        s = self.splits
        model = build_model(self.config, s.num_classes, s.in_channels, s.image_size)
        if self.config.weights is not None:
            state = read_checked(Path(self.config.weights).expanduser(), "state_dict file", "weights")
            try:
                model.load_state_dict(state)
            except (RuntimeError, TypeError, AttributeError) as error:
                # torch's message starts with a header line; the first mismatch it lists says what differs.
                lines = [line.strip() for line in str(error).splitlines() if line.strip()]
                detail = lines[1] if len(lines) > 1 else lines[0] if lines else type(error).__name__
                raise ValueError(
                    f"weights: {self.config.weights} does not fit the {self.config.model} built for this data "
                    f"({s.num_classes} classes, {s.in_channels} channels; {detail.rstrip('.')}); save the "
                    "state_dict of the same --model and --width, trained on data with the same classes."
                ) from None
        return model.to(self.device)

    def train_loader(self) -> Iterable[Any]:
        """Training batches, shuffled (and augmented) the same way in every run with the same seed."""
        generator = torch.Generator().manual_seed(self.config.seed)
        return batches(self.splits.train, self.config.batch_size, shuffle=True, generator=generator,
                       augment=self.augment, device=self.device)  # fmt: skip

    def train(
        self,
        model: nn.Module,
        epochs: int,
        callback: Callable[[dict[str, Any]], Any] | None = None,
        progress: bool = False,
        writer: Any = None,
        tag: str = "train",
    ) -> list[dict[str, Any]]:
        """Train ``model`` with the run's schedule: :func:`torch_rlprune.training.train` at the config's ``lr`` and
        ``seed``, on :meth:`train_loader`.

        Args:
            model (torch.nn.Module): the network, on the run's device.
            epochs (int): epochs to train.
            callback (callable, optional): called with every epoch's record.
            progress (bool): show a progress bar. Default: ``False``.
            writer (optional): a TensorBoard ``SummaryWriter``; it gets the loss, accuracy and learning rate of
                every epoch under ``tag``.
            tag (str): the writer's prefix. Default: ``"train"``.

        Returns:
            list of dict: the history, one record per epoch.

        Example:
            >>> from torch_rlprune.pipeline import PipelineConfig, Workspace
            >>> ws = Workspace(PipelineConfig(width=0.25))
            >>> [r["epoch"] for r in ws.train(ws.build_model(), 1)]
            [1]
        """
        c = self.config

        def each(record: dict[str, Any]) -> Any:
            if writer is not None:
                for key in ("loss", "accuracy", "lr"):
                    writer.add_scalar(f"{tag}/{key}", record[key], record["epoch"])
            return callback(record) if callback is not None else None

        return train(model, self.train_loader(), epochs, lr=c.lr, seed=c.seed, progress=progress, callback=each)

    def val_loader(self) -> Iterable[Any]:
        """Validation batches, in order: what search rewards read."""
        return batches(self.splits.val, self.config.batch_size, device=self.device)

    def fresh_val_batches(self) -> list[Any]:
        """The ``reward_batches`` validation batches after those the search's rewards read (its pool): what its
        finalists are re-scored on.

        Returns:
            list: ``(inputs, targets)`` pairs, on the run's device.

        Example:
            >>> from torch_rlprune.pipeline import PipelineConfig, Workspace
            >>> ws = Workspace(PipelineConfig(width=0.25, batch_size=48, reward_batches=1, reward_pool=2, finalists=1))
            >>> [len(y) for _, y in ws.fresh_val_batches()]  # the third batch of 48
            [48]
        """
        c = self.config
        skip = c.reward_pool * c.reward_batches
        return list(itertools.islice(self.val_loader(), skip, skip + c.reward_batches))

    def test_loader(self) -> Iterable[Any]:
        """Test batches, in order: read for the final report only."""
        return batches(self.splits.test, max(self.config.batch_size, 256), device=self.device)

    def describe(self) -> dict[str, Any]:
        """Sizes of the splits and what each one is used for."""
        s = self.splits
        return {"spec": self.config.data, "train": len(s.train), "val": len(s.val), "test": len(s.test),
                "classes": s.num_classes, "image": [s.in_channels, s.image_size, s.image_size],
                "use": "val (carved out of the training data) rewards the search; test is for this report only"}  # fmt: skip
