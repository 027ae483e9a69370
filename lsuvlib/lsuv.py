r"""Layer-Sequential Unit-Variance initialisation (Mishkin & Matas 2016), in five variants.

LSUV uses one batch of real data. Taking weight layers in the order the forward pass
reaches them, it measures the outputs each layer leads to and rescales (and, in three
variants, shifts) that layer until those outputs have unit variance, before moving on
to the next. Earlier layers are fixed first, so each layer is tuned on the inputs it
will really see.

Each variant's rule is a short loop below (:func:`_rule_std`, :func:`_rule_mean_then_std`,
:func:`_rule_together`, :func:`_rule_paper`); the bookkeeping that keeps every loop
bounded and finite lives in :class:`_Meter`.
"""
from __future__ import annotations

import inspect
import math
import numbers
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import NamedTuple, Sequence

import torch
from torch import nn

from . import nonlinear
from .hooks import Hooks, layer_names
from .init import WEIGHT_LAYERS
from .learner import Callback

VARIANTS = ("std", "mean_std", "loop", "blog", "paper")

VARIANT_INFO: dict[str, str] = {
    "std": "W ← W/σ at the activation until |σ−1| ≤ 1e-3; no mean move. Seed notebook's type 1 "
           "('std only', which it calls like the paper; the paper's own rule is 'paper').",
    "mean_std": "shift by μ until |μ| ≤ 1e-3, then W ← W/σ until |σ−1| ≤ 1e-3. Seed notebook's type 2, "
                "after fastai course-v3 lesson 07a.",
    "loop": "each step, from one measurement: shift by μ and W ← W/σ, until |μ| and |σ−1| ≤ 1e-3; "
            "mean through GeneralRelu's sub. Seed notebook's type 3.",
    "blog": "each step, from one measurement at the GeneralRelu output: bias ← bias − μ, W ← W/σ, until "
            "|μ| and |σ−1| < 1e-3. The blog's LSUV callback (bounded here by max_iters; the blog had no bound).",
    "paper": "orthonormal pre-init; per conv/linear layer, last included, W ← W/√Var of its output "
             "(before the non-linearity) until |Var−1| < 0.1. Mishkin & Matas 2016, Algorithm 1.",
}

_DEFAULT_TOL = {"std": 1e-3, "mean_std": 1e-3, "loop": 1e-3, "blog": 1e-3, "paper": 0.1}
_MEAN_VIAS = ("auto", "sub", "bias", "pre_bias")
_PATIENCE = 5          # steps without a 1 % better gap before a pair counts as stalled
_DEAD_STD = 1e-8       # below this the measured output carries no signal to rescale


class _Measured(Exception):
    """Raised inside a hook to stop the forward pass once the last needed module has run."""


class Pair(NamedTuple):
    """A weight layer and the activation that follows it, each at one particular call.

    ``act`` is ``None`` for the ``paper`` variant, which measures the layer itself.
    Calls count from 0 within one forward pass, so a shared activation module gives
    one pair per call.
    """

    layer: nn.Module
    act: nn.Module | None
    layer_call: int = 0
    act_call: int = 0


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
    status: str              # "ok", "ok: ...", "not converged: <reason>" or "dead: ..." (left untouched)
    mean_via: str            # "sub", "bias", "pre_bias" or "-" (no mean moved)
    measured: str = "activation"     # where mean/std were measured: "activation" or "layer" output
    centred_mean: float | None = None  # final value of the mean the variant drives to 0 (None: none)


class LSUVReport(list):
    """Rows of :class:`LayerReport`; prints as a table, renders as Markdown, converts to plain data.

    Attributes: ``variant``, ``tol``, ``forward_passes`` (how many the call ran),
    ``passes`` (with ``trace=True``: one dict per pass, see :func:`lsuv_init`) and
    ``unpaired`` (names of weight layers that ran but were not adjusted, with why).
    """

    columns = ("layer", "activation", "iterations", "mean_before", "std_before", "mean_after", "std_after",
               "converged", "mean_via", "measured", "status")

    def __init__(self, rows=(), variant: str = "", tol: float = 0.0):
        super().__init__(rows)
        self.variant, self.tol = variant, tol
        self.passes: list[dict] = []
        self.forward_passes = 0
        self.unpaired: list[tuple[str, str]] = []

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
        body = ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self._cells()]
        return head + "\n" + "\n".join(body)


