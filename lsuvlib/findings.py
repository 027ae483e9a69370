"""What the book found, read from one build: the summary chapter, the preface and the build record call these.

Each training chapter saves in its results `summary`: `finding` = `{question, answer}` (its question
and computed answer), `configs` = `{config: label}`, and `verdicts` and `source_verdicts` as
`lsuvlib.stats` returns them. Everything here reads only the files `results.load_build` vouches
for, and says in a sentence what is missing when a chapter has not saved it (not built, failed,
or built before it saved that field). Chapters are named by their Quarto ids (`@sec-baseline`),
so the text links them.
"""
from __future__ import annotations

import datetime as dt
import math
import re
from typing import Sequence

from .data import DATASETS
from .page import markdown_table, sci, shown_interval, verdict_table
from .results import NOT_RESULTS, Build, ResultsFile, comparable, load_build
from .sources import BLOG, NOTEBOOK
from .stats import MIN_PAIRS, check_verdict, paired_runs, summarise, verdicts

# The training chapters in reading order: Quarto id and a short name for the figure's panels.
CHAPTERS = {
    "01-motivation": ("sec-motivation", "why initialisation matters"),
    "02-lr-finder": ("sec-lr-finder", "the learning-rate finder"),
    "03-baseline": ("sec-baseline", "the baseline"),
    "04-input-normalisation": ("sec-input-normalisation", "standardised inputs"),
    "05-batchnorm-kaiming": ("sec-batchnorm-kaiming", "BatchNorm + Kaiming"),
    "06-lsuv-callback": ("sec-lsuv-callback", "LSUV as a callback"),
    "07-mnist-variants": ("sec-mnist-variants", "LSUV variants on MNIST"),
    "08-depth": ("sec-depth", "deep plain networks"),
}
# The source whose numbers a chapter's configurations are set beside (keyed there by configuration name).
SOURCES = {**dict.fromkeys(["03-baseline", "04-input-normalisation", "05-batchnorm-kaiming", "06-lsuv-callback"],
                           ("the blog", BLOG)), "07-mnist-variants": ("the notebook", NOTEBOOK)}
# The blog's chain, chapter against chapter: each claim reads "a > b", a and b as (chapter, config, short name),
# with what differs between the two chapters' networks and training, as their notebooks build them.
_CH3, _CH4 = ("03-baseline", "baseline", "baseline"), ("04-input-normalisation", "input_normalisation",
                                                        "standardised inputs")
_CH5, _CH6 = ("05-batchnorm-kaiming", "batchnorm_kaiming", "BatchNorm + Kaiming"), ("06-lsuv-callback",
                                                                                  "lsuv_callback", "LSUV")
_RECIPE = ("[GeneralRelu](glossary.md#generalrelu) instead of ReLU, a smaller first kernel, SGD with "
           "[momentum](glossary.md#momentum) instead of plain SGD, and inputs no longer standardised")
CROSS = [(_CH4, _CH3, "only the inputs, which chapter 4 standardises; network, weights and plain SGD are chapter 3's"),
         (_CH5, _CH4, f"the blog's whole recipe, not one step: BatchNorm layers and Kaiming weights, with {_RECIPE}"),
         (_CH6, _CH4, f"LSUV (the blog's rule) instead of PyTorch's default weights, with {_RECIPE}"),
         (_CH5, _CH6, "only how the network starts: BatchNorm layers with Kaiming weights against LSUV without "
                      "BatchNorm; activation, kernels, momentum and inputs are the same")]
STABLE = "lsuv_callback_stable"  # chapter 6's blog rule at a lower rate, for every seed
LOOP = ("07-mnist-variants", "loop"), ("08-depth", "lsuv_loop")  # the same LSUV rule, small net and deep net
TIE_MARGIN = 0.01  # a tie: the interval inside ±1 accuracy point, as in every chapter
VERDICT_ORDER = ("holds", "reversed", "tie", "does not hold", "not resolved")


def load(results_dir=None) -> Build:
    """`results.load_build`, with an unreadable manifest or results file reported as a missing build."""
    try:
        return load_build(results_dir)
    except ValueError as exc:  # the page says what and how to fix it, without the parser's own words
        return Build(None, left_out={"(all)": re.sub(r" \(.*\)(?=: )", "", str(exc))})


