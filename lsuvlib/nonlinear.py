"""Which modules count as activations: the one registry LSUV and the activation statistics share.

The rule is a tuple of known types, `ACTIVATION_TYPES`: every element-wise non-linearity in
`torch.nn` plus `GeneralRelu`. Your own types join with `register_activation` (or, for one
call, an `act_types=` argument).

Why a tuple of types, and not "the first parameter-free module after the weight layer":
parameter-free modules also include `MaxPool2d`, `Dropout`, `Flatten`, `AdaptiveAvgPool2d`,
`Identity` and `Softmax`, so that rule would pair a classifier with its `Dropout` or a
convolution with its pooling, and it would miss `PReLU`, whose slope is a parameter. Modules
that mix positions (`Softmax`, `GLU`, `MultiheadAttention`) are left out on purpose: they are
not element-wise.

Read the registry through this module at call time (`nonlinear.ACTIVATION_TYPES` or
`activation_types()`): `from lsuvlib.nonlinear import ACTIVATION_TYPES` keeps a copy that
later registrations do not reach.
"""
from __future__ import annotations

from torch import nn

from .models import GeneralRelu

_TORCH_NAMES = (
    "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
    "Tanh", "Sigmoid", "Hardswish", "Hardsigmoid", "Hardtanh", "Softplus", "LogSigmoid", "Softsign",
    "Tanhshrink", "Hardshrink", "Softshrink", "Threshold",
)
# Outputs confined to an interval too narrow for unit std (sigmoid-like <= 0.5, tanh-like < 1).
_BOUNDED_NAMES = ("Tanh", "Sigmoid", "Hardtanh", "Hardsigmoid", "Softsign")

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    *(getattr(nn, n) for n in _TORCH_NAMES if hasattr(nn, n)), GeneralRelu)
BOUNDED_TYPES: tuple[type[nn.Module], ...] = tuple(getattr(nn, n) for n in _BOUNDED_NAMES if hasattr(nn, n))


def activation_types() -> tuple[type[nn.Module], ...]:
    """The module types that count as activations now, every `register_activation` so far included."""
    return ACTIVATION_TYPES


def is_activation(module: nn.Module) -> bool:
    """True for a module whose type is a registered activation."""
    return isinstance(module, ACTIVATION_TYPES)


def is_bounded(module: nn.Module) -> bool:
    """True for an activation whose outputs cannot have unit std (`Tanh`, `Sigmoid`, ...).

    LSUV measures the weight layer's own output instead for these (`measure="auto"`). The
    type must match exactly: `ReLU6` subclasses `Hardtanh` in torch, but its range $[0, 6]$
    holds unit std.
    """
    return type(module) in BOUNDED_TYPES


def register_activation(cls: type[nn.Module], *, bounded: bool = False) -> type[nn.Module]:
    """Count `cls` (and its subclasses) as an activation from now on; usable as a decorator.

    Args:
        cls: an `nn.Module` subclass.
        bounded: its outputs cannot reach unit std, so LSUV measures the layer before it
            (see `is_bounded`).

    Returns:
        `cls`, unchanged.
    """
    global ACTIVATION_TYPES, BOUNDED_TYPES
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"register_activation needs an nn.Module subclass, got {cls!r}")
    if cls not in ACTIVATION_TYPES:
        ACTIVATION_TYPES = (*ACTIVATION_TYPES, cls)
    if bounded and cls not in BOUNDED_TYPES:
        BOUNDED_TYPES = (*BOUNDED_TYPES, cls)
    return cls
