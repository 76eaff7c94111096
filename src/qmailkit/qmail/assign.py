"""users/assign and users/cdb: qmail's table of virtual users (qmail-users(5)).

users/assign has one line per assignment, ended by a line starting with ``.``::

    =local:user:uid:gid:homedir:dash:ext:     exact: the address "local"
    +prefix:user:uid:gid:homedir:dash:pre:    wildcard: every address starting with "prefix"

qmail-newu compiles it into users/cdb, which qmail-lspawn reads:

* exact entry: key ``!`` + lower-cased local + NUL;
* wildcard entry: key ``!`` + lower-cased prefix (no NUL);
* value: the six fields user, uid, gid, homedir, dash, ext/pre joined by NUL
  (the sixth colon and anything after it are dropped);
* last, the empty key, whose value is the set of distinct last characters of
  the non-empty wildcard prefixes, in order of first appearance.  qmail-lspawn
  only tries wildcard keys ending at one of these characters.

This module parses and validates users/assign (stricter than qmail-newu, which
takes any first character for "exact" and does not check uid/gid), builds the
records byte for byte as qmail-newu does, and reads users/cdb back.

Text is handled as UTF-8 with surrogate escapes so every byte survives a round
trip; case folding is ASCII-only, like qmail's ``case_lowerb``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from qmailkit import cdb
from qmailkit.errors import InputError, os_error
from qmailkit.fsutil import read_bounded

EXACT = "="
WILDCARD = "+"

_ENC = "utf-8"
_ERRORS = "surrogateescape"
FIELDS = ("user", "uid", "gid", "home", "dash", "ext")
# qmail-lspawn (spawn()) reads uid and gid with scan_ulong, which wraps silently, into an
# int handed to setuid/setgid: a 32-bit uid_t, where (uid_t)-1 = 2**32-1 means "no change"
# and makes setuid fail.  So 0 .. 2**32-2 are the numbers it can deliver as.
MAX_ID = 2**32 - 2


@dataclass(frozen=True)
class Assignment:
    """One users/assign line (or one users/cdb record read back).

    ``local`` is the exact local address for ``kind == "="`` and the prefix for
    ``kind == "+"`` (also available as ``prefix``), as written (not lower-cased).
    ``line`` is the 1-based line in users/assign, or None when read from users/cdb.
    """

    kind: str
    local: str
    user: str
    uid: int
    gid: int
    home: str
    dash: str
    ext: str
    line: int | None = None
    # The value exactly as users/assign spelled it (e.g. a uid "0500"), so that
    # users/cdb comes out byte for byte as qmail-newu writes it.
    raw_value: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def wildcard(self) -> bool:
        return self.kind == WILDCARD

    @property
    def prefix(self) -> str:
        return self.local

    def key(self) -> bytes:
        """The users/cdb key: ``!local`` + NUL (exact) or ``!prefix`` (wildcard)."""
        key = b"!" + _ascii_lower(self.local.encode(_ENC, _ERRORS))
        return key if self.wildcard else key + b"\0"

    def value(self) -> bytes:
        """The users/cdb value: the six fields joined by NUL."""
        if self.raw_value is not None:
            return self.raw_value
        fields = (self.user, str(self.uid), str(self.gid), self.home, self.dash, self.ext)
        return b"\0".join(f.encode(_ENC, _ERRORS) for f in fields)


def _ascii_lower(data: bytes) -> bytes:
    # bytes.lower() folds ASCII only, exactly like qmail's case_lowerb.
    return data.lower()


def _decode(data: bytes) -> str:
    return data.decode(_ENC, _ERRORS)


def parse(data: bytes, path: str | os.PathLike[str] = "users/assign") -> list[Assignment]:
    """Parse the bytes of a users/assign file; InputError names the file and line."""
    path = os.fspath(path)
    entries: list[Assignment] = []
    lines = data.split(b"\n")
    # A final piece without a newline is a partial line; qmail accepts it only if it
    # is the "." line.
    for number, raw in enumerate(lines, 1):
        complete = number < len(lines)
        if raw.startswith(b"."):
            return entries
        if not complete:
            break
        entries.append(_parse_line(raw, path, number))
    last = len(lines) - (1 if lines[-1] == b"" else 0)
    raise InputError(
        'missing the terminating line "."',
        path=path,
        line=max(last, 1),
        hint="users/assign must end with a line holding a single dot",
    )


def _parse_line(raw: bytes, path: str, number: int) -> Assignment:
    def bad(message: str, hint: str | None = None) -> InputError:
        return InputError(message, path=path, line=number, hint=hint)

    if b"\0" in raw:
        raise bad("line contains a NUL byte")
    if not raw:
        raise bad("empty line", "users/assign allows no blank lines; remove it")
    kind = raw[:1].decode("latin-1")
    if kind not in (EXACT, WILDCARD):
        raise bad(
            f"line starts with {kind!r}, not '=' or '+'",
            "use =local:user:uid:gid:homedir:dash:ext: or +prefix:user:uid:gid:homedir:dash:pre:",
        )
    name, sep, rest = raw[1:].partition(b":")
    if not sep:
        raise bad("no ':' after the address")
    parts = rest.split(b":")
    if len(parts) < 7:
        # Seven pieces: six colon-terminated fields plus whatever follows the last colon.
        count = len(parts) if parts[-1] else len(parts) - 1
        raise bad(
            f"{count} field{'s' if count != 1 else ''} after the address, need 6 each ending "
            "with ':'",
            "the form is "
            + ("+prefix" if kind == WILDCARD else "=local")
            + ":user:uid:gid:homedir:dash:ext:",
        )
    user, uid, gid, home, dash, ext = (_decode(p) for p in parts[:6])
    for label, value in (("uid", uid), ("gid", gid)):
        if not (value.isascii() and value.isdigit()):
            raise bad(f"{label} {value!r} is not a number")
        if int(value) > MAX_ID:
            raise bad(
                f"{label} {value} is out of range (at most {MAX_ID})",
                "qmail-lspawn would wrap it into another account's number",
            )
    return Assignment(
        kind,
        _decode(name),
        user,
        int(uid),
        int(gid),
        home,
        dash,
        ext,
        number,
        raw_value=b"\0".join(parts[:6]),
    )


def read(path: str | os.PathLike[str]) -> list[Assignment]:
    """Read and parse a users/assign file."""
    try:
        data = read_bounded(path)
    except FileNotFoundError as err:
        raise os_error(err, "cannot read") from err
    return parse(data, path)


def wildchars(entries: Iterable[Assignment]) -> bytes:
    """The empty key's value: distinct last bytes of non-empty wildcard prefixes, first seen first.

    As in qmail-newu the byte is taken from the prefix as written, not lower-cased.
    """
    seen = bytearray()
    for entry in entries:
        if entry.wildcard and entry.local:
            last = entry.local.encode(_ENC, _ERRORS)[-1]
            if last not in seen:
                seen.append(last)
    return bytes(seen)


def records(entries: Iterable[Assignment]) -> Iterator[tuple[bytes, bytes]]:
    """The users/cdb records, in qmail-newu's order: one per entry, then the empty key."""
    entries = list(entries)
    for entry in entries:
        yield entry.key(), entry.value()
    yield b"", wildchars(entries)


