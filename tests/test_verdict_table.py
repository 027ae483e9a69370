"""page.verdict_table (the book's one verdict table) and the appendix it links, chapters/reading-verdicts.ipynb."""
from __future__ import annotations

import math
import os
import random
import re
from pathlib import Path

import nbformat
import pytest

from lsuvlib.page import Table, shown_interval, verdict_table
from lsuvlib.stats import verdict_for, verdicts

from history_rows import rows

ROOT = Path(__file__).resolve().parent.parent
APPENDIX = ROOT / "chapters" / "reading-verdicts.ipynb"
BASE = {s: 0.80 + 0.01 * (s % 3) for s in range(10)}
COLUMNS = ["claim", "effect (points)", "adjusted 95% interval", "seeds where a > b", "diverged (a / b)", "verdict"]


def shifted(shifts, base=BASE):
    return {s: base[s] + d for s, d in zip(base, shifts)}


def family():
    """Three claims: one that holds, a tie with a diverged run on each side, and one from 2 seeds."""
    better = shifted([0.05 + 0.002 * s for s in range(10)])
    tied = shifted([0.001 if s % 2 else -0.001 for s in range(10)])
    tied[3], base = None, {**BASE, 3: None}  # seed 3 diverged on both sides: a difference of 0
    return verdicts([dict(claim="better > base", a=better, b=BASE),
                     dict(claim="tied ≈ base", a=tied, b=base, kind="tie"),
                     dict(claim="a | b > c", a={0: 0.9, 1: 0.95}, b={0: 0.5, 1: 0.6})], chance=0.1)


def cells(table: str) -> list[list[str]]:
    body = table.split("\n\n")[0].splitlines()
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in body]


def test_the_table_has_the_books_columns_and_plain_cells():
    table = verdict_table(family())
    assert isinstance(table, Table) and table._repr_markdown_() == str(table)
    head, _, holds, tie, few = cells(table)
    assert head == COLUMNS
    assert holds[0] == "better > base" and holds[1] == "+5.90" and holds[3] == "10 of 10"
    assert re.fullmatch(r"\+\d\.\d\d to \+\d\.\d\d", holds[2]) and holds[4:] == ["0 / 0", "holds"]
    assert tie[4] == "1 / 1" and tie[5] == "holds"
    assert few[0] == r"a \| b > c" and few[2] == "none: 2 pairs, 3 needed" and few[5] == "not resolved"
    for bad in ("None", "nan", "0.00%", "-0.00", "np.", "float"):
        assert bad not in table.split("\n\n")[0], bad


def test_the_caption_states_procedure_family_pairs_resolvable_effect_margin_and_link():
    rows_ = family()
    caption = verdict_table(rows_).split("\n\n")[1]
    assert len(caption.splitlines()) == 1
    halves = sorted((r["ci_high"] - r["ci_low"]) / 2 for r in rows_ if r["ci_low"] is not None)
    assert "paired t on the per-seed differences a − b, Bonferroni-adjusted for the m = 3 claims" in caption
    assert "n = 2 to 10 pairs" in caption and "diverged run counting at chance accuracy" in caption
    assert f"{halves[0]:.2f} to {halves[-1]:.2f} points" in caption
    assert "tie margin ±1 point." in caption and caption.endswith("[How to read a verdict](reading-verdicts.html).*")


def test_a_table_of_one_family_states_single_numbers():
    rows_ = verdicts([dict(claim="better > base", a=shifted([0.01 * (1 + s % 2) for s in range(10)]), b=BASE)],
                     tie_margin=0.005)
    caption = verdict_table(rows_, digits=1).split("\n\n")[1]
    assert "m = 1 claim of its family" in caption and "n = 10 pairs" in caption and "tie margin ±0.5 points" in caption
    assert "minimum detectable effect (the intervals' half-widths): 0.4 points" in caption
    only_few = verdict_table(verdicts([dict(claim="x", a={0: 0.9}, b={0: 0.8})]))
    assert "no claim had the 3 pairs an interval needs" in only_few


def test_a_near_zero_effect_is_not_printed_as_minus_zero():
    rows_ = verdicts([dict(claim="x", a=shifted([-0.00001, 0.00001, -0.00002] * 3 + [0.0]), b=BASE)])
    effect = cells(verdict_table(rows_))[2][1]
    assert effect == "0.00"


def test_the_table_refuses_a_row_its_interval_contradicts():
    rows_ = family()
    rows_[0] = {**rows_[0], "verdict": "not resolved"}
    with pytest.raises(ValueError, match=r"verdict_table: row 'better > base': verdict 'not resolved', but its "
                                         r"interval gives 'holds'; make rows with stats.verdicts"):
        verdict_table(rows_)
    with pytest.raises(ValueError, match="missing fields"):
        verdict_table([dict(claim="old", effect=1.15, ci_low=-0.7, ci_high=3.0, verdict="holds")])
    assert verdict_table([]) == "_No claim was tested._"



