"""lsuvlib.charts: every chart returns a Figure whose panels have titles and axis labels naming real things."""
from __future__ import annotations

import inspect
import io
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure
from torch import nn

from lsuvlib import ActivationStats, Callback, Learner, charts, dataloaders, lr_find
from lsuvlib.models import GeneralRelu

LAYER_NAMES = ["linear 1 (16)", "linear 2 (16)"]  # hooks.reader_names: by the weight layer each follows


def nested_model() -> nn.Sequential:
    """Nested blocks, so layer names are dotted paths ('0.2', '1.1') rather than plain indices."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU()),
                         nn.Sequential(nn.Linear(16, 16), GeneralRelu(sub=0.1)),
                         nn.Linear(16, 4))


HIST_IMAGES = 16  # fewer than the 32 images of a batch: the histogram charts must say so


class ByHand(Callback):
    """Before each training batch, computes both activations from the weights in use, without hooks."""

    order = 20

    def __init__(self):
        self.acts: list[tuple[torch.Tensor, torch.Tensor]] = []

    def before_batch(self, learn):
        if learn.training:
            m = learn.model
            with torch.no_grad():
                a1 = torch.clamp(m[0][1](m[0][0](learn.xb)), min=0)
                a2 = torch.clamp(m[1][0](a1), min=0) - 0.1
            self.acts.append((a1, a2))


def course_hist(a: torch.Tensor, bins: int = 40, hi: float = 10.0) -> torch.Tensor:
    """Counts of |a| in ``bins`` equal bins over [0, hi] (hi itself in the last), values above hi dropped."""
    v = a.abs().flatten().double()
    v = v[v <= hi]
    idx = torch.clamp((v / (hi / bins)).floor().long(), max=bins - 1)
    return torch.bincount(idx, minlength=bins).double()


@pytest.fixture(scope="module")
def trained(toy_shared):
    """One short fit with activation statistics, shared by the chart tests (charts only read it)."""
    dls = dataloaders(toy_shared, 32, seed=0, device="cpu")
    stats, hand = ActivationStats(hist_images=HIST_IMAGES), ByHand()
    learn = Learner(nested_model(), dls, lr=0.3, cbs=[stats, hand], progress=False).fit(2)
    finder = lr_find(nested_model(), dls.train, start=1e-4, growth=1.4, max_iters=30)
    expected = dict(
        means=[[a[k].mean().item() for a in hand.acts] for k in range(2)],
        stds=[[a[k].std().item() for a in hand.acts] for k in range(2)],
        zero=[[(a[k] == 0).double().mean().item() for a in hand.acts] for k in range(2)],
        hists=[[course_hist(a[k][:HIST_IMAGES]) for a in hand.acts] for k in range(2)],
    )
    expected["near"] = [[(h[0] / h.sum()).item() for h in layer] for layer in expected["hists"]]
    return dict(learn=learn, stats=stats, finder=finder, dls=dls, expected=expected, report=fake_report())


def fake_report():
    """Three paired activations, 2 + 3 + 1 passes: the shape lsuv_init(..., trace=True) records."""
    rows = [("0.1", 0, [(0.5, 2.0), (0.1, 3.0), (0.2, 4.0)]),
            ("0.1", 1, [(0.0, 1.0), (0.3, 1.5), (0.1, 2.5)]),
            ("1.1", 0, [(0.0, 1.0), (0.2, 1.5), (0.4, 0.5)]),
            ("1.1", 1, [(0.0, 1.0), (0.05, 1.1), (0.1, 0.8)]),
            ("1.1", 2, [(0.0, 1.0), (0.0, 1.0), (0.3, 0.9)]),
            ("2.1", 0, [(0.0, 1.0), (0.0, 1.0), (0.0, 1.0)])]
    names = ["0.1 (ReLU)", "1.1 (ReLU)", "2.1 (GeneralRelu)"]
    passes = [dict(index=i, target=t, iteration=it,
                   stats=[dict(layer=n, mean=m, std=s) for n, (m, s) in zip(names, st)])
              for i, (t, it, st) in enumerate(rows)]
    return SimpleNamespace(passes=passes)


def build(name: str, t: dict) -> Figure:
    stats = t["stats"]
    if name == "plot_history":
        return charts.plot_history(t["learn"].history, t["learn"].batch_losses, title="Baseline run")
    if name in ("color_dim", "plot_stats"):
        return getattr(charts, name)(stats)
    if name in ("dead_chart", "dead_chart_near"):
        return charts.dead_chart(stats, which="near" if name.endswith("near") else "zero")
    if name == "lsuv_passes":
        return charts.lsuv_passes(t["report"], title="LSUV passes")
    if name == "plot_first_losses":
        return charts.plot_first_losses(first_loss_groups(), batches=5)
    if name == "plot_lr_find":
        return charts.plot_lr_find(t["finder"])
    if name == "plot_layer_stds":
        return charts.plot_layer_stds({"N(0, 1)": [1.0, 3.0, 9.0], "LSUV": [1.0, 1.0, 1.0]}, zoom=["LSUV"])
    if name == "plot_seed_dots":
        return charts.plot_seed_dots(SEED_DOTS, xlabel="Variant", ylabel="Test accuracy (%)", title="Accuracy",
                                     marks={"epoch 1": {"lsuv": 93.0}}, mark_label="the notebook (one run)",
                                     lines={"chance": 10.0}, missing_at=10.0)
    if name == "plot_activation_fn":
        return charts.plot_activation_fn(GeneralRelu(leak=0.1, sub=0.4))
    if name == "plot_input_moments":
        from lsuvlib.batches import batch_moments

        return charts.plot_input_moments({"raw": batch_moments(t["dls"].train),
                                          "normalised": ([0.0, 0.1], [1.0, 0.9])})
    if name == "final_accuracy_chart":  # more in tests/test_findings.py, with the panels read from a build
        return charts.final_accuracy_chart([dict(title="Chapter 3: the baseline", chance=0.1, rows=[dict(
            label="baseline", accuracies=[0.8, None, 0.85], source=dict(value=0.196, same_dataset=False))])])
    raise KeyError(name)


CHARTS = ["plot_history", "color_dim", "dead_chart", "dead_chart_near", "plot_stats", "plot_lr_find",
          "plot_layer_stds", "plot_seed_dots", "plot_activation_fn", "plot_input_moments", "lsuv_passes",
          "plot_first_losses", "final_accuracy_chart"]
NOT_CHARTS = ["register_ipython_png"]


def public_chart_functions() -> list[str]:
    return sorted(n for n, f in inspect.getmembers(charts, inspect.isfunction)
                  if f.__module__ == charts.__name__ and not n.startswith("_"))


def test_every_chart_function_is_covered_here():
    missing = [n for n in public_chart_functions() if n not in CHARTS + NOT_CHARTS]
    assert not missing, f"add a builder for {missing} to tests/test_charts.py"


def panels(fig: Figure):
    """The visible axes that are charts (colour bars are labelled '<colorbar>')."""
    return [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>"]


def all_text(fig: Figure) -> list[str]:
    texts = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]
    return [t for t in texts if t]


@pytest.mark.parametrize("name", CHARTS)
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
        if not ax.images:  # an image's legend is its colour bar
            assert any(a.get_legend() for a in axes) or fig.legends, f"{name}: no legend on any panel or figure"
    for text in all_text(fig):
        assert "str(self" not in text and "{" not in text and "index(h)" not in text, f"{name}: template text {text!r}"
    fig.savefig(io.BytesIO(), format="png")  # it really renders (layout, colour bars, log axes)


@pytest.mark.parametrize("name", ["color_dim", "dead_chart", "dead_chart_near"])
def test_per_layer_charts_title_each_panel_with_its_real_layer_name(trained, name):
    stats = trained["stats"]
    assert stats.names == LAYER_NAMES
    fig = build(name, trained)
    titles = [ax.get_title() for ax in panels(fig)]
    assert len(titles) == len(LAYER_NAMES)
    for title, layer in zip(titles, LAYER_NAMES):
        assert layer in title
    assert fig._suptitle is not None and fig._suptitle.get_text()


def test_color_dim_draws_the_hand_counted_histograms(trained):
    fig = build("color_dim", trained)
    for ax, layer in zip(panels(fig), trained["expected"]["hists"]):
        (im,) = ax.images
        want = torch.log1p(torch.stack(layer)).T.numpy()  # bins x batches
        assert im.get_array().shape == want.shape == (40, 16)
        got = np.asarray(im.get_array(), dtype=float)
        assert np.allclose(got, want, atol=1e-6, rtol=0), np.abs(got - want).max()
    assert sum(ax.get_label() == "<colorbar>" for ax in fig.axes) == 1  # one colour scale for every layer


def test_histogram_charts_say_they_count_part_of_each_batch(trained):
    note = f"first {HIST_IMAGES} of 32 images per batch"
    assert note in build("color_dim", trained)._suptitle.get_text()
    assert note in build("dead_chart_near", trained)._suptitle.get_text()
    assert "images" not in build("dead_chart", trained)._suptitle.get_text()  # exact zeros: whole batches


def test_histogram_charts_carry_no_note_when_they_count_whole_batches(toy_shared):
    dls = dataloaders(toy_shared, 32, seed=0, device="cpu")
    stats = ActivationStats(hist_images=None)
    Learner(nested_model(), dls, lr=0.3, cbs=[stats], progress=False).fit(1)
    assert stats.hist_note() == ""
    assert charts.color_dim(stats, title="Whole batches")._suptitle.get_text() == "Whole batches"


def test_dead_chart_zero_plots_the_hand_counted_exact_zero_share(trained):
    fig = build("dead_chart", trained)
    for ax, want in zip(panels(fig), trained["expected"]["zero"]):
        assert list(ax.lines[0].get_ydata()) == pytest.approx(want, abs=1e-6)
        assert ax.get_ylim() == (0, 1) and ax.get_ylabel() == "share exactly 0"
    assert fig._suptitle.get_text() == "Activations exactly zero"
    # GeneralRelu(sub=0.1) never outputs exactly 0: the second layer's zero share is 0 throughout.
    assert set(panels(fig)[1].lines[0].get_ydata()) == {0.0}


def test_dead_chart_near_plots_the_courses_lowest_bin_share(trained):
    fig = build("dead_chart_near", trained)
    for ax, want in zip(panels(fig), trained["expected"]["near"]):
        assert list(ax.lines[0].get_ydata()) == pytest.approx(want, abs=1e-6)
        assert ax.get_ylabel() == "share with |a| < 0.25"
    assert fig._suptitle.get_text().startswith("Near-zero activations (|a| < 0.25)")


def test_dead_chart_rejects_an_unknown_kind(trained):
    with pytest.raises(ValueError, match="which must be 'zero' .* or 'near'"):
        charts.dead_chart(trained["stats"], which="dead")


def test_stats_charts_refuse_stats_that_recorded_nothing():
    for chart in (charts.color_dim, charts.dead_chart, charts.plot_stats):
        with pytest.raises(ValueError, match="recorded nothing: pass it in a Learner's cbs and fit first"):
            chart(ActivationStats())


def test_plot_stats_draws_the_hand_computed_means_and_stds(trained):
    fig = build("plot_stats", trained)
    mean_ax, std_ax = panels(fig)
    for k, name in enumerate(LAYER_NAMES):
        assert mean_ax.lines[k].get_label() == std_ax.lines[k].get_label() == name
        assert list(mean_ax.lines[k].get_ydata()) == pytest.approx(trained["expected"]["means"][k], abs=1e-5)
        assert list(std_ax.lines[k].get_ydata()) == pytest.approx(trained["expected"]["stds"][k], abs=1e-5)
    labels = [t.get_text() for t in std_ax.get_legend().get_texts()]
    assert labels == [*LAYER_NAMES, "target 0", "target 1"]  # both reference lines drawn, both named


def test_lsuv_passes_draws_each_activation_per_pass_and_marks_each_new_layer(trained):
    report = trained["report"]
    fig = build("lsuv_passes", trained)
    mean_ax, std_ax = panels(fig)
    series = [line for line in mean_ax.lines if line.get_label() in ("0.1 (ReLU)", "1.1 (ReLU)", "2.1 (GeneralRelu)")]
    assert len(series) == 3
    for k, line in enumerate(series):
        assert list(line.get_xdata()) == [0, 1, 2, 3, 4, 5]
        assert list(line.get_ydata()) == [p["stats"][k]["mean"] for p in report.passes]
    std_series = [line for line in std_ax.lines if line.get_label() == "1.1 (ReLU)"]
    assert list(std_series[0].get_ydata()) == [3.0, 1.5, 1.5, 1.1, 1.0, 1.0]
    # LSUV starts a new layer at passes 0, 2 and 5: one dashed vertical line each, on both panels.
    for ax in (mean_ax, std_ax):
        verticals = [line for line in ax.lines if line.get_linestyle() == "--"]
        assert sorted(line.get_xdata()[0] for line in verticals) == [0, 2, 5]
    assert not mean_ax.texts  # no labels printed over the data: the legend names the layers
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()][:3] == ["0.1 (ReLU)", "1.1 (ReLU)", "2.1 (GeneralRelu)"]
    assert fig._suptitle.get_text() == "LSUV passes"


def test_lsuv_passes_names_layers_by_the_names_given_and_keeps_the_others():
    fig = charts.lsuv_passes(fake_report(), names={"0.1 (ReLU)": "conv 1 (8 ch)", "1.1 (ReLU)": "conv 2 (16 ch)"})
    labels = [line.get_label() for line in panels(fig)[1].lines if not line.get_label().startswith("_")]
    assert labels[:3] == ["conv 1 (8 ch)", "conv 2 (16 ch)", "2.1 (GeneralRelu)"]


def test_lsuv_passes_leaves_a_gap_where_an_activation_did_not_run():
    report = fake_report()
    report.passes[1]["stats"] = report.passes[1]["stats"][:1]
    fig = charts.lsuv_passes(report)
    line = [ln for ln in panels(fig)[0].lines if ln.get_label() == "1.1 (ReLU)"][0]
    assert math.isnan(line.get_ydata()[1]) and line.get_ydata()[2] == 0.2


def test_lsuv_passes_without_a_trace_says_how_to_record_one():
    with pytest.raises(ValueError, match=r"trace=True"):
        charts.lsuv_passes(SimpleNamespace(passes=[]))
    with pytest.raises(ValueError, match=r"trace=True"):
        charts.lsuv_passes(object())


def test_lsuv_passes_reads_a_real_traced_report():
    """With the LSUV module's trace (if this version has it), the chart's last std points are those of the last pass."""
    import inspect as _inspect

    from lsuvlib import lsuv

    if "trace" not in _inspect.signature(lsuv.lsuv_init).parameters:
        pytest.skip("lsuv_init has no trace= yet")
    torch.manual_seed(0)
    model = nested_model()
    report = lsuv.lsuv_init(model, torch.randn(64, 1, 8, 8), "loop", trace=True, warn=False)
    fig = charts.lsuv_passes(report)
    _, std_ax = panels(fig)
    last = report.passes[-1]
    for s in last["stats"]:
        label = f"{s['layer']} ({s['activation']})" if s.get("activation") else s["layer"]
        (line,) = [ln for ln in std_ax.lines if ln.get_label() == label]
        assert line.get_ydata()[-1] == pytest.approx(s["std"])


def test_lsuv_passes_and_the_training_charts_name_each_layer_alike(trained):
    """The same layer has the same reader's name in LSUV's passes chart and in the activation statistics' charts."""
    from lsuvlib import lsuv, lsuv_page

    model = nested_model()
    report = lsuv.lsuv_init(model, torch.randn(64, 1, 8, 8), "loop", trace=True, warn=False)
    fig = charts.lsuv_passes(report, names=lsuv_page.path_names(model))
    labels = [line.get_label() for line in panels(fig)[1].lines if not line.get_label().startswith("_")]
    assert labels[:2] == trained["stats"].names == LAYER_NAMES


