r"""Layer-Sequential Unit-Variance initialisation (Mishkin & Matas 2016), in five variants.

Taking one batch of real data and the weight layers in the order the forward pass runs them,
LSUV measures an output each layer leads to, with mean $\mu$ and std $\sigma$, divides the
weights by $\sigma$ (some variants also shift $\mu$ to 0) until $\sigma = 1$, and moves on.
Each variant's rule is the function named after it, its body the update; `_Target.readings`
wraps every rule in the same guards.
"""
from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections import Counter, namedtuple
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from types import SimpleNamespace
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn

from . import nonlinear
from .hooks import Hooks, layer_names
from .init import WEIGHT_LAYERS
from .learner import Callback

_LAYERS = (*WEIGHT_LAYERS, nn.MultiheadAttention)  # attention's output is linear in out_proj.weight
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
          nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)
_PATIENCE = 5          # steps without a 1 % closer gap before a loop counts as stalled
_DEAD_STD = 1e-8       # below this the measured output carries no signal to rescale


class Pair(NamedTuple):
    """A weight layer and the activation after it, each at one call (from 0 within a pass); `act` is
    `None` where the layer's own output is measured. A shared activation gives one pair per call."""

    layer: nn.Module
    act: nn.Module | None
    layer_call: int = 0
    act_call: int = 0


@dataclass
class LayerReport:
    """What LSUV did to one layer: its measured output before and after."""

    layer: str
    activation: str
    iterations: int
    mean_before: float
    std_before: float
    mean_after: float
    std_after: float
    converged: bool
    status: str              # "ok...", "not converged: <why>", "dead: ..." or "broken: ..." (left untouched)
    mean_via: str            # "sub", "bias", "pre_bias" or "-" (no mean moved)
    measured: str = "activation"       # where mean/std were measured: "activation" or "layer" output
    centred_mean: float | None = None  # final value of the mean the variant drives to 0 (None: none)


