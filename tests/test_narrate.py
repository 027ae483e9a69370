"""lsuvlib.narrate: what the CNN chapters (3 to 5) state about their runs, checked against hand-made runs."""
from __future__ import annotations

import math
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lsuvlib import narrate
from lsuvlib.activations import ActivationStats
from lsuvlib.experiment import Run
from lsuvlib.models import GeneralRelu, get_model
from lsuvlib.results import Chapter

from history_rows import rows
from test_stats_results import BUILD, tiny_set, write_manifest

CHANCE = math.log(10)  # 2.303: the loss of a network that gives 10 classes the same probability


def run(seed, losses, accs=(0.5, 0.6), stopped=None):
    return Run(seed=seed, history=rows(list(accs)), batch_losses=list(losses), seconds=1.0, stopped=stopped)


def test_plateau_counts_the_batches_before_the_loss_falls_below_chance_level():
    assert narrate.plateau([2.303] * 5 + [2.25, 2.19, 1.5], 10) == 6  # 2.25 is still within 0.1 of ln 10
    assert narrate.plateau([1.9, 1.5], 10) == 0
    assert narrate.plateau([2.31] * 8, 10) is None
    assert narrate.plateau([2.31, math.nan], 10) is None, "a diverged run never left chance level"
    assert narrate.plateau([0.65, 0.5], 2) == 1  # ln 2 - 0.1 = 0.593
    with pytest.raises(ValueError, match="n_classes must be at least 2, got 1"):
        narrate.plateau([1.0], 1)


def test_plateau_report_tables_each_seed_and_says_how_long_the_runs_waited():
    ds = SimpleNamespace(classes=tuple(range(10)), x_train=range(100))  # batches of 25: 4 per epoch
    runs = [run(0, [2.31] * 5 + [1.0] * 3), run(1, [2.30, 2.31, 1.2] + [1.0] * 5), run(2, [2.31] * 8)]
    table, text = narrate.plateau_report(runs, ds, batch_size=25).split("\n\n")
    assert table.splitlines()[2:] == ["| 0 | 5 | epoch 2 | 0.600 |", "| 1 | 2 | epoch 1 | 0.600 |",
                                      "| 2 | all 8 | never | 0.600 |"]
    assert text == ("The training loss started at 2.31 (ln 10 = 2.30 is the loss of a network that gives all 10 "
                    "classes the same probability); in 2 of 3 runs it took 2 to 5 batches (median 3.5; an epoch has "
                    "4) to fall below 2.20; 1 of 3 never got below 2.20 in 2 epochs.")
    assert narrate.plateaus(runs, 10) == {0: 5, 1: 2, 2: None}


def stats_by_hand(stds, zeros, near_counts=(3.0, 1.0)):
    """An ActivationStats as a fit leaves it: two layers, per-batch series given by hand."""
    stats = ActivationStats(bins=2, hist_max=1.0, hist_images=2)
    stats.names = ["conv 1 (8 ch)", "conv 2 (16 ch)"]
    stats.stds = torch.tensor(stds)
    stats.means = torch.zeros_like(stats.stds)
    stats.zeros = torch.tensor(zeros)
    stats.hists = torch.tensor(near_counts).expand(*stats.stds.shape, 2).clone()  # 3 of 4 values near 0
    stats.max_batch = 4
    return stats


def test_activation_report_follows_the_std_through_the_layers_during_the_plateau():
    stats = stats_by_hand(stds=[[0.4, 0.4, 1.0, 1.0], [0.1, 0.1, 0.5, 0.5]], zeros=[[0.5] * 4, [0.0] * 3 + [0.00002]])
    table, text = narrate.activation_report(stats, plateau=2, last=2).split("\n\n")
    assert table.splitlines()[0] == ("| layer | std at chance level (batches 1 to 2) | mean (last 2 batches) | "
                                     "std (last 2 batches) | exactly 0 (last 2 batches) | "
                                     "near 0, under 0.5 (last 2 batches) |")
    assert table.splitlines()[2:] == ["| conv 1 (8 ch) | 0.400 | 0.000 | 1.000 | 50.0% | 75.0% |",
                                      "| conv 2 (16 ch) | 0.100 | 0.000 | 0.500 | under 0.1% | 75.0% |"]
    assert "std was 0.400 after the first layer and 0.100 after the last, 20% of the last layer's std" in text
    assert "each layer passed on about 25% of the std it received" in text
    assert "largest share of activations exactly zero is 50.0%, at conv 1 (8 ch)" in text
    assert "counted the first 2 of 4 images of each batch" in text
    assert "0.00%" not in table + text


