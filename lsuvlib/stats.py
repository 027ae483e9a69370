"""Summaries over seeds: mean, sample standard deviation and a t-based 95% confidence interval."""
from __future__ import annotations

import math
from typing import Sequence

from scipy import stats as _st


def summarise(values: Sequence[float], confidence: float = 0.95) -> dict:
    """``n``, ``mean``, ``sd`` (n-1 denominator) and the ``confidence`` interval of the mean.

    The interval is ``mean ± t(n-1) · sd / sqrt(n)``. With one value the sd and interval
    are undefined and reported as NaN rather than a misleading 0.
    """
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("cannot summarise an empty list of values")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return dict(n=1, mean=mean, sd=math.nan, ci_low=math.nan, ci_high=math.nan)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = _st.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    return dict(n=n, mean=mean, sd=sd, ci_low=mean - half, ci_high=mean + half)


def aggregate(histories: Sequence[list[dict]], phase: str = "eval", metric: str = "accuracy") -> dict:
    """Per epoch, :func:`summarise` of ``metric`` across runs; lists keyed like a table's columns.

    Epochs are aligned by number, and an epoch is summarised over the runs that reached
    it (a run stopped early contributes fewer epochs).
    """
    per_epoch: dict[int, list[float]] = {}
    for h in histories:
        for row in h:
            if row["phase"] == phase:
                per_epoch.setdefault(row["epoch"], []).append(row[metric])
    out: dict[str, list] = {k: [] for k in ("epoch", "n", "mean", "sd", "ci_low", "ci_high")}
    for epoch in sorted(per_epoch):
        s = summarise(per_epoch[epoch])
        out["epoch"].append(epoch)
        for k in ("n", "mean", "sd", "ci_low", "ci_high"):
            out[k].append(s[k])
    return out


def _missing(v: float | None) -> bool:
    """NaN, or None: how a NaN comes back from a JSON results file."""
    return v is None or math.isnan(v)


def intervals_overlap(a: dict, b: dict) -> bool:
    """Whether two summaries' confidence intervals overlap (NaN intervals count as overlapping)."""
    if any(_missing(v) for v in (a["ci_low"], a["ci_high"], b["ci_low"], b["ci_high"])):
        return True
    return a["ci_low"] <= b["ci_high"] and b["ci_low"] <= a["ci_high"]


def fmt_mean_sd(s: dict, scale: float = 1.0, digits: int = 1) -> str:
    """``'93.1 ± 0.4'`` style text for a summary (``scale=100`` for percentages).

    Runs that stopped early are named: ``'93.1 ± 0.4 (1 of 3 runs diverged)'``.
    """
    mean, sd = s["mean"], s["sd"]
    if _missing(mean):
        text = "no run finished"
    elif _missing(sd):
        text = f"{mean * scale:.{digits}f}"
    else:
        text = f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}"
    stopped = s.get("n_stopped", 0)
    if stopped:
        text += f" ({stopped} of {s['n'] + stopped} runs diverged)"
    return text


def fmt_ci(s: dict, digits: int = 3) -> str:
    """``'0.854–0.863'`` for a summary's confidence interval, ``'–'`` when it is undefined."""
    if _missing(s["ci_low"]) or _missing(s["ci_high"]):
        return "–"
    return f"{s['ci_low']:.{digits}f}–{s['ci_high']:.{digits}f}"
