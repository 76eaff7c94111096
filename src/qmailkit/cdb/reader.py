"""Reading a cdb: ``Reader`` (lookups, records in file order) and ``stats``."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator
from typing import NamedTuple, Self

from qmailkit.cdb import backends, format
from qmailkit.errors import InputError, QmailkitError, os_error
from qmailkit.fsutil import open_regular


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


class Reader:
    """A cdb opened for reading (mmap'd); usable as a context manager.

    A truncated or corrupt file raises InputError naming it, when opened or
    when a lookup meets the damage.
    """

    def __init__(self, path: str | os.PathLike[str], *, backend: str | None = None) -> None:
        self.path = os.fspath(path)
        self._lookup: backends.Lookup | None = None
        self._mm: format.Data = b""
        self._fd = -1
        try:
            # A regular file only, opened without blocking: a FIFO or a device
            # where a cdb belongs must not hang a lookup or fill memory.
            self._fd = open_regular(self.path)
        except FileNotFoundError as err:
            raise os_error(err, "cannot open cdb") from err
        try:
            size = os.fstat(self._fd).st_size
            self._mm = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ) if size else b""
            self._tables, self._records_end = format.read_header(self._mm)
            self._lookup = backends.get(backend).open_lookup(self._fd, self._mm)
        except format.FormatError as err:
            self.close()
            raise self._invalid(err) from None
        except OSError as err:
            self.close()
            raise QmailkitError(f"cannot read cdb: {err.strerror or err}", path=self.path) from err
        except BaseException:
            self.close()
            raise

    def _invalid(self, err: format.FormatError) -> InputError:
        return InputError(
            f"not a valid cdb: {err}", path=self.path, hint="rebuild it from its source"
        )

    def close(self) -> None:
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None
        if isinstance(self._mm, mmap.mmap):
            self._mm.close()
        self._mm = b""
        if self._fd >= 0:
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
        try:
            return self._lookup.get_all(key)
        except format.FormatError as err:
            raise self._invalid(err) from None

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
        try:
            yield from format.iter_records(self._mm, self._records_end)
        except format.FormatError as err:
            raise self._invalid(err) from None

    def keys(self) -> Iterator[bytes]:
        """Every key in file order (a duplicated key appears once per record)."""
        return (key for key, _ in self.items())

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    def stats(self) -> Stats:
        """Counts, sizes and probe distances (reads the whole file)."""
        records = unique = key_bytes = value_bytes = 0
        min_key = max_key = 0
        seen: set[bytes] = set()
        for key, value in self.items():
            if records == 0:
                min_key = max_key = len(key)
            records += 1
            key_bytes += len(key)
            value_bytes += len(value)
            min_key = min(min_key, len(key))
            max_key = max(max_key, len(key))
            if key not in seen:
                seen.add(key)
                unique += 1
        return Stats(
            records,
            unique,
            len(self._mm),
            key_bytes,
            value_bytes,
            min_key,
            max_key,
            sum(nslots for _, nslots in self._tables),
            format.probe_distances(self._mm, self._tables),
        )


def stats(path: str | os.PathLike[str]) -> Stats:
    """Counts, sizes and probe distances of the cdb at ``path`` (for ``cdb stats``)."""
    with Reader(path) as reader:
        return reader.stats()
