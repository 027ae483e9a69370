#!/usr/bin/env python3
"""Build the book: execute every chapter notebook with papermill, then render.

    python tools/build_book.py [--chapter X]... [-p NAME VALUE]... [-f FILE.yaml]
                               [--profile NAME] [--out DIR] [--no-render]
                               [--kernel NAME] [--timings]

The chapter order comes from _quarto.yml (book.chapters, then book.appendices).
Executed notebooks go to OUT/book/<path in _quarto.yml>; sources are untouched.
Parameters layer as: profile (params/NAME.yaml) < -f FILE.yaml < -p NAME VALUE,
and each chapter receives only those its `parameters` cell declares.
Exit status: 0 all chapters built, 1 some chapter failed, 2 usage error, 130 interrupted.

Provenance: each build has an id (UTC start time and pid), given to the kernels as
$LSUV_BUILD_ID and recorded in OUT/results/build.json (the manifest: latest build id, start
time, profile, and per chapter the build that last ran it with its status, parameters and
finish time; lsuvlib.results.load_with_builds reads it). A failed chapter's error notebook
goes to OUT/failed/<stem>.ipynb; its previous page and results move to OUT/stale/<build id>/,
so nothing from an earlier build passes as this build's and nothing already produced is lost.
One build at a time per output folder (a lock on OUT/.build.lock).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import difflib
import fcntl
import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
MANIFEST = "build.json"  # in OUT/results; format read by lsuvlib.results.read_manifest
MANIFEST_SCHEMA = "lsuv-book/build/1"
LOCK_FILE = ".build.lock"
FILE_MODE = 0o644  # results, pages and the manifest are for readers, not private
# Project files Quarto may need next to the executed notebooks, besides the book pages.
QUARTO_ASSETS = ("*.bib", "*.csl", "*.css", "*.scss", "assets", "images", "figures")


class BuildError(Exception):
    """A problem with the command line or the book, reported before anything runs."""


class BuildTerminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `finally` (temporary notebooks, the lock) still runs."""


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
    if wanted.isdigit():  # a bare number is a chapter number, never part of a name ("0" is in every stem)
        rules = rules[:2]
    for rule in rules:
        found = [e for e in notebooks if rule(e)]
        if len(found) == 1:
            return found[0]
        if found:
            names = ", ".join(e.stem for e in found)
            raise BuildError(f"Chapter '{selector}' is ambiguous: it matches {names}.")
    valid = ", ".join(e.stem for e in notebooks)
    if wanted.isdigit():
        numbers = ", ".join(str(n) for n in sorted({_number(e.stem) for e in notebooks} - {None}))
        raise BuildError(f"No chapter has the number {selector}. Chapter numbers: {numbers}; chapters: {valid}.")
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
    raw: dict[str, str] = field(default_factory=dict)  # -p NAME VALUE as typed, for error messages


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
        try:
            stem = match_chapter(str(selector), entries).stem
        except BuildError as exc:
            raise BuildError(f"In {path}, under `chapters:`: {exc}") from None
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


def declared_parameters(notebook: Path) -> tuple[dict[str, dict], list[str]]:
    """The notebook's `parameters` cell as papermill reads it (name -> default, help, inferred type),
    and the lines papermill skipped."""
    skipped = _WarningCollector()
    translator_log = logging.getLogger("papermill.translators")
    translator_log.addHandler(skipped)
    try:
        declared = dict(papermill.inspect_notebook(notebook))
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


# Type names a parameter may take, from its default (or its annotation, `n: int | None = None`).
_KINDS = {bool: "bool", int: "int", float: "float", str: "str", list: "list", dict: "dict", type(None): "None"}
_KIND_WORDS = {"bool": "a bool", "int": "an int", "float": "a float", "str": "a string", "list": "a list",
               "dict": "a mapping", "None": "null"}


def _kind(value) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def accepted_kinds(spec: dict) -> set[str] | None:
    """The kinds of value a parameter accepts, or None when its default says nothing usable."""
    annotation = spec.get("inferred_type_name") or "None"
    if annotation != "None":
        words = set(re.findall(r"[A-Za-z]+", annotation.replace("Optional", "None")))
        kinds = {w for w in words if w in _KIND_WORDS} | ({"None"} if "NoneType" in words else set())
        return (kinds | ({"int"} if "float" in kinds else set())) or None
    try:
        default = ast.literal_eval(spec.get("default", ""))
    except (ValueError, SyntaxError):
        return None
    kind = _kind(default)
    if kind not in _KIND_WORDS:
        return None
    kinds = {kind}
    if kind == "float":
        kinds.add("int")  # lr 1 means 1.0
    if kind == "None":
        kinds.add("int")  # None defaults are counts: "None: the whole split"
    if "None" in spec.get("help", ""):
        kinds.add("None")  # the comment documents None, e.g. "None: never"
    return kinds


