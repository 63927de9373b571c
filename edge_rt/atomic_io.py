"""Output files that are never half-written: the one helper every tool that writes a file goes through.

:func:`atomic_write` yields a new, empty temporary file in the destination's folder, named
``.<dest name>.<random>.tmp`` and created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (``tempfile.mkstemp``):
the name cannot be guessed in advance, an existing file or a planted symlink is never reused, and the
file is created 0600 so nothing can read it half-written. The body writes it (by name or through
``open(tmp, "wb")``). When the body returns, the file that was created is checked to be the one still at
that name (same device and inode, not a symlink: someone who swapped it in a shared folder gets an
error, not our rename), fsynced through the descriptor that created it, given the permissions a plain
``open`` would have given it, and renamed onto the destination (``os.replace``: readers see the old file
or the new one, never a partial one); then the folder is fsynced so the rename survives a crash. When
the body raises anything (ENOSPC, KeyboardInterrupt, ...), the temporary file is removed, the
destination is untouched and the exception propagates. A process killed outright (SIGKILL, power loss)
leaves at most the hidden temporary file, never a partial destination.

:func:`write_bytes_atomic` and :func:`write_text_atomic` do that for data already in memory (JSON
reports, recipes, device profiles).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Union

__all__ = ["atomic_write", "write_bytes_atomic", "write_text_atomic"]

PathLike = Union[str, "os.PathLike[str]"]


def _default_file_mode() -> int:
    """The permissions ``open(path, "w")`` gives a new file: 0o666 minus the process umask."""
    umask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(dest: PathLike) -> Iterator[Path]:
    """Write ``dest`` all at once or not at all (see the module doc).

    Raises FileNotFoundError when ``dest``'s folder does not exist (nothing is created), and OSError
    when the temporary file was replaced by another file or a symlink while the body wrote it.
    """
    dest_p = Path(os.fspath(dest))
    folder = dest_p.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest_p.name}.", suffix=".tmp", dir=str(folder))
    tmp = Path(tmp_name)
    created = os.fstat(fd)
    try:
        yield tmp
        now = os.stat(tmp, follow_symlinks=False)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (created.st_dev, created.st_ino):
            raise OSError(f"[write] temporary file {tmp} was replaced while it was written; {dest_p} not written")
        os.fsync(fd)
        os.fchmod(fd, _default_file_mode())
        os.replace(tmp, dest_p)
    except BaseException:
        with contextlib.suppress(OSError):
            now = os.stat(tmp, follow_symlinks=False)
            if (now.st_dev, now.st_ino) == (created.st_dev, created.st_ino):  # never unlink someone else's file
                tmp.unlink()
        raise
    finally:
        os.close(fd)
    _fsync_dir(folder)


def write_bytes_atomic(dest: PathLike, data: bytes) -> Path:
    """``Path(dest).write_bytes(data)`` through :func:`atomic_write`; returns ``dest`` as a Path."""
    with atomic_write(dest) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    return Path(os.fspath(dest))


def write_text_atomic(dest: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """``Path(dest).write_text(text)`` through :func:`atomic_write`; returns ``dest`` as a Path."""
    return write_bytes_atomic(dest, text.encode(encoding))


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder``; best effort (some filesystems refuse fsync on a directory)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
