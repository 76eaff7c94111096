"""The small interface behind which the cdb implementations sit.

A backend has ``Maker(fh)`` (``add(key, value)``, ``finish()``: writes a whole
cdb to a binary file positioned at 0) and ``Lookup(fd, data)``
(``get_all(key) -> list[bytes]``, ``close()``; raises ``pure.FormatError`` on
a corrupt file).  ``cdbx`` (C) is used when it is installed, the pure-Python
one otherwise; both write the same bytes.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

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


def get(name: str | None = None) -> Backend:
    """The backend called ``name``, or the best available (QMAILKIT_CDB_BACKEND overrides)."""
    name = name or os.environ.get("QMAILKIT_CDB_BACKEND") or None
    if name in (None, "cdbx"):
        found = _cdbx()
        if found is not None:
            return found
        if name == "cdbx":
            raise ValueError("the cdbx backend is not installed")
    if name in (None, "pure"):
        return PURE
    raise ValueError(f"unknown cdb backend {name!r}")
