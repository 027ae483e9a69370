r"""Narrates what the runs of the blog's CNN show, computed from them: the pages of chapters 3 to 5.

The baseline, standardised inputs, and BatchNorm with Kaiming weights share one network and one
story: how long the training loss sat at chance level ($\ln C$, the loss of a network that gives
each of $C$ classes the same probability), what the layers' activations looked like, each seed's
pair of runs, and why an activation's std is what it is. Each function returns Markdown for a
page, or the answer a chapter saves as its `finding`. `baseline_runs` also trains, when the build
holds no baseline runs a chapter can pair with.
"""
from __future__ import annotations

import math
import statistics
from functools import partial
from typing import TYPE_CHECKING, Mapping, Sequence

from .activations import activation_moments, through_activation
from .experiment import over_seeds
from .findings import final_accuracy
from .models import get_model
from .page import _signed, markdown_table, share, what_it_does
from .results import load_build, runs_from
from .sources import BLOG
from .stats import fmt_mean_sd, summarise

if TYPE_CHECKING:
    from .activations import ActivationStats
    from .data import ImageSet
    from .results import Chapter

# What each configuration of these chapters is, for a reader (a chapter's `configs` in its results).
LABELS = {"baseline": "baseline: [0, 1] pixels, default init, ReLU, plain SGD",
          "input_normalisation": "standardised inputs, default init, ReLU, plain SGD",
          "batchnorm_kaiming": "BatchNorm + Kaiming + GeneralRelu, momentum SGD"}

# The loss has left chance level once it is this far below ln C: on the plateau, batches of 1024
# images move it by about 0.002, and a network that learns anything drops it by far more.
PLATEAU_DROP = 0.1


def configs(chapter: "Chapter") -> dict[str, str]:
    """Each configuration the chapter trained, with its `LABELS` entry: the `configs` its results file saves."""
    return {config: LABELS[config] for config in chapter.runs}


def _field(run, name: str):
    return run.get(name) if isinstance(run, Mapping) else getattr(run, name)


def _final(run) -> float | None:
    """`findings.final_accuracy` of a run or of its dict: None for a run that diverged."""
    return final_accuracy(run if isinstance(run, Mapping) else run.to_dict())


def _span(xs: Sequence[float]) -> str:
    """`0.61` when the values agree to two decimals, else `0.56 to 0.68`."""
    lo, hi = f"{min(xs):.2f}", f"{max(xs):.2f}"
    return lo if lo == hi else f"{lo} to {hi}"


def _batches(ks: Sequence[int]) -> str:
    lo, hi = min(ks), max(ks)
    return f"{lo} batch{'es' * (lo != 1)}" if lo == hi else f"{lo} to {hi} batches"


# ----------------------------------------------------------------------------- the plateau


def plateau(batch_losses: Sequence[float], n_classes: int, drop: float = PLATEAU_DROP) -> int | None:
    r"""Training batches before the loss first fell below $\ln C$ - `drop` ($C$ = `n_classes`).

    $\ln C$ is the cross-entropy of a network that gives every class the same probability: a
    loss there means the network has learned nothing yet. None when no batch got below it (the
    run stayed at chance level, or diverged first).
    """
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    level = math.log(n_classes) - drop
    return next((i for i, loss in enumerate(batch_losses) if loss < level), None)


def plateaus(runs: Sequence, n_classes: int) -> dict[int, int | None]:
    """`plateau` of each run, by seed (runs as `experiment.Run`, which keep their batch losses)."""
    return {r.seed: plateau(r.batch_losses, n_classes) for r in runs}