def test_activation_report_without_a_plateau_or_any_exact_zero():
    stats = stats_by_hand(stds=[[0.6, 0.6], [0.6, 0.6]], zeros=[[0.0, 0.0], [0.0, 0.0]])
    stats.hist_images = None
    table, text = narrate.activation_report(stats).split("\n\n")
    assert "chance level" not in table and "| none |" in table
    assert text == ("The columns marked *last 2 batches* average the last 2 training batches of the first run. "
                    "No activation was exactly zero in the last batches.")  # a run of 2 batches: never "last 10"


def test_pair_table_and_the_plateau_comparison_seed_by_seed():
    a = [run(0, [1.0], accs=(0.5, 0.75)), run(1, [1.0], accs=(0.5, 0.70)), run(2, [1.0], stopped="loss became NaN")]
    b = [dict(seed=s, history=rows([0.4, acc]), stopped=None) for s, acc in ((0, 0.70), (1, 0.72), (2, 0.6))]
    lines = narrate.pair_table(a, b, "new", "old", {0: 3, 1: 4, 2: None}, {0: 9, 1: 2, 2: 5}).splitlines()
    assert lines[0] == ("| seed | at chance, old (batches) | at chance, new (batches) | accuracy, old | "
                        "accuracy, new | difference (points) |")
    assert lines[2:] == ["| 0 | 9 | 3 | 0.700 | 0.750 | +5.0 |", "| 1 | 2 | 4 | 0.720 | 0.700 | -2.0 |",
                         "| 2 | 5 | never left | 0.600 | diverged | – |"]
    assert narrate.plateau_comparison({0: 3, 1: 4, 2: None}, {0: 9, 1: 2, 2: 5}, "new", "old") == (
        "Both runs left chance level on 2 of 3 seeds; on 1 of those 2 the loss left it sooner with new: after a "
        "median of 3.5 batches, against 5.5 with old.")
    assert narrate.plateau_comparison({0: 3, 1: 1}, {0: 9, 1: 2}, "new", "old") == (
        "On every seed both runs left chance level, and the loss left it sooner with new on all 2: after a median "
        "of 2 batches, against 5.5 with old.")
    assert "sooner with new on 1 of 2: after" in narrate.plateau_comparison({0: 3, 1: 4}, {0: 9, 1: 2}, "new", "old")
    assert narrate.plateau_comparison({0: None}, {0: 4}, "new", "old") == ""
    assert "at chance" not in narrate.pair_table(a, b, "new", "old").splitlines()[0]


def test_baseline_runs_are_chapter_3s_with_their_plateaus_when_the_build_holds_them(tmp_path, monkeypatch):
    monkeypatch.setenv("LSUV_BUILD_ID", BUILD)
    params = dict(epochs=2, lr=0.1, device="cpu")
    ch3 = Chapter("03-baseline", params, tmp_path)
    ch3.use_dataset(tiny_set())
    ch3.add_runs("baseline", [run(0, [2.31, 1.0]), run(1, [2.31, 2.31])])
    ch3.save(plateau_batches={0: 1, 1: None})
    write_manifest(tmp_path, ["03-baseline"])
    ch4 = Chapter("04-input-normalisation", params, tmp_path)
    ch4.use_dataset(tiny_set())
    runs, waits, text = narrate.baseline_runs(ch4, tiny_set(), [0, 1], epochs=2, lr=0.1, batch_size=2)
    assert [r["seed"] for r in runs] == [0, 1] and waits == {0: 1, 1: None}
    assert text.startswith("The baseline runs are those of @sec-baseline in this build")
    assert "baseline" not in ch4.runs, "reused runs are not saved twice"


def test_baseline_runs_are_trained_here_when_they_cannot_be_reused(toy, monkeypatch):
    monkeypatch.delenv("LSUV_BUILD_ID", raising=False)
    ch4 = Chapter("04-input-normalisation", dict(epochs=1, lr=0.1, device="cpu"))
    runs, waits, text = narrate.baseline_runs(ch4, toy, [3, 4], epochs=1, lr=0.1, batch_size=64, device="cpu",
                                               progress=False)
    assert [r["seed"] for r in runs] == [3, 4] == [r["seed"] for r in ch4.runs["baseline"]]
    assert set(waits) == {3, 4}
    assert text == ("The baseline is trained on this page, for the same seeds, because the runs of @sec-baseline "
                    "cannot be reused: this run is not part of a book build.")


