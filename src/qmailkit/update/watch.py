"""Watch source directories for ``qmailkit update --watch``: batches of changed paths.

A ``Watcher`` watches a set of directories, each one alone (never recursively:
a Maildir below a watched directory must not wake it), with an *interest* per
directory (a set of names or a predicate on a name; None is every name).  It
hands out ``Batch`` es: the paths that may have changed, and the reasons, if
any, why everything must be re-read.  An event is a hint, never proof: the
caller re-reads (hashes) what a batch names, so a spurious path costs a
digest, while a missed one costs a stale database until the next rescan.

* **inotify** (inotify_simple, one ctypes module) on each directory for
  IN_CLOSE_WRITE, IN_MOVED_TO, IN_MOVED_FROM, IN_CREATE, IN_DELETE, IN_ATTRIB,
  IN_DELETE_SELF and IN_MOVE_SELF.  Watching the directory, not the file, is
  what sees a replace by rename (``rsync``, ``mv``, editors, ``fsutil.staged``).
* **Coalescing.** A batch is ready once no event came for ``quiet`` seconds
  (0.2), but at most ``max_delay`` seconds (2) after its first event, so a
  long stream of writes cannot postpone a build for ever.  Ignored events
  neither start nor prolong a batch.
* **Ignored names** (``is_temporary``): ``*.tmp`` (qmail-newu, qmail-newmrh,
  tcprules), rsync's ``.NAME.XXXXXX`` and ``.~tmp~``, vim's ``.NAME.swp`` /
  ``.NAME.swx`` and ``4913``, ``NAME~``, emacs' ``#NAME#`` and ``.#NAME``, and
  fsutil.staged's ``.NAME.qmailkit-tmp.PID``.  The rsync shape cannot hide a
  ``.qmail-EXT`` file qmail reads: qmail-local writes a "." of the extension
  as ":" (qmailkit.qmail.delivery), so no file it opens has a second dot.
  The caller's own writes are dropped too: ``with watcher.own_write(path):``.
* **Rescan needed** (``Batch.rescan`` says why): the event queue overflowed
  (events were lost), a watched directory was removed, moved away or
  (re)appeared, inotify gave way to polling, and every ``rescan_every``
  seconds (300) as a safety net.  After an overflow and at each tick every
  watch is renewed: lost events may hide a directory's removal or creation,
  and a directory reached through a symlink that now points elsewhere is
  followed.  The caller's full rescan at start is its own: enter the watcher
  first, then rescan, and nothing falls between the two.
* **Missing directories.** ``add_dir`` of a directory that does not exist (a
  vpopmail domain not created yet) returns False and watches its nearest
  existing ancestor instead; when the directory appears it is watched and a
  rescan batch says ``watched directory appeared: DIR``.  A watched directory
  that is removed goes back to waiting in the same way.  Directories come and
  go at run time through ``add_dir`` / ``remove_dir``.
* **Polling fallback.** Where inotify is not available (``inotify_init``
  fails: no kernel support, fs.inotify.max_user_instances or the open-file
  limit reached; or ``inotify_add_watch`` hits fs.inotify.max_user_watches),
  ``mode="auto"`` switches to polling: every ``poll_interval`` seconds (5)
  each watched directory is listed and its interesting entries are compared
  by (mtime_ns, ctime_ns, size, inode), which sees ``rsync -a`` keeping an
  old mtime (the ctime changes).  ``fallback_reason`` holds a message to log;
  a switch at run time also comes as a rescan batch carrying it.  The
  interface and the batches are the same.  ``mode="poll"`` forces polling,
  ``mode="inotify"`` refuses to fall back (a QmailkitError instead).
* **Cost.** Idle, the watcher blocks in poll(2) until the next rescan tick:
  no busy loop.  Measured on 10,000 domain directories: inotify adds them in
  0.11 s and ~9 MB of RSS, idles at 0.4 ms of CPU in 20 s, and names one
  vpasswd write 0.2 s (the quiet time) after it.  Polling them every 5 s
  costs ~5 % of a core: on large trees raise ``poll_interval``.

One thread uses a watcher (``next_batch``, ``own_write``, ``add_dir``...).
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Literal

import inotify_simple

from qmailkit.errors import QmailkitError
from qmailkit.fsutil import TMP_MARK

Interest = Callable[[str], bool] | Iterable[str] | None
Mode = Literal["auto", "inotify", "poll"]

IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000

EVENTS = (
    IN_CLOSE_WRITE
    | IN_MOVED_TO
    | IN_MOVED_FROM
    | IN_CREATE
    | IN_DELETE
    | IN_ATTRIB
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)

OVERFLOW = "inotify event queue overflowed: events were lost"
PERIODIC = "periodic rescan"
_GONE = "watched directory removed or moved away: "
_APPEARED = "watched directory appeared: "

_TEMPORARY = re.compile(
    r".*\.tmp"  # qmail-newu, qmail-newmrh, tcprules
    r"|\..+\.[A-Za-z0-9]{6}"  # rsync's .NAME.XXXXXX
    r"|\.~tmp~"  # rsync --delay-updates' directory
    r"|\..+\.sw[a-px]"  # vim's swap files
    r"|.*~|#.*#|\.#.*"  # backups, emacs' auto-save and lock files
    r"|4913"  # vim's probe for a writable directory
    r"|\..+" + re.escape(TMP_MARK) + r"[0-9]+",  # fsutil.staged
    re.DOTALL,
)


def is_temporary(name: str) -> bool:
    """Whether ``name`` (a file name, no directory) is a writer's temporary file."""
    return _TEMPORARY.fullmatch(name) is not None


