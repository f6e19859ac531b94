"""Built-in architectures by name: the tiny network of the smoke demo, with every structure
ingest must follow (branches concatenated, a residual add, BatchNorm) in 30k weights."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TinyNet", "tiny", "ARCHS"]



class _Block(nn.Module):
    """Two branches (1x1 and 3x3) concatenated, then a residual add: GoogLeNet and ResNet in small."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch1 = nn.Sequential(nn.Conv2d(channels, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU())
        self.branch2 = nn.Sequential(nn.Conv2d(channels, half, 3, padding=1, bias=False), nn.BatchNorm2d(half),
                                     nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + torch.cat([self.branch1(x), self.branch2(x)], dim=1))


class TinyNet(nn.Module):
    """conv(3->8, 5x5) -> BN -> ReLU -> maxpool -> block(8) -> conv(8->16, 3x3, stride 2) -> block(16) -> fc(10)."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.block1 = _Block(8)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.block2 = _Block(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(torch.relu(self.down(self.block1(self.stem(x)))))
        return self.fc(torch.flatten(self.pool(x), 1))


def tiny() -> nn.Module:
    """The demo network with random weights and non-trivial BatchNorm statistics (seed it first)."""
    net = TinyNet()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding is visible
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net.eval()


# name -> builder of a random-init network (seeded by the caller)
ARCHS = {"tiny": tiny}
