r"""Summaries over seeds, verdicts on a chapter's claims, and comparisons with a source's single run.

Inputs are in the metric's own units (accuracy as a fraction in [0, 1]); verdict rows come
back in points (`scale=100`). How a chapter uses the module:

- `summarise(values, bounds=(0, 1), chance=0.1)`: mean, sd and interval of the mean over *all*
  seeds, `fmt_mean_sd` prints it; `aggregate` does the same per epoch for curves.
- `verdicts(claims, chance=0.1)`: one row per claim of the chapter's family, each claim
  `dict(claim="loop > std, epoch 1", a=..., b=..., kind="order")` with `a`, `b` as
  `{seed: value}` (or `paired=paired_runs(a_runs, b_runs, chance=0.1)`). Save the rows as
  `summary["verdicts"]` and show them with `page.verdict_table(rows)`.
- `versus_source(values, source_value, same_dataset, chance=0.1)`: a source's single run against
  our runs; save the rows as `summary["source_verdicts"]`.
- `min_detectable_effect(sd, n, m)` and `pairs_needed(effect, sd, m)`: what a table of `n`
  pairs can resolve, and how many seeds a chapter needs for an effect it cares about.

**Procedure.** A claim compares configurations `a` and `b` trained on the same seeds (same
initial weights and batches), so it is judged on the per-seed differences `a - b`. Its interval
is the paired t interval, Bonferroni-adjusted over the chapter's family of $m$ claims:
$\bar d \pm t_{1-\alpha/(2m),\,n-1}\, s_d/\sqrt{n}$. "The interval excludes 0" and "the
adjusted test rejects" are then the same statement, so a reader checks a verdict by looking at
its interval. (With 5 to 10 pairs a permutation test has a p-value floor of $2/2^n$ that a
multiplicity correction pushes past $\alpha$ whatever the effect; the t interval's width
reflects the spread actually seen.)

**Verdicts** come from one rule, `verdict_for`. An ordering "a > b": "holds" when the interval
lies above 0, "reversed" when below, "tie" when inside $\pm$ margin, else "not resolved". A tie
"a ≈ b": "holds" inside $\pm$ margin, "does not hold" wholly outside it, else "not resolved".
With fewer than `MIN_PAIRS` pairs no interval is given and the claim is "not resolved".

**Diverged runs are outcomes.** A run that diverged (value `None` or NaN) counts at `chance`
accuracy (1 / number of classes) and is counted per side; without `chance` it is an error. A pair
whose two runs both end at or below `chance` is a tie (difference 0): neither learned anything,
so a diverged run counted at chance does not "beat" a stuck one at 9.7%.

**Results format.** `VERDICT_FIELDS` lists a verdict row's fields; `check_verdict(row)` checks
one (also a `versus_source` row), so a build test can run it over every results file.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _st

MIN_PAIRS = 3  # with 2 pairs the 95% t quantile is 12.7: such an interval is no finding
MAX_SOURCE_WIDTH = 0.20  # a prediction interval wider than 20 accuracy points could not fail
KINDS = ("order", "tie")
VERDICT_FIELDS = {
    "claim": "the claim as the page states it, e.g. 'loop > std, epoch 1'",
    "kind": "'order' (a > b) or 'tie' (a ≈ b)",
    "effect": "mean of the per-seed differences a - b, in points",
    "sd": "sd of the per-seed differences, in points (None below 2 pairs)",
    "ci_low": "low end of the Bonferroni-adjusted paired t interval, in points (None below MIN_PAIRS pairs)",
    "ci_high": "high end of that interval",
    "margin": "tie margin, in points",
    "verdict": "verdict_for(kind, ci_low, ci_high, margin)",
    "n": "pairs (seeds), diverged runs included",
    "n_a_higher": "pairs in which a is higher than b (two runs at or below chance are a tie)",
    "n_diverged_a": "runs of a that diverged (counted at chance)",
    "n_diverged_b": "runs of b that diverged (counted at chance)",
    "m": "claims in the family the interval is adjusted for",
    "confidence": "family-wise confidence; each interval is at 1 - (1 - confidence) / m",
}


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (0.95 for 95%), got {confidence}")


def _missing(v) -> bool:
    """A diverged run: None (NaN after a JSON round trip), NaN or infinite."""
    return v is None or not math.isfinite(float(v))


def _with_chance(values: Sequence, chance: float | None, what: str) -> tuple[list[float], int]:
    """The values with each diverged run at `chance`, and how many there were."""
    n_missing = sum(_missing(v) for v in values)
    if n_missing and chance is None:
        raise ValueError(f"{what}: {n_missing} of {len(values)} values are None or NaN (diverged runs); pass "
                         "chance=1/number_of_classes to count them at chance accuracy")
    return [chance if _missing(v) else float(v) for v in values], n_missing


def _check_bounds(xs: Sequence[float], bounds: tuple[float, float] | None) -> None:
    if bounds is None:
        return
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
    outside = [x for x in xs if not lo <= x <= hi]
    if outside:
        cause = ("percentages given for a fraction? divide them by 100" if hi <= 1 < max(outside) <= 100 * hi
                 else "check the metric and the bounds")
        raise ValueError(f"values must lie within bounds {bounds}, got {outside[:5]}: {cause}")


def _clip(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    return (float(low), float(high)) if bounds is None else (float(max(low, bounds[0])), float(min(high, bounds[1])))


def summarise(values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None,
              chance: float | None = None) -> dict:
    r"""`n`, `mean`, `sd` ($n-1$ denominator), the `confidence` interval of the mean, `n_diverged`.

    The interval is $\bar x \pm t_{n-1}\, s/\sqrt{n}$, clipped to `bounds` (`(0, 1)` for an
    accuracy). Values outside `bounds` are an error. A diverged run (`None` or NaN) counts at
    `chance`, so a summary over N seeds is over N seeds; without `chance` it is an error. With
    one value the sd and interval are undefined and reported as NaN.
    """
    _check_confidence(confidence)
    xs, n_diverged = _with_chance(list(values), chance, "summarise")
    if not xs:
        raise ValueError("summarise: values is empty; give one value per seed")
    _check_bounds(xs, bounds)
    n, mean = len(xs), float(np.mean(xs))
    if n == 1:
        return dict(n=1, mean=mean, sd=math.nan, ci_low=math.nan, ci_high=math.nan, n_diverged=n_diverged)
    sd = float(np.std(xs, ddof=1))
    half = _st.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    low, high = _clip(mean - half, mean + half, bounds)
    return dict(n=n, mean=mean, sd=sd, ci_low=low, ci_high=high, n_diverged=n_diverged)


def _value_at(history: Sequence[dict], epoch: int, phase: str, metric: str) -> float | None:
    """`metric` at `epoch`, or None when the run never finished that epoch with a finite loss."""
    rows = [r for r in history if r["phase"] == phase and r["epoch"] == epoch]
    return None if not rows or _missing(rows[0]["loss"]) else rows[0][metric]


def aggregate(histories: Sequence[list[dict]], phase: str = "eval", metric: str = "accuracy",
              bounds: tuple[float, float] | None = None, chance: float | None = None) -> dict:
    """Per epoch, `summarise` of `metric` over all runs; lists keyed like a table's columns.

    A run that did not finish an epoch (it stopped early, or its loss was not finite) counts
    at `chance` there; without `chance` that is an error.
    """
    epochs = sorted({r["epoch"] for h in histories for r in h if r["phase"] == phase})
    out: dict[str, list] = {k: [] for k in ("epoch", "n", "mean", "sd", "ci_low", "ci_high", "n_diverged")}
    for epoch in epochs:
        s = summarise([_value_at(h, epoch, phase, metric) for h in histories], bounds=bounds, chance=chance)
        out["epoch"].append(epoch)
        for k in ("n", "mean", "sd", "ci_low", "ci_high", "n_diverged"):
            out[k].append(s[k])
    return out


def fmt_mean_sd(s: dict, scale: float = 1.0, digits: int = 1) -> str:
    """`'93.1 ± 0.4'` for a summary (`scale=100` for points), naming diverged runs.

    From `summarise(..., chance=)`: `'61.2 ± 40.1 (2 of 5 runs diverged, counted at chance)'`.
    """
    mean, sd = s["mean"], s["sd"]
    if mean is None or math.isnan(mean):
        text = "no run finished"
    elif sd is None or math.isnan(sd):
        text = f"{mean * scale:.{digits}f}"
    else:
        text = f"{mean * scale:.{digits}f} ± {sd * scale:.{digits}f}"
    if s.get("n_diverged"):
        text += f" ({s['n_diverged']} of {s['n']} runs diverged, counted at chance)"
    return text


def fmt_ci(s: dict, digits: int = 3) -> str:
    """`'0.854–0.863'` for a summary's confidence interval, `'–'` when it is undefined."""
    if _missing(s["ci_low"]) or _missing(s["ci_high"]):
        return "–"
    return f"{s['ci_low']:.{digits}f}–{s['ci_high']:.{digits}f}"


