"""lsuvlib.findings (what the summary, the preface and the build record read) and the cross-chapter figure,
on results files written here and vouched for by a manifest as the build tool writes it."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

from conftest import vouch_for
from history_rows import rows
from lsuvlib import charts, findings
from lsuvlib.data import ImageSet
from lsuvlib.experiment import Run
from lsuvlib.results import Chapter
from lsuvlib.page import sci
from lsuvlib.stats import check_verdict, verdicts

ROOT = Path(__file__).resolve().parent.parent
BUILD = "20261201T120000Z-2"
BLOG_PARAMS = dict(dataset="auto", epochs=3, batch_size=1024, lr=0.2, seed=42, n_seeds=5, device="auto", progress=True)
SEEDS = range(5)


@pytest.fixture(autouse=True)
def inside_a_build(monkeypatch):
    monkeypatch.setenv("LSUV_BUILD_ID", BUILD)


def images(name: str, n_classes: int = 10) -> ImageSet:
    x = torch.zeros(6, 1, 4, 4, dtype=torch.uint8)
    return ImageSet(name, x, torch.zeros(6, dtype=torch.long), x[:3], torch.zeros(3, dtype=torch.long),
                    tuple(str(c) for c in range(n_classes)), source="memory")


def save(folder: Path, chapter: str, finals: dict[str, list], params=None, dataset="fashion_mnist", wanted="svhn",
         **summary) -> Path:
    """A results file whose runs end at `finals[config]` (one per seed; None: the run diverged)."""
    params = dict(BLOG_PARAMS if params is None else params)
    ch = Chapter(chapter, params, folder)
    ch.use_dataset(images(dataset), stand_in_for=wanted)
    epochs = params.get("epochs", 1)
    for config, accs in finals.items():  # a diverged run stops in its first epoch with a NaN loss
        ch.add_runs(config, [Run(s, rows([0.1] * (epochs - 1) + [a]), [1.0], 1.0) if a is not None else
                             Run(s, rows([0.1], losses=[math.nan]), [math.nan], 1.0, "loss above 10 x ln C")
                             for s, a in enumerate(accs)])
    return ch.save(**summary)


def blog_chain(folder: Path, ch3=None, ch6=None, lsuv=(0.82, 0.81, None, 0.83, 0.80)) -> None:
    """Chapters 3 to 6 as the blog ran them (lr 0.2, 3 epochs, 5 seeds) on the Fashion-MNIST stand-in."""
    seeds = len(SEEDS)
    save(folder, "03-baseline", {"baseline": [0.30, 0.32, 0.31, 0.29, 0.33]}, {**BLOG_PARAMS, **(ch3 or {})},
         finding=dict(question="Does the baseline learn at lr 0.2?", answer="It does, in 5 of 5 seeds."),
         configs={"baseline": "baseline CNN, raw inputs"}, verdicts=[], source_verdicts=[])
    save(folder, "04-input-normalisation", {"input_normalisation": [0.50, 0.52, 0.49, 0.51, 0.53]},
         configs={"input_normalisation": "standardised inputs"})
    save(folder, "05-batchnorm-kaiming", {"batchnorm_kaiming": [0.86, 0.87, 0.85, 0.86, 0.88]},
         {**BLOG_PARAMS, "momentum": 0.85, "leak": 0.1, "sub": 0.4},
         configs={"batchnorm_kaiming": "BatchNorm + Kaiming"})
    save(folder, "06-lsuv-callback", {"lsuv_callback": list(lsuv)[:seeds]},
         {**BLOG_PARAMS, "momentum": 0.85, "leak": 0.1, "sub": 0.4, **(ch6 or {})})


def small_and_deep(folder: Path, deep_loop=(None, None, 0.1, None, 0.4)) -> None:
    """Chapter 7 (MNIST, 3 epochs: the notebook's numbers apply) and chapter 8 at depths 5 and 30."""
    p7 = dict(dataset="mnist", epochs=3, batch_size=256, seed=0, n_seeds=5, device="auto", progress=True)
    save(folder, "07-mnist-variants", {"none": [0.90, 0.91, 0.90, 0.92, 0.91], "loop": [0.96, 0.97, 0.96, 0.95, 0.97]},
         p7, dataset="mnist", wanted="mnist", configs={"none": "no LSUV", "loop": "loop"})
    p8 = dict(dataset="fashion_mnist", depths=[5, 30], epochs=1, lr=0.01, batch_size=64, seed=0, n_seeds=5,
              device="auto", progress=True)
    save(folder, "08-depth",
         {"lsuv_loop-depth-5": [0.80, 0.81, 0.82, 0.80, 0.79], "lsuv_loop-depth-30": list(deep_loop)},
         p8, wanted="fashion_mnist", configs={"lsuv_loop-depth-30": "LSUV (loop), 30 layers"})


def built(folder: Path, **records) -> findings.Build:
    vouch_for(folder, BUILD)
    if records:  # e.g. a chapter whose last run failed
        manifest = json.loads((folder / "build.json").read_text())
        manifest["chapters"].update(records)
        (folder / "build.json").write_text(json.dumps(manifest))
    return findings.load(folder)


# ----------------------------------------------------------------------------- answers and what is missing


def test_each_chapter_answers_or_says_plainly_why_it_cannot(tmp_path):
    blog_chain(tmp_path)
    failed = dict(status="failed", build_id=BUILD, error="TypeError: summarise_final() missing 1 argument")
    lines = findings.finding_lines(built(tmp_path, **{"02-lr-finder": failed}))
    assert len(lines) == len(findings.CHAPTERS)
    by = dict(zip(findings.CHAPTERS, lines))
    assert by["03-baseline"] == "@sec-baseline: *Does the baseline learn at lr 0.2?* It does, in 5 of 5 seeds."
    assert by["04-input-normalisation"].endswith("carry no question and answer: rebuild the chapter with its "
                                                 "current notebook.")
    assert by["01-motivation"] == "@sec-motivation: not answered here, because the chapter was not built."
    assert by["02-lr-finder"] == f"@sec-lr-finder: not answered here, because the chapter failed in build {BUILD}."
    assert "TypeError" not in " ".join(lines), "exception text stays out of the prose"


def test_without_a_build_every_part_says_so(tmp_path):
    build = findings.load(tmp_path)
    assert build.manifest is None and findings.accuracy_panels(build) == []
    assert "no build manifest" in findings.finding_lines(build)[0]
    assert "no build manifest" in findings.provenance(build)
    assert findings.figure_text(build).startswith("No chapter of this build saved a trained run")
    assert "could not be compared here" in findings.bottom_line(build, *findings.cross_chapter(build))[0]


def test_a_broken_manifest_is_reported_not_raised(tmp_path):
    (tmp_path / "build.json").write_text("{truncated")
    said = findings.provenance(findings.load(tmp_path))
    assert "the build manifest build.json cannot be read: rebuild the book" in said and "Expecting" not in said


# ----------------------------------------------------------------------------- the cross-chapter figure


def test_panels_count_diverged_runs_at_none_and_mark_the_sources_on_their_own_dataset_only(tmp_path):
    blog_chain(tmp_path)
    small_and_deep(tmp_path)
    panels = {p["chapter"][:2]: p for p in findings.accuracy_panels(built(tmp_path))}
    assert sorted(panels) == ["03", "04", "05", "06", "07", "08"]
    lsuv = panels["06"]["rows"][0]
    assert lsuv["label"] == "lsuv_callback" and lsuv["accuracies"] == [0.82, 0.81, None, 0.83, 0.80]
    assert lsuv["source"] == dict(value=0.799, source="the blog", dataset="SVHN", same_dataset=False)
    assert panels["06"]["title"] == "Ch. 6 · LSUV as a callback · Fashion-MNIST (the blog ran SVHN)"
    loop = panels["07"]["rows"][1]
    assert loop["label"] == "loop" and loop["source"]["value"] == 0.95 and loop["source"]["same_dataset"]
    assert panels["08"]["rows"][0]["source"] is None and panels["08"]["chance"] == 0.1


def test_no_source_mark_after_another_number_of_epochs_than_the_source_trained(tmp_path):
    save(tmp_path, "03-baseline", {"baseline": [0.3, 0.3]}, {**BLOG_PARAMS, "epochs": 1})
    [panel] = findings.accuracy_panels(built(tmp_path))
    assert panel["rows"][0]["source"] is None and "stand-in" not in panel["title"]


def test_the_figure_shows_every_seed_each_diverged_run_at_chance_and_both_kinds_of_source_mark(tmp_path):
    blog_chain(tmp_path)
    small_and_deep(tmp_path)
    build = built(tmp_path)
    panels = findings.accuracy_panels(build)
    fig = charts.final_accuracy_chart(panels)
    [ax] = fig.axes
    assert fig.get_figwidth() == 8.3 > charts.WIDTH and ax.get_xlim() == (0, 100)
    headings = [t.get_text() for t in ax.texts]
    assert headings == [p["title"] for p in panels] and headings[-1] == "Ch. 8 · deep plain networks · Fashion-MNIST"
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[-2:] == ["lsuv_loop-depth-5", "LSUV (loop), 30 layers"] and len(labels) == 8
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    red = [c for c in scatters if len(c.get_facecolor()) and tuple(c.get_facecolor()[0][:3]) == to_rgb("C3")]
    crosses = [xy for c in red for xy in c.get_offsets().tolist()]
    assert sorted(x for x, _ in crosses) == [10.0] * 4, "4 diverged runs, red crosses at chance (10%)"
    assert sum(abs(y - ax.get_yticks()[-1]) < 0.5 for _, y in crosses) == 3, "3 of them in the last row"
    dots = sum(len(c.get_offsets()) for c in scatters)
    assert dots == 4 * 5 + 2 * 5 + 2 * 5 + 6, "every seed, and 6 source marks"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["one seed's run", "diverged, at chance", "chance accuracy", "a source's run",
                      "a source's run, other dataset"]
    assert findings.figure_text(build) == ("The figure shows 40 runs of 8 configurations from 6 chapters; 4 of the "
                                           "runs diverged. Not in it, because the chapter was not built: "
                                           "@sec-motivation and @sec-lr-finder.")


def test_an_empty_build_draws_a_figure_that_says_it_is_empty():
    fig = charts.final_accuracy_chart([])
    assert [t.get_text() for t in fig.axes[0].texts] == ["No chapter of this build saved a trained run."]
    assert fig.axes[0].get_legend() is None


# ----------------------------------------------------------------------------- chapter against chapter


def test_chapters_are_paired_only_when_every_parameter_matches(tmp_path):
    """Issue 21 #4: chapter 3 at lr 0.02 and chapter 4 at lr 0.2 must not be paired."""
    blog_chain(tmp_path, ch3=dict(lr=0.02))
    rows_, not_compared = findings.cross_chapter(built(tmp_path))
    assert [n["claim"] for n in not_compared] == ["ch. 4 standardised inputs > ch. 3 baseline"]
    assert not_compared[0]["why"] == ("chapter 4 and chapter 3 ran with different settings (learning rate: 0.2 "
                                      "against 0.02)")
    assert [r["claim"] for r in rows_] == ["ch. 5 BatchNorm + Kaiming > ch. 4 standardised inputs",
                                           "ch. 6 LSUV > ch. 4 standardised inputs",
                                           "ch. 5 BatchNorm + Kaiming > ch. 6 LSUV"]
    assert all(check_verdict(r) is None and r["m"] == 3 and r["n"] == 5 for r in rows_)
    headline = rows_[-1]
    assert headline["n_diverged_b"] == 1 and headline["n_a_higher"] == 5 and headline["verdict"] == "not resolved"
    assert rows_[0]["verdict"] == "holds" and rows_[0]["effect"] == pytest.approx(35.4)
    table = findings.cross_chapter_table(rows_, not_compared)
    assert table.endswith("\n\n**Not compared:**\n\n- ch. 4 standardised inputs > ch. 3 baseline, because chapter 4 "
                          "and chapter 3 ran with different settings (learning rate: 0.2 against 0.02).")


def test_a_chapter_of_several_configurations_is_named_by_the_one_meant_and_each_pair_says_what_differs(tmp_path):
    blog_chain(tmp_path)
    save(tmp_path, "06-lsuv-callback", {"lsuv_callback": [0.82, 0.81, None, 0.83, 0.80],
                                        "lsuv_callback_stable": [0.85, 0.86, 0.84, 0.85, 0.86]},
         {**BLOG_PARAMS, "momentum": 0.85, "leak": 0.1, "sub": 0.4, "stable_lr": 0.1},
         configs={"lsuv_callback": "blog's rule, lr 0.2", "lsuv_callback_stable": "blog's rule, lr 0.1"})
    build = built(tmp_path)
    rows_, _ = findings.cross_chapter(build)
    assert [r["claim"] for r in rows_][2:] == ["ch. 6 blog's rule, lr 0.2 > ch. 4 standardised inputs",
                                               "ch. 5 BatchNorm + Kaiming > ch. 6 blog's rule, lr 0.2"]
    said = findings.pair_differences(build).splitlines()
    assert len(said) == 4 and said[0] == ("- ch. 4 standardised inputs > ch. 3 baseline: only the inputs, which "
                                          "chapter 4 standardises; network, weights and plain SGD are chapter 3's.")
    assert said[1].startswith("- ch. 5 BatchNorm + Kaiming > ch. 4 standardised inputs: the blog's whole recipe")
    assert "inputs no longer standardised" in said[1] and said[3].endswith("kernels, momentum and inputs are the same.")
    headline = findings.bottom_line(build, *findings.cross_chapter(build))[0]
    assert headline.endswith("At chapter 6's lower rate (“blog's rule, lr 0.1”), none of 5 runs diverged.")


def test_why_two_chapters_are_not_paired_is_said_in_a_readers_words(tmp_path):
    p7 = dict(dataset="mnist", epochs=3, batch_size=256, n_train=None, n_seeds=10, progress=True)
    p8 = dict(dataset="fashion_mnist", epochs=3, batch_size=256, n_train=12000, n_seeds=10, progress=False)
    save(tmp_path, "07-mnist-variants", {"loop": [0.9] * 3}, p7, dataset="mnist", wanted="mnist")
    save(tmp_path, "08-depth", {"lsuv_loop-depth-5": [0.8] * 3}, p8, wanted="fashion_mnist")
    build = built(tmp_path)
    f7, f8 = build.files["07-mnist-variants"], build.files["08-depth"]
    assert findings.why_not_paired(f7, f8) == ("chapter 7 and chapter 8 ran with different settings (dataset: "
                                               "MNIST against Fashion-MNIST; training images: the whole split "
                                               "against 12,000)")
    assert findings.why_not_paired(f7, f7) is None


def test_a_missing_chapter_or_configuration_is_named_as_the_reason(tmp_path):
    blog_chain(tmp_path)
    (tmp_path / "05-batchnorm-kaiming.json").unlink()
    save(tmp_path, "06-lsuv-callback", {"other": [0.5] * 5})
    _, not_compared = findings.cross_chapter(built(tmp_path))
    why = {n["claim"]: n["why"] for n in not_compared}
    assert why["ch. 5 BatchNorm + Kaiming > ch. 4 standardised inputs"] == "chapter 5 was not built"
    assert why["ch. 6 LSUV > ch. 4 standardised inputs"] == "chapter 6 saved no runs of lsuv_callback"


# ----------------------------------------------------------------------------- the bottom line


def test_the_bottom_line_follows_the_verdicts_and_the_parameters_actually_used(tmp_path):
    """Issue 21 #5: the settings in a sentence are the run's (lr 0.5 here), never typed in."""
    six = dict(lr=0.5)
    blog_chain(tmp_path, ch3=six, ch6=six)
    for chapter in ("04-input-normalisation", "05-batchnorm-kaiming"):
        data = json.loads((tmp_path / f"{chapter}.json").read_text())
        data["params"]["lr"] = 0.5
        (tmp_path / f"{chapter}.json").write_text(json.dumps(data))
    small_and_deep(tmp_path)
    build = built(tmp_path)
    headline, deep, tally, missing = findings.bottom_line(build, *findings.cross_chapter(build))
    assert headline.startswith("On the blog's CNN (lr 0.5, 3 epochs, 5 seeds, Fashion-MNIST; @sec-batchnorm-kaiming "
                               "against @sec-lsuv-callback, LSUV by [the blog's rule](glossary.md#lsuv-variants)), "
                               "this build cannot tell BatchNorm with Kaiming weights from LSUV without BatchNorm (")
    assert "0.2" not in headline and headline.endswith(
        "(-41.1 to +79.5 points over 5 seeds). At that rate 1 of 5 runs of LSUV without BatchNorm diverged, each "
        "counted at chance accuracy; in the 4 seeds where both trained, the difference was +5.2 points. The diverged "
        "runs, not the number of seeds, decide this comparison: more seeds would only measure how often a run "
        "diverges at this rate. A measured start does not make a too-high learning rate safe.")
    assert "more seeds are needed" not in headline
    assert deep.startswith("In @sec-mnist-variants (3 epochs, 5 seeds, MNIST) the variant “loop” ended with the "
                           "highest mean test accuracy, 96.2%")
    assert "plain 30-layer networks (lr 0.01, 1 epoch, 5 seeds, Fashion-MNIST) diverged in 3 of 5 runs" in deep
    assert "no guarantee at depth" in deep and "two experiments, not a paired comparison" in deep
    assert tally.startswith("No chapter of this build saved verdicts") and "Of 40 trained runs, 4 diverged" in tally
    assert missing == ("Left out of every point above, because the chapter was not built: @sec-motivation and "
                       "@sec-lr-finder.")


@pytest.mark.parametrize("lsuv, says", [
    ((0.86, 0.87, 0.85, 0.86, 0.88), "tied within ±1 point"),
    ((0.80, 0.82, 0.79, 0.80, 0.83), "BatchNorm with Kaiming weights ended ahead of LSUV without BatchNorm by 5.6"),
    ((0.90, 0.91, 0.89, 0.90, 0.92), "LSUV without BatchNorm ended ahead of BatchNorm with Kaiming weights by 4.0")])
def test_the_bottom_line_changes_with_the_verdict(tmp_path, lsuv, says):
    blog_chain(tmp_path, lsuv=lsuv)
    small_and_deep(tmp_path, deep_loop=(0.7, 0.71, 0.72, 0.7, 0.69))
    build = built(tmp_path)
    headline, deep, *_ = findings.bottom_line(build, *findings.cross_chapter(build))
    assert says in headline and "diverged" not in headline
    assert deep.endswith("in this build it trained at depth too. These are two experiments, not a paired comparison: "
                         "chapter 7 and chapter 8 ran with different settings (batch size: 256 against 64; dataset: "
                         "MNIST against Fashion-MNIST; epochs: 3 against 1).")


def test_a_headline_interval_past_100_points_is_cut_there_and_blames_the_diverged_runs(tmp_path):
    blog_chain(tmp_path, lsuv=(0.82, None, None, None, 0.80))
    build = built(tmp_path)
    rows_, not_compared = findings.cross_chapter(build)
    assert rows_[-1]["ci_high"] > 100 and rows_[-1]["verdict"] == "not resolved"
    headline = findings.bottom_line(build, rows_, not_compared)[0]
    assert f"({rows_[-1]['ci_low']:+.1f} to +100.0 points over 5 seeds)" in headline
    assert "At that rate 3 of 5 runs of LSUV without BatchNorm diverged" in headline
    assert "in the 2 seeds where both trained, the difference was +6.0 points" in headline
    assert "The diverged runs, not the number of seeds, decide this comparison" in headline


# ----------------------------------------------------------------------------- verdicts and provenance


def test_saved_verdicts_show_as_the_books_table_and_a_contradicted_row_is_refused(tmp_path):
    good = verdicts([dict(claim="a > b", a={s: 0.9 + 0.001 * s for s in SEEDS}, b={s: 0.8 for s in SEEDS})])
    bad = [dict(good[0], verdict="reversed")]
    save(tmp_path, "07-mnist-variants", {"loop": [0.9] * 5}, dataset="mnist", wanted="mnist", verdicts=good)
    save(tmp_path, "08-depth", {"x": [0.5] * 5}, verdicts=bad)
    text = findings.verdict_sections(built(tmp_path))
    assert text.count("::: {.callout-note") == 2
    assert "## Chapter 7: 1 claim: of 1 ordering a > b, 1 holds\n\nFrom @sec-mnist-variants." in text
    assert "| a > b | +10.20 |" in text and "[How to read a verdict](reading-verdicts.html)" in text
    assert "Its verdicts are not shown: verdict_table: row 'a > b': verdict 'reversed'" in text
    assert text.endswith("No verdicts, because the chapter was not built: @sec-motivation, @sec-lr-finder, "
                         "@sec-baseline, @sec-input-normalisation, @sec-batchnorm-kaiming and @sec-lsuv-callback.")


def test_ties_and_orderings_are_counted_apart():
    """Item 8 of the review: a claim of no difference that holds is not an ordering that holds."""
    base = {s: 0.9 for s in range(10)}
    near = {s: 0.9 + (0.001 if s % 2 else -0.001) for s in range(10)}
    ahead = {s: 0.95 + 0.001 * s for s in range(10)}
    rows_ = verdicts([dict(claim="a > b", a=ahead, b=base), dict(claim="c > b", a=near, b=base),
                      dict(claim="c ≈ b", a=near, b=base, kind="tie")])
    assert [r["verdict"] for r in rows_] == ["holds", "tie", "holds"]
    assert findings._counts(rows_) == ("3 claims: of 2 orderings a > b, 1 holds and 1 came out level within ±1 point "
                                       "(verdict “tie”); of 1 claim of no difference a ≈ b, 1 holds")


def test_source_rows_only_from_rows_of_versus_source_and_in_their_own_units(tmp_path):
    from lsuvlib.stats import versus_source

    row = dict(versus_source([0.8, 0.82, 0.81], 0.799, same_dataset=False), experiment="lsuv_callback",
               label="the blog's rule", lr=0.2)
    epoch = dict(versus_source([0.9, 0.92, 0.91], 0.93, same_dataset=True), experiment="loop, epoch 1", label="loop")
    mean = dict(versus_source([0.0004, 0.0001, -0.0002], 0.00005, same_dataset=True, bounds=None, max_width=0.2),
                experiment="loop, conv 1 (6 ch): mean after LSUV", label="loop")
    save(tmp_path, "06-lsuv-callback", {"lsuv_callback": [0.8, 0.82, 0.81]}, source_verdicts=[row, {"verdict": "?"}])
    save(tmp_path, "07-mnist-variants", {"loop": [0.9, 0.92, 0.91]}, dataset="mnist", wanted="mnist",
         source_verdicts=[epoch, mean])
    build = built(tmp_path)
    accuracies, others = findings.source_rows(build)
    assert accuracies[0] == {"chapter": "@sec-lsuv-callback", "compared": "the blog's rule, lr 0.2",
                             "one run of ours would fall in (95%)": "76.0 to 86.0%", "the source (one run)": "79.9%",
                             "verdict": "other dataset: no verdict"}
    assert accuracies[1]["compared"] == "loop, epoch 1" and len(accuracies) == 2
    assert others == [{"chapter": "@sec-mnist-variants", "configuration": "loop",
                       "measured": "conv 1 (6 ch): mean after LSUV",
                       "one run of ours would fall in (95%)":
                           f"{sci(mean['low'], '#.2g')} to {sci(mean['high'], '#.2g')}",
                       "the source (one run)": "$5 \\times 10^{-5}$", "verdict": "consistent with the source"}]
    assert "%" not in others[0]["one run of ours would fall in (95%)"]
    table = findings.source_table(build)
    assert table.index("**Final test accuracy**") < table.index("**Other measurements, in their own units**")


def test_the_record_names_the_run_of_every_file_and_every_file_left_out(tmp_path):
    blog_chain(tmp_path)
    reused = tmp_path / "05-batchnorm-kaiming.json"
    reused.write_text(reused.read_text().replace(f'"build": "{BUILD}"', '"build": "20261130T090000Z-7"'))
    vouch_for(tmp_path, BUILD)
    manifest = json.loads((tmp_path / "build.json").read_text())
    manifest["chapters"]["03-baseline"].update(run=dict(changed="epochs = 1 (default 3)", machine="2 CPU cores, no GPU",
                                                        finished="2026-12-01T12:01:00+00:00"), seconds=12.34)
    manifest["chapters"]["05-batchnorm-kaiming"].update(reused_in=BUILD)
    manifest["chapters"]["09-summary"] = dict(status="running", build_id=BUILD)
    manifest["chapters"]["reference"] = dict(status="ok", build_id="20261130T090000Z-7", results_sha256=None)
    (tmp_path / "build.json").write_text(json.dumps(manifest))
    (tmp_path / "03-baseline.old.json").write_text((tmp_path / "03-baseline.json").read_text())
    with open(tmp_path / "04-input-normalisation.json", "a") as f:
        f.write(" ")  # edited after the build vouched for it
    build = findings.load(tmp_path)
    lines = dict(zip(manifest["chapters"], findings.record_lines(build)))
    assert lines["03-baseline"].startswith("@sec-baseline: made by this build, finished 2026-12-01 12:01 UTC in "
                                           "12.3 s on 2 CPU cores, no GPU; parameters: epochs = 1 (default 3); "
                                           "results: [03-baseline.json](../results/03-baseline.json), SHA-256 `")
    assert "data: Fashion-MNIST, 6 training and 3 test images, a stand-in, on cpu" in lines["03-baseline"]
    assert lines["05-batchnorm-kaiming"].startswith("@sec-batchnorm-kaiming: reused unchanged from build "
                                                    "20261130T090000Z-7")
    assert "results: left out, because the chapter is left out: 04-input-normalisation.json was changed after" \
           in lines["04-input-normalisation"]
    assert lines["09-summary"] == "`09-summary`: running in this build when this list was made."
    assert lines["reference"].startswith("`reference`: left from build 20261130T090000Z-7, which this build did not "
                                         "re-run") and lines["reference"].endswith("saves no results.")
    left = findings.left_out_lines(build)
    assert "`03-baseline.old.json`: not named by the build manifest." in left
    assert not any("09-summary" in line for line in left), "the page running now is not left out"
    assert any(line.startswith("@sec-input-normalisation is left out: 04-input-normalisation.json was changed")
               for line in left)
    sentence = findings.provenance(build)
    assert sentence.startswith(f"These numbers come from the 3 results files that build {BUILD} vouches for (2 made "
                               "by it, 1 reused unchanged from earlier builds); 5 training chapters have none.")
    assert sentence.endswith("@sec-build-record lists which run made each file, with its parameters, and why any "
                             "file is left out.")


# ----------------------------------------------------------------------------- the pages themselves

PAGES = ["chapters/09-summary.ipynb", "chapters/build-record.ipynb", "index.ipynb"]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
@pytest.mark.parametrize("full", [True, False], ids=["full", "empty"])
def test_the_page_runs_on_a_build_and_on_no_build(tmp_path, page, full):
    """Each page executes against a build holding every training chapter, and against a folder holding none."""
    import papermill

    if full:
        blog_chain(tmp_path)
        small_and_deep(tmp_path)
        vouch_for(tmp_path, BUILD)
    out = tmp_path / "out.ipynb"
    papermill.execute_notebook(ROOT / page, out, parameters=dict(results_dir=str(tmp_path)), cwd=(ROOT / page).parent,
                               progress_bar=False, kernel_name="python3")
    nb = nbformat.read(out, as_version=4)
    text = " ".join(o.get("data", {}).get("text/markdown", "") for c in nb.cells if c.cell_type == "code"
                    for o in c.outputs)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    for bad in ("None", "nan", "Traceback"):
        assert bad not in text, bad
    assert ("@sec-baseline" in text) if full else ("no build manifest" in text or "No page has been built" in text)
