"""Layer-Sequential Unit-Variance initialisation (Mishkin & Matas 2016), in three variants.

LSUV uses one batch of real data. Taking weight layers in the order the forward pass
reaches them, it measures the activations each layer produces and rescales (and, in
two variants, shifts) that layer until those activations have unit variance, before
moving on to the next. Earlier layers are fixed first, so each layer is tuned on the
inputs it will really see.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Sequence

import torch
from torch import nn

from .activations import ACTIVATIONS
from .hooks import Hooks, layer_names
from .init import WEIGHT_LAYERS
from .learner import Callback

VARIANTS = ("std", "mean_std", "loop")


class _Measured(Exception):
    """Raised inside a hook to stop the forward pass once the measured module has run."""


@dataclass
class LayerReport:
    """What LSUV did to one (weight layer, activation) pair."""

    layer: str
    activation: str
    iterations: int
    mean_before: float
    std_before: float
    mean_after: float
    std_after: float
    converged: bool
    status: str          # "ok", "not converged", or "dead: ..." for a layer left untouched
    mean_via: str        # "sub", "bias" or "-" (the std variant moves no mean)


class LSUVReport(list):
    """Rows of :class:`LayerReport`; prints as a table, converts to plain data."""

    columns = ("layer", "activation", "iterations", "mean_before", "std_before", "mean_after", "std_after",
               "converged", "status")

    def to_records(self) -> list[dict]:
        return [asdict(r) for r in self]

    @property
    def all_converged(self) -> bool:
        return all(r.converged for r in self)

    def _cells(self) -> list[list[str]]:
        fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
        return [[fmt(getattr(r, c)) for c in self.columns] for r in self]

    def __str__(self) -> str:
        rows = [list(self.columns), *self._cells()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows)

    def _repr_markdown_(self) -> str:
        head = "| " + " | ".join(self.columns) + " |\n|" + "---|" * len(self.columns)
        return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in self._cells())


def find_pairs(model: nn.Module, xb: torch.Tensor,
               act_types: tuple[type[nn.Module], ...] = ACTIVATIONS) -> list[tuple[nn.Module, nn.Module]]:
    """Each Conv/Linear layer paired with the first activation that runs after it.

    Order is *execution* order, found by running ``xb`` through the model with a hook on
    every leaf module, so a model that registers modules in one order and calls them in
    another is still handled. A weight layer that reaches another weight layer before
    any activation (such as the final classifier) is left out.
    """
    leaves = [m for m in model.modules() if not list(m.children()) or isinstance(m, act_types)]
    order: list[nn.Module] = []
    with _measuring(model), Hooks(leaves, lambda i, m, inp, out: order.append(m)):
        model(xb)
    pairs, pending, seen = [], None, set()
    for m in order:
        if id(m) in seen:  # a module called twice is paired on its first call
            continue
        seen.add(id(m))
        if isinstance(m, WEIGHT_LAYERS):
            pending = m
        elif isinstance(m, act_types) and pending is not None:
            pairs.append((pending, m))
            pending = None
    return pairs


def _measure(model: nn.Module, xb: torch.Tensor, module: nn.Module) -> tuple[float, float, float]:
    """Mean, std and min of ``module``'s output on ``xb``, computed inside the hook.

    Computing in the hook sees the tensor before any later in-place op (``ReLU(inplace=True)``)
    rewrites it; raising afterwards skips the rest of the forward pass.
    """
    found = []

    def hook(i, m, inp, out):
        a = out.detach().float()
        found.append((a.mean().item(), a.std().item(), a.min().item()))
        raise _Measured

    with Hooks([module], hook):
        try:
            model(xb)
        except _Measured:
            pass
    if not found:
        raise RuntimeError(f"{type(module).__name__} did not run in the forward pass, so it cannot be measured")
    return found[0]


def measure_activations(model: nn.Module, xb: torch.Tensor,
                        act_types: tuple[type[nn.Module], ...] = ACTIVATIONS) -> list[dict]:
    """Mean and std at every paired activation on ``xb``, with the model left as it was."""
    param = next(model.parameters())
    xb = xb.to(param.device, param.dtype)
    names, pairs = layer_names(model), find_pairs(model, xb, act_types)
    found: dict[int, tuple[float, float]] = {}

    def record(i, m, inp, out):
        a = out.detach().float()
        found.setdefault(i, (a.mean().item(), a.std().item()))

    with _measuring(model), Hooks([act for _, act in pairs], record):
        model(xb)  # one pass measures every pair
    return [dict(layer=names[layer], activation=type(act).__name__, mean=found[i][0], std=found[i][1])
            for i, (layer, act) in enumerate(pairs)]


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


def lsuv_init(model: nn.Module, xb: torch.Tensor, variant: str = "loop", *, tol: float = 1e-3,
              max_iters: int = 50, measure: str = "activation", mean_via: str = "auto", orthonormal: bool = False,
              act_types: tuple[type[nn.Module], ...] = ACTIVATIONS,
              pairs: Sequence[tuple[nn.Module, nn.Module]] | None = None, warn: bool = True) -> LSUVReport:
    r"""Initialise ``model`` in place with LSUV on the batch ``xb`` and report what was done.

    For each pair ``(W, f)`` of a weight layer and the activation after it, in execution
    order, let :math:`a` be the measured output (``f``'s output by default, as in both
    seed documents; ``measure="layer"`` measures ``W``'s output, as the paper does), with
    batch mean :math:`\mu` and standard deviation :math:`\sigma`.

    * ``"std"`` — the paper's Algorithm 1 (Mishkin & Matas 2016, arXiv:1511.06422):
      repeat :math:`W \leftarrow W / \sigma` until :math:`|\sigma - 1| \le` ``tol``. With a
      ReLU after the layer the mean stays positive (about 0.3–0.7 in the seed notebook).
      ``orthonormal=True`` first sets every paired weight to a random orthonormal matrix
      (``nn.init.orthogonal_``), the paper's pre-initialisation.
    * ``"mean_std"`` — fastai course-v3 (lesson 07a), the seed notebook's type 2: first
      repeat :math:`s \leftarrow s + \mu` until :math:`|\mu| \le` ``tol``, then run the
      std loop. Rescaling ``W`` moves the mean again, so it ends near, not at, 0.
    * ``"loop"`` — the seed notebook's type 3 and the blog's callback: repeat
      :math:`s \leftarrow s + \mu,\ W \leftarrow W / \sigma` together until both
      :math:`|\mu| \le` ``tol`` and :math:`|\sigma - 1| \le` ``tol``.

    Here :math:`s` is the shift that moves the mean. ``mean_via="sub"`` (the default,
    ``"auto"``, when ``f`` has a ``sub`` attribute such as :class:`GeneralRelu`) shifts
    the activation's output: :math:`f(x) - s` moves the mean by exactly :math:`-\mu` and
    leaves the layer's pre-activations alone, so one step suffices. ``mean_via="bias"``
    (the fallback, and the blog's choice) subtracts :math:`\mu` from ``W``'s bias; through
    a non-linearity that only approximates a shift. An activation whose outputs are
    never negative (plain ReLU) cannot reach mean 0 through its bias without dying, so
    that combination raises ``ValueError`` instead of driving the bias to :math:`-\infty`.

    Every loop stops after ``max_iters`` steps; a pair that has not converged by then is
    reported (``converged=False``) with a warning. A pair whose measured std is 0 or not
    finite (a dead layer) is skipped, untouched, and reported as dead: nothing is ever
    divided by 0. Hooks are removed however the call ends; the forward passes run under
    ``torch.no_grad()`` in eval mode (so BatchNorm statistics are untouched) and every
    module's train/eval flag is restored; ``xb`` is moved to the model's device and dtype,
    never the other way round.

    Args:
        model: the network, changed in place.
        xb: a batch of inputs, e.g. ``dls.train.one_batch()[0]``.
        variant: ``"std"``, ``"mean_std"`` or ``"loop"``.
        tol: tolerance on :math:`|\mu|` and :math:`|\sigma - 1|`.
        max_iters: the most adjustment steps per pair and phase.
        measure: ``"activation"`` or ``"layer"``.
        mean_via: ``"auto"``, ``"sub"`` or ``"bias"``.
        orthonormal: orthonormal pre-initialisation of the paired weight layers.
        act_types: module types that count as activations when finding pairs.
        pairs: explicit ``(weight_layer, activation)`` pairs, in the order to process.
        warn: emit a warning for each pair that did not converge or was dead.

    Returns:
        An :class:`LSUVReport` with one row per pair.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown LSUV variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if measure not in ("activation", "layer"):
        raise ValueError(f"measure must be 'activation' or 'layer', got {measure!r}")
    if mean_via not in ("auto", "sub", "bias"):
        raise ValueError(f"mean_via must be 'auto', 'sub' or 'bias', got {mean_via!r}")
    if not (tol > 0 and max_iters >= 1):
        raise ValueError(f"need tol > 0 and max_iters >= 1, got tol={tol}, max_iters={max_iters}")
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("the model has no parameters to initialise")
    xb = xb.to(param.device, param.dtype)
    names = layer_names(model)
    report = LSUVReport()
    with _measuring(model):
        pairs = list(pairs) if pairs is not None else find_pairs(model, xb, act_types)
        if not pairs:
            raise ValueError("no (weight layer, activation) pairs found; pass pairs=[...] or act_types=(...)")
        if orthonormal:
            for layer, _ in pairs:
                nn.init.orthogonal_(layer.weight)
        for layer, act in pairs:
            report.append(_init_pair(model, xb, layer, act, variant, tol, max_iters, measure, mean_via, names))
    if warn:
        for r in report:
            if not r.converged:
                warnings.warn(f"LSUV ({variant}) on layer {r.layer}: {r.status} after {r.iterations} steps "
                              f"(mean {r.mean_after:.3g}, std {r.std_after:.3g})")
    return report


def _init_pair(model, xb, layer, act, variant, tol, max_iters, measure, mean_via, names) -> LayerReport:
    target = act if measure == "activation" else layer
    via = "-" if variant == "std" else _mean_mechanism(layer, act, measure, mean_via)
    mean, std, low = first = _measure(model, xb, target)
    if via == "bias" and measure == "activation" and low >= 0 and abs(mean) > tol:
        raise ValueError(
            f"LSUV {variant!r}: the activation after layer {names[layer]} ({type(act).__name__}) produces no "
            "negative values, so no bias can bring its mean to 0. Use variant='std', measure='layer', "
            "or an activation with a `sub` shift such as GeneralRelu.")
    steps, status = 0, "ok"

    def dead(s: float) -> bool:
        return not math.isfinite(s) or s < 1e-8

    def shift(m: float) -> None:
        if via == "sub":
            act.sub = (act.sub or 0.0) + m
        else:
            layer.bias.sub_(m)

    stuck = False

    def step_until(done, adjust) -> bool:
        nonlocal mean, std, low, steps, stuck
        for _ in range(max_iters):
            if dead(std) or done():
                break
            before = (mean, std)
            adjust()
            steps += 1
            mean, std, low = _measure(model, xb, target)
            # A std that ignores the weights (e.g. the layer's input is all zeros) would
            # otherwise be divided into the weights until they overflow.
            if (mean, std) == before:
                stuck = True
                break
        return done() and not dead(std)

    if dead(std):
        status = f"dead: std is {std:.3g}; layer left unchanged"
        converged = False
    else:
        std_ok = lambda: abs(std - 1) <= tol  # noqa: E731
        mean_ok = lambda: abs(mean) <= tol  # noqa: E731
        scale = lambda: layer.weight.div_(std)  # noqa: E731
        if variant == "std":
            converged = step_until(std_ok, scale)
        elif variant == "mean_std":
            step_until(mean_ok, lambda: shift(mean))
            converged = step_until(std_ok, scale)
        else:
            def both() -> None:
                # Re-measure between the two moves: through a bias, the shift changes the std too.
                nonlocal mean, std, low
                shift(mean)
                mean, std, low = _measure(model, xb, target)
                if not dead(std):
                    scale()

            converged = step_until(lambda: mean_ok() and std_ok(), both)
        if dead(std):
            status = f"dead: std fell to {std:.3g}"
        elif stuck:
            status = "not converged: the statistics do not respond to this layer's weights"
        elif not converged:
            status = "not converged"
    return LayerReport(names[layer], f"{names[act]} ({type(act).__name__})", steps, first[0], first[1],
                       mean, std, converged, status, via)


def _mean_mechanism(layer: nn.Module, act: nn.Module, measure: str, mean_via: str) -> str:
    if mean_via == "auto":
        mean_via = "sub" if measure == "activation" and hasattr(act, "sub") else "bias"
    if mean_via == "sub" and not hasattr(act, "sub"):
        raise ValueError(f"mean_via='sub' needs an activation with a `sub` attribute; {type(act).__name__} has none")
    if mean_via == "sub" and measure == "layer":
        raise ValueError("mean_via='sub' shifts the activation, which cannot move the layer's own output")
    if mean_via == "bias" and getattr(layer, "bias", None) is None:
        raise ValueError(f"mean_via='bias' needs a bias, but {type(layer).__name__} was built with bias=False")
    return mean_via


class LSUVCallback(Callback):
    """Run :func:`lsuv_init` before training, on the first training batch of the fit.

    The batch is drawn without advancing the loader's shuffling, so training sees the
    same data order with or without this callback. The report is kept as ``.report``.
    """

    order = -10  # before anything that hooks the model

    def __init__(self, variant: str = "loop", **kwargs):
        self.variant, self.kwargs = variant, kwargs
        self.report: LSUVReport | None = None

    def before_fit(self, learn) -> None:
        xb, _ = learn.dls.train.one_batch()
        self.report = lsuv_init(learn.model, xb, self.variant, **self.kwargs)
