"""The cdb backends, best first, and the choice among them.

* ``native``: our own writer in C (built at install when a compiler is there),
  with cdbx's lookups (or the pure ones without cdbx);
* ``cdbx``: cdbx's C extension from PyPI, writing and searching;
* ``pure``: plain Python, always there.

All write the same bytes.  The interface they share is in ``base.py``; a new
backend is one module there and one entry below.
"""

from __future__ import annotations

import os

from qmailkit.cdb.backends import pure
from qmailkit.cdb.backends.base import (
    Backend,
    BulkMaker,
    CdbmakeParser,
    Lookup,
    Maker,
    Makers,
    OneByOne,
)

__all__ = [
    "INSTALLED",
    "KNOWN",
    "Backend",
    "BulkMaker",
    "CdbmakeParser",
    "Lookup",
    "Maker",
    "Makers",
    "OneByOne",
    "best",
    "get",
]

#: every backend there is, best first (whether installed here or not)
KNOWN = ("native", "cdbx", "pure")

# Each optional backend is an import that fails where it is not installed.
_installed: list[Backend] = []
try:
    from qmailkit.cdb.backends import cdbx
except ImportError:  # cdbx is not installed: the C writer's files are read in Python
    _native_lookup = pure.BACKEND.open_lookup
else:
    _native_lookup = cdbx.BACKEND.open_lookup
    _installed.append(cdbx.BACKEND)
try:
    from qmailkit.cdb.backends import native
except ImportError:  # the C writer was not built
    pass
else:
    _installed.insert(0, Backend("native", native.open_maker, _native_lookup))
_installed.append(pure.BACKEND)

#: the backends this installation has, by name, best first
INSTALLED: dict[str, Backend] = {found.name: found for found in _installed}


def best() -> Backend:
    """The best backend installed here."""
    return next(iter(INSTALLED.values()))


def get(name: str | None = None) -> Backend:
    """The backend called ``name``, or the best installed (QMAILKIT_CDB_BACKEND overrides)."""
    name = name or os.environ.get("QMAILKIT_CDB_BACKEND") or None
    if name is None:
        return best()
    if name not in KNOWN:
        raise ValueError(f"unknown cdb backend {name!r}")
    if name not in INSTALLED:
        raise ValueError(f"the {name} cdb backend is not installed")
    return INSTALLED[name]
