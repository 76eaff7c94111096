"""System account files: /etc/passwd and /etc/shadow (passwd(5), shadow(5)).

Read from files given by path (never through getpwnam), so that tests, chroots
and copies of another server's files work the same as the live system.

* passwd: ``name:password:uid:gid:gecos:home:shell``
* shadow: ``name:hash:lastchange:min:max:warn:inactive:expire:reserved``
  (the dates are days since 1970-01-01; empty means "not set").

A locked or disabled password is one whose hash is empty or starts with
``!`` or ``*`` (``!`` is what ``passwd -l`` prepends; ``*`` and ``!!`` mean
"no password was ever set").

Text is UTF-8 with surrogate escapes, so odd bytes in a gecos field do not stop
a run and survive a round trip.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from qmailkit.errors import InputError, os_error
from qmailkit.fsutil import read_bounded

ENCODING = "utf-8"
ERRORS = "surrogateescape"
SECONDS_PER_DAY = 86400

# The uid window for mail users when none is given: the traditional first
# non-system uid, up to just below nobody/nogroup's 65534.
DEFAULT_MIN_UID = 500
DEFAULT_MAX_UID = 65000


@dataclass(frozen=True, slots=True)
class PasswdEntry:
    name: str
    uid: int
    gid: int
    gecos: str
    home: str
    shell: str
    line: int


@dataclass(frozen=True, slots=True)
class ShadowEntry:
    name: str
    hash: str
    last_change: int | None  # days since the epoch
    max_days: int | None
    expire: int | None  # account expiry, days since the epoch
    line: int

    @property
    def locked(self) -> bool:
        """True when the hash can never match: empty, or starting with ``!`` or ``*``."""
        return is_locked(self.hash)

    @property
    def expires_at(self) -> int | None:
        """The account's expiry as a Unix time (start of that day, UTC), or None."""
        return None if self.expire is None else self.expire * SECONDS_PER_DAY


def is_locked(hash_: str) -> bool:
    return hash_ == "" or hash_[0] in "!*"


def _read_lines(path: str | os.PathLike[str], what: str) -> list[tuple[int, str]]:
    try:
        data = read_bounded(path)  # a regular file only: a FIFO or /dev/zero cannot stall a run
    except FileNotFoundError as err:
        raise os_error(err, f"cannot read {what} file") from err
    text = data.decode(ENCODING, ERRORS)
    out = []
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.rstrip("\r")
        # Blank lines and NIS "+"/"-" compat entries name no local account.
        if not raw or raw[0] in "+-#":
            continue
        out.append((number, raw))
    return out


def _optional_number(text: str, what: str, path: str | os.PathLike[str], line: int) -> int | None:
    """A number, or None for an empty field (shadow's optional dates and ages)."""
    return None if text == "" else _number(text, what, path, line)


def _number(text: str, what: str, path: str | os.PathLike[str], line: int) -> int:
    if not (text.isascii() and text.isdigit()):
        raise InputError(f"{what} {text!r} is not a number", path=path, line=line)
    return int(text)


def read_passwd(path: str | os.PathLike[str] = "/etc/passwd") -> list[PasswdEntry]:
    """Every account of a passwd file, in file order; InputError names a malformed line."""
    entries = []
    for number, raw in _read_lines(path, "passwd"):
        fields = raw.split(":")
        if len(fields) != 7:
            raise InputError(
                f"{len(fields)} fields, expected 7",
                path=path,
                line=number,
                hint="passwd lines are name:password:uid:gid:gecos:home:shell",
            )
        name, _pw, uid, gid, gecos, home, shell = fields
        if not name:
            raise InputError("empty user name", path=path, line=number)
        entries.append(
            PasswdEntry(
                name,
                _number(uid, "uid", path, number),
                _number(gid, "gid", path, number),
                gecos,
                home,
                shell,
                number,
            )
        )
    return entries


def read_shadow(path: str | os.PathLike[str] = "/etc/shadow") -> list[ShadowEntry]:
    """Every entry of a shadow file, in file order; InputError names a malformed line."""
    entries = []
    for number, raw in _read_lines(path, "shadow"):
        fields = raw.split(":")
        if len(fields) < 2 or len(fields) > 9:
            raise InputError(
                f"{len(fields)} fields, expected 9",
                path=path,
                line=number,
                hint="shadow lines are name:hash:lastchange:min:max:warn:inactive:expire:",
            )
        fields += [""] * (9 - len(fields))
        name, hash_, last, _min, max_days, _warn, _inactive, expire, _reserved = fields
        if not name:
            raise InputError("empty user name", path=path, line=number)
        entries.append(
            ShadowEntry(
                name,
                hash_,
                _optional_number(last, "last change", path, number),
                _optional_number(max_days, "maximum age", path, number),
                _optional_number(expire, "expiry date", path, number),
                number,
            )
        )
    return entries


def uids_in_window(
    passwd: list[PasswdEntry], min_uid: int = DEFAULT_MIN_UID, max_uid: int = DEFAULT_MAX_UID
) -> dict[str, PasswdEntry]:
    """The accounts whose uid lies in [min_uid, max_uid], by name; uid 0 never counts.

    When a name appears twice the first entry wins, as with getpwnam.
    """
    first: dict[str, PasswdEntry] = {}
    for entry in passwd:
        first.setdefault(entry.name, entry)
    return {
        name: entry
        for name, entry in first.items()
        if entry.uid != 0 and min_uid <= entry.uid <= max_uid
    }
