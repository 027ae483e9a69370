"""Summaries over seeds, intervals against a source's single run, and paired comparisons.

- :func:`summarise`: mean, sample sd and the t-based interval of the mean (optionally
  clipped to bounds, e.g. accuracy in [0, 1]).
- :func:`prediction_interval` / :func:`versus_source`: where one new run would fall, the
  right yardstick for a source that reports one run.
- :func:`paired`, :func:`holm`, :func:`verdicts`: two sets of runs keyed by seed (same
  initial weights and batches per seed), compared seed by seed, for a family of claims.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as _st

EXACT_UP_TO = 16  # sign-flip test enumerates all 2^n flips up to this many pairs, else samples
N_RESAMPLES = 100_000  # Monte-Carlo sign flips beyond EXACT_UP_TO (fixed seed: repeatable p-values)
PERMUTATION_SEED = 0


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")


def summarise(values: Sequence[float], confidence: float = 0.95,
              bounds: tuple[float, float] | None = None) -> dict:
    """``n``, ``mean``, ``sd`` (n-1 denominator) and the ``confidence`` interval of the mean.

    The interval is ``mean ± t(n-1) · sd / sqrt(n)``; ``bounds=(0, 1)`` clips it to the
    values the metric can take (an accuracy interval never reaches 101%). With one value
    the sd and interval are undefined and reported as NaN rather than a misleading 0.
    """
    _check_confidence(confidence)
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("cannot summarise an empty list of values")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return dict(n=1, mean=mean, sd=math.nan, ci_low=math.nan, ci_high=math.nan)
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = _st.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    low, high = _clip(mean - half, mean + half, bounds)
    return dict(n=n, mean=mean, sd=sd, ci_low=low, ci_high=high)


def _clip(low: float, high: float, bounds: tuple[float, float] | None) -> tuple[float, float]:
    if bounds is None:
        return low, high
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"bounds must be (low, high) with low < high, got {bounds}")
    return max(low, lo), min(high, hi)


def prediction_interval(values: Sequence[float], confidence: float = 0.95,
                        bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Where one new run would fall: ``mean ± t(n-1) · sd · sqrt(1 + 1/n)``.

    Needs at least two values (one value has no spread to predict from).
    """
    _check_confidence(confidence)
    xs = np.asarray([float(v) for v in values])
    if len(xs) < 2:
        raise ValueError(f"a prediction interval needs at least 2 runs, got {len(xs)}")
    if not np.all(np.isfinite(xs)):
        raise ValueError("a prediction interval needs finite values; count diverged runs separately")
    n = len(xs)
    half = _st.t.ppf((1 + confidence) / 2, n - 1) * xs.std(ddof=1) * math.sqrt(1 + 1 / n)
    return _clip(float(xs.mean() - half), float(xs.mean() + half), bounds)


def versus_source(values: Sequence[float], source_value: float, confidence: float = 0.95,
                  bounds: tuple[float, float] | None = None) -> dict:
    """Whether a source's single run lies inside our runs' prediction interval.

    Returns ``dict(low, high, consistent, verdict)`` with verdict "consistent with the
    source" or "not consistent with the source".
    """
    if source_value is None or not math.isfinite(float(source_value)):
        raise ValueError(f"source_value must be a finite number, got {source_value!r}")
    low, high = prediction_interval(values, confidence, bounds)
    ok = low <= float(source_value) <= high
    return dict(low=low, high=high, consistent=ok,
                verdict="consistent with the source" if ok else "not consistent with the source")


def aggregate(histories: Sequence[list[dict]], phase: str = "eval", metric: str = "accuracy",
              bounds: tuple[float, float] | None = None) -> dict:
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
        s = summarise(per_epoch[epoch], bounds=bounds)
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


# ============================================================================ paired comparisons

