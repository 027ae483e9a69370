"""Chapter 8's page: what each initialisation did at each depth, as tables, claims and sentences.

`outcomes` counts, per scheme and depth, the seeds that train and those that diverged (a diverged
run counts at chance accuracy); `depth_table` and `accuracy_panels` show them; `claims` is the
chapter's family for `stats.verdicts`; `against_paper` and `finding` say what it found, and
`divergence_note` what was measured about the schemes whose runs diverged. The networks and
initialisations themselves are in `lsuvlib.depth`.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from .depth import SCHEMES, depth_reach
from .experiment import values_at
from .page import Table, markdown_table
from .stats import paired, summarise

# Claimed at every depth: each LSUV variant against Kaiming (the standard for ReLU) and against the
# weights it starts from (the paper's orthonormal draw; the loop's PyTorch default).
CLAIMS = (("lsuv_paper", "kaiming"), ("lsuv_paper", "orthonormal"), ("lsuv_loop", "kaiming"), ("lsuv_loop", "default"))


def check_setup(depths: Sequence[int], schemes: Sequence[str]) -> list[int]:
    """The depths sorted, once each; a clear error for an unknown scheme or a depth that is no layer count."""
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown or not schemes:
        raise ValueError(f"schemes: some of {', '.join(SCHEMES)} expected, got {list(schemes)}")
    if not isinstance(depths, (list, tuple)) or not depths or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 2 for d in depths):
        raise ValueError(f"depths: a list of whole layer counts, each at least 2 (e.g. [5, 10, 20, 30]), "
                         f"got {depths!r}")
    return sorted(set(depths))


def scheme_table(schemes: Sequence[str]) -> Table:
    return markdown_table([{"scheme": SCHEMES[s].label, "what it does to the weights": SCHEMES[s].what}
                           for s in schemes])


def budget_note(ds, epochs: int, batch_size: int, lr: float, momentum: float, train_margin: float) -> str:
    """What one run gets, in numbers, and what "trains" and "stops training" mean at that budget."""
    n_steps, chance = steps(ds, epochs, batch_size), 1 / len(ds.classes)
    return (f"This build trains on {len(ds.x_train):,} {ds.title} images and tests on {len(ds.x_test):,}. Every "
            f"network gets the same budget: {epochs} epoch{'s' if epochs != 1 else ''} of {n_steps} steps of "
            f"{batch_size} images, SGD at learning rate {lr:g} with momentum {momentum:g}. A run **trains** "
            f"if it did not diverge and its test accuracy reaches {chance + train_margin:.0%}, {train_margin * 100:g} "
            f"points above chance ({chance:.0%}); an initialisation **stops training** at the first depth where "
            f"fewer than half of its seeds train. That is a statement about {n_steps} steps: a network that has not "
            "started learning by then might with more steps or another learning rate. The effect this chapter is "
            f"about is the gap between a network that trains and one that does not: **{train_margin * 100:g} points**.")


def labelled(by_scheme: Mapping[str, object]) -> dict:
    """`{scheme: value}` keyed by the schemes' labels instead, as charts and tables name them."""
    return {SCHEMES[s].label: v for s, v in by_scheme.items()}


def profile_table(profiles: Mapping[str, Sequence[float]], signals: Mapping[str, Sequence[float]]) -> Table:
    """First and last layer's total and input-dependent std per scheme, and how the signal changes in between.

    `profiles` and `signals` are `{scheme: [std per layer]}` from `depth.init_profile` (`over="all"`
    and `over="batch"`)."""
    profiles, signals = labelled(profiles), labelled(signals)
    bands = [("shrinks more than a hundredfold", lambda q: q < 0.01),
             ("shrinks ten- to a hundredfold", lambda q: 0.01 <= q < 0.1),
             ("stays within a factor of 10", lambda q: 0.1 <= q <= 10), ("grows more than tenfold", lambda q: q > 10)]
    deepest = len(next(iter(profiles.values())))
    ratio = {name: sig[-1] / sig[0] if sig[0] > 0 else math.inf for name, sig in signals.items()}
    rows = [{"scheme": name, **{k: f"{v:.3g}" for k, v in {  # 3 digits: a vanished 2.6e-09 is not "0.000"
             "total std, layer 1": stds[0], f"total std, layer {deepest} (logits)": stds[-1],
             "input-dependent std, layer 1": signals[name][0],
             f"input-dependent std, layer {deepest}": signals[name][-1],
             "input-dependent, last / first": ratio[name]}.items()}} for name, stds in profiles.items()]
    grouped = [(text, [n for n, q in ratio.items() if test(q)]) for text, test in bands]
    return Table(markdown_table(rows) + f"\n\nBetween the first and the last of the {deepest} layers, the "
                 "input-dependent std " + "; ".join(f"{text} under {_listed(who)}" for text, who in grouped if who)
                 + ".")