# ----------------------------------------------------------------------------- finding pairs

def _call_order(model: nn.Module, xb: torch.Tensor, act_types) -> list[tuple[nn.Module, int]]:
    """Every (module, call index) in the order one forward pass runs them."""
    watched = [m for m in model.modules()
               if not list(m.children()) or isinstance(m, act_types) or isinstance(m, WEIGHT_LAYERS)]
    order, calls = [], {}

    def record(i, m, inp, out):
        calls[m] = calls.get(m, 0) + 1
        order.append((m, calls[m] - 1))

    with _measuring(model), Hooks(watched, record):
        model(xb)
    return order


def find_pairs(model: nn.Module, xb: torch.Tensor, act_types: tuple[type[nn.Module], ...] | None = None,
               ) -> list[Pair]:
    """Each Conv/Linear call paired with the first activation call that runs after it.

    Order is *execution* order, found by running ``xb`` through the model with a hook on
    every leaf module, so a model that registers modules in one order and calls them in
    another is still handled. Pairs are by *call*: an activation module used after two
    layers (``Linear → act → Linear → act``) gives two pairs. A weight layer followed by
    another weight layer before any activation (a classifier, the second convolution of
    a residual block whose shortcut convolution runs next) is left out; modules in
    between that are not activations (BatchNorm, pooling, dropout) are passed over.
    A weight layer called more than once is paired on its first pairing only.
    ``act_types`` defaults to the registry, :data:`lsuvlib.nonlinear.ACTIVATION_TYPES`.
    """
    act_types = nonlinear.activation_types() if act_types is None else tuple(act_types)
    return _pairs_in(_call_order(model, xb, act_types), act_types)


def _pairs_in(order: list[tuple[nn.Module, int]], act_types) -> list[Pair]:
    pairs, pending, paired = [], None, set()
    for m, call in order:
        if isinstance(m, WEIGHT_LAYERS):
            pending = (m, call)
        elif isinstance(m, act_types) and pending is not None:
            if pending[0] not in paired:
                paired.add(pending[0])
                pairs.append(Pair(pending[0], m, pending[1], call))
            pending = None
    return pairs


def _weight_layer_calls(order: list[tuple[nn.Module, int]]) -> list[Pair]:
    """Every conv/linear layer that runs, at its first call, in execution order (the paper's list)."""
    seen, out = set(), []
    for m, call in order:
        if isinstance(m, WEIGHT_LAYERS) and m not in seen:
            seen.add(m)
            out.append(Pair(m, None, call, 0))
    return out


# ----------------------------------------------------------------------------- measuring

@dataclass
class _Stats:
    mean: float
    std: float
    low: float


def _stats(out) -> _Stats:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"LSUV can only measure modules that return a tensor, got {type(out).__name__}")
    a = out.detach()
    if a.dtype != torch.float64:
        a = a.float()  # half precision would round the statistics LSUV divides by
    std, mean = torch.std_mean(a)
    return _Stats(mean.item(), std.item(), a.min().item())


def _forward(model: nn.Module, xb: torch.Tensor, points: Sequence[tuple[nn.Module, int]],
             stop: tuple[nn.Module, int] | None) -> dict[tuple[int, int], _Stats]:
    """Statistics of each (module, call) in ``points`` from one forward pass.

    The statistics are computed inside the hook, before a later in-place op
    (``ReLU(inplace=True)``) can rewrite the tensor; raising at ``stop`` skips the rest
    of the network, which is most of the cost for early layers.
    """
    wanted = {(id(m), c) for m, c in points}
    stop_key = (id(stop[0]), stop[1]) if stop is not None else None
    calls: dict[int, int] = {}
    found: dict[tuple[int, int], _Stats] = {}

    def hook(i, m, inp, out):
        key = (id(m), calls.get(id(m), 0))
        calls[id(m)] = key[1] + 1
        if key in wanted:
            found[key] = _stats(out)
        if key == stop_key:
            raise _Measured

    with Hooks(list({id(m): m for m, _ in points}.values()), hook):
        try:
            model(xb)
        except _Measured:
            pass
    return found


