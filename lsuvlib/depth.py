"""Plain deep networks (no BatchNorm, no residuals), the initialisations chapter 8 compares, and its page.

The question is the one Mishkin & Matas (2016, arXiv:1511.06422) put: can a deep, thin
network without normalisation layers train from scratch, and does the initialisation
decide it? `plain_mlp` builds such a network of any depth; `SCHEMES` names
each initialisation with one line on what it does; `train_setup` turns a scheme
into the arguments `lsuvlib.train` takes, so every scheme is trained by the same
code from the same seed; `init_profile` measures what a scheme leaves at
initialisation, layer by layer.
The chapter's tables, claims and sentences are in `lsuvlib.depth_page`.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable, Mapping

import torch
from torch import nn

from .hooks import Hooks
from .init import WEIGHT_LAYERS, init_kaiming, init_orthonormal
from .models import GeneralRelu


@dataclass(frozen=True)
class Scheme:
    """One initialisation: a data-free weight rule, or LSUV arguments (or neither: PyTorch's own)."""

    label: str
    what: str
    init: Callable[[nn.Module], nn.Module] | None = None
    lsuv: Mapping | None = None


SCHEMES: dict[str, Scheme] = {
    "default": Scheme("PyTorch default", "PyTorch's own `nn.Linear` initialisation: uniform weights with variance "
                      "1/(3·fan_in), uniform biases; nothing is changed after construction"),
    "kaiming": Scheme("Kaiming", "Kaiming-normal weights, variance 2/fan_in for ReLU (He et al. 2015), zero biases",
                      init=init_kaiming),
    "orthonormal": Scheme("orthonormal", "random orthonormal weights, gain 1 (Saxe et al. 2014), zero biases",
                          init=init_orthonormal),
    "lsuv_paper": Scheme("LSUV (paper)", "orthonormal pre-initialisation, then each layer's output variance "
                         "rescaled to 1 within 0.1, first layer to last; biases as PyTorch set them "
                         "(Mishkin & Matas 2016, Algorithm 1)",
                         lsuv={"variant": "paper"}),
    "lsuv_loop": Scheme("LSUV (loop)", "from PyTorch's default weights, each activation's mean shifted to 0 and its "
                        "std scaled to 1 together, until both are within 0.001 (the seed notebook's type 3)",
                        lsuv={"variant": "loop"}),
}


def plain_mlp(depth: int, width: int, in_features: int = 784, n_classes: int = 10,
              act: Callable[[], nn.Module] = lambda: GeneralRelu(sub=0.0)) -> nn.Sequential:
    """A plain MLP with `depth` weight layers: in -> width, (depth - 2) x width -> width, width -> classes.

    Every hidden layer is followed by `act` (a ReLU that carries a `sub` shift, so
    the LSUV variants that centre means have something to move; at `sub=0` it is a
    plain ReLU). No normalisation, no skip connections: nothing but the initial weights
    keeps the signal in range. Inputs of any shape are flattened first.
    """
    if depth < 2:
        raise ValueError(f"depth counts weight layers including the input and output layers: need at least 2, "
                         f"got {depth}")
    if width < 1 or in_features < 1 or n_classes < 2:
        raise ValueError(f"need width >= 1, in_features >= 1 and n_classes >= 2, got width={width}, "
                         f"in_features={in_features}, n_classes={n_classes}")
    sizes = [in_features] + [width] * (depth - 1)
    hidden = [nn.Sequential(nn.Linear(a, b), act()) for a, b in zip(sizes[:-1], sizes[1:])]
    return nn.Sequential(nn.Flatten(), *hidden, nn.Linear(width, n_classes))


def _scheme(name: str) -> Scheme:
    if name not in SCHEMES:
        raise ValueError(f"unknown initialisation scheme {name!r}; choose from {', '.join(SCHEMES)}")
    return SCHEMES[name]


def _build(depth: int, width: int, in_features: int, n_classes: int, init) -> nn.Module:
    model = plain_mlp(depth, width, in_features, n_classes)
    return init(model) if init is not None else model


def train_setup(scheme: str, depth: int, width: int, ds) -> dict:
    """`make_model` and `lsuv` arguments for `lsuvlib.train` / `over_seeds` for one scheme.

    `ds` is the `ImageSet` the network sees: its image size and its classes set the first and
    last layer. The model is built right after the run seeds the generators, so for a given
    seed every scheme starts from the same PyTorch default weights before its own rule runs.
    """
    s = _scheme(scheme)
    if not (hasattr(ds, "x_train") and hasattr(ds, "classes")):
        raise TypeError(f"ds: the ImageSet the network will see (from lsuvlib.prepare) expected, got {ds!r}")
    return dict(make_model=partial(_build, depth, width, ds.x_train[0].numel(), len(ds.classes), s.init),
                lsuv=dict(s.lsuv) if s.lsuv is not None else None)


def layer_output_stds(model: nn.Module, xb: torch.Tensor, over: str = "all") -> list[float]:
    """Std of every weight layer's output (before its activation) on `xb`, in execution order.

    `over="all"`: the std of every element of the output, what LSUV measures and sets.
    `over="batch"`: each unit's std across the batch, root-mean-squared over units: the
    part of the output that depends on the input. A deep net whose biases dominate can
    keep a sizeable `"all"` std while its `"batch"` std, the signal, has vanished.
    """
    if over not in ("all", "batch"):
        raise ValueError(f"over must be 'all' or 'batch', got {over!r}")
    layers = [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    found: dict[int, float] = {}

    def record(i, m, inp, out):
        a = out.detach().float()
        value = a.std() if over == "all" else a.flatten(1).std(dim=0).pow(2).mean().sqrt()
        found.setdefault(i, value.item())

    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), Hooks(layers, record):
            model(xb)
    finally:
        model.train(was_training)
    return [found[i] for i in sorted(found)]


def init_profile(scheme: str, depth: int, width: int, ds, xb: torch.Tensor, seed: int,
                 over: str = "all") -> list[float]:
    """`layer_output_stds` of a freshly initialised network, seeded and built as `lsuvlib.train` does.

    The network is `train_setup(scheme, depth, width, ds)`'s; `xb` is the batch LSUV would use
    (the run's first training batch), the same batch for every scheme.
    """
    from .lsuv import lsuv_init
    from .runtime import set_seed

    setup = train_setup(scheme, depth, width, ds)
    set_seed(seed)
    model = setup["make_model"]()
    if setup["lsuv"] is not None:
        lsuv_init(model, xb, warn=False, **setup["lsuv"])
    return layer_output_stds(model, xb, over)


def depth_reach(trains: Mapping[int, bool]) -> dict:
    """How deep a scheme trains, from `{depth: trains there}`.

    `trains_at` lists the depths where it trains, `deepest` the largest of them
    (None if none), `first_failure` the shallowest depth where it does not (None if
    it trains everywhere), and `trains_again` the depths beyond that first failure
    where it trains once more (a non-monotone result the prose must not hide).
    """
    depths = sorted(trains)
    ok = [d for d in depths if trains[d]]
    failed = [d for d in depths if not trains[d]]
    first_failure = failed[0] if failed else None
    return dict(trains_at=ok, deepest=ok[-1] if ok else None, first_failure=first_failure,
                trains_again=[d for d in ok if first_failure is not None and d > first_failure])
