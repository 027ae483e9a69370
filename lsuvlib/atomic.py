"""Files that are either wholly written or not there: the one writer for caches, results and the build's files."""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


def _create_temporary(path: Path, perms: int) -> tuple[int, Path]:
    """Create a new, empty, uniquely named file beside `path` with `perms` less the umask.

    `tempfile.mkstemp` always makes 0600 files; asking the kernel for `perms` instead lets
    the umask (and any default ACL) decide, exactly as for a file created by `open()`.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), perms), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not find a free temporary name beside {path}")


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", *, perms: int = 0o666, **kwargs) -> Iterator[IO]:
    """Open a temporary file beside `path`; on success it replaces `path` in one rename.

    If the block raises, the temporary file is deleted and `path` keeps its old contents
    (or stays absent), so a reader never sees half a file. The file gets `perms` less the
    umask: by default what `open()` would give (0666 less the umask, so usually 0644),
    not `mkstemp`'s 0600; `perms=0o644` keeps it from being group-writable whatever the
    umask. `mode` is `"w"` or `"wb"`; text options such as `newline` and `encoding` pass
    through.
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_open writes a whole new file: mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temporary(path, perms)
    try:
        f = os.fdopen(fd, mode, **kwargs)
    except BaseException:
        try:
            os.close(fd)  # io.open may already have closed it
        except OSError:
            pass
        tmp.unlink(missing_ok=True)
        raise
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the rename must not land before the data does (power loss)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str, *, perms: int = 0o666) -> None:
    """Write `text` to `path` as UTF-8, atomically (see `atomic_open`, which takes the same `perms`)."""
    with atomic_open(path, "w", perms=perms, encoding="utf-8") as f:
        f.write(text)
