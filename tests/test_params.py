"""params/default.yaml spells out exactly the defaults the chapters declare, so it reproduces the default build.

The notebooks' `parameters` cells are the source of truth: when a chapter's default changes,
update params/default.yaml to match (the failure message names each value to change), or
run `python tests/test_params.py`, which rewrites its `chapters:` from the notebooks.
"""
import ast
from pathlib import Path

import papermill
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD_INJECTED = {"results_dir"}


def book_notebooks() -> list[Path]:
    """The chapter notebooks _quarto.yml lists (a profile may only name those; test_build checks the list)."""
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import build_book

    return [ROOT / p for p in build_book.book_pages(ROOT) if p.endswith(".ipynb") and (ROOT / p).is_file()]


def declared_defaults(notebook: Path) -> dict:
    params = papermill.inspect_notebook(str(notebook))
    return {name: ast.literal_eval(info["default"]) for name, info in params.items() if name not in BUILD_INJECTED}


def test_default_profile_matches_every_chapters_parameters_cell():
    profile = yaml.safe_load((ROOT / "params" / "default.yaml").read_text())
    listed = profile.get("chapters") or {}
    chapters = {p.stem: declared_defaults(p) for p in book_notebooks()}
    fixes = []
    for stem, defaults in chapters.items():
        mine = listed.get(stem)
        if mine is None:
            fixes.append(f"add `{stem}: {defaults}` under `chapters:`")
            continue
        for name, value in defaults.items():
            if name not in mine:
                fixes.append(f"add chapters.{stem}.{name}: {value!r} (the notebook's default)")
            elif mine[name] != value or type(mine[name]) is not type(value):
                fixes.append(f"set chapters.{stem}.{name} to {value!r} (the notebook's default; the file says "
                             f"{mine[name]!r})")
        fixes += [f"remove chapters.{stem}.{name} (chapters/{stem}.ipynb no longer declares it)"
                  for name in mine if name not in defaults]
    fixes += [f"remove chapters.{stem} (no such notebook)" for stem in listed if stem not in chapters]
    assert not fixes, "params/default.yaml is out of step with the notebooks (run `python tests/test_params.py` "\
        "to rewrite it); in params/default.yaml:\n  " + \
        "\n  ".join(fixes)


def test_smoke_profile_only_names_declared_parameters():
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    declared = set().union(*(declared_defaults(p) for p in (ROOT / "chapters").glob("*.ipynb")))
    assert set(smoke) - {"chapters"} <= declared
    for stem, values in (smoke.get("chapters") or {}).items():
        notebook = ROOT / "chapters" / f"{stem}.ipynb"
        assert notebook.is_file(), f"params/smoke.yaml names chapter {stem}, which does not exist"
        assert set(values) <= set(declared_defaults(notebook)), f"params/smoke.yaml, chapters.{stem}"


def write_default_profile() -> None:
    """Rewrite params/default.yaml's `chapters:` from the notebooks, keeping its header comment."""
    path = ROOT / "params" / "default.yaml"
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    chapters = {p.stem: declared_defaults(p) for p in book_notebooks()}
    body = yaml.safe_dump({"chapters": chapters}, sort_keys=False, default_flow_style=None, width=100)
    path.write_text(header + body)
    print(f"wrote {path}")


if __name__ == "__main__":  # python tests/test_params.py: bring params/default.yaml in step with the notebooks
    write_default_profile()
