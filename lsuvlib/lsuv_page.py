"""What the LSUV-callback chapter shows: LSUV's report and forward passes under the layer names a reader
knows, the blog's "staircase" read from those passes, and runs that diverge told in sentences.

Each function takes runs (`experiment.Run`) or an `LSUVReport` and returns Markdown; nothing here trains.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from torch import nn

from .experiment import summarise_final
from .hooks import reader_names
from .page import Table, markdown_table, sci
from .stats import fmt_mean_sd, pairs_needed

NEAR_ONE = 0.05  # how close to 1 a std must come to count as "jumped to 1"
BLOG_STAIRCASE = (0, 25, 50, 75)  # the blog's description: the batch at which each layer's std "jumped up to 1"


def path_names(model: nn.Module) -> dict[str, str]:
    """Each sub-module's dotted path, as an `LSUVReport` names layers, mapped to its `hooks.reader_names` name."""
    names = reader_names(model)
    return {path: names[m] for path, m in model.named_modules()}


def _and(items: Sequence) -> str:
    """`'a'`, `'a and b'`, `'a, b and c'`."""
    items = [str(x) for x in items]
    return " and ".join(items) if len(items) < 3 else ", ".join(items[:-1]) + " and " + items[-1]


def _count(n: int, noun: str) -> str:
    """`'1 seed'`, `'5 seeds'`."""
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _fixed(x: float, fmt: str = ".3f") -> str:
    """`x` in format `fmt`, and `0.000` rather than `-0.000`."""
    text = format(x, fmt)
    return text.lstrip("-") if float(text) == 0 else text


def _span(values: Sequence[float], fmt: str = ".2f") -> str:
    """`'1.18'` when all values agree to the format, else `'1.11 to 1.18'`."""
    lo, hi = _fixed(min(values), fmt), _fixed(max(values), fmt)
    return lo if lo == hi else f"{lo} to {hi}"


def report_table(report, names: Mapping[str, str]) -> Table:
    """An `LSUVReport` as a table, each layer under its reader's name, with what became of the layers it did not set."""
    rows = [{"layer": names.get(r.layer, r.layer), "steps": r.iterations, "mean before": _fixed(r.mean_before),
             "std before": _fixed(r.std_before), "mean after": sci(r.mean_after, ".2g"),
             "std after": _fixed(r.std_after)}
            for r in report]
    notes = [f"{names.get(r.layer, r.layer)} did not converge: {r.status.removeprefix('not converged: ')}"
             for r in report if not r.converged]
    notes += [f"LSUV left {names.get(path, path)} alone: {what.removeprefix('left alone: ')}"
              if what.startswith("left alone: ") else f"{names.get(path, path)}: {what}"
              for path, what in report.coverage.items() if path not in {r.layer for r in report}]
    return Table(markdown_table(rows) + "".join(f"\n\n{line}." for line in notes))


def convergence_text(reports: Mapping[str, Sequence], max_iters: int) -> str:
    """How every layer of every seed's LSUV ended, per rule (`reports[rule]`: one `LSUVReport` per seed)."""
    parts = []
    for rule, reps in reports.items():
        rows = [row for rep in reps for row in rep]
        steps = [row.iterations for row in rows]
        failed = [row for row in rows if not row.converged]
        text = (f"With {rule}, over {_count(len(reps), 'seed')} and {_count(len(reps[0]), 'layer')}, LSUV took "
                f"{_span(steps, 'd')} steps a layer (at most {max_iters} allowed) and ")
        if not failed:
            text += "every layer converged."
        else:
            bounded = sum(row.iterations >= max_iters for row in failed)
            text += (f"{len(failed)} of {len(rows)} layers did not converge"
                     + (f", {bounded} of them stopped at the bound of {max_iters} steps, where the blog's loop would "
                        "have gone on" if bounded else "") + ".")
        parts.append(text)
    return " ".join(parts)


# ----------------------------------------------------------------------------- the staircase


def _passes(report) -> list[dict]:
    passes = getattr(report, "passes", None)
    if not passes:
        raise ValueError("the LSUV report has no recorded passes: run lsuv_init(..., trace=True) "
                         "(or pass lsuv=dict(..., trace=True) to train) to record them")
    return passes


def staircase(report, near_one: float = NEAR_ONE) -> list[dict]:
    """Per layer, from a traced report (`report.passes`): its passes, the first at which its std is within
    `near_one` of 1 (`jump`), and whether it stays there for the rest of LSUV (`stays`)."""
    passes, out = _passes(report), []
    for target in dict.fromkeys(p["target"] for p in passes):
        own = [p["index"] for p in passes if p["target"] == target]
        std = {p["index"]: s["std"] for p in passes for s in p["stats"] if s["layer"] == target}
        jump = next((i for i in sorted(std) if abs(std[i] - 1) < near_one), None)
        stays = jump is not None and all(abs(v - 1) < near_one for i, v in std.items() if i >= jump)
        out.append(dict(layer=target, passes=len(own), first=own[0], last=own[-1], jump=jump, stays=stays))
    return out


