"""The seed notebook's LSUV variants over paired seeds, beside its single run of each (chapter 7).

The notebook (`sources.NOTEBOOK`) trained a LeNet on MNIST once per variant, printed a table of
test accuracies after epochs 1 and 3, and drew two conclusions from it. `notebook_claims` makes
them one family for `stats.verdicts` (`between_variants` picks those about its 2-point gaps), and
`finding` says in words which of them hold; `versus_notebook` and `lsuv_means` set its numbers
beside our runs with `stats.versus_source`; `accuracy_panels`, `difference_panels` and
`std_panels` give `charts.plot_seed_dots` its data; `after_training` answers the notebook's remark
that the activations end up "much the same after training".
"""
from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Mapping, Sequence

from .experiment import Run, values_at
from .hooks import reader_names
from .lsuv import VARIANT_INFO
from .page import Table, markdown_table, stand_in_note
from .sources import NOTEBOOK
from .stats import MIN_PAIRS, fmt_mean_sd, min_detectable_effect, paired, pairs_needed, summarise, versus_source

if TYPE_CHECKING:
    from .data import ImageSet

NAMES = {"none": "no LSUV", "std": "LSUV (std only)", "mean_std": "LSUV (mean, then std)", "loop": "LSUV (loop)"}
IN_NOTEBOOK = {"none": "no LSUV", "std": "std only", "mean_std": "mean then std", "loop": "mean then std, in a loop"}
# What the other chapters call the same initialisation (a reader meets `loop` under three names).
ELSEWHERE = {"none": "“PyTorch default” in @sec-depth",
             "loop": "“the library's variant” in @sec-lsuv-callback, “LSUV (loop)” in @sec-depth"}
MEAN_WIDTH = 0.2  # a prediction interval for a layer mean wider than a fifth of the unit std LSUV sets could not fail


def check_setup(variants: Sequence[str], lrs: Sequence[float], epochs: int) -> None:
    """The chapter's parameters, each wrong one named with what it should be."""
    if len(lrs) < epochs:
        raise ValueError(f"lrs: one learning rate per epoch is needed, got {len(lrs)} for {epochs} epochs")
    unknown = [v for v in variants if v != "none" and v not in VARIANT_INFO]
    if unknown or not variants or len(set(variants)) != len(variants):
        raise ValueError(f"variants: distinct names among none, {', '.join(VARIANT_INFO)} expected, "
                         f"got {list(variants)}")


def configs(variants: Sequence[str]) -> dict[str, str]:
    """A label a reader understands for each configuration in `runs`."""
    return {v: f"LeNet, {NAMES.get(v, f'LSUV ({v})')}" for v in variants}


def variant_table(variants: Sequence[str]) -> Table:
    """What each variant does to each layer, its name in the notebook and in the book's other chapters."""
    return markdown_table([{"variant": f"`{v}`", "what each layer gets": "PyTorch's default initialisation, no LSUV"
                            if v == "none" else _unbroken(VARIANT_INFO[v]),
                            "the notebook's name": IN_NOTEBOOK.get(v, "not run by the notebook"),
                            "in other chapters": ELSEWHERE.get(v, "only in this chapter")} for v in variants])


def _unbroken(text: str) -> str:
    """Word joiners around `|` and `−`, which a browser would break a line at: |σ−1| stays whole."""
    return text.replace("|", "\u2060|\u2060").replace("−", "\u2060−\u2060")


def data_note(ds: "ImageSet") -> str:
    """What the page ran on, and the padded images' statistics beside the ones the notebook hard-coded."""
    mean, std = ds.stats()
    return (f"{stand_in_note(ds, NOTEBOOK['dataset'], 'The notebook')} This build uses {len(ds.x_train):,} training "
            f"and {len(ds.x_test):,} test images. Padded, the training pixels have mean {mean:.4f} and standard "
            f"deviation {std:.4f} (the notebook hard-coded 0.1 and 0.2752).")


