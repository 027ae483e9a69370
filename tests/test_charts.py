"""lsuvlib.charts: every chart returns a Figure whose panels have titles and axis labels naming real things."""
from __future__ import annotations

import inspect
import io

import pytest
import torch
from matplotlib.figure import Figure
from torch import nn

from lsuvlib import ActivationStats, Learner, charts, dataloaders, lr_find
from lsuvlib.models import GeneralRelu
from lsuvlib.stats import aggregate

LAYER_NAMES = ["0.2 (ReLU)", "1.1 (GeneralRelu)"]


def nested_model() -> nn.Sequential:
    """Nested blocks, so layer names are dotted paths ('0.2', '1.1') rather than plain indices."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU()),
                         nn.Sequential(nn.Linear(16, 16), GeneralRelu(sub=0.1)),
                         nn.Linear(16, 4))


@pytest.fixture(scope="module")
def trained(toy_shared):
    """One short fit with activation statistics, shared by the chart tests (charts only read it)."""
    dls = dataloaders(toy_shared, 32, seed=0, device="cpu")
    stats = ActivationStats()
    learn = Learner(nested_model(), dls, lr=0.3, cbs=[stats], progress=False).fit(2)
    finder = lr_find(nested_model(), dls.train, start=1e-4, end=10.0, n_iters=30)
    return dict(learn=learn, stats=stats, finder=finder, dls=dls)


def _history(accs):
    return [row for e, a in enumerate(accs) for row in (dict(epoch=e, phase="train", loss=1.0, accuracy=a, seconds=0.0),
                                                        dict(epoch=e, phase="eval", loss=1.0, accuracy=a, seconds=0.0))]


def build(name: str, t: dict) -> Figure:
    stats = t["stats"]
    if name == "plot_history":
        return charts.plot_history(t["learn"].history, t["learn"].batch_losses, title="Baseline run")
    if name in ("color_dim", "dead_chart", "plot_stats"):
        return getattr(charts, name)(stats)
    if name == "plot_lr_find":
        return charts.plot_lr_find(t["finder"])
    if name == "plot_layer_stds":
        return charts.plot_layer_stds({"N(0, 1)": [1.0, 3.0, 9.0], "LSUV": [1.0, 1.0, 1.0]})
    if name == "plot_seed_bands":
        curves = {"baseline": aggregate([_history([0.5, 0.6]), _history([0.55, 0.7])]),
                  "lsuv": aggregate([_history([0.8, 0.9]), _history([0.82, 0.88])])}
        return charts.plot_seed_bands(curves)
    if name == "plot_activation_fn":
        return charts.plot_activation_fn(GeneralRelu(leak=0.1, sub=0.4))
    if name == "plot_input_moments":
        from lsuvlib.batches import batch_moments

        return charts.plot_input_moments({"raw": batch_moments(t["dls"].train),
                                          "normalised": ([0.0, 0.1], [1.0, 0.9])})
    raise KeyError(name)


CHARTS = ["plot_history", "color_dim", "dead_chart", "plot_stats", "plot_lr_find", "plot_layer_stds",
          "plot_seed_bands", "plot_activation_fn", "plot_input_moments"]


def public_chart_functions() -> list[str]:
    return sorted(n for n, f in inspect.getmembers(charts, inspect.isfunction)
                  if f.__module__ == charts.__name__ and not n.startswith("_"))


def test_every_chart_function_is_covered_here():
    missing = [n for n in public_chart_functions() if n not in CHARTS]
    assert not missing, f"add a builder for {missing} to tests/test_charts.py"


def panels(fig: Figure):
    """The visible axes that are charts (colour bars are labelled '<colorbar>')."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def all_text(fig: Figure) -> list[str]:
    texts = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]
    return [t for t in texts if t]


