r"""A small training loop with callbacks, SGD (optionally with momentum) and per-epoch metrics.

The loop is visible in `Learner.fit`: for each epoch a training pass and an evaluation
pass. Metrics are summed on the device and read once per epoch, so a GPU never waits on
a per-batch `.item()`.

## Divergence

This module owns the rule that says a run has diverged; `together` applies the same
functions to each of its stacked copies. A run has diverged when the mean loss of the
current pass (training or eval, over the batches seen so far) is NaN, infinite, or
above

$$\text{threshold} = 10 \cdot \max(\ell_1, \ln C),$$

where $\ell_1$ is the loss of the run's first training batch, $C$ the number of
classes, and $\ln C$ the loss of a uniform guess (`DIVERGE_FACTOR` is the 10). A healthy
run falls below $\ln C$ within a few batches. A mean over the pass leaves a noisy batch
or two alone, yet one batch whose weights blew up (a loss of $10^{20}$, say) is enough,
even if the losses after it settle near a uniform guess. The rule is checked every
`CHECK_EVERY` training batches (one host sync) and at the end of every pass, so a run
whose loss is far above a uniform guess when it ends is diverged however short it was.
A diverged run stops; `Learner.stopped` (and `Run.stopped`) says why in a few words, e.g.
"training loss became NaN in epoch 2", and its history keeps the epochs it ran.
"""
from __future__ import annotations

import math
import time
import warnings
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .batches import DataLoaders
from .runtime import bars_shown, check_positive

CHECK_EVERY = 16  # training batches between divergence checks: each is a host sync, so not every batch
DIVERGE_FACTOR = 10.0


def divergence_threshold(first_loss: float | torch.Tensor, n_classes: int) -> torch.Tensor:
    r"""$10 \cdot \max(\ell_1, \ln C)$ for a first loss $\ell_1$ (a tensor: one per stacked copy).

    A first loss that is not finite counts as a uniform guess's, $\ln C$.
    """
    uniform = math.log(max(n_classes, 2))
    first = torch.as_tensor(first_loss, dtype=torch.float32)
    return DIVERGE_FACTOR * first.nan_to_num(uniform, uniform, uniform).clamp_min(uniform)