# ============================================================================ paired comparisons


def min_detectable_effect(sd: float, n: int, m: int = 1, confidence: float = 0.95) -> float:
    r"""Half-width of the Bonferroni-adjusted paired t interval: $t_{1-\alpha/(2m),\,n-1}\, s/\sqrt{n}$.

    The smallest mean difference a family of `m` claims over `n` pairs, whose differences have
    sd `sd`, can resolve ($\alpha$ = 1 - `confidence`). An effect of exactly this size is
    resolved about half of the time. Same units as `sd`; needs `n` >= `MIN_PAIRS`.
    """
    _check_confidence(confidence)
    if n < MIN_PAIRS:
        raise ValueError(f"n must be at least {MIN_PAIRS} pairs for an interval, got {n}")
    if m < 1:
        raise ValueError(f"m must be the number of claims in the family (>= 1), got {m}")
    return float(_st.t.ppf(1 - (1 - confidence) / (2 * m), n - 1) * sd / math.sqrt(n))


def pairs_needed(effect: float, sd: float, m: int = 1, confidence: float = 0.95, most: int = 10_000) -> int:
    """Fewest pairs whose `min_detectable_effect` is below `effect`, for an assumed `sd` of the differences.

    For choosing a chapter's seed count before running it: with that many seeds an effect of
    size `effect` is resolved about half of the time (more seeds for more certainty).
    """
    if not effect > 0 or not sd >= 0:
        raise ValueError(f"effect must be > 0 and sd >= 0 (same units), got effect={effect}, sd={sd}")
    n = MIN_PAIRS
    while min_detectable_effect(sd, n, m, confidence) >= effect:
        n += 1
        if n > most:
            raise ValueError(f"more than {most} pairs are needed to resolve {effect} with sd {sd}")
    return n


