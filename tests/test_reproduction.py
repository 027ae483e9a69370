"""lsuvlib.reproduction (chapter 7): the notebook's claims as one family, its numbers beside our runs, its
"much the same after training" measured; and lsuvlib.experiment.values_at, which chapters 7 and 8 read runs with."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from lsuvlib import reproduction as R
from lsuvlib.experiment import Run, values_at
from lsuvlib.lsuv_report import LSUVReport
from lsuvlib.models import lenet
from lsuvlib.sources import NOTEBOOK
from lsuvlib.stats import check_verdict, min_detectable_effect, pairs_needed, verdicts, versus_source

from history_rows import rows

LAYERS = ["0.0", "1.0", "3.0", "4.0"]  # lenet's weight layers, as reports and measurements name them
READER = ["conv 1 (6 ch)", "conv 2 (16 ch)", "linear 1 (120)", "linear 2 (84)"]


def run(seed, accs, stopped=None, stds=(2.0, 2.0, 2.0, 2.0), means_after=None, variant="std", via="sub",
        converged=True):
    """A finished (or stopped) run with LSUV rows when `means_after` is given, and trained activations."""
    report = None if means_after is None else LSUVReport([
        SimpleNamespace(layer=layer, mean_after=m, std_after=1.0, converged=converged, mean_via=via)
        for layer, m in zip(LAYERS, means_after)], variant=variant, tol=1e-3)
    after = [dict(layer=layer, activation="GeneralRelu", mean=0.5, std=s) for layer, s in zip(LAYERS, stds)]
    return Run(seed, rows(accs), [], 0.0, stopped=stopped, lsuv_report=report, after_training=after, model=lenet())


def test_values_at_gives_each_seed_its_epoch_and_none_from_where_a_run_diverged():
    done = run(0, [0.5, 0.6, 0.7])
    in_training = Run(1, rows([0.4, 0.45]) + [dict(epoch=2, phase="train", loss=math.nan, accuracy=0.1, seconds=0.1)],
                      [], 0.0, stopped="training loss became NaN in epoch 3")
    in_eval = Run(2, rows([0.3, 0.35]), [], 0.0, stopped="eval loss diverged to 1e+03 in epoch 2")
    assert values_at([done, in_training, in_eval], 0) == {0: 0.5, 1: 0.4, 2: 0.3}
    assert values_at([done, in_training, in_eval], 1) == {0: 0.6, 1: 0.45, 2: None}  # eval of epoch 2 ran away
    assert values_at([done, in_training, in_eval]) == {0: 0.7, 1: None, 2: None}  # the last epoch any run reached


def four_variants(epoch1, epoch3=(0.97, 0.97, 0.97, 0.97), seeds=(0, 1, 2)):
    """Runs of none, std, mean_std, loop: `epoch1[k] + 0.01 * seed` after epoch 1, `epoch3[k]` after 3."""
    return {v: [run(s, [a + 0.01 * s, (a + b) / 2, b]) for s in seeds]
            for v, a, b in zip(["none", "std", "mean_std", "loop"], epoch1, epoch3)}


def test_notebook_claims_are_its_twelve_statements_paired_by_seed():
    runs = four_variants([0.84, 0.89, 0.91, 0.93])
    claims = R.notebook_claims(runs, epochs=3, chance=0.1)
    assert [c["claim"] for c in claims] == [
        f"{a} {'>' if kind == 'order' else '≈'} {b}, epoch {e}" for kind, a, b, e in NOTEBOOK["claims"]]
    assert claims[0]["claim"] == "loop > mean_std, epoch 1" and claims[0]["kind"] == "order"
    assert claims[0]["paired"].diffs == pytest.approx([0.02, 0.02, 0.02])
    assert claims[6]["claim"] == "loop ≈ mean_std, epoch 3" and claims[6]["kind"] == "tie"
    assert [c["claim"] for c in R.notebook_claims(runs, epochs=1, chance=0.1)] == [
        c["claim"] for c in claims[:6]]  # one epoch: the epoch-3 statements cannot be tested
    without_std = R.notebook_claims({v: r for v, r in runs.items() if v != "std"}, epochs=3, chance=0.1)
    assert len(without_std) == 12 - 6 and not any("std" in c["claim"].replace(",", "").split() for c in without_std)


def test_notebook_claims_count_a_diverged_run_at_chance():
    runs = four_variants([0.84, 0.89, 0.91, 0.93])
    runs["loop"][1] = Run(1, [], [], 0.0, stopped="training loss became NaN in epoch 1", model=lenet())
    p = R.notebook_claims(runs, epochs=1, chance=0.1)[0]["paired"]
    assert p.n == 3 and p.n_diverged_a == 1 and p.diffs[1] == pytest.approx(0.1 - 0.92)


def test_versus_notebook_judges_only_on_mnist_each_number_against_our_prediction_interval():
    runs = four_variants([0.84, 0.89, 0.91, 0.93], [0.92, 0.95, 0.95, 0.95])
    records, table = R.versus_notebook(runs, "mnist", epochs=3, chance=0.1)
    assert [r["experiment"] for r in records] == [f"{v}, epoch {e}" for e in (1, 3)
                                                 for v in ("none", "std", "mean_std", "loop")]
    assert all(check_verdict(r) is None for r in records)
    ours = [0.84, 0.85, 0.86]  # none after epoch 1, seed by seed
    assert records[0]["verdict"] == versus_source(ours, 0.84, True, chance=0.1)["verdict"]
    assert "| none | 1 | 85.0 ± 1.0 |" in table and "judged accuracies are consistent" in table
    other, _ = R.versus_notebook(runs, "fashion_mnist", epochs=3, chance=0.1)
    assert {r["verdict"] for r in other} == {"other dataset: no verdict"}


def test_versus_notebook_counts_a_diverged_run_at_chance():
    runs = four_variants([0.84, 0.89, 0.91, 0.93])
    runs["none"][2] = Run(2, [], [], 0.0, stopped="training loss became NaN in epoch 1", model=lenet())
    records, table = R.versus_notebook(runs, "mnist", epochs=1, chance=0.1)
    assert records[0]["n"] == 3 and records[0]["n_diverged"] == 1
    assert "(1 of 3 runs diverged, counted at chance)" in table


def test_lsuv_means_sets_the_printed_means_beside_ours_under_reader_names():
    runs = {"std": [run(s, [0.9], means_after=[0.32 + 0.01 * s, 0.41, 0.636, 0.718]) for s in range(3)]}
    records, table = R.lsuv_means(runs, "mnist")
    assert [r["experiment"] for r in records] == [f"std, {name}: mean after LSUV" for name in READER]
    assert all(r["bounds"] is None and r["max_width"] == R.MEAN_WIDTH and check_verdict(r) is None for r in records)
    assert records[0]["verdict"] == versus_source([0.32, 0.33, 0.34], 0.32, True, bounds=None,
                                                  max_width=R.MEAN_WIDTH)["verdict"]
    assert "| std | conv 1 (6 ch) | 0.330 ± 0.010 | 0.320 | 0.280 to 0.380 |" in table  # three significant digits
    assert table.endswith("Every layer met its tolerance on every seed. `std` moved the means through `sub`.")


def test_lsuv_means_says_once_how_the_variants_moved_the_means_and_writes_small_means_without_exponents():
    runs = {"std": [run(s, [0.9], means_after=[0.5] * 4, via="-") for s in range(3)],
            "mean_std": [run(s, [0.9], means_after=[0.25] * 4) for s in range(3)],
            "loop": [run(s, [0.9], means_after=[1.4e-5 * (s + 1)] * 4, variant="loop") for s in range(3)]}
    table = R.lsuv_means(runs, "mnist")[1]
    assert table.endswith("Every layer met its tolerance on every seed. `std` left the means where they were; "
                          "`mean_std` and `loop` moved the means through `sub`.")
    assert "| loop | linear 2 (84) | 0.0000280 ± 0.0000140 | −0.000650 |" in table and "e-0" not in table
    runs["loop"][0] = run(0, [0.9], means_after=[0.0] * 4, variant="loop", converged=False)
    assert R.lsuv_means(runs, "mnist")[1].endswith(
        "`std` left the means where they were; `mean_std` moved the means through `sub`; `loop` moved the means "
        "through `sub` (4 of 12 layer settings missed their tolerance).")


def test_a_mean_the_rule_sets_to_within_its_tolerance_is_judged_within_that_tolerance():
    """loop ends with |μ| ≤ 1e-3: the notebook's -0.00065 and our 2e-6 are one result stopped at other steps."""
    loop = {"loop": [run(s, [0.9], means_after=[1e-6 * (s + 1)] * 4, variant="loop") for s in range(3)]}
    records, table = R.lsuv_means(loop, "mnist")
    printed = NOTEBOOK["loop_variant_means"]
    assert all(not r["low"] <= q <= r["high"] for r, q in zip(records, printed))  # outside the tight interval
    assert [r["verdict"] for r in records] == ["consistent within the tolerance ±0.001"] * 4
    assert all(r["consistent"] and r["margin"] == 1e-3 and check_verdict(r) is None for r in records)
    assert "4 of the notebook's 4 judged printed means are consistent" in table
    std = {"std": [run(s, [0.9], means_after=[0.3205 + 1e-5 * s, 0.41, 0.636, 0.718]) for s in range(3)]}
    first = R.lsuv_means(std, "mnist")[0][0]  # std does not set the mean: no tolerance to lean on
    assert first["margin"] == 0 and first["verdict"] == "not consistent with the source"
    assert check_verdict(dict(first, verdict="consistent within the tolerance ±0.001")) is not None


