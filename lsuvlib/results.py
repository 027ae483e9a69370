"""Chapter results as data: each chapter's JSON file, the build manifest, and the combined CSV.

Every chapter writes ``<results_dir>/<chapter>.json`` with the fields in ``FIELDS``;
:func:`write_combined` flattens all of them into one CSV a reader can re-plot.

Provenance: ``tools/build_book.py`` gives every build an id, passes it to the kernels as
``$LSUV_BUILD_ID`` and keeps ``<results_dir>/build.json`` (``BUILD_MANIFEST``): the latest
build's id, start time and profile, and per chapter the build that last ran it, with its
status, parameters and finish time. :meth:`Chapter.save` stamps each file with its build
(``"standalone"`` outside a build), so :func:`load_with_builds` can tell a summary which
rows come from the latest build and which from an earlier one.

Display helpers (tables, notes, the parameters table) live in :mod:`lsuvlib.page`.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .atomic import atomic_open
from .data import ImageSet
from .runtime import default_device, versions

SCHEMA = "lsuv-book/results/2"  # 2: adds `build`
SCHEMA_PREFIX = "lsuv-book/results/"
MANIFEST_SCHEMA = "lsuv-book/build/1"
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


def current_build_id() -> str:
    """The id of the build running this code (``$LSUV_BUILD_ID``), else ``"standalone"``."""
    return os.environ.get(BUILD_ENV) or STANDALONE


def project_root() -> Path | None:
    """The checkout this package lives in (it has ``_quarto.yml`` and ``chapters/``), or None when installed."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "_quarto.yml").is_file() and (root / "chapters").is_dir() else None


def resolve_results_dir(results_dir: str | os.PathLike) -> Path:
    """An absolute results folder; a relative one is taken from the chapters' folder, not the cwd.

    The notebooks' default ``"../_build/results"`` then means ``<project>/_build/results`` wherever
    papermill or Jupyter was started. Outside a checkout (package installed), the cwd is the base.
    """
    path = Path(results_dir).expanduser()
    if path.is_absolute():
        return path
    root = project_root()
    base = root / "chapters" if root else Path.cwd()
    return Path(os.path.normpath(base / path))


# The display helpers moved to lsuvlib.page; these names keep old imports working.
def __getattr__(name: str):
    if name in ("show_markdown", "markdown_table", "stand_in_note", "Table"):
        from . import page

        return getattr(page, name)
    raise AttributeError(f"module 'lsuvlib.results' has no attribute {name!r}")


class Chapter:
    """Shows a chapter's parameters and versions, collects its runs, and saves them as JSON."""

    def __init__(self, chapter: str, params: dict, results_dir: str | os.PathLike | None):
        self.chapter, self.params = chapter, dict(params)
        self.results_dir = resolve_results_dir(results_dir) if results_dir else None
        self.dataset: dict = {}
        self.runs: dict[str, list[dict]] = {}
        self.device = str(default_device(params.get("device", "auto")))

    def show_setup(self) -> None:
        """The parameters table (with one line naming any non-default value) and the versions."""
        from .page import show_setup

        show_setup(self)

    def use_dataset(self, ds: ImageSet, stand_in_for: str | None = None) -> None:
        self.dataset = dict(name=ds.name, source=ds.source, n_train=len(ds.x_train), n_test=len(ds.x_test),
                            stand_in=bool(stand_in_for and ds.name != stand_in_for), notes=list(ds.notes))

    def add_runs(self, config: str, runs: Iterable) -> None:
        self.runs[config] = [r.to_dict() for r in runs]

    def save(self, **summary) -> Path | None:
        """Write ``<results_dir>/<chapter>.json`` atomically; returns its path (None without a results_dir)."""
        data = dict(schema=SCHEMA, chapter=self.chapter,
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    build=current_build_id(), params=self.params, dataset=self.dataset, device=self.device,
                    versions=versions(), runs=self.runs, summary=summary)
        validate_results(data)
        if self.results_dir is None:
            return None
        path = self.results_dir / f"{self.chapter}.json"
        text = json.dumps(_finite_or_null(data), indent=1, default=_jsonable, allow_nan=False)
        with atomic_open(path) as f:
            f.write(text)
        return path


def _finite_or_null(o):
    """NaN and infinity become ``null``: standard JSON has no spelling for them."""
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
    """Raise ``ValueError`` naming every way ``data`` departs from the documented fields."""
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


