"""params/default.yaml spells out exactly the defaults the chapters declare, so it reproduces the default build."""
import ast
from pathlib import Path

import papermill
import yaml

ROOT = Path(__file__).resolve().parent.parent
BUILD_INJECTED = {"results_dir", "build_profile"}


def declared_defaults(notebook: Path) -> dict:
    params = papermill.inspect_notebook(str(notebook))
    return {name: ast.literal_eval(info["default"]) for name, info in params.items() if name not in BUILD_INJECTED}


def test_default_profile_matches_every_chapters_parameters_cell():
    profile = yaml.safe_load((ROOT / "params" / "default.yaml").read_text())
    chapters = {p.stem: declared_defaults(p) for p in sorted((ROOT / "chapters").glob("*.ipynb"))}
    assert profile["chapters"] == chapters


def test_smoke_profile_only_names_declared_parameters():
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    declared = set().union(*(declared_defaults(p) for p in (ROOT / "chapters").glob("*.ipynb")))
    assert set(smoke) <= declared