def test_std_panels_show_each_layer_right_after_lsuv_and_after_training():
    runs = {"none": [run(s, [0.9], stds=(3.0, 3.0, 3.0, 3.0)) for s in range(2)],
            "loop": [run(s, [0.9], means_after=[0.0] * 4) for s in range(2)]}
    args = R.std_panels(runs)
    assert list(args["panels"]["right after LSUV"]) == READER
    assert args["panels"]["right after LSUV"]["conv 1 (6 ch)"] == {"loop": [1.0, 1.0]}
    assert args["panels"]["after training"]["linear 2 (84)"] == {"none": [3.0, 3.0], "loop": [2.0, 2.0]}


def test_difference_panels_set_each_variant_against_none_and_against_std_seed_by_seed():
    runs = four_variants([0.84, 0.89, 0.91, 0.93], [0.92, 0.95, 0.95, 0.96])
    args = R.difference_panels(runs, epochs=3, chance=0.1)
    against_none, against_std = args["panels"].values()
    assert list(args["panels"]) == ["minus none, same seed", "minus std, same seed"] and not args["sharey"]
    assert list(against_none) == ["1", "2", "3"] and list(against_none["1"]) == ["std", "mean_std", "loop"]
    assert against_none["1"]["loop"] == pytest.approx([9.0, 9.0, 9.0])
    assert list(against_std["3"]) == ["mean_std", "loop"] and against_std["3"]["loop"] == pytest.approx([1.0] * 3)


