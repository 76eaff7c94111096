"""File-system primitives every writer in qmailkit goes through.

* ``atomic_file`` / ``atomic_write``: the only way a file is replaced.  The new
  content goes to a temp file in the same directory, is fsync'd, renamed over
  the target, and the directory is fsync'd, so a reader sees either the old
  file or the complete new one, never a mixture, even after a crash.
* ``locked``: an flock(2) lock file so that two runs of one job cannot
  interleave.
* ``fsync_dir``: make a rename or unlink durable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO

from qmailkit.errors import InputError, LockBusy, os_error

TMP_MARK = ".qmailkit-tmp."


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """fsync a directory so that renames and unlinks in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_name(target: str) -> str:
    head, tail = os.path.split(target)
    return os.path.join(head, f".{tail}{TMP_MARK}{os.getpid()}")


def remove_stale_temps(target: str | os.PathLike[str]) -> list[str]:
    """Remove temp files of ``target`` left by writers that no longer run.

    A temp name carries the writer's pid; one whose pid is gone was
    interrupted (kill -9, power loss) and is removed.  Returns the names removed.
    """
    target = os.fspath(target)
    head, tail = os.path.split(target)
    prefix = f".{tail}{TMP_MARK}"
    removed = []
    try:
        names = os.listdir(head or ".")
    except OSError:
        return removed
    for name in names:
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix):]
        if pid.isdigit() and int(pid) != os.getpid() and os.path.exists(f"/proc/{pid}"):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(head, name))
            removed.append(name)
    return removed


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str],
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    tmp: str | os.PathLike[str] | None = None,
) -> Iterator[BinaryIO]:
    """Yield a binary file; on normal exit it atomically replaces ``path``.

    On an exception the temp file is removed and ``path`` is left untouched.
    ``mode`` is set exactly (not filtered by the umask); ``owner`` is a
    (uid, gid) pair applied with fchown, or None to keep the writer's.
    ``tmp`` names the temp file when the caller's interface fixes it (as
    ``tcprules cdb tmp`` does); it must be on the same file system as ``path``.
    """
    target = os.fspath(path)
    if tmp is None:
        remove_stale_temps(target)
        tmp = _temp_name(target)
    else:
        tmp = os.fspath(tmp)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise os_error(err, "cannot create temp file") from err
    ok = False
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            if owner is not None:
                os.fchown(fh.fileno(), owner[0], owner[1])
            os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.rename(tmp, target)
        ok = True
        fsync_dir(os.path.dirname(target) or ".")
    except OSError as err:
        raise os_error(err, f"cannot write {target}") from err
    finally:
        if not ok:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def atomic_write(
    path: str | os.PathLike[str],
    data: bytes | Callable[[BinaryIO], None],
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
) -> None:
    """Atomically replace ``path`` with ``data`` (bytes, or a function that writes to a file)."""
    with atomic_file(path, mode=mode, owner=owner) as fh:
        if callable(data):
            data(fh)
        else:
            fh.write(data)


@contextlib.contextmanager
def locked(
    path: str | os.PathLike[str], *, wait: bool | float = False, what: str = "another run"
) -> Iterator[int]:
    """Hold an exclusive flock on ``path`` (created 0600 if missing).

    ``wait`` False: raise LockBusy at once if the lock is held.  True: wait as
    long as it takes.  A number: wait up to that many seconds, then LockBusy.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise os_error(err, "cannot open lock file") from err
    try:
        deadline = None if wait is True else time.monotonic() + float(wait or 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait is True else fcntl.LOCK_NB))
                break
            except OSError as err:
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise os_error(err, "cannot lock") from err
                if deadline is None or time.monotonic() >= deadline:
                    raise LockBusy(
                        f"{what} holds the lock", path=path, hint="try again when it has finished"
                    ) from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)


def read_text_lines(path: str | os.PathLike[str], encoding: str = "utf-8") -> list[str]:
    """Read a small text file as lines (without newlines); errors name the file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as err:
        raise os_error(err, "cannot read") from err
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise InputError(f"not valid {encoding} text", path=path, line=line) from None
    return text.splitlines()


def fifo_has_reader(path: str | os.PathLike[str]) -> bool:
    """True if a process has the FIFO at ``path`` open for reading (what svok checks)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader; ENOENT: no FIFO
        return False
    os.close(fd)
    return True
