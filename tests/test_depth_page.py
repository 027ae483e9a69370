"""lsuvlib.depth_page: chapter 8's outcomes per scheme and depth, its family of claims and its sentences."""
from types import SimpleNamespace

import pytest

from lsuvlib import depth as D
from lsuvlib import depth_page as DP
from lsuvlib.experiment import Run
from lsuvlib.stats import verdicts

from history_rows import rows


def runs_of(finals):
    """`{(scheme, depth): [Run]}` from `{(scheme, depth): [final accuracy or None (diverged)]}`."""
    return {key: [Run(seed, [] if acc is None else rows([acc]), [], 0.0,
                      stopped="training loss became NaN in epoch 1" if acc is None else None,
                      lsuv_report=[SimpleNamespace(converged=seed != 1)] * 2 if D.SCHEMES[key[0]].lsuv else None)
                  for seed, acc in enumerate(accs)]
            for key, accs in finals.items()}


SCHEMES = ["default", "kaiming", "orthonormal", "lsuv_paper", "lsuv_loop"]
FINALS = {("default", 5): [0.70, 0.68, 0.66], ("kaiming", 5): [0.78, 0.80, 0.79],
          ("orthonormal", 5): [0.80, 0.79, 0.81], ("lsuv_paper", 5): [0.81, 0.80, 0.82],
          ("lsuv_loop", 5): [0.79, 0.80, 0.78],
          ("default", 30): [0.10, 0.09, 0.10], ("kaiming", 30): [0.38, 0.25, 0.29],
          ("orthonormal", 30): [0.10, 0.10, 0.09], ("lsuv_paper", 30): [0.34, 0.41, 0.45],
          ("lsuv_loop", 30): [None, 0.34, None]}


def test_outcomes_count_every_seed_with_diverged_runs_at_chance():
    result = DP.outcomes(runs_of(FINALS), [5, 30], SCHEMES, chance=0.1, train_margin=0.2)
    loop = result["lsuv_loop", 30]
    assert (loop["n"], loop["n_diverged"], loop["n_trained"], loop["trains"]) == (3, 2, 1, False)
    assert loop["mean"] == pytest.approx((0.1 + 0.34 + 0.1) / 3)
    assert result["kaiming", 30]["n_trained"] == 1 and not result["kaiming", 30]["trains"]  # 0.38 only: 0.29 < 0.30
    assert result["lsuv_paper", 30]["trains"] and result["default", 5]["trains"]


def test_depth_table_says_where_each_scheme_stops_training():
    result = DP.outcomes(runs_of(FINALS), [5, 30], SCHEMES, chance=0.1, train_margin=0.2)
    reach, table = DP.depth_table(result, [5, 30], SCHEMES)
    assert reach["lsuv_paper"]["deepest"] == 30 and reach["kaiming"]["first_failure"] == 30
    assert "| LSUV (loop) | 79.0% (3 of 3 train) | 18.0% (1 of 3 train, 2 diverged) |" in table
    assert "LSUV (paper) trains at every depth tried, up to 30 layers" in table
    assert "Kaiming trains up to 5 layers and stops at 30" in table


def test_claims_pair_each_lsuv_scheme_with_kaiming_and_its_own_start_at_every_depth():
    claims = DP.claims(runs_of(FINALS), [5, 30], SCHEMES, chance=0.1)
    assert [c["claim"] for c in claims] == [f"{D.SCHEMES[a].label} > {D.SCHEMES[b].label}, {d} layers"
                                            for d in (5, 30) for a, b in DP.CLAIMS]
    loop_vs_default = claims[-1]["paired"]
    assert loop_vs_default.n_diverged_a == 2 and loop_vs_default.diffs == pytest.approx([0.0, 0.25, 0.0])
    assert len(DP.claims(runs_of(FINALS), [5, 30], ["kaiming", "lsuv_paper"], chance=0.1)) == 2


def test_against_paper_and_finding_say_how_each_scheme_fared_at_the_deepest_depth():
    runs = runs_of(FINALS)
    result = DP.outcomes(runs, [5, 30], SCHEMES, chance=0.1, train_margin=0.2)
    reach, _ = DP.depth_table(result, [5, 30], SCHEMES)
    rows_ = verdicts(DP.claims(runs, [5, 30], SCHEMES, chance=0.1))
    text = DP.against_paper(reach, rows_)
    assert text.startswith("With the paper's own rule these plain networks train up to **30 layers**. ")
    assert "deeper than PyTorch default, Kaiming and orthonormal train" in text
    assert "the claim LSUV (paper) > Kaiming" in text
    found = DP.finding(result, reach, width=32, n_steps=188)
    assert "plain 32-wide MLP" in found["question"] and "188 SGD steps" in found["question"]
    assert found["answer"] == (
        "Within 188 SGD steps, the deepest plain network that trains has 30 layers (the deepest tried) under LSUV "
        "(paper); 5 layers under PyTorch default, Kaiming, orthonormal and LSUV (loop). So LSUV does train deeper "
        "than the best of the standard initialisations here: LSUV (paper) trains deeper than PyTorch default, "
        "Kaiming and orthonormal; LSUV (loop) trains as deep as PyTorch default, Kaiming and orthonormal.")
    stuck = {**FINALS, ("default", 5): [0.10, 0.09, 0.12]}
    result = DP.outcomes(runs_of(stuck), [5, 30], SCHEMES, chance=0.1, train_margin=0.2)
    reach, _ = DP.depth_table(result, [5, 30], SCHEMES)
    assert "and LSUV (loop); under PyTorch default none of the depths tried trains. So LSUV" in \
        DP.finding(result, reach, width=32, n_steps=188)["answer"]


