"""Image classification data as in-memory tensors, for fast work on small machines.

:func:`load_data` reads a dataset once into ``uint8`` image tensors (CIFAR-10's 50,000 training images take
150 MB so, against 600 MB as ``float32``) and splits it three ways: ``train``, a seeded ``val`` split carved out
of the training data (what a mask search is rewarded on), and ``test`` (for final reports only; choosing a mask
by its test accuracy would make that accuracy meaningless). Images are normalised per channel with the mean and
standard deviation of the ``train`` split when they are read.

:func:`batches` iterates such a dataset by slicing whole batches out of the tensors, with optional CIFAR-style
augmentation (random crop with 4 pixels of zero padding and horizontal flip) done on the batch. On 2 CPU cores it
reads an epoch of CIFAR-10's training split in about 0.05 s (0.6 s with augmentation), against
0.7 s for a :class:`torch.utils.data.DataLoader` over the same dataset, which builds every batch from single
examples; the datasets work with a ``DataLoader`` too.

Example:
    >>> import torch
    >>> from torch_rlprune.data import ImageTensorDataset, batches
    >>> images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    >>> data = ImageTensorDataset(images, torch.arange(10) % 2)
    >>> x, y = next(iter(batches(data, batch_size=4)))
    >>> x.dtype, tuple(x.shape), y.tolist()
    (torch.float32, (4, 3, 8, 8), [0, 1, 0, 1])
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

__all__ = ["ImageTensorDataset", "Splits", "TensorLoader", "augment_batch", "batches", "channel_stats", "load_data"]

_SPECS = '"digits", "imagefolder:PATH" or "cifar10"'
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


class ImageTensorDataset(Dataset):
    r"""Images held as one ``uint8`` tensor, returned normalised as ``float32``.

    Indexing gives ``(image, target)`` like a :class:`torch.utils.data.TensorDataset`, the image as
    ``(image - mean) / std`` with ``mean`` and ``std`` per channel on the 0-255 scale. :func:`batches` reads
    :meth:`batch` instead, which normalises a whole batch at once.

    Args:
        images (torch.Tensor): ``[N, C, H, W]`` images, ``uint8``.
        targets (torch.Tensor): ``[N]`` class indices, integer.
        mean (sequence of float, optional): per-channel mean on the 0-255 scale. Default: that of ``images``.
        std (sequence of float, optional): per-channel standard deviation on the 0-255 scale. Default: that of
            ``images``.
        classes (sequence of str, optional): class names, in target order.

    Example:
        >>> import torch
        >>> from torch_rlprune.data import ImageTensorDataset
        >>> images = torch.full((2, 1, 4, 4), 128, dtype=torch.uint8)
        >>> data = ImageTensorDataset(images, torch.tensor([0, 1]), mean=[128.0], std=[64.0])
        >>> image, target = data[1]
        >>> float(image.abs().max()), int(target), len(data)
        (0.0, 1, 2)
    """

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        mean: Sequence[float] | torch.Tensor | None = None,
        std: Sequence[float] | torch.Tensor | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError("ImageTensorDataset: images must be a uint8 tensor of shape [N, C, H, W].")
        if not isinstance(targets, torch.Tensor) or targets.dtype.is_floating_point or targets.dim() != 1:
            raise TypeError("ImageTensorDataset: targets must be a 1-D integer tensor of class indices.")
        if len(images) != len(targets):
            raise ValueError(f"ImageTensorDataset: {len(images)} images but {len(targets)} targets.")
        self.images = images
        self.targets = targets.long()
        stats = channel_stats(images) if mean is None or std is None else None
        self.mean = torch.as_tensor(stats[0] if mean is None else mean, dtype=torch.float32).reshape(-1)
        self.std = torch.as_tensor(stats[1] if std is None else std, dtype=torch.float32).reshape(-1)
        channels = images.shape[1]
        if self.mean.numel() != channels or self.std.numel() != channels:
            raise ValueError(f"ImageTensorDataset: mean and std need one value per channel ({channels}).")
        if not bool((self.std > 0).all()):
            raise ValueError("ImageTensorDataset: std must be positive in every channel.")
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.normalize(self.images[index]), self.targets[index]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Turn ``uint8`` images (``[C, H, W]`` or ``[B, C, H, W]``) into normalised ``float32``."""
        shape = (-1, 1, 1)
        return (images.float() - self.mean.to(images.device).view(shape)) / self.std.to(images.device).view(shape)

    def batch(self, indices: torch.Tensor, augment: bool = False, generator: torch.Generator | None = None):
        """The normalised images and targets at ``indices`` (optionally augmented, see :func:`augment_batch`)."""
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        images = self.images.index_select(0, indices)
        if augment:
            images = augment_batch(images, generator=generator)
        return self.normalize(images), self.targets.index_select(0, indices)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]


