r"""What a deep stack of linear + ReLU layers did to its signal, in numbers and sentences (chapter 1).

Each function reads the rows `measure_activations` returns for one stack (one row per ReLU,
with its output's `mean` and `std`), or the std curves built from them, and returns what the
page says. The rule behind them: a linear layer with $n$ inputs and weights of variance
$\sigma^2$, followed by a ReLU, multiplies the second moment $q = \mathbb{E}[a^2]$ of the signal
by $n\sigma^2/2$ on average; Kaiming's $\sigma^2 = 2/n$ makes that average exactly 1.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

from .page import sci

# std / root mean square of max(0, z) for a centred Gaussian z: sqrt(1 - 1/pi). A ReLU's output is
# never negative, so part of its second moment is its mean, and its std is the rest.
RELU_STD_SHARE = math.sqrt(1 - 1 / math.pi)
# A layer's std more than this factor away from 1 has not survived in any useful sense.
SURVIVES = 10.0


def second_moments(rows: Sequence[dict]) -> list[float]:
    r"""$q = \mathbb{E}[a^2] = \mathrm{std}^2 + \mathrm{mean}^2$ after each layer."""
    return [r["std"] ** 2 + r["mean"] ** 2 for r in rows]


def layer_factors(rows: Sequence[dict], input_moment: float) -> list[float]:
    """What each layer multiplied the second moment by: $q_l / q_{l-1}$, with $q_0$ = `input_moment`."""
    q = [input_moment, *second_moments(rows)]
    return [b / a for a, b in zip(q, q[1:])]


def lost_at(stds: Sequence[float]) -> tuple[int, str] | None:
    """`(layer, "overflowed" or "fell to 0")` for the first layer (from 1) whose std is no longer a
    positive finite number, None when every layer's is."""
    for layer, s in enumerate(stds, start=1):
        if s is None or not math.isfinite(s):
            return layer, "overflowed"
        if s <= 0:
            return layer, "fell to 0"
    return None


def _growth(stds: Sequence[float]) -> float:
    """The geometric mean of the std's layer-to-layer ratio, over the layers it stayed a positive number."""
    lost = lost_at(stds)
    good = list(stds[:lost[0] - 1] if lost else stds)
    return (good[-1] / good[0]) ** (1 / (len(good) - 1)) if len(good) > 1 else math.nan


def _num(x: float) -> str:
    return sci(x, ".2f" if abs(x) >= 0.1 else ".4f")


def _fate(stds: Sequence[float]) -> str:
    lost = lost_at(stds)
    if lost is None:
        return f"ended at {_num(stds[-1])}"
    layer, what = lost
    return f"{what} at layer {layer}"


def ends_text(curves: dict[str, Sequence[float]], sigmas: dict[str, float], width: int) -> str:
    """A Markdown list under the figure: what became of each curve, with the measured and derived
    per-layer factor of the std for the plain normal draws (`sigmas`: `{name: sigma}`)."""
    depth = len(next(iter(curves.values())))
    lines = []
    for name, stds in curves.items():
        lost = lost_at(stds)
        text = f"- **{name}**: the std "
        if name in sigmas:
            text += (f"changed by a factor of {_growth(stds):.3g} per layer (the rule below predicts "
                     f"$\\sqrt{{n\\sigma^2/2}}$ = {math.sqrt(width * sigmas[name] ** 2 / 2):.3g}) and ")
        text += _fate(stds)
        if lost and lost[1] == "overflowed":
            text += (": it passed the largest number a 32-bit float holds, about 3.4 × 10³⁸, and is not a "
                     "number after that")
        elif lost:
            text += ": it shrank below the smallest number a 32-bit float holds, about 1.4 × 10⁻⁴⁵"
        lines.append(text + ".")
    return f"The activations' std through the {depth} layers:\n\n" + "\n".join(lines)


