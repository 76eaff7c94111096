"""auth.cdb: the SMTP AUTH database of jms1's combined qmail-smtpd patch (AUTH_CDB).

Record format (original-scripts.md §1.6):

* key: the login exactly as the client sends it in AUTH: ``user@domain`` for a
  vpopmail mailbox, the login name for a system account;
* value: the crypt(3) hash, optionally followed by ``,VAR="value"`` pairs that
  qmail-smtpd puts into its environment after a successful AUTH;
  ``PASSWORD_EXPIRES="unixtime"`` makes AUTH fail once that time has passed.

Sources:

* vpopmail: every domain in ``users/assign`` whose wildcard entry
  (``+domain-:...:HOME:-::``) points at a directory holding ``vpasswd`` or
  ``vpasswd.cdb``; each mailbox with a usable hash and without vpopmail's
  NO_SMTP flag becomes ``name@domain``.  Alias domains (vaddaliasdomain adds
  ``+alias-`` with the real domain's directory) give ``name@alias`` too, as
  vchkpw accepts them.
* system accounts (only when a shadow file is given): accounts of the shadow
  file whose passwd entry has a uid in the window (default 500-65000, uid 0
  never).  A shadow account expiry date becomes ``PASSWORD_EXPIRES``.
* a settings file (see ``parse_settings``) adds ``VAR="value"`` pairs per login
  or per ``@domain``.

Hashes that can never match (empty, ``!...``, ``*...``) are left out and
reported as skipped.  The file holds password hashes: it is written 0640 by
default, never with permissions for "other", and never into a world-writable
directory.
"""

from __future__ import annotations

import calendar
import ctypes
import ctypes.util
import datetime as _dt
import errno
import hmac
import operator
import os
import re
import shlex
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from qmailkit import cdb
from qmailkit.cdb import DEFAULT_MAX_SHRINK
from qmailkit.errors import InputError, QmailkitError, os_error

DEFAULT_QMAIL_HOME = Path("/var/qmail")
DEFAULT_CDB = DEFAULT_QMAIL_HOME / "control" / "auth.cdb"
DEFAULT_MODE = 0o640

# vpopmail's gid flag word: 0x800 forbids SMTP AUTH (vpopmail.h, NO_SMTP).
VPOPMAIL_NO_SMTP = 0x800

_VAR = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Characters a value may not hold: they would end the quoted value or the pair.
_BAD_VALUE = re.compile(r'[",\x00-\x1f\x7f]')
_PAIR = re.compile(rb',([A-Za-z_][A-Za-z0-9_]*)="([^"]*)"')

_ENC = "utf-8"
_ERRORS = "surrogateescape"


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Login:
    """One auth.cdb record: a login, its hash, the variables set after AUTH, and its source."""

    login: str
    hash: str
    env: tuple[tuple[str, str], ...] = ()
    source: str = ""

    def key(self) -> bytes:
        return self.login.encode(_ENC, _ERRORS)

    def value(self) -> bytes:
        pairs = "".join(f',{name}="{value}"' for name, value in self.env)
        return (self.hash + pairs).encode(_ENC, _ERRORS)


@dataclass(frozen=True)
class Skipped:
    """A login left out, and why (shown with ``-d``)."""

    login: str
    reason: str
    source: str = ""


@dataclass
class Collected:
    """The logins found, as auth.cdb records in key order, and what was left out and why.

    ``keys`` and ``values`` are the records (the keys unique, sorted as bytes).
    Where each login came from is worked out only when asked (``sources``,
    ``logins``: for ``-d``): on a big install a string per login would cost
    more than everything else.
    """

    keys: list[bytes] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    where: Callable[[], list[str]] = field(default=list, repr=False)  # what sources() returns
    nbytes: int | None = None  # the length of all keys and values, if known

    def records(self) -> list[tuple[bytes, bytes]]:
        """The auth.cdb records, sorted by key."""
        return list(zip(self.keys, self.values, strict=True))

    def sources(self) -> list[str]:
        """Where each login came from (``FILE:LINE``, a file, or a command), in key order."""
        return self.where()

    @property
    def logins(self) -> list[Login]:
        """The records as Login objects, with their sources."""
        out = []
        for key, value, source in zip(self.keys, self.values, self.sources(), strict=True):
            login = key.decode(_ENC, _ERRORS)
            entry = parse_value(login, value)
            out.append(Login(login, entry.hash, entry.env, source))
        return out


