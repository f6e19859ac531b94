"""Edits applied to a real module, checked against hand computations on the unedited module
(BatchNorm folding, grouped convolutions, a residual sum): no database needed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from circuitatlas.analysis.editing import (
    Ablation,
    EdgeEdit,
    EditSpec,
    Replacement,
    edges_into,
    edited_module,
    mean_maps,
)
from circuitatlas.analysis.folding import batchnorm_scale
from circuitatlas.analysis.hooks import capture
from circuitatlas.errors import InvalidInput
from circuitatlas.ingest.layergraph import build_layer_graph


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(8, 8, 1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn2(self.conv2(a)) + self.conv3(a))


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.block = Block()
        self.tail = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.bn1(self.conv1(x)))
        return self.fc(self.tail(self.block(a)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def net() -> Net:
    torch.manual_seed(3)
    model = Net()
    for bn in (model.bn1, model.block.bn2):  # running statistics and affine terms away from 0/1
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.3, 0.3)
    return model.eval()


def _values(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    with torch.no_grad(), capture(model, ["bn1", "block.bn2", "block.conv3", "block", "fc"], stop=False,
                                  copy=True) as seen:
        model(x)
    return {k: v.clone() for k, v in seen.items()}


def test_edits_match_a_hand_computation(net):
    graph = build_layer_graph(net, (3, 16, 16))
    x = torch.rand(4, 3, 16, 16)
    before = _values(net, x)
    s1 = batchnorm_scale(net.bn1.running_var, net.bn1.eps, net.bn1.weight).detach()
    s2 = batchnorm_scale(net.block.bn2.running_var, net.block.bn2.eps, net.block.bn2.weight).detach()
    kernel = np.arange(9, dtype=np.float32).reshape(3, 3) / 10 - 0.4
    replacement = np.random.default_rng(0).normal(size=(4, 3, 3)).astype(np.float32)
    spec = EditSpec(
        ablations=[Ablation("conv1", 5)],
        edges=[EdgeEdit(("conv1", 6), ("block.conv2", 7), factor=0.5),  # group 1: input index 2
               EdgeEdit(("input", 0), ("conv1", 3), kernel=kernel),
               EdgeEdit(("block.conv3", 2), ("block", 2), factor=0.0)],
        replacements=[Replacement("block.conv2", 1, replacement, bias=0.3)])
    state = copy.deepcopy(net.state_dict())
    edited = edited_module(net, graph, spec)
    after = _values(edited, x)
    for key, value in net.state_dict().items():  # the original is untouched
        assert torch.equal(value, state[key]), key

    with torch.no_grad():
        # conv1:3 with its input-0 kernel set (graph units: BatchNorm folded)
        w1 = net.conv1.weight
        expect3 = before["bn1"][:, 3] + (F.conv2d(x[:, :1], torch.from_numpy(kernel)[None, None], padding=1)
                                         - s1[3] * F.conv2d(x[:, :1], w1[3:4, :1], padding=1))[:, 0]
        torch.testing.assert_close(after["bn1"][:, 3], expect3, rtol=1e-4, atol=1e-5)
        assert torch.all(after["bn1"][:, 5] == 0)  # zero-ablated
        others = [c for c in range(8) if c not in (3, 5)]
        torch.testing.assert_close(after["bn1"][:, others], before["bn1"][:, others])

        # the edited first layer feeds the block: recompute the block from the edited input
        a_new = torch.relu(after["bn1"])
        w2 = net.block.conv2.weight
        bn2_new = net.block.bn2(net.block.conv2(a_new))
        # block.conv2:7 (group 1 reads channels 4..7) with the edge from conv1:6 halved
        bn2_new[:, 7] -= 0.5 * s2[7] * F.conv2d(a_new[:, 6:7], w2[7:8, 2:3], padding=1)[:, 0]
        # block.conv2:1 replaced: kernel over its group's inputs (0..3) plus bias
        bn2_new[:, 1] = F.conv2d(a_new[:, :4], torch.from_numpy(replacement)[None], padding=1)[:, 0] + 0.3
        torch.testing.assert_close(after["block.bn2"], bn2_new, rtol=1e-4, atol=1e-5)
        # the residual sum's edge from block.conv3:2 removed: block:2 = relu(bn2 part) alone
        conv3 = net.block.conv3(a_new)
        block = torch.relu(bn2_new + conv3)
        block[:, 2] = torch.relu(bn2_new[:, 2])
        torch.testing.assert_close(after["block"], block, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(after["fc"], net.fc(net.tail(block).mean(dim=(2, 3))), rtol=1e-4, atol=1e-5)


def test_mean_ablation_uses_the_mean_map(net):
    graph = build_layer_graph(net, (3, 16, 16))
    probe = torch.rand(16, 3, 16, 16)
    means = mean_maps(net, graph, [("block", 4), ("conv1", 1)], probe)
    with torch.no_grad(), capture(net, ["block", "bn1"], stop=False,
                                  copy=True) as seen:
        net(probe)
    np.testing.assert_allclose(means[("block", 4)], seen["block"][:, 4].mean(0).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(means[("conv1", 1)], seen["bn1"][:, 1].mean(0).numpy(), rtol=1e-5, atol=1e-6)
    edited = edited_module(net, graph, EditSpec(ablations=[Ablation("block", 4, "mean", means[("block", 4)])]))
    after = _values(edited, torch.rand(3, 3, 16, 16))
    for image in after["block"][:, 4]:
        np.testing.assert_allclose(image.numpy(), means[("block", 4)], rtol=1e-6)


def test_edits_that_cannot_be_applied_say_why(net):
    graph = build_layer_graph(net, (3, 16, 16))
    with pytest.raises(InvalidInput, match="no direct edge"):  # conv1:0 is in group 0, block.conv2:7 reads group 1
        edited_module(net, graph, EditSpec(edges=[EdgeEdit(("conv1", 0), ("block.conv2", 7), 0.0)]))
    with pytest.raises(InvalidInput, match="shape"):
        edited_module(net, graph, EditSpec(replacements=[Replacement("block.conv2", 0, np.zeros((8, 3, 3)))]))
    with pytest.raises(InvalidInput, match="mode"):
        edited_module(net, graph, EditSpec(ablations=[Ablation("conv1", 0, "noise")]))


def test_residual_edits_on_a_torchvision_resnet():
    """On ResNet-18 (random init, BatchNorm statistics away from 0/1): removing the edge from a
    block's last conv into its residual sum leaves that channel the shortcut alone; the shortcut
    of a block without a downsample also feeds the next conv, so its edge into the sum is refused."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    net = resnet18(num_classes=10)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.3, 0.3)
    net.eval()
    graph = build_layer_graph(net, (3, 64, 64))
    assert graph.weight_layers["layer2.0"].kind == "add"
    x = torch.rand(2, 3, 64, 64)
    edited = edited_module(net, graph, EditSpec(edges=[EdgeEdit(("layer2.0.conv2", 5), ("layer2.0", 5), 0.0),
                                                       EdgeEdit(("layer2.0.downsample.0", 7), ("layer2.0", 7), 2.0)]))
    with torch.no_grad(), capture(net, ["layer2.0.bn2", "layer2.0.downsample", "layer2.0"], stop=False,
                                  copy=True) as seen:
        net(x)
    with torch.no_grad(), capture(edited, ["layer2.0"], stop=False, copy=True) as after:
        edited(x)
    expected = seen["layer2.0"].clone()
    expected[:, 5] = torch.relu(seen["layer2.0.downsample"][:, 5])
    expected[:, 7] = torch.relu(seen["layer2.0.bn2"][:, 7] + 2.0 * seen["layer2.0.downsample"][:, 7])
    torch.testing.assert_close(after["layer2.0"], expected, rtol=1e-4, atol=1e-5)
    shortcut = next(src for src, _ in edges_into(graph.weight_layers["layer1.1"], 3) if src[0] != "layer1.1.conv2")
    with pytest.raises(InvalidInput, match="also feeds"):
        edited_module(net, graph, EditSpec(edges=[EdgeEdit(shortcut, ("layer1.1", 3), 0.0)]))


