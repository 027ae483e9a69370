"""lsuvlib.results (chapter results as JSON and CSV) and the verdicts they carry; the stats tests are in
tests/test_stats.py."""
from __future__ import annotations

import copy
import csv
import json
import math

import pytest
import torch

from lsuvlib.data import ImageSet
from lsuvlib.experiment import Run
from lsuvlib.page import markdown_table, stand_in_note
from lsuvlib.results import (FIELDS, HISTORY_KEYS, MANIFEST_SCHEMA, SCHEMA, Chapter, ResultsFile, comparable,
                             file_sha256, load_build, read_results, runs_from, validate_results, write_combined)

from history_rows import rows

BUILD = "20261201T120000Z-2"


@pytest.fixture(autouse=True)
def inside_a_build(monkeypatch):
    """Saves here are a build's, unless a test says otherwise (a standalone save goes elsewhere)."""
    monkeypatch.setenv("LSUV_BUILD_ID", BUILD)


def write_manifest(results_dir, chapters, build_id=BUILD, **records):
    """A manifest vouching for each named chapter's file as it is now."""
    (results_dir / "build.json").write_text(json.dumps(dict(
        schema=MANIFEST_SCHEMA, build_id=build_id, started="2026-12-01T12:00:00+00:00", status="finished",
        profile="smoke", chapters={c: dict(status="ok", build_id=json.loads((results_dir / f"{c}.json").read_text())["build"],
                                           results_sha256=file_sha256(results_dir / f"{c}.json"),
                                           finished="2026-12-01T12:05:00+00:00", **records.get(c, {}))
                                   for c in chapters})))


# ============================================================================= Chapter / results files


def fake_run(seed, accs, stopped=None):
    return Run(seed=seed, history=rows(accs), batch_losses=[1.0, 0.5], seconds=1.5, stopped=stopped)


def tiny_set(name="mnist", notes=()):
    x = torch.zeros(5, 1, 4, 4, dtype=torch.uint8)
    return ImageSet(name, x, torch.zeros(5, dtype=torch.long), x[:2], torch.zeros(2, dtype=torch.long),
                    tuple("0123456789"), source="/somewhere/mnist", notes=list(notes))


def make_chapter(results_dir, chapter="03-baseline", configs=("baseline", "lsuv"), seeds=(0, 1), epochs=2,
                 name="mnist", stand_in_for="svhn"):
    ch = Chapter(chapter, dict(epochs=epochs, lr=0.1, device="cpu"), results_dir)
    ch.use_dataset(tiny_set(name, notes=["subset: 5 train / 2 test images"]), stand_in_for=stand_in_for)
    for c, config in enumerate(configs):
        ch.add_runs(config, [fake_run(s, [0.1 * (c + 1) + 0.01 * s + 0.1 * e for e in range(epochs)]) for s in seeds])
    return ch


def test_chapter_save_writes_valid_json_that_load_build_reads(tmp_path):
    ch = make_chapter(tmp_path)
    path = ch.save(best_config="lsuv", best_acc=0.42, undefined_sd=math.nan)
    assert path == tmp_path / "03-baseline.json" and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["03-baseline.json"]  # no temporary left behind
    data = json.loads(path.read_text())
    validate_results(data)
    assert set(data) == set(FIELDS)
    assert data["schema"] == SCHEMA and data["chapter"] == "03-baseline"
    assert data["params"] == dict(epochs=2, lr=0.1, device="cpu") and data["device"] == "cpu"
    assert data["dataset"] == dict(name="mnist", source="/somewhere/mnist", n_train=5, n_test=2, n_classes=10,
                                   stand_in=True, notes=["subset: 5 train / 2 test images"])
    assert set(data["versions"]) >= {"python", "torch", "lsuvlib", "numpy"}
    assert data["summary"]["best_config"] == "lsuv" and data["summary"]["best_acc"] == 0.42
    assert data["summary"]["undefined_sd"] is None  # standard JSON has no NaN: it is written as null
    assert "NaN" not in path.read_text()
    assert [r["seed"] for r in data["runs"]["baseline"]] == [0, 1]
    assert data["runs"]["lsuv"][1]["history"] == rows([0.1 * 2 + 0.01 * 1 + 0.1 * e for e in range(2)])
    assert data["created"].endswith("+00:00")
    assert data["build"] == BUILD
    write_manifest(tmp_path, ["03-baseline"])
    assert load_build(tmp_path).files["03-baseline"].data["runs"] == data["runs"]