def _read_results_file(path: Path) -> dict | None:
    """A results file's data, None for other JSON; a ValueError naming the file when it is broken."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"results file {path} cannot be read ({exc}); it is truncated or corrupt: "
                         f"rebuild chapter {path.stem} or delete the file") from exc
    schema = data.get("schema") if isinstance(data, dict) else None
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_PREFIX):
        return None  # the build manifest, or a file a reader put there
    if schema != SCHEMA:
        raise ValueError(f"results file {path} has schema {schema!r}, this lsuvlib reads {SCHEMA!r}: "
                         f"rebuild chapter {data.get('chapter', path.stem)}")
    try:
        validate_results(data)
    except ValueError as exc:
        raise ValueError(f"results file {path}: {exc}") from None
    return data


def load_results(results_dir: str | os.PathLike) -> dict[str, dict]:
    """Every valid results file in ``results_dir``, keyed by chapter (other JSON files are skipped)."""
    return {chapter: data for chapter, (_, data) in _load_with_paths(results_dir).items()}


def _load_with_paths(results_dir) -> dict[str, tuple[Path, dict]]:
    out = {}
    for path in sorted(resolve_results_dir(results_dir).glob("*.json")):
        data = _read_results_file(path)
        if data is not None:
            out[data["chapter"]] = (path, data)
    return out


def read_manifest(results_dir: str | os.PathLike) -> dict | None:
    """The build manifest ``<results_dir>/build.json`` (see ``tools/build_book.py``), or None if absent."""
    path = resolve_results_dir(results_dir) / BUILD_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"build manifest {path} cannot be read ({exc}): rebuild the book") from exc
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise ValueError(f"{path} is not a build manifest of schema {MANIFEST_SCHEMA!r}: rebuild the book")
    return manifest


@dataclass(frozen=True)
class ResultsFile:
    """One chapter's results with the build they come from."""

    chapter: str
    path: Path
    data: dict
    build_id: str  # the file's own `build` field
    build: dict  # the manifest's record of that chapter's run (profile, params, started, finished); {} if none
    latest: bool  # True when the file comes from the manifest's latest build

    @property
    def label(self) -> str:
        """Which run wrote the file, in words, e.g. "build 20261201T185000Z-42 (profile smoke, finished ...)"."""
        if self.build_id == STANDALONE:
            return f"a run outside the build tool ({self.data['created']})"
        details = [f"profile {self.build['profile']}"] if self.build.get("profile") else []
        details.append(f"finished {self.build.get('finished') or self.data['created']}")
        return f"build {self.build_id} ({', '.join(details)})"


@dataclass(frozen=True)
class BuildResults:
    """What :func:`load_with_builds` returns: the latest build and every results file."""

    build: dict | None  # the manifest: build_id, started, profile, chapters; None without a manifest
    files: dict[str, ResultsFile]

    @property
    def build_id(self) -> str | None:
        return self.build["build_id"] if self.build else None

    def latest(self) -> dict[str, ResultsFile]:
        return {c: f for c, f in self.files.items() if f.latest}

    def earlier(self) -> dict[str, ResultsFile]:
        """Files from another build or a standalone run: flag or refuse them."""
        return {c: f for c, f in self.files.items() if not f.latest}


def load_with_builds(results_dir: str | os.PathLike) -> BuildResults:
    """Every results file in ``results_dir`` with the build it comes from and whether that is the latest.

    For a summary chapter: rows from ``.earlier()`` came from an earlier build (or a standalone
    run) than the one the manifest names, so say so (``.label``) or leave them out.
    """
    manifest = read_manifest(results_dir)
    latest_id = manifest.get("build_id") if manifest else None
    records = (manifest or {}).get("chapters", {})
    files = {}
    for chapter, (path, data) in _load_with_paths(results_dir).items():
        record = records.get(chapter, {})
        build = record if record.get("build_id") == data["build"] else {}
        files[chapter] = ResultsFile(chapter, path, data,
                                     data["build"], dict(build), latest_id is not None and data["build"] == latest_id)
    return BuildResults(manifest, files)


def write_combined(results_dir: str | os.PathLike, name: str = "all-results.csv") -> Path:
    """One CSV row per chapter, configuration, seed, epoch and phase, across every results file."""
    results_dir = resolve_results_dir(results_dir)
    fields = ["chapter", "build", "dataset", "stand_in", "config", "seed", *HISTORY_KEYS]
    rows = []
    for chapter, data in load_results(results_dir).items():
        for config, runs in data["runs"].items():
            for run in runs:
                for h in run["history"]:
                    rows.append(dict(chapter=chapter, build=data["build"], dataset=data["dataset"].get("name", ""),
                                     stand_in=data["dataset"].get("stand_in", False), config=config,
                                     seed=run["seed"], **{k: h[k] for k in HISTORY_KEYS}))
    path = results_dir / name
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path
