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
from lsuvlib.results import (FIELDS, HISTORY_KEYS, SCHEMA, STANDALONE, Chapter, load_results, load_with_builds,
                             resolve_results_dir, validate_results, write_combined)

from history_rows import rows


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


def test_chapter_save_writes_valid_json_that_load_results_reads(tmp_path):
    ch = make_chapter(tmp_path)
    path = ch.save(best_config="lsuv", best_acc=0.42, undefined_sd=math.nan)
    assert path == tmp_path / "03-baseline.json" and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["03-baseline.json"]  # no temporary left behind
    data = json.loads(path.read_text())
    validate_results(data)
    assert set(data) == set(FIELDS)
    assert data["schema"] == SCHEMA and data["chapter"] == "03-baseline"
    assert data["params"] == dict(epochs=2, lr=0.1, device="cpu") and data["device"] == "cpu"
    assert data["dataset"] == dict(name="mnist", source="/somewhere/mnist", n_train=5, n_test=2, stand_in=True,
                                   notes=["subset: 5 train / 2 test images"])
    assert set(data["versions"]) >= {"python", "torch", "lsuvlib", "numpy"}
    assert data["summary"]["best_config"] == "lsuv" and data["summary"]["best_acc"] == 0.42
    assert data["summary"]["undefined_sd"] is None  # standard JSON has no NaN: it is written as null
    assert "NaN" not in path.read_text()
    assert [r["seed"] for r in data["runs"]["baseline"]] == [0, 1]
    assert data["runs"]["lsuv"][1]["history"] == rows([0.1 * 2 + 0.01 * 1 + 0.1 * e for e in range(2)])
    assert data["created"].endswith("+00:00")
    assert data["build"] == STANDALONE  # no $LSUV_BUILD_ID: not written by the build tool
    loaded = load_results(tmp_path)
    assert list(loaded) == ["03-baseline"]
    assert loaded["03-baseline"]["runs"] == data["runs"]


def test_chapter_on_its_own_dataset_is_not_a_stand_in(tmp_path):
    ch = make_chapter(tmp_path, name="svhn", stand_in_for="svhn")
    assert ch.dataset["stand_in"] is False
    ch2 = make_chapter(tmp_path, stand_in_for=None)
    assert ch2.dataset["stand_in"] is False


def test_chapter_without_results_dir_validates_but_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert make_chapter(None).save(x=1) is None
    assert list(tmp_path.iterdir()) == []


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


