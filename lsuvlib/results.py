"""Chapter results as data: each chapter's JSON file, read back only through the build's manifest.

A chapter collects its runs in a `Chapter` and saves them as `<results_dir>/<chapter>.json`, with
the fields in `FIELDS`. Inside a build, `tools/build_book.py` passes `results_dir` and
`$LSUV_BUILD_ID`, and records each file with its SHA-256 in `build.json`, the manifest. A run
outside a build (Jupyter, papermill) never writes into a build's results: it saves to
`_build/standalone/` in the project it was started from (or `./lsuv-results/` outside one), under
a name with the time, and warns where the file went.

Pages that read other chapters' results call `load_build`: it returns exactly the files the
manifest names, each checked against its hash, and says why any other file is left out.
"""
from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .atomic import atomic_open
from .data import ImageSet
from .runtime import default_device, versions

SCHEMA = "lsuv-book/results/2"
MANIFEST_SCHEMA = "lsuv-book/build/2"  # 2: per-chapter keys, results hashes, reuse
BUILD_MANIFEST = "build.json"
BUILD_ENV = "LSUV_BUILD_ID"
STANDALONE = "standalone"  # the build id of a run outside tools/build_book.py
FIELDS = {
    "schema": "format identifier, always " + SCHEMA,
    "chapter": "chapter id, e.g. '03-baseline'",
    "created": "UTC time the file was written, ISO 8601",
    "build": f"id of the build that wrote the file (${BUILD_ENV}), or '{STANDALONE}' outside a build",
    "params": "the chapter's parameters as the run used them",
    "dataset": "name, source, n_train, n_test, stand_in (true when it replaces the source's dataset)",
    "device": "torch device the run used",
    "versions": "python, torch, lsuvlib, numpy, platform, cuda",
    "runs": "configuration name -> list of per-seed runs (seed, history rows, seconds, stopped, ...)",
    "summary": "numbers the chapter's prose quotes, computed from the runs",
}
HISTORY_KEYS = ("epoch", "phase", "loss", "accuracy", "seconds")
NOT_RESULTS = ("progress", "results_dir")  # parameters that do not change a run's numbers


def current_build_id() -> str:
    """The id of the build running this code (`$LSUV_BUILD_ID`), else `"standalone"`."""
    return os.environ.get(BUILD_ENV) or STANDALONE


def find_project(start: str | os.PathLike | None = None) -> Path | None:
    """The book project holding `start` (default: the current folder): the nearest folder with a `_quarto.yml`."""
    here = Path(start or Path.cwd()).resolve()
    return next((p for p in (here, *here.parents) if (p / "_quarto.yml").is_file()), None)


def build_results_dir(results_dir: str | os.PathLike | None = None) -> Path:
    """The results folder a page reads: `results_dir` if given, else the project's `_build/results`."""
    if results_dir is not None:
        return Path(results_dir).expanduser().resolve()
    project = find_project()
    if project is None:
        raise ValueError("no book project above the current folder, so no build results to read: "
                         "start from inside the project, or pass results_dir")
    return project / "_build" / "results"


def file_sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Chapter:
    """A chapter's parameters, dataset and runs, saved as one JSON file."""

    def __init__(self, chapter: str, params: dict, results_dir: str | os.PathLike | None = None):
        self.chapter, self.params = chapter, dict(params)
        self.results_dir = Path(results_dir).expanduser().resolve() if results_dir is not None else None
        self.dataset: dict = {}
        self.runs: dict[str, list[dict]] = {}
        self.device = str(default_device(params.get("device", "auto")))

    def use_dataset(self, ds: ImageSet, stand_in_for: str | None = None) -> None:
        self.dataset = dict(name=ds.name, source=ds.source, n_train=len(ds.x_train), n_test=len(ds.x_test),
                            n_classes=len(ds.classes), stand_in=bool(stand_in_for and ds.name != stand_in_for),
                            notes=list(ds.notes))

    def add_runs(self, config: str, runs: Iterable) -> None:
        self.runs[config] = [r.to_dict() for r in runs]

    def target(self) -> Path:
        """Where `save` writes: the build's folder inside a build, else a standalone file apart from it."""
        if current_build_id() != STANDALONE and self.results_dir is not None:
            return self.results_dir / f"{self.chapter}.json"
        if self.results_dir is not None and (self.results_dir / BUILD_MANIFEST).exists():
            raise ValueError(f"{self.results_dir} holds a book build's results, and this run is not part of that "
                             "build: leave results_dir unset (the run then saves apart, under _build/standalone/)")
        stamp = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}"
        project = find_project()
        folder = self.results_dir or (project / "_build" / "standalone" if project else Path.cwd() / "lsuv-results")
        return folder / f"{self.chapter}-{stamp}.json"

    def save(self, **summary) -> Path:
        """Write the results file atomically and return its path (outside a build, with a warning naming it)."""
        data = dict(schema=SCHEMA, chapter=self.chapter, created=dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"), build=current_build_id(), params=self.params, dataset=self.dataset,
            device=self.device, versions=versions(), runs=self.runs, summary=summary)
        validate_results(data)
        path = self.target()
        with atomic_open(path) as f:
            f.write(json.dumps(_finite_or_null(data), indent=1, default=_jsonable, allow_nan=False))
        if data["build"] == STANDALONE:
            warnings.warn(f"This run is not part of a book build, so its results were saved apart from the "
                          f"build's, to {path}.", stacklevel=2)
        return path


