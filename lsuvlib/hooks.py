"""Forward hooks that cannot leak: a list of handles that removes itself."""
from __future__ import annotations

from typing import Callable, Iterable

from torch import nn


class Hooks(list):
    """Register ``fn(index, module, inputs, output)`` as a forward hook on each module.

    Use it as a context manager (``with Hooks(mods, fn): ...``) so the hooks are
    removed however the block ends, exceptions included.
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
        while self:
            self.pop().remove()

    def __enter__(self) -> "Hooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def hook_count(model: nn.Module) -> int:
    """Forward hooks currently registered anywhere in ``model`` (0 after clean-up)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def layer_names(model: nn.Module) -> dict[nn.Module, str]:
    """Each sub-module's dotted path, e.g. ``'2.1'``, to label charts and reports."""
    return {m: (name or type(m).__name__) for name, m in model.named_modules()}