@dataclass
class Sources:
    """Where ``collect`` looks for logins."""

    qmail_home: Path = DEFAULT_QMAIL_HOME
    vpopmail: bool = True
    vpopmail_home: Path | None = None  # for bin/vuserinfo; default: ~vpopmail from passwd
    shadow: Path | None = None
    passwd: Path = Path("/etc/passwd")
    min_uid: int = 500
    max_uid: int = 65000
    exclude: Sequence[str] = ()
    settings: Path | None = None


# --------------------------------------------------------------------------- settings


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
    out: list[Setting] = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            words = shlex.split(line, comments=True)
        except ValueError as err:
            raise InputError(f"cannot split the line: {err}", path=path, line=number) from None
        if not words:
            continue
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
        for word in assignments:
            name, eq, value = word.partition("=")
            if not eq or not _VAR.match(name):
                raise InputError(
                    f"{word!r} is not VAR=value",
                    path=path,
                    line=number,
                    hint="variable names are letters, digits and _",
                )
            if _BAD_VALUE.search(value):
                raise InputError(
                    f"the value of {name} contains a '\"', ',' or control "
                    "character, which auth.cdb cannot hold",
                    path=path,
                    line=number,
                )
            if name == "PASSWORD_EXPIRES":
                value = str(_unix_time(value, path, number))
            out.append(Setting(who, name, value, number))
    return out


def _unix_time(text: str, path: str | os.PathLike[str], line: int) -> int:
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            day = _dt.date.fromisoformat(text)
            return calendar.timegm(day.timetuple())
        moment = _dt.datetime.fromisoformat(text)
    except ValueError:
        moment = None
    if moment is None:
        raise InputError(
            f"PASSWORD_EXPIRES {text!r} is not a Unix time, YYYY-MM-DD or an ISO date and time",
            path=path,
            line=line,
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_dt.UTC)
    return int(moment.timestamp())


def read_settings(path: str | os.PathLike[str]) -> list[Setting]:
    from qmailkit.fsutil import read_text_lines

    return parse_settings("\n".join(read_text_lines(path)), path)


# --------------------------------------------------------------------------- collecting


def _usable_hash(hash_: str) -> str | None:
    """Why a hash cannot go into auth.cdb, or None if it can."""
    if hash_ == "" or hash_[0] in "!*":
        return "locked or empty password hash"
    if _BAD_VALUE.search(hash_) or " " in hash_:
        return "password hash contains a character auth.cdb cannot hold"
    return None