def notebook_claims(runs: Mapping[str, Sequence[Run]], epochs: int, chance: float) -> list[dict]:
    """The notebook's statements (`NOTEBOOK["claims"]`) that this build can test, as `stats.verdicts` claims."""
    return [dict(claim=f"{a} {'>' if kind == 'order' else '≈'} {b}, epoch {e}", kind=kind,
                 paired=paired(values_at(runs[a], e - 1), values_at(runs[b], e - 1), chance))
            for kind, a, b, e in NOTEBOOK["claims"] if a in runs and b in runs and e <= epochs]


def between_variants(rows: Sequence[dict]) -> list[dict]:
    """The claims about the effect the chapter is about: one LSUV variant ahead of another after epoch 1
    (the notebook's gaps of about 2 points); all `rows` when this build tested none of them."""
    return _among_variants(rows) or list(rows)


def _among_variants(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if r["claim"].endswith("epoch 1") and "none" not in r["claim"]]


def _against_none(rows: Sequence[dict]) -> list[dict]:
    return [r for r in rows if r["kind"] == "order" and r["claim"].split(",")[0].endswith(" none")]


def _compared_epochs(epochs: int) -> list[int]:
    return [e for e in (1, 3) if e <= epochs]


def versus_notebook(runs: Mapping[str, Sequence[Run]], dataset: str, epochs: int, chance: float) -> tuple[list, Table]:
    """Each accuracy of the notebook's table beside our runs: `stats.versus_source` records and the table."""
    records, cells = [], []
    for e in _compared_epochs(epochs):
        for v, rs in runs.items():
            quoted = NOTEBOOK["test_accuracy_pct"].get(v, {}).get(e)
            if quoted is None:
                continue
            values = list(values_at(rs, e - 1).values())
            r = dict(versus_source(values, quoted / 100, dataset == NOTEBOOK["dataset"], chance),
                     experiment=f"{v}, epoch {e}", label=configs([v])[v])
            records.append(r)
            cells.append({"variant": v, "epoch": e, f"ours over {len(values)} seeds (%)":
                          fmt_mean_sd(summarise(values, bounds=(0, 1), chance=chance), scale=100),
                          "one run of ours would fall in (95%)": "–" if r["low"] is None
                          else f"{r['low'] * 100:.1f} to {r['high'] * 100:.1f}",
                          "the notebook (one run, %)": f"{quoted}", "verdict": r["verdict"]})
    return records, Table(markdown_table(cells) + "\n\n" + source_count(records, "accuracies"))


def source_count(records: Sequence[dict], what: str) -> str:
    """How many of the notebook's numbers our runs judged consistent, and which they did not."""
    judged = [r for r in records if r["consistent"] is not None]
    if not judged:
        return (f"None of the notebook's {what} could be judged: " + (records[0]["verdict"] if records
                                                                     else "nothing to compare") + ".")
    out = [r["experiment"] for r in judged if not r["consistent"]]
    return (f"{len(judged) - len(out)} of the notebook's {len(judged)} judged {what} are consistent with our runs"
            + (f"; not consistent: {'; '.join(out)}." if out else ".")
            + (f" {len(records) - len(judged)} more could not be judged (see the verdicts)."
               if len(judged) < len(records) else ""))


def accuracy_panels(runs: Mapping[str, Sequence[Run]], epochs: int, chance: float) -> dict:
    """`charts.plot_seed_dots` arguments: test accuracy (%) per seed after epochs 1 and 3, the notebook's as marks."""
    panels = {f"after epoch {e}": {v: {"this book, one dot per seed": _points(values_at(rs, e - 1))}
                                   for v, rs in runs.items()} for e in _compared_epochs(epochs)}
    marks = {f"after epoch {e}": {v: n[e] for v, n in NOTEBOOK["test_accuracy_pct"].items() if e in n and v in runs}
             for e in _compared_epochs(epochs)}
    return dict(panels=panels, marks=marks, mark_label="the notebook (one run, rounded)", missing_at=chance * 100,
                xlabel="Variant", ylabel="Test accuracy (%)")


