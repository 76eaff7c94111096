"""The auth.cdb record: a login, its crypt(3) hash and the variables set after AUTH.

Record format (original-scripts.md §1.6):

* key: the login exactly as the client sends it in AUTH: ``user@domain`` for a
  vpopmail mailbox, the login name for a system account;
* value: the crypt(3) hash, optionally followed by ``,VAR="value"`` pairs that
  qmail-smtpd puts into its environment after a successful AUTH;
  ``PASSWORD_EXPIRES="unixtime"`` makes AUTH fail once that time has passed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from qmailkit.errors import InputError

ENCODING = "utf-8"
ERRORS = "surrogateescape"  # a Latin-1 gecos or login must not stop a build

# Characters a value may not hold: they would end the quoted value or the pair.
BAD_VALUE = re.compile(r'[",\x00-\x1f\x7f]')
_PAIR = re.compile(rb',([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"')


def unusable_hash(hash_: str) -> str | None:
    """Why a hash cannot go into auth.cdb, or None if it can."""
    if hash_ == "" or hash_[0] in "!*":
        return "locked or empty password hash"
    if BAD_VALUE.search(hash_) or " " in hash_:
        return "password hash contains a character auth.cdb cannot hold"
    return None


def encode_env(env: dict[str, str] | tuple[tuple[str, str], ...]) -> str:
    """The ``,VAR="value"`` pairs that follow the hash."""
    pairs = env.items() if isinstance(env, dict) else env
    return "".join(f',{name}="{value}"' for name, value in pairs)


@dataclass(frozen=True)
class Login:
    """One auth.cdb record: a login, its hash, the variables set after AUTH, and its source."""

    login: str
    hash: str
    env: tuple[tuple[str, str], ...] = ()
    source: str = ""

    def key(self) -> bytes:
        return self.login.encode(ENCODING, ERRORS)

    def value(self) -> bytes:
        return (self.hash + encode_env(self.env)).encode(ENCODING, ERRORS)


@dataclass(frozen=True)
class Entry:
    """A record read back from auth.cdb."""

    login: str
    hash: str
    env: tuple[tuple[str, str], ...]
    raw: bytes

    @property
    def expires(self) -> int | None:
        for name, value in self.env:
            if name == "PASSWORD_EXPIRES" and value.isdigit():
                return int(value)
        return None


def parse_value(login: str, value: bytes, path: str | os.PathLike[str] = "auth.cdb") -> Entry:
    """Split an auth.cdb value into the hash and its ``,VAR="value"`` pairs."""
    hash_, sep, rest = value.partition(b",")
    env: list[tuple[str, str]] = []
    pos = 0
    rest = sep + rest
    while pos < len(rest):
        match = _PAIR.match(rest, pos)
        if match is None:
            raise InputError(
                f'the value for {login!r} is not HASH[,VAR="value"...]: {value!r}', path=path
            )
        env.append((match[1].decode(), match[2].decode(ENCODING, ERRORS)))
        pos = match.end()
    return Entry(login, hash_.decode(ENCODING, ERRORS), tuple(env), value)
