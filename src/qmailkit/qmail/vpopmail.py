"""Everything qmailkit knows about vpopmail, in one place.

* where vpopmail lives (``home``) and how it was built (``qmail_ext``);
* which domains are vpopmail's (``domains``, ``is_domain_dir``): the users/assign
  wildcard entries ``+NAME-`` whose directory holds vpasswd or vpasswd.cdb (the
  cdb backend), or has a ``.qmail-default`` running vdelivermail (a SQL backend);
* the mailboxes of a domain: ``vpasswd`` and ``vpasswd.cdb`` read carefully
  (``read_vpasswd``, ``read_domain_users``) or in bulk (``mailbox_names``,
  ``vpasswd_columns``), or from a SQL backend through vpopmail's own programs
  (``run_tool``, ``sql_users``, ``sql_mailboxes``);
* the flag word's ``NO_SMTP`` bit.

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

import errno
import os
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import repeat
from pathlib import Path

from qmailkit import cdb
from qmailkit.errors import InputError, QmailkitError, os_error
from qmailkit.fsutil import NotRegular, read_bounded
from qmailkit.qmail import assign, dotqmail, shadow

ENCODING = "utf-8"
ERRORS = "surrogateescape"
# The biggest vpasswd read: far above any real domain's, still a bound.
VPASSWD_LIMIT = 1 << 30
# vpopmail's gid flag word: this bit forbids SMTP AUTH (vpopmail.h, NO_SMTP).
NO_SMTP = 0x800
# How long vuserinfo or valias may take for one domain (a big SQL domain is slow).
TOOL_TIMEOUT = 300
# vpopmail_config.h is vpopmail's config.h as configure wrote it: --enable-qmail-ext
# makes every mailbox accept user-EXT too.
_QMAIL_EXT = re.compile(rb"^\s*#\s*define\s+QMAIL_EXT\s+1\b", re.MULTILINE)

_c_names: Callable[[bytes, bytes], list[bytes] | None] | None
_c_read: Callable[[str | os.PathLike[str], int], bytes | None] | None
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
        numbers = [n for n, line in zip(numbers, lines, strict=False) if line.rstrip(b"\r")]
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


# --------------------------------------------------------------------------- the installation


# vpopmail's own default prefix (configure --prefix): where it lives when the passwd
# file has no vpopmail user, for a caller that takes that guess (``home(default=...)``).
DEFAULT_HOME = Path("/home/vpopmail")


def home(
    passwd_path: str | os.PathLike[str],
    given: str | os.PathLike[str] | None = None,
    *,
    default: Path | None = None,
) -> Path:
    """vpopmail's home: ``given`` (--vpopmail-home), else the vpopmail user's home in
    the passwd file, else ``default``; InputError naming that file when it has no
    vpopmail user and there is no default.

    Each caller states its choice: mkvalidrcptto takes ``DEFAULT_HOME`` (a missing
    vpopmail only costs the domains that need it), mkauth none (it refuses to guess
    where passwords are)."""
    if given is not None:
        return Path(given)
    for account in shadow.read_passwd(passwd_path):
        if account.name == "vpopmail":
            return Path(account.home)
    if default is not None:
        return default
    raise InputError(
        f"no vpopmail user in {os.fspath(passwd_path)} to find vpopmail's home",
        hint="give --vpopmail-home",
    )


def qmail_ext(vpopmail_home: str | os.PathLike[str]) -> bool:
    """Whether vpopmail was built with --enable-qmail-ext (``#define QMAIL_EXT 1`` in
    ``include/vpopmail_config.h``); False without that header."""
    header = Path(vpopmail_home) / "include" / "vpopmail_config.h"
    try:
        return bool(_QMAIL_EXT.search(read_bounded(header)))
    except FileNotFoundError:
        return False


# --------------------------------------------------------------------------- its domains


@dataclass(frozen=True, slots=True)
class Domain:
    """A vpopmail domain named in users/assign (an alias domain shares its real one's
    directory)."""

    name: str  # lower-cased, as vpopmail looks it up
    directory: Path
    source: str  # users/assign:LINE
    sql: bool  # no vpasswd or vpasswd.cdb: its mailboxes are in vpopmail's SQL backend


def _exists(path: str) -> bool:
    """Path(path).exists() without building a Path (once per domain, 10,000s of them):
    False for a missing file, an error for one that cannot be looked at."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return False
        raise
    except ValueError:  # a NUL in the name
        return False
    return True