@dataclass(frozen=True)
class Paired:
    """`a - b` seed by seed, over every seed; a diverged run entered at chance and is counted per side."""

    seeds: list
    diffs: list[float]
    n_diverged_a: int = 0
    n_diverged_b: int = 0

    @property
    def n(self) -> int:
        return len(self.diffs)

    @property
    def mean(self) -> float:
        return float(np.mean(self.diffs))

    @property
    def sd(self) -> float:
        return float(np.std(self.diffs, ddof=1)) if self.n > 1 else math.nan

    @property
    def n_a_higher(self) -> int:
        return sum(d > 0 for d in self.diffs)

    def interval(self, m: int = 1, confidence: float = 0.95) -> tuple[float, float] | None:
        """The Bonferroni-adjusted t interval of the mean difference; None below `MIN_PAIRS` pairs."""
        if self.n < MIN_PAIRS:
            return None
        half = min_detectable_effect(self.sd, self.n, m, confidence)
        return self.mean - half, self.mean + half


def paired(a: Mapping, b: Mapping, chance: float | None = None) -> Paired:
    """Compare runs `a` and `b` keyed by seed (`{seed: final metric}`), seed by seed.

    A value of None or NaN is a diverged run and counts at `chance` (an error without it). A
    pair whose values are both at or below `chance` differs by 0: two runs that learned nothing
    are a tie. Seeds present on one side only are an error.
    """
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        raise TypeError("paired() takes two dicts {seed: value}; key the runs by seed so pairs match")
    only_a, only_b = sorted(set(a) - set(b), key=str), sorted(set(b) - set(a), key=str)
    if only_a or only_b:
        raise ValueError(f"unmatched seeds: {only_a} only in the first set, {only_b} only in the second; "
                         "compare runs trained with the same seeds")
    if not a:
        raise ValueError("paired: no seeds; give {seed: value} for each seed")
    seeds = sorted(a, key=lambda s: (str(type(s)), s))
    xa, da = _with_chance([a[s] for s in seeds], chance, "paired, first set")
    xb, db = _with_chance([b[s] for s in seeds], chance, "paired, second set")
    # Two runs at or below chance both learned nothing: a tie, whichever of them sits lower.
    diffs = [0.0 if chance is not None and max(x, y) <= chance else x - y for x, y in zip(xa, xb)]
    return Paired(seeds, diffs, da, db)


