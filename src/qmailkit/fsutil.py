"""File-system primitives every writer in qmailkit goes through.

* ``staged``: the only way a file is replaced.  The new content goes to a
  temp file in the same directory, is fsync'd, and only on ``commit()`` renamed
  over the target, after which the directory is fsync'd: a reader sees either
  the old file or the complete new one, never a mixture, even after a crash.
  In between, the caller may compare the staged file with the old one.
  ``atomic_file`` / ``atomic_write`` are staged files committed at once.
* ``locked``: an flock(2) lock file so that two runs of one job cannot
  interleave; ``lock_path`` is the one name of a target's lock.
* ``fsync_dir``: make a rename or unlink durable.
* ``open_regular`` / ``read_bounded`` / ``open_input``: the only way a file is
  read.  qmailkit runs as root over directories other accounts can write (log
  directories, homes), so every read accepts regular files only, never blocks
  on a FIFO or device, can refuse to follow a final symlink, and is bounded.
* ``open_append``: append to a file without following a planted symlink.
* ``private_dir``: a state directory only its owner can use, never a symlink.
* ``poll``: the one wait-until loop (supervisors coming up, FIFOs losing their
  reader, loggers rotating); ``poll_or_fail`` raises on time-out instead.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from collections.abc import Callable, Iterator
from typing import BinaryIO, TypeVar

from qmailkit.errors import InputError, LockBusy, QmailkitError, os_error

TMP_MARK = ".qmailkit-tmp."

T = TypeVar("T")


def poll(
    check: Callable[[], T], timeout: float, interval: float = 0.02, max_interval: float = 0.1
) -> T:
    """Call ``check`` until it returns a true value or ``timeout`` s pass; its last value.

    The pause starts at ``interval`` and doubles up to ``max_interval``: a quick
    answer is seen quickly, a slow one costs few wake-ups.  ``check`` runs at
    least once, and once more after the deadline, so a time-out is never
    reported for something that happened during the last pause.
    """
    deadline = time.monotonic() + timeout
    pause = interval
    while True:
        value = check()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, max_interval)


def poll_or_fail(check: Callable[[], T], timeout: float, what: str, interval: float = 0.02) -> T:
    """``poll``, but a time-out is a QmailkitError saying what was waited for."""
    value = poll(check, timeout, interval)
    if not value:
        raise QmailkitError(f"timed out after {timeout:g} s waiting for {what}")
    return value


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


def _create_temp(tmp: str) -> int:
    """Create ``tmp`` afresh: never through a symlink or into a file someone left there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(tmp, flags, 0o600)
    except FileExistsError:
        # Ours from an earlier attempt in this process, or planted: unlink the name, not its target.
        os.unlink(tmp)
        return os.open(tmp, flags, 0o600)


def _temp_pid(name: str, tail: str) -> str | None:
    """The writer pid in ``name`` if it is a temp of ``tail``, else None.

    Also matches a temp of a temp (``..F.qmailkit-tmp.1.qmailkit-tmp.1``), the
    shape older versions left when a staged file was written through another.
    """
    pid = None
    while name.startswith("."):
        base, mark, number = name[1:].rpartition(TMP_MARK)
        if not mark or not number.isdigit():
            return None
        pid = pid or number
        if base == tail:
            return pid
        name = base
    return None


def remove_stale_temps(target: str | os.PathLike[str]) -> list[str]:
    """Remove temp files of ``target`` left by writers that no longer run.

    A temp name carries the writer's pid; one whose pid is gone was
    interrupted (kill -9, power loss) and is removed.  Returns the names removed.
    """
    target = os.fspath(target)
    head, tail = os.path.split(target)
    removed: list[str] = []
    try:
        names = os.listdir(head or ".")
    except OSError:
        return removed
    for name in names:
        pid = _temp_pid(name, tail)
        if pid is None:
            continue
        if int(pid) != os.getpid() and os.path.exists(f"/proc/{pid}"):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(head, name))
            removed.append(name)
    return removed