def is_clean(steps: Sequence[dict]) -> bool:
    """Whether every layer's std reaches 1 during its own passes and stays there: a staircase."""
    return all(s["jump"] is not None and s["first"] <= s["jump"] <= s["last"] and s["stays"] for s in steps)


def staircase_text(report, other, names: Mapping[str, str], dataset: str, other_rule: str = "the library's variant",
                   near_one: float = NEAR_ONE) -> str:
    """What the blog's rule's traced `report` shows as a staircase, beside the passes of `other` (another rule)."""
    steps, total = staircase(report, near_one), len(report.passes)
    text = (f"On the first seed's batch the blog's rule ran **{total} forward passes** before the first training step: "
            + "; ".join(f"{names.get(s['layer'], s['layer'])} took {s['passes']} (passes {s['first']} to {s['last']})"
                        for s in steps) + ". ")
    if is_clean(steps):
        text += (f"Each layer's standard deviation comes within {near_one} of 1 during its own passes, at pass "
                 + _and([s["jump"] for s in steps]) + ", and stays there for the rest of LSUV, since a later layer "
                 "cannot change an earlier layer's output. Drawn against a batch axis, as the blog's chart drew them, "
                 f"those are the steps of a staircase, and training starts at batch {total}. ")
    else:
        text += (f"Not every layer's standard deviation comes within {near_one} of 1 during its own passes and stays "
                 "there, so this run draws no clean staircase. ")
    per_layer = _and([s["passes"] for s in staircase(other, near_one)])
    text += (f"\n\nThe blog's description puts the steps at batches {_and(BLOG_STAIRCASE)}: about "
             f"{BLOG_STAIRCASE[1] - BLOG_STAIRCASE[0]} passes a layer on SVHN, against {total / len(steps):.1f} a "
             f"layer here on {dataset}. The count depends on the data, the starting weights and the rule: {other_rule} "
             f"ran {len(other.passes)} passes ({per_layer} a layer), since it moves the mean after the "
             "non-linearity, by exactly the measured amount.")
    return text


# ----------------------------------------------------------------------------- runs that diverge


def _diverged_seeds(runs: Sequence) -> list[int]:
    return [r.seed for r in runs if r.diverged]


def outcome_table(rows: Sequence[tuple[str, float, Sequence]], chance: float) -> Table:
    """One row per `(rule, lr, runs)`: the final test accuracy over every seed, a diverged run counted at `chance`."""
    cells = []
    for rule, lr, runs in rows:
        trained = [r.history[-1]["accuracy"] for r in runs if not r.diverged]
        summary = fmt_mean_sd(summarise_final(runs, chance), digits=3)
        cells.append({"LSUV rule": rule, "lr": f"{lr:g}", f"final test accuracy over {len(runs)} seeds": summary,
                      "runs that trained end at": _span(trained, ".3f") if trained else "none trained"})
    return Table(markdown_table(cells))


def _diverged_counts(runs_by_rule: Mapping[str, Sequence]) -> str:
    """`'3 of 5 runs diverged with the blog's rule and 3 of 5 with the library's variant'`, or `'no run diverged
    with either rule'`."""
    if not any(_diverged_seeds(runs) for runs in runs_by_rule.values()):
        return "no run diverged with " + ("either rule" if len(runs_by_rule) == 2 else "any rule")
    parts = [f"{len(_diverged_seeds(runs))} of {len(runs)}" + (" runs diverged" if k == 0 else "") + f" with {rule}"
             for k, (rule, runs) in enumerate(runs_by_rule.items())]
    return _and(parts)


def divergence_text(at_blog: Mapping[str, Sequence], at_stable: Mapping[str, Sequence], lr: float,
                    stable_lr: float) -> str:
    """How many runs of each rule diverged at the blog's rate `lr` and at `stable_lr`, and on which seeds."""
    blog_seeds = [_diverged_seeds(runs) for runs in at_blog.values()]
    text = (f"At the blog's rate, lr {lr:g}, {_diverged_counts(at_blog)}; at lr {stable_lr:g}, "
            f"{_diverged_counts(at_stable)}.")
    if any(blog_seeds):
        longest = max(len(r.batch_losses) for runs in at_blog.values() for r in runs if r.diverged)
        text += f" At the blog's rate every diverged run was stopped within its first {longest} batches"
        if all(s == blog_seeds[0] for s in blog_seeds):
            text += f", and both rules lost the same seeds ({_and(blog_seeds[0])})."
        else:
            text += ", the rules on different seeds (" + "; ".join(
                f"{rule}: {_and(s) or 'none'}" for rule, s in zip(at_blog, blog_seeds)) + ")."
    if any(_diverged_seeds(runs) for runs in at_stable.values()):
        text += f" Runs diverged at lr {stable_lr:g} too, so it is not a stable rate on this data: lower `stable_lr`."
    return text