@dataclass
class Splits:
    """The three splits returned by :func:`load_data`, and what a model needs to know about them.

    Attributes:
        train (ImageTensorDataset): training data (without the validation examples).
        val (ImageTensorDataset): validation data carved out of the training data, for search rewards and
            model selection.
        test (ImageTensorDataset): test data, for final reports only.
        num_classes (int): number of classes.
        in_channels (int): channels of an image.
        image_size (int): side of the (square) images; for non-square images, their height.
        classes (list of str): class names in target order.
    """

    train: ImageTensorDataset
    val: ImageTensorDataset
    test: ImageTensorDataset
    num_classes: int
    in_channels: int
    image_size: int
    classes: list[str]


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of ``uint8`` images ``[N, C, H, W]``, on the 0-255 scale.

    Computed in chunks in ``float64``, so no ``float`` copy of the whole tensor is made.

    Example:
        >>> import torch
        >>> mean, std = channel_stats(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
        >>> mean.tolist(), std.tolist()
        ([127.5], [127.5])
    """
    if len(images) == 0:
        raise ValueError("channel_stats: no images.")
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].transpose(0, 1).reshape(images.shape[1], -1).double()
        total += part.sum(1)
        squares += part.square().sum(1)
    count = images.numel() // images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt()
    return mean.float(), std.clamp_min(1e-3).float()


def augment_batch(images: torch.Tensor, padding: int = 4, flip: bool = True,
                  generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    r"""CIFAR-style augmentation of a batch: random crop after zero padding, and random horizontal flip.

    Every image gets its own crop offset and flip, drawn from ``generator``; the result has the input's shape
    and dtype. On ``uint8`` images the padding is black, as with ``torchvision.transforms.RandomCrop(padding=4)``
    before ``Normalize``.

    Args:
        images (torch.Tensor): ``[B, C, H, W]`` batch.
        padding (int): pixels of zero padding on every side before cropping. Default: 4.
        flip (bool): flip half of the images horizontally. Default: ``True``.
        generator (torch.Generator, optional): source of randomness (on the CPU).

    Returns:
        torch.Tensor: the augmented batch.

    Example:
        >>> import torch
        >>> x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(8, 1, 1, 1)
        >>> y = augment_batch(x, padding=1, generator=torch.Generator().manual_seed(0))
        >>> y.shape, y.dtype
        (torch.Size([8, 1, 4, 4]), torch.uint8)
    """
    if images.dim() != 4:
        raise ValueError(f"augment_batch: images must be [B, C, H, W], got shape {tuple(images.shape)}.")
    b, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4) if padding > 0 else images
    oy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
    cols = torch.arange(w).expand(b, w)
    if flip:
        flipped = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    rows = (oy[:, None] + torch.arange(h)).to(images.device)
    cols = (ox[:, None] + cols).to(images.device)
    batch = torch.arange(b, device=images.device)[:, None, None, None]
    channel = torch.arange(c, device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


class TensorLoader:
    """Batches sliced out of an in-memory dataset; iterate it once per epoch (see :func:`batches`)."""

    def __init__(
        self,
        dataset: ImageTensorDataset | TensorDataset,
        batch_size: int,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: bool = False,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        if not isinstance(dataset, (ImageTensorDataset, TensorDataset)):
            raise TypeError(
                f"batches: dataset must be an ImageTensorDataset (from load_data) or a TensorDataset, got "
                f"{type(dataset).__name__}; wrap other datasets in a torch.utils.data.DataLoader instead."
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batches: batch_size must be a positive int, got {batch_size!r}.")
        if augment and isinstance(dataset, TensorDataset) and dataset.tensors[0].dim() != 4:
            raise ValueError("batches: augment=True needs images [N, C, H, W] as the dataset's first tensor.")
        if len(dataset) == 0:
            raise ValueError("batches: the dataset is empty.")
        self.dataset, self.batch_size, self.shuffle = dataset, batch_size, shuffle
        self.generator, self.augment, self.drop_last = generator, augment, drop_last
        self.device = None if device is None else torch.device(device)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            indices = order[i * self.batch_size : (i + 1) * self.batch_size]
            if isinstance(self.dataset, ImageTensorDataset):
                batch: tuple[torch.Tensor, ...] = self.dataset.batch(indices, self.augment, self.generator)
            else:
                batch = tuple(t.index_select(0, indices) for t in self.dataset.tensors)
                if self.augment:
                    batch = (augment_batch(batch[0], generator=self.generator), *batch[1:])
            if self.device is not None:
                batch = tuple(t.to(self.device, non_blocking=True) for t in batch)
            yield batch


def batches(
    dataset: ImageTensorDataset | TensorDataset,
    batch_size: int,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: bool = False,
    *,
    drop_last: bool = False,
    device: torch.device | str | None = None,
) -> TensorLoader:
    r"""Iterate an in-memory dataset in batches, fast: a re-iterable stand-in for a ``DataLoader``.

    Each pass slices whole batches out of the dataset's tensors (and normalises an
    :class:`ImageTensorDataset`'s ``uint8`` images per batch) instead of collating single examples, which on 2
    CPU cores makes an epoch of CIFAR-10 over 10x cheaper to read than through a ``DataLoader`` (without
    augmentation). Every pass
    shuffles anew from ``generator``, so a seeded generator gives the same sequence of epochs.

    Args:
        dataset (ImageTensorDataset or TensorDataset): the data.
        batch_size (int): examples per batch.
        shuffle (bool): a new random order every pass. Default: ``False``.
        generator (torch.Generator, optional): source of the order and of the augmentation. Default: the global
            RNG.
        augment (bool): random crop (4 pixels of zero padding) and horizontal flip per image, see
            :func:`augment_batch`; for training data only. Default: ``False``.
        drop_last (bool): drop the last incomplete batch. Default: ``False``.
        device (torch.device or str, optional): move every batch there. Default: leave them on the CPU.

    Returns:
        TensorLoader: an iterable of ``(inputs, targets)`` batches with ``len()``.

    Example:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> from torch_rlprune.data import batches
        >>> data = TensorDataset(torch.arange(10.0), torch.arange(10))
        >>> loader = batches(data, 4, shuffle=True, generator=torch.Generator().manual_seed(0))
        >>> len(loader), sorted(int(i) for _, y in loader for i in y) == list(range(10))
        (3, True)
    """
    return TensorLoader(dataset, batch_size, shuffle, generator, augment, drop_last, device)


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def _resize(images: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or tuple(images.shape[-2:]) == (size, size):
        return images
    out = []
    for start in range(0, len(images), 4096):
        part = images[start : start + 4096].float()
        part = F.interpolate(part, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(part.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n_val == 0:
        n_val = 1
    if n_val >= n:
        raise ValueError(f"load_data: val_fraction={val_fraction} leaves no training data out of {n} examples.")
    return order[n_val:].sort().values, order[:n_val].sort().values


def _make_splits(
    train_images: torch.Tensor,
    train_targets: torch.Tensor,
    test_images: torch.Tensor,
    test_targets: torch.Tensor,
    classes: Sequence[str],
    val_fraction: float,
    seed: int,
) -> Splits:
    train_idx, val_idx = _split(len(train_targets), val_fraction, seed)
    train_images, val_images = train_images[train_idx], train_images[val_idx]
    train_targets, val_targets = train_targets[train_idx], train_targets[val_idx]
    mean, std = channel_stats(train_images)

    def make(images: torch.Tensor, targets: torch.Tensor) -> ImageTensorDataset:
        return ImageTensorDataset(images.contiguous(), targets, mean, std, classes)

    return Splits(
        train=make(train_images, train_targets),
        val=make(val_images, val_targets),
        test=make(test_images, test_targets),
        num_classes=len(classes),
        in_channels=int(train_images.shape[1]),
        image_size=int(train_images.shape[2]),
        classes=list(classes),
    )


def _load_digits(image_size: int | None) -> tuple[torch.Tensor, ...]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError(
            'load_data("digits") needs scikit-learn: pip install "torch-rlprune[digits]" (or scikit-learn).'
        ) from error
    digits = load_digits()
    images = torch.as_tensor(digits.images, dtype=torch.float32)  # [N, 8, 8], values 0..16
    images = (images * (255.0 / 16.0)).round().to(torch.uint8)[:, None].expand(-1, 3, -1, -1)
    images = _resize(images.contiguous(), 32 if image_size is None else image_size)
    targets = torch.as_tensor(digits.target, dtype=torch.long)
    # scikit-learn ships no test split: a fixed 20% (independent of ``seed``) is the test set.
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(0))
    n_test = len(targets) // 5
    test, train = order[:n_test].sort().values, order[n_test:].sort().values
    return images[train], targets[train], images[test], targets[test], [str(i) for i in range(10)]


def _decode_pil(path: Path) -> torch.Tensor:
    import numpy as np
    from PIL import Image

    with Image.open(path) as pil:
        return torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1)


def _decode(paths: Sequence[Path]) -> list[torch.Tensor]:
    try:  # about 3x faster than PIL on small JPEGs; deprecated in torchvision 0.29, so PIL stands in where gone
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return [_decode_pil(path) for path in paths]
    out = []
    for path in paths:
        try:
            data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
            image = decode_image(data, mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError):  # a format torchvision cannot decode
            image = _decode_pil(path)
        out.append(image)
    return out


def _read_folder(
    folder: Path, spec: str, image_size: int | None, threads: int
) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if not classes:
        raise ValueError(f"load_data({spec!r}): {folder} has no class subfolders; expected {folder}/<class>/<image>.")
    paths: list[Path] = []
    targets: list[int] = []
    for index, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in _IMAGE_EXTENSIONS)
        paths += files
        targets += [index] * len(files)
    if not paths:
        raise ValueError(f"load_data({spec!r}): no images ({', '.join(_IMAGE_EXTENSIONS)}) under {folder}.")
    chunk = max(1, -(-len(paths) // (threads * 8)))
    chunks = [paths[i : i + chunk] for i in range(0, len(paths), chunk)]
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=threads) as pool:
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
        images = [image for part in pool.map(_decode, chunks) for image in part]
    if image_size is not None:
        images = [_resize(image[None], image_size)[0] for image in images]
    shapes = {tuple(image.shape) for image in images}
    if len(shapes) > 1:
        raise ValueError(
            f"load_data({spec!r}): the images under {folder} have different sizes ({len(shapes)} distinct); pass "
            "image_size=... to resize them all."
        )
    return torch.stack(images), torch.tensor(targets, dtype=torch.long), classes


def _load_imagefolder(path: str, spec: str, image_size: int | None) -> tuple[Any, ...]:
    if not path:
        raise ValueError(f"load_data({spec!r}): give the folder, as in 'imagefolder:/data/cifar10-jpeg'.")
    root = Path(path).expanduser()
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise ValueError(
                f"load_data({spec!r}): {root / split} is not a folder; an imagefolder root needs train/ and test/ "
                "subfolders, each holding one folder of images per class."
            )
    threads = max(1, min(8, os.cpu_count() or 1))
    train_images, train_targets, classes = _read_folder(root / "train", spec, image_size, threads)
    test_images, test_targets, test_classes = _read_folder(root / "test", spec, image_size, threads)
    if test_classes != classes:
        raise ValueError(f"load_data({spec!r}): train/ and test/ of {root} have different class folders.")
    if test_images.shape[1:] != train_images.shape[1:]:
        raise ValueError(f"load_data({spec!r}): train and test images differ in size; pass image_size=....")
    return train_images, train_targets, test_images, test_targets, classes


def _load_cifar10(root: str | os.PathLike | None, download: bool, image_size: int | None) -> tuple[Any, ...]:
    if root is None:
        raise ValueError('load_data("cifar10"): pass root=, the folder holding (or to receive) cifar-10-batches-py.')
    from torchvision.datasets import CIFAR10

    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as error:
        raise ValueError(
            f'load_data("cifar10"): CIFAR-10 is not under {root} ({error}). Pass download=True to fetch it, or '
            'load a copy in ImageFolder layout with "imagefolder:PATH".'
        ) from error

    def tensors(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        return _resize(images, image_size), torch.tensor(dataset.targets, dtype=torch.long)

    return (*tensors(train), *tensors(test), list(train.classes))


def load_data(
    spec: str,
    root: str | os.PathLike | None = None,
    *,
    val_fraction: float = 0.1,
    download: bool = False,
    seed: int = 0,
    image_size: int | None = None,
) -> Splits:
    r"""Load an image classification dataset into memory, split into train, validation and test.

    Images are kept as ``uint8`` tensors and normalised per channel (mean and standard deviation of the
    ``train`` split) when read. The validation split is ``val_fraction`` of the training data, chosen by a
    permutation seeded with ``seed``; the test split is the dataset's own.

    Specs:

    - ``"digits"``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download), upsampled to
      32x32 (``image_size``) and repeated to 3 channels so that :class:`~torch_rlprune.models.BasicCNN` takes
      them; a fixed 20% of them (the same for every ``seed``) is the test split. Needs
      ``pip install "torch-rlprune[digits]"``.
    - ``"imagefolder:PATH"``: a folder with ``train/`` and ``test/`` subfolders in
      :class:`torchvision.datasets.ImageFolder` layout (``<split>/<class>/<image>``; classes in sorted order).
      All images are decoded once, as RGB, with several threads.
    - ``"cifar10"``: :class:`torchvision.datasets.CIFAR10` under ``root`` (``download=True`` fetches it).

    Args:
        spec (str): which dataset, as above.
        root (str or path, optional): the folder of ``"cifar10"``. Default: ``None``.
        val_fraction (float): fraction of the training data held out for validation, in ``[0, 1)``.
            Default: 0.1.
        download (bool): let ``"cifar10"`` download the dataset. Default: ``False``.
        seed (int): seed of the validation split. Default: 0.
        image_size (int, optional): resize all images to ``image_size x image_size``. Default: the dataset's
            size (32 for ``"digits"``).

    Returns:
        Splits: ``train``, ``val`` and ``test`` datasets (:class:`ImageTensorDataset`), ``num_classes``,
        ``in_channels``, ``image_size`` and ``classes``.

    Raises:
        ValueError: an unknown spec, a missing folder or dataset, a ``val_fraction`` out of range.
        ImportError: ``"digits"`` without scikit-learn.

    Example:
        >>> from torch_rlprune.data import load_data
        >>> load_data("mnist")
        Traceback (most recent call last):
        ...
        ValueError: load_data: unknown spec 'mnist'; use "digits", "imagefolder:PATH" or "cifar10".
    """
    if not isinstance(spec, str):
        raise TypeError(f"load_data: spec must be a string such as {_SPECS}, got {type(spec).__name__}.")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ValueError(f"load_data: val_fraction must lie in [0, 1), got {val_fraction!r}.")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"load_data: image_size must be a positive int or None, got {image_size!r}.")
    kind, _, argument = spec.partition(":")
    if kind == "digits" and not argument:
        parts = _load_digits(image_size)
    elif kind == "imagefolder":
        parts = _load_imagefolder(argument, spec, image_size)
    elif kind == "cifar10" and not argument:
        parts = _load_cifar10(root, download, image_size)
    else:
        raise ValueError(f"load_data: unknown spec {spec!r}; use {_SPECS}.")
    return _make_splits(*parts, val_fraction=val_fraction, seed=seed)
