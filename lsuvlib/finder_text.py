"""What the learning-rate finder chapter says about its sweeps, computed from them (chapter 2).

`settings` sets the page's finder beside the blog's; `signal_at_start` measures why a network
cannot move in a sweep; `sweep_text` reads one curve (`LRFindResult.falling_part`); `answer`
is the chapter's one-sentence finding. Each returns rows, a Markdown table or sentences.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import reader_names
from .lr_finder import FLAT
from .page import Table, markdown_table, sci
from .sources import BLOG

if TYPE_CHECKING:
    from .batches import Batches
    from .lr_finder import LRFindResult

BLOG_LR = 0.2  # the rate every training section of the blog used (its Learner's lr)
SVHN_TRAIN = 73_257  # images in SVHN's cropped-digits training split: the blog's one pass


def _same(ours, blogs) -> str:
    return "same" if ours == blogs else "**differs**"


def settings(params: dict, n_pass: int) -> list[dict]:
    """This page's finder beside the blog's, one row per setting; `params` as the chapter's parameters,
    `n_pass` the batches in one pass over this page's training split."""
    blog = BLOG["lr_finder"]
    start, growth, stop, smoothing, iters = (params[k] for k in ("lr_start", "lr_growth", "lr_stop_factor",
                                                                 "lr_smoothing", "lr_find_iters"))
    blog_pass = math.ceil(SVHN_TRAIN / blog["batch_size"])
    length = n_pass if iters is None else iters
    return [
        dict(setting="rate of the first batch", blog=sci(blog["start"]), book=sci(start),
             match=_same(start, blog["start"])),
        dict(setting="growth of the rate", blog=f"× {blog['growth']:g} per batch", book=f"× {growth:g} per batch",
             match=_same(growth, blog["growth"])),
        dict(setting="loss curve", blog="raw loss of each batch",
             book="raw loss of each batch" if not smoothing else f"moving average (weight {smoothing:g})",
             match=_same(bool(smoothing), bool(blog["smoothing"]))),
        dict(setting="stop rule", blog=f"a loss above {blog['stop_factor']:g} × the lowest so far",
             book=f"a loss above {stop:g} × the lowest so far, or one that is not a number",
             match="same, plus a stop on a loss that is not a number" if stop == blog["stop_factor"]
             else "**differs**"),
        dict(setting="length", blog=f"one pass over SVHN: {blog_pass} batches, up to a rate of "
             f"{sci(blog['start'] * blog['growth'] ** (blog_pass - 1))}",
             book=f"{f'one pass here: {length}' if iters is None else iters} batches, up to a rate of "
             f"{sci(start * growth ** (length - 1))}",
             match=_same((start, growth, length), (blog["start"], blog["growth"], blog_pass))),
        dict(setting="optimiser", blog="plain SGD", book="plain SGD", match=_same(0.0, blog["momentum"])),
        dict(setting="batch size", blog=str(blog["batch_size"]), book=str(params["batch_size"]),
             match=_same(params["batch_size"], blog["batch_size"])),
        dict(setting="suggested rate", blog="none: read off the plot",
             book="a tenth of the rate at the lowest loss, when the loss falls", match="the book's addition"),
        dict(setting="the model afterwards", blog="left trained", book="restored to its state before the sweep",
             match="**differs**"),
    ]


def settings_table(rows: list[dict]) -> Table:
    return markdown_table(rows, headers=["setting", "the blog", "this page", "match"])


# ----------------------------------------------------------------------------- why a network cannot move


@torch.no_grad()
def _forward(model: nn.Module, xb: torch.Tensor) -> torch.Tensor:
    return model(xb)


def signal_at_start(models: dict[str, nn.Module], batches: Batches) -> dict[str, dict]:
    """For each model, before any training, on the first batch a fit would see: its weights' variance
    times their fan-in, the std after each ReLU (layers named as `hooks.reader_names` does), how much
    its class scores vary from image to image, and the first layer's gradient relative to its weights.
    Drawing the batch (`Batches.one_batch`) does not move the loader's shuffle."""
    from . import measure_activations  # the package's probe, wherever the LSUV modules keep it

    xb, yb = batches.one_batch()
    out = {}
    for name, model in models.items():
        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        names = {path: reader_names(model)[m] for path, m in model.named_modules()}
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(xb), yb).backward()
        first = convs[0].weight
        out[name] = dict(
            var_fan_in=sum(m.weight.var().item() * m.weight[0].numel() for m in convs) / len(convs),
            stds={names[r["layer"]]: r["std"] for r in measure_activations(model, xb)},
            score_spread=_forward(model, xb).std(0).mean().item(),
            first_grad=(first.grad.norm() / first.norm()).item())
        model.zero_grad(set_to_none=True)
    return out


