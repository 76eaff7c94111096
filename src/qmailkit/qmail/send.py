"""Find the running qmail-send, and HUP exactly that process.

qmail-send installs its signal handlers *before* it takes
flock(LOCK_EX|LOCK_NB) on ``queue/lock/sendmutex``; a HUP that reaches it
earlier kills it (running-qmail.md 0.2, A.3).  So the one process safe to
HUP is the one holding that lock, and it is found through the lock itself,
never by name (``ps | grep`` can hit the wrong process; ``svc -h`` can hit
a qmail-send that is still starting):

1. lstat ``queue/lock/sendmutex`` (a regular file) for its device and inode;
2. find the FLOCK line of that ``maj:min:inode`` in ``/proc/locks`` (blocked
   waiters, the ``->`` lines, hold nothing and are ignored);
3. take its PID and check ``/proc/PID/comm`` is ``qmail-send``;
4. note the process start time, so a reused PID is never signalled.

``/proc/locks`` shows PIDs as seen from the PID namespace of the /proc
mounted here: a holder in an outer namespace shows as PID 0 (refused here,
with a hint), one in an inner namespace under its outer PID, which is the
one ``kill`` needs.  Some file systems (btrfs subvolumes, overlayfs) report
another device through stat than in /proc/locks; a line with the right inode
but another device is accepted only if that PID has the same file open.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
from dataclasses import dataclass
from pathlib import Path

from qmailkit.errors import QmailkitError, os_error
from qmailkit.fsutil import read_bounded

SENDMUTEX = "queue/lock/sendmutex"
QMAIL_SEND = "qmail-send"
PROC = "/proc"


@dataclass(frozen=True)
class LockLine:
    """One active lock in /proc/locks: ``1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF``."""

    kind: str  # FLOCK, POSIX, OFDLCK, LEASE, DELEG...
    access: str  # WRITE, READ, UNLCK...
    pid: int  # 0: outside our PID namespace; -1: an OFD lock (no owner process)
    major: int
    minor: int
    inode: int


def parse_locks(text: str) -> list[LockLine]:
    """The locks held, from the text of /proc/locks; waiters and unreadable lines are skipped.

    Device numbers are printed in hex (``fe:00``), the inode in decimal.
    """
    out = []
    for raw in text.splitlines():
        words = raw.split()
        if len(words) < 6 or not words[0].endswith(":") or words[1] == "->":
            continue
        kind, _mode, access, pid, where = words[1:6]
        parts = where.split(":")
        if len(parts) != 3:
            continue
        try:
            line = LockLine(
                kind, access, int(pid), int(parts[0], 16), int(parts[1], 16), int(parts[2])
            )
        except ValueError:
            continue
        out.append(line)
    return out


@dataclass(frozen=True)
class Holder:
    """The process holding the sendmutex flock."""

    pid: int
    comm: str  # /proc/PID/comm: "qmail-send" for the real one
    start_ticks: int  # /proc/PID/stat field 22: clock ticks after boot (exact, for identity)
    start_time: float  # the same as Unix time (btime + ticks / CLK_TCK; about 1 s precise)
    mutex: str  # the lock file's path
    device: int
    inode: int

    @property
    def is_qmail_send(self) -> bool:
        return self.comm == QMAIL_SEND


def _proc_text(*parts: str | int) -> str:
    return read_bounded(os.path.join(PROC, *map(str, parts)), 1 << 20).decode("utf-8", "replace")


def boot_time() -> int:
    """``btime`` from /proc/stat: the boot time in whole Unix seconds."""
    for line in _proc_text("stat").splitlines():
        if line.startswith("btime "):
            return int(line.split()[1])
    raise QmailkitError("no btime line", path=os.path.join(PROC, "stat"))


def start_ticks(pid: int) -> int:
    """Field 22 of /proc/PID/stat (the command name in field 2 may hold spaces and ')')."""
    text = _proc_text(pid, "stat")
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[19])  # fields[0] is field 3


def process_comm(pid: int) -> str:
    return _proc_text(pid, "comm").rstrip("\n")


def _mutex_stat(qmail_home: str | os.PathLike[str]) -> tuple[str, os.stat_result] | None:
    path = os.path.join(os.fspath(qmail_home), SENDMUTEX)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise os_error(err, "cannot stat qmail-send's lock") from err
    if not stat.S_ISREG(st.st_mode):
        raise QmailkitError(
            "is not a regular file", path=path, hint="qmail-send's lock must be a plain file"
        )
    return path, st


def _has_open(pid: int, st: os.stat_result) -> bool:
    """True when ``pid`` has the file of ``st`` open (stat through /proc/PID/fd)."""
    fd_dir = os.path.join(PROC, str(pid), "fd")
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            other = os.stat(os.path.join(fd_dir, fd))
            if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
                return True
    return False


def _locking_pid(path: str, st: os.stat_result) -> int | None:
    lines = [
        line
        for line in parse_locks(_proc_text("locks"))
        if line.kind == "FLOCK" and line.inode == st.st_ino
    ]
    exact = [
        ln for ln in lines if (ln.major, ln.minor) == (os.major(st.st_dev), os.minor(st.st_dev))
    ]
    candidates = exact or [ln for ln in lines if ln.pid > 0 and _has_open(ln.pid, st)]
    if not candidates:
        return None
    pid = candidates[0].pid
    if pid <= 0:
        raise QmailkitError(
            "is locked by a process outside this PID namespace",
            path=path,
            hint="run qmailkit in the namespace (container) qmail-send runs in",
        )
    return pid


def lock_holder(qmail_home: str | os.PathLike[str]) -> Holder | None:
    """The process holding the flock on ``QMAIL_HOME/queue/lock/sendmutex``, whatever its
    name, or None when nobody holds it (or the lock file is missing).

    A holder whose name is not qmail-send (a queue tool keeping qmail-send from
    starting) is returned too, so the caller can say so; ``holder()`` filters it.
    """
    found = _mutex_stat(qmail_home)
    if found is None:
        return None
    path, st = found
    pid = _locking_pid(path, st)
    if pid is None:
        return None
    try:
        comm = process_comm(pid)
        ticks = start_ticks(pid)
    except FileNotFoundError:  # it ended meanwhile
        return None
    except QmailkitError as err:
        if err.path and not os.path.exists(err.path):
            return None
        raise
    start = boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    return Holder(pid, comm, ticks, start, path, st.st_dev, st.st_ino)


def holder(qmail_home: str | os.PathLike[str]) -> Holder | None:
    """The running qmail-send: the sendmutex flock holder if its comm is ``qmail-send``.

    None when qmail-send is down (no holder), or the lock is held by another program.
    """
    found = lock_holder(qmail_home)
    return found if found is not None and found.is_qmail_send else None


class HolderChanged(QmailkitError):
    """The process found before is no longer the qmail-send holding the lock: not signalled."""


def _same_holder(before: Holder) -> bool:
    now = lock_holder(Path(before.mutex).parents[2])
    return (
        now is not None
        and now.is_qmail_send
        and (now.pid, now.start_ticks, now.device, now.inode)
        == (before.pid, before.start_ticks, before.device, before.inode)
    )


def hup(found: Holder) -> None:
    """SIGHUP ``found``, if it still is the qmail-send holding the lock.

    The check is made just before the signal, on a pidfd opened first where
    the kernel has them, so a PID reused in between is never signalled.
    Raises HolderChanged (the caller decides again) when the holder has
    changed or ended; nothing else is ever signalled.
    """
    if not found.is_qmail_send:
        raise HolderChanged(
            f"pid {found.pid} holds the lock but is {found.comm!r}, not {QMAIL_SEND}: "
            "not signalled",
            path=found.mutex,
        )
    pidfd = None
    with contextlib.suppress(AttributeError, OSError):
        pidfd = os.pidfd_open(found.pid)
    try:
        if not _same_holder(found):
            raise HolderChanged(
                f"qmail-send pid {found.pid} no longer holds the lock: not signalled",
                path=found.mutex,
                hint="it reads locals and virtualdomains afresh when it starts",
            )
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, signal.SIGHUP)
        else:
            os.kill(found.pid, signal.SIGHUP)
    except ProcessLookupError:
        raise HolderChanged(
            f"qmail-send pid {found.pid} ended before the HUP", path=found.mutex
        ) from None
    except OSError as err:
        if err.errno == errno.ESRCH:
            raise HolderChanged(f"qmail-send pid {found.pid} ended before the HUP") from None
        raise os_error(err, f"cannot signal qmail-send pid {found.pid}") from err
    finally:
        if pidfd is not None:
            os.close(pidfd)