def bn_model():
    torch.manual_seed(0)
    return get_model(act=partial(GeneralRelu, leak=0.1, sub=0.4), norm=nn.BatchNorm2d, nfs=(1, 8, 16))


def test_activation_scale_measures_batchnorms_unit_scale_and_what_the_activation_makes_of_it():
    rows_ = narrate.activation_scale(bn_model(), torch.randn(64, 1, 32, 32))
    assert [r["layer"] for r in rows_] == ["conv 1 (8 ch)", "conv 2 (16 ch)"]
    for r in rows_:
        assert r["in_std"] == pytest.approx(1.0, abs=0.01), "BatchNorm in training mode hands on unit variance"
        assert r["ratio"] == r["out_std"] / r["in_std"]
    report = narrate.scale_report([dict(layer="conv 1 (8 ch)", in_std=1.0, out_std=0.6, ratio=0.6),
                                   dict(layer="conv 2 (16 ch)", in_std=1.02, out_std=0.66, ratio=0.647)],
                                  GeneralRelu(leak=0.1, sub=0.4))
    assert report.endswith("A standard normal input (mean 0, std 1) comes out of GeneralRelu(leak=0.1, sub=0.4) "
                           "with mean -0.041 and std 0.613; here each layer's activation turned its input's std "
                           "into 0.60 to 0.65 times as much.")


def test_recipe_answer_states_the_accuracy_the_verdict_and_the_scale_from_the_runs():
    from lsuvlib.stats import verdicts

    stats = stats_by_hand(stds=[[0.6, 0.6], [0.62, 0.62]], zeros=[[0.0, 0.0], [0.0, 0.0]])
    runs = [run(s, [1.0], accs=(0.5, acc)) for s, acc in ((0, 0.86), (1, 0.88), (2, 0.87))]
    row = verdicts([dict(claim="recipe > baseline", a={0: 0.86, 1: 0.88, 2: 0.87}, b={0: 0.70, 1: 0.72, 2: 0.69})])[0]
    scale = [dict(layer="conv 1 (8 ch)", in_std=0.99, out_std=0.6, ratio=0.606),
             dict(layer="conv 2 (16 ch)", in_std=1.01, out_std=0.62, ratio=0.614)]
    ds = SimpleNamespace(title="Fashion-MNIST", classes=tuple(range(10)))
    answer = narrate.recipe_answer(row, scale, stats, GeneralRelu(leak=0.1, sub=0.4), runs, ds, last=2)
    assert answer.startswith("On Fashion-MNIST, BatchNorm with Kaiming weights and GeneralRelu(leak=0.1, sub=0.4) "
                             "reached a final test accuracy of 0.870 ± 0.010 over 3 seeds, +16.7 points against the "
                             "baseline (holds)")
    assert "(0.60 to 0.62 in the last training batches)" in answer and "input of std 0.99 to 1.01" in answer
    assert "turns that into 0.61 times as much (a standard normal input: 0.61)" in answer


def test_baseline_answer_says_how_long_the_runs_waited_and_how_well_they_ended():
    ds = SimpleNamespace(title="Fashion-MNIST", name="fashion_mnist", classes=tuple(range(10)))
    runs = [run(0, [2.31] * 5 + [1.0], accs=(0.2, 0.70)), run(1, [2.31] * 2 + [1.0], accs=(0.2, 0.72))]
    assert narrate.baseline_answer(runs, ds, epochs=2) == (
        "On Fashion-MNIST (a stand-in for SVHN), the baseline learned in 2 of 2 runs, but only after its training "
        "loss sat at chance level for 2 to 5 batches; after 2 epochs its final test accuracy is 0.710 ± 0.014 over 2 "
        "seeds.")
    stuck = [run(0, [2.31] * 4, accs=(0.1, 0.1)), run(1, [2.31] * 4, accs=(0.1, 0.12))]
    assert narrate.baseline_answer(stuck, ds, epochs=1).startswith(
        "On Fashion-MNIST (a stand-in for SVHN), no: in none of 2 runs did the training loss leave chance level "
        "within 1 epoch")


def test_configs_labels_every_configuration_the_chapter_trained():
    ch = Chapter("04-input-normalisation", dict(epochs=1))
    ch.add_runs("input_normalisation", [run(0, [1.0])])
    assert narrate.configs(ch) == {"input_normalisation": "standardised inputs, default init, ReLU, plain SGD"}
    ch.add_runs("baseline", [run(0, [1.0])])
    assert set(narrate.configs(ch)) == {"input_normalisation", "baseline"}
