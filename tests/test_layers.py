"""lsuvlib's dependencies run one way: core <- book helpers (results, page, sources, ...) <- chapters and tools."""
import ast
from pathlib import Path

LIB = Path(__file__).resolve().parent.parent / "lsuvlib"
# The library proper; every other module is a book helper (results, pages, a chapter's sentences).
CORE = {"data", "atomic", "batches", "learner", "hooks", "nonlinear", "activations", "init", "probe", "lsuv",
        "lsuv_report", "stats", "charts", "models", "experiment", "together", "workers", "runtime", "lr_finder",
        "depth"}


def imports() -> dict[str, set[str]]:
    """Each lsuvlib module and the lsuvlib modules it imports, at the top or inside a function."""
    graph = {}
    for path in LIB.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lsuvlib."):
                found.add(node.module.split(".")[1])
        graph[path.stem] = {m.split(".")[0] for m in found} & {p.stem for p in LIB.glob("*.py")} - {path.stem}
    return graph


def test_core_modules_never_import_the_book_helpers():
    graph = imports()
    wrong = {m: sorted(deps - CORE) for m, deps in graph.items() if m in CORE and deps - CORE}
    assert wrong == {}


def test_there_is_no_import_cycle():
    graph = imports()
    graph.pop("__init__")

    def reach(start, seen):
        for dep in graph.get(start, ()):
            if dep not in seen:
                seen.add(dep)
                reach(dep, seen)
        return seen

    cycles = sorted(m for m in graph if m in reach(m, set()))
    assert cycles == [], f"modules on an import cycle: {cycles}"


def test_the_library_does_not_read_the_books_chapters():
    """The build tool knows the book's layout; the library only knows results folders and the manifest."""
    def joins_chapters(n) -> bool:  # `folder / "chapters"` or `folder / "chapters/x.ipynb"`
        return (isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div) and isinstance(n.right, ast.Constant)
                and str(n.right.value).split("/")[0] == "chapters")

    readers = [p.name for p in LIB.glob("*.py") if any(map(joins_chapters, ast.walk(ast.parse(p.read_text()))))]
    assert readers == []
