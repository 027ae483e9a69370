r"""Layer-Sequential Unit-Variance initialisation (Mishkin & Matas 2016), in five variants.

Layer by layer, in the order the forward pass runs them, LSUV measures an output the layer leads
to on one batch, mean $\mu$ and std $\sigma$, and divides the weights by $\sigma$ (some variants
also shift $\mu$ to 0) until $\sigma = 1$. Each variant's rule is the function named after it,
its body the update; `_Layer.readings` wraps every rule in the same guards.
"""
from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections import namedtuple
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from . import nonlinear
from .hooks import layer_names
from .learner import Callback
from .lsuv_report import LayerReport, LSUVReport, used_parameters
from .probe import LAYERS, Pair, checked_batch, measuring, plan, read, survey

_PATIENCE = 5          # steps without a 1 % closer gap before a loop counts as stalled
_DEAD_STD = 1e-8       # below this the measured output carries no signal to rescale
_STALLED = ("progress stalled; the measured output does not follow this layer's weights in proportion (a residual "
            "connection into it, or a normalisation after it, sets its scale)")


# ----------------------------------------------------------------------------- the variants' rules
# `t.readings(gap, tol)` yields (mu, sigma) until the gap is within tol; each docstring is `VARIANT_INFO`.

def _std(t: _Layer, tol: float) -> None:
    """W ← W/σ at the activation until |σ−1| ≤ 1e-3, the mean left where it is (the seed notebook's
    type 1)."""
    for mu, sigma in t.readings(lambda mu, sigma: abs(sigma - 1), tol):
        t.weight /= sigma


def _mean_std(t: _Layer, tol: float) -> None:
    """Shift by μ until |μ| ≤ 1e-3, then W ← W/σ until |σ−1| ≤ 1e-3 (the seed notebook's type 2, after fastai
    course-v3 lesson 07a)."""
    for mu, sigma in t.readings(lambda mu, sigma: abs(mu), tol):
        t.shift(mu)
    _std(t, tol)


def _loop(t: _Layer, tol: float) -> None:
    """Each step, from one measurement, shift by μ (through GeneralRelu's `sub` where there is one) and W ← W/σ,
    until |μ| and |σ−1| are both ≤ 1e-3 (the seed notebook's type 3)."""
    for mu, sigma in t.readings(lambda mu, sigma: max(abs(mu), abs(sigma - 1)), tol):
        t.shift(mu)
        t.weight /= sigma


def _blog(t: _Layer, tol: float) -> None:
    """Each step, from one measurement at the GeneralRelu output, bias ← bias − μ and W ← W/σ, until |μ| and
    |σ−1| are both < 1e-3 (the blog's LSUV callback, bounded here by `max_iters` where the blog had no bound)."""
    for mu, sigma in t.readings(lambda mu, sigma: max(abs(mu), abs(sigma - 1)), tol):
        t.bias -= mu
        t.weight /= sigma


def _paper(t: _Layer, tol: float) -> None:
    """Orthonormal weights first, then for each conv or linear layer, the last included, W ← W/√Var of its output
    before the non-linearity until |Var−1| < 0.1 (Mishkin & Matas 2016, Algorithm 1)."""
    for _, sigma in t.readings(lambda mu, sigma: abs(sigma ** 2 - 1), tol, strict=True):
        t.weight /= math.sqrt(sigma ** 2)


class _Variant(NamedTuple):
    rule: Callable[[_Layer, float], None]
    tol: float = 1e-3
    mean: str = "auto"         # "-": never moves the mean; "bias": always through the bias; "auto": `mean_via`
    measure: str = "auto"      # "activation" even when bounded (where the blog hooked); "layer" (the paper)
    every_layer: bool = False  # each layer alone at its own output, classifier included, orthonormal first


_RULES = {"std": _Variant(_std, mean="-"), "mean_std": _Variant(_mean_std), "loop": _Variant(_loop),
          "blog": _Variant(_blog, mean="bias", measure="activation"),
          "paper": _Variant(_paper, tol=0.1, mean="-", measure="layer", every_layer=True)}
VARIANTS = tuple(_RULES)
"""The variant names `lsuv_init` takes: `std`, `mean_std`, `loop`, `blog`, `paper`."""
VARIANT_INFO: dict[str, str] = {name: " ".join(inspect.getdoc(v.rule).split()) for name, v in _RULES.items()}
"""Each variant's rule in one sentence, from its function's docstring (chapter 7's table shows them)."""


