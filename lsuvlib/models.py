"""The two networks the sources use, and the activation that lets LSUV shift a mean."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class GeneralRelu(nn.Module):
    """ReLU with an optional leak, a constant subtracted afterwards, and a ceiling.

    ``f(x) = min(leaky_relu(x, leak) - sub, maxv)``. ``sub`` is a plain float, not a
    parameter: LSUV's mean variants move it to centre the output, training does not.
    ``GeneralRelu(sub=0.0)`` is the seed notebook's ReLU with a post-ReLU shift.
    """

    def __init__(self, leak: float | None = None, sub: float | None = None, maxv: float | None = None):
        super().__init__()
        self.leak, self.sub, self.maxv = leak, sub, maxv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.leaky_relu(x, self.leak) if self.leak else F.relu(x)
        if self.sub:
            x = x - self.sub
        if self.maxv is not None:
            x = x.clamp_max(self.maxv)
        return x

    def extra_repr(self) -> str:
        return f"leak={self.leak}, sub={self.sub}, maxv={self.maxv}"


def conv(ni: int, nf: int, ks: int = 3, stride: int = 2, act: Callable[[], nn.Module] | None = nn.ReLU,
         norm: type[nn.Module] | None = None, bias: bool | None = None) -> nn.Sequential:
    """Conv2d (padding ks//2) -> optional norm -> optional activation.

    A conv followed by BatchNorm has no bias by default: BatchNorm's own shift makes it redundant.
    """
    if bias is None:
        bias = norm is None
    layers: list[nn.Module] = [nn.Conv2d(ni, nf, ks, stride=stride, padding=ks // 2, bias=bias)]
    if norm is not None:
        layers.append(norm(nf))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def get_model(act: Callable[[], nn.Module] = nn.ReLU, nfs: tuple[int, ...] = (1, 8, 16, 32, 64),
              norm: type[nn.Module] | None = None, n_classes: int = 10) -> nn.Sequential:
    """The blog's CNN: stride-2 convs 1->8->16->32->64, then a conv to 10 logits.

    The first conv uses a 5x5 kernel as in the blog. A 32x32 input shrinks
    32->16->8->4->2->1, so the final conv yields one logit per class.
    """
    layers = [conv(nfs[i], nfs[i + 1], ks=5 if i == 0 else 3, act=act, norm=norm) for i in range(len(nfs) - 1)]
    return nn.Sequential(*layers, conv(nfs[-1], n_classes, act=None, bias=True), nn.Flatten())


def lenet(in_channels: int = 1, n_classes: int = 10, size: int = 32,
          act: Callable[[], nn.Module] = lambda: GeneralRelu(sub=0.0)) -> nn.Sequential:
    """The seed notebook's LeNet-style net: two conv+ReLU+maxpool blocks, then 120 -> 84 -> 10.

    The notebook loaded MNIST through ImageFolder, so its net took 3 (identical) colour
    channels; the default here is the 1 channel MNIST really has. Each ReLU carries a
    ``sub`` shift (starting at 0) for LSUV's mean variants to move.
    """
    side = ((size - 2) // 2 - 2) // 2  # two 3x3 valid convs, each followed by a 2x2 pool
    return nn.Sequential(
        nn.Sequential(nn.Conv2d(in_channels, 6, 3), act(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Conv2d(6, 16, 3), act(), nn.MaxPool2d(2)),
        nn.Flatten(),
        nn.Sequential(nn.Linear(16 * side * side, 120), act()),
        nn.Sequential(nn.Linear(120, 84), act()),
        nn.Linear(84, n_classes),
    )


def mlp(depth: int, width: int, act: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """``depth`` blocks of Linear(width, width) + activation: the deep stack of chapter 1."""
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be positive, got depth={depth}, width={width}")
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), act()) for _ in range(depth)])
