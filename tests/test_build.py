"""Tests for the book build tooling (tools/), on a tiny throwaway book.

The tiny book has an index page, a chapter exercising parameters, figures,
markdown output, math and hidden cells, a chapter that raises, and an appendix
that reads a file relative to its folder. It is built once per module.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
sys.path.insert(0, str(TOOLS))

import build_book  # noqa: E402
from conftest import default_sigint  # noqa: E402
from build_book import Entry, ParamLayer  # noqa: E402

HAVE_CHROMIUM = Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()
slow = pytest.mark.slow  # runs notebooks or a browser (marker defined in pyproject.toml)
needs_chromium = pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs /usr/bin/chromium and /usr/bin/chromedriver")

TINY_QUARTO_YML = """\
project:
  type: book
  output-dir: _book
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
"""


# --------------------------------------------------------------------------- tiny project


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


def _md(text: str):
    return nbformat.v4.new_markdown_cell(text)


def make_project(root: Path) -> Path:
    """Write the tiny book project under root and return root."""
    chapters = root / "chapters"
    chapters.mkdir(parents=True)
    (root / "params").mkdir()
    (root / "_quarto.yml").write_text(TINY_QUARTO_YML)
    (root / "index.md").write_text("---\ntitle: Tiny book\n---\n\n# Welcome\n\nA tiny book for the build tests.\n")
    (root / "params" / "smoke.yaml").write_text("epochs: 1\nchapters:\n  reference:\n    n_seeds: 3\n")
    (chapters / "data.txt").write_text("DATA-FROM-CWD")
    alpha = _notebook(
        _md("# Alpha chapter\n\nInline math $a^2 + b^2$ and a display:\n\n$$\\frac{1}{\\sqrt{n}}$$\n"),
        _code("epochs = 10\nlr = 0.1\nresults_dir = None\nbuild_profile = 'unset'", "parameters"),
        _code(
            "import json, pathlib\n"
            "seen = dict(epochs=epochs, lr=lr, results_dir=results_dir, build_profile=build_profile)\n"
            "pathlib.Path(results_dir, 'alpha.json').write_text(json.dumps(seen))"
        ),
        _code("from IPython.display import Markdown\nMarkdown('**bold output** from a cell')"),
        _code(
            "#| fig-alt: A rising line\n%matplotlib inline\nimport matplotlib.pyplot as plt\n"
            "fig, ax = plt.subplots(figsize=(4, 3))\nax.plot([0, 1, 2], [0, 1, 4])\nplt.show()"
        ),
        _code("# ECHO-SOURCE\nprint('ECHO-OUTPUT')", "remove-input"),
        _code("print('REMOVED-CELL')", "remove-cell"),
        _code("# OUTPUT-SOURCE\nprint('REMOVED-' + 'OUTPUT')", "remove-output"),
        _md("## A section\n\n| a | b |\n|---|---|\n| 1 | 2 |\n"),
    )
    broken = _notebook(
        _md("# Broken chapter"),
        _code("epochs = 10", "parameters"),
        _code("raise ValueError('deliberate failure in broken')"),
        _code("print('never reached')"),
    )
    reference = _notebook(
        _md("# Reference"),
        _code("n_seeds = 1", "parameters"),
        _code("print('seeds', n_seeds)\nprint(open('data.txt').read())"),
    )
    for name, nb in [("01-alpha", alpha), ("02-broken", broken), ("reference", reference)]:
        nbformat.write(nb, chapters / f"{name}.ipynb")
    return root


def env_without_quarto() -> dict:
    """The environment with any PATH entry holding `quarto` removed: tests the offline path."""
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if not (Path(p) / "quarto").exists()]
    return {**os.environ, "PATH": os.pathsep.join(path)}


def run_build(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(TOOLS / "build_book.py"), *args],
        cwd=cwd,
        env=env_without_quarto(),
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("tiny-book"))


@pytest.fixture(scope="module")
def built(project, tmp_path_factory):
    """Build the tiny book once, from an unrelated cwd; returns (process, out dir)."""
    out = project / "_out"
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    sources = {p: p.read_bytes() for p in (project / "chapters").glob("*.ipynb")}
    proc = run_build(
        "--root", str(project), "--profile", "smoke", "-p", "lr", "1e-3", "--out", str(out), "--timings", cwd=elsewhere
    )
    assert all(p.read_bytes() == data for p, data in sources.items()), "sources must be untouched"
    return proc, out


# --------------------------------------------------------------------------- parameters


def test_parameter_precedence_and_filtering(tmp_path):
    entries = [Entry("chapters/01-a.ipynb", "chapters"), Entry("chapters/02-b.ipynb", "chapters")]
    profile = ParamLayer("profile", {"epochs": 5, "lr": 0.1, "batch": 64}, {"01-a": {"epochs": 7}})
    param_file = tmp_path / "f.yaml"
    param_file.write_text("lr: 1e-3\nchapters:\n  2:\n    epochs: 9\n    batch: 32\n")
    file_layer = build_book.load_param_file(param_file, "-f", entries)
    cli = ParamLayer("-p", {"batch": build_book.parse_cli_value("16")})
    layers = [profile, file_layer, cli]
    declared = {"01-a": {"epochs", "lr", "results_dir"}, "02-b": {"epochs", "batch"}}
    build_book.check_parameters(layers, declared)
    injected = {"results_dir": "/r", "build_profile": "smoke"}

    a = build_book.chapter_parameters("01-a", layers, injected, declared["01-a"])
    b = build_book.chapter_parameters("02-b", layers, injected, declared["02-b"])

    assert a == {"epochs": 7, "lr": 0.001, "results_dir": "/r"}
    assert b == {"epochs": 9, "batch": 16}
    assert isinstance(b["batch"], int)


def test_cli_values_are_yaml():
    parse = build_book.parse_cli_value
    assert parse("1") == 1 and parse("1e-3") == 0.001 and parse("0.5") == 0.5
    assert parse("[1, 2]") == [1, 2] and parse("true") is True and parse("relu") == "relu"


@pytest.mark.parametrize(
    "layer, message",
    [
        (ParamLayer("-p", {"epoch": 1}), "Unknown parameter 'epoch' (from -p)"),
        (ParamLayer("-p", {"results_dir": "x"}), "set by the build itself"),
        (ParamLayer("-f x.yaml", {}, {"02-b": {"lr": 1}}), "Unknown parameter 'lr' (from -f x.yaml, chapters.02-b)"),
    ],
)
def test_check_parameters_rejects(layer, message):
    declared = {"01-a": {"epochs", "lr"}, "02-b": {"epochs"}}
    with pytest.raises(build_book.BuildError, match=re.escape(message)):
        build_book.check_parameters([layer], declared)


def test_unparseable_parameter_line_is_a_clear_error(tmp_path):
    notebook = tmp_path / "nb.ipynb"
    nbformat.write(_notebook(_code("n_train = None  # None = everything\nseed = 1", "parameters")), notebook)
    names, unparsed = build_book.declared_parameters(notebook)
    assert set(names) == {"seed"} and unparsed == ["Unable to parse line 1 'n_train = None  # None = everything'."]
    assert "Keep one '=' per line" in str(build_book.unreadable_parameters(notebook, unparsed))


@pytest.mark.parametrize("selector", ["01-alpha", "1", "01", "alpha", "alp", "chapters/01-alpha.ipynb"])
def test_match_chapter(selector):
    entries = build_book.book_entries(
        {"book": {"chapters": ["index.md", "chapters/01-alpha.ipynb", "chapters/02-broken.ipynb"]}}
    )
    assert build_book.match_chapter(selector, entries).stem == "01-alpha"


def test_unknown_chapter_is_a_usage_error(project, capsys):
    code = build_book.main(["--root", str(project), "--chapter", "nope", "--no-render"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Unknown chapter 'nope'" in err and "01-alpha, 02-broken, reference" in err


def test_unknown_parameter_fails_before_running(project, tmp_path, capsys):
    out = tmp_path / "out"
    code = build_book.main(["--root", str(project), "-p", "epoch", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Unknown parameter 'epoch'" in err and "Did you mean 'epochs'?" in err
    assert not out.exists(), "nothing may run when a parameter is unknown"


def test_unknown_profile_lists_the_available_ones(project, capsys):
    assert build_book.main(["--root", str(project), "--profile", "huge", "--no-render"]) == 2
    assert "Available: smoke" in capsys.readouterr().err


# --------------------------------------------------------------------------- a real build


@slow
def test_failed_chapter_is_reported_and_others_survive(built):
    proc, out = built
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "ValueError: deliberate failure in broken" in output
    assert "Failed: 02-broken" in proc.stderr
    assert f"error notebook: {out / 'failed/02-broken.ipynb'}" in proc.stdout
    error_nb = nbformat.read(out / "failed/02-broken.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in error_nb.cells for o in c.get("outputs", []))
    assert not (out / "book/chapters/02-broken.ipynb").exists(), "no page for a chapter this build did not produce"
    assert (out / "book/chapters/01-alpha.ipynb").is_file()
    assert (out / "book/chapters/reference.ipynb").is_file()


@slow
def test_parameters_reach_the_chapters(built):
    proc, out = built
    seen = json.loads((out / "results/alpha.json").read_text())
    assert seen == {"epochs": 1, "lr": 0.001, "results_dir": str(out / "results"), "build_profile": "smoke"}
    reference = nbformat.read(out / "book/chapters/reference.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in reference.cells for o in c.get("outputs", []))
    assert "seeds 3" in printed, "per-chapter profile value"
    assert "DATA-FROM-CWD" in printed, "chapters run with cwd = their folder"


@slow
def test_injected_cell_is_hidden_by_its_tag_only(built):
    _, out = built
    nb = nbformat.read(out / "book/chapters/01-alpha.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert "#|" not in injected[0].source, "one convention: cell tags, no Quarto comment rewriting"
    assert "remove-cell" in injected[0].metadata.tags


@slow
def test_timings_json(built):
    _, out = built
    timings = json.loads((out / "timings.json").read_text())
    assert timings["profile"] == "smoke"
    assert [(c["chapter"], c["ok"]) for c in timings["chapters"]] == [
        ("01-alpha", True),
        ("02-broken", False),
        ("reference", True),
    ]
    assert all(isinstance(c["seconds"], float) for c in timings["chapters"])
    assert isinstance(timings["total_seconds"], float)
    assert timings["peak_rss_mb"] > 0
    after = [c["peak_rss_mb_after"] for c in timings["chapters"]]  # a running peak: never falls, ends at the peak
    assert after == sorted(after) and after[-1] <= timings["peak_rss_mb"] and after[-1] > 0


@slow
def test_offline_edition_pages(built):
    proc, out = built
    site = out / "site"
    assert "Quarto was not found on PATH" in proc.stdout
    assert str(site / "index.html") in proc.stdout
    # Pages sit where Quarto puts them (chapters/x.ipynb -> chapters/x.html).
    names = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    assert names == {"index.html", "chapters/01-alpha.html", "chapters/02-broken.html", "chapters/reference.html",
                     "results/index.html"}
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "<script src" not in text and 'rel="stylesheet" href="http' not in text
        assert "Offline edition built without Quarto" in text
    alpha = (site / "chapters/01-alpha.html").read_text()
    assert "lr = 0.001" not in alpha and "# Parameters" not in alpha, "injected cell hidden"
    assert "REMOVED-CELL" not in alpha and "REMOVED-OUTPUT" not in alpha and "OUTPUT-SOURCE" in alpha
    assert "ECHO-OUTPUT" in alpha and "ECHO-SOURCE" not in alpha
    assert 'src="data:image/png;base64,' in alpha and 'alt="A rising line"' in alpha
    assert "<strong>bold output</strong>" in alpha
    assert "<math" in alpha and "<mfrac>" in alpha
    assert "Appendix" in alpha and 'href="../results/index.html"' in alpha
    assert 'href="../chapters/02-broken.html"' in alpha and 'href="../index.html"' in alpha
    broken = (site / "chapters/02-broken.html").read_text()
    assert "This chapter failed in build" in broken and "ValueError" in broken and "failed/02-broken.ipynb" in broken
    assert "alpha.json" in (site / "results/index.html").read_text()
    assert (site / "results/alpha.json").is_file()


def _stream(text: str, name: str = "stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_offline_edition_hides_by_tags(tmp_path):
    import offline_edition

    cells = [
        nbformat.v4.new_raw_cell("---\ntitle: From front matter\n---"),
        _md(
            "## Intro {#sec-x}\n\n::: {.callout-note}\n## A note\nInside *callout*\n:::\n\n"
            "Bad $\\frac{1}{$ math\n\n![](pic.png)"
        ),
        _code("print('SRC-REMOVE-INPUT')", "remove-input"),
        _code("print('SRC-REMOVE-OUTPUT')", "remove-output"),
        _code("print('SRC-REMOVE-CELL')", "remove-cell"),
    ]
    cells[2].outputs = [_stream("OUT-REMOVE-INPUT")]
    cells[3].outputs = [_stream("OUT-REMOVE-OUTPUT")]
    cells[4].outputs = [_stream("OUT-REMOVE-CELL")]
    chapter = tmp_path / "chapter.ipynb"
    nbformat.write(_notebook(*cells), chapter)
    (tmp_path / "pic.png").write_bytes(_tiny_png())
    pages = [
        offline_edition.PageSource("chapter", "chapters", chapter, tmp_path),
        offline_edition.PageSource("missing", "appendices", None, tmp_path, "Build it with `make`."),
    ]

    index = offline_edition.build_offline_edition(pages, tmp_path / "site", "Book")

    page = (index.parent / "chapter.html").read_text()
    assert "<title>From front matter" in page and "<h1>From front matter</h1>" in page
    assert "{#sec-x}" not in page
    assert re.search(r'<div class="callout-note">\s*<h2 id="A-note">.*<em>callout</em></p>\s*</div>', page, re.DOTALL)
    assert '<code class="tex">' in page, "TeX that latex2mathml rejects stays readable"
    assert 'src="data:image/png;base64,' in page, "markdown images are embedded"
    assert "SRC-REMOVE-INPUT" not in page and "OUT-REMOVE-INPUT" in page
    assert "SRC-REMOVE-OUTPUT" in page and "OUT-REMOVE-OUTPUT" not in page
    assert "REMOVE-CELL" not in page
    assert "Build it with" in (index.parent / "missing.html").read_text()


def _tiny_png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG")
    return buffer.getvalue()


@slow
def test_rebuilding_one_chapter_keeps_the_others(built, tmp_path):
    _, out = built
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    proc = run_build(
        "--root", str(out.parent), "--chapter", "reference", "--kernel", "python3", "--out", str(copy), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (copy / "failed/02-broken.ipynb").is_file(), "earlier error notebook kept"
    assert [c["chapter"] for c in json.loads((copy / "timings.json").read_text())["chapters"]] == ["reference"]
    assert (copy / "site/chapters/02-broken.html").is_file() and (copy / "site/chapters/01-alpha.html").is_file()
    manifest = json.loads((copy / "results/build.json").read_text())
    assert manifest["chapters"]["reference"]["build_id"] == manifest["build_id"]
    assert manifest["chapters"]["01-alpha"]["build_id"] != manifest["build_id"], "not rebuilt: earlier build"


def fake_quarto(bin_dir: Path, exit_code: int) -> None:
    """A stand-in `quarto` that records its arguments, then writes a site or fails."""
    script = bin_dir / "quarto"
    script.write_text(
        f'#!/bin/sh\necho "$@" > "{bin_dir}/args"\n[ {exit_code} -eq 0 ] || exit {exit_code}\n'
        'mkdir -p "$2/_book" && echo "<h1>site</h1>" > "$2/_book/index.html"\n'
    )
    script.chmod(0o755)


@slow
@pytest.mark.parametrize("exit_code", [0, 1])
def test_render_with_quarto_on_path(built, tmp_path, monkeypatch, capsys, exit_code):
    _, out = built
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    shutil.rmtree(copy / "site")
    # Quarto renders only a complete book; stand the error notebook in for the failed chapter.
    shutil.copy(copy / "failed/02-broken.ipynb", copy / "book/chapters/02-broken.ipynb")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_quarto(bin_dir, exit_code)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    config = build_book.load_quarto_config(out.parent)

    build_book.render(out.parent, copy, config, build_book.book_entries(config))

    printed, book = capsys.readouterr().out, copy / "book"
    assert (bin_dir / "args").read_text().split() == ["render", str(book)]
    assert (book / "_quarto.yml").is_file() and (book / "index.md").is_file()
    assert (book / "chapters/data.txt").is_file(), "files beside the chapters are staged too"
    if exit_code == 0:
        assert f"Quarto site: {book / '_book/index.html'}" in printed
        assert not (copy / "site").exists()
    else:
        assert "quarto render failed" in printed and "offline HTML edition instead" in printed
        assert (copy / "site/index.html").is_file()


@slow
@needs_chromium
def test_check_site_passes_in_chromium(built):
    import check_site

    _, out = built
    # The failed chapter has no executed notebook to link (its error notebook is in failed/).
    assert check_site.check_site(out / "site") in ([], ["chapters/02-broken.html: no link to the executed notebook"])
    assert (out / "screenshots/chapters_01-alpha.png").stat().st_size > 0


@slow
@needs_chromium
def test_check_site_reports_problems(tmp_path):
    import check_site

    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text(
        '<!DOCTYPE html><html><head><link rel="stylesheet" href="http://127.0.0.1:9/x.css"></head>'
        '<body><h1>Broken</h1><img src="missing.png" alt="x"><nav><a href="gone.html">gone</a></nav></body></html>'
    )
    problems = "\n".join(check_site.check_site(site))
    assert "image did not load" in problems
    assert "external resource reference: http://127.0.0.1:9/x.css" in problems
    assert "missing file: gone.html" in problems


# --------------------------------------------------------------------------- the real book


def test_real_quarto_yml_has_the_book_order():
    entries = build_book.book_entries(build_book.load_quarto_config(ROOT))
    assert [(e.path, e.section) for e in entries][:2] == [
        ("index.md", "chapters"),
        ("chapters/01-motivation.ipynb", "chapters"),
    ]
    assert [e.stem for e in entries if e.section == "appendices"] == ["reading-verdicts", "reference"]
    assert [e.stem for e in entries][1:10] == sorted(e.stem for e in entries if e.stem[:2].isdigit())


def test_real_quarto_yml_lists_exactly_the_chapter_notebooks():
    existing = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "chapters").glob("*.ipynb"))
    if not existing:
        pytest.skip("chapters/ has no notebooks yet (they are being written)")
    listed = [e.path for e in build_book.book_entries(build_book.load_quarto_config(ROOT)) if e.is_notebook]
    missing, unlisted = sorted(set(listed) - set(existing)), sorted(set(existing) - set(listed))
    assert not missing and not unlisted, f"listed in _quarto.yml but missing: {missing}; not listed: {unlisted}"


def test_real_profiles_load():
    entries = build_book.book_entries(build_book.load_quarto_config(ROOT))
    assert build_book.profile_layer(ROOT, "default", entries).common == {}
    smoke = build_book.profile_layer(ROOT, "smoke", entries).common
    assert smoke == {"epochs": 1, "n_train": 2048, "n_test": 1024, "n_seeds": 2, "batch_size": 256, "lr_find_iters": 20}


# --------------------------------------------------------------------------- issue 10: build integrity

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
    """Chapters that write real results files with lsuvlib.results.Chapter; 02 fails on request; 03 sleeps."""
    chapters = root / "chapters"
    chapters.mkdir(parents=True)
    (root / "_quarto.yml").write_text(PROVENANCE_QUARTO_YML)

    def saving(stem: str, extra: str = "") -> str:
        return ("from lsuvlib.results import Chapter\n"
                f"ch = Chapter({stem!r}, dict(x=x, device='cpu'), results_dir)\n"
                "ch.save(x=x)\n" + extra)

    good = _notebook(_code("x = 1\nresults_dir = None", "parameters"), _code(saving("01-good")))
    flaky = _notebook(
        _code("x = 1\nfail = False\nresults_dir = None", "parameters"),
        _code(saving("02-flaky", "if fail:\n    raise RuntimeError('flaky failed on purpose')")),
    )
    slow = _notebook(
        _code("x = 1\nsleep = 0.0\nresults_dir = None", "parameters"),
        _code("import os, time\n"
              "for i in range(3):\n"
              "    with open(os.environ['LSUV_PROGRESS_FILE'], 'a') as f:\n"
              "        f.write(f'step {i + 1}/3 done\\n')\n"
              "time.sleep(sleep)\n"),
    )
    for name, nb in [("01-good", good), ("02-flaky", flaky), ("03-slow", slow)]:
        nbformat.write(nb, chapters / f"{name}.ipynb")
    return root


def run_build_env(*args: str, cwd: Path, **popen) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / "build_book.py"), *args], cwd=cwd, env=env_without_quarto(),
                          capture_output=True, text=True, **popen)


@pytest.fixture(scope="module")
def provenance(tmp_path_factory):
    """A provenance project built once in full; tests copy its output before changing it."""
    root = make_provenance_project(tmp_path_factory.mktemp("provenance"))
    out = root / "_out"
    proc = run_build_env("--root", str(root), "--out", str(out), "--no-render", cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, out, proc


def _copy_out(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    return copy


@slow
def test_full_build_stamps_every_results_file_with_its_build(provenance):
    from lsuvlib.results import load_with_builds

    _, out, proc = provenance
    manifest = json.loads((out / "results/build.json").read_text())
    assert manifest["status"] == "finished" and manifest["profile"] == "default"
    assert f"(build {manifest['build_id']})" in proc.stdout
    view = load_with_builds(out / "results")
    assert view.build_id == manifest["build_id"]
    assert set(view.files) == {"01-good", "02-flaky"} and all(f.latest for f in view.files.values())
    assert view.files["01-good"].build["status"] == "ok" and view.files["01-good"].build["params"] == {}
    assert "without encryption" not in proc.stdout + proc.stderr, "kernels talk over IPC, not plain TCP"


@slow
def test_failed_chapter_does_not_leave_its_old_results_as_this_builds(provenance, tmp_path):
    """Issue 10, case 1: a failed rebuild left the earlier results standing in for this build's."""
    from lsuvlib.results import load_with_builds

    root, out, _ = provenance
    copy = _copy_out(out, tmp_path)
    old_results = (copy / "results/02-flaky.json").read_bytes()
    old_page = (copy / "book/chapters/02-flaky.ipynb").read_bytes()
    proc = run_build_env("--root", str(root), "--out", str(copy), "--no-render", "--chapter", "2", "-p", "fail", "true",
                         cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    manifest = json.loads((copy / "results/build.json").read_text())
    build = manifest["build_id"]
    assert not (copy / "results/02-flaky.json").exists(), "the old results must not pass as this build's"
    assert not (copy / "book/chapters/02-flaky.ipynb").exists(), "nor the old page"
    # Nothing is lost: the earlier outputs are set aside, the failed run's outputs kept apart.
    assert (copy / f"stale/{build}/results/02-flaky.json").read_bytes() == old_results
    assert (copy / f"stale/{build}/book/chapters/02-flaky.ipynb").read_bytes() == old_page
    assert json.loads((copy / "failed/02-flaky.json").read_text())["build"] == build
    assert "RuntimeError" in (copy / "failed/02-flaky.ipynb").read_text()
    assert "error notebook: out/failed/02-flaky.ipynb" in proc.stdout  # relative to the cwd
    assert "earlier output set aside" in proc.stdout
    record = manifest["chapters"]["02-flaky"]
    assert record["status"] == "failed" and record["build_id"] == build and record["params"] == {"fail": True}
    assert "RuntimeError: flaky failed on purpose" in record["error"]
    # What a summary chapter sees: chapter 1 only, from an earlier build, and flagged as such.
    view = load_with_builds(copy / "results")
    assert set(view.files) == {"01-good"}
    assert not view.files["01-good"].latest and view.earlier() == view.files
    assert view.files["01-good"].label.startswith(f"build {manifest['chapters']['01-good']['build_id']} (profile")


@slow
def test_unknown_kernel_is_refused_before_anything_runs(provenance, tmp_path):
    """Issue 10, case 2: `--kernel nosuch` replaced every executed notebook with an unexecuted copy."""
    root, out, _ = provenance
    copy = _copy_out(out, tmp_path)
    before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()}
    proc = run_build_env("--root", str(root), "--out", str(copy), "--kernel", "nosuch", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: Unknown Jupyter kernel 'nosuch' (from --kernel). Installed kernels:")
    assert "python3" in proc.stderr
    assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file()} == before, "nothing touched"