def has_user_files(directory: str | os.PathLike[str]) -> bool:
    """Whether a domain directory holds ``vpasswd`` or ``vpasswd.cdb`` (the cdb backend's
    files, which ``read_domain_users`` reads); an OSError if it cannot be looked at."""
    return _exists(os.path.join(directory, "vpasswd")) or _exists(
        os.path.join(directory, "vpasswd.cdb")
    )


def runs_vdelivermail(directory: str | os.PathLike[str]) -> bool:
    """Whether the ``.qmail-default`` of a directory runs vdelivermail (as dotqmail reads
    it: the first delivery instruction; only a regular file counts, as for qmail-local)."""
    path = os.path.join(directory, ".qmail-default")
    if not _exists(path):
        return False
    try:
        delivery = dotqmail.classify(path)
    except NotRegular:
        return False
    return delivery.kind in (dotqmail.Kind.VPOP_LIST, dotqmail.Kind.VPOP_CATCHALL)


def is_domain_dir(directory: str | os.PathLike[str]) -> bool:
    """The one answer to "is this a vpopmail domain's directory": it holds vpasswd or
    vpasswd.cdb, or (a SQL backend, no files) its .qmail-default runs vdelivermail."""
    return has_user_files(directory) or runs_vdelivermail(directory)


def domains(qmail_home: str | os.PathLike[str]) -> tuple[list[Domain], list[str]]:
    """The vpopmail domains of users/assign, and a note on each entry that is not one.

    vpopmail (vadddomain, vaddaliasdomain) writes ``+NAME-:REAL:UID:GID:DIR:-::``;
    vchkpw finds a domain's directory through that entry, whatever rcpthosts says.
    An entry is a domain when its directory passes ``is_domain_dir``.  A missing
    users/assign means no domains.
    """
    path = Path(qmail_home) / "users" / "assign"
    notes: list[str] = []
    if not _exists(str(path)):
        notes.append(f"{path}: missing, so no vpopmail domains")
        return [], notes
    found: list[Domain] = []
    for entry in assign.read(path):
        if not entry.wildcard:
            continue
        where = f"{path}:{entry.line}"
        if not entry.local.endswith("-") or len(entry.local) < 2:
            notes.append(f"{where}: +{entry.local} is not a domain entry (no trailing '-')")
            continue
        name = entry.local[:-1].lower()
        if has_user_files(entry.home):
            found.append(Domain(name, Path(entry.home), where, sql=False))
        elif runs_vdelivermail(entry.home):
            found.append(Domain(name, Path(entry.home), where, sql=True))
        else:
            notes.append(
                f"{where}: {entry.home} has no vpasswd, vpasswd.cdb or vdelivermail "
                ".qmail-default, not a vpopmail domain"
            )
    return found, notes


# --------------------------------------------------------------------------- SQL backends