class Staged:
    """A new version of ``path`` being written to a temp file beside it (see ``staged``)."""

    def __init__(
        self, path: str, tmp: str, fd: int, mode: int, owner: tuple[int, int] | None
    ) -> None:
        self.path = path
        self.tmp = tmp
        self.file: BinaryIO = os.fdopen(fd, "wb")
        self._mode = mode
        self._owner = owner
        self.sealed = False
        self.committed = False

    def _fail(self, err: OSError) -> QmailkitError:
        return os_error(err, f"cannot write {self.path}")

    def seal(self) -> None:
        """Flush, set owner and mode, and fsync: the temp file is complete and durable."""
        if self.sealed:
            return
        try:
            self.file.flush()
            fd = self.file.fileno()
            if self._owner is not None:
                os.fchown(fd, self._owner[0], self._owner[1])
            os.fchmod(fd, self._mode)  # after chown, which may clear set-id bits
            os.fsync(fd)
            self.file.close()
        except OSError as err:
            raise self._fail(err) from err
        self.sealed = True

    def commit(self) -> None:
        """Seal, rename over ``path``, and fsync the directory."""
        self.seal()
        try:
            os.rename(self.tmp, self.path)
            self.committed = True
            fsync_dir(os.path.dirname(self.path) or ".")
        except OSError as err:
            raise self._fail(err) from err

    def discard(self) -> None:
        """Close and remove the temp file, unless it was committed."""
        with contextlib.suppress(OSError):
            self.file.close()
        if not self.committed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)


def _refuse_directory(target: str) -> None:
    """A directory where the file goes: say so now, not "Is a directory" from the final rename."""
    try:
        st = os.lstat(target)
    except OSError:
        return  # missing (the usual case), or the write itself says what is wrong
    if stat.S_ISDIR(st.st_mode):
        raise NotRegular(
            "is a directory, not a regular file", path=target, hint="replace it with a regular file"
        )


@contextlib.contextmanager
def staged(
    path: str | os.PathLike[str],
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    tmp: str | os.PathLike[str] | None = None,
) -> Iterator[Staged]:
    """Yield a ``Staged`` file for ``path``; it replaces ``path`` only if ``commit()`` is called.

    Leaving the block without a commit (or on an exception) removes the temp
    file and leaves ``path`` untouched.  ``mode`` is set exactly (not filtered
    by the umask); ``owner`` is a (uid, gid) pair for fchown (-1 keeps one),
    or None to keep the writer's.  ``tmp`` names the temp file when the
    caller's interface fixes it (as ``tcprules cdb tmp`` does); it must be on
    the same file system as ``path``.  Otherwise the temp is ``.NAME`` +
    TMP_MARK + pid, and temps of dead writers are removed first.
    """
    target = os.fspath(path)
    _refuse_directory(target)
    if tmp is None:
        remove_stale_temps(target)
        tmp = _temp_name(target)
    else:
        tmp = os.fspath(tmp)
    try:
        fd = _create_temp(tmp)
    except OSError as err:
        raise os_error(err, "cannot create temp file") from err
    st = Staged(target, tmp, fd, mode, owner)
    try:
        yield st
    finally:
        st.discard()


@contextlib.contextmanager
def atomic_file(
    path: str | os.PathLike[str],
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    tmp: str | os.PathLike[str] | None = None,
) -> Iterator[BinaryIO]:
    """Yield a binary file; on normal exit it atomically replaces ``path`` (see ``staged``)."""
    with staged(path, mode=mode, owner=owner, tmp=tmp) as st:
        try:
            yield st.file
        except OSError as err:
            raise st._fail(err) from err
        st.commit()


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


def lock_path(target: str | os.PathLike[str]) -> str:
    """The lock file of everything that replaces ``target``: ``.NAME.lock`` beside it."""
    head, tail = os.path.split(os.fspath(target))
    return os.path.join(head, f".{tail}.lock")


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


#: the default bound of read_bounded: far above any control file, config or rules file
READ_LIMIT = 64 * 1024 * 1024

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


def file_kind(mode: int) -> str:
    """'a directory', 'a FIFO', ... for an st_mode: the words an error message needs."""
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


class NotRegular(QmailkitError):
    """A path that should be a regular file is something else (a FIFO, a directory...)."""


def open_regular(
    path: str | os.PathLike[str],
    *,
    follow: bool = True,
    dir_fd: int | None = None,
    blocking: bool = True,
) -> int:
    """Open ``path`` read-only and return the fd, if it is a regular file.

    Opened with O_NONBLOCK (cleared afterwards unless ``blocking=False``: a
    regular file ignores it, and a loop over tens of thousands of files saves
    two system calls each), so a FIFO or a device cannot hang the caller; with
    ``follow=False`` a final symlink is refused, not followed.  Anything but a
    regular file raises NotRegular naming the path; a missing file raises
    FileNotFoundError for the caller to decide on; other OS errors raise
    QmailkitError naming the path.
    """
    return _open_regular(path, follow, dir_fd, blocking)[0]


