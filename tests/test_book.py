"""The real book: clean source notebooks, citation metadata in step with CITATION.cff, and a smoke build
of every chapter rendered by Quarto and checked in headless Chromium (tests named *smoke*).

Quarto comes from PATH or `make setup`; without it the site tests skip, except under CI=true.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import yaml

from lsuvlib.results import load_build, validate_results
from lsuvlib.stats import check_verdict

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_book  # noqa: E402

CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))
REAL_MIRROR = os.environ.get("LSUV_DATA_DIR")  # read before conftest's fixture hides it
TRAINING_CHAPTERS = ["01-motivation", "02-lr-finder", "03-baseline", "04-input-normalisation",
                     "05-batchnorm-kaiming", "06-lsuv-callback", "07-mnist-variants", "08-depth"]
QUARTO = build_book.find_quarto(ROOT)


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_source_notebook_has_no_outputs_and_one_readable_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "commit notebooks without outputs"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    build_book.declared(path)  # papermill can read every line of it
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_cells_are_hidden_the_way_quarto_reads_it(path):
    """Quarto 1.9 ignores the tags remove-input and remove-output: a cell hides with `#| echo: false`."""
    for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
        ignored = {"remove-input", "remove-output"} & set(cell.metadata.get("tags", []))
        assert not ignored, f"{path.name} cell {i}: Quarto does not honour {sorted(ignored)}; use `#| echo: false`"


def test_every_training_chapter_names_its_results_file_after_itself():
    for path in CHAPTERS:
        if path.stem in TRAINING_CHAPTERS:
            source = "".join(c.source for c in nbformat.read(path, as_version=4).cells)
            assert f'Chapter("{path.stem}"' in source, path.name


def test_citation_metadata_agrees_with_citation_cff():
    import lsuvlib

    config = yaml.safe_load((ROOT / "_quarto.yml").read_text())
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert config["book"]["title"] == cff["title"] == config["citation"]["container-title"]
    assert [a["name"] for a in config["author"]] == [a["name"] for a in cff["authors"]] == [config["book"]["author"]]
    assert str(config["book"]["date"]) == str(config["date"]) == str(cff["date-released"])
    assert str(config["citation"]["version"]) == str(cff["version"]) == lsuvlib.__version__
    assert config["google-scholar"] is True and config["citation"]["type"] == "chapter"
    index = yaml.safe_load(nbformat.read(ROOT / "index.ipynb", as_version=4).cells[0].source.strip().strip("-"))
    assert index["citation"] == {"type": "book", "version": cff["version"]}, "the home page cites the book"
    assert "site/page.lua" in config["filters"]


GLOSSARY_ANCHORS = {  # chapters link these (`glossary.md#fan-in`): keep every one
    "fan-in", "logits", "paired-seeds", "stand-in-data", "dead-unit", "activation-statistics", "lsuv",
    "kaiming-initialisation", "batchnorm", "learning-rate-finder", "prediction-interval", "confidence-interval",
    "bonferroni", "tie-margin", "diverged-run", "chance-accuracy", "generalrelu", "orthonormal-initialisation",
    "momentum", "minimum-detectable-effect"}


def test_the_glossary_has_every_anchor_the_chapters_link():
    text = (ROOT / "chapters" / "glossary.md").read_text()
    assert re.search(r"^# .*\{#sec-glossary\}", text, re.M)
    assert set(re.findall(r"^## .*\{#([\w-]+)\}", text, re.M)) == GLOSSARY_ANCHORS


# --------------------------------------------------------------------------- the smoke build

@pytest.fixture(scope="module")
def smoke_build(tmp_path_factory):
    """The whole book built once with the smoke profile and rendered by Quarto."""
    if not REAL_MIRROR or not (Path(REAL_MIRROR) / "mnist").is_dir():
        pytest.skip("the MNIST mirror is needed (set LSUV_DATA_DIR to the folder holding mnist/)")
    if QUARTO is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must render the real site, but Quarto was not found: run `make setup`")
        pytest.skip("Quarto is not installed: `make setup` installs it")
    out = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "LSUV_DATA_DIR": REAL_MIRROR, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "LSUV_CACHE_DIR": str(out / "cache")}
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "build_book.py"), "--profile", "smoke",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=1800)
    return out, proc


@pytest.mark.slow
def test_smoke_build_runs_and_renders_every_page(smoke_build):
    out, proc = smoke_build
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    chapters = json.loads((out / "results/build.json").read_text())["chapters"]
    assert set(chapters) == {p.stem for p in CHAPTERS} | {"index"} and all(r["status"] == "ok" for r in chapters.values())
    assert all((out / "site" / "chapters" / f"{p.stem}.html").is_file() for p in CHAPTERS)


@pytest.mark.slow
def test_smoke_site_has_the_glossary_and_a_reference_entry_for_every_public_name(smoke_build):
    import lsuvlib

    out, _ = smoke_build
    glossary = (out / "site/chapters/glossary.html").read_text()
    assert all(f'id="{anchor}"' in glossary for anchor in GLOSSARY_ANCHORS)
    reference = (out / "site/reference/index.html").read_text()
    assert [name for name in lsuvlib.__all__ if f'id="lsuvlib.{name}"' not in reference] == []
    assert 'id="sec-reference"' in reference and "<math" in reference, "titled for @sec-reference; maths as MathML"


@pytest.mark.slow
@pytest.mark.parametrize("stem", [p.stem for p in CHAPTERS])
def test_smoke_executed_chapter_has_no_errors(smoke_build, stem):
    out, _ = smoke_build
    nb = nbformat.read(out / "book" / "chapters" / f"{stem}.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    if stem in TRAINING_CHAPTERS:
        assert [o for o in outputs if "image/png" in o.get("data", {})], f"{stem} shows no figure"


@pytest.mark.slow
def test_smoke_results_are_valid_and_vouched_for_by_the_manifest(smoke_build):
    out, _ = smoke_build
    build = load_build(out / "results")
    assert set(TRAINING_CHAPTERS) <= set(build.files), build.left_out
    for name, f in build.files.items():
        validate_results(f.data)
        assert f.data["summary"], f"{name}: the prose numbers must come from saved values"
        for config, runs in f.data["runs"].items():
            assert len({r["seed"] for r in runs}) == len(runs), f"{name}/{config}: seeds must differ"
    lines = (out / "results" / "all-results.csv").read_text().splitlines()
    assert lines[0].split(",")[:6] == ["chapter", "build", "dataset", "stand_in", "config", "seed"]


def verdict_problems(results_dir: Path) -> list[str]:
    """Every verdict row of every results file the manifest vouches for, checked against its interval."""
    return [f"{name}: {row.get('claim', row.get('verdict'))}: {problem}"
            for name, f in load_build(results_dir).files.items()
            for key in ("verdicts", "source_verdicts") for row in f.data["summary"].get(key) or []
            if (problem := check_verdict(row))]


@pytest.mark.slow
def test_smoke_every_verdict_agrees_with_its_interval(smoke_build):
    assert verdict_problems(smoke_build[0] / "results") == []


def test_every_verdict_of_a_full_build_agrees_with_its_interval():
    """CI runs this after `make book`, with LSUV_RESULTS_DIR=_build/results."""
    folder = os.environ.get("LSUV_RESULTS_DIR")
    if not folder:
        pytest.skip("set LSUV_RESULTS_DIR to a build's results folder (CI does, after make book)")
    assert load_build(folder).files, f"no results in {folder}"
    assert verdict_problems(Path(folder)) == []


@pytest.mark.slow
def test_smoke_site_passes_the_reader_checks_in_chromium(smoke_build):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("Debian's chromium and chromium-driver are not installed (make system installs them)")
    import check_site

    out, _ = smoke_build
    problems = check_site.check_site(out / "site")
    assert problems == [], "\n".join(problems)


@pytest.mark.slow
def test_smoke_site_hides_every_hidden_cell(smoke_build):
    """Without a browser: no line of a hidden cell's code is anywhere in its page's HTML."""
    import html
    import check_site

    out, _ = smoke_build
    shown = []
    for path in CHAPTERS:
        page = html.unescape(re.sub(r"<[^>]+>", "", (out / "site/chapters" / f"{path.stem}.html").read_text()))
        shown += [f"{path.stem}: {line}" for line in check_site.hidden_code(out / "book/chapters" / path.name)
                  if line in page]
    assert shown == []
