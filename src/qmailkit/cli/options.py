"""The option vocabulary every command shares: one parser per kind of value.

Each function is an argparse ``type``: it returns the parsed value or raises
ArgumentTypeError with a message that says what is wrong and what to give,
so that a bad value is a usage error (exit 100) before anything runs
(``argument --mode: '9x' is not an octal file mode (give octal digits, e.g.
644 or 0640)``).  Cheap to import: only the command line's start-up pays for it.
"""

from __future__ import annotations

import argparse
import math
import os

# uid_t and gid_t are 32 bits; (uid_t)-1 = 2**32-1 means "leave it" to chown and setuid.
MAX_ID = 2**32 - 2

DEFAULT_CONFIG = "/etc/qmailkit/qmailkit.toml"

#: cdb.DEFAULT_MAX_SHRINK, written out: importing the library would slow every start-up
DEFAULT_MAX_SHRINK = 0.20

# What the shared options are added to: a parser or one of its argument groups.
OptionGroup = argparse.ArgumentParser | argparse._ArgumentGroup


def octal_mode(text: str) -> int:
    """A file mode in octal (``644``, ``0640``): permission bits only.

    setuid, setgid and sticky bits are refused: no database or log qmailkit
    writes should ever carry them.
    """
    digits = text.strip()
    if not digits or any(c not in "01234567" for c in digits):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an octal file mode (give octal digits, e.g. 644 or 0640)"
        )
    mode = int(digits, 8)
    if mode > 0o7777:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range for a file mode (at most 0777)")
    if mode & 0o7000:
        raise argparse.ArgumentTypeError(
            f"{text!r} sets the setuid, setgid or sticky bit; give permission bits only "
            "(at most 0777)"
        )
    return mode


def cdb_mode(text: str) -> int:
    """``octal_mode`` for a database qmail reads: no write permission for others either.

    Anyone who can rewrite a world-writable cdb changes routes, rules or logins.
    """
    mode = octal_mode(text)
    if mode & 0o002:
        raise argparse.ArgumentTypeError(
            f"{text!r} lets every user write the database; give a mode without "
            "write permission for others (e.g. 644 or 0640)"
        )
    return mode


def _is_number(text: str) -> bool:
    """ASCII digits, with an optional minus: a number, right or wrong, not a name."""
    digits = text.removeprefix("-")
    return digits.isascii() and digits.isdigit()


def _number(text: str, what: str) -> int:
    number = int(text)
    if number < 0:
        raise argparse.ArgumentTypeError(f"{what} {text} is out of range (at least 0)")
    if number > MAX_ID:
        raise argparse.ArgumentTypeError(f"{what} {text} is out of range (at most {MAX_ID})")
    return number


def user_number(text: str) -> int:
    """A numeric user id, 0 .. 2**32-2 (the bounds of a uid range, not a name)."""
    if not _is_number(text):
        raise argparse.ArgumentTypeError(f"not a user id: {text!r} (give a number, e.g. 500)")
    return _number(text, "uid")


def user_id(text: str) -> int:
    """A user: a name from the passwd database, or a number (0 .. 2**32-2)."""
    import pwd

    if _is_number(text):
        return _number(text, "uid")
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such user: {text!r}") from None


def group_id(text: str) -> int:
    """A group: a name from the group database, or a number (0 .. 2**32-2)."""
    import grp

    if _is_number(text):
        return _number(text, "gid")
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise argparse.ArgumentTypeError(f"no such group: {text!r}") from None


def owner(text: str) -> tuple[int, int]:
    """``USER``, ``USER:GROUP``, ``:GROUP`` or ``USER:`` as chown(1) reads them: (uid, gid).

    -1 leaves that part as it is; ``USER:`` takes the user's login group.
    """
    import pwd

    user, colon, group = text.partition(":")
    if not user and not group:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no user or group (give USER, USER:GROUP or :GROUP)"
        )
    uid = user_id(user) if user else -1
    if group:
        return uid, group_id(group)
    if colon:  # USER: is the user and the login group
        try:
            return uid, pwd.getpwuid(uid).pw_gid
        except KeyError:
            raise argparse.ArgumentTypeError(
                f"uid {uid} has no passwd entry, so no login group: give USER:GROUP"
            ) from None
    return uid, -1


def owner_with_login_group(text: str) -> tuple[int, int]:
    """``USER[:GROUP]`` (uid, gid), where a bare ``USER`` means the user's login group.

    For files whose group matters as much as their owner (convert-multilog's
    day files): ``USER`` means what chown(1) reads as ``USER:``.
    """
    try:
        return owner(text if not text or ":" in text else text + ":")
    except argparse.ArgumentTypeError as err:
        if not str(err).startswith("no such"):  # the others say what to give already
            raise
        raise argparse.ArgumentTypeError(f"{err}; give USER or USER:GROUP") from None


def percent(text: str) -> float:
    """A percentage from 0 to 100, with or without the % sign, as a fraction."""
    try:
        number = float(text.strip().removesuffix("%"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a percentage: {text!r}") from None
    if not 0 <= number <= 100:
        raise argparse.ArgumentTypeError(f"not between 0 and 100: {text!r}")
    return number / 100


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more (``10``, ``2.5``)."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a number of seconds: {text!r} (e.g. 10 or 2.5)"
        ) from None
    if not 0 <= number < math.inf:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"not a duration of 0 seconds or more: {text!r}")
    return number


def processes(text: str) -> int:
    """A number of worker processes, 1 or more."""
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a number of processes: {text!r} (1 or more)")
    return int(text)


def config_path(given: str | None) -> str:
    """The config file: ``--config``, else $QMAILKIT_CONFIG, else DEFAULT_CONFIG."""
    return given or os.environ.get("QMAILKIT_CONFIG") or DEFAULT_CONFIG


def add_config(parser: OptionGroup) -> None:
    """The ``--config FILE`` option (read it with ``config_path(args.config)``)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"config file (default: $QMAILKIT_CONFIG, else {DEFAULT_CONFIG})",
    )


def add_shrink_guard(parser: OptionGroup, noun: str) -> None:
    """``--max-shrink`` and ``--force``: the guard rail of a database qmail reads."""
    parser.add_argument(
        "--max-shrink",
        type=percent,
        default=DEFAULT_MAX_SHRINK,
        metavar="PERCENT",
        help=f"refuse to lose more than this share of the {noun} (default 20)",
    )
    parser.add_argument(
        "--force", action="store_true", help="write even if the result is empty or shrank too much"
    )