def element_kinds(spec: dict) -> set[str] | None:
    """For a list default whose items share one kind: the kinds an item may take."""
    try:
        default = ast.literal_eval(spec.get("default", ""))
    except (ValueError, SyntaxError):
        return None
    if not isinstance(default, list) or not default or len({_kind(v) for v in default}) != 1:
        return None
    kind = _kind(default[0])
    return {kind, "int"} if kind == "float" else {kind}


def _describe(value, raw: str | None) -> str:
    shown = repr(raw) if raw is not None else repr(value)
    if raw is not None and not raw.strip():
        return f"{shown} (an empty value)"
    return f"{shown} ({_KIND_WORDS.get(_kind(value), type(value).__name__)})"


def _either(kinds: set[str], plural: bool = False) -> str:
    """E.g. {"int", "None"} -> "an int or null"; an int-or-float is "a number"."""
    words = {**_KIND_WORDS, "number": "a number"}
    if plural:
        words = {k: (w.split(" ", 1)[1] + "s" if " " in w else w) for k, w in words.items()}
        words["dict"] = "mappings"
    names = ["number"] if {"int", "float"} <= kinds else []
    names += [k for k in ("int", "float", "bool", "str", "list", "dict", "None") if k in kinds
              and not (names and k in ("int", "float"))]
    shown = [words[k] for k in names]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]


def type_problems(stem: str, specs: dict[str, dict], layers: list[ParamLayer]) -> list[str]:
    """One sentence per value whose type its chapter's default does not allow."""
    problems = []
    for name, (value, layer) in sorted(_sourced(stem, layers).items()):
        spec = specs.get(name)
        kinds = accepted_kinds(spec) if spec else None
        if kinds is None:
            continue
        raw = layer.raw.get(name)
        where = f"{layer.source} gives {_describe(value, raw)}"
        if _kind(value) not in kinds:
            problems.append(f"Parameter '{name}' of chapter {stem} must be {_either(kinds)} "
                            f"(its default is {spec['default']}), but {where}.")
            continue
        items = element_kinds(spec) if isinstance(value, list) else None
        bad = [v for v in value if _kind(v) not in items] if items else []
        if bad:
            problems.append(f"Parameter '{name}' of chapter {stem} must be a list of "
                            f"{_either(items, plural=True)} "
                            f"(its default is {spec['default']}), but {where}: {bad[0]!r} is not.")
    return problems


def _sourced(stem: str, layers: list[ParamLayer]) -> dict[str, tuple[object, ParamLayer]]:
    """Each parameter's final value for one chapter, with the layer that set it."""
    merged: dict = {}
    for layer in layers:
        for params in (layer.common, layer.per_chapter.get(stem, {})):
            merged.update({name: (value, layer) for name, value in params.items()})
    return merged


# --------------------------------------------------------------------------- execution


@dataclass
class ChapterResult:
    stem: str
    seconds: float
    ok: bool
    error: str = ""
    failed_notebook: Path | None = None  # the papermill error notebook, kept for reading
    set_aside: list[Path] = field(default_factory=list)  # earlier outputs moved to OUT/stale/
    peak_rss_mb: float = 0.0  # the kernels' peak RSS so far, read when this chapter ended: finds the chapter that set it


def kernel_for(notebook: Path, override: str | None) -> str:
    """The --kernel override, else the notebook's own kernel (what papermill uses)."""
    if override:
        return override
    kernelspec = nbformat.read(notebook, as_version=4).metadata.get("kernelspec", {})
    return kernelspec.get("name") or FALLBACK_KERNEL


