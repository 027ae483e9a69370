"""atomic_open: a file is either wholly replaced or left as it was."""
import pytest

from lsuvlib.atomic import atomic_open


def test_success_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    with atomic_open(path) as f:
        f.write("new")
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]


def test_failure_keeps_the_old_contents_and_removes_the_temporary(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_open(path) as f:
            f.write("half")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
