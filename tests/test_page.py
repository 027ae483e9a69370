"""lsuvlib.page: what a chapter shows on its page (tables, the parameters table, warnings)."""
from __future__ import annotations

import math
import warnings

import pytest

from lsuvlib import page
from lsuvlib.page import Table, markdown_table
from lsuvlib.results import Chapter


def test_markdown_table_renders_as_a_table_when_it_is_a_cells_last_expression():
    """Issue 9: chapters 3-6 showed the Python string '| epoch | ...' instead of a table."""
    from IPython.core.formatters import DisplayFormatter

    table = markdown_table([dict(epoch=0, loss=0.5)])
    assert isinstance(table, Table) and isinstance(table, str)
    data, _ = DisplayFormatter().format(table)
    assert data["text/markdown"] == "| epoch | loss |\n|---|---|\n| 0 | 0.500 |"
    assert isinstance(markdown_table([]), Table)


def test_markdown_table_formats_and_escapes_cells():
    table = markdown_table([dict(a=1, b=0.12345, c=math.nan), dict(a="x|y", b=1.0, c="two\nlines")],
                           headers=["A", "B", "C"])
    assert table.splitlines() == ["| A | B | C |", "|---|---|---|", "| 1 | 0.123 | – |",
                                  "| x\\|y | 1.000 | two lines |"]
    assert markdown_table([dict(a=1)], headers=["|a − b|"]).splitlines()[0] == "| \\|a − b\\| |"


def test_show_setup_lists_every_parameter_and_what_ran_it(capsys):
    page.show_setup(Chapter("03-x", dict(epochs=1, lr=0.2, n_train=2048, device="cpu")))
    out = capsys.readouterr().out
    assert out.startswith("| parameter | value |") and "| `epochs` | `1` |" in out and "| `device` | `'cpu'` |" in out and "Ran on cpu with Python" in out


def test_show_setup_writes_a_parameter_left_at_none_as_not_set(capsys):
    page.show_setup(Chapter("02-x", dict(lr_find_iters=None, n_train=None, dataset="auto")))
    out = capsys.readouterr().out
    assert "| `lr_find_iters` | not set |" in out and "| `n_train` | not set |" in out and "None" not in out


def test_warnings_become_one_sentence_without_paths(monkeypatch, capsys):
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # restored after the test
    page.setup()
    warnings.warn("every run at lr 0.2 diverged; see /home/builder/lsuv-book/lsuvlib/experiment.py", UserWarning)
    err = capsys.readouterr().err
    assert err == "**Note:** every run at lr 0.2 diverged; see experiment.py\n"


def test_setup_registers_the_figure_formatter_when_charts_offers_it(monkeypatch):
    from lsuvlib import charts

    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)
    calls = []
    monkeypatch.setattr(charts, "register_ipython_png", lambda: calls.append(1), raising=False)
    page.setup()
    assert calls == [1]


def _run(acc, diverged=False):
    from types import SimpleNamespace

    history = [dict(epoch=0, phase="train", loss=1.0, accuracy=acc, seconds=0.1),
               dict(epoch=0, phase="eval", loss=1.0, accuracy=acc, seconds=0.1)]
    return SimpleNamespace(history=history, diverged=diverged, stopped="loss became NaN" if diverged else None)


def test_against_blog_counts_diverged_runs_at_chance_and_judges_only_on_the_blogs_data():
    """Issue 18: a stand-in's runs against the blog's SVHN number is no comparison; a diverged run is an outcome."""
    from types import SimpleNamespace

    from lsuvlib.page import against_blog, blog_verdict_table

    svhn = SimpleNamespace(name="svhn", title="SVHN", classes=tuple(range(10)))
    record, cells = against_blog("batchnorm_kaiming", "BN", [_run(0.82), _run(0.84), _run(0.83), _run(0.1, True)], svhn)
    assert record["n"] == 4 and record["n_diverged"] == 1 and record["source"] == 0.83
    assert record["verdict"].startswith("uninformative"), "one run at chance makes the interval very wide"
    assert cells["final accuracy over 4 seeds"] == "0.647 ± 0.365 (1 of 4 runs diverged, counted at chance)"
    steady = [_run(a) for a in (0.82, 0.84, 0.83, 0.835)]
    assert against_blog("batchnorm_kaiming", "BN", steady, svhn)[0]["verdict"] == "consistent with the source"
    fashion = SimpleNamespace(name="fashion_mnist", title="Fashion-MNIST", classes=tuple(range(10)))
    record, cells = against_blog("batchnorm_kaiming", "BN", steady, fashion, lr=0.2)
    assert record["verdict"] == "other dataset: no verdict" and cells["lr"] == "0.2"
    assert "shown for context and judged against nothing" in blog_verdict_table([cells], fashion)


def test_sci_writes_numbers_far_from_1_as_powers_of_ten_never_as_python_does():
    assert page.sci(1e-7) == "$10^{-7}$" and page.sci(1.46e-5) == "$1.5 \\times 10^{-5}$"
    assert page.sci(25_396.6) == "$2.5 \\times 10^{4}$" and page.sci(-3e-6) == "$-3 \\times 10^{-6}$"
    assert page.sci(0.406) == "0.406" and page.sci(0.00085, ".2g") == "0.00085"
    assert page.sci(-0.0129, ".4f") == "−0.0129" and page.sci(0.0) == "0"
    assert "e-" not in page.sci(9.96e-5)


# ----------------------------------------------------------------------------- a model, a share, an answer


def test_a_negative_zero_is_shown_as_zero():
    """Issue 19: chapter 5's table printed "-0.0"."""
    assert markdown_table([dict(mean=-0.0001, sd=-0.0)]).splitlines()[2] == "| 0.000 | 0.000 |"