def first_loss_groups():
    """Seed 1 trains at both rates; seed 2 diverges (loss to NaN) at the first, as LSUV's runs at lr 0.2 did."""
    run = lambda seed, losses, diverged=False: SimpleNamespace(seed=seed, batch_losses=losses,  # noqa: E731
                                                               diverged=diverged)
    return {"lr 0.2": [run(1, [2.3, 1.9, 1.5, 1.2, 1.0, 0.9, 0.8]), run(2, [2.4, 1.8, 3.0, 9.0, math.nan], True)],
            "lr 0.1": [run(1, [2.3, 2.0, 1.7, 1.4, 1.2, 1.1, 1.0]), run(2, [2.4, 2.1, 1.8, 1.5, 1.3, 1.2, 1.1])]}


def test_plot_first_losses_draws_each_runs_first_batches_and_counts_the_diverged():
    groups = first_loss_groups()
    fig = charts.plot_first_losses(groups, batches=5, n_classes=10, title="First batches")
    fast, slow = panels(fig)
    assert [fast.get_title(), slow.get_title()] == ["lr 0.2: 1 of 2 diverged", "lr 0.1: 0 of 2 diverged"]
    for ax, runs in ((fast, groups["lr 0.2"]), (slow, groups["lr 0.1"])):
        seeds = [line for line in ax.lines if line.get_linestyle() != ":"]
        assert len(seeds) == 2
        for line, r in zip(seeds, runs):
            assert list(line.get_xdata()) == list(range(1, len(r.batch_losses[:5]) + 1))
            np.testing.assert_array_equal(line.get_ydata(), r.batch_losses[:5])
            assert line.get_linestyle() == ("--" if r.diverged else "-")
        assert ax.get_ylim() == pytest.approx((0, 3 * math.log(10)))
        assert ax.get_xlim() == (1, 5)
    # a seed keeps its colour in both panels
    assert fast.lines[0].get_color() == slow.lines[0].get_color() != fast.lines[1].get_color()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["seed 1", "seed 2", "diverged", "uniform guess (ln 10)"]


