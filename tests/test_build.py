"""The build tool (tools/build_book.py) on small throwaway books.

Two tiny projects: "tiny" has a chapter exercising parameters, a figure and hidden cells, a chapter
that raises and an appendix that reads a file beside it; "provenance" has chapters that write real
results files through lsuvlib.results.Chapter (one fails on request, one sleeps). Each is built once
per module; tests that change a build work on a copy.
"""
from __future__ import annotations

import fnmatch
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import filelock
import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
sys.path.insert(0, str(TOOLS))

import build_book  # noqa: E402
from conftest import default_sigint  # noqa: E402

slow = pytest.mark.slow  # runs kernels (marker defined in pyproject.toml)
QUARTO = build_book.find_quarto(ROOT)
needs_quarto = pytest.mark.skipif(QUARTO is None and os.environ.get("CI") != "true",
                                  reason="Quarto is not installed (`make setup` installs it)")

TINY_QUARTO_YML = """\
project:
  type: book
author: "Tiny authors"
date: 2026-11-22
book:
  title: "Tiny book"
  chapters:
    - index.md
    - chapters/01-alpha.ipynb
    - chapters/02-broken.ipynb
  appendices:
    - chapters/reference.ipynb
execute:
  enabled: false
citation:
  type: chapter
  container-title: "Tiny book"
filters:
  - site/page.lua
"""


def _code(source: str, *tags: str):
    cell = nbformat.v4.new_code_cell(source)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def _notebook(*cells):
    nb = nbformat.v4.new_notebook(cells=list(cells))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def make_project(root: Path) -> Path:
    chapters = root / "chapters"
    chapters.mkdir(parents=True)
    (root / "params").mkdir()
    (root / "_quarto.yml").write_text(TINY_QUARTO_YML)
    shutil.copytree(ROOT / "site", root / "site")  # the real book's page filter
    (root / "index.md").write_text("# Welcome {.unnumbered}\n\nA tiny book for the build tests.\n")
    (root / "params" / "smoke.yaml").write_text("epochs: 1\nchapters:\n  reference:\n    n_seeds: 3\n")
    (chapters / "data.txt").write_text("DATA-FROM-CWD")
    alpha = _notebook(
        nbformat.v4.new_markdown_cell("# Alpha chapter\n\nSOURCE-PROSE and inline math $a^2 + b^2$."),
        _code("epochs = 10\nlr = 0.1\nresults_dir = None", "parameters"),
        _code("import json, os, pathlib\n"
              "seen = dict(epochs=epochs, lr=lr, results_dir=results_dir, data=os.environ.get('LSUV_DATA_DIR'))\n"
              "pathlib.Path(results_dir, 'alpha.txt').write_text(json.dumps(seen))"),
        _code("#| fig-alt: A rising line\n#| fig-cap: A rising line\n%matplotlib inline\n"
              "import matplotlib.pyplot as plt\nfig, ax = plt.subplots(figsize=(4, 3))\nax.plot([0, 1, 2], [0, 1, 4])\n"
              "plt.show()"),
        _code("#| echo: false\nprint('ECHO-' + 'OUTPUT')  # ECHO-SOURCE-LINE-MARKER"),
        _code("#| include: false\nprint('REMOVED-' + 'CELL')  # INCLUDE-SOURCE-LINE-MARKER"),
    )
    broken = _notebook(nbformat.v4.new_markdown_cell("# Broken chapter"), _code("epochs = 10", "parameters"),
                       _code("raise ValueError('deliberate failure in broken')"))
    reference = _notebook(nbformat.v4.new_markdown_cell("# Reference"), _code("n_seeds = 1", "parameters"),
                          _code("print('seeds', n_seeds)\nprint(open('data.txt').read())"))
    for name, nb in [("01-alpha", alpha), ("02-broken", broken), ("reference", reference)]:
        nbformat.write(nb, chapters / f"{name}.ipynb")
    return root


def env_for_tests(**extra) -> dict:
    return {**os.environ, "PATH": f"{Path(QUARTO).parent}{os.pathsep}{os.environ['PATH']}" if QUARTO
            else os.environ["PATH"], **extra}


def run_build(*args: str, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / "build_book.py"), *args], cwd=cwd, capture_output=True,
                          text=True, env=kw.pop("env", env_for_tests()), **kw)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("tiny-book"))