def signal_table(signal: dict[str, dict]) -> Table:
    """`signal_at_start` as a table, one column per model."""
    names = list(signal)
    rows = [dict(what="weight variance × fan-in (mean over the layers)",
                 **{n: f"{signal[n]['var_fan_in']:.3f}" for n in names}),
            dict(what="so each layer multiplies the second moment by about n σ² / 2",
                 **{n: f"{signal[n]['var_fan_in'] / 2:.3f}" for n in names})]
    rows += [dict(what=f"std after {layer}", **{n: f"{signal[n]['stds'][layer]:.3f}" for n in names})
             for layer in signal[names[0]]["stds"]]
    rows += [dict(what="class scores: std from image to image",
                  **{n: sci(signal[n]["score_spread"], ".2g") for n in names}),
             dict(what="first layer's gradient, relative to its weights",
                  **{n: sci(signal[n]['first_grad'], ".2g") for n in names})]
    return markdown_table(rows, headers=["before training, on one batch", *names])


def signal_text(signal: dict[str, dict], stuck: str, moving: str) -> str:
    """Why `stuck` gives the same loss for every image while `moving` does not, from `signal_at_start`."""
    s, m = signal[stuck], signal[moving]
    return (f"With {stuck}, each layer multiplies the second moment of its input by about "
            f"{s['var_fan_in'] / 2:.2f} (the rule of @sec-motivation, with the weight variance measured "
            f"here), so the image's signal fades layer by layer and what reaches the class scores is mostly the "
            f"biases, the same for every image: the scores vary from image to image by a std of "
            f"{sci(s['score_spread'], '.2g')}, {m['score_spread'] / s['score_spread']:.0f} times less than with "
            f"{moving}. "
            f"The network gives every image nearly the same uniform scores, so its loss is the uniform guess's "
            f"whatever the image, and the gradient that reaches its first layer is "
            f"{m['first_grad'] / s['first_grad']:.0f} times smaller, relative to the weights, than with "
            f"{moving}. One batch at a rate that does not blow it up moves it almost nowhere.")


# ----------------------------------------------------------------------------- reading one sweep


def blog_rate_place(res: LRFindResult, blog_lr: float = BLOG_LR) -> tuple[int, str] | None:
    """The batch trained nearest `blog_lr` and where it lies on the curve, None when the sweep
    ended more than half a growth step before that rate."""
    if res.lrs[-1] < blog_lr / math.sqrt(res.lrs[1] / res.lrs[0]):
        return None
    k = min(range(len(res.lrs)), key=lambda b: abs(math.log(res.lrs[b] / blog_lr)))
    fall = res.falling_part()
    return k, ("no different from its start" if fall is None else
               "still on the flat part, before the fall" if k < fall[0] else
               "on the falling part" if k < fall[1] else
               "at the lowest point" if k == fall[1] else "past the lowest point, where the loss rises again")


def sweep_text(res: LRFindResult, n_classes: int, blog_lr: float = BLOG_LR) -> str:
    """What one sweep's curve shows: its range and end, its start against $\\ln C$, its falling part
    (or that it has none, with no suggestion), and the loss at the blog's training rate."""
    n, first, lrs, losses = len(res.lrs), res.losses[0], res.lrs, res.losses
    text = [f"The rate went from {sci(lrs[0])} to {sci(lrs[-1])} over {n} batches"]
    if res.stopped:
        last = losses[-1]
        text[0] += (", where the stop rule ended the sweep: the last loss was not a number." if not math.isfinite(last)
                    else f", where the stop rule ended the sweep: the last loss, {last:.3g}, was more than "
                    "the stop factor times the lowest before it.")
    else:
        text[0] += ", its full length, without the stop rule firing."
    chance = math.log(n_classes)
    text.append(f"The loss started at {first:.3f}; a network that gives all {n_classes} classes the same score "
                f"loses ln {n_classes} = {chance:.3f} on every image.")
    fall = res.falling_part()
    low = res.lowest
    if fall is None:
        drop = (first - losses[low]) / first
        text.append(f"It never fell more than {FLAT:.0%} below its start: the lowest loss, {losses[low]:.3f} at a "
                    f"rate of {sci(lrs[low])}, is {drop:.1%} below it, within the batch-to-batch noise, so the "
                    "curve has no falling part and points to no rate.")
    else:
        i, j = fall
        text.append(f"It stayed within {FLAT:.0%} of its start up to a rate of {sci(lrs[i])}, then fell to "
                    f"{losses[j]:.3f} at {sci(lrs[j])}.")
        before = " (before the falling part)" if res.suggestion < lrs[i] else ""
        if j == n - 1:
            text.append(f"That was the sweep's last batch: the loss was still falling when it ended, so a tenth of "
                        f"that rate, {sci(res.suggestion)}{before}, is a lower bound on the rule of thumb's "
                        "suggestion.")
        else:
            text.append(f"After that the loss rose again. A tenth of the lowest point's rate, "
                        f"**{sci(res.suggestion)}**{before}, is the rule-of-thumb suggestion.")
    place = blog_rate_place(res, blog_lr)
    if place is None:
        text.append(f"The sweep ended before the blog's training rate of {blog_lr:g}, so it says nothing about "
                    "the loss there.")
    else:
        k, where = place
        text.append(f"Near the blog's training rate of {blog_lr:g} (batch {k + 1}, rate {sci(lrs[k])}) the loss "
                    f"was {losses[k]:.3f}: {where}.")
    return " ".join(text)