def test_plot_first_losses_stops_the_axis_at_the_longest_run():
    fig = charts.plot_first_losses(first_loss_groups(), batches=100)
    assert panels(fig)[0].get_xlim() == (1, 7)


def test_plot_first_losses_refuses_an_empty_panel():
    with pytest.raises(ValueError, match="non-empty list of runs"):
        charts.plot_first_losses({"lr 0.2": []})
    with pytest.raises(ValueError, match="batches >= 1"):
        charts.plot_first_losses(first_loss_groups(), batches=0)


def test_plot_history_shows_both_phases(trained):
    fig = build("plot_history", trained)
    assert fig._suptitle.get_text() == "Baseline run"
    batch_ax, acc_ax = panels(fig)
    assert len(batch_ax.lines[0].get_ydata()) == len(trained["learn"].batch_losses)
    assert [line.get_label() for line in acc_ax.lines] == ["train accuracy", "test accuracy"]
    assert list(acc_ax.lines[0].get_xdata()) == [1, 2]  # epochs counted from 1


def test_plot_history_marks_chance_level_when_told_the_number_of_classes(trained):
    learn = trained["learn"]
    batch_ax, acc_ax = panels(charts.plot_history(learn.history, learn.batch_losses, n_classes=4))
    (chance_loss,) = [ln for ln in batch_ax.lines if ln.get_label() == "chance level, ln 4"]
    assert chance_loss.get_ydata()[0] == pytest.approx(math.log(4))
    (chance_acc,) = [ln for ln in acc_ax.lines if ln.get_label() == "chance level"]
    assert chance_acc.get_ydata()[0] == 0.25


