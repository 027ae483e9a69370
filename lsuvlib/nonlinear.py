"""Which modules count as activations: the registry LSUV and the activation statistics share.

(Skeleton: the LSUV helper extends this to every element-wise activation in torch.nn.)
"""
from __future__ import annotations

from torch import nn

from .models import GeneralRelu

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (nn.ReLU, nn.LeakyReLU, GeneralRelu)


def is_activation(module: nn.Module) -> bool:
    """True for a module whose type is a registered activation."""
    return isinstance(module, ACTIVATION_TYPES)


def register_activation(cls: type[nn.Module]) -> type[nn.Module]:
    """Count ``cls`` (and its subclasses) as an activation from now on; usable as a decorator."""
    global ACTIVATION_TYPES
    if cls not in ACTIVATION_TYPES:
        ACTIVATION_TYPES = (*ACTIVATION_TYPES, cls)
    return cls