# ----------------------------------------------------------------------------- the guards around a rule

_Reading = namedtuple("_Reading", "mean std centre low")  # centre: the mean the variant moves (0: none)


class _Layer:
    """One layer under its rule: what the rule writes (`weight`, `bias`, `shift`), the output it reads
    (`reading`, one pass of `forward(self)`), and the guards around the rule (`readings`)."""

    def __init__(self, p: Pair, measure: str, mean_via: str, max_iters: int, forward: Callable):
        host = p.layer.out_proj if isinstance(p.layer, nn.MultiheadAttention) else p.layer
        self.pair, self.weight, self.bias, self.max_iters, self.forward = p, host.weight, host.bias, max_iters, forward
        self.tensors = [x for x in (self.weight, self.bias) if x is not None]
        bounded = measure == "auto" and nonlinear.is_bounded(p.act)
        self.where = "layer" if p.act is None or measure == "layer" or bounded else "activation"
        self.via = _mean_via(mean_via, p, self.where, self.bias is not None)
        self.unmoved = mean_via == "auto" and self.via == "-"  # the variant moves means; this layer cannot
        self.point = (p.layer, p.layer_call) if self.where == "layer" else (p.act, p.act_call)
        self.points = [(p.layer, p.layer_call), self.point] if self.via == "pre_bias" else [self.point]
        if self.via == "sub":
            p.act.sub = p.act.sub or 0.0  # GeneralRelu(sub=None) skips the shift, as 0.0 does
        self.steps, self.met, self.stop, self.fault = 0, False, None, None  # a fault ends every later loop too

    def shift(self, mu: float) -> None:
        """Move the measured mean by −μ: `act.sub += mu` or `bias -= mu` (`mean_via`; "-" moves nothing)."""
        if self.via == "sub":
            self.pair.act.sub += mu
        elif self.via != "-":
            self.bias -= mu

    def readings(self, gap: Callable[[float, float], float], tol: float, strict: bool = False):
        """Yield `(mu, sigma)` until `gap(mu, sigma)` is within `tol`, or until a guard ends the loop, its
        reason kept in `fault` (weights not finite, output dead, an update that overflowed: undone) or in
        `stop` (statistics unchanged by a step, `_PATIENCE` steps without a 1 % closer gap, `max_iters`)."""
        r, before, best, stale, self.met, self.stop = self.last, None, math.inf, 0, False, None
        if not all(torch.isfinite(x).all() for x in self.tensors):
            self.fault = "broken: its weights hold NaN or infinite values; layer left unchanged"
        for n in range(self.max_iters + 1):
            if not (self.fault or _DEAD_STD <= r.std < math.inf):
                self.fault = f"dead: std fell to {r.std:.3g}" if self.steps else \
                    f"dead: std is {r.std:.3g}; layer left unchanged"
            g = gap(r.centre, r.std)
            self.met = not self.fault and (g < tol if strict else g <= tol)
            best, stale = (g, 0) if g < 0.99 * best else (best, stale + 1)
            if before and r[:3] == before[:3]:  # mean, std and centre as before the last step
                self.stop = "the statistics do not respond to this layer's weights"
            elif n == self.max_iters:
                self.stop = f"{n} steps (max_iters) were not enough; std {r.std:.4g}, mean {r.mean:.3g}"
            elif stale >= _PATIENCE:
                self.stop = _STALLED
            if self.fault or self.met or self.stop:
                return
            saved, before = [x.clone() for x in self.tensors], r
            self.steps += 1
            yield r.centre, r.std
            if not all(torch.isfinite(x).all() for x in self.tensors):
                for x, old in zip(self.tensors, saved):
                    x.copy_(old)  # never leave a NaN or infinite weight behind
                self.fault = "not converged: the next update would overflow the weights, so it was undone"
                return
            r = self.reading()

    def reading(self) -> _Reading:
        """One forward pass: the statistics of the measured output (and the layer's mean, for "pre_bias")."""
        found = self.forward(self)
        mean, std, low = found[self.point]
        centre = found[self.points[0]][0] if self.via == "pre_bias" else 0.0 if self.via == "-" else mean
        self.last = _Reading(mean, std, centre, low)
        return self.last

    def status(self, tol: float) -> str:
        """Why the last loop ended, in the report's words."""
        floor, kind = _precision(self.weight.dtype)
        if self.fault:
            return self.fault
        if tol < floor:
            return (f"ok: met tol {tol:g}, which is below {kind} precision (~{floor:.0e}), so only to that precision"
                    if self.met else f"not converged: tol {tol:g} is below {kind} precision (~{floor:.0e}); stopped "
                    f"at std {self.last.std:.4g}, mean {self.last.centre:.2g}")
        if self.met:
            return "ok: mean not moved (the layer has no bias and the activation no `sub`)" if self.unmoved else "ok"
        return f"not converged: {self.stop}"


