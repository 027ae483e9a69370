"""lsuvlib.stats (summaries over seeds) and lsuvlib.results (chapter results as JSON and CSV)."""
from __future__ import annotations

import copy
import csv
import json
import math
import random

import pytest
import torch
from scipy import stats as st

from lsuvlib.data import ImageSet
from lsuvlib.experiment import Run
from lsuvlib.results import (FIELDS, HISTORY_KEYS, SCHEMA, Chapter, load_results, markdown_table, stand_in_note,
                             validate_results, write_combined)
from lsuvlib.stats import aggregate, fmt_mean_sd, intervals_overlap, summarise

# ============================================================================= summarise


def test_summarise_known_numbers():
    s = summarise([1, 2, 3, 4, 5])
    assert s["n"] == 5
    assert s["mean"] == 3
    assert s["sd"] == pytest.approx(math.sqrt(2.5), rel=1e-12)
    half = st.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    assert half == pytest.approx(1.963, abs=5e-4)
    assert s["ci_low"] == pytest.approx(3 - half, rel=1e-12) and s["ci_high"] == pytest.approx(3 + half, rel=1e-12)
    assert s["ci_high"] - s["mean"] == pytest.approx(1.9632, abs=1e-4)


def test_summarise_other_confidence_and_order_independence():
    xs = [0.91, 0.93, 0.92, 0.95]
    s95, s90 = summarise(xs), summarise(xs, confidence=0.90)
    assert s90["ci_high"] - s90["ci_low"] < s95["ci_high"] - s95["ci_low"]
    assert s90["ci_high"] - s90["mean"] == pytest.approx(st.t.ppf(0.95, 3) * s90["sd"] / 2)
    shuffled = summarise(list(reversed(xs)))
    assert shuffled["mean"] == pytest.approx(s95["mean"]) and shuffled["sd"] == pytest.approx(s95["sd"])


def test_summarise_accepts_numpy_and_torch_numbers():
    s = summarise(torch.tensor([1.0, 3.0]).tolist())
    assert s["mean"] == 2 and s["sd"] == pytest.approx(math.sqrt(2))
    assert summarise(torch.tensor([1.0, 3.0]))["mean"] == 2


def test_summarise_identical_values_has_zero_width():
    s = summarise([0.5, 0.5, 0.5])
    assert s["sd"] == 0 and s["ci_low"] == s["ci_high"] == 0.5


def test_summarise_one_value_has_nan_spread():
    s = summarise([0.93])
    assert s["n"] == 1 and s["mean"] == 0.93
    assert all(math.isnan(s[k]) for k in ("sd", "ci_low", "ci_high"))


def test_summarise_empty_raises():
    with pytest.raises(ValueError, match="empty"):
        summarise([])


def test_fmt_mean_sd():
    assert fmt_mean_sd(summarise([0.93, 0.95]), scale=100) == "94.0 ± 1.4"
    assert fmt_mean_sd(summarise([0.93]), scale=100, digits=2) == "93.00"
    assert fmt_mean_sd(summarise([1, 2, 3, 4, 5]), digits=3) == "3.000 ± 1.581"


# ============================================================================= aggregate


def rows(accs, phase="eval", losses=None):
    out = []
    for e, a in enumerate(accs):
        out.append(dict(epoch=e, phase="train", loss=9.0, accuracy=0.0, seconds=0.1))
        out.append(dict(epoch=e, phase=phase, loss=(losses or accs)[e], accuracy=a, seconds=0.1))
    return out


def test_aggregate_aligns_epochs_across_runs():
    h1, h2, h3 = rows([0.1, 0.5, 0.9]), rows([0.3, 0.7, 0.8]), rows([0.2, 0.6])  # the last run stopped early
    random.Random(0).shuffle(h2)  # row order must not matter
    agg = aggregate([h1, h2, h3])
    assert agg["epoch"] == [0, 1, 2]
    assert agg["n"] == [3, 3, 2]
    assert agg["mean"] == pytest.approx([0.2, 0.6, 0.85])
    s = summarise([0.9, 0.8])
    assert agg["sd"][2] == pytest.approx(s["sd"])
    assert agg["ci_low"][2] == pytest.approx(s["ci_low"]) and agg["ci_high"][2] == pytest.approx(s["ci_high"])
    assert set(agg) == {"epoch", "n", "mean", "sd", "ci_low", "ci_high"}
    assert all(len(v) == 3 for v in agg.values())