def diverged(mean_loss: float | torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Element-wise: is this pass's mean loss NaN, infinite or above `threshold`?"""
    mean_loss = torch.as_tensor(mean_loss)
    return ~torch.isfinite(mean_loss) | (mean_loss > threshold)


def stop_reason(phase: str, mean_loss: float, epoch: int) -> str:
    """Why a run stopped, for a page: e.g. "training loss became NaN in epoch 2" (epochs count from 1)."""
    if math.isnan(mean_loss):
        what = "became NaN"
    elif math.isinf(mean_loss):
        what = "became infinite"
    else:
        what = f"diverged to {mean_loss:.3g}"
    return f"{'training' if phase == 'train' else phase} loss {what} in epoch {epoch + 1}"


def warn_stopped(reason: str, who: str = "") -> None:
    warnings.warn(f"{who}Training stopped: the {reason}. Lower the learning rate or fix the initialisation.",
                  stacklevel=3)


class Callback:
    """A hook into `Learner.fit`: override any of its moments, each called with the `Learner`.

    The moments, in the order they run: `before_fit`, then per epoch `before_epoch`,
    `before_batch` and `after_batch` around every training and test batch (`learn.training`
    says which), `after_epoch`; and `after_fit`, which runs even when the fit fails. Callbacks
    run in increasing `order` (0 here).
    """

    order = 0

    def before_fit(self, learn: "Learner") -> None: ...
    def before_epoch(self, learn: "Learner") -> None: ...
    def before_batch(self, learn: "Learner") -> None: ...
    def after_batch(self, learn: "Learner") -> None: ...
    def after_epoch(self, learn: "Learner") -> None: ...
    def after_fit(self, learn: "Learner") -> None: ...


class EpochLR(Callback):
    """A callback that sets the learning rate of epoch $e$ to `lrs[e]` (the seed notebook's schedule)."""

    def __init__(self, lrs: Sequence[float]):
        self.lrs = list(lrs)

    def before_fit(self, learn: "Learner") -> None:
        if len(self.lrs) < learn.n_epochs:
            raise ValueError(f"EpochLR has {len(self.lrs)} learning rates for {learn.n_epochs} epochs")

    def before_epoch(self, learn: "Learner") -> None:
        for g in learn.opt.param_groups:
            g["lr"] = self.lrs[learn.epoch]


class Learner:
    r"""Train `model` on `dls` with SGD: per epoch a training pass, then a test pass.

    `momentum=0` is the blog's plain `Learner`; `momentum=0.85` is its `MomentumLearner`,
    whose "multiply old gradients by 0.85 instead of zeroing them" is exactly
    `torch.optim.SGD(momentum=0.85)`.

    After `fit`, `history` holds one dict per epoch and phase (`epoch`, `phase`, `loss`,
    `accuracy`, `seconds`) and `batch_losses` the training loss of every batch. A run
    diverges when a pass's mean loss is NaN, infinite or above $10 \cdot \max(\ell_1, \ln C)$,
    with $\ell_1$ the first batch's loss and $C$ the number of classes; it then stops,
    `stopped` says why in a few words and `diverged` is true.

    Args:
        model: the network, moved to the batches' device.
        dls: the training and test batches (`DataLoaders`).
        loss_func: the loss, `loss_func(model(x), y)`.
        lr: the learning rate, positive.
        momentum: SGD momentum.
        cbs: callbacks (`Callback`).
        progress: draw progress bars (never inside a book build).
    """

    def __init__(self, model: nn.Module, dls: DataLoaders, loss_func: Callable = F.cross_entropy,
                 lr: float = 0.1, momentum: float = 0.0, cbs: Iterable[Callback] = (), progress: bool = True):
        check_positive("lr", lr)
        self.device = dls.train.device
        self.model, self.dls, self.loss_func = model.to(self.device), dls, loss_func
        self.lr, self.momentum, self.progress = lr, momentum, progress
        self.cbs = sorted(cbs, key=lambda cb: cb.order)
        self.history: list[dict] = []
        self.batch_losses: list[float] = []
        self.stopped: str | None = None
        self.threshold: torch.Tensor | None = None  # set by the first training batch

    @property
    def diverged(self) -> bool:
        """True when the run stopped early because its loss diverged."""
        return self.stopped is not None

    def _call(self, moment: str) -> None:
        for cb in self.cbs:
            getattr(cb, moment)(self)

    def fit(self, n_epochs: int) -> "Learner":
        """Train for `n_epochs` epochs, or until the run diverges; returns the learner."""
        check_positive("n_epochs", n_epochs, whole=True)
        self.n_epochs = n_epochs
        self.opt = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum)
        try:
            self._call("before_fit")
            for self.epoch in range(n_epochs):
                self._call("before_epoch")
                for training in (True, False):
                    if not self._one_pass(training):
                        break
                self._call("after_epoch")
                if self.stopped:
                    warn_stopped(self.stopped)
                    break
        finally:
            self._after_fit()
        return self

    def _after_fit(self) -> None:
        """Every callback's after_fit runs (they remove hooks), even if an earlier one raises."""
        errors = []
        for cb in self.cbs:
            try:
                cb.after_fit(self)
            except Exception as e:  # noqa: BLE001  re-raised below, after the others ran
                errors.append(e)
        if errors:
            raise errors[0]

    def _one_pass(self, training: bool) -> bool:
        """One epoch over the training or the test batches; False if the run diverged."""
        self.training = training
        self.model.train(training)
        batches = self.dls.train if training else self.dls.valid
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), dtype=torch.long, device=self.device)
        seen, losses, start = 0, [], time.perf_counter()
        bar = self._bar(batches)
        with torch.set_grad_enabled(training):
            for self.batch_idx, (self.xb, self.yb) in enumerate(bar):
                self._call("before_batch")
                self.preds = self.model(self.xb)
                self.loss = self.loss_func(self.preds, self.yb)
                if training:
                    self.loss.backward()
                    self.opt.step()
                    self.opt.zero_grad(set_to_none=True)
                    losses.append(self.loss.detach())
                    if self.threshold is None:
                        self.threshold = divergence_threshold(losses[0], self.preds.shape[-1])
                self._call("after_batch")
                n = len(self.yb)
                loss_sum += self.loss.detach() * n
                correct += (self.preds.argmax(dim=1) == self.yb).sum()
                seen += n
                if training and self.batch_idx % CHECK_EVERY == CHECK_EVERY - 1 \
                        and diverged(loss_sum / seen, self.threshold):
                    break
        if getattr(bar, "is_active", False):  # left early: clear the bar as a finished one clears itself
            bar.on_iter_end()
        loss = loss_sum.item() / max(seen, 1)
        if training:
            self.batch_losses += torch.stack(losses).tolist() if losses else []
        phase = "train" if training else "eval"
        self.history.append(dict(epoch=self.epoch, phase=phase, loss=loss,
                                 accuracy=correct.item() / max(seen, 1), seconds=time.perf_counter() - start))
        if self.threshold is not None and diverged(loss, self.threshold):
            self.stopped = stop_reason(phase, loss, self.epoch)
        return self.stopped is None

    def _bar(self, batches):
        """A progress bar over one pass, for someone watching the notebook (see `runtime.bars_shown`)."""
        if not bars_shown(self.progress):
            return batches
        from fastprogress.fastprogress import progress_bar

        phase = "train" if self.training else "eval"
        bar = progress_bar(batches, leave=False)
        bar.comment = f"epoch {self.epoch + 1}/{self.n_epochs} {phase}"
        return bar


def final(history: list[dict], phase: str = "eval", metric: str = "accuracy") -> float:
    """The last epoch's `metric` (`"accuracy"` or `"loss"`) in `phase` (`"eval"` or `"train"`) of a `Learner.history`."""
    rows = [r for r in history if r["phase"] == phase]
    if not rows:
        raise ValueError(f"history has no {phase!r} rows")
    return rows[-1][metric]