@pytest.fixture(scope="module")
def built(project, tmp_path_factory):
    """The tiny book built once from an unrelated folder, without rendering; (process, out)."""
    out = project / "_out"
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    sources = {p: p.read_bytes() for p in (project / "chapters").glob("*.ipynb")}
    proc = run_build("--root", str(project), "--profile", "smoke", "-p", "lr", "1e-3", "--out", str(out),
                     "--no-render", "--timings", cwd=elsewhere, env=env_for_tests(LSUV_DATA_DIR="mydata"))
    assert all(p.read_bytes() == data for p, data in sources.items()), "sources must be untouched"
    proc.cwd = elsewhere
    return proc, out


def copy_out(out: Path, tmp_path: Path) -> Path:
    shutil.copytree(out, tmp_path / "out", symlinks=True)
    return tmp_path / "out"


def manifest(out: Path) -> dict:
    return json.loads((out / "results" / "build.json").read_text())


# --------------------------------------------------------------------------- parameters and chapters

def test_parameters_layer_profile_file_then_command_line(tmp_path):
    notebooks = ["chapters/01-a.ipynb", "chapters/02-b.ipynb"]
    profile = build_book.param_layer("profile", {"epochs": 5, "lr": 0.1, "batch": 64, "chapters": {"01-a": {"epochs": 7}}},
                                     notebooks)
    (tmp_path / "f.yaml").write_text("lr: 1e-3\nchapters:\n  2:\n    epochs: 9\n    batch: 32\n")
    file_layer = build_book.read_param_file(tmp_path / "f.yaml", "-f", notebooks)
    cli = build_book.param_layer("-p", {"batch": build_book.cli_value("16")}, notebooks)
    layers = [profile, file_layer, cli]
    values = {c: {k: v for k, (v, _) in build_book.final_values(c, layers).items()} for c in ("01-a", "02-b")}
    assert values["01-a"] == {"epochs": 7, "lr": 0.001, "batch": 16}
    assert values["02-b"] == {"epochs": 9, "lr": 0.001, "batch": 16}


def test_command_line_values_are_yaml():
    value = build_book.cli_value
    assert value("1") == 1 and value("1e-3") == 0.001 and value("0.5") == 0.5 and value("[1, 2]") == [1, 2]
    assert value("true") is True and value("relu") == "relu" and value("a: b: c") == "a: b: c"


@pytest.mark.parametrize("layer, message", [
    ({"common": {"epoch": 1}}, "Unknown parameter 'epoch' (from -p): no chapter it reaches declares it"),
    ({"common": {"results_dir": "x"}}, "set by the build itself"),
    ({"chapters": {"02-b": {"lr": 1}}}, "Unknown parameter 'lr' (from -p, chapters.02-b)"),
])
def test_unknown_and_reserved_parameters_are_refused(layer, message):
    specs = {"01-a": {"epochs": {}, "lr": {}}, "02-b": {"epochs": {}}}
    with pytest.raises(build_book.BuildError, match=re.escape(message)):
        build_book.check_names([{"source": "-p", "common": {}, "chapters": {}, **layer}], specs)


def test_a_parameter_line_papermill_would_skip_is_an_error(tmp_path):
    notebook = tmp_path / "nb.ipynb"
    nbformat.write(_notebook(_code("n_train = None  # None = everything\nseed = 1", "parameters")), notebook)
    with pytest.raises(build_book.BuildError, match="Keep one '=' per line"):
        build_book.declared(notebook)


@pytest.mark.parametrize("selector", ["01-alpha", "1", "01", "alpha", "alp", "chapters/01-alpha.ipynb"])
def test_chapters_are_found_by_stem_number_or_name(selector):
    assert build_book.match_chapter(selector, ["chapters/01-alpha.ipynb", "chapters/02-broken.ipynb"]) \
        == "chapters/01-alpha.ipynb"


def test_a_bare_number_is_a_chapter_number_only():
    with pytest.raises(build_book.BuildError, match="Unknown chapter '0'"):
        build_book.match_chapter("0", ["chapters/01-a.ipynb", "chapters/10-b.ipynb"])
    assert build_book.match_chapter("10", ["chapters/01-a.ipynb", "chapters/10-b.ipynb"]) == "chapters/10-b.ipynb"


def test_parameter_type_rules():
    def want(default, value, help=""):
        return build_book.expected(value, {"default": default, "help": help})

    assert want("0.2", 1) is None and want("0.2", 1e-3) is None  # lr 1 means 1.0
    assert want("None", 2048) is None and want("None", None) is None  # n_train: a count or null
    assert want("None", "all") == "an int or null"
    assert want("0.1", None, help="None: never") is None and want("0.1", None) is not None
    assert want("True", False) is None and want("True", 1) == "a bool" and want("3", True) == "an int"
    assert want("[0.015, 0.01]", [1, 0.5]) is None
    assert want("[0.015, 0.01]", [0.1, "x"]) == "a list of floats ('x' is not)"
    assert want("'auto'", "cpu") is None and want("'auto'", 3) == "a string"


