"""The real book: its source notebooks are clean; the offline edition (built from small fake executed
notebooks, no kernel) cites every page and links every chapter's notebooks; the Quarto page script does
the same; and every chapter runs end to end under the smoke profile (tests named *smoke*)."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from lsuvlib.results import validate_results

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
REAL_MIRROR = os.environ.get("LSUV_DATA_DIR")  # read before conftest's fixture hides it
TRAINING_CHAPTERS = ["01-motivation", "02-lr-finder", "03-baseline", "04-input-normalisation",
                     "05-batchnorm-kaiming", "06-lsuv-callback", "07-mnist-variants"]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_source_notebook_has_no_outputs_and_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    # papermill skips a parameter line with a second '=' (e.g. in its comment): the value would be lost.
    for line in params[0].source.splitlines():
        assert line.count("=") <= 1, f"{path.name}: parameter line {line!r} has more than one '='"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


def test_every_chapter_names_its_results_file_after_itself():
    for path in CHAPTERS:
        if path.stem in TRAINING_CHAPTERS:
            source = "".join(c.source for c in nbformat.read(path, as_version=4).cells)
            assert f'Chapter("{path.stem}"' in source, path.name


@pytest.fixture(scope="module")
def smoke_build(tmp_path_factory):
    """Build the whole book once with the smoke profile; the tests below read what it produced."""
    if not REAL_MIRROR or not (Path(REAL_MIRROR) / "mnist").is_dir():
        pytest.skip("the MNIST mirror is needed (set LSUV_DATA_DIR to the folder holding mnist/)")
    out = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "LSUV_DATA_DIR": REAL_MIRROR, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "LSUV_CACHE_DIR": str(out / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "build_book.py"), "--profile", "smoke",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=1800)
    return out, proc


@pytest.mark.slow
def test_smoke_build_succeeds_for_every_chapter(smoke_build):
    out, proc = smoke_build
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "offline HTML edition" in proc.stdout
    timings = json.loads((out / "timings.json").read_text())
    assert [c["chapter"] for c in timings["chapters"]] == [p.stem for p in sorted(CHAPTERS, key=_book_order)]
    assert all(c["ok"] for c in timings["chapters"])


def _book_order(path: Path) -> tuple:
    return (path.stem == "reference", path.stem)


@pytest.mark.slow
@pytest.mark.parametrize("stem", [p.stem for p in CHAPTERS])
def test_smoke_executed_chapter_has_no_errors_and_hides_injected_parameters(smoke_build, stem):
    out, _ = smoke_build
    nb = nbformat.read(out / "book" / "chapters" / f"{stem}.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert all("remove-cell" in c.metadata.get("tags", []) for c in injected), "hidden by its tag"
    if stem in TRAINING_CHAPTERS:
        figures = [o for o in outputs if "image/png" in o.get("data", {})]
        assert figures, f"{stem} shows no figure"


@pytest.mark.slow
@pytest.mark.parametrize("stem", TRAINING_CHAPTERS)
def test_smoke_each_chapter_writes_valid_results(smoke_build, stem):
    out, _ = smoke_build
    data = json.loads((out / "results" / f"{stem}.json").read_text())
    validate_results(data)
    assert data["chapter"] == stem and data["versions"]["torch"]
    assert data["summary"], "the prose numbers must come from saved values"
    for config, runs in data["runs"].items():
        assert len({r["seed"] for r in runs}) == len(runs), f"{stem}/{config}: seeds must differ"


@pytest.mark.slow
def test_smoke_summary_writes_the_combined_table(smoke_build):
    out, _ = smoke_build
    lines = (out / "results" / "all-results.csv").read_text().splitlines()
    assert lines[0].split(",")[:6] == ["chapter", "build", "dataset", "stand_in", "config", "seed"]
    assert {line.split(",")[0] for line in lines[1:]} >= {"03-baseline", "07-mnist-variants"}


@pytest.mark.slow
def test_smoke_offline_edition_opens_in_chromium(smoke_build):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make system installs them)")
    sys.path.insert(0, str(ROOT / "tools"))
    from check_site import check_pages

    out, _ = smoke_build
    reports = check_pages(out / "site")
    assert [f"{r.name}: {p}" for r in reports for p in r.problems] == []
    pages = {r.name: r for r in reports}
    assert {f"chapters/{s}.html" for s in TRAINING_CHAPTERS} <= set(pages)
    assert all(pages[f"chapters/{s}.html"].images > 0 for s in TRAINING_CHAPTERS)



# --------------------------------------------------------------------------- the site, without a kernel

sys.path.insert(0, str(ROOT / "tools"))
import build_book  # noqa: E402
import offline_edition  # noqa: E402

HIDING_OPTIONS = {"echo": "remove-input", "include": "remove-cell", "output": "remove-output"}
TABLE_MD = "| config | accuracy |\n|---|---|\n| baseline | 0.91 |\n"


def _executed_cells(title: str):
    """A small executed chapter: what a real one shows, with markers for what must stay hidden."""
    def code(source, *tags, outputs=()):
        cell = nbformat.v4.new_code_cell(source, execution_count=1)
        cell.metadata["tags"] = list(tags)
        cell.outputs = list(outputs)
        return cell

    def stream(text):
        return nbformat.v4.new_output("stream", name="stdout", text=text)

    def result(data):
        return nbformat.v4.new_output("execute_result", data=data, execution_count=1)

    png = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")
    return [
        nbformat.v4.new_markdown_cell(f"# {title}\n\nIntro text."),
        code("epochs = 10\nresults_dir = None", "parameters"),
        code("# Parameters\nepochs = 1\n", "injected-parameters", "remove-cell"),
        code("#| echo: false\nprint('HIDDEN-SOURCE')", "remove-input", outputs=[stream("SHOWN-OUTPUT\n")]),
        code("print('REMOVED-CELL')", "remove-cell", outputs=[stream("REMOVED-CELL\n")]),
        code("print('KEPT-SOURCE')", "remove-output", outputs=[stream("REMOVED-OUTPUT\n")]),
        code("markdown_table(rows)", outputs=[result({"text/plain": repr(TABLE_MD), "text/markdown": TABLE_MD})]),
        code("'a plain string'", outputs=[result({"text/plain": "'| not | a table |'"})]),
        code("#| fig-alt: Accuracy rises with each epoch\nplot()",
             outputs=[nbformat.v4.new_output("display_data", data={"image/png": png, "text/plain": "<Figure>"})]),
    ]


def make_fake_book(root: Path, quarto_yml: str | None = None) -> tuple[Path, dict, list]:
    """The real book's layout and _quarto.yml, with tiny fake source and executed notebooks."""
    (root / "chapters").mkdir(parents=True)
    (root / "_quarto.yml").write_text(quarto_yml or (ROOT / "_quarto.yml").read_text())
    shutil.copy(ROOT / "index.md", root / "index.md")
    config = build_book.load_quarto_config(root)
    entries = build_book.book_entries(config)
    out = root / "_build"
    for entry in (e for e in entries if e.is_notebook):
        title = f"Title of {entry.stem}"
        source = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(f"# {title}"),
                                                 nbformat.v4.new_code_cell("epochs = 10")])
        source.cells[1].metadata["tags"] = ["parameters"]
        nbformat.write(source, root / entry.path)
        (out / "book" / entry.path).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nbformat.v4.new_notebook(cells=_executed_cells(title)), out / "book" / entry.path)
    return out, config, entries