def _points(by_seed: Mapping) -> list:
    return [None if v is None else v * 100 for v in by_seed.values()]


def difference_panels(runs: Mapping[str, Sequence[Run]], epochs: int, chance: float,
                      baselines: Sequence[str] = ("none", "std")) -> dict:
    """`charts.plot_seed_dots` arguments: a panel per baseline, each LSUV variant's accuracy minus the
    baseline's on the same seed, per epoch (no LSUV is left out of the panels against an LSUV variant)."""
    def against(b: str) -> dict:
        others = [v for v in runs if v != b and (b == "none" or v != "none")]
        return {str(e + 1): {v: [d * 100 for d in paired(values_at(runs[v], e), values_at(runs[b], e), chance).diffs]
                             for v in others} for e in range(epochs)}

    return dict(panels={f"minus {b}, same seed": against(b) for b in baselines if b in runs and len(runs) > 1},
                lines={"no difference": 0.0}, xlabel="Epoch", ylabel="Difference in test accuracy (points)",
                sharey=False)


def _reader(runs: Mapping[str, Sequence[Run]]) -> dict[str, str]:
    """Each module path of the chapter's model, named as a reader knows it (`hooks.reader_names`)."""
    model = next(r.model for rs in runs.values() for r in rs if r.model is not None)
    names = reader_names(model)
    return {path: names[m] for path, m in model.named_modules()}


def _layer_values(reports: Sequence, reader: Mapping[str, str], field: str) -> dict[str, list[float]]:
    """`{layer as a reader names it: [field of each seed's row]}` over per-seed lists of rows."""
    out: dict[str, list[float]] = {}
    for rows in reports:
        for row in rows:
            layer, value = (row["layer"], row[field]) if isinstance(row, dict) else (row.layer, getattr(row, field))
            out.setdefault(reader.get(layer, layer), []).append(value)
    return out


def lsuv_means(runs: Mapping[str, Sequence[Run]], dataset: str) -> tuple[list, Table]:
    """The layer means LSUV left, beside those the notebook printed: `versus_source` records and the table.

    The notebook's means are of one run; ours are over seeds, judged by `stats.versus_source` with
    `bounds=None` and `MEAN_WIDTH`. The sentence says where each variant moved the mean and
    whether every layer met its tolerance.
    """
    records, cells, notes, reader = [], [], [], _reader(runs)
    for v, rs in runs.items():
        reports = [r.lsuv_report for r in rs if r.lsuv_report is not None]
        if not reports:
            continue
        printed = NOTEBOOK.get(f"{v}_variant_means") or []
        # loop and blog end with |μ| ≤ tol: two means closer than that are the same result, stopped at another step
        margin = reports[0].tol if reports[0].variant in ("loop", "blog") else 0.0
        for i, (layer, means) in enumerate(_layer_values(reports, reader, "mean_after").items()):
            quoted = printed[i] if i < len(printed) else None
            r = None if quoted is None else dict(
                versus_source(means, quoted, dataset == NOTEBOOK["dataset"], bounds=None, max_width=MEAN_WIDTH,
                              margin=margin),
                experiment=f"{v}, {layer}: mean after LSUV", label=configs([v])[v])
            records += [r] if r else []
            cells.append({"variant": v, "layer": layer, "mean after LSUV, ours": _mean_sd(means),
                          "the notebook (one run)": "–" if r is None else _fixed(quoted),
                          "one run of ours would fall in (95%)": "–" if r is None or r["low"] is None
                          else f"{_fixed(r['low'])} to {_fixed(r['high'])}",
                          "verdict": "–" if r is None else r["verdict"]})
        via = sorted({row.mean_via for rep in reports for row in rep} - {"-", ""})
        missed = sum(not row.converged for rep in reports for row in rep)
        notes.append((v, f"moved the means through {', '.join(f'`{w}`' for w in via)}" if via
                      else "left the means where they were", missed, sum(map(len, reports))))
    return records, Table(markdown_table(cells) + "\n\n" + source_count(records, "printed means") + " "
                          + _tolerance_note(notes))


