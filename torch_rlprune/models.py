"""Reference models.

``BasicCNN`` is the four-convolution CIFAR-10 network on which the method was first studied: 960 filters in
all (64 + 128 + 256 + 512), each convolution followed by ReLU, dropout and batch normalisation, and a single
linear classifier over the flattened 512 x 4 x 4 feature map.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicCNN"]


class BasicCNN(nn.Module):
    r"""The four-convolution CIFAR-10 network of the thesis this package grew from.

    Layout on a 32 x 32 input (no padding anywhere)::

        conv1  3 -> 64,   3x3, stride 2   32 -> 15
        conv2  64 -> 128, 3x3             15 -> 13
        conv3  128 -> 256, 3x3, stride 2  13 -> 6
        conv4  256 -> 512, 3x3            6 -> 4
        each conv followed by ReLU -> Dropout(p) -> BatchNorm2d
        fc     512 * 4 * 4 -> num_classes

    The forward pass returns logits. The original network applied a softmax inside the model; we do not, because
    :func:`torch.nn.functional.cross_entropy` expects logits (a softmax before it squashes the gradients and
    computes the log of a probability that may underflow), and because accuracy-based rewards only need the
    arg-max, which logits already give.

    Args:
        num_classes (int): number of output classes. Default: 10.
        in_channels (int): channels of the input image. Default: 3.
        width (float): multiplier on every convolution's filter count (64, 128, 256, 512), rounded and at least 1.
            Default: 1.0.
        dropout (float): dropout probability after every ReLU. Default: 0.3.
        input_size (int): side of the square input the linear layer is sized for. Default: 32.

    Example:
        >>> import torch
        >>> from torch_rlprune.models import BasicCNN
        >>> model = BasicCNN()
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> sum(m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        960
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        dropout: float = 0.3,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        for arg, value in (("num_classes", num_classes), ("in_channels", in_channels), ("input_size", input_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BasicCNN: {arg} must be a positive int, got {value!r}.")
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
            raise ValueError(f"BasicCNN: width must be a positive number, got {width!r}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"BasicCNN: dropout must lie in [0, 1), got {dropout!r}.")

        widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        strides = [2, 1, 2, 1]
        layers: list[nn.Module] = []
        side = input_size
        previous = in_channels
        for channels, stride in zip(widths, strides):
            layers += [
                nn.Conv2d(previous, channels, kernel_size=3, stride=stride),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.BatchNorm2d(channels),
            ]
            side = (side - 3) // stride + 1
            previous = channels
        if side < 1:
            raise ValueError(
                f"BasicCNN: input_size={input_size} is too small for four unpadded 3x3 convolutions; use 32."
            )
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(previous * side * side, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.features(x)))
