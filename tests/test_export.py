"""A sliced model deploys like any dense model: ONNX (run by onnxruntime), torch.export and torch.compile."""

import pytest
import torch
import torchvision
from torch import nn
from torch.nn.utils import prune

import torch_rlprune as rlp

from conftest import conv_pairs

MODELS = {
    "basiccnn": (lambda: rlp.models.BasicCNN(), 32),
    "resnet18": (lambda: torchvision.models.resnet18(weights=None), 64),
}


def widths(model):
    return sorted(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d))


@pytest.fixture(scope="module", autouse=True)
def one_thread_here():
    # The conftest's one_thread, for the whole module: these inputs are small, and a second thread on a busy
    # 2-core machine makes every op wait at OpenMP's barrier (a resnet18 forward: 2 s instead of 0.05 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=list(MODELS))
def sliced(request):
    """(dense conv widths, the sliced model in eval mode, an input batch), pruned and sliced once per model."""
    make, side = MODELS[request.param]
    torch.manual_seed(0)
    model = make()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():  # running statistics that are not the identity, so the norms are tested too
        model.train()(x)
    dense_widths = widths(model)
    rlp.global_structured(conv_pairs(model), prune.LnStructured, n=1, amount=0.5, model=model.eval(),
                          example_inputs=x[:1])  # fmt: skip
    small = rlp.slim(model, x[:1]).eval()
    assert sum(widths(small)) < sum(dense_widths)
    assert len(widths(small)) == len(dense_widths)
    return dense_widths, small, x


def test_onnx_export_runs_in_onnxruntime_like_pytorch(sliced, tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    # torch.onnx.export's default exporter (dynamo=True since torch 2.9) translates through onnxscript; the
    # `onnx` extra installs it, and the legacy TorchScript exporter is deprecated.
    pytest.importorskip("onnxscript")
    dense_widths, small, x = sliced
    path = tmp_path / "small.onnx"
    torch.onnx.export(small, (x[:1],), path, dynamic_shapes=({0: "batch"},), verbose=False)

    graph = onnx.load(path).graph
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    onnx_widths = sorted(weights[n.input[1]][0] for n in graph.node if n.op_type == "Conv")
    assert onnx_widths == widths(small) != dense_widths

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})  # batch 2 through a batch-1 export
    with torch.no_grad():
        expected = small(x)
    torch.testing.assert_close(torch.from_numpy(got), expected, atol=1e-5, rtol=1e-4)


def test_torch_export_matches_eager(sliced):
    dense_widths, small, x = sliced
    program = torch.export.export(small, (x,))
    exported = program.module()
    assert widths(small) != dense_widths
    conv_weights = sorted(
        tuple(p.shape)[0] for name, p in program.state_dict.items() if p.dim() == 4 and name.endswith("weight")
    )
    assert conv_weights == widths(small)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), small(x), atol=0, rtol=0)


def test_torch_compile_matches_eager(sliced):
    dense_widths, small, x = sliced
    torch._dynamo.reset()
    # aot_eager runs the stages a sliced model could trip (dynamo's whole-graph capture, AOTAutograd's
    # functionalised, decomposed graph) without inductor's C++ code generation, which takes 15-20 s per model on
    # 2 CPU cores; the default backend gave the same outputs (within 1e-7) when checked by hand.
    compiled = torch.compile(small, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        expected = small(x)
        got = compiled(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    assert widths(small) != dense_widths