@dataclass
class Paired:
    """``a - b`` seed by seed. ``mean``, ``sd``, the ``ci`` and ``p_value`` use the complete pairs.

    Diverged runs (value None or NaN) are not averaged: a pair with a diverged side is
    left out of the numbers and counted in ``n_diverged_a`` / ``n_diverged_b`` (and listed
    in ``diverged_seeds``), so every table row can say "k of n pairs diverged". The
    p-value is the two-sided sign-flip permutation test of mean difference 0 (exact up to
    ``EXACT_UP_TO`` pairs, else ``N_RESAMPLES`` random flips with a fixed seed).
    """

    n: int
    diffs: list[float]
    seeds: list
    mean: float
    sd: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str
    confidence: float = 0.95
    n_diverged_a: int = 0
    n_diverged_b: int = 0
    diverged_seeds: list = field(default_factory=list)

    @property
    def n_diverged(self) -> int:
        return len(self.diverged_seeds)


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (not isinstance(v, (int, float))
                                                                     and math.isnan(float(v)))


def sign_flip_p(diffs: Sequence[float]) -> tuple[float, str]:
    """Two-sided p-value of mean difference 0 under random sign flips, and how it was computed."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))  # ties count as "as extreme" despite float rounding
    if n <= EXACT_UP_TO:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ d / n)
        return float(np.mean(means >= observed - tol)), f"exact sign-flip test ({2 ** n} flips)"
    rng = np.random.default_rng(PERMUTATION_SEED)
    signs = rng.choice((1.0, -1.0), size=(N_RESAMPLES, n))
    means = np.abs(signs @ d / n)
    # +1 in both: the observed flip is one of the possible ones, so p is never 0.
    p = (np.sum(means >= observed - tol) + 1) / (N_RESAMPLES + 1)
    return float(p), f"Monte-Carlo sign-flip test ({N_RESAMPLES} flips, seed {PERMUTATION_SEED})"


def paired(a: Mapping, b: Mapping, confidence: float = 0.95) -> Paired:
    """Compare runs ``a`` and ``b`` keyed by seed (``{seed: final metric or None}``).

    Raises ValueError for seeds present on one side only, or fewer than 2 complete pairs.
    A value of None/NaN means that run diverged (see :class:`Paired`).
    """
    _check_confidence(confidence)
    if not isinstance(a, Mapping) or not isinstance(b, Mapping):
        raise TypeError("paired() takes two dicts {seed: value}; key the runs by seed so pairs match")
    only_a, only_b = sorted(set(a) - set(b), key=str), sorted(set(b) - set(a), key=str)
    if only_a or only_b:
        raise ValueError(f"unmatched seeds: {only_a} only in the first set, {only_b} only in the second; "
                         "compare runs trained with the same seeds")
    seeds = sorted(a, key=lambda s: (str(type(s)), s))
    diverged = [s for s in seeds if _is_missing(a[s]) or _is_missing(b[s])]
    complete = [s for s in seeds if s not in diverged]
    if len(complete) < 2:
        raise ValueError(f"a paired comparison needs at least 2 complete pairs, got {len(complete)} "
                         f"({len(diverged)} of {len(seeds)} pairs have a diverged run)")
    d = np.array([float(a[s]) - float(b[s]) for s in complete])
    n = len(d)
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    half = _st.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n)
    p, method = sign_flip_p(d)
    return Paired(n=n, diffs=d.tolist(), seeds=complete, mean=mean, sd=sd, ci_low=float(mean - half), ci_high=float(mean + half),
                  p_value=p, method=method, confidence=confidence,
                  n_diverged_a=sum(_is_missing(a[s]) for s in seeds),
                  n_diverged_b=sum(_is_missing(b[s]) for s in seeds), diverged_seeds=diverged)


def paired_runs(a_runs: Sequence, b_runs: Sequence, phase: str = "eval", metric: str = "accuracy",
                confidence: float = 0.95) -> Paired:
    """:func:`paired` on two lists of runs (``experiment.Run`` or their dicts) by seed, final epoch.

    A run that stopped early enters as diverged. Runs of different lengths (not diverged)
    raise: comparing epoch 3 of one with epoch 5 of another is not a paired comparison.
    """
    def finals(runs):
        out, epochs = {}, {}
        for r in runs:
            seed = r["seed"] if isinstance(r, Mapping) else r.seed
            history = r["history"] if isinstance(r, Mapping) else r.history
            stopped = r.get("stopped") if isinstance(r, Mapping) else r.stopped
            rows = [row for row in history if row["phase"] == phase]
            if seed in out:
                raise ValueError(f"seed {seed} appears twice in one set of runs")
            out[seed] = None if stopped or not rows else rows[-1][metric]
            if not stopped and rows:
                epochs[seed] = rows[-1]["epoch"]
        return out, epochs

    fa, ea = finals(a_runs)
    fb, eb = finals(b_runs)
    last = set(ea.values()) | set(eb.values())
    if len(last) > 1:
        raise ValueError(f"mismatched epochs: the finished runs end at epochs {sorted(last)}; "
                         "compare runs trained for the same number of epochs")
    return paired(fa, fb, confidence)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values, in the input order (NaN stays NaN and is not counted)."""
    p = np.asarray([math.nan if v is None else float(v) for v in pvalues], dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1], got {list(pvalues)}")
    out = np.full(len(p), math.nan)
    idx = [i for i in np.argsort(p, kind="stable") if not math.isnan(p[i])]
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def verdicts(claims: Sequence[Mapping], alpha: float = 0.05, tie_margin: float = 0.01,
             scale: float = 100.0, unit: str = "points") -> list[dict]:
    """A verdict per claim "a > b" from paired tests with Holm correction over the family.

    Each claim is ``dict(claim=str, a={seed: value}, b={seed: value})`` (or ``paired=`` a
    ready :class:`Paired`); the claimed direction is a above b (pass ``direction=-1`` for
    "a below b"). Verdict: "holds" when the Holm-adjusted p < ``alpha`` and the mean
    difference has the claimed sign, "reversed" when significant the other way, else
    "not resolved". An unresolved claim is still bounded by its CI: if the CI lies
    within ±``tie_margin`` (in the metric's units; 0.01 = 1 point for accuracy) the bound
    reads "tie: any difference is smaller than X points", otherwise "open: the difference
    lies between L and H points". ``effect`` and the CI are ``scale`` times the metric
    (points for accuracy).

    A claim with ``kind="tie"`` claims "a ≈ b" instead. It "holds" when the whole CI lies
    within ±``tie_margin`` (an equivalence test: a difference that small may still be
    significant, and the row's ``p_holm`` shows it), "does not hold" when the difference is
    significant and the CI reaches past the margin, and is otherwise "not resolved".
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    if not tie_margin >= 0:
        raise ValueError(f"tie_margin must be >= 0, got {tie_margin}")
    tests = []
    for c in claims:
        if "claim" not in c:
            raise ValueError(f"each claim needs a 'claim' text, got keys {sorted(c)}")
        t = c["paired"] if "paired" in c else paired(c["a"], c["b"])
        direction = c.get("direction", 1)
        if direction not in (1, -1):
            raise ValueError(f"direction must be 1 (a above b) or -1 (a below b), got {direction!r}")
        if c.get("kind", "order") not in ("order", "tie"):
            raise ValueError(f"kind must be 'order' (a > b) or 'tie' (a ≈ b), got {c.get('kind')!r}")
        tests.append((c, t, direction))
    adjusted = holm([t.p_value for _, t, _ in tests])
    out = []
    for (c, t, direction), p_holm in zip(tests, adjusted):
        significant = p_holm < alpha
        within = max(abs(t.ci_low), abs(t.ci_high)) <= tie_margin
        if c.get("kind") == "tie":
            verdict = "holds" if within else "does not hold" if significant else "not resolved"
        elif significant and t.mean * direction > 0:
            verdict = "holds"
        elif significant and t.mean * direction < 0:
            verdict = "reversed"
        else:
            verdict = "not resolved"
        bound = ""
        if verdict == "not resolved":
            widest = max(abs(t.ci_low), abs(t.ci_high))
            if within:
                bound = f"tie: any difference is smaller than {widest * scale:.1f} {unit}"
            else:
                bound = f"open: the difference lies between {t.ci_low * scale:.1f} and {t.ci_high * scale:.1f} {unit}"
        out.append(dict(claim=c["claim"], kind=c.get("kind", "order"), effect=t.mean * scale, ci=(t.ci_low * scale, t.ci_high * scale),
                        p=t.p_value, p_holm=p_holm, verdict=verdict, bound=bound, n=t.n,
                        n_diverged=t.n_diverged, diverged=(t.n_diverged_a, t.n_diverged_b), method=t.method))
    return out
