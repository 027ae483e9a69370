#!/usr/bin/env python3
"""Build the book: execute every chapter notebook with papermill, then render.

    python tools/build_book.py [--chapter X]... [-p NAME VALUE]... [-f FILE.yaml]
                               [--profile NAME] [--out DIR] [--no-render]
                               [--kernel NAME] [--timings]

The chapter order comes from _quarto.yml (book.chapters, then book.appendices).
Executed notebooks go to OUT/book/<path in _quarto.yml>; sources are untouched.
Parameters layer as: profile (params/NAME.yaml) < -f FILE.yaml < -p NAME VALUE,
and each chapter receives only those its `parameters` cell declares.
Exit status: 0 all chapters built, 1 some chapter failed, 2 usage error.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import papermill
import yaml

import offline_edition

DEFAULT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PROFILE = "default"
# Set by the build itself, never by the user: results go where the site links them.
RESERVED_PARAMETERS = ("results_dir", "build_profile")
INJECTED_TAG = "injected-parameters"  # papermill's tag for the cell it adds
FALLBACK_KERNEL = "python3"
# Project files Quarto may need next to the executed notebooks, besides the book pages.
QUARTO_ASSETS = ("*.bib", "*.csl", "*.css", "*.scss", "assets", "images", "figures")


class BuildError(Exception):
    """A problem with the command line or the book, reported before anything runs."""


class ParamLoader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float, as YAML 1.2 does (PyYAML: a string)."""


ParamLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


# --------------------------------------------------------------------------- book


@dataclass(frozen=True)
class Entry:
    """One page of the book, as listed in _quarto.yml."""

    path: str  # relative to the project root
    section: str  # "chapters" or "appendices"

    @property
    def stem(self) -> str:
        return Path(self.path).stem

    @property
    def is_notebook(self) -> bool:
        return self.path.endswith(".ipynb")


def load_quarto_config(root: Path) -> dict:
    """Read _quarto.yml from the project root."""
    path = root / "_quarto.yml"
    if not path.is_file():
        raise BuildError(f"{path} not found: is {root} the project folder?")
    config = yaml.safe_load(path.read_text()) or {}
    if not isinstance(config.get("book"), dict):
        raise BuildError(f"{path} has no `book:` section")
    return config


def book_entries(config: dict) -> list[Entry]:
    """Book pages in reading order: book.chapters, then book.appendices."""
    book = config["book"]
    entries = [*_flatten(book.get("chapters"), "chapters"), *_flatten(book.get("appendices"), "appendices")]
    if not entries:
        raise BuildError("_quarto.yml lists no chapters under book.chapters")
    return entries


def _flatten(items, section: str):
    """Yield entries from a chapter list, descending into Quarto `part:` groups."""
    for item in items or []:
        if isinstance(item, str):
            yield Entry(item, section)
        elif isinstance(item, dict):
            part = item.get("part")
            if isinstance(part, str) and part.endswith((".md", ".qmd", ".ipynb")):
                yield Entry(part, section)
            yield from _flatten(item.get("chapters"), section)


def match_chapter(selector: str, entries: list[Entry]) -> Entry:
    """Find the notebook chapter a user means by stem, number, or name part."""
    notebooks = [e for e in entries if e.is_notebook]
    wanted = Path(selector).stem if selector.endswith(".ipynb") else selector
    rules = (
        lambda e: e.stem == wanted,
        lambda e: wanted.isdigit() and _number(e.stem) == int(wanted),
        lambda e: re.sub(r"^\d+-", "", e.stem) == wanted,
        lambda e: wanted in e.stem,
    )
    for rule in rules:
        found = [e for e in notebooks if rule(e)]
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(e.stem for e in found)
            raise BuildError(f"Chapter '{selector}' is ambiguous: it matches {names}.")
    valid = ", ".join(e.stem for e in notebooks)
    raise BuildError(
        f"Unknown chapter '{selector}'. Valid chapters: {valid} "
        "(give a stem, its number like 3 or 03, or its name part like baseline)."
    )


def _number(stem: str) -> int | None:
    found = re.match(r"(\d+)-", stem)
    return int(found.group(1)) if found else None


# --------------------------------------------------------------------------- parameters


@dataclass
class ParamLayer:
    """Parameters from one source: some for every chapter, some per chapter."""

    source: str  # for error messages, e.g. "-p" or "profile 'smoke' (params/smoke.yaml)"
    common: dict = field(default_factory=dict)
    per_chapter: dict[str, dict] = field(default_factory=dict)  # stem -> parameters


