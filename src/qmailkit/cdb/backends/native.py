"""The ``native`` backend: our own cdb writer in C (``_native.c``), with cdbx's lookups.

The writer takes records one by one, in bulk, as lines, and parses cdbmake
input itself: the hot loops of ``cdb make`` and mkvalidrcptto.  Importing
this module fails when the extension was not built (no C compiler at install
time); ``backends`` then goes without it.
"""

from __future__ import annotations

from typing import BinaryIO

from qmailkit.cdb.backends import _native
from qmailkit.cdb.backends.base import Makers


def open_maker(fh: BinaryIO) -> Makers:
    fh.flush()  # the maker writes to the descriptor itself
    maker = _native.Maker(fh.fileno())
    return Makers(maker, maker, maker)
