"""lsuvlib.stats: summaries over seeds, prediction intervals, paired comparisons, Holm, verdicts."""
from __future__ import annotations

import math
import random

import numpy as np
import torch
import pytest
from scipy import stats as st

from lsuvlib.stats import (aggregate, fmt_mean_sd, holm, intervals_overlap, paired, paired_runs,
                           prediction_interval, sign_flip_p, summarise, verdicts, versus_source)

from history_rows import rows

# ============================================================================= summarise


def test_summarise_known_numbers():
    s = summarise([1, 2, 3, 4, 5])
    assert s["n"] == 5
    assert s["mean"] == 3
    assert s["sd"] == pytest.approx(math.sqrt(2.5), rel=1e-12)
    half = st.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    assert half == pytest.approx(1.963, abs=5e-4)
    assert s["ci_low"] == pytest.approx(3 - half, rel=1e-12) and s["ci_high"] == pytest.approx(3 + half, rel=1e-12)
    assert s["ci_high"] - s["mean"] == pytest.approx(1.9632, abs=1e-4)


def test_summarise_other_confidence_and_order_independence():
    xs = [0.91, 0.93, 0.92, 0.95]
    s95, s90 = summarise(xs), summarise(xs, confidence=0.90)
    assert s90["ci_high"] - s90["ci_low"] < s95["ci_high"] - s95["ci_low"]
    assert s90["ci_high"] - s90["mean"] == pytest.approx(st.t.ppf(0.95, 3) * s90["sd"] / 2)
    shuffled = summarise(list(reversed(xs)))
    assert shuffled["mean"] == pytest.approx(s95["mean"]) and shuffled["sd"] == pytest.approx(s95["sd"])


def test_summarise_accepts_numpy_and_torch_numbers():
    s = summarise(torch.tensor([1.0, 3.0]).tolist())
    assert s["mean"] == 2 and s["sd"] == pytest.approx(math.sqrt(2))
    assert summarise(torch.tensor([1.0, 3.0]))["mean"] == 2


def test_summarise_identical_values_has_zero_width():
    s = summarise([0.5, 0.5, 0.5])
    assert s["sd"] == 0 and s["ci_low"] == s["ci_high"] == 0.5


def test_summarise_one_value_has_nan_spread():
    s = summarise([0.93])
    assert s["n"] == 1 and s["mean"] == 0.93
    assert all(math.isnan(s[k]) for k in ("sd", "ci_low", "ci_high"))


def test_summarise_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        summarise([])


def test_fmt_mean_sd():
    assert fmt_mean_sd(summarise([0.93, 0.95]), scale=100) == "94.0 ± 1.4"
    assert fmt_mean_sd(summarise([0.93]), scale=100, digits=2) == "93.00"
    assert fmt_mean_sd(summarise([1, 2, 3, 4, 5]), digits=3) == "3.000 ± 1.581"


# ============================================================================= aggregate




def test_aggregate_aligns_epochs_across_runs():
    h1, h2, h3 = rows([0.1, 0.5, 0.9]), rows([0.3, 0.7, 0.8]), rows([0.2, 0.6])  # the last run stopped early
    random.Random(0).shuffle(h2)  # row order must not matter
    agg = aggregate([h1, h2, h3])
    assert agg["epoch"] == [0, 1, 2]
    assert agg["n"] == [3, 3, 2]
    assert agg["mean"] == pytest.approx([0.2, 0.6, 0.85])
    s = summarise([0.9, 0.8])
    assert agg["sd"][2] == pytest.approx(s["sd"])
    assert agg["ci_low"][2] == pytest.approx(s["ci_low"]) and agg["ci_high"][2] == pytest.approx(s["ci_high"])
    assert set(agg) == {"epoch", "n", "mean", "sd", "ci_low", "ci_high"}
    assert all(len(v) == 3 for v in agg.values())


def test_aggregate_phase_and_metric():
    h1 = rows([0.5, 0.6], losses=[2.0, 1.0])
    h2 = rows([0.5, 0.6], losses=[4.0, 3.0])
    assert aggregate([h1, h2], metric="loss")["mean"] == [3.0, 2.0]
    assert aggregate([h1, h2], phase="train")["mean"] == [0.0, 0.0]
    single = aggregate([h1])
    assert single["n"] == [1, 1] and all(math.isnan(v) for v in single["sd"])


