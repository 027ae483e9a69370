#!/usr/bin/env python3
"""Check the rendered Quarto site in headless Chromium, served over HTTP as a reader's browser gets it.

    python tools/check_site.py SITE_DIR [--screenshots DIR]

Every page of the sidebar must have a title, figures that load with alt text and a caption, no
Python reprs in its tables or prose, no code of a cell its notebook hides, no raw reStructuredText,
no word broken inside a table cell at 1280 px, no JavaScript console errors, working internal
links, and a citation block. Every chapter page must also state how long its run took and link its
executed and source notebooks, which must exist. Search must find every page's title.
Exit 1 when a problem is found, listing each.
"""
from __future__ import annotations

import argparse
import functools
import json
import re
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--window-size=1280,1000",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
REPR = re.compile(r"\{'\w+': |\[\{'|<lsuvlib\.|\bnan\b|\bNone\b(?! of)|0\.00%|\bLSUV_[A-Z_]+\b")
MAX_SHRINK = 1.3  # a figure drawn wider than the text column shows its 10-point text smaller than this allows
RST = re.compile(r":(math|func|class|meth|mod|attr):`|``\w")

# Gathered in the page once it has loaded.
PROBE = r"""
const main = document.querySelector('main') || document.body;
const text = e => (e ? e.textContent : '').replace(/\s+/g, ' ').trim();
// Links as the browser resolves them (Quarto's scripts make some absolute): pages of this site, from its root.
const sitePaths = anchors => Array.from(anchors).map(a => new URL(a.href))
  .filter(u => u.origin === location.origin).map(u => decodeURI(u.pathname).slice(1));
const brokenWords = [];
for (const cell of main.querySelectorAll('table td, table th')) {
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  for (let node; (node = walker.nextNode());) {
    for (const m of node.textContent.matchAll(/[^\s\-\u2013\u2014\/]+/g)) {  // a break at a hyphen is fine
      const r = document.createRange();
      r.setStart(node, m.index); r.setEnd(node, m.index + m[0].length);
      const tops = new Set(Array.from(r.getClientRects()).map(b => Math.round(b.top)));
      if (tops.size > 1) brokenWords.push(m[0]);
    }
  }
}
return {
  title: text(document.querySelector('h1.title, h1')),
  images: Array.from(main.querySelectorAll('img')).filter(i => !i.closest('.callout-icon')).map(i => ({
    src: (i.getAttribute('src') || '').slice(0, 60), ok: i.complete && i.naturalWidth > 0,
    shrunk: i.clientWidth > 0 ? i.naturalWidth / i.clientWidth : 1,
    alt: (i.getAttribute('alt') || '').trim(), caption: text(i.closest('figure')?.querySelector('figcaption'))})),
  tables: Array.from(main.querySelectorAll('table')).map(t => text(t)),
  prose: Array.from(main.querySelectorAll('p, li')).filter(e => !e.closest('pre, code, .sourceCode, table'))
             .map(e => text(e)),
  body: text(main),
  links: sitePaths(main.querySelectorAll('a[href]')),
  notebooks: sitePaths(document.querySelectorAll('.quarto-code-links a')),
  runTime: Array.from(document.querySelectorAll('.callout .callout-title-container')).map(text).join(' | '),
  citation: text(document.querySelector('#book-citation')),
  scholarTitle: document.querySelector('meta[name="citation_title"]')?.content ?? '',
  brokenWords,
};
"""


def serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    handler = functools.partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                                directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/"


def browser() -> webdriver.Chrome:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={Path(__import__('tempfile').mkdtemp(prefix='chromium-'))}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def hidden_code(notebook: Path) -> list[str]:
    """Lines of code that the notebook hides from its page (`#| echo: false`, `#| include: false`, remove tags)."""
    lines = []
    for cell in nbformat.read(notebook, 4).cells:
        options = cell.source if cell.cell_type == "code" else ""
        tags = set(cell.metadata.get("tags", []))
        if re.search(r"^#\|\s*(echo|include):\s*false", options, re.M) or tags & {"remove-cell", "remove-input"}:
            lines += [ln.strip() for ln in cell.source.splitlines()
                      if len(ln.strip()) >= 20 and not ln.lstrip().startswith("#")]
    return lines