def test_plot_stats_on_a_log_scale_keeps_small_stds_apart_with_plain_ticks(trained):
    _, std_ax = panels(charts.plot_stats(trained["stats"], log_std=True))
    assert std_ax.get_yscale() == "log" and std_ax.get_ylabel() == "Std of activation (log scale)"
    fig = std_ax.figure
    fig.savefig(io.BytesIO(), format="png")  # lay out, so the tick labels exist
    assert all("10^" not in t.get_text() and "times" not in t.get_text() for t in std_ax.get_yticklabels())


def test_plot_activation_fn_sets_the_function_beside_a_plain_relu():
    (ax,) = panels(charts.plot_activation_fn(GeneralRelu(leak=0.1, sub=0.4), title="GeneralRelu(leak=0.1, sub=0.4)"))
    labels = [ln.get_label() for ln in ax.lines if not ln.get_label().startswith("_")]
    assert labels == ["ReLU, for comparison", "GeneralRelu(leak=0.1, sub=0.4)"]
    assert ax.lines[1].get_ydata()[0] == pytest.approx(-4 * 0.1 - 0.4)  # at x = -4


def legend_labels(fig: Figure) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


def test_plot_lr_find_marks_the_suggestion_and_shades_the_falling_part(trained):
    fig = build("plot_lr_find", trained)
    (ax,) = panels(fig)
    assert ax.get_xscale() == "log"
    res = trained["finder"]
    start, low = res.falling_part()
    suggestion = [line for line in ax.lines if "suggested" in line.get_label()]
    assert len(suggestion) == 1 and suggestion[0].get_xdata()[0] == pytest.approx(res.suggestion)
    assert f"{res.suggestion:.3g}" in suggestion[0].get_label()
    (band,) = [p for p in ax.patches if p.get_label() == "its falling part"]
    x0, x1 = band.get_x(), band.get_x() + band.get_width()  # a Rectangle in data x, axes y
    assert (x0, x1) == pytest.approx((res.lrs[start], res.lrs[low]))