@pytest.fixture(scope="module")
def offline_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("fakebook")
    out, config, entries = make_fake_book(root)
    build_book.build_offline(root, out, config, entries)
    return root, out / "site", config, entries


def _soup(path: Path):
    from bs4 import BeautifulSoup

    return BeautifulSoup(path.read_text(), "html.parser")


def _meta(soup) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for tag in soup.find_all("meta", attrs={"name": lambda n: n and n.startswith("citation_")}):
        found.setdefault(tag["name"], []).append(tag["content"])
    return found


def _chapters(entries):
    return [e for e in entries if e.is_notebook]


def test_offline_edition_cites_every_chapter_page(offline_site):
    _, site, config, entries = offline_site
    book = config["book"]["title"]
    for entry in _chapters(entries):
        soup = _soup(site / Path(entry.path).with_suffix(".html"))
        title = f"Title of {entry.stem}"
        assert _meta(soup) == {
            "citation_title": [title],
            "citation_author": ["lsuv-book contributors"],
            "citation_publication_date": ["2026-11-22"],
            "citation_cover_date": ["2026-11-22"],
            "citation_year": ["2026"],
            "citation_online_date": ["2026-11-22"],
            "citation_language": ["en"],
            "citation_inbook_title": [book],
        }, entry.path
        block = soup.select_one("#book-citation .book-citation-text").get_text()
        assert block == f"lsuv-book contributors. 2026. “{title}.” In {book}, version 0.1.0.", entry.path
        bibtex = soup.select_one("#book-citation .book-citation-bibtex").get_text()
        assert bibtex.startswith(f"@incollection{{lsuv2026-{entry.stem},") and f"booktitle = {{{book}}}" in bibtex