def _listed(xs: Sequence[str]) -> str:
    xs = list(xs)
    return ", ".join(xs[:-1]) + " and " + xs[-1] if len(xs) > 1 else "".join(xs)


def accuracy_panels(runs: Mapping, depths: Sequence[int], schemes: Sequence[str], chance: float,
                    train_margin: float) -> dict:
    """`charts.plot_seed_dots` arguments: every seed's final test accuracy (%) per depth and scheme."""
    cats = {str(d): {SCHEMES[s].label: [None if v is None else v * 100 for v in values_at(runs[s, d]).values()]
                            for s in schemes} for d in depths}
    return dict(panels={"": cats}, missing_at=chance * 100, xlabel="Depth (weight layers)", ylabel="Test accuracy (%)",
                lines={f"chance ({chance:.0%})": chance * 100,
                       f"trains: {chance + train_margin:.0%} or more": (chance + train_margin) * 100})


def outcomes(runs: Mapping, depths: Sequence[int], schemes: Sequence[str], chance: float, train_margin: float) -> dict:
    """Per `(scheme, depth)`: the summary over every seed (a diverged run at chance), how many seeds
    train and how many diverged, and whether the scheme trains there (at least half its seeds do)."""
    out = {}
    for s in schemes:
        for d in depths:
            values = list(values_at(runs[s, d]).values())
            n_trained = sum(v is not None and v >= chance + train_margin for v in values)
            out[s, d] = dict(summarise(values, bounds=(0, 1), chance=chance), n_trained=n_trained,
                             trains=2 * n_trained >= len(values))
    return out


def depth_table(result: Mapping, depths: Sequence[int], schemes: Sequence[str]) -> tuple[dict, Table]:
    """The reach of each scheme (`depth_reach`) and the table of mean accuracy, seeds that train and
    runs that diverged per depth, with a sentence on where each scheme stops training."""
    reach = {s: depth_reach({d: result[s, d]["trains"] for d in depths}) for s in schemes}
    rows = [{"scheme": SCHEMES[s].label, **{f"{d} layers": _cell(result[s, d]) for d in depths}} for s in schemes]
    return reach, Table(markdown_table(rows) + "\n\n" + "; ".join(_reach_text(s, r, depths) for s, r in reach.items())
                        + ".")


def _cell(o: dict) -> str:
    return (f"{o['mean'] * 100:.1f}% ({o['n_trained']} of {o['n']} train"
            + (f", {o['n_diverged']} diverged)" if o["n_diverged"] else ")"))


def _reach_text(s: str, r: dict, depths: Sequence[int]) -> str:
    label = SCHEMES[s].label
    if r["first_failure"] is None:
        return f"{label} trains at every depth tried, up to {depths[-1]} layers"
    if r["deepest"] is None:
        return f"{label} trains at none of the depths tried, not even {depths[0]} layers"
    return (f"{label} trains up to {r['deepest']} layers and stops at {r['first_failure']}"
            + (f" (though it trains again at {_listed(map(str, r['trains_again']))})" if r["trains_again"] else ""))


def claims(runs: Mapping, depths: Sequence[int], schemes: Sequence[str], chance: float) -> list[dict]:
    """The chapter's family for `stats.verdicts`: every pair of `CLAIMS` at every depth, both schemes run."""
    return [dict(claim=f"{SCHEMES[a].label} > {SCHEMES[b].label}, {d} layers",
                 paired=paired(values_at(runs[a, d]), values_at(runs[b, d]), chance))
            for d in depths for a, b in CLAIMS if a in schemes and b in schemes]


