"""lsuvlib.finder_text: what chapter 2 says about its sweeps, computed from real (scripted-loss) sweeps."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lsuvlib as L
from lsuvlib import finder_text
from lsuvlib.hooks import reader_names

BLOG_PARAMS = dict(lr_start=1e-7, lr_growth=1.3, lr_stop_factor=3.0, lr_smoothing=0.0, lr_find_iters=None,
                   batch_size=1024)


def sweep(toy, values, start=1e-7, growth=1.3):
    """A real `lr_find` run whose losses are `values` (the model still takes its SGD steps)."""
    calls = iter(values)
    dls = L.dataloaders(toy, 32, seed=0, device="cpu")
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    return L.lr_find(model, dls.train, loss_func=lambda p, y: F.cross_entropy(p, y) * 0 + next(calls),
                     start=start, growth=growth, max_iters=len(values), stop_factor=10)


def test_settings_match_the_blog_only_where_they_do():
    rows = {r["setting"]: r for r in finder_text.settings(BLOG_PARAMS, n_pass=59)}
    assert rows["rate of the first batch"]["book"] == "$10^{-7}$" and rows["rate of the first batch"]["match"] == "same"
    assert rows["length"]["match"] == "**differs**"
    assert rows["length"]["blog"] == "one pass over SVHN: 72 batches, up to a rate of 12.3"
    assert rows["length"]["book"] == "one pass here: 59 batches, up to a rate of 0.406"
    assert finder_text.settings(BLOG_PARAMS, n_pass=72)[4]["match"] == "same"  # SVHN's own pass
    short = {r["setting"]: r for r in finder_text.settings(dict(BLOG_PARAMS, lr_find_iters=20, batch_size=256), 8)}
    assert short["length"]["book"] == "20 batches, up to a rate of $1.5 \\times 10^{-5}$"
    assert short["batch size"]["match"] == "**differs**"
    assert "None" not in finder_text.settings_table(list(short.values()))


def test_a_flat_sweep_points_to_no_rate(toy):
    res = sweep(toy, [2.303, 2.30, 2.31, 2.29, 2.30], start=0.05, growth=1.5)  # reaches 0.253
    text = finder_text.sweep_text(res, n_classes=10)
    assert "its full length" in text and "ln 10 = 2.303" in text
    assert "the lowest loss, 2.290 at a rate of 0.169, is 0.6% below it" in text
    assert "points to no rate" in text and "suggest" not in text
    assert "Near the blog's training rate of 0.2 (batch 4, rate 0.169) the loss was 2.290: no different" in text


def test_a_falling_sweep_gives_its_fall_its_suggestion_and_where_the_blogs_rate_lies(toy):
    res = sweep(toy, [2.3, 2.31, 2.25, 2.0, 1.5, 1.2, 2.4], start=0.01, growth=2.0)  # 0.01 .. 0.64
    text = finder_text.sweep_text(res, n_classes=10)
    assert "stayed within 5% of its start up to a rate of 0.04, then fell to 1.200 at 0.32" in text
    assert "A tenth of the lowest point's rate, **0.032** (before the falling part)" in text
    assert "(batch 5, rate 0.16) the loss was 1.500: on the falling part" in text
    assert finder_text.blog_rate_place(res) == (4, "on the falling part")
    answer = finder_text.answer(sweep(toy, [2.3] * 7, 0.01, 2.0), res, "the stuck net", "the moving net")
    assert answer == ("For the stuck net, the finder points to no rate: its loss never fell more than 5% below its "
                      "start at any rate up to 0.64; for the moving net, it points to 0.032, a tenth of the rate at "
                      "its lowest loss (1.200 at 0.32), and the blog's rate of 0.2 is on the falling part.")


def test_choice_text_says_which_rate_to_pick_and_how_much_room_the_blogs_rate_leaves(toy):
    stuck = sweep(toy, [2.3] * 7, 0.01, 2.0)
    near = sweep(toy, [2.3, 2.31, 2.25, 2.0, 1.5, 1.2, 2.4], start=0.01, growth=2.0)  # lowest at 0.32
    text = finder_text.choice_text(stuck, near, "the stuck net", "the moving net")
    assert text.startswith("Which rate to pick? For the moving net, take the rule of thumb's **0.032**")
    assert ("The blog's rate of 0.2 is 6.2 times that suggestion and on the falling part; the lowest point's rate, "
            "0.32, is only 1.6 times higher, so it leaves little room.") in text
    assert "@sec-lsuv-callback" in text and text.endswith("For the stuck net, the finder offers no rate at all: its "
                                                          "initialisation, not its rate, is what needs changing first.")
    past = sweep(toy, [2.3, 2.31, 2.25, 1.2, 1.5, 2.0, 2.4], start=0.01, growth=2.0)  # lowest at 0.08
    assert "past the lowest point, where the loss rises again: by this curve it is at or past the turn" in (
        finder_text.choice_text(stuck, past, "a", "b"))
    assert finder_text.choice_text(stuck, stuck, "a", "b").startswith("Which rate to pick? The finder cannot say")


def test_a_sweep_still_falling_at_its_end_gives_a_lower_bound_and_one_that_stops_early_says_why(toy):
    still = finder_text.sweep_text(sweep(toy, [2.3, 2.2, 1.9, 1.5], start=1e-3, growth=2.0), n_classes=4)
    assert "still falling when it ended" in still and "lower bound" in still
    assert "ended before the blog's training rate of 0.2" in still
    calls = iter([2.3, 1.0, 40.0])
    dls = L.dataloaders(toy, 32, seed=0, device="cpu")
    stopped = L.lr_find(nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), dls.train, max_iters=5,
                        loss_func=lambda p, y: F.cross_entropy(p, y) * 0 + next(calls))
    text = finder_text.sweep_text(stopped, n_classes=4)
    assert "the stop rule ended the sweep: the last loss, 40, was more than the stop factor" in text
    assert "stopped at lr=" not in text  # the finder's terse reason is not pasted into prose


def conv_net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         nn.Conv2d(16, 4, 2), nn.Flatten())


def test_signal_at_start_measures_without_touching_the_models_or_the_loader(toy):
    dls = L.dataloaders(toy, 64, seed=3, device="cpu")
    torch.manual_seed(0)
    default, kaiming = conv_net(), L.init_kaiming(conv_net())
    before = {k: v.clone() for k, v in default.state_dict().items()}
    state = dls.train.generator.get_state()
    signal = finder_text.signal_at_start({"default": default, "kaiming": kaiming}, dls.train)
    assert torch.equal(dls.train.generator.get_state(), state)
    assert all(torch.equal(before[k], v) for k, v in default.state_dict().items())
    assert all(p.grad is None for p in default.parameters())
    # PyTorch draws a conv's weights with variance 1/(3 fan-in); Kaiming's is 2/fan-in (small layers: loose).
    assert signal["default"]["var_fan_in"] == pytest.approx(1 / 3, rel=0.25)
    assert signal["kaiming"]["var_fan_in"] == pytest.approx(2, rel=0.25)
    names = reader_names(default)
    assert list(signal["default"]["stds"]) == [names[default[0]], names[default[2]]]
    assert list(signal["default"]["stds"]) == ["conv 1 (8 ch)", "conv 2 (16 ch)"]
    xb, yb = dls.train.one_batch()
    with torch.no_grad():
        assert signal["kaiming"]["score_spread"] == pytest.approx(kaiming(xb).std(0).mean().item(), rel=1e-6)
    table = finder_text.signal_table(signal)
    assert table.splitlines()[0] == "| before training, on one batch | default | kaiming |"
    text = finder_text.signal_text(signal, "default", "kaiming")
    ratio = signal["kaiming"]["score_spread"] / signal["default"]["score_spread"]
    assert f"{ratio:.0f} times less than with kaiming" in text