def ref(chapter: str) -> str:
    """A chapter as a Quarto cross-reference (`@sec-baseline`), or its name when it has no id."""
    return f"@{CHAPTERS[chapter][0]}" if chapter in CHAPTERS else chapter


def why_missing(build: Build, chapter: str) -> str:
    """Why `chapter` has no results in `build`: a phrase completing "Chapter N ..."."""
    if build.manifest is None:
        return f"is not here: {build.left_out.get('(all)', 'no book build was found')}"
    record = build.manifest.get("chapters", {}).get(chapter)
    if record is None:
        return "was not built"
    status = record.get("status")
    if status in ("failed", "killed"):
        return f"{'was killed' if status == 'killed' else 'failed'} in build {record.get('build_id')}"
    if status == "running":
        return "was still running when this page was made"
    return f"is left out: {build.left_out[chapter]}" if chapter in build.left_out else "saved no results"


def _and(items: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _grouped(lead: str, reasons: dict[str, str]) -> list[str]:
    """One sentence per reason, naming every chapter it applies to: `reasons` maps chapter -> why."""
    by: dict[str, list[str]] = {}
    for chapter, why in reasons.items():
        by.setdefault(why, []).append(ref(chapter))
    return [f"{lead}, because the chapter {why}: {_and(refs)}." for why, refs in by.items()]


def _summary(build: Build, chapter: str) -> dict | None:
    f = build.files.get(chapter)
    return f.data["summary"] if f else None


# ----------------------------------------------------------------------------- each chapter's answer


def finding_lines(build: Build) -> list[str]:
    """One Markdown line per training chapter: its question and computed answer, or why it has none."""
    lines = []
    for chapter in CHAPTERS:
        summary = _summary(build, chapter)
        found = (summary or {}).get("finding")
        if summary is None:
            lines.append(f"{ref(chapter)}: not answered here, because the chapter {why_missing(build, chapter)}.")
        elif not (isinstance(found, dict) and found.get("question") and found.get("answer")):
            lines.append(f"{ref(chapter)}: not answered here, because its results (build "
                         f"{build.files[chapter].record.get('build_id')}) carry no question and answer: "
                         "rebuild the chapter with its current notebook.")
        else:
            lines.append(f"{ref(chapter)}: *{found['question'].strip()}* {found['answer'].strip()}")
    return lines


# ----------------------------------------------------------------------------- every run's final accuracy


def final_accuracy(run: dict) -> float | None:
    """A run's last test accuracy, or None when it diverged (stopped early, or no finite last test loss)."""
    rows = [r for r in run["history"] if r["phase"] == "eval"]
    loss = rows[-1]["loss"] if rows else None
    if run.get("stopped") or loss is None or not math.isfinite(loss):
        return None
    return rows[-1]["accuracy"]


def _chance(f: ResultsFile) -> float:
    return 1 / (f.data["dataset"].get("n_classes") or 10)


def _data_title(name: str | None) -> str:
    spec = DATASETS.get(name or "")
    return spec.title if spec and spec.title else (name or "unknown data")


def source_mark(f: ResultsFile, config: str) -> dict | None:
    """The single run a source reported for `config` after as many epochs as this chapter trained,
    as `dict(value, source, dataset, same_dataset)`, or None when the source reported none."""
    name, source = SOURCES.get(f.chapter, (None, None))
    if source is BLOG:  # the blog reports its runs after 3 epochs
        value = BLOG["eval_accuracy"].get(config) if f.params.get("epochs", 3) == 3 else None
    elif source is NOTEBOOK:
        pct = NOTEBOOK["test_accuracy_pct"].get(config, {}).get(f.params.get("epochs"))
        value = None if pct is None else pct / 100
    else:
        return None
    return None if value is None else dict(
        value=value, source=name, dataset=_data_title(source["dataset"]),
        same_dataset=f.data["dataset"].get("name") == source["dataset"])


def accuracy_panels(build: Build) -> list[dict]:
    """The cross-chapter figure's data (`charts.final_accuracy_chart`): a panel per chapter with runs."""
    panels = []
    for chapter, (_, name) in CHAPTERS.items():
        f = build.files.get(chapter)
        if f is None or not f.data["runs"]:
            continue
        labels = f.data["summary"].get("configs") or {}
        marks = {c: source_mark(f, c) for c in f.data["runs"]}
        data = f.data["dataset"]
        stand_in = next((f" ({m['source']} ran {m['dataset']})" for m in marks.values()
                         if m and not m["same_dataset"]), "")
        panels.append(dict(chapter=chapter, title=f"Ch. {int(chapter[:2])} · {name} · {_data_title(data.get('name'))}"
                                                  f"{stand_in}", chance=_chance(f), rows=[dict(label=labels.get(c, c), source=marks[c],
                                                         accuracies=[final_accuracy(r) for r in runs])
                                                    for c, runs in f.data["runs"].items()]))
    return panels


def figure_text(build: Build) -> str:
    """What the cross-chapter figure holds and leaves out, in sentences, to print under it."""
    panels = accuracy_panels(build)
    runs = [a for p in panels for r in p["rows"] for a in r["accuracies"]]
    shown = {p["chapter"] for p in panels}
    text = (f"The figure shows {len(runs)} runs of {sum(len(p['rows']) for p in panels)} configurations from "
            f"{len(panels)} chapters; {sum(a is None for a in runs)} of the runs diverged." if runs
            else "No chapter of this build saved a trained run, so the figure is empty.")
    return " ".join([text] + _grouped("Not in it", {c: "saved no trained runs" if c in build.files else
                                                    why_missing(build, c) for c in CHAPTERS if c not in shown}))


# ----------------------------------------------------------------------------- chapter against chapter


# Parameters as a reader names them, and values as a reader writes them (`None` for a split: all of it).
PARAM_WORDS = {"lr": "learning rate", "batch_size": "batch size", "n_seeds": "seeds", "seed": "first seed",
               "n_train": "training images", "n_test": "test images"}


def _value(key: str, v) -> str:
    if v is None:
        return "the whole split" if key in ("n_train", "n_test") else "not set"
    if key == "dataset":
        return _data_title(v) if v in DATASETS else "the first available" if v == "auto" else str(v)
    if isinstance(v, (list, tuple)):
        return ", ".join(_value(key, x) for x in v)
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else f"{v:g}" if isinstance(v, float) else str(v)


def why_not_paired(fa: ResultsFile, fb: ResultsFile) -> str | None:
    """`results.comparable`'s decision, its reason in a reader's words: "chapter 7 and chapter 8 ran with
    different settings (batch size: 256 against 64; ...)", or None when the two can be paired."""
    if comparable(fa, fb) is None:
        return None
    both = f"chapter {int(fa.chapter[:2])} and chapter {int(fb.chapter[:2])}"
    differ = [f"{PARAM_WORDS.get(k, k.replace('_', ' '))}: {_value(k, fa.params[k])} against {_value(k, fb.params[k])}"
              for k in sorted(set(fa.params) & set(fb.params) - set(NOT_RESULTS)) if fa.params[k] != fb.params[k]]
    return f"{both} ran with different settings ({'; '.join(differ)})" if differ else f"{both} ran on different data"


def _side(build: Build, side: tuple[str, str, str]) -> str:
    """One side of a cross-chapter claim: "ch. 4 standardised inputs"; a chapter of several configurations
    is named by the label it saved for the one meant ("ch. 6 LSUV callback, blog's rule, lr 0.2")."""
    chapter, config, short = side
    f = build.files.get(chapter)
    labels = (f.data["summary"].get("configs") or {}) if f else {}
    several = f is not None and len(f.data["runs"]) > 1
    return f"ch. {int(chapter[:2])} {labels[config] if several and config in labels else short}"


def _claim(build: Build, a: tuple, b: tuple) -> str:
    return f"{_side(build, a)} > {_side(build, b)}"


def _pair(build: Build, a: tuple[str, str, str], b: tuple[str, str, str]):
    """The paired runs of two chapters' configurations, or the reason they cannot be paired."""
    for chapter, config, _ in (a, b):
        if chapter not in build.files:
            return f"chapter {int(chapter[:2])} {why_missing(build, chapter)}"
        if config not in build.files[chapter].data["runs"]:
            return f"chapter {int(chapter[:2])} saved no runs of {config}"
    fa, fb = build.files[a[0]], build.files[b[0]]
    why = why_not_paired(fa, fb)  # every parameter the two share must match: none is what the claim is about
    if why:
        return why
    try:
        return paired_runs(fa.data["runs"][a[1]], fb.data["runs"][b[1]], chance=_chance(fa))
    except ValueError as exc:  # seeds or epochs that do not line up
        return f"their runs cannot be paired seed by seed ({exc})"


def cross_chapter(build: Build, alpha: float = 0.05) -> tuple[list[dict], list[dict]]:
    """Verdict rows (`stats.verdicts`, one family) for the pairs of `CROSS` that `results.comparable` allows,
    and `dict(claim, why)` for each pair it does not."""
    ready, not_compared = [], []
    for a, b, _ in CROSS:
        claim, got = _claim(build, a, b), _pair(build, a, b)
        (not_compared.append(dict(claim=claim, why=got)) if isinstance(got, str)
         else ready.append(dict(claim=claim, paired=got)))
    return (verdicts(ready, alpha=alpha, tie_margin=TIE_MARGIN) if ready else []), not_compared


def pair_differences(build: Build) -> str:
    """What differs between the two chapters of each cross-chapter claim, besides the parameters they share."""
    return "\n".join(f"- {_claim(build, a, b)}: {differs}." for a, b, differs in CROSS)


def cross_chapter_table(rows: Sequence[dict], not_compared: Sequence[dict]) -> str:
    """The cross-chapter verdict table, and one line per pair that was not compared, saying why."""
    out = verdict_table(rows) if rows else "_No pair of chapters could be compared in this build._"
    return out + ("\n\n**Not compared:**\n\n" + "\n".join(f"- {n['claim']}, because {n['why']}." for n in not_compared)
                  if not_compared else "")


def setting(f: ResultsFile) -> str:
    """The settings a chapter's runs used, from its saved parameters: "lr 0.2, 3 epochs, 5 seeds, Fashion-MNIST"."""
    p = f.params
    parts = ([f"lr {p['lr']:g}"] if isinstance(p.get("lr"), (int, float)) else []) + \
        [f"{p[k]} {word}{'' if p[k] == 1 else 's'}" for k, word in (("epochs", "epoch"), ("n_seeds", "seed"))
         if isinstance(p.get(k), int)]
    return ", ".join(parts + [_data_title(f.data["dataset"].get("name"))])


# ----------------------------------------------------------------------------- the bottom line


def _mean_over_seeds(f: ResultsFile, config: str) -> tuple[dict, str]:
    """`stats.summarise` of a configuration's final accuracies (diverged at chance), and its label."""
    runs = f.data["runs"][config]
    return (summarise([final_accuracy(r) for r in runs], chance=_chance(f)),
            (f.data["summary"].get("configs") or {}).get(config, config))


def _both_trained(build: Build, a: tuple, b: tuple) -> tuple[int, float | None]:
    """The seeds in which neither side's run diverged, and the mean difference a − b over them, in points."""
    final = [{r["seed"]: final_accuracy(r) for r in build.files[c].data["runs"][config]} for c, config, _ in (a, b)]
    diffs = [final[0][s] - final[1][s] for s in final[0] if final[0][s] is not None and final[1].get(s) is not None]
    return len(diffs), (sum(diffs) / len(diffs) * 100 if diffs else None)


def _headline(build: Build, rows: Sequence[dict], not_compared: Sequence[dict]) -> str:
    """BatchNorm with Kaiming weights against LSUV without BatchNorm (the blog's conclusion), as advice."""
    a, b, _ = CROSS[-1]  # the blog's own conclusion: LSUV without BatchNorm comes close to BatchNorm
    claim, names = _claim(build, a, b), ("BatchNorm with Kaiming weights", "LSUV without BatchNorm")
    row = next((r for r in rows if r["claim"] == claim), None)
    if row is None:
        why = next(n["why"] for n in not_compared if n["claim"] == claim)
        return f"BatchNorm with Kaiming weights and LSUV without BatchNorm could not be compared here: {why}."
    f6 = build.files[b[0]]
    shown = shown_interval(row)  # never past ±100 points, the widest two accuracies can differ
    span = (f"{shown[0]:+.1f} to {shown[1]:+.1f} points over {row['n']} seeds" if shown else
            f"{row['n']} seeds give no interval, {MIN_PAIRS} are needed")
    where = (f"On the blog's CNN ({setting(f6)}; {ref(a[0])} against {ref(b[0])}, LSUV by "
             "[the blog's rule](glossary.md#lsuv-variants))")
    diverged = [(k, name) for k, name in zip((row["n_diverged_a"], row["n_diverged_b"]), names) if k]
    text = {"holds": f"{where}, BatchNorm with Kaiming weights ended ahead of LSUV without BatchNorm by "
                     f"{row['effect']:.1f} points ({span}): where BatchNorm layers fit, they were the surer start.",
            "reversed": f"{where}, LSUV without BatchNorm ended ahead of BatchNorm with Kaiming weights by "
                        f"{-row['effect']:.1f} points ({span}): a measured start did the work of BatchNorm layers.",
            "tie": f"{where}, LSUV without BatchNorm and BatchNorm with Kaiming weights tied within "
                   f"±{row['margin']:g} point ({span}): a measured start matched BatchNorm without its layers.",
            }.get(row["verdict"], f"{where}, this build cannot tell BatchNorm with Kaiming weights from LSUV without "
                                  f"BatchNorm ({span})" + (
                                      "." if diverged else ": more seeds are needed before choosing between them."))
    if not diverged:
        return text
    both, diff = _both_trained(build, a, b)
    text += (" At that rate " + " and ".join(f"{k} of {row['n']} runs of {name}" for k, name in diverged)
             + " diverged, each counted at chance accuracy"
             + (f"; in the {both} seed{'s' * (both != 1)} where both trained, the difference was {diff:+.1f} points"
                if both else "") + ".")
    if row["verdict"] == "not resolved":
        text += (" The diverged runs, not the number of seeds, decide this comparison: more seeds would only "
                 "measure how often a run diverges at this rate.")
    text += " A measured start does not make a too-high learning rate safe."
    if STABLE in f6.data["runs"]:
        s, label = _mean_over_seeds(f6, STABLE)
        text += (f" At chapter {int(b[0][:2])}'s lower rate (“{label}”), {s['n_diverged'] or 'none'} of "
                 f"{s['n']} runs diverged.")
    return text


def _small_and_deep(build: Build) -> str:
    """Chapter 7's LSUV variants on a small network against the same loop rule in chapter 8's deep ones."""
    (c7, loop7), (c8, loop8) = LOOP
    missing = [c for c in (c7, c8) if c not in build.files]
    if missing:
        return ("The small network of chapter 7 and the deep ones of chapter 8 cannot be set side by side here: "
                + " and ".join(f"chapter {int(c[:2])} {why_missing(build, c)}" for c in missing) + ".")
    f7, f8 = build.files[c7], build.files[c8]
    means = {c: _mean_over_seeds(f7, c) for c in f7.data["runs"]}
    if not means:
        return f"{ref(c7)} saved no runs, so its LSUV variants cannot be set beside {ref(c8)}."
    best = max(means, key=lambda c: means[c][0]["mean"])
    text = (f"In {ref(c7)} ({setting(f7)}) the variant “{means[best][1]}” ended with the highest mean test "
            f"accuracy, {means[best][0]['mean'] * 100:.1f}%")
    if best != loop7 and loop7 in means:
        text += f"; the loop variant, “{means[loop7][1]}”, ended at {means[loop7][0]['mean'] * 100:.1f}%"
    depths = [d for d in f8.params.get("depths") or [] if f"{loop8}-depth-{d}" in f8.data["runs"]]
    if not depths:
        return text + f". {ref(c8)} saved no runs of that loop rule, so whether it holds at depth is not known here."
    deepest = max(depths)
    s, label = _mean_over_seeds(f8, f"{loop8}-depth-{deepest}")
    text += (f". The same [loop rule](glossary.md#lsuv-variants) (“{label}”) in {ref(c8)}'s plain {deepest}-layer "
             f"networks ({setting(f8)}) diverged in {s['n_diverged']} of {s['n']} runs and averaged "
             f"{s['mean'] * 100:.1f}%")
    if s["n_diverged"] * 2 > s["n"]:
        text += (": a rule that does well on a small network is no guarantee at depth; check a start at the depth "
                 "you train.")
    elif s["n_diverged"]:
        text += ": some runs failed at depth, so check a start at the depth you train."
    else:
        text += ": in this build it trained at depth too."
    why = why_not_paired(f7, f8)
    return text + (f" These are two experiments, not a paired comparison: {why}." if why else "")


def _tally_sentence(build: Build) -> str:
    """How the chapters' own claims came out, and how many runs diverged, over the whole build."""
    rows = [r for f in build.files.values() for r in f.data["summary"].get("verdicts") or []]
    runs = [a for p in accuracy_panels(build) for r in p["rows"] for a in r["accuracies"]]
    text = (f"Across the chapters, {_counts(rows)}. A claim not resolved is not a no: its interval spans both "
            "answers; more seeds narrow it where the spread between seeds, not diverged runs, makes it wide." if rows
            else "No chapter of this build saved verdicts on its claims.")
    return text + (f" Of {len(runs)} trained runs, {sum(a is None for a in runs)} diverged; each counts at chance "
                   "accuracy, never left out." if runs else "")


def bottom_line(build: Build, rows: Sequence[dict], not_compared: Sequence[dict]) -> list[str]:
    """What a practitioner should take from this build, one sentence group per point, each conditional on
    the verdicts and the runs it reads (pass `cross_chapter(build)`'s two lists)."""
    lines = [_headline(build, rows, not_compared), _small_and_deep(build), _tally_sentence(build)]
    absent = {c: why_missing(build, c) for c in CHAPTERS if c not in build.files}
    return lines + ([" ".join(_grouped("Left out of every point above", absent))] if absent else [])


# ----------------------------------------------------------------------------- every chapter's verdicts


# Each kind of claim, as (singular, plural) words: an ordering "a > b", or a claim of no difference "a ≈ b".
KIND_WORDS = {"order": ("ordering a > b", "orderings a > b"),
              "tie": ("claim of no difference a ≈ b", "claims of no difference a ≈ b")}


def _verdict_words(verdict: str, margin: str) -> tuple[str, str]:
    if verdict == "tie":  # an ordering whose interval lies inside the margin: the claimed lead is not there
        return (f"came out level within {margin} (verdict “tie”)",) * 2
    return {"holds": ("holds", "hold"), "does not hold": ("does not hold", "do not hold")}.get(
        verdict, (f"is {verdict}", f"are {verdict}"))


def _counts(rows: Sequence[dict]) -> str:
    """"12 claims: of 9 orderings a > b, 6 hold and 3 are not resolved; of 3 claims of no difference a ≈ b, 3 hold".

    Orderings and claims of no difference are counted apart, so a claim of no difference that holds is
    never read as an ordering that holds, and an ordering that came out level says so."""
    margins = {r["margin"] for r in rows if "margin" in r}
    m = margins.pop() if len(margins) == 1 else None
    margin = "the tie margin" if m is None else f"±{m:g} point{'s' * (m != 1)}"
    parts = []
    for kind, words in KIND_WORDS.items():
        of_kind = [r for r in rows if r.get("kind", "order") == kind]
        counts = {v: n for v in VERDICT_ORDER if (n := sum(r.get("verdict") == v for r in of_kind))}
        if of_kind:
            parts.append(f"of {len(of_kind)} {words[len(of_kind) != 1]}, "
                         + _and([f"{n} {_verdict_words(v, margin)[n != 1]}" for v, n in counts.items()]))
    return f"{len(rows)} claim{'' if len(rows) == 1 else 's'}: " + "; ".join(parts)


def verdict_sections(build: Build) -> str:
    """Each training chapter's saved verdicts as the book's verdict table, in a collapsed block per chapter,
    then one sentence per reason naming the chapters without verdicts."""
    blocks, without = [], {}  # chapter -> why it shows no verdicts
    for chapter in CHAPTERS:
        summary = _summary(build, chapter)
        rows = (summary or {}).get("verdicts")
        if not rows:
            why = why_missing(build, chapter) if summary is None else "compares no configurations"
            without[chapter] = why
            continue
        try:
            body = verdict_table(rows)
        except ValueError as exc:  # a row its interval contradicts is never shown
            body = f"Its verdicts are not shown: {exc}. Rebuild the chapter."
        blocks.append(f'::: {{.callout-note collapse="true" appearance="simple"}}\n'
                      f"## Chapter {int(chapter[:2])}: {_counts(rows)}\n\nFrom {ref(chapter)}.\n\n{body}\n:::")
    return "\n\n".join(blocks + [" ".join(_grouped("No verdicts", without))] if without else blocks)


def _compared(r: dict) -> tuple[str, str]:
    """A source row's configuration, and what sets the row apart from others of it: the epoch, learning rate or
    layer, from its `experiment` ("std, epoch 1": the part after the configuration) and `lr` fields."""
    detail = str(r.get("experiment") or "").partition(", ")[2]
    rate = f"lr {r['lr']:g}" if isinstance(r.get("lr"), (int, float)) else ""
    return str(r.get("label") or r.get("experiment") or "one configuration"), ", ".join(x for x in (detail, rate) if x)


def source_rows(build: Build) -> tuple[list[dict], list[dict]]:
    """Every chapter's comparisons with a source's single run (`source_verdicts`) as table rows: those of a
    final test accuracy (in %), and those of any other measurement (a layer's mean, in its own units)."""
    accuracies, others = [], []
    for chapter in CHAPTERS:
        for r in (_summary(build, chapter) or {}).get("source_verdicts") or []:
            if check_verdict(r):
                continue  # not a row of stats.versus_source: the chapter's own page says so
            label, detail = _compared(r)
            if r.get("bounds") is not None and list(r["bounds"]) == [0, 1]:  # an accuracy: a fraction
                accuracies.append({"chapter": ref(chapter), "compared": ", ".join(x for x in (label, detail) if x),
                                   "one run of ours would fall in (95%)": "–" if r["low"] is None else
                                   f"{r['low'] * 100:.1f} to {r['high'] * 100:.1f}%",
                                   "the source (one run)": f"{r['source'] * 100:.1f}%", "verdict": r["verdict"]})
            else:
                others.append({"chapter": ref(chapter), "configuration": label, "measured": detail or "–",
                               "one run of ours would fall in (95%)": "–" if r["low"] is None else
                               f"{sci(r['low'], '#.2g')} to {sci(r['high'], '#.2g')}",
                               "the source (one run)": sci(r["source"], "#.2g"), "verdict": r["verdict"]})
    return accuracies, others


def source_table(build: Build) -> str:
    """The source comparisons as two tables: final test accuracies, then other measurements in their own units."""
    accuracies, others = source_rows(build)
    if not accuracies and not others:
        return "_No chapter of this build saved a comparison with a source._"
    return "\n\n".join(([f"**Final test accuracy**\n\n{markdown_table(accuracies)}"] if accuracies else [])
                        + ([f"**Other measurements, in their own units** (not percentages)\n\n{markdown_table(others)}"]
                           if others else []))


# ----------------------------------------------------------------------------- provenance


def _made_by(build: Build, record: dict) -> str:
    """Which run made a page's outputs, relative to this build."""
    if record.get("build_id") == build.build_id:
        return "made by this build"
    if record.get("reused_in") == build.build_id:
        return f"reused unchanged from build {record.get('build_id')}"
    return f"left from build {record.get('build_id')}, which this build did not re-run"


def provenance(build: Build, record_link: str = "@sec-build-record") -> str:
    """One sentence: which build the page's numbers come from, how many files, what is missing, and a link."""
    if build.manifest is None:
        return f"No build's results were found ({build.left_out.get('(all)')}). {record_link} explains the build."
    made = [_made_by(build, f.record).split(" ")[0] for f in build.files.values()]
    parts = [f"{made.count(k)} {what}" for k, what in (("made", "made by it"), ("reused", "reused unchanged from "
             "earlier builds"), ("left", "left from builds before it, which it did not re-run")) if made.count(k)]
    absent = [c for c in CHAPTERS if c not in build.files]
    return (f"These numbers come from the {len(build.files)} results files that build {build.build_id} vouches for"
            + (f" ({', '.join(parts)})" if parts else "") + (f"; {len(absent)} training chapters have none" if absent
                                                               else "")
            + f". {record_link} lists which run made each file, with its parameters, and why any file is left out.")


def _when(iso: str | None) -> str:
    """`2026-12-01T12:05:00+00:00` as `2026-12-01 12:05 UTC`."""
    try:
        return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return "at an unrecorded time"


def record_lines(build: Build, results_link: str = "../results/") -> list[str]:
    """The build record: one Markdown line per page the manifest names (run, time, parameters, results
    file and its hash, data and versions), in the manifest's order."""
    lines = []
    for page, record in ((build.manifest or {}).get("chapters") or {}).items():
        name = ref(page) if page in CHAPTERS else f"`{page}`"
        status = record.get("status")
        if status == "running" and record.get("build_id") == build.build_id:
            lines.append(f"{name}: running in this build when this list was made.")
            continue
        if status != "ok":
            lines.append(f"{name}: {why_missing(build, page)}; its earlier outputs were set aside.")
            continue
        run = record.get("run") or {}
        parts = [f"{_made_by(build, record)}, finished {_when(run.get('finished') or record.get('finished'))} in "
                 f"{record.get('seconds', run.get('seconds', 0)):.1f} s on "
                 f"{run.get('machine', 'an unrecorded machine')}",
                 f"parameters: {run.get('changed') or 'the chapter defaults'}"]
        f = build.files.get(page)
        if f is not None:
            d, v = f.data["dataset"], f.data["versions"]
            parts.append(f"results: [{page}.json]({results_link}{page}.json), SHA-256 "
                         f"`{record['results_sha256'][:12]}…`")
            parts.append((f"data: {_data_title(d.get('name'))}, {d.get('n_train', 0):,} training and "
                          f"{d.get('n_test', 0):,} test images" + (", a stand-in" if d.get("stand_in") else "")
                          if d.get("name") else "no dataset") + f", on {f.data['device']}")
            parts.append(", ".join(f"{k} {v[k]}" for k in ("python", "torch", "lsuvlib") if v.get(k)))
        elif record.get("results_sha256"):
            parts.append(f"results: left out, because the chapter {why_missing(build, page)}")
        else:
            parts.append("saves no results")
        lines.append(f"{name}: " + "; ".join(parts) + ".")
    return lines


def left_out_lines(build: Build) -> list[str]:
    """One line per chapter or file of the results folder that the pages do not read, and why."""
    pages = (build.manifest or {}).get("chapters") or {}
    running = {n for n, r in pages.items() if r.get("status") == "running" and r.get("build_id") == build.build_id}
    return [f"{why}." if name == "(all)" else f"{ref(name) if name in CHAPTERS else f'`{name}`'} "
            f"{why_missing(build, name)}." if name in pages else f"`{name}`: {why}."
            for name, why in build.left_out.items() if name not in running]


def build_sentence(build: Build) -> str:
    """Which build this is: its id, profile, start and state when the page ran."""
    m = build.manifest
    if m is None:
        return f"No build was found: {build.left_out.get('(all)')}."
    state = ("it was still running when this page ran, so pages that run after this one are listed as earlier "
             "builds left them" if m.get("status") == "running" else f"it ended with status {m.get('status')}")
    return f"Build {m['build_id']}, profile {m.get('profile', 'default')}, started {_when(m.get('started'))}; {state}."


def data_links(build: Build, link: str = "../results/") -> str:
    """Links to the manifest, the combined CSV and each results file the pages read."""
    files = "".join(f"\n- [{c}.json]({link}{c}.json)" for c in build.files)
    return (f"- [build.json]({link}build.json): the manifest, the record above as data\n"
            f"- [all-results.csv]({link}all-results.csv): every results file's runs in one table, a row per "
            "chapter, configuration, seed, epoch and phase (written when the build finishes)" + files)
