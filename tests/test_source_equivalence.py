"""Our code against the sources' definitions, restated here by hand from what the sources describe.

- The blog's momentum learner keeps each gradient, scaled by 0.85, instead of zeroing it, then
  takes a plain SGD step: ``L.Learner(momentum=0.85)`` must follow it step by step.
- The fastai course's activation histogram: ``|a|`` in 40 equal bins over [0, 10], values above
  10 left out; its "dead" share (``get_min``): the lowest bin's count over the histogram's total.
- The course's LR finder: rate x1.3 after every batch from the Learner's rate, raw losses, stop
  after recording a loss above 3x the lowest so far.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lsuvlib as L
from lsuvlib import sources
from lsuvlib.models import GeneralRelu


# ----------------------------------------------------------------------------- momentum

class AfterEachStep(L.Callback):
    """Copies every parameter after each training step."""

    def __init__(self):
        self.params: list[list[torch.Tensor]] = []

    def after_batch(self, learn):
        if learn.training:
            self.params.append([p.detach().clone() for p in learn.model.parameters()])


def blog_momentum_run(model: nn.Module, batches, lr: float, mom: float) -> list[list[torch.Tensor]]:
    """The blog's rule: backward adds to the kept gradient, step p -= lr * grad, then grad *= mom."""
    params = list(model.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    out = []
    for xb, yb in batches:
        F.cross_entropy(model(xb), yb).backward()
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
                p.grad *= mom
        out.append([p.detach().clone() for p in params])
    return out


def test_learner_momentum_is_the_blogs_momentum_learner_step_by_step(toy, make_toy_model):
    mom, lr = sources.BLOG["momentum"], 0.2
    assert mom == 0.85
    torch.manual_seed(0)
    start = make_toy_model()
    ours = AfterEachStep()
    L.Learner(copy.deepcopy(start), L.dataloaders(toy, 32, seed=1, device="cpu"), lr=lr, momentum=mom,
              cbs=[ours], progress=False).fit(2)
    hand_model = copy.deepcopy(start)
    hand_dls = L.dataloaders(toy, 32, seed=1, device="cpu")  # the same seed: the same batches in the same order
    hand = blog_momentum_run(hand_model, hand_dls.train, lr, mom)  # the first epoch (the next test: both)
    n = len(hand_dls.train)
    assert len(ours.params) == 2 * n
    for step in range(n):
        for got, want in zip(ours.params[step], hand[step]):
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-6), f"step {step}"
    # Not vacuous: without momentum the weights part after the second step.
    plain = AfterEachStep()
    L.Learner(copy.deepcopy(start), L.dataloaders(toy, 32, seed=1, device="cpu"), lr=lr, cbs=[plain],
              progress=False).fit(1)
    assert torch.allclose(plain.params[0][0], hand[0][0], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(plain.params[2][0], hand[2][0], rtol=1e-5, atol=1e-6)


def test_learner_momentum_carries_across_epochs_like_the_blogs(toy, make_toy_model):
    """The blog never resets the kept gradient between epochs; neither does the optimiser's momentum buffer."""
    torch.manual_seed(0)
    start = make_toy_model()
    ours = AfterEachStep()
    L.Learner(copy.deepcopy(start), L.dataloaders(toy, 32, seed=1, device="cpu"), lr=0.2, momentum=0.85,
              cbs=[ours], progress=False).fit(2)
    model = copy.deepcopy(start)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.zeros_like(p)
    dls = L.dataloaders(toy, 32, seed=1, device="cpu")
    step = 0
    for _ in range(2):
        for xb, yb in dls.train:
            F.cross_entropy(model(xb), yb).backward()
            with torch.no_grad():
                for p in params:
                    p -= 0.2 * p.grad
                    p.grad *= 0.85
            for got, want in zip(ours.params[step], params):
                assert torch.allclose(got, want, rtol=1e-4, atol=1e-6), f"step {step}"
            step += 1
    assert step == 16


# ----------------------------------------------------------------------------- histogram and dead share

def course_counts(a: torch.Tensor) -> list[int]:
    """Count |a| into 40 bins of width 0.25 over [0, 10] by plain Python: 10 itself in the last, above 10 nowhere."""
    counts = [0] * 40
    for v in a.abs().flatten().tolist():
        if v <= 10.0:
            counts[min(int(v // 0.25), 39)] += 1
    return counts


class Feed(L.Callback):
    """Keeps each training batch's activation, recomputed from the first layer's weights and ``act``'s formula."""

    order = 20

    def __init__(self, act):
        self.act, self.seen = act, []

    def before_batch(self, learn):
        if learn.training:
            with torch.no_grad():
                self.seen.append(self.act(learn.model[1](learn.model[0](learn.xb))))


def relu(x):
    return torch.clamp(x, min=0)


def leaky_shifted(x):
    return torch.where(x >= 0, x, 0.1 * x) - 0.4


@pytest.mark.parametrize("act, formula", [(nn.ReLU(), relu), (GeneralRelu(leak=0.1, sub=0.4), leaky_shifted)],
                         ids=["ReLU", "GeneralRelu"])
def test_histograms_and_shares_are_the_courses_definitions(toy, act, formula):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), act, nn.Linear(24, 4))
    with torch.no_grad():
        model[1].weight.mul_(40.0)  # spread the activations past 10, so the out-of-range rule matters
    stats, feed = L.ActivationStats(hist_images=None), Feed(formula)  # the formula, not the hooked module
    L.Learner(model, L.dataloaders(toy, 32, seed=0, device="cpu"), lr=1e-3, cbs=[stats, feed], progress=False).fit(1)
    assert len(feed.seen) == stats.hists.shape[1] == 8
    above = 0
    for b, a in enumerate(feed.seen):
        counts = course_counts(a)
        assert stats.hists[0, b].tolist() == counts
        assert stats.dead_fraction()[0, b].item() == pytest.approx(counts[0] / sum(counts))
        assert stats.zero_fraction()[0, b].item() == pytest.approx((a == 0).sum().item() / a.numel())
        above += int((a.abs() > 10).sum())
    assert above > 0  # some activations fell outside the histogram, as in the course
    if isinstance(act, GeneralRelu):  # shifted by 0.4: nothing is exactly 0, yet some are "near zero"
        assert stats.zero_fraction().max().item() == 0.0 and stats.dead_fraction().max().item() > 0
    else:
        assert stats.zero_fraction().min().item() > 0.2  # about half of a ReLU's outputs are exactly 0


def test_hist_images_limits_the_histogram_not_the_other_statistics(toy):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 4))
    stats, feed = L.ActivationStats(hist_images=5), Feed(relu)
    L.Learner(model, L.dataloaders(toy, 32, seed=0, device="cpu"), lr=1e-3, cbs=[stats, feed], progress=False).fit(1)
    a = feed.seen[0]
    assert stats.hists[0, 0].tolist() == course_counts(a[:5])
    assert stats.means[0, 0].item() == pytest.approx(a.mean().item(), abs=1e-6)
    assert stats.zero_fraction()[0, 0].item() == pytest.approx((a == 0).float().mean().item())
    assert stats.hist_is_partial and stats.hist_note() == "histogram counts from the first 5 of 32 images per batch"
    assert stats.summary()[0].keys() == {"layer", "mean", "std", "near_zero", "zero"}


