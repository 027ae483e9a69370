"""The two networks the sources use, and the activation that lets LSUV shift a mean."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class GeneralRelu(nn.Module):
    r"""A rectifier with three optional knobs: a negative slope, a downward shift and a cap.

    $$\text{GeneralRelu}(x) = \min\big(\text{LeakyReLU}_{\text{leak}}(x) - \text{sub},\ \text{maxv}\big),$$

    a knob left at `None` skipped. `sub` is a plain float attribute, not a parameter, so
    training never moves it while LSUV's mean variants may. `GeneralRelu(sub=0.0)` is the seed
    notebook's ReLU with a post-ReLU shift; `GeneralRelu(leak=0.1, sub=0.4)` is the blog's.

    Args:
        leak: the slope for negative inputs (`None`: 0, a plain ReLU).
        sub: subtracted from the output.
        maxv: the largest output.
    """

    def __init__(self, leak: float | None = None, sub: float | None = None, maxv: float | None = None):
        super().__init__()
        self.leak = leak
        self.sub = sub
        self.maxv = maxv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slope = self.leak or 0.0  # a slope of 0 is the plain rectifier
        out = F.leaky_relu(x, slope) if slope else torch.relu(x)
        if self.sub:
            out = out - self.sub  # out of place: the input may be a tensor autograd still needs
        return out if self.maxv is None else torch.clamp(out, max=self.maxv)

    def extra_repr(self) -> str:
        return f"leak={self.leak}, sub={self.sub}, maxv={self.maxv}"


def conv(ni: int, nf: int, ks: int = 3, stride: int = 2, act: Callable[[], nn.Module] | None = nn.ReLU,
         norm: type[nn.Module] | None = None, bias: bool | None = None) -> nn.Sequential:
    """A block of `Conv2d` (padding `ks // 2`), then an optional norm, then an optional activation.

    A conv followed by a norm has no bias by default: BatchNorm's own shift makes it redundant.
    (The blog's BatchNorm section meant the same but tested `isinstance` on the norm *class*,
    so its convs kept a bias; BatchNorm subtracts it again, so only the random draws differ.)

    Args:
        ni: input channels.
        nf: output channels.
        ks: kernel side.
        stride: the conv's stride (2 halves the image side).
        act: builds the activation (`None`: none).
        norm: a norm type called with `nf`, e.g. `nn.BatchNorm2d` (`None`: none).
        bias: whether the conv has a bias; `None`: only without a norm.
    """
    if bias is None:
        bias = norm is None
    layers: list[nn.Module] = [nn.Conv2d(ni, nf, ks, stride=stride, padding=ks // 2, bias=bias)]
    if norm is not None:
        layers.append(norm(nf))
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def get_model(act: Callable[[], nn.Module] = nn.ReLU, nfs: Sequence[int] = (1, 8, 16, 32, 64),
              norm: type[nn.Module] | None = None, n_classes: int = 10, first_kernel: int = 3) -> nn.Sequential:
    """The blog's CNN: a stride-2 `conv` block per step of `nfs`, then a conv straight to the logits.

    Each step halves the image side, so a 32x32 input ends as one value per class
    (32, 16, 8, 4, 2, 1) before the final `Flatten`: the output has shape `(N, n_classes)`.
    The classifier conv has a bias and no activation.

    The blog used two versions: its LR-finder, baseline and input-normalisation sections built
    their stack by hand starting with a 5x5 conv (`first_kernel=5`); its BatchNorm + Kaiming
    and LSUV sections passed no kernel size, so every conv there was 3x3 (the default here).
    See `lsuvlib.sources.BLOG["first_kernel"]`.

    Args:
        act: builds each block's activation.
        nfs: the input channels, then each block's output channels.
        norm: a norm type for each block (`None`: none), e.g. `nn.BatchNorm2d`.
        n_classes: outputs of the classifier.
        first_kernel: the side of the first conv's kernel, odd; every other is 3.
    """
    widths = list(nfs)
    if len(widths) < 2:
        raise ValueError(f"nfs needs an input width and at least one layer width, got {tuple(nfs)}")
    if first_kernel < 1 or first_kernel % 2 == 0:
        raise ValueError(f"first_kernel must be a positive odd number (padding keeps the side), got {first_kernel}")
    blocks = []
    for depth, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        blocks.append(conv(c_in, c_out, ks=first_kernel if depth == 0 else 3, act=act, norm=norm))
    head = conv(widths[-1], n_classes, act=None, bias=True)
    return nn.Sequential(*blocks, head, nn.Flatten())


def lenet(in_channels: int = 1, n_classes: int = 10, size: int = 32,
          act: Callable[[], nn.Module] = lambda: GeneralRelu(sub=0.0)) -> nn.Sequential:
    """The seed notebook's LeNet-style net: two conv, ReLU and max-pool blocks, then 120, 84 and 10 units.

    The notebook loaded MNIST through ImageFolder, so its net took 3 (identical) colour
    channels; the default here is the 1 channel MNIST really has. Each ReLU is a
    `GeneralRelu` with a `sub` shift (starting at 0) for LSUV's mean variants to move.

    Args:
        in_channels: image channels.
        n_classes: outputs.
        size: the image side (32: MNIST padded to SVHN's size).
        act: builds each activation.
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
    """`depth` blocks of `Linear(width, width)` and an activation: the deep stack of chapter 1."""
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be positive, got depth={depth}, width={width}")
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), act()) for _ in range(depth)])