class _Excluder:
    def __init__(self, names: Iterable[str]) -> None:
        self.logins: set[str] = set()
        self.domains: set[str] = set()
        for name in names:
            name = name.strip().lower()
            if name.startswith("@"):
                self.domains.add(name[1:])
            elif name:
                self.logins.add(name)

    def domain(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def login(self, login: str) -> bool:
        return login.lower() in self.logins


def _is_vdelivermail_dir(home: Path) -> bool:
    """A domain directory whose .qmail-default runs vdelivermail (vpopmail with any backend)."""
    try:
        return b"vdelivermail" in (home / ".qmail-default").read_bytes()
    except OSError:
        return False


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


def vpopmail_domains(qmail_home: Path) -> tuple[list[tuple[str, Path, str, bool]], list[str]]:
    """The vpopmail domains named in users/assign and notes on the entries that are not.

    Each domain comes as (domain, directory, source, sql).  A wildcard entry
    ``+NAME-`` whose home holds ``vpasswd`` or ``vpasswd.cdb`` is a vpopmail
    domain NAME read from files; one whose home has neither but a
    ``.qmail-default`` running vdelivermail is a domain of a SQL-backed
    vpopmail (``sql`` True: ask ``vuserinfo -D``).  A missing users/assign
    means no domains.
    """
    from qmailkit.qmail import assign

    path = qmail_home / "users" / "assign"
    notes: list[str] = []
    if not path.exists():
        notes.append(f"{path}: missing, so no vpopmail domains")
        return [], notes
    found: list[tuple[str, Path, str, bool]] = []
    for entry in assign.read(path):
        if not entry.wildcard:
            continue
        where = f"{path}:{entry.line}"
        if not entry.local.endswith("-") or len(entry.local) < 2:
            notes.append(f"{where}: +{entry.local} is not a domain entry (no trailing '-')")
            continue
        home = Path(entry.home)
        domain = entry.local[:-1].lower()
        if _exists(os.path.join(home, "vpasswd")) or _exists(os.path.join(home, "vpasswd.cdb")):
            found.append((domain, home, where, False))
        elif _is_vdelivermail_dir(home):
            found.append((domain, home, where, True))
        else:
            notes.append(
                f"{where}: {home} has no vpasswd, vpasswd.cdb or vdelivermail "
                ".qmail-default, not a vpopmail domain"
            )
    return found, notes


@dataclass(frozen=True)
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


def run_vuserinfo(vpopmail_home: Path, domain: str) -> tuple[str, str]:
    """Run ``VPOPMAIL/bin/vuserinfo -D DOMAIN``; returns (output, a description of the source)."""
    import subprocess

    prog = vpopmail_home / "bin" / "vuserinfo"
    what = f"{prog} -D {domain}"
    if not prog.exists():
        raise QmailkitError(
            "vuserinfo not found: a SQL-backed vpopmail domain needs it",
            path=prog,
            hint="give --vpopmail-home, or --no-vpopmail",
        )
    try:
        done = subprocess.run(
            [str(prog), "-D", domain], capture_output=True, timeout=300, check=False
        )
    except OSError as err:
        raise os_error(err, "cannot run vuserinfo") from err
    except subprocess.TimeoutExpired:
        raise QmailkitError(f"{what} took more than 300 s") from None
    if done.returncode != 0:
        last = done.stderr.decode(_ENC, "replace").strip().splitlines()
        raise QmailkitError(
            f"{what} failed with exit code {done.returncode}" + (f": {last[-1]}" if last else "")
        )
    return done.stdout.decode(_ENC, _ERRORS), what


def _vpopmail_home(src: Sources) -> Path:
    """--vpopmail-home, else the home of the vpopmail user in the passwd file."""
    from qmailkit.qmail import shadow

    if src.vpopmail_home is not None:
        return Path(src.vpopmail_home)
    for account in shadow.read_passwd(src.passwd):
        if account.name == "vpopmail":
            return Path(account.home)
    raise InputError(
        f"no vpopmail user in {src.passwd} to find vuserinfo", hint="give --vpopmail-home"
    )


class _Gathered:
    """Logins in the order the sources give them, and what was left out and why.

    Keys and hashes are parallel lists of bytes.  ``runs`` says where they came
    from: ``(first index, FILE)`` for a run read in bulk from lines 1, 2, ... of
    FILE, ``(first index, [source, ...])`` for logins added one by one.
    ``careful`` also checks each login against those before it (a duplicate is
    skipped, naming the first); the bulk path leaves that to one check of the
    sorted keys, and then gathers again carefully.
    """

    def __init__(self, excluder: _Excluder, careful: bool) -> None:
        self.excluder = excluder
        self.careful = careful
        self.keys: list[bytes] = []
        self.hashes: list[bytes] = []
        self.runs: list[tuple[int, str | list[str]]] = []
        self.skipped: list[Skipped] = []
        self.notes: list[str] = []
        self.domains: set[str] = set()
        self.derived: dict[str, dict[str, str]] = {}  # variables from the sources themselves
        self.nbytes = 0  # of keys and hashes: the cdb writer needs it, counting is slow later
        self._first: dict[str, str] = {}  # login -> source (careful only)

    def add(self, login: str, hash_: str, source: str) -> bool:
        """Add one login unless it is excluded, its hash unusable or (careful) a duplicate."""
        if self.excluder.login(login):
            self.skipped.append(Skipped(login, "excluded", source))
            return False
        why = _usable_hash(hash_)
        if why:
            self.skipped.append(Skipped(login, why, source))
            return False
        if self.careful:
            if login in self._first:
                self.skipped.append(Skipped(login, f"duplicate of {self._first[login]}", source))
                return False
            self._first[login] = source
        if not self.runs or isinstance(self.runs[-1][1], str):
            self.runs.append((len(self.keys), []))
        self.runs[-1][1].append(source)  # type: ignore[union-attr]
        self.keys.append(login.encode(_ENC, _ERRORS))
        self.hashes.append(hash_.encode(_ENC, _ERRORS))
        self.nbytes += len(self.keys[-1]) + len(self.hashes[-1])
        return True

    def add_lines(self, keys: bytes, hashes: bytes, path: str) -> None:
        """The logins of lines 1, 2, ... of ``path``: newline-separated keys and hashes."""
        if keys:
            self.runs.append((len(self.keys), path))
            start = len(self.keys)
            self.keys.extend(keys.split(b"\n"))
            self.hashes.extend(hashes.split(b"\n"))
            self.nbytes += len(keys) + len(hashes) - 2 * (len(self.keys) - start - 1)

    def sources(self) -> list[str]:
        """The source of every login, in the order gathered."""
        out: list[str] = []
        ends = [start for start, _ in self.runs[1:]] + [len(self.keys)]
        for (start, run), end in zip(self.runs, ends):  # no runs: no logins
            if isinstance(run, str):
                out.extend(f"{run}:{line}" for line in range(1, end - start + 1))
            else:
                out.extend(run)
        return out


# The bytes a hash may not hold (_usable_hash), "\n" aside: it joins hashes here.
_BAD_HASH_BYTES = b' ",\x7f' + bytes(range(32)).replace(b"\n", b"")
_GOOD_HASH_BYTES = bytes(set(range(256)) - set(_BAD_HASH_BYTES))


def _add_vpasswd_in_bulk(got: _Gathered, domain: str, home: Path, where: str) -> bool:
    """Add the mailboxes of a domain straight from the bytes of its vpasswd.

    Only when the file is the plain kind (``vpopmail.vpasswd_columns``) and no
    line needs a second look: a NO_SMTP flag, an unusable hash, an excluded
    login, a name that is not ASCII (lower-cased as str.lower does).  Returns
    False, having added nothing, otherwise: the careful path then handles it.
    """
    from qmailkit.qmail import vpopmail

    path = os.path.join(home, "vpasswd")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return False  # absent (vpasswd.cdb then) or unreadable: the careful path says which
    columns = vpopmail.vpasswd_columns(data)
    if columns is None:
        return False
    names, hashes = b"\n".join(columns.names), b"\n".join(columns.hashes)
    if not names.isascii():
        return False
    if any(gid and int(gid) & VPOPMAIL_NO_SMTP for gid in set(columns.gids)):
        return False
    if (
        b"" in columns.hashes
        or hashes.startswith((b"!", b"*"))
        or b"\n!" in hashes
        or b"\n*" in hashes
        or hashes.translate(None, _GOOD_HASH_BYTES)
    ):
        return False
    if any(login.endswith("@" + domain) for login in got.excluder.logins):
        return False
    got.notes.append(
        f"{where}: vpopmail domain {domain}: {len(columns.names)} mailboxes from {path}"
    )
    at = b"@" + domain.encode(_ENC, _ERRORS)
    keys = names.lower().replace(b"\n", at + b"\n") + at if names else b""
    got.add_lines(keys, hashes, path)
    return True


def _gather(src: Sources, careful: bool) -> _Gathered:
    """Every login of the sources, in their order (see _Gathered)."""
    from qmailkit.qmail import shadow, vpopmail

    excluder = _Excluder(src.exclude)
    got = _Gathered(excluder, careful)
    if src.vpopmail:
        found, notes = vpopmail_domains(Path(src.qmail_home))
        got.notes.extend(notes)
        for domain, home, where, sql in found:
            if excluder.domain(domain):
                got.skipped.append(Skipped("@" + domain, "domain excluded", where))
                continue
            got.domains.add(domain)
            if not sql and not careful and _add_vpasswd_in_bulk(got, domain, home, where):
                continue
            if sql:
                text, users_source = run_vuserinfo(_vpopmail_home(src), domain)
                boxes = [
                    (box.name, box.hash, box.flags, users_source)
                    for box in parse_vuserinfo(text, users_source)
                ]
            else:
                users_path, users = vpopmail.read_domain_users(home)
                users_source = str(users_path)
                boxes = [
                    (
                        user.name,
                        user.hash,
                        user.gid,
                        f"{users_path}:{user.line}" if user.line else users_source,
                    )
                    for user in users
                ]
            got.notes.append(
                f"{where}: vpopmail domain {domain}: {len(boxes)} mailboxes from {users_source}"
            )
            for name, hash_, flags, source in boxes:
                login = f"{name.lower()}@{domain}"
                if flags & VPOPMAIL_NO_SMTP:
                    got.skipped.append(Skipped(login, "vpopmail NO_SMTP flag set", source))
                    continue
                got.add(login, hash_, source)

    if src.shadow is not None:
        window = shadow.uids_in_window(shadow.read_passwd(src.passwd), src.min_uid, src.max_uid)
        for entry in shadow.read_shadow(src.shadow):
            source = f"{src.shadow}:{entry.line}"
            if window.get(entry.name) is None:
                got.skipped.append(
                    Skipped(
                        entry.name,
                        f"not in {src.passwd} with a uid in {src.min_uid}-{src.max_uid}",
                        source,
                    )
                )
                continue
            if got.add(entry.name, entry.hash, source) and entry.expires_at is not None:
                got.derived[entry.name] = {"PASSWORD_EXPIRES": str(entry.expires_at)}
    return got


def _in_key_order(got: _Gathered) -> tuple[list[int], list[bytes]]:
    """The gathered indices in the order of their keys (as bytes), and the sorted keys."""
    keys = got.keys
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return order, list(map(keys.__getitem__, order))


def _env(
    login: str, derived: dict[str, dict[str, str]], per_who: dict[str, list[Setting]]
) -> dict[str, str]:
    """The variables of a login: from its source, then its domain's settings, then its own."""
    env = dict(derived.get(login, {}))
    domain = login.rpartition("@")[2] if "@" in login else None
    for setting in per_who.get("@" + domain, []) if domain else []:
        env[setting.name] = setting.value
    for setting in per_who.get(login.lower(), []):
        env[setting.name] = setting.value
    return env


def collect(src: Sources) -> Collected:
    """Gather every login that may authenticate, with its hash and settings."""
    got = _gather(src, careful=False)
    order, keys = _in_key_order(got)
    if any(map(operator.eq, keys, islice(keys, 1, None))):
        # A login twice: gather again one by one, which keeps the first and says so.
        got = _gather(src, careful=True)
        order, keys = _in_key_order(got)
    values = list(map(got.hashes.__getitem__, order))
    nbytes = got.nbytes

    settings = read_settings(src.settings) if src.settings is not None else []
    per_who: dict[str, list[Setting]] = {}
    for setting in settings:
        per_who.setdefault(setting.who, []).append(setting)
    if per_who:
        folded_logins = {key.decode(_ENC, _ERRORS).lower() for key in keys}
        for who, items in per_who.items():
            hit = who[1:] in got.domains if who.startswith("@") else who in folded_logins
            if not hit:
                got.notes.append(f"{src.settings}:{items[0].line}: {who} matches no login")
    if per_who or got.derived:
        for i, key in enumerate(keys):
            login = key.decode(_ENC, _ERRORS)
            if per_who or login in got.derived:
                pairs = "".join(
                    f',{name}="{value}"'
                    for name, value in _env(login, got.derived, per_who).items()
                )
                added = pairs.encode(_ENC, _ERRORS)
                values[i] += added
                nbytes += len(added)

    def sources() -> list[str]:
        gathered = got.sources()
        return [gathered[i] for i in order]

    return Collected(keys, values, got.skipped, got.notes, sources, nbytes)


# --------------------------------------------------------------------------- writing


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


# --------------------------------------------------------------------------- checking


_libcrypt: ctypes.CDLL | None = None


def _crypt_function():
    global _libcrypt
    if _libcrypt is None:
        names = ["libcrypt.so.1"]
        found = ctypes.util.find_library("crypt")
        if found and found not in names:
            names.append(found)
        for name in names:
            try:
                _libcrypt = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise QmailkitError(
                "cannot load libcrypt (libcrypt.so.1) to check passwords",
                hint="install libcrypt1 (Debian/Ubuntu) or libxcrypt",
            )
    func = _libcrypt.crypt
    func.restype = ctypes.c_char_p
    func.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    return func


def crypt(password: str | bytes, setting: str) -> str | None:
    """crypt(3) through libcrypt (Python 3.13 dropped the crypt module); None on failure."""
    if isinstance(password, str):
        password = password.encode(_ENC, _ERRORS)
    out = _crypt_function()(password, setting.encode(_ENC, _ERRORS))
    if out is None:
        return None
    text = out.decode(_ENC, _ERRORS)
    # libxcrypt returns "*0"/"*1" instead of NULL for an unusable setting.
    return None if text.startswith("*") else text


def verify(password: str | bytes, hash_: str) -> bool:
    """True when ``password`` matches the crypt(3) ``hash_``; locked hashes never match."""
    if _usable_hash(hash_):
        return False
    out = crypt(password, hash_)
    return out is not None and hmac.compare_digest(
        out.encode(_ENC, _ERRORS), hash_.encode(_ENC, _ERRORS)
    )


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
        env.append((match[1].decode(), match[2].decode(_ENC, _ERRORS)))
        pos = match.end()
    return Entry(login, hash_.decode(_ENC, _ERRORS), tuple(env), value)


def find(path: str | os.PathLike[str], login: str) -> Entry | None:
    """The auth.cdb record for ``login`` (an exact, case-sensitive key, as qmail-smtpd looks)."""
    from qmailkit import cdb

    with cdb.Reader(path) as reader:
        value = reader.get(login.encode(_ENC, _ERRORS))
    return None if value is None else parse_value(login, value, path)