class LSUVReport(list):
    """`LayerReport` rows, one per layer set; `coverage` says, by name, what became of every module
    with trainable weights (printed below the table). Also `variant`, `tol`, `forward_passes`,
    `passes` (with `trace=True`) and `unpaired` (weight layers that ran but were left alone)."""

    columns = ("layer", "activation", "iterations", "mean_before", "std_before", "mean_after", "std_after",
               "converged", "mean_via", "measured", "status")

    def __init__(self, rows=(), variant: str = "", tol: float = 0.0):
        super().__init__(rows)
        self.variant, self.tol, self.forward_passes, self.passes = variant, tol, 0, []
        self.coverage: dict[str, str] = {}
        self.unpaired: list[tuple[str, str]] = []

    def to_records(self) -> list[dict]:
        return [asdict(r) for r in self]

    @property
    def all_converged(self) -> bool:
        return all(r.converged for r in self)

    def _others(self) -> list[str]:
        return [f"{name}: {what}" for name, what in self.coverage.items() if name not in {r.layer for r in self}]

    def _cells(self) -> list[list[str]]:
        return [[f"{x:.3f}" if isinstance(x, float) else str(x) for x in map(asdict(r).get, self.columns)]
                for r in self]

    def __str__(self) -> str:
        rows = [list(self.columns), *self._cells()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        return "\n".join(["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows] + self._others())

    def _repr_markdown_(self) -> str:
        rows = [self.columns, ["---"] * len(self.columns), *self._cells()]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows) + "".join(
            f"\n\n{line}" for line in self._others())


# ----------------------------------------------------------------------------- the variants' rules
# `t.readings(gap, tol)` yields the measured (mu, sigma) until gap(mu, sigma) is within tol or a
# guard ends the loop; the body is the update. Each docstring is the variant's `VARIANT_INFO`.

def _std(t: _Target, tol: float) -> None:
    """W ← W/σ at the activation until |σ−1| ≤ 1e-3; no mean move. Seed notebook's type 1 ('std only',
    which it calls like the paper; the paper's own rule is 'paper')."""
    for mu, sigma in t.readings(lambda mu, sigma: abs(sigma - 1), tol):
        t.weight /= sigma


def _mean_std(t: _Target, tol: float) -> None:
    """shift by μ until |μ| ≤ 1e-3, then W ← W/σ until |σ−1| ≤ 1e-3. Seed notebook's type 2, after fastai
    course-v3 lesson 07a."""
    for mu, sigma in t.readings(lambda mu, sigma: abs(mu), tol):
        t.shift(mu)
    _std(t, tol)


def _loop(t: _Target, tol: float) -> None:
    """each step, from one measurement: shift by μ and W ← W/σ, until |μ| and |σ−1| ≤ 1e-3; mean through
    GeneralRelu's sub. Seed notebook's type 3."""
    for mu, sigma in t.readings(lambda mu, sigma: max(abs(mu), abs(sigma - 1)), tol):
        t.shift(mu)
        t.weight /= sigma


def _blog(t: _Target, tol: float) -> None:
    """each step, from one measurement at the GeneralRelu output: bias ← bias − μ, W ← W/σ, until |μ| and
    |σ−1| < 1e-3. The blog's LSUV callback (bounded here by max_iters; the blog had no bound)."""
    for mu, sigma in t.readings(lambda mu, sigma: max(abs(mu), abs(sigma - 1)), tol):
        t.bias -= mu
        t.weight /= sigma


def _paper(t: _Target, tol: float) -> None:
    """orthonormal pre-init; per conv/linear layer, last included, W ← W/√Var of its output (before the
    non-linearity) until |Var−1| < 0.1. Mishkin & Matas 2016, Algorithm 1."""
    for _, sigma in t.readings(lambda mu, sigma: abs(sigma ** 2 - 1), tol, strict=True):
        t.weight /= math.sqrt(sigma ** 2)


class _Variant(NamedTuple):
    rule: Callable[[_Target, float], None]
    tol: float = 1e-3
    mean: str = "auto"         # "-": never moves the mean; "bias": always through the bias; "auto": `mean_via`
    measure: str = "auto"      # "activation" even when bounded (where the blog hooked); "layer" (the paper)
    every_layer: bool = False  # each layer alone at its own output, classifier included, orthonormal first


_RULES = {"std": _Variant(_std, mean="-"), "mean_std": _Variant(_mean_std), "loop": _Variant(_loop),
          "blog": _Variant(_blog, mean="bias", measure="activation"),
          "paper": _Variant(_paper, tol=0.1, mean="-", measure="layer", every_layer=True)}
VARIANTS = tuple(_RULES)
VARIANT_INFO: dict[str, str] = {name: " ".join(inspect.getdoc(v.rule).split()) for name, v in _RULES.items()}


# ----------------------------------------------------------------------------- the guards around a rule

_Reading = namedtuple("_Reading", "mean std centre low")  # centre: the mean the variant moves (0: none)


class _Target:
    """One layer under adjustment: where it is measured, what its rule writes, and the guards."""

    def __init__(self, run: SimpleNamespace, p: Pair, v: _Variant, measure: str, mean_via: str):
        self.run, self.pair, self.steps, self.met, self.stop = run, p, 0, False, None
        bounded = measure == v.measure == "auto" and nonlinear.is_bounded(p.act)
        self.where = "layer" if p.act is None or v.measure == "layer" or bounded else \
            "activation" if measure == "auto" else measure
        self.point = (p.layer, p.layer_call) if self.where == "layer" else (p.act, p.act_call)
        host = p.layer.out_proj if isinstance(p.layer, nn.MultiheadAttention) else p.layer
        self.weight, self.bias = host.weight, host.bias
        self.tensors = [x for x in (self.weight, self.bias) if x is not None]
        self.via = _mean_via(v.mean if v.mean != "auto" else mean_via, p, self.where, self.bias is not None)
        self.points = [(p.layer, p.layer_call), self.point] if self.via == "pre_bias" else [self.point]
        if self.via == "sub":
            p.act.sub = p.act.sub or 0.0  # GeneralRelu(sub=None) skips the shift, as 0.0 does
        self.status = None if all(torch.isfinite(x).all() for x in self.tensors) else "broken"

    def shift(self, mu: float) -> None:
        """Move the measured mean by −μ: `act.sub += mu` or `bias -= mu` (`mean_via`; "-" moves nothing)."""
        if self.via == "sub":
            self.pair.act.sub += mu
        elif self.via != "-":
            self.bias -= mu

    def readings(self, gap: Callable[[float, float], float], tol: float, strict: bool = False):
        """Yield `(mu, sigma)` until `gap(mu, sigma)` is within `tol` or a guard ends the loop: broken
        weights or a dead output (std 0 or not finite); an update leaving a weight not finite (undone);
        statistics that stop changing; `_PATIENCE` steps without a 1 % closer gap; `max_iters` steps."""
        r, before, best, stale = self.last, None, math.inf, 0
        self.met, self.stop = False, None
        for n in range(self.run.max_iters + 1):
            if self.status or not _DEAD_STD <= r.std < math.inf:
                self.status = self.status or "dead"
                return
            g = gap(r.centre, r.std)
            if g < tol if strict else g <= tol:
                self.met = True
                return
            best, stale = (g, 0) if g < 0.99 * best else (best, stale + 1)
            self.stop = ("stuck" if before and r[:3] == before[:3] else "max_iters" if n == self.run.max_iters
                         else "stalled" if stale >= _PATIENCE else None)
            if self.stop:
                return
            saved, before = [x.clone() for x in self.tensors], r
            self.steps += 1
            self.run.changed.setdefault(self.run.names[self.pair.layer])
            yield r.centre, r.std
            if not all(torch.isfinite(x).all() for x in self.tensors):
                for x, old in zip(self.tensors, saved):
                    x.copy_(old)  # never leave a NaN or infinite weight behind
                self.status = "overflow"
                return
            r = self.reading()

    def reading(self) -> _Reading:
        """One forward pass: the measured output's statistics (traced: every layer's, recorded)."""
        run = self.run
        run.report.forward_passes += 1
        every = [t.point for t in run.targets]
        found = _forward(run.model, run.xb, self.points + every if run.trace else self.points,
                         stop=None if run.trace else self.point)
        if run.trace:
            stats = [dict(layer=run.names[t.pair.layer], activation=type(t.point[0]).__name__, mean=found[t.point][0],
                          std=found[t.point][1]) for t in run.targets if t.point in found]
            run.report.passes.append(dict(index=len(run.report.passes), target=run.names[self.pair.layer],
                                          iteration=self.steps, stats=stats))
        for m, c in self.points:
            if (m, c) not in found:
                raise RuntimeError(f"{run.names.get(m)} ({type(m).__name__}) did not run (call {c + 1}) in the "
                                   "forward pass, so it cannot be measured; check pairs=")
        mean, std, low = found[self.point]
        centre = found[self.points[0]][0] if self.via == "pre_bias" else 0.0 if self.via == "-" else mean
        self.last = _Reading(mean, std, centre, low)
        return self.last


def _mean_via(want: str, p: Pair, where: str, has_bias: bool) -> str:
    """Which of 'sub', 'bias', 'pre_bias' moves the mean ('-': this variant or this layer moves none)."""
    if want == "auto":
        return ("sub" if where == "activation" and hasattr(p.act, "sub") else "-" if not has_bias
                else "bias" if where == "layer" else "pre_bias")
    if want == "sub" and (where == "layer" or not hasattr(p.act, "sub")):
        raise ValueError(f"mean_via='sub' shifts an activation's `sub` at its output; got {type(p.act).__name__} "
                         f"measured at the {where}")
    if want in ("bias", "pre_bias") and not has_bias:
        raise ValueError(f"mean_via={want!r} needs a bias, but {type(p.layer).__name__} was built with bias=False")
    return want


# ----------------------------------------------------------------------------- finding and measuring layers

@contextmanager
def _measuring(model: nn.Module):
    """Eval mode and no gradients for the block; each module's own train/eval flag restored after."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, training in modes.items():
            m.training = training


def _survey(model: nn.Module, xb: torch.Tensor, act_types) -> tuple[list[tuple[nn.Module, int]], set[int]]:
    """Every (module, call) in the order one pass runs them, and the ids of the trainable parameters
    the output depends on (autograd's graph already knows which weights the pass used)."""
    order, calls = [], Counter()

    def record(i, m, inp, out):
        order.append((m, calls[m]))
        calls[m] += 1

    params = [p for p in model.parameters() if p.requires_grad]
    with Hooks([m for m in model.modules() if not list(m.children()) or isinstance(m, (*act_types, *_LAYERS))],
               record), torch.enable_grad():
        out = model(xb)
        out = [out] if torch.is_tensor(out) else out.values() if isinstance(out, dict) else out
        outs = [o.sum() for o in out if torch.is_tensor(o) and o.requires_grad]
        grads = torch.autograd.grad(sum(outs), params, allow_unused=True) if outs and params else []
    return order, {id(p) for p, g in zip(params, grads) if g is not None}


def _plan(order: list[tuple[nn.Module, int]], act_types, every_layer: bool) -> list[Pair]:
    """In execution order, each layer with the first activation call after it (none if another layer
    comes first), or with `every_layer` each layer alone; attention always alone; each layer once."""
    todo, pending, seen = [], None, set()
    for m, call in order:
        if isinstance(m, _LAYERS) and m not in seen and (every_layer or isinstance(m, nn.MultiheadAttention)):
            seen.add(m)
            todo.append(Pair(m, None, call))
            pending = None
        elif isinstance(m, _LAYERS):
            pending = (m, call)
        elif isinstance(m, act_types) and pending is not None:
            if pending[0] not in seen:
                seen.add(pending[0])
                todo.append(Pair(pending[0], m, pending[1], call))
            pending = None
    return todo


def find_pairs(model: nn.Module, xb: torch.Tensor, act_types: tuple[type[nn.Module], ...] | None = None,
               ) -> list[Pair]:
    """Each Conv/Linear call paired with the first activation call after it, in execution order: by
    call (an activation used twice gives two pairs), passing over BatchNorm, pooling and dropout; a
    layer followed by another first is left out. `act_types`: default `nonlinear.ACTIVATION_TYPES`."""
    act_types = nonlinear.activation_types() if act_types is None else tuple(act_types)
    with _measuring(model):
        order, _ = _survey(model, xb, act_types)
    return [p for p in _plan(order, act_types, False) if p.act is not None]


class _Measured(Exception):
    """Raised inside a hook to end the forward pass once the last needed module has run."""


def _forward(model: nn.Module, xb: torch.Tensor, points: Sequence[tuple[nn.Module, int]], stop=None) -> dict:
    """`(mean, std, min)` of each (module, call) in `points` on one pass, which ends after `stop`; taken
    in the hook, before an in-place op rewrites the tensor, and in float32 at least (half rounds σ)."""
    calls, found = Counter(), {}

    def hook(i, m, inp, out):
        key = (m, calls[m])
        calls[m] += 1
        if key in points:
            a = out[0] if isinstance(out, tuple) else out  # attention returns (output, weights)
            if not isinstance(a, torch.Tensor):
                raise TypeError(f"LSUV can only measure modules that return a tensor, got {type(out).__name__}")
            a = a.detach() if a.dtype == torch.float64 else a.detach().float()
            std, mean = torch.std_mean(a)
            found[key] = (mean.item(), std.item(), a.min().item())
        if key == stop:
            raise _Measured

    with Hooks(list(dict.fromkeys(m for m, _ in points)), hook):
        try:
            model(xb)
        except _Measured:
            pass
    return found


def measure_activations(model: nn.Module, xb: torch.Tensor,
                        act_types: tuple[type[nn.Module], ...] | None = None) -> list[dict]:
    """Mean and std at every paired activation call on `xb` (one pass), the model left as it was."""
    xb = _check_batch(model, xb)
    names, pairs = layer_names(model), find_pairs(model, xb, act_types)
    with _measuring(model):
        found = _forward(model, xb, [(p.act, p.act_call) for p in pairs])
    return [dict(layer=names[p.layer], activation=type(p.act).__name__, mean=found[p.act, p.act_call][0],
                 std=found[p.act, p.act_call][1]) for p in pairs]


# ----------------------------------------------------------------------------- the public entry point

def lsuv_init(model: nn.Module, xb: torch.Tensor, variant: str = "loop", *, tol: float | None = None,
              max_iters: int = 50, measure: str = "auto", mean_via: str = "auto", orthonormal: bool | None = None,
              act_types: tuple[type[nn.Module], ...] | None = None,
              pairs: Sequence[tuple] | None = None, warn: bool = True, trace: bool = False) -> LSUVReport:
    r"""Initialise `model` in place with LSUV on the batch `xb`; report what became of every weight.

    Layer by layer (conv, linear, attention), in the order the forward pass runs them, LSUV
    measures an output $a$ on `xb` (mean $\mu$ and std $\sigma$ over all its elements) and
    updates the layer until $\sigma = 1$ within `tol` (Mishkin & Matas 2016, arXiv:1511.06422):
    `"std"`: $W \leftarrow W/\sigma$. `"mean_std"`: shift by $\mu$ until $|\mu| \le$ `tol`, then
    as `"std"`. `"loop"`: from one reading, shift by $\mu$ and $W \leftarrow W/\sigma$. `"blog"`:
    the same through the bias, at the activation. `"paper"`: orthonormal $W$, then
    $W \leftarrow W/\sqrt{\mathrm{Var}(a)}$ while $|\mathrm{Var}(a) - 1| \ge$ `tol`.
    `VARIANT_INFO` names each rule's source.

    $a$ is the output of the first activation module called after the layer (by call: a
    module used twice gives two pairs), or the layer's own with `measure="layer"` or after a
    bounded activation (`nonlinear.is_bounded`); a layer followed by another layer first (a
    classifier) is left alone. `"paper"`, and every variant on a network without activation
    modules (such as `nn.TransformerEncoderLayer`, with a warning), measure each layer's own
    output, the last included. `nn.MultiheadAttention` is measured at its output, which is
    linear in `out_proj.weight`: that is divided by $\sigma$ and the mean moved by
    `out_proj.bias`; the query, key and value projections keep the softmax's temperature.
    Shift by $\mu$ (`mean_via`): `"sub"`: `act.sub += mu`; `"bias"`: `bias -= mu` (a ReLU's
    output cannot be centred so: `ValueError`); `"pre_bias"`: `bias -=` the layer output's
    mean; `"auto"`: the first that applies of `sub`, `bias` at a layer's output, `pre_bias`.

    Every loop is bounded and never leaves a NaN or infinite weight (`_Target.readings`); a
    layer that stops short, is dead (output std 0) or broken (weights not finite) gets
    `converged=False`, a status saying why, and a warning. Passes run in eval mode without
    gradients; BatchNorm statistics, train/eval flags and hooks are left as they were; if the
    model raises, the exception notes which layers were already changed. `report.coverage`
    says what became of every module with trainable weights, also those left alone on
    purpose (normalisation, embeddings, an activation's parameters), not used on this batch,
    or never reached, with a warning: autograd says their weights shaped the output, but in no
    call LSUV measures (a bare `nn.Parameter`, `nn.GRU`).

    Args:
        model: the network, changed in place.
        xb: at least two inputs as training sees them, shape `(N, ...)` (a uint8 batch warns).
        variant: one of `VARIANTS`.
        tol: tolerance on $|\mu|$ and $|\sigma - 1|$ (`"paper"`: $|\mathrm{Var} - 1|$); `None`: 1e-3 (`"paper"`: 0.1).
        max_iters: the most steps per layer and loop, an int >= 1.
        measure: `"auto"`, `"activation"` or `"layer"`.
        mean_via: `"auto"`, `"sub"`, `"bias"` or `"pre_bias"`.
        orthonormal: orthonormal pre-initialisation (`nn.init.orthogonal_`); `None`: only for `"paper"`.
        act_types: module types that count as activations (default: the registry).
        pairs: `(weight layer, activation)` pairs or `Pair` rows to process, in order.
        warn: warn about each layer not converged, dead, broken or never reached.
        trace: record every pass, through the whole network, in `report.passes`: dicts with `index`,
            `target` (the layer being set), `iteration` and `stats` (`layer`, `activation`, `mean`, `std`).

    Returns:
        An `LSUVReport`: a `LayerReport` row per layer set, and `coverage`.
    """
    v, tol, pairs = _checked(variant, tol, max_iters, measure, mean_via, pairs)
    xb = _check_batch(model, xb)
    dtype = next(model.parameters()).dtype
    if tol < _precision(dtype):
        warnings.warn(f"LSUV: tol={tol:g} is below the {str(dtype).removeprefix('torch.')} precision of the measured "
                      f"statistics (~{_precision(dtype):.1e}); layers can meet it only to that precision", stacklevel=2)
    act_types = nonlinear.activation_types() if act_types is None else tuple(act_types)
    names, report = layer_names(model), LSUVReport(variant=variant, tol=tol)
    with _measuring(model):
        order, used = _survey(model, xb, act_types)
        todo = pairs if pairs is not None else _plan(order, act_types, v.every_layer)
        if pairs is None and not v.every_layer and all(p.act is None for p in todo):  # no activation modules
            todo = _plan(order, act_types, every_layer=True)  # so measure each layer's own output
            if todo and warn:
                warnings.warn("LSUV: no activation module follows a weight layer (an activation called as a "
                              "function is invisible to hooks), so each layer's own output is measured, as in "
                              "'paper'", stacklevel=2)
        if not todo:
            raise ValueError("no conv, linear or attention layer ran on this batch; pass pairs=[(layer, act)]")
        run = SimpleNamespace(model=model, xb=xb, max_iters=max_iters, trace=trace, warn=warn, report=report,
                              names=names, changed={})
        run.targets = [_Target(run, p, v, measure, mean_via) for p in todo]
        if v.every_layer if orthonormal is None else orthonormal:
            for t in run.targets:
                nn.init.orthogonal_(t.weight)
                run.changed.setdefault(names[t.pair.layer])
        try:
            for t in run.targets:
                report.append(_adjust(t, v, tol, variant))
        except Exception as e:
            e.add_note(f"LSUV had already changed {', '.join(run.changed) or 'no layer'} when this was raised; "
                       "those layers keep their new weights")
            raise
    _fill_coverage(report, model, todo, order, used, warn, explicit=pairs is not None)
    return report


def _adjust(t: _Target, v: _Variant, tol: float, variant: str) -> LayerReport:
    """Run the variant's rule on one layer; its report row."""
    p, names, first = t.pair, t.run.names, t.reading()
    if t.via == "bias" and t.where == "activation" and first.low >= 0 and abs(first.mean) > tol \
            and _DEAD_STD <= first.std < math.inf:
        raise ValueError(
            f"LSUV {variant!r}: the activation after layer {names[p.layer]} ({type(p.act).__name__}) produces no "
            "negative values, so no bias can bring its mean to 0. Use mean_via='pre_bias' (centre the layer's "
            "output), variant='std', measure='layer', or an activation with a `sub` shift such as GeneralRelu.")
    v.rule(t, tol)
    act = "-" if p.act is None else f"{names[p.act]} ({type(p.act).__name__})" + (
        f" call {p.act_call + 1}" if p.act_call else "")
    row = LayerReport(names[p.layer], act, t.steps, first.mean, first.std, t.last.mean, t.last.std, t.met,
                      _status(t, tol, v), t.via, t.where, None if t.via == "-" else t.last.centre)
    if not t.met and t.run.warn:
        warnings.warn(f"LSUV ({variant}) on layer {row.layer}: {row.status} after {row.iterations} steps "
                      f"(mean {row.mean_after:.3g}, std {row.std_after:.3g})", stacklevel=3)
    return row


def _status(t: _Target, tol: float, v: _Variant) -> str:
    r, floor, kind = t.last, _precision(t.weight.dtype), str(t.weight.dtype).removeprefix("torch.")
    if t.status:
        return {"broken": "broken: its weights hold NaN or infinite values; layer left unchanged",
                "dead": f"dead: std is {r.std:.3g}; layer left unchanged" if t.steps == 0
                else f"dead: std fell to {r.std:.3g}",
                "overflow": "not converged: the next update would overflow the weights, so it was undone"}[t.status]
    if tol < floor:
        return (f"ok: met tol {tol:g}, which is below {kind} precision (~{floor:.0e}), so only to that precision"
                if t.met else f"not converged: tol {tol:g} is below {kind} precision (~{floor:.0e}); stopped at "
                f"std {r.std:.4g}, mean {r.centre:.2g}")
    if t.met:
        return "ok: mean not moved (the layer has no bias and the activation no `sub`)" \
            if t.via == "-" and v.mean == "auto" else "ok"
    return {"stuck": "not converged: the statistics do not respond to this layer's weights",
            "stalled": "not converged: progress stalled; the measured output does not follow this layer's weights "
                       "in proportion (a residual connection into it, or a normalisation after it, sets its scale)",
            "max_iters": f"not converged: {t.run.max_iters} steps (max_iters) were not enough; std {r.std:.4g}, "
                         f"mean {r.mean:.3g}"}[t.stop]


def _fill_coverage(report: LSUVReport, model: nn.Module, todo: list[Pair], order, used: set[int], warn: bool,
                   explicit: bool) -> None:
    """`report.coverage` and `report.unpaired`: what became of every module with trainable weights."""
    rows = {p.layer: r for p, r in zip(todo, report)}
    rows |= {m.out_proj: r for m, r in rows.items() if isinstance(m, nn.MultiheadAttention)}  # set through it
    ran = {m for m, _ in order} | {m.out_proj for m, _ in order if isinstance(m, nn.MultiheadAttention)}
    unpaired = "not among pairs=" if explicit else "no activation follows it before the next weight layer"
    for name, m in model.named_modules():
        own, r = {id(p) for p in m.parameters(recurse=False) if p.requires_grad}, rows.get(m)
        if r is not None:
            at = r.activation if r.measured == "activation" else f"{r.layer}'s output"
            report.coverage[name] = f"initialised: std {r.std_after:.3f} at {at}" if r.converged else r.status
        elif own:
            report.coverage[name] = what = (
                "not used by the forward pass on this batch" if not own & used else
                "left alone: a normalisation layer keeps its scale 1 and shift 0" if isinstance(m, _NORMS) else
                "left alone: an embedding is a lookup table, with no input to scale it by"
                if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) else
                "left alone: an activation's own parameters" if nonlinear.is_activation(m) else
                f"left alone: {unpaired}" if isinstance(m, _LAYERS) and m in ran else
                "never reached: the forward pass used its weights, but not in a call LSUV measures (a bare "
                "parameter, a fused path, or a layer type LSUV has no rule for)")
            report.unpaired += [(name, unpaired)] if what == f"left alone: {unpaired}" else []
            if warn and what.startswith("never reached: "):
                warnings.warn(f"LSUV never reached {name} ({type(m).__name__}): {what.split(': ', 1)[1]}; its "
                              "weights are as they were, so initialise it another way", stacklevel=3)


# ----------------------------------------------------------------------------- checking the arguments

def _checked(variant, tol=None, max_iters=50, measure="auto", mean_via="auto", pairs=None, **_):
    """The arguments that need no model, checked: the variant's rules, `tol` (or its default), `Pair`s."""
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
    return v, float(tol), None if pairs is None else [_checked_pair(i, p) for i, p in enumerate(pairs)]


def _checked_pair(i: int, p) -> Pair:
    items = tuple(p) if isinstance(p, (tuple, list)) else (p,)
    if 2 <= len(items) <= 4 and isinstance(items[0], _LAYERS) and isinstance(items[1], (nn.Module, type(None))):
        return Pair(*items)
    got = ", ".join(type(x).__name__ for x in items[:2])
    hint = "; swap them" if len(items) > 1 and isinstance(items[1], _LAYERS) else ""
    raise ValueError(f"pairs[{i}] must be (weight layer, activation), e.g. (nn.Linear, nn.ReLU); got ({got}){hint}")


def _check_batch(model: nn.Module, xb) -> torch.Tensor:
    """`xb` on the model's device (floats in its dtype), after checking LSUV can measure it."""
    if not isinstance(xb, torch.Tensor):
        raise TypeError(f"xb must be a tensor batch of inputs, got {type(xb).__name__}")
    if xb.numel() == 0:
        raise ValueError(f"the input batch xb is empty (shape {tuple(xb.shape)}); LSUV needs real inputs to measure")
    if xb.dim() == 0 or len(xb) < 2:
        raise ValueError(f"xb has shape {tuple(xb.shape)}, and a batch of one has no spread: pass several inputs")
    if xb.is_floating_point() and not torch.isfinite(xb).all():
        nan, inf = torch.isnan(xb).sum().item(), torch.isinf(xb).sum().item()
        raise ValueError(f"the input batch xb has {nan} NaN and {inf} infinite values out of {xb.numel()}; "
                         "LSUV measures statistics of real inputs, so clean the batch first")
    if xb.dtype == torch.uint8:
        warnings.warn("LSUV: xb is uint8, so the weights are scaled for raw 0-255 values while training likely "
                      "sees 0-1: pass the batch as training sees it (e.g. xb / 255)", stacklevel=3)
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("the model has no parameters to initialise")
    pixels = xb.is_floating_point() or xb.dtype == torch.uint8  # other integers are indices (token ids)
    return xb.to(param.device, param.dtype) if pixels else xb.to(param.device)


def _precision(dtype: torch.dtype) -> float:
    """How close to the goal a statistic can be resolved: a few dozen float32 ulps, or one ulp of the weights."""
    return max(64 * torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps, torch.finfo(dtype).eps)


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