def test_after_training_compares_the_gap_between_variants_with_the_spread_of_seeds():
    stds = {"none": (3.0, 3.2), "std": (2.0, 2.2), "mean_std": (2.1, 2.3), "loop": (2.0, 2.4)}
    runs = {v: [run(s, [0.9], stds=(x, 1.5, 1.5, 1.5)) for s, x in enumerate(xs)] for v, xs in stds.items()}
    runs["loop"].append(run(9, [0.9], stopped="training loss became NaN in epoch 1", stds=(99.0,) * 4))
    a = R.after_training(runs)
    assert (a["low"], a["high"], a["n_left_out"]) == (1.5, 3.1, 1)  # averages over seeds, per variant and layer
    assert a["gap_layer"] == "conv 1 (6 ch)"
    assert a["gap"] == pytest.approx((2.2 - 2.1) / (6.5 / 3))  # the range over the mean of the means
    assert a["seed_sd"] == pytest.approx(math.sqrt(0.08) / 2.2)  # loop's two seeds, 2.0 and 2.4
    assert "lie between 1.5 and 3.1 on average over the seeds: no layer keeps the unit std" in a["sentence"]
    assert "\"much the same after training\" holds" in a["sentence"]
    assert a["none_layer"] == "conv 1 (6 ch)" and a["none_gap"] == pytest.approx(3.1 / (6.5 / 3) - 1)
    assert "Without LSUV the network ends elsewhere: up to 43% from the variants' average" in a["sentence"]
    assert "1 run that diverged is left out" in a["sentence"]
    apart = {v: [run(s, [0.9], stds=(x, 1.5, 1.5, 1.5)) for s, x in enumerate(xs)]
             for v, xs in {"std": (2.0, 2.01), "loop": (4.0, 4.01)}.items()}
    assert "do not end quite the same" in R.after_training(apart)["sentence"]


