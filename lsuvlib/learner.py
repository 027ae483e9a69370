"""A small training loop with callbacks, SGD (optionally with momentum) and per-epoch metrics.

The loop is visible in :meth:`Learner.fit`: for each epoch a training pass and an
evaluation pass. Metrics are summed on the device and read once per epoch, so a GPU
never waits on a per-batch ``.item()``.
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

NAN_CHECK_EVERY = 16  # batches between finiteness checks: a host sync, so not every batch
# Runaway divergence: a finite loss this many times above max(first batch loss, ln(n_classes))
# (a uniform guess's loss) for DIVERGE_BATCHES training batches in a row. A healthy run sits
# below ln(n_classes) within a few batches; a factor of 10 leaves noisy starts alone.
DIVERGE_FACTOR = 10.0
DIVERGE_BATCHES = 8  # <= NAN_CHECK_EVERY, so every window is seen by some check


def divergence_threshold(start_loss: float | torch.Tensor, n_classes: int) -> float | torch.Tensor:
    """The loss above which a batch counts towards runaway divergence (see ``DIVERGE_FACTOR``)."""
    uniform = math.log(max(n_classes, 2))
    if isinstance(start_loss, torch.Tensor):
        return DIVERGE_FACTOR * start_loss.nan_to_num(uniform, uniform, uniform).clamp_min(uniform)
    return DIVERGE_FACTOR * max(start_loss if math.isfinite(start_loss) else uniform, uniform)


def diverged_message(epoch: int, threshold: float, last: float) -> str:
    return (f"Training stopped in epoch {epoch}: the training loss diverged (above {threshold:.3g} for "
            f"{DIVERGE_BATCHES} batches in a row, last {last:.3g}). Lower the learning rate or fix the "
            "initialisation.")


class Callback:
    """Override any of the moments below; each receives the :class:`Learner`."""

    order = 0

    def before_fit(self, learn: "Learner") -> None: ...
    def before_epoch(self, learn: "Learner") -> None: ...
    def before_batch(self, learn: "Learner") -> None: ...
    def after_batch(self, learn: "Learner") -> None: ...
    def after_epoch(self, learn: "Learner") -> None: ...
    def after_fit(self, learn: "Learner") -> None: ...


class EpochLR(Callback):
    """Use ``lrs[epoch]`` as the learning rate of each epoch (the notebook's schedule)."""

    def __init__(self, lrs: Sequence[float]):
        self.lrs = list(lrs)

    def before_fit(self, learn: "Learner") -> None:
        if len(self.lrs) < learn.n_epochs:
            raise ValueError(f"EpochLR has {len(self.lrs)} learning rates for {learn.n_epochs} epochs")

    def before_epoch(self, learn: "Learner") -> None:
        for g in learn.opt.param_groups:
            g["lr"] = self.lrs[learn.epoch]


class Learner:
    """Train ``model`` on ``dls`` with SGD.

    ``momentum=0`` is the blog's plain ``Learner``; ``momentum=0.85`` is its
    ``MomentumLearner``, whose "multiply old gradients by 0.85 instead of zeroing them"
    is exactly ``torch.optim.SGD(momentum=0.85)``.

    After :meth:`fit`, ``history`` holds one row per epoch and phase
    (``epoch, phase, loss, accuracy, seconds``) and ``batch_losses`` the training loss of
    every batch. ``stopped`` explains an early stop, else is ``None``: a non-finite loss, or a
    runaway one (``DIVERGE_FACTOR`` times above max(first loss, ln(n_classes)) for
    ``DIVERGE_BATCHES`` batches in a row); ``diverged`` is True in both cases.
    """

    def __init__(self, model: nn.Module, dls: DataLoaders, loss_func: Callable = F.cross_entropy,
                 lr: float = 0.1, momentum: float = 0.0, cbs: Iterable[Callback] = (), progress: bool = True):
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        self.device = dls.train.device
        self.model, self.dls, self.loss_func = model.to(self.device), dls, loss_func
        self.lr, self.momentum, self.progress = lr, momentum, progress
        self.cbs = sorted(cbs, key=lambda cb: cb.order)
        self.history: list[dict] = []
        self.batch_losses: list[float] = []
        self.stopped: str | None = None
        self._threshold: torch.Tensor | None = None
        self._tail: list[torch.Tensor] = []  # last training losses of earlier passes: windows span epochs

    @property
    def diverged(self) -> bool:
        return self.stopped is not None

    def _call(self, moment: str) -> None:
        for cb in self.cbs:
            getattr(cb, moment)(self)

    def fit(self, n_epochs: int) -> "Learner":
        if n_epochs < 1:
            raise ValueError(f"n_epochs must be at least 1, got {n_epochs}")
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
                    warnings.warn(self.stopped)
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
        """One epoch over the training or the test batches; False if the loss went non-finite."""
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
                    if self._threshold is None:  # first training batch of the fit
                        self._threshold = divergence_threshold(losses[0], self.preds.shape[-1])
                self._call("after_batch")
                n = len(self.yb)
                loss_sum += self.loss.detach() * n
                correct += (self.preds.argmax(dim=1) == self.yb).sum()
                seen += n
                # One host sync per NAN_CHECK_EVERY batches covers both NaN/inf and runaway losses.
                if training and self.batch_idx % NAN_CHECK_EVERY == NAN_CHECK_EVERY - 1 \
                        and self._bad(loss_sum, losses):
                    break
        if getattr(bar, "is_active", False):  # left early: clear the bar as a finished one clears itself
            bar.on_iter_end()
        loss = loss_sum.item() / max(seen, 1)
        if training:
            self.batch_losses += torch.stack(losses).tolist() if losses else []
        self.history.append(dict(epoch=self.epoch, phase="train" if training else "eval", loss=loss,
                                 accuracy=correct.item() / max(seen, 1), seconds=time.perf_counter() - start))
        if not math.isfinite(loss):
            self.stopped = (f"Training stopped in epoch {self.epoch}: the {'training' if training else 'eval'} "
                            f"loss became {loss}. Lower the learning rate or fix the initialisation.")
            return False
        if training:
            runaway = self._runaway(losses)
            self._tail = (self._tail + losses)[-DIVERGE_BATCHES:]
            if runaway:
                self.stopped = diverged_message(self.epoch, float(self._threshold), losses[-1].item())
                return False
        return True

    def _window(self, losses: list[torch.Tensor]) -> list[torch.Tensor]:
        return (self._tail + losses)[-DIVERGE_BATCHES:]

    def _runaway(self, losses: list[torch.Tensor]) -> bool:
        window = self._window(losses)
        if len(window) < DIVERGE_BATCHES or self._threshold is None:
            return False
        return bool((torch.stack(window) > self._threshold).all())

    def _bad(self, loss_sum: torch.Tensor, losses: list[torch.Tensor]) -> bool:
        window = self._window(losses)
        if len(window) < DIVERGE_BATCHES:
            return not bool(torch.isfinite(loss_sum))
        runaway = (torch.stack(window) > self._threshold).all()
        return bool(~torch.isfinite(loss_sum) | runaway)

    def _bar(self, batches):
        """A progress bar over one pass; it clears itself when done, so saved notebooks stay clean."""
        if not self.progress:
            return batches
        from fastprogress.fastprogress import progress_bar

        phase = "train" if self.training else "eval"
        bar = progress_bar(batches, leave=False)
        bar.comment = f"epoch {self.epoch + 1}/{self.n_epochs} {phase}"
        return bar


def final(history: list[dict], phase: str = "eval", metric: str = "accuracy") -> float:
    """The last epoch's ``metric`` in ``phase`` from a learner's history."""
    rows = [r for r in history if r["phase"] == phase]
    if not rows:
        raise ValueError(f"history has no {phase!r} rows")
    return rows[-1][metric]
