"""lsuvlib.stats: summaries over seeds, paired verdicts (Bonferroni t intervals), sources, checks of saved rows."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs
from scipy import stats as st

from lsuvlib.stats import (MIN_PAIRS, VERDICT_FIELDS, aggregate, check_verdict, fmt_ci, fmt_mean_sd,
                           min_detectable_effect, paired, paired_runs, pairs_needed, prediction_interval, summarise,
                           verdict_for, verdicts, versus_source)

from history_rows import rows

# ============================================================================= summarise


def test_summarise_known_numbers():
    s = summarise([1, 2, 3, 4, 5])
    assert (s["n"], s["mean"], s["n_diverged"]) == (5, 3, 0)
    assert s["sd"] == pytest.approx(math.sqrt(2.5), rel=1e-12)
    half = st.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    assert half == pytest.approx(1.9632, abs=1e-4)
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((3 - half, 3 + half), rel=1e-12)


def test_summarise_other_confidence_and_inputs():
    xs = [0.91, 0.93, 0.92, 0.95]
    s95, s90 = summarise(xs), summarise(xs, confidence=0.90)
    assert s90["ci_high"] - s90["mean"] == pytest.approx(st.t.ppf(0.95, 3) * s90["sd"] / 2)
    assert s90["ci_high"] - s90["ci_low"] < s95["ci_high"] - s95["ci_low"]
    assert summarise(torch.tensor([1.0, 3.0]))["sd"] == pytest.approx(math.sqrt(2))
    assert summarise([0.5, 0.5, 0.5])["ci_low"] == summarise([0.5, 0.5, 0.5])["ci_high"] == 0.5
    one = summarise([0.93])
    assert one["n"] == 1 and all(math.isnan(one[k]) for k in ("sd", "ci_low", "ci_high"))
    with pytest.raises(ValueError, match="empty"):
        summarise([])
    with pytest.raises(ValueError, match="confidence"):
        summarise(xs, confidence=95)


def test_summarise_bounds_clip_but_never_mix_units():
    """Issue 21 #6: percentages against fraction bounds gave mean 96 and the interval 93.5 to 1."""
    with pytest.raises(ValueError, match=r"within bounds \(0, 1\), got \[95.0, 97.0, 96.0\]: percentages given for "
                                         r"a fraction\? divide them by 100"):
        summarise([95.0, 97.0, 96.0], bounds=(0, 1))
    with pytest.raises(ValueError, match="check the metric and the bounds"):
        summarise([-0.1, 0.5], bounds=(0, 1))
    with pytest.raises(ValueError, match="low < high"):
        summarise([0.1, 0.2], bounds=(1, 0))
    raw, clipped = summarise([0.99, 1.0, 0.95]), summarise([0.99, 1.0, 0.95], bounds=(0, 1))
    assert raw["ci_high"] > 1 and clipped["ci_high"] == 1.0 and clipped["ci_low"] == raw["ci_low"]


def test_summarise_never_returns_a_silent_nan_for_a_diverged_run():
    with pytest.raises(ValueError, match=r"1 of 3 values are None or NaN \(diverged runs\); pass chance="):
        summarise([0.9, math.nan, 0.8])
    with pytest.raises(ValueError, match="chance="):
        summarise([0.9, None, 0.8], bounds=(0, 1))
    s = summarise([0.9, None, 0.8, math.nan, 0.7], chance=0.1)  # over all 5 seeds
    assert s["n"] == 5 and s["n_diverged"] == 2 and s["mean"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.2) / 5)


def test_fmt_mean_sd_names_diverged_runs_and_what_the_mean_is_over():
    assert fmt_mean_sd(summarise([0.93, 0.95]), scale=100) == "94.0 ± 1.4"
    assert fmt_mean_sd(summarise([0.93]), scale=100, digits=2) == "93.00"
    assert fmt_mean_sd(summarise([0.9, None, 0.8], chance=0.1), scale=100) == \
        "60.0 ± 43.6 (1 of 3 runs diverged, counted at chance)"
    assert fmt_mean_sd(dict(n=0, mean=None, sd=None)) == "no run finished"


