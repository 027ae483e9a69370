"""LSUV: the three variants converge, stay bounded, leave no trace but the new weights."""
import os
import warnings
from functools import partial

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import lsuvlib as L
from lsuvlib.lsuv import find_pairs

TOL = 1e-3
REAL_MIRROR = os.environ.get("LSUV_DATA_DIR")  # read before conftest's fixture hides it


def random_stack(seed: int, kind: str, act: str, depth: int) -> nn.Sequential:
    """A deep stack of conv or linear layers, each followed by the named activation."""
    torch.manual_seed(seed)
    make_act = {"relu": nn.ReLU, "leaky": partial(nn.LeakyReLU, 0.1),
                "general": partial(L.GeneralRelu, leak=0.1, sub=0.4), "notebook": partial(L.GeneralRelu, sub=0.0),
                "relu_inplace": partial(nn.ReLU, inplace=True)}[act]
    layers = []
    for i in range(depth):
        if kind == "conv":
            layers += [nn.Conv2d(1 if i == 0 else 6, 6, 3, padding=1), make_act()]
        else:
            layers += [nn.Linear(12 if i == 0 else 16, 16), make_act()]
    if kind == "conv":
        layers.append(nn.Flatten())
    return nn.Sequential(*layers)


def batch(kind: str, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    shape = (64, 1, 8, 8) if kind == "conv" else (256, 12)
    return torch.randn(shape, generator=g) * 3 + 1


def stats_at(model, xb):
    return {r["layer"]: (r["mean"], r["std"]) for r in L.measure_activations(model, xb)}


@settings(max_examples=25, deadline=None, derandomize=True)  # the same examples on every run: no flaky CI
@given(seed=st.integers(0, 10_000), kind=st.sampled_from(["conv", "linear"]),
       act=st.sampled_from(["relu", "leaky", "general", "notebook", "relu_inplace"]), depth=st.integers(2, 6),
       variant=st.sampled_from(list(L.lsuv.VARIANTS)))
def test_every_measured_activation_is_unit_std(seed, kind, act, depth, variant):
    if variant != "std" and act in ("relu", "relu_inplace"):
        return  # plain ReLU cannot be centred: covered by test_plain_relu_mean_variant_raises
    model, xb = random_stack(seed, kind, act, depth), batch(kind, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a non-converged layer would warn
        report = L.lsuv_init(model, xb, variant, tol=TOL, max_iters=100)
    assert len(report) == depth and report.all_converged
    measured = stats_at(model, xb)
    assert len(measured) == depth
    for layer, (mean, std) in measured.items():
        assert abs(std - 1) <= TOL * 1.01, (layer, std)
        if variant == "loop":
            assert abs(mean) <= TOL * 1.01, (layer, mean)
    assert L.hook_count(model) == 0


def test_mean_std_variant_centres_then_scales():
    model, xb = random_stack(3, "linear", "notebook", 4), batch("linear")
    report = L.lsuv_init(model, xb, "mean_std")
    # The std phase runs last, so each layer ends on unit std; its mean is no longer exactly 0.
    assert all(abs(r.std_after - 1) <= TOL for r in report)
    assert all(r.mean_via == "sub" for r in report)
    assert any(abs(r.mean_after) > TOL for r in report)


def test_first_layer_is_included_and_order_is_execution_order():
    class Shuffled(nn.Module):
        """Registers its layers in the opposite order to the one it calls them in."""

        def __init__(self):
            super().__init__()
            self.late, self.late_act = nn.Linear(8, 8), nn.ReLU()
            self.early, self.early_act = nn.Linear(4, 8), nn.ReLU()

        def forward(self, x):
            return self.late_act(self.late(self.early_act(self.early(x))))

    model = Shuffled()
    pairs = find_pairs(model, torch.randn(5, 4))
    assert [(p[0], p[1]) for p in pairs] == [(model.early, model.early_act), (model.late, model.late_act)]
    report = L.lsuv_init(model, torch.randn(64, 4), "std")
    assert [r.layer for r in report] == ["early", "late"]


def test_batchnorm_between_layer_and_activation_is_paired_and_untouched():
    model = L.get_model(norm=nn.BatchNorm2d)
    bn = model[0][1]
    before = bn.running_mean.clone()
    L.lsuv_init(model, torch.randn(32, 1, 32, 32), "std")
    assert len(find_pairs(model, torch.randn(2, 1, 32, 32))) == 4
    assert torch.equal(bn.running_mean, before)  # eval mode: BatchNorm statistics not updated


def test_explicit_pairs_and_custom_activation_type():
    class Swishy(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    model = nn.Sequential(nn.Linear(10, 20), Swishy(), nn.Linear(20, 20), Swishy())
    xb = torch.randn(128, 10)
    assert find_pairs(model, xb) == []  # not an activation unless named
    report = L.lsuv_init(model, xb, "std", act_types=(Swishy,))
    assert len(report) == 2 and report.all_converged
    only_first = L.lsuv_init(model, xb, "std", pairs=[(model[0], model[1])])
    assert [r.layer for r in only_first] == ["0"]


def test_plain_relu_mean_variant_raises_instead_of_looping():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU())
    for variant in ("mean_std", "loop"):
        with pytest.raises(ValueError, match="no negative values"):
            L.lsuv_init(model, torch.randn(64, 10), variant)
    assert L.hook_count(model) == 0


def test_measuring_the_layer_output_uses_the_bias():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU())
    xb = torch.randn(256, 10) + 2
    report = L.lsuv_init(model, xb, "loop", measure="layer")
    assert report.all_converged and all(r.mean_via == "bias" for r in report)
    with torch.no_grad():
        out = model[0](xb)
    assert abs(out.mean().item()) <= TOL and abs(out.std().item() - 1) <= TOL


def test_max_iters_is_respected_on_a_net_that_cannot_converge():
    class Saturating(nn.Module):
        """Outputs lie in (-0.5, 0.5), so their std can never reach 1."""

        def forward(self, x):
            return 0.5 * torch.tanh(x)

    model = nn.Sequential(nn.Linear(10, 10), Saturating())
    with pytest.warns(UserWarning, match="not converged"):
        report = L.lsuv_init(model, torch.randn(64, 10), "std", max_iters=7, act_types=(Saturating,))
    assert report[0].iterations == 7 and not report[0].converged and report[0].status == "not converged"


def test_statistics_that_ignore_the_weights_stop_the_loop_before_overflow():
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)  # layer 2 sees only zeros: its output is its bias, whatever its weights
        model[2].bias.copy_(torch.linspace(0.1, 1.0, 10))
    with pytest.warns(UserWarning, match="do not respond"):
        report = L.lsuv_init(model, torch.randn(64, 10), "std", max_iters=500)
    assert report[1].iterations == 1 and not report[1].converged
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_dead_layer_is_skipped_without_nan():
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU())
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].bias.fill_(-1.0)  # every ReLU output is 0: std 0
    with pytest.warns(UserWarning, match="dead"):
        report = L.lsuv_init(model, torch.randn(64, 10), "std")
    assert report[0].status.startswith("dead") and report[0].iterations == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_exception_inside_forward_still_removes_hooks():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), Boom())
    with pytest.raises(RuntimeError, match="boom"):
        L.lsuv_init(model, torch.randn(8, 4), "std")
    assert L.hook_count(model) == 0


