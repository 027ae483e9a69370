"""quartodoc's Markdown renderer, fitted to a reference that is one page of the book (`_quarto.yml`, `quartodoc:`).

The page (`reference/_api.qmd`, included by `reference/index.qmd`) is a section per module; four changes:
- quartodoc wants an index row for a page of several sections; the book has no separate index.
- Table cells escape `|` as `\\|`, which inside `$...$` is TeX's double bar: there it becomes `\\vert{}`.
- Quarto lets links in tables break inside words; a member's name in a class's summary stays whole.
- A class's attributes are summarised in a table but have no entry of their own to link to.
"""
import re

from plum import dispatch
from quartodoc import MdRenderer, layout

MATH = re.compile(r"\$[^$]+\$")


class Renderer(MdRenderer):
    style = "lsuv-book"

    @dispatch
    def summarize(self, el: layout.Page):
        return ""

    def _render_table(self, rows, headers, style):
        for row in rows:
            row.description = MATH.sub(lambda m: m.group().replace("|", r"\vert{}"), row.description or "")
        return super()._render_table(rows, headers, style)

    @staticmethod
    def _summary_row(link, description):
        return MdRenderer._summary_row(f"[{link}]{{.text-nowrap}}", description)

    @dispatch
    def summarize(self, el: layout.DocAttribute):
        return self._summary_row(f"`{el.name}`", self.summarize(el.obj))
