"""N copies of one small network trained in one pass: grouped convolutions and batched matmuls.

Each copy keeps its own weights, its own batches and its own optimiser state; nothing is
shared but the kernel launch. The stacked model is built from N ordinary models (after
each had its own seed and its own LSUV), and each copy is copied back into an ordinary
`nn.Module` at the end, so callers never see the stacked form.

Layouts inside the stack: images are `(B, N*C, H, W)` (copy-major channels, so a grouped
convolution with `groups=N` is N independent convolutions, and BatchNorm2d over N*C
channels is N independent BatchNorms); flat features are `(N, B, F)` (one batched
matmul for N Linear layers). `nn.Flatten` switches from the first to the second.
"""
from __future__ import annotations

import copy
import time
from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .learner import CHECK_EVERY, divergence_threshold, diverged, stop_reason
from .models import GeneralRelu
from .runtime import check_positive

if TYPE_CHECKING:
    from .batches import DataLoaders

# Element-wise modules without per-copy state: the same module works on any layout.
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.ELU, nn.Identity, nn.ReLU6,
                nn.Hardtanh, nn.Softplus, nn.Mish, nn.PReLU)
_POOLS = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


class NotStackable(TypeError):
    """The model has a layer the stacked path does not know how to copy N times."""


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model's layers in call order, for nested `nn.Sequential` containers only."""
    if isinstance(model, nn.Sequential):
        out = []
        for name, child in model.named_children():
            out += [(f"{name}.{n}" if n else name, m) for n, m in _leaves(child)]
        return out
    if not list(model.children()) or isinstance(model, (GeneralRelu,) + _ELEMENTWISE + _POOLS):
        return [("", model)]
    raise NotStackable(f"{type(model).__name__} is not an nn.Sequential of plain layers; "
                       "train these seeds with together=False")


class _Conv(nn.Module):
    def __init__(self, convs: Sequence[nn.Conv2d]):
        super().__init__()
        c = convs[0]
        if c.padding_mode != "zeros":  # other modes pad outside F.conv2d
            raise NotStackable(f"{c} has padding_mode={c.padding_mode!r}; train with together=False")
        self.n, self.groups = len(convs), c.groups
        self.kw = dict(stride=c.stride, padding=c.padding, dilation=c.dilation)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in convs]).contiguous())
        self.bias = nn.Parameter(torch.stack([m.bias.detach() for m in convs])) if c.bias is not None else None

    def forward(self, x):
        w = self.weight.flatten(0, 1)  # (N*Cout, Cin/groups, k, k): a free view
        b = self.bias.flatten() if self.bias is not None else None
        return F.conv2d(x, w, b, groups=self.n * self.groups, **self.kw)

    def unstack(self, i: int, target: nn.Conv2d) -> None:
        target.weight.data.copy_(self.weight[i])
        if self.bias is not None:
            target.bias.data.copy_(self.bias[i])


class _Linear(nn.Module):
    def __init__(self, lins: Sequence[nn.Linear]):
        super().__init__()
        self.weight = nn.Parameter(torch.stack([m.weight.detach().t() for m in lins]).contiguous())  # (N, in, out)
        self.bias = (nn.Parameter(torch.stack([m.bias.detach() for m in lins]).unsqueeze(1))
                     if lins[0].bias is not None else None)

    def forward(self, x):  # x: (N, B, in)
        return torch.baddbmm(self.bias, x, self.weight) if self.bias is not None else torch.bmm(x, self.weight)

    def unstack(self, i: int, target: nn.Linear) -> None:
        target.weight.data.copy_(self.weight[i].t())
        if self.bias is not None:
            target.bias.data.copy_(self.bias[i, 0])


class _BatchNorm(nn.Module):
    """BatchNorm2d over N*C channels: each channel's batch statistics are its own copy's."""

    def __init__(self, bns: Sequence[nn.BatchNorm2d]):
        super().__init__()
        b = bns[0]
        self.bn = nn.BatchNorm2d(len(bns) * b.num_features, eps=b.eps, momentum=b.momentum, affine=b.affine,
                                 track_running_stats=b.track_running_stats)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(b, name) is not None:
                    getattr(self.bn, name).copy_(torch.cat([getattr(m, name) for m in bns]))
            if b.num_batches_tracked is not None:
                self.bn.num_batches_tracked.copy_(b.num_batches_tracked)
        self.c = b.num_features

    def forward(self, x):
        return self.bn(x)

    def unstack(self, i: int, target: nn.BatchNorm2d) -> None:
        sl = slice(i * self.c, (i + 1) * self.c)
        with torch.no_grad():
            for name in ("weight", "bias", "running_mean", "running_var"):
                if getattr(target, name) is not None:
                    getattr(target, name).copy_(getattr(self.bn, name)[sl])
            if target.num_batches_tracked is not None:
                target.num_batches_tracked.copy_(self.bn.num_batches_tracked)


