"""validrcptto.cdb: build it from the qmail configuration, safely.

* ``build(options)`` gathers the keys (``qmailkit.qmail.recipients``).
* ``lines``/``cdbmake_text``/``explain_lines`` render them for printing.
* ``write_cdb`` puts the cdb in place with the one installer (``cdb.install``):
  only when its keys or values changed, never an empty or sharply shrunk key
  set unless forced (an empty validrcptto.cdb rejects all mail), atomically.
  ``lock`` (``.validrcptto.cdb.lock``, the lock of every builder of the file)
  keeps two runs from interleaving, and holds a note of the last build.

Records are written in a canonical order (domains sorted, then keys), so the
same set always gives the same bytes: "changed?" is a byte comparison.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator

from qmailkit import cdb
from qmailkit.cdb import DEFAULT_MAX_SHRINK
from qmailkit.errors import InputError
from qmailkit.qmail.recipients import Options, Recipients, build
from qmailkit.qmail.validrcptto import Decision, lookup

__all__ = [
    "Options",
    "Recipients",
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
    """One key per line; a rejecting key is followed by a space and its value (cdbmake-12).

    In ``records`` order, a domain at a time: one whose keys all accept is its
    joined keys as they are (most domains, in bulk).
    """
    for domain in sorted(rec.domains):
        found = rec.domains[domain]
        if found.values is None:
            if found.count():
                yield found.joined_keys() + b"\n"
            continue
        for key, value in zip(found.keys, found.values, strict=True):
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


def lock(path: str | os.PathLike[str]) -> contextlib.AbstractContextManager[int]:
    """Hold the lock of ``path`` (``.NAME.lock``, the one every builder of a cdb takes),
    so that two builds cannot interleave.

    Yields the lock file's descriptor; ``write_cdb(state_fd=...)`` keeps a note
    of what it last wrote there, so that an unchanged run need not build the cdb.
    """
    return cdb.lock(path, what="another build of this file")


_STATE = b"qmailkit-rcpt-state-3"


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


def _state(digest: bytes, target: str) -> bytes:
    """The note of a build: its digest and the identity of the file it left (a chmod, a
    rename over it or a rewrite all change it)."""
    st = os.stat(target)
    stamp = b"%d %d %d %d %o" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)
    return b" ".join((_STATE, digest, stamp)) + b"\n"


def _read_state(fd: int) -> bytes:
    return os.pread(fd, 512, 0)


def _write_state(fd: int, note: bytes) -> None:
    # A cache, not a record: losing it only costs one full comparison.
    os.ftruncate(fd, 0)
    os.pwrite(fd, note, 0)


def _previous(path: str) -> int | None:
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


def write_cdb(
    path: str | os.PathLike[str],
    rec: Recipients,
    *,
    force: bool = False,
    max_shrink: float = DEFAULT_MAX_SHRINK,
    mode: int = 0o644,
    state_fd: int | None = None,
) -> cdb.Installed:
    """Write ``rec`` as a cdb at ``path`` if it differs from what is there (``cdb.install``).

    Refuses (InputError, nothing written) an empty set, or one more than
    ``max_shrink`` (a fraction) smaller than the existing file, unless ``force``.
    ``state_fd`` is the descriptor ``lock`` yields (without it, the lock is
    taken here): it remembers the digest of the records last written and the
    file's identity (device, inode, size, mtime, mode); when both still match,
    the file is known to be unchanged without building it.
    """
    if state_fd is None:
        with lock(path) as fd:
            return write_cdb(path, rec, force=force, max_shrink=max_shrink, mode=mode, state_fd=fd)
    target = os.fspath(path)
    count = len(rec)
    previous = _previous(target)
    guard = cdb.Guard("keys", "rejects all mail", max_shrink=max_shrink, force=force)
    # Refused before anything is built, and also when the records are those of the file.
    cdb.check_shrink(
        count,
        previous,
        path=target,
        noun=guard.noun,
        empty_effect=guard.empty_effect,
        max_shrink=max_shrink,
        force=force,
    )
    parts, digest = _canonical(rec)
    if previous is not None and _read_state(state_fd) == _state(digest, target):
        return cdb.Installed(target, False, count, previous, "unchanged")

    def fill(writer: cdb.Writer) -> None:
        for keys, values in parts:
            writer.add_lines(keys, values)

    installed = cdb.install(target, fill, guard=guard, only_if_changed=True, mode=mode, lock=False)
    _write_state(state_fd, _state(digest, target))
    return installed


def check_cdb(address: str, path: str | os.PathLike[str]) -> Decision:
    """What qmail-smtpd with VALIDRCPTTO_CDB=path answers for ``address``."""
    with cdb.Reader(path) as reader:
        return lookup(address, reader.get)


def check_live(address: str, opts: Options) -> tuple[Decision, Recipients]:
    """The same, straight from the configuration (no cdb needed)."""
    rec = build(opts)
    return lookup(address, rec.get), rec