def _finite_or_null(o):
    """NaN and infinity become `null`: standard JSON has no spelling for them."""
    if hasattr(o, "tolist"):  # tensors and arrays
        return _finite_or_null(o.tolist())
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite_or_null(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite_or_null(v) for v in o]
    return o


def _jsonable(o):
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def validate_results(data: dict) -> None:
    """Raise `ValueError` naming every way `data` departs from the documented fields."""
    problems = [f"missing field {k!r}" for k in FIELDS if k not in data]
    problems += [f"unknown field {k!r}" for k in data if k not in FIELDS]
    if data.get("schema", SCHEMA) != SCHEMA:
        problems.append(f"schema is {data.get('schema')!r}, expected {SCHEMA!r}")
    runs = data.get("runs") or {}
    if not isinstance(runs, dict):
        problems.append("runs is not a mapping of configuration name to runs")
        runs = {}
    for config, config_runs in runs.items():
        if not isinstance(config_runs, list):
            problems.append(f"runs[{config!r}] is not a list")
            continue
        for run in config_runs:
            if not isinstance(run, dict) or "seed" not in run or "history" not in run:
                problems.append(f"a run of {config!r} is not a mapping with 'seed' and 'history'")
            elif not isinstance(run["history"], list) or not all(isinstance(r, dict) for r in run["history"]):
                problems.append(f"the history of {config!r} (seed {run['seed']}) is not a list of rows")
            else:
                for row in run["history"]:
                    missing = [k for k in HISTORY_KEYS if k not in row]
                    if missing:
                        problems.append(f"a history row of {config!r} (seed {run['seed']}) lacks {', '.join(missing)}")
                        break
    if problems:
        raise ValueError("invalid results: " + "; ".join(problems))


