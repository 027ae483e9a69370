"""The API reference (appendix reference/index.qmd, written by quartodoc) and the docstrings it shows.

`_quarto.yml`'s `quartodoc:` section lists every public name (`lsuvlib.__all__`) once, in the section of
the module that defines it, in source order, headed by the first paragraph of the module's docstring.
Run `python tests/test_reference.py` to rewrite its `sections:` from the code (modules keep their order
there; a new module goes last). Every public name has a docstring, and no docstring in lsuvlib uses
reStructuredText: they are Markdown, as quartodoc renders them.
"""
import ast
import logging
import re
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "_quarto.yml"
RST = re.compile(r":(math|func|class|meth|mod|attr|data|exc|obj|ref):`|(?<!`)``(?!`)")


def package():
    griffe = pytest.importorskip("griffe", reason="griffe comes with quartodoc: pip install -e '.[book]'")
    return griffe.load("lsuvlib", search_paths=[str(ROOT)], docstring_parser="google")


def first_paragraph(module) -> str:
    return " ".join((module.docstring.value if module.docstring else "").split("\n\n")[0].split())


def wanted_sections(pkg, order: list[str]) -> list[dict]:
    """A section per module with public names, modules in `order` first, names in source order."""
    modules: dict[str, list] = {}
    for name in pkg.exports:
        target = pkg[name].final_target
        modules.setdefault(target.module.name, []).append((target.lineno, name))
    names = [m for m in order if m in modules] + sorted(set(modules) - set(order))
    return [dict(kind="section", title=f"`lsuvlib.{m}`", desc=first_paragraph(pkg.modules[m]),
                 contents=[name for _, name in sorted(modules[m])]) for m in names]


def configured_sections() -> list[dict]:
    (page,) = yaml.safe_load(CONFIG.read_text())["quartodoc"]["sections"]
    return page["contents"]


def module_of(section: dict) -> str:
    return section["title"].strip("`").removeprefix("lsuvlib.")


def test_the_reference_lists_every_public_name_under_its_module():
    have = configured_sections()
    want = wanted_sections(package(), [module_of(s) for s in have])
    assert have == want, "_quarto.yml's quartodoc sections are out of step with lsuvlib: run " \
                         "`python tests/test_reference.py` to rewrite them"


def test_every_public_name_has_a_docstring():
    pkg = package()
    missing = [name for name in pkg.exports if not pkg[name].final_target.docstring]
    assert missing == [], f"public names without a docstring: {missing}"


def test_public_docstrings_parse_as_google_style_without_warnings(caplog):
    """What quartodoc shows: an `Args:` entry for a parameter the signature lacks, say, is a warning."""
    pkg = package()
    objects = [pkg[name].final_target for name in pkg.exports]
    with caplog.at_level(logging.WARNING, logger="griffe"):
        for obj in [*objects, *(m for o in objects for m in o.members.values() if not m.is_alias)]:
            if obj.docstring:
                obj.docstring.parse("google")
    assert [r.getMessage() for r in caplog.records] == []


def docstrings(path: Path):
    """(where, text) of every docstring in a file: module, classes, functions and methods, private ones too."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            if (text := ast.get_docstring(node)) is not None:
                yield f"{path.stem}.{getattr(node, 'name', '')}".rstrip("."), text


def test_no_docstring_uses_restructuredtext():
    found = [f"{where}: {m.group()!r}" for path in sorted((ROOT / "lsuvlib").glob("*.py"))
             for where, text in docstrings(path) if (m := RST.search(text))]
    assert found == [], "write Markdown (`code`, $maths$), not reStructuredText roles:\n" + "\n".join(found)


def test_the_rst_check_finds_roles_and_double_backticks():
    assert RST.search("see :func:`lsuv_init`") and RST.search("``x``") and RST.search(r":math:`\sigma`")
    assert not RST.search("`x` and\n```python\nx = 1\n```")


def write_sections() -> None:
    """Rewrite `sections:`, the last key of `quartodoc:` at the end of _quarto.yml, from the code."""
    text = CONFIG.read_text()
    head = text[:text.index("\n  sections:\n", text.index("\nquartodoc:\n")) + 1]
    page = [dict(kind="page", path="_api", contents=wanted_sections(package(), [module_of(s)
                                                                               for s in configured_sections()]))]
    body = yaml.safe_dump(dict(sections=page), sort_keys=False, allow_unicode=True, width=110)
    CONFIG.write_text(head + "".join(f"  {line}" for line in body.splitlines(keepends=True)))
    print(f"wrote {CONFIG}")


if __name__ == "__main__":  # python tests/test_reference.py: bring _quarto.yml in step with lsuvlib
    sys.exit(write_sections())
