"""Activation statistics recorded while training: per layer and per batch, mean, std, zero share and a histogram.

The charts of these statistics live in `lsuvlib.charts` (`color_dim`, `dead_chart`,
`plot_stats`), which reads an `ActivationStats`; this module draws nothing.
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Sequence

import torch
from torch import nn

from . import nonlinear
from .hooks import Hooks, reader_names
from .learner import Callback

if TYPE_CHECKING:
    from .learner import Learner


class ActivationStats(Callback):
    r"""A callback that records the output $a$ of every activation module on each *training* batch.

    Per layer and batch it keeps, as `[layers, batches]` tensors once the fit ends:
    `means` and `stds` of the whole batch's activations; `zeros`, the share exactly 0 (units
    a ReLU switched off); and `hists` (`[layers, batches, bins]`), a histogram of $|a|$ in
    `bins` equal bins over $[0, \text{hist\_max}]$ of the batch's first `hist_images` images
    (`histc` is most of the cost). Values above `hist_max` fall outside every bin, as in
    `torch.histc`. Everything stays on the device until the fit ends, then moves to the CPU
    in one copy.

    `dead_fraction` is the fastai course's "dead" share (its `get_min`): the share of
    $|a| < \text{hist\_max} / \text{bins}$ (0.25 with the defaults) among the histogrammed
    $|a| \le \text{hist\_max}$, so it counts small live outputs too; `zero_fraction` counts
    only exact zeros.

    Args:
        types: module types to record; `None` asks `is_activation` when the fit starts, so
            types added by `register_activation` count.
        modules: record exactly these modules instead.
        bins: histogram bins.
        hist_max: upper edge of the histogram.
        hist_images: histogram only the first this many images of a batch (`None`: all).
    """

    order = 10  # after initialisers such as LSUVCallback, which run forward passes of their own

    def __init__(self, types: tuple[type[nn.Module], ...] | None = None, modules: Sequence[nn.Module] | None = None,
                 bins: int = 40, hist_max: float = 10.0, hist_images: int | None = 256):
        if bins < 1 or not hist_max > 0:
            raise ValueError(f"need bins >= 1 and hist_max > 0, got bins={bins}, hist_max={hist_max}")
        if hist_images is not None and hist_images < 1:
            raise ValueError(f"hist_images must be at least 1 or None (all images), got {hist_images}")
        self.types, self.modules, self.bins, self.hist_max = types, modules, bins, hist_max
        self.hist_images = hist_images
        self.max_batch = 0  # the largest batch seen: tells whether the histograms covered whole batches
        self.recording = False

    @property
    def near_zero_cutoff(self) -> float:
        """Upper edge of the lowest histogram bin: what `dead_fraction` calls near zero."""
        return self.hist_max / self.bins

    def _wanted(self, m: nn.Module) -> bool:
        return isinstance(m, self.types) if self.types is not None else nonlinear.is_activation(m)

    def before_fit(self, learn: Learner) -> None:
        mods = list(self.modules) if self.modules is not None else [m for m in learn.model.modules() if self._wanted(m)]
        if not mods:
            types = self.types if self.types is not None else nonlinear.ACTIVATION_TYPES
            raise ValueError(f"no module of type {', '.join(t.__name__ for t in types)} in the model to record; pass "
                             "modules=[...] or register your type with lsuvlib.register_activation(YourType)")
        names = reader_names(learn.model)
        self.names = [names[m] for m in mods]
        self._raw = [([], [], [], []) for _ in mods]
        self.hooks = Hooks(mods, self._record)

    @torch.no_grad()
    def _record(self, i: int, module: nn.Module, inputs, output: torch.Tensor) -> None:
        if not self.recording:
            return
        a = output.detach().float()
        means, stds, zeros, hists = self._raw[i]
        means.append(a.mean())
        stds.append(a.std())
        zeros.append((a == 0).float().mean())
        hists.append(torch.histc(a[:self.hist_images].abs(), self.bins, 0, self.hist_max))
        self.max_batch = max(self.max_batch, a.shape[0] if a.dim() else 1)

    def before_batch(self, learn: Learner) -> None:
        self.recording = learn.training

    def after_batch(self, learn: Learner) -> None:
        self.recording = False

    def after_fit(self, learn: Learner) -> None:
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

        self.means, self.stds, self.zeros, self.hists = stack(0), stack(1), stack(2), stack(3)

    @property
    def hist_is_partial(self) -> bool:
        """True when some batch had more images than the histograms counted."""
        return self.hist_images is not None and self.max_batch > self.hist_images

    def hist_note(self) -> str:
        """What the histogram counts cover, for chart labels: "" when they cover whole batches."""
        if not self.hist_is_partial:
            return ""
        return f"histogram counts from the first {self.hist_images} of {self.max_batch} images per batch"

    def dead_fraction(self) -> torch.Tensor:
        """Near-zero share per `[layer, batch]`: the course's definition (lowest bin over all bins)."""
        return self.hists[..., 0] / self.hists.sum(-1).clamp_min(1)

    def zero_fraction(self) -> torch.Tensor:
        """Share of activations exactly 0 per `[layer, batch]`, over whole batches."""
        return self.zeros

    def summary(self, last: int = 10) -> list[dict]:
        """Per layer: mean, std, near-zero and exact-zero shares averaged over the `last` recorded batches."""
        near, zero = self.dead_fraction(), self.zero_fraction()
        return [dict(layer=name, mean=self.means[i, -last:].mean().item(), std=self.stds[i, -last:].mean().item(),
                     near_zero=near[i, -last:].mean().item(), zero=zero[i, -last:].mean().item())
                for i, name in enumerate(self.names)]

    def to_dict(self) -> dict:
        """Per-batch series as plain lists, for results files."""
        return dict(layers=self.names, means=self.means.tolist(), stds=self.stds.tolist(),
                    near_zero=self.dead_fraction().tolist(), zero=self.zero_fraction().tolist(),
                    near_zero_cutoff=self.near_zero_cutoff, hist_images=self.hist_images,
                    max_batch=self.max_batch)



