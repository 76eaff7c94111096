"""A log directory as multilog, svlogd and s6-log keep it.

All three write ``current`` and rotate it to ``@<label>.s`` (finished safely)
or ``@<label>.u`` (found unfinished after a crash), where the label is the
TAI64N time of the rotation: fixed-width lower-case hex, so name order is time
order.  Besides those they keep ``lock``, ``state``, ``newstate``, ``previous``,
``processed`` (multilog, s6-log) or ``config`` (svlogd); none of these is a
log file.  ``*.done`` files are inputs that convert-multilog kept (``-r``).

multilog can hand a rotated file to a processor (``!gzip``); such files are
still called ``@….s`` and are read transparently when gzip'd.

The directory belongs to the log user, so a rotated file is read only if it
is a regular file (a symlink or FIFO put there is refused) and up to
``MAX_FILE`` bytes.

The names convert-multilog relies on around such directories live here too:
a retired service directory (``.retired-NAME-STAMP``, as ``services apply
--prune`` leaves it) and a day file (``SERVICE.YYYY-MM-DD``).
"""

from __future__ import annotations

import itertools
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from qmailkit import fsutil
from qmailkit.errors import QmailkitError, os_error
from qmailkit.logs import tai64n

# The original's glob was ``@*.[su]``; keep it that wide so unusual but valid
# names (a processor's output) are never left behind.
_ROTATED = re.compile(r"@[^/\0]*\.[su]\Z", re.DOTALL)
_LABEL_NAME = re.compile(r"@([0-9a-f]{24})\.[su]\Z")


def is_rotated_name(name: str) -> bool:
    """True for ``@….s`` / ``@….u`` names (never ``current``, never ``….done``).

    A plain name only (no ``/``): a journal's names are checked with this too.
    """
    return bool(_ROTATED.match(name))


#: how ``services apply --prune`` renames a retired service directory (services/apply.py:
#: RETIRED_PREFIX + NAME + "-" + a UTC stamp, "-N" if taken); not imported, to start fast
RETIRED = re.compile(r"\.retired-(?P<name>.+)-(?P<stamp>[0-9]{8}T[0-9]{6})(?:-(?P<n>[0-9]+))?\Z")

DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")


def retired_name(name: str) -> tuple[str, tuple[str, int]] | None:
    """(service, sort key: stamp and number) of a retired directory's name; None for others."""
    match = RETIRED.match(name)
    if match is None:
        return None
    return match["name"], (match["stamp"], int(match["n"] or 1))


def day_file(service: str, date: str) -> str:
    """The name of a service's day file: ``SERVICE.YYYY-MM-DD``."""
    return f"{service}.{date}"


def day_file_date(name: str, service: str) -> str | None:
    """The ``YYYY-MM-DD`` of ``name`` if it is one of ``service``'s day files, else None."""
    head, dot, date = name.rpartition(".")
    if dot and head == service and DATE.match(date):
        return date
    return None


@dataclass(frozen=True)
class LogDir:
    """One logger's directory, e.g. ``/service/qmail-send/log/main``."""

    path: Path

    @property
    def current(self) -> Path:
        return self.path / "current"

    def rotated(self) -> list[Path]:
        """The rotated files, oldest first (name order = time order)."""
        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        return [self.path / n for n in sorted(names) if is_rotated_name(n)]

    def rotated_names(self) -> set[str]:
        try:
            return {n for n in os.listdir(self.path) if is_rotated_name(n)}
        except FileNotFoundError:
            return set()

    def current_size(self) -> int:
        try:
            return os.lstat(self.current).st_size  # only looked at, never followed
        except FileNotFoundError:
            return 0

    def wait_for_rotation(self, before: set[str], timeout: float) -> list[str]:
        """Poll until a rotated file not in ``before`` appears; returns the new names.

        The loggers rename ``current`` to its ``@`` name in one step, so a new
        name means the file is complete.  Returns [] on timeout.
        """
        return fsutil.poll(lambda: sorted(self.rotated_names() - before), timeout, interval=0.005)


def rotation_time(path: str | os.PathLike[str], offset: int = tai64n.LABEL_OFFSET) -> float:
    """Unix time a rotated file was made: from its ``@label`` name, else its mtime."""
    m = _LABEL_NAME.match(os.path.basename(path))
    if m and int(m[1][16:], 16) <= 999_999_999:
        unix, _leap = tai64n.to_unix(int(m[1][:16], 16), offset)
        return unix + int(m[1][16:], 16) / 1e9
    return os.lstat(path).st_mtime


