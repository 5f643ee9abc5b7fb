"""Numbers and settings of a run in the words of its logs and reports."""

from __future__ import annotations

from typing import Any


def plural(n: int, word: str, words: str | None = None) -> str:
    """``n`` and the word, in the plural unless ``n`` is 1.

    Args:
        n (int): the count.
        word (str): the singular.
        words (str, optional): the plural. Default: ``word + "s"``.

    Returns:
        str: e.g. ``"3 epochs"``.

    Example:
        >>> plural(1, "epoch"), plural(2, "validation batch", "validation batches")
        ('1 epoch', '2 validation batches')
    """
    return f"{n} {word if n == 1 else words or word + 's'}"


def model_label(config: dict[str, Any]) -> str:
    """The model of a run's settings (:meth:`PipelineConfig.to_dict`), with BasicCNN's width where it is not 1.

    Args:
        config (dict): the settings.

    Returns:
        str: e.g. ``"basiccnn (width 0.25)"``.

    Example:
        >>> model_label({"model": "basiccnn", "width": 0.25}), model_label({"model": "resnet18"})
        ('basiccnn (width 0.25)', 'resnet18')
    """
    width = config.get("width", 1.0)
    return config["model"] + (f" (width {width})" if config["model"] == "basiccnn" and width != 1.0 else "")


def percent(x: float) -> str:
    """A fraction as a percentage with one decimal.

    Args:
        x (float): the fraction.

    Returns:
        str: e.g. ``"12.5%"``.

    Example:
        >>> percent(0.125)
        '12.5%'
    """
    return f"{100 * x:.1f}%"


def human_count(n: float) -> str:
    """A count with a k, M or G suffix from a thousand up.

    Args:
        n (float): the count.

    Returns:
        str: e.g. ``"1.63M"``.

    Example:
        >>> human_count(1634826), human_count(960)
        ('1.63M', '960')
    """
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:,.0f}"