def measure_activations(model: nn.Module, xb: torch.Tensor,
                        act_types: tuple[type[nn.Module], ...] | None = None) -> list[dict]:
    """Mean and std at every paired activation call on ``xb`` (one pass), the model left as it was."""
    xb = _check_batch(model, xb)
    names, pairs = layer_names(model), find_pairs(model, xb, act_types)
    with _measuring(model):
        found = _forward(model, xb, [(p.act, p.act_call) for p in pairs], None)
    rows = []
    for p in pairs:
        s = found[(id(p.act), p.act_call)]
        rows.append(dict(layer=names[p.layer], activation=type(p.act).__name__, mean=s.mean, std=s.std))
    return rows


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


# ----------------------------------------------------------------------------- one pair's state

@dataclass
class _Reading:
    mean: float      # at the measured point
    std: float       # at the measured point
    low: float       # smallest value at the measured point
    centre: float    # the mean the variant moves (0.0 when nothing can move it)


class _Meter:
    """One pair under adjustment: measures it, moves it, and says when to stop.

    The variant rules only call :meth:`measure`, :meth:`may_step`, :meth:`shift_mean`
    and :meth:`divide_weight`; the guards (dead output, ``max_iters``, statistics that
    stop responding, stalled progress, overflow, float precision) are all here, so every
    loop is bounded and no weight becomes NaN or infinite.
    """

    def __init__(self, ctx: "_Run", pair: Pair, measured: str, via: str):
        self.ctx, self.pair, self.measured, self.via = ctx, pair, measured, via
        self.layer = pair.layer
        self.target = (pair.layer, pair.layer_call) if measured == "layer" else (pair.act, pair.act_call)
        self.points = [self.target]
        if via == "pre_bias":
            self.points.insert(0, (pair.layer, pair.layer_call))
        self.steps = self.phase_steps = 0
        self.status: str | None = None
        self.last: _Reading | None = None
        self.changed = False      # an update ran since the last reading
        self.best_gap, self.since_best = math.inf, 0
        self.response: float | None = None
        self.applied = 1.0        # factor the last divide_weight multiplied the weights by

    def measure(self) -> _Reading:
        if self.last is not None and not self.changed:
            return self.last  # nothing moved since the last reading: same statistics, no pass needed
        found = self.ctx.forward(self, self.points, self.target)
        missing = [(m, c) for m, c in self.points if (id(m), c) not in found]
        if missing:
            m, c = missing[0]
            raise RuntimeError(f"{self.ctx.names.get(m, type(m).__name__)} ({type(m).__name__}) did not run "
                               f"(call {c + 1}) in the forward pass, so it cannot be measured; check pairs=")
        s = found[(id(self.target[0]), self.target[1])]
        if self.via == "pre_bias":
            centre = found[(id(self.layer), self.pair.layer_call)].mean
        else:
            centre = s.mean if self.via in ("sub", "bias") else 0.0
        r = _Reading(s.mean, s.std, s.low, centre)
        if self.changed and self.last is not None:
            if (r.mean, r.std, r.centre) == (self.last.mean, self.last.std, self.last.centre):
                self.status = "stuck"
            if self.applied != 1.0 and self.last.std > 0 and r.std > 0 and math.isfinite(r.std):
                self.response = math.log(r.std / self.last.std) / math.log(self.applied)
        self.last, self.changed = r, False
        return r

    def new_phase(self) -> None:
        self.phase_steps, self.best_gap, self.since_best = 0, math.inf, 0

    def may_step(self, gap: float) -> bool:
        """Whether the rule may take one more step from the last reading, whose distance from the goal is ``gap``."""
        r = self.last
        if not math.isfinite(r.std) or r.std < _DEAD_STD:
            self.status = "dead"
            return False
        if self.status == "stuck" or self.phase_steps >= self.ctx.max_iters:
            self.status = self.status or "max_iters"
            return False
        if gap < 0.99 * self.best_gap:
            self.best_gap, self.since_best = gap, 0
        else:
            self.since_best += 1
            if self.since_best >= _PATIENCE:
                self.status = "stalled"
                return False
        self.steps += 1
        self.phase_steps += 1
        return True

    def shift_mean(self, mu: float) -> None:
        """Move the variant's mean by -mu: through the activation's ``sub`` or the layer's bias."""
        if self.via == "sub":
            act = self.pair.act
            act.sub = (act.sub or 0.0) + mu
        elif self.via in ("bias", "pre_bias"):
            self._guarded(lambda: self.layer.bias.sub_(mu), self.layer.bias)
        self.changed = True

    def divide_weight(self, sigma: float) -> None:
        self.applied = 1.0 / sigma
        self._guarded(lambda: self.layer.weight.div_(sigma), self.layer.weight)
        self.changed = True

    def _guarded(self, update, tensor: torch.Tensor) -> None:
        before = tensor.clone()
        update()
        if not torch.isfinite(tensor).all():
            tensor.copy_(before)  # an overflow would leave inf/NaN weights: undo and stop here
            self.status = "overflow"