def test_aggregate_phase_and_metric():
    h1 = rows([0.5, 0.6], losses=[2.0, 1.0])
    h2 = rows([0.5, 0.6], losses=[4.0, 3.0])
    assert aggregate([h1, h2], metric="loss")["mean"] == [3.0, 2.0]
    assert aggregate([h1, h2], phase="train")["mean"] == [0.0, 0.0]
    single = aggregate([h1])
    assert single["n"] == [1, 1] and all(math.isnan(v) for v in single["sd"])


def test_aggregate_of_nothing_is_empty():
    assert aggregate([]) == {k: [] for k in ("epoch", "n", "mean", "sd", "ci_low", "ci_high")}


# ============================================================================= intervals_overlap


def ci(lo, hi):
    return dict(ci_low=lo, ci_high=hi)


@pytest.mark.parametrize("a, b, expected", [
    (ci(0.0, 1.0), ci(0.5, 2.0), True),
    (ci(0.0, 1.0), ci(0.2, 0.3), True),      # one inside the other
    (ci(0.0, 1.0), ci(1.0, 2.0), True),      # touching
    (ci(0.0, 1.0), ci(1.01, 2.0), False),
    (ci(2.0, 3.0), ci(0.0, 1.0), False),
    (ci(math.nan, math.nan), ci(5.0, 6.0), True),  # unknown width: cannot call them different
])
def test_intervals_overlap(a, b, expected):
    assert intervals_overlap(a, b) is expected
    assert intervals_overlap(b, a) is expected


def test_intervals_overlap_on_summaries():
    low, high = summarise([0.10, 0.11, 0.12]), summarise([0.90, 0.91, 0.92])
    assert not intervals_overlap(low, high)
    assert intervals_overlap(summarise([0.1, 0.5, 0.9]), summarise([0.4, 0.6, 0.5]))


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
        assert reader.fieldnames == ["chapter", "dataset", "stand_in", "config", "seed", "epoch", "phase", "loss",
                                     "accuracy", "seconds"]
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
        assert list(csv.reader(f)) == [["chapter", "dataset", "stand_in", "config", "seed", *HISTORY_KEYS]]


def test_markdown_table_and_stand_in_note():
    table = markdown_table([dict(a=1, b=0.12345, c=math.nan), dict(a=2, b=1.0, c="x")], headers=["A", "B", "C"])
    assert table.splitlines() == ["| A | B | C |", "|---|---|---|", "| 1 | 0.123 | – |", "| 2 | 1.000 | x |"]
    assert markdown_table([]) == "_(no rows)_"
    ds = tiny_set("fashion_mnist")
    note = stand_in_note(ds, "svhn", "The blog")
    assert "SVHN" in note and "fashion_mnist" in note and "stand-in" in note and "not a reproduction" in note
    assert "the dataset the blog used" in stand_in_note(tiny_set("svhn"), "svhn", "The blog")


def test_saved_runs_are_a_deep_copy_of_plain_data(tmp_path):
    ch = make_chapter(tmp_path)
    before = copy.deepcopy(ch.runs)
    path = ch.save()
    assert json.loads(path.read_text())["runs"] == before


def test_fmt_ci_formats_and_marks_undefined_intervals():
    from lsuvlib.stats import fmt_ci

    assert fmt_ci(summarise([1.0, 2.0, 3.0])) == "-0.484–4.484"
    assert fmt_ci(summarise([1.0])) == "–"  # NaN in memory
    assert fmt_ci(dict(ci_low=None, ci_high=None)) == "–"  # null from a results file