def test_default_types_follow_the_registry_at_fit_time(toy):
    class Square(nn.Module):
        def forward(self, x):
            return x * x

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), Square(), nn.Linear(8, 4))
    dls = L.dataloaders(toy, 32, seed=0, device="cpu")
    stats = L.ActivationStats()  # created before the registration below
    message = r"no module of type .*Threshold, GeneralRelu in the model.*register_activation\(YourType\)"
    with pytest.raises(ValueError, match=message):
        L.Learner(model, dls, lr=1e-3, cbs=[stats], progress=False).fit(1)
    from lsuvlib import nonlinear

    saved = nonlinear.ACTIVATION_TYPES
    try:
        L.register_activation(Square)
        L.Learner(model, dls, lr=1e-3, cbs=[stats], progress=False).fit(1)
        assert stats.names == ["linear 1 (8)"]
    finally:
        nonlinear.ACTIVATION_TYPES = saved


# ----------------------------------------------------------------------------- LR finder

def course_finder_length(losses: list[float], mult: float = 3.0) -> int:
    """How many batches the course's finder records: it stops after the first loss above mult x the lowest."""
    lowest = float("inf")
    for i, loss in enumerate(losses):
        lowest = min(lowest, loss)
        if loss > mult * lowest:
            return i + 1
    return len(losses)


@pytest.mark.parametrize("values", [
    [2.3, 2.2, 1.9, 1.0, 0.8, 1.5, 2.3, 2.41, 0.1, 0.1],
    [2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3, 2.3],
    [1.0, 3.0, 3.5, 0.2, 0.7],
])
def test_lr_finder_records_what_the_courses_finder_records(toy, values):
    calls = iter(values)

    def loss_func(preds, y):
        return F.cross_entropy(preds, y) * 0 + next(calls)

    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    dls = L.dataloaders(toy, 32, seed=0, device="cpu")
    res = L.lr_find(model, dls.train, loss_func=loss_func, max_iters=len(values))
    n = course_finder_length(values)
    assert res.raw_losses == pytest.approx(values[:n]) and res.losses == res.raw_losses
    lr = 1e-7
    for got in res.lrs:  # the Learner's rate, then x1.3 after every batch
        assert got == pytest.approx(lr, rel=1e-12)
        lr *= 1.3