def paired_runs(a_runs: Sequence, b_runs: Sequence, phase: str = "eval", metric: str = "accuracy",
                chance: float | None = None, epoch: int | None = None) -> Paired:
    """`paired` on two lists of runs (`experiment.Run` or their dicts) by seed, at `epoch` (0-based).

    `epoch=None` compares the last epoch. A run that did not finish that epoch with a finite
    loss enters as diverged. Runs that did not stop but end at different epochs are an error:
    epoch 3 of one against epoch 5 of another is no paired comparison.
    """
    def field(r, name):
        return r.get(name) if isinstance(r, Mapping) else getattr(r, name)

    runs = list(a_runs) + list(b_runs)
    ends = {max((row["epoch"] for row in field(r, "history") if row["phase"] == phase), default=None)
            for r in runs if not field(r, "stopped")}
    if len(ends) > 1:
        raise ValueError(f"mismatched epochs: the finished runs end at epochs {sorted(ends, key=str)}; "
                         "compare runs trained for the same number of epochs")
    if epoch is None:
        epoch = max((row["epoch"] for r in runs for row in field(r, "history") if row["phase"] == phase), default=0)

    def at_epoch(runs):
        out = {}
        for r in runs:
            if field(r, "seed") in out:
                raise ValueError(f"seed {field(r, 'seed')} appears twice in one set of runs")
            out[field(r, "seed")] = _value_at(field(r, "history"), epoch, phase, metric)
        return out

    return paired(at_epoch(a_runs), at_epoch(b_runs), chance)


def verdict_for(kind: str, low: float | None, high: float | None, margin: float) -> str:
    """The verdict an interval `low` to `high` gives a claim; the one rule every verdict follows.

    `kind="order"` (a > b): "holds" if `low` > 0, "reversed" if `high` < 0, "tie" if the
    interval lies inside [-`margin`, `margin`], else "not resolved". `kind="tie"` (a ≈ b):
    "holds" inside [-`margin`, `margin`], "does not hold" wholly outside it, else "not
    resolved". No interval (`None`, too few pairs): "not resolved".
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be 'order' (a > b) or 'tie' (a ≈ b), got {kind!r}")
    if low is None or high is None:
        return "not resolved"
    inside = -margin <= low and high <= margin
    if kind == "tie":
        return "holds" if inside else "does not hold" if low > margin or high < -margin else "not resolved"
    return "holds" if low > 0 else "reversed" if high < 0 else "tie" if inside else "not resolved"


def verdicts(claims: Sequence[Mapping], alpha: float = 0.05, tie_margin: float = 0.01, chance: float | None = None,
             scale: float = 100.0) -> list[dict]:
    r"""One verdict row (`VERDICT_FIELDS`, in points) per claim of a family of $m$ = `len(claims)`.

    Each claim is `dict(claim=str, a={seed: value}, b={seed: value}, kind="order")` or has
    `paired=` a ready `Paired` instead of `a`, `b`; state an ordering as "a > b". The interval
    is the paired t interval at $1 - \alpha/m$ (Bonferroni), the verdict `verdict_for` of it
    with the margin `tie_margin` (metric units: 0.01 is 1 point of accuracy). A diverged run
    counts at `chance`; `scale` turns the metric into points.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1 (0.05 for 95% intervals), got {alpha}")
    if not tie_margin >= 0:
        raise ValueError(f"tie_margin must be >= 0 in the metric's units (0.01 = 1 point), got {tie_margin}")
    m, rows = len(claims), []
    for c in claims:
        unknown = sorted(set(c) - {"claim", "kind", "a", "b", "paired"})
        if unknown or "claim" not in c:
            raise ValueError(f"a claim is dict(claim=text, kind='order' or 'tie', a=..., b=... or paired=...), "
                             f"got keys {sorted(c)}")
        p = c["paired"] if "paired" in c else paired(c["a"], c["b"], chance)
        interval = p.interval(m, 1 - alpha)
        low, high = (None, None) if interval is None else (interval[0] * scale, interval[1] * scale)
        margin = tie_margin * scale
        rows.append(dict(claim=c["claim"], kind=c.get("kind", "order"), effect=p.mean * scale,
                         sd=None if p.n < 2 else p.sd * scale, ci_low=low, ci_high=high, margin=margin,
                         verdict=verdict_for(c.get("kind", "order"), low, high, margin), n=p.n,
                         n_a_higher=p.n_a_higher, n_diverged_a=p.n_diverged_a, n_diverged_b=p.n_diverged_b,
                         m=m, confidence=1 - alpha))
    return rows


