"""The ``pure`` backend: djb's cdb format in plain Python, the fallback and the test oracle."""

from __future__ import annotations

from array import array
from typing import BinaryIO

from qmailkit.cdb.backends.base import Backend, Makers, OneByOne
from qmailkit.cdb.format import HEADER, HEADER_SIZE, PAIR, Data, FormatError, djb_hash, read_header


class PureMaker:
    """Writes records to ``fh`` as they come, the hash tables at ``finish``."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._pos = HEADER_SIZE
        self._hashes = array("L")
        self._positions = array("L")
        fh.write(b"\0" * HEADER_SIZE)

    def add(self, key: bytes, value: bytes, /) -> None:
        self._fh.write(PAIR.pack(len(key), len(value)))
        self._fh.write(key)
        self._fh.write(value)
        self._hashes.append(djb_hash(key))
        self._positions.append(self._pos)
        self._pos += 8 + len(key) + len(value)

    def finish(self) -> None:
        buckets: list[list[tuple[int, int]]] = [[] for _ in range(256)]
        for h, p in zip(self._hashes, self._positions, strict=True):
            buckets[h & 255].append((h, p))
        header: list[int] = []
        pos = self._pos
        for entries in buckets:
            nslots = 2 * len(entries)
            header += (pos, nslots)
            slots = [(0, 0)] * nslots
            for h, p in entries:
                where = (h >> 8) % nslots
                while slots[where][1]:
                    where = (where + 1) % nslots
                slots[where] = (h, p)
            self._fh.write(b"".join(PAIR.pack(h, p) for h, p in slots))
            pos += 8 * nslots
        self._fh.seek(0)
        self._fh.write(HEADER.pack(*header))
        self._fh.seek(0, 2)


class PureLookup:
    """Key lookups over the bytes of a cdb (bounds-checked, never loops forever)."""

    def __init__(self, data: Data) -> None:
        self._data = data
        self._tables, _ = read_header(data)

    def get_all(self, key: bytes, /) -> list[bytes]:
        data = self._data
        h = djb_hash(key)
        tpos, nslots = self._tables[h & 255]
        found: list[bytes] = []
        if not nslots:
            return found
        where = (h >> 8) % nslots
        size = len(data)
        klen = len(key)
        for _ in range(nslots):
            sh, rpos = PAIR.unpack_from(data, tpos + 8 * where)
            if not rpos:
                break
            if sh == h:
                if rpos + 8 > size:
                    raise FormatError(f"corrupt: hash slot points past the end ({rpos})")
                rk, rd = PAIR.unpack_from(data, rpos)
                if rpos + 8 + rk + rd > size:
                    raise FormatError(f"corrupt: record at {rpos} runs past the end of the file")
                if rk == klen and data[rpos + 8 : rpos + 8 + rk] == key:
                    found.append(bytes(data[rpos + 8 + rk : rpos + 8 + rk + rd]))
            where += 1
            if where == nslots:
                where = 0
        return found

    def close(self) -> None:
        """Nothing to let go of: the reader owns the mapping."""


def open_maker(fh: BinaryIO) -> Makers:
    maker = PureMaker(fh)
    return Makers(maker, OneByOne(maker))


def open_lookup(_fd: int, data: Data) -> PureLookup:
    return PureLookup(data)


BACKEND = Backend("pure", open_maker, open_lookup)
