"""Offline HTML edition of the book, built with nbconvert when Quarto is absent.

One self-contained page per book entry (SITE/<path>.html, laid out as Quarto lays out the book): figures as data URIs,
CSS inline, math as MathML, no scripts or fonts from the network. Cells are hidden by
their tags only (remove-cell / remove-input / remove-output, through nbconvert's
TagRemovePreprocessor), the convention Quarto honours too. Every page carries the
citation block and Google Scholar `citation_*` meta tags built from _quarto.yml's
citation metadata, and each chapter page links the executed notebook that produced it
and its source notebook (both copied into the site).
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import nbformat
import yaml
from jinja2 import pass_context
from latex2mathml.converter import convert as latex_to_mathml
from nbconvert.exporters import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbconvert.preprocessors import Preprocessor, TagRemovePreprocessor
from traitlets.config import Config
from pygments.formatters import HtmlFormatter

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

# The one convention for hiding cells: tags that Quarto (quarto-cli src/core/jupyter/tags.ts)
# and nbconvert's TagRemovePreprocessor both honour.
REMOVE_CELL_TAG = "remove-cell"
REMOVE_INPUT_TAG = "remove-input"
REMOVE_OUTPUT_TAG = "remove-output"
OPTION_LINE = re.compile(r"^#\|\s?(.*)$")
HEADING_1 = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
HEADING_ATTRIBUTES = re.compile(r"^(#{1,6}\s.*?)\s*\{[^{}]*\}\s*$", re.MULTILINE)  # "# Title {#sec-x}"
DIV_OPEN = re.compile(r"^:::+\s*(\{.*\}|[\w-]+)\s*$")  # "::: {.callout-note}", "::: aside"
DIV_CLOSE = re.compile(r"^:::+\s*$")


@dataclass(frozen=True)
class PageSource:
    """One page to build: an executed notebook, a markdown file, or a placeholder."""

    stem: str
    section: str  # "chapters" or "appendices"
    source: Path | None  # .ipynb or .md; None when the chapter has not been built
    resource_dir: Path  # where relative image paths in the markdown resolve
    missing_note: str = ""  # shown on the placeholder page when source is None
    # The page's path in the site. Mirroring Quarto's layout (chapters/x.ipynb -> chapters/x.html)
    # lets links written in a chapter, such as ../results/, work in both editions.
    path: str = ""
    # The source notebook (with its `parameters` cell) the page links; None: the notebook
    # named after the page beside resource_dir, if there is one.
    source_notebook: Path | None = None

    @property
    def href(self) -> str:
        return self.path or f"{self.stem}.html"

    def notebooks(self) -> tuple[Path | None, Path | None]:
        """The executed notebook that produced the page and the source notebook, where they exist."""
        executed = self.source if self.source is not None and self.source.suffix == ".ipynb" else None
        source = self.source_notebook or self.resource_dir / f"{self.stem}.ipynb"
        return executed, source if source.is_file() else None


# --------------------------------------------------------------------------- notebooks


def load_page(page: PageSource) -> tuple:
    """The page as a notebook (markdown becomes a one-cell notebook) and its front matter."""
    if page.source is None:
        return _markdown_notebook(
            f"# {page.stem} (not built)\n\nThis page has not been built yet. {page.missing_note}"
        ), {}
    if page.source.suffix == ".ipynb":
        nb = nbformat.read(page.source, as_version=4)
        return nb, take_front_matter(nb)
    front, body = split_front_matter(page.source.read_text())
    return _markdown_notebook(body), front


def _markdown_notebook(text: str):
    return nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(text)])


def split_front_matter(text: str) -> tuple[dict, str]:
    """Split a leading `---` YAML block (Quarto front matter) from markdown."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n", text, re.DOTALL)
    if not match:
        return {}, text
    try:
        front = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}, text
    return (front if isinstance(front, dict) else {}), text[match.end() :]


def take_front_matter(nb) -> dict:
    """Remove a leading raw `---` cell (Quarto's notebook front matter) and return it."""
    if nb.cells and nb.cells[0].cell_type == "raw":
        front, rest = split_front_matter(nb.cells[0].source.rstrip() + "\n")
        if front and not rest.strip():
            nb.cells.pop(0)
            return front
    return {}