def test_aggregate_of_nothing_is_empty():
    assert aggregate([]) == {k: [] for k in ("epoch", "n", "mean", "sd", "ci_low", "ci_high")}


# ============================================================================= intervals_overlap


def ci(lo, hi):
    return dict(ci_low=lo, ci_high=hi)


@pytest.mark.parametrize("a, b, expected", [
    (ci(0.0, 1.0), ci(0.5, 2.0), True),
    (ci(0.0, 1.0), ci(0.2, 0.3), True),      # one inside the other
    (ci(0.0, 1.0), ci(1.0, 2.0), True),      # touching
    (ci(0.0, 1.0), ci(1.01, 2.0), False),
    (ci(2.0, 3.0), ci(0.0, 1.0), False),
    (ci(math.nan, math.nan), ci(5.0, 6.0), True),  # unknown width: cannot call them different
])
def test_intervals_overlap(a, b, expected):
    assert intervals_overlap(a, b) is expected
    assert intervals_overlap(b, a) is expected


def test_intervals_overlap_on_summaries():
    low, high = summarise([0.10, 0.11, 0.12]), summarise([0.90, 0.91, 0.92])
    assert not intervals_overlap(low, high)
    assert intervals_overlap(summarise([0.1, 0.5, 0.9]), summarise([0.4, 0.6, 0.5]))




def test_fmt_ci_formats_and_marks_undefined_intervals():
    from lsuvlib.stats import fmt_ci

    assert fmt_ci(summarise([1.0, 2.0, 3.0])) == "-0.484–4.484"
    assert fmt_ci(summarise([1.0])) == "–"  # NaN in memory
    assert fmt_ci(dict(ci_low=None, ci_high=None)) == "–"  # null from a results file


# ============================================================================= bounds, prediction intervals


def test_summarise_bounds_clip_an_accuracy_interval():
    raw = summarise([0.99, 1.0, 0.95])
    clipped = summarise([0.99, 1.0, 0.95], bounds=(0, 1))
    assert raw["ci_high"] > 1 and clipped["ci_high"] == 1.0 and clipped["ci_low"] == raw["ci_low"]
    assert aggregate([rows([0.99]), rows([1.0]), rows([0.95])], bounds=(0, 1))["ci_high"] == [1.0]
    with pytest.raises(ValueError, match="low < high"):
        summarise([0.1, 0.2], bounds=(1, 0))
    with pytest.raises(ValueError, match="confidence"):
        summarise([0.1, 0.2], confidence=95)


def test_prediction_interval_formula():
    xs = [0.90, 0.92, 0.95, 0.91, 0.93]
    n, m, sd = 5, np.mean(xs), np.std(xs, ddof=1)
    half = st.t.ppf(0.975, n - 1) * sd * math.sqrt(1 + 1 / n)
    assert prediction_interval(xs) == pytest.approx((m - half, m + half), rel=1e-12)
    ci = summarise(xs)
    lo, hi = prediction_interval(xs)
    assert lo < ci["ci_low"] and hi > ci["ci_high"]  # one new run is less certain than the mean
    with pytest.raises(ValueError, match="at least 2"):
        prediction_interval([0.9])
    with pytest.raises(ValueError, match="finite"):
        prediction_interval([0.9, math.nan])


def test_versus_source_verdicts():
    xs = [0.90, 0.92, 0.95, 0.91, 0.93]
    inside = versus_source(xs, 0.94)
    assert inside["consistent"] and inside["verdict"] == "consistent with the source"
    outside = versus_source(xs, 0.80)
    assert not outside["consistent"] and outside["verdict"] == "not consistent with the source"
    assert set(inside) == {"low", "high", "consistent", "verdict"}
    with pytest.raises(ValueError, match="source_value"):
        versus_source(xs, None)


# ============================================================================= paired comparisons

A = [0.91, 0.88, 0.95, 0.90, 0.86, 0.93, 0.89, 0.92]
B = [0.85, 0.87, 0.90, 0.84, 0.86, 0.88, 0.80, 0.91]


def by_seed(values, base=0):
    return {base + i: v for i, v in enumerate(values)}