def _mean_via(want: str, p: Pair, where: str, has_bias: bool) -> str:
    """Which of "sub", "bias", "pre_bias" moves the mean ("-": this variant or this layer moves none)."""
    if want == "auto":
        return ("sub" if where == "activation" and hasattr(p.act, "sub") else "-" if not has_bias
                else "bias" if where == "layer" else "pre_bias")
    if want == "sub" and (where == "layer" or not hasattr(p.act, "sub")):
        raise ValueError(f"mean_via='sub' shifts an activation's `sub` at its output; got {type(p.act).__name__} "
                         f"measured at the {where}")
    if want in ("bias", "pre_bias") and not has_bias:
        raise ValueError(f"mean_via={want!r} needs a bias, but {type(p.layer).__name__} was built with bias=False")
    return want


# ----------------------------------------------------------------------------- the public entry point

def lsuv_init(model: nn.Module, xb: torch.Tensor, variant: str = "loop", *, tol: float | None = None,
              max_iters: int = 50, measure: str = "auto", mean_via: str = "auto", orthonormal: bool | None = None,
              act_types: tuple[type[nn.Module], ...] | None = None,
              pairs: Sequence[tuple] | None = None, warn: bool = True, trace: bool = False) -> LSUVReport:
    r"""Initialise `model` in place with LSUV on the batch `xb`; return an `LSUVReport` of what it did.

    Layer by layer (conv, linear, attention) in the order the forward pass runs them, LSUV
    measures an output $a$ on `xb`, mean $\mu$ and std $\sigma$ over all its elements, and
    updates the layer until $\sigma = 1$ within `tol` (Mishkin & Matas 2016, arXiv:1511.06422)
    by the rule of `variant`, whose source `VARIANT_INFO` names:

    - `"std"`: $W \leftarrow W/\sigma$.
    - `"mean_std"`: shift by $\mu$ until $|\mu| \le$ `tol`, then as `"std"`.
    - `"loop"`: from one reading, shift by $\mu$ and $W \leftarrow W/\sigma$.
    - `"blog"`: as `"loop"`, at the activation, always shifting through the bias.
    - `"paper"`: orthonormal $W$, then $W \leftarrow W/\sqrt{\mathrm{Var}(a)}$ while $|\mathrm{Var}(a) - 1| \ge$ `tol`.

    $a$ is the output of the first activation module called after the layer, by call (a module
    used twice gives two pairs); a layer followed by another layer first (a classifier) is left
    alone. $a$ is the layer's own output with `measure="layer"`, before a bounded activation
    (`nonlinear.is_bounded`), in `"paper"`, and, with a warning, in a network without activation
    modules (`nn.TransformerEncoderLayer` calls its ReLU as a function). `nn.MultiheadAttention`'s
    output is linear in `out_proj.weight`, so that weight is divided by $\sigma$ and `out_proj.bias`
    moves the mean; the query, key and value projections keep the softmax's temperature. The shift
    by $\mu$ (`mean_via`) is `act.sub += mu` (`"sub"`), `bias -= mu` (`"bias"`; a `ValueError`
    after a ReLU, which no bias centres) or `bias -=` the layer output's mean (`"pre_bias"`);
    `"auto"` takes the first that applies of `sub`, `bias` at a layer's output, `pre_bias`.

    Every loop is bounded and never leaves a NaN or infinite weight; a layer that stops short, is
    dead (output std 0) or broken (weights not finite) gets `converged=False`, a status saying why,
    and a warning. Passes run in eval mode without gradients, leaving BatchNorm statistics,
    train/eval flags and hooks as they were; an exception from the model notes the layers already
    changed. The report has a `LayerReport` row per layer set, and `coverage` says what became of
    every module with trainable weights; one the forward pass used but LSUV never measured (a bare
    `nn.Parameter`, `nn.GRU`) also gets a warning.

    Args:
        model: the network, changed in place.
        xb: two or more inputs as training sees them, shape `(N, ...)` (a uint8 batch warns).
        variant: one of `VARIANTS`.
        tol: on $|\mu|$ and $|\sigma - 1|$ (`"paper"`: $|\mathrm{Var} - 1|$); `None`: 1e-3 (`"paper"`: 0.1).
        max_iters: the most steps per layer and loop, an int >= 1.
        measure: `"auto"`, `"activation"` or `"layer"`.
        mean_via: `"auto"`, `"sub"`, `"bias"` or `"pre_bias"`.
        orthonormal: orthonormal pre-initialisation (`nn.init.orthogonal_`); `None`: only for `"paper"`.
        act_types: module types that count as activations (default: the registry).
        pairs: `(weight layer, activation)` pairs or `Pair` rows to process, in order.
        warn: warn about each layer not converged, dead, broken or never reached.
        trace: keep every pass, through the whole network, in `report.passes`: dicts with `index`,
            `target` (the layer being set), `iteration` and `stats` (`layer`, `activation`, `mean`, `std`).
    """
    v, tol, measure, mean_via, pairs = _checked(variant, tol, max_iters, measure, mean_via, pairs)
    xb, (floor, kind) = checked_batch(model, xb), _precision(next(model.parameters()).dtype)
    if tol < floor:
        warnings.warn(f"LSUV: tol={tol:g} is below the {kind} precision of the measured statistics (~{floor:.1e}); "
                      "layers can meet it only to that precision", stacklevel=2)
    act_types = nonlinear.activation_types() if act_types is None else tuple(act_types)
    names, report = layer_names(model), LSUVReport(variant=variant, tol=tol)

    def forward(t: _Layer) -> dict:
        """One pass for `t`, ended once `t` is measured; traced: through the whole network, recorded."""
        report.forward_passes += 1
        points = t.points + [u.point for u in layers] if trace else t.points
        _, found, _ = read(model, xb, dict.fromkeys(m for m, _ in points), points, stop=None if trace else t.point)
        for m, c in t.points:
            if (m, c) not in found:
                raise RuntimeError(f"{names.get(m)} ({type(m).__name__}) did not run (call {c + 1}) in the forward "
                                   "pass, so it cannot be measured; check pairs=")
        if trace:
            report.passes.append(dict(index=len(report.passes), target=names[t.pair.layer], iteration=t.steps, stats=[
                dict(layer=names[u.pair.layer], activation=type(u.point[0]).__name__, mean=found[u.point][0],
                     std=found[u.point][1]) for u in layers if u.point in found]))
        return found

    with measuring(model):
        with torch.enable_grad():  # the one pass with a graph: `coverage` asks it which weights the output used
            order, out = survey(model, xb, act_types)
            used = used_parameters(model, out)
        todo = pairs if pairs is not None else plan(order, act_types, v.every_layer)
        if pairs is None and all(p.act is None for p in todo) and not v.every_layer:  # no activation modules
            todo = plan(order, act_types, every_layer=True)  # so measure each layer's own output
            if todo and warn:
                warnings.warn("LSUV: no activation module follows a weight layer (an activation called as a "
                              "function is invisible to hooks), so each layer's own output is measured, as in "
                              "'paper'", stacklevel=2)
        if not todo:
            raise ValueError("no conv, linear or attention layer ran on this batch; pass pairs=[(layer, act)]")
        layers = [_Layer(p, measure, mean_via, max_iters, forward) for p in todo]
        ortho = v.every_layer if orthonormal is None else orthonormal
        for t in layers if ortho else []:
            nn.init.orthogonal_(t.weight)
        try:
            for t in layers:
                report.append(_adjust(t, variant, v.rule, tol, names, warn))
        except Exception as e:
            changed = dict.fromkeys(names[t.pair.layer] for t in layers if ortho or t.steps)
            e.add_note(f"LSUV had already changed {', '.join(changed) or 'no layer'} when this was raised; "
                       "those layers keep their new weights")
            raise
    report.account(model, todo, order, used, "not among pairs=" if pairs is not None else
                   "no activation follows it before the next weight layer", warn)
    return report


