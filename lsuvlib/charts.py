"""The book's charts. Each returns a matplotlib Figure with titles, axis labels and legends.

Figures are built without pyplot's global state, so nothing leaks between calls, and
importing this module changes no global setting: the house style is applied per figure
(`matplotlib.rc_context` around each chart), and showing Figures in IPython is
switched on by `register_ipython_png` (`lsuvlib.page.setup()` calls it).
"""
from __future__ import annotations

import functools
import math
import textwrap
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullLocator

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

    `which="zero"`: the share exactly 0, over whole batches (units a ReLU switched off).
    `which="near"`: the fastai course's definition, the lowest histogram bin
    (`|a| < hist_max / bins`, 0.25 by default), which also counts small live outputs; the
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
    handles, labels = ax_std.get_legend_handles_labels()
    zero = len(stats.names)  # the mean panel's "target 0" after the layers, before "target 1"
    handles.insert(zero, ax_mean.get_legend_handles_labels()[0][zero])
    labels.insert(zero, "target 0")
    ax_std.legend(handles, labels, loc="center left", bbox_to_anchor=(1.02, 0.5))  # off the lines
    fig.suptitle(title)
    return fig


@_styled
def lsuv_passes(report: Any, title: str = "Activation statistics during LSUV's forward passes",
                names: Mapping[str, str] | None = None) -> Figure:
    """Mean and std of each paired activation at every forward pass LSUV ran: the blog's "staircase".

    Reads `report.passes` (`lsuv_init(..., trace=True)`): one entry per pass with the
    layer being initialised (`target`) and each activation's `mean` and `std`. A dashed
    vertical line marks each pass where LSUV starts a layer; an activation absent from a
    pass leaves a gap. `names` maps the report's layer paths to the names a reader knows
    (`lsuv_page.path_names(model)`: "conv 2 (16 ch)"), so the layers are named as in the
    book's other charts; a layer it does not name keeps its path and activation type.
    """
    passes = getattr(report, "passes", None)
    if not passes:
        raise ValueError("the report has no recorded passes: run lsuv_init(..., trace=True) "
                         "(or LSUVCallback(..., trace=True)) to record them")
    names = names or {}

    def label(layer: str, activation: str | None = None) -> str:
        if layer in names:
            return names[layer]
        return f"{layer} ({activation})" if activation else layer

    layers: dict[str, str] = {}  # layer -> legend label, in order of first appearance
    for p in passes:
        for s in p["stats"]:
            layers.setdefault(s["layer"], label(s["layer"], s.get("activation")))
    x = [p["index"] for p in passes]
    fig = Figure(figsize=(WIDTH, 4.2), layout="constrained")
    ax_mean, ax_std = fig.subplots(1, 2)
    for layer, text in layers.items():
        by_pass = [{s["layer"]: s for s in p["stats"]}.get(layer) for p in passes]
        ax_mean.plot(x, [s["mean"] if s else math.nan for s in by_pass], marker=".", label=text)
        ax_std.plot(x, [s["std"] if s else math.nan for s in by_pass], marker=".", label=text)
    starts = [p["index"] for k, p in enumerate(passes) if k == 0 or p["target"] != passes[k - 1]["target"]]
    for ax, target in ((ax_mean, 0), (ax_std, 1)):
        for n, index in enumerate(starts):
            ax.axvline(index, color="0.5", lw=0.8, ls="--", label="LSUV starts a layer" if n == 0 else None)
        ax.axhline(target, color="k", lw=0.7, ls=":", label="target (mean 0, std 1)")
    ax_mean.set(title="Mean", xlabel="LSUV forward pass", ylabel="Mean activation")
    ax_std.set(title="Standard deviation", xlabel="LSUV forward pass", ylabel="Std of activation")
    fig.legend(*ax_std.get_legend_handles_labels(), loc="outside lower center", ncols=3)
    fig.suptitle(title)
    return fig


