#!/usr/bin/env python3
"""Check the offline edition in headless Chromium, as a reader would see it.

    python tools/check_site.py SITE_DIR

Opens every SITE_DIR/*.html page and checks that it paints something (the
screenshot is not blank), that every image decoded, that every navigation link
leads to a page with a non-empty <h1>, that nothing is fetched from the
network, and that the page can be cited: a citation block and Google Scholar
`citation_*` meta tags (title, author, publication date; on chapter pages also
the book's title). Every chapter page (SITE_DIR/chapters/*.html) must link its
executed and its source notebook, and both files must exist.
Screenshots go to SITE_DIR/../screenshots/. Exit 1 on problems.
"""

from __future__ import annotations

import io
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)
MIN_SCREENSHOT_STD = 2.0  # grey levels; a blank page has ~0

# Collected in the page itself once it has loaded.
PAGE_PROBE = """
const external = u => /^(https?:)?\\/\\//i.test(u || '');
const h1 = document.querySelector('h1');
return {
  h1: h1 ? h1.textContent.replace('¶', '').trim() : '',
  images: Array.from(document.images).map(i => ({src: (i.getAttribute('src') || '').slice(0, 50),
                                                   ok: i.complete && i.naturalWidth > 0})),
  nav: Array.from(document.querySelectorAll('nav a[href]')).map(a => a.getAttribute('href')),
  external: Array.from(document.querySelectorAll('script[src], link[href]'))
                 .map(e => e.getAttribute('src') || e.getAttribute('href')).filter(external),
  requests: performance.getEntriesByType('resource').map(e => e.name)
                 .filter(u => !/^(file|data|blob|about):/.test(u)),
  citation: ((document.querySelector('#book-citation .book-citation-text') || {}).textContent || '').trim(),
  meta: Array.from(document.querySelectorAll('meta[name^="citation_"]'))
             .map(m => [m.getAttribute('name'), m.getAttribute('content') || '']),
  notebooks: Array.from(document.querySelectorAll('a.notebook-executed, a.notebook-source'))
                  .map(a => [a.classList.contains('notebook-executed') ? 'executed' : 'source',
                             a.getAttribute('href')]),
};
"""
# Meta tags every page needs so reference managers and Google Scholar can cite it.
REQUIRED_META = ("citation_title", "citation_author", "citation_publication_date")
CHAPTER_DIR = "chapters/"  # pages made from chapter notebooks (Quarto's layout)


@dataclass
class PageReport:
    name: str
    title: str = ""
    images: int = 0
    problems: list[str] = field(default_factory=list)


@contextmanager
def chromium():
    """A headless Chromium driven through Debian's chromedriver (nothing downloaded)."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            raise RuntimeError(f"{binary} not found: install Debian's chromium and chromium-driver packages")
    with tempfile.TemporaryDirectory(prefix="check-site-profile-") as profile:
        options = Options()
        options.binary_location = CHROMIUM
        for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={profile}"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            yield driver
        finally:
            driver.quit()


def screenshot_is_blank(png: bytes) -> bool:
    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    return grey.std() < MIN_SCREENSHOT_STD


def local_target(page: Path, href: str) -> Path | None:
    """The file a relative link points to, or None for in-page and external links."""
    parts = urlsplit(href)
    if parts.scheme or parts.netloc or not parts.path:
        return None
    target = (page.parent / unquote(parts.path)).resolve()
    return target / "index.html" if target.is_dir() else target


def probe(driver, page: Path) -> dict:
    driver.get(page.resolve().as_uri())  # returns after the load event
    return driver.execute_script(PAGE_PROBE)


def check_page(driver, page: Path, site: Path, shots: Path) -> tuple[PageReport, set[Path]]:
    """Check one page; also return the local files its navigation links to."""
    report = PageReport(page.relative_to(site).as_posix())
    info = probe(driver, page)
    report.title, report.images = info["h1"], len(info["images"])
    png = driver.get_screenshot_as_png()
    (shots / f"{report.name.removesuffix('.html').replace('/', '_')}.png").write_bytes(png)
    if screenshot_is_blank(png):
        report.problems.append("screenshot is blank")
    if not info["h1"]:
        report.problems.append("no <h1> text")
    report.problems += [f"image did not load: {img['src']}..." for img in info["images"] if not img["ok"]]
    report.problems += [f"external resource reference: {url}" for url in info["external"]]
    report.problems += [f"network request: {url}" for url in info["requests"]]
    report.problems += citation_problems(info, is_chapter=report.name.startswith(CHAPTER_DIR))
    report.problems += notebook_problems(page, info, is_chapter=report.name.startswith(CHAPTER_DIR))
    targets = set()
    for href in info["nav"]:
        target = local_target(page, href)
        if target is None:
            continue
        if target.is_file():
            targets.add(target)
        else:
            report.problems.append(f"navigation link to a missing file: {href}")
    return report, targets


def citation_problems(info: dict, is_chapter: bool) -> list[str]:
    """What keeps the page from being cited: no citation block, or missing meta tags."""
    problems = [] if info["citation"] else ["no citation block (#book-citation .book-citation-text)"]
    present = {name for name, content in info["meta"] if content.strip()}
    required = REQUIRED_META + (("citation_inbook_title",) if is_chapter else ())
    problems += [f"no <meta name={name!r}> tag" for name in required if name not in present]
    return problems


def notebook_problems(page: Path, info: dict, is_chapter: bool) -> list[str]:
    """A chapter page must link its executed and its source notebook, and both must exist."""
    if not is_chapter:
        return []
    links = dict(info["notebooks"])
    problems = [f"no link to the {kind} notebook" for kind in ("executed", "source") if not links.get(kind)]
    for kind, href in links.items():
        target = local_target(page, href)
        if target is None or not target.is_file():
            problems.append(f"{kind} notebook link to a missing file: {href}")
    return problems


def check_pages(site_dir: Path) -> list[PageReport]:
    """Check every page in the site, then any other page the navigation links to."""
    site = Path(site_dir).resolve()
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [PageReport(str(site), problems=["no *.html pages"])]
    shots = site.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    reports, linked = [], set()
    with chromium() as driver:
        for page in pages:
            report, targets = check_page(driver, page, site, shots)
            reports.append(report)
            linked |= targets
        for target in sorted(linked - set(pages)):
            info = probe(driver, target)
            name = target.relative_to(site).as_posix() if target.is_relative_to(site) else str(target)
            report = PageReport(name, info["h1"], len(info["images"]))
            if not info["h1"]:
                report.problems.append("linked from the navigation but has no <h1> text")
            report.problems += [f"external resource reference: {url}" for url in info["external"]]
            reports.append(report)
    return reports


def check_site(site_dir) -> list[str]:
    """Problems found in the site, as 'page: problem' lines; empty when all is well."""
    return [f"{r.name}: {problem}" for r in check_pages(Path(site_dir)) for problem in r.problems]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python tools/check_site.py SITE_DIR", file=sys.stderr)
        return 2
    site = Path(args[0])
    if not site.is_dir():
        print(f"error: {site} is not a folder (build it with python tools/build_book.py)", file=sys.stderr)
        return 2
    try:
        reports = check_pages(site)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for report in reports:
        status = "ok  " if not report.problems else "FAIL"
        print(f"{status} {report.name}: {report.title!r}, {report.images} image(s)")
        for problem in report.problems:
            print(f"       - {problem}")
    failed = sum(bool(r.problems) for r in reports)
    print(
        f"{len(reports) - failed} of {len(reports)} page(s) ok; screenshots in {site.resolve().parent / 'screenshots'}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
