"""vpopmail's per-domain user files: ``vpasswd`` and ``vpasswd.cdb``.

A vpasswd line is ``name:hash:uid:gid:gecos:dir:quota[:clear]``.  The uid
and gid fields are not system ids but vpopmail's flag words (numbers).
vpopmail builds ``vpasswd.cdb`` from the same lines: key = name, value =
the rest of the line after the first ``:``.  Names are compared
case-insensitively by vpopmail (it lower-cases user and domain before a
lookup), so callers lower-case them.

Text is decoded as UTF-8 with ``surrogateescape``: a gecos field in Latin-1
must not stop a build, and the original bytes come back on encoding.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from qmailkit.errors import InputError, os_error
from qmailkit.fsutil import read_bounded

ENCODING = "utf-8"
ERRORS = "surrogateescape"
# The biggest vpasswd read: far above any real domain's, still a bound.
VPASSWD_LIMIT = 1 << 30

try:  # the C scanner and reader, built at install when a compiler is there
    from qmailkit.qmail._vpasswd import names as _c_names
    from qmailkit.qmail._vpasswd import read_regular as _c_read
except ImportError:
    _c_names = _c_read = None


@dataclass(frozen=True, slots=True)
class VpasswdEntry:
    name: str
    hash: str
    uid: int
    gid: int
    gecos: str
    dir: str
    quota: str
    clear: str | None
    line: int  # 1-based line in vpasswd; 0 when read from vpasswd.cdb


def _flag(text: str, what: str, path: str | os.PathLike[str], line: int | None) -> int:
    # vpopmail reads these with atoi(); an empty field is 0.  Anything else
    # that is not a number is a damaged file worth stopping for.
    if text == "":
        return 0
    if not text.isdigit():
        raise InputError(
            f"{what} field is not a number: {text!r}",
            path=path,
            line=line,
            hint="vpasswd lines are name:hash:uid:gid:gecos:dir:quota[:clear]",
        )
    return int(text)


def parse_vpasswd_line(text: str, path: str | os.PathLike[str], line: int | None) -> VpasswdEntry:
    """One vpasswd line (without its newline) as an entry; InputError if malformed."""
    fields = text.split(":")
    if len(fields) < 7:
        raise InputError(
            f"malformed vpasswd line: {len(fields)} fields, expected at least 7",
            path=path,
            line=line,
            hint="vpasswd lines are name:hash:uid:gid:gecos:dir:quota[:clear]",
        )
    name = fields[0]
    if not name:
        raise InputError("malformed vpasswd line: empty user name", path=path, line=line)
    clear = ":".join(fields[7:]) if len(fields) > 7 else None
    return VpasswdEntry(
        name=name,
        hash=fields[1],
        uid=_flag(fields[2], "uid", path, line),
        gid=_flag(fields[3], "gid", path, line),
        gecos=fields[4],
        dir=fields[5],
        quota=fields[6],
        clear=clear,
        line=line or 0,
    )


def read_vpasswd_bytes(path: str | os.PathLike[str]) -> bytes:
    """A vpasswd's bytes (a regular file, bounded; FileNotFoundError if missing).

    The hot loop of a big install reads one per domain: the usual file in one C
    call, else ``fsutil.read_bounded`` (which names what is wrong).
    """
    if _c_read is not None:
        data = _c_read(path, VPASSWD_LIMIT)
        if data is not None:
            return data
    return read_bounded(path, VPASSWD_LIMIT)


def read_vpasswd(path: str | os.PathLike[str]) -> list[VpasswdEntry]:
    """Every entry of a vpasswd file, in file order.  Empty lines are skipped."""
    try:
        data = read_vpasswd_bytes(path)
    except FileNotFoundError as err:
        raise os_error(err, "cannot read vpasswd") from err
    text = data.decode(ENCODING, ERRORS)
    entries = []
    for number, raw in enumerate(text.split("\n"), 1):
        raw = raw.rstrip("\r")
        if not raw:
            continue
        entries.append(parse_vpasswd_line(raw, path, number))
    return entries


def read_vpasswd_cdb(path: str | os.PathLike[str]) -> list[VpasswdEntry]:
    """Every entry of a vpasswd.cdb (key = name, value = the rest of the vpasswd line)."""
    from qmailkit import cdb

    entries = []
    with cdb.Reader(path) as reader:
        for key, value in reader.items():
            text = (key + b":" + value).decode(ENCODING, ERRORS)
            entries.append(parse_vpasswd_line(text, path, None))
    return entries


def read_domain_users(domain_dir: str | os.PathLike[str]) -> tuple[Path, list[VpasswdEntry]]:
    """The mailboxes of a vpopmail domain directory and the file they came from.

    ``vpasswd`` is the source of truth (vpopmail rebuilds the cdb from it);
    ``vpasswd.cdb`` is used only when the text file is absent.
    """
    domain_dir = Path(domain_dir)
    text = domain_dir / "vpasswd"
    if text.exists():
        return text, read_vpasswd(text)
    db = domain_dir / "vpasswd.cdb"
    if db.exists():
        return db, read_vpasswd_cdb(db)
    raise InputError(
        "vpopmail domain has neither vpasswd nor vpasswd.cdb",
        path=domain_dir,
        hint="is this a vpopmail domain directory, or a SQL backend (--vpopmail-sql)?",
    )


_NOT_COLON_NL = bytes(set(range(256)) - set(b":\n"))
_LINE_NAME = re.compile(rb"\n([^:\n]*)")  # the first field of each line (after a newline)


def _uniform_colons(body: bytes) -> int | None:
    """The number of colons on every line of ``body`` (no final newline), if it is the same
    on all of them and at least six; else None.

    The file's "shape" (the file without everything but colons and newlines)
    shows it in two bulk operations: the plain file vpopmail writes.
    """
    shape = body.translate(None, _NOT_COLON_NL)
    colons = shape.find(b"\n")
    if colons < 0:
        colons = len(shape)
    if colons >= 6 and shape == (b":" * colons + b"\n") * shape.count(b"\n") + b":" * colons:
        return colons
    return None


def mailbox_names(data: bytes, path: str, suffix: bytes = b"") -> tuple[list[bytes], list[str]]:
    """The names of the mailboxes that can get mail in the vpasswd file ``path`` whose bytes
    are ``data``, each followed by ``suffix`` (``@domain``: the keys at once), and a
    warning for each one left out (see ``deliverable``).

    The hot loop of a big vpopmail install: the C scanner when built, else bulk
    bytes operations; a damaged line raises InputError naming it.
    """
    if _c_names is not None:
        names = _c_names(data, suffix)
        if names is not None:
            return names, []
    names, notes = _python_names(data, path)
    return ([n + suffix for n in names] if suffix else names), notes


def deliverable(
    names: list[bytes], path: str, numbers: Sequence[int] | None = None
) -> tuple[list[bytes], list[str]]:
    """``names`` without those no mail can reach, and a warning for each of those.

    vdelivermail lower-cases the address and looks the name up as it is, so a
    mailbox whose name has capitals never gets mail; no address holds a NUL or
    a newline (only a vpasswd.cdb key can).  ``numbers`` gives the line of each
    name, if it has one.
    """
    joined = b"\n".join(names)
    if joined == joined.lower() and b"\0" not in joined and joined.count(b"\n") < len(names):
        return names, []  # (ASCII only, like vpopmail's lower-casing)
    kept, notes = [], []
    for i, name in enumerate(names):
        if b"\0" in name or b"\n" in name:
            why = "no address holds a newline or NUL"
        elif name != name.lower():
            why = (
                "vdelivermail looks up the lower-cased address, so a name with capitals "
                "never gets mail"
            )
        else:
            kept.append(name)
            continue
        where = f"{path}:{numbers[i]}" if numbers else path
        notes.append(f"{where}: mailbox {name.decode(ENCODING, ERRORS)!r} skipped: {why}")
    return kept, notes


def _python_names(data: bytes, path: str) -> tuple[list[bytes], list[str]]:
    # The usual file: every line has a name and the same number of colons.
    body = data[:-1] if data.endswith(b"\n") else data
    if _uniform_colons(body):
        names = _LINE_NAME.findall(b"\n" + body)
        if b"" not in names:
            return deliverable(names, path, range(1, len(names) + 1))
    lines = data.split(b"\n")
    numbers = list(range(1, len(lines) + 1))
    if lines and not lines[-1]:
        lines.pop()
    if b"" in lines or b"\r" in lines:
        numbers = [n for n, line in zip(numbers, lines) if line.rstrip(b"\r")]
        lines = [line for line in lines if line.rstrip(b"\r")]
    names = [line[: line.find(b":")] for line in lines]
    # vpasswd lines have seven fields and a name; let the careful reader find
    # and name a damaged line.
    if b"" in names or min(map(bytes.count, lines, repeat(b":")), default=6) < 6:
        read_vpasswd(path)  # raises with the line number
    return deliverable(names, path, numbers)


@dataclass(frozen=True, slots=True)
class VpasswdColumns:
    """Three columns of a whole vpasswd file, line i of the file in row i-1."""

    names: list[bytes]  # as written (not lower-cased)
    hashes: list[bytes]
    gids: list[bytes]  # the flag word: ASCII digits, or b"" (0, as atoi reads it)


def vpasswd_columns(data: bytes) -> VpasswdColumns | None:
    """The names, hashes and gid flag words of a vpasswd file's bytes, read in bulk.

    The hot loop of mkauth on a big vpopmail install: a few bytes operations
    per file, no object per line beyond the fields.  Reads only the plain
    file vpopmail writes: every line with the same number (at least six) of
    colons, a name, ASCII digits (or nothing) for uid and gid, no blank line.
    Anything else gives None: the caller then uses ``read_vpasswd``, which
    accepts the odd line or names it in its error, and numbers lines itself.
    """
    if not data:
        return VpasswdColumns([], [], [])
    body = data[:-1] if data.endswith(b"\n") else data
    colons = _uniform_colons(body)
    if colons is None:
        return None
    # Uniform lines: all fields of the file in one list, a fixed stride per line.
    fields = body.replace(b"\n", b":").split(b":")
    stride = colons + 1
    names, hashes = fields[0::stride], fields[1::stride]
    uids, gids = fields[2::stride], fields[3::stride]
    numbers = b"".join(uids) + b"".join(gids)
    if b"" in names or (numbers and not numbers.isdigit()):
        return None
    return VpasswdColumns(names, hashes, gids)