def page_title(nb, front: dict, fallback: str) -> tuple[str, bool]:
    """Title from front matter or the first `# ` heading; and whether a `# ` exists."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            found = HEADING_1.search(HEADING_ATTRIBUTES.sub(r"\1", cell.source))
            if found:
                return front.get("title") or found.group(1), True
    return front.get("title") or fallback, False


# --------------------------------------------------------------------------- Quarto semantics


def split_cell_options(source: str) -> tuple[dict, str]:
    """Split Quarto's `#| key: value` option lines off the top of a code cell."""
    lines = source.splitlines(keepends=True)
    count = 0
    while count < len(lines) and OPTION_LINE.match(lines[count]):
        count += 1
    if not count:
        return {}, source
    try:
        options = yaml.safe_load("\n".join(OPTION_LINE.match(line).group(1) for line in lines[:count]))
    except yaml.YAMLError:
        options = None
    return (options if isinstance(options, dict) else {}), "".join(lines[count:])


def quarto_markdown(text: str) -> str:
    """Drop heading attributes and turn `:::` fenced divs (callouts) into <div>s."""
    text = HEADING_ATTRIBUTES.sub(r"\1", text)
    out, in_code = [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            in_code = not in_code
        opening = None if in_code else DIV_OPEN.match(line)
        # Blank lines around the tags keep the div's body parsed as markdown.
        if opening:
            attributes = opening.group(1)
            classes = re.findall(r"(?<![\w#-])\.([\w-]+)", attributes) if attributes.startswith("{") else [attributes]
            class_attribute = f' class="{html.escape(" ".join(classes))}"' if classes else ""
            out.append(f"\n<div{class_attribute}>\n")
        elif not in_code and DIV_CLOSE.match(line):
            out.append("\n</div>\n")
        else:
            out.append(line)
    return "\n".join(out)


class QuartoCellOptions(Preprocessor):
    """After the tags have hidden what they hide: drop `#|` option lines as Quarto does.

    `fig-alt` (else `fig-cap`) becomes the figures' alt text. Visibility options such as
    `#| echo: false` are deliberately not honoured: cells are hidden by tags only.
    """

    def preprocess(self, nb, resources):
        nb.cells = [cell for cell in map(self.visible_part, nb.cells) if cell is not None]
        return nb, resources

    def visible_part(self, cell):
        """The cell as shown, or None when nothing of it is left to show."""
        if cell.cell_type == "markdown":
            cell.source = quarto_markdown(cell.source)
        if cell.cell_type != "code":
            return cell
        options, cell.source = split_cell_options(cell.source)
        alt = options.get("fig-alt") or options.get("fig-cap")
        if alt:
            cell.metadata["alt"] = str(alt)  # the template's alt text for image outputs
        if not cell.source.strip():
            cell.metadata["transient"] = {"remove_source": True}  # honoured by nbconvert templates
        if cell.metadata.get("transient", {}).get("remove_source") and not cell.outputs:
            return None
        return cell


def tag_remover() -> TagRemovePreprocessor:
    config = Config()
    config.TagRemovePreprocessor.remove_cell_tags = {REMOVE_CELL_TAG}
    config.TagRemovePreprocessor.remove_input_tags = {REMOVE_INPUT_TAG}
    config.TagRemovePreprocessor.remove_all_outputs_tags = {REMOVE_OUTPUT_TAG}
    return TagRemovePreprocessor(config=config, enabled=True)


# --------------------------------------------------------------------------- citation


@dataclass(frozen=True)
class BookCitation:
    """The book's citation metadata, read from _quarto.yml as Quarto reads it."""

    title: str
    authors: tuple[str, ...]
    date: str  # ISO date, "" when unknown
    version: str = ""
    site_url: str = ""  # book.site-url, without a trailing slash; "" when not configured
    lang: str = "en"

    @property
    def year(self) -> str:
        return self.date[:4]


def author_names(value) -> tuple[str, ...]:
    """Names from Quarto's author forms: "A", ["A", "B"], [{name: A}], {name: {given, family}}."""
    items = value if isinstance(value, list) else [value] if value else []
    names = []
    for item in items:
        name = item.get("name", item) if isinstance(item, dict) else item
        if isinstance(name, dict):
            name = name.get("literal") or " ".join(str(name[k]) for k in ("given", "family") if name.get(k))
        if name:
            names.append(str(name))
    return tuple(names)


def book_citation(config: dict, built: datetime | None = None) -> BookCitation:
    """Citation metadata from a _quarto.yml mapping (top-level keys first, then `book:`)."""
    book = config.get("book") if isinstance(config.get("book"), dict) else {}
    citation = config.get("citation") if isinstance(config.get("citation"), dict) else {}
    date = citation.get("issued") or config.get("date") or book.get("date") or ""
    if str(date) in ("today", "now", "last-modified"):  # Quarto's keywords for the render date
        date = (built or datetime.now()).date().isoformat()
    return BookCitation(
        title=str(citation.get("container-title") or book.get("title") or "Book"),
        authors=author_names(citation.get("author") or config.get("author") or book.get("author")),
        date=str(date),
        version=str(citation.get("version") or ""),
        site_url=str(book.get("site-url") or "").rstrip("/"),
        lang=str(config.get("lang") or "en"),
    )


@dataclass(frozen=True)
class PageCitation:
    """How to cite one page: a chapter of the book, or the book itself."""

    book: BookCitation
    title: str  # the chapter's title; the book's for kind "book"
    kind: str  # "chapter" or "book"
    href: str  # the page's path in the site
    key: str = field(default="")

    @property
    def url(self) -> str:
        if not self.book.site_url:
            return ""
        path = self.href.removesuffix("index.html")  # Quarto cites a folder's index by the folder
        return f"{self.book.site_url}/{path}"

    def meta_tags(self) -> list[tuple[str, str]]:
        """Google Scholar tags, in the order and with the names Quarto writes them."""
        tags = [("citation_title", self.title)]
        tags += [("citation_author", name) for name in self.book.authors]
        if self.book.date:
            tags += [
                ("citation_publication_date", self.book.date),
                ("citation_cover_date", self.book.date),
                ("citation_year", self.book.year),
                ("citation_online_date", self.book.date),
            ]
        if self.url:
            tags.append(("citation_fulltext_html_url", self.url))
        tags.append(("citation_language", self.book.lang))
        # Quarto: container-title becomes citation_inbook_title for a chapter, citation_book_title for a book.
        tags.append(("citation_inbook_title" if self.kind == "chapter" else "citation_book_title", self.book.title))
        return tags

    def text_html(self) -> str:
        """The formatted reference (author-date), as HTML."""
        book = self.book
        parts = [html.escape(", ".join(book.authors) or "Anonymous") + "."]
        if book.year:
            parts.append(f"{book.year}.")
        version = f", version {html.escape(book.version)}" if book.version else ""
        if self.kind == "chapter":
            parts.append(f"“{html.escape(self.title)}.” In <em>{html.escape(book.title)}</em>{version}.")
        else:
            parts.append(f"<em>{html.escape(book.title)}</em>{version}.")
        if self.url:
            parts.append(f'<a href="{html.escape(self.url)}">{html.escape(self.url)}</a>.')
        return " ".join(parts)

    def bibtex(self) -> str:
        book = self.book
        fields = [("author", " and ".join(f"{{{name}}}" for name in book.authors))]
        if self.kind == "chapter":
            fields += [("title", self.title), ("booktitle", book.title)]
        else:
            fields.append(("title", book.title))
        fields += [("year", book.year), ("version", book.version), ("url", self.url)]
        body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields if value)
        entry = "incollection" if self.kind == "chapter" else "book"
        return f"@{entry}{{{self.key or 'book'},\n{body}\n}}"