def _tolerance_note(notes: Sequence[tuple[str, str, int, int]]) -> str:
    """Where the variants moved the means (`(variant, how, missed, total)` each), alike ones together, and
    whether every layer met its tolerance, said once."""
    if not notes:
        return ""
    alike: dict[str, list[str]] = {}
    for v, how, missed, total in notes:
        alike.setdefault(how + (f" ({missed} of {total} layer settings missed their tolerance)" if missed else ""),
                         []).append(f"`{v}`")
    lead = "" if any(n[2] for n in notes) else "Every layer met its tolerance on every seed. "
    return lead + "; ".join(f"{_and(vs)} {how}" for how, vs in alike.items()) + "."


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _fixed(x: float, decimals: int | None = None) -> str:
    """`x` without an exponent and with a true minus sign, to three significant digits (0.440, −0.0000640)
    or to `decimals` places."""
    if not math.isfinite(x):
        return f"{x:g}"
    return "0" if x == 0 else f"{x:.{_decimals(x) if decimals is None else decimals}f}".replace("-", "−")


def _decimals(x: float, digits: int = 3) -> int:
    return 0 if x == 0 else max(0, digits - 1 - math.floor(math.log10(abs(x))))


def _mean_sd(xs: Sequence[float]) -> str:
    """The mean to three significant digits, the sd to as many places (at most three digits, at least one)."""
    s = summarise(xs)
    if len(xs) < 2:
        return _fixed(s["mean"])
    places = min(max(_decimals(s["mean"]), _decimals(s["sd"], 1)), _decimals(s["sd"]))
    return f"{_fixed(s['mean'])} ± {_fixed(s['sd'], places)}"


def _trained_stds(rs: Sequence[Run], reader: Mapping[str, str]) -> dict[str, list[float]]:
    return _layer_values([r.after_training for r in rs if not r.stopped], reader, "std")


def std_panels(runs: Mapping[str, Sequence[Run]]) -> dict:
    """`charts.plot_seed_dots` arguments: each layer's activation std right after LSUV and after training."""
    def by_layer(per_variant: dict) -> dict:
        layers = dict.fromkeys(layer for stds in per_variant.values() for layer in stds)
        return {layer: {v: stds[layer] for v, stds in per_variant.items() if layer in stds} for layer in layers}

    reader = _reader(runs)
    after_lsuv = {v: _layer_values([r.lsuv_report for r in rs if r.lsuv_report is not None], reader, "std_after")
                  for v, rs in runs.items() if any(r.lsuv_report is not None for r in rs)}
    return dict(panels={"right after LSUV": by_layer(after_lsuv),
                        "after training": by_layer({v: _trained_stds(rs, reader) for v, rs in runs.items()})},
                lines={"std 1, what LSUV sets": 1.0}, xlabel="Layer", ylabel="Std of the activations")


