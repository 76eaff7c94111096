"""djb's cdb format in plain Python: the fallback backend and the test oracle.

Layout (all numbers 32-bit little-endian): a 2048-byte header of 256
``(table position, slot count)`` pairs; the records ``klen dlen key data`` from
offset 2048 on; then the 256 hash tables, each slot a ``(hash, record
position)`` pair.  A key's hash picks its table (``h & 255``) and its first
slot (``(h >> 8) % slots``); probing is linear.  Every table has twice as many
slots as it has records, so a probe always meets an empty slot.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator
from typing import BinaryIO

HEADER_SIZE = 2048
_PAIR = struct.Struct("<II")
_HEADER = struct.Struct("<512I")


class FormatError(Exception):
    """The bytes are not a valid cdb (the caller names the file)."""


def djb_hash(key: bytes) -> int:
    """The cdb hash: h = 5381; h = ((h << 5) + h) ^ byte, kept to 32 bits."""
    h = 5381
    for byte in key:
        h = (((h << 5) + h) & 0xFFFFFFFF) ^ byte
    return h


class PureMaker:
    """Writes records to ``fh`` as they come, the hash tables at ``finish``."""

    def __init__(self, fh: BinaryIO) -> None:
        self._fh = fh
        self._pos = HEADER_SIZE
        self._hashes = array("L")
        self._positions = array("L")
        fh.write(b"\0" * HEADER_SIZE)

    def add(self, key: bytes, value: bytes) -> None:
        self._fh.write(_PAIR.pack(len(key), len(value)))
        self._fh.write(key)
        self._fh.write(value)
        self._hashes.append(djb_hash(key))
        self._positions.append(self._pos)
        self._pos += 8 + len(key) + len(value)

    def finish(self) -> None:
        buckets: list[list[tuple[int, int]]] = [[] for _ in range(256)]
        for h, p in zip(self._hashes, self._positions, strict=True):
            buckets[h & 255].append((h, p))
        header = []
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
            self._fh.write(b"".join(_PAIR.pack(h, p) for h, p in slots))
            pos += 8 * nslots
        self._fh.seek(0)
        self._fh.write(_HEADER.pack(*header))
        self._fh.seek(0, 2)


def read_header(data: bytes | memoryview) -> tuple[list[tuple[int, int]], int]:
    """The 256 (position, slots) pairs and where the records end; checks bounds."""
    size = len(data)
    if size < HEADER_SIZE:
        raise FormatError(f"truncated: {size} bytes, shorter than the {HEADER_SIZE}-byte header")
    flat = _HEADER.unpack_from(data, 0)
    tables = list(zip(flat[0::2], flat[1::2], strict=True))
    records_end = min(pos for pos, _ in tables)
    for number, (pos, nslots) in enumerate(tables):
        if pos < HEADER_SIZE or pos + 8 * nslots > size:
            raise FormatError(
                f"corrupt or truncated: hash table {number} ({nslots} slots at {pos}) "
                f"lies outside the file ({size} bytes)"
            )
    return tables, records_end


def iter_records(data: bytes | memoryview, records_end: int) -> Iterator[tuple[bytes, bytes]]:
    """Every record in file order; raises FormatError if one runs past the records."""
    pos = HEADER_SIZE
    unpack = _PAIR.unpack_from
    while pos < records_end:
        if pos + 8 > records_end:
            raise FormatError(f"corrupt: record header at {pos} runs into the hash tables")
        klen, dlen = unpack(data, pos)
        start = pos + 8
        end = start + klen + dlen
        if end > records_end:
            raise FormatError(f"corrupt: record at {pos} runs into the hash tables")
        yield bytes(data[start : start + klen]), bytes(data[start + klen : end])
        pos = end


class PureLookup:
    """Key lookups over the bytes of a cdb (bounds-checked, never loops forever)."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._data = data
        self._tables, _ = read_header(data)

    def get_all(self, key: bytes) -> list[bytes]:
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
            sh, rpos = _PAIR.unpack_from(data, tpos + 8 * where)
            if not rpos:
                break
            if sh == h:
                if rpos + 8 > size:
                    raise FormatError(f"corrupt: hash slot points past the end ({rpos})")
                rk, rd = _PAIR.unpack_from(data, rpos)
                if rpos + 8 + rk + rd > size:
                    raise FormatError(f"corrupt: record at {rpos} runs past the end of the file")
                if rk == klen and data[rpos + 8 : rpos + 8 + rk] == key:
                    found.append(bytes(data[rpos + 8 + rk : rpos + 8 + rk + rd]))
            where += 1
            if where == nslots:
                where = 0
        return found

    def close(self) -> None:
        pass