def test_load_results_skips_other_json_and_rejects_invalid_results(tmp_path):
    make_chapter(tmp_path).save()
    (tmp_path / "notes.json").write_text(json.dumps({"hello": "world"}))
    assert list(load_results(tmp_path)) == ["03-baseline"]
    bad = valid_data(tmp_path)
    bad["chapter"] = "04-broken"
    del bad["summary"]
    (tmp_path / "04-broken.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="missing field 'summary'"):
        load_results(tmp_path)


def test_write_combined_has_one_row_per_chapter_config_seed_epoch_phase(tmp_path):
    make_chapter(tmp_path, "03-baseline", configs=("baseline", "lsuv"), seeds=(0, 1, 2), epochs=2).save()
    make_chapter(tmp_path, "07-mnist", configs=("none", "std", "loop"), seeds=(5,), epochs=3, name="mnist",
                 stand_in_for=None).save()
    (tmp_path / "unrelated.json").write_text("{}")
    path = write_combined(tmp_path)
    assert path == tmp_path / "all-results.csv"
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
    assert {r["stand_in"] for r in table if r["chapter"] == "07-mnist"} == {"False"}
    # Writing again replaces the file rather than appending to it.
    write_combined(tmp_path, name="again.csv")
    with open(tmp_path / "again.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == len(table)


def test_write_combined_with_no_results_writes_just_the_header(tmp_path):
    with open(write_combined(tmp_path), newline="") as f:
        assert list(csv.reader(f)) == [["chapter", "build", "dataset", "stand_in", "config", "seed", *HISTORY_KEYS]]


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


# ============================================================================= provenance (issue 10)


def test_save_records_the_build_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LSUV_BUILD_ID", "20261201T120000Z-42")
    data = json.loads(make_chapter(tmp_path).save().read_text())
    assert data["build"] == "20261201T120000Z-42"
    assert "build" in FIELDS


def manifest(results_dir, build_id, chapters):
    (results_dir / "build.json").write_text(json.dumps(
        dict(schema="lsuv-book/build/1", build_id=build_id, started="2026-12-01T12:00:00+00:00", finished=None,
             status="running", profile="smoke", chapters=chapters)))


def test_load_with_builds_tells_the_latest_build_from_earlier_ones(tmp_path, monkeypatch):
    old, new = "20261130T090000Z-1", "20261201T120000Z-2"
    monkeypatch.setenv("LSUV_BUILD_ID", old)
    make_chapter(tmp_path, "03-baseline").save()
    monkeypatch.setenv("LSUV_BUILD_ID", new)
    make_chapter(tmp_path, "04-input-normalisation").save()
    monkeypatch.delenv("LSUV_BUILD_ID")
    make_chapter(tmp_path, "05-batchnorm-kaiming").save()
    record = lambda b, **kw: dict(status="ok", build_id=b, profile="smoke", started="s",  # noqa: E731
                                  finished="2026-12-01T12:05:00+00:00", params=kw)
    manifest(tmp_path, new, {"03-baseline": record(old, epochs=1), "04-input-normalisation": record(new),
                             "05-batchnorm-kaiming": record(new)})
    view = load_with_builds(tmp_path)
    assert view.build_id == new
    assert list(view.latest()) == ["04-input-normalisation"]
    assert sorted(view.earlier()) == ["03-baseline", "05-batchnorm-kaiming"]
    base = view.files["03-baseline"]
    assert base.build_id == old and base.build["params"] == {"epochs": 1} and not base.latest
    assert base.label == f"build {old} (profile smoke, finished 2026-12-01T12:05:00+00:00)"
    assert base.path == tmp_path / "03-baseline.json"
    standalone = view.files["05-batchnorm-kaiming"]
    assert standalone.build == {} and standalone.label.startswith("a run outside the build tool (")
    assert "build.json" not in {f.path.name for f in view.files.values()}


def test_load_with_builds_without_a_manifest_marks_nothing_latest(tmp_path):
    make_chapter(tmp_path).save()
    view = load_with_builds(tmp_path)
    assert view.build is None and view.latest() == {} and list(view.earlier()) == ["03-baseline"]


def test_a_truncated_results_file_is_named(tmp_path):
    path = make_chapter(tmp_path).save()
    path.write_text(path.read_text()[:200])
    with pytest.raises(ValueError, match=f"results file {path} cannot be read .*truncated or corrupt"):
        load_results(tmp_path)


def test_a_results_file_of_an_older_schema_is_named(tmp_path):
    path = make_chapter(tmp_path).save()
    data = json.loads(path.read_text())
    data["schema"] = "lsuv-book/results/1"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"results file {path} has schema 'lsuv-book/results/1'.*rebuild chapter"):
        load_results(tmp_path)


def test_an_invalid_results_file_is_named(tmp_path):
    path = make_chapter(tmp_path).save()
    data = json.loads(path.read_text())
    del data["summary"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=f"results file {path}: invalid results: missing field 'summary'"):
        load_results(tmp_path)


def test_the_notebooks_default_results_dir_does_not_depend_on_the_cwd(tmp_path, monkeypatch):
    """Issue 10: `papermill chapters/03-baseline.ipynb out.ipynb` from the project root wrote outside it."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    assert resolve_results_dir("../_build/results") == root / "_build" / "results"
    assert Chapter("03-baseline", dict(device="cpu"), "../_build/results").results_dir == root / "_build/results"
    assert resolve_results_dir(tmp_path / "r") == tmp_path / "r"


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
    loaded = load_results(tmp_path)
    assert loaded["03-baseline"]["summary"]["verdicts"][2]["ci_low"] is None
    assert verdict_problems(loaded) == []
    loaded["03-baseline"]["summary"]["verdicts"][0]["verdict"] = "reversed"
    assert verdict_problems(loaded) == ["03-baseline: a > b: verdict 'reversed', but its interval gives "
                                        f"{rows_[0]['verdict']!r}"]


def test_every_verdict_of_the_build_agrees_with_its_interval():
    """Issue 18: over every results file of the last build (`_build/results`, or `$LSUV_RESULTS_DIR`)."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("LSUV_RESULTS_DIR") or Path(__file__).resolve().parent.parent / "_build" / "results")
    results = load_results(folder)
    if not results:
        pytest.skip(f"no results files in {folder}: build the book first (make book), or set LSUV_RESULTS_DIR")
    assert not verdict_problems(results), "\n".join(verdict_problems(results))
