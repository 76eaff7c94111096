"""Shared helpers for the cdb and tcprules tests: generated records, C tools."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from support import need


def cdbmake_input(records: list[tuple[bytes, bytes]]) -> bytes:
    """Records in cdbmake's input format, with the closing blank line."""
    out = [b"+%d,%d:%s->%s\n" % (len(k), len(v), k, v) for k, v in records]
    out.append(b"\n")
    return b"".join(out)


def generated_records(seed: int, count: int) -> list[tuple[bytes, bytes]]:
    """Binary keys/values with duplicates, empty keys and empty values."""
    rng = random.Random(seed)
    records: list[tuple[bytes, bytes]] = []
    for _ in range(count):
        roll = rng.random()
        if roll < 0.1 and records:
            key = rng.choice(records)[0]  # a duplicate key
        elif roll < 0.13:
            key = b""
        else:
            key = rng.randbytes(rng.randrange(0, 40))
        value = b"" if rng.random() < 0.2 else rng.randbytes(rng.randrange(0, 60))
        records.append((key, value))
    records.append((b"line\nbreak->:+", b"\n->\n"))
    return records


def tinycdb_make(path: Path, records: list[tuple[bytes, bytes]]) -> bytes:
    (cdb,) = need("cdb")
    subprocess.run([cdb, "-c", str(path)], input=cdbmake_input(records), check=True)
    return path.read_bytes()


def freecdb_make(path: Path, records: list[tuple[bytes, bytes]]) -> bytes:
    (cdbmake,) = need("cdbmake")
    tmp = path.with_name(path.name + ".tmp")
    subprocess.run([cdbmake, str(path), str(tmp)], input=cdbmake_input(records), check=True)
    return path.read_bytes()