@_styled
def plot_first_losses(groups: Mapping[str, Sequence[Any]], batches: int = 24, n_classes: int = 10,
                      title: str = "Training loss over the first batches") -> Figure:
    r"""The training loss of each run's first `batches` batches, one panel per group of runs.

    `groups` maps a panel's title (e.g. a learning rate) to its runs, each with `seed`,
    `batch_losses` and `diverged` (`experiment.Run`); the title gains how many diverged. A
    seed keeps its colour in every panel, and a diverged run is dashed. The vertical axis
    stops at three times a uniform guess's loss, $\ln C$ for `n_classes` classes (dotted),
    so a loss that runs away leaves the panel at the top.
    """
    from matplotlib.lines import Line2D

    if not groups or not all(groups.values()):
        raise ValueError("groups must map each panel's title to a non-empty list of runs, e.g. "
                         "{'lr 0.2': runs_a, 'lr 0.1': runs_b}")
    if batches < 1 or n_classes < 2:
        raise ValueError(f"need batches >= 1 and n_classes >= 2, got batches={batches}, n_classes={n_classes}")
    uniform = math.log(n_classes)
    seeds = list(dict.fromkeys(r.seed for runs in groups.values() for r in runs))
    shown = max(2, min(batches, max(len(r.batch_losses) for runs in groups.values() for r in runs)))
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    axes = fig.subplots(1, len(groups), sharey=True, squeeze=False)[0]
    for ax, (panel, runs) in zip(axes, groups.items()):
        for r in runs:
            losses = list(r.batch_losses[:shown])
            ax.plot(range(1, len(losses) + 1), losses, color=f"C{seeds.index(r.seed) % 10}",
                    ls="--" if r.diverged else "-")
        ax.axhline(uniform, color="k", lw=0.7, ls=":")
        ax.set(title=f"{panel}: {sum(r.diverged for r in runs)} of {len(runs)} diverged", xlabel="Training batch",
               xlim=(1, shown), ylim=(0, 3 * uniform))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("Cross-entropy loss")
    handles = [Line2D([], [], color=f"C{k % 10}", label=f"seed {s}") for k, s in enumerate(seeds)]
    handles += [Line2D([], [], color="0.3", ls="--", label="diverged"),
                Line2D([], [], color="k", lw=0.7, ls=":", label=f"uniform guess (ln {n_classes})")]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4))
    fig.suptitle(title)
    return fig


@_styled
def plot_lr_find(results: LRFindResult | dict[str, LRFindResult], title: str = "Learning-rate finder",
                 marks: dict[str, float] | None = None) -> Figure:
    """Loss against learning rate (log scale): each sweep's falling part shaded, its suggested rate dashed.

    `results` is one `LRFindResult` or `{label: result}`, one line each (a smoothed one says so).
    A sweep whose curve never falls (`LRFindResult.falling_part` is None) suggests no rate, and
    its legend entry says so. `marks` draws other rates as dotted lines, `{label: lr}` (e.g. the
    blog's rate). The loss axis runs from half the lowest loss to just above the highest loss, at
    least 1.5 and at most 3 times the highest first loss: a loss that exploded past that leaves the
    top instead of flattening the rest, and its line's legend entry says at which rate.
    """
    if not isinstance(results, dict):
        results = {"loss of each batch": results}
    firsts = [r.losses[0] for r in results.values() if r.losses and math.isfinite(r.losses[0])]
    finite = [x for r in results.values() for x in r.losses if math.isfinite(x)]
    top = min(max(1.5 * max(firsts), 1.05 * max(finite)), 3 * max(firsts)) if firsts else math.inf
    fig = Figure(figsize=(WIDTH, 3.6), layout="constrained")
    ax = fig.subplots()
    for k, (name, res) in enumerate(results.items()):
        fall = res.falling_part()
        label = name + (f", smoothed (EMA {res.smoothing:g})" if res.smoothing else "")
        label += "" if fall else " (never falls)"
        off = next((lr for lr, x in zip(res.lrs, res.losses) if not x <= top), None)  # NaN too
        label += "" if off is None else f" (off the chart from rate {off:.3g})"
        ax.plot(res.lrs, res.losses, color=f"C{k}", marker=".", label=label)
        if fall:
            ax.axvspan(res.lrs[fall[0]], res.lrs[fall[1]], color=f"C{k}", alpha=0.12, label="its falling part")
            ax.axvline(res.suggestion, color=f"C{k}", ls="--",
                       label=f"its suggested rate, {res.suggestion:.3g} (a tenth of the lowest point's)")
    for name, lr in (marks or {}).items():
        ax.axvline(lr, color="k", ls=":", lw=1, label=f"{name} = {lr:g}")
    lows = [r.losses[r.lowest] for r in results.values() if r.lowest is not None]
    if firsts and lows:  # from half the lowest loss: the falls fill the chart, not the empty space below
        ax.set_ylim(0.5 * min(lows), top)
    ax.set(xscale="log", title=title, xlabel="Learning rate (log scale)", ylabel="Training loss of the batch")
    fig.legend(loc="outside lower center")  # under the chart, off the lines
    return fig