@dataclass(frozen=True)
class Batch:
    """What may have changed since the previous batch.

    ``paths``: each ``DIR/NAME`` an event (or a poll) named in a watched
    directory, for a name its interest takes: written, created, removed,
    renamed to or away, or its attributes changed; re-read it.  ``rescan``:
    why every source must be re-read (empty: ``paths`` is the whole story).
    """

    paths: frozenset[str] = frozenset()
    rescan: tuple[str, ...] = ()

    @property
    def needs_rescan(self) -> bool:
        """Whether the caller must re-read everything, not only ``paths``."""
        return bool(self.rescan)


@dataclass
class _Snapshot:
    """One directory as polling last saw it: its (dev, inode) and its interesting entries."""

    dir_id: tuple[int, int] | None
    entries: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)


def _predicate(interest: Interest) -> Callable[[str], bool]:
    if interest is None:
        return lambda name: True
    if callable(interest):
        return interest
    if isinstance(interest, str):
        raise TypeError("interest is a set of names or a predicate, not one string")
    return frozenset(interest).__contains__


def _child_toward(ancestor: str, path: str) -> str:
    """The entry of ``ancestor`` on the way down to ``path``."""
    return os.path.join(ancestor, os.path.relpath(path, ancestor).split(os.sep)[0])


def _entry_signature(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _snapshot(directory: str, wanted: Callable[[str], bool]) -> _Snapshot:
    try:
        st = os.stat(directory)
    except OSError:
        return _Snapshot(None)
    if not stat.S_ISDIR(st.st_mode):
        return _Snapshot(None)
    snap = _Snapshot((st.st_dev, st.st_ino))
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if is_temporary(entry.name) or not wanted(entry.name):
                continue
            with contextlib.suppress(OSError):
                snap.entries[entry.name] = _entry_signature(entry.stat(follow_symlinks=False))
    return snap


def _directory_changes(directory: str, before: _Snapshot, after: _Snapshot) -> list[str]:
    """The rescan reasons for a directory whose identity changed between two polls."""
    reasons = []
    if before.dir_id is not None:
        reasons.append(_GONE + directory)
    if after.dir_id is not None:
        reasons.append(_APPEARED + directory)
    return reasons


def _unavailable(err: OSError, call: str, interval: float) -> str:
    hints = {
        errno.EMFILE: " (fs.inotify.max_user_instances or the open-file limit reached)",
        errno.ENOSPC: " (fs.inotify.max_user_watches reached: raise it)",
        errno.ENOSYS: " (the kernel has no inotify)",
    }
    reason = os.strerror(err.errno) if err.errno else str(err)
    return (
        f"inotify is not available: {call}: {reason}{hints.get(err.errno or 0, '')}; "
        f"polling the watched directories every {interval:g} s instead"
    )


class Watcher:
    """Batches of changed paths in a set of directories (see the module's notes).

    ``dirs`` maps each directory to its interest (``add_dir``).  ``quiet`` and
    ``max_delay`` shape the coalescing, ``rescan_every`` the safety-net rescan
    (None: never), ``poll_interval`` the polling.  Use it as a context manager
    (or call ``close``); ``mode`` says which way it watches ("inotify" or
    "poll") and ``fallback_reason`` why it polls when it was not asked to.
    """

    def __init__(
        self,
        dirs: Mapping[str, Interest] | None = None,
        *,
        quiet: float = 0.2,
        max_delay: float = 2.0,
        rescan_every: float | None = 300.0,
        mode: Mode = "auto",
        poll_interval: float = 5.0,
    ) -> None:
        self.quiet = quiet
        self.max_delay = max_delay
        self.rescan_every = rescan_every
        self.poll_interval = poll_interval
        self.mode: Literal["inotify", "poll"] = "poll"
        self.fallback_reason: str | None = None
        self._may_fall_back = mode == "auto"
        self._inotify: inotify_simple.INotify | None = None
        self._interest: dict[str, Callable[[str], bool]] = {}
        self._wd_of: dict[str, int] = {}
        self._paths_of: dict[int, set[str]] = {}
        self._waiting: dict[str, str] = {}  # missing directory -> the ancestor watched for it
        self._snapshots: dict[str, _Snapshot] = {}
        self._own: Counter[str] = Counter()
        self._paths: set[str] = set()
        self._reasons: list[str] = []
        self._first: float | None = None
        self._last = 0.0
        self._due_now = False
        now = time.monotonic()
        self._next_rescan = None if rescan_every is None else now + rescan_every
        self._next_poll = now + poll_interval
        if mode != "poll":
            try:
                self._inotify = inotify_simple.INotify()
                self.mode = "inotify"
            except OSError as err:
                if not self._may_fall_back:
                    raise QmailkitError(
                        f"cannot use inotify: {os.strerror(err.errno or 0)}"
                    ) from err
                self.fallback_reason = _unavailable(err, "inotify_init", poll_interval)
        for directory, interest in (dirs or {}).items():
            self.add_dir(directory, interest)

    def __enter__(self) -> Watcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop watching (closes the inotify descriptor)."""
        if self._inotify is not None:
            self._inotify.close()
            self._inotify = None

    @property
    def dirs(self) -> list[str]:
        """The directories being watched (absolute), missing ones included."""
        return list(self._interest)

    def add_dir(self, directory: str | os.PathLike[str], interest: Interest = None) -> bool:
        """Watch ``directory`` (not its sub-directories) for the names ``interest`` takes.

        Returns whether it exists; a missing one is waited for (module notes).
        Adding a directory again replaces its interest.
        """
        path = os.path.abspath(directory)
        self._interest[path] = _predicate(interest)
        if self._inotify is None:
            self._snapshots[path] = _snapshot(path, self._interest[path])
            return self._snapshots[path].dir_id is not None
        return self._settle_or_fall_back(path)

    def remove_dir(self, directory: str | os.PathLike[str]) -> None:
        """Stop watching ``directory``; its pending paths are dropped."""
        path = os.path.abspath(directory)
        if self._interest.pop(path, None) is None:
            return
        self._snapshots.pop(path, None)
        ancestor = self._waiting.pop(path, None)
        if ancestor is not None:
            self._release(ancestor)
        self._release(path)
        self._paths = {p for p in self._paths if os.path.dirname(p) != path}

    @contextlib.contextmanager
    def own_write(self, *paths: str | os.PathLike[str]) -> Iterator[None]:
        """Drop the events for ``paths`` caused inside this block: the caller's own writes.

        On leaving, the events already queued are read (the kernel queues them
        before the write returns), so exactly the events up to then are
        dropped; a later change of the same path is seen.
        """
        names = Counter(os.path.abspath(p) for p in paths)
        self._own.update(names)
        try:
            yield
        finally:
            try:
                if self._inotify is not None:
                    self._read(0)
                else:
                    for path in names:
                        self._resnapshot(path)
            finally:
                self._own -= names

    def next_batch(self, timeout: float | None = None) -> Batch | None:
        """Wait for the next batch; None if ``timeout`` seconds pass first (None: wait)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            now = time.monotonic()
            if self._next_rescan is not None and now >= self._next_rescan:
                self._periodic(now)
            ready = self._ready_at()
            if ready is not None and now >= ready:
                return self._take(now)
            if deadline is not None and now >= deadline:
                return None
            wakes = [ready, deadline, self._next_rescan]
            if self._inotify is None:
                wakes.append(self._next_poll)
            wake = min((t for t in wakes if t is not None), default=None)
            self._wait(None if wake is None else max(0.0, wake - now))

    def __iter__(self) -> Iterator[Batch]:
        """Batches for ever (``next_batch`` without a time-out)."""
        while True:
            batch = self.next_batch()
            if batch is not None:
                yield batch

    # -- batches

    def _touch(self, now: float) -> None:
        if self._first is None:
            self._first = now
        self._last = now

    def _note_path(self, path: str, now: float) -> None:
        if self._own[path]:
            return
        self._paths.add(path)
        self._touch(now)

    def _note_rescan(self, reason: str, now: float) -> None:
        if reason not in self._reasons:
            self._reasons.append(reason)
        self._touch(now)

    def _ready_at(self) -> float | None:
        if self._first is None:
            return None
        if self._due_now:
            return self._first
        return min(self._last + self.quiet, self._first + self.max_delay)

    def _take(self, now: float) -> Batch:
        batch = Batch(frozenset(self._paths), tuple(self._reasons))
        self._paths = set()
        self._reasons = []
        self._first = None
        self._due_now = False
        if batch.rescan and self.rescan_every is not None:
            self._next_rescan = now + self.rescan_every
        return batch

    def _periodic(self, now: float) -> None:
        if self._inotify is not None:
            for directory in list(self._interest):
                self._settle_or_fall_back(directory)
        self._note_rescan(PERIODIC, now)
        self._due_now = True
        assert self.rescan_every is not None
        self._next_rescan = now + self.rescan_every

    def _wait(self, seconds: float | None) -> None:
        if self._inotify is not None:
            self._read(None if seconds is None else math.ceil(seconds * 1000))
            return
        now = time.monotonic()
        if seconds is not None and now + seconds < self._next_poll:
            time.sleep(seconds)
            return
        time.sleep(max(0.0, self._next_poll - now))
        self._scan()

    # -- polling

    def _scan(self) -> None:
        now = time.monotonic()
        self._next_poll = now + self.poll_interval
        for directory, wanted in self._interest.items():
            after = _snapshot(directory, wanted)
            before = self._snapshots.get(directory)
            self._snapshots[directory] = after
            if before is None:
                continue
            if before.dir_id != after.dir_id:
                for reason in _directory_changes(directory, before, after):
                    self._note_rescan(reason, now)
                continue
            for name in before.entries.keys() | after.entries.keys():
                if before.entries.get(name) != after.entries.get(name):
                    self._note_path(os.path.join(directory, name), now)

    def _resnapshot(self, path: str) -> None:
        """Take ``path`` into the snapshot as it is now (after an own write)."""
        directory, name = os.path.split(path)
        snap = self._snapshots.get(directory)
        if snap is None or is_temporary(name) or not self._interest[directory](name):
            return
        try:
            snap.entries[name] = _entry_signature(os.stat(path, follow_symlinks=False))
        except OSError:
            snap.entries.pop(name, None)

    def _fall_back(self, reason: str) -> None:
        self.fallback_reason = reason
        self.mode = "poll"
        self.close()
        self._wd_of.clear()
        self._paths_of.clear()
        self._waiting.clear()
        for directory, wanted in self._interest.items():
            self._snapshots[directory] = _snapshot(directory, wanted)
        self._next_poll = time.monotonic() + self.poll_interval
        self._note_rescan(reason, time.monotonic())

    # -- inotify watches

    def _add_watch(self, path: str) -> None:
        assert self._inotify is not None
        wd = self._inotify.add_watch(path, EVENTS | IN_ONLYDIR)
        old = self._wd_of.get(path)
        if old is not None and old != wd:
            self._forget(path)
        self._wd_of[path] = wd
        self._paths_of.setdefault(wd, set()).add(path)

    def _forget(self, path: str) -> None:
        """Drop ``path``'s watch; the kernel's watch goes when no other path shares it."""
        wd = self._wd_of.pop(path, None)
        if wd is None:
            return
        sharing = self._paths_of.get(wd, set())
        sharing.discard(path)
        if not sharing:
            self._paths_of.pop(wd, None)
            if self._inotify is not None:
                with contextlib.suppress(OSError):
                    self._inotify.rm_watch(wd)

    def _release(self, path: str) -> None:
        """Forget ``path``'s watch unless it is watched or waited on through it."""
        if path not in self._interest and path not in self._waiting.values():
            self._forget(path)

    def _settle(self, directory: str) -> bool:
        """Watch ``directory``, or its nearest existing ancestor while it is missing."""
        previous = self._waiting.pop(directory, None)
        tried: set[str] = set()
        target = directory
        while True:
            try:
                self._add_watch(target)
            except OSError as err:
                parent = os.path.dirname(target)
                if err.errno not in (errno.ENOENT, errno.ENOTDIR) or parent == target:
                    raise
                if target == directory and directory in self._wd_of:
                    # moved away with its parent: the old watch follows the inode, not the name
                    self._forget(directory)
                    self._note_rescan(_GONE + directory, time.monotonic())
                target = parent
                continue
            if target == directory:
                break
            tried.add(target)
            if os.path.isdir(_child_toward(target, directory)):
                target = directory  # it grew while we looked: start again from the bottom
                continue
            self._waiting[directory] = target
            break
        if previous is not None:
            tried.add(previous)
        tried.discard(self._waiting.get(directory, ""))
        for path in tried:
            self._release(path)
        return directory not in self._waiting

    def _settle_or_fall_back(self, directory: str) -> bool:
        if self._inotify is None:  # fell back while settling others
            return directory in self._snapshots and self._snapshots[directory].dir_id is not None
        try:
            return self._settle(directory)
        except OSError as err:
            if err.errno == errno.ENOSPC and self._may_fall_back:
                self._fall_back(_unavailable(err, "inotify_add_watch", self.poll_interval))
                return self._snapshots[directory].dir_id is not None
            raise QmailkitError(
                f"cannot watch directory: {os.strerror(err.errno or 0)}", path=directory
            ) from err

    def _read(self, timeout_ms: int | None) -> None:
        assert self._inotify is not None
        events = self._inotify.read(timeout=timeout_ms)
        now = time.monotonic()
        resettle: set[str] = set()
        for event in events:
            self._event(event.wd, event.mask, event.name, now, resettle)
        for directory in resettle:
            if directory not in self._interest or self._inotify is None:
                continue
            was_missing = directory not in self._wd_of or directory in self._waiting
            if self._settle_or_fall_back(directory) and was_missing:
                self._note_rescan(_APPEARED + directory, now)

    def _event(self, wd: int, mask: int, name: str, now: float, resettle: set[str]) -> None:
        if mask & IN_Q_OVERFLOW:  # lost events may include a directory's IN_IGNORED or IN_CREATE
            self._note_rescan(OVERFLOW, now)
            resettle.update(self._interest)
            return
        watched = self._paths_of.get(wd)
        if not watched:
            return  # a watch already forgotten
        if mask & IN_IGNORED:  # the watch is gone: removed, unmounted or rm_watch'd
            del self._paths_of[wd]
            for path in watched:
                if self._wd_of.get(path) == wd:
                    del self._wd_of[path]
                resettle.update(self._waiters(path))
            return
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            for path in sorted(watched & self._interest.keys()):
                self._note_rescan(_GONE + path, now)
            if mask & IN_MOVE_SELF and self._inotify is not None:
                with contextlib.suppress(OSError):  # IN_IGNORED follows and re-settles
                    self._inotify.rm_watch(wd)
            return
        for watched_dir in watched:
            path = os.path.join(watched_dir, name)
            if mask & IN_ISDIR and mask & (IN_CREATE | IN_MOVED_TO):
                resettle.update(
                    d
                    for d, ancestor in self._waiting.items()
                    if ancestor == watched_dir and _child_toward(ancestor, d) == path
                )
            wanted = self._interest.get(watched_dir)
            if wanted is not None and not is_temporary(name) and wanted(name):
                self._note_path(path, now)

    def _waiters(self, path: str) -> list[str]:
        """The watched directories that depend on the watch of ``path``."""
        found = [d for d, ancestor in self._waiting.items() if ancestor == path]
        if path in self._interest:
            found.append(path)
        return found
