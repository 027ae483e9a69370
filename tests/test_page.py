"""lsuvlib.page: what a chapter shows on its page (tables, the parameters table, warnings)."""
from __future__ import annotations

import math
import warnings

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
    assert out.startswith("| parameter | value |") and "| epochs | 1 |" in out and "Ran on cpu with Python" in out


def test_show_setup_writes_a_parameter_left_at_none_as_not_set(capsys):
    page.show_setup(Chapter("02-x", dict(lr_find_iters=None, n_train=None, dataset="auto")))
    out = capsys.readouterr().out
    assert "| lr_find_iters | not set |" in out and "| n_train | not set |" in out and "None" not in out


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