def _adjust(t: _Layer, variant: str, rule: Callable, tol: float, names: dict, warn: bool) -> LayerReport:
    """Run the variant's rule on one layer; its report row (and a warning if it did not converge)."""
    p, first = t.pair, t.reading()
    if t.via == "bias" and t.where == "activation" and first.low >= 0 and abs(first.mean) > tol \
            and _DEAD_STD <= first.std < math.inf:
        raise ValueError(
            f"LSUV {variant!r}: the activation after layer {names[p.layer]} ({type(p.act).__name__}) produces no "
            "negative values, so no bias can bring its mean to 0. Use mean_via='pre_bias' (centre the layer's "
            "output), variant='std', measure='layer', or an activation with a `sub` shift such as GeneralRelu.")
    rule(t, tol)
    act = "-" if p.act is None else f"{names[p.act]} ({type(p.act).__name__})" + (
        f" call {p.act_call + 1}" if p.act_call else "")
    row = LayerReport(names[p.layer], act, t.steps, first.mean, first.std, t.last.mean, t.last.std, t.met,
                      t.status(tol), t.via, t.where, None if t.via == "-" else t.last.centre)
    if not t.met and warn:
        warnings.warn(f"LSUV ({variant}) on layer {row.layer}: {row.status} after {row.iterations} steps "
                      f"(mean {row.mean_after:.3g}, std {row.std_after:.3g})", stacklevel=3)
    return row