def plateau_report(runs: Sequence, ds: "ImageSet", batch_size: int) -> str:
    """A table of each seed's plateau, the epoch it ended in and the final accuracy, and a sentence on them."""
    n_classes, per_epoch = len(ds.classes), math.ceil(len(ds.x_train) / batch_size)
    epochs = 1 + max(h["epoch"] for r in runs for h in r.history)
    ks = plateaus(runs, n_classes)
    ended = {r.seed: "diverged" if r.stopped and ks[r.seed] is None else "never" if ks[r.seed] is None
             else f"epoch {ks[r.seed] // per_epoch + 1}" for r in runs}
    table = markdown_table([{"seed": r.seed, "batches at chance level":
                             f"all {len(r.batch_losses)}" if ks[r.seed] is None else ks[r.seed],
                             "left it in": ended[r.seed], "final test accuracy": _final(r)} for r in runs])
    level, below = math.log(n_classes), math.log(n_classes) - PLATEAU_DROP
    text = (f"The training loss started at {statistics.median(r.batch_losses[0] for r in runs if r.batch_losses):.2f} "
            f"(ln {n_classes} = {level:.2f} is the loss of a network that gives all {n_classes} classes the same "
            "probability)")
    left = [k for k in ks.values() if k is not None]
    if left:
        text += (f"; in {len(left)} of {len(runs)} runs it took {_batches(left)} (median {statistics.median(left):g}; "
                 f"an epoch has {per_epoch}) to fall below {below:.2f}")
    stayed = [r for r in runs if ks[r.seed] is None]
    if stayed:
        n_div = sum(bool(r.stopped) for r in stayed)
        text += (f"; {len(stayed)} of {len(runs)} never got below {below:.2f} in {epochs} epoch{'s' * (epochs != 1)}"
                 + (f" ({n_div} of them diverged)" if n_div else ""))
    return f"{table}\n\n{text}."


def activation_report(stats: "ActivationStats", plateau: int | None = None, last: int = 10) -> str:
    """Each layer's activation mean, std and zero shares over the `last` training batches, and what stands out.

    With `plateau` ($k$, from `plateau`), a first column gives each layer's std over the first
    $k$ batches, while the loss sat at chance level, and the text follows it through the layers.
    """
    last = min(last, stats.means.shape[1])  # a short run has fewer batches than `last`
    layers, during = stats.summary(last), [s[:plateau].mean().item() for s in stats.stds] if plateau else []
    cutoff = stats.near_zero_cutoff
    end = f"last {last} batches"  # every column but the first two says which batches it averages
    rows = [{"layer": r["layer"], **({f"std at chance level (batches 1 to {plateau})": d} if plateau else {}),
             f"mean ({end})": r["mean"], f"std ({end})": r["std"], f"exactly 0 ({end})": share(r["zero"]),
             f"near 0, under {cutoff:g} ({end})": share(r["near_zero"])}
            for r, d in zip(layers, during or [None] * len(layers))]
    text = f"The columns marked *{end}* average the last {last} training batches of the first run."
    if plateau:
        text += (f" While the loss sat at chance level, the activations' std was {during[0]:.3f} after the first layer "
                 f"and {during[-1]:.3f} after the last")
        if layers[-1]["std"] > 0:
            text += f", {during[-1] / layers[-1]['std']:.0%} of the last layer's std at the end of training"
        if len(during) > 1 and all(b < a for a, b in zip(during, during[1:])):
            ratio = (during[-1] / during[0]) ** (1 / (len(during) - 1))
            text += f": each layer passed on about {ratio:.0%} of the std it received"
        text += "."
    top = max(layers, key=lambda r: r["zero"])
    text += (" No activation was exactly zero in the last batches." if top["zero"] == 0 else
             f" The largest share of activations exactly zero is {share(top['zero'])}, at {top['layer']}.")
    if stats.hist_is_partial:
        text += (f" The near-zero shares come from the histograms, which counted the first {stats.hist_images} of "
                 f"{stats.max_batch} images of each batch; the exact-zero shares, whole batches.")
    return f"{markdown_table(rows)}\n\n{text}"


