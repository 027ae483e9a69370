"""lsuvlib.deep_stack: what chapter 1's deep stack did to its signal, checked against values computed here."""
from __future__ import annotations

import math
import statistics

import pytest
import torch

import lsuvlib as L
from lsuvlib import deep_stack


@pytest.fixture(scope="module")
def kaiming_stack():
    """A real Kaiming stack of 12 ReLU layers of width 64, measured on 256 standard-normal inputs."""
    x = torch.randn(256, 64, generator=torch.Generator().manual_seed(0))
    L.set_seed(0)
    model = L.init_kaiming(L.mlp(12, 64))
    return x, L.measure_activations(model, x)


def test_relu_std_share_is_what_a_gaussian_through_a_relu_gives():
    a = torch.relu(torch.randn(2_000_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    assert deep_stack.RELU_STD_SHARE == pytest.approx((a.std() / a.pow(2).mean().sqrt()).item(), abs=1e-3)


def test_layer_factors_multiply_out_to_the_last_second_moment(kaiming_stack):
    x, rows = kaiming_stack
    q0 = x.pow(2).mean().item()
    factors = deep_stack.layer_factors(rows, q0)
    assert len(factors) == 12
    assert q0 * math.prod(factors) == pytest.approx(rows[-1]["std"] ** 2 + rows[-1]["mean"] ** 2, rel=1e-9)
    assert deep_stack.second_moments(rows)[0] == pytest.approx(q0 * factors[0])


def test_lost_at_names_the_first_layer_that_left_the_float_range():
    assert deep_stack.lost_at([1.0, 8.0, math.inf, math.nan]) == (3, "overflowed")
    assert deep_stack.lost_at([1.0, None]) == (2, "overflowed")  # NaN saved to JSON comes back as None
    assert deep_stack.lost_at([0.1, 1e-40, 0.0]) == (3, "fell to 0")
    assert deep_stack.lost_at([0.8, 0.6]) is None


def test_ends_text_gives_the_measured_and_the_derived_factor():
    curves = {"N(0, 1)": [8.0 ** k for k in range(1, 5)] + [math.nan], "Kaiming": [0.8, 0.7, 0.75, 0.6, 0.61]}
    text = deep_stack.ends_text(curves, {"N(0, 1)": 1.0}, width=128)
    assert "changed by a factor of 8 per layer" in text and "predicts $\\sqrt{n\\sigma^2/2}$ = 8)" in text
    assert "overflowed at layer 5" in text and "- **Kaiming**: the std ended at 0.61." in text
    assert "nan" not in text.lower().replace("not a number", "")


def test_kaiming_text_reconciles_the_last_std_from_its_parts(kaiming_stack):
    x, rows = kaiming_stack
    q0 = x.pow(2).mean().item()
    factors = deep_stack.layer_factors(rows, q0)
    text = deep_stack.kaiming_text(rows, q0, width=64)
    q = rows[-1]["std"] ** 2 + rows[-1]["mean"] ** 2
    mean = sum(factors) / len(factors)
    assert f"averaged **{mean:.3f}**" in text
    assert f"root mean square {math.sqrt(q):.2f}" in text
    assert f"= **{rows[-1]['std']:.2f}**" in text
    assert f"(For a single input it is $\\sqrt{{5/n}}$ = {math.sqrt(5 / 64):.2f} at this width, n = 64.)" in text
    assert "-" not in text.split("averaged")[2].split("(")[0]  # a negative mean log is written with a true minus
    s = statistics.stdev(factors)
    cost = (s / mean) ** 2 / 2  # what the spread costs each logarithm, to second order
    assert f"about $\\tfrac12 (s/\\bar f)^2$ = {cost:.4f}, so" in text
    predicted, measured = math.log(mean) - cost, statistics.mean(math.log(f) for f in factors)
    assert abs(predicted - measured) < cost / 2, "the second-order rule explains most of the drift"
    assert f"= {predicted:.4f}. They averaged {measured:.4f}".replace("-", "−") in text
    assert text.count("never negative") == 0, "the ReLU's mean is explained once, in the chapter's own text"
    averaged = deep_stack.kaiming_text(rows, q0, width=64, n_inputs=256)
    assert f"an average over 256 inputs" in averaged
    assert ("so this stack's spread is smaller" in averaged) == (s < math.sqrt(5 / 64))


def test_answer_says_which_initialisations_kept_the_signal():
    lost = {"N(0, 1)": [10.0, 1e20, math.nan], "N(0, 0.01)": [0.08, 1e-40, 0.0], "LSUV": [1.0, 1.0, 1.0]}
    text = deep_stack.answer(lost)
    assert text.startswith("Yes: through 3 ReLU layers")
    assert "overflowed at layer 3 with N(0, 1) weights" in text and "fell to 0 at layer 3" in text
    assert text.endswith("only LSUV kept it within a factor of 10 of 1.")
    assert deep_stack.answer({"Kaiming": [0.8, 0.7], "LSUV": [1.0, 1.0]}).startswith("Not at this depth")
    assert "ended at $2.5 \\times 10^{4}$" in deep_stack.answer({"N(0, 1)": [8.0, 25_000.0]})