def test_usage_errors_exit_2_before_anything_runs(project, tmp_path, capsys):
    out = tmp_path / "out"
    for args, message in [(["--chapter", "nope"], "Unknown chapter 'nope'. Chapters: 01-alpha, 02-broken, reference"),
                          (["-p", "epoch", "1"], "Did you mean 'epochs'?"),
                          (["--profile", "huge"], "Available: smoke"),
                          (["-p", "epochs", "1.5"], "Parameter 'epochs' of chapters 01-alpha, 02-broken must be an "
                                                    "int (its default is 10), but -p gives '1.5' (a float)."),
                          (["--kernel", "nope"], "Unknown Jupyter kernel 'nope' (from --kernel)")]:
        assert build_book.main(["--root", str(project), "--out", str(out), "--no-render", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.startswith("error: ")
    assert not out.exists(), "nothing may run after a usage error"


def test_an_output_folder_that_is_a_file_or_not_writable_is_a_one_line_error(project, tmp_path, capsys):
    out = tmp_path / "out"
    out.write_text("")
    assert build_book.main(["--root", str(project), "--out", str(out), "--no-render"]) == 2
    assert capsys.readouterr().err == f"error: {out} is a file, but the build writes a folder there: move it, or use --out.\n"
    if os.geteuid() == 0:  # root writes through permission bits, but not into sysfs
        locked = Path("/sys/lsuv-book-test-out")
    else:
        (tmp_path / "ro").mkdir(mode=0o555)
        locked = tmp_path / "ro" / "out"
    assert build_book.main(["--root", str(project), "--out", str(locked), "--no-render"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: Cannot write into {locked} (") and err.count("\n") == 1, err


def test_without_quarto_the_error_names_both_ways_to_get_it(project, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(build_book, "find_quarto", lambda root: None)
    assert build_book.main(["--root", str(project), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "Run `make setup` (it installs Quarto)" in err and "--no-render" in err and err.count("\n") == 1


def test_a_pages_own_front_matter_joins_the_one_quarto_reads():
    """Quarto reads only a notebook's first front matter: the home page's title and citation must be in it."""
    import yaml

    nb = _notebook(nbformat.v4.new_raw_cell('---\ntitle: "# Preface {.unnumbered}"\ncitation:\n  type: book\n---'),
                   nbformat.v4.new_markdown_cell("Prose."))
    build_book.finish_page(nb, "index.ipynb", dict(build="B", seconds=1.0), {"type": "chapter"})
    [raw] = [c for c in nb.cells if c.cell_type == "raw"]
    front = yaml.safe_load(raw.source.strip("-\n"))
    assert front["title"] == "# Preface {.unnumbered}" and front["citation"] == {"type": "book"}
    assert front["lsuv-run"] == dict(build="B", seconds=1.0) and nb.cells[0] is raw


def test_a_chapter_is_cited_by_its_plain_title_with_the_projects_citation_fields():
    """Quarto 1.9 writes a book chapter's number markup into citation_title, and a page's `citation`
    replaces the project's: the build writes the plain heading and carries the project's fields."""
    import yaml

    nb = _notebook(nbformat.v4.new_markdown_cell("# The `lsuvlib` *baseline* {#sec-baseline}\n\nProse."))
    build_book.finish_page(nb, "chapters/03-baseline.ipynb", dict(build="B"), {"type": "chapter", "version": "1"})
    front = yaml.safe_load(nb.cells[0].source.strip("-\n"))
    assert front["citation"] == {"type": "chapter", "version": "1", "title": "The lsuvlib baseline"}
    page = build_book.cite_as({"number-depth": 1}, "Intro\n\n# Glossary {#sec-glossary}\n", {"type": "chapter"})
    assert page == {"number-depth": 1, "citation": {"type": "chapter", "title": "Glossary"}}


def test_a_placeholder_page_keeps_the_pages_own_front_matter(tmp_path):
    """Without it, an unbuilt home page would lose {.unnumbered} and every chapter's number would shift."""
    nbformat.write(_notebook(nbformat.v4.new_raw_cell('---\ntitle: "# Preface {.unnumbered}"\n---'),
                             nbformat.v4.new_markdown_cell("# Preface\n\nProse.")), tmp_path / "index.ipynb")
    page = build_book.placeholder(tmp_path, "index.ipynb", None)
    assert page.cells[0].cell_type == "raw" and "{.unnumbered}" in page.cells[0].source
    assert "Not built" in page.cells[1].source and "It has not been built yet." in page.cells[1].source


def test_the_real_book_lists_every_chapter_notebook_in_order():
    pages = build_book.book_pages(ROOT)
    assert pages[0] == "index.md" or pages[0] == "index.ipynb"
    notebooks = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.ipynb"))
    assert sorted(p for p in pages if p.endswith(".ipynb") and p.startswith("chapters/")) == notebooks
    numbered = [build_book.stem(p) for p in pages if re.match(r"chapters/\d", p)]
    assert numbered == sorted(numbered)


def test_every_page_of_the_real_book_exists_and_quarto_renders_it():
    config = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    pages = build_book.book_pages(ROOT)
    assert {"chapters/glossary.md", "reference/index.qmd"} <= set(config["book"]["appendices"])
    assert [p for p in pages if not (ROOT / p).is_file()] == []
    renders = config["project"]["render"]
    assert [p for p in pages if not any(fnmatch.fnmatch(p, glob) for glob in renders)] == [], \
        "Quarto renders only what project.render lists: add the page there"


# --------------------------------------------------------------------------- keys and reuse, without a kernel

def test_a_chapters_key_ignores_prose_and_cell_options_but_not_code(tmp_path):
    nb = _notebook(nbformat.v4.new_markdown_cell("# T"), _code("x = 1", "parameters"), _code("#| echo: false\nprint(x)"))
    path = tmp_path / "c.ipynb"
    plan = dict(root=tmp_path, params={"c.ipynb": {"x": 2}}, kernels={"c.ipynb": "python3"})

    def key():
        nbformat.write(nb, path)
        return build_book.chapter_key(plan, "c.ipynb", "env", {})

    first = key()
    nb.cells[0].source = "# T\n\nNew prose."
    nb.cells[2].source = "#| echo: false\n#| fig-cap: new caption\nprint(x)"
    assert key() == first
    nb.cells[2].source = "print(x + 1)"
    assert key() != first
    assert build_book.chapter_key(plan, "c.ipynb", "other env", {}) != key()
    assert build_book.chapter_key(plan, "c.ipynb", "env", {"01-a": "hash"}) != key()


def test_refresh_takes_the_prose_from_the_source_and_the_outputs_from_the_run(tmp_path):
    source = _notebook(nbformat.v4.new_markdown_cell("# T\n\nOld."), _code("x = 1", "parameters"), _code("print(x)"))
    executed = nbformat.from_dict(json.loads(nbformat.writes(source)))
    injected = _code("x = 2", "injected-parameters")
    executed.cells.insert(2, injected)
    executed.cells[3].outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    nbformat.write(executed, tmp_path / "executed.ipynb")
    source.cells[0].source = "# T\n\nNew."
    source.cells[2].source = "#| fig-cap: new\nprint(x)"
    nbformat.write(source, tmp_path / "source.ipynb")
    nb = build_book.refresh(tmp_path / "source.ipynb", tmp_path / "executed.ipynb")
    assert [c.source for c in nb.cells] == ["# T\n\nNew.", "x = 1", "x = 2", "#| fig-cap: new\nprint(x)"]
    assert nb.cells[3].outputs[0].text == "2\n"


def test_progress_tail_prints_only_whole_lines(tmp_path, capsys):
    path = tmp_path / "progress.txt"
    tail = build_book.ProgressTail(path)
    tail.start()
    with open(path, "a") as f:
        f.write("1/4 runs done\n2/4")
    tail.stop()
    assert capsys.readouterr().out == "      · 1/4 runs done\n"


def test_kernels_use_ipc_sockets_in_a_private_folder(tmp_path):
    km = build_book.kernel_manager(tmp_path)(kernel_name="python3")
    assert km.transport == "ipc" and Path(km.connection_file).parent == tmp_path and km.ip.startswith(str(tmp_path))


def test_a_kernels_stderr_goes_to_its_log_not_the_builds_output(tmp_path, capfd):
    """ipykernel's shutdown tracebacks on Ctrl-C (ZMQError) must not reach the build's output."""
    import asyncio

    async def run():
        km = build_book.kernel_manager(tmp_path, tmp_path / "kernel.stderr")(kernel_name="python3")
        await km.start_kernel()
        try:
            kc = km.client()
            kc.start_channels()
            await kc.wait_for_ready(timeout=60)
            await kc.execute_interactive("import os; os.write(2, b'KERNEL-FD2-MARKER')", timeout=60)
            kc.stop_channels()
        finally:
            await km.shutdown_kernel(now=True)
    asyncio.run(run())
    assert "KERNEL-FD2-MARKER" in (tmp_path / "kernel.stderr").read_text()
    assert "KERNEL-FD2-MARKER" not in capfd.readouterr().err


# --------------------------------------------------------------------------- a real build of the tiny book

@slow
def test_a_failed_chapter_is_reported_and_the_others_are_built(built):
    proc, out = built
    assert proc.returncode == 1
    assert "BUILD FAILED: 2 of 3 page(s) built" in proc.stderr and "Failed: 02-broken" in proc.stderr
    assert "ValueError: deliberate failure in broken" in proc.stdout
    assert (out / "failed/02-broken.ipynb").is_file() and not (out / "book/chapters/02-broken.ipynb").exists()
    record = manifest(out)["chapters"]["02-broken"]
    assert record["status"] == "failed" and record["error"].startswith("ValueError: deliberate failure")
    assert re.search(r"\d+\.\d s  reference \(ok\)", proc.stdout), "--timings prints a table"


@slow
def test_parameters_reach_the_chapters_and_relative_data_paths_are_the_users(built):
    proc, out = built
    seen = json.loads((out / "results/alpha.txt").read_text())
    assert seen == {"epochs": 1, "lr": 0.001, "results_dir": str(out / "results"),
                    "data": str(proc.cwd / "mydata")}, "LSUV_DATA_DIR=mydata: from where the build ran, not chapters/"
    ref = nbformat.read(out / "book/chapters/reference.ipynb", 4)
    printed = "".join(o.text for o in ref.cells[-1].outputs)
    assert "seeds 3" in printed and "DATA-FROM-CWD" in printed, "smoke profile's per-chapter value; cwd chapters/"


@slow
def test_an_executed_page_hides_the_injected_cell_and_carries_its_run(built):
    _, out = built
    nb = nbformat.read(out / "book/chapters/01-alpha.ipynb", 4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "remove-cell" in injected[0].metadata["tags"]
    front = nb.cells[0]
    assert front.cell_type == "raw" and "lsuv-run:" in front.source and "code-links:" in front.source
    assert "epochs = 1 (default 10), lr = 0.001 (default 0.1)" in front.source
    record = manifest(out)["chapters"]["01-alpha"]
    assert record["status"] == "ok" and record["run"]["seconds"] == record["seconds"]


@slow
def test_a_second_build_reuses_unchanged_chapters_and_refreshes_their_prose(built, tmp_path):
    _, out = built
    copy = copy_out(out, tmp_path)
    root = out.parent
    source = root / "chapters/01-alpha.ipynb"
    original = source.read_bytes()
    nb = nbformat.read(source, 4)
    nb.cells[0].source = nb.cells[0].source.replace("SOURCE-PROSE", "EDITED-PROSE")
    try:
        nbformat.write(nb, source)
        proc = run_build("--root", str(root), "--profile", "smoke", "-p", "lr", "1e-3", "--out", str(copy),
                         "--no-render", cwd=tmp_path, env=env_for_tests(LSUV_DATA_DIR="mydata"))
        page = nbformat.read(copy / "book/chapters/01-alpha.ipynb", 4)
        assert "01-alpha" in proc.stdout and "reused: unchanged since build" in proc.stdout, proc.stdout
        assert "EDITED-PROSE" in page.cells[1].source
        assert manifest(copy)["chapters"]["01-alpha"]["reused_in"] == manifest(copy)["build_id"]
        forced = run_build("--root", str(root), "--profile", "smoke", "-p", "lr", "1e-3", "--out", str(copy),
                           "--no-render", "--force", "--chapter", "1", cwd=tmp_path,
                           env=env_for_tests(LSUV_DATA_DIR="mydata"))
        assert forced.returncode == 0 and "reused" not in forced.stdout and "ok in" in forced.stdout
    finally:
        source.write_bytes(original)


@slow
@needs_quarto
def test_the_quarto_site_hides_hidden_cells_and_says_what_failed(built, tmp_path):
    _, out = built
    copy = copy_out(out, tmp_path)
    proc = run_build("--root", str(out.parent), "--profile", "smoke", "-p", "lr", "1e-3", "--out", str(copy),
                     cwd=tmp_path, env=env_for_tests(LSUV_DATA_DIR="mydata"))
    assert "BUILD FAILED" in proc.stderr and (copy / "site/index.html").is_file(), proc.stdout[-2000:]
    alpha = (copy / "site/chapters/01-alpha.html").read_text()
    assert "ECHO-OUTPUT" in alpha and "ECHO-SOURCE-LINE-MARKER" not in alpha
    assert "REMOVED-CELL" not in alpha and "INCLUDE-SOURCE-LINE-MARKER" not in alpha
    assert "injected-parameters" not in alpha and "x = 2" not in alpha
    assert "How this page was made" in alpha and 'id="book-citation"' in alpha
    broken = (copy / "site/chapters/02-broken.html").read_text()
    assert "Not built" in broken and "deliberate failure in broken" in broken
    assert not (copy / "book/_book").exists() and not list(copy.glob(".site*"))


@slow
@needs_quarto
def test_the_api_reference_is_written_by_quartodoc_from_the_projects_own_package(project, built, tmp_path):
    """A `quartodoc:` section in _quarto.yml: quartodoc writes the reference pages before Quarto renders them."""
    pytest.importorskip("quartodoc", reason="quartodoc writes the API reference: pip install -e '.[book]'")
    _, out = built
    root = tmp_path / "book"
    shutil.copytree(project, root, ignore=shutil.ignore_patterns("_out"))
    (root / "tinybooklib").mkdir()  # importable only from the project folder: the build puts it on the path
    (root / "tinybooklib" / "__init__.py").write_text(
        '"""A package for the build tests."""\n__all__ = ["square"]\n\n\n'
        'def square(x):\n    r"""SQUARE-DOC: the square of `x`, $x^2$."""\n    return x * x\n')
    pages = "    - chapters/reference.ipynb\n    - reference/index.qmd\n    - reference/square.qmd\n"
    # google: quartodoc 0.11's default numpy parser fails under griffe 2 (the book's own config is google too)
    (root / "_quarto.yml").write_text(
        TINY_QUARTO_YML.replace("    - chapters/reference.ipynb\n", pages)
        + "quartodoc:\n  package: tinybooklib\n  dir: reference\n  parser: google\n  sections:\n"
          "    - title: Functions\n      contents: [square]\n")
    copy = copy_out(out, tmp_path)
    proc = run_build("--root", str(root), "--profile", "smoke", "--out", str(copy), cwd=tmp_path)
    assert (copy / "site/reference/index.html").is_file(), proc.stdout[-3000:] + proc.stderr[-2000:]
    page = (copy / "site/reference/square.html").read_text()
    assert "SQUARE-DOC" in page and 'class="math inline"' in page, "the docstring, its $x^2$ read as maths"


# --------------------------------------------------------------------------- provenance

PROVENANCE_QUARTO_YML = """\
project:
  type: book
book:
  title: "Provenance book"
  chapters:
    - chapters/01-good.ipynb
    - chapters/02-flaky.ipynb
    - chapters/03-slow.ipynb
"""


def make_provenance_project(root: Path) -> Path:
    chapters = root / "chapters"
    chapters.mkdir(parents=True)
    (root / "_quarto.yml").write_text(PROVENANCE_QUARTO_YML)

    def saving(stem: str, extra: str = "") -> str:
        return (f"from lsuvlib.results import Chapter\nch = Chapter({stem!r}, dict(x=x, device='cpu'), results_dir)\n"
                "ch.save(x=x)\n" + extra)

    notebooks = {
        "01-good": _notebook(_code("x = 1\nresults_dir = None", "parameters"), _code(saving("01-good"))),
        "02-flaky": _notebook(_code("x = 1\nfail = False\nbig = 0\nresults_dir = None", "parameters"),
                              _code(saving("02-flaky", "print('y' * big)\nif fail:\n    raise RuntimeError('flaky failed')"))),
        "03-slow": _notebook(_code("x = 1\nsleep = 0.0\nresults_dir = None", "parameters"),
                             _code(saving("03-slow", "import os, time\nfor i in range(3):\n"
                                                     "    with open(os.environ['LSUV_PROGRESS_FILE'], 'a') as f:\n"
                                                     "        f.write(f'step {i + 1}/3 done\\n')\ntime.sleep(sleep)"))),
    }
    for name, nb in notebooks.items():
        nbformat.write(nb, chapters / f"{name}.ipynb")
    return root


@pytest.fixture(scope="module")
def provenance(tmp_path_factory):
    root = make_provenance_project(tmp_path_factory.mktemp("provenance"))
    out = root / "_out"
    proc = run_build("--root", str(root), "--out", str(out), "--no-render", cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, out, proc


@slow
def test_every_results_file_is_recorded_with_its_hash(provenance):
    from lsuvlib.results import file_sha256, load_build

    _, out, _ = provenance
    m = manifest(out)
    for name in ("01-good", "02-flaky", "03-slow"):
        assert m["chapters"][name]["results_sha256"] == file_sha256(out / "results" / f"{name}.json")
    assert set(load_build(out / "results").files) == {"01-good", "02-flaky", "03-slow"}
    for path in [out / "results/01-good.json", out / "results/build.json", out / "book/chapters/01-good.ipynb"]:
        assert path.stat().st_mode & 0o777 == 0o644 & ~_umask(), path


@slow
def test_progress_lines_appear_under_their_chapter(provenance):
    lines = provenance[2].stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("[3/3] 03-slow"))
    assert lines[start + 1: start + 4] == [f"      · step {k}/3 done" for k in (1, 2, 3)]


@slow
def test_a_failed_chapter_sets_its_earlier_results_aside(provenance, tmp_path):
    from lsuvlib.results import load_build

    root, out, _ = provenance
    copy = copy_out(out, tmp_path)
    proc = run_build("--root", str(root), "--out", str(copy), "--no-render", "--chapter", "2", "-p", "fail", "true",
                     cwd=tmp_path)
    assert proc.returncode == 1
    build_id = manifest(copy)["build_id"]
    assert not (copy / "results/02-flaky.json").exists()
    assert (copy / "failed/02-flaky.json").is_file(), "what the failed run saved is kept, apart"
    assert (copy / f"stale/{build_id}/results/02-flaky.json").is_file(), "the earlier results too"
    assert (copy / f"stale/{build_id}/book/chapters/02-flaky.ipynb").is_file()
    assert "02-flaky" in load_build(copy / "results").left_out and "01-good" in load_build(copy / "results").files


@slow
def test_an_error_notebook_cut_short_by_a_file_size_limit_is_not_kept(provenance, tmp_path):
    root, out, _ = provenance
    copy = copy_out(out, tmp_path)

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))

    proc = run_build("--root", str(root), "--out", str(copy), "--no-render", "--chapter", "2", "-p", "fail", "true",
                     "-p", "big", "400000", cwd=tmp_path, preexec_fn=limit)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert not (copy / "failed/02-flaky.ipynb").exists() and not list(copy.rglob("*.tmp*"))
    assert manifest(copy)["chapters"]["02-flaky"]["status"] == "failed"


@slow
def test_a_second_build_into_the_same_folder_is_refused(provenance, tmp_path, capsys):
    root, out = provenance[0], tmp_path / "out"
    out.mkdir()
    with filelock.FileLock(out / ".build.lock", timeout=0):
        code = build_book.main(["--root", str(root), "--out", str(out), "--no-render"])
    assert code == 2 and "Another build is writing into" in capsys.readouterr().err
    assert not (out / "results").exists()


@slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_build_keeps_finished_outputs_and_leaves_no_temporaries(provenance, tmp_path, sig):
    root, out, _ = provenance
    copy = copy_out(out, tmp_path)
    before = {p.relative_to(copy): p.read_bytes() for p in (copy / "book").rglob("*.ipynb")}
    proc = subprocess.Popen([sys.executable, str(TOOLS / "build_book.py"), "--root", str(root), "--out", str(copy),
                             "--no-render", "--force", "--chapter", "2", "--chapter", "3", "-p", "sleep", "60"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
    lines = []
    for line in proc.stdout:  # wait until chapter 3's kernel is busy
        lines.append(line)
        if "step 3/3 done" in line:
            break
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(lines) + stdout + stderr
    what = "interrupted" if sig == signal.SIGINT else "terminated"
    assert stderr.strip().splitlines()[-1] == (
        f"Build {what} during 03-slow. Finished in this build: 02-flaky; their outputs in out are intact, "
        "and 03-slow keeps its earlier output.")
    assert "Traceback" not in stderr and "ZMQError" not in stderr, stderr
    assert not list(copy.rglob("*.tmp*")), "no hidden temporary notebooks"
    assert (copy / "book/chapters/03-slow.ipynb").read_bytes() == before[Path("book/chapters/03-slow.ipynb")]
    m = manifest(copy)
    assert m["status"] == "interrupted" and m["chapters"]["02-flaky"]["build_id"] == m["build_id"]
    assert m["chapters"]["03-slow"]["build_id"] != m["build_id"], "its earlier record stands"


def with_old_site(out: Path) -> Path:
    """A build folder with a rendered site from before, which the next build must not leave in place."""
    (out / "site").mkdir()
    (out / "site/index.html").write_text("an old site")
    return out


@slow
def test_a_killed_build_is_found_and_what_it_left_is_set_aside(provenance, tmp_path):
    from lsuvlib.results import load_build

    root, out, _ = provenance
    copy = with_old_site(copy_out(out, tmp_path))
    proc = subprocess.Popen([sys.executable, str(TOOLS / "build_book.py"), "--root", str(root), "--out", str(copy),
                             "--no-render", "--force", "--chapter", "3", "-p", "sleep", "60"], cwd=tmp_path,
                            stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if "step 3/3 done" in line:
            break
    kernels = children(proc.pid)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 30  # ipykernel ends itself once its parent is gone
    while time.monotonic() < deadline and any(Path(f"/proc/{k}").exists() for k in kernels):
        time.sleep(0.2)
    assert manifest(copy)["status"] == "running"
    again = run_build("--root", str(root), "--out", str(copy), "--no-render", "--chapter", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "did not finish (killed?)" in again.stdout and "03-slow: its page and results moved to" in again.stdout
    assert manifest(copy)["chapters"]["03-slow"]["status"] == "killed"
    assert "03-slow" in load_build(copy / "results").left_out
    assert not (copy / "book/chapters/03-slow.ipynb").exists() and not (copy / "site").exists()


@slow
def test_a_truncated_manifest_is_reported_and_kept(provenance, tmp_path):
    root, out, _ = provenance
    copy = copy_out(out, tmp_path)
    text = (copy / "results/build.json").read_text()
    (copy / "results/build.json").write_text(text[: len(text) // 2])
    proc = run_build("--root", str(root), "--out", str(copy), "--no-render", "--chapter", "1", cwd=tmp_path)
    assert proc.returncode == 0 and "was unreadable (truncated?)" in proc.stdout
    kept = list(copy.glob("stale/*/results/build.json"))
    assert len(kept) == 1 and kept[0].read_text() == text[: len(text) // 2]


@slow
def test_a_build_without_rendering_moves_the_old_site_aside(provenance, tmp_path):
    root, out, _ = provenance
    copy = with_old_site(copy_out(out, tmp_path))
    proc = run_build("--root", str(root), "--out", str(copy), "--no-render", "--chapter", "1", cwd=tmp_path)
    assert "no longer matches the results (--no-render)" in proc.stdout
    assert not (copy / "site").exists() and list(copy.glob("stale/*/site/index.html"))


@slow
@pytest.mark.parametrize("where", ["inside", "elsewhere"])
def test_a_standalone_papermill_run_never_touches_the_builds_results(provenance, tmp_path, where):
    import papermill

    root, out, _ = provenance
    before = {p.name: p.read_bytes() for p in (out / "results").iterdir()}
    cwd = root if where == "inside" else tmp_path
    old = os.getcwd()
    os.chdir(cwd)
    try:
        papermill.execute_notebook(root / "chapters/01-good.ipynb", tmp_path / "run.ipynb", parameters={"x": 5},
                                   progress_bar=False, cwd=str(cwd))
    finally:
        os.chdir(old)
    assert {p.name: p.read_bytes() for p in (out / "results").iterdir()} == before
    saved = list((root / "_build/standalone" if where == "inside" else tmp_path / "lsuv-results").glob("01-good-*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["params"]["x"] == 5
    page = nbformat.read(tmp_path / "run.ipynb", 4)
    said = "".join(o.get("text", "") for c in page.cells for o in c.get("outputs", []))
    assert "not part of a book build" in said and saved[0].name in said, "the page says where it went"


def children(pid: int) -> list[int]:
    """The child processes of `pid` (Linux)."""
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_quarto_setup_names_both_ways_when_neither_works(tmp_path):
    """No ../shared/quarto beside the project and no internet for PyPI's quarto-cli: one clear error."""
    (tmp_path / "project/tools").mkdir(parents=True)
    script = shutil.copy(TOOLS / "install_quarto.sh", tmp_path / "project/tools")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/python3").write_text("#!/bin/sh\nexit 1\n")  # as pip fails without internet
    (tmp_path / "bin/python3").chmod(0o755)
    done = subprocess.run(["bash", script, str(tmp_path / "project/.quarto-cli")], capture_output=True, text=True,
                          env={**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    assert done.returncode == 1 and "from PyPI's quarto-cli" in done.stdout
    assert "could not install Quarto" in done.stderr and "quarto.org" in done.stderr and "--no-render" in done.stderr
    assert not (tmp_path / "project/.quarto-cli").exists()
