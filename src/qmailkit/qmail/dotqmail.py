"""``.qmail`` files: which extensions a home directory answers, and what a file does.

qmail-local delivers ``ext`` for a user with home H and dash D by reading
``H/.qmail{D}{safe}``, where ``safe`` is the extension lower-cased with every
``.`` written as ``:`` (so ``a.b`` and ``a:b`` both reach ``.qmail-a:b``);
failing that ``H/.qmail{D}{prefix}default`` for every prefix of ``safe`` that
ends at a ``-``, longest first; then ``H/.qmail{D}default``.  Only a regular
file (or a symlink to one) counts: anything else is as if absent.  No file
found means "no mailbox here by that name" when D is not empty, and the
default delivery when it is.

Only what the validrcptto list needs is decided here: whether a file bounces
every message (``|bouncesaying TEXT`` or ``|exit 100``), runs vdelivermail
(and whether unknown mailboxes bounce), runs fastforward, or delivers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from qmailkit.errors import QmailkitError, os_error
from qmailkit.fsutil import file_kind, open_regular
from qmailkit.qmail.validrcptto import fold

_c_read: Callable[[str | os.PathLike[str], int], bytes | None] | None
try:  # open_regular's usual case in C (O_NONBLOCK, fstat, read), built with the vpasswd scanner
    from qmailkit.qmail._vpasswd import read_regular as _c_read
except ImportError:
    _c_read = None

DEFAULT = "default"


class Kind(Enum):
    DELIVER = "deliver"  # mailbox, maildir, forward or a program: the address exists
    BOUNCE = "bounce"  # every message bounces
    VPOP_LIST = "vdelivermail bounce-no-mailbox"  # only existing mailboxes are valid
    VPOP_CATCHALL = "vdelivermail catch-all"  # unknown mailboxes go somewhere
    FASTFORWARD = "fastforward"  # the aliases in a fastforward cdb


@dataclass(frozen=True, slots=True)
class Delivery:
    kind: Kind
    path: str
    cdb: str | None = None  # fastforward's database
    passthrough: bool = False  # fastforward -p: unknown names fall through to later lines
    fallback: Kind | None = None  # with -p: what the lines after fastforward do


# A shell word: unquoted characters, '...' or "..." runs, backslash escapes.
_WORD = re.compile(r"""(?:[^\s'"\\]+|'[^']*'|"(?:\\.|[^"\\])*"|\\.)+""")
_DQ_ESCAPE = re.compile(r'\\([\\"$`])')  # what a backslash escapes inside "..."
_UNQUOTE = re.compile(r"""'([^']*)'|"((?:\\.|[^"\\])*)"|\\(.)""")


def _unquote(match: re.Match[str]) -> str:
    single, double, escaped = match.groups()
    if single is not None:
        return single
    if double is not None:
        return _DQ_ESCAPE.sub(r"\1", double)
    return escaped


def _argv(command: str) -> list[str]:
    """Split a command line into words as sh would (enough to name the program and args).

    shlex does the same but costs ~100 us a line; a big install has tens of
    thousands of .qmail files.
    """
    return [_UNQUOTE.sub(_unquote, word) for word in _WORD.findall(command)]


def _classify_command(command: str, path: str) -> Delivery | None:
    argv = _argv(command)
    if not argv:
        return None
    prog = os.path.basename(argv[0])
    if prog == "bouncesaying" and len(argv) == 2:
        return Delivery(Kind.BOUNCE, path)  # with a program after the text it is conditional
    if prog == "exit" and argv[1:] == ["100"]:
        return Delivery(Kind.BOUNCE, path)
    if prog == "vdelivermail":
        # vdelivermail '' bounce-no-mailbox (or 'delete', which drops unknown
        # names silently: they must be refused at RCPT time all the more).
        target = argv[2] if len(argv) > 2 else ""
        if target in ("bounce-no-mailbox", "delete") or "bounce-no-mailbox" in command:
            return Delivery(Kind.VPOP_LIST, path)
        return Delivery(Kind.VPOP_CATCHALL, path)
    if prog == "fastforward":
        passthrough = False
        rest = argv[1:]
        while rest and rest[0].startswith("-") and rest[0] != "-":
            flags = rest.pop(0)[1:]
            for flag in flags:
                if flag == "p":
                    passthrough = True
                elif flag == "P":
                    passthrough = False
        db = rest[0] if rest else None
        return Delivery(Kind.FASTFORWARD, path, cdb=db, passthrough=passthrough)
    return Delivery(Kind.DELIVER, path)