def lsuv_table(runs: Mapping, depths: Sequence[int], schemes: Sequence[str]) -> Table:
    """For each LSUV scheme and depth: the layers LSUV set and how many of them met its tolerance."""
    rows = []
    for s in (s for s in schemes if SCHEMES[s].lsuv is not None):
        for d in depths:
            reports = [r.lsuv_report for r in runs[s, d] if r.lsuv_report is not None]
            set_ = sum(map(len, reports))
            rows.append({"scheme": SCHEMES[s].label, "depth": d, "layers set, over all seeds": set_,
                         "met the tolerance": f"{sum(row.converged for rep in reports for row in rep)} of {set_}"})
    return markdown_table(rows) if rows else Table("")


def steps(ds, epochs: int, batch_size: int) -> int:
    """SGD steps one run takes: `epochs` passes over the training images in batches of `batch_size`."""
    return epochs * math.ceil(len(ds.x_train) / batch_size)


_VERB = {"holds": "holds", "reversed": "is reversed", "tie": "is a tie", "not resolved": "is not resolved"}


def against_paper(reach: Mapping, rows: Sequence[dict]) -> str:
    """How far LSUV (paper) trains against the standard schemes, and its verdicts against Kaiming by depth."""
    if "lsuv_paper" not in reach:
        return "LSUV (paper) was not among the schemes run, so this page cannot speak to the paper's claim."
    mine = reach["lsuv_paper"]["deepest"]
    if mine is None:
        return "LSUV (paper) trained at none of the depths tried: at this budget the claim finds no support here."
    standard = [s for s in ("default", "kaiming", "orthonormal") if s in reach]
    shorter = [SCHEMES[s].label for s in standard if (reach[s]["deepest"] or 0) < mine]
    level = [SCHEMES[s].label for s in standard if (reach[s]["deepest"] or 0) >= mine]
    text = (f"With the paper's own rule these plain networks train up to **{mine} layers**"
            + (". " if reach["lsuv_paper"]["first_failure"] is None
               else f" and stop at {reach['lsuv_paper']['first_failure']}. "))
    if shorter:
        text += f"That is deeper than {_listed(shorter)} {'trains' if len(shorter) == 1 else 'train'}. "
    if level:
        text += (f"{_listed(level)} {'trains' if len(level) == 1 else 'train'} as deep, so here LSUV does not extend "
                 "the depth that trains beyond every standard initialisation; the abstract claims accuracy better "
                 "than *or equal to* theirs. ")
    versus = {}
    for r in rows:
        if r["claim"].startswith(f"{SCHEMES['lsuv_paper'].label} > {SCHEMES['kaiming'].label},"):
            versus.setdefault(r["verdict"], []).append(r["claim"].rsplit(", ", 1)[1].split()[0])
    if versus:
        text += (f"Seed by seed, the claim {SCHEMES['lsuv_paper'].label} > {SCHEMES['kaiming'].label} "
                 + "; ".join(f"{_VERB.get(verdict, verdict)} at {_listed(ds_)} layers"
                             for verdict, ds_ in versus.items())
                 + " (the table above).")
    return text


def finding(result: Mapping, reach: Mapping, width: int, n_steps: int) -> dict:
    """The chapter's question and its computed answer, in words: how deep each initialisation trains,
    and whether LSUV trains deeper than the best of the standard ones."""
    deepest = max(d for _, d in result)
    question = (f"How deep can a plain {width}-wide MLP be and still start learning within {n_steps} SGD steps under "
                "each initialisation, and does LSUV train deeper than the standard ones?")
    by_depth: dict = {}
    for s, r in reach.items():
        by_depth.setdefault(r["deepest"] or 0, []).append(SCHEMES[s].label)
    how_deep = [f"{d} layers{' (the deepest tried)' if d == deepest else ''} under {_listed(names)}"
                for d, names in sorted(by_depth.items(), reverse=True) if d]
    answer = (f"Within {n_steps} SGD steps, the deepest plain network that trains has {'; '.join(how_deep)}"
              + (f"; under {_listed(by_depth[0])} none of the depths tried trains. " if 0 in by_depth else ". "))
    return dict(question=question, answer=(answer if how_deep else "") + _lsuv_deeper(result, reach, deepest))