def test_paired_matches_scipy_ttest_rel_and_permutation_test():
    p = paired(by_seed(A), by_seed(B))
    d = np.subtract(A, B)
    assert p.n == 8 and p.diffs == pytest.approx(d.tolist())
    assert p.mean == pytest.approx(d.mean()) and p.sd == pytest.approx(d.std(ddof=1))
    ci = st.ttest_rel(A, B).confidence_interval(0.95)
    assert (p.ci_low, p.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    ref = st.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                              alternative="two-sided")
    assert p.p_value == pytest.approx(ref.pvalue, rel=1e-12) and "exact" in p.method


def test_sign_flip_monte_carlo_for_many_seeds_is_close_to_scipy_and_repeatable():
    rng = np.random.default_rng(1)
    d = rng.normal(0.01, 0.05, size=30)
    p1, method = sign_flip_p(d)
    assert "Monte-Carlo" in method and sign_flip_p(d) == (p1, method)  # fixed seed
    ref = st.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=20000,
                              alternative="two-sided", random_state=0).pvalue
    assert p1 == pytest.approx(ref, abs=0.02)


def test_paired_errors():
    with pytest.raises(ValueError, match=r"unmatched seeds: \[9\] only in the first"):
        paired({0: 0.1, 1: 0.2, 9: 0.3}, {0: 0.1, 1: 0.3})
    with pytest.raises(ValueError, match="at least 2 complete pairs"):
        paired({0: 0.1}, {0: 0.2})
    with pytest.raises(ValueError, match="at least 2 complete pairs, got 1 .1 of 2 pairs have a diverged run"):
        paired({0: 0.1, 1: None}, {0: 0.2, 1: 0.3})
    with pytest.raises(TypeError, match="key the runs by seed"):
        paired([0.1, 0.2], [0.3, 0.4])


def test_diverged_runs_are_counted_not_hidden():
    a = {0: 0.9, 1: None, 2: 0.92, 3: 0.91}
    b = {0: 0.8, 1: 0.85, 2: math.nan, 3: 0.82}
    p = paired(a, b)
    assert p.n == 2 and p.seeds == [0, 3] and p.diverged_seeds == [1, 2]
    assert (p.n_diverged_a, p.n_diverged_b, p.n_diverged) == (1, 1, 2)
    row = verdicts([dict(claim="a > b", a=a, b=b)])[0]
    assert row["n_diverged"] == 2 and row["diverged"] == (1, 1)


def run(seed, accs, stopped=None):
    return dict(seed=seed, stopped=stopped,
                history=[dict(epoch=e, phase="eval", loss=0.0, accuracy=a, seconds=0.0) for e, a in enumerate(accs)])


def test_paired_runs_uses_final_epochs_and_rejects_mismatched_epochs():
    a = [run(s, [0.5, 0.9 + 0.01 * s]) for s in range(3)]
    b = [run(s, [0.5, 0.8 + 0.02 * s]) for s in range(3)]
    p = paired_runs(a, b)
    assert p.diffs == pytest.approx([0.1, 0.09, 0.08])
    with pytest.raises(ValueError, match="mismatched epochs"):
        paired_runs(a, [run(s, [0.5, 0.8, 0.85]) for s in range(3)])
    stopped = [run(0, [0.1], stopped="diverged")] + b[1:]
    assert paired_runs(a, stopped).diverged_seeds == [0]  # a stopped run is shorter, but counted as diverged
    with pytest.raises(ValueError, match="appears twice"):
        paired_runs(a + a[:1], b)


# ============================================================================= Holm and verdicts


def test_holm_against_hand_computation():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    out = holm([0.02, math.nan, 0.04])
    assert out[0] == pytest.approx(0.04) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])


def test_holm_matches_scipy_when_available():
    false_discovery_control = getattr(st, "false_discovery_control", None)
    p = [0.001, 0.02, 0.03, 0.2]
    assert holm(p) == pytest.approx([0.004, 0.06, 0.06, 0.2])
    if false_discovery_control is not None:  # BH >= Holm's step-down never holds the other way round
        assert all(h >= b - 1e-12 for h, b in zip(holm(p), false_discovery_control(p)))


