"""What `lsuv_init` did: a `LayerReport` row per layer it set, and what became of every weight.

`coverage` is the account no LSUV implementation we know of gives: every module with trainable
weights, initialised, left alone on purpose, not used on this batch, or never reached (its
weights shaped the output, as autograd's graph shows, but in no call LSUV measures).
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .nonlinear import is_activation
from .probe import LAYERS, Pair

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.InstanceNorm1d, nn.InstanceNorm2d,
          nn.InstanceNorm3d, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm)


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

    def account(self, model: nn.Module, pairs: list[Pair], order: list[tuple[nn.Module, int]], used: set[int],
                unpaired: str, warn: bool) -> None:
        """Fill `coverage` and `unpaired` for every module of `model` with trainable weights, from the `pairs` set
        (one row each), the (module, call) `order` of a pass, the ids of the parameters its output depends on
        (`used_parameters`), and why a weight layer that ran has no row (`unpaired`)."""
        rows = {p.layer: r for p, r in zip(pairs, self)}
        rows |= {m.out_proj: r for m, r in rows.items() if isinstance(m, nn.MultiheadAttention)}  # set through it
        ran = {m for m, _ in order if isinstance(m, LAYERS)}
        ran |= {m.out_proj for m in ran if isinstance(m, nn.MultiheadAttention)}
        for name, m in model.named_modules():
            own = {id(p) for p in m.parameters(recurse=False) if p.requires_grad}
            if m in rows:
                r = rows[m]
                at = r.activation if r.measured == "activation" else f"{r.layer}'s output"
                self.coverage[name] = f"initialised: std {r.std_after:.3f} at {at}" if r.converged else r.status
            elif own:
                self.coverage[name] = what = (
                    "not used by the forward pass on this batch" if not own & used else
                    "left alone: a normalisation layer keeps its scale 1 and shift 0" if isinstance(m, _NORMS) else
                    "left alone: an embedding is a lookup table, with no input to scale it by"
                    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) else
                    "left alone: an activation's own parameters" if is_activation(m) else
                    f"left alone: {unpaired}" if m in ran else
                    "never reached: the forward pass used its weights, but not in a call LSUV measures (a bare "
                    "parameter, a fused path, or a layer type LSUV has no rule for)")
                if what == f"left alone: {unpaired}":
                    self.unpaired.append((name, unpaired))
                if warn and what.startswith("never reached: "):
                    warnings.warn(f"LSUV never reached {name} ({type(m).__name__}): {what.split(': ', 1)[1]}; its "
                                  "weights are as they were, so initialise it another way", stacklevel=3)

    def _cells(self) -> list[list[str]]:
        return [[f"{x:.3f}" if isinstance(x, float) else str(x) for x in map(asdict(r).get, self.columns)]
                for r in self]

    def _others(self) -> list[str]:
        return [f"{name}: {what}" for name, what in self.coverage.items() if name not in {r.layer for r in self}]

    def __str__(self) -> str:
        rows = [list(self.columns), *self._cells()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        return "\n".join(["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows] + self._others())

    def _repr_markdown_(self) -> str:
        rows = [self.columns, ["---"] * len(self.columns), *self._cells()]
        return "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows) + "".join(
            f"\n\n{line}" for line in self._others())


def used_parameters(model: nn.Module, out) -> set[int]:
    """Ids of the trainable parameters of `model` that `out` (a tensor, or a tuple or dict of them, computed
    with gradients) depends on: one backward pass, as autograd's graph knows which weights the forward used."""
    params = [p for p in model.parameters() if p.requires_grad]
    outs = [out] if torch.is_tensor(out) else out.values() if isinstance(out, dict) else out
    total = [o.sum() for o in outs if torch.is_tensor(o) and o.requires_grad]
    grads = torch.autograd.grad(sum(total), params, allow_unused=True) if total and params else []
    return {id(p) for p, g in zip(params, grads) if g is not None}