def _lost_by_both(runs_by_rule: Mapping[str, Sequence]) -> set[int]:
    """The seeds on which every rule's run diverged."""
    return set.intersection(*(set(_diverged_seeds(runs)) for runs in runs_by_rule.values()))


def shared_divergence_text(at_blog: Mapping[str, Sequence], lr: float, row: Mapping | None = None) -> str:
    """What the pairs in which both rules diverged (a difference of exactly 0) mean for the verdict `row` at `lr`."""
    lost = [set(_diverged_seeds(runs)) for runs in at_blog.values()]
    both, n = _lost_by_both(at_blog), len(next(iter(at_blog.values())))
    if not both:
        return ""
    pairs, tie = f"in {len(both)} of the {n} pairs both runs diverged", row is not None and row["verdict"] == "tie"
    text = (f"The tie at lr {lr:g} is mostly a tie of two failures: {pairs}, and each such pair, counted at chance on "
            "both sides, is a difference of exactly 0." if tie else
            f"At lr {lr:g}, {pairs}, which count at chance on both sides: a difference of exactly 0.")
    if all(s == lost[0] for s in lost):
        kept = n - len(both)
        text += (f" Neither rule kept a seed the other lost, so only the {_count(kept, 'seed')} that trained under "
                 f"both rules give{'s' * (kept == 1)} a difference other than 0"
                 + ("; the tie says that the two rules fail on the same seeds, not that they train equally well."
                    if tie else "."))
    return text


def same_start(a: Sequence, b: Sequence) -> bool:
    """Whether two sets of runs, seed for seed, started from the same LSUV result (identical reports)."""
    by_seed = {r.seed: r.lsuv_report.to_records() for r in b}
    return all(r.seed in by_seed and r.lsuv_report.to_records() == by_seed[r.seed] for r in a)


def _rises(losses: Sequence[float]) -> int | None:
    """The first batch (from 1) whose loss is above the first batch's, or None."""
    return next((k for k, x in enumerate(losses[1:], 2) if not x <= losses[0]), None)


def why_text(at_blog: Mapping[str, Sequence], at_stable: Mapping[str, Sequence], lr: float, stable_lr: float,
             momentum: float, n_classes: int) -> str:
    """The evidence for why runs diverge at the blog's rate `lr` and not at `stable_lr`, from their first batches."""
    blog_runs = [r for runs in at_blog.values() for r in runs]
    stable_runs = [r for runs in at_stable.values() for r in runs]
    every = [r for r in blog_runs + stable_runs if r.batch_losses]
    text = (f"Every run starts near a uniform guess's loss, ln {n_classes} = {math.log(n_classes):.2f} (first batch: "
            f"{_span([r.batch_losses[0] for r in every])}), so LSUV's start is not what fails. ")
    diverged = [r for r in blog_runs if r.diverged]
    if not diverged:
        return text + f"In this build no run diverged at lr {lr:g}, so there is no divergence to explain."
    turns = [_rises(r.batch_losses) for r in diverged]
    lows = [min(r.batch_losses[:t - 1]) for r, t in zip(diverged, turns) if t]
    if lows:
        text += (f"In the {len(diverged)} runs that diverged at lr {lr:g}, with either rule, the loss first fell, to "
                 f"{_span(lows)}, then climbed back above its starting value at batch "
                 f"{_span([t for t in turns if t], 'd')}. ")
    if lows and momentum > 0:
        gains = [(1 - momentum ** (k - 1)) / (1 - momentum) for k in turns if k]  # the step before batch k
        text += (f"By then momentum ({momentum:g}) had built each step up to {_span(gains, '.1f')} "
                 f"times one gradient step, on its way to {1 / (1 - momentum):.1f} times: an effective rate of "
                 f"{lr / (1 - momentum):.2f} at lr {lr:g}, against {stable_lr / (1 - momentum):.2f} at lr "
                 f"{stable_lr:g}. ")
    calm = [r for r in blog_runs + stable_runs if not r.diverged]
    risen = [r for r in calm if _rises(r.batch_losses)]
    text += (f"Of the {len(calm)} runs that trained, at either rate, "
             + ("none" if not risen else f"{len(risen)}") + " ever had a training loss above its first batch's. ")
    if all(same_start(a, b) for a, b in zip(at_blog.values(), at_stable.values())):
        text += ("Seed for seed, both rates start from the same LSUV-initialised weights (LSUV's reports agree "
                 "number for number), so the rate, not the start, decides whether a run diverges. ")
    return text