def kaiming_text(rows: Sequence[dict], input_moment: float, width: int, n_inputs: int | None = None) -> str:
    r"""Why one Kaiming stack ends below 1 although the rule keeps the second moment at 1 on average.

    The spread $s$ of the layer factors around their average $\bar f$ sets their drift: by
    $\log(1 + d) \approx d - d^2/2$ their logarithms average about $\ln \bar f - \tfrac12 (s/\bar f)^2$.
    For one input $s = \sqrt{5/n}$ at width $n$ (the square of a ReLU'd Gaussian has a variance 5
    times its squared mean, averaged over $n$ units); a second moment averaged over `n_inputs`
    inputs varies less.
    """
    factors = layer_factors(rows, input_moment)
    logs = [math.log(f) for f in factors]
    q = second_moments(rows)[-1]
    rms, std = math.sqrt(q), rows[-1]["std"]
    mean, spread = statistics.mean(factors), statistics.stdev(factors)
    margin = 2 * spread / math.sqrt(len(factors))  # two standard errors of that mean
    verdict = ("Kaiming's rule holds" if abs(mean - 1) <= margin else
               f"further from 1 than two standard errors ({margin:.3f}) allow")
    one, cost = math.sqrt(5 / width), (spread / mean) ** 2 / 2
    if n_inputs and n_inputs > 1:
        versus = ("so this stack's spread is smaller" if spread < one else
                  f"although this stack's spread is not smaller: {len(factors)} factors pin it down only to about "
                  f"±{spread / math.sqrt(2 * (len(factors) - 1)):.2f}")
        theory = (f" (For a single input the spread would be $\\sqrt{{5/n}}$ = {one:.2f} at this width, n = {width}. "
                  f"Here each second moment is an average over {n_inputs} inputs, which evens out the part of each "
                  f"factor that depends on the input, {versus}.)")
    else:
        theory = f" (For a single input it is $\\sqrt{{5/n}}$ = {one:.2f} at this width, n = {width}.)"
    return (
        f"The {len(factors)} factors by which this stack's layers multiplied the second moment averaged "
        f"**{mean:.3f}**: {verdict}. But each is a random draw: they spread with a standard deviation of "
        f"s = {spread:.2f}.{theory} A product of random factors usually ends below their average multiplied by itself "
        f"as often, because a factor of $1 - d$ costs more than $1 + d$ gains: by $\\log(1 + d) \\approx d - d^2/2$, a "
        f"spread s around an average $\\bar f$ costs each factor's logarithm about $\\tfrac12 (s/\\bar f)^2$ = "
        f"{_num(cost)}, so the logarithms should average about $\\ln \\bar f$ − {_num(cost)} = "
        f"{_num(math.log(mean) - cost)}. They averaged {_num(statistics.mean(logs))}, and {len(factors)} of them "
        f"multiply to $e^{{{sum(logs):.2f}}}$ = {math.exp(sum(logs)):.2f}. With an input "
        f"second moment of {input_moment:.3f}, the last layer's second moment is {q:.2f}, its root mean square "
        f"{rms:.2f}.\n\nThe figure shows the std, which is {std / rms:.2f} of the root mean square here "
        f"($\\sqrt{{1 - 1/\\pi}}$ = {RELU_STD_SHARE:.2f} for a Gaussian input, as above), and {std / rms:.2f} × "
        f"{rms:.2f} = **{std:.2f}**. Averaged over many draws of the weights, the second moment stays 1; any one "
        f"draw of a deep, finite stack drifts. LSUV, which measures each layer on the data, does not.")


def answer(curves: dict[str, Sequence[float]]) -> str:
    """The chapter's one-sentence answer: which initialisations kept the signal, and where the others lost it."""
    depth = len(next(iter(curves.values())))
    kept = [n for n, s in curves.items() if not lost_at(s) and 1 / SURVIVES <= s[-1] <= SURVIVES]
    fates = _and([f"{_fate(stds)} with {name} weights" for name, stds in curves.items()])
    if kept and len(kept) < len(curves):
        return (f"Yes: through {depth} ReLU layers the activations' std {fates}; only {_and(kept)} kept it "
                f"within a factor of {SURVIVES:g} of 1.")
    if kept:
        return f"Not at this depth: through {depth} ReLU layers the activations' std {fates}."
    return f"Through {depth} ReLU layers no initialisation kept the std near 1: it {fates}."


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
