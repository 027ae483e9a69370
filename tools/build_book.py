#!/usr/bin/env python3
"""Build the book: run every chapter notebook with papermill, then render the site with Quarto.

    python tools/build_book.py [--chapter X]... [-p NAME VALUE]... [-f FILE.yaml] [--profile NAME]
                               [--out DIR] [--no-render] [--force] [--kernel NAME] [--timings]

Pages come from _quarto.yml and run in book order, the home page (which sums up the others) last.
Parameters layer as profile (params/NAME.yaml) < -f FILE < -p; a chapter gets only the names its
`parameters` cell declares, type-checked against their defaults before any kernel starts.
A build into OUT (default _build/) keeps these promises: one build per OUT at a time, and a killed
one is found by the next; a chapter's page (OUT/book/) and results (OUT/results/) change only when
it succeeds, and what a failed or interrupted run leaves goes to OUT/failed/ and OUT/stale/<build>/;
the manifest OUT/results/build.json records the run behind each chapter's outputs, with the results
file's SHA-256; a chapter whose key (code, parameters, lsuvlib's source, data, torch, kernel, and the
results of the pages before it) is unchanged is reused, its prose refreshed (--force re-runs it);
a site that no longer matches the results moves to OUT/stale/.
Exit status: 0 built, 1 a chapter or the render failed, 2 usage error (nothing ran), 130 interrupted.
"""
from __future__ import annotations

import argparse
import ast
import datetime as dt
import difflib
import hashlib
import importlib.metadata
import importlib.util
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
from pathlib import Path

import filelock
import nbformat
import papermill
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the lsuvlib beside this tool, installed or not
from lsuvlib.atomic import atomic_open, write_text  # noqa: E402
from lsuvlib.results import BUILD_ENV, BUILD_MANIFEST, MANIFEST_SCHEMA, file_sha256  # noqa: E402

RESERVED = ("results_dir",)  # set by the build: results go where the site links them
QUARTO_HOME = ".quarto-cli"  # where `make setup` installs Quarto when none is on PATH
STAGED = ("_quarto.yml", "site", "*.bib", "images", "reference")  # what Quarto needs beside the executed pages
DATA_ROOTS = ("data", "/usr/share/datasets/fashion-mnist")  # with $LSUV_DATA_DIR: where data comes from


class BuildError(Exception):
    """A problem with the command line or the book, reported before anything runs (exit 2)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every `finally` still runs."""


class ParamLoader(yaml.SafeLoader):
    """Reads `1e-3` as a float, as YAML 1.2 does (PyYAML alone: a string)."""


ParamLoader.add_implicit_resolver("tag:yaml.org,2002:float",
                                  re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"), list("-+0123456789."))


# --------------------------------------------------------------------------- the book and its parameters

def book_pages(root: Path) -> list[str]:
    """Page paths from _quarto.yml in reading order (book.chapters, parts included, then book.appendices)."""
    try:
        book = (yaml.safe_load((root / "_quarto.yml").read_text()) or {}).get("book")
    except OSError:
        raise BuildError(f"{root / '_quarto.yml'} not found: is {root} the project folder?") from None

    def walk(items):
        for item in items or []:
            if isinstance(item, str):
                yield item
            elif isinstance(item, dict):
                yield from ([item["part"]] if str(item.get("part", "")).endswith((".md", ".qmd", ".ipynb")) else [])
                yield from walk(item.get("chapters"))
    pages = [*walk((book or {}).get("chapters")), *walk((book or {}).get("appendices"))]
    if not any(p.endswith(".ipynb") for p in pages):
        raise BuildError(f"{root / '_quarto.yml'} lists no .ipynb pages under book.chapters")
    return pages


def stem(page: str) -> str:
    return Path(page).stem


def match_chapter(selector: str, notebooks: list[str]) -> str:
    """The notebook a user means: its stem, its number (3 or 03), or its name (baseline)."""
    wanted = stem(selector) if selector.endswith(".ipynb") else selector
    number = lambda p: int(m.group(1)) if (m := re.match(r"(\d+)-", stem(p))) else None  # noqa: E731
    rules = [lambda p: stem(p) == wanted, lambda p: wanted.isdigit() and number(p) == int(wanted)]
    if not wanted.isdigit():  # a bare number is never part of a name ("0" is in every stem)
        rules += [lambda p: re.sub(r"^\d+-", "", stem(p)) == wanted, lambda p: wanted in stem(p)]
    for rule in rules:
        found = [p for p in notebooks if rule(p)]
        if len(found) > 1:
            raise BuildError(f"Chapter '{selector}' is ambiguous: it matches {', '.join(map(stem, found))}.")
        if found:
            return found[0]
    raise BuildError(f"Unknown chapter '{selector}'. Chapters: {', '.join(map(stem, notebooks))} "
                     "(give a stem, a number like 3, or a name like baseline).")


def param_layer(source: str, data, notebooks: list[str], raw: dict | None = None) -> dict:
    """One source of parameters: {"source", "common", "chapters": {stem: {...}}, "raw": -p text as typed}."""
    data = dict(data or {})
    per = data.pop("chapters", None) or {}
    if not isinstance(per, dict) or not all(isinstance(v, dict) for v in per.values()):
        raise BuildError(f"In {source}, `chapters:` must map chapter names to {{name: value}} mappings.")
    chapters = {}
    for selector, values in per.items():
        try:
            chapters.setdefault(stem(match_chapter(str(selector), notebooks)), {}).update(values)
        except BuildError as exc:
            raise BuildError(f"In {source}, under `chapters:`: {exc}") from None
    return dict(source=source, common=data, chapters=chapters, raw=raw or {})


def read_param_file(path: Path, source: str, notebooks: list[str]) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=ParamLoader)
    except OSError as exc:
        raise BuildError(f"Cannot read parameter file {path}: {exc.strerror}.") from None
    except yaml.YAMLError as exc:
        raise BuildError(f"Parameter file {path} is not valid YAML:\n{exc}") from None
    if data is not None and not isinstance(data, dict):
        raise BuildError(f"Parameter file {path} must be a mapping of name: value.")
    return param_layer(source, data, notebooks)