def test_plot_lr_find_draws_no_suggestion_for_a_curve_that_never_falls(toy):
    import torch.nn.functional as F

    from lsuvlib.lr_finder import LRFindResult

    flat = LRFindResult([1e-3, 1e-2, 1e-1], [2.30, 2.29, 2.31], None)
    losses = iter([2.3, 2.0, 1.0, 2.5])
    falling = lr_find(nested_model(), dataloaders(toy, 32, seed=0, device="cpu").train, max_iters=4,
                      loss_func=lambda p, y: F.cross_entropy(p, y) * 0 + next(losses))
    fig = charts.plot_lr_find({"stuck": flat, "learns": falling}, marks={"the blog's rate": 0.2})
    (ax,) = panels(fig)
    labels = [line.get_label() for line in ax.lines]
    assert labels[0] == "stuck (never falls)" and labels[1] == "learns"
    assert sum("suggested" in label for label in labels) == 1  # the falling sweep's only
    assert "the blog's rate = 0.2" in labels and "the blog's rate = 0.2" in legend_labels(fig)
    assert ax.get_ylim() == pytest.approx((0.5 * 1.0, 1.5 * 2.3))  # half the lowest loss to 1.5 x the first


def test_plot_lr_find_fits_a_late_rise_and_says_where_an_explosion_leaves_the_chart():
    from lsuvlib.lr_finder import LRFindResult

    lrs = [0.1, 0.2, 0.3, 0.4]
    (ax,) = panels(charts.plot_lr_find(LRFindResult(lrs, [2.34, 2.0, 1.8, 3.6], 0.03)))
    assert ax.get_ylim()[1] == pytest.approx(1.05 * 3.6) and "off the chart" not in ax.lines[0].get_label()
    fig = charts.plot_lr_find({"explodes": LRFindResult(lrs, [2.0, 1.5, 1.0, 100.0], 0.03),
                               "turns": LRFindResult(lrs, [2.0, 1.9, 1.2, 1.4], 0.03)})
    (ax,) = panels(fig)
    assert ax.get_ylim()[1] == pytest.approx(3 * 2.0)  # capped at 3 x the first loss
    assert ax.lines[0].get_label() == "explodes (off the chart from rate 0.4)"
    assert "explodes (off the chart from rate 0.4)" in legend_labels(fig) and "turns" in legend_labels(fig)