def input_report(ds: "ImageSet", moments: Mapping[str, tuple[list[float], list[float]]]) -> str:
    """The training split's pixel mean and std, and how far each batch's (the blog's choice) strays from them."""
    mean, std = ds.stats()
    avg = {k: (statistics.fmean(m), statistics.fmean(s)) for k, (m, s) in moments.items()}
    means, stds = next(iter(moments.values()))
    return (f"The training split's pixels have mean {mean:.4f} and standard deviation {std:.4f} on the [0, 1] "
            "scale. Averaged over batches: "
            + "; ".join(f"{k}, mean {m:.3f} and std {s:.3f}" for k, (m, s) in avg.items())
            + f". One batch's statistics, which the blog used, differ from the whole split's by at most "
              f"{max(abs(m - mean) for m in means):.4f} in mean and {max(abs(s - std) for s in stds):.4f} in std.")


# ----------------------------------------------------------------------------- pairs with the baseline


def baseline_runs(chapter: "Chapter", ds: "ImageSet", seeds: list[int], *, epochs: int, lr: float, batch_size: int,
                  device: str = "auto", progress: bool = True) -> tuple[list[dict], dict, str]:
    """The baseline's runs of `seeds`, each seed's `plateau`, and a sentence saying where they come from.

    Chapter 3's runs when this build holds them trained exactly as `chapter` would train them
    (`results.runs_from`: same parameters, data, device and seeds), which saves training them
    again; else trained here as chapter 3 trains them and added to `chapter` as `"baseline"`.
    """
    runs, why = runs_from(chapter, "03-baseline", "baseline", seeds)
    if runs is not None:
        saved = load_build(chapter.results_dir).files["03-baseline"].data["summary"].get("plateau_batches") or {}
        return runs, {int(s): k for s, k in saved.items()}, (
            "The baseline runs are those of @sec-baseline in this build: the same seeds, data, device and parameters, "
            "so they are read from its results instead of being trained again.")
    make_model = partial(get_model, first_kernel=BLOG["first_kernel"]["baseline"])
    trained = over_seeds(seeds, make_model=make_model, ds=ds, epochs=epochs, lr=lr, batch_size=batch_size,
                         device=device, progress=progress, label="baseline")
    chapter.add_runs("baseline", trained)
    why = why.replace("03-baseline", "chapter 3").replace(chapter.chapter, "this chapter")
    return [r.to_dict() for r in trained], plateaus(trained, len(ds.classes)), (
        f"The baseline is trained on this page, for the same seeds, because the runs of @sec-baseline cannot be "
        f"reused: {why}.")


def pair_table(a_runs: Sequence, b_runs: Sequence, a: str, b: str, a_plateaus: Mapping | None = None,
               b_plateaus: Mapping | None = None) -> str:
    """Each seed's final test accuracy on both sides and the difference a - b in points.

    With the `plateaus` of both sides, each seed's batches at chance level come first.
    """
    def waited(plateaus: Mapping, seed) -> str:
        if seed not in plateaus:
            return "–"
        return "never left" if plateaus[seed] is None else str(plateaus[seed])

    b_final = {_field(r, "seed"): _final(r) for r in b_runs}
    rows = []
    for r in a_runs:
        seed = _field(r, "seed")
        x, y = _final(r), b_final[seed]
        waits = ({f"at chance, {b} (batches)": waited(b_plateaus, seed), f"at chance, {a} (batches)":
                  waited(a_plateaus, seed)} if a_plateaus is not None and b_plateaus is not None else {})
        rows.append({"seed": seed, **waits, f"accuracy, {b}": "diverged" if y is None else y,
                     f"accuracy, {a}": "diverged" if x is None else x,
                     "difference (points)": "–" if None in (x, y) else f"{100 * (x - y):+.1f}"})
    return markdown_table(rows)


def plateau_comparison(a_plateaus: Mapping, b_plateaus: Mapping, a: str, b: str) -> str:
    """How the wait at chance level compares, seed by seed, over the seeds on which both runs left it."""
    both = [s for s in a_plateaus if a_plateaus[s] is not None and b_plateaus.get(s) is not None]
    if not both:
        return ""
    sooner, n = sum(a_plateaus[s] < b_plateaus[s] for s in both), len(both)
    if n == len(a_plateaus):
        lead = (f"On every seed both runs left chance level, and the loss left it sooner with {a} on "
                + (f"all {n}" if sooner == n > 1 else f"{sooner} of {n}"))
    else:
        lead = (f"Both runs left chance level on {n} of {len(a_plateaus)} seeds; on {sooner} of those {n} the loss "
                f"left it sooner with {a}")
    return (f"{lead}: after a median of {statistics.median(a_plateaus[s] for s in both):g} batches, against "
            f"{statistics.median(b_plateaus[s] for s in both):g} with {b}.")


