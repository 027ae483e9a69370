"""lsuvlib.lr_finder.lr_find: the sweep, early stopping, the suggestion, and leaving the model as it was."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lsuvlib import LRFindResult, dataloaders, lr_find


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


@pytest.mark.parametrize("training", [True, False], ids=["train-mode", "eval-mode"])
def test_restores_weights_buffers_and_mode(train_batches, training):
    model = bn_model()
    model.train(training)
    saved = snapshot(model)
    res = lr_find(model, train_batches, start=1e-4, end=1.0, n_iters=20)
    assert isinstance(res, LRFindResult) and len(res.lrs) > 1
    assert_same_state(model, saved)
    assert all(m.training == training for m in model.modules())
    # ...and the sweep really did train: the smoothed loss moved.
    assert res.losses[0] != res.losses[-1]


def test_restores_mixed_train_eval_modes(train_batches):
    model = bn_model()
    model.train()
    model[2].eval()  # a frozen BatchNorm inside a training model
    modes = {name: m.training for name, m in model.named_modules()}
    lr_find(model, train_batches, start=1e-4, end=1.0, n_iters=10)
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
        lr_find(model, train_batches, loss_func=flaky, n_iters=20)
    assert len(calls) == 5
    assert_same_state(model, saved)
    assert not model.training


def test_sweep_is_geometric_and_wraps_around_the_batches(train_batches):
    assert len(train_batches) == 8
    res = lr_find(bn_model(), train_batches, start=1e-5, end=1e-2, n_iters=20)  # 20 iterations > 8 batches
    assert res.stopped == ""
    assert len(res.lrs) == len(res.losses) == len(res.raw_losses) == 20
    assert res.lrs[0] == pytest.approx(1e-5) and res.lrs[-1] == pytest.approx(1e-2)
    ratios = [b / a for a, b in zip(res.lrs, res.lrs[1:])]
    assert max(ratios) == pytest.approx(min(ratios)) and ratios[0] > 1
    assert all(math.isfinite(v) for v in res.losses)


def test_losses_are_bias_corrected_smoothing_of_the_raw_losses(train_batches):
    beta = 0.8
    res = lr_find(bn_model(), train_batches, start=1e-4, end=1e-1, n_iters=12, smoothing=beta)
    avg = 0.0
    for i, (raw, smooth) in enumerate(zip(res.raw_losses, res.losses)):
        avg = beta * avg + (1 - beta) * raw
        assert smooth == pytest.approx(avg / (1 - beta ** (i + 1)), rel=1e-12)
    assert res.losses[0] == pytest.approx(res.raw_losses[0])


def test_stops_on_divergence(train_batches):
    res = lr_find(bn_model(), train_batches, start=1e-4, end=1e6, n_iters=100)
    assert res.stopped.startswith("stopped at lr=")
    assert len(res.lrs) < 100
    last = res.losses[-1]
    assert not math.isfinite(last) or last > 4.0 * min(res.losses[:-1])
    assert res.lrs[-1] < 1e6


def test_stops_on_a_non_finite_loss(train_batches):
    calls = []

    def nan_at_6(preds, y):
        calls.append(1)
        loss = F.cross_entropy(preds, y)
        return loss * float("nan") if len(calls) == 6 else loss

    res = lr_find(bn_model(), train_batches, loss_func=nan_at_6, start=1e-4, end=1e-2, n_iters=30)
    assert res.stopped and len(res.lrs) == 6 and len(calls) == 6
    assert math.isnan(res.raw_losses[-1])
    finite = [lr for lr, l in zip(res.lrs, res.losses) if math.isfinite(l)]
    assert min(finite) / 10 <= res.suggestion <= max(finite) / 10


def test_suggestion_is_within_the_swept_range(train_batches):
    res = lr_find(bn_model(), train_batches, start=1e-4, end=10.0, n_iters=60)
    assert min(res.lrs) <= res.suggestion <= max(res.lrs)
    best = min(range(len(res.losses)), key=lambda i: res.losses[i])
    assert res.suggestion == pytest.approx(res.lrs[best] / 10)
    assert 1e-4 <= res.suggestion <= 10.0


@pytest.mark.parametrize("kwargs, match", [
    (dict(start=0.0), "0 < start < end"),
    (dict(start=-1e-3), "0 < start < end"),
    (dict(start=1.0, end=1.0), "0 < start < end"),
    (dict(start=1.0, end=0.1), "0 < start < end"),
    (dict(n_iters=1), "n_iters"),
    (dict(n_iters=0), "n_iters"),
])
def test_bad_arguments(train_batches, kwargs, match):
    model = bn_model()
    saved = snapshot(model)
    with pytest.raises(ValueError, match=match):
        lr_find(model, train_batches, **kwargs)
    assert_same_state(model, saved)