def test_an_interval_past_100_points_is_shown_cut_there_and_no_verdict_changes():
    """Three of five runs of b diverge (at chance 10%): among 4 claims the interval reaches past +100 points."""
    a = {s: 0.87 for s in range(5)}
    b = {0: None, 1: None, 2: None, 3: 0.86, 4: 0.88}
    rows_ = verdicts([dict(claim=f"a > b, copy {i}", a=a, b=b) for i in range(4)], chance=0.1)
    assert rows_[0]["ci_high"] > 100 and rows_[0]["ci_low"] < 0  # the saved row keeps the procedure's interval
    table = verdict_table(rows_)
    low = f"{rows_[0]['ci_low']:+.2f}"
    assert cells(table)[2][2] == f"{low} to +100.00" and cells(table)[2][5] == "not resolved"
    assert "an interval reaching past ±100 points, the largest difference two accuracies can have, is shown cut " \
           "there." in table
    assert "shown cut" not in verdict_table(family()), "said only when an interval was cut"
    rng = random.Random(0)  # no verdict differs between the cut interval and the procedure's
    for _ in range(300):
        lo = rng.uniform(-250, 100)
        row = dict(ci_low=lo, ci_high=lo + rng.uniform(0, 250))
        for kind in ("order", "tie"):
            if -100 <= (row["ci_low"] + row["ci_high"]) / 2 <= 100:  # the effect of two accuracies lies there
                assert verdict_for(kind, *shown_interval(row), 1.0) == verdict_for(kind, row["ci_low"],
                                                                                   row["ci_high"], 1.0)
    assert shown_interval(dict(ci_low=None, ci_high=None)) is None


# ============================================================================= the appendix


def test_the_appendix_is_a_clean_book_page_with_hidden_code():
    nb = nbformat.read(APPENDIX, as_version=4)
    assert nb.cells[0].source.startswith("# How to read a verdict")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.source.startswith("#| echo: false") for c in code)
    [params] = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert params.source.splitlines()[1].startswith("results_dir = None")
    text = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for topic in ("Paired seeds", "Bonferroni", "tie margin", "prediction interval", "Stand-in data",
                  "Diverged runs", "worked example from chapter 7"):
        assert topic in text, topic
    assert "chapters/reading-verdicts.ipynb" in (ROOT / "_quarto.yml").read_text()


def chapter7_results(folder: Path, n_seeds: int = 10, diverged_seed: int | None = None) -> None:
    """A chapter-7 results file shaped like the real one (runs of `loop` and `mean_std`; old-style verdicts)."""
    import torch

    from lsuvlib.data import ImageSet
    from lsuvlib.experiment import Run
    from lsuvlib.results import Chapter

    rng = random.Random(0)
    x = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)
    y = torch.zeros(2, dtype=torch.long)
    ch = Chapter("07-mnist-variants", dict(epochs=3), folder)
    ch.use_dataset(ImageSet("mnist", x, y, x, y, tuple("0123456789"), source="test"), stand_in_for="mnist")
    base = [0.90 + 0.01 * rng.random() for _ in range(n_seeds)]
    ch.add_runs("mean_std", [Run(s, rows([base[s], 0.95, 0.96]), [], 1.0) for s in range(n_seeds)])
    loop = [Run(s, rows([base[s] + 0.02 + 0.005 * rng.gauss(0, 1), 0.95, 0.96]), [], 1.0) for s in range(n_seeds)]
    if diverged_seed is not None:
        loop[diverged_seed] = Run(diverged_seed, rows([0.5], losses=[math.nan]), [], 1.0, stopped="loss became nan")
    ch.add_runs("loop", loop)
    from unittest import mock

    from conftest import vouch_for

    with mock.patch.dict(os.environ, {"LSUV_BUILD_ID": "20261201T120000Z-2"}):
        ch.save(verdicts=[dict(claim=f"claim {i}", p_holm=0.0234, verdict="holds") for i in range(12)])
    vouch_for(folder)


def execute_appendix(tmp_path: Path, results: Path) -> str:
    """The appendix run by papermill against `results`; its Markdown outputs joined."""
    import papermill

    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(str(APPENDIX), str(out), parameters=dict(results_dir=str(results)),
                               kernel_name="python3", progress_bar=False, cwd=str(APPENDIX.parent))
    nb = nbformat.read(out, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    return "\n".join(o.get("data", {}).get("text/markdown", "") for o in outputs)


@pytest.mark.slow
def test_the_worked_example_is_computed_from_chapter_7s_runs(tmp_path):
    from lsuvlib.results import load_build
    from lsuvlib.stats import paired_runs

    chapter7_results(tmp_path / "results", diverged_seed=4)
    page = execute_appendix(tmp_path, tmp_path / "results")
    runs = load_build(tmp_path / "results").files["07-mnist-variants"].data["runs"]
    p = paired_runs(runs["loop"], runs["mean_std"], chance=0.1, epoch=0)
    low, high = (x * 100 for x in p.interval(12))
    assert f"Their mean, the effect, is **{p.mean * 100:+.2f}** points" in page
    assert "1 − 0.05/12 = 99.58%" in page and f"The interval is **{low:+.2f} to {high:+.2f}** points" in page
    assert f"{p.n_a_higher} of 10 seeds, and 1 / 0 runs diverged" in page
    assert "| seed | 0 | 1 | 2 |" in page and "\n| difference | " in page  # the seeds are columns of one row
    assert "| pairs n | m = 1 | m = 6 | m = 12 |" in page


@pytest.mark.slow
def test_the_appendix_says_so_when_chapter_7_is_missing_or_too_small(tmp_path):
    (tmp_path / "empty").mkdir()
    from conftest import vouch_for

    vouch_for(tmp_path / "empty")
    assert "Chapter 7's results file is not in this build" in execute_appendix(tmp_path, tmp_path / "empty")
    chapter7_results(tmp_path / "small", n_seeds=2)
    assert "With 2 pairs there is no interval (3 are needed)" in execute_appendix(tmp_path, tmp_path / "small")
