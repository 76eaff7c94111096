"""Writing a cdb: the ``Writer`` every build adds its records to, ``make`` and ``write``.

The writer counts what it was given against the format's 4 GiB limit and
turns the backend's OSErrors into messages naming the file; the backend
(``backends``) writes the bytes.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import BinaryIO

from qmailkit.cdb import backends, format
from qmailkit.errors import QmailkitError, os_error
from qmailkit.fsutil import atomic_file


class Writer:
    """Adds records to a cdb being built (get one from ``make`` or ``cdb.install``)."""

    def __init__(self, fh: BinaryIO, path: str, backend: backends.Backend) -> None:
        makers = backend.open_maker(fh)
        self._maker = makers.records
        self._bulk = makers.bulk
        self._cdbmake = makers.cdbmake
        #: True when the backend parses cdbmake input itself (``feed_cdbmake``)
        self.feeds_cdbmake = makers.cdbmake is not None
        #: the largest file this writer makes (the format's limit)
        self.max_size = format.MAX_SIZE
        self._path = path
        self._size = format.HEADER_SIZE
        self.count = 0

    def _grow(self, nbytes: int, nrecords: int) -> None:
        size = self._size + nbytes + format.RECORD_OVERHEAD * nrecords
        if size > self.max_size:
            raise QmailkitError(
                f"cdb would grow past the format's limit of {self.max_size + 1:,} bytes "
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
            self._bulk.add_many(keys, values)
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
            self._bulk.add_lines(keys, values)
        except OSError as err:
            raise self._write_failed(err) from err

    def feed_cdbmake(self, buffer: bytes, start: int) -> tuple[int, int, bool]:
        """Add the whole, well-formed cdbmake records of ``buffer[start:]`` (in C).

        Returns ``(stop, records, done)``: parsing stopped at ``buffer[stop]``,
        before the first record it could not take whole (cut off by the end of
        the buffer, malformed, or too big), or after the closing blank line
        (``done``).  The caller's exact parser deals with what it stopped at.
        Only when ``feeds_cdbmake``.
        """
        if self._cdbmake is None:
            raise ValueError("this cdb backend does not parse cdbmake input (see feeds_cdbmake)")
        try:
            stop, count, nbytes, done = self._cdbmake.feed_cdbmake(buffer, start)
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
    impl = backends.get(backend)
    target = os.fspath(path)
    with atomic_file(target, mode=mode, owner=owner, tmp=tmp) as fh:
        writer = Writer(fh, target, impl)
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