def test_depthwise_edges_on_mobilenet():
    """MobileNetV2's depthwise convs (groups = channels): an edge is the one input of its group."""
    from torchvision.models import mobilenet_v2

    torch.manual_seed(0)
    net = mobilenet_v2(num_classes=10).eval()
    graph = build_layer_graph(net, (3, 64, 64))
    layer = "features.2.conv.1.0"  # depthwise 3x3 over 96 channels
    weight = graph.weight_layers[layer]
    assert weight.groups == weight.out_channels
    (src, index), = edges_into(weight, 9)
    assert index == 0
    kernel = np.eye(3, dtype=np.float32)
    edited = edited_module(net, graph, EditSpec(edges=[EdgeEdit(src, (layer, 9), kernel=kernel)]))
    bn = net.get_submodule("features.2.conv.1.1")
    with torch.no_grad(), capture(net, ["features.2.conv.0", bn_path := "features.2.conv.1.1"], stop=False,
                                  copy=True) as seen:
        net(x := torch.rand(2, 3, 64, 64))
    with torch.no_grad(), capture(edited, [bn_path], stop=False, copy=True) as after:
        edited(x)
    inputs = seen["features.2.conv.0"][:, 9:10]
    scale = batchnorm_scale(bn.running_var, bn.eps, bn.weight).detach()[9]
    conv = net.get_submodule(layer)
    old = F.conv2d(inputs, conv.weight[9:10], stride=conv.stride, padding=1)[:, 0]
    new = F.conv2d(inputs, torch.from_numpy(kernel)[None, None], stride=conv.stride, padding=1)[:, 0]
    torch.testing.assert_close(after[bn_path][:, 9], seen[bn_path][:, 9] - scale * old + new, rtol=1e-4, atol=1e-5)
    others = [c for c in range(weight.out_channels) if c != 9]
    torch.testing.assert_close(after[bn_path][:, others], seen[bn_path][:, others])