def test_model_table_lists_each_module_in_the_order_it_runs_with_its_output_and_parameters():
    from functools import partial

    import torch
    from torch import nn

    from lsuvlib.models import GeneralRelu, get_model

    model = get_model(act=partial(GeneralRelu, leak=0.1, sub=0.4), norm=nn.BatchNorm2d, nfs=(1, 8, 16), first_kernel=5)
    running = model[0][1].running_mean.clone()
    lines = page.model_table(model, (1, 32, 32)).splitlines()
    assert lines[0] == "| layer | what it does | output | parameters |"
    assert lines[2:5] == ["| conv 1 (8 ch) | convolution 1 → 8 channels, 5×5 kernel, stride 2, no bias | "
                          "8 × 16 × 16 | 200 |", "|  | BatchNorm over 8 channels | 8 × 16 × 16 | 16 |",
                          "|  | GeneralRelu(leak=0.1, sub=0.4) | 8 × 16 × 16 |  |"]
    assert lines[-3:] == ["| conv 3 (10 ch) | convolution 16 → 10 channels, 3×3 kernel, stride 2 | 10 × 4 × 4 "
                          "| 1,450 |",
                          "|  | flatten to one vector | 160 |  |", "| total |  |  | 2,850 |"]
    assert 200 + 16 + 8 * 16 * 9 + 32 + 16 * 10 * 9 + 10 == 2850  # the rows above, by hand
    assert torch.equal(model[0][1].running_mean, running) and model.training, "the model is left as it was"


def test_share_never_prints_a_rounded_zero():
    assert [page.share(x) for x in (0, 0.00002, 0.3721, 0.99995, 1)] == ["none", "under 0.1%", "37.2%", "over 99.9%",
                                                                         "all"]
    with pytest.raises(ValueError, match=r"a share lies in \[0, 1\], got 1.5"):
        page.share(1.5)


def _row(a, b, margin=0.01):
    from lsuvlib.stats import verdicts

    return verdicts([dict(claim="a > b", a=dict(enumerate(a)), b=dict(enumerate(b)))], tie_margin=margin, chance=0.1)[0]


def test_verdict_answer_reads_each_verdict_as_a_sentence():
    held = _row([0.752, 0.76, 0.74, 0.75], [0.70, 0.72, 0.71, 0.70])
    assert page.verdict_answer(held, "standardised inputs", "the baseline", where="on Fashion-MNIST") == (
        f"Yes, on Fashion-MNIST: standardised inputs scored 4.3 points more final test accuracy than the baseline "
        f"(adjusted 95% interval +{held['ci_low']:.1f} to +{held['ci_high']:.1f} points, higher in 4 of 4 seeds).")
    assert page.verdict_answer(_row([0.70, 0.72, 0.71], [0.75, 0.76, 0.74]), "a", "b").startswith(
        "No, the reverse: a scored 4.0 points less final test accuracy than b")
    assert page.verdict_answer(_row([0.701, 0.72, 0.71], [0.70, 0.721, 0.709], margin=0.05), "a", "b").startswith(
        "No measurable difference: a and b differ by 0.0 points of final test accuracy, within the tie margin of ±5")
    assert page.verdict_answer(_row([0.70, 0.80, 0.60], [0.71, 0.70, 0.70]), "a", "b") == (
        "Not resolved: a scored -0.3 points of final test accuracy against b, but the interval includes 0 (adjusted "
        "95% interval -25.2 to +24.5 points, higher in 1 of 3 seeds).")
    few = _row([0.8, None], [0.7, 0.7])
    assert page.verdict_answer(few, "a", "b") == (
        "Not resolved: with 2 pairs of runs there is no interval (3 are needed), and a scored -25.0 points of final "
        "test accuracy against b; diverged, and counted at chance accuracy: 1 run with a.")


def test_effect_note_says_what_the_seeds_can_resolve_and_what_the_effect_would_need():
    from lsuvlib.stats import min_detectable_effect, pairs_needed

    row = _row([0.75, 0.76, 0.74, 0.75, 0.77], [0.70, 0.72, 0.71, 0.70, 0.71])
    mde = min_detectable_effect(row["sd"], 5, 1)
    assert page.effect_note([row], 2) == (
        f"This chapter is about an effect of 2 points of final test accuracy. The per-seed differences measured here "
        f"have a standard deviation of {row['sd']:.1f} points, so 5 seeds and 1 claim resolve effects larger than "
        f"{mde:.1f} points (the interval's half-width); at this spread {pairs_needed(2, row['sd'])} seeds would be "
        f"enough for 2 points.")
    noisy = _row([0.75, 0.66, 0.84], [0.70, 0.72, 0.71])
    assert page.effect_note([noisy], 2).endswith(
        f": not enough for 2 points, which would need {pairs_needed(2, noisy['sd'])} seeds at this spread.")
    assert page.effect_note([_row([0.8, 0.7], [0.7, 0.7])], 2).endswith(
        "With 2 seeds no interval can be given: at least 3 are needed.")
    with pytest.raises(ValueError, match="effect must be a positive number of points, got 0"):
        page.effect_note([row], 0)
    shared = page.effect_note([row], 4, about="Chapters 3 to 5 chose their seeds for {effect}.")
    assert shared.startswith("Chapters 3 to 5 chose their seeds for 4 points of final test accuracy. The per-seed")
    assert shared.endswith(f"at this spread {pairs_needed(4, row['sd'])} seeds would be enough for 4 points.")
    with pytest.raises(ValueError, match="about must contain '{effect}' where the effect goes, got 'no slot'"):
        page.effect_note([row], 2, about="no slot")
