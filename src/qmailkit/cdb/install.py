"""The one guarded, locked, only-if-changed replacement of a cdb that qmail reads.

``install(path, fill, ...)`` is how mkauth, newu, newmrh and tcprules put a
database in place, in one order of steps:

1. take ``fsutil.lock_path(path)`` (``.NAME.lock``), unless the caller holds it
   (``lock=False``, after ``with cdb.lock(path)``);
2. build the new file beside the old one (``fsutil.staged``): ``fill(writer)``
   adds the records; it is fsync'd but not yet in place;
3. with ``only_if_changed``, leave the old file (and its mtime) alone when it
   holds the same records with the wanted mode and owner;
4. with a ``guard``, refuse an empty result, or one that lost more than
   ``max_shrink`` of the old file's entries, unless ``force``;
5. rename it into place and fsync the directory.

Nothing but the lock file is left behind, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from qmailkit import fsutil
from qmailkit.cdb import backends
from qmailkit.cdb.reader import Reader
from qmailkit.cdb.writer import Writer
from qmailkit.errors import InputError, QmailkitError

#: a rebuilt database may lose at most this fraction of the old file's records
DEFAULT_MAX_SHRINK = 0.20


@dataclass(frozen=True)
class Guard:
    """The guard rail of a database qmail reads: what is counted, and what an empty one does."""

    noun: str  # what the records are: "logins", "entries", "domains"
    empty_effect: str  # what an empty file does: "fails every AUTH"
    max_shrink: float = DEFAULT_MAX_SHRINK
    force: bool = False
    name: str | None = None  # the file as the message names it (default: its base name)
    uncounted: int = 0  # records every such file has that are not entries (users/cdb's "")


@dataclass(frozen=True)
class Installed:
    """What ``install`` did."""

    path: str
    written: bool  # False: the file already held exactly these records
    count: int  # entries in the new file (records less the guard's uncounted ones)
    previous: int | None  # entries in the old file; None if there was none
    reason: str  # created, replaced, rewritten (...), unchanged


def check_shrink(
    count: int,
    previous: int | None,
    *,
    path: str | os.PathLike[str],
    noun: str,
    empty_effect: str,
    max_shrink: float = DEFAULT_MAX_SHRINK,
    force: bool = False,
    name: str | None = None,
) -> None:
    """Refuse an empty database, or one that lost more than ``max_shrink`` of the old file's
    ``previous`` entries, unless ``force``.

    A mistake upstream (an unmounted vpopmail tree, a truncated passwd, a stray
    ``.`` line) shows up as a sudden drop; installing it would reject mail or
    logins at once.
    """
    if force:
        return
    if count == 0:
        name = name or os.path.basename(path)
        raise InputError(
            f"no {noun} found: an empty {name} {empty_effect}",
            path=path,
            hint="check the sources; --force writes it anyway",
        )
    if previous and count < previous * (1 - max_shrink):
        raise InputError(
            f"would shrink from {previous} to {count} {noun} "
            f"({100 * (previous - count) / previous:.0f} % fewer, limit {100 * max_shrink:.0f} %)",
            path=path,
            hint="check the sources; --force or a larger --max-shrink writes it anyway",
        )


@contextlib.contextmanager
def lock(
    path: str | os.PathLike[str],
    *,
    wait: bool | float = False,
    what: str = "another build of this file",
) -> Iterator[int]:
    """Hold the lock of ``path`` (the one ``install`` takes); yields its descriptor.

    For a caller that must keep other builders out for longer than the
    install itself, or keeps a note in the lock file (mkvalidrcptto's digest).
    """
    _check_directory(os.fspath(path))
    with fsutil.locked(fsutil.lock_path(path), wait=wait, what=what) as fd:
        yield fd


def _check_directory(target: str) -> None:
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        raise InputError("the directory for the cdb does not exist", path=directory)


def _same_bytes(path: str, other: str) -> bool:
    try:
        with (
            open(fsutil.open_regular(path), "rb") as first,
            open(fsutil.open_regular(other), "rb") as second,
        ):
            if os.fstat(first.fileno()).st_size != os.fstat(second.fileno()).st_size:
                return False
            while True:
                chunk = first.read(1 << 20)
                if chunk != second.read(1 << 20):
                    return False
                if not chunk:
                    return True
    except (OSError, QmailkitError):
        return False  # the Reader says what is wrong with the file


def _previous(
    path: str, staged: str, guard: Guard | None, compare: bool
) -> tuple[int | None, bool]:
    """The record count of the old file (None if none) and, if ``compare``, whether it holds
    the staged file's records.

    Usually the old file is what the last run wrote, byte for byte: then only
    its header is read.  Otherwise its records are read and compared in any order.
    """
    if not os.path.exists(path):
        return None, False
    try:
        with Reader(path) as old:
            if not compare:
                return len(old), False
            if _same_bytes(path, staged):
                return len(old), True
            records = sorted(old.items())
    except InputError as err:
        if guard is None or guard.force:  # a corrupt file is simply replaced
            return None, False
        err.hint = "the shrink guard needs the old file; use --force to replace it"
        raise
    with Reader(staged) as new:
        return len(records), records == sorted(new.items())


def _right_owner_and_mode(path: str, mode: int, owner: tuple[int, int] | None) -> bool:
    st = os.stat(path)
    right_owner = owner is None or all(
        want in (-1, have) for want, have in zip(owner, (st.st_uid, st.st_gid), strict=True)
    )
    return stat.S_IMODE(st.st_mode) == mode and right_owner


def install(
    path: str | os.PathLike[str],
    fill: Callable[[Writer], None],
    *,
    guard: Guard | None = None,
    only_if_changed: bool = False,
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    tmp: str | os.PathLike[str] | None = None,
    lock: bool = True,
    lock_wait: bool | float = False,
    what: str = "another build of this file",
    backend: str | None = None,
) -> Installed:
    """Build a cdb with ``fill(writer)`` and put it at ``path`` (the steps are in the module doc).

    ``tmp`` names the temp file (``tcprules cdb tmp``).  ``lock`` False: the
    caller holds ``cdb.lock(path)`` already.  ``what`` names the lock holder
    in the message when the lock is busy.
    """
    target = os.fspath(path)
    impl = backends.get(backend)
    _check_directory(target)
    with contextlib.ExitStack() as stack:
        if lock:
            stack.enter_context(fsutil.locked(fsutil.lock_path(target), wait=lock_wait, what=what))
        staged = stack.enter_context(fsutil.staged(target, mode=mode, owner=owner, tmp=tmp))
        writer = Writer(staged.file, target, impl)
        fill(writer)
        writer.finish()
        staged.seal()
        uncounted = guard.uncounted if guard is not None else 0
        count = max(writer.count - uncounted, 0)
        previous, same = None, False
        if only_if_changed or guard is not None:
            previous, same = _previous(target, staged.tmp, guard, only_if_changed)
            previous = None if previous is None else max(previous - uncounted, 0)
        if same and _right_owner_and_mode(target, mode, owner):
            return Installed(target, False, count, previous, "unchanged")
        if guard is not None:
            check_shrink(
                count,
                previous,
                path=target,
                noun=guard.noun,
                empty_effect=guard.empty_effect,
                max_shrink=guard.max_shrink,
                force=guard.force,
                name=guard.name,
            )
        existed = os.path.lexists(target)
        staged.commit()
    if not existed:
        reason = "created"
    elif same:
        reason = "rewritten (records unchanged; mode or owner fixed)"
    else:
        reason = "replaced"
    return Installed(target, True, count, previous, reason)
