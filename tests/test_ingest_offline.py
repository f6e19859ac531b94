"""Graph extraction without a database: counts, BN folding and expanded weights against
independent computations (parameter shapes, torch's own conv-BN fusion, autograd with hooks)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from circuitatlas.errors import IngestError
from circuitatlas.ingest import rows
from circuitatlas.ingest.expanded import expanded_kernels, linearise
from circuitatlas.ingest.layergraph import build_layer_graph
from circuitatlas.ingest.sources import load_model


def _direct_edge_count(graph) -> int:
    return sum(len(out_idx) for layer in graph.weight_layers.values() for _, out_idx, _, _ in rows.direct_blocks(layer))


def _weight_modules(model):
    # GoogLeNet's auxiliary classifiers run only in training mode: not part of the traced net
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear)) and not n.startswith("aux")]


class DepthwiseNet(nn.Module):
    """MobileNet-style: a stem conv, depthwise 3x3 + pointwise 1x1 pairs, a grouped conv, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),
            nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU6(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=4), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(16, 5)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.features(x)), 1))


def _plain_count(model) -> int:
    """Edges when every input channel has one source: out x in/groups per weight layer; a linear
    over a flattened map counts one edge per (output, map channel)."""
    total = 0
    for _, m in _weight_modules(model):
        total += m.weight.shape[0] * m.weight.shape[1] if isinstance(m, nn.Conv2d) else 0
    return total


@pytest.mark.parametrize("name", ["alexnet", "googlenet"])
def test_counts_match_parameter_shapes_without_residuals(name):
    model = load_model(name).module
    graph = build_layer_graph(model)
    modules = _weight_modules(model)
    expected = _plain_count(model)
    for layer_name, m in modules:
        if isinstance(m, nn.Linear):
            in_map = graph.weight_layers[layer_name].weight.shape[1]  # channels of the flattened map
            assert m.in_features % in_map == 0
            expected += m.out_features * in_map
    assert _direct_edge_count(graph) == expected
    neurons = sum(info.channels for info in graph.layers.values())
    blocks = sum(info.channels for info in graph.layers.values() if info.kind == "block")
    assert neurons == 3 + sum(m.weight.shape[0] for _, m in modules) + blocks


def test_counts_match_parameter_shapes_depthwise():
    model = DepthwiseNet().eval()
    graph = build_layer_graph(model, (3, 16, 16))
    assert graph.weight_layers["features.3"].groups == 8
    # depthwise: each output channel has exactly one input channel
    expected = 8 * 3 + 8 * 1 + 16 * 8 + 16 * 4 + 5 * 16
    assert _direct_edge_count(graph) == expected == _plain_count(model) + 5 * 16
    blocks = rows.direct_blocks(graph.weight_layers["features.3"])
    _, out_idx, in_idx, _ = next(blocks)
    assert np.array_equal(out_idx, in_idx)