def test_offline_edition_cites_the_book_on_its_home_page(offline_site):
    _, site, config, _ = offline_site
    soup = _soup(site / "index.html")
    meta = _meta(soup)
    assert meta["citation_title"] == [config["book"]["title"]] and "citation_inbook_title" not in meta
    assert meta["citation_book_title"] == [config["book"]["title"]], "as Quarto writes container-title for a book"
    assert meta["citation_author"] == ["lsuv-book contributors"]
    text = soup.select_one("#book-citation .book-citation-text").get_text()
    assert text == f"lsuv-book contributors. 2026. {config['book']['title']}, version 0.1.0."
    assert soup.select_one("#book-citation-heading") and soup.select_one("#book-citation .book-citation-bibtex")


def test_offline_edition_links_each_chapters_notebooks(offline_site):
    root, site, _, entries = offline_site
    for entry in _chapters(entries):
        page = site / Path(entry.path).with_suffix(".html")
        soup = _soup(page)
        executed = soup.select_one("p.book-notebooks a.notebook-executed")["href"]
        source = soup.select_one("p.book-notebooks a.notebook-source")["href"]
        executed_copy, source_copy = (page.parent / executed).resolve(), (page.parent / source).resolve()
        assert executed_copy.read_bytes() == (root / "_build" / "book" / entry.path).read_bytes()
        assert source_copy.read_bytes() == (root / entry.path).read_bytes()
        assert any("parameters" in c.metadata.get("tags", []) for c in nbformat.read(source_copy, 4).cells)
        assert executed_copy.is_relative_to(site) and source_copy.is_relative_to(site)
        assert oct(executed_copy.stat().st_mode & 0o777) == "0o644"
    assert not _soup(site / "index.html").select("p.book-notebooks"), "the home page has no notebook"


def test_offline_edition_renders_tables_and_hides_cells_by_tag(offline_site):
    _, site, _, entries = offline_site
    for entry in _chapters(entries):
        page = site / Path(entry.path).with_suffix(".html")
        text, soup = page.read_text(), _soup(page)
        table = soup.select_one(".output_markdown table")
        assert table is not None and [th.get_text() for th in table.select("th")] == ["config", "accuracy"]
        shown_as_text = [pre.get_text() for pre in soup.select(".output_text.output_execute_result pre")]
        assert shown_as_text == ["'| not | a table |'"], "a str shows as text, not as a table"
        assert "#|" not in text and "HIDDEN-SOURCE" not in text and "SHOWN-OUTPUT" in text
        assert "REMOVED-CELL" not in text and "REMOVED-OUTPUT" not in text and "KEPT-SOURCE" in text
        assert "epochs = 1" not in text, "papermill's injected cell is hidden"
        assert soup.find("img", alt="Accuracy rises with each epoch") is not None


