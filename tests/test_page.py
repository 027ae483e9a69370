"""lsuvlib.page: what a chapter shows on its page (tables, the parameters table, warnings)."""
from __future__ import annotations

import math
import warnings

import nbformat

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


def test_old_imports_from_results_still_work():
    from lsuvlib.results import markdown_table as old, show_markdown, stand_in_note  # noqa: F401

    assert old is markdown_table


def _chapter_source(root, stem, source):
    (root / "chapters").mkdir(parents=True, exist_ok=True)
    (root / "_quarto.yml").write_text("book: {}\n")
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), root / "chapters" / f"{stem}.ipynb")


def test_chapter_defaults_come_from_the_source_parameters_cell(tmp_path):
    _chapter_source(tmp_path, "03-x", "epochs = 3\nlr = 0.2  # a rate\nn_train = None\nlrs = [0.1, 0.2]\n"
                                      "results_dir = '../_build/results'\nextra: int = 4\nnot_literal = 2 * 3")
    assert page.chapter_defaults("03-x", root=tmp_path) == dict(epochs=3, lr=0.2, n_train=None, lrs=[0.1, 0.2],
                                                                results_dir="../_build/results", extra=4)
    assert page.chapter_defaults("04-absent", root=tmp_path) is None


def test_show_setup_names_each_non_default_value_in_one_line(tmp_path, monkeypatch, capsys):
    """Issue 13: a smoke build's page must not pass for the full experiment."""
    _chapter_source(tmp_path, "03-x", "epochs = 3\nlr = 0.2\nn_train = None\ndevice = 'auto'")
    monkeypatch.setattr("lsuvlib.results.project_root", lambda: tmp_path)
    Chapter("03-x", dict(epochs=1, lr=0.2, n_train=2048, device="cpu"), None).show_setup()
    out = capsys.readouterr().out
    first, rest = out.split("\n\n", 1)
    assert first == ("**Built with non-default parameters:** `epochs = 1` (default `3`), `n_train = 2048` "
                     "(default `None`), `device = 'cpu'` (default `'auto'`); the chapter's defaults run the "
                     "full experiment.")
    assert rest.startswith("| parameter | value |")

    Chapter("03-x", dict(epochs=3, lr=0.2, n_train=None), None).show_setup()
    assert capsys.readouterr().out.startswith("| parameter | value |"), "defaults: no line"
    Chapter("09-no-source", dict(epochs=1), None).show_setup()
    assert capsys.readouterr().out.startswith("| parameter | value |"), "no source notebook: no line"


def test_changed_parameters_tells_a_bool_from_an_int():
    assert page.changed_parameters(dict(a=1, b=True, c=0.2), dict(a=True, b=True, c=0.2)) == [("a", 1, True)]
    assert page.changed_parameters(dict(a=1), None) == []


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


def test_against_blog_judges_finished_runs_and_counts_diverged_ones():
    from types import SimpleNamespace

    from lsuvlib.page import against_blog, blog_verdict_table

    def run(acc, diverged=False):
        history = [dict(epoch=0, phase="train", loss=1.0, accuracy=acc, seconds=0.1),
                   dict(epoch=0, phase="eval", loss=1.0, accuracy=acc, seconds=0.1)]
        return SimpleNamespace(history=history, diverged=diverged, stopped="nan" if diverged else None)

    ds = SimpleNamespace(name="fashion_mnist", title="Fashion-MNIST")
    record, cells = against_blog("batchnorm_kaiming", "BN", [run(0.82), run(0.84), run(0.1, True)], ds)
    assert record["n"] == 2 and record["n_runs"] == 3 and record["stand_in"] and record["source"] == 0.83
    assert record["low"] < 0.83 < record["high"] and record["verdict"] == "consistent with the source"
    assert cells["verdict"] == ("consistent with the source (stand-in data); 1 of 3 runs diverged, "
                                "the blog's one run did not")
    assert cells["runs finished"] == "2 of 3"
    table = blog_verdict_table([cells], ds)
    assert table.splitlines()[0].startswith("| experiment | dataset | runs finished |") and "no reproduction" in table
    lone, lone_cells = against_blog("baseline", "base", [run(0.5)], ds, lr=0.2)
    assert "verdict" not in lone and lone["lr"] == 0.2 and lone_cells["verdict"].startswith("not judged")


def test_a_decided_claim_whose_t_interval_includes_zero_is_explained_with_its_outlier():
    from lsuvlib.stats import paired

    base = {s: 0.90 for s in range(10)}
    outlier = {s: 0.90 + d / 100 for s, d in enumerate([-0.29, 0.26, 0.29, 8.53, 0.35, 0.86, 0.42, 0.14, 0.53, 0.38])}
    p = paired(outlier, base)
    assert p.ci_low < 0 < p.ci_high and p.p_value < 0.05  # the two disagree on these numbers
    text = page.test_and_interval_disagree([("a > b", p, "holds")])
    assert text.startswith("For this claim the verdict is the sign-flip test's, although the t-based 95% interval "
                           "includes 0: a > b (interval -0.72 to +3.01 points; largest difference +8.53 points, "
                           "seed 3, 24 times the median size of the others).")
    two = page.test_and_interval_disagree([("a > b", p, "holds"), ("a > c", p, "reversed")])
    assert two.startswith("For these claims") and "; a > c (interval" in two
    # nothing to explain: an open claim, or a decided one whose interval excludes 0
    assert page.test_and_interval_disagree([("a > b", p, "not resolved")]) == ""
    clear = paired({s: 0.9 + 0.01 * (1 + s % 3) for s in range(10)}, base)
    assert clear.ci_low > 0 and page.test_and_interval_disagree([("c > b", clear, "holds")]) == ""
