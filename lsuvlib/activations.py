"""Activation statistics recorded while training: per layer and per batch, mean, std and a histogram."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .hooks import Hooks, layer_names
from .learner import Callback
from .models import GeneralRelu

ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, GeneralRelu)


class ActivationStats(Callback):
    """Record the output of every activation module on each *training* batch.

    Per layer and batch it keeps the mean, the std and a histogram of ``|a|`` over
    ``bins`` equal bins in ``[0, hist_max]`` (the lowest bin, ``|a| < hist_max / bins``,
    is what :meth:`dead_fraction` calls "near zero"). Mean and std cover the whole
    batch; the histogram covers its first ``hist_images`` images (``None``: all), since
    ``histc`` is most of the cost and a few hundred images already fill every bin.
    Everything stays on the device until the fit ends, then moves to the CPU in one copy.
    """

    order = 10  # after initialisers such as LSUVCallback, which run forward passes of their own

    def __init__(self, types: tuple[type[nn.Module], ...] = ACTIVATIONS, modules: Sequence[nn.Module] | None = None,
                 bins: int = 40, hist_max: float = 10.0, hist_images: int | None = 256):
        self.types, self.modules, self.bins, self.hist_max = types, modules, bins, hist_max
        self.hist_images = hist_images
        self.recording = False

    def before_fit(self, learn) -> None:
        mods = list(self.modules) if self.modules is not None else [
            m for m in learn.model.modules() if isinstance(m, self.types)]
        if not mods:
            raise ValueError(f"no module of type {[t.__name__ for t in self.types]} in the model to record")
        names = layer_names(learn.model)
        self.names = [f"{names[m]} ({type(m).__name__})" for m in mods]
        self._raw = [([], [], []) for _ in mods]
        self.hooks = Hooks(mods, self._record)

    @torch.no_grad()
    def _record(self, i: int, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if not self.recording:
            return
        a = output.detach().float()
        means, stds, hists = self._raw[i]
        means.append(a.mean())
        stds.append(a.std())
        hists.append(torch.histc(a[:self.hist_images].abs(), self.bins, 0, self.hist_max))

    def before_batch(self, learn) -> None:
        self.recording = learn.training

    def after_batch(self, learn) -> None:
        self.recording = False

    def after_fit(self, learn) -> None:
        # Also runs when the fit failed, maybe before before_fit finished: never mask that error.
        hooks = getattr(self, "hooks", None)
        if hooks is not None:
            hooks.remove()
        self.recording = False
        raw = self.__dict__.pop("_raw", None)
        if raw is None:
            return
        n = min(len(r[0]) for r in raw)  # a forward pass that failed midway recorded only some layers

        def stack(i: int) -> torch.Tensor:
            # [layers, batches] (or [layers, batches, bins]), moved off the device in one copy.
            return torch.stack([torch.stack(r[i][:n]) for r in raw]).cpu() if n else torch.empty(0)

        self.means, self.stds, self.hists = stack(0), stack(1), stack(2)

    def dead_fraction(self) -> torch.Tensor:
        """Share of activations in the lowest ``|a|`` bin, ``[layers, batches]``."""
        return self.hists[..., 0] / self.hists.sum(-1).clamp_min(1)

    def summary(self, last: int = 10) -> list[dict]:
        """Per layer: mean, std and near-zero share averaged over the ``last`` recorded batches."""
        dead = self.dead_fraction()
        return [dict(layer=name, mean=self.means[i, -last:].mean().item(), std=self.stds[i, -last:].mean().item(),
                     near_zero=dead[i, -last:].mean().item()) for i, name in enumerate(self.names)]

    def to_dict(self) -> dict:
        """Per-batch series as plain lists, for results files."""
        return dict(layers=self.names, means=self.means.tolist(), stds=self.stds.tolist(),
                    near_zero=self.dead_fraction().tolist())

    # The blog's three activation charts; the drawing lives in charts.py.
    def color_dim(self, **kw):
        from .charts import color_dim
        return color_dim(self, **kw)

    def dead_chart(self, **kw):
        from .charts import dead_chart
        return dead_chart(self, **kw)

    def plot_stats(self, **kw):
        from .charts import plot_stats
        return plot_stats(self, **kw)