def test_fmt_ci_formats_and_marks_undefined_intervals():
    assert fmt_ci(summarise([1.0, 2.0, 3.0])) == "-0.484–4.484"
    assert fmt_ci(summarise([1.0])) == "–"
    assert fmt_ci(dict(ci_low=None, ci_high=None)) == "–"  # null from a results file


# ============================================================================= aggregate


def test_aggregate_aligns_epochs_and_counts_an_early_stop_at_chance():
    h1, h2, h3 = rows([0.1, 0.5, 0.9]), rows([0.3, 0.7, 0.8]), rows([0.2, 0.6])  # the last run stopped early
    random.Random(0).shuffle(h2)  # row order must not matter
    with pytest.raises(ValueError, match="chance="):
        aggregate([h1, h2, h3])
    agg = aggregate([h1, h2, h3], chance=0.1)
    assert agg["epoch"] == [0, 1, 2] and agg["n"] == [3, 3, 3] and agg["n_diverged"] == [0, 0, 1]
    assert agg["mean"] == pytest.approx([0.2, 0.6, 0.6])
    assert agg["ci_low"][2] == pytest.approx(summarise([0.9, 0.8, 0.1])["ci_low"])


def test_aggregate_counts_an_epoch_with_a_non_finite_loss_as_diverged():
    h1 = rows([0.5, 0.6], losses=[2.0, 1.0])
    h2 = rows([0.5, 0.11], losses=[4.0, math.nan])
    assert aggregate([h1, h2], chance=0.1)["mean"] == pytest.approx([0.5, 0.35])
    assert aggregate([h1, h2], metric="loss", chance=0.0)["mean"][0] == 3.0
    assert aggregate([]) == {k: [] for k in ("epoch", "n", "mean", "sd", "ci_low", "ci_high", "n_diverged")}


# ============================================================================= paired comparisons

A = [0.91, 0.88, 0.95, 0.90, 0.86, 0.93, 0.89, 0.92]
B = [0.85, 0.87, 0.90, 0.84, 0.86, 0.88, 0.80, 0.91]


def by_seed(values, base=0):
    return {base + i: v for i, v in enumerate(values)}


@pytest.mark.parametrize("m", [1, 3, 12])
def test_the_interval_is_scipys_paired_t_interval_at_the_bonferroni_level(m):
    p = paired(by_seed(A), by_seed(B))
    d = np.subtract(A, B)
    assert p.n == 8 and p.diffs == pytest.approx(d.tolist()) and p.seeds == list(range(8))
    assert p.mean == pytest.approx(d.mean()) and p.sd == pytest.approx(d.std(ddof=1))
    ci = st.ttest_rel(A, B).confidence_interval(1 - 0.05 / m)
    assert p.interval(m) == pytest.approx((ci.low, ci.high), rel=1e-9)
    assert (p.interval(m)[1] - p.interval(m)[0]) / 2 == pytest.approx(min_detectable_effect(p.sd, 8, m))


