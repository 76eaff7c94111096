"""The auth.cdb file: written through ``cdb.install`` (locked, atomic, guarded), read back.

The file holds password hashes: it is written 0640 by default, never with
permissions for "other", and never into a world-writable directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

from qmailkit import cdb
from qmailkit.auth.records import ENCODING, ERRORS, Entry, parse_value
from qmailkit.auth.sources import DEFAULT_QMAIL_HOME, Collected
from qmailkit.cdb import DEFAULT_MAX_SHRINK
from qmailkit.errors import InputError, os_error

DEFAULT_CDB = DEFAULT_QMAIL_HOME / "control" / "auth.cdb"
DEFAULT_MODE = 0o640


def check_target(path: Path, mode: int) -> None:
    """Refuse permissions that would expose the hashes, and world-writable directories."""
    if mode & 0o007:
        raise InputError(
            f"mode {mode:04o} gives other users access to password hashes",
            path=path,
            hint="use 0640 or 0600",
        )
    directory = path.parent
    try:
        st = os.stat(directory)
    except OSError as err:
        raise os_error(err, "cannot use the directory") from err
    if st.st_mode & stat.S_IWOTH:
        raise InputError(
            "directory is world-writable: anyone could replace the file",
            path=directory,
            hint="write auth.cdb into a directory only root can write, e.g. /var/qmail/control",
        )


def write_cdb(
    path: str | os.PathLike[str],
    records: Sequence[tuple[bytes, bytes]] | Collected,
    *,
    mode: int = DEFAULT_MODE,
    owner: tuple[int, int] | None = None,
    only_if_changed: bool = False,
    max_shrink: float = DEFAULT_MAX_SHRINK,
    force: bool = False,
    lock_wait: bool | float = False,
) -> cdb.Installed:
    """Write auth.cdb with ``cdb.install``: locked, atomic, with the empty/shrink guards.

    ``records`` are (key, value) pairs in any order, or what ``collect`` found;
    they are written sorted.  ``only_if_changed``: leave the file (and its
    mtime) alone when it already holds exactly these records with the wanted
    mode and owner.  A new set that is empty, or smaller than the old file's by
    more than ``max_shrink`` (a fraction), is refused unless ``force``.
    """
    path = Path(path)
    check_target(path, mode)
    nbytes: int | None
    if isinstance(records, Collected):
        keys, values, nbytes = records.keys, records.values, records.nbytes  # sorted, unique
    else:
        pairs = sorted(records)
        keys, values, nbytes = [key for key, _ in pairs], [value for _, value in pairs], None
    return cdb.install(
        path,
        lambda writer: writer.add_many(keys, values, nbytes),
        guard=cdb.Guard("logins", "fails every AUTH", max_shrink=max_shrink, force=force),
        only_if_changed=only_if_changed,
        mode=mode,
        owner=owner,
        lock_wait=lock_wait,
        what="another mkauth run",
    )


def find(path: str | os.PathLike[str], login: str) -> Entry | None:
    """The auth.cdb record for ``login`` (an exact, case-sensitive key, as qmail-smtpd looks)."""
    with cdb.Reader(path) as reader:
        value = reader.get(login.encode(ENCODING, ERRORS))
    return None if value is None else parse_value(login, value, path)