def _ascii_digits(text: str) -> bool:
    return text.isdigit() and text.isascii()  # str.isdigit() alone takes any script's digits


def from_records(
    items: Iterable[tuple[bytes, bytes]], path: str | os.PathLike[str] = "users/cdb"
) -> tuple[list[Assignment], bytes]:
    """Turn users/cdb records back into entries; returns (entries, wildchars).

    Local names come back lower-cased (the cdb keeps only the folded form).
    """
    entries: list[Assignment] = []
    chars: bytes | None = None
    for number, (key, value) in enumerate(items, 1):
        if key == b"":
            chars = value
            continue
        if not key.startswith(b"!"):
            raise InputError(f"record {number}: key {key!r} does not start with '!'", path=path)
        # One decode per record (a big install has tens of thousands); NUL is
        # never part of a multi-byte character, so splitting after decoding is safe.
        fields = value.decode(_ENC, _ERRORS).split("\0")
        if len(fields) != 6 or not (_ascii_digits(fields[1]) and _ascii_digits(fields[2])):
            raise InputError(
                f"record {number}: value {value!r} is not six NUL-separated fields "
                "with numeric uid and gid",
                path=path,
            )
        exact = key.endswith(b"\0")
        name = key[1:-1] if exact else key[1:]
        user, uid, gid, home, dash, ext = fields
        entries.append(
            Assignment(
                EXACT if exact else WILDCARD,
                _decode(name),
                user,
                int(uid),
                int(gid),
                home,
                dash,
                ext,
                None,
                raw_value=value,
            )
        )
    if chars is None:
        raise InputError("no empty key (wildcard characters): not a users/cdb", path=path)
    return entries, chars


def read_cdb(path: str | os.PathLike[str]) -> tuple[list[Assignment], bytes]:
    """Read a users/cdb file (as written by qmail-newu or ``qmailkit newu``)."""
    with cdb.Reader(path) as reader:
        return from_records(list(reader.items()), path)


def lookup(entries: Iterable[Assignment], local: str) -> Assignment | None:
    """Which entry qmail-lspawn would use for ``local`` (its users/cdb search, over parsed entries).

    Exact match first (case-insensitive); then the longest wildcard prefix that
    matches, which qmail finds by trying prefixes ending at a wildcard character.
    The first of duplicate keys wins, like cdb_find.
    """
    entries = list(entries)
    folded = _ascii_lower(local.encode(_ENC, _ERRORS))
    for entry in entries:
        if not entry.wildcard and entry.key() == b"!" + folded + b"\0":
            return entry
    chars = wildchars(entries)
    by_key: dict[bytes, Assignment] = {}
    for entry in entries:
        if entry.wildcard:
            by_key.setdefault(entry.key(), entry)
    for end in range(len(folded), -1, -1):
        # qmail-lspawn tries every prefix ending at a wildchar, longest first, then the empty one.
        if end and folded[end - 1] not in chars:
            continue
        hit = by_key.get(b"!" + folded[:end])
        if hit is not None:
            return hit
    return None


def compile_users_cdb(
    qmail_home: str | os.PathLike[str], *, force: bool = False, max_shrink: float | None = None
) -> list[Assignment]:
    """qmail-newu: users/assign → users/cdb (0644, with ``cdb.install``); returns the entries.

    The whole file is parsed before anything is written, so a bad line leaves
    the old users/cdb in place.  No entries at all, or many fewer than the old
    file had (a stray ``.`` line ends the file early), is refused unless
    ``force``: every vpopmail domain's route would be gone.
    """
    users = os.path.join(os.fspath(qmail_home), "users")
    entries = read(os.path.join(users, "assign"))
    guard = cdb.Guard(
        "entries",
        "drops every users/assign route (vpopmail domains bounce)",
        max_shrink=cdb.DEFAULT_MAX_SHRINK if max_shrink is None else max_shrink,
        force=force,
        name="users/cdb",
        uncounted=1,
    )
    pairs = list(records(entries))
    cdb.install(
        os.path.join(users, "cdb"),
        lambda writer: writer.add_many([k for k, _ in pairs], [v for _, v in pairs]),
        guard=guard,
        mode=0o644,
        what="another newu run",
    )
    return entries