def after_training(runs: Mapping[str, Sequence[Run]]) -> dict:
    """The notebook's "much the same after training", measured: per layer, the LSUV variants' mean std
    after training, how far apart they are (`gap`: largest range across variants over the layer's
    mean) and how far apart seeds of one variant are (`seed_sd`: largest sd over the mean), the range
    of every std, and the sentence a page shows. Runs that diverged are left out and counted."""
    lsuv, reader = [v for v in runs if v != "none"], _reader(runs)
    stds = {v: _trained_stds(runs[v], reader) for v in runs}
    averages = [statistics.fmean(xs) for per_layer in stds.values() for xs in per_layer.values() if xs]
    lost = sum(r.stopped is not None for rs in runs.values() for r in rs)
    out = dict(low=min(averages, default=None), high=max(averages, default=None), n_left_out=lost, gap=None,
               seed_sd=None, none_gap=None, with_none="none" in runs)
    layers = [layer for layer in stds.get(lsuv[0], {}) if all(len(stds[v].get(layer, [])) >= 2 for v in lsuv)] \
        if len(lsuv) > 1 else []
    if layers:
        means = {layer: [statistics.fmean(stds[v][layer]) for v in lsuv] for layer in layers}
        gaps = {layer: (max(m) - min(m)) / statistics.fmean(m) for layer, m in means.items()}
        out["gap_layer"], out["gap"] = max(gaps.items(), key=lambda kv: kv[1])
        out["seed_sd"] = max(statistics.stdev(stds[v][layer]) / statistics.fmean(stds[v][layer])
                             for v in lsuv for layer in layers)
        apart = {layer: abs(statistics.fmean(stds["none"][layer]) / statistics.fmean(m) - 1)
                 for layer, m in means.items() if stds.get("none", {}).get(layer)}
        if apart:
            out["none_layer"], out["none_gap"] = max(apart.items(), key=lambda kv: kv[1])
    out["sentence"] = _after_training_sentence(out, lsuv)
    return out


def _after_training_sentence(a: dict, lsuv: list[str]) -> str:
    if a["low"] is None:
        return "No run finished training, so there are no trained activations to compare."
    text = (f"LSUV set every activation's std to 1. After training, the stds of every variant"
            + (", `none` included," if a["with_none"] else "")
            + f" lie between {a['low']:.1f} and {a['high']:.1f} on average over the seeds"
            + (": no layer keeps the unit std LSUV set." if a["low"] > 1.1 or a["high"] < 0.9 else "."))
    if a["gap"] is not None:
        same = a["gap"] <= a["seed_sd"]
        text += (f" Layer by layer, the averages of the {len(lsuv)} LSUV variants differ by at most {a['gap']:.0%} "
                 f"(in {a['gap_layer']}), " + ("no more than" if same else "more than")
                 + f" the spread between seeds of one variant (an sd of up to {a['seed_sd']:.0%} of the mean): "
                 + ("the notebook's \"much the same after training\" holds." if same else
                    "the variants do not end quite the same, though all have left unit variance far behind."))
    if a["none_gap"] is not None:
        text += (f" Without LSUV the network ends {'elsewhere' if a['none_gap'] > a['seed_sd'] else 'much the same'}: "
                 f"up to {a['none_gap']:.0%} from the variants' average (in {a['none_layer']}).")
    if a["n_left_out"]:
        n = a["n_left_out"]
        text += (f" {n} run{'s' if n != 1 else ''} that diverged {'are' if n != 1 else 'is'} left out: "
                 "no trained activations.")
    return text


COUNTED = {"holds": ("holds", "hold"), "does not hold": ("does not hold", "do not hold"),
           "reversed": ("is reversed", "are reversed"), "tie": ("is a tie", "are ties"),
           "not resolved": ("is not resolved", "are not resolved")}


def finding(rows: Sequence[dict], n_seeds: int, dataset: str, effect: float) -> dict:
    """The chapter's question and its computed answer, for the page, the summary and the preface: the
    verdicts counted, then in words for each of the notebook's three statements (LSUV ahead of none;
    the variants' order after one epoch, with the seeds `effect` points would need; the variants
    level after three epochs)."""
    question = (f"Is the seed notebook's ordering of LSUV variants for a LeNet on {dataset} real over paired "
                "seeds: after one epoch loop ahead of mean then std, ahead of std only, ahead of none; after "
                "three, all level?")
    if not rows:
        return dict(question=question, answer="No claim could be tested in this build.")
    answer = [f"Of the notebook's {len(rows)} claims, over {n_seeds} paired seeds, {', '.join(_counted(rows))}."]
    ahead, order, level = _against_none(rows), _among_variants(rows), [r for r in rows if r["kind"] == "tie"]
    if ahead:
        gaps = " and ".join(f"{_gap(rs)} points after epoch {e}" for e, rs in _by_epoch(ahead).items())
        answer.append((f"LSUV helps: every variant is ahead of no LSUV, by {gaps}" if _all(ahead, "holds") else
                       f"Whether every variant is ahead of no LSUV is {_settled(ahead)}: the variants minus no "
                       f"LSUV are {gaps}") + f" ({_tally(ahead)}).")
    if order:
        answer.append("The order the notebook saw among the variants after one epoch is "
                      + ("real" if _all(order, "holds") else _settled(order))
                      + f": the gaps are {_gap(order)} points ({_tally(order)})" + _resolution(order, effect) + ".")
    if level:
        margin = level[0]["margin"]
        answer.append(("After three epochs the variants are level, as the notebook said: they differ by "
                       if _all(level, "holds") else
                       f"Whether the variants are level after three epochs is {_settled(level)}: they differ by ")
                      + f"{_gap(level)} points, the tie margin being ±{margin:g} point{'s' * (margin != 1)} "
                      f"({_tally(level)}).")
    return dict(question=question, answer=" ".join(answer))