@pytest.mark.parametrize("name", [n for n in CHARTS if hasattr(charts, n)])
def test_chart_is_a_labelled_figure(trained, name):
    fig = build(name, trained)
    assert isinstance(fig, Figure)
    axes = panels(fig)
    assert axes, "no visible panels"
    for ax in axes:
        assert ax.get_title().strip(), f"{name}: a panel has no title"
        assert ax.get_xlabel().strip(), f"{name}: panel {ax.get_title()!r} has no x label"
        assert ax.get_ylabel().strip(), f"{name}: panel {ax.get_title()!r} has no y label"
        assert ax.lines or ax.images or ax.collections, f"{name}: panel {ax.get_title()!r} is empty"
    for text in all_text(fig):
        assert "str(self" not in text and "{" not in text and "index(h)" not in text, f"{name}: template text {text!r}"
    fig.savefig(io.BytesIO(), format="png")  # it really renders (layout, colour bars, log axes)


@pytest.mark.parametrize("name", ["color_dim", "dead_chart"])
def test_per_layer_charts_title_each_panel_with_its_real_layer_name(trained, name):
    stats = trained["stats"]
    assert stats.names == LAYER_NAMES
    fig = build(name, trained)
    titles = [ax.get_title() for ax in panels(fig)]
    assert len(titles) == len(LAYER_NAMES)
    for title, layer in zip(titles, LAYER_NAMES):
        assert layer in title
    assert fig._suptitle is not None and fig._suptitle.get_text()


def test_color_dim_draws_one_histogram_image_per_layer(trained):
    fig = build("color_dim", trained)
    stats = trained["stats"]
    for ax, hist in zip(panels(fig), stats.hists):
        (im,) = ax.images
        assert im.get_array().shape == (stats.bins, hist.shape[0])  # bins x batches
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == len(LAYER_NAMES)


def test_dead_chart_plots_the_near_zero_share_per_batch(trained):
    fig = build("dead_chart", trained)
    dead = trained["stats"].dead_fraction()
    for ax, row in zip(panels(fig), dead):
        assert list(ax.lines[0].get_ydata()) == pytest.approx(row.tolist())
        assert ax.get_ylim() == (0, 1)


def test_plot_stats_legend_names_the_layers(trained):
    fig = build("plot_stats", trained)
    labels = [t.get_text() for ax in panels(fig) if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert labels == LAYER_NAMES
    mean_ax = panels(fig)[0]
    assert [line.get_label() for line in mean_ax.lines[:2]] == LAYER_NAMES
    assert len(mean_ax.lines[0].get_ydata()) == trained["stats"].means.shape[1]


def test_plot_history_shows_both_phases(trained):
    fig = build("plot_history", trained)
    assert fig._suptitle.get_text() == "Baseline run"
    batch_ax, acc_ax = panels(fig)
    assert len(batch_ax.lines[0].get_ydata()) == len(trained["learn"].batch_losses)
    assert [line.get_label() for line in acc_ax.lines] == ["train accuracy", "eval accuracy"]
    assert list(acc_ax.lines[0].get_xdata()) == [1, 2]  # epochs counted from 1


def test_plot_lr_find_marks_the_suggestion(trained):
    fig = build("plot_lr_find", trained)
    (ax,) = panels(fig)
    assert ax.get_xscale() == "log"
    res = trained["finder"]
    suggestion = [line for line in ax.lines if "suggested" in line.get_label()]
    assert len(suggestion) == 1 and suggestion[0].get_xdata()[0] == pytest.approx(res.suggestion)
    assert f"{res.suggestion:.3g}" in suggestion[0].get_label()


def test_plot_seed_bands_one_line_and_band_per_config(trained):
    fig = build("plot_seed_bands", trained)
    (ax,) = panels(fig)
    labels = [line.get_label() for line in ax.lines]
    assert labels == ["baseline", "lsuv"]
    assert len(ax.collections) == 2
    assert "accuracy" in ax.get_ylabel()


def test_charts_do_not_touch_pyplot_state(trained):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for name in CHARTS:
        if hasattr(charts, name):
            build(name, trained)
    assert plt.get_fignums() == before