def test_plot_lr_find_says_whether_the_losses_are_raw_or_smoothed(trained):
    (ax,) = panels(build("plot_lr_find", trained))
    assert ax.lines[0].get_label() == "loss of each batch"
    assert list(ax.lines[0].get_xdata()) == trained["finder"].lrs
    smooth = lr_find(nested_model(), trained["dls"].train, start=1e-4, growth=1.4, max_iters=10, smoothing=0.9)
    (ax,) = panels(charts.plot_lr_find(smooth))
    assert ax.lines[0].get_label().startswith("loss of each batch, smoothed (EMA 0.9)")


def test_plot_layer_stds_cuts_a_line_where_it_leaves_the_float_range_and_ticks_round_decades():
    curves = {"N(0, 1)": [8.0 ** k for k in range(1, 43)] + [math.nan] * 8,
              "N(0, 0.01)": [0.08 ** k for k in range(1, 42)] + [0.0] * 9,
              "Kaiming": [0.8] * 50, "LSUV": [1.0] * 50}
    fig = charts.plot_layer_stds(curves, zoom=("Kaiming", "LSUV"), marks={"expected": 0.83})
    log_ax, lin_ax = panels(fig)
    labels = [line.get_label() for line in log_ax.lines if not line.get_label().startswith("_")]
    assert labels == ["N(0, 1) (overflows from layer 43)", "N(0, 0.01) (is 0 from layer 42)", "Kaiming", "LSUV"]
    overflow = log_ax.lines[1]  # drawn after its cross
    assert len(overflow.get_xdata()) == 42
    crosses = [line for line in log_ax.lines if line.get_marker() == "x"]
    assert [(c.get_xdata()[0], c.get_ydata()[0]) for c in crosses] == [(42, 8.0 ** 42), (41, 0.08 ** 41)]
    lo, hi = log_ax.get_ylim()
    shown = [t for t in log_ax.get_yticks() if lo <= t <= hi]
    exponents = [round(math.log10(t)) for t in shown]
    assert exponents and all(e % 20 == 0 for e in exponents), exponents  # 10^-40, 10^-20, 1, ... not 10^29
    assert lin_ax.get_yscale() == "linear" and [line.get_label() for line in lin_ax.lines] == \
        ["Kaiming", "LSUV", "expected (0.83)"]
    assert "Kaiming" in legend_labels(fig) and legend_labels(fig).count("Kaiming") == 1