def test_chapter_on_its_own_dataset_is_not_a_stand_in(tmp_path):
    ch = make_chapter(tmp_path, name="svhn", stand_in_for="svhn")
    assert ch.dataset["stand_in"] is False
    ch2 = make_chapter(tmp_path, stand_in_for=None)
    assert ch2.dataset["stand_in"] is False


def test_a_save_outside_a_build_goes_apart_from_the_builds_results_and_says_where(tmp_path, monkeypatch):
    """Issue 21 #1: a standalone papermill run replaced the build's results file."""
    monkeypatch.delenv("LSUV_BUILD_ID")
    project = tmp_path / "book"
    (project / "chapters").mkdir(parents=True)
    (project / "_quarto.yml").write_text("book: {}\n")
    monkeypatch.chdir(project / "chapters")  # as Jupyter starts a notebook's kernel
    with pytest.warns(UserWarning, match="not part of a book build, so its results were saved apart"):
        path = make_chapter(None).save(x=1)
    assert path.parent == project / "_build" / "standalone" and path.name.startswith("03-baseline-")
    monkeypatch.chdir(tmp_path)  # outside any project
    with pytest.warns(UserWarning):
        assert make_chapter(None).save().parent == tmp_path / "lsuv-results"
    build_results = project / "_build" / "results"
    build_results.mkdir()
    (build_results / "build.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a book build's results, and this run is not part of that build"):
        make_chapter(build_results).save()


def test_chapter_save_serialises_tensors_in_the_summary(tmp_path):
    path = make_chapter(tmp_path).save(curve=torch.tensor([0.5, 0.25]))
    assert json.loads(path.read_text())["summary"]["curve"] == [0.5, 0.25]


