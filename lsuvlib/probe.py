"""Reading a network on one batch without changing it: which activation each weight layer feeds
(`find_pairs`), and the statistics of chosen outputs, by call, in one pass (`measure_activations`).

Passes run inside `measuring` (eval mode, no gradients), so every module's train/eval flag,
BatchNorm statistics and hooks stay as they were. LSUV measures through these; so does a run
after training.
"""
from __future__ import annotations

import warnings
from collections import Counter
from contextlib import contextmanager
from typing import NamedTuple, Sequence

import torch
from torch import nn

from . import nonlinear
from .hooks import Hooks, layer_names
from .init import WEIGHT_LAYERS

LAYERS = (*WEIGHT_LAYERS, nn.MultiheadAttention)  # the layers LSUV sets (attention through out_proj)


class Pair(NamedTuple):
    """A weight layer and the activation after it, each at one call (from 0 within a pass); `act` is
    `None` where the layer's own output is measured. A shared activation gives one pair per call."""

    layer: nn.Module
    act: nn.Module | None
    layer_call: int = 0
    act_call: int = 0


@contextmanager
def measuring(model: nn.Module):
    """Eval mode and no gradients for the block; each module's own train/eval flag restored after."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training


class _Measured(Exception):
    """Raised inside a hook to end the forward pass once the last needed module has run."""


def read(model: nn.Module, xb: torch.Tensor, modules, points: Sequence[tuple[nn.Module, int]] = (), stop=None):
    """One pass with a hook on each of `modules`: every (module, call) in the order it ran; `(mean, std,
    min)` of each in `points`, taken in the hook before an in-place op rewrites the tensor and in float32
    at least (half rounds σ); and the model's output (`None` if the pass ended after `stop`)."""
    order, found, calls = [], {}, Counter()

    def hook(i, m, inp, out):
        order.append(key := (m, calls[m]))
        calls[m] += 1
        if key in points:
            a = out[0] if isinstance(out, tuple) else out  # attention returns (output, weights)
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"LSUV can only measure modules that return a tensor, got {type(out).__name__}")
            a = a.detach() if a.dtype == torch.float64 else a.detach().float()
            std, mean = torch.std_mean(a)
            found[key] = (mean.item(), std.item(), a.min().item())
        if key == stop:
            raise _Measured

    with Hooks(list(modules), hook):
        try:
            return order, found, model(xb)
        except _Measured:
            return order, found, None


def survey(model: nn.Module, xb: torch.Tensor, act_types) -> tuple[list[tuple[nn.Module, int]], object]:
    """Every (module, call) of the leaves, weight layers and activations, in the order one pass runs them,
    and the pass's output (with a graph, under `torch.enable_grad`)."""
    order, _, out = read(model, xb, [m for m in model.modules()
                                     if not list(m.children()) or isinstance(m, (*act_types, *LAYERS))])
    return order, out


def plan(order: list[tuple[nn.Module, int]], act_types, every_layer: bool = False) -> list[Pair]:
    """In execution order, each layer with the first activation call after it (none if another layer
    comes first), or with `every_layer` each layer alone; attention always alone; each layer once."""
    pairs, pending = {}, None
    for m, call in order:
        if isinstance(m, LAYERS) and (every_layer or isinstance(m, nn.MultiheadAttention)):
            pairs.setdefault(m, Pair(m, None, call))
            pending = None
        elif isinstance(m, LAYERS):
            pending = (m, call)
        elif isinstance(m, act_types) and pending:
            pairs.setdefault(pending[0], Pair(pending[0], m, pending[1], call))
            pending = None
    return list(pairs.values())


def find_pairs(model: nn.Module, xb: torch.Tensor, act_types: tuple[type[nn.Module], ...] | None = None,
               ) -> list[Pair]:
    """Each Conv/Linear call paired with the first activation call after it, in execution order: by
    call (an activation used twice gives two pairs), passing over BatchNorm, pooling and dropout; a
    layer followed by another first is left out. `act_types`: default `nonlinear.ACTIVATION_TYPES`."""
    act_types = nonlinear.activation_types() if act_types is None else tuple(act_types)
    with measuring(model):
        order, _ = survey(model, xb, act_types)
    return [p for p in plan(order, act_types) if p.act is not None]


def measure_activations(model: nn.Module, xb: torch.Tensor,
                        act_types: tuple[type[nn.Module], ...] | None = None) -> list[dict]:
    """Mean and std at every paired activation call on `xb` (two passes: pair, then measure)."""
    xb = checked_batch(model, xb)
    names, pairs = layer_names(model), find_pairs(model, xb, act_types)
    with measuring(model):
        _, found, _ = read(model, xb, dict.fromkeys(p.act for p in pairs), [(p.act, p.act_call) for p in pairs])
    return [dict(layer=names[p.layer], activation=type(p.act).__name__, mean=found[p.act, p.act_call][0],
                 std=found[p.act, p.act_call][1]) for p in pairs]


def checked_batch(model: nn.Module, xb) -> torch.Tensor:
    """`xb` on the model's device (floats in its dtype), after checking it can be measured."""
    if not isinstance(xb, torch.Tensor):
        raise TypeError(f"xb must be a tensor batch of inputs, got {type(xb).__name__}")
    if xb.numel() == 0:
        raise ValueError(f"the input batch xb is empty (shape {tuple(xb.shape)}); LSUV needs real inputs to measure")
    if xb.dim() == 0 or len(xb) < 2:
        raise ValueError(f"xb has shape {tuple(xb.shape)}, and a batch of one has no spread: pass several inputs")
    if xb.is_floating_point() and not torch.isfinite(xb).all():
        nan, inf = torch.isnan(xb).sum().item(), torch.isinf(xb).sum().item()
        raise ValueError(f"the input batch xb has {nan} NaN and {inf} infinite values out of {xb.numel()}; "
                         "LSUV measures statistics of real inputs, so clean the batch first")
    if xb.dtype == torch.uint8:
        warnings.warn("LSUV: xb is uint8, so the weights are scaled for raw 0-255 values while training likely "
                      "sees 0-1: pass the batch as training sees it (e.g. xb / 255)", stacklevel=3)
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("the model has no parameters to initialise")
    pixels = xb.is_floating_point() or xb.dtype == torch.uint8  # other integers are indices (token ids)
    return xb.to(param.device, param.dtype) if pixels else xb.to(param.device)