# ----------------------------------------------------------------------------- the answers


def _final_summary(runs: Sequence, n_classes: int) -> str:
    """`'0.704 ± 0.019 over 5 seeds'`, a diverged run counted at chance and named."""
    text = fmt_mean_sd(summarise([_final(r) for r in runs], chance=1 / n_classes), digits=3)
    return f"{text} over {len(runs)} seed{'s' * (len(runs) != 1)}"


def baseline_answer(runs: Sequence, ds: "ImageSet", epochs: int) -> str:
    """Chapter 3's answer: did the baseline learn, after how long at chance level, and how well."""
    ks = [k for k in plateaus(runs, len(ds.classes)).values() if k is not None]
    n = len(runs)
    where = f"On {ds.title}" + (f" (a stand-in for {BLOG['dataset'].upper()})" if ds.name != BLOG["dataset"] else "")
    if not ks:
        return (f"{where}, no: in none of {n} runs did the training loss leave chance level within {epochs} "
                f"epoch{'s' * (epochs != 1)}, and the final test accuracy is {_final_summary(runs, len(ds.classes))}.")
    return (f"{where}, the baseline learned in {len(ks)} of {n} runs, but only after its training loss sat at chance "
            f"level for {_batches(ks)}; after {epochs} epoch{'s' * (epochs != 1)} its final test accuracy is "
            f"{_final_summary(runs, len(ds.classes))}.")


def activation_scale(model, xb) -> list[dict]:
    """Per activation call on `xb`, as in training: the std it takes in, the std it gives out, and their ratio."""
    return [dict(layer=r["layer"], in_std=r["in_std"], out_std=r["out_std"], ratio=r["out_std"] / r["in_std"])
            for r in activation_moments(model, xb)]


def scale_report(rows: Sequence[dict], act) -> str:
    """The rows of `activation_scale` as a table, beside what `act` makes of a standard normal input."""
    mean, std = through_activation(act)
    return (markdown_table(rows, ["layer", "in_std", "out_std", "ratio"],
                           ["layer", "std going in", "std coming out", "out / in"])
            + f"\n\nA standard normal input (mean 0, std 1) comes out of {what_it_does(act)} with mean "
              f"{_signed(mean, 3)} and std {std:.3f}; here each layer's activation turned its input's std into "
              f"{_span([r['ratio'] for r in rows])} times as much.")


def recipe_answer(row: dict | None, scale: Sequence[dict], stats: "ActivationStats", act, runs: Sequence,
                  ds: "ImageSet", last: int = 10) -> str:
    """Chapter 5's answer: how well the recipe trained, against the baseline, and why its activations' std is about 0.6.

    `row` is the verdict row against the baseline (None: not compared), `scale` the rows of
    `activation_scale`.
    """
    versus = "" if row is None else f", {_signed(row['effect'], 1)} points against the baseline ({row['verdict']})"
    trained_std = _span([s["std"] for s in stats.summary(last)])
    return (f"On {ds.title}, BatchNorm with Kaiming weights and {what_it_does(act)} reached a final test accuracy "
            f"of {_final_summary(runs, len(ds.classes))}{versus}; its activations' std ({trained_std} in the last "
            f"training batches) is the activation's own shrinking of a unit-scale input: BatchNorm hands every layer "
            f"an input of std {_span([r['in_std'] for r in scale])}, the activation turns that into "
            f"{_span([r['ratio'] for r in scale])} times as much (a standard normal input: "
            f"{through_activation(act)[1]:.2f}), and the next BatchNorm restores the scale, so the shrinking never "
            "compounds from layer to layer as it did in the baseline.")
