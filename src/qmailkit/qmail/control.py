"""qmail control files, read exactly as qmail's control.c reads them.

qmail strips trailing spaces, tabs and newlines from every line, then drops
lines that are empty or start with ``#``.  Leading blanks are kept (a line
``" example.com"`` is a different name from ``"example.com"``), and a ``#``
later in a line is part of the value.  A missing file is the same as an empty
one for list files; ``me`` and similar one-line files use their first line.
"""

from __future__ import annotations

import os
from pathlib import Path

from qmailkit import cdb
from qmailkit.errors import InputError
from qmailkit.fsutil import read_bounded


def read_control(path: str | os.PathLike[str], *, missing_ok: bool = True) -> list[str]:
    """The values of a control file, one per non-empty, non-comment line.

    Lines keep their leading blanks, as in qmail.  A missing file gives []
    (qmail treats it as empty) unless ``missing_ok`` is False.  Bad UTF-8 is an
    InputError naming the line.
    """
    return [value for _line, value in read_control_numbered(path, missing_ok=missing_ok)]


def read_control_numbered(
    path: str | os.PathLike[str], *, missing_ok: bool = True
) -> list[tuple[int, str]]:
    """Like read_control, but each value comes with its 1-based line number."""
    try:
        data = read_bounded(path)
    except FileNotFoundError:
        if missing_ok:
            return []
        raise InputError("control file is missing", path=path) from None
    out = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        # qmail strips only space, tab and newline; a CR from a DOS editor is
        # stripped too because it would otherwise become part of a domain name.
        raw = raw.rstrip(b" \t\r")
        if not raw or raw.startswith(b"#"):
            continue
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("not valid UTF-8 text", path=path, line=number) from None
        out.append((number, value))
    return out


def read_control_line(path: str | os.PathLike[str]) -> str | None:
    """The first line of a one-value control file (``me``, ``defaultdomain``), or None."""
    try:
        first = read_bounded(path).split(b"\n", 1)[0]
    except FileNotFoundError:
        return None
    first = first.rstrip(b" \t\r")
    try:
        value = first.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("not valid UTF-8 text", path=path, line=1) from None
    return value or None


def locals_file(qmail_home: str | os.PathLike[str]) -> tuple[Path, list[str]]:
    """The local domains and the file they came from: ``control/locals``, or ``control/me``.

    qmail-send uses ``me`` only when ``locals`` does not exist at all (an empty
    locals file means "no local domains").  Names are lower-cased: qmail
    compares domains without regard to case.
    """
    control = Path(qmail_home) / "control"
    path = control / "locals"
    if path.exists():
        return path, [v.lower() for v in read_control(path)]
    me = control / "me"
    name = read_control_line(me)
    return me, [name.lower()] if name else []


def compile_morercpthosts(
    qmail_home: str | os.PathLike[str], *, force: bool = False, max_shrink: float | None = None
) -> int:
    """qmail-newmrh: control/morercpthosts → control/morercpthosts.cdb (0644, with
    ``cdb.install``).

    Each name is lower-cased (ASCII, as qmail does) with an empty value; order
    and duplicates are kept, as qmail-newmrh keeps them.  Returns the count.
    An empty result, or one much smaller than the old cdb, is refused unless
    ``force``: qmail-smtpd would refuse mail for the domains dropped.
    """
    control = os.path.join(os.fspath(qmail_home), "control")
    names = read_control(os.path.join(control, "morercpthosts"), missing_ok=False)
    keys = [name.encode("utf-8").lower() for name in names]
    guard = cdb.Guard(
        "domains",
        "refuses mail for every domain listed only there",
        max_shrink=cdb.DEFAULT_MAX_SHRINK if max_shrink is None else max_shrink,
        force=force,
    )
    cdb.install(
        os.path.join(control, "morercpthosts.cdb"),
        lambda writer: writer.add_many(keys, [b""] * len(keys)),
        guard=guard,
        mode=0o644,
        what="another newmrh run",
    )
    return len(keys)
