"""Offline HTML edition of the book, built with nbconvert when Quarto is absent.

One self-contained page per book entry (SITE/<path>.html, laid out as Quarto lays out the book): figures as data URIs,
CSS inline, math as MathML, no scripts or fonts from the network. Cells are
hidden the way Quarto hides them: the tags remove-cell / remove-input /
remove-output (and hide-*), and the `#| include/echo/output/warning: false`
cell options.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

import nbformat
import yaml
from jinja2 import pass_context
from latex2mathml.converter import convert as latex_to_mathml
from nbconvert.exporters import HTMLExporter
from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
from nbconvert.preprocessors import Preprocessor
from pygments.formatters import HtmlFormatter

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

# Quarto treats hide-* like remove-* when it renders (quarto-cli src/core/jupyter/tags.ts).
REMOVE_CELL_TAGS = {"remove-cell", "remove_cell", "hide-cell"}
REMOVE_INPUT_TAGS = {"remove-input", "remove_input", "hide-input"}
REMOVE_OUTPUT_TAGS = {"remove-output", "remove_output", "hide-output"}
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

    @property
    def href(self) -> str:
        return self.path or f"{self.stem}.html"


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


class QuartoVisibility(Preprocessor):
    """Hide cells, inputs and outputs as Quarto does, from tags and `#|` options."""

    def preprocess(self, nb, resources):
        nb.cells = [cell for cell in map(self.visible_part, nb.cells) if cell is not None]
        return nb, resources

    def visible_part(self, cell):
        """The cell as Quarto would show it, or None if it is not shown at all."""
        tags = set(cell.metadata.get("tags", []))
        if tags & REMOVE_CELL_TAGS:
            return None
        if cell.cell_type == "markdown":
            cell.source = quarto_markdown(cell.source)
        if cell.cell_type != "code":
            return cell
        options, cell.source = split_cell_options(cell.source)
        if options.get("include") is False:
            return None
        if options.get("echo") is False or tags & REMOVE_INPUT_TAGS or not cell.source.strip():
            cell.metadata["transient"] = {"remove_source": True}  # honoured by nbconvert templates
        if options.get("output") is False or tags & REMOVE_OUTPUT_TAGS:
            cell.outputs = []
        elif options.get("warning") is False:
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
        alt = options.get("fig-alt") or options.get("fig-cap")
        if alt:
            cell.metadata["alt"] = str(alt)  # the template's alt text for image outputs
        if cell.metadata.get("transient") and not cell.outputs:
            return None
        return cell


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
    exporter.register_preprocessor(QuartoVisibility(), enabled=True)
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
    return body


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
) -> Path:
    """Write the whole site to a staging folder, then swap it in. Returns index.html."""
    built = (built_at or datetime.now()).strftime("%Y-%m-%d %H:%M")
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
            context = {
                **shared,
                "title": title,
                "needs_h1": not has_h1,
                "current": page.href.removesuffix(".html"),
                "base": "../" * page.href.count("/"),
                "prev": nav[i - 1] if i > 0 else None,
                "next": nav[i + 1] if i + 1 < len(nav) else None,
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
            }
            page_html = render_page(exporter, _markdown_notebook(results_page(results_dir)), results_dir, context)
            (staging / "results" / "index.html").write_text(page_html)
        _swap_in(staging, site_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return site_dir / "index.html"


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