def _open_regular(
    path: str | os.PathLike[str], follow: bool, dir_fd: int | None, blocking: bool
) -> tuple[int, os.stat_result]:
    """open_regular, also giving the fstat it checked (read_bounded sizes its read by it)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.ELOOP and not follow:
            raise NotRegular(
                "is a symbolic link (not followed)",
                path=path,
                hint="replace it with a regular file",
            ) from None
        if err.errno == errno.ENXIO:  # a socket, or a FIFO-like special file
            raise NotRegular("is not a regular file", path=path) from None
        raise os_error(err, "cannot open") from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegular(
                f"is {file_kind(st.st_mode)}, not a regular file",
                path=path,
                hint="replace it with a regular file",
            )
        if blocking:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_bounded(
    path: str | os.PathLike[str],
    limit: int = READ_LIMIT,
    *,
    follow: bool = True,
    dir_fd: int | None = None,
) -> bytes:
    """The whole of a regular file of at most ``limit`` bytes (see open_regular).

    A larger file raises InputError naming it rather than filling memory.
    """
    # O_NONBLOCK stays on: a regular file ignores it.  The first read is sized by fstat
    # (one byte more, to see the end), so a small file costs one read, not a MiB buffer.
    fd, st = _open_regular(path, follow, dir_fd, False)
    try:
        chunks = []
        left = limit + 1
        size = min(st.st_size + 1, left)
        while left > 0:
            chunk = os.read(fd, size)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
            size = min(left, 1 << 20)
    except OSError as err:
        raise os_error(err, "cannot read") from err
    finally:
        os.close(fd)
    if left <= 0:
        raise InputError(f"larger than {limit} bytes; refusing to read it", path=path)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@contextlib.contextmanager
def open_input(path: str | os.PathLike[str], *, follow: bool = True) -> Iterator[BinaryIO]:
    """A buffered binary file over open_regular (for streaming large inputs)."""
    fd = open_regular(path, follow=follow)
    with os.fdopen(fd, "rb") as fh:
        yield fh


def open_append(path: str | os.PathLike[str], *, create_mode: int | None = None) -> int:
    """Open ``path`` for appending and return the fd; never through a symlink.

    ``create_mode`` None: the file must exist.  A number: create it if missing
    (O_EXCL, so a name that appears meanwhile is not trusted blindly).  Only a
    regular file is accepted; a missing file (create_mode None) raises
    FileNotFoundError.
    """
    flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            if create_mode is None:
                raise
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, create_mode)
    except FileNotFoundError:
        raise
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise NotRegular("is a symbolic link (not followed)", path=path) from None
        if err.errno == errno.EISDIR:
            raise NotRegular("is a directory, not a regular file", path=path) from None
        if err.errno == errno.ENXIO:  # a FIFO nobody reads, a socket
            raise NotRegular("is not a regular file", path=path) from None
        raise os_error(err, "cannot open for appending") from err
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise NotRegular(f"is {file_kind(st.st_mode)}, not a regular file", path=path)
    os.set_blocking(fd, True)
    return fd


def private_dir(path: str | os.PathLike[str], mode: int = 0o700) -> str:
    """Make (or check) a directory that only this user can use; return its path.

    An existing one must be a real directory (not a symlink), owned by the
    effective user, with no group or other permissions; otherwise QmailkitError
    says so, since a journal or lock kept in it could be planted by others.
    """
    path = os.fspath(path)
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, mode)
    try:
        st = os.lstat(path)
    except OSError as err:
        raise os_error(err, "cannot use state directory") from err
    problem = None
    if not stat.S_ISDIR(st.st_mode):
        problem = f"is {file_kind(st.st_mode)}, not a directory"
    elif st.st_uid != os.geteuid():
        problem = f"is owned by uid {st.st_uid}, not {os.geteuid()}"
    elif st.st_mode & 0o077:
        problem = f"has mode {stat.S_IMODE(st.st_mode):04o}; group and others must have no access"
    if problem:
        raise QmailkitError(
            f"state directory {problem}",
            path=path,
            hint="remove it (it may have been planted) and run again",
        )
    return path


def read_text_lines(path: str | os.PathLike[str], encoding: str = "utf-8") -> list[str]:
    """Read a small text file as lines (without newlines); errors name the file."""
    try:
        data = read_bounded(path)
    except FileNotFoundError as err:
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