def check_kernels(root: Path, selected: list[Entry], override: str | None) -> None:
    """Every kernel the build will start must be installed: a typo must not cost a single page."""
    from jupyter_client.kernelspec import KernelSpecManager

    installed = set(KernelSpecManager().find_kernel_specs())
    for entry in selected:
        source = root / entry.path
        if not source.is_file():
            continue
        name = kernel_for(source, override)
        if name not in installed:
            origin = "--kernel" if override else f"the kernelspec of {entry.path}"
            hint = difflib.get_close_matches(name, installed, n=1)
            raise BuildError(
                f"Unknown Jupyter kernel '{name}' (from {origin}). Installed kernels: "
                f"{', '.join(sorted(installed)) or 'none'}{f'; did you mean {hint[0]!r}?' if hint else ''} "
                "(`jupyter kernelspec list` shows them)."
            )


def ipc_kernel_manager(private_dir: Path):
    """A kernel manager class whose kernels talk over local IPC sockets in private_dir, not TCP.

    Over TCP any local user could read the code and outputs (ipykernel warns about it);
    IPC sockets are files in a 0700 folder.
    """
    from jupyter_client import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            fd, connection_file = tempfile.mkstemp(dir=private_dir, prefix="kernel-", suffix=".json")
            os.close(fd)
            os.unlink(connection_file)  # the manager writes it; we only wanted a unique name
            self.transport = "ipc"
            self.connection_file = connection_file
            self.ip = connection_file[: -len(".json")] + "-ipc"  # socket files: <ip>-<port>

        async def _async_interrupt_kernel(self) -> None:
            # jupyter_client interrupts before every shutdown; an idle kernel then logs a
            # "KeyboardInterrupt caught in kernel" error into the build output. The shutdown
            # request that follows ends it cleanly, so skip that one interrupt.
            if self.shutting_down:
                return
            await super()._async_interrupt_kernel()

    return IPCKernelManager


class ProgressTail(threading.Thread):
    """Print, indented, each line the kernel appends to its progress file ($LSUV_PROGRESS_FILE)."""

    def __init__(self, path: Path, indent: str = "      · ", interval: float = 0.2):
        super().__init__(daemon=True)
        self.path, self.indent, self.interval = path, indent, interval
        self._stop_event = threading.Event()
        self._offset, self._partial = 0, ""

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self._drain()

    def _drain(self) -> None:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self._offset)
                text = f.read()
                self._offset = f.tell()
        except FileNotFoundError:
            return
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()  # an unfinished line waits for its newline
        for line in lines:
            if line.strip():
                print(f"{self.indent}{line.rstrip()}", flush=True)

    def stop(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join()
        self._drain()


def execute_chapter(source: Path, dest: Path, params: dict, kernel: str | None, *,
                    env: dict | None = None, failed_dir: Path | None = None,
                    kernel_manager_class=None) -> ChapterResult:
    """Run one notebook with papermill into a temporary file beside dest; move it into place only on success.

    A failed run's error notebook goes to failed_dir/<stem>.ipynb; dest keeps what it had.
    """
    stem = source.stem
    if not source.is_file():
        return ChapterResult(stem, 0.0, False, f"notebook not found: {source} (listed in _quarto.yml)",
                             peak_rss_mb=peak_child_rss_mb())
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as dest, so os.replace is atomic and readers never see half a notebook.
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp.ipynb")
    start = time.perf_counter()
    saved_env = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})  # the kernel inherits the build's environment
    try:
        error = run_papermill(source, tmp, params, kernel, kernel_manager_class)
        seconds = time.perf_counter() - start
        failed = None
        if not error:
            finalize_notebook(tmp, dest)
        elif tmp.exists() and failed_dir is not None:
            failed = failed_dir / f"{stem}.ipynb"
            failed.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, failed)
            _readable(failed)
    finally:
        tmp.unlink(missing_ok=True)  # still there only if interrupted
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return ChapterResult(stem, seconds, not error, error, failed, peak_rss_mb=peak_child_rss_mb())


def run_papermill(source: Path, output: Path, params: dict, kernel: str | None, kernel_manager_class=None) -> str:
    """Execute source into output; return the error message, or "" on success."""
    extra = {"kernel_manager_class": kernel_manager_class} if kernel_manager_class else {}
    try:
        papermill.execute_notebook(
            source,
            output,
            parameters=params,
            kernel_name=kernel_for(source, kernel),
            cwd=source.parent,  # relative paths behave as when run in Jupyter
            progress_bar=False,
            **extra,  # papermill hands engine options on to nbclient
        )
    except papermill.PapermillExecutionError as exc:
        return f"{exc.ename}: {exc.evalue} (in cell [{exc.exec_count}])"
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # kernel failed to start, bad notebook, ...: still a chapter failure
        return f"{type(exc).__name__}: {exc}"
    return ""


