"""Transitional: services/check.py still imports the format functions from here.

They live in ``qmailkit.cdb.format`` now (the pure backend is
``qmailkit.cdb.backends.pure``); delete this module once check.py imports
``format``.
"""

from qmailkit.cdb.format import FormatError, iter_records, read_header

__all__ = ["FormatError", "iter_records", "read_header"]
