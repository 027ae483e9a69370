"""lsuvlib.depth: the plain deep MLP, the initialisation table and what each scheme leaves at the start."""
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from lsuvlib import depth as D
from lsuvlib.init import WEIGHT_LAYERS


def images(n_in, n_classes=10):
    """What `train_setup` reads of an `ImageSet`: the size of an image and the classes."""
    return SimpleNamespace(x_train=torch.zeros(1, n_in), classes=list(range(n_classes)))


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
        D.train_setup("xavier", 5, 8, images(4))


def test_train_setup_sizes_the_network_for_its_dataset():
    model = D.train_setup("kaiming", 4, 8, images(20, n_classes=5))["make_model"]()
    layers = _weight_layers(model)
    assert (layers[0].in_features, layers[-1].out_features) == (20, 5)
    with pytest.raises(TypeError, match=r"ds: the ImageSet the network will see \(from lsuvlib.prepare\) .* got 784"):
        D.train_setup("kaiming", 4, 8, 784)


def test_same_seed_same_default_weights_for_every_scheme():
    """Each scheme starts from the PyTorch weights of its seed; only its own rule changes them."""
    torch.manual_seed(3)
    default = D.train_setup("default", 4, 8, images(10))["make_model"]()
    torch.manual_seed(3)
    lsuv = D.train_setup("lsuv_paper", 4, 8, images(10))
    assert lsuv["lsuv"] == {"variant": "paper"}
    again = lsuv["make_model"]()  # LSUV runs later, in the training callback
    for a, b in zip(default.parameters(), again.parameters()):
        assert torch.equal(a, b)


def test_data_free_schemes_do_what_they_say():
    torch.manual_seed(0)
    kaiming = D.train_setup("kaiming", 3, 64, images(64))["make_model"]()
    ortho = D.train_setup("orthonormal", 3, 64, images(64))["make_model"]()
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
    stds = D.init_profile("lsuv_paper", 12, 16, images(36), xb, seed=0)
    assert len(stds) == 12
    assert all(abs(s ** 2 - 1) < 0.1 for s in stds)  # the paper's tolerance on the variance


def test_init_profile_default_input_signal_vanishes_while_biases_keep_the_total():
    xb = torch.randn(128, 1, 6, 6)
    signal = D.init_profile("default", 20, 16, images(36), xb, seed=0, over="batch")
    total = D.init_profile("default", 20, 16, images(36), xb, seed=0, over="all")
    assert signal[-1] < signal[0] / 100
    assert total[-1] > 10 * signal[-1]  # what is left is the biases, the same for every input
    assert all(math.isfinite(s) for s in signal + total)
    with pytest.raises(ValueError, match="over must be"):
        D.init_profile("default", 3, 4, images(36), xb, seed=0, over="units")


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
