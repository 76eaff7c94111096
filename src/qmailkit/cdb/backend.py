"""The small interface behind which the cdb implementations sit.

A backend has ``Maker(fh)`` (``add(key, value)``, ``finish()``: writes a whole
cdb to a binary file positioned at 0) and ``Lookup(fd, data)``
(``get_all(key) -> list[bytes]``, ``close()``; raises ``pure.FormatError`` on
a corrupt file).  A maker may also have ``add_many(keys, values)`` and
``feed_cdbmake(buffer, start)`` (see _native.c), the bulk fast paths.

Best first: ``native``, our own writer in C (built at install when a compiler
is there), with cdbx's lookups; ``cdbx`` (C, from PyPI); ``pure``, plain
Python.  All write the same bytes.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any, BinaryIO, NamedTuple

from qmailkit.cdb import pure


class Backend(NamedTuple):
    name: str
    maker: Any  # callable(fh) -> maker
    lookup: Any  # callable(fd, data) -> lookup


PURE = Backend("pure", pure.PureMaker, lambda fd, data: pure.PureLookup(data))


def _cdbx() -> Backend | None:
    try:
        from qmailkit.cdb import cdbxbackend
    except ImportError:
        return None
    return Backend("cdbx", cdbxbackend.CdbxMaker, lambda fd, data: cdbxbackend.CdbxLookup(fd))


def _native_maker(fh: BinaryIO) -> Any:
    from qmailkit.cdb import _native

    fh.flush()  # the maker writes to the descriptor itself
    return _native.Maker(fh.fileno())


def _native() -> Backend | None:
    if importlib.util.find_spec("qmailkit.cdb._native") is None:
        return None
    return Backend("native", _native_maker, (_cdbx() or PURE).lookup)


_FINDERS = {"native": _native, "cdbx": _cdbx, "pure": lambda: PURE}


def get(name: str | None = None) -> Backend:
    """The backend called ``name``, or the best available (QMAILKIT_CDB_BACKEND overrides)."""
    name = name or os.environ.get("QMAILKIT_CDB_BACKEND") or None
    if name is None:
        return next(found for find in _FINDERS.values() if (found := find()) is not None)
    if name not in _FINDERS:
        raise ValueError(f"unknown cdb backend {name!r}")
    found = _FINDERS[name]()
    if found is None:
        raise ValueError(f"the {name} cdb backend is not installed")
    return found
