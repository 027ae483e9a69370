"""lsuvlib.together and over_seeds(together=True): stacked seeds equal seeds trained one at a time."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from conftest import toy_imageset, toy_model
from lsuvlib.batches import dataloaders
from lsuvlib.experiment import over_seeds, summarise_final
from lsuvlib.learner import Learner
from lsuvlib.models import GeneralRelu, get_model, lenet
from lsuvlib.together import NotStackable, StackedModel, check_stackable, fit_together

TOL = dict(rel=1e-4, abs=1e-5)  # grouped kernels sum in another order than one model's: float rounding only


@pytest.fixture(scope="module")
def digits32():
    return toy_imageset(n_train=192, n_test=64, n_classes=10, size=32, seed=3)


def small_lenet():
    return lenet(size=32)


def bn_model():
    return get_model(act=lambda: GeneralRelu(leak=0.1, sub=0.4), nfs=(1, 4, 8, 8, 8), norm=nn.BatchNorm2d)


def metrics(runs):
    return [[(r["epoch"], r["phase"], r["loss"], r["accuracy"]) for r in run.history] for run in runs]


def assert_same_runs(seq, tog):
    assert [r.seed for r in seq] == [r.seed for r in tog]
    for a, b in zip(seq, tog):
        assert a.stopped == b.stopped
        assert [(r["epoch"], r["phase"]) for r in a.history] == [(r["epoch"], r["phase"]) for r in b.history]
        for ra, rb in zip(a.history, b.history):
            assert rb["loss"] == pytest.approx(ra["loss"], **TOL) and rb["accuracy"] == pytest.approx(ra["accuracy"],
                                                                                                 abs=1e-9 + 2 / 64)
        assert b.batch_losses == pytest.approx(a.batch_losses, **TOL)
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.allclose(sa[k].float(), sb[k].float(), rtol=1e-3, atol=1e-5), k
        assert type(b.model) is type(a.model) and isinstance(b.model, nn.Module)


def test_stacked_forward_equals_each_models_forward():
    torch.manual_seed(0)
    for make in (small_lenet, bn_model, lambda: toy_model(size=32)):
        models = [make() for _ in range(3)]
        for m in models:
            for sub in (x for x in m.modules() if isinstance(x, GeneralRelu)):
                sub.sub = float(torch.rand(()))  # LSUV gives every copy its own shift
        xs = torch.randn(3, 5, 1, 32, 32)
        stacked = StackedModel(models).train(False)
        for m in models:
            m.train(False)
        out = stacked(xs)
        for i, m in enumerate(models):
            assert torch.allclose(out[i], m(xs[i]), atol=1e-5), make


def test_unstack_round_trip_gives_back_each_copy():
    models = [bn_model() for _ in range(2)]
    stacked = StackedModel(models)
    for i, m in enumerate(models):
        back = stacked.unstack(i, bn_model())
        for (k, a), b in zip(m.state_dict().items(), back.state_dict().values()):
            assert torch.equal(a, b), k


@pytest.mark.parametrize("lsuv, momentum, lrs", [(None, 0.0, None), ("loop", 0.85, [0.03, 0.01])])
def test_together_equals_one_at_a_time(digits32, lsuv, momentum, lrs):
    kw = dict(make_model=small_lenet, ds=digits32, epochs=2, lr=0.1, momentum=momentum, lrs=lrs, batch_size=32,
              normalise=True, lsuv=lsuv, device="cpu", progress=False)
    seq = over_seeds([3, 4, 5], together=False, **kw)
    tog = over_seeds([3, 4, 5], together=True, **kw)
    assert_same_runs(seq, tog)
    if lsuv:  # per-seed LSUV reports, each its own
        assert all(r.lsuv_report is not None for r in tog)
        assert [x.to_records() for x in (r.lsuv_report for r in seq)] == [x.to_records() for x in
                                                                          (r.lsuv_report for r in tog)]
        assert tog[0].lsuv_report.to_records() != tog[1].lsuv_report.to_records()
    assert all(r.after_training for r in tog)


def test_together_with_batchnorm_and_a_shifted_activation(digits32):
    kw = dict(make_model=bn_model, ds=digits32, epochs=2, lr=0.05, momentum=0.5, batch_size=32, device="cpu",
              progress=False)
    assert_same_runs(over_seeds([0, 1], together=False, **kw), over_seeds([0, 1], together=True, **kw))


def test_first_seed_records_stats_through_the_reference_path(digits32):
    kw = dict(make_model=small_lenet, ds=digits32, epochs=1, lr=0.1, batch_size=32, device="cpu", progress=False)
    runs = over_seeds([0, 1, 2], together=True, record_stats=True, **kw)
    assert runs[0].stats is not None and runs[1].stats is None and runs[2].stats is None
    assert_same_runs(over_seeds([0, 1, 2], together=False, record_stats=True, **kw), runs)


def blown_up(model, factor):
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


@pytest.mark.parametrize("factor, why, bs", [(1e30, "loss became NaN", 32), (100.0, "loss became", 32),
                                             (5.0, "loss diverged to", 8)])
def test_one_diverging_copy_does_not_poison_the_others(digits32, factor, why, bs):
    """Copy 1 blows up (NaN/inf, or finite: at bs 8, mid-pass); copies 0 and 2 train exactly as on their own."""
    torch.manual_seed(0)
    models = [small_lenet() for _ in range(3)]
    blown_up(models[1], factor)
    dls = [dataloaders(digits32, bs, seed=s, device="cpu") for s in range(3)]
    ref_models = copy.deepcopy(models)
    refs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m, s in zip(ref_models, range(3)):
            refs.append(Learner(m, dataloaders(digits32, bs, seed=s, device="cpu"), lr=0.1, momentum=0.5,
                                progress=False).fit(3))
    res = fit_together(models, dls, epochs=3, lr=0.1, momentum=0.5)
    assert refs[1].stopped and why in refs[1].stopped and res.stopped[1] == refs[1].stopped
    assert res.stopped[0] is None and res.stopped[2] is None
    for i in range(3):
        assert [(r["epoch"], r["phase"]) for r in res.history[i]] == [(r["epoch"], r["phase"]) for r in refs[i].history]
        assert len(res.batch_losses[i]) == len(refs[i].batch_losses)
    for i in (0, 2):
        for ra, rb in zip(refs[i].history, res.history[i]):
            assert rb["loss"] == pytest.approx(ra["loss"], **TOL)
        for a, b in zip(ref_models[i].parameters(), models[i].parameters()):
            assert torch.allclose(a, b, rtol=1e-3, atol=1e-5)


def test_over_seeds_reports_a_diverged_copy_as_diverged(digits32):
    kw = dict(make_model=small_lenet, ds=digits32, epochs=2, lr=1e3, batch_size=32, device="cpu", progress=False)
    with pytest.warns(UserWarning, match=r"seed \d: Training stopped: the training loss diverged"):
        runs = over_seeds([0, 1], together=True, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = over_seeds([0, 1], together=False, **kw)
    assert all(r.diverged for r in runs) and summarise_final(runs, chance=0.25)["n_diverged"] == 2
    assert [r.stopped for r in runs] == [r.stopped for r in ref]
    assert all(r.stopped.startswith("training loss diverged to ") for r in runs)  # finite, as in issue 10 item 5


def test_over_seeds_with_one_seed_going_nan_and_two_training_on(digits32):
    kw = dict(make_model=small_lenet, ds=digits32, epochs=3, lr=5.0, batch_size=32, device="cpu", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = over_seeds([0, 1, 2], together=False, **kw)
        tog = over_seeds([0, 1, 2], together=True, **kw)
    assert [r.stopped is not None for r in ref] == [True, False, False]  # seed 0 goes NaN in epoch 2
    assert_same_runs(ref[1:], tog[1:])
    assert tog[0].stopped == ref[0].stopped and len(tog[0].batch_losses) == len(ref[0].batch_losses)


def test_unstackable_models_say_so_and_auto_falls_back(digits32):
    def with_dropout():
        return nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10), nn.Dropout(0.1))

    with pytest.raises(NotStackable, match="Dropout cannot be stacked.*together=False"):
        check_stackable(with_dropout())
    kw = dict(make_model=with_dropout, ds=digits32, epochs=1, lr=0.1, batch_size=32, device="cpu", progress=False)
    with pytest.raises(NotStackable):
        over_seeds([0, 1], together=True, **kw)
    assert len(over_seeds([0, 1], together="auto", **kw)) == 2
    with pytest.raises(ValueError, match="together must be"):
        over_seeds([0, 1], together="yes", **kw)


def test_fit_together_rejects_mismatched_inputs(digits32):
    models = [small_lenet(), small_lenet()]
    with pytest.raises(ValueError, match="2 models but 1 data loaders"):
        fit_together(models, [dataloaders(digits32, 32, device="cpu")], epochs=1, lr=0.1)
    dls = [dataloaders(digits32, 32, device="cpu"), dataloaders(digits32, 16, device="cpu")]
    with pytest.raises(ValueError, match="differ in size or batch size"):
        fit_together(models, dls, epochs=1, lr=0.1)
    with pytest.raises(ValueError, match="lrs has 1"):
        fit_together(models, [dls[0], dls[0]], epochs=2, lr=0.1, lrs=[0.1])
