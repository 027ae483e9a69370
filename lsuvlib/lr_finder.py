"""The learning-rate range test (Smith 2017): raise the rate every batch and watch the loss."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .batches import Batches


@dataclass
class LRFindResult:
    lrs: list[float]
    losses: list[float]          # smoothed, bias-corrected
    suggestion: float            # the rate at the lowest smoothed loss, divided by 10
    stopped: str = ""            # why the sweep ended before ``end``, if it did
    raw_losses: list[float] = field(default_factory=list)


def lr_find(model: nn.Module, batches: Batches, loss_func: Callable = F.cross_entropy, start: float = 1e-5,
            end: float = 10.0, n_iters: int = 100, stop_factor: float = 4.0, momentum: float = 0.0,
            smoothing: float = 0.9) -> LRFindResult:
    """Train for ``n_iters`` batches with the rate growing geometrically from ``start`` to ``end``.

    The sweep stops early once the smoothed loss exceeds ``stop_factor`` times its best,
    or is not finite. The model's weights and train/eval mode are restored afterwards,
    whatever happens, so the range test leaves no trace on the model.
    """
    if not 0 < start < end:
        raise ValueError(f"need 0 < start < end, got start={start}, end={end}")
    if n_iters < 2:
        raise ValueError(f"n_iters must be at least 2, got {n_iters}")
    model.to(batches.device)
    saved = copy.deepcopy(model.state_dict())
    modes = {m: m.training for m in model.modules()}
    opt = torch.optim.SGD(model.parameters(), lr=start, momentum=momentum)
    mult = (end / start) ** (1 / (n_iters - 1))
    lrs, losses, raw, avg, best, stopped = [], [], [], 0.0, math.inf, ""
    try:
        model.train()
        it = iter(batches)
        for i in range(n_iters):
            try:
                xb, yb = next(it)
            except StopIteration:  # fewer batches than iterations: start another pass
                it = iter(batches)
                xb, yb = next(it)
            lr = start * mult ** i
            for g in opt.param_groups:
                g["lr"] = lr
            loss = loss_func(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = loss.item()
            avg = smoothing * avg + (1 - smoothing) * value
            smooth = avg / (1 - smoothing ** (i + 1))
            lrs.append(lr); losses.append(smooth); raw.append(value)  # noqa: E702
            if not math.isfinite(smooth) or smooth > stop_factor * best:
                stopped = f"stopped at lr={lr:.3g}: loss {smooth:.3g} > {stop_factor} x best {best:.3g}"
                break
            best = min(best, smooth)
    finally:
        model.load_state_dict(saved)
        for m, training in modes.items():
            m.training = training
    finite = [(l, r) for l, r in zip(losses, lrs) if math.isfinite(l)]
    suggestion = min(finite)[1] / 10 if finite else start
    return LRFindResult(lrs, losses, suggestion, stopped, raw)
