"""lsuvlib.depth: the plain deep MLP, the initialisation table and what each scheme leaves at the start."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lsuvlib import depth as D
from lsuvlib.experiment import Run
from lsuvlib.init import WEIGHT_LAYERS
from lsuvlib.stats import verdicts

from history_rows import rows


def _weight_layers(model):
    return [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]


def test_plain_mlp_has_depth_weight_layers_and_no_normalisation():
    model = D.plain_mlp(7, 16, in_features=20, n_classes=5)
    layers = _weight_layers(model)
    assert len(layers) == 7
    assert [(m.in_features, m.out_features) for m in layers] == [(20, 16)] + [(16, 16)] * 5 + [(16, 5)]
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)) for m in model.modules())
    assert model(torch.randn(3, 1, 4, 5)).shape == (3, 5)  # inputs of any shape are flattened


@pytest.mark.parametrize("kwargs, words", [
    (dict(depth=1, width=8), "at least 2"),
    (dict(depth=3, width=0), "width"),
    (dict(depth=3, width=8, n_classes=1), "n_classes"),
])
def test_plain_mlp_rejects_bad_sizes(kwargs, words):
    with pytest.raises(ValueError, match=words):
        D.plain_mlp(**kwargs)


def test_unknown_scheme_names_the_choices():
    with pytest.raises(ValueError, match="unknown initialisation scheme 'xavier'.*kaiming"):
        D.train_setup("xavier", 5, 8)


def test_same_seed_same_default_weights_for_every_scheme():
    """Each scheme starts from the PyTorch weights of its seed; only its own rule changes them."""
    torch.manual_seed(3)
    default = D.train_setup("default", 4, 8, in_features=10)["make_model"]()
    torch.manual_seed(3)
    lsuv = D.train_setup("lsuv_paper", 4, 8, in_features=10)
    assert lsuv["lsuv"] == {"variant": "paper"}
    again = lsuv["make_model"]()  # LSUV runs later, in the training callback
    for a, b in zip(default.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_data_free_schemes_do_what_they_say():
    torch.manual_seed(0)
    kaiming = D.train_setup("kaiming", 3, 64, in_features=64)["make_model"]()
    ortho = D.train_setup("orthonormal", 3, 64, in_features=64)["make_model"]()
    for m in _weight_layers(ortho):
        w = m.weight
        assert torch.allclose(w @ w.T, torch.eye(w.shape[0]), atol=1e-5) or torch.allclose(
            w.T @ w, torch.eye(w.shape[1]), atol=1e-5)
        assert torch.count_nonzero(m.bias) == 0
    hidden = _weight_layers(kaiming)[1].weight
    assert hidden.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.15)
    assert torch.count_nonzero(_weight_layers(kaiming)[1].bias) == 0


def test_init_profile_lsuv_paper_gives_unit_variance_at_every_layer():
    xb = torch.randn(128, 1, 6, 6)
    stds = D.init_profile("lsuv_paper", 12, 16, xb, seed=0)
    assert len(stds) == 12
    assert all(abs(s ** 2 - 1) < 0.1 for s in stds)  # the paper's tolerance on the variance


def test_init_profile_default_input_signal_vanishes_while_biases_keep_the_total():
    xb = torch.randn(128, 1, 6, 6)
    signal = D.init_profile("default", 20, 16, xb, seed=0, over="batch")
    total = D.init_profile("default", 20, 16, xb, seed=0, over="all")
    assert signal[-1] < signal[0] / 100
    assert total[-1] > 10 * signal[-1]  # what is left is the biases, the same for every input
    assert all(math.isfinite(s) for s in signal + total)
    with pytest.raises(ValueError, match="over must be"):
        D.init_profile("default", 3, 4, xb, seed=0, over="units")


def test_layer_output_stds_leaves_mode_and_hooks_as_they_were():
    model = D.plain_mlp(3, 8, in_features=4)
    model.train()
    D.layer_output_stds(model, torch.randn(16, 4))
    assert model.training
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_depth_reach_reports_first_failure_and_a_later_recovery():
    r = D.depth_reach({5: True, 10: True, 20: False, 30: True})
    assert r == dict(trains_at=[5, 10, 30], deepest=30, first_failure=20, trains_again=[30])
    assert D.depth_reach({5: False, 10: False})["deepest"] is None
    assert D.depth_reach({5: True})["first_failure"] is None


# ----------------------------------------------------------------------------- the chapter's page

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
    result = D.outcomes(runs_of(FINALS), [5, 30], SCHEMES, chance=0.1, train_margin=0.2)
    loop = result["lsuv_loop", 30]
    assert (loop["n"], loop["n_diverged"], loop["n_trained"], loop["trains"]) == (3, 2, 1, False)
    assert loop["mean"] == pytest.approx((0.1 + 0.34 + 0.1) / 3)
    assert result["kaiming", 30]["n_trained"] == 1 and not result["kaiming", 30]["trains"]  # 0.38 only: 0.29 < 0.30
    assert result["lsuv_paper", 30]["trains"] and result["default", 5]["trains"]


def test_depth_table_says_where_each_scheme_stops_training():
    result = D.outcomes(runs_of(FINALS), [5, 30], SCHEMES, chance=0.1, train_margin=0.2)
    reach, table = D.depth_table(result, [5, 30], SCHEMES)
    assert reach["lsuv_paper"]["deepest"] == 30 and reach["kaiming"]["first_failure"] == 30
    assert "| LSUV (loop) | 79.0 % (3 of 3 train) | 18.0 % (1 of 3 train, 2 diverged) |" in table
    assert "LSUV (paper) trains at every depth tried, up to 30 layers" in table
    assert "Kaiming trains up to 5 layers and stops at 30" in table


def test_claims_pair_each_lsuv_scheme_with_kaiming_and_its_own_start_at_every_depth():
    claims = D.claims(runs_of(FINALS), [5, 30], SCHEMES, chance=0.1)
    assert [c["claim"] for c in claims] == [f"{D.SCHEMES[a].label} > {D.SCHEMES[b].label}, {d} layers"
                                            for d in (5, 30) for a, b in D.CLAIMS]
    loop_vs_default = claims[-1]["paired"]
    assert loop_vs_default.n_diverged_a == 2 and loop_vs_default.diffs == pytest.approx([0.0, 0.25, 0.0])
    assert len(D.claims(runs_of(FINALS), [5, 30], ["kaiming", "lsuv_paper"], chance=0.1)) == 2


def test_against_paper_and_finding_say_how_each_scheme_fared_at_the_deepest_depth():
    runs = runs_of(FINALS)
    result = D.outcomes(runs, [5, 30], SCHEMES, chance=0.1, train_margin=0.2)
    reach, _ = D.depth_table(result, [5, 30], SCHEMES)
    rows_ = verdicts(D.claims(runs, [5, 30], SCHEMES, chance=0.1))
    text = D.against_paper(reach, rows_)
    assert text.startswith("With the paper's own rule these plain networks train up to **30 layers**. ")
    assert "deeper than PyTorch default, Kaiming and orthonormal train" in text
    assert "the claim LSUV (paper) > Kaiming" in text
    found = D.finding(result, reach, width=32, n_steps=188)
    assert "plain 32-wide MLP" in found["question"] and "188 SGD steps" in found["question"]
    assert found["answer"].startswith("At 30 layers, PyTorch default 0 of 3 seeds train (mean 10 %); ")
    assert "LSUV (loop) 1 of 3 seeds train (mean 18 %, 2 diverged)" in found["answer"]
    assert found["answer"].endswith("Kaiming 5, orthonormal 5, LSUV (paper) 30, LSUV (loop) 5.")


def test_lsuv_table_counts_the_layers_that_met_the_tolerance():
    table = D.lsuv_table(runs_of(FINALS), [5], SCHEMES)
    assert "| LSUV (paper) | 5 | 6 | 4 of 6 |" in table  # seed 1 of 3 missed on both its layers


@pytest.mark.parametrize("depths, schemes, words", [
    ([5, 1], ["kaiming"], "depths: a list of whole layer counts"),
    ("5,10", ["kaiming"], "got '5,10'"),
    ([5], ["xavier"], "schemes: some of default, kaiming"),
])
def test_check_setup_names_the_argument_and_what_it_should_be(depths, schemes, words):
    with pytest.raises(ValueError, match=words):
        D.check_setup(depths, schemes)
    assert D.check_setup([30, 5, 5], ["kaiming"]) == [5, 30]


def test_budget_note_states_the_steps_and_what_trains_means(toy):
    note = D.budget_note(toy, epochs=1, batch_size=64, lr=0.01, momentum=0.9, train_margin=0.2)
    assert "1 epoch of 4 steps of 64 images" in note  # 256 toy images
    assert "reaches 45%, 20 points above chance (25%)" in note and "**20 points**" in note


def test_profile_table_keeps_a_vanished_signal_readable_and_groups_the_schemes():
    table = D.profile_table({"A": [0.5, 0.1], "B": [1.0, 1.0]}, {"A": [0.45, 1.2e-9], "B": [0.9, 0.8]})
    assert "| A | 0.5 | 0.1 | 0.45 | 1.2e-09 | 2.67e-09 |" in table
    assert table.endswith("shrinks more than a hundredfold under A; stays within a factor of 10 under B.")
