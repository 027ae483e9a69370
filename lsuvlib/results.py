"""Chapter book-keeping: show the parameters used, and write each chapter's results as data.

Every chapter writes ``<results_dir>/<chapter>.json`` with the fields in ``FIELDS``;
:func:`write_combined` flattens all of them into one CSV a reader can re-plot.
"""
from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from .atomic import atomic_open
from .data import ImageSet
from .runtime import default_device, versions

SCHEMA = "lsuv-book/results/1"
FIELDS = {
    "schema": "format identifier, always " + SCHEMA,
    "chapter": "chapter id, e.g. '03-baseline'",
    "created": "UTC time the file was written, ISO 8601",
    "params": "the chapter's parameters as the run used them",
    "dataset": "name, source, n_train, n_test, stand_in (true when it replaces the source's dataset)",
    "device": "torch device the run used",
    "versions": "python, torch, lsuvlib, numpy, platform, cuda",
    "runs": "configuration name -> list of per-seed runs (seed, history rows, seconds, stopped, ...)",
    "summary": "numbers the chapter's prose quotes, computed from the runs",
}
HISTORY_KEYS = ("epoch", "phase", "loss", "accuracy", "seconds")


def show_markdown(text: str) -> None:
    """Display ``text`` as Markdown in a notebook (print it elsewhere)."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
            return
    except ImportError:
        pass
    print(text)


def markdown_table(rows: Sequence[dict], columns: Sequence[str] | None = None,
                   headers: Sequence[str] | None = None) -> str:
    """A Markdown table; floats get 3 decimals, everything else ``str``."""
    if not rows:
        return "_(no rows)_"
    columns = list(columns or rows[0].keys())
    headers = list(headers or columns)
    fmt = lambda v: (f"{v:.3f}" if math.isfinite(v) else "–") if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def stand_in_note(ds: ImageSet, wanted: str, source_name: str) -> str:
    """The visible note a page carries when it runs on another dataset than its source did."""
    if ds.name == wanted:
        return f"This page runs on **{ds.name}**, the dataset {source_name[:1].lower() + source_name[1:]} used."
    return (f"**Dataset note.** {source_name} ran this experiment on **{wanted.upper()}** "
            f"(cropped digits, converted to grayscale). {wanted.upper()} is not available on the machine "
            f"that built this page, so it uses **{ds.name}** ({len(ds.x_train):,} training and "
            f"{len(ds.x_test):,} test images) as a stand-in. {source_name}'s numbers are for "
            f"{wanted.upper()}; the numbers here are not a reproduction of them.")


def blog_comparison(experiment: str, final: dict, ds: ImageSet, epochs: int) -> str:
    """A table of this run's final eval accuracy beside the blog's published single run."""
    from .sources import BLOG
    from .stats import fmt_mean_sd

    ours = fmt_mean_sd(final, digits=3)
    label = "this book" + (" (stand-in data)" if ds.name != BLOG["dataset"] else "")
    rows = [dict(source=label, dataset=ds.name, runs=final["n"] + final.get("n_stopped", 0), epochs=epochs,
                 accuracy=ours),
            dict(source="the blog, as published", dataset=BLOG["dataset"], runs=1, epochs=3,
                 accuracy=f"{BLOG['eval_accuracy'][experiment]:.3f}")]
    return markdown_table(rows, headers=["source", "dataset", "runs", "epochs", "final eval accuracy (mean ± sd)"])


class Chapter:
    """Shows a chapter's parameters and versions, collects its runs, and saves them as JSON."""

    def __init__(self, chapter: str, params: dict, results_dir: str | os.PathLike | None):
        self.chapter, self.params = chapter, dict(params)
        self.results_dir = Path(results_dir) if results_dir else None
        self.dataset: dict = {}
        self.runs: dict[str, list[dict]] = {}
        self.device = str(default_device(params.get("device", "auto")))

    def show_setup(self) -> None:
        """The parameter values this run used, and the versions it ran on."""
        rows = [dict(parameter=k, value=repr(v)) for k, v in self.params.items()]
        v = versions()
        show_markdown(markdown_table(rows) + f"\n\nRan on {self.device} with Python {v['python']}, "
                      f"torch {v['torch']}, lsuvlib {v['lsuvlib']}.")

    def use_dataset(self, ds: ImageSet, stand_in_for: str | None = None) -> None:
        self.dataset = dict(name=ds.name, source=ds.source, n_train=len(ds.x_train), n_test=len(ds.x_test),
                            stand_in=bool(stand_in_for and ds.name != stand_in_for), notes=list(ds.notes))

    def add_runs(self, config: str, runs: Iterable) -> None:
        self.runs[config] = [r.to_dict() for r in runs]

    def save(self, **summary) -> Path | None:
        """Write ``<results_dir>/<chapter>.json`` atomically; returns its path (None without a results_dir)."""
        data = dict(schema=SCHEMA, chapter=self.chapter,
                    created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    params=self.params, dataset=self.dataset, device=self.device, versions=versions(),
                    runs=self.runs, summary=summary)
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


def load_results(results_dir: str | os.PathLike) -> dict[str, dict]:
    """Every valid ``*.json`` results file in ``results_dir``, keyed by chapter."""
    out = {}
    for path in sorted(Path(results_dir).glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA:
            validate_results(data)
            out[data["chapter"]] = data
    return out


def write_combined(results_dir: str | os.PathLike, name: str = "all-results.csv") -> Path:
    """One CSV row per chapter, configuration, seed, epoch and phase, across every results file."""
    results_dir = Path(results_dir)
    fields = ["chapter", "dataset", "stand_in", "config", "seed", *HISTORY_KEYS]
    rows = []
    for chapter, data in load_results(results_dir).items():
        for config, runs in data["runs"].items():
            for run in runs:
                for h in run["history"]:
                    rows.append(dict(chapter=chapter, dataset=data["dataset"].get("name", ""),
                                     stand_in=data["dataset"].get("stand_in", False), config=config,
                                     seed=run["seed"], **{k: h[k] for k in HISTORY_KEYS}))
    path = results_dir / name
    with atomic_open(path, newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path
