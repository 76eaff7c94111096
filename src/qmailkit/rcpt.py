"""validrcptto.cdb: build it from the qmail configuration, safely.

* ``build(options)`` gathers the keys (``qmailkit.qmail.recipients``).
* ``lines``/``cdbmake_text``/``explain_lines`` render them for printing.
* ``write_cdb`` replaces the cdb only when its keys or values changed, refuses
  an empty or sharply shrunk key set unless forced (an empty validrcptto.cdb
  rejects all mail), and replaces the file atomically.  ``lock`` keeps two runs
  from interleaving.

Records are written in a canonical order (domains sorted, then keys), so the
same set always gives the same bytes: "changed?" is a byte comparison.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

from qmailkit.cdb import DEFAULT_MAX_SHRINK
from qmailkit.errors import InputError, os_error
from qmailkit.fsutil import TMP_MARK, fsync_dir, locked, remove_stale_temps
from qmailkit.qmail.recipients import Options, Recipients, build
from qmailkit.qmail.validrcptto import Decision, lookup

__all__ = [
    "Options",
    "Recipients",
    "WriteResult",
    "build",
    "cdbmake_text",
    "check_cdb",
    "check_live",
    "explain_lines",
    "lines",
    "lock",
    "write_cdb",
]


def lines(rec: Recipients) -> Iterator[bytes]:
    """One key per line; a rejecting key is followed by a space and its value (cdbmake-12)."""
    for key, value in rec.records():
        yield key + b" " + value + b"\n" if value else key + b"\n"


def cdbmake_text(rec: Recipients) -> Iterator[bytes]:
    """cdbmake's input format: ``+KLEN,VLEN:KEY->VALUE`` lines, then an empty line."""
    for key, value in rec.records():
        yield b"+%d,%d:%s->%s\n" % (len(key), len(value), key, value)
    yield b"\n"


def explain_lines(rec: Recipients) -> Iterator[str]:
    """``KEY<TAB>accept|reject<TAB>SOURCE`` for every key."""
    for key, value, source in rec.explain():
        verdict = "reject" if value.startswith(b"-") else "accept"
        yield f"{key.decode('utf-8', 'surrogateescape')}\t{verdict}\t{source}\n"


@dataclass(frozen=True)
class WriteResult:
    path: str
    written: bool  # False: the file already held exactly these records
    keys: int
    previous: int | None  # records in the old file, None if there was none


@contextlib.contextmanager
def lock(path: str | os.PathLike[str]) -> Iterator[int]:
    """Hold ``PATH.lock`` so that two builds of one cdb cannot interleave.

    Yields the lock file's descriptor; ``write_cdb(state_fd=...)`` keeps a note
    of what it last wrote there, so that an unchanged run need not build the cdb.
    """
    directory = os.path.dirname(os.fspath(path)) or "."
    if not os.path.isdir(directory):
        raise InputError("the directory for the cdb does not exist", path=directory)
    with locked(os.fspath(path) + ".lock", what="another build of this file") as fd:
        yield fd


_STATE = b"qmailkit-rcpt-state-2"


def _canonical(rec: Recipients) -> tuple[list[tuple[bytes, bytes | None]], bytes]:
    """Per domain in the canonical order, its keys (and values, None if all are empty)
    as newline-separated bytes; and a digest of them all."""
    digest = hashlib.sha256()
    parts = []
    for domain in sorted(rec.domains):
        found = rec.domains[domain]
        # Keys hold no newline or NUL (they come from file names and text lines).
        digest.update(found.digest())
        parts.append((found.joined_keys(), found.joined_values()))
    return parts, digest.hexdigest().encode()


def _stamp(path: str) -> bytes:
    st = os.stat(path)
    return b"%d %d %d %d" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _read_state(fd: int) -> bytes:
    return os.pread(fd, 512, 0)


def _write_state(fd: int, digest: bytes, target: str) -> None:
    # A cache, not a record: losing it only costs one full comparison.
    os.ftruncate(fd, 0)
    os.pwrite(fd, b" ".join((_STATE, digest, _stamp(target))) + b"\n", 0)


def _previous(path: str) -> int | None:
    from qmailkit import cdb

    if not os.path.exists(path):
        return None
    try:
        with cdb.Reader(path) as reader:
            return len(reader)
    except InputError as err:
        raise InputError(
            f"the existing file is not a cdb ({err.message})",
            path=path,
            hint="move it away, or check the -c path",
        ) from None


def _same_records(path: str, staged: str) -> bool:
    from qmailkit import cdb

    with open(path, "rb") as a, open(staged, "rb") as b:
        while True:
            x, y = a.read(1 << 20), b.read(1 << 20)
            if x != y:
                break
            if not x:
                return True
    # Same records written in another order (e.g. by another tool) are still "unchanged".
    with cdb.Reader(path) as old, cdb.Reader(staged) as new:
        if len(old) != len(new):
            return False
        return sorted(old.items()) == sorted(new.items())


def write_cdb(
    path: str | os.PathLike[str],
    rec: Recipients,
    *,
    force: bool = False,
    max_shrink: float = DEFAULT_MAX_SHRINK,
    mode: int = 0o644,
    state_fd: int | None = None,
) -> WriteResult:
    """Write ``rec`` as a cdb at ``path`` if it differs from what is there.

    Refuses (InputError, nothing written) an empty set, or one more than
    ``max_shrink`` (a fraction) smaller than the existing file, unless ``force``.
    ``state_fd`` (the descriptor ``lock`` yields) remembers the digest of the
    records last written and the file's identity (device, inode, size, mtime):
    when both still match, the file is known to be unchanged without building it.
    """
    from qmailkit import cdb

    target = os.fspath(path)
    directory = os.path.dirname(target) or "."
    if not os.path.isdir(directory):
        raise InputError("the directory for the cdb does not exist", path=directory)
    count = len(rec)
    previous = _previous(target)
    cdb.check_shrink(
        count,
        previous,
        path=target,
        noun="keys",
        empty_effect="rejects all mail",
        max_shrink=max_shrink,
        force=force,
    )

    parts, digest = _canonical(rec)
    if (
        state_fd is not None
        and previous is not None
        and _read_state(state_fd) == b" ".join((_STATE, digest, _stamp(target))) + b"\n"
    ):
        return WriteResult(target, False, count, previous)

    remove_stale_temps(target)
    staged = os.path.join(directory, f".{os.path.basename(target)}{TMP_MARK}{os.getpid()}")
    try:
        with cdb.make(staged, mode=mode) as writer:
            for keys, values in parts:
                writer.add_lines(keys, values)
        if previous is not None and _same_records(target, staged):
            if state_fd is not None:
                _write_state(state_fd, digest, target)
            return WriteResult(target, False, count, previous)
        try:
            os.rename(staged, target)
        except OSError as err:
            raise os_error(err, f"cannot replace {target}") from err
        fsync_dir(directory)
        if state_fd is not None:
            _write_state(state_fd, digest, target)
        return WriteResult(target, True, count, previous)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged)


def check_cdb(address: str, path: str | os.PathLike[str]) -> Decision:
    """What qmail-smtpd with VALIDRCPTTO_CDB=path answers for ``address``."""
    from qmailkit import cdb

    with cdb.Reader(path) as reader:
        return lookup(address, reader.get)


def check_live(address: str, opts: Options) -> tuple[Decision, Recipients]:
    """The same, straight from the configuration (no cdb needed)."""
    rec = build(opts)
    return lookup(address, rec.get), rec