def scale_text(report) -> str:
    """How far LSUV moved each layer's scale from PyTorch's default draw, read from a traced report's first and
    last passes."""
    passes = _passes(report)
    first = {s["layer"]: s["std"] for s in passes[0]["stats"]}
    last = {s["layer"]: s["std"] for s in passes[-1]["stats"]}
    ratios = [last[k] / first[k] for k in first if k in last and first[k] > 0]
    return (f"LSUV starts this network at a larger scale than PyTorch's default draw: the activations' standard "
            f"deviations, {_and([f'{v:.2f}' for v in first.values()])} layer by layer at LSUV's first pass (the "
            f"default draw in every layer), are {_span(list(last.values()))} at the last, {_span(ratios, '.1f')} "
            "times larger. (The *std before* of @sec-lsuv-did is larger from conv 2 on, because it is measured once "
            "the layers in front were already scaled up.) Without BatchNorm nothing holds them there once large "
            "steps move the weights.")


def after_training_text(stats, last: int = 10) -> str:
    """Where training left each layer's mean and std (`ActivationStats.summary`), against LSUV's 0 and 1."""
    last = min(last, stats.means.shape[1])
    rows = stats.summary(last)
    return (f"Over the last {last} training batches of this run the layers' standard deviations average "
            f"{_span([r['std'] for r in rows])} and their means {_span([r['mean'] for r in rows])}: LSUV set every "
            "layer to mean 0 and standard deviation 1 before the first step, and training has moved them since.")


# ----------------------------------------------------------------------------- the comparison and the answer


def seeds_text(rows: Sequence[dict], effect: float) -> str:
    """Whether the family of verdict `rows` could resolve an `effect` (points), with the spread seen in them."""
    sds = [r["sd"] for r in rows if r["sd"] is not None]
    text = (f"The comparison is about an effect of {effect:g} point, the tie margin: does the rule change the final "
            "accuracy by more than that? ")
    if not sds:
        return text + f"With {_count(rows[0]['n'], 'seed')} there is no spread to judge the seed count by."
    n_needed = pairs_needed(effect, max(max(sds), 1e-9), rows[0]["m"])
    return text + (f"The per-seed differences have a standard deviation of " + _and([
        f"{_fixed(r['sd'], '.2f')} points ({r['claim'].rsplit(', ', 1)[-1]})" for r in rows if r["sd"] is not None])
        + f"; at the larger spread {n_needed} pairs resolve {effect:g} point across the family of {rows[0]['m']} "
        f"claims, and this build has {rows[0]['n']}.")


def _verdict_words(row: Mapping) -> str:
    return {"holds": "the library's variant is ahead", "reversed": "the blog's rule is ahead",
            "tie": f"a tie within {row['margin']:g} point", "not resolved": "not resolved"}[row["verdict"]]


def answer(at_blog: Mapping[str, Sequence], at_stable: Mapping[str, Sequence], lr: float, stable_lr: float,
           rows: Sequence[dict], chance: float, dataset: str, passes: int) -> str:
    """The chapter's answer from its runs and its verdict `rows` (one per rate, the blog's first); the first rule of
    `at_stable` is the blog's. A rate at which both rules lost a seed says so beside its verdict."""
    blog_rule, stable = next(iter(at_stable.items()))

    def verdict(rate: float, row: Mapping, runs_by_rule: Mapping[str, Sequence]) -> str:
        both, n = _lost_by_both(runs_by_rule), len(next(iter(runs_by_rule.values())))
        return (f"{_fixed(row['effect'], '+.2f')} points at lr {rate:g}, {_verdict_words(row)}"
                + (f" (both rules diverged on {len(both)} of the {n} seeds)" if both else ""))
    return (f"On {dataset}, at the blog's lr {lr:g}, {_diverged_counts(at_blog)}; at lr {stable_lr:g}, "
            f"{_diverged_counts(at_stable)}, and {blog_rule} ended at "
            f"{fmt_mean_sd(summarise_final(stable, chance), digits=3)} final test accuracy. The library's variant "
            "against the blog's rule: " + "; ".join(verdict(rate, r, by_rule) for rate, r, by_rule
                                                   in zip((lr, stable_lr), rows, (at_blog, at_stable)))
            + f". The blog's \"staircase\" is LSUV's own {passes} forward passes, before training starts.")
