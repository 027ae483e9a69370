"""atomic_open and write_text: a file is either wholly replaced or left as it was."""
import os

import pytest

from lsuvlib.atomic import atomic_open, write_text


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


@pytest.fixture
def umask():
    """Set the process umask for one test (and restore it)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"])
@pytest.mark.parametrize("existing", [False, True], ids=["new", "replaced"])
def test_files_get_the_permissions_open_would_give(tmp_path, umask, mask, mode, existing):
    """0666 minus the umask, like open(); not mkstemp's 0600 (issue 10: results and caches were 0600)."""
    umask(mask)
    path = tmp_path / "out.json"
    plain = tmp_path / "plain.json"
    if existing:
        path.write_text("old")
        path.chmod(0o600)  # a file left by the old 0600 code becomes normal when rewritten
    with atomic_open(path) as f:
        f.write("{}")
    with open(plain, "w") as f:
        f.write("{}")
    assert path.stat().st_mode & 0o777 == mode == plain.stat().st_mode & 0o777
    assert path.read_text() == "{}"


def test_binary_mode_and_text_options(tmp_path):
    with atomic_open(tmp_path / "b.bin", "wb") as f:
        f.write(b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    with atomic_open(tmp_path / "t.csv", newline="") as f:
        f.write("a\r\nb\n")
    assert (tmp_path / "t.csv").read_bytes() == b"a\r\nb\n"


@pytest.mark.parametrize("mode", ["a", "r", "r+", "x"])
def test_modes_that_do_not_write_a_whole_file_are_refused(tmp_path, mode):
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_open(tmp_path / "f", mode):
            pass
    assert list(tmp_path.iterdir()) == []


def test_bad_open_options_leave_no_temporary(tmp_path):
    with pytest.raises((ValueError, LookupError)):
        with atomic_open(tmp_path / "f", "w", encoding="no-such-codec"):
            pass
    assert list(tmp_path.iterdir()) == []


def test_keyboard_interrupt_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(path) as f:
            f.write("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_a_readers_view_is_never_half_written(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with atomic_open(path) as f:
        f.write("new")
        f.flush()
        assert path.read_text() == "old"  # until the block ends, readers see the old file
    assert path.read_text() == "new"


def test_write_text_writes_utf8_atomically_with_the_permissions_asked_for(tmp_path, umask):
    umask(0o002)
    path = tmp_path / "sub" / "build.json"
    write_text(path, "é\n")
    assert path.read_bytes() == "é\n".encode() and path.stat().st_mode & 0o777 == 0o664  # as open() would
    write_text(path, "{}", perms=0o644)  # the build's files: never group-writable, whatever the umask
    assert path.read_text() == "{}" and path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["build.json"]
