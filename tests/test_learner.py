"""lsuvlib.learner, experiment.train and activations.ActivationStats on a tiny in-memory problem."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import toy_imageset
from lsuvlib import (ActivationStats, Callback, EpochLR, Learner, dataloaders, final, fmt_mean_sd, get_model,
                     hook_count, over_seeds, seeds_from, summarise_final, train)
from lsuvlib import learner as learner_mod
from lsuvlib.results import HISTORY_KEYS

BS = 32  # 256 training images -> 8 training batches, 64 test images -> 1 eval batch of 64


def fit(ds, model, epochs=3, lr=0.3, cbs=(), bs=BS, seed=0, **kw):
    torch.manual_seed(seed)
    dls = dataloaders(ds, bs, seed=seed, device="cpu")
    return Learner(model, dls, lr=lr, cbs=cbs, progress=False, **kw).fit(epochs)


class Recorder(Callback):
    """Records every moment it sees, with the epoch, the phase and the learning rate."""

    order = 5

    def __init__(self):
        self.events: list[tuple] = []

    def before_fit(self, learn):
        self.events.append(("before_fit",))

    def before_epoch(self, learn):
        self.events.append(("before_epoch", learn.epoch))

    def before_batch(self, learn):
        self.events.append(("before_batch", learn.epoch, learn.training, learn.opt.param_groups[0]["lr"]))

    def after_epoch(self, learn):
        self.events.append(("after_epoch", learn.epoch))

    def after_fit(self, learn):
        self.events.append(("after_fit",))

    def moments(self, name):
        return [e for e in self.events if e[0] == name]


class RaiseAt(Callback):
    """Raises ``exc`` in after_batch of the given epoch and training batch."""

    order = 20

    def __init__(self, epoch, batch, exc=RuntimeError("boom")):
        self.epoch, self.batch, self.exc = epoch, batch, exc

    def after_batch(self, learn):
        if learn.training and learn.epoch == self.epoch and learn.batch_idx == self.batch:
            raise self.exc


# ============================================================================= learning


def test_learner_improves_a_tiny_problem(toy, make_toy_model):
    torch.manual_seed(0)  # the initial weights, whatever earlier tests drew (some draws do not learn in 3 epochs)
    learn = fit(toy, make_toy_model(), epochs=3)
    losses = learn.batch_losses
    assert len(losses) == 8 * 3
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4
    evals = [r for r in learn.history if r["phase"] == "eval"]
    assert evals[-1]["loss"] < evals[0]["loss"]
    assert final(learn.history) == evals[-1]["accuracy"] > 0.6  # chance is 0.25
    assert final(learn.history, "train", "loss") < evals[0]["loss"]
    assert learn.stopped is None


def test_history_rows_have_the_documented_keys(toy, make_toy_model):
    learn = fit(toy, make_toy_model(), epochs=2)
    assert [(r["epoch"], r["phase"]) for r in learn.history] == [(0, "train"), (0, "eval"), (1, "train"), (1, "eval")]
    for r in learn.history:
        assert tuple(r) == HISTORY_KEYS
        assert isinstance(r["loss"], float) and math.isfinite(r["loss"])
        assert 0 <= r["accuracy"] <= 1 and r["seconds"] >= 0
    # The epoch's training loss is the size-weighted mean of its batch losses (equal batches here).
    for epoch in range(2):
        batch = learn.batch_losses[8 * epoch:8 * (epoch + 1)]
        assert learn.history[2 * epoch]["loss"] == pytest.approx(sum(batch) / 8, rel=1e-5)


def test_eval_metrics_match_a_direct_computation(toy, make_toy_model):
    learn = fit(toy, make_toy_model(), epochs=1)
    model = learn.model.eval()
    with torch.no_grad():
        xb = toy.x_test.float() / 255
        preds = model(xb)
    assert learn.history[-1]["loss"] == pytest.approx(F.cross_entropy(preds, toy.y_test).item(), rel=1e-5)
    assert learn.history[-1]["accuracy"] == pytest.approx((preds.argmax(1) == toy.y_test).float().mean().item())


def test_final_requires_rows_of_the_phase():
    with pytest.raises(ValueError, match="no 'eval' rows"):
        final([dict(epoch=0, phase="train", loss=1.0, accuracy=0.5, seconds=0.0)])


def test_bad_arguments(toy, make_toy_model):
    dls = dataloaders(toy, BS, device="cpu")
    for lr in (0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="^lr must be a positive number, got"):
            Learner(make_toy_model(), dls, lr=lr, progress=False)
    with pytest.raises(ValueError, match="^n_epochs must be a positive whole number, got 0$"):
        Learner(make_toy_model(), dls, progress=False).fit(0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr="0.1"), "lr must be a positive number, got '0.1' (str)"),
    (dict(epochs=1.5), "epochs must be a positive whole number, got 1.5 (float)"),
    (dict(batch_size="64"), "batch_size must be a positive whole number, got '64' (str)"),
    (dict(epochs=0), "epochs must be a positive whole number, got 0"),
])
def test_train_names_a_bad_argument_what_it_must_be_and_what_was_given(toy, make_toy_model, kwargs, message):
    """Issue 21: these raised deep inside torch or Python (`'<' not supported...`), or trained 1.5 epochs as 1."""
    kw = dict(seed=0, epochs=1, lr=0.1, batch_size=BS, device="cpu", progress=False) | kwargs
    with pytest.raises((TypeError, ValueError)) as err:
        train(make_toy_model, toy, **kw)
    assert str(err.value) == message
    with pytest.raises(type(err.value), match=f"^{message.replace('(', '[(]').replace(')', '[)]')}$"):
        over_seeds([0, 1], make_model=make_toy_model, ds=toy, **{k: v for k, v in kw.items() if k != "seed"})


@pytest.mark.parametrize("seeds, shown", [(5, "5 (int)"), ("12", "'12' (str)"), ([], "[] (list)"),
                                          ([0, 1.5], "[0, 1.5] (list)")])
def test_over_seeds_wants_a_list_of_seeds(toy, make_toy_model, seeds, shown):
    """Issue 21: `over_seeds(5, ...)` failed in iteration, `over_seeds('12', ...)` trained seeds '1' and '2'."""
    with pytest.raises(TypeError) as err:
        over_seeds(seeds, make_model=make_toy_model, ds=toy, epochs=1, lr=0.1, batch_size=BS, device="cpu")
    assert str(err.value) == ("seeds must be a non-empty list of whole numbers such as [0, 1, 2] or seeds_from(0, 5), "
                              f"got {shown}")
    with pytest.raises(TypeError, match="^n_seeds must be a positive whole number, got '5' [(]str[)]$"):
        seeds_from(0, "5")


def test_progress_bar_does_not_change_results(toy, make_toy_model, capsys):
    torch.manual_seed(0)
    quiet = fit(toy, make_toy_model(), epochs=1)
    torch.manual_seed(0)
    dls = dataloaders(toy, BS, seed=0, device="cpu")
    loud = Learner(make_toy_model(), dls, lr=0.3, progress=True).fit(1)
    assert strip_seconds(loud.history) == strip_seconds(quiet.history)


# ============================================================================= reproducibility via train()


def strip_seconds(history):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in history]


def test_same_seed_gives_identical_runs(toy, make_toy_model):
    kw = dict(ds=toy, epochs=2, lr=0.3, batch_size=BS, device="cpu", progress=False)
    a = train(make_toy_model, seed=3, **kw)
    b = train(make_toy_model, seed=3, **kw)
    c = train(make_toy_model, seed=4, **kw)
    assert strip_seconds(a.history) == strip_seconds(b.history)
    assert a.batch_losses == b.batch_losses and len(a.batch_losses) == 16
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k
    assert a.after_training == b.after_training
    assert c.batch_losses != a.batch_losses  # the seed really matters
    assert a.to_dict()["seed"] == 3 and a.to_dict()["history"] == a.history


def test_train_with_normalise_lrs_and_stats(toy, make_toy_model):
    run = train(make_toy_model, toy, seed=0, epochs=2, lr=0.3, batch_size=BS, normalise=True, lrs=[0.2, 0.05],
                record_stats=True, device="cpu", progress=False)
    assert run.stopped is None and len(run.history) == 4
    assert run.stats is not None and run.stats.means.shape == (2, 16)
    assert hook_count(run.model) == 0
    assert [r["layer"] for r in run.after_training] == ["1", "3"]


# ============================================================================= EpochLR


def test_epoch_lr_sets_the_rate_of_each_epoch(toy, make_toy_model):
    rec = Recorder()
    lrs = [0.5, 0.1, 0.02]
    fit(toy, make_toy_model(), epochs=3, lr=9.0, cbs=[EpochLR(lrs), rec])
    for epoch, lr in enumerate(lrs):
        seen = {e[3] for e in rec.moments("before_batch") if e[1] == epoch}
        assert seen == {lr}


def test_epoch_lr_accepts_a_longer_schedule(toy, make_toy_model):
    rec = Recorder()
    fit(toy, make_toy_model(), epochs=1, cbs=[EpochLR([0.2, 0.1, 0.0]), rec])
    assert {e[3] for e in rec.moments("before_batch")} == {0.2}


def test_epoch_lr_rejects_a_short_schedule(toy, make_toy_model):
    rec = Recorder()
    with pytest.raises(ValueError, match="EpochLR has 2 learning rates for 3 epochs"):
        fit(toy, make_toy_model(), epochs=3, cbs=[EpochLR([0.1, 0.1]), rec])
    assert rec.moments("after_fit") == [("after_fit",)]
    assert rec.moments("before_batch") == []  # nothing trained


# ============================================================================= non-finite losses


def inf_loss(preds, y):
    return F.cross_entropy(preds, y) * float("inf")


def test_infinite_loss_stops_with_a_message_and_a_warning(toy, make_toy_model):
    rec = Recorder()
    with pytest.warns(UserWarning, match="Training stopped: the training loss became NaN in epoch 1") as w:
        learn = fit(toy, make_toy_model(), epochs=3, cbs=[rec], loss_func=inf_loss)
    assert learn.stopped == "training loss became NaN in epoch 1"  # a reason for a page, not a traceback
    assert any(str(x.message) == f"Training stopped: the {learn.stopped}. Lower the learning rate or fix the "
               "initialisation." for x in w)
    assert [(r["epoch"], r["phase"]) for r in learn.history] == [(0, "train")]  # no eval, no epoch 1
    assert rec.moments("before_epoch") == [("before_epoch", 0)]
    assert rec.moments("after_fit") == [("after_fit",)]


def test_huge_learning_rate_stops_early(toy, make_toy_model):
    with pytest.warns(UserWarning, match="Training stopped"):
        learn = fit(toy, make_toy_model(), epochs=3, lr=1e6)
    assert learn.stopped and learn.stopped.endswith("in epoch 1")
    assert len(learn.history) == 1


def test_non_finite_loss_stops_mid_epoch(toy, make_toy_model):
    """With many batches the finiteness check ends the pass after NAN_CHECK_EVERY batches, not at its end."""
    with pytest.warns(UserWarning, match="Training stopped"):
        learn = fit(toy, make_toy_model(), epochs=2, bs=4, loss_func=inf_loss)  # 64 batches per epoch
    assert len(learn.batch_losses) == learner_mod.CHECK_EVERY < 64


def test_non_finite_eval_loss_stops_too(toy, make_toy_model):
    def eval_inf(preds, y):
        loss = F.cross_entropy(preds, y)
        return loss if torch.is_grad_enabled() else loss * float("inf")

    with pytest.warns(UserWarning, match="eval"):
        learn = fit(toy, make_toy_model(), epochs=3, loss_func=eval_inf)
    assert learn.stopped == "eval loss became infinite in epoch 1"
    assert [(r["epoch"], r["phase"]) for r in learn.history] == [(0, "train"), (0, "eval")]


# ============================================================================= callbacks and clean-up


def test_callback_moments_in_order(toy, make_toy_model):
    rec = Recorder()
    fit(toy, make_toy_model(), epochs=2, cbs=[rec])
    names = [e[0] for e in rec.events]
    assert names[0] == "before_fit" and names[-1] == "after_fit"
    assert names.count("before_epoch") == names.count("after_epoch") == 2
    assert names.count("before_batch") == 2 * (8 + 1)
    assert sum(1 for e in rec.moments("before_batch") if e[2]) == 16  # training batches


def test_callbacks_run_in_order_attribute_order(toy, make_toy_model):
    calls = []

    class Named(Callback):
        def __init__(self, name, order):
            self.name, self.order = name, order

        def before_fit(self, learn):
            calls.append(self.name)

    fit(toy, make_toy_model(), epochs=1, cbs=[Named("late", 10), Named("early", -5), Named("middle", 0)])
    assert calls == ["early", "middle", "late"]


def test_after_fit_runs_when_an_exception_is_raised_mid_fit(toy, make_toy_model):
    rec = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        fit(toy, make_toy_model(), epochs=3, cbs=[rec, RaiseAt(epoch=1, batch=2)])
    assert rec.events[-1] == ("after_fit",)
    assert rec.moments("after_epoch") == [("after_epoch", 0)]


def test_after_fit_runs_on_keyboard_interrupt(toy, make_toy_model):
    rec = Recorder()
    with pytest.raises(KeyboardInterrupt):
        fit(toy, make_toy_model(), epochs=2, cbs=[rec, RaiseAt(0, 3, KeyboardInterrupt())])
    assert rec.events[-1] == ("after_fit",)


def test_activation_stats_hooks_are_removed_after_fit(toy, make_toy_model):
    model = make_toy_model()
    stats = ActivationStats()
    fit(toy, model, epochs=1, cbs=[stats])
    assert hook_count(model) == 0
    model(torch.zeros(2, 1, 8, 8))  # later forward passes are not recorded
    assert stats.means.shape == (2, 8)


def test_activation_stats_hooks_are_removed_on_error(toy, make_toy_model):
    model = make_toy_model()
    stats = ActivationStats()
    with pytest.raises(RuntimeError, match="boom"):
        fit(toy, model, epochs=2, cbs=[stats, RaiseAt(epoch=0, batch=4)])
    assert hook_count(model) == 0
    assert stats.means.shape == (2, 5)  # what was recorded up to the error is kept


class FailOnCall(nn.Module):
    """Identity that raises on its ``n``-th training call: an error in the middle of a forward pass."""

    def __init__(self, n):
        super().__init__()
        self.n, self.calls = n, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.n:
                raise FloatingPointError("forward failed")
        return x


def test_error_in_the_middle_of_a_forward_pass_is_not_masked(toy):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), FailOnCall(3), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 4))
    with pytest.raises(FloatingPointError, match="forward failed"):
        fit(toy, model, epochs=1, cbs=[ActivationStats()])


def test_error_in_the_middle_of_a_forward_pass_still_removes_hooks(toy):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), FailOnCall(3), nn.Linear(16, 16), nn.ReLU(),
                          nn.Linear(16, 4))
    with pytest.raises(FloatingPointError):
        fit(toy, model, epochs=1, cbs=[ActivationStats()])
    assert hook_count(model) == 0


def test_failing_before_fit_of_an_earlier_callback_is_not_masked(toy, make_toy_model):
    model = make_toy_model()
    with pytest.raises(ValueError, match="EpochLR has 1 learning rates for 2 epochs"):
        fit(toy, model, epochs=2, cbs=[EpochLR([0.1]), ActivationStats()])
    assert hook_count(model) == 0


def test_activation_stats_without_activations_says_so(toy):
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    with pytest.raises(ValueError, match="no module of type"):
        fit(toy, model, epochs=1, cbs=[ActivationStats()])


def test_activation_stats_records_only_training_batches(toy, make_toy_model):
    stats = ActivationStats(bins=20, hist_max=5.0)
    epochs = 3
    learn = fit(toy, make_toy_model(), epochs=epochs, cbs=[stats])
    n_train_batches = len(learn.dls.train)
    assert n_train_batches == 8 and len(learn.dls.valid) == 1
    assert stats.means.shape == stats.stds.shape == (2, n_train_batches * epochs)
    assert stats.hists.shape == (2, n_train_batches * epochs, 20)
    # Each histogram counts every activation of one training batch: batch size x layer width.
    assert torch.all(stats.hists.sum(-1) <= BS * 16) and torch.all(stats.hists.sum(-1) > 0)
    assert stats.names == ["linear 1 (16)", "linear 2 (16)"]
    assert torch.all(stats.means >= 0)  # outputs of ReLUs
    dead = stats.dead_fraction()
    assert dead.shape == (2, 24) and torch.all((0 <= dead) & (dead <= 1))
    summary = stats.summary(last=5)
    assert [s["layer"] for s in summary] == stats.names
    assert summary[0]["mean"] == pytest.approx(stats.means[0, -5:].mean().item())
    d = stats.to_dict()
    assert d["layers"] == stats.names and len(d["means"][1]) == 24


def test_activation_stats_values_match_a_direct_measurement(toy):
    """Recorded mean/std equal those of the activation output on the same batch."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.ReLU(), nn.Linear(4, 4))
    seen = []

    class Grab(Callback):
        order = 20

        def before_batch(self, learn):
            if learn.training:
                with torch.no_grad():
                    seen.append(F.relu(model[1](model[0](learn.xb))))  # not model[2]: that is hooked

    stats = ActivationStats(modules=[model[2]])
    fit(toy, model, epochs=1, lr=1e-9, cbs=[stats, Grab()])  # lr tiny: weights practically frozen
    assert stats.names == ["linear 1 (4)"]
    assert len(seen) == 8
    for i, a in enumerate(seen):
        assert stats.means[0, i].item() == pytest.approx(a.mean().item(), abs=1e-6)
        assert stats.stds[0, i].item() == pytest.approx(a.std().item(), abs=1e-6)


