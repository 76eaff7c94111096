"""The one exception type the library raises for problems an administrator can fix.

The library never prints or exits; commands catch QmailkitError, print it and
exit with its code.  Codes follow djb's convention: 100 means the input or the
request is wrong (retrying will not help), 111 means a temporary or system
problem (I/O error, lock held, program missing).
"""

from __future__ import annotations

import os

EXIT_PERMANENT = 100
EXIT_TEMPORARY = 111


class QmailkitError(Exception):
    """An error with a message fit for an administrator.

    ``path`` and ``line`` (1-based) say where the problem is; ``hint`` says what
    to do about it.
    """

    exit_code = EXIT_TEMPORARY

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        line: int | None = None,
        hint: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        text = where + self.message
        if self.hint:
            text += f" ({self.hint})"
        return text


class InputError(QmailkitError):
    """Malformed input: a file or a value that must be corrected."""

    exit_code = EXIT_PERMANENT


class LockBusy(QmailkitError):
    """Another run holds the lock."""

    exit_code = EXIT_TEMPORARY


def os_error(err: OSError, what: str = "") -> QmailkitError:
    """Turn an OSError into a QmailkitError naming the file and the reason."""
    reason = err.strerror or str(err)
    msg = f"{what}: {reason}" if what else reason
    return QmailkitError(msg, path=err.filename)