def answer(stuck: LRFindResult, moving: LRFindResult, stuck_name: str, moving_name: str,
           blog_lr: float = BLOG_LR) -> str:
    """The chapter's finding: what the finder pointed to for the blog's network, and for one that learns."""
    def said(res: LRFindResult) -> str:
        if res.suggestion is None:
            text = (f"points to no rate: its loss never fell more than {FLAT:.0%} below its start at any rate up "
                    f"to {sci(res.lrs[-1])}")
        else:
            low = res.lowest
            text = (f"points to {sci(res.suggestion)}, a tenth of the rate at its lowest loss "
                    f"({res.losses[low]:.3f} at {sci(res.lrs[low])})")
        place = blog_rate_place(res, blog_lr)
        return text + (f", and the blog's rate of {blog_lr:g} is {place[1]}" if place and res.suggestion else "")
    return f"For {stuck_name}, the finder {said(stuck)}; for {moving_name}, it {said(moving)}."


def choice_text(stuck: LRFindResult, moving: LRFindResult, stuck_name: str, moving_name: str,
                blog_lr: float = BLOG_LR) -> str:
    """Which rate a reader should take from these sweeps, and how much room the blog's `blog_lr` leaves
    before the turn of `moving`'s curve, conditional on what the curves show."""
    if moving.suggestion is None:
        return ("Which rate to pick? The finder cannot say here: neither curve falls, so the rate has to come from "
                "elsewhere, such as the blog's, and be checked by training.")
    (_, low), lrs = moving.falling_part(), moving.lrs
    text = [f"Which rate to pick? For {moving_name}, take the rule of thumb's **{sci(moving.suggestion)}**: a tenth of "
            "the rate at the lowest loss, it keeps well clear of the turn where the steps start to overshoot."]
    if low == len(lrs) - 1:
        text.append(f"The loss was still falling when the sweep ended, so the turn lies beyond {sci(lrs[-1])} and "
                    "the suggestion is a lower bound.")
    place, turn = blog_rate_place(moving, blog_lr), lrs[low]
    blog = f"The blog's rate of {blog_lr:g}"
    if place is None:
        text.append(f"The sweep ended before the blog's rate of {blog_lr:g}, so it says nothing about that rate.")
    elif blog_lr <= moving.suggestion:
        text.append(f"{blog} is no higher, so by this curve it is a safe choice too.")
    else:
        blog += f" is {blog_lr / moving.suggestion:.2g} times that suggestion and {place[1]}"
        text.append(f"{blog}: by this curve it is at or past the turn, too high a rate." if turn <= blog_lr else
                    f"{blog}; the lowest point's rate, {sci(turn)}, is only {turn / blog_lr:.1f} times higher, so it "
                    "leaves little room." if turn < 3 * blog_lr else
                    f"{blog}; the lowest point's rate, {sci(turn)}, is {turn / blog_lr:.2g} times higher.")
    text.append("The sweep took one plain-SGD step per rate; @sec-batchnorm-kaiming and @sec-lsuv-callback train "
                "for whole epochs with momentum, whose steps build up to several times one gradient step, so a rate "
                "near the turn has less room still there. @sec-lsuv-callback trains at the blog's rate and at a lower "
                "one and counts, at each, the runs that diverge.")
    if stuck.suggestion is None:
        text.append(f"For {stuck_name}, the finder offers no rate at all: its initialisation, not its rate, is what "
                    "needs changing first.")
    return " ".join(text)