# ============================================================================= over_seeds and summaries


def test_over_seeds_keeps_every_seeds_raw_run_and_repeats_exactly(toy, make_toy_model):
    kw = dict(make_model=make_toy_model, ds=toy, epochs=2, lr=0.3, batch_size=BS, device="cpu", progress=False)
    first = over_seeds([5, 6, 7], record_stats=True, **kw)
    again = over_seeds([5, 6, 7], **kw)
    assert [r.seed for r in first] == [5, 6, 7]
    assert first[0].stats is not None and first[1].stats is None  # only the charted run records statistics
    assert [strip_seconds(r.history) for r in first] == [strip_seconds(r.history) for r in again]
    assert len({tuple(r.batch_losses) for r in first}) == 3  # independent runs
    summary = summarise_final(first, chance=0.25)
    finals = [r.history[-1]["accuracy"] for r in first]
    assert summary["n"] == 3 and summary["n_diverged"] == 0
    assert summary["mean"] == pytest.approx(sum(finals) / 3)
    with pytest.raises(ValueError, match="distinct"):
        over_seeds([1, 1], **kw)


def test_summary_counts_diverged_runs_instead_of_averaging_them(toy, make_toy_model):
    kw = dict(make_model=make_toy_model, ds=toy, epochs=1, batch_size=BS, device="cpu", progress=False)
    with pytest.warns(UserWarning, match="Training stopped"):
        diverged = over_seeds([1, 2], lr=1e9, **kw)
    fine = over_seeds([3], lr=0.3, **kw)
    summary = summarise_final(diverged + fine, chance=0.25)
    assert summary["n"] == 3 and summary["n_diverged"] == 2, "a mean over 3 seeds is over 3 seeds"
    assert summary["mean"] == pytest.approx((0.25 + 0.25 + fine[0].history[-1]["accuracy"]) / 3)
    assert "(2 of 3 runs diverged, counted at chance)" in fmt_mean_sd(summary)