# ----------------------------------------------------------------------------- an activation's own scale


def through_activation(fn, mean: float = 0.0, std: float = 1.0) -> tuple[float, float]:
    r"""Mean and std of `fn(x)` for $x \sim \mathcal N(\mu, \sigma^2)$, $\mu$ = `mean`, $\sigma$ = `std`.

    What an element-wise activation makes of a normal input, integrated numerically
    (`scipy.stats.norm.expect`). For `GeneralRelu(leak=0.1, sub=0.4)` and a standard normal
    input: mean $-0.041$, std $0.613$ (in closed form $0.9/\sqrt{2\pi} - 0.4$ and
    $\sqrt{1.01/2 - 0.81/2\pi}$). `fn` takes and returns a tensor.
    """
    from scipy.stats import norm

    if not std >= 0:
        raise ValueError(f"std must be >= 0 (the input's standard deviation), got {std}")

    def f(x: float) -> float:
        with torch.no_grad():
            return float(fn(torch.tensor([x], dtype=torch.float64)))

    if std == 0:  # a constant input (a channel that is always the same)
        return f(mean), 0.0
    dist = norm(mean, std)
    m = float(dist.expect(f))
    return m, max(float(dist.expect(lambda x: f(x) ** 2)) - m * m, 0.0) ** 0.5


@torch.no_grad()
def activation_moments(model: nn.Module, xb: torch.Tensor) -> list[dict]:
    """Mean and std of what each activation module takes in and gives out, on one batch `xb`, as in training.

    One row per activation call (`nonlinear.is_activation`), named as the book's charts name it
    (`hooks.reader_names`): `layer`, `in_mean`, `in_std`, `out_mean`, `out_std`. The pass runs a
    copy of the model in training mode, so BatchNorm normalises with the batch's own statistics as
    it does in training, and the model's running statistics stay as they were.
    """
    model = copy.deepcopy(model).train()
    names, rows = reader_names(model), []
    mods = [m for m in model.modules() if nonlinear.is_activation(m)]
    if not mods:
        raise ValueError("the model has no activation module to measure (see lsuvlib.nonlinear.is_activation)")

    def record(i, m, inputs, out):
        a, b = inputs[0].float(), out.float()
        rows.append(dict(layer=names[m], in_mean=a.mean().item(), in_std=a.std().item(),
                         out_mean=b.mean().item(), out_std=b.std().item()))

    with Hooks(mods, record):
        model(xb)
    return rows
