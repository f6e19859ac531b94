"""Edits applied to a real module, checked against hand computations on the unedited module
(BatchNorm folding, grouped convolutions, a residual sum): no database needed."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from circuitatlas.analysis.editing import Ablation, EdgeEdit, EditSpec, Replacement, edited_module, mean_maps
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
    with torch.no_grad(), capture(model, ["bn1", "block.bn2", "block.conv3", "block", "fc"], stop=False) as seen:
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
    with torch.no_grad(), capture(net, ["block", "bn1"], stop=False) as seen:
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