def test_plot_layer_stds_draws_the_line_at_1_under_the_curves_unlike_any_of_them():
    """A dotted curve lying at 1 (the paper's LSUV in chapter 8) stays visible on the reference line."""
    curves = {name: [1.0, 0.5, 0.2] for name in ("a", "b", "c")} | {"d (dotted)": [1.0, 1.0, 1.0]}
    (ax,) = panels(charts.plot_layer_stds(curves))
    (ref,) = [line for line in ax.lines if line.get_label().startswith("_") and list(line.get_ydata()) == [1, 1]]
    drawn = [line for line in ax.lines if line is not ref]
    assert drawn[-1].get_linestyle() == ":" and all(ref.get_zorder() < line.get_zorder() for line in drawn)
    assert all((ref.get_linestyle(), ref.get_linewidth(), ref.get_color()) !=
               (line.get_linestyle(), line.get_linewidth(), line.get_color()) for line in drawn)
    assert ref.get_linewidth() > 2 * max(line.get_linewidth() for line in drawn)  # a band, not another line


def test_plot_layer_stds_refuses_a_zoom_on_a_curve_it_does_not_have():
    with pytest.raises(ValueError, match=r"zoom names curves to draw again, one of \['a'\]; got \['b'\]"):
        charts.plot_layer_stds({"a": [1.0, 1.0]}, zoom=["b"])