class _GeneralRelu(nn.Module):
    """GeneralRelu whose `sub` (set by LSUV per copy) is a per-copy constant, not a parameter."""

    def __init__(self, acts: Sequence[GeneralRelu]):
        super().__init__()
        a = acts[0]
        for other in acts:
            if (other.leak, other.maxv) != (a.leak, a.maxv):
                raise NotStackable("GeneralRelu copies differ in leak or maxv; train with together=False")
        self.leak, self.maxv = a.leak, a.maxv
        self.register_buffer("sub", torch.tensor([float(m.sub or 0.0) for m in acts]))
        self.any_sub = any(m.sub for m in acts)

    def forward(self, x):
        x = F.leaky_relu(x, self.leak) if self.leak else F.relu(x)
        if self.any_sub:
            n = len(self.sub)
            if x.dim() == 4:  # (B, N*C, H, W): one shift per copy's block of channels
                x = (x.unflatten(1, (n, -1)) - self.sub.view(1, n, 1, 1, 1)).flatten(1, 2)
            else:  # (N, B, F)
                x = x - self.sub.view(n, *([1] * (x.dim() - 1)))
        if self.maxv is not None:
            x = x.clamp_max(self.maxv)
        return x

    def unstack(self, i: int, target: GeneralRelu) -> None:
        pass  # training never moves sub; the target already has its copy's value


class _Flatten(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, x):  # (B, N*C, H, W) -> (N, B, C*H*W), each copy's features in its own order
        return x.unflatten(1, (self.n, -1)).flatten(2).transpose(0, 1)


class StackedModel(nn.Module):
    """N copies of an `nn.Sequential` of conv/linear/BatchNorm2d/pool/activation/Flatten layers.

    `forward` takes images `(N, B, C, H, W)` (each copy its own batch) and returns
    logits `(N, B, classes)`.
    """

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("need at least one model to stack")
        self.n = len(models)
        per_model = [_leaves(m) for m in models]
        names = [n for n, _ in per_model[0]]
        for leaves in per_model[1:]:
            if [n for n, _ in leaves] != names or [type(m) for _, m in leaves] != [type(m) for _, m in per_model[0]]:
                raise NotStackable("the models to stack do not have the same layers")
        self.names = names
        layers = []
        for j, (_, first) in enumerate(per_model[0]):
            copies = [leaves[j][1] for leaves in per_model]
            layers.append(self._stack(first, copies))
        self.layers = nn.ModuleList(layers)

    def _stack(self, first: nn.Module, copies: list[nn.Module]) -> nn.Module:
        if type(first) is nn.Conv2d:
            return _Conv(copies)
        if type(first) is nn.Linear:
            return _Linear(copies)
        if type(first) is nn.BatchNorm2d:
            return _BatchNorm(copies)
        if isinstance(first, GeneralRelu):
            return _GeneralRelu(copies)
        if isinstance(first, nn.Flatten):
            if (first.start_dim, first.end_dim) != (1, -1):
                raise NotStackable("only nn.Flatten() with its default dims can be stacked")
            return _Flatten(self.n)
        if isinstance(first, nn.PReLU):
            raise NotStackable("PReLU has a learned slope per copy; train with together=False")
        if isinstance(first, _ELEMENTWISE + _POOLS):
            return copy.deepcopy(first)
        raise NotStackable(f"{type(first).__name__} cannot be stacked yet; train these seeds with together=False")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, b = x.shape[:2]
        h = x.transpose(0, 1).flatten(1, 2)  # (B, N*C, H, W)
        for layer in self.layers:
            h = layer(h)
        if h.dim() != 3:
            raise NotStackable("the stacked model must end flat (nn.Flatten or Linear layers)")
        return h

    def unstack(self, i: int, target: nn.Module) -> nn.Module:
        """Copy copy `i`'s weights and buffers into `target` (a model built like the originals)."""
        for layer, (_, module) in zip(self.layers, _leaves(target)):
            if hasattr(layer, "unstack"):
                layer.unstack(i, module)
        return target


def check_stackable(model: nn.Module) -> None:
    """Raise `NotStackable` naming the layer if `model` cannot be trained stacked."""
    StackedModel([copy.deepcopy(model)])


class TogetherResult:
    """Per copy: history, batch losses and why it stopped (None if it finished)."""

    def __init__(self, n: int):
        self.history: list[list[dict]] = [[] for _ in range(n)]
        self.batch_losses: list[list[float]] = [[] for _ in range(n)]
        self.stopped: list[str | None] = [None] * n
        self.seconds = 0.0