def pages(site: Path) -> list[str]:
    """The index and every page the sidebar links, as paths inside the site."""
    found = re.findall(r'<a href="\./([^"#]+\.html)" class="sidebar-item-text', (site / "index.html").read_text())
    return ["index.html", *dict.fromkeys(p for p in found if p != "index.html")]


def check_page(driver, base: str, site: Path, page: str) -> list[str]:
    driver.get(base + page)
    got = driver.execute_script(PROBE)
    problems = [f"console: {e['message'][:160]}" for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    if not got["title"]:
        problems.append("no title")
    for img in got["images"]:
        for ok, what in ((img["ok"], "does not load"), (img["alt"], "has no alt text"),
                         (img["caption"], "has no caption"),
                         (img["shrunk"] <= MAX_SHRINK, f"is shrunk {img['shrunk']:.1f}x to fit the page: its text is too small")):
            if not ok:
                problems.append(f"figure {img['src']} {what}")
    # The API reference names Python values and environment variables on purpose (`None`, `$LSUV_DATA_DIR`).
    checked = [] if page.startswith("reference/") else [("table", got["tables"]), ("prose", got["prose"])]
    for where, texts in checked:
        for t in texts:
            if m := REPR.search(t):
                problems.append(f"Python value in {where}: {t[max(0, m.start() - 40):m.end() + 40]!r}")
    if m := RST.search(got["body"]):
        problems.append(f"raw reStructuredText: {got['body'][max(0, m.start() - 30):m.end() + 30]!r}")
    problems += [f"word broken inside a table cell: {w!r}" for w in got["brokenWords"][:5]]
    problems += [f"link to a missing file: {h}" for h in got["links"] if not (site / h).exists()]
    if not [h for h in got["links"] if h != page]:  # a reader should never reach a dead end
        problems.append("links to no other page of the book")
    if not got["citation"] or "{}" in got["citation"] or "In ." in got["citation"]:
        problems.append(f"no citation block, or one with an empty field: {got['citation'][:160]!r}")
    if not got["scholarTitle"] or re.search(r"[{}\[\]`]", got["scholarTitle"]):  # what reference managers file it under
        problems.append(f"citation_title meta tag is not a plain title: {got['scholarTitle']!r}")
    notebook = site / page.replace(".html", ".ipynb")
    # A page built from a notebook (not the glossary): it links notebooks, or its source was staged.
    if got["notebooks"] or (site / "source" / page).with_suffix(".ipynb").is_file():
        if len(got["notebooks"]) != 2:
            problems.append(f"links {len(got['notebooks'])} notebooks, not the executed and the source one "
                            "(not built?)")
        problems += [f"notebook link to a missing file: {h}" for h in got["notebooks"] if not (site / h).is_file()]
        if "How this page was made" not in got["runTime"]:
            problems.append("does not say how long its run took")
    if notebook.is_file():
        problems += [f"hidden code shown: {line[:80]!r}" for line in hidden_code(notebook) if line in got["body"]]
    return problems


def check_site(site: Path, screenshots: Path | None = None) -> list[str]:
    server, base = serve(site)
    driver = browser()
    problems = []
    try:
        titles = {}
        for page in pages(site):
            for problem in check_page(driver, base, site, page):
                problems.append(f"{page}: {problem}")
            titles[page] = driver.execute_script("return (document.querySelector('h1 .chapter-title, h1') || {}).textContent")
            if screenshots:
                screenshots.mkdir(parents=True, exist_ok=True)
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(1280, min(height, 16000))
                driver.save_screenshot(str(screenshots / page.replace("/", "_").replace(".html", ".png")))
                driver.set_window_size(1280, 1000)
        index = json.loads(driver.execute_script(
            "const r = new XMLHttpRequest(); r.open('GET', '/search.json', false); r.send(); return r.responseText;"))
        indexed = " ".join(e.get("title", "") for e in index)
        problems += [f"{page}: search does not find its title {t!r}" for page, t in titles.items()
                     if t and t.strip() not in indexed]
    finally:
        driver.quit()
        server.shutdown()
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", type=Path, help="the rendered site, e.g. _build/site")
    parser.add_argument("--screenshots", type=Path, help="save a full-page screenshot of every page here")
    args = parser.parse_args(argv)
    if not (args.site / "index.html").is_file():
        print(f"error: {args.site} has no index.html (build it with `make book`)", file=sys.stderr)
        return 2
    problems = check_site(args.site, args.screenshots)
    print("\n".join(problems) or f"{len(pages(args.site))} pages checked: no problems.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