def finalize_notebook(tmp: Path, dest: Path) -> None:
    """Prepare an executed notebook for rendering, then move it into place."""
    nb = nbformat.read(tmp, as_version=4)
    hide_injected_parameters(nb)
    nbformat.write(nb, tmp)
    _readable(tmp)
    os.replace(tmp, dest)


def hide_injected_parameters(nb) -> None:
    """Tag papermill's parameters cell `remove-cell`: Quarto and nbconvert both honour cell tags."""
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if INJECTED_TAG in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = [*tags, "remove-cell"]


def _readable(path: Path) -> None:
    """Files for readers get 0644 (less whatever the umask withholds), not a temp file's 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, FILE_MODE & ~umask)


# --------------------------------------------------------------------------- provenance


def new_build_id() -> str:
    return f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}"


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """OUT/results/build.json: the latest build, and per chapter the build that last ran it."""

    def __init__(self, results_dir: Path, build_id: str, profile: str):
        self.path = results_dir / MANIFEST
        old = self._read()
        self.data = {
            "schema": MANIFEST_SCHEMA,
            "build_id": build_id,
            "started": now_iso(),
            "finished": None,
            "status": "running",
            "profile": profile,
            "chapters": old.get("chapters", {}) if old else {},
        }

    def _read(self) -> dict | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # absent or unreadable: this build starts a fresh record
        return data if isinstance(data, dict) and data.get("schema") == MANIFEST_SCHEMA else None

    @property
    def build_id(self) -> str:
        return self.data["build_id"]

    def chapter(self, stem: str) -> dict | None:
        return self.data["chapters"].get(stem)

    def set_chapter(self, stem: str, record: dict | None) -> None:
        if record is None:
            self.data["chapters"].pop(stem, None)
        else:
            self.data["chapters"][stem] = record
        self.write()

    def finish(self, status: str) -> None:
        self.data.update(status=status, finished=now_iso())
        self.write()

    def write(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=1, default=str) + "\n")


def results_build(path: Path) -> str | None:
    """The `build` field of a results file (None if unreadable or absent)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data.get("build") if isinstance(data, dict) else None


def _move(src: Path, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dest)
    return dest


# --------------------------------------------------------------------------- locking and signals


class OutputLock:
    """An exclusive lock on OUT/.build.lock: one build per output folder at a time."""

    def __init__(self, out: Path):
        self.path = out / LOCK_FILE
        self.handle = None

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise BuildError(
                f"Another build (pid {holder}) is writing into {self.path.parent}. Wait for it to finish, "
                "or build into another folder with --out."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc):
        self.handle.seek(0)
        self.handle.truncate()
        fcntl.flock(self.handle, fcntl.LOCK_UN)
        self.handle.close()


def _on_sigterm(signum, frame):
    raise BuildTerminated()


def remove_orphan_temporaries(book_dir: Path) -> None:
    """Delete temporary notebooks a killed build (SIGKILL: no cleanup) left; we hold the lock."""
    for tmp in book_dir.rglob(".*.tmp.ipynb") if book_dir.is_dir() else []:
        tmp.unlink(missing_ok=True)