@_styled
def plot_layer_stds(curves: dict[str, Sequence[float]], title: str = "Activation std through a deep stack",
                    zoom: Sequence[str] = (), marks: dict[str, float] | None = None) -> Figure:
    """Std of the activations after each layer, one line per initialisation, on a log axis.

    A line stops where its std overflows (not finite) or underflows to 0, with a cross and a
    legend note saying where. Ticks stand at round powers of 10 (every 2nd, 5th, 10th or 20th
    decade when the range is wide). With `zoom`, a second panel draws those curves on a linear
    axis, where lines near 1 that the log axis piles up can be told apart; `marks` adds
    reference lines to it, `{label: value}`.
    """
    unknown = [name for name in zoom if name not in curves]
    if unknown:
        raise ValueError(f"zoom names curves to draw again, one of {list(curves)}; got {unknown}")
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    ax, *rest = fig.subplots(1, 2 if zoom else 1, squeeze=False).ravel()
    ax.set_yscale("log")
    styles = {name: dict(color=f"C{k}", ls=("-", "--", "-.", ":")[k % 4]) for k, name in enumerate(curves)}
    drawn: list[float] = []
    for name, stds in curves.items():
        ok = [s is not None and math.isfinite(s) and s > 0 for s in stds]
        cut = ok.index(False) if False in ok else len(stds)
        label = name
        if cut < len(stds):
            label += f" ({'is 0' if stds[cut] == 0 else 'overflows'} from layer {cut + 1})"
            if cut:
                ax.plot(cut, stds[cut - 1], "x", ms=8, mew=2, color=styles[name]["color"])
        ax.plot(range(1, cut + 1), stds[:cut], label=label, **styles[name])
        drawn += stds[:cut]
    ax.axhline(1, color="0.8", lw=4, zorder=0)  # a wide grey band under the lines: no dotted curve can hide in it
    decades = math.log10(max(drawn) / min(drawn)) if drawn else 0.0
    step = next((d for d in (1, 2, 5, 10, 20) if decades / d <= 8), 50)
    ax.yaxis.set_major_locator(LogLocator(base=10.0 ** step))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.set(title="All, on a log axis" if zoom else title, xlabel="Layer",
           ylabel="Std of activations (log scale)")
    if zoom:
        (z,) = rest
        for name in zoom:
            z.plot(range(1, len(curves[name]) + 1), curves[name], label=name, **styles[name])
        for name, value in (marks or {}).items():
            z.axhline(value, color="0.35", lw=1, ls=(0, (6, 3)), label=f"{name} ({value:.2f})")
        z.set(title=" and ".join(zoom) + ", on a linear axis", xlabel="Layer", ylabel="Std of activations",
              ylim=(0, None))
        fig.suptitle(title)
    for a in (ax, *rest):
        a.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # layers are whole numbers
    # One legend under the panels: inside, it would cover the lines that leave the plot's corners.
    handles = {h.get_label(): h for a in (ax, *rest) for h in a.get_legend_handles_labels()[0]}
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=2)
    return fig