def test_paired_errors():
    with pytest.raises(ValueError, match=r"unmatched seeds: \[9\] only in the first"):
        paired({0: 0.1, 1: 0.2, 9: 0.3}, {0: 0.1, 1: 0.3})
    with pytest.raises(ValueError, match="no seeds"):
        paired({}, {})
    with pytest.raises(TypeError, match="key the runs by seed"):
        paired([0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match=r"paired, second set: 1 of 2 values are None or NaN .* chance="):
        paired({0: 0.1, 1: 0.2}, {0: 0.2, 1: None})


def test_a_diverged_run_counts_at_chance_and_is_counted_per_side():
    a = {0: 0.9, 1: None, 2: 0.92, 3: 0.91}
    b = {0: 0.8, 1: 0.85, 2: math.nan, 3: None}
    p = paired(a, b, chance=0.1)
    assert p.n == 4 and (p.n_diverged_a, p.n_diverged_b) == (1, 2)
    assert p.diffs == pytest.approx([0.1, 0.1 - 0.85, 0.92 - 0.1, 0.91 - 0.1])
    assert p.n_a_higher == 3
    row = verdicts([dict(claim="a > b", a=a, b=b)], chance=0.1)[0]
    assert (row["n"], row["n_diverged_a"], row["n_diverged_b"]) == (4, 1, 2)


def test_two_runs_at_or_below_chance_are_a_tie_not_a_win():
    """A diverged run counted at chance (10%) does not beat a stuck run at 9.7%, nor one at 8% another at 9%."""
    a = {0: None, 1: 0.08, 2: 0.60, 3: 0.11, 4: None}
    b = {0: 0.097, 1: 0.09, 2: 0.097, 3: None, 4: None}
    p = paired(a, b, chance=0.1)
    assert p.diffs == pytest.approx([0.0, 0.0, 0.60 - 0.097, 0.11 - 0.1, 0.0])  # 11% is above chance: a win
    assert p.n_a_higher == 2 and (p.n_diverged_a, p.n_diverged_b) == (2, 2)
    row = verdicts([dict(claim="a > b", a=a, b=b)], chance=0.1)[0]
    assert row["n_a_higher"] == 2 and row["effect"] == pytest.approx(100 * (0.60 - 0.097 + 0.01) / 5)
    assert check_verdict(row) is None
    assert paired({0: 0.08}, {0: 0.09}).diffs == pytest.approx([-0.01])  # without chance, no floor is known


def run(seed, accs, stopped=None, losses=None):
    return dict(seed=seed, stopped=stopped, history=[dict(epoch=e, phase="eval", loss=(losses or [0.0] * 9)[e],
                                                          accuracy=a, seconds=0.0) for e, a in enumerate(accs)])


def test_paired_runs_at_the_last_or_a_given_epoch():
    a = [run(s, [0.5 + 0.01 * s, 0.9 + 0.01 * s]) for s in range(3)]
    b = [run(s, [0.5, 0.8 + 0.02 * s]) for s in range(3)]
    assert paired_runs(a, b).diffs == pytest.approx([0.1, 0.09, 0.08])
    assert paired_runs(a, b, epoch=0).diffs == pytest.approx([0.0, 0.01, 0.02])
    with pytest.raises(ValueError, match="mismatched epochs"):
        paired_runs(a, [run(s, [0.5, 0.8, 0.85]) for s in range(3)])
    with pytest.raises(ValueError, match="appears twice"):
        paired_runs(a + a[:1], b)


def test_paired_runs_takes_a_stopped_or_non_finite_run_as_diverged():
    a = [run(s, [0.5, 0.9]) for s in range(3)]
    b = [run(0, [0.3], stopped="diverged"), run(1, [0.4, 0.42], losses=[1.0, None]), run(2, [0.5, 0.8])]
    with pytest.raises(ValueError, match="chance="):
        paired_runs(a, b)
    p = paired_runs(a, b, chance=0.1)
    assert p.diffs == pytest.approx([0.8, 0.8, 0.1]) and p.n_diverged_b == 2
    assert paired_runs(a, b, chance=0.1, epoch=0).diffs == pytest.approx([0.2, 0.1, 0.0])  # fine in epoch 0


# ============================================================================= the verdict rule


@pytest.mark.parametrize("kind, low, high, expected", [
    ("order", 0.1, 3.0, "holds"),
    ("order", -3.0, -0.1, "reversed"),
    ("order", -0.5, 0.8, "tie"),
    ("order", -1.0, 1.0, "tie"),            # the margin's ends are inside
    ("order", -0.5, 1.2, "not resolved"),
    ("order", 0.2, 0.8, "holds"),            # above 0 and inside the margin: the ordering is resolved
    ("order", None, None, "not resolved"),   # too few pairs
    ("tie", -0.5, 0.8, "holds"),
    ("tie", 1.1, 3.0, "does not hold"),
    ("tie", -3.0, -1.01, "does not hold"),
    ("tie", 0.5, 1.5, "not resolved"),
    ("tie", None, None, "not resolved"),
])
def test_verdict_for(kind, low, high, expected):
    assert verdict_for(kind, low, high, margin=1.0) == expected


def test_verdict_for_rejects_an_unknown_kind():
    with pytest.raises(ValueError, match="kind must be 'order'"):
        verdict_for("same", 0, 1, 1)


def shifted(base, shifts):
    return {s: base[s] + d for s, d in zip(base, shifts)}


BASE = {s: 0.80 + 0.01 * (s % 3) for s in range(10)}


def test_verdicts_on_constructed_cases():
    better = shifted(BASE, [0.05 + 0.002 * s for s in range(10)])
    tied = shifted(BASE, [0.001 if s % 2 else -0.001 for s in range(10)])
    wide = shifted(BASE, [0.2 if s % 2 else -0.19 for s in range(10)])
    out = verdicts([dict(claim="better > base", a=better, b=BASE), dict(claim="base > better", a=BASE, b=better),
                    dict(claim="tied > base", a=tied, b=BASE), dict(claim="wide > base", a=wide, b=BASE),
                    dict(claim="tied ≈ base", a=tied, b=BASE, kind="tie"),
                    dict(claim="better ≈ base", a=better, b=BASE, kind="tie"),
                    dict(claim="wide ≈ base", a=wide, b=BASE, kind="tie")])
    assert [r["verdict"] for r in out] == ["holds", "reversed", "tie", "not resolved",
                                           "holds", "does not hold", "not resolved"]
    assert out[0]["effect"] == pytest.approx(5.9) and out[0]["n_a_higher"] == 10 and out[1]["n_a_higher"] == 0
    for r in out:
        assert set(r) == set(VERDICT_FIELDS) and r["m"] == 7 and r["margin"] == 1.0 and r["confidence"] == 0.95
        assert check_verdict(r) is None


def test_five_seeds_all_better_by_3_to_5_points_hold():
    """Issue 18: +4.2 points (+3.0 to +5.4), 5 of 5 seeds better, read "not resolved" under the sign-flip test."""
    a = shifted({s: 0.8 for s in range(5)}, [0.030, 0.040, 0.042, 0.046, 0.052])
    row = verdicts([dict(claim="a > b", a=a, b={s: 0.8 for s in range(5)})])[0]
    assert row["effect"] == pytest.approx(4.2) and row["ci_low"] > 3 and row["verdict"] == "holds"


def test_one_far_seed_widens_the_interval_and_leaves_the_claim_open():
    """Issue 18: "+1.15 points, 95% CI -0.70 to +3.00, holds"; a verdict now never contradicts its interval."""
    diffs = [-0.29, 0.26, 0.29, 8.53, 0.35, 0.86, 0.42, 0.14, 0.53, 0.38]  # points; sign-flip p < 0.05
    row = verdicts([dict(claim="a > b", a=shifted(BASE, [d / 100 for d in diffs]), b=BASE)])[0]
    assert row["ci_low"] < 0 < row["ci_high"] and row["verdict"] == "not resolved"


def test_bonferroni_is_what_turns_a_marginal_claim_unresolved():
    a = shifted(BASE, [0.002 + 0.01 * (s % 2) for s in range(6)])
    b = {s: BASE[s] for s in range(6)}
    alone = verdicts([dict(claim="a > b", a=a, b=b)])[0]
    family = verdicts([dict(claim=f"a > b #{i}", a=a, b=b) for i in range(12)])[0]
    assert alone["verdict"] == "holds" and family["verdict"] == "not resolved" and family["m"] == 12
    assert family["ci_high"] - family["ci_low"] > alone["ci_high"] - alone["ci_low"]


def test_fewer_than_three_pairs_give_no_interval():
    out = verdicts([dict(claim="a > b", a={0: 0.9, 1: 0.95}, b={0: 0.1, 1: 0.12})])[0]
    assert MIN_PAIRS == 3 and out["n"] == 2 and out["ci_low"] is None and out["ci_high"] is None
    assert out["verdict"] == "not resolved" and check_verdict(out) is None
    assert verdicts([dict(claim="x", a={0: 0.9}, b={0: 0.1})])[0]["sd"] is None


def test_verdicts_reject_bad_arguments():
    with pytest.raises(ValueError, match="got keys .*'direction'"):
        verdicts([dict(claim="x", a=BASE, b=BASE, direction=-1)])
    with pytest.raises(ValueError, match="got keys"):
        verdicts([dict(a=BASE, b=BASE)])
    with pytest.raises(ValueError, match="kind must be"):
        verdicts([dict(claim="x", a=BASE, b=BASE, kind="same")])
    with pytest.raises(ValueError, match="tie_margin"):
        verdicts([dict(claim="x", a=BASE, b=BASE)], tie_margin=-1)
    with pytest.raises(ValueError, match="alpha"):
        verdicts([dict(claim="x", a=BASE, b=BASE)], alpha=5)


@settings(max_examples=60, deadline=None)
@given(diffs=hs.lists(hs.floats(-0.2, 0.2), min_size=1, max_size=12), m=hs.integers(1, 15),
       kind=hs.sampled_from(["order", "tie"]))
def test_every_verdict_agrees_with_its_interval(diffs, m, kind):
    b = {s: 0.5 for s in range(len(diffs))}
    rows_ = verdicts([dict(claim=f"c{i}", a=shifted(b, diffs), b=b, kind=kind) for i in range(m)])
    for r in rows_:
        assert check_verdict(r) is None
        assert r["verdict"] == verdict_for(kind, r["ci_low"], r["ci_high"], r["margin"])


# ============================================================================= what a table can resolve


def test_min_detectable_effect_and_pairs_needed():
    assert min_detectable_effect(1.0, 10, 12) == pytest.approx(st.t.ppf(1 - 0.05 / 24, 9) / math.sqrt(10))
    n = pairs_needed(1.0, 1.5, m=12)
    assert min_detectable_effect(1.5, n, 12) < 1.0 <= min_detectable_effect(1.5, n - 1, 12)
    assert pairs_needed(1.0, 0.0) == MIN_PAIRS
    with pytest.raises(ValueError, match="at least 3 pairs"):
        min_detectable_effect(1.0, 2)
    with pytest.raises(ValueError, match="m must be"):
        min_detectable_effect(1.0, 5, 0)
    with pytest.raises(ValueError, match="effect must be > 0"):
        pairs_needed(0.0, 1.0)
    with pytest.raises(ValueError, match="more than 50 pairs"):
        pairs_needed(0.01, 5.0, most=50)


# ============================================================================= against a source


def test_prediction_interval_formula():
    xs = [0.90, 0.92, 0.95, 0.91, 0.93]
    half = st.t.ppf(0.975, 4) * np.std(xs, ddof=1) * math.sqrt(1 + 1 / 5)
    assert prediction_interval(xs) == pytest.approx((np.mean(xs) - half, np.mean(xs) + half), rel=1e-12)
    assert prediction_interval([0.9, None, 0.92], chance=0.1)[0] < 0.1
    with pytest.raises(ValueError, match="at least 2"):
        prediction_interval([0.9])
    with pytest.raises(ValueError, match="chance="):
        prediction_interval([0.9, math.nan, 0.9])


def test_versus_source_verdicts():
    xs = [0.90, 0.92, 0.95, 0.91, 0.93]
    inside = versus_source(xs, 0.94, same_dataset=True)
    assert inside["verdict"] == "consistent with the source" and inside["consistent"] is True
    outside = versus_source(xs, 0.80, same_dataset=True)
    assert outside["verdict"] == "not consistent with the source" and outside["consistent"] is False
    assert check_verdict(inside) is None and check_verdict(outside) is None
    with pytest.raises(ValueError, match="source_value"):
        versus_source(xs, None, same_dataset=True)
    with pytest.raises(ValueError, match="percentages"):
        versus_source([90.0, 92.0, 95.0], 94.0, same_dataset=True)


def test_versus_source_gives_no_verdict_on_another_dataset_or_from_too_few_runs():
    stand_in = versus_source([0.90, 0.92, 0.95], 0.94, same_dataset=False)
    assert stand_in["verdict"] == "other dataset: no verdict" and stand_in["consistent"] is None
    assert stand_in["low"] < 0.94 < stand_in["high"]  # still shown, as context
    few = versus_source([0.90, 0.92], 0.91, same_dataset=True)
    assert few["verdict"] == "too few runs: no verdict" and few["low"] is None
    assert check_verdict(stand_in) is None and check_verdict(few) is None


def test_a_prediction_interval_that_could_not_fail_is_uninformative():
    """Issue 18: "prediction interval 32.4-100.0 -> consistent with the source"."""
    wide = versus_source([0.95, None, 0.97, 0.96], 0.83, same_dataset=True, chance=0.1)
    assert wide["n"] == 4 and wide["n_diverged"] == 1
    assert wide["verdict"] == "uninformative: the interval is wider than 20 points" and wide["consistent"] is None
    means = versus_source([0.1, 0.5, 0.9], 0.3, same_dataset=True, bounds=None, max_width=0.5)
    assert means["verdict"] == "uninformative: the interval is wider than 0.5"


# ============================================================================= checking saved rows


def good_row(**changes):
    row = verdicts([dict(claim="loop > mean_std, epoch 1", a=shifted(BASE, [0.01 + 0.002 * (s % 4) for s in range(10)]),
                         b=BASE)] * 12)[0]
    return {**row, **changes}


def test_check_verdict_accepts_rows_of_verdicts():
    assert check_verdict(good_row()) is None


def test_check_verdict_names_a_verdict_its_interval_contradicts():
    problem = check_verdict(good_row(verdict="not resolved"))
    assert problem == "verdict 'not resolved', but its interval gives 'holds'"


def test_check_verdict_names_an_interval_that_is_not_the_procedures():
    r = good_row()
    unadjusted = st.t.ppf(0.975, r["n"] - 1) * r["sd"] / math.sqrt(r["n"])  # a plain 95% interval in a family of 12
    problem = check_verdict({**r, "ci_low": r["effect"] - unadjusted, "ci_high": r["effect"] + unadjusted})
    assert problem.startswith("the interval") and "is not the adjusted t interval" in problem


def test_check_verdict_rejects_an_interval_from_two_pairs():
    """Issue 18: a paired interval of -201.3 to +236.4 points from 2 pairs."""
    problem = check_verdict(good_row(n=2, ci_low=-201.3, ci_high=236.4, verdict="not resolved"))
    assert "an interval from 2 pairs (fewer than 3) is shown" in problem


def test_check_verdict_on_old_and_malformed_rows():
    old = dict(claim="loop > mean_std, epoch 1", kind="order", effect=1.15, ci_low=-0.70, ci_high=3.00,
               p=0.002, p_holm=0.0234, verdict="holds")  # chapter 7's rows before this procedure
    assert check_verdict(old).startswith("missing fields ['sd', 'margin', 'n', 'n_a_higher'")
    assert check_verdict(good_row(kind="same")).startswith("kind must be one of")
    assert check_verdict(good_row(sd="wide")).startswith("malformed row")
    assert "do not fit 10 pairs" in check_verdict(good_row(n_diverged_a=11))


def test_check_verdict_on_source_rows():
    row = versus_source([0.90, 0.92, 0.95, 0.91, 0.93], 0.94, same_dataset=True)
    assert check_verdict({**row, "same_dataset": False}) == \
        "verdict 'consistent with the source', but its interval gives 'other dataset: no verdict'"
    wide = check_verdict({**row, "low": 0.3, "high": 1.0})
    assert wide.endswith("'uninformative: the interval is wider than 20 points'")
    assert check_verdict({**row, "n": 2}) == "an interval from 2 runs (fewer than 3) is shown"
    assert check_verdict({"kind": "source", "verdict": "consistent with the source"}).startswith("missing fields")