def declared(notebook: Path) -> dict[str, dict]:
    """The `parameters` cell as papermill reads it; a line papermill would skip is an error."""
    skipped: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: skipped.append(record.getMessage())
    logging.getLogger("papermill.translators").addHandler(handler)
    try:
        specs = dict(papermill.inspect_notebook(notebook))
    except ValueError as exc:
        raise BuildError(f"Cannot read the parameters of {notebook}: {exc}") from None
    finally:
        logging.getLogger("papermill.translators").removeHandler(handler)
    if unreadable := [m for m in skipped if m.startswith("Unable to parse line")]:
        raise BuildError(f"papermill cannot read the `parameters` cell of {notebook}:\n  " + "\n  ".join(unreadable)
                         + "\nKeep one '=' per line (write '# None: the whole split', not '# None = ...').")
    return specs


WORDS = {"bool": "a bool", "int": "an int", "float": "a float", "str": "a string", "list": "a list",
         "dict": "a mapping", "NoneType": "null"}


def kind(value) -> str:
    return type(value).__name__


def literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return NotImplemented  # not a literal: nothing to check against


def expected(value, spec: dict) -> str | None:
    """What `value` should have been when its type does not fit the parameter's default, else None.

    An int fits a float; a null default takes a count or null; "None" in the comment allows null.
    """
    default = literal(spec.get("default", ""))
    if kind(default) not in WORDS:
        return None
    kinds = {kind(default)} | ({"int"} if isinstance(default, float) or default is None else set())
    kinds |= {"NoneType"} if "None" in (spec.get("help") or "") else set()
    if kind(value) not in kinds:
        return " or ".join(sorted(WORDS[k] for k in kinds))
    if isinstance(value, list) and default and len({kind(d) for d in default}) == 1:
        items = {kind(default[0])} | ({"int"} if isinstance(default[0], float) else set())
        if bad := [v for v in value if kind(v) not in items]:
            return f"a list of {WORDS[kind(default[0])].split()[1]}s ({bad[0]!r} is not)"
    return None


def final_values(chapter: str, layers: list[dict]) -> dict[str, tuple[object, dict]]:
    """Each parameter's value for one chapter, with the layer that set it last."""
    values = {}
    for layer in layers:
        values.update({k: (v, layer) for k, v in [*layer["common"].items(), *layer["chapters"].get(chapter, {}).items()]})
    return values


def type_problems(specs: dict[str, dict[str, dict]], layers: list[dict]) -> list[str]:
    """One sentence per wrongly typed value, naming every chapter it reaches."""
    problems: dict[str, list[str]] = {}
    for chapter, spec in specs.items():
        for name, (value, layer) in sorted(final_values(chapter, layers).items()):
            if name in spec and (want := expected(value, spec[name])):
                given = f"{layer['raw'].get(name, value)!r} ({WORDS.get(kind(value), kind(value))})"
                problems.setdefault(f"Parameter '{name}' of {{}} must be {want} (its default is "
                                    f"{spec[name]['default']}), but {layer['source']} gives {given}.", []).append(chapter)
    return [text.format(("chapters " if len(cs) > 1 else "chapter ") + ", ".join(cs)) for text, cs in problems.items()]


