"""What a chapter shows on its page: Markdown tables and notes, the parameters table, warnings as sentences.

Chapters call `setup` once in their setup cell; the rest are plain functions that
return or display Markdown. Results I/O lives in `lsuvlib.results`.
"""
from __future__ import annotations

import math
import re
import sys
import warnings
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .data import ImageSet
    from .results import Chapter


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
    """Display `text` as Markdown in a notebook (print it elsewhere)."""
    if _in_notebook():
        from IPython.display import Markdown, display

        display(Markdown(str(text)))
    else:
        print(text)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}".replace("-0.000", "0.000") if math.isfinite(value) else "–"  # no "-0.000"
    return str(value).replace("|", "\\|").replace("\n", " ")  # a stray pipe or newline would split the row


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None,
                   headers: Sequence[str] | None = None) -> Table:
    """A Markdown table (a `Table`); floats get 3 decimals, everything else `str`."""
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
    """One row setting this page's runs beside the blog's single run of `experiment`.

    The verdict is `stats.versus_source`: is the blog's number inside the 95% prediction interval
    for one new run of ours? Only on the blog's own dataset; on a stand-in the blog's number is
    context, "other dataset: no verdict". A diverged run counts at chance accuracy, as everywhere.
    Returns the record for the results file (`source_verdicts`) and the cells of the table row.
    """
    from .experiment import summarise_final
    from .sources import BLOG
    from .stats import fmt_mean_sd, versus_source

    chance = 1 / len(ds.classes)
    source = BLOG["eval_accuracy"][experiment]
    finals = [None if r.diverged else r.history[-1]["accuracy"] for r in runs]
    record = dict(versus_source(finals, source, same_dataset=ds.name == BLOG["dataset"], chance=chance),
                  experiment=experiment, label=label, **({} if lr is None else dict(lr=lr)))
    cells = {"experiment": label, **({} if lr is None else {"lr": f"{lr:g}"}),
             f"final accuracy over {len(runs)} seeds": fmt_mean_sd(summarise_final(runs, chance=chance), digits=3),
             "one run would fall in (95%)": "–" if record["low"] is None else f"{record['low']:.3f} to {record['high']:.3f}",
             "the blog (SVHN, one run)": f"{source:.3f}", "verdict": record["verdict"]}
    return record, cells


def blog_verdict_table(rows: Sequence[dict], ds: "ImageSet") -> Table:
    """The rows of `against_blog` as a table, with what a verdict against the blog means here."""
    from .sources import BLOG

    note = (f"\n\nThis page ran on {ds.title}, not on the blog's SVHN: the blog's number is shown for context "
            "and judged against nothing." if ds.name != BLOG["dataset"] else
            "\n\nA verdict asks whether the blog's single run is a plausible run of ours: inside the interval where "
            "95% of our runs would fall. See [How to read a verdict](reading-verdicts.html).")
    return Table(markdown_table(rows) + note)


# ----------------------------------------------------------------------------- numbers in prose
# (task D, chapters 1-2)


def sci(x: float, fmt: str = ".3g") -> str:
    r"""`x` as prose writes it: with `fmt` (`0.406`), but as $1.5 \times 10^{-5}$ or $10^{-7}$ when it is
    below 0.0001 or from 10 000 in size (never Python's `1e-07`), and with a true minus sign."""
    if x != 0 and math.isfinite(x) and not 1e-4 <= abs(x) < 1e4:
        e = math.floor(math.log10(abs(x)))
        m = float(f"{abs(x) / 10 ** e:.2g}")
        if m == 10:
            m, e = 1.0, e + 1
        mantissa = "" if m == 1 else f"{m:g} \\times "
        return f"${'-' if x < 0 else ''}{mantissa}10^{{{e}}}$"
    return f"{x:{fmt}}".replace("-", "−")


# ----------------------------------------------------------------------------- the parameters table


