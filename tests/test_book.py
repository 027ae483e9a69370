"""The real book: its source notebooks are clean, and every chapter runs end to end under the smoke profile."""
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
def test_executed_chapter_has_no_errors_and_hides_injected_parameters(smoke_build, stem):
    out, _ = smoke_build
    nb = nbformat.read(out / "book" / "chapters" / f"{stem}.ipynb", as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert all(c.source.startswith("#| include: false") for c in injected)
    if stem in TRAINING_CHAPTERS:
        figures = [o for o in outputs if "image/png" in o.get("data", {})]
        assert figures, f"{stem} shows no figure"


@pytest.mark.slow
@pytest.mark.parametrize("stem", TRAINING_CHAPTERS)
def test_each_chapter_writes_valid_results(smoke_build, stem):
    out, _ = smoke_build
    data = json.loads((out / "results" / f"{stem}.json").read_text())
    validate_results(data)
    assert data["chapter"] == stem and data["versions"]["torch"]
    assert data["summary"], "the prose numbers must come from saved values"
    for config, runs in data["runs"].items():
        assert len({r["seed"] for r in runs}) == len(runs), f"{stem}/{config}: seeds must differ"


@pytest.mark.slow
def test_summary_writes_the_combined_table(smoke_build):
    out, _ = smoke_build
    lines = (out / "results" / "all-results.csv").read_text().splitlines()
    assert lines[0].split(",")[:5] == ["chapter", "dataset", "stand_in", "config", "seed"]
    assert {line.split(",")[0] for line in lines[1:]} >= {"03-baseline", "07-mnist-variants"}


@pytest.mark.slow
def test_offline_edition_opens_in_chromium(smoke_build):
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