def plain_title(markdown_title: str) -> str:
    """A heading's text without markdown emphasis or code marks."""
    return re.sub(r"[`*_]+", "", markdown_title).strip()


def page_citation(book: BookCitation, page: "PageSource", title: str, front: dict) -> PageCitation:
    front_citation = front.get("citation") if isinstance(front.get("citation"), dict) else {}
    kind = front_citation.get("type") or ("book" if page.stem == "index" else "chapter")
    kind = "chapter" if kind == "chapter" else "book"
    key = re.sub(r"[^A-Za-z0-9]+", "", book.title.split(":")[0]).lower() + book.year
    if kind == "chapter":
        key += "-" + re.sub(r"[^A-Za-z0-9-]+", "", page.stem)
        return PageCitation(book, plain_title(title), kind, page.href, key)
    return PageCitation(book, book.title, kind, page.href, key)


def citation_context(citation: PageCitation) -> dict:
    return {
        "meta": citation.meta_tags(),
        "text": citation.text_html(),
        "bibtex": citation.bibtex(),
        "kind": citation.kind,
    }


def find_config(pages: list[PageSource]) -> dict:
    """_quarto.yml from the book's folder (the first page's folder or one above it), or {}."""
    for page in pages[:1]:
        for folder in (page.resource_dir, *page.resource_dir.parents):
            path = folder / "_quarto.yml"
            if path.is_file():
                loaded = yaml.safe_load(path.read_text())
                return loaded if isinstance(loaded, dict) else {}
    return {}


