"""The typed plug-in point behind which every cdb implementation sits.

A backend writes djb's format (``Maker``, and the bulk paths ``BulkMaker``,
``CdbmakeParser``) and searches it (``Lookup``).  Each is one module of this
package exposing a ``Backend``; ``backends.get`` picks one.  What a backend
can do is said by the ``Makers`` it returns, never found out by probing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Protocol

from qmailkit.cdb.format import Data


class Maker(Protocol):
    """Writes one whole cdb to the file it was opened on (empty, positioned at 0)."""

    def add(self, key: bytes, value: bytes, /) -> None:
        """Append one record."""

    def finish(self) -> None:
        """Write the hash tables and the header: the file is complete."""


class BulkMaker(Protocol):
    """Many records in one call: the fast path of a build."""

    def add_many(self, keys: Sequence[bytes], values: Sequence[bytes], /) -> object:
        """Append records from two equally long sequences (the result is not used)."""

    def add_lines(self, keys: bytes, values: bytes | None, /) -> object:
        """Append records whose keys (and values) are the lines of newline-separated bytes
        with no final newline; ``values`` None: every value is empty."""


class CdbmakeParser(Protocol):
    """Parses cdbmake input itself (the C writer)."""

    def feed_cdbmake(self, buffer: bytes, start: int, /) -> tuple[int, int, int, bool]:
        """Add the whole, well-formed records of ``buffer[start:]``.

        Returns ``(stop, records, nbytes, done)``; see ``Writer.feed_cdbmake``.
        """


class Lookup(Protocol):
    """Key lookups in an open cdb; raises ``format.FormatError`` on a corrupt file."""

    def get_all(self, key: bytes, /) -> list[bytes]:
        """Every value stored under ``key``, in the order they were added."""

    def close(self) -> None:
        """Let go of the file (its descriptor stays the reader's)."""


@dataclass(frozen=True)
class Makers:
    """What one cdb being written offers: each kind of add, and who takes it."""

    records: Maker
    bulk: BulkMaker  # the backend's own bulk adds, or OneByOne(records)
    cdbmake: CdbmakeParser | None = None  # None: text.py parses cdbmake input


@dataclass(frozen=True)
class Backend:
    """One implementation of the format."""

    name: str
    open_maker: Callable[[BinaryIO], Makers]
    open_lookup: Callable[[int, Data], Lookup]  # (descriptor, its bytes) -> lookups


class OneByOne:
    """The bulk adds of a backend that has none of its own: every record through ``add``."""

    def __init__(self, maker: Maker) -> None:
        self._add = maker.add

    def add_many(self, keys: Sequence[bytes], values: Sequence[bytes], /) -> None:
        deque(map(self._add, keys, values), maxlen=0)

    def add_lines(self, keys: bytes, values: bytes | None, /) -> None:
        split = keys.split(b"\n")
        added = values.split(b"\n") if values is not None else [b""] * len(split)
        deque(map(self._add, split, added), maxlen=0)
