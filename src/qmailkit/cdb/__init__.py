"""djb's constant database (cdb): read and write, byte-identical to cdbmake.

* ``Reader(path)``: mmap'd; ``get``, ``get_all``, ``in``, ``len`` (records),
  ``items()`` (file order, duplicates included), ``keys()``.  A truncated or
  corrupt file raises InputError naming it.
* ``make(path, mode, owner)``: a context manager yielding a ``Writer``; the
  file replaces ``path`` atomically on normal exit, and an exception leaves
  ``path`` untouched with no temp file behind.
* ``write(path, records, mode, owner)``: the same from (key, value) pairs.
* ``install(path, fill, guard=..., only_if_changed=...)``: the locked, guarded
  replacement of a database qmail reads (``install.py``); ``lock(path)`` is its lock.

The work is done by a backend (``backend.py``): our C writer or cdbx when
installed, plain Python otherwise.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple, Self

from qmailkit.cdb import backend as _backend
from qmailkit.cdb import pure
from qmailkit.cdb.install import (
    DEFAULT_MAX_SHRINK,
    Guard,
    Installed,
    check_shrink,
    install,
    lock,
)
from qmailkit.errors import InputError, QmailkitError, os_error
from qmailkit.fsutil import atomic_file, open_regular

__all__ = [
    "DEFAULT_MAX_SHRINK",
    "MAX_SIZE",
    "Guard",
    "Installed",
    "Reader",
    "Stats",
    "Writer",
    "check_shrink",
    "install",
    "lock",
    "make",
    "stats",
    "write",
]

# Every offset in the format is 32 bits, so a cdb cannot exceed 4 GiB.
MAX_SIZE = 0xFFFFFFFF
# Bytes one record costs: its 8-byte header and two 8-byte hash slots.
_RECORD_OVERHEAD = 8 + 16


class Writer:
    """Adds records to a cdb being built (get one from ``make``)."""

    def __init__(self, maker: Any, path: str) -> None:
        self._maker = maker
        self._add_many = getattr(maker, "add_many", None)
        self._add_lines = getattr(maker, "add_lines", None)
        #: True when the backend parses cdbmake input itself (``feed_cdbmake``)
        self.feeds_cdbmake = hasattr(maker, "feed_cdbmake")
        self._path = path
        self._size = pure.HEADER_SIZE
        self.count = 0

    def _grow(self, nbytes: int, nrecords: int) -> None:
        size = self._size + nbytes + _RECORD_OVERHEAD * nrecords
        if size > MAX_SIZE:
            raise QmailkitError(
                f"cdb would grow past the format's limit of {MAX_SIZE + 1:,} bytes "
                f"(at record {self.count + 1})",
                path=self._path,
                hint="split the data or drop records",
            )
        self._size = size
        self.count += nrecords

    def _write_failed(self, err: OSError) -> QmailkitError:
        return os_error(err, f"cannot write {self._path}")

    def add(self, key: bytes, value: bytes) -> None:
        if not isinstance(key, bytes) or not isinstance(value, bytes):
            raise TypeError("cdb keys and values must be bytes")
        self._grow(len(key) + len(value), 1)
        try:
            self._maker.add(key, value)
        except OSError as err:
            raise self._write_failed(err) from err

    def add_many(
        self, keys: Sequence[bytes], values: Sequence[bytes], nbytes: int | None = None
    ) -> None:
        """Add records from two equally long sequences of bytes, in bulk (fast path).

        ``nbytes``, if the caller knows it, is the total length of keys and values.
        """
        if len(keys) != len(values):
            raise ValueError("keys and values differ in length")
        if nbytes is None:
            nbytes = sum(map(len, keys)) + sum(map(len, values))
        self._grow(nbytes, len(keys))
        try:
            if self._add_many is not None:
                self._add_many(keys, values)
            else:
                deque(map(self._maker.add, keys, values), maxlen=0)
        except OSError as err:
            raise self._write_failed(err) from err

    def add_lines(self, keys: bytes, values: bytes | None = None) -> None:
        """Add records whose keys (and values, if given) are the lines of ``keys``
        (and ``values``): newline-separated, no final newline; ``b""`` holds none.

        The fastest bulk path: no Python object per record with the C backend.
        """
        if not keys:
            if values:
                raise ValueError("keys and values differ in number")
            return
        count = keys.count(b"\n") + 1
        nbytes = len(keys) - (count - 1)
        if values is not None:
            if values.count(b"\n") != count - 1:
                raise ValueError("keys and values differ in number")
            nbytes += len(values) - (count - 1)
        self._grow(nbytes, count)
        try:
            if self._add_lines is not None:
                self._add_lines(keys, values)
            else:
                split = keys.split(b"\n")
                added = values.split(b"\n") if values is not None else [b""] * count
                deque(map(self._maker.add, split, added), maxlen=0)
        except OSError as err:
            raise self._write_failed(err) from err

    def feed_cdbmake(self, buffer: bytes, start: int) -> tuple[int, int, bool]:
        """Add the whole, well-formed cdbmake records of ``buffer[start:]`` (in C).

        Returns ``(stop, records, done)``: parsing stopped at ``buffer[stop]``,
        before the first record it could not take whole (cut off by the end of
        the buffer, malformed, or too big), or after the closing blank line
        (``done``).  The caller's exact parser deals with what it stopped at.
        """
        try:
            stop, count, nbytes, done = self._maker.feed_cdbmake(buffer, start)
        except OSError as err:
            raise self._write_failed(err) from err
        self._grow(nbytes, count)
        return stop, count, done

    def finish(self) -> None:
        """Write the hash tables: the file is complete (``make`` and ``install`` call it)."""
        try:
            self._maker.finish()
        except OSError as err:
            raise self._write_failed(err) from err


@contextlib.contextmanager
def make(
    path: str | os.PathLike[str],
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    *,
    tmp: str | os.PathLike[str] | None = None,
    backend: str | None = None,
) -> Iterator[Writer]:
    """Build a cdb at ``path``; it replaces the old file only if the block ends normally.

    ``tmp`` names the temp file (``tcprules cdb tmp``); by default one of our own.
    """
    impl = _backend.get(backend)
    target = os.fspath(path)
    with atomic_file(target, mode=mode, owner=owner, tmp=tmp) as fh:
        writer = Writer(impl.maker(fh), target)
        yield writer
        writer.finish()


def write(
    path: str | os.PathLike[str],
    records: Iterable[tuple[bytes, bytes]],
    mode: int = 0o644,
    owner: tuple[int, int] | None = None,
    *,
    tmp: str | os.PathLike[str] | None = None,
    backend: str | None = None,
) -> int:
    """Atomically write ``records`` as a cdb at ``path``; returns the record count."""
    with make(path, mode, owner, tmp=tmp, backend=backend) as writer:
        for key, value in records:
            writer.add(key, value)
    return writer.count


class Reader:
    """A cdb opened for reading (mmap'd); usable as a context manager."""

    def __init__(self, path: str | os.PathLike[str], *, backend: str | None = None) -> None:
        self.path = os.fspath(path)
        self._lookup = None
        self._mm: mmap.mmap | bytes = b""
        try:
            # A regular file only, opened without blocking: a FIFO or a device
            # where a cdb belongs must not hang a lookup or fill memory.
            self._fd = open_regular(self.path)
        except FileNotFoundError as err:
            raise os_error(err, "cannot open cdb") from err
        try:
            size = os.fstat(self._fd).st_size
            self._mm = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ) if size else b""
            self._tables, self._records_end = self._check(pure.read_header, self._mm)
            self._lookup = self._check(_backend.get(backend).lookup, self._fd, self._mm)
        except OSError as err:
            self.close()
            raise QmailkitError(f"cannot read cdb: {err.strerror or err}", path=self.path) from err
        except BaseException:
            self.close()
            raise

    def _check(self, func: Any, *args: Any) -> Any:
        try:
            return func(*args)
        except pure.FormatError as err:
            raise InputError(
                f"not a valid cdb: {err}", path=self.path, hint="rebuild it from its source"
            ) from None

    def close(self) -> None:
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._mm = b""
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get_all(self, key: bytes) -> list[bytes]:
        """Every value stored under ``key``, in the order they were added."""
        if self._lookup is None:
            raise ValueError("cdb is closed")
        return self._check(self._lookup.get_all, key)

    def get(self, key: bytes, default: bytes | None = None) -> bytes | None:
        """The first value stored under ``key``, or ``default``."""
        values = self.get_all(key)
        return values[0] if values else default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, bytes) and bool(self.get_all(key))

    def __len__(self) -> int:
        """The number of records (each table has two slots per record)."""
        return sum(nslots for _, nslots in self._tables) // 2

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) record in file order, duplicate keys included."""
        mm = self._mm
        try:
            yield from pure.iter_records(mm, self._records_end)
        except pure.FormatError as err:
            raise InputError(
                f"not a valid cdb: {err}", path=self.path, hint="rebuild it from its source"
            ) from None

    def keys(self) -> Iterator[bytes]:
        """Every key in file order (a duplicated key appears once per record)."""
        return (key for key, _ in self.items())

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()


class Stats(NamedTuple):
    records: int
    unique_keys: int
    size: int
    key_bytes: int
    value_bytes: int
    min_key: int
    max_key: int
    slots: int
    # distances[d] = records stored d slots after their hash's home slot
    # (d = 0..9; the last entry counts all of 10 and more, like cdb -s's ">9")
    distances: tuple[int, ...]


def stats(path: str | os.PathLike[str]) -> Stats:
    """Counts, sizes and probe distances of a cdb (reads it whole; for the stats command)."""
    with Reader(path) as reader:
        records = unique = kbytes = vbytes = 0
        kmin = kmax = 0
        seen: set[bytes] = set()
        for key, value in reader.items():
            if records == 0:
                kmin = kmax = len(key)
            records += 1
            kbytes += len(key)
            vbytes += len(value)
            kmin = min(kmin, len(key))
            kmax = max(kmax, len(key))
            if key not in seen:
                seen.add(key)
                unique += 1
        distances = [0] * 11
        mm = reader._mm
        for tpos, nslots in reader._tables:
            for slot in range(nslots):
                h, rpos = pure._PAIR.unpack_from(mm, tpos + 8 * slot)
                if not rpos:
                    continue
                home = (h >> 8) % nslots
                distance = (slot - home) % nslots
                distances[min(distance, 10)] += 1
        return Stats(
            records,
            unique,
            len(mm),
            kbytes,
            vbytes,
            kmin,
            kmax,
            sum(n for _, n in reader._tables),
            tuple(distances),
        )