# --------------------------------------------------------------------------- HTML


def tex_to_mathml(tex: str, display: str) -> str:
    """MathML for TeX; the TeX as code if latex2mathml cannot convert it."""
    try:
        return latex_to_mathml(tex.strip(), display=display)
    except Exception:  # latex2mathml raises many types (its own, IndexError, ...)
        return f'<code class="tex">{html.escape(tex)}</code>'


class MathMLRenderer(IPythonRenderer):
    """nbconvert's markdown renderer, with math as MathML instead of MathJax input."""

    def block_math(self, body: str) -> str:
        return tex_to_mathml(body, "block")

    def inline_math(self, body: str) -> str:
        return tex_to_mathml(body, "inline")

    def latex_environment(self, name: str, body: str) -> str:
        return tex_to_mathml(f"\\begin{{{name}}}{body}\\end{{{name}}}", "block")

    def block_html(self, html: str) -> str:
        # nbconvert re-parses HTML blocks to embed <img>s, which would close the lone
        # <div> a callout opens; skip that for blocks without images.
        if "<img" in html:
            return super().block_html(html)
        return super(IPythonRenderer, self).block_html(html)


class OfflineHTMLExporter(HTMLExporter):
    """HTMLExporter with MathML math and markdown images embedded as data URIs."""

    @pass_context
    def markdown2html(self, context, source):
        cell = context.get("cell", {})
        renderer = MathMLRenderer(
            escape=False,
            attachments=cell.get("attachments", {}),
            embed_images=True,
            path=context.get("resources", {}).get("metadata", {}).get("path", ""),
            anchor_link_text=self.anchor_link_text,
            exclude_anchor_links=self.exclude_anchor_links,
            **self.lexer_options,
        )
        return MarkdownWithMath(renderer=renderer).render(source)


