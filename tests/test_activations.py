"""lsuvlib.activations: what an activation makes of a normal input, and what it takes in and gives out in a model.

(The recording callback `ActivationStats` is tested with the learner, in tests/test_learner.py.)"""
from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

from lsuvlib.activations import activation_moments, through_activation
from lsuvlib.models import GeneralRelu, get_model


def test_through_activation_matches_the_closed_forms():
    mean, std = through_activation(nn.ReLU())
    assert mean == pytest.approx(1 / math.sqrt(2 * math.pi))
    assert std == pytest.approx(math.sqrt(0.5 - 1 / (2 * math.pi)))
    mean, std = through_activation(GeneralRelu(leak=0.1, sub=0.4))  # leaky slope a: E = (1 - a) / sqrt(2 pi)
    assert mean == pytest.approx(0.9 / math.sqrt(2 * math.pi) - 0.4)
    assert std == pytest.approx(math.sqrt(1.01 / 2 - 0.81 / (2 * math.pi)))
    assert through_activation(nn.ReLU(), 0.0, 3.0) == pytest.approx(tuple(3 * v for v in through_activation(nn.ReLU())))
    assert through_activation(nn.Identity(), 0.5, 2.0) == pytest.approx((0.5, 2.0))


def test_through_activation_names_a_bad_std():
    with pytest.raises(ValueError, match=r"std must be >= 0 \(the input's standard deviation\), got -1"):
        through_activation(nn.ReLU(), 0.0, -1)
    assert through_activation(nn.ReLU(), -2.0, 0) == (0.0, 0.0), "a constant input gives a constant output"


def test_activation_moments_reads_each_activation_as_in_training_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = get_model(act=partial(GeneralRelu, leak=0.1, sub=0.4), norm=nn.BatchNorm2d, nfs=(1, 4, 8)).eval()
    bn = model[1][1]
    before = bn.running_var.clone()
    xb = torch.randn(32, 1, 16, 16)
    rows = activation_moments(model, xb)
    assert [r["layer"] for r in rows] == ["conv 1 (4 ch)", "conv 2 (8 ch)"]
    with torch.no_grad():  # the second block by hand, BatchNorm on the batch's own statistics
        h = model[0].train()(xb)
        z = nn.functional.batch_norm(model[1][0](h), None, None, bn.weight, bn.bias, training=True)
    model.eval()
    a = GeneralRelu(leak=0.1, sub=0.4)(z)
    assert rows[1]["in_std"] == pytest.approx(z.std().item(), rel=1e-5)
    assert rows[1]["out_mean"] == pytest.approx(a.mean().item(), abs=1e-6)
    assert rows[1]["out_std"] == pytest.approx(a.std().item(), rel=1e-5)
    assert torch.equal(bn.running_var, before) and not model.training


def test_activation_moments_needs_an_activation():
    with pytest.raises(ValueError, match="the model has no activation module to measure"):
        activation_moments(nn.Sequential(nn.Linear(4, 2)), torch.randn(3, 4))
