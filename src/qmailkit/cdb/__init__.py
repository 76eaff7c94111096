"""djb's constant database (cdb): read and write, byte-identical to cdbmake.

* ``Reader(path)``: mmap'd; ``get``, ``get_all``, ``in``, ``len`` (records),
  ``items()`` (file order, duplicates included), ``keys()``.  A truncated or
  corrupt file raises InputError naming it.
* ``make(path, mode, owner)``: a context manager yielding a ``Writer``; the
  file replaces ``path`` atomically on normal exit, and an exception leaves
  ``path`` untouched with no temp file behind.
* ``write(path, records, mode, owner)``: the same from (key, value) pairs.
* ``install(path, fill, guard=..., only_if_changed=...)``: the locked, guarded
  replacement of a database qmail reads; ``lock(path)`` is its lock.

The modules: ``format`` (the layout, the hash, bounds-checked reading),
``reader``, ``writer``, ``install``, ``text`` (cdbmake input, dumps) and
``backends`` (our C writer, cdbx, plain Python: the best installed does the work).
"""

from __future__ import annotations

from qmailkit.cdb.format import MAX_SIZE
from qmailkit.cdb.install import (
    DEFAULT_MAX_SHRINK,
    Guard,
    Installed,
    check_shrink,
    install,
    lock,
)
from qmailkit.cdb.reader import Reader, Stats, stats
from qmailkit.cdb.writer import Writer, make, write

__all__ = [
    "DEFAULT_MAX_SHRINK",
    "MAX_SIZE",
    "Guard",
    "Installed",
    "Reader",
    "Stats",
    "Writer",
    "check_shrink",
    "install",
    "lock",
    "make",
    "stats",
    "write",
]
