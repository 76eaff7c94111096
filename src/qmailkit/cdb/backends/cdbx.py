"""The ``cdbx`` backend: djb's format written and searched by cdbx's C extension (PyPI).

Importing this module fails when cdbx is not installed; ``backends`` then
goes without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO

import cdbx  # type: ignore[import-untyped]  # cdbx ships no type information

from qmailkit.cdb.backends.base import Backend, Makers, OneByOne
from qmailkit.cdb.format import Data, FormatError


class CdbxMaker:
    def __init__(self, fh: BinaryIO) -> None:
        fh.flush()  # cdbx writes to the descriptor itself
        self._maker = cdbx.CDB.make(fh.fileno())
        # cdbx's own method, not a wrapper around it: one Python call less per record
        self.add: Callable[[bytes, bytes], None] = self._maker.add

    def finish(self) -> None:
        self._maker.commit().close()


class CdbxLookup:
    def __init__(self, fd: int) -> None:
        try:
            self._db = cdbx.CDB(fd, mmap=True)
        except OSError as err:
            raise FormatError(str(err)) from None

    def get_all(self, key: bytes, /) -> list[bytes]:
        try:
            values: list[bytes] = self._db.get(key, [], all=True)
        except OSError as err:  # cdbx reports out-of-bounds offsets as "Format Error"
            raise FormatError(f"corrupt: {err}") from None
        return values

    def close(self) -> None:
        self._db.close()


def open_maker(fh: BinaryIO) -> Makers:
    maker = CdbxMaker(fh)
    return Makers(maker, OneByOne(maker))


def open_lookup(fd: int, _data: Data) -> CdbxLookup:
    return CdbxLookup(fd)


BACKEND = Backend("cdbx", open_maker, open_lookup)
