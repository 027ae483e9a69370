"""Forward hooks that cannot leak: a list of handles that removes itself."""
from __future__ import annotations

from typing import Callable, Iterable

from torch import nn


class Hooks(list):
    """Register `fn(index, module, inputs, output)` as a forward hook on each of `modules`.

    Use it as a context manager, `with Hooks(modules, fn): ...`, so the hooks are removed
    however the block ends, exceptions included; `remove()` removes them by hand.
    """

    def __init__(self, modules: Iterable[nn.Module], fn: Callable):
        super().__init__()
        try:
            for i, m in enumerate(modules):
                self.append(m.register_forward_hook(lambda mod, inp, out, i=i: fn(i, mod, inp, out)))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        """Remove every hook this list still holds."""
        while self:
            self.pop().remove()

    def __enter__(self) -> "Hooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def hook_count(model: nn.Module) -> int:
    """Forward hooks (and pre-hooks) registered anywhere in `model` now: 0 once every `Hooks` is removed."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def layer_names(model: nn.Module) -> dict[nn.Module, str]:
    """Each sub-module's dotted path, e.g. `'layer1.0.conv2'`: exact, for reports on any model."""
    return {m: (name or type(m).__name__) for name, m in model.named_modules()}


def reader_names(model: nn.Module) -> dict[nn.Module, str]:
    """A name a reader knows for each sub-module, for the book's charts: the same layer, the same name.

    Weight layers are numbered in the order the model defines them, with their width:
    `"conv 2 (16 ch)"`, `"linear 1 (120)"`. An activation takes the name of the weight layer
    it follows (its charts show that layer's outputs); any other module keeps its dotted path.
    `{path: reader_names(model)[m] for path, m in model.named_modules()}` translates a report's paths.
    """
    from .nonlinear import is_activation

    names = layer_names(model)
    counts: dict[str, int] = {}
    last = None
    for m in model.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            kind, width = ("conv", f"{m.out_channels} ch") if isinstance(m, nn.modules.conv._ConvNd) else \
                ("linear", f"{m.out_features}")
            counts[kind] = counts.get(kind, 0) + 1
            last = names[m] = f"{kind} {counts[kind]} ({width})"
        elif last and is_activation(m):
            names[m] = last
    return names