class _Run:
    """Settings and counters shared by every pair of one :func:`lsuv_init` call."""

    def __init__(self, model, xb, max_iters, trace, report, names, pairs, variant, measure):
        self.model, self.xb, self.max_iters, self.trace = model, xb, max_iters, trace
        self.report, self.names, self.pairs = report, names, pairs
        # each pair's measured output: what a traced pass records
        self.every = [(p.layer, p.layer_call) if _where(variant, p.act, measure) == "layer" else (p.act, p.act_call)
                      for p in pairs]

    def forward(self, meter: _Meter, points, stop) -> dict:
        self.report.forward_passes += 1
        if not self.trace:
            return _forward(self.model, self.xb, points, stop)
        found = _forward(self.model, self.xb, [*points, *self.every], None)  # the whole network, as the blog's ran
        stats = []
        for p, (m, c) in zip(self.pairs, self.every):
            s = found.get((id(m), c))
            if s is not None:
                stats.append(dict(layer=self.names[p.layer], activation=type(m).__name__, mean=s.mean, std=s.std))
        self.report.passes.append(dict(index=len(self.report.passes), target=self.names[meter.layer],
                                       iteration=meter.steps, stats=stats))
        return found


# ----------------------------------------------------------------------------- the variants' rules

def _rule_std(meter: _Meter, tol: float) -> _Reading:
    """Notebook type 1: repeat W ← W/σ until |σ − 1| ≤ tol."""
    m = meter.measure()
    while abs(m.std - 1) > tol and meter.may_step(gap=abs(m.std - 1)):
        meter.divide_weight(m.std)            # divide by sigma
        m = meter.measure()
    return m


def _rule_mean_then_std(meter: _Meter, tol: float) -> _Reading:
    """Notebook type 2: shift by μ until |μ| ≤ tol; then the std loop (which moves μ again)."""
    m = meter.measure()
    while abs(m.centre) > tol and meter.may_step(gap=abs(m.centre)):
        meter.shift_mean(m.centre)            # shift by mu
        m = meter.measure()
    if meter.status in ("dead", "overflow"):
        return m
    meter.status = None
    meter.new_phase()
    return _rule_std(meter, tol)


def _rule_together(meter: _Meter, tol: float) -> _Reading:
    """Notebook type 3 and the blog: from ONE measurement, shift by μ and W ← W/σ; repeat until both are close."""
    m = meter.measure()
    while (abs(m.centre) > tol or abs(m.std - 1) > tol) and meter.may_step(gap=max(abs(m.centre), abs(m.std - 1))):
        meter.shift_mean(m.centre)            # shift by mu ...
        meter.divide_weight(m.std)            # ... and divide by sigma, both from this one reading
        m = meter.measure()
    return m


def _rule_paper(meter: _Meter, tol: float) -> _Reading:
    """Algorithm 1: while |Var(B_L) − 1| ≥ tol: W_L ← W_L / √Var(B_L), B_L the layer's output."""
    m = meter.measure()
    while abs(m.std ** 2 - 1) >= tol and meter.may_step(gap=abs(m.std ** 2 - 1)):
        meter.divide_weight(math.sqrt(m.std ** 2))   # divide by sqrt(variance)
        m = meter.measure()
    return m


_RULES = {"std": _rule_std, "mean_std": _rule_mean_then_std, "loop": _rule_together, "blog": _rule_together,
          "paper": _rule_paper}


def _converged(variant: str, m: _Reading, tol: float) -> bool:
    if variant == "paper":
        return abs(m.std ** 2 - 1) < tol
    ok = abs(m.std - 1) <= tol
    return ok and abs(m.centre) <= tol if variant in ("loop", "blog") else ok


# ----------------------------------------------------------------------------- the public entry point

