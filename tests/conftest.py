import contextlib
import io

import pytest
import torch
from torch import nn

from torch_rlprune.cli import main


class Blocks(nn.Module):
    """A small conv net built from a list of block kinds, to exercise every coupling the tracer models.

    Kinds: "plain" (conv-BN-ReLU), "residual" (x + conv-BN(x)), "depthwise" (depthwise conv-BN-ReLU),
    "concat" (cat of two convs), "se" (x * sigmoid(conv(relu(conv(avgpool(x)))))).
    """

    def __init__(self, kinds, width=4, in_channels=3, num_classes=3):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList()
        channels = width
        for i, kind in enumerate(kinds):
            w = width + i % 3
            if kind == "plain":
                block = nn.ModuleDict({"conv": nn.Conv2d(channels, w, 3, padding=1), "bn": nn.BatchNorm2d(w)})
                channels = w
            elif kind == "residual":
                block = nn.ModuleDict({"conv": nn.Conv2d(channels, channels, 3, padding=1), "bn": nn.BatchNorm2d(channels)})
            elif kind == "depthwise":
                block = nn.ModuleDict(
                    {"conv": nn.Conv2d(channels, channels, 3, padding=1, groups=channels), "bn": nn.BatchNorm2d(channels)}
                )
            elif kind == "concat":
                block = nn.ModuleDict({"a": nn.Conv2d(channels, w, 1), "b": nn.Conv2d(channels, w + 1, 1)})
                channels = 2 * w + 1
            elif kind == "se":
                block = nn.ModuleDict({"fc1": nn.Conv2d(channels, 2, 1), "fc2": nn.Conv2d(2, channels, 1)})
            else:
                raise ValueError(kind)
            self.blocks.append(block)
        self.kinds = list(kinds)
        self.head = nn.Linear(channels * 4, num_classes)

    def forward(self, x):
        x = self.stem(x)
        for kind, block in zip(self.kinds, self.blocks):
            if kind in ("plain", "depthwise"):
                x = torch.relu(block["bn"](block["conv"](x)))
            elif kind == "residual":
                x = x + block["bn"](block["conv"](x))
            elif kind == "concat":
                x = torch.cat([block["a"](x), block["b"](x)], dim=1)
            else:
                s = nn.functional.adaptive_avg_pool2d(x, 1)
                x = x * torch.sigmoid(block["fc2"](torch.relu(block["fc1"](s))))
        x = nn.functional.adaptive_avg_pool2d(x, 2)
        return self.head(torch.flatten(x, 1))


@pytest.fixture
def one_thread():
    # For tests of small tensors: a second intra-op thread saves nothing, and on a busy 2-core machine every op
    # would wait at OpenMP's barrier for a thread the scheduler has put aside (20-30x slower).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def blocks_net():
    return Blocks


def conv_pairs(model):
    return [(m, "weight") for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d))]


# ---- the command, for tests/test_cli.py and tests/test_models_timm.py ----

QUICK = ["--quick", "--workers", "1", "--quiet"]


def run_main(argv):
    """``main(argv)`` with stdout and stderr captured: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def assert_user_error(result, code, *fragments):
    status, _, err = result
    assert status == code
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one line, no traceback
    assert lines[0].startswith("torch-rlprune: error: ")
    for fragment in fragments:
        assert fragment in lines[0]