def test_verdicts_on_constructed_cases():
    seeds = range(10)
    base = {s: 0.80 + 0.01 * (s % 3) for s in seeds}
    better = {s: base[s] + 0.05 + 0.002 * s for s in seeds}  # clear difference
    tie = {s: base[s] + (0.001 if s % 2 else -0.001) for s in seeds}  # tiny noise around 0
    wide = {s: base[s] + (0.2 if s % 2 else -0.19) for s in seeds}  # big noise: open
    out = verdicts([dict(claim="better > base", a=better, b=base),
                    dict(claim="base > better", a=base, b=better),
                    dict(claim="tie > base", a=tie, b=base),
                    dict(claim="wide > base", a=wide, b=base),
                    dict(claim="base below better", a=base, b=better, direction=-1)])
    holds, reversed_, tied, open_, below = out
    assert holds["verdict"] == "holds" and holds["effect"] == pytest.approx(5.9) and holds["bound"] == ""
    assert reversed_["verdict"] == "reversed" and reversed_["effect"] == pytest.approx(-5.9)
    assert tied["verdict"] == "not resolved" and tied["bound"].startswith("tie: any difference is smaller than")
    assert open_["verdict"] == "not resolved" and open_["bound"].startswith("open: the difference lies between")
    assert below["verdict"] == "holds"
    assert holds["p_holm"] == pytest.approx(min(1, 5 * holds["p"]), rel=1e-9) or holds["p_holm"] >= holds["p"]
    for row in out:
        assert {"claim", "effect", "ci", "p", "p_holm", "verdict", "bound", "n"} <= set(row)


def test_tie_claims_are_equivalence_tests():
    seeds = range(10)
    base = {s: 0.80 + 0.01 * (s % 3) for s in seeds}
    small_shift = {s: base[s] + 0.003 + 0.0001 * s for s in seeds}   # detectable, but inside ±1 point
    big_shift = {s: base[s] + 0.05 + 0.002 * s for s in seeds}       # detectable and past the margin
    noisy = {s: base[s] + (0.2 if s % 2 else -0.19) for s in seeds}   # neither
    out = verdicts([dict(claim="small ≈ base", a=small_shift, b=base, kind="tie"),
                    dict(claim="big ≈ base", a=big_shift, b=base, kind="tie"),
                    dict(claim="noisy ≈ base", a=noisy, b=base, kind="tie")], tie_margin=0.01)
    small, big, noisy_row = out
    assert small["verdict"] == "holds" and small["p_holm"] < 0.05 and small["kind"] == "tie"
    assert max(abs(x) for x in small["ci"]) <= 1.0
    assert big["verdict"] == "does not hold"
    assert noisy_row["verdict"] == "not resolved" and noisy_row["bound"].startswith("open")
    with pytest.raises(ValueError, match="kind"):
        verdicts([dict(claim="x", a=base, b=base, kind="same")])


def test_tie_margin_decides_tie_or_open():
    a = {s: 0.8 + (0.004 if s % 2 else -0.003) for s in range(6)}
    b = {s: 0.8 for s in range(6)}
    assert verdicts([dict(claim="x", a=a, b=b)], tie_margin=0.05)[0]["bound"].startswith("tie")
    assert verdicts([dict(claim="x", a=a, b=b)], tie_margin=0.0001)[0]["bound"].startswith("open")
    with pytest.raises(ValueError, match="tie_margin"):
        verdicts([dict(claim="x", a=a, b=b)], tie_margin=-1)
    with pytest.raises(ValueError, match="direction"):
        verdicts([dict(claim="x", a=a, b=b, direction=2)])


def test_holm_is_what_turns_a_marginal_claim_unresolved():
    # 5 pairs all positive: exact two-sided sign-flip p = 2/32 = 0.0625 > 0.05 alone already;
    # with 6 pairs p = 2/64 = 0.03125 alone holds, but not within a family of two.
    a = {s: 0.9 + 0.001 * s for s in range(6)}
    b = {s: 0.8 for s in range(6)}
    alone = verdicts([dict(claim="a > b", a=a, b=b)])[0]
    assert alone["p"] == pytest.approx(2 / 64) and alone["verdict"] == "holds"
    family = verdicts([dict(claim="a > b", a=a, b=b), dict(claim="a > b again", a=a, b=b)])
    assert family[0]["p_holm"] == pytest.approx(4 / 64) and family[0]["verdict"] == "not resolved"