def parse_cli_value(text: str):
    """Parse a `-p NAME VALUE` value as YAML, so `1` is an int and `[1, 2]` a list."""
    try:
        return yaml.load(text, Loader=ParamLoader)
    except yaml.YAMLError:
        return text  # e.g. "a: b: c"; the user meant the literal string


def load_param_file(path: Path, source: str, entries: list[Entry]) -> ParamLayer:
    """Read a parameter file: top-level keys for all chapters, `chapters:` per chapter."""
    try:
        data = yaml.load(path.read_text(), Loader=ParamLoader)
    except OSError as exc:
        raise BuildError(f"Cannot read parameter file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise BuildError(f"Parameter file {path} is not valid YAML:\n{exc}") from exc
    data = data or {}
    if not isinstance(data, dict):
        raise BuildError(f"Parameter file {path} must be a mapping of name: value")
    per_chapter = data.pop("chapters", None) or {}
    if not isinstance(per_chapter, dict) or not all(isinstance(v, dict) for v in per_chapter.values()):
        raise BuildError(f"In {path}, `chapters:` must map chapter names to {{name: value}} mappings")
    layer = ParamLayer(source, common=data)
    for selector, params in per_chapter.items():
        stem = match_chapter(str(selector), entries).stem
        layer.per_chapter.setdefault(stem, {}).update(params)
    return layer


def profile_layer(root: Path, name: str, entries: list[Entry]) -> ParamLayer:
    """Load params/NAME.yaml; the default profile may be absent (no overrides)."""
    path = root / "params" / f"{name}.yaml"
    if not path.is_file():
        if name == DEFAULT_PROFILE:
            return ParamLayer(f"profile '{name}'")
        available = sorted(p.stem for p in (root / "params").glob("*.yaml"))
        raise BuildError(
            f"Unknown profile '{name}': {path} does not exist. Available: {', '.join(available) or 'none'}"
        )
    return load_param_file(path, f"profile '{name}' ({path.relative_to(root)})", entries)


def declared_parameters(notebook: Path) -> tuple[set[str], list[str]]:
    """Names in the notebook's `parameters` cell (via papermill), and lines papermill skipped."""
    skipped = _WarningCollector()
    translator_log = logging.getLogger("papermill.translators")
    translator_log.addHandler(skipped)
    try:
        declared = set(papermill.inspect_notebook(notebook))
    except ValueError as exc:  # papermill needs kernelspec/language metadata to parse
        raise BuildError(f"Cannot read the parameters of {notebook}: {exc}") from exc
    finally:
        translator_log.removeHandler(skipped)
    return declared, [m for m in skipped.messages if m.startswith("Unable to parse line")]


def unreadable_parameters(notebook: Path, unparsed: list[str]) -> BuildError:
    # papermill skips lines with more than one '=' (even inside the comment), so that
    # parameter would silently never receive a value.
    return BuildError(
        f"papermill cannot read the `parameters` cell of {notebook}:\n  "
        + "\n  ".join(unparsed)
        + "\nKeep one '=' per line (e.g. write '# None: the whole split', not '# None = ...')."
    )


class _WarningCollector(logging.Handler):
    """Keeps papermill's warnings so they can be reported as a build error."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def check_parameters(layers: list[ParamLayer], declared: dict[str, set[str]]) -> None:
    """Reject reserved names and names no chapter declares, before anything runs."""
    everywhere = set().union(*declared.values())
    for layer in layers:
        for name in layer.common:
            _check_name(name, everywhere, layer.source, declared)
        for stem, params in layer.per_chapter.items():
            for name in params:
                _check_name(name, declared.get(stem, set()), f"{layer.source}, chapters.{stem}", declared)


def _check_name(name: str, allowed: set[str], source: str, declared: dict[str, set[str]]) -> None:
    if name in RESERVED_PARAMETERS:
        raise BuildError(f"Parameter '{name}' (from {source}) is set by the build itself; use --out/--profile instead.")
    if name in allowed:
        return
    hint = difflib.get_close_matches(name, allowed, n=1)
    known = {}
    for stem, names in declared.items():
        for known_name in names - set(RESERVED_PARAMETERS):
            known.setdefault(known_name, []).append(stem)
    listing = "\n".join(f"  {n}: {', '.join(stems)}" for n, stems in sorted(known.items())) or "  (none)"
    raise BuildError(
        f"Unknown parameter '{name}' (from {source}): no chapter it applies to declares it "
        f"in its `parameters` cell.{f' Did you mean {hint[0]!r}?' if hint else ''}\n"
        f"Declared parameters and their chapters:\n{listing}"
    )


def chapter_parameters(stem: str, layers: list[ParamLayer], injected: dict, declared: set[str]) -> dict:
    """Merge the layers for one chapter and keep only what it declares."""
    merged: dict = {}
    for layer in layers:
        merged.update(layer.common)
        merged.update(layer.per_chapter.get(stem, {}))
    merged.update(injected)
    return {name: value for name, value in merged.items() if name in declared}


# --------------------------------------------------------------------------- execution


@dataclass
class ChapterResult:
    stem: str
    seconds: float
    ok: bool
    error: str = ""


def kernel_for(notebook: Path, override: str | None) -> str:
    """The --kernel override, else the notebook's own kernel (what papermill uses)."""
    if override:
        return override
    kernelspec = nbformat.read(notebook, as_version=4).metadata.get("kernelspec", {})
    return kernelspec.get("name") or FALLBACK_KERNEL


def execute_chapter(source: Path, dest: Path, params: dict, kernel: str | None) -> ChapterResult:
    """Run one notebook with papermill; keep the error notebook if it fails."""
    stem = source.stem
    if not source.is_file():
        dest.unlink(missing_ok=True)
        return ChapterResult(stem, 0.0, False, f"notebook not found: {source} (listed in _quarto.yml)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as dest, so os.replace is atomic and readers never see half a notebook.
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp.ipynb")
    start = time.perf_counter()
    try:
        error = run_papermill(source, tmp, params, kernel)
        seconds = time.perf_counter() - start
        if tmp.exists():
            finalize_notebook(tmp, dest)
        elif error:
            dest.unlink(missing_ok=True)  # don't leave an older success standing in for this failure
    finally:
        tmp.unlink(missing_ok=True)  # still there only if interrupted
    return ChapterResult(stem, seconds, not error, error)


def run_papermill(source: Path, output: Path, params: dict, kernel: str | None) -> str:
    """Execute source into output; return the error message, or "" on success."""
    try:
        papermill.execute_notebook(
            source,
            output,
            parameters=params,
            kernel_name=kernel_for(source, kernel),
            cwd=source.parent,  # relative paths behave as when run in Jupyter
            progress_bar=False,
        )
    except papermill.PapermillExecutionError as exc:
        return f"{exc.ename}: {exc.evalue} (in cell [{exc.exec_count}])"
    except Exception as exc:  # kernel failed to start, bad notebook, ...: still a chapter failure
        return f"{type(exc).__name__}: {exc}"
    return ""


def finalize_notebook(tmp: Path, dest: Path) -> None:
    """Prepare an executed notebook for rendering, then move it into place."""
    nb = nbformat.read(tmp, as_version=4)
    hide_injected_parameters(nb)
    nbformat.write(nb, tmp)
    os.replace(tmp, dest)


def hide_injected_parameters(nb) -> None:
    """Hide papermill's parameters cell in Quarto (#| include: false) and elsewhere (tag)."""
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if INJECTED_TAG not in tags:
            continue
        if not cell.source.startswith("#| include: false"):
            cell.source = "#| include: false\n" + cell.source
        if "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]


def peak_child_rss_mb() -> float:
    """Peak RSS of any finished child process (the kernels), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def write_atomic(path: Path, text: str) -> None:
    """Write text to path via a temporary file and os.replace."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_timings(path: Path, profile: str, results: list[ChapterResult], total: float) -> dict:
    timings = {
        "profile": profile,
        "chapters": [{"chapter": r.stem, "seconds": round(r.seconds, 3), "ok": r.ok} for r in results],
        "total_seconds": round(total, 3),
        "peak_rss_mb": round(peak_child_rss_mb(), 1),
    }
    write_atomic(path, json.dumps(timings, indent=2) + "\n")
    return timings


# --------------------------------------------------------------------------- rendering


def stage_quarto_project(root: Path, book_dir: Path, entries: list[Entry]) -> list[str]:
    """Copy _quarto.yml, text pages and assets next to the executed notebooks.

    Returns the book pages still missing from book_dir (never built).
    """
    shutil.copy2(root / "_quarto.yml", book_dir / "_quarto.yml")
    for entry in entries:
        if not entry.is_notebook and (root / entry.path).is_file():
            (book_dir / entry.path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / entry.path, book_dir / entry.path)
    for pattern in QUARTO_ASSETS:
        for asset in root.glob(pattern):
            _copy_any(asset, book_dir / asset.name)
    # Beside the chapters, not at the root: that would also copy the build output.
    for folder in {(root / e.path).parent for e in entries if e.is_notebook} - {root}:
        for asset in chapter_assets(folder):
            _copy_any(asset, book_dir / asset.relative_to(root))
    # _quarto.yml lists results/ as a resource, so the site links the chapters' data files.
    results = book_dir.parent / "results"
    if results.is_dir():
        _copy_any(results, book_dir / "results")
    return [e.path for e in entries if not (book_dir / e.path).is_file()]


def chapter_assets(folder: Path):
    """Non-notebook files beside the chapters (images the markdown links to)."""
    for path in folder.rglob("*"):
        parts = path.relative_to(folder).parts
        if (
            path.is_file()
            and path.suffix != ".ipynb"
            and not any(p.startswith(".") or p == "__pycache__" for p in parts)
        ):
            yield path


def _copy_any(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    else:
        shutil.copy2(src, dst)


def render_with_quarto(quarto: str, root: Path, book_dir: Path, config: dict, entries: list[Entry]) -> Path | None:
    """Run `quarto render` on the staged project; the site's index.html, or None."""
    missing = stage_quarto_project(root, book_dir, entries)
    if missing:
        print(f"Not running quarto render: {len(missing)} page(s) not built yet: {', '.join(missing)}")
        return None
    print(f"Running: quarto render {show(book_dir)}", flush=True)
    if subprocess.run([quarto, "render", str(book_dir)]).returncode != 0:
        print("quarto render failed (see its output above).")
        return None
    output_dir = config.get("project", {}).get("output-dir", "_book")
    return book_dir / output_dir / "index.html"


def build_offline(root: Path, out: Path, config: dict, entries: list[Entry]) -> Path:
    """Build OUT/site/ from the executed notebooks with nbconvert."""
    pages = []
    for entry in entries:
        source = out / "book" / entry.path if entry.is_notebook else root / entry.path
        pages.append(
            offline_edition.PageSource(
                stem=entry.stem,
                section=entry.section,
                path=str(Path(entry.path).with_suffix(".html")),
                source=source if source.is_file() else None,
                resource_dir=(root / entry.path).parent,
                missing_note=(
                    f"Build it with `python tools/build_book.py --chapter {entry.stem}`."
                    if entry.is_notebook
                    else f"The file `{entry.path}` does not exist yet."
                ),
            )
        )
    results = out / "results"
    return offline_edition.build_offline_edition(
        pages,
        site_dir=out / "site",
        book_title=config["book"].get("title", "Book"),
        results_dir=results if results.is_dir() else None,
    )


def render(root: Path, out: Path, config: dict, entries: list[Entry]) -> None:
    """Render with Quarto when available, else (or if it fails) the offline edition."""
    quarto = shutil.which("quarto")
    if quarto:
        site = render_with_quarto(quarto, root, out / "book", config, entries)
        if site:
            print(f"Quarto site: {show(site)}")
            return
        index = build_offline(root, out, config, entries)
        print(f"Built the offline HTML edition instead: {show(index)} (open it in a browser)")
        return
    index = build_offline(root, out, config, entries)
    print(
        "Quarto was not found on PATH, so the Quarto site was not rendered. "
        f"Built the offline HTML edition instead: {show(index)} (open it in a browser)"
    )


def show(path: Path) -> str:
    """Path relative to the current directory when inside it, for short messages."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python tools/build_book.py",
        description="Execute the book's chapter notebooks with papermill, then render the book.",
        epilog="Parameter precedence: --profile < -f FILE < -p. Exit 1 if a chapter failed, 2 on usage errors.",
    )
    parser.add_argument(
        "--chapter",
        action="append",
        default=[],
        metavar="X",
        help="build only this chapter (stem, number like 3, or name like baseline); repeatable",
    )
    parser.add_argument(
        "-p",
        dest="params",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="set a parameter; VALUE is parsed as YAML (so 1 is an int); repeatable",
    )
    parser.add_argument(
        "-f", dest="param_file", type=Path, metavar="FILE.yaml", help="parameter file (same format as params/*.yaml)"
    )
    parser.add_argument("--profile", default=DEFAULT_PROFILE, help="load params/NAME.yaml (default: %(default)s)")
    parser.add_argument("--out", type=Path, help="output folder (default: _build in the project root)")
    parser.add_argument("--no-render", action="store_true", help="execute only; skip Quarto and the offline edition")
    parser.add_argument(
        "--kernel", help="Jupyter kernel for every chapter (default: each notebook's own, else python3)"
    )
    parser.add_argument(
        "--timings", action="store_true", help="also print a timing table (OUT/timings.json is always written)"
    )
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help=argparse.SUPPRESS)  # tests: a tmp project
    return parser.parse_args(argv)


@dataclass
class Plan:
    """Everything decided before the first notebook runs."""

    root: Path
    out: Path
    config: dict
    entries: list[Entry]
    selected: list[Entry]
    layers: list[ParamLayer]
    declared: dict[str, set[str]]


def make_plan(args: argparse.Namespace) -> Plan:
    """Read the book and the parameters and validate them; raises BuildError."""
    root = args.root.resolve()
    config = load_quarto_config(root)
    entries = book_entries(config)
    notebooks = [e for e in entries if e.is_notebook]
    if not notebooks:
        raise BuildError("_quarto.yml lists no .ipynb chapters to execute")
    selected = [match_chapter(s, entries) for s in args.chapter] or notebooks
    selected = [e for e in notebooks if e in selected]  # book order, no duplicates
    layers = [profile_layer(root, args.profile, entries)]
    if args.param_file:
        layers.append(load_param_file(args.param_file.resolve(), f"-f {args.param_file}", entries))
    layers.append(ParamLayer("-p", common={name: parse_cli_value(value) for name, value in args.params}))
    declared = {}
    for entry in (e for e in notebooks if (root / e.path).is_file()):
        declared[entry.stem], unparsed = declared_parameters(root / entry.path)
        if unparsed and entry in selected:
            raise unreadable_parameters(root / entry.path, unparsed)
    check_parameters(layers, declared)
    out = args.out.resolve() if args.out else root / "_build"
    return Plan(root, out, config, entries, selected, layers, declared)


def run_chapters(plan: Plan, profile: str, kernel: str | None) -> list[ChapterResult]:
    """Execute the selected chapters in book order, printing one line each."""
    injected = {"results_dir": str(plan.out / "results"), "build_profile": profile}
    (plan.out / "results").mkdir(parents=True, exist_ok=True)
    results = []
    width = max(len(e.stem) for e in plan.selected)
    for number, entry in enumerate(plan.selected, 1):
        params = chapter_parameters(entry.stem, plan.layers, injected, plan.declared.get(entry.stem, set()))
        shown = ", ".join(f"{k}={v!r}" for k, v in params.items() if k not in RESERVED_PARAMETERS)
        print(f"[{number}/{len(plan.selected)}] {entry.stem:<{width}}  {shown or '(defaults)'}", flush=True)
        result = execute_chapter(plan.root / entry.path, plan.out / "book" / entry.path, params, kernel)
        status = "ok" if result.ok else "FAILED"
        print(f"      {status} in {result.seconds:.1f} s", flush=True)
        if not result.ok:
            for line in result.error.splitlines()[:6]:
                print(f"      | {line}")
            kept = plan.out / "book" / entry.path
            if kept.exists():
                print(f"      error notebook: {show(kept)}")
        results.append(result)
    return results


def print_timing_table(timings: dict) -> None:
    print("\nChapter timings (slowest first):")
    for row in sorted(timings["chapters"], key=lambda r: -r["seconds"]):
        print(f"  {row['seconds']:8.1f} s  {row['chapter']}{'' if row['ok'] else '  (failed)'}")
    print(f"  {timings['total_seconds']:8.1f} s  total; peak kernel RSS {timings['peak_rss_mb']:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = make_plan(args)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"Building {len(plan.selected)} chapter(s), profile '{args.profile}', into {show(plan.out)}", flush=True)
    start = time.perf_counter()
    results = run_chapters(plan, args.profile, args.kernel)
    timings = write_timings(plan.out / "timings.json", args.profile, results, time.perf_counter() - start)
    if args.timings:
        print_timing_table(timings)
    if not args.no_render:
        render(plan.root, plan.out, plan.config, plan.entries)
    failed = [r.stem for r in results if not r.ok]
    built = f"{len(results) - len(failed)} of {len(results)} chapter(s) built in {timings['total_seconds']:.1f} s"
    if failed:
        print(f"\nBUILD FAILED: {built}. Failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print(f"\n{built}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