#: rotated files hold up to 16 MB (multilog's cap); they are read in pieces of at most
#: this size, so that converting one (several lists of its lines) stays within ~30 MB
CHUNK = 4 << 20
#: the most read from one rotated file, and the most a gzip'd one may expand to: four times
#: multilog's largest (s16777215), far above svlogd's and s6-log's defaults.  A larger file is
#: refused (named, and kept), so that a file the log user made cannot fill memory or the disk.
MAX_FILE = 64 << 20


def is_gzip(head: bytes) -> bool:
    """True if ``head`` starts with a complete gzip member header (RFC 1952), not just 1f 8b."""
    if len(head) < 10 or head[:3] != b"\x1f\x8b\x08" or head[3] & 0xE0:
        return False
    flags, pos = head[3], 10
    if flags & 0x04:  # FEXTRA: a length, then that many bytes
        if len(head) < pos + 2:
            return False
        pos += 2 + int.from_bytes(head[pos : pos + 2], "little")
    for flag in (0x08, 0x10):  # FNAME, FCOMMENT: zero-terminated
        if flags & flag:
            end = head.find(b"\0", pos)
            if end < 0:
                return False
            pos = end + 1
    if flags & 0x02:  # FHCRC
        pos += 2
    return pos < len(head)  # compressed data follows


def read_chunks(
    path: str | os.PathLike[str], size: int = CHUNK, limit: int = MAX_FILE
) -> Iterator[bytes]:
    """Yield the file's content in pieces that end at a newline (except a last partial line).

    A file up to ``size`` bytes (every rotated file, normally) comes in one piece.
    A gzip'd file (multilog ``!gzip`` processor) is decompressed.  Only a regular
    file is read, never through a symlink, and at most ``limit`` bytes (before and
    after decompression): anything else raises QmailkitError naming the file.
    """
    try:
        fd = fsutil.open_regular(path, follow=False)
    except fsutil.NotRegular as err:
        raise fsutil.NotRegular(err.message, path=path, hint=_KEPT) from None
    with os.fdopen(fd, "rb", buffering=0) as fh:
        raw = _blocks(fh, path, size, limit)
        first = next(raw, None)
        if first is None:
            return
        blocks: Iterator[bytes] = itertools.chain((first,), raw)
        if is_gzip(first):
            blocks = _gunzip(blocks, path, size, limit)
        yield from _at_newlines(blocks)


_KEPT = "kept: it and the files after it wait until it is replaced by a regular file or removed"


def _too_big(path: str | os.PathLike[str], limit: int, what: str = "") -> QmailkitError:
    return QmailkitError(
        f"larger than {limit >> 20} MiB{what}, more than any logger writes; not read",
        path=path,
        hint="kept: convert it by hand (tai64nlocal) and remove it; the files after it wait",
    )


def _blocks(fh: BinaryIO, path: str | os.PathLike[str], size: int, limit: int) -> Iterator[bytes]:
    """The raw file in reads of ``size`` bytes; one read for a file that fits."""
    want = min(size, os.fstat(fh.fileno()).st_size + 1)
    total = 0
    try:
        while block := fh.read(want):
            total += len(block)
            if total > limit:
                raise _too_big(path, limit)
            yield block
            want = size
    except OSError as err:
        raise os_error(err, "cannot read") from None


def _gunzip(
    blocks: Iterable[bytes], path: str | os.PathLike[str], size: int, limit: int
) -> Iterator[bytes]:
    """Decompress gzip members (one after the other), ``size`` bytes of output at a time."""
    inflate = zlib.decompressobj(31)
    total = 0
    try:
        for data in blocks:
            while True:
                if inflate.eof:  # another member may follow (zero padding is skipped)
                    data = data.lstrip(b"\0")
                    if not data:
                        break
                    inflate = zlib.decompressobj(31)
                out = inflate.decompress(data, size)
                total += len(out)
                if total > limit:
                    raise _too_big(path, limit, " when decompressed")
                if out:
                    yield out
                if inflate.eof:
                    data = inflate.unused_data
                    continue
                data = inflate.unconsumed_tail
                if not data and len(out) < size:  # all taken in, nothing pending
                    break
        if not inflate.eof:
            raise zlib.error("the file ends inside the compressed data")
    except zlib.error as err:
        raise QmailkitError(
            f"starts like gzip but does not decompress: {err}", path=path, hint=_KEPT
        ) from None


def _at_newlines(blocks: Iterable[bytes]) -> Iterator[bytes]:
    """Re-cut blocks so that each piece ends at a newline (a last partial line aside)."""
    carry: list[bytes] = []  # the start of a line longer than a block
    for block in blocks:
        cut = block.rfind(b"\n") + 1
        if not cut:
            carry.append(block)
            continue
        if carry:
            carry.append(block[:cut])
            yield b"".join(carry)
        else:
            yield block if cut == len(block) else block[:cut]
        carry = [block[cut:]] if cut < len(block) else []
    if carry:
        yield b"".join(carry)
