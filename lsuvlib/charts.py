"""The book's charts. Each returns a matplotlib Figure with titles, axis labels and legends.

Figures are built without pyplot's global state, so nothing leaks between calls;
in IPython a returned Figure is shown once, as a PNG.
"""
from __future__ import annotations

import math
from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from .activations import ActivationStats

matplotlib.rcParams.update({"figure.dpi": 96, "axes.spines.top": False, "axes.spines.right": False})


def _show_figures_in_ipython() -> None:
    """Display Figure objects as PNG in IPython; without pyplot, nothing else registers that."""
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import print_figure
    except ImportError:
        return
    shell = get_ipython()
    if shell is not None:
        shell.display_formatter.formatters["image/png"].for_type(
            Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight", dpi=110))


_show_figures_in_ipython()


def _grid(n: int, width: float = 11, row_height: float = 3.2, cols: int = 2) -> tuple[Figure, list]:
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width, row_height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def plot_history(history: list[dict], batch_losses: Sequence[float], title: str = "Training") -> Figure:
    """Training loss per batch, and loss and accuracy per epoch for both splits."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax_batch, ax_acc = fig.subplots(1, 2)
    ax_batch.plot(batch_losses, lw=1)
    ax_batch.set(title="Training loss per batch", xlabel="Batch", ylabel="Cross-entropy loss")
    for phase, style in (("train", "o-"), ("eval", "s--")):
        rows = [r for r in history if r["phase"] == phase]
        ax_acc.plot([r["epoch"] + 1 for r in rows], [r["accuracy"] for r in rows], style, label=f"{phase} accuracy")
    ax_acc.set(title="Accuracy per epoch", xlabel="Epoch", ylabel="Accuracy", ylim=(0, 1))
    ax_acc.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.legend()
    fig.suptitle(title)
    return fig


def color_dim(stats: ActivationStats, title: str = "Activation histograms") -> Figure:
    """For each layer, how often each ``|activation|`` range occurs (colour, log scale) per batch."""
    fig, axes = _grid(len(stats.names))
    for ax, name, hist in zip(axes, stats.names, stats.hists):
        im = ax.imshow(np.log1p(hist.T.numpy()), origin="lower", aspect="auto", cmap="viridis",
                       extent=(0, hist.shape[0], 0, stats.hist_max))
        ax.set(title=f"Layer {name}", xlabel="Training batch", ylabel="|activation|")
        fig.colorbar(im, ax=ax, label="log(1 + count)")
    fig.suptitle(title)
    return fig


def dead_chart(stats: ActivationStats, title: str = "Near-zero activations") -> Figure:
    """For each layer, the share of activations in the lowest histogram bin per batch (1 = all dead)."""
    fig, axes = _grid(len(stats.names))
    cutoff = stats.hist_max / stats.bins
    for ax, name, dead in zip(axes, stats.names, stats.dead_fraction()):
        ax.plot(dead.numpy(), lw=2)
        ax.set(title=f"Layer {name}", xlabel="Training batch", ylabel=f"share with |a| < {cutoff:g}", ylim=(0, 1))
    fig.suptitle(title)
    return fig


def plot_stats(stats: ActivationStats, title: str = "Activation mean and std per layer") -> Figure:
    """Mean (target 0) and std (target 1) of each layer's activations over training batches."""
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    ax_mean, ax_std = fig.subplots(1, 2)
    for name, m, s in zip(stats.names, stats.means, stats.stds):
        ax_mean.plot(m.numpy(), label=name)
        ax_std.plot(s.numpy(), label=name)
    ax_mean.axhline(0, color="k", lw=0.7, ls=":")
    ax_std.axhline(1, color="k", lw=0.7, ls=":")
    ax_mean.set(title="Mean", xlabel="Training batch", ylabel="Mean activation")
    ax_std.set(title="Standard deviation", xlabel="Training batch", ylabel="Std of activation")
    ax_std.legend(title="Layer", fontsize="small")
    fig.suptitle(title)
    return fig


def plot_lr_find(result, title: str = "Learning-rate finder") -> Figure:
    """Loss against learning rate (log scale) with the suggested rate marked."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses, label="smoothed training loss")
    ax.axvline(result.suggestion, color="C3", ls="--", label=f"suggested lr = {result.suggestion:.3g}")
    ax.set(xscale="log", title=title, xlabel="Learning rate (log scale)", ylabel="Loss")
    ax.legend()
    return fig


def plot_layer_stds(curves: dict[str, Sequence[float]], title: str = "Activation std through a deep stack") -> Figure:
    """Std of the activations after each layer, one line per initialisation (log y axis)."""
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    for label, stds in curves.items():
        ax.plot(range(1, len(stds) + 1), stds, marker=".", label=label)
    ax.axhline(1, color="k", lw=0.7, ls=":")
    ax.set(yscale="log", title=title, xlabel="Layer", ylabel="Std of activations (log scale)")
    ax.legend()
    return fig


def plot_seed_bands(curves: dict[str, dict], metric: str = "accuracy", title: str = "Test accuracy per epoch") -> Figure:
    """Mean over seeds with a 95% confidence band, one line per configuration.

    ``curves[label]`` holds ``epoch``, ``mean``, ``ci_low``, ``ci_high`` lists (see ``stats.aggregate``).
    """
    fig = Figure(figsize=(8, 3.8), layout="constrained")
    ax = fig.subplots()
    for label, c in curves.items():
        epochs = [e + 1 for e in c["epoch"]]
        ax.plot(epochs, c["mean"], marker="o", label=label)
        ax.fill_between(epochs, c["ci_low"], c["ci_high"], alpha=0.2)
    ax.set(title=title, xlabel="Epoch", ylabel=f"Test {metric}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return fig


def plot_activation_fn(fn, start: float = -4.0, end: float = 4.0, title: str | None = None) -> Figure:
    """The shape of an activation function, e.g. ``GeneralRelu(leak=0.1, sub=0.4)``."""
    import torch

    x = torch.linspace(start, end, 200)
    fig = Figure(figsize=(5, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(x.numpy(), fn(x).detach().numpy())
    ax.axhline(0, color="k", lw=0.7)
    ax.axvline(0, color="k", lw=0.7)
    ax.grid(True, ls="--", alpha=0.5)
    ax.set(title=title or repr(fn), xlabel="input x", ylabel="f(x)")
    return fig


def plot_input_moments(series: dict[str, tuple[list[float], list[float]]],
                       title: str = "Input statistics per training batch") -> Figure:
    """Per-batch mean and std of the inputs, one line per preprocessing."""
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    ax_mean, ax_std = fig.subplots(1, 2)
    for label, (means, stds) in series.items():
        ax_mean.plot(means, label=label)
        ax_std.plot(stds, label=label)
    ax_mean.axhline(0, color="k", lw=0.7, ls=":")
    ax_std.axhline(1, color="k", lw=0.7, ls=":")
    ax_mean.set(title="Mean of a batch", xlabel="Training batch", ylabel="Mean pixel value")
    ax_std.set(title="Std of a batch", xlabel="Training batch", ylabel="Std of pixel values")
    ax_std.legend()
    fig.suptitle(title)
    return fig
