"""The book's charts. Each returns a matplotlib Figure with titles, axis labels and legends.

Figures are built without pyplot's global state, so nothing leaks between calls, and
importing this module changes no global setting: the house style is applied per figure
(:func:`matplotlib.rc_context` around each chart), and showing Figures in IPython is
switched on by :func:`register_ipython_png` (``lsuvlib.page.setup()`` calls it).
"""
from __future__ import annotations

import functools
import math
import textwrap
from typing import TYPE_CHECKING, Any, Callable, Sequence

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from .activations import ActivationStats
    from .lr_finder import LRFindResult

# Applied while a chart is built (axes read the spine settings when they are created).
STYLE = {"figure.dpi": 96, "axes.spines.top": False, "axes.spines.right": False, "font.size": 10,
         "legend.fontsize": 9, "axes.titlesize": 10, "figure.titlesize": 11}
# Figures are as wide as the book's text column (about 7.3 inches at the PNG's 110 dpi), so a page
# shows them at their own size and their text stays readable; a wider one would be shrunk.
WIDTH = 7.0


def _styled(chart: Callable[..., Figure]) -> Callable[..., Figure]:
    @functools.wraps(chart)
    def build(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(STYLE):
            return chart(*args, **kwargs)
    return build


def register_ipython_png(dpi: int = 110) -> bool:
    """Show a returned Figure as a PNG in the running IPython kernel; False outside IPython.

    Without pyplot nothing else registers a display for bare Figures. Calling it again
    replaces the earlier registration, so it is safe to call from every chapter.
    """
    try:
        from IPython import get_ipython
        from IPython.core.pylabtools import print_figure
    except ImportError:
        return False
    shell = get_ipython()
    if shell is None:
        return False
    shell.display_formatter.formatters["image/png"].for_type(
        Figure, lambda fig: print_figure(fig, "png", bbox_inches="tight", dpi=dpi))
    return True


def _require_stats(stats: ActivationStats) -> None:
    if not hasattr(stats, "means"):
        raise ValueError("this ActivationStats has recorded nothing: pass it in a Learner's cbs and fit first")
    if stats.means.numel() == 0:
        raise ValueError("this ActivationStats recorded no training batch (the fit stopped before the first one)")


def _with_note(title: str, note: str) -> str:
    return f"{title}\n({note})" if note else title


def _grid(n: int, width: float = WIDTH, row_height: float = 2.6, cols: int = 2) -> tuple[Figure, list]:
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width, row_height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


@_styled
def plot_history(history: list[dict], batch_losses: Sequence[float], title: str = "Training",
                 n_classes: int | None = None) -> Figure:
    r"""Training loss per batch, and accuracy per epoch for both splits.

    With `n_classes` ($C$), a dotted line marks the chance-level loss $\ln C$ (every class equally
    likely) and one marks chance accuracy $1/C$.
    """
    fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    ax_batch, ax_acc = fig.subplots(1, 2)
    ax_batch.plot(batch_losses, lw=1, label="loss of each batch")
    ax_batch.set(title="Training loss per batch", xlabel="Batch", ylabel="Cross-entropy loss")
    for phase, style in (("train", "o-"), ("eval", "s--")):
        rows = [r for r in history if r["phase"] == phase]
        ax_acc.plot([r["epoch"] + 1 for r in rows], [r["accuracy"] for r in rows], style,
                    label=f"{'test' if phase == 'eval' else phase} accuracy")
    if n_classes:
        ax_batch.axhline(math.log(n_classes), color="k", lw=0.8, ls=":", label=f"chance level, ln {n_classes}")
        ax_acc.axhline(1 / n_classes, color="k", lw=0.8, ls=":", label="chance level")
        ax_batch.legend()
    ax_acc.set(title="Accuracy per epoch", xlabel="Epoch", ylabel="Accuracy", ylim=(0, 1))
    ax_acc.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.legend()
    fig.suptitle(title)
    return fig


@_styled
def color_dim(stats: ActivationStats, title: str = "Activation histograms") -> Figure:
    """For each layer, how often each `|activation|` range occurs (colour, log scale) per batch.

    One colour scale for all panels, so layers compare by colour. When the histograms counted
    only the first `hist_images` images of each batch, the figure title says so.
    """
    _require_stats(stats)
    fig, axes = _grid(len(stats.names))
    counts = [np.log1p(hist.T.numpy()) for hist in stats.hists]
    top = max(float(c.max()) for c in counts) or 1.0
    for ax, name, c in zip(axes, stats.names, counts):
        im = ax.imshow(c, origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=top,
                       extent=(0, c.shape[1], 0, stats.hist_max))
        ax.set(title=name, xlabel="Training batch", ylabel="|activation|")
    fig.colorbar(im, ax=axes, label="log(1 + count)", shrink=0.9)
    fig.suptitle(_with_note(title, stats.hist_note()))
    return fig


DEAD_KINDS = ("zero", "near")


@_styled
def dead_chart(stats: ActivationStats, which: str = "zero", title: str | None = None) -> Figure:
    """For each layer, the share of "dead" activations per training batch (0 = none, 1 = all).

    ``which="zero"``: the share exactly 0, over whole batches (units a ReLU switched off).
    ``which="near"``: the fastai course's definition, the lowest histogram bin
    (``|a| < hist_max / bins``, 0.25 by default), which also counts small live outputs; the
    title says when those counts cover only part of each batch.
    """
    if which not in DEAD_KINDS:
        raise ValueError(f"which must be 'zero' (exactly 0) or 'near' (lowest histogram bin), got {which!r}")
    _require_stats(stats)
    cutoff = stats.near_zero_cutoff
    if which == "zero":
        shares, label, note = stats.zero_fraction(), "share exactly 0", ""
        default_title = "Activations exactly zero"
    else:
        shares, label, note = stats.dead_fraction(), f"share with |a| < {cutoff:g}", stats.hist_note()
        default_title = f"Near-zero activations (|a| < {cutoff:g})"
    fig, axes = _grid(len(stats.names))
    for ax, name, share in zip(axes, stats.names, shares):
        ax.plot(share.numpy(), lw=2, label=label)
        ax.set(title=name, xlabel="Training batch", ylabel=label, ylim=(0, 1))
        ax.legend(loc="best")
    fig.suptitle(_with_note(title or default_title, note))
    return fig


@_styled
def plot_stats(stats: ActivationStats, title: str = "Activation mean and std per layer",
               log_std: bool = False) -> Figure:
    """Mean (target 0) and std (target 1) of each layer's activations over training batches.

    `log_std=True` draws the std on a log scale, where layers whose std differs by a factor
    stay apart even when all are far below 1.
    """
    _require_stats(stats)
    fig = Figure(figsize=(WIDTH, 3.6), layout="constrained")
    ax_mean, ax_std = fig.subplots(1, 2)
    for name, m, s in zip(stats.names, stats.means, stats.stds):
        ax_mean.plot(m.numpy(), label=name)
        ax_std.plot(s.numpy(), label=name)
    ax_mean.axhline(0, color="k", lw=0.7, ls=":", label="target 0")
    ax_std.axhline(1, color="k", lw=0.7, ls=":", label="target 1")
    ax_mean.set(title="Mean", xlabel="Training batch", ylabel="Mean activation")
    ax_std.set(title="Standard deviation", xlabel="Training batch",
               ylabel="Std of activation" + (" (log scale)" if log_std else ""), yscale="log" if log_std else "linear")
    if log_std:  # ticks read 0.05, 0.1, 0.2, ... rather than powers of ten
        ax_std.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
        ax_std.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        ax_std.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax_std.legend(title="Layer", loc="center left", bbox_to_anchor=(1.02, 0.5))  # beside the lines, never over them
    fig.suptitle(title)
    return fig


@_styled
def lsuv_passes(report: Any, title: str = "Activation statistics during LSUV's forward passes") -> Figure:
    """Mean and std of each paired activation at every forward pass LSUV ran: the blog's "staircase".

    Reads ``report.passes`` (``lsuv_init(..., trace=True)``): one entry per pass with the
    layer being initialised (``target``) and each activation's ``mean`` and ``std``. A
    dashed vertical line marks each pass where LSUV moves on to the next layer; an
    activation absent from a pass leaves a gap.
    """
    passes = getattr(report, "passes", None)
    if not passes:
        raise ValueError("the report has no recorded passes: run lsuv_init(..., trace=True) "
                         "(or LSUVCallback(..., trace=True)) to record them")
    layers: dict[str, str] = {}  # layer -> legend label, in order of first appearance
    for p in passes:
        for s in p["stats"]:
            if s["layer"] not in layers:
                layers[s["layer"]] = f"{s['layer']} ({s['activation']})" if s.get("activation") else s["layer"]
    x = [p["index"] for p in passes]
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    ax_mean, ax_std = fig.subplots(1, 2)
    for layer, label in layers.items():
        by_pass = [{s["layer"]: s for s in p["stats"]}.get(layer) for p in passes]
        ax_mean.plot(x, [s["mean"] if s else math.nan for s in by_pass], marker=".", label=label)
        ax_std.plot(x, [s["std"] if s else math.nan for s in by_pass], marker=".", label=label)
    starts = [(p["index"], p["target"]) for k, p in enumerate(passes)
              if k == 0 or p["target"] != passes[k - 1]["target"]]
    for ax, target in ((ax_mean, 0), (ax_std, 1)):
        for n, (index, _) in enumerate(starts):
            ax.axvline(index, color="0.5", lw=0.8, ls="--", label="LSUV moves to the next layer" if n == 0 else None)
        ax.axhline(target, color="k", lw=0.7, ls=":", label=f"target {target}")
    for index, target in starts:
        ax_mean.annotate(target, (index, 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                         ha="right", fontsize="x-small", color="0.4")
    ax_mean.set(title="Mean", xlabel="LSUV forward pass", ylabel="Mean activation")
    ax_std.set(title="Standard deviation", xlabel="LSUV forward pass", ylabel="Std of activation")
    ax_std.legend(title="Activation", fontsize="small")
    ax_mean.legend(fontsize="small", handles=[h for h in ax_mean.get_legend_handles_labels()[0]
                                              if h.get_label().startswith(("LSUV", "target"))])
    fig.suptitle(title)
    return fig


@_styled
def plot_lr_find(result: LRFindResult, title: str = "Learning-rate finder") -> Figure:
    """Loss against learning rate (log scale) with the suggested rate marked."""
    fig = Figure(figsize=(WIDTH, 3.6), layout="constrained")
    ax = fig.subplots()
    smoothing = getattr(result, "smoothing", 0.0)
    label = f"training loss, smoothed (EMA {smoothing:g})" if smoothing else "training loss of each batch"
    ax.plot(result.lrs, result.losses, label=label)
    ax.axvline(result.suggestion, color="C3", ls="--", label=f"suggested lr = {result.suggestion:.3g}")
    ax.set(xscale="log", title=title, xlabel="Learning rate (log scale)", ylabel="Loss")
    ax.legend()
    return fig


@_styled
def plot_layer_stds(curves: dict[str, Sequence[float]], title: str = "Activation std through a deep stack") -> Figure:
    """Std of the activations after each layer, one line per initialisation (log y axis)."""
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    ax = fig.subplots()
    for label, stds in curves.items():
        ax.plot(range(1, len(stds) + 1), stds, marker=".", label=label)
    ax.axhline(1, color="k", lw=0.7, ls=":")
    ax.set(yscale="log", title=title, xlabel="Layer", ylabel="Std of activations (log scale)")
    ax.legend()
    return fig


@_styled
def plot_seed_bands(curves: dict[str, dict], metric: str = "accuracy", title: str = "Test accuracy per epoch") -> Figure:
    """Mean over seeds with a 95% confidence band, one line per configuration.

    ``curves[label]`` holds ``epoch``, ``mean``, ``ci_low``, ``ci_high`` lists (see ``stats.aggregate``).
    """
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    ax = fig.subplots()
    for label, c in curves.items():
        epochs = [e + 1 for e in c["epoch"]]
        ax.plot(epochs, c["mean"], marker="o", label=label)
        ax.fill_between(epochs, c["ci_low"], c["ci_high"], alpha=0.2)
    ax.set(title=title, xlabel="Epoch", ylabel=f"Test {metric}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend()
    return fig


@_styled
def plot_activation_fn(fn, start: float = -4.0, end: float = 4.0, title: str | None = None) -> Figure:
    """The shape of an activation function, e.g. `GeneralRelu(leak=0.1, sub=0.4)`, beside a plain ReLU."""
    import torch

    x = torch.linspace(start, end, 200)
    fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.plot(x.numpy(), torch.relu(x).numpy(), color="0.6", ls="--", label="ReLU, for comparison")
    ax.plot(x.numpy(), fn(x).detach().numpy(), lw=2, label=title or repr(fn))
    ax.legend()
    ax.axhline(0, color="k", lw=0.7)
    ax.axvline(0, color="k", lw=0.7)
    ax.grid(True, ls="--", alpha=0.5)
    ax.set(title=title or repr(fn), xlabel="input x", ylabel="f(x)")
    return fig


@_styled
def plot_input_moments(series: dict[str, tuple[list[float], list[float]]],
                       title: str = "Input statistics per training batch") -> Figure:
    """Per-batch mean and std of the inputs, one line per preprocessing."""
    fig = Figure(figsize=(WIDTH, 3.4), layout="constrained")
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


@_styled
def final_accuracy_chart(panels: Sequence[dict], title: str = "Final test accuracy of every run, by chapter") -> Figure:
    """Every run's final test accuracy across chapters: a group of rows per chapter, a row per configuration.

    Each seed is a dot; a diverged run is a red cross at chance accuracy (the group's dotted line),
    where it is counted. A source's single run is a diamond under the dots: filled when the chapter
    ran the source's dataset, hollow where it ran a stand-in (context, not a target). `panels`
    (`findings.accuracy_panels`): dicts with `title`, `chance` and `rows` of `label`, `accuracies`
    (fractions, None for a diverged run) and `source` (`dict(value=, same_dataset=)` or None).
    """
    n_rows = sum(len(p["rows"]) + 1 for p in panels)  # a heading row above each chapter's rows
    fig = Figure(figsize=(WIDTH, 1.6 + 0.24 * max(n_rows, 4)), layout="constrained")
    ax = fig.subplots()
    seen: dict[str, Any] = {}
    ticks, labels, y = [], [], 0
    for panel in panels:
        ax.text(0.01, y, panel["title"], transform=ax.get_yaxis_transform(), va="center", weight="bold",
                fontsize=9, in_layout=False)  # a heading may run past the axes; it must not shrink them
        chance = panel["chance"] * 100
        seen["chance"] = ax.vlines(chance, y + 0.5, y + len(panel["rows"]) + 0.5, color="0.5", lw=1, ls=":")
        for row in panel["rows"]:
            y += 1
            ticks.append(y)
            labels.append("\n".join(textwrap.wrap(str(row["label"]), 24)[:2]))
            accs = row["accuracies"]
            offsets = np.linspace(-0.22, 0.22, len(accs)) if len(accs) > 1 else [0.0]
            done = [(a * 100, y + o) for a, o in zip(accs, offsets) if a is not None]
            lost = [(chance, y + o) for a, o in zip(accs, offsets) if a is None]
            if done:
                seen["run"] = ax.scatter(*zip(*done), s=18, color="C0", alpha=0.75, zorder=3)
            if lost:
                seen["diverged"] = ax.scatter(*zip(*lost), s=36, marker="x", color="C3", zorder=4)
            mark = row.get("source")
            if mark:
                key = "same" if mark["same_dataset"] else "other"
                seen[key] = ax.scatter(mark["value"] * 100, y, s=60, marker="D", zorder=2, linewidths=1.2,
                                       facecolors="k" if key == "same" else "none",
                                       edgecolors="k" if key == "same" else "0.4")
        y += 1
        ax.axhline(y - 0.5, color="0.85", lw=0.8)
    if not panels:
        ax.text(0.5, 0.5, "No chapter of this build saved a trained run.", ha="center", va="center",
                transform=ax.transAxes)
    ax.set_yticks(ticks, labels)
    ax.set(xlim=(0, 100), ylim=(max(y, 4) - 0.5, -0.5), xlabel="Final test accuracy (%)", ylabel="Configuration",
           title=title)
    ax.grid(True, axis="x", color="0.9")
    names = {"run": "one seed's run", "diverged": "diverged, at chance", "chance": "chance accuracy",
             "same": "a source's run", "other": "a source's run, other dataset"}
    if seen:  # under the axes, no wider than they are (a wider legend would shrink them)
        ax.legend([seen[k] for k in names if k in seen], [names[k] for k in names if k in seen],
                  loc="upper center", bbox_to_anchor=(0.5, -0.6 / fig.get_figheight()), ncols=3)
    return fig
