"""The learning-rate range test (Smith 2017): raise the rate every batch and watch the loss.

The defaults are the blog's finder (the fastai course's `LRFinderCB`, see
`lsuvlib.sources.BLOG["lr_finder"]`): start at 1e-7, multiply the rate by 1.3 after every
batch, plain SGD, raw (unsmoothed) losses, stop once a loss exceeds 3 times the lowest so
far or is not finite, and at most one pass over the training batches.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from .batches import Batches


# A loss less than this share below the first is batch-to-batch noise, not a fall: on a curve that
# never moves (a network stuck at its start) batches of 1024 images differ by about 1%.
FLAT = 0.05


@dataclass
class LRFindResult:
    """One sweep of `lr_find`: the rate and loss of each batch, the suggestion and why it ended.

    Attributes:
        lrs: the rate each batch was trained with.
        losses: the curve the stop rule and the suggestion use: raw, or smoothed when `smoothing` > 0.
        suggestion: the rate at the lowest loss, divided by 10 (ours: the blog read its plot); `None`
            on a curve that never falls.
        stopped: why the sweep ended before `max_iters`, if it did.
        raw_losses: the losses as trained, before any smoothing.
        smoothing: the smoothing factor used (0: `losses` are the raw losses).
    """

    lrs: list[float]
    losses: list[float]
    suggestion: float | None
    stopped: str = ""
    raw_losses: list[float] = field(default_factory=list)
    smoothing: float = 0.0

    @property
    def lowest(self) -> int | None:
        """Index of the lowest finite loss, None when no loss is finite."""
        finite = [i for i, loss in enumerate(self.losses) if math.isfinite(loss)]
        return min(finite, key=self.losses.__getitem__) if finite else None

    def falling_part(self) -> tuple[int, int] | None:
        """Indices `(start, lowest)` of the stretch where the loss falls, None when the curve never falls.

        The curve falls when its lowest loss is more than `FLAT` (5%) below the first loss. The
        fall starts at the last batch before the lowest that is still within `FLAT` of the first.
        """
        low = self.lowest
        if low is None or not 0 < self.losses[0] < math.inf or not self.losses[low] < (1 - FLAT) * self.losses[0]:
            return None
        near_start = [i for i in range(low) if self.losses[i] >= (1 - FLAT) * self.losses[0]]
        return near_start[-1], low


def lr_find(model: nn.Module, batches: Batches, loss_func: Callable = F.cross_entropy, start: float = 1e-7,
            growth: float = 1.3, max_iters: int | None = None, stop_factor: float = 3.0, momentum: float = 0.0,
            smoothing: float = 0.0) -> LRFindResult:
    r"""The learning-rate range test (Smith 2017): train one batch after another at a growing rate.

    Batch $i$ is trained at $\text{start} \cdot \text{growth}^i$ with plain SGD. The sweep ends
    after `max_iters` batches, or early, after a loss that is not finite or exceeds `stop_factor`
    times the lowest loss before it. `smoothing` > 0 replaces each loss by its bias-corrected
    exponential moving average (fastai's later finder uses 0.98) before the stop rule and the
    suggestion see it; the blog used the raw losses. The suggestion is a tenth of the rate at
    the lowest loss, and `None` when the curve never falls (`LRFindResult.falling_part`).

    The model is trained in place and then restored, whatever happened (errors included): its
    `state_dict` (weights and buffers such as BatchNorm's running statistics), each module's
    train/eval flag and torch's global random state. The sweep iterates with a fork of the
    loaders' shuffling generator, so it sees the batches a fit would see next and a following
    fit sees the same order as without it. (The blog's finder left its model trained.)

    Args:
        model: the network; restored when the sweep ends.
        batches: the training batches (`Batches`).
        loss_func: the loss, `loss_func(model(x), y)`.
        start: the first rate.
        growth: the factor the rate grows by per batch, above 1.
        max_iters: the most batches, at least 2; `None`: one pass over `batches` (the blog's one
            epoch); more than one pass starts another.
        stop_factor: stop once a loss exceeds this many times the lowest so far.
        momentum: SGD momentum.
        smoothing: 0 for raw losses, else the moving average's factor, below 1.

    Returns:
        An `LRFindResult`.
    """
    if not start > 0:
        raise ValueError(f"start must be a positive learning rate, got {start}")
    if not growth > 1:
        raise ValueError(f"growth must be above 1 (the factor the rate grows by per batch), got {growth}")
    if max_iters is None:
        max_iters = len(batches)
    if max_iters < 2:
        raise ValueError(f"max_iters must be at least 2 (a sweep needs two rates), got {max_iters}")
    if not stop_factor > 1:
        raise ValueError(f"stop_factor must be above 1, got {stop_factor}")
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1) (0 = raw losses), got {smoothing}")
    model.to(batches.device)
    saved = copy.deepcopy(model.state_dict())
    modes = {m: m.training for m in model.modules()}
    device = torch.device(batches.device)
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    opt = torch.optim.SGD(model.parameters(), lr=start, momentum=momentum)
    lrs, losses, raw, avg, best, stopped = [], [], [], 0.0, math.inf, ""
    shuffle = batches.fork_generator()  # a copy: the loader's own generator stays where it is
    try:
        with torch.random.fork_rng(devices=rng_devices):
            model.train()
            it = batches.iter_with(shuffle)
            for i in range(max_iters):
                try:
                    xb, yb = next(it)
                except StopIteration:  # fewer batches than iterations: start another pass
                    it = batches.iter_with(shuffle)
                    xb, yb = next(it)
                lr = start * growth ** i
                for g in opt.param_groups:
                    g["lr"] = lr
                loss = loss_func(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                value = loss.item()
                if smoothing:
                    avg = smoothing * avg + (1 - smoothing) * value
                    shown = avg / (1 - smoothing ** (i + 1))
                else:
                    shown = value
                lrs.append(lr); losses.append(shown); raw.append(value)  # noqa: E702
                if not math.isfinite(shown) or shown > stop_factor * best:
                    stopped = (f"stopped at lr={lr:.3g}: loss {shown:.3g} is not finite" if not math.isfinite(shown)
                               else f"stopped at lr={lr:.3g}: loss {shown:.3g} > {stop_factor:g} x lowest {best:.3g}")
                    break
                best = min(best, shown)
    finally:
        model.load_state_dict(saved)
        for m, training in modes.items():
            m.training = training
    result = LRFindResult(lrs, losses, None, stopped, raw, smoothing)
    if result.falling_part() is not None:  # a flat curve's lowest point is noise: it suggests nothing
        result.suggestion = lrs[result.lowest] / 10
    return result