def test_a_failed_run_never_replaces_a_good_notebook(tmp_path):
    source = tmp_path / "nb.ipynb"
    nbformat.write(_notebook(_code("raise ValueError('no')")), source)
    dest = tmp_path / "book/nb.ipynb"
    dest.parent.mkdir()
    dest.write_text("GOOD")
    result = build_book.execute_chapter(source, dest, {}, None, failed_dir=tmp_path / "failed")
    assert not result.ok and dest.read_text() == "GOOD"
    assert result.failed_notebook == tmp_path / "failed/nb.ipynb" and result.failed_notebook.is_file()
    assert [p.name for p in dest.parent.iterdir()] == ["nb.ipynb"], "no temporary left"


def test_second_build_into_the_same_folder_is_refused(provenance, tmp_path, capsys):
    """Issue 10, case 6: two builds into one folder both reported success."""
    root = provenance[0]
    out = tmp_path / "out"
    with build_book.OutputLock(out):
        code = build_book.main(["--root", str(root), "--out", str(out), "--no-render"])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: Another build (pid {os.getpid()}) is writing into {out}." in err
    assert not (out / "results").exists()
    with build_book.OutputLock(out):  # released: the next build may go ahead
        pass


@pytest.mark.parametrize("value, given", [("abc", "'abc' (a string)"), ("1.5", "'1.5' (a float)"),
                                          ("", "'' (an empty value)")])