def test_mode_device_dtype_preserved_and_no_grads():
    model = random_stack(0, "conv", "general", 3)
    model.train()
    model[1].eval()  # a mixed state must survive exactly
    modes = [m.training for m in model.modules()]
    L.lsuv_init(model, batch("conv").double(), "loop")  # input dtype follows the model, not the reverse
    assert [m.training for m in model.modules()] == modes
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


def test_orthonormal_preinit_gives_orthonormal_rows_before_scaling():
    model = nn.Sequential(nn.Linear(16, 8), nn.ReLU())
    report = L.lsuv_init(model, torch.randn(512, 16), "std", orthonormal=True)
    w = model[0].weight
    gram = w @ w.T
    # Rows stay mutually orthogonal; LSUV only rescales them, all by one factor.
    off_diag = gram - torch.diag(torch.diag(gram))
    assert off_diag.abs().max() < 1e-5
    assert torch.allclose(torch.diag(gram), torch.diag(gram)[0].expand(8), rtol=1e-4)
    assert report.all_converged


def test_bad_arguments_name_the_problem():
    model, xb = random_stack(0, "linear", "general", 2), batch("linear")
    with pytest.raises(ValueError, match="unknown LSUV variant 'paper'"):
        L.lsuv_init(model, xb, "paper")
    with pytest.raises(ValueError, match="measure"):
        L.lsuv_init(model, xb, measure="input")
    with pytest.raises(ValueError, match="max_iters"):
        L.lsuv_init(model, xb, max_iters=0)
    with pytest.raises(ValueError, match="no \\(weight layer, activation\\) pairs"):
        L.lsuv_init(nn.Sequential(nn.Linear(12, 3)), xb)
    no_bias = nn.Sequential(nn.Linear(12, 8, bias=False), nn.LeakyReLU())
    with pytest.raises(ValueError, match="bias=False"):
        L.lsuv_init(no_bias, xb, "loop")


