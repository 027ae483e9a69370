"""What a chapter shows on its page: Markdown tables and notes, the parameters table, warnings as sentences.

Chapters call :func:`setup` once in their setup cell; the rest are plain functions that
return or display Markdown. Results I/O lives in :mod:`lsuvlib.results`.
"""
from __future__ import annotations

import math
import re
import statistics
import sys
import warnings
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .data import ImageSet
    from .results import Chapter
    from .stats import Paired


class Table(str):
    """Markdown text that notebooks render as a table when it is a cell's last expression."""

    def _repr_markdown_(self) -> str:
        return str(self)


def _in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def show_markdown(text: str) -> None:
    """Display ``text`` as Markdown in a notebook (print it elsewhere)."""
    if _in_notebook():
        from IPython.display import Markdown, display

        display(Markdown(str(text)))
    else:
        print(text)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if math.isfinite(value) else "–"
    return str(value).replace("|", "\\|").replace("\n", " ")  # a stray pipe or newline would split the row


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None,
                   headers: Sequence[str] | None = None) -> Table:
    """A Markdown table (a :class:`Table`); floats get 3 decimals, everything else ``str``."""
    if not rows:
        return Table("_(no rows)_")
    columns = list(columns or rows[0].keys())
    headers = list(headers or columns)
    lines = ["| " + " | ".join(_cell(str(h)) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return Table("\n".join(lines))


def stand_in_note(ds: "ImageSet", wanted: str, source_name: str) -> str:
    """The visible note a page carries when it runs on another dataset than its source did."""
    if ds.name == wanted:
        return f"This page runs on **{ds.title}**, the dataset {source_name[:1].lower() + source_name[1:]} used."
    return (f"**Dataset note.** {source_name} ran this experiment on **{wanted.upper()}** "
            f"(cropped digits, converted to grayscale). {wanted.upper()} is not available on the machine "
            f"that built this page, so it uses **{ds.title}** ({len(ds.x_train):,} training and "
            f"{len(ds.x_test):,} test images) as a stand-in. {source_name}'s numbers are for "
            f"{wanted.upper()}; the numbers here are not a reproduction of them.")


def against_blog(experiment: str, label: str, runs: Sequence, ds: "ImageSet",
                 lr: float | None = None) -> tuple[dict, dict]:
    """One row setting this page's runs beside the blog's single run of ``experiment``.

    The verdict is :func:`lsuvlib.stats.versus_source`: is the blog's number inside the 95%
    prediction interval for one new run of ours? Runs that diverged have no final accuracy;
    they are counted, and with fewer than 2 finished runs nothing is judged. Returns the
    record for the results file and the cells for :func:`blog_verdict_table`.
    """
    from .experiment import summarise_final
    from .learner import final
    from .sources import BLOG
    from .stats import fmt_mean_sd, versus_source

    source = BLOG["eval_accuracy"][experiment]
    stand_in = ds.name != BLOG["dataset"]
    finished = [final(r.history, "eval", "accuracy") for r in runs if not r.diverged]
    record = dict(experiment=experiment, label=label, source=source, n=len(finished), n_runs=len(runs),
                  stand_in=stand_in, **({} if lr is None else dict(lr=lr)))
    if len(finished) >= 2:
        record.update(versus_source(finished, source, bounds=(0, 1)))
        verdict = record["verdict"] + (" (stand-in data)" if stand_in else "")
    else:
        verdict = "not judged: fewer than 2 runs finished"
    if len(finished) < len(runs):
        verdict += f"; {len(runs) - len(finished)} of {len(runs)} runs diverged, the blog's one run did not"
    cells = {"experiment": label, "dataset": ds.title, **({} if lr is None else {"lr": f"{lr:g}"}),
             "runs finished": f"{len(finished)} of {len(runs)}",
             "final eval accuracy (mean ± sd)": fmt_mean_sd(summarise_final(runs), digits=3),
             "95% prediction interval, one run": f"{record['low']:.3f} – {record['high']:.3f}" if "low" in record else "–",
             "the blog": f"{source:.3f} (SVHN, 1 run)", "verdict": verdict}
    return record, cells


def blog_verdict_table(rows: Sequence[dict], ds: "ImageSet") -> Table:
    """The rows of :func:`against_blog` as a table, with the stand-in caveat when it applies."""
    from .sources import BLOG

    text = markdown_table(rows)
    if ds.name != BLOG["dataset"]:
        text += (f"\n\nThis page ran on {ds.title}, not on the blog's SVHN, so a verdict only says whether the "
                 f"blog's number would be a plausible single run of *this* experiment on {ds.title}; it claims "
                 "no reproduction.")
    return Table(text)


def test_and_interval_disagree(items: Sequence[tuple[str, "Paired", str]], unit: float = 100.0) -> str:
    """One paragraph on the claims the sign-flip test decided while the t-based interval still includes 0.

    ``items``: ``(claim, paired, verdict)`` for ordering claims; only verdicts "holds" and
    "reversed" are looked at. The two disagree when the differences are far from normal (one
    seed far from the rest widens the t-interval; the sign-flip test does not assume
    normality). Each claim gets its interval and its largest difference; "" when none disagrees.
    ``unit`` converts differences to the page's points (100 for accuracies).
    """
    out = []
    for claim, p, verdict in items:
        if verdict not in ("holds", "reversed") or not (p.ci_low <= 0 <= p.ci_high):
            continue
        diffs = [d * unit for d in p.diffs]
        i = max(range(len(diffs)), key=lambda k: abs(diffs[k]))
        median = statistics.median(abs(d) for k, d in enumerate(diffs) if k != i) if len(diffs) > 1 else 0.0
        far = f", {abs(diffs[i]) / median:.0f} times the median size of the others" if median > 0 else ""
        out.append(f"{claim} (interval {p.ci_low * unit:+.2f} to {p.ci_high * unit:+.2f} points; largest difference "
                   f"{diffs[i]:+.2f} points, seed {p.seeds[i]}{far})")
    if not out:
        return ""
    return ("For " + ("this claim" if len(out) == 1 else "these claims") + " the verdict is the sign-flip test's, "
            "although the t-based 95% interval includes 0: " + "; ".join(out) + ". The largest difference widens "
            "an interval that assumes normally distributed differences, while the sign-flip test assumes only "
            "that with no effect each difference is as likely positive as negative.")


# ----------------------------------------------------------------------------- the parameters table


def show_setup(chapter: "Chapter") -> None:
    """The chapter's parameters as a table, and what it ran on."""
    from .runtime import versions

    v = versions()
    show_markdown(markdown_table([dict(parameter=k, value=repr(v)) for k, v in chapter.params.items()])
                  + f"\n\nRan on {chapter.device} with Python {v['python']}, torch {v['torch']}, lsuvlib {v['lsuvlib']}.")


# ----------------------------------------------------------------------------- page setup


def _without_paths(text: str) -> str:
    """Drop the build machine's folders from a message (a reader needs the file name at most)."""
    from .results import find_project

    root = find_project()
    if root:
        text = text.replace(str(root) + "/", "")
    return re.sub(r"(?<![\w.])/(?:[\w.+-]+/)+([\w.+-]+)", r"\1", text)


def warning_sentence(message) -> str:
    """A warning as the one Markdown sentence a page shows."""
    text = _without_paths(str(message)).strip()
    return f"**Note:** {text}"


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if _in_notebook():
        show_markdown(warning_sentence(message))
    else:
        print(warning_sentence(message), file=file or sys.stderr)


def setup() -> None:
    """Once per chapter: figures as PNG, warnings as a sentence on the page instead of a path-laden block."""
    from . import charts

    register = getattr(charts, "register_ipython_png", None)  # added by the charts module's owner
    if register is not None:
        register()
    warnings.showwarning = _show_warning


# ============================================================================= verdict tables
# (task C: the one verdict table every chapter shows; `stats.verdicts` makes its rows)

VERDICT_GUIDE = "reading-verdicts.html"  # the appendix, linked from a chapter page (chapters/*.html)


def _signed(x: float, digits: int) -> str:
    """`+1.25`, `-0.40`, and `0.00` rather than `-0.00`."""
    text = f"{x:+.{digits}f}"
    return text[1:] if float(text) == 0 else text


def _span(values, fmt=str) -> str:
    """`12` when all values agree, else `3 to 12`."""
    lo, hi = min(values), max(values)
    return fmt(lo) if lo == hi else f"{fmt(lo)} to {fmt(hi)}"


def verdict_table(rows: Sequence[dict], digits: int = 2, guide: str = VERDICT_GUIDE) -> Table:
    """The rows of `stats.verdicts` as the book's verdict table, with a one-line caption under it.

    Columns: claim, effect (points), adjusted interval, a higher in k of n seeds, diverged
    (a / b), verdict. The caption states the procedure, the family size $m$, the pairs $n$,
    the smallest effect the intervals could resolve (their half-widths), the tie margin, and
    links the appendix `guide`. A row that `stats.check_verdict` faults is an error: the table
    never shows a verdict its interval contradicts.
    """
    from .stats import MIN_PAIRS, check_verdict

    if not rows:
        return Table("_No claim was tested._")
    for r in rows:
        problem = check_verdict(r)
        if problem:
            raise ValueError(f"verdict_table: row {r.get('claim')!r}: {problem}; make rows with stats.verdicts")
    level = _span([r["confidence"] for r in rows], lambda c: f"{c:.0%}")
    cells = [{"claim": r["claim"], "effect (points)": _signed(r["effect"], digits),
              f"adjusted {level} interval": f"{_signed(r['ci_low'], digits)} to {_signed(r['ci_high'], digits)}"
              if r["ci_low"] is not None else f"none: {r['n']} pairs, {MIN_PAIRS} needed",
              "a higher in": f"{r['n_a_higher']} of {r['n']} seeds",
              "diverged (a / b)": f"{r['n_diverged_a']} / {r['n_diverged_b']}", "verdict": r["verdict"]}
             for r in rows]
    return Table(markdown_table(cells) + "\n\n" + verdict_caption(rows, digits, guide))


def verdict_caption(rows: Sequence[dict], digits: int = 2, guide: str = VERDICT_GUIDE) -> str:
    """The line under a verdict table: procedure, m, n, minimum detectable effect, tie margin, link."""
    from .stats import MIN_PAIRS

    halves = [(r["ci_high"] - r["ci_low"]) / 2 for r in rows if r["ci_low"] is not None]
    smallest = (f"minimum detectable effect (the intervals' half-widths): "
                f"{_span(halves, lambda h: f'{h:.{digits}f}')} points" if halves
                else f"no claim had the {MIN_PAIRS} pairs an interval needs")
    m, margin = _span([r["m"] for r in rows]), _span([r["margin"] for r in rows], lambda x: f"{x:g}")
    return (f"*Each interval: paired t on the per-seed differences a − b, Bonferroni-adjusted for the "
            f"m = {m} claim{'' if m == '1' else 's'} of its family; n = {_span([r['n'] for r in rows])} pairs, "
            f"a diverged run counting at chance accuracy; {smallest}; tie margin ±{margin} "
            f"point{'' if margin == '1' else 's'}. [How to read a verdict]({guide}).*")
