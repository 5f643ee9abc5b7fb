"""Masks on disk (the run folder's ``mask.pt``) and unslicing trained weights back into the masked model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from .._files import atomic_save, read_checked
from ..groups import channel_groups
from ..layers import channel_dims
from ..masks import alive_channels, apply_channel_masks
from ..serialization import group_records, match_records
from ..slicing import KEPT_ATTR
from .config import PathLike

MASK_FORMAT = "torch-rlprune/mask"


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
                dims = [d for d in channel_dims(small, tensor_name, value) if d in record]
                for dim in dims:
                    if target.dim() <= dim or record[dim][0] != target.shape[dim]:
                        raise ValueError(
                            f"unslice: {name}.{tensor_name} was sliced from {record[dim][0]} entries along dim {dim}, "
                            f"but the masked model's has shape {tuple(target.shape)}; pass the masked model it was "
                            "sliced from."
                        )
                if not dims and value.shape != target.shape:
                    raise ValueError(f"unslice: {name}.{tensor_name} has shape {tuple(value.shape)} but the masked "
                                     f"model's has {tuple(target.shape)}; pass the masked model it was sliced from.")
                # Every dim indexed, each index shaped to broadcast along its own dim: the sliced block's places.
                index = tuple(
                    (record[d][1] if d in dims else torch.arange(size)).to(target.device).view(
                        [-1 if i == d else 1 for i in range(target.dim())]
                    )
                    for d, size in enumerate(target.shape)
                )
                target[index] = value.to(target.dtype)
    for module in masked.modules():  # the pruning hooks recompute ``weight`` only at the next forward
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))
    return masked
