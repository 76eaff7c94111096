"""The rcpt tests' helpers: the one tree builder (``qmailkit.demo.mailtree``) and tinycdb's view."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from qmailkit.demo.mailtree import VDELIVER_BOUNCE, VDELIVER_CATCHALL, MailTree

__all__ = [
    "VDELIVER_BOUNCE",
    "VDELIVER_CATCHALL",
    "Tree",
    "cdb_dump_keys",
    "cdb_query",
    "mtime_ns",
]

Tree = MailTree


def cdb_query(path: Path, key: str) -> bytes | None:
    """Ask tinycdb's ``cdb -q`` for a key; None when absent."""
    done = subprocess.run(["cdb", "-q", "--", str(path), key], capture_output=True, check=False)
    if done.returncode == 100:
        return None
    assert done.returncode == 0, done.stderr
    return done.stdout


def cdb_dump_keys(path: Path) -> dict[str, bytes]:
    """Every record of a cdb as tinycdb's ``cdb -d`` prints it."""
    out = subprocess.run(["cdb", "-d", str(path)], capture_output=True, check=True).stdout
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(out) and out[pos : pos + 1] == b"+":
        comma = out.index(b",", pos)
        colon = out.index(b":", comma)
        klen = int(out[pos + 1 : comma])
        vlen = int(out[comma + 1 : colon])
        key = out[colon + 1 : colon + 1 + klen]
        value = out[colon + 3 + klen : colon + 3 + klen + vlen]
        records[key.decode()] = value
        pos = colon + 3 + klen + vlen + 1
    return records


def mtime_ns(path: Path) -> int:
    return os.stat(path).st_mtime_ns