def peak_child_rss_mb() -> float:
    """Peak RSS of any finished child process (the kernels), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes vs KiB


def write_atomic(path: Path, text: str) -> None:
    """Write text to path via a temporary file and os.replace; the file ends up 0644."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        _readable(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_timings(path: Path, profile: str, results: list[ChapterResult], total: float) -> dict:
    timings = {
        "profile": profile,
        "chapters": [{"chapter": r.stem, "seconds": round(r.seconds, 3), "ok": r.ok,
                      "peak_rss_mb_after": round(r.peak_rss_mb, 1)} for r in results],
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
    # Each page links its source notebook (with the `parameters` cell) under source/.
    for entry in entries:
        if entry.is_notebook and (root / entry.path).is_file():
            _copy_any(root / entry.path, book_dir / "source" / entry.path)
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
    try:
        records = json.loads((out / "results" / MANIFEST).read_text()).get("chapters", {})
    except (OSError, ValueError, AttributeError):
        records = {}
    for entry in entries:
        source = out / "book" / entry.path if entry.is_notebook else root / entry.path
        record = records.get(entry.stem) or {}
        failed_note = (
            f"This chapter failed in build {record.get('build_id')}: {record.get('error') or 'see its error notebook'}. "
            f"The error notebook is `{record.get('failed_notebook', 'failed/')}` in the build folder; "
            f"fix the cause and rebuild it with `python tools/build_book.py --chapter {entry.stem}`."
            if record.get("status") == "failed"
            else None
        )
        pages.append(
            offline_edition.PageSource(
                stem=entry.stem,
                section=entry.section,
                path=str(Path(entry.path).with_suffix(".html")),
                source=source if source.is_file() else None,
                resource_dir=(root / entry.path).parent,
                missing_note=failed_note or (
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
        config=config,  # citation metadata for every page
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
    specs: dict[str, dict[str, dict]] = field(default_factory=dict)  # stem -> papermill's parameter info


def check_out(out: Path) -> None:
    """The output folder and the folders the build writes inside it must be folders (or absent)."""
    if out.exists() and not out.is_dir():
        raise BuildError(f"--out {out} is a file, not a folder: give a folder to build into.")
    for name in ("results", "book", "failed", "stale"):
        if (out / name).exists() and not (out / name).is_dir():
            raise BuildError(
                f"{out / name} is a file, but the build keeps its {name} in that folder: move the file away "
                "or build into another folder with --out."
            )


def make_plan(args: argparse.Namespace) -> Plan:
    """Read the book and the parameters and validate them; raises BuildError."""
    root = args.root.resolve()
    out = args.out.expanduser().resolve() if args.out else root / "_build"
    check_out(out)
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
    layers.append(
        ParamLayer("-p", common={name: parse_cli_value(value) for name, value in args.params},
                   raw={name: value for name, value in args.params})
    )
    declared, specs = {}, {}
    for entry in (e for e in notebooks if (root / e.path).is_file()):
        specs[entry.stem], unparsed = declared_parameters(root / entry.path)
        declared[entry.stem] = set(specs[entry.stem])
        if unparsed and entry in selected:
            raise unreadable_parameters(root / entry.path, unparsed)
    check_parameters(layers, declared)
    problems: dict[str, list[str]] = {}  # one sentence per problem, naming every chapter it affects
    for entry in (e for e in selected if e.stem in specs):
        for problem in type_problems(entry.stem, specs[entry.stem], layers):
            problems.setdefault(problem.replace(f" of chapter {entry.stem} ", " of chapter {} ", 1), []).append(entry.stem)
    if problems:
        raise BuildError("\n".join(
            text.replace("chapter {}", ("chapters " if len(stems) > 1 else "chapter ") + ", ".join(stems))
            for text, stems in problems.items()
        ))
    check_kernels(root, selected, args.kernel)
    return Plan(root, out, config, entries, selected, layers, declared, specs)


def run_chapters(plan: Plan, profile: str, kernel: str | None, manifest: Manifest, private_dir: Path,
                 results: list[ChapterResult] | None = None) -> list[ChapterResult]:
    """Execute the selected chapters in book order, printing one line each (and their progress).

    `results` collects each finished chapter as it ends, so an interrupted build can say which.
    """
    results = [] if results is None else results
    results_dir = plan.out / "results"
    injected = {"results_dir": str(results_dir), "build_profile": profile}
    results_dir.mkdir(parents=True, exist_ok=True)
    width = max(len(e.stem) for e in plan.selected)
    manager = ipc_kernel_manager(private_dir)
    for number, entry in enumerate(plan.selected, 1):
        params = chapter_parameters(entry.stem, plan.layers, injected, plan.declared.get(entry.stem, set()))
        shown_params = {k: v for k, v in params.items() if k not in RESERVED_PARAMETERS}
        shown = ", ".join(f"{k}={v!r}" for k, v in shown_params.items())
        print(f"[{number}/{len(plan.selected)}] {entry.stem:<{width}}  {shown or '(defaults)'}", flush=True)
        result = run_one(plan, entry, params, shown_params, profile, kernel, manifest, private_dir, manager)
        status = "ok" if result.ok else "FAILED"
        print(f"      {status} in {result.seconds:.1f} s", flush=True)
        if not result.ok:
            for line in result.error.splitlines()[:6]:
                print(f"      | {line}")
            if result.failed_notebook:
                print(f"      error notebook: {show(result.failed_notebook)}")
            for path in result.set_aside:
                print(f"      earlier output set aside (not this build's): {show(path)}")
        results.append(result)
    return results


def run_one(plan, entry, params, shown_params, profile, kernel, manifest, private_dir, manager) -> ChapterResult:
    """One chapter, with its provenance: the old results wait aside while it runs.

    Success: the new page and results stand (the old results stay in OUT/stale/).
    Failure: the old page and any results move to OUT/stale/<build>/, the error notebook to OUT/failed/.
    Interrupt: everything goes back as it was before the chapter started.
    """
    out, stem, build = plan.out, entry.stem, manifest.build_id
    results_file = out / "results" / f"{stem}.json"
    dest = out / "book" / entry.path
    stale = out / "stale" / build
    previous = manifest.chapter(stem)
    record = dict(status="running", build_id=build, profile=profile, started=now_iso(), finished=None,
                  params=shown_params)
    progress = private_dir / f"progress-{stem}.txt"
    tail = ProgressTail(progress)
    env = {"LSUV_BUILD_ID": build, "LSUV_PROGRESS_FILE": str(progress)}
    held = None
    try:
        if results_file.exists():
            held = _move(results_file, stale / "results" / results_file.name)
        manifest.set_chapter(stem, record)
        tail.start()
        result = execute_chapter(plan.root / entry.path, dest, params, kernel, env=env,
                                 failed_dir=out / "failed", kernel_manager_class=manager)
    except KeyboardInterrupt:
        if tail.is_alive():
            tail.stop()
        # Results the interrupted run wrote have no page: keep them apart; the earlier ones go back.
        if results_file.exists() and results_build(results_file) == build:
            _move(results_file, out / "failed" / results_file.name)
        if held is not None:
            _move(held, results_file)
        manifest.set_chapter(stem, previous)
        raise
    tail.stop()
    record["finished"] = now_iso()
    if result.ok:
        record["status"] = "ok"
        if results_file.exists():
            _readable(results_file)
            if results_build(results_file) != build:
                print(f"      warning: {show(results_file)} does not carry this build's id", flush=True)
    else:
        record.update(status="failed", error=result.error.splitlines()[0] if result.error else "")
        if result.failed_notebook:
            record["failed_notebook"] = str(result.failed_notebook.relative_to(out))
        if results_file.exists():  # the failed run got as far as saving: keep it, out of the summary's way
            _move(results_file, out / "failed" / results_file.name)
        if dest.exists():
            result.set_aside.append(_move(dest, stale / "book" / entry.path))
        if held is not None:
            result.set_aside.append(held)
    manifest.set_chapter(stem, record)
    return result


def print_timing_table(timings: dict) -> None:
    print("\nChapter timings (slowest first):")
    for row in sorted(timings["chapters"], key=lambda r: -r["seconds"]):
        print(f"  {row['seconds']:8.1f} s  {row['chapter']}{'' if row['ok'] else '  (failed)'}")
    print(f"  {timings['total_seconds']:8.1f} s  total; peak kernel RSS {timings['peak_rss_mb']:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = make_plan(args)
        lock = OutputLock(plan.out).__enter__()
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    previous_handler = signal.signal(signal.SIGTERM, _on_sigterm)
    results: list[ChapterResult] = []
    try:
        return _build(plan, args, results)
    except KeyboardInterrupt as exc:
        what = "terminated" if isinstance(exc, BuildTerminated) else "interrupted"
        done = [r.stem for r in results]
        running = next((e.stem for e in plan.selected if e.stem not in done), None)
        print(
            f"\nBuild {what}{f' during {running}' if running else ''}. Finished in this build: "
            f"{', '.join(done) or 'none'}; their outputs in {show(plan.out)} are intact"
            f"{f', and {running} keeps its earlier output' if running else ''}.",
            file=sys.stderr,
        )
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
        lock.__exit__(None, None, None)


def _build(plan: Plan, args: argparse.Namespace, results: list[ChapterResult]) -> int:
    remove_orphan_temporaries(plan.out / "book")
    manifest = Manifest(plan.out / "results", new_build_id(), args.profile)
    manifest.write()
    print(
        f"Building {len(plan.selected)} chapter(s), profile '{args.profile}', into {show(plan.out)} "
        f"(build {manifest.build_id})",
        flush=True,
    )
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="lsuv-build-") as private:  # 0700: kernel sockets, progress
            run_chapters(plan, args.profile, args.kernel, manifest, Path(private), results)
    except KeyboardInterrupt:
        manifest.finish("interrupted")
        raise
    manifest.finish("finished")
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