def test_offline_edition_wraps_wide_tables_and_long_lines(offline_site):
    _, site, _, _ = offline_site
    css = (ROOT / "tools/templates/offline/book.css").read_text()
    assert "pre { white-space: pre-wrap; overflow-wrap: anywhere; }" in css, "code and outputs wrap"
    assert "th, td { overflow-wrap: break-word; }" in css, "table cells wrap between words only"
    assert ".input_area { background: var(--code-bg); border: 1px solid var(--rule); border-radius: 6px; }" in css
    assert "td { overflow-wrap: break-word; }" in (site / "index.html").read_text(), "the page inlines the CSS"


def test_offline_edition_puts_the_site_url_in_each_citation(tmp_path):
    quarto_yml = (ROOT / "_quarto.yml").read_text().replace(
        "  # site-url: https://example.org/lsuv-book", "  site-url: https://example.org/lsuv-book/")
    out, config, entries = make_fake_book(tmp_path, quarto_yml)
    assert config["book"]["site-url"]
    build_book.build_offline(tmp_path, out, config, entries)
    chapter = _chapters(entries)[0]
    soup = _soup(out / "site" / Path(chapter.path).with_suffix(".html"))
    url = f"https://example.org/lsuv-book/{Path(chapter.path).with_suffix('.html').as_posix()}"
    assert _meta(soup)["citation_fulltext_html_url"] == [url]
    assert soup.select_one(".book-citation-text a")["href"] == url
    assert _meta(_soup(out / "site" / "index.html"))["citation_fulltext_html_url"] == ["https://example.org/lsuv-book/"]


def test_citation_metadata_agrees_with_citation_cff():
    import yaml

    import lsuvlib

    config = build_book.load_quarto_config(ROOT)
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    book = offline_edition.book_citation(config)
    assert book.title == config["book"]["title"] == cff["title"]
    assert list(book.authors) == [a.get("name") or f"{a['given-names']} {a['family-names']}" for a in cff["authors"]]
    assert book.authors == offline_edition.author_names(config["book"]["author"])
    assert book.date == str(cff["date-released"]) == str(config["book"]["date"])
    assert book.version == str(cff["version"]) == lsuvlib.__version__
    assert book.site_url == str(cff.get("url", "")).rstrip("/")
    assert config["google-scholar"] is True and config["citation"]["type"] == "chapter"
    script = config["format"]["html"]["include-after-body"][0]["text"]
    assert f'var version = "{book.version}";' in script, "the Quarto page script repeats citation.version"


def test_chapters_hide_cells_by_tags_that_both_editions_honour():
    """A `#| echo/include/output: false` option hides a cell in Quarto only; the tag must say it too."""
    import re

    for path in CHAPTERS:
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            tags = set(cell.metadata.get("tags", []))
            for option, tag in HIDING_OPTIONS.items():
                if re.search(rf"^#\|\s*{option}:\s*false\s*$", cell.source, re.MULTILINE):
                    where = f"{path.name} cell {i}: `#| {option}: false` without the {tag} tag"
                    assert tag in tags or "remove-cell" in tags, where


def test_quarto_settings_come_from_the_documentation():
    config = build_book.load_quarto_config(ROOT)
    html = config["format"]["html"]
    assert html["code-overflow"] == "wrap"
    assert {"chapters/*.ipynb", "source/"} <= set(config["project"]["resources"]), "notebooks reach the site"
    assert config["author"] and config["date"] and config["lang"] == "en"
    assert config["citation"]["container-title"] == config["book"]["title"]
    front, _ = offline_edition.split_front_matter((ROOT / "index.md").read_text())
    assert front["citation"]["type"] == "book"