def test_finding_says_in_words_which_statements_hold_and_what_the_unresolved_order_would_need():
    seeds = range(6)
    none = {s: 0.70 + 0.01 * s for s in seeds}
    std = {s: 0.90 + 0.002 * s for s in seeds}
    loop = {s: std[s] + (0.03 if s % 2 else -0.01) for s in seeds}  # +1 point on average, sd about 2.2
    level = {s: 0.95 for s in seeds}
    rows_ = verdicts([dict(claim="loop > std, epoch 1", a=loop, b=std),
                      dict(claim="loop > none, epoch 1", a=loop, b=none),
                      dict(claim="std > none, epoch 1", a=std, b=none),
                      dict(claim="loop ≈ std, epoch 3", a=level, b={s: 0.949 for s in seeds}, kind="tie")])
    found = R.finding(rows_, n_seeds=6, dataset="MNIST", effect=2.0)
    assert "LeNet on MNIST" in found["question"]
    gaps = sorted(r["effect"] for r in rows_[1:3])
    sd = rows_[0]["sd"]
    assert found["answer"] == (
        "Of the notebook's 4 claims, over 6 paired seeds, 3 hold, 1 is not resolved. "
        f"LSUV helps: every variant is ahead of no LSUV, by +{gaps[0]:.1f} to +{gaps[1]:.1f} points after epoch 1 "
        "(both claims hold). The order the notebook saw among the variants after one epoch is not resolved: the "
        f"gaps are +{rows_[0]['effect']:.1f} points (1 claim is not resolved); 6 seeds resolve only gaps larger than "
        f"{min_detectable_effect(sd, 6, 4):.1f} points, and at the spread measured (the per-seed differences have "
        f"an sd of up to {sd:.1f} points) resolving 2 points would take about {pairs_needed(2.0, sd, 4)} seeds. "
        "After three epochs the variants are level, as the notebook said: they differ by +0.1 points, the tie "
        "margin being ±1 point (1 claim holds).")
    assert R.finding([], 3, "MNIST", 2.0)["answer"] == "No claim could be tested in this build."


def test_finding_with_too_few_seeds_says_nothing_is_settled_and_why():
    a, b = {0: 0.90, 1: 0.91}, {0: 0.85, 1: 0.86}
    rows_ = verdicts([dict(claim="loop > none, epoch 1", a=a, b=b), dict(claim="loop > std, epoch 1", a=a, b=b),
                      dict(claim="std > none, epoch 1", a=a, b=b)])
    answer = R.finding(rows_, n_seeds=2, dataset="MNIST", effect=2.0)["answer"]
    assert "Whether every variant is ahead of no LSUV is not resolved: the variants minus no LSUV are +5.0 points " \
           "after epoch 1 (neither claim is resolved)." in answer
    assert answer.endswith("(1 claim is not resolved); 2 seeds give no interval, at least 3 are needed.")


@pytest.mark.parametrize("kwargs, words", [
    (dict(variants=["none", "loop"], lrs=[0.1], epochs=3), "lrs: one learning rate per epoch"),
    (dict(variants=["none", "xavier"], lrs=[0.1], epochs=1), "variants: distinct names among none"),
    (dict(variants=["loop", "loop"], lrs=[0.1], epochs=1), "got \\['loop', 'loop'\\]"),
])
def test_check_setup_names_the_argument_and_what_it_should_be(kwargs, words):
    with pytest.raises(ValueError, match=words):
        R.check_setup(**kwargs)


def test_configs_label_every_variant_as_the_other_chapters_name_it():
    assert R.configs(["none", "loop", "paper"]) == {
        "none": "LeNet, no LSUV", "loop": "LeNet, LSUV (loop)", "paper": "LeNet, LSUV (paper)"}


def test_variant_table_gives_each_rule_once_and_the_names_other_chapters_use():
    table = R.variant_table(["none", "std", "loop"])
    rows_ = table.split("\n")[2:]
    assert rows_[1].startswith("| `std` | W ← W/σ at the activation until") and "type 1" in rows_[1]
    assert rows_[1].count("type 1") == 1 and rows_[1].endswith("| std only | only in this chapter |")
    assert rows_[2].endswith("| mean then std, in a loop | “the library's variant” in @sec-lsuv-callback, "
                             "“LSUV (loop)” in @sec-depth |")


def test_between_variants_picks_the_epoch_1_claims_among_lsuv_variants():
    rows = verdicts([dict(claim=c["claim"], kind=c["kind"], paired=c["paired"])
                     for c in R.notebook_claims(four_variants([0.84, 0.89, 0.91, 0.93]), epochs=3, chance=0.1)])
    assert [r["claim"] for r in R.between_variants(rows)] == [
        "loop > mean_std, epoch 1", "mean_std > std, epoch 1", "loop > std, epoch 1"]
    assert R.between_variants(rows[2:3]) == rows[2:3]  # none of them tested: the family itself