# ============================================================================= finite divergence


class Scaled:
    """Cross-entropy reported `factor` times larger on training batches `start` to `stop` (gradients unchanged)."""

    def __init__(self, start, factor, stop=None):
        self.start, self.stop, self.factor, self.batches = start, stop, factor, 0

    def __call__(self, preds, y):
        loss = F.cross_entropy(preds, y)
        if torch.is_grad_enabled():
            self.batches += 1
            if self.start < self.batches and (self.stop is None or self.batches <= self.stop):
                return loss + (self.factor - 1) * loss.detach()
        return loss


def test_finite_runaway_loss_stops_like_a_nan(toy, make_toy_model):
    """Issue 10 item 5: lr=1e3 ends at a huge but finite loss; it must be reported, not counted as finished."""
    with pytest.warns(UserWarning, match="diverged"):
        run = train(make_toy_model, toy, seed=0, epochs=3, lr=1e3, batch_size=BS, device="cpu", progress=False)
    assert run.diverged and run.stopped.startswith("training loss diverged to ") and run.stopped.endswith("epoch 1")
    assert summarise_final([run], chance=0.25)["n_diverged"] == 1


def test_a_short_run_that_ends_far_above_a_uniform_guess_is_diverged(toy, make_toy_model):
    """Issue 21 item 7: one epoch of 8 batches, 7 of them far above the threshold, was counted as finished."""
    with pytest.warns(UserWarning, match="Training stopped: the training loss diverged"):
        learn = fit(toy, make_toy_model(), epochs=1, loss_func=Scaled(1, 1e4))
    assert learn.diverged and learn.stopped.endswith("in epoch 1") and len(learn.batch_losses) == 8
    assert [(r["epoch"], r["phase"]) for r in learn.history] == [(0, "train")]