def _lsuv_deeper(result: Mapping, reach: Mapping, deepest: int) -> str:
    """Whether the LSUV schemes train deeper than the best standard scheme, as a sentence."""
    depth = {s: r["deepest"] or 0 for s, r in reach.items()}
    lsuv = [s for s in reach if SCHEMES[s].lsuv is not None]
    standard = [s for s in reach if SCHEMES[s].lsuv is None]
    if not lsuv or not standard:
        return "This run did not compare LSUV with a standard initialisation."
    best = max(depth[s] for s in standard)
    leaders = [s for s in standard if depth[s] == best]
    groups: dict = {}
    for s in lsuv:
        groups.setdefault("deeper than" if depth[s] > best else "as deep as" if depth[s] == best else "less deep than",
                          []).append(s)
    parts = []
    for relation, who in groups.items():
        part = (f"{_listed([SCHEMES[s].label for s in who])} {'trains' if len(who) == 1 else 'train'} {relation} "
                f"{_listed([SCHEMES[s].label for s in leaders])}")
        if relation == "as deep as" and best == deepest:  # both reach the end of the range: say how many seeds
            part += (f" (at {deepest} layers, the deepest tried, "
                     + _listed([f"{result[s, deepest]['n_trained']} of {result[s, deepest]['n']} seeds train under "
                                f"{SCHEMES[s].label}" for s in who + leaders])
                     + ", so this run cannot tell which reaches further)")
        parts.append(part)
    return (f"So LSUV {'does' if 'deeper than' in groups else 'does not'} train deeper than the best of the standard "
            f"initialisations here: {'; '.join(parts)}.")


def divergence_note(runs: Mapping, result: Mapping, profiles: Mapping[str, Sequence[float]],
                    signals: Mapping[str, Sequence[float]]) -> str:
    """For each scheme with diverged runs: what this run measured about it, and that it does not say why.

    `profiles` and `signals` are the deepest network's stds at initialisation, as `profile_table`
    takes them. Empty when no run diverged."""
    depths = sorted({d for _, d in result})
    notes = []
    for s in dict.fromkeys(s for s, _ in result):
        diverged = {d: result[s, d]["n_diverged"] for d in depths}
        if any(diverged.values()):
            notes.append(_divergence(s, diverged, runs, result, profiles[s], signals))
    return "\n\n".join(notes)


def _divergence(s: str, diverged: Mapping[int, int], runs: Mapping, result: Mapping, total: Sequence[float],
                signals: Mapping[str, Sequence[float]]) -> str:
    label, sig = SCHEMES[s].label, signals[s]
    calm = [str(d) for d, k in diverged.items() if not k]
    text = (f"**Why {label} diverges is not explained here.** Its runs diverged "
            + _listed([f"{k} of {result[s, d]['n']} times at {d} layers" for d, k in diverged.items() if k])
            + (f", and never at {_listed(calm)} layers. " if calm else ". "))
    if SCHEMES[s].lsuv is not None:
        rows = [row for d, k in diverged.items() if k for r in runs[s, d] for row in (r.lsuv_report or [])]
        met = sum(row.converged for row in rows)
        text += (f"Before training, LSUV met its tolerance on {'all' if met == len(rows) else f'{met} of the'} "
                 f"{len(rows)} layers it set at those depths. ")
    rival = max((x for x in signals if x != s), key=lambda x: signals[x][-1], default=None)
    if rival is None or sig[-1] >= signals[rival][-1]:
        where = f", the most any of the {len(signals)} initialisations keeps there"
    else:
        where = f", where {SCHEMES[rival].label} keeps the most, {signals[rival][-1]:.2f}"
    text += (f"At the start, in the {len(sig)}-layer network, its input-dependent std goes from {sig[0]:.2f} at the "
             f"first layer to {sig[-1]:.2f} at the last (the logits){where}; the total std of its hidden layers' "
             f"outputs before the ReLU has a median of {float(np.median(total[:-1])):.2g} (@fig-total-std and "
             "@fig-signal-std). ")
    if sig[-1] >= 0.1 * sig[0]:
        text += "So these runs did not diverge from a signal that had died before training. "
    return text + ("This page does not measure what happens in the diverging steps (the gradients, and the size of "
                   "each update at the learning rate and momentum above, the same for every initialisation), so it "
                   "cannot say why.")