def test_residual_stream_is_a_layer_of_add_neurons_resnet18():
    """Each block's sum is a layer of its own (the block's neurons): one edge from each summand's
    channel, weight 1, and the convs that read the stream read those neurons only."""
    model = load_model("resnet18").module
    graph = build_layer_graph(model)
    blocks = [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    pairs = sum(m.weight.shape[0] * m.weight.shape[1] for _, m in _weight_modules(model))
    summands = sum(2 * model.get_submodule(b).conv2.out_channels for b in blocks)
    assert _direct_edge_count(graph) == pairs + summands
    assert [graph.layers[b].kind for b in blocks] == ["add"] * 8  # no duplicate block layer
    assert graph.observation_layers == ["conv1"] + blocks
    for block, summed in {"layer1.0": {"layer1.0.conv2", "conv1"}, "layer1.1": {"layer1.1.conv2", "layer1.0"},
                          "layer2.0": {"layer2.0.conv2", "layer2.0.downsample.0"}}.items():
        found = {src: (o, i, k) for src, o, i, k in rows.direct_blocks(graph.weight_layers[block])}
        assert set(found) == summed
        channels = graph.layers[block].channels
        for out_idx, in_idx, kernels in found.values():
            assert np.array_equal(out_idx, np.arange(channels)) and np.array_equal(in_idx, out_idx)
            np.testing.assert_array_equal(kernels, 1.0)
    for reader, stream in {"layer1.1.conv1": "layer1.0", "layer2.0.downsample.0": "layer1.1", "fc": "layer4.1"}.items():
        assert {src for src, *_ in rows.direct_blocks(graph.weight_layers[reader])} == {stream}


def test_direct_weights_are_bn_folded_like_torch_fusion():
    model = load_model("resnet18").module
    graph = build_layer_graph(model, (3, 64, 64))
    for conv_name, bn_name in [("conv1", "bn1"), ("layer1.0.conv2", "layer1.0.bn2"),
                               ("layer2.0.downsample.0", "layer2.0.downsample.1")]:
        fused = fuse_conv_bn_eval(copy.deepcopy(model.get_submodule(conv_name)), model.get_submodule(bn_name))
        layer = graph.weight_layers[conv_name]
        assert layer.folded_bn == bn_name
        np.testing.assert_allclose(layer.weight, fused.weight.detach().numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(layer.bias, fused.bias.detach().numpy(), rtol=1e-5, atol=1e-6)


def _reference_expanded(model, src, dst, input_size, js, patch_relu):
    """Autograd on a linearised copy built by module surgery, the values cut at ``src`` by a hook."""
    lin = copy.deepcopy(model).eval()
    for name, module in list(lin.named_modules()):
        parent_name, _, attr = name.rpartition(".")
        parent = lin.get_submodule(parent_name) if parent_name else lin
        if isinstance(module, (nn.ReLU, nn.ReLU6)):
            setattr(parent, attr, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):
            setattr(parent, attr, nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode,
                                               count_include_pad=False))
    captured = {}

    def cut(_m, _i, out):
        leaf = out.detach().requires_grad_(True)
        captured["a"] = leaf
        return leaf

    def keep(_m, _i, out):
        captured["b"] = out

    hooks = [lin.get_submodule(src).register_forward_hook(cut), lin.get_submodule(dst).register_forward_hook(keep)]
    try:
        with patch_relu():
            lin(torch.zeros(1, *input_size))
    finally:
        for h in hooks:
            h.remove()
    b = captured["b"]
    cy, cx = b.shape[2] // 2, b.shape[3] // 2
    grads = {}
    for j in js:
        (g,) = torch.autograd.grad(b[0, j, cy, cx], captured["a"], retain_graph=True)
        grads[j] = g[0].numpy()
    return grads


@pytest.mark.parametrize("arch,src,dst,size", [
    ("resnet18", "layer1.0", "layer1.1", (3, 64, 64)),
    ("resnet18", "layer1.1", "layer2.0", (3, 64, 64)),
    ("googlenet", "inception3a", "inception3b", (3, 96, 96)),
    ("googlenet", "conv3", "inception3a", (3, 96, 96)),
])
def test_expanded_weights_equal_autograd(arch, src, dst, size, monkeypatch):
    model = load_model(arch).module
    graph = build_layer_graph(model, size, [src, dst])
    out_idx, in_idx, kernels, (y0, x0) = expanded_kernels(graph, src, dst)
    kh, kw = kernels.shape[1:]
    c_b, c_a = graph.layers[dst].channels, graph.layers[src].channels
    full = np.zeros((c_b, c_a, kh, kw), dtype=np.float32)
    full[out_idx, in_idx] = kernels
    rng = np.random.default_rng(0)
    js = sorted(rng.choice(c_b, size=6, replace=False).tolist())

    import contextlib

    @contextlib.contextmanager
    def patch_relu():  # GoogLeNet calls F.relu: made the identity here, as the linearisation asks
        with monkeypatch.context() as m:
            m.setattr(torch.nn.functional, "relu", lambda x, inplace=False: x)
            yield

    reference = _reference_expanded(model, src, dst, size, js, patch_relu)
    for j in js:
        ref = reference[j]
        inside = ref[:, y0:y0 + kh, x0:x0 + kw]
        np.testing.assert_allclose(full[j], inside, rtol=1e-4, atol=1e-6)
        outside = ref.copy()
        outside[:, y0:y0 + kh, x0:x0 + kw] = 0
        assert np.abs(outside).max() == 0  # nothing was cropped away
    if arch == "googlenet" and src == "inception3a":
        assert len(out_idx) == 256 * 480  # every unit pair connects through the four branches


def test_cropped_expanded_weights_equal_the_whole_map():
    """Gradients on the window the centre depends on give the kernels of the whole map, through
    an inception module and through a stride-2 max-pool (28 -> 14)."""
    from circuitatlas.ingest.expanded import _between, _crop_window

    graph = build_layer_graph(load_model("googlenet").module, (3, 224, 224),
                              ["inception3a", "inception3b", "inception4a"])
    lin = linearise(graph.graph_module)
    for src, dst in (("inception3a", "inception3b"), ("inception3b", "inception4a")):
        ordered, downstream = _between(lin, graph.output_nodes[src], graph.output_nodes[dst])
        shape_b = graph.layers[dst].shape
        window = _crop_window(lin, ordered, downstream, graph.output_nodes[src], tuple(graph.layers[src].shape),
                              tuple(shape_b[1:]), (shape_b[1] // 2, shape_b[2] // 2))
        y0, y1, x0, x1 = window  # the window is used: a quarter of the map or less
        assert (y1 - y0) * (x1 - x0) <= graph.layers[src].shape[1] * graph.layers[src].shape[2] / 4
        whole = expanded_kernels(graph, src, dst, lin, crop=False)
        cropped = expanded_kernels(graph, src, dst, lin, crop=True)
        np.testing.assert_array_equal(cropped[0], whole[0])
        np.testing.assert_array_equal(cropped[1], whole[1])
        assert cropped[3] == whole[3]
        np.testing.assert_allclose(cropped[2], whole[2], rtol=1e-5, atol=1e-7 * np.abs(whole[2]).max())


def test_unsupported_op_is_named_and_lenient_skips():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.after = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            x = self.conv(x)
            return self.after(torch.roll(x, 1, dims=1))

    with pytest.raises(IngestError, match="unsupported op roll .*--lenient"):
        build_layer_graph(Odd(), (3, 8, 8))
    with pytest.warns(UserWarning, match="roll .*skipped"):
        graph = build_layer_graph(Odd(), (3, 8, 8), lenient=True)
    assert graph.weight_layers["after"].sources[0] == ()  # no direct edges behind the skipped op
    assert _direct_edge_count(graph) == 4 * 3


def test_linearise_leaves_the_original_untouched():
    model = load_model("tiny").module
    graph = build_layer_graph(model, (3, 16, 16))
    x = torch.randn(2, 3, 16, 16)
    before = graph.graph_module(x)
    lin = linearise(graph.graph_module)
    assert torch.allclose(graph.graph_module(x), before)
    assert not torch.allclose(lin(x), before)
    # linear: f(a x) - f(0) = a (f(x) - f(0))
    zero = lin(torch.zeros_like(x))
    assert torch.allclose(lin(3 * x) - zero, 3 * (lin(x) - zero), rtol=1e-4, atol=1e-4)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(IngestError, match="unknown model 'resnet181'.*resnet18"):
        load_model("resnet181")