def test_parameter_types_are_checked_before_any_kernel_starts(provenance, tmp_path, capsys, value, given):
    root = provenance[0]
    out = tmp_path / "out"
    code = build_book.main(["--root", str(root), "--out", str(out), "-p", "x", value])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err == (f"error: Parameter 'x' of chapters 01-good, 02-flaky, 03-slow must be an int (its default is 1), "
                   f"but -p gives {given}.\n")


def test_parameter_type_rules():
    def problems(default, value, help="", raw=None):
        layer = ParamLayer("-p", {"p": value}, raw={"p": raw} if raw is not None else {})
        return build_book.type_problems("07-x", {"p": {"default": default, "help": help}}, [layer])

    assert problems("0.2", 1) == [] and problems("0.2", 1e-3) == []  # lr 1 means 1.0
    assert problems("None", 2048) == [] and problems("None", None) == []  # n_train: an int or null
    assert "must be an int or null" in problems("None", "all")[0]
    assert problems("0.1", None, help="None: never") == [] and problems("0.1", None) != []
    assert problems("True", False) == [] and "must be a bool" in problems("True", 1)[0]
    assert problems("[0.015, 0.01]", [1, 0.5]) == []
    assert "must be a list of numbers" in problems("[0.015, 0.01]", [0.1, "x"])[0]
    assert problems("'auto'", "cpu") == [] and "must be a string" in problems("'auto'", 3)[0]
    assert problems("3", True) != [], "a bool is not a count"