def fit_together(models: Sequence[nn.Module], dls: Sequence["DataLoaders"], *, epochs: int, lr: float,
                 momentum: float = 0.0, lrs: Sequence[float] | None = None) -> TogetherResult:
    """Train `models[i]` on `dls[i]` for every i in one stacked pass per batch.

    The models are updated in place at the end (each with its own trained weights). The
    loss is the sum of the copies' mean losses, so each copy's gradient is exactly its
    own; SGD (with momentum) is element-wise, so one optimiser over the stacked
    parameters is N independent optimisers. A copy that diverges (the rule of
    `lsuvlib.learner`, checked at the same batches as `Learner` checks it) is frozen
    there: its weights are kept as they were when it stopped, its parameters and
    momentum are zeroed in the stack (finite zeros neither move nor make NaNs), and the
    others train on.
    """
    n = len(models)
    if n != len(dls):
        raise ValueError(f"{n} models but {len(dls)} data loaders")
    check_positive("epochs", epochs, whole=True)
    check_positive("lr", lr)
    if lrs is not None and len(lrs) < epochs:
        raise ValueError(f"lrs has {len(lrs)} learning rates for {epochs} epochs")
    sizes = {(len(d.train.x), d.train.batch_size, len(d.valid.x), d.valid.batch_size) for d in dls}
    if len(sizes) != 1:
        raise ValueError("the copies' data loaders differ in size or batch size; they must share one dataset")
    device = dls[0].train.device
    stacked = StackedModel(models).to(device)
    params = list(stacked.parameters())  # every one copy-major: .view(n, -1)[i] is copy i
    opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
    result = TogetherResult(n)
    active = torch.ones(n, dtype=torch.bool, device=device)
    frozen: dict[int, nn.Module] = {}  # copy -> its model as it was when it stopped
    kept: dict[int, int] = {}  # copy -> training batches of its last pass that were its own
    threshold = None
    start_all = time.perf_counter()

    def freeze(bad: torch.Tensor, batches: int) -> None:
        if not bad.any():
            return
        for i in bad.nonzero().flatten().tolist():
            frozen[i] = stacked.unstack(i, copy.deepcopy(models[i]))
            kept[i] = batches
        active[bad] = False
        with torch.no_grad():
            for p in params:
                p.view(n, -1)[bad] = 0
                buf = opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.view(n, -1)[bad] = 0

    for epoch in range(epochs):
        if lrs is not None:
            for g in opt.param_groups:
                g["lr"] = lrs[epoch]
        for training in (True, False):
            live = [i for i in range(n) if i not in frozen]
            if not live:
                break
            phase = "train" if training else "eval"
            stacked.train(training)
            start = time.perf_counter()
            loss_sum = torch.zeros(n, device=device)
            correct = torch.zeros(n, dtype=torch.long, device=device)
            seen = torch.zeros(n, dtype=torch.long, device=device)
            losses: list[torch.Tensor] = []
            with torch.set_grad_enabled(training):
                for b, pairs in enumerate(zip(*[d.train if training else d.valid for d in dls])):
                    xb = torch.stack([p[0] for p in pairs])
                    yb = torch.stack([p[1] for p in pairs])
                    preds = stacked(xb)
                    per = F.cross_entropy(preds.flatten(0, 1), yb.flatten(), reduction="none").view(n, -1).mean(1)
                    per = torch.where(active, per, torch.zeros_like(per))  # a frozen copy adds nothing
                    if training:
                        per.sum().backward()  # each copy's gradient is its own: d(sum)/d(loss_i) = 1
                        opt.step()
                        opt.zero_grad(set_to_none=True)
                        per = per.detach()
                        losses.append(per)
                        if threshold is None:
                            threshold = divergence_threshold(per, preds.shape[-1])
                    m = len(yb[0])
                    loss_sum += per * m
                    correct += torch.where(active, (preds.argmax(-1) == yb).sum(1), 0)
                    seen += active * m
                    if training and b % CHECK_EVERY == CHECK_EVERY - 1:
                        freeze(active & diverged(loss_sum / seen.clamp_min(1), threshold), len(losses))
                        if not active.any():
                            break
            freeze(active & diverged(loss_sum / seen.clamp_min(1), threshold), len(losses))
            seconds = time.perf_counter() - start
            totals, corrects, seens = loss_sum.tolist(), correct.tolist(), seen.tolist()
            hist = torch.stack(losses).T.tolist() if losses else [[] for _ in range(n)]
            for i in live:
                loss = totals[i] / max(seens[i], 1)
                if training:
                    result.batch_losses[i] += hist[i][:kept.get(i)]  # after it stopped, a batch is not its own
                result.history[i].append(dict(epoch=epoch, phase=phase, loss=loss,
                                              accuracy=corrects[i] / max(seens[i], 1), seconds=seconds))
                if i in frozen:
                    result.stopped[i] = stop_reason(phase, loss, epoch)
    for i, model in enumerate(models):
        if i in frozen:
            model.load_state_dict(frozen[i].state_dict())
        else:
            stacked.unstack(i, model)
    result.seconds = time.perf_counter() - start_all
    return result