def test_report_prints_and_converts_to_data():
    model, xb = random_stack(1, "conv", "general", 3), batch("conv")
    report = L.lsuv_init(model, xb, "loop")
    text = str(report)
    assert text.splitlines()[0].split()[:3] == ["layer", "activation", "iterations"]
    assert len(text.splitlines()) == 4
    records = report.to_records()
    assert set(records[0]) >= {"layer", "iterations", "mean_before", "std_before", "mean_after", "std_after",
                               "converged"}
    assert report._repr_markdown_().count("\n") == 4


def test_callback_initialises_from_a_training_batch_without_changing_data_order():
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(300, 1, 32, 32, generator=g) * 255).to(torch.uint8)
    y = torch.randint(0, 10, (300,), generator=g)
    ds = L.ImageSet("toy", x, y, x[:50], y[:50], tuple("0123456789"))
    act = partial(L.GeneralRelu, leak=0.1, sub=0.4)
    runs = {}
    for lsuv in (None, "loop"):
        L.set_seed(0)
        model = L.get_model(act=act)
        dls = L.dataloaders(ds, 64, seed=0)
        first = dls.train.one_batch()[1]
        cb = L.LSUVCallback("loop") if lsuv else None
        learn = L.Learner(model, dls, lr=0.01, cbs=[cb] if cb else [], progress=False).fit(1)
        runs[lsuv] = (first, dls.train.order(torch.Generator().manual_seed(0)), cb)
    assert torch.equal(runs[None][0], runs["loop"][0])
    report = runs["loop"][2].report
    assert report is not None and len(report) == 4 and report.all_converged
    assert L.hook_count(learn.model) == 0


@pytest.mark.real_data
def test_notebook_lenet_std_leaves_positive_means_loop_leaves_zero(monkeypatch):
    """On the seed notebook's net, 'std' leaves post-ReLU means of roughly 0.3-0.7; 'loop' leaves ~0."""
    if REAL_MIRROR:
        monkeypatch.setenv("LSUV_DATA_DIR", REAL_MIRROR)
    if not L.data.available("mnist"):
        pytest.skip("MNIST mirror not found (set LSUV_DATA_DIR to the folder holding mnist/)")
    ds = L.load_images("mnist").padded(32)
    dls = L.dataloaders(ds, 256, normalise=True, seed=0)
    xb = dls.train.one_batch()[0]
    means = {}
    for variant in ("std", "loop"):
        L.set_seed(0)
        model = L.lenet()
        L.lsuv_init(model, xb, variant)
        means[variant] = [r["mean"] for r in L.measure_activations(model, xb)]
    assert len(means["std"]) == 4
    assert all(0.2 <= m <= 0.9 for m in means["std"]), means["std"]
    assert all(abs(m) <= TOL * 1.01 for m in means["loop"]), means["loop"]