def run_tool(vpopmail_home: str | os.PathLike[str], name: str, *args: str) -> str:
    """Run ``VPOPMAIL/bin/NAME ARGS...`` (each arg exactly one argument, no shell) and
    return its output; QmailkitError naming the program when it is missing, cannot
    run, takes too long or fails (its last line of stderr, if any, is quoted)."""
    program = Path(vpopmail_home) / "bin" / name
    what = " ".join([str(program), *args])
    if any("\0" in arg for arg in args):
        raise InputError(f"{what!r}: an argument holds a NUL byte, which no program can take")
    if not program.exists():
        raise QmailkitError(
            f"{name} not found: a SQL-backed vpopmail domain needs it",
            path=program,
            hint="give --vpopmail-home",
        )
    try:
        done = subprocess.run(
            [str(program), *args], capture_output=True, timeout=TOOL_TIMEOUT, check=False
        )
    except OSError as err:
        raise os_error(err, f"cannot run {name}") from err
    except subprocess.TimeoutExpired:
        raise QmailkitError(f"{what} took more than {TOOL_TIMEOUT} s") from None
    if done.returncode != 0:
        last = done.stderr.decode(ENCODING, "replace").strip().splitlines()
        raise QmailkitError(
            f"{what} failed with exit code {done.returncode}" + (f": {last[-1]}" if last else "")
        )
    return done.stdout.decode(ENCODING, ERRORS)


def _domain_argument(domain: str) -> str:
    # vuserinfo and valias parse options with getopt: a "domain" starting with "-" would
    # be read as one.
    if not domain or domain.startswith("-"):
        raise InputError(
            f"vpopmail domain {domain!r} cannot be given to vuserinfo or valias",
            hint="fix its +DOMAIN- entry in users/assign",
        )
    return domain


@dataclass(frozen=True, slots=True)
class SqlMailbox:
    name: str
    hash: str
    flags: int


def parse_vuserinfo(text: str, source: str) -> list[SqlMailbox]:
    """Mailboxes from ``vuserinfo -D DOMAIN`` output (blocks of ``key: value`` lines).

    Each block starts with ``name:``; ``passwd:`` is the hash; ``flags:`` (the
    user's gid flags plus domain-wide limits, printed by newer vpopmail) or
    else ``gid:`` gives the flag word.
    """
    boxes: list[SqlMailbox] = []
    current: dict[str, str] = {}

    def flush() -> None:
        if not current:
            return
        flags_text = current.get("flags", current.get("gid", "0")) or "0"
        if not flags_text.isdigit():
            raise InputError(
                f"vuserinfo gave flags {flags_text!r} for {current['name']!r}, not a number",
                path=source,
            )
        boxes.append(SqlMailbox(current["name"], current.get("passwd", ""), int(flags_text)))

    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep or key.startswith((" ", "\t")):
            continue
        key, value = key.strip(), value.strip()
        if key == "name":
            flush()
            current = {"name": value}
        elif current and key in ("passwd", "gid", "flags") and key not in current:
            current[key] = value
    flush()
    return boxes


def sql_mailboxes(
    vpopmail_home: str | os.PathLike[str], domain: str
) -> tuple[list[SqlMailbox], str]:
    """The mailboxes of a SQL-backed domain with their hashes and flag words (``vuserinfo
    -D``), and the command they came from."""
    source = f"{Path(vpopmail_home) / 'bin' / 'vuserinfo'} -D {domain}"
    text = run_tool(vpopmail_home, "vuserinfo", "-D", _domain_argument(domain))
    return parse_vuserinfo(text, source), source


def sql_users(vpopmail_home: str | os.PathLike[str], domain: str) -> tuple[list[bytes], str]:
    """The local parts that get mail in a SQL-backed domain, lower-cased (vuserinfo -D's
    mailboxes, then valias -s's aliases), and a description of where they came from."""
    argument = _domain_argument(domain)
    names = [
        line[5:].strip().encode(ENCODING, ERRORS).lower()
        for line in run_tool(vpopmail_home, "vuserinfo", "-D", argument).splitlines()
        if line.startswith("name:")
    ]
    for line in run_tool(vpopmail_home, "valias", "-s", argument).splitlines():
        left = line.split("->", 1)[0].strip()
        local = left.rpartition("@")[0] if "@" in left else left
        if local:
            names.append(local.encode(ENCODING, ERRORS).lower())
    return names, f"vuserinfo -D {domain}; valias -s {domain}"