SEED_DOTS = {"epoch 1": {"baseline": {"this book": [80.0, 82.0, None]}, "lsuv": {"this book": [90.0, 92.0, 94.0]}},
             "epoch 3": {"baseline": {"this book": [95.0, 96.0, 97.0]}, "lsuv": {"this book": [96.0, 97.0, 98.0]}}}


def test_plot_seed_dots_draws_every_seed_its_mean_over_all_seeds_and_the_marks(trained):
    fig = build("plot_seed_dots", trained)
    first, third = panels(fig)
    assert [first.get_title(), third.get_title()] == ["epoch 1", "epoch 3"] and fig.get_suptitle() == "Accuracy"
    dots = [p for c in first.collections if isinstance(c, PathCollection) for p in c.get_offsets().tolist()]
    assert sorted(y for _, y in dots) == [10.0, 80.0, 82.0, 90.0, 92.0, 93.0, 94.0]  # the diverged run at chance
    bars = sorted(c.get_segments()[0][0][1] for c in first.collections if isinstance(c, LineCollection))
    assert bars == pytest.approx([(80 + 82 + 10) / 3, 92.0])  # a diverged run counts in its mean
    # The crosses of diverged runs sit on top of the mean bars and the chance line, which lies under the dots.
    cross, = [c for c in first.collections if isinstance(c, PathCollection) and len(c.get_offsets()) == 1
              and c.get_offsets()[0][1] == 10.0]
    mean_bars = [c for c in first.collections if isinstance(c, LineCollection)]
    (chance_line,) = first.lines
    assert cross.get_zorder() > max(b.get_zorder() for b in mean_bars) > chance_line.get_zorder()
    assert chance_line.get_zorder() < min(c.get_zorder() for c in first.collections if isinstance(c, PathCollection))
    assert [t.get_text() for t in first.get_xticklabels()] == ["baseline", "lsuv"]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["this book", "mean over seeds", "diverged (counted at chance)", "the notebook (one run)",
                      "chance"]


def test_plot_seed_dots_with_one_panel_titles_it_and_wraps_layer_names():
    fig = charts.plot_seed_dots({"": {"conv 1 (6 ch)": {"a": [1.0, 2.0]}}}, xlabel="Layer", ylabel="Std", title="T")
    (ax,) = panels(fig)
    assert ax.get_title() == "T" and [t.get_text() for t in ax.get_xticklabels()] == ["conv 1\n(6 ch)"]
    assert "diverged (counted at chance)" not in [t.get_text() for t in fig.legends[0].get_texts()]
    with pytest.raises(ValueError, match="missing_at=chance"):
        charts.plot_seed_dots({"": {"x": {"a": [1.0, None]}}}, xlabel="x", ylabel="y")


def test_charts_do_not_touch_pyplot_state(trained):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    for name in CHARTS:
        build(name, trained)
    assert plt.get_fignums() == before


IMPORT_CHECK = """
import matplotlib
before = dict(matplotlib.rcParams)
from IPython.core.interactiveshell import InteractiveShell
from matplotlib.figure import Figure
shell = InteractiveShell.instance()
png = shell.display_formatter.formatters["image/png"]
import lsuvlib
from lsuvlib import charts
changed = sorted(k for k, v in matplotlib.rcParams.items() if before.get(k) != v)
assert not changed, changed
assert Figure not in png.type_printers, "importing lsuvlib registered a formatter"
assert charts.register_ipython_png() is True
fig = charts.plot_layer_stds({"a": [1.0, 2.0]})
data = png(fig)
assert data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", data[:8]
assert not [k for k, v in matplotlib.rcParams.items() if before.get(k) != v], "a chart changed rcParams"
print("ok")
"""


def test_import_changes_no_global_state_and_register_ipython_png_does_the_formatter():
    out = subprocess.run([sys.executable, "-c", IMPORT_CHECK], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_register_ipython_png_outside_ipython_is_a_no_op():
    assert charts.register_ipython_png() is False


def test_chart_style_applies_to_the_chart_only(trained):
    import matplotlib

    fig = build("plot_stats", trained)
    assert not panels(fig)[0].spines["top"].get_visible()
    assert matplotlib.rcParams["axes.spines.top"] is True
