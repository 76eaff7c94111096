"""The settings file: ``VAR="value"`` pairs added to the auth.cdb records of logins or domains."""

from __future__ import annotations

import calendar
import datetime as _dt
import os
import re
import shlex
from dataclasses import dataclass

from qmailkit.auth.records import BAD_VALUE
from qmailkit.errors import InputError
from qmailkit.fsutil import read_text_lines

_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class Setting:
    who: str  # a login, or "@domain"
    name: str
    value: str
    line: int


def parse_settings(text: str, path: str | os.PathLike[str] = "settings") -> list[Setting]:
    """Parse a settings file: ``WHO VAR=value [VAR=value ...]`` per line.

    WHO is a login (``joe``, ``joe@example.com``) or ``@example.com`` for every
    mailbox of a domain.  Values may be quoted shell-style (``VAR="a b"``);
    they may not contain ``"``, ``,`` or control characters, which the auth.cdb
    format cannot carry.  ``#`` starts a comment.  ``PASSWORD_EXPIRES`` takes a
    Unix time, a date ``YYYY-MM-DD`` (midnight UTC) or an ISO time
    ``YYYY-MM-DDTHH:MM[:SS][+HH:MM]`` (UTC when no offset is given); it is
    stored as a Unix time.
    """
    found: list[Setting] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise InputError(f"cannot split the line: {err}", path=path, line=number) from None
        if words:
            found.extend(_line_settings(words, path, number))
    return found


def _line_settings(words: list[str], path: str | os.PathLike[str], number: int) -> list[Setting]:
    """The settings of one line, split into words."""
    who, assignments = words[0].lower(), words[1:]
    if "=" in who:
        raise InputError(
            f"the line starts with {words[0]!r}, not a login or @domain",
            path=path,
            line=number,
            hint="the form is WHO VAR=value ...",
        )
    if who == "@" or who.count("@") > 1:
        raise InputError(f"{words[0]!r} is neither a login nor @domain", path=path, line=number)
    if not assignments:
        raise InputError(f"no VAR=value after {words[0]!r}", path=path, line=number)
    found = []
    for word in assignments:
        name, eq, value = word.partition("=")
        if not eq or not _VAR.match(name):
            raise InputError(
                f"{word!r} is not VAR=value",
                path=path,
                line=number,
                hint="variable names are letters, digits and _",
            )
        if BAD_VALUE.search(value):
            raise InputError(
                f"the value of {name} contains a '\"', ',' or control "
                "character, which auth.cdb cannot hold",
                path=path,
                line=number,
            )
        if name == "PASSWORD_EXPIRES":
            value = str(_unix_time(value, path, number))
        found.append(Setting(who, name, value, number))
    return found


def _unix_time(text: str, path: str | os.PathLike[str], line: int) -> int:
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = _dt.date.fromisoformat(text)
            return calendar.timegm(day.timetuple())
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"PASSWORD_EXPIRES {text!r} is not a Unix time, YYYY-MM-DD or an ISO date and time",
            path=path,
            line=line,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return int(moment.timestamp())


def read_settings(path: str | os.PathLike[str]) -> list[Setting]:
    """The settings of a file (a regular file, bounded; errors name it and the line)."""
    return parse_settings("\n".join(read_text_lines(path)), path)