class ChannelsLast(nn.Module):
    """A ConvNeXt-style block: a pointwise Linear over (N, H, W, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.pw = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.conv(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_channels_last_units_are_read_and_ablated_channels_first():
    torch.manual_seed(1)
    net = ChannelsLast().eval()
    graph = build_layer_graph(net, (3, 8, 12), observation_layers=["conv"])  # H != W: a transposed map fails
    probe = torch.rand(5, 3, 8, 12)
    means = mean_maps(net, graph, [("pw", 4)], probe)
    with torch.no_grad():
        expected = net(probe)[:, 4].mean(0)
    assert means[("pw", 4)].shape == (8, 12)
    np.testing.assert_allclose(means[("pw", 4)], expected.numpy(), rtol=1e-5, atol=1e-6)
    edited = edited_module(net, graph, EditSpec(ablations=[Ablation("pw", 4, "mean", means[("pw", 4)]),
                                                           Ablation("pw", 1)]))
    x = torch.rand(2, 3, 8, 12)
    with torch.no_grad():
        before, after = net(x), edited(x)
    assert torch.all(after[:, 1] == 0)
    torch.testing.assert_close(after[:, 4], expected.expand(2, 8, 12))
    torch.testing.assert_close(after[:, [0, 2, 3]], before[:, [0, 2, 3]])


def test_replacement_bias_lands_without_an_affine_batchnorm():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=True), nn.BatchNorm2d(4, affine=False), nn.ReLU()).eval()
    net[1].running_mean.uniform_(-0.5, 0.5)
    net[1].running_var.uniform_(0.5, 2.0)
    graph = build_layer_graph(net, (3, 10, 10))
    assert graph.weight_layers["0"].folded_bn == "1"
    kernel = np.random.default_rng(1).normal(size=(3, 3, 3))
    edited = edited_module(net, graph, EditSpec(replacements=[Replacement("0", 2, kernel, bias=0.7)]))
    x = torch.rand(2, 3, 10, 10)
    with torch.no_grad(), capture(edited, ["1"], stop=False, copy=True) as seen:
        edited(x)
    expected = F.conv2d(x, torch.from_numpy(kernel).float()[None], padding=1)[:, 0] + 0.7
    torch.testing.assert_close(seen["1"][:, 2], expected, rtol=1e-4, atol=1e-5)


def test_a_module_called_twice_is_not_hooked():
    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)
            self.other = nn.Conv2d(3, 3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.other(self.bn(self.conv(x))) + self.bn(x)

    net = Twice().eval()
    graph = build_layer_graph(net, (3, 8, 8), lenient=True)
    with pytest.raises(InvalidInput, match="more than once"):
        edited_module(net, graph, EditSpec(ablations=[Ablation("conv", 0)]))