def lsuv_init(model: nn.Module, xb: torch.Tensor, variant: str = "loop", *, tol: float | None = None,
              max_iters: int = 50, measure: str = "auto", mean_via: str = "auto", orthonormal: bool | None = None,
              act_types: tuple[type[nn.Module], ...] | None = None,
              pairs: Sequence[tuple] | None = None, warn: bool = True, trace: bool = False) -> LSUVReport:
    r"""Initialise ``model`` in place with LSUV on the batch ``xb`` and report what was done.

    For each pair ``(W, f)`` of a weight layer and the activation call after it, in
    execution order, let :math:`a` be the measured output, with batch mean :math:`\mu`
    and standard deviation :math:`\sigma` (over every element of :math:`a`).

    * ``"std"`` (seed notebook, type 1): repeat :math:`W \leftarrow W / \sigma` until
      :math:`|\sigma - 1| \le` ``tol``. After a ReLU the mean stays positive (about
      0.3–0.7 in the notebook).
    * ``"mean_std"`` (notebook type 2, after fastai course-v3 07a): repeat
      :math:`s \leftarrow s + \mu` until :math:`|\mu| \le` ``tol``, then the std loop.
      Rescaling moves the mean again, so it ends near, not at, 0.
    * ``"loop"`` (notebook type 3): from one measurement, :math:`s \leftarrow s + \mu`
      and :math:`W \leftarrow W / \sigma`; repeat until :math:`|\mu| \le` ``tol`` and
      :math:`|\sigma - 1| \le` ``tol``.
    * ``"blog"`` (the blog's LSUV callback): the same step with the mean moved through
      the bias, :math:`b \leftarrow b - \mu`, measured at the activation (the blog hooked
      GeneralRelu), tolerance 1e-3 on both; ``max_iters`` bounds it where the blog had
      no bound.
    * ``"paper"`` (Mishkin & Matas 2016, arXiv:1511.06422, Algorithm 1): every conv and
      linear weight that runs is first set to a random orthonormal matrix
      (``nn.init.orthogonal_``; biases untouched); then for every such layer in order,
      the last one included, :math:`a` is the layer's own output (before any
      non-linearity) and :math:`W \leftarrow W / \sqrt{\mathrm{Var}(a)}` while
      :math:`|\mathrm{Var}(a) - 1| \ge` ``tol`` (0.1).

    Where the mean is moved (``mean_via``; "shift by μ" above): ``"sub"`` adds
    :math:`\mu` to the activation's ``sub`` (:class:`GeneralRelu`), which moves its
    output's mean by exactly :math:`-\mu`; ``"bias"`` subtracts the measured mean
    :math:`\mu` from ``W``'s bias (the blog's choice; through a non-linearity that only
    approximates a shift, and an activation with no negative outputs, such as plain
    ReLU, cannot be centred that way: that raises ``ValueError``); ``"pre_bias"``
    subtracts the mean of ``W``'s own output from its bias, which centres the
    pre-activations exactly. ``"auto"`` picks ``sub`` when the activation has one,
    ``bias`` when measuring the layer's output, else ``pre_bias``; with no bias and no
    ``sub`` (a convolution followed by BatchNorm) the mean is left alone and the row
    says so.

    Where :math:`a` is measured (``measure``): ``"activation"`` output (both seed
    documents), ``"layer"`` output (the paper), or ``"auto"``: the activation, except
    those whose output range cannot have unit std (Tanh, Sigmoid, Hardtanh,
    Hardsigmoid, Softsign; :func:`lsuvlib.nonlinear.is_bounded`), measured at the layer.

    How networks are handled:

    * **Activations**: the registry :data:`lsuvlib.nonlinear.ACTIVATION_TYPES` (every
      element-wise ``torch.nn`` non-linearity and GeneralRelu), or ``act_types``.
    * **Shared modules**: pairs are by call; a ReLU module used twice gives two pairs,
      each measured at its own call.
    * **BatchNorm between layer and activation**: passed over when pairing. The passes
      run in eval mode, where BatchNorm is a fixed affine map of its running statistics,
      so scaling ``W`` scales the activation; those statistics are never updated. (In
      training mode BatchNorm re-normalises with batch statistics and undoes the scale.)
      LayerNorm/GroupNorm undo it even in eval mode: such a pair ends "not converged".
    * **Residual blocks**: an activation after ``x + F(x)`` is paired with the last
      weight layer before it; its scale also comes from the shortcut, so the pair may
      stall: it ends "not converged: ..." with the measured response, weights finite.
    * **Depthwise / grouped convolutions**: one layer like any other: all groups are
      divided by the same :math:`\sigma`.
    * **Weight layers with no activation after them** (e.g. the classifier): left alone
      (listed in ``report.unpaired``), except by ``"paper"``, which includes them.
    * **Layers that never run** on ``xb`` are not touched.

    Every loop stops after ``max_iters`` steps (per phase), when the statistics stop
    changing, when 5 steps in a row bring the gap no 1 % closer, or when an update would
    overflow (it is undone). Such a pair is reported ``converged=False`` with status
    ``"not converged: <reason>"`` and a warning. A pair whose measured std is 0 or not
    finite (a dead layer) is skipped, untouched, and reported as dead: nothing is ever
    divided by 0. Hooks are removed however the call ends; the forward passes run under
    ``torch.no_grad()`` in eval mode and every module's train/eval flag is restored;
    ``xb`` is moved to the model's device and dtype, never the other way round. Each
    pass stops at the measured module (a hook raises), so early layers cost little;
    ``trace=True`` runs every pass through the whole network instead and records it.

    Args:
        model: the network, changed in place.
        xb: a batch of inputs, shape ``(N, ...)``, e.g. ``dls.train.one_batch()[0]``.
        variant: one of :data:`VARIANTS`; :data:`VARIANT_INFO` says what each is.
        tol: tolerance on :math:`|\mu|` and :math:`|\sigma - 1|` (``"paper"``: on
            :math:`|\mathrm{Var} - 1|`); ``None``: the variant's own (1e-3; paper 0.1).
        max_iters: the most adjustment steps per pair and phase (an int >= 1).
        measure: ``"auto"``, ``"activation"`` or ``"layer"`` (``"paper"``: layer only).
        mean_via: ``"auto"``, ``"sub"``, ``"bias"`` or ``"pre_bias"``.
        orthonormal: orthonormal pre-initialisation of the weights to be adjusted;
            ``None``: only for ``"paper"``.
        act_types: module types that count as activations (default: the registry).
        pairs: explicit ``(weight_layer, activation)`` pairs or :class:`Pair` rows, in
            the order to process.
        warn: emit a warning for each pair that did not converge or was dead.
        trace: record every forward pass in ``report.passes``: dicts with ``index``,
            ``target`` (the layer being initialised), ``iteration`` and ``stats``, a
            list of ``dict(layer, activation, mean, std)`` for every pair's measured
            output that ran in that pass.

    Returns:
        An :class:`LSUVReport` with one row per pair.

    Example::

        >>> report = lsuv_init(model, xb, "paper")
        >>> report.all_converged
        True
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown LSUV variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if measure not in ("auto", "activation", "layer"):
        raise ValueError(f"measure must be 'auto', 'activation' or 'layer', got {measure!r}")
    if mean_via not in _MEAN_VIAS:
        raise ValueError(f"mean_via must be one of {', '.join(map(repr, _MEAN_VIAS))}, got {mean_via!r}")
    if variant == "paper" and measure == "activation":
        raise ValueError("variant 'paper' measures each weight layer's own output; use measure='auto' or 'layer'")
    if variant == "blog" and measure == "layer":
        raise ValueError("variant 'blog' measures the activation's output, as the blog's hook did; "
                         "use measure='auto' or 'activation'")
    if variant == "blog" and mean_via not in ("auto", "bias"):
        raise ValueError(f"variant 'blog' moves the mean through the bias; mean_via={mean_via!r} would be "
                         "a different rule (try variant='loop')")
    if isinstance(max_iters, bool) or not isinstance(max_iters, numbers.Integral):
        raise TypeError(f"max_iters must be an int (the most steps per pair), got {max_iters!r} "
                        f"({type(max_iters).__name__})")
    tol = _DEFAULT_TOL[variant] if tol is None else tol
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a positive finite number, got {tol!r}")
    if max_iters < 1:
        raise ValueError(f"max_iters must be at least 1, got {max_iters}")
    xb = _check_batch(model, xb)
    floor = _precision(xb.dtype)
    if tol < floor:
        warnings.warn(f"LSUV: tol={tol:g} is below the {_dtype_name(xb.dtype)} precision of the measured "
                      f"statistics (~{floor:.1e}); layers can meet it only to that precision", stacklevel=2)
    orthonormal = (variant == "paper") if orthonormal is None else bool(orthonormal)
    names = layer_names(model)
    report = LSUVReport(variant=variant, tol=float(tol))
    with _measuring(model):
        act_types = nonlinear.activation_types() if act_types is None else tuple(act_types)
        order = _call_order(model, xb, act_types)
        if pairs is not None:
            todo = [Pair(*p) for p in pairs]
        elif variant == "paper":
            todo = _weight_layer_calls(order)
        else:
            todo = _pairs_in(order, act_types)
        if not todo:
            raise ValueError("no (weight layer, activation) pairs found; pass pairs=[...] or act_types=(...)"
                             if variant != "paper" else "no conv or linear layer ran on this batch")
        done = {p.layer for p in todo}
        skipped = dict.fromkeys(m for m, _ in order if isinstance(m, WEIGHT_LAYERS) and m not in done)
        report.unpaired = [(names[m], "no activation follows it before the next weight layer") for m in skipped]
        if orthonormal:
            for p in todo:
                nn.init.orthogonal_(p.layer.weight)
        run = _Run(model, xb, int(max_iters), trace, report, names, todo, variant, measure)
        for p in todo:
            report.append(_init_pair(run, p, variant, float(tol), measure, mean_via))
    if warn:
        for r in report:
            if not r.converged:
                warnings.warn(f"LSUV ({variant}) on layer {r.layer}: {r.status} after {r.iterations} steps "
                              f"(mean {r.mean_after:.3g}, std {r.std_after:.3g})", stacklevel=2)
    return report


def _check_batch(model: nn.Module, xb) -> torch.Tensor:
    """``xb`` on the model's device and dtype, after checking it is a usable batch."""
    if not isinstance(xb, torch.Tensor):
        raise TypeError(f"xb must be a tensor batch of inputs, got {type(xb).__name__}")
    if xb.numel() == 0:
        raise ValueError(f"the input batch xb is empty (shape {tuple(xb.shape)}); LSUV needs at least one "
                         "real input to measure")
    if xb.is_floating_point() or xb.is_complex():
        bad = (~torch.isfinite(xb)).sum().item()
        if bad:
            nan = torch.isnan(xb).sum().item()
            raise ValueError(f"the input batch xb has {nan} NaN and {bad - nan} infinite values out of "
                             f"{xb.numel()}; LSUV measures statistics of real inputs, so clean the batch first")
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("the model has no parameters to initialise")
    return xb.to(param.device, param.dtype)