def test_the_issues_blog_cnn_at_lr_1e3_on_8_batches_is_diverged():
    """Issue 21 item 7 as reported: `train(get_model, ds, lr=1e3)` on 512 images ended at a loss of 5e20, "finished"."""
    digits = toy_imageset(n_train=512, n_test=128, n_classes=10, size=32, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runs = over_seeds([0, 1, 2], make_model=get_model, ds=digits, epochs=1, lr=1e3, batch_size=64, device="cpu",
                          progress=False, together=False, workers=1)
    assert [r.diverged for r in runs] == [True] * 3, [r.history for r in runs]


def test_a_spike_that_settles_at_a_uniform_guess_is_diverged():
    """Issue 21 item 7: at lr 30 a batch loss reached 1e23-1e31, then sat near a uniform guess, and counted as finished."""
    digits = toy_imageset(n_train=1024, n_test=128, n_classes=10, size=32, seed=3)
    with pytest.warns(UserWarning, match="Training stopped: the training loss diverged to"):
        run = train(get_model, digits, seed=2, epochs=2, lr=30, batch_size=64, device="cpu", progress=False)
    assert run.diverged and max(run.batch_losses) > 1e20 and run.stopped.endswith("in epoch 1")


def test_a_diverged_pass_is_judged_by_its_mean_loss(toy, make_toy_model):
    # 8 batches an epoch: one batch 1e4 times too large lifts the epoch's mean far above the threshold...
    with pytest.warns(UserWarning, match="diverged"):
        learn = fit(toy, make_toy_model(), epochs=3, loss_func=Scaled(5, 1e4, stop=6))
    assert [(r["epoch"], r["phase"]) for r in learn.history] == [(0, "train")]
    # ...while a few batches a little above it (a noisy start) leave the mean below it.
    learn = fit(toy, make_toy_model(), epochs=3, loss_func=Scaled(1, 12.0, stop=3))
    assert learn.stopped is None and len(learn.history) == 6


def test_a_loss_below_the_factor_is_left_alone(toy, make_toy_model):
    # Scaled from the first batch: the threshold scales with the start, so no divergence.
    learn = fit(toy, make_toy_model(), epochs=3, loss_func=Scaled(0, 1e3), lr=0.3)
    assert learn.stopped is None and not learn.diverged
    assert float(learner_mod.divergence_threshold(0.5, 10)) == pytest.approx(learner_mod.DIVERGE_FACTOR * math.log(10))
    assert float(learner_mod.divergence_threshold(50.0, 10)) == pytest.approx(learner_mod.DIVERGE_FACTOR * 50)
    assert float(learner_mod.divergence_threshold(math.nan, 10)) == pytest.approx(
        learner_mod.DIVERGE_FACTOR * math.log(10))


def test_divergence_mid_epoch_is_caught_at_the_next_check(toy, make_toy_model):
    with pytest.warns(UserWarning, match="diverged"):
        learn = fit(toy, make_toy_model(), epochs=2, bs=4, loss_func=Scaled(1, 1e6))  # 64 batches per epoch
    assert len(learn.batch_losses) == learner_mod.CHECK_EVERY


def test_train_has_no_extra_cbs_any_more(toy, make_toy_model):
    with pytest.raises(TypeError, match="extra_cbs"):
        train(make_toy_model, toy, seed=0, epochs=1, lr=0.1, batch_size=BS, extra_cbs=[])


# ============================================================================= runtime


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    from lsuvlib.runtime import default_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="no CUDA GPU.*device='auto' or device='cpu'"):
        default_device("cuda")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        default_device("cuda:0")
    with pytest.raises(ValueError, match="not a device name"):
        default_device("gpu")
    assert default_device("auto").type == "cpu" and default_device("cpu").type == "cpu"