def _quarto_like_page(path: Path, title: str, meta: list[tuple[str, str]], script: str) -> None:
    """A page shaped like Quarto's book chapter HTML (title block, main content, citation_* tags)."""
    import html as html_lib

    tags = "\n".join(f'<meta name="{n}" content="{html_lib.escape(c)}">' for n, c in meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<!DOCTYPE html><html><head><meta charset="utf-8">{tags}</head><body>'
        f'<main class="content" id="quarto-document-content"><header id="title-block-header">'
        f'<h1 class="title"><span class="chapter-number">3</span>\u00a0 <span class="chapter-title">{title}</span></h1>'
        f"</header><p>Body.</p></main>{script}</body></html>"
    )


@pytest.mark.slow
def test_quarto_page_script_shows_the_offline_editions_citation_and_links(offline_site, tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make system installs them)")
    from check_site import chromium

    _, site, config, entries = offline_site
    script = config["format"]["html"]["include-after-body"][0]["text"]
    chapter = _chapters(entries)[2]
    offline = _soup(site / Path(chapter.path).with_suffix(".html"))
    # Quarto numbers the chapter's citation_title; the script takes the title from the heading.
    meta = [(n, f"3\u00a0 {c}" if n == "citation_title" else c) for n, c in _meta_list(offline)]
    page = tmp_path / Path(chapter.path).with_suffix(".html")
    _quarto_like_page(page, f"Title of {chapter.stem}", meta, script)
    index = tmp_path / "index.html"
    _quarto_like_page(index, config["book"]["title"], _meta_list(_soup(site / "index.html")), script)
    probe = """return {
      text: (document.querySelector('#book-citation .book-citation-text') || {}).textContent,
      bibtex: (document.querySelector('#book-citation .book-citation-bibtex') || {}).textContent,
      executed: (document.querySelector('.book-notebooks a.notebook-executed') || {href: null}).getAttribute('href'),
      source: (document.querySelector('.book-notebooks a.notebook-source') || {href: null}).getAttribute('href'),
      after_title: (document.querySelector('#title-block-header + p.book-notebooks') !== null)};"""
    with chromium() as driver:
        driver.get(page.as_uri())
        shown = driver.execute_script(probe)
        driver.get(index.as_uri())
        home = driver.execute_script("return [document.querySelector('#book-citation .book-citation-text').textContent,"
                                     " document.querySelectorAll('.book-notebooks').length];")
    assert shown["text"] == offline.select_one(".book-citation-text").get_text()
    assert shown["bibtex"] == offline.select_one(".book-citation-bibtex").get_text()
    assert shown["executed"] == f"{chapter.stem}.ipynb" and shown["after_title"]
    assert shown["source"] == f"../source/chapters/{chapter.stem}.ipynb"
    assert home == [_soup(site / "index.html").select_one(".book-citation-text").get_text(), 0]


def _meta_list(soup) -> list[tuple[str, str]]:
    return [(n, c) for n, values in _meta(soup).items() for c in values]


@pytest.mark.slow
def test_check_site_reports_uncitable_pages_and_missing_notebooks(tmp_path):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make system installs them)")
    import check_site

    site = tmp_path / "site"
    (site / "chapters").mkdir(parents=True)
    (site / "index.html").write_text('<!DOCTYPE html><html><head><meta name="citation_title" content="Book">'
                                     "</head><body><h1>Book</h1></body></html>")
    (site / "chapters" / "one.html").write_text(
        '<!DOCTYPE html><html><head><meta name="citation_title" content="One"></head><body><h1>One</h1>'
        '<p class="book-notebooks"><a class="notebook-executed" href="one.ipynb">executed</a></p></body></html>')
    problems = check_site.check_site(site)
    assert "index.html: no citation block (#book-citation .book-citation-text)" in problems
    assert "index.html: no <meta name='citation_author'> tag" in problems
    assert "chapters/one.html: no <meta name='citation_inbook_title'> tag" in problems
    assert "chapters/one.html: no link to the source notebook" in problems
    assert "chapters/one.html: executed notebook link to a missing file: one.ipynb" in problems
    assert not [p for p in problems if p.startswith("index.html") and "notebook" in p], "the home page has none"