@_styled
def plot_seed_dots(panels: Mapping[str, Mapping[str, Mapping[str, Sequence[float | None]]]], xlabel: str,
                   ylabel: str, title: str = "", marks: Mapping[str, Mapping[str, float]] | None = None,
                   mark_label: str = "", lines: Mapping[str, float] | None = None,
                   missing_at: float | None = None, sharey: bool = True) -> Figure:
    """Every seed as a dot and each group's mean as a bar, side by side: one panel per key of `panels`.

    `panels[panel][x][group]` lists one value per seed for the category `x` (an epoch, a depth, a
    layer), one colour per `group`, the same colours in every panel. `None` is a diverged run: it is
    drawn at `missing_at` (chance accuracy) as a cross and counts there in its mean. `marks[panel][x]`
    adds one reference value per category (a source's single run) labelled `mark_label`; `lines`
    draws labelled horizontal lines, e.g. `{"chance": 0.1}`. With one panel, `title` titles it;
    `sharey=False` gives each panel its own scale.
    """
    marks, lines = marks or {}, lines or {}
    groups = list(dict.fromkeys(g for cats in panels.values() for by_group in cats.values() for g in by_group))
    colours = {g: f"C{i}" for i, g in enumerate(groups)}
    fig = Figure(figsize=(WIDTH, 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=sharey, squeeze=False)[0]
    slot = min(0.8 / len(groups), 0.3)
    for ax, (panel, cats) in zip(axes, panels.items()):
        for x, (cat, by_group) in enumerate(cats.items()):
            for g, values in by_group.items():
                centre = x + (groups.index(g) - (len(groups) - 1) / 2) * slot
                _dots(ax, centre, slot, list(values), colours[g], missing_at)
            if cat in marks.get(panel, {}):
                ax.scatter(x, marks[panel][cat], marker="D", s=45, color="k", zorder=4)
        for k, (label, y) in enumerate(lines.items()):
            ax.axhline(y, color="0.3", lw=0.8, ls=(":", "--", "-.")[k % 3], zorder=1)  # under the dots
        ax.set_xticks(range(len(cats)), [c.replace(" (", "\n(", 1) for c in cats])  # "conv 1\n(6 ch)" fits
        ax.set(title=panel if len(panels) > 1 else title, xlabel=xlabel, ylabel=ylabel)
    fig.legend(handles=_dot_legend(colours, mark_label if marks else "", lines, missing_at, panels),
               loc="outside lower center", ncols=min(4, len(colours) + 3), frameon=False)
    if title and len(panels) > 1:
        fig.suptitle(title)
    return fig


def _dots(ax, centre: float, slot: float, values: list, colour: str, missing_at: float | None) -> None:
    """One group's seeds spread across its slot, diverged runs as crosses at `missing_at`, and its mean."""
    if any(v is None for v in values) and missing_at is None:
        raise ValueError("a value is None (a diverged run): pass missing_at=chance accuracy to draw and count it")
    xs = centre + np.linspace(-slot / 4, slot / 4, len(values)) if len(values) > 1 else [centre]
    done = [(x, v) for x, v in zip(xs, values) if v is not None]
    ax.scatter([x for x, _ in done], [v for _, v in done], s=14, color=colour, alpha=0.7, lw=0, zorder=2)
    lost = [x for x, v in zip(xs, values) if v is None]
    # On top of the mean bar and the chance line, which sit at or near the same height.
    ax.scatter(lost, [missing_at] * len(lost), s=30, marker="x", lw=1.5, color=colour, zorder=4)
    mean = float(np.mean([missing_at if v is None else v for v in values]))
    ax.hlines(mean, centre - slot * 0.45, centre + slot * 0.45, color=colour, lw=2.2, zorder=3)


def _dot_legend(colours: dict, mark_label: str, lines: Mapping[str, float], missing_at, panels) -> list:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=c, marker="o", ls="", label=g) for g, c in colours.items() if g]
    handles.append(Line2D([], [], color="0.3", lw=2.2, label="mean over seeds"))
    if missing_at is not None and any(v is None for cats in panels.values() for by_group in cats.values()
                                      for values in by_group.values() for v in values):
        handles.append(Line2D([], [], color="0.3", marker="x", ls="", label="diverged (counted at chance)"))
    if mark_label:
        handles.append(Line2D([], [], color="k", marker="D", ls="", label=mark_label))
    handles += [Line2D([], [], color="0.3", lw=0.8, ls=(":", "--", "-.")[k % 3], label=label)
                for k, label in enumerate(lines)]
    return handles


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
def final_accuracy_chart(panels: Sequence[dict], title: str = "Final test accuracy of every run, by chapter",
                         width: float = 8.3) -> Figure:
    """Every run's final test accuracy across chapters: a group of rows per chapter, a row per configuration.

    Each seed is a dot; a diverged run is a red cross at chance accuracy (the group's dotted line),
    where it is counted. A source's single run is a diamond under the dots: filled when the chapter
    ran the source's dataset, hollow where it ran a stand-in (context, not a target). `panels`
    (`findings.accuracy_panels`): dicts with `title`, `chance` and `rows` of `label`, `accuracies`
    (fractions, None for a diverged run) and `source` (`dict(value=, same_dataset=)` or None).
    `width` (inches) is wider than `WIDTH`: the pages set this figure in Quarto's `page-right`
    column (`#| column: page-right`), about 940 px at a 1280 px window, so its labels fit at 10 points.
    """
    n_rows = sum(len(p["rows"]) + 1 for p in panels)  # a heading row above each chapter's rows
    fig = Figure(figsize=(width, 1.8 + 0.34 * max(n_rows, 4)), layout="constrained")  # room for two-line labels
    ax = fig.subplots()
    seen: dict[str, Any] = {}
    ticks, labels, y = [], [], 0
    for panel in panels:
        ax.text(0.01, y, panel["title"], transform=ax.get_yaxis_transform(), va="center", weight="bold",
                in_layout=False)  # a heading may run past the axes; it must not shrink them
        chance = panel["chance"] * 100
        seen["chance"] = ax.vlines(chance, y + 0.5, y + len(panel["rows"]) + 0.5, color="0.5", lw=1, ls=":")
        for row in panel["rows"]:
            y += 1
            ticks.append(y)
            lines = textwrap.wrap(str(row["label"]), 34)
            labels.append("\n".join(lines[:2]) + ("…" if len(lines) > 2 else ""))
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