def read_results(path: str | os.PathLike) -> dict:
    """One results file's data; a `ValueError` naming the file and the fix when it is broken."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"results file {path.name} cannot be read ({exc}): rebuild chapter {path.stem}") from None
    try:
        validate_results(data if isinstance(data, dict) else {})
    except ValueError as exc:
        raise ValueError(f"results file {path.name}: {exc}; rebuild chapter {path.stem}") from None
    return data


def read_manifest(results_dir: str | os.PathLike) -> dict | None:
    """The build manifest `<results_dir>/build.json`, or None when there is none."""
    path = Path(results_dir) / BUILD_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"the build manifest {path.name} cannot be read ({exc}): rebuild the book") from None
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise ValueError(f"{path.name} is not a build manifest of schema {MANIFEST_SCHEMA!r}: rebuild the book")
    return manifest


@dataclass(frozen=True)
class ResultsFile:
    """One chapter's results, with the manifest's record of the run that made them."""

    chapter: str
    data: dict
    record: dict  # build_id, params, changed, run (seconds, finished, machine), reused_in, ...

    @property
    def params(self) -> dict:
        return self.data["params"]

    @property
    def label(self) -> str:
        """Which run made the file, e.g. "build 20261201T185000Z-42 (finished ...; reused in build ...)"."""
        reused = f"; reused unchanged in build {self.record['reused_in']}" if self.record.get("reused_in") else ""
        return f"build {self.record['build_id']} (finished {self.record.get('finished', '?')}{reused})"


@dataclass
class Build:
    """What `load_build` returns: the manifest, the files it vouches for, and why others are out."""

    manifest: dict | None
    files: dict[str, ResultsFile] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)  # chapter or file name -> why it is not used

    @property
    def build_id(self) -> str | None:
        return self.manifest["build_id"] if self.manifest else None


def load_build(results_dir: str | os.PathLike | None = None) -> Build:
    """The results files the build manifest names, each checked against the hash it recorded.

    A file the manifest does not name (a backup copy, a standalone run's) is left out, and so is
    one whose hash or build id no longer matches the manifest (edited or replaced after the build).
    Only chapters whose last run succeeded count; `left_out` says why each other one is missing.
    """
    folder = build_results_dir(results_dir)
    manifest = read_manifest(folder)
    out = Build(manifest)
    if manifest is None:
        out.left_out["(all)"] = f"no build manifest in {folder.name}/: build the book with tools/build_book.py"
        return out
    for chapter, record in manifest.get("chapters", {}).items():
        path = folder / f"{chapter}.json"
        if record.get("status") != "ok":
            out.left_out[chapter] = f"its last run {record.get('status')}: {record.get('error', 'see the build output')}"
        elif record.get("results_sha256") is None:
            continue  # a page that saves no results
        elif not path.is_file():
            out.left_out[chapter] = f"{path.name} is missing"
        elif file_sha256(path) != record["results_sha256"]:
            out.left_out[chapter] = f"{path.name} was changed after build {record['build_id']} wrote it"
        else:
            data = read_results(path)
            if data["build"] != record["build_id"]:
                out.left_out[chapter] = f"{path.name} comes from {data['build']}, not build {record['build_id']}"
            else:
                out.files[chapter] = ResultsFile(chapter, data, record)
    named = {f"{c}.json" for c in manifest.get("chapters", {})}
    for path in sorted(folder.glob("*.json")):
        if path.name not in named and path.name != BUILD_MANIFEST:
            out.left_out[path.name] = "not named by the build manifest"
    return out


def comparable(a: ResultsFile, b: ResultsFile, about: Iterable[str] = ()) -> str | None:
    """Why runs of two chapters cannot be paired seed by seed, or None when they can.

    Every parameter both chapters have must match, except those the comparison is `about`
    (and `NOT_RESULTS`), and so must the data.
    """
    skip = set(about) | set(NOT_RESULTS)
    differ = [f"{k} ({a.params[k]!r} against {b.params[k]!r})" for k in sorted(set(a.params) & set(b.params) - skip)
              if a.params[k] != b.params[k]]
    if differ:
        return f"{a.chapter} and {b.chapter} ran with different {', '.join(differ)}"
    keys = ("name", "n_train", "n_test")
    if [a.data["dataset"].get(k) for k in keys] != [b.data["dataset"].get(k) for k in keys]:
        return f"{a.chapter} and {b.chapter} ran on different data"
    return None


def write_combined(build: Build, path: str | os.PathLike) -> Path:
    """One CSV row per chapter, configuration, seed, epoch and phase, over the build's results files."""
    fields = ["chapter", "build", "dataset", "stand_in", "config", "seed", *HISTORY_KEYS]
    rows = [dict(chapter=f.chapter, build=f.data["build"], dataset=f.data["dataset"].get("name", ""),
                 stand_in=f.data["dataset"].get("stand_in", False), config=config, seed=run["seed"],
                 **{k: h[k] for k in HISTORY_KEYS})
            for f in build.files.values() for config, runs in f.data["runs"].items() for run in runs
            for h in run["history"]]
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def runs_from(chapter: Chapter, other: str, config: str, seeds: list) -> tuple[list[dict] | None, str]:
    """Another chapter's runs of `config`, when the build holds them trained exactly as `chapter` would train
    them (same parameters, data, device and seeds); else None and the reason, for the page to say."""
    if current_build_id() == STANDALONE:
        return None, "this run is not part of a book build"
    try:
        found = load_build(chapter.results_dir).files.get(other)
    except ValueError as exc:
        return None, str(exc)
    if found is None:
        return None, f"{other} has no results in this build"
    mine = ResultsFile(chapter.chapter, dict(params=chapter.params, dataset=chapter.dataset), {})
    why = comparable(found, mine) or (None if found.data["device"] == chapter.device else f"{other} ran on {found.data['device']}")
    runs = found.data["runs"].get(config, [])
    if why is None and sorted(r["seed"] for r in runs) != sorted(seeds):
        why = f"{other}'s runs have other seeds"
    return (None, why) if why else (runs, f"{other}, {found.label}")
