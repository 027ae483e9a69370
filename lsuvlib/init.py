"""Data-independent initialisers: what LSUV is compared against."""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def init_weights(model: nn.Module, rule: Callable[[torch.Tensor], object]) -> nn.Module:
    """Apply `rule` (an in-place `nn.init` function) to every conv and linear weight, and zero every bias.

    Returns the model, so calls chain. The initialisers below are this with one rule each.
    """
    for m in model.modules():
        if isinstance(m, WEIGHT_LAYERS):
            rule(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def init_kaiming(model: nn.Module, leak: float = 0.0) -> nn.Module:
    r"""Kaiming-normal weights, $\mathcal{N}(0, 2 / ((1 + a^2)\,\text{fan\_in}))$ (He et al. 2015), zero biases.

    `leak` ($a$) is the negative slope of the (leaky) ReLU that follows.
    """
    return init_weights(model, partial(nn.init.kaiming_normal_, a=leak))


def init_normal(model: nn.Module, std: float) -> nn.Module:
    r"""Plain $\mathcal{N}(0, \text{std}^2)$ weights and zero biases: the naive scheme chapter 1 starts from."""
    return init_weights(model, partial(nn.init.normal_, mean=0.0, std=std))


def init_orthonormal(model: nn.Module) -> nn.Module:
    """Random orthonormal weights (`nn.init.orthogonal_`, gain 1; Saxe et al. 2014) and zero biases."""
    return init_weights(model, nn.init.orthogonal_)