def _precision(dtype: torch.dtype) -> float:
    """How close to the goal a statistic can be resolved: a few dozen ulps of the dtype the stats use."""
    return 64 * torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps


def _dtype_name(dtype: torch.dtype) -> str:
    return "float64" if dtype == torch.float64 else "float32"


def _where(variant: str, act: nn.Module | None, measure: str) -> str:
    if variant == "paper" or act is None:
        return "layer"
    if measure == "auto":
        return "layer" if nonlinear.is_bounded(act) and variant != "blog" else "activation"
    return measure


def _mean_mechanism(variant: str, layer: nn.Module, act: nn.Module | None, measured: str, mean_via: str) -> str:
    """Which of 'sub', 'bias', 'pre_bias' moves the mean ('-': this variant or this pair moves none)."""
    if variant in ("std", "paper"):
        return "-"
    has_bias = getattr(layer, "bias", None) is not None
    if variant == "blog":
        mean_via = "bias"
    if mean_via == "auto":
        if measured == "activation" and hasattr(act, "sub"):
            return "sub"
        if not has_bias:
            return "-"
        return "bias" if measured == "layer" else "pre_bias"
    if mean_via == "sub" and not hasattr(act, "sub"):
        raise ValueError(f"mean_via='sub' needs an activation with a `sub` attribute; {type(act).__name__} has none")
    if mean_via == "sub" and measured == "layer":
        raise ValueError("mean_via='sub' shifts the activation, which cannot move the layer's own output")
    if mean_via in ("bias", "pre_bias") and not has_bias:
        raise ValueError(f"mean_via={mean_via!r} needs a bias, but {type(layer).__name__} was built with bias=False")
    return mean_via


