"""The cdbx backend: djb's format written and searched by a C extension."""

from __future__ import annotations

from typing import BinaryIO

import cdbx

from qmailkit.cdb.pure import FormatError


class CdbxMaker:
    def __init__(self, fh: BinaryIO) -> None:
        fh.flush()  # cdbx writes to the descriptor itself
        self._maker = cdbx.CDB.make(fh.fileno())
        self.add = self._maker.add

    def finish(self) -> None:
        self._maker.commit().close()


class CdbxLookup:
    def __init__(self, fd: int) -> None:
        try:
            self._db = cdbx.CDB(fd, mmap=True)
        except OSError as err:
            raise FormatError(str(err)) from None

    def get_all(self, key: bytes) -> list[bytes]:
        try:
            return self._db.get(key, [], all=True)
        except OSError as err:  # cdbx reports out-of-bounds offsets as "Format Error"
            raise FormatError(f"corrupt: {err}") from None

    def close(self) -> None:
        self._db.close()