def _by_epoch(rows: Sequence[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["claim"].rsplit("epoch ", 1)[1], []).append(r)
    return out


def _gap(rows: Sequence[dict]) -> str:
    low, high = min(r["effect"] for r in rows), max(r["effect"] for r in rows)
    return f"{low:+.1f}" if f"{low:+.1f}" == f"{high:+.1f}" else f"{low:+.1f} to {high:+.1f}"


def _all(rows: Sequence[dict], verdict: str) -> bool:
    return all(r["verdict"] == verdict for r in rows)


def _settled(rows: Sequence[dict]) -> str:
    """How far a statement that does not simply hold is settled by its claims' verdicts."""
    return "not resolved" if _all(rows, "not resolved") else "partly settled" if any(
        r["verdict"] == "not resolved" for r in rows) else "settled the other way"


def _tally(rows: Sequence[dict]) -> str:
    """'all 3 claims hold', 'neither claim is resolved', '2 of 3 claims hold, 1 is not resolved'."""
    n, said = len(rows), _counted(rows)
    if len(said) > 1:
        return f"{said[0].replace(' ', f' of {n} claims ', 1)}, " + ", ".join(said[1:])
    v = rows[0]["verdict"]
    if n > 1 and v in ("not resolved", "does not hold"):
        return f"{'neither claim' if n == 2 else f'none of the {n} claims'} " + (
            "is resolved" if v == "not resolved" else "holds")
    return f"{'1 claim' if n == 1 else 'both claims' if n == 2 else f'all {n} claims'} {COUNTED[v][n != 1]}"


def _counted(rows: Sequence[dict]) -> list[str]:
    """Each verdict the rows reach, counted: ['9 hold', '3 are not resolved']."""
    counts = {v: sum(r["verdict"] == v for r in rows) for v in COUNTED}
    return [f"{k} {COUNTED[v][k != 1]}" for v, k in counts.items() if k]


def _resolution(rows: Sequence[dict], effect: float) -> str:
    """What the seeds could resolve, for rows not all resolved: the interval's half-width and the seeds
    `effect` points would need at the spread measured (`stats.pairs_needed`)."""
    if all(r["verdict"] in ("holds", "reversed") for r in rows):
        return ""
    n, m = rows[0]["n"], rows[0]["m"]
    sds = [r["sd"] for r in rows if r["sd"] is not None]
    if n < MIN_PAIRS or not sds:
        return f"; {n} seed{'s' * (n != 1)} give{'s' * (n == 1)} no interval, at least {MIN_PAIRS} are needed"
    sd, confidence = max(sds), rows[0]["confidence"]
    text = f"; {n} seeds resolve only gaps larger than {min_detectable_effect(sd, n, m, confidence):.1f} points"
    return text + ("" if sd == 0 else f", and at the spread measured (the per-seed differences have an sd of up to "
                   f"{sd:.1f} points) resolving {effect:g} points would take about "
                   f"{pairs_needed(effect, sd, m, confidence)} seeds")