def _init_pair(run: _Run, pair: Pair, variant: str, tol: float, measure: str, mean_via: str) -> LayerReport:
    names = run.names
    measured = _where(variant, pair.act, measure)
    via = _mean_mechanism(variant, pair.layer, pair.act, measured, mean_via)
    meter = _Meter(run, pair, measured, via)
    first = meter.measure()
    if via == "bias" and measured == "activation" and first.low >= 0 and abs(first.mean) > tol \
            and math.isfinite(first.std) and first.std >= _DEAD_STD:
        raise ValueError(
            f"LSUV {variant!r}: the activation after layer {names[pair.layer]} ({type(pair.act).__name__}) "
            "produces no negative values, so no bias can bring its mean to 0. Use mean_via='pre_bias' "
            "(centre the layer's output), variant='std', measure='layer', or an activation with a `sub` "
            "shift such as GeneralRelu.")
    final = _RULES[variant](meter, tol)
    converged = _converged(variant, final, tol) and meter.status not in ("dead", "overflow")
    status = _status(meter, final, converged, tol, variant, via)
    act_label = "-" if pair.act is None else f"{names[pair.act]} ({type(pair.act).__name__})" + (
        f" call {pair.act_call + 1}" if pair.act_call else "")
    return LayerReport(names[pair.layer], act_label, meter.steps, first.mean, first.std, final.mean, final.std,
                       converged, status, via, measured, None if via == "-" else final.centre)