def show_setup(chapter: "Chapter") -> None:
    """The chapter's parameters as a table in code font, and what it ran on; a parameter left at `None` reads "not set"."""
    from .runtime import versions

    v = versions()
    # values in code font, as Python writes them: what a reader passes to papermill to change them
    show_markdown(markdown_table([dict(parameter=f"`{k}`", value="not set" if v is None else f"`{v!r}`")
                                  for k, v in chapter.params.items()])
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


LIMIT = 100.0  # points: no difference of two accuracies lies further from 0


def shown_interval(row: dict, limit: float = LIMIT) -> tuple[float, float] | None:
    r"""A verdict row's interval as a page shows it: cut at $\pm$`limit` points, the largest difference two
    accuracies can have. The verdict is read from the uncut interval and cannot change: the interval holds
    the effect, which lies within $\pm$`limit`, and the tie margin is far smaller. None without an interval."""
    if row["ci_low"] is None:
        return None
    return max(row["ci_low"], -limit), min(row["ci_high"], limit)


def _span(values, fmt=str) -> str:
    """`12` when all values agree, else `3 to 12`."""
    lo, hi = min(values), max(values)
    return fmt(lo) if lo == hi else f"{fmt(lo)} to {fmt(hi)}"


def verdict_table(rows: Sequence[dict], digits: int = 2, guide: str = VERDICT_GUIDE) -> Table:
    """The rows of `stats.verdicts` as the book's verdict table, with a one-line caption under it.

    Columns: claim, effect (points), adjusted interval, seeds where a > b ("k of n"), diverged
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
              f"adjusted {level} interval": " to ".join(_signed(x, digits) for x in shown_interval(r))
              if r["ci_low"] is not None else f"none: {r['n']} pairs, {MIN_PAIRS} needed",
              "seeds where a > b": f"{r['n_a_higher']} of {r['n']}",
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
    cut = any(r["ci_low"] is not None and shown_interval(r) != (r["ci_low"], r["ci_high"]) for r in rows)
    return (f"*Each interval: paired t on the per-seed differences a − b, Bonferroni-adjusted for the "
            f"m = {m} claim{'' if m == '1' else 's'} of its family; n = {_span([r['n'] for r in rows])} pairs, "
            f"a diverged run counting at chance accuracy; {smallest}; tie margin ±{margin} "
            f"point{'' if margin == '1' else 's'}"
            + (f"; an interval reaching past ±{LIMIT:g} points, the largest difference two accuracies can have, "
               "is shown cut there" if cut else "") + f". [How to read a verdict]({guide}).*")


# ============================================================================= a model, a share, an answer
# (chapters 3-5: the printed model as a table, shares without "0.00%", a verdict and its power as sentences)


def what_it_does(m) -> str:
    """A module as a reader would describe it: "convolution 1 → 8 channels, 5×5 kernel, stride 2"."""
    from torch import nn

    no_bias = "" if getattr(m, "bias", None) is not None else ", no bias"
    if isinstance(m, nn.modules.conv._ConvNd):
        return (f"convolution {m.in_channels} → {m.out_channels} channels, {'×'.join(map(str, m.kernel_size))} "
                f"kernel, stride {m.stride[0]}{no_bias}")
    if isinstance(m, nn.Linear):
        return f"linear {m.in_features} → {m.out_features}{no_bias}"
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return f"BatchNorm over {m.num_features} channels"
    if isinstance(m, nn.Flatten):
        return "flatten to one vector"
    knobs = ", ".join(k for k in m.extra_repr().split(", ") if k and not k.endswith("=None"))  # set knobs only
    return f"{type(m).__name__}({knobs})" if knobs else type(m).__name__


def model_table(model, input_shape: Sequence[int]) -> Table:
    """The model's modules in the order they run: its weight layer's name, what it does, output shape, parameters.

    Weight layers are named as the book's charts name them (`hooks.reader_names`); the modules
    after one belong to it. `input_shape` is one input without the batch dimension, e.g.
    `(1, 32, 32)`. A last row gives the total number of parameters.
    """
    import torch
    from torch import nn

    from .hooks import Hooks, reader_names

    names = reader_names(model)
    leaves = [m for m in model.modules() if not list(m.children())]
    ran: list = []
    was_training = model.training
    model.eval()  # BatchNorm's running statistics stay untouched
    try:
        with torch.no_grad(), Hooks(leaves, lambda i, m, inp, out: ran.append((m, tuple(out.shape[1:])))):
            model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    count = lambda m: sum(p.numel() for p in m.parameters(recurse=False))  # noqa: E731
    weights = (nn.modules.conv._ConvNd, nn.Linear)
    rows = [{"layer": names[m] if isinstance(m, weights) else "",
             "what it does": what_it_does(m), "output": " × ".join(map(str, shape)),
             "parameters": f"{count(m):,}" if count(m) else ""} for m, shape in ran]
    rows.append({"layer": "total", "what it does": "", "output": "",
                 "parameters": f"{sum(p.numel() for p in model.parameters()):,}"})
    return markdown_table(rows)


def share(x: float) -> str:
    """A share in [0, 1] as a page states it: `'none'`, `'under 0.1%'`, `'37.2%'`, `'over 99.9%'`, `'all'`."""
    if not 0 <= x <= 1:
        raise ValueError(f"a share lies in [0, 1], got {x}")
    if x in (0, 1):
        return "none" if x == 0 else "all"
    return "under 0.1%" if x < 0.001 else "over 99.9%" if x > 0.999 else f"{x:.1%}"


def verdict_answer(row: dict, a: str, b: str, what: str = "final test accuracy", where: str = "") -> str:
    """One verdict row of `stats.verdicts` (a claim "a > b") as the sentence answering "does a beat b?".

    `a`, `b` name the two configurations as the page does; `where` (e.g. "on Fashion-MNIST")
    follows the answer's first word. The numbers and the verdict are the row's, in points, and
    diverged runs are named.
    """
    from .stats import MIN_PAIRS

    n, effect, verdict = row["n"], row["effect"], row["verdict"]
    if row["ci_low"] is None:
        lead, body = "Not resolved", (f"with {n} pair{'s' * (n != 1)} of runs there is no interval ({MIN_PAIRS} are "
                                      f"needed), and {a} scored {_signed(effect, 1)} points of {what} against {b}")
    else:
        low, high = shown_interval(row)
        span = (f"adjusted {row['confidence']:.0%} interval {_signed(low, 1)} to "
                f"{_signed(high, 1)} points, higher in {row['n_a_higher']} of {n} seeds")
        lead, body = {
            "holds": ("Yes", f"{a} scored {effect:.1f} points more {what} than {b} ({span})"),
            "reversed": ("No, the reverse", f"{a} scored {-effect:.1f} points less {what} than {b} ({span})"),
            "tie": ("No measurable difference", f"{a} and {b} differ by {_signed(effect, 1)} points of {what}, "
                                                f"within the tie margin of ±{row['margin']:g} ({span})"),
        }.get(verdict, ("Not resolved", f"{a} scored {_signed(effect, 1)} points of {what} against {b}, but the "
                                        f"interval includes 0 ({span})"))
    diverged = [f"{k} run{'s' * (k != 1)} with {who}"
                for k, who in ((row["n_diverged_a"], a), (row["n_diverged_b"], b)) if k]
    return (f"{lead}{', ' + where if where else ''}: {body}"
            + (f"; diverged, and counted at chance accuracy: {' and '.join(diverged)}." if diverged else "."))


def effect_note(rows: Sequence[dict], effect: float, what: str = "final test accuracy",
                about: str = "This chapter is about an effect of {effect}.") -> str:
    """What a family of verdict rows can resolve, against the `effect` (points) the chapter is about.

    States the effect (the sentence `about`, in which `{effect}` reads "4 points of final test
    accuracy"; a chapter whose seeds were chosen elsewhere says so there), the spread of the
    per-seed differences measured (the largest sd of the family), the smallest effect the
    intervals resolve (`stats.min_detectable_effect`) and the seeds that spread would need for
    `effect` (`stats.pairs_needed`).
    """
    from .stats import MIN_PAIRS, min_detectable_effect, pairs_needed

    if not effect > 0:
        raise ValueError(f"effect must be a positive number of points, got {effect}")
    if "{effect}" not in about:
        raise ValueError(f"about must contain '{{effect}}' where the effect goes, got {about!r}")
    n, m = max(r["n"] for r in rows), max(r["m"] for r in rows)
    claims = f"{m} claim{'s' * (m != 1)}"
    text = about.replace("{effect}", f"{effect:g} points of {what}")
    sds = [r["sd"] for r in rows if r["sd"] is not None]
    if n < MIN_PAIRS or not sds:
        return text + f" With {n} seed{'s' * (n != 1)} no interval can be given: at least {MIN_PAIRS} are needed."
    sd = max(sds)
    mde = min_detectable_effect(sd, n, m, rows[0]["confidence"])
    text += (f" The per-seed differences measured here have a standard deviation of {sd:.1f} points, so {n} seeds "
             f"and {claims} resolve effects larger than {mde:.1f} points (the interval's half-width)")
    if sd == 0:
        return text + "."
    needed = pairs_needed(effect, sd, m, rows[0]["confidence"])
    return text + (f"; at this spread {needed} seeds would be enough for {effect:g} points." if mde < effect else
                   f": not enough for {effect:g} points, which would need {needed} seeds at this spread.")