def check_names(layers: list[dict], specs: dict[str, dict]) -> None:
    """Every parameter must be declared by a chapter it reaches; reserved names are the build's."""
    everywhere = set().union(*map(set, specs.values()))
    for layer in layers:
        for chapter, names in [(None, layer["common"]), *layer["chapters"].items()]:
            allowed = everywhere if chapter is None else set(specs.get(chapter, {}))
            for name in names:
                where = layer["source"] + (f", chapters.{chapter}" if chapter else "")
                if name in RESERVED:
                    raise BuildError(f"Parameter '{name}' (from {where}) is set by the build itself; use --out instead.")
                if name not in allowed:
                    hint = difflib.get_close_matches(name, allowed, n=1)
                    listing = "\n".join(f"  {n}: {', '.join(c for c in specs if n in specs[c])}"
                                        for n in sorted(everywhere - set(RESERVED)))
                    raise BuildError(f"Unknown parameter '{name}' (from {where}): no chapter it reaches declares it in "
                                     f"its `parameters` cell.{f' Did you mean {hint[0]!r}?' if hint else ''}\n"
                                     f"Declared parameters and their chapters:\n{listing}")


# --------------------------------------------------------------------------- the plan

def parse_args(argv):
    p = argparse.ArgumentParser(prog="python tools/build_book.py", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add("--chapter", action="append", default=[], metavar="X", help="only this chapter (stem, number or name)")
    add("-p", dest="params", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
        help="set a parameter; VALUE is read as YAML (1 is an int)")
    add("-f", dest="param_file", type=Path, metavar="FILE.yaml", help="a parameter file (as params/*.yaml)")
    add("--profile", default="default", help="load params/NAME.yaml (default: %(default)s)")
    add("--out", type=Path, help="output folder (default: _build in the project)")
    add("--no-render", action="store_true", help="run the notebooks only; do not render the site")
    add("--force", action="store_true", help="re-run chapters whose inputs did not change")
    add("--kernel", help="Jupyter kernel for every chapter (default: each notebook's own)")
    add("--timings", action="store_true", help="print a table of chapter times at the end")
    add("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # tests: a throwaway project
    return p.parse_args(argv)


def make_plan(args) -> dict:
    """Everything decided before the first kernel starts; raises BuildError."""
    root = args.root.resolve()
    out = args.out.expanduser().resolve() if args.out else root / "_build"
    for folder in (out, *(out / n for n in ("results", "book", "failed", "stale"))):
        if folder.exists() and not folder.is_dir():
            raise BuildError(f"{folder} is a file, but the build writes a folder there: move it, or use --out.")
    pages = book_pages(root)
    notebooks = [p for p in pages if p.endswith(".ipynb")]
    order = sorted(notebooks, key=lambda p: stem(p) == "index")  # the home page sums up the others: last
    selected = {match_chapter(s, notebooks) for s in args.chapter} or set(notebooks)
    profile = root / "params" / f"{args.profile}.yaml"
    if not profile.is_file() and args.profile != "default":
        names = ", ".join(sorted(p.stem for p in (root / "params").glob("*.yaml"))) or "none"
        raise BuildError(f"Unknown profile '{args.profile}': {profile} does not exist. Available: {names}.")
    layers = [read_param_file(profile, f"profile '{args.profile}'", notebooks)] if profile.is_file() else []
    if args.param_file:
        layers.append(read_param_file(args.param_file.resolve(), f"-f {args.param_file}", notebooks))
    layers.append(param_layer("-p", {n: cli_value(v) for n, v in args.params}, notebooks, raw=dict(args.params)))
    specs = {stem(p): declared(root / p) for p in notebooks if (root / p).is_file()}
    check_names(layers, specs)
    if problems := type_problems({stem(p): specs[stem(p)] for p in notebooks if p in selected and stem(p) in specs}, layers):
        raise BuildError("\n".join(problems))
    quarto = None if args.no_render else find_quarto(root)
    if not args.no_render and not quarto:
        raise BuildError(f"Quarto is needed to render the site and was not found on PATH or in {root / QUARTO_HOME}. "
                         "Run `make setup` (it installs Quarto), install it yourself (quarto.org, or conda-forge's "
                         "`quarto`), or pass --no-render to run the notebooks only.")
    kernels = {p: args.kernel or nbformat.read(root / p, 4).metadata.get("kernelspec", {}).get("name") or "python3"
               for p in notebooks if p in selected and (root / p).is_file()}
    from jupyter_client.kernelspec import KernelSpecManager
    installed = set(KernelSpecManager().find_kernel_specs())
    for page, name in kernels.items():
        if name not in installed:
            hint = difflib.get_close_matches(name, installed, n=1)
            raise BuildError(f"Unknown Jupyter kernel '{name}' (from {'--kernel' if args.kernel else page}). Installed: "
                             f"{', '.join(sorted(installed))}{f'; did you mean {hint[0]!r}?' if hint else ''}.")
    params = {p: {k: v for k, (v, _) in final_values(stem(p), layers).items() if k in specs.get(stem(p), {})}
              for p in notebooks}
    citation = (yaml.safe_load((root / "_quarto.yml").read_text()) or {}).get("citation") or {}
    return dict(root=root, out=out, pages=pages, order=[p for p in order if p in selected], params=params,
                specs=specs, kernels=kernels, quarto=quarto, citation=citation, args=args)


def cli_value(text: str):
    """A `-p` value read as YAML (`1` an int, `[1, 2]` a list); text YAML cannot read stays text."""
    try:
        return yaml.load(text, Loader=ParamLoader) if text.strip() else text
    except yaml.YAMLError:
        return text


def find_quarto(root: Path) -> str | None:
    """Quarto on PATH, else the one `make setup` put in the project."""
    local = root / QUARTO_HOME / "bin" / "quarto"
    return shutil.which("quarto") or (str(local) if os.access(local, os.X_OK) else None)


# --------------------------------------------------------------------------- keys: what produced a chapter

def code_of(nb) -> list[str]:
    """A notebook's code cells without their `#|` options (captions do not change what runs)."""
    return ["\n".join(ln for ln in c.source.splitlines() if not ln.startswith("#|"))
            for c in nb.cells if c.cell_type == "code"]


def environment_key(root: Path) -> str:
    """lsuvlib's source, the data the chapters may read, and torch's version."""
    spec = importlib.util.find_spec("lsuvlib")
    lib = Path(spec.origin).parent if spec and spec.origin else root / "lsuvlib"
    h = hashlib.sha256()
    for path in sorted(lib.glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    for folder in [*filter(None, os.environ.get("LSUV_DATA_DIR", "").split(os.pathsep)), *DATA_ROOTS]:
        folder = root / folder
        for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
            if path.is_file() and not path.name.startswith("."):
                h.update(f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode())
    for package in ("torch", "torchvision"):
        try:
            h.update(importlib.metadata.version(package).encode())
        except importlib.metadata.PackageNotFoundError:
            pass
    return h.hexdigest()


def chapter_key(plan: dict, page: str, env: str, before: dict[str, str | None]) -> str:
    nb = nbformat.read(plan["root"] / page, 4)
    return hashlib.sha256(json.dumps(dict(code=code_of(nb), params=plan["params"][page], env=env, before=before,
                                          kernel=plan["kernels"][page]), sort_keys=True, default=repr).encode()).hexdigest()


# --------------------------------------------------------------------------- the manifest and the lock

def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Manifest:
    """OUT/results/build.json: this build, and per chapter the run its outputs come from."""

    def __init__(self, out: Path, profile: str):
        self.path, self.out = out / "results" / BUILD_MANIFEST, out
        self.build_id = f"{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}"
        old, self.notes = {}, []
        if self.path.exists():
            try:
                old = json.loads(self.path.read_text())
                assert isinstance(old, dict) and old.get("schema") == MANIFEST_SCHEMA
            except (ValueError, AssertionError, OSError):
                kept = move(self.path, out / "stale" / self.build_id / "results" / BUILD_MANIFEST)
                self.notes.append(f"The manifest {show(self.path)} was unreadable (truncated?); kept as {show(kept)}, "
                                  "and its chapters count as not built.")
                old = {}
        self.data = dict(schema=MANIFEST_SCHEMA, build_id=self.build_id, started=now(), finished=None,
                         status="running", profile=profile, pid=os.getpid(), chapters=old.get("chapters", {}))
        if old.get("status") == "running":  # we hold the lock, so that build is gone
            self.notes.append(f"Build {old.get('build_id')} did not finish (killed?). What it was running is set aside.")
            for name, record in self.data["chapters"].items():
                if record.get("status") == "running":
                    aside = self.set_aside(name, record.get("page", f"{name}.ipynb"))
                    record.update(status="killed", error=f"build {old.get('build_id')} died while running it")
                    self.notes.append(f"  {name}: its page and results moved to {show(aside)}.")
            retire_site(out, self.build_id, "it was rendered before the build that died")

    def set_aside(self, name: str, page: str) -> Path:
        """Move a chapter's page and results to OUT/stale/<this build>/ (nothing is deleted)."""
        aside = self.out / "stale" / self.build_id
        for src, dst in [(self.out / "results" / f"{name}.json", aside / "results" / f"{name}.json"),
                         (self.out / "book" / page, aside / "book" / page)]:
            if src.is_file():
                move(src, dst)
        return aside

    def record(self, name: str, record: dict | None) -> None:
        self.data["chapters"].pop(name, None) if record is None else self.data["chapters"].__setitem__(name, record)
        self.write()

    def finish(self, status: str) -> None:
        self.data.update(status=status, finished=now())
        self.write()

    def write(self) -> None:
        with atomic_open(self.path) as f:
            json.dump(self.data, f, indent=1, default=str)


def lock(out: Path) -> filelock.FileLock:
    try:
        out.mkdir(parents=True, exist_ok=True)
        held = filelock.FileLock(out / ".build.lock", timeout=0)
        held.acquire()
    except filelock.Timeout:
        raise BuildError(f"Another build is writing into {out}. Wait for it to finish, or use another --out.") from None
    except OSError as exc:
        raise BuildError(f"Cannot write into {out} ({exc.strerror.lower()}): choose a folder you can write with --out.") from None
    return held


def move(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.replace(src, dst)
    return dst


def retire_site(out: Path, build_id: str, why: str) -> None:
    """A rendered site that no longer matches the results moves to OUT/stale/<build>/site."""
    if (out / "site").is_dir():
        print(f"The rendered site no longer matches the results ({why}): moved to "
              f"{show(move(out / 'site', out / 'stale' / build_id / 'site'))}.", flush=True)


def show(path: Path) -> str:
    """A path relative to the current folder when inside it, for short messages."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- running one chapter

def kernel_manager(private: Path, log: Path | None = None):
    """Kernels that talk over IPC sockets in a 0700 folder, not TCP that any local user could reach.

    With `log`, the kernel's own stderr goes to that file: on Ctrl-C or SIGTERM ipykernel prints
    shutdown tracebacks (ZMQError) there, which must not reach the build's output.
    """
    from jupyter_client import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport, self.ip = "ipc", tempfile.mktemp(dir=private, prefix="kernel-")  # socket file prefix
            self.connection_file = self.ip + ".json"

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            if log is None:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            with open(log, "ab") as stderr:  # the kernel keeps its own copy of the descriptor
                return await super()._async_launch_kernel(kernel_cmd, **kw, stderr=stderr)

        async def _async_interrupt_kernel(self):
            if not self.shutting_down:  # an interrupt before shutdown only logs noise into the build output
                await super()._async_interrupt_kernel()
    return IPCKernelManager


class ProgressTail(threading.Thread):
    """Prints, indented, each whole line the kernel appends to $LSUV_PROGRESS_FILE."""

    def __init__(self, path: Path):
        super().__init__(daemon=True)
        self.path, self.offset, self.partial, self.done = path, 0, "", threading.Event()

    def run(self):
        while not self.done.wait(0.2):
            self.drain()

    def drain(self):
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                f.seek(self.offset)
                text, self.offset = f.read(), f.tell()
        except FileNotFoundError:
            return
        *lines, self.partial = (self.partial + text).split("\n")
        for line in filter(str.strip, lines):
            print(f"      · {line.rstrip()}", flush=True)

    def stop(self):
        self.done.set()
        self.join()
        self.drain()


def execute(plan: dict, page: str, tmp: Path, env: dict, private: Path) -> str:
    """Run one notebook into `tmp`; return the error, or "" on success."""
    src = plan["root"] / page
    tmp.parent.mkdir(parents=True, exist_ok=True)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits the build's environment
    tail, log = ProgressTail(Path(env["LSUV_PROGRESS_FILE"])), private / f"kernel-{stem(page)}.stderr"
    tail.start()
    try:
        papermill.execute_notebook(src, tmp, parameters={**plan["params"][page], **({"results_dir": str(plan["out"] / "results")}
                                                                          if "results_dir" in plan["specs"][stem(page)] else {})},
                                   kernel_name=plan["kernels"][page], cwd=src.parent, progress_bar=False,
                                   kernel_manager_class=kernel_manager(private, log))
        return ""
    except papermill.PapermillExecutionError as exc:
        return f"{exc.ename}: {exc.evalue} (in cell [{exc.exec_count}])"
    except Exception as exc:  # a kernel that would not start or died, a notebook papermill cannot write, ...
        last = log.read_text(errors="replace").strip().splitlines()[-5:] if log.is_file() else []
        print("".join(f"      kernel stderr: {line}\n" for line in last), end="", flush=True)
        return f"{type(exc).__name__}: {exc}"
    finally:
        tail.stop()
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def cite_as(front: dict, markdown: str, citation: dict) -> dict:
    """Front matter with the page's plain title as its citation title (Quarto 1.9 puts a book chapter's
    number markup there); a page's `citation` replaces the project's, so the project's fields come along."""
    heading = re.search(r"^# (.+?)(?:\s*\{[^}]*\})?\s*$", markdown, re.M)
    if heading and "citation" not in front:
        front["citation"] = {**citation, "title": re.sub(r"[`*]", "", heading.group(1))}  # plain text
    return front


def finish_page(nb, page: str, run: dict, citation: dict) -> None:
    """What the site shows about the run, as front matter for site/page.lua: notebook links, time, changes."""
    nb.cells = [c for c in nb.cells if "lsuv-run" not in c.metadata.get("tags", [])]
    for cell in nb.cells:  # papermill's cell of injected values: Quarto drops cells tagged remove-cell
        if "injected-parameters" in cell.metadata.get("tags", []):
            cell.metadata["tags"] = sorted({*cell.metadata["tags"], "remove-cell"})
    source = os.path.relpath(f"source/{page}", Path(page).parent)
    front = {"code-links": [{"text": "Executed notebook (this run)", "href": Path(page).name, "icon": "file-code"},
                            {"text": "Source notebook (to re-run)", "href": source, "icon": "journal-code"}],
             "lsuv-run": run}
    own = nb.cells[0].source.strip() if nb.cells and nb.cells[0].cell_type == "raw" else ""
    if own.startswith("---") and own.endswith("---"):  # the page's own front matter: Quarto reads only the first
        front = {**(yaml.safe_load(own[3:-3]) or {}), **front}
        nb.cells.pop(0)
    cite_as(front, "\n".join(c.source for c in nb.cells if c.cell_type == "markdown"), citation)
    cell = nbformat.v4.new_raw_cell("---\n" + yaml.safe_dump(front, sort_keys=False) + "---")
    cell.metadata["tags"] = ["lsuv-run"]
    nb.cells.insert(0, cell)


def refresh(src: Path, executed: Path) -> nbformat.NotebookNode:
    """The source notebook's prose and cell options with the executed copy's outputs (same code cells)."""
    new, old = nbformat.read(src, 4), nbformat.read(executed, 4)
    old_code = [c for c in old.cells if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    injected = [c for c in old.cells if "injected-parameters" in c.metadata.get("tags", [])]
    cells = []
    for cell in new.cells:
        if cell.cell_type == "code":
            done = old_code.pop(0)
            cell.outputs, cell.execution_count = done.outputs, done.execution_count
        cells.append(cell)
        if "parameters" in cell.metadata.get("tags", []):
            cells += injected
    old.cells = cells
    return old


def run_chapter(plan: dict, page: str, manifest: Manifest, key: str, private: Path) -> dict:
    """Run (or reuse) one chapter; returns its manifest record.

    While it runs, its earlier results wait in OUT/stale/<build>/; an interrupt puts them back.
    """
    out, name = plan["out"], stem(page)
    dest, results = out / "book" / page, out / "results" / f"{name}.json"
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.tmp.ipynb")
    previous = manifest.data["chapters"].get(name) or {}
    if (not plan["args"].force and previous.get("status") == "ok" and previous.get("key") == key and dest.is_file()
            and previous.get("results_sha256") == (file_sha256(results) if results.is_file() else None)):
        nb = refresh(plan["root"] / page, dest)
        finish_page(nb, page, previous["run"], plan["citation"])
        write_notebook(nb, dest)
        print(f"      reused: unchanged since build {previous['run']['build']}, which ran it in "
              f"{previous['seconds']:.1f} s", flush=True)
        return previous | {"reused_in": manifest.build_id}
    spec, params = plan["specs"][name], plan["params"][page]
    shown = lambda v: "none" if v is None else repr(v)  # noqa: E731  (prose on the page: no Python None)
    changed = ", ".join(f"{k} = {shown(v)} (default {shown(literal(spec[k]['default']))})" for k, v in params.items()
                        if k in spec and literal(spec[k]["default"]) != v)
    record = dict(status="running", build_id=manifest.build_id, page=page, key=key, params=params, started=now())
    held = move(results, out / "stale" / manifest.build_id / "results" / results.name) if results.is_file() else None
    manifest.record(name, record)
    start = time.perf_counter()
    env = {BUILD_ENV: manifest.build_id, "LSUV_PROGRESS_FILE": str(private / f"progress-{name}.txt")}
    try:
        error = execute(plan, page, tmp, env, private)
    except KeyboardInterrupt:  # everything back as it was; what this run wrote has no page
        tmp.unlink(missing_ok=True)
        if results.is_file():
            move(results, out / "failed" / results.name)
        if held:
            move(held, results)
        manifest.record(name, previous or None)
        raise
    record.update(finished=now(), seconds=round(time.perf_counter() - start, 1), peak_rss_mb=peak_rss_mb())
    data = json.loads(results.read_text()) if results.is_file() else None
    if data is not None and data.get("build") != manifest.build_id:
        error = error or f"{results.name} does not carry this build's id: the notebook did not write it through lsuvlib"
    if error:
        record.update(status="failed", error=error.splitlines()[0])
        if results.is_file():
            move(results, out / "failed" / results.name)
        if dest.is_file():
            move(dest, out / "stale" / manifest.build_id / "book" / page)
        try:  # keep the error notebook only when it is whole (a file-size limit can cut it short)
            nbformat.read(tmp, 4)
            record["failed_notebook"] = str(move(tmp, out / "failed" / f"{name}.ipynb").relative_to(out))
        except Exception:
            tmp.unlink(missing_ok=True)
        record["set_aside"] = f"stale/{manifest.build_id}"
        return record
    record.update(status="ok", results_sha256=file_sha256(results) if data else None,
                  run=dict(seconds=record["seconds"], finished=record["finished"], build=manifest.build_id,
                           machine=machine((data or {}).get("device", "cpu")), changed=changed))
    nb = nbformat.read(tmp, 4)
    finish_page(nb, page, record["run"], plan["citation"])
    write_notebook(nb, dest)
    tmp.unlink()
    return record


def write_notebook(nb, dest: Path) -> None:
    with atomic_open(dest) as f:
        nbformat.write(nb, f)


def machine(device: str) -> str:
    gpu = "" if device.startswith("cpu") else f", {device}"
    return f"{os.cpu_count()} CPU cores{gpu or ', no GPU'}"


def peak_rss_mb() -> float:
    """Peak resident memory of any finished child process (the kernels), in MiB."""
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(peak / 2**20 if sys.platform == "darwin" else peak / 2**10, 1)


# --------------------------------------------------------------------------- the site

def render(plan: dict, manifest: Manifest) -> bool:
    """Stage the executed pages with what Quarto needs, render into a new folder, then swap it in."""
    root, out = plan["root"], plan["out"]
    book = out / "book"
    for pattern in STAGED:
        for src in root.glob(pattern):
            copy(src, book / src.name)
    for page in plan["pages"]:
        if not page.endswith(".ipynb"):  # a Markdown page: its front matter gets the citation title too
            if not (root / page).is_file():  # written by quartodoc, or missing: Quarto says which
                continue
            text = (root / page).read_text()
            front, body = re.fullmatch(r"(?:---\n(.*?)\n---\n)?(.*)", text, re.S).groups()
            front = cite_as(yaml.safe_load(front or "") or {}, body, plan["citation"])
            (book / page).parent.mkdir(parents=True, exist_ok=True)
            write_text(book / page, "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True) + "---\n" + body)
        else:
            copy(root / page, book / "source" / page)
            if not (book / page).is_file() or manifest.data["chapters"].get(stem(page), {}).get("status") != "ok":
                write_notebook(placeholder(root, page, manifest.data["chapters"].get(stem(page))), book / page)
    copy(out / "results", book / "results")
    new, site = book / "_book", out / "site"
    shutil.rmtree(new, ignore_errors=True)
    steps = [("quarto render", [plan["quarto"], "render", str(book)])]
    if "quartodoc" in (yaml.safe_load((book / "_quarto.yml").read_text()) or {}):
        if importlib.util.find_spec("quartodoc") is None:
            print("_quarto.yml has a `quartodoc:` section, but quartodoc is not installed: run "
                  "`pip install -e '.[book]'` (or `make setup`).", flush=True)
            retire_site(out, manifest.build_id, "quartodoc is not installed")
            return False
        # The API reference's pages first, documenting the project's own package (first on the path).
        steps.insert(0, ("quartodoc build", [sys.executable, "-m", "quartodoc", "build"]))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    print(f"Rendering the site with {plan['quarto']}", flush=True)
    for name, command in steps:
        if subprocess.run(command, cwd=book, env=env).returncode != 0:
            shutil.rmtree(new, ignore_errors=True)
            print(f"{name} failed (its output is above).", flush=True)
            retire_site(out, manifest.build_id, f"{name} failed")
            return False
    if site.exists():
        os.replace(site, out / ".site.old")
    os.replace(new, site)
    shutil.rmtree(out / ".site.old", ignore_errors=True)
    print(f"Site: {show(site / 'index.html')}")
    return True


def placeholder(root: Path, page: str, record: dict | None) -> nbformat.NotebookNode:
    """The page of a chapter with no good run: what happened and how to build it."""
    cells = nbformat.read(root / page, 4).cells if (root / page).is_file() else []
    title = next((c.source.splitlines()[0] for c in cells if c.cell_type == "markdown" and c.source.startswith("# ")),
                 f"# {stem(page)}")
    front = [c for c in cells[:1] if c.cell_type == "raw" and c.source.startswith("---")]  # an unnumbered title, say
    why = (f"Its last run failed in build {record['build_id']}: `{record.get('error', '')}`."
           if record and record.get("status") in ("failed", "killed") else "It has not been built yet.")
    return nbformat.v4.new_notebook(cells=[*front, nbformat.v4.new_markdown_cell(
        f"{title}\n\n::: {{.callout-warning}}\n## Not built\n{why} Build it with "
        f"`python tools/build_book.py --chapter {stem(page)}`.\n:::\n")])


def copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir():
        shutil.copytree(src, dst, dirs_exist_ok=True)
    elif src.is_file():
        shutil.copy2(src, dst)


# --------------------------------------------------------------------------- main

def main(argv=None) -> int:
    args = parse_args(argv)
    for name in ("LSUV_DATA_DIR", "LSUV_CACHE_DIR"):  # kernels run in chapters/: relative means "from here"
        if os.environ.get(name):
            os.environ[name] = os.pathsep.join(str(Path(p).resolve()) for p in os.environ[name].split(os.pathsep))
    try:
        plan = make_plan(args)
        held = lock(plan["out"])
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(Terminated()))
    done: list[str] = []
    manifest = None
    try:
        manifest = Manifest(plan["out"], args.profile)
        return build(plan, manifest, done)
    except KeyboardInterrupt as exc:
        # nbclient's pending kernel polls may report the kernel they are tearing down as dead: noise, not news
        logging.getLogger("asyncio").disabled = True
        if manifest:
            manifest.finish("interrupted")
            retire_site(plan["out"], manifest.build_id, "the build was interrupted")
        running = next((stem(p) for p in plan["order"] if stem(p) not in done), None)
        print(f"\nBuild {'terminated' if isinstance(exc, Terminated) else 'interrupted'}"
              f"{f' during {running}' if running else ''}. Finished in this build: {', '.join(done) or 'none'}; "
              f"their outputs in {show(plan['out'])} are intact"
              f"{f', and {running} keeps its earlier output' if running else ''}.", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        held.release()


def build(plan: dict, manifest: Manifest, done: list[str]) -> int:
    for note in manifest.notes:
        print(note, flush=True)
    manifest.write()
    print(f"Building {len(plan['order'])} page(s), profile '{plan['args'].profile}', into {show(plan['out'])} "
          f"(build {manifest.build_id})", flush=True)
    for tmp in (plan["out"] / "book").rglob(".*.tmp.ipynb"):  # left by a killed build; we hold the lock
        tmp.unlink()
    env, start, failed = environment_key(plan["root"]), time.perf_counter(), []
    with tempfile.TemporaryDirectory(prefix="lsuv-build-") as private:
        for i, page in enumerate(plan["order"], 1):
            name = stem(page)
            shown = ", ".join(f"{k}={v!r}" for k, v in plan["params"][page].items())
            print(f"[{i}/{len(plan['order'])}] {name}  {shown or '(defaults)'}", flush=True)
            (plan["out"] / "book" / page).parent.mkdir(parents=True, exist_ok=True)
            before = {stem(p): manifest.data["chapters"].get(stem(p), {}).get("results_sha256")
                      for p in plan["order"][: i - 1]}
            record = run_chapter(plan, page, manifest, chapter_key(plan, page, env, before), Path(private))
            manifest.record(name, record)
            done.append(name)
            if record["status"] != "ok":
                failed.append(name)
                print(f"      FAILED in {record['seconds']:.1f} s: {record['error']}", flush=True)
                if record.get("failed_notebook"):
                    print(f"      error notebook: {show(plan['out'] / record['failed_notebook'])}", flush=True)
                print(f"      its earlier page and results, if any: {show(plan['out'] / record['set_aside'])}", flush=True)
            elif "reused_in" not in record:
                print(f"      ok in {record['seconds']:.1f} s", flush=True)
    from lsuvlib.results import load_build, write_combined
    write_combined(load_build(plan["out"] / "results"), plan["out"] / "results" / "all-results.csv")
    if plan["args"].timings:
        rows = [(r.get("seconds", 0.0), n, "reused" if "reused_in" in r else r["status"])
                for n, r in manifest.data["chapters"].items() if n in done]
        print("\nChapter times (slowest first):\n" + "\n".join(f"  {s:8.1f} s  {n} ({how})" for s, n, how in sorted(rows)[::-1]))
    if plan["args"].no_render:
        retire_site(plan["out"], manifest.build_id, "--no-render")
        rendered = True
    else:
        started = time.perf_counter()
        rendered = render(plan, manifest)
        manifest.data["render_seconds"] = round(time.perf_counter() - started, 1)
    manifest.data["seconds"] = seconds = round(time.perf_counter() - start, 1)
    manifest.finish("failed" if failed or not rendered else "finished")
    reused = sum("reused_in" in manifest.data["chapters"][n] for n in done)
    built = f"{len(done) - len(failed)} of {len(done)} page(s) built{f' ({reused} reused)' if reused else ''} in {seconds:.1f} s"
    if failed or not rendered:
        print(f"\nBUILD FAILED: {built}." + (f" Failed: {', '.join(failed)}." if failed else " The render failed."),
              file=sys.stderr)
        return 1
    print(f"\n{built}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