def _status(meter: _Meter, m: _Reading, converged: bool, tol: float, variant: str, via: str) -> str:
    if meter.status == "dead":
        return (f"dead: std is {m.std:.3g}; layer left unchanged" if meter.steps == 0
                else f"dead: std fell to {m.std:.3g}")
    dtype = meter.layer.weight.dtype
    floor, kind = _precision(dtype), _dtype_name(dtype)
    if converged:
        if tol < floor:
            return f"ok: met tol {tol:g}, which is below {kind} precision (~{floor:.0e}), so only to that precision"
        if via == "-" and variant in ("mean_std", "loop"):
            return "ok: mean not moved (the layer has no bias and the activation no `sub`)"
        return "ok"
    gap = abs(m.std ** 2 - 1) if variant == "paper" else max(abs(m.std - 1), abs(m.centre))
    if tol < floor and gap <= floor:
        return (f"not converged: tol {tol:g} is below {kind} precision; stopped {gap:.1e} from the goal, "
                f"at the precision limit (~{floor:.0e})")
    if meter.status == "overflow":
        return "not converged: the next update would overflow the weights, so it was undone"
    if meter.status == "stuck":
        return "not converged: the statistics do not respond to this layer's weights"
    weak = meter.response is not None and abs(meter.response) < 0.5
    why = (f"the measured output follows this layer's weights only weakly (response {meter.response:.2f}, "
           "1 = proportional): another path into it, such as a residual connection, sets its scale"
           if weak else f"std {m.std:.4g}, mean {m.mean:.3g}")
    if meter.status == "stalled":
        return f"not converged: progress stalled; {why}"
    return f"not converged: {meter.ctx.max_iters} steps (max_iters) were not enough; {why}"


class LSUVCallback(Callback):
    """Run :func:`lsuv_init` before training, on the first training batch of the fit.

    Every keyword argument goes to :func:`lsuv_init` (``tol``, ``mean_via``, ``trace``,
    ...), checked when the callback is built. The batch is drawn without advancing the
    loader's shuffling, so training sees the same data order with or without this
    callback. The report is kept as ``.report``.
    """

    order = -10  # before anything that hooks the model

    def __init__(self, variant: str = "loop", **kwargs):
        accepted = set(inspect.signature(lsuv_init).parameters) - {"model", "xb", "variant"}
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            raise TypeError(f"LSUVCallback got unknown lsuv_init arguments {unknown}; accepted: {sorted(accepted)}")
        if variant not in VARIANTS:
            raise ValueError(f"unknown LSUV variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.variant, self.kwargs = variant, kwargs
        self.report: LSUVReport | None = None

    def before_fit(self, learn) -> None:
        xb, _ = learn.dls.train.one_batch()
        self.report = lsuv_init(learn.model, xb, self.variant, **self.kwargs)
