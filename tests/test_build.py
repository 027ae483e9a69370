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
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
TOOLS = ROOT / "tools"
sys.path.insert(0, str(TOOLS))

import build_book  # noqa: E402
from build_book import Entry, ParamLayer  # noqa: E402

HAVE_CHROMIUM = Path("/usr/bin/chromium").exists() and Path("/usr/bin/chromedriver").exists()
slow = pytest.mark.slow  # runs notebooks or a browser (marker defined in pyproject.toml)
needs_chromium = pytest.mark.skipif(not HAVE_CHROMIUM, reason="needs /usr/bin/chromium and /usr/bin/chromedriver")

TINY_QUARTO_YML = """\
project:
  type: book
  output-dir: _book
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
        _code("#| echo: false\n# ECHO-SOURCE\nprint('ECHO-OUTPUT')"),
        _code("print('REMOVED-CELL')", "remove-cell"),
        _code("#| include: false\nprint('INCLUDE-FALSE')"),
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
    assert names == {"seed"} and unparsed == ["Unable to parse line 1 'n_train = None  # None = everything'."]
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
    error_nb = nbformat.read(out / "book/chapters/02-broken.ipynb", as_version=4)
    assert any(o.get("ename") == "ValueError" for c in error_nb.cells for o in c.get("outputs", []))
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
def test_injected_cell_is_hidden_for_quarto(built):
    _, out = built
    nb = nbformat.read(out / "book/chapters/01-alpha.ipynb", as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1
    assert injected[0].source.startswith("#| include: false\n")
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
    assert "REMOVED-CELL" not in alpha and "INCLUDE-FALSE" not in alpha
    assert "ECHO-OUTPUT" in alpha and "ECHO-SOURCE" not in alpha
    assert 'src="data:image/png;base64,' in alpha and 'alt="A rising line"' in alpha
    assert "<strong>bold output</strong>" in alpha
    assert "<math" in alpha and "<mfrac>" in alpha
    assert "Appendix" in alpha and 'href="../results/index.html"' in alpha
    assert 'href="../chapters/02-broken.html"' in alpha and 'href="../index.html"' in alpha
    assert "ValueError" in (site / "chapters/02-broken.html").read_text()
    assert "alpha.json" in (site / "results/index.html").read_text()
    assert (site / "results/alpha.json").is_file()


def _stream(text: str, name: str = "stdout"):
    return nbformat.v4.new_output("stream", name=name, text=text)


def test_offline_edition_mirrors_quarto_visibility(tmp_path):
    import offline_edition

    cells = [
        nbformat.v4.new_raw_cell("---\ntitle: From front matter\n---"),
        _md(
            "## Intro {#sec-x}\n\n::: {.callout-note}\n## A note\nInside *callout*\n:::\n\n"
            "Bad $\\frac{1}{$ math\n\n![](pic.png)"
        ),
        _code("print('SRC-REMOVE-INPUT')", "remove-input"),
        _code("print('SRC-HIDE-OUTPUT')", "hide-output"),
        _code("#| output: false\nprint('SRC-OUTPUT-FALSE')"),
        _code("#| warning: false\nprint('SRC-WARNING-FALSE')"),
    ]
    cells[2].outputs = [_stream("OUT-REMOVE-INPUT")]
    cells[3].outputs = [_stream("OUT-HIDE-OUTPUT")]
    cells[4].outputs = [_stream("OUT-OUTPUT-FALSE")]
    cells[5].outputs = [_stream("OUT-KEPT"), _stream("OUT-WARNING", "stderr")]
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
    assert "SRC-HIDE-OUTPUT" in page and "OUT-HIDE-OUTPUT" not in page
    assert "SRC-OUTPUT-FALSE" in page and "OUT-OUTPUT-FALSE" not in page and "#|" not in page
    assert "OUT-KEPT" in page and "OUT-WARNING" not in page
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
    assert (copy / "book/chapters/02-broken.ipynb").is_file(), "earlier error notebook kept"
    assert [c["chapter"] for c in json.loads((copy / "timings.json").read_text())["chapters"]] == ["reference"]
    assert (copy / "site/chapters/02-broken.html").is_file() and (copy / "site/chapters/01-alpha.html").is_file()


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
    assert check_site.check_site(out / "site") == []
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
    assert [e.stem for e in entries if e.section == "appendices"] == ["reference"]
    assert [e.stem for e in entries][1:9] == sorted(e.stem for e in entries if e.stem[:2].isdigit())


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
