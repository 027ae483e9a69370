"""Data-independent initialisers: what LSUV is compared against."""
from __future__ import annotations

from torch import nn

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def init_kaiming(model: nn.Module, leak: float = 0.0) -> nn.Module:
    """Kaiming-normal weights (He et al. 2015) for every conv and linear layer, zero biases.

    ``leak`` is the negative slope of the (leaky) ReLU that follows, which sets the gain
    ``sqrt(2 / (1 + leak**2))``. Returns the model so calls chain.
    """
    for m in model.modules():
        if isinstance(m, WEIGHT_LAYERS):
            nn.init.kaiming_normal_(m.weight, a=leak)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def init_normal(model: nn.Module, std: float) -> nn.Module:
    """Plain N(0, std^2) weights and zero biases: the naive scheme chapter 1 starts from."""
    for m in model.modules():
        if isinstance(m, WEIGHT_LAYERS):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model