def test_finding_says_when_lsuv_and_a_standard_scheme_both_reach_the_deepest_depth():
    finals = {**FINALS, ("kaiming", 30): [0.38, 0.35, 0.29]}
    result = DP.outcomes(runs_of(finals), [5, 30], SCHEMES, chance=0.1, train_margin=0.2)
    reach, _ = DP.depth_table(result, [5, 30], SCHEMES)
    answer = DP.finding(result, reach, width=32, n_steps=188)["answer"]
    assert answer.endswith(
        "So LSUV does not train deeper than the best of the standard initialisations here: LSUV (paper) trains as "
        "deep as Kaiming (at 30 layers, the deepest tried, 3 of 3 seeds train under LSUV (paper) and 2 of 3 seeds "
        "train under Kaiming, so this run cannot tell which reaches further); LSUV (loop) trains less deep than "
        "Kaiming.")


def test_divergence_note_states_what_was_measured_and_that_it_does_not_explain():
    runs = runs_of(FINALS)
    result = DP.outcomes(runs, [5, 30], SCHEMES, chance=0.1, train_margin=0.2)
    signals = {s: [1.0, 0.5] for s in SCHEMES} | {"default": [0.4, 1e-9], "lsuv_loop": [1.5, 0.67]}
    profiles = {s: [1.0, 1.0, 0.9] for s in SCHEMES} | {"lsuv_loop": [1.6, 1.8, 0.7]}
    note = DP.divergence_note(runs, result, profiles, signals)
    assert note.startswith("**Why LSUV (loop) diverges is not explained here.** Its runs diverged 2 of 3 times "
                           "at 30 layers, and never at 5 layers. Before training, LSUV met its tolerance on 4 of "
                           "the 6 layers it set at those depths. ")
    assert ("its input-dependent std goes from 1.50 at the first layer to 0.67 at the last (the logits), the most "
            "any of the 5 initialisations keeps there; the total std of its hidden layers' outputs before the ReLU "
            "has a median of 1.7") in note
    assert "did not diverge from a signal that had died" in note and note.endswith("so it cannot say why.")
    weaker = DP.divergence_note(runs, result, profiles, signals | {"lsuv_loop": [1.5, 0.01]})
    assert "0.01 at the last (the logits), where Kaiming keeps the most, 0.50;" in weaker
    assert "had died" not in weaker
    assert "PyTorch default" not in note  # only schemes with diverged runs get a note
    calm = {key: [0.5 if v is None else v for v in accs] for key, accs in FINALS.items()}
    assert DP.divergence_note(runs_of(calm), DP.outcomes(runs_of(calm), [5, 30], SCHEMES, 0.1, 0.2),
                              profiles, signals) == ""


def test_lsuv_table_counts_the_layers_that_met_the_tolerance():
    table = DP.lsuv_table(runs_of(FINALS), [5], SCHEMES)
    assert "| LSUV (paper) | 5 | 6 | 4 of 6 |" in table  # seed 1 of 3 missed on both its layers


@pytest.mark.parametrize("depths, schemes, words", [
    ([5, 1], ["kaiming"], "depths: a list of whole layer counts"),
    ("5,10", ["kaiming"], "got '5,10'"),
    ([5], ["xavier"], "schemes: some of default, kaiming"),
])
def test_check_setup_names_the_argument_and_what_it_should_be(depths, schemes, words):
    with pytest.raises(ValueError, match=words):
        DP.check_setup(depths, schemes)
    assert DP.check_setup([30, 5, 5], ["kaiming"]) == [5, 30]


def test_budget_note_states_the_steps_and_what_trains_means(toy):
    note = DP.budget_note(toy, epochs=1, batch_size=64, lr=0.01, momentum=0.9, train_margin=0.2)
    assert "1 epoch of 4 steps of 64 images" in note  # 256 toy images
    assert "reaches 45%, 20 points above chance (25%)" in note and "**20 points**" in note


def test_profile_table_keeps_a_vanished_signal_readable_and_groups_the_schemes():
    table = DP.profile_table({"default": [0.5, 0.1], "lsuv_paper": [1.0, 1.0]},
                             {"default": [0.45, 1.2e-9], "lsuv_paper": [0.9, 0.8]})
    assert "| PyTorch default | 0.5 | 0.1 | 0.45 | 1.2e-09 | 2.67e-09 |" in table
    assert table.endswith("shrinks more than a hundredfold under PyTorch default; stays within a factor of 10 "
                          "under LSUV (paper).")