def classify_text(text: str, path: str) -> Delivery:
    """What a .qmail file with this content does (see the module docstring)."""
    if "|" not in text:
        return Delivery(Kind.DELIVER, path)  # forwards and mailboxes only (the common case)
    first: Delivery | None = None
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("|"):
            found = _classify_command(line[1:].strip(), path)
            if found is None:
                continue
        else:
            found = Delivery(Kind.DELIVER, path)  # ./Maildir/, /file, &addr, addr
        if first is None:
            if found.kind is not Kind.FASTFORWARD or not found.passthrough:
                return found
            first = found
            continue
        # fastforward -p passes unknown names on to this line.
        return Delivery(first.kind, path, first.cdb, True, found.kind)
    if first is not None:
        return Delivery(first.kind, path, first.cdb, True, Kind.BOUNCE)
    # An empty .qmail-EXT file delivers by the default (control/defaultdelivery).
    return Delivery(Kind.DELIVER, path)


def read_file(path: str) -> bytes:
    """The text of a .qmail file (its first 64 KiB: no delivery instruction is longer)."""
    if _c_read is not None:  # the usual file, in one call: there may be tens of thousands
        data = _c_read(path, 65536)
        if data is not None:
            return data
    # open_regular: a FIFO planted in a home cannot hang the build; and it says what
    # is wrong with a file the C reader declined.
    try:
        fd = open_regular(path, blocking=False)
        try:
            return os.read(fd, 65536)
        finally:
            os.close(fd)
    except OSError as err:
        raise os_error(err, "cannot read .qmail file") from err


def classify(path: str) -> Delivery:
    return classify_text(read_file(path).decode("utf-8", "surrogateescape"), path)


@dataclass(slots=True)
class HomeFiles:
    """The ``.qmail*`` files of one home directory that qmail-local can read."""

    home: str
    dash: str
    names: dict[str, str]  # extension as qmail-local spells it (":" for ".") -> file name
    present: dict[str, None]  # every regular .qmail* file name, in directory order
    skipped: list[str] = field(default_factory=list)  # why odd .qmail names were left out

    def path(self, name: str) -> str:
        return f"{self.home}/{name}"

    def with_dash(self, dash: str) -> HomeFiles:
        """The same listing for another dash."""
        names = {}
        if dash:
            prefix = ".qmail" + dash
            for name in self.present:
                if name.startswith(prefix) and _usable(ext := name[len(prefix) :]):
                    names[ext] = name
        return HomeFiles(self.home, dash, names, self.present, self.skipped)


def _usable(ext: str) -> bool:
    # qmail-local lower-cases the extension and writes "." as ":" before it looks
    # for the file, so a name with capitals or a "." is never used.
    return bool(ext) and "." not in ext and (ext.islower() or ext == fold(ext))


def _not_regular(path: str) -> str:
    try:
        return file_kind(os.stat(path).st_mode)
    except FileNotFoundError:
        return "a symbolic link to nothing"
    except OSError as err:
        return f"unreadable ({err.strerror})"


def list_home(home: str) -> HomeFiles:
    """Read the directory once (the names for dash ``-``); QmailkitError naming it if it
    cannot be read."""
    try:
        entries = os.scandir(home)
    except FileNotFoundError:
        raise QmailkitError("home directory does not exist", path=home) from None
    except OSError as err:
        raise os_error(err, "cannot list home directory") from err
    present: dict[str, None] = {}
    names: dict[str, str] = {}
    skipped: list[str] = []
    with entries:
        for entry in entries:
            name = entry.name
            if not name.startswith(".qmail"):
                continue
            if "\n" in name:  # no address holds a newline, and no key may
                skipped.append(
                    f"{home}/{name!r}: skipped: no address reaches a .qmail name holding a newline"
                )
            # d_type answers for all but symlinks; qmail-local reads regular files only.
            elif not entry.is_file():
                path = f"{home}/{name}"
                skipped.append(
                    f"{path}: skipped: it is {_not_regular(path)}, not a regular "
                    "file, so qmail-local ignores it"
                )
            else:
                present[name] = None
                if name.startswith(".qmail-") and _usable(ext := name[7:]):
                    names[ext] = name
    return HomeFiles(home, "-", names, present, sorted(skipped) if skipped else skipped)


def is_default(ext: str, delimiter: str = "-") -> bool:
    """True for ``default`` and ``PREFIX-default`` (a wildcard extension)."""
    return ext == DEFAULT or (ext.endswith(DEFAULT) and ext[: -len(DEFAULT)].endswith(delimiter))
