"""lsuvlib.lr_finder.lr_find: the sweep, early stopping, the suggestion, and leaving the model as it was."""
from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsuvlib import Callback, Learner, LRFindResult, dataloaders, lr_find, sources
from lsuvlib.lr_finder import FLAT


def bn_model() -> nn.Sequential:
    """A model with BatchNorm, so buffers (running stats, batch count) change in train mode too."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4))


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(model: nn.Module, saved: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert now.keys() == saved.keys()
    for k, v in saved.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), f"{k} changed"


@pytest.fixture
def train_batches(toy):
    return dataloaders(toy, 32, seed=0, device="cpu").train


def scripted(values):
    """A loss function returning ``values`` one call after another (still differentiable, so SGD steps)."""
    calls = iter(values)

    def loss_func(preds, y):
        return F.cross_entropy(preds, y) * 0 + next(calls)
    return loss_func


@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_restores_weights_buffers_and_mode(train_batches, training):
    model = bn_model()
    model.train(training)
    saved = snapshot(model)
    res = lr_find(model, train_batches, start=1e-4, growth=1.5, max_iters=20)
    assert isinstance(res, LRFindResult) and len(res.lrs) > 1
    assert_same_state(model, saved)
    assert all(m.training == training for m in model.modules())
    # ...and the sweep really did train: the loss moved.
    assert res.losses[0] != res.losses[-1]


def test_restores_mixed_train_eval_modes(train_batches):
    model = bn_model()
    model.train()
    model[2].eval()  # a frozen BatchNorm inside a training model
    modes = {name: m.training for name, m in model.named_modules()}
    lr_find(model, train_batches, start=1e-4, max_iters=10)
    assert {name: m.training for name, m in model.named_modules()} == modes


def test_restores_the_model_when_the_loss_raises(train_batches):
    model = bn_model().eval()
    saved = snapshot(model)
    calls = []

    def flaky(preds, y):
        calls.append(1)
        if len(calls) == 5:
            raise RuntimeError("loss exploded")
        return F.cross_entropy(preds, y)

    with pytest.raises(RuntimeError, match="loss exploded"):
        lr_find(model, train_batches, loss_func=flaky, max_iters=20)
    assert len(calls) == 5
    assert_same_state(model, saved)
    assert not model.training


def test_restores_the_global_random_state(train_batches):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Dropout(0.5), nn.Linear(16, 4))  # dropout draws
    torch.manual_seed(3)
    lr_find(model, train_batches, start=1e-4, max_iters=6)
    after = torch.rand(5)
    torch.manual_seed(3)
    assert torch.equal(after, torch.rand(5))


def test_defaults_are_the_blogs_finder(train_batches):
    """Start 1e-7, x1.3 per batch, raw losses, stop at 3x the lowest, at most one pass (the blog's one epoch)."""
    blog = sources.BLOG["lr_finder"]
    defaults = {k: p.default for k, p in inspect.signature(lr_find).parameters.items()}
    assert defaults["start"] == blog["start"] == 1e-7
    assert defaults["growth"] == blog["growth"] == 1.3
    assert defaults["stop_factor"] == blog["stop_factor"] == 3.0
    assert defaults["momentum"] == blog["momentum"] == 0.0
    assert defaults["smoothing"] == 0.0 and blog["smoothing"] is None
    assert defaults["max_iters"] is None and blog["max_epochs"] == 1
    res = lr_find(bn_model(), train_batches)
    assert res.stopped == "" and len(res.lrs) == len(train_batches) == 8  # one pass: nothing diverges at 1e-7..6e-7
    assert res.losses == res.raw_losses and res.smoothing == 0.0
    assert res.lrs == pytest.approx([1e-7 * 1.3 ** i for i in range(8)], rel=1e-12)


def test_sweep_is_geometric_and_wraps_around_the_batches(train_batches):
    assert len(train_batches) == 8
    res = lr_find(bn_model(), train_batches, start=1e-5, growth=1.2, max_iters=20)  # 20 iterations > 8 batches
    assert res.stopped == ""
    assert len(res.lrs) == len(res.losses) == len(res.raw_losses) == 20
    assert res.lrs == pytest.approx([1e-5 * 1.2 ** i for i in range(20)], rel=1e-12)
    assert all(math.isfinite(v) for v in res.losses)


def test_losses_are_bias_corrected_smoothing_of_the_raw_losses(train_batches):
    beta = 0.8
    res = lr_find(bn_model(), train_batches, start=1e-4, growth=1.5, max_iters=12, smoothing=beta)
    avg = 0.0
    for i, (raw, smooth) in enumerate(zip(res.raw_losses, res.losses)):
        avg = beta * avg + (1 - beta) * raw
        assert smooth == pytest.approx(avg / (1 - beta ** (i + 1)), rel=1e-12)
    assert res.losses[0] == pytest.approx(res.raw_losses[0])
    assert res.smoothing == beta


def test_stop_rule_records_the_loss_that_exceeds_3x_the_lowest(train_batches):
    values = [2.0, 1.5, 1.0, 1.2, 2.9, 3.0, 3.01, 0.5, 0.4]
    res = lr_find(bn_model(), train_batches, loss_func=scripted(values), max_iters=9)
    # 3.0 is not above 3 x 1.0; 3.01 is: recorded, then the sweep ends.
    assert res.raw_losses == pytest.approx(values[:7])
    assert res.stopped.startswith("stopped at lr=") and "> 3 x lowest 1" in res.stopped
    assert res.suggestion == pytest.approx(res.lrs[2] / 10)


def test_stops_on_divergence(train_batches):
    res = lr_find(bn_model(), train_batches, start=1e-4, growth=1.5, max_iters=100)
    assert res.stopped.startswith("stopped at lr=")
    assert len(res.lrs) < 100
    last = res.losses[-1]
    assert not math.isfinite(last) or last > 3.0 * min(res.losses[:-1])


def test_stops_on_a_non_finite_loss_and_suggests_from_the_finite_ones(train_batches):
    values = [2.0, 1.8, 1.0, 1.2, 1.1, float("nan"), 0.1]

    def nan_at_6(preds, y):  # a real NaN from the model's loss, not a stand-in value
        value = values[len(seen)]
        seen.append(value)
        return F.cross_entropy(preds, y) * 0 + value

    seen = []
    res = lr_find(bn_model(), train_batches, loss_func=nan_at_6, start=1e-4, growth=1.1, max_iters=30)
    assert res.stopped and "not finite" in res.stopped and len(res.lrs) == 6 and len(seen) == 6
    assert math.isnan(res.raw_losses[-1])
    assert res.lowest == 2 and res.suggestion == pytest.approx(res.lrs[2] / 10)


@pytest.mark.parametrize("values", [[2.30, 2.31, 2.29, 2.30, 2.25], [2.3, 2.3, 2.3, 2.3], [2.3, 2.4, 3.0, 6.0, 7.5]],
                         ids=["noise", "constant", "only-rises"])
def test_a_curve_that_never_falls_suggests_nothing(train_batches, values):
    """2.25 is 2% below 2.30: batch-to-batch noise, not a fall (`FLAT` is 5%)."""
    res = lr_find(bn_model(), train_batches, loss_func=scripted(values), max_iters=len(values), stop_factor=10)
    assert len(res.losses) == len(values)
    assert res.falling_part() is None and res.suggestion is None


def test_falling_part_runs_from_the_last_loss_near_the_first_to_the_lowest(train_batches):
    values = [2.3, 2.31, 2.28, 2.2, 1.5, 1.0, 2.0]  # 2.2 is the last within 5% of 2.3 before the lowest, 1.0
    res = lr_find(bn_model(), train_batches, loss_func=scripted(values), max_iters=len(values))
    assert FLAT == 0.05
    assert res.falling_part() == (3, 5) and res.lowest == 5
    assert res.suggestion == pytest.approx(res.lrs[5] / 10)


def test_suggestion_is_a_tenth_of_the_rate_at_the_lowest_loss(train_batches):
    res = lr_find(bn_model(), train_batches, start=1e-4, growth=1.3, max_iters=60)
    best = min(range(len(res.losses)), key=lambda i: res.losses[i])
    assert res.suggestion == pytest.approx(res.lrs[best] / 10)


def test_does_not_advance_the_loaders_shuffle(toy):
    dls = dataloaders(toy, 32, seed=4, device="cpu")
    before = dls.train.generator.get_state()
    lr_find(bn_model(), dls.train, max_iters=20)  # more than one pass
    assert torch.equal(dls.train.generator.get_state(), before)


def test_sees_the_batches_training_would_see_next(toy):
    dls = dataloaders(toy, 32, seed=4, device="cpu")
    seen = []
    lr_find(bn_model(), dls.train, max_iters=8,
            loss_func=lambda preds, y: seen.append(y.clone()) or F.cross_entropy(preds, y))
    assert [y.tolist() for y in seen] == [yb.tolist() for _, yb in dls.train]


class BatchLabels(Callback):
    """Keeps the labels of every training batch a fit sees, in order."""

    def __init__(self):
        self.labels: list[list[int]] = []

    def before_batch(self, learn):
        if learn.training:
            self.labels.append(learn.yb.tolist())


def test_a_following_fit_sees_the_same_batch_order_with_or_without_lr_find(toy):
    orders = {}
    for with_finder in (False, True):
        dls = dataloaders(toy, 32, seed=11, device="cpu")
        if with_finder:
            lr_find(bn_model(), dls.train, start=1e-4, max_iters=13)
        rec = BatchLabels()
        Learner(bn_model(), dls, lr=0.1, cbs=[rec], progress=False).fit(2)
        orders[with_finder] = rec.labels
    assert len(orders[False]) == 16
    assert orders[True] == orders[False]
    assert orders[False][:8] != orders[False][8:]  # really shuffled: the two epochs differ


@pytest.mark.parametrize("kwargs, match", [
    (dict(start=0.0), "start must be a positive learning rate"),
    (dict(start=-1e-3), "start must be a positive learning rate"),
    (dict(growth=1.0), "growth must be above 1"),
    (dict(growth=0.5), "growth must be above 1"),
    (dict(max_iters=1), "max_iters must be at least 2"),
    (dict(max_iters=0), "max_iters must be at least 2"),
    (dict(stop_factor=1.0), "stop_factor must be above 1"),
    (dict(smoothing=1.0), r"smoothing must be in \[0, 1\)"),
    (dict(smoothing=-0.1), r"smoothing must be in \[0, 1\)"),
])
def test_bad_arguments(train_batches, kwargs, match):
    model = bn_model()
    saved = snapshot(model)
    with pytest.raises(ValueError, match=match):
        lr_find(model, train_batches, **kwargs)
    assert_same_state(model, saved)