# ----------------------------------------------------------------------------- checking the arguments

def _checked(variant, tol=None, max_iters=50, measure="auto", mean_via="auto", pairs=None, **_):
    """The arguments that need no model, checked; the variant's rule, `tol`, `measure` and `mean_via` (the
    variant's own where it fixes them), and the `Pair`s."""
    if variant not in _RULES:
        raise ValueError(f"unknown LSUV variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    v = _RULES[variant]
    for name, value, allowed in (("measure", measure, ("auto", "activation", "layer")),
                                 ("mean_via", mean_via, ("auto", "sub", "bias", "pre_bias"))):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")
    if v.measure != "auto" and measure not in ("auto", v.measure):
        raise ValueError(f"variant {variant!r} measures the {v.measure}'s output, as its source does; "
                         f"measure={measure!r} would be another rule: use measure='auto'")
    if v.mean == "bias" and mean_via not in ("auto", "bias"):
        raise ValueError(f"variant {variant!r} moves the mean through the bias; mean_via={mean_via!r} would be "
                         "another rule (try variant='loop')")
    if isinstance(max_iters, bool) or not isinstance(max_iters, numbers.Integral):
        raise TypeError(f"max_iters must be an int (the most steps per layer), got {max_iters!r} "
                        f"({type(max_iters).__name__})")
    if max_iters < 1:
        raise ValueError(f"max_iters must be at least 1, got {max_iters}")
    tol = v.tol if tol is None else tol
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    return (v, float(tol), measure if v.measure == "auto" else v.measure, mean_via if v.mean == "auto" else v.mean,
            None if pairs is None else [_checked_pair(i, p) for i, p in enumerate(pairs)])


def _checked_pair(i: int, p) -> Pair:
    items = tuple(p) if isinstance(p, (tuple, list)) else (p,)
    if 2 <= len(items) <= 4 and isinstance(items[0], LAYERS) and isinstance(items[1], (nn.Module, type(None))):
        return Pair(*items)
    got = ", ".join(type(x).__name__ for x in items[:2])
    hint = "; swap them" if len(items) > 1 and isinstance(items[1], LAYERS) else ""
    raise ValueError(f"pairs[{i}] must be (weight layer, activation), e.g. (nn.Linear, nn.ReLU); got ({got}){hint}")


def _precision(dtype: torch.dtype) -> tuple[float, str]:
    """How close to the goal a statistic can be resolved (a few dozen float32 ulps, or one ulp of the weights),
    and the dtype's name."""
    eps = torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps
    return max(64 * eps, torch.finfo(dtype).eps), str(dtype).removeprefix("torch.")


class LSUVCallback(Callback):
    """Run `lsuv_init` (keyword arguments checked when built) on the first training batch before the fit,
    drawn without advancing the loader's shuffling; the report is kept as `.report`."""

    order = -10  # before anything that hooks the model

    def __init__(self, variant: str = "loop", **kwargs):
        accepted = set(inspect.signature(lsuv_init).parameters) - {"model", "xb", "variant"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise TypeError(f"LSUVCallback got unknown lsuv_init arguments {unknown}; accepted: {sorted(accepted)}")
        _checked(variant, **kwargs)
        self.variant, self.kwargs, self.report = variant, kwargs, None

    def before_fit(self, learn) -> None:
        xb, _ = learn.dls.train.one_batch()
        self.report = lsuv_init(learn.model, xb, self.variant, **self.kwargs)