def make_exporter() -> OfflineHTMLExporter:
    exporter = OfflineHTMLExporter(
        template_name="offline",
        extra_template_basedirs=[str(TEMPLATE_DIR)],
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    exporter.register_preprocessor(tag_remover(), enabled=True)
    exporter.register_preprocessor(QuartoCellOptions(), enabled=True)
    return exporter


def navigation(pages: list[PageSource], titles: list[str]) -> list[dict]:
    """Sidebar entries, numbered as Quarto numbers a book (index unnumbered, A, B...)."""
    nav, chapter, appendix = [], 0, 0
    for page, title in zip(pages, titles, strict=True):
        if page.section == "appendices":
            label = chr(ord("A") + appendix)
            appendix += 1
        elif page.stem == "index":
            label = ""
        else:
            chapter += 1
            label = str(chapter)
        nav.append({"href": page.href, "title": title, "label": label, "section": page.section})
    return nav


def render_page(exporter, nb, resource_dir: Path, context: dict) -> str:
    resources = {"metadata": {"path": str(resource_dir), "name": context["title"]}, "offline": context}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    links = notebook_links_html(context.get("notebooks"))
    # Right under the page title, where a reader looks first.
    return body.replace("</h1>", "</h1>\n" + links, 1) if links else body


def notebook_links_html(notebooks: dict | None) -> str:
    """The line linking a chapter's notebooks (hrefs relative to the page), or ""."""
    if not notebooks:
        return ""
    links = []
    if notebooks.get("executed"):
        links.append(
            f'<a class="notebook-executed" href="{html.escape(notebooks["executed"])}" download>'
            "executed notebook</a> (the run that produced this page)"
        )
    if notebooks.get("source"):
        links.append(
            f'<a class="notebook-source" href="{html.escape(notebooks["source"])}" download>'
            "source notebook</a> (set its <code>parameters</code> cell and run it again)"
        )
    return f'<p class="book-notebooks">Re-run this chapter: {" · ".join(links)}</p>\n' if links else ""


def results_page(results_dir: Path) -> str:
    """Markdown listing the result files, linked relative to results/index.html."""
    rows = []
    for path in sorted(p for p in results_dir.rglob("*") if p.is_file()):
        name = path.relative_to(results_dir).as_posix()
        rows.append(
            f'<tr><td><a href="{html.escape(quote(name))}">{html.escape(name)}</a></td>'
            f"<td>{path.stat().st_size:,} bytes</td></tr>"
        )
    table = (
        "<table><thead><tr><th>File</th><th>Size</th></tr></thead><tbody>\n" + "\n".join(rows) + "\n</tbody></table>"
    )
    intro = "Files the chapters wrote to `results_dir` in this build." if rows else "No result files in this build."
    return f"# Results data\n\n{intro}\n\n{table if rows else ''}\n"


def build_offline_edition(
    pages: list[PageSource],
    site_dir: Path,
    book_title: str,
    results_dir: Path | None = None,
    built_at: datetime | None = None,
    config: dict | None = None,
) -> Path:
    """Write the whole site to a staging folder, then swap it in. Returns index.html.

    config is the book's _quarto.yml as a mapping (citation metadata); None reads the
    _quarto.yml found at the first page's folder or above it.
    """
    built_at = built_at or datetime.now()
    built = built_at.strftime("%Y-%m-%d %H:%M")
    book = book_citation(find_config(pages) if config is None else config, built_at)
    site_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{site_dir.name}-", dir=site_dir.parent))
    try:
        loaded = [load_page(page) for page in pages]
        notebooks = [nb for nb, _ in loaded]
        titled = [page_title(nb, front, page.stem) for (nb, front), page in zip(loaded, pages, strict=True)]
        nav = navigation(pages, [title for title, _ in titled])
        exporter = make_exporter()
        shared = {
            "book_title": book_title,
            "built": built,
            "nav": nav,
            "pygments_css": HtmlFormatter(style="default").get_style_defs(".highlight"),
            "has_results": results_dir is not None,
        }
        for i, (page, nb, (title, has_h1)) in enumerate(zip(pages, notebooks, titled, strict=True)):
            base = "../" * page.href.count("/")
            context = {
                **shared,
                "title": title,
                "needs_h1": not has_h1,
                "current": page.href.removesuffix(".html"),
                "base": base,
                "prev": nav[i - 1] if i > 0 else None,
                "next": nav[i + 1] if i + 1 < len(nav) else None,
                "citation": citation_context(page_citation(book, page, title, loaded[i][1])),
                "notebooks": copy_notebooks(page, staging, base),
            }
            target = staging / page.href
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render_page(exporter, nb, page.resource_dir, context))
        if results_dir is not None:
            shutil.copytree(results_dir, staging / "results")
            context = {
                **shared,
                "title": "Results data",
                "needs_h1": False,
                "current": "results",
                "base": "../",
                "prev": None,
                "next": None,
                "citation": citation_context(PageCitation(book, book.title, "book", "results/index.html", "")),
                "notebooks": None,
            }
            page_html = render_page(exporter, _markdown_notebook(results_page(results_dir)), results_dir, context)
            (staging / "results" / "index.html").write_text(page_html)
        _swap_in(staging, site_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return site_dir / "index.html"


def copy_notebooks(page: PageSource, staging: Path, base: str) -> dict | None:
    """Copy the page's notebooks into the site; their hrefs relative to the page, or None.

    The executed notebook goes beside the page (chapters/x.ipynb, where Quarto's
    resources put it); the source goes to source/chapters/x.ipynb (its path in the repository).
    """
    executed, source = page.notebooks()
    if executed is None and source is None:
        return None
    stem_path = page.href.removesuffix(".html") + ".ipynb"
    hrefs = {}
    for kind, notebook, path in (("executed", executed, stem_path), ("source", source, f"source/{stem_path}")):
        if notebook is None:
            continue
        target = staging / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(notebook, target)
        target.chmod(0o644)
        hrefs[kind] = base + path
    return hrefs


def _swap_in(staging: Path, target: Path) -> None:
    """Replace target with staging by renames, so the site is never half-written."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}-old-{os.getpid()}")
        target.rename(old)
    staging.chmod(0o755)  # mkdtemp makes it 0700
    staging.rename(target)
    if old is not None:
        shutil.rmtree(old)
