"""The seed notebook's LSUV variants over paired seeds, beside its single run of each (chapter 7).

The notebook (`sources.NOTEBOOK`) trained a LeNet on MNIST once per variant, printed a table of
test accuracies after epochs 1 and 3, and drew two conclusions from it. `notebook_claims` makes
them one family for `stats.verdicts` (`between_variants` picks those about its 2-point gaps); `versus_notebook` and `lsuv_means` set its numbers beside
our runs with `stats.versus_source`; `accuracy_panels`, `difference_panels` and `std_panels`
give `charts.plot_seed_dots` its data; `after_training` answers the notebook's remark that the
activations end up "much the same after training".
"""
from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Mapping, Sequence

from .experiment import Run, values_at
from .hooks import reader_names
from .lsuv import VARIANT_INFO
from .page import Table, markdown_table, stand_in_note
from .sources import NOTEBOOK
from .stats import fmt_mean_sd, paired, summarise, versus_source

if TYPE_CHECKING:
    from .data import ImageSet

NAMES = {"none": "no LSUV", "std": "LSUV, std only", "mean_std": "LSUV, mean then std",
         "loop": "LSUV, mean and std in a loop"}
IN_NOTEBOOK = {"none": "no LSUV", "std": "type 1, std only", "mean_std": "type 2, mean then std",
               "loop": "type 3, mean then std in a loop"}
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
    return {v: f"LeNet, {NAMES.get(v, f'LSUV, {v}')}" for v in variants}


def variant_table(variants: Sequence[str]) -> Table:
    """What each variant does to each layer, and its name in the notebook."""
    return markdown_table([{"variant": f"`{v}`", "what each layer gets": "PyTorch's default initialisation, no LSUV"
                            if v == "none" else _unbroken(VARIANT_INFO[v]),
                            "in the notebook": IN_NOTEBOOK.get(v, "not run by the notebook")} for v in variants])


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
    return [r for r in rows if r["claim"].endswith("epoch 1") and "none" not in r["claim"]] or list(rows)


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
                          "the notebook (one run)": "–" if r is None else f"{quoted:.2g}",
                          "one run of ours would fall in (95%)": "–" if r is None or r["low"] is None
                          else f"{r['low']:.2g} to {r['high']:.2g}", "verdict": "–" if r is None else r["verdict"]})
        via = sorted({row.mean_via for rep in reports for row in rep} - {"-", ""})
        missed = sum(not row.converged for rep in reports for row in rep)
        notes.append(f"`{v}` " + (f"moved the means through {', '.join(f'`{w}`' for w in via)}" if via
                                  else "left the means where they were")
                     + (f", and {missed} layer settings of {sum(map(len, reports))} missed their tolerance"
                        if missed else ", and every layer met its tolerance on every seed"))
    note = "; ".join(notes) + "." if notes else ""
    return records, Table(markdown_table(cells) + "\n\n" + source_count(records, "printed means") + " " + note)


def _mean_sd(xs: Sequence[float]) -> str:
    """Two significant digits, so a mean near 0 reads 0.00051, not 0.0000 or -0.0000."""
    s = summarise(xs)
    return f"{s['mean']:.2g}" if len(xs) < 2 else f"{s['mean']:.2g} ± {s['sd']:.2g}"


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


def finding(rows: Sequence[dict], n_seeds: int, dataset: str) -> dict:
    """The chapter's question and its computed answer, for the summary and the preface."""
    question = (f"Is the seed notebook's ordering of LSUV variants for a LeNet on {dataset} real over paired "
                "seeds: after one epoch loop ahead of mean then std, ahead of std only, ahead of none; after "
                "three, all level?")
    if not rows:
        return dict(question=question, answer="No claim could be tested in this build.")
    counts = [(sum(r["verdict"] == v for r in rows), words) for v, words in COUNTED.items()]
    answer = (f"Of the notebook's {len(rows)} claims, over {n_seeds} paired seeds, "
              + ", ".join(f"{k} {words[k != 1]}" for k, words in counts if k) + ".")
    by_claim = {r["claim"]: r for r in rows}
    for claim in ("loop > none, epoch 1", "loop > mean_std, epoch 1"):
        if claim in by_claim:
            r = by_claim[claim]
            other = claim.split()[2].rstrip(",")
            answer += f" After one epoch, loop − {other}: {r['effect']:+.1f} points ({r['verdict']})."
    return dict(question=question, answer=answer)