def test_out_that_is_a_file_is_a_one_line_error(provenance, tmp_path, capsys):
    root = provenance[0]
    out = tmp_path / "out"
    out.write_text("")
    assert build_book.main(["--root", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {out} is a file, not a folder: give a folder to build into.\n"
    out.unlink()
    (out / "results").parent.mkdir()
    (out / "results").write_text("")
    assert build_book.main(["--root", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out / 'results'} is a file, but the build keeps its results in that folder")
    assert err.count("\n") == 1


def test_a_bare_number_is_a_chapter_number_only():
    entries = build_book.book_entries({"book": {"chapters": ["chapters/01-a.ipynb", "chapters/10-b.ipynb"]}})
    assert build_book.match_chapter("10", entries).stem == "10-b"
    with pytest.raises(build_book.BuildError, match="No chapter has the number 0. Chapter numbers: 1, 10"):
        build_book.match_chapter("0", entries)


def test_unknown_chapter_in_a_parameter_file_names_the_file(tmp_path):
    entries = build_book.book_entries({"book": {"chapters": ["chapters/01-a.ipynb"]}})
    path = tmp_path / "mine.yaml"
    path.write_text("chapters:\n  03-nosuch:\n    epochs: 1\n")
    with pytest.raises(build_book.BuildError, match=re.escape(f"In {path}, under `chapters:`: Unknown chapter '03-nosuch'")):
        build_book.load_param_file(path, "-f mine.yaml", entries)


@slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_build_keeps_finished_outputs_and_leaves_no_temporaries(provenance, tmp_path, sig):
    root, out, _ = provenance
    copy = _copy_out(out, tmp_path)
    before = {p.relative_to(copy): p.read_bytes() for p in (copy / "book").rglob("*.ipynb")}
    old_results = (copy / "results/02-flaky.json").read_bytes()
    proc = subprocess.Popen(
        [sys.executable, str(TOOLS / "build_book.py"), "--root", str(root), "--out", str(copy), "--no-render",
         "--chapter", "2", "--chapter", "3", "-p", "sleep", "60"],
        cwd=tmp_path, env=env_without_quarto(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_sigint,
    )
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
        "and 03-slow keeps its earlier output."
    )
    assert not list(copy.rglob("*.tmp*")), "no hidden temporary notebooks"
    after = {p.relative_to(copy): p for p in (copy / "book").rglob("*.ipynb")}
    assert set(after) == set(before)
    assert after[Path("book/chapters/03-slow.ipynb")].read_bytes() == before[Path("book/chapters/03-slow.ipynb")]
    assert json.loads((copy / "results/02-flaky.json").read_text())["build"] != json.loads(old_results)["build"]
    manifest = json.loads((copy / "results/build.json").read_text())
    assert manifest["status"] == "interrupted"
    assert manifest["chapters"]["02-flaky"]["build_id"] == manifest["build_id"]
    assert manifest["chapters"]["03-slow"]["build_id"] != manifest["build_id"], "its earlier record stands"


@slow
def test_progress_lines_appear_under_their_chapter(provenance):
    _, _, proc = provenance
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if "03-slow" in line and line.startswith("[3/3]"))
    steps = [i for i, line in enumerate(lines) if line.startswith("      · step")]
    done = next(i for i, line in enumerate(lines) if i > start and "ok in" in line)
    assert [lines[i] for i in steps] == [f"      · step {k}/3 done" for k in (1, 2, 3)]
    assert start < steps[0] and steps[-1] < done


def test_progress_tail_prints_only_whole_lines(tmp_path, capsys):
    path = tmp_path / "progress.txt"
    tail = build_book.ProgressTail(path, indent="> ", interval=0.01)
    tail.start()
    with open(path, "a") as f:
        f.write("1/4 runs done\n2/4")
    tail.stop()
    assert capsys.readouterr().out == "> 1/4 runs done\n"


def test_kernels_use_ipc_sockets_in_a_private_folder(tmp_path):
    km = build_book.ipc_kernel_manager(tmp_path)(kernel_name="python3")
    assert km.transport == "ipc"
    assert Path(km.connection_file).parent == tmp_path and km.ip.startswith(str(tmp_path))


@slow
def test_outputs_are_world_readable(provenance):
    _, out, _ = provenance
    for path in [out / "results/01-good.json", out / "results/build.json", out / "timings.json",
                 out / "book/chapters/01-good.ipynb"]:
        assert path.stat().st_mode & 0o777 == 0o644 & ~_umask(), path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