def test_chapter_save_writes_non_finite_numbers_in_runs_as_null(tmp_path):
    ch = make_chapter(tmp_path, configs=("diverged",), seeds=(0,), epochs=1)
    ch.runs["diverged"][0]["history"][0]["loss"] = math.inf
    data = json.loads(ch.save().read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    assert data["runs"]["diverged"][0]["history"][0]["loss"] is None


def test_chapter_save_writes_nan_inside_a_tensor_as_null(tmp_path):
    path = make_chapter(tmp_path).save(curve=torch.tensor([math.nan, 0.5]))
    assert json.loads(path.read_text())["summary"]["curve"] == [None, 0.5]


def valid_data(tmp_path):
    return json.loads(make_chapter(tmp_path).save().read_text())


@pytest.mark.parametrize("field", sorted(FIELDS))
def test_validate_rejects_a_missing_field(tmp_path, field):
    data = valid_data(tmp_path)
    del data[field]
    with pytest.raises(ValueError, match=f"missing field '{field}'"):
        validate_results(data)


def test_validate_rejects_unknown_fields_and_lists_every_problem(tmp_path):
    data = valid_data(tmp_path)
    data["colour"] = "blue"
    data["extra"] = 1
    del data["device"]
    with pytest.raises(ValueError) as err:
        validate_results(data)
    msg = str(err.value)
    assert "unknown field 'colour'" in msg and "unknown field 'extra'" in msg and "missing field 'device'" in msg


def test_validate_rejects_another_schema(tmp_path):
    data = valid_data(tmp_path)
    data["schema"] = "lsuv-book/results/0"
    with pytest.raises(ValueError, match="schema is 'lsuv-book/results/0'"):
        validate_results(data)


@pytest.mark.parametrize("missing", HISTORY_KEYS)
def test_validate_rejects_a_malformed_history_row(tmp_path, missing):
    data = valid_data(tmp_path)
    del data["runs"]["lsuv"][1]["history"][2][missing]
    with pytest.raises(ValueError) as err:
        validate_results(data)
    msg = str(err.value)
    assert "history row" in msg and "'lsuv'" in msg and "seed 1" in msg and missing in msg


@pytest.mark.parametrize("key", ["seed", "history"])
def test_validate_rejects_a_run_without_seed_or_history(tmp_path, key):
    data = valid_data(tmp_path)
    del data["runs"]["baseline"][0][key]
    with pytest.raises(ValueError, match="a run of 'baseline' is not a mapping with 'seed' and 'history'"):
        validate_results(data)


def test_validate_rejects_runs_that_are_not_lists(tmp_path):
    data = valid_data(tmp_path)
    data["runs"]["baseline"] = {"seed": 0}
    with pytest.raises(ValueError, match=r"runs\['baseline'\] is not a list"):
        validate_results(data)


@pytest.mark.parametrize("where", ["row", "history", "run"])
def test_validate_reports_non_dict_entries_as_value_errors(tmp_path, where):
    data = valid_data(tmp_path)
    if where == "row":
        data["runs"]["lsuv"][0]["history"][0] = None
    elif where == "history":
        data["runs"]["lsuv"][0]["history"] = None
    else:
        data["runs"]["lsuv"][0] = 7
    with pytest.raises(ValueError, match="lsuv"):
        validate_results(data)


def test_write_combined_has_one_row_per_chapter_config_seed_epoch_phase(tmp_path):
    make_chapter(tmp_path, "03-baseline", configs=("baseline", "lsuv"), seeds=(0, 1, 2), epochs=2).save()
    make_chapter(tmp_path, "07-mnist", configs=("none", "std", "loop"), seeds=(5,), epochs=3, name="mnist",
                 stand_in_for=None).save()
    write_manifest(tmp_path, ["03-baseline", "07-mnist"])
    path = write_combined(load_build(tmp_path), tmp_path / "all-results.csv")
    assert not list(tmp_path.glob("*.tmp"))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["chapter", "build", "dataset", "stand_in", "config", "seed", "epoch", "phase",
                                     "loss", "accuracy", "seconds"]
        table = list(reader)
    assert len(table) == 2 * 3 * 2 * 2 + 3 * 1 * 3 * 2  # configs x seeds x epochs x phases, per chapter
    keys = [(r["chapter"], r["config"], r["seed"], r["epoch"], r["phase"]) for r in table]
    assert len(set(keys)) == len(keys)
    row = next(r for r in table if r["chapter"] == "03-baseline" and r["config"] == "lsuv" and r["seed"] == "2"
               and r["epoch"] == "1" and r["phase"] == "eval")
    assert float(row["accuracy"]) == pytest.approx(0.2 + 0.02 + 0.1)
    assert row["dataset"] == "mnist" and row["stand_in"] == "True"


def test_markdown_table_and_stand_in_note():
    table = markdown_table([dict(a=1, b=0.12345, c=math.nan), dict(a=2, b=1.0, c="x")], headers=["A", "B", "C"])
    assert table.splitlines() == ["| A | B | C |", "|---|---|---|", "| 1 | 0.123 | – |", "| 2 | 1.000 | x |"]
    assert markdown_table([]) == "_(no rows)_"
    ds = tiny_set("fashion_mnist")
    note = stand_in_note(ds, "svhn", "The blog")
    assert "SVHN" in note and "Fashion-MNIST" in note and "stand-in" in note and "not a reproduction" in note
    assert "the dataset the blog used" in stand_in_note(tiny_set("svhn"), "svhn", "The blog")


def test_saved_runs_are_a_deep_copy_of_plain_data(tmp_path):
    ch = make_chapter(tmp_path)
    before = copy.deepcopy(ch.runs)
    path = ch.save()
    assert json.loads(path.read_text())["runs"] == before


# ============================================================================= provenance (issues 10, 21)


def test_load_build_reads_exactly_the_files_the_manifest_names(tmp_path):
    """Issue 21 #2: a backup copy beside the real file won, because the later name was read last."""
    make_chapter(tmp_path).save()
    write_manifest(tmp_path, ["03-baseline"])
    copy = json.loads((tmp_path / "03-baseline.json").read_text())
    copy["summary"] = {"stale": True}
    (tmp_path / "03-baseline.old.json").write_text(json.dumps(copy))
    build = load_build(tmp_path)
    assert build.files["03-baseline"].data["summary"] == {} and build.build_id == BUILD
    assert build.left_out == {"03-baseline.old.json": "not named by the build manifest"}


def test_an_edited_results_file_is_left_out_with_the_reason(tmp_path):
    """Issue 21 #3: one seed's accuracy changed by hand went unnoticed and was published as the build's."""
    path = make_chapter(tmp_path).save()
    write_manifest(tmp_path, ["03-baseline"])
    path.write_text(path.read_text().replace('"accuracy": 0.1', '"accuracy": 0.9', 1))
    build = load_build(tmp_path)
    assert build.files == {}
    assert build.left_out["03-baseline"] == f"03-baseline.json was changed after build {BUILD} wrote it"


def test_failed_and_missing_chapters_are_left_out_with_their_reason(tmp_path):
    make_chapter(tmp_path).save()
    write_manifest(tmp_path, ["03-baseline"])
    manifest = json.loads((tmp_path / "build.json").read_text())
    manifest["chapters"]["04-x"] = dict(status="failed", build_id=BUILD, error="ValueError: no")
    manifest["chapters"]["05-y"] = dict(status="ok", build_id=BUILD, results_sha256="0" * 64)
    (tmp_path / "build.json").write_text(json.dumps(manifest))
    left = load_build(tmp_path).left_out
    assert left == {"04-x": "its last run failed: ValueError: no", "05-y": "05-y.json is missing"}
    assert "no build manifest" in load_build(tmp_path / "nowhere").left_out["(all)"]


def test_a_broken_results_file_is_named_with_the_fix(tmp_path):
    path = make_chapter(tmp_path).save()
    path.write_text(path.read_text()[:200])
    with pytest.raises(ValueError, match="results file 03-baseline.json cannot be read .*rebuild chapter 03-baseline"):
        read_results(path)
    data = valid_data(tmp_path)
    del data["summary"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="03-baseline.json: invalid results: missing field 'summary'; rebuild"):
        read_results(path)


def results_file(chapter, dataset="fashion_mnist", **params):
    base = dict(dataset="auto", epochs=3, batch_size=1024, lr=0.2, seed=42, n_seeds=5, device="auto", progress=True)
    return ResultsFile(chapter, dict(params={**base, **params}, dataset=dict(name=dataset, n_train=60000, n_test=10000)),
                       {})


def test_chapters_are_paired_only_when_every_parameter_but_the_compared_one_matches():
    """Issue 21 #4: the summary paired chapter 4 (lr 0.2) with chapter 3 (lr 0.02): `lr` was not in its list."""
    a, b = results_file("03-baseline", lr=0.02), results_file("04-input-normalisation")
    assert comparable(a, b) == "03-baseline and 04-input-normalisation ran with different lr (0.02 against 0.2)"
    assert comparable(a, b, about=["lr"]) is None
    assert comparable(results_file("03-x", progress=False), results_file("04-y")) is None, "progress changes no number"
    assert comparable(results_file("03-x"), results_file("04-y", dataset="mnist")) == "03-x and 04-y ran on different data"


def test_runs_from_another_chapter_only_when_trained_the_same_way(tmp_path):
    ch3 = make_chapter(tmp_path, "03-baseline", configs=("baseline",), seeds=(0, 1))
    ch3.save()
    write_manifest(tmp_path, ["03-baseline"])
    ch4 = make_chapter(tmp_path, "04-input-normalisation", configs=("standardised",), seeds=(0, 1))
    runs, why = runs_from(ch4, "03-baseline", "baseline", [0, 1])
    assert [r["seed"] for r in runs] == [0, 1] and why.startswith("03-baseline, build ")
    assert runs_from(ch4, "03-baseline", "baseline", [0, 1, 2]) == (None, "03-baseline's runs have other seeds")
    ch4.params["lr"] = 0.5
    assert runs_from(ch4, "03-baseline", "baseline", [0, 1])[1] == \
        "03-baseline and 04-input-normalisation ran with different lr (0.1 against 0.5)"


def test_saved_results_are_world_readable(tmp_path):
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert make_chapter(tmp_path).save().stat().st_mode & 0o777 == 0o644 & ~mask


# ============================================================================= verdicts in results files (issue 18)


def verdict_problems(results: dict) -> list[str]:
    """`stats.check_verdict` over every verdict row of every chapter's results, as `chapter: claim: problem`."""
    from lsuvlib.stats import check_verdict

    return [f"{chapter}: {row.get('claim', row.get('verdict'))}: {problem}"
            for chapter, data in results.items()
            for key in ("verdicts", "source_verdicts") for row in data["summary"].get(key) or []
            if (problem := check_verdict(row))]


def test_verdict_rows_keep_their_check_through_a_results_file(tmp_path):
    from lsuvlib.stats import verdicts, versus_source

    a = {s: 0.9 + 0.003 * s for s in range(5)}
    b = {s: 0.89 + 0.001 * (s % 2) if s else None for s in range(5)}
    rows_ = verdicts([dict(claim="a > b", a=a, b=b), dict(claim="a ≈ b", a=a, b=b, kind="tie"),
                      dict(claim="a > b, 2 seeds", a={0: 0.9, 1: 0.8}, b={0: 0.7, 1: 0.6})], chance=0.1)
    sources = [versus_source(list(a.values()), 0.91, same_dataset=True),
               versus_source(list(a.values()), 0.91, same_dataset=False)]
    make_chapter(tmp_path).save(verdicts=rows_, source_verdicts=sources)
    loaded = {"03-baseline": read_results(tmp_path / "03-baseline.json")}
    assert loaded["03-baseline"]["summary"]["verdicts"][2]["ci_low"] is None
    assert verdict_problems(loaded) == []
    loaded["03-baseline"]["summary"]["verdicts"][0]["verdict"] = "reversed"
    assert verdict_problems(loaded) == ["03-baseline: a > b: verdict 'reversed', but its interval gives "
                                        f"{rows_[0]['verdict']!r}"]