# ============================================================================ against a source's single run


def prediction_interval(values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None,
                        chance: float | None = None) -> tuple[float, float]:
    r"""Where one new run would fall: $\bar x \pm t_{n-1}\, s \sqrt{1 + 1/n}$, clipped to `bounds`.

    Needs at least 2 values; a diverged run counts at `chance` (an error without it).
    """
    _check_confidence(confidence)
    xs, _ = _with_chance(list(values), chance, "prediction_interval")
    if len(xs) < 2:
        raise ValueError(f"a prediction interval needs at least 2 runs, got {len(xs)}")
    _check_bounds(xs, bounds)
    n, mean = len(xs), float(np.mean(xs))
    half = _st.t.ppf((1 + confidence) / 2, n - 1) * float(np.std(xs, ddof=1)) * math.sqrt(1 + 1 / n)
    return _clip(mean - half, mean + half, bounds)


def _width_text(max_width: float, bounds) -> str:
    """20 points for an accuracy, else the width in the metric's units."""
    return f"{max_width * 100:g} points" if bounds is not None and tuple(bounds) == (0, 1) else f"{max_width:g}"


def source_verdict_for(low: float | None, high: float | None, source_value: float, same_dataset: bool,
                       max_width: float = MAX_SOURCE_WIDTH, bounds: tuple[float, float] | None = (0, 1),
                       margin: float = 0.0) -> str:
    """The verdict a prediction interval gives a source's single run; the rule `versus_source` follows.

    "other dataset: no verdict" unless `same_dataset`; "too few runs: no verdict" without an
    interval; "uninformative: ..." when the interval is wider than `max_width` (it could not
    fail); else "consistent with the source" when `source_value` lies inside it, "consistent
    within the tolerance ±`margin`" when it lies no further than `margin` outside it (a value the
    rule itself only sets to within a tolerance), or "not consistent with the source".
    """
    if not same_dataset:
        return "other dataset: no verdict"
    if low is None or high is None:
        return "too few runs: no verdict"
    if high - low > max_width:
        return f"uninformative: the interval is wider than {_width_text(max_width, bounds)}"
    if low <= source_value <= high:
        return "consistent with the source"
    if low - margin <= source_value <= high + margin:
        return f"consistent within the tolerance ±{margin:g}"
    return "not consistent with the source"