def test_progress_line_appends_to_the_progress_file(tmp_path, monkeypatch):
    from lsuvlib.runtime import progress_line

    monkeypatch.delenv("LSUV_PROGRESS_FILE", raising=False)
    progress_line("nowhere")  # no file: nothing happens
    path = tmp_path / "progress.txt"
    monkeypatch.setenv("LSUV_PROGRESS_FILE", str(path))
    progress_line("one")
    progress_line("two\n")
    assert path.read_text() == "one\ntwo\n"


def test_over_seeds_reports_progress(toy, make_toy_model, tmp_path, monkeypatch):
    path = tmp_path / "progress.txt"
    monkeypatch.setenv("LSUV_PROGRESS_FILE", str(path))
    over_seeds([0, 1, 2], make_model=make_toy_model, ds=toy, epochs=1, lr=0.3, batch_size=BS, device="cpu",
               progress=False, together=False)
    lines = path.read_text().splitlines()
    assert [ln.split(" runs done")[0] for ln in lines] == ["1/3", "2/3", "3/3"]
    assert all(", about " in ln and ln.endswith(" left") for ln in lines[:-1])
    assert lines[-1].startswith("3/3 runs done in ")
    over_seeds([0, 1], make_model=make_toy_model, ds=toy, epochs=1, lr=0.3, batch_size=BS, device="cpu",
               progress=False, together=False, label="variant std")
    assert path.read_text().splitlines()[-1].startswith("variant std: 2/2 runs done in ")
