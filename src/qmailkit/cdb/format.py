"""djb's cdb format: the layout, the hash, and bounds-checked reading of the raw bytes.

All numbers are 32-bit little-endian.  A 2048-byte header holds 256
``(table position, slot count)`` pairs; the records ``klen dlen key data``
follow from offset 2048 on; then come the 256 hash tables, each slot a
``(hash, record position)`` pair.  A key's hash picks its table (``h & 255``)
and its first slot (``(h >> 8) % slots``); probing is linear.  Every table has
twice as many slots as it has records, so a probe always meets an empty slot.

The backends write and search this layout; the reader and ``stats`` read it
through the functions here.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator

HEADER_SIZE = 2048
#: every offset in the format is 32 bits, so a cdb cannot exceed 4 GiB
MAX_SIZE = 0xFFFFFFFF
#: bytes one record costs besides its key and value: its 8-byte header and two hash slots
RECORD_OVERHEAD = 8 + 16
#: one record header (klen, dlen) or one hash slot (hash, position)
PAIR = struct.Struct("<II")
HEADER = struct.Struct("<512I")

# The bytes of a whole cdb: a file mapped into memory, or read into bytes.
Data = bytes | mmap.mmap
# The 256 (table position, slot count) pairs of the header.
Tables = list[tuple[int, int]]


class FormatError(Exception):
    """The bytes are not a valid cdb (the caller names the file)."""


def djb_hash(key: bytes) -> int:
    """The cdb hash: h = 5381; h = ((h << 5) + h) ^ byte, kept to 32 bits."""
    h = 5381
    for byte in key:
        h = (((h << 5) + h) & 0xFFFFFFFF) ^ byte
    return h


def read_header(data: Data) -> tuple[Tables, int]:
    """The 256 (position, slots) pairs and where the records end; checks bounds."""
    size = len(data)
    if size < HEADER_SIZE:
        raise FormatError(f"truncated: {size} bytes, shorter than the {HEADER_SIZE}-byte header")
    flat = HEADER.unpack_from(data, 0)
    tables = list(zip(flat[0::2], flat[1::2], strict=True))
    records_end = min(pos for pos, _ in tables)
    for number, (pos, nslots) in enumerate(tables):
        if pos < HEADER_SIZE or pos + 8 * nslots > size:
            raise FormatError(
                f"corrupt or truncated: hash table {number} ({nslots} slots at {pos}) "
                f"lies outside the file ({size} bytes)"
            )
    return tables, records_end


def iter_records(data: Data, records_end: int) -> Iterator[tuple[bytes, bytes]]:
    """Every record in file order; raises FormatError if one runs past the records."""
    pos = HEADER_SIZE
    unpack = PAIR.unpack_from
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


def probe_distances(data: Data, tables: Tables) -> tuple[int, ...]:
    """How far each record lies from its hash's home slot: counts for 0..9 and 10 or more.

    The shape of ``cdb -s``'s "distances" (its last entry is ">9").
    """
    distances = [0] * 11
    for tpos, nslots in tables:
        for slot in range(nslots):
            h, rpos = PAIR.unpack_from(data, tpos + 8 * slot)
            if not rpos:
                continue
            home = (h >> 8) % nslots
            distances[min((slot - home) % nslots, 10)] += 1
    return tuple(distances)