def versus_source(values: Sequence[float], source_value: float, same_dataset: bool, chance: float | None = None,
                  confidence: float = 0.95, bounds: tuple[float, float] | None = (0, 1),
                  max_width: float = MAX_SOURCE_WIDTH, margin: float = 0.0) -> dict:
    """Whether a source's single run is a plausible run of ours: inside our `prediction_interval`.

    `same_dataset`: whether our runs used the source's dataset; on stand-in data the source's
    number is context only ("other dataset: no verdict"). A diverged run counts at `chance`.
    Fewer than `MIN_PAIRS` runs give no interval. Returns `dict(kind="source", low, high,
    source, same_dataset, n, n_diverged, bounds, max_width, consistent, verdict)`, `consistent` being
    None when there is no verdict; `source_verdict_for` states the rule. `bounds=(0, 1)` is
    for accuracies: pass `bounds=None` and a `max_width` in the metric's units for others;
    `margin` is the tolerance within which the measured rule sets the value (0: none).
    """
    if source_value is None or not math.isfinite(float(source_value)):
        raise ValueError(f"source_value must be a finite number, got {source_value!r}")
    xs, n_diverged = _with_chance(list(values), chance, "versus_source")
    low, high = prediction_interval(xs, confidence, bounds) if len(xs) >= MIN_PAIRS else (None, None)
    verdict = source_verdict_for(low, high, float(source_value), same_dataset, max_width, bounds, margin)
    consistent = verdict.startswith("consistent") or (False if verdict.startswith("not consistent") else None)
    return dict(kind="source", low=low, high=high, source=float(source_value), same_dataset=bool(same_dataset),
                n=len(xs), n_diverged=n_diverged, bounds=bounds, max_width=max_width, margin=margin,
                consistent=consistent, verdict=verdict)


# ============================================================================ checking a saved verdict


def _close(x: float, y: float) -> bool:
    return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)


def _check_source(r: Mapping) -> str | None:
    missing = [k for k in ("low", "high", "source", "same_dataset", "n", "bounds", "max_width", "verdict")
               if k not in r]
    if missing:
        return f"missing fields {missing}: not a row of stats.versus_source (rebuild the chapter)"
    if r["n"] < MIN_PAIRS and r["low"] is not None:
        return f"an interval from {r['n']} runs (fewer than {MIN_PAIRS}) is shown"
    expected = source_verdict_for(r["low"], r["high"], r["source"], r["same_dataset"], r["max_width"], r["bounds"],
                                  r.get("margin", 0.0))
    return None if r["verdict"] == expected else f"verdict {r['verdict']!r}, but its interval gives {expected!r}"


def check_verdict(record: Mapping) -> str | None:
    """What is wrong with a saved verdict row (a `verdicts` or `versus_source` row), or None.

    Checks that the fields of `VERDICT_FIELDS` are there, that no interval is shown below
    `MIN_PAIRS` pairs, that the interval is the Bonferroni-adjusted t interval of `effect`,
    `sd`, `n` and `m`, and that the verdict is `verdict_for` of it.
    """
    try:
        return _check_source(record) if record.get("kind") == "source" else _check_paired(record)
    except (TypeError, ValueError) as e:  # a field of the wrong type or range
        return f"malformed row: {e}"


def _check_paired(record: Mapping) -> str | None:
    missing = [k for k in VERDICT_FIELDS if k not in record]
    if missing:
        return f"missing fields {missing}: not a row of stats.verdicts (rebuild the chapter)"
    r = record
    if r["kind"] not in KINDS:
        return f"kind must be one of {KINDS}, got {r['kind']!r}"
    problems = []
    if not 0 <= r["n_diverged_a"] <= r["n"] or not 0 <= r["n_diverged_b"] <= r["n"]:
        problems.append(f"diverged counts {r['n_diverged_a']} / {r['n_diverged_b']} do not fit {r['n']} pairs")
    low, high = r["ci_low"], r["ci_high"]
    if r["n"] < MIN_PAIRS:
        if low is not None or high is not None:
            problems.append(f"an interval from {r['n']} pairs (fewer than {MIN_PAIRS}) is shown")
    elif low is None or high is None or r["sd"] is None:
        problems.append(f"no interval or sd although there are {r['n']} pairs")
    else:
        half = min_detectable_effect(r["sd"], r["n"], r["m"], r["confidence"])
        if not (_close(low, r["effect"] - half) and _close(high, r["effect"] + half)):
            problems.append(f"the interval {low:+.3f} to {high:+.3f} is not the adjusted t interval "
                            f"{r['effect'] - half:+.3f} to {r['effect'] + half:+.3f}")
    expected = verdict_for(r["kind"], low, high, r["margin"])
    if r["verdict"] != expected:
        problems.append(f"verdict {r['verdict']!r}, but its interval gives {expected!r}")
    return "; ".join(problems) or None
