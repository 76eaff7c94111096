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
import hmac
import os
import re
import shlex
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
    logins: list[Login] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def records(self) -> list[tuple[bytes, bytes]]:
        """The auth.cdb records, sorted by key."""
        return [(login.key(), login.value()) for login in self.logins]


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
            raise InputError(f"the line starts with {words[0]!r}, not a login or @domain",
                             path=path, line=number, hint="the form is WHO VAR=value ...")
        if who == "@" or who.count("@") > 1:
            raise InputError(f"{words[0]!r} is neither a login nor @domain", path=path,
                             line=number)
        if not assignments:
            raise InputError(f"no VAR=value after {words[0]!r}", path=path, line=number)
        for word in assignments:
            name, eq, value = word.partition("=")
            if not eq or not _VAR.match(name):
                raise InputError(f"{word!r} is not VAR=value", path=path, line=number,
                                 hint="variable names are letters, digits and _")
            if _BAD_VALUE.search(value):
                raise InputError(f"the value of {name} contains a '\"', ',' or control "
                                 "character, which auth.cdb cannot hold", path=path, line=number)
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
        raise InputError(f"PASSWORD_EXPIRES {text!r} is not a Unix time, YYYY-MM-DD or an "
                         "ISO date and time", path=path, line=line)
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
        if (home / "vpasswd").exists() or (home / "vpasswd.cdb").exists():
            found.append((domain, home, where, False))
        elif _is_vdelivermail_dir(home):
            found.append((domain, home, where, True))
        else:
            notes.append(f"{where}: {home} has no vpasswd, vpasswd.cdb or vdelivermail "
                         ".qmail-default, not a vpopmail domain")
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
            raise InputError(f"vuserinfo gave flags {flags_text!r} for {current['name']!r}, "
                             "not a number", path=source)
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
        raise QmailkitError("vuserinfo not found: a SQL-backed vpopmail domain needs it",
                            path=prog, hint="give --vpopmail-home, or --no-vpopmail")
    try:
        done = subprocess.run([str(prog), "-D", domain], capture_output=True, timeout=300,
                              check=False)
    except OSError as err:
        raise os_error(err, "cannot run vuserinfo") from err
    except subprocess.TimeoutExpired:
        raise QmailkitError(f"{what} took more than 300 s") from None
    if done.returncode != 0:
        last = done.stderr.decode(_ENC, "replace").strip().splitlines()
        raise QmailkitError(f"{what} failed with exit code {done.returncode}"
                            + (f": {last[-1]}" if last else ""))
    return done.stdout.decode(_ENC, _ERRORS), what


def _vpopmail_home(src: Sources) -> Path:
    """--vpopmail-home, else the home of the vpopmail user in the passwd file."""
    from qmailkit.qmail import shadow

    if src.vpopmail_home is not None:
        return Path(src.vpopmail_home)
    for account in shadow.read_passwd(src.passwd):
        if account.name == "vpopmail":
            return Path(account.home)
    raise InputError(f"no vpopmail user in {src.passwd} to find vuserinfo",
                     hint="give --vpopmail-home")


def collect(src: Sources) -> Collected:
    """Gather every login that may authenticate, with its hash and settings."""
    from qmailkit.qmail import shadow, vpopmail

    result = Collected()
    excluder = _Excluder(src.exclude)
    by_login: dict[str, Login] = {}
    derived: dict[str, dict[str, str]] = {}  # variables from the sources themselves

    def add(login: str, hash_: str, source: str) -> None:
        if excluder.login(login):
            result.skipped.append(Skipped(login, "excluded", source))
            return
        why = _usable_hash(hash_)
        if why:
            result.skipped.append(Skipped(login, why, source))
            return
        if login in by_login:
            result.skipped.append(Skipped(login, f"duplicate of {by_login[login].source}", source))
            return
        by_login[login] = Login(login, hash_, (), source)

    domains: set[str] = set()
    if src.vpopmail:
        found, notes = vpopmail_domains(Path(src.qmail_home))
        result.notes.extend(notes)
        for domain, home, where, sql in found:
            if excluder.domain(domain):
                result.skipped.append(Skipped("@" + domain, "domain excluded", where))
                continue
            domains.add(domain)
            if sql:
                text, users_source = run_vuserinfo(_vpopmail_home(src), domain)
                boxes = [(box.name, box.hash, box.flags, users_source)
                         for box in parse_vuserinfo(text, users_source)]
            else:
                users_path, users = vpopmail.read_domain_users(home)
                users_source = str(users_path)
                boxes = [(user.name, user.hash, user.gid,
                          f"{users_path}:{user.line}" if user.line else users_source)
                         for user in users]
            result.notes.append(f"{where}: vpopmail domain {domain}: {len(boxes)} mailboxes "
                                f"from {users_source}")
            for name, hash_, flags, source in boxes:
                login = f"{name.lower()}@{domain}"
                if flags & VPOPMAIL_NO_SMTP:
                    result.skipped.append(Skipped(login, "vpopmail NO_SMTP flag set", source))
                    continue
                add(login, hash_, source)

    if src.shadow is not None:
        window = shadow.uids_in_window(shadow.read_passwd(src.passwd), src.min_uid, src.max_uid)
        for entry in shadow.read_shadow(src.shadow):
            source = f"{src.shadow}:{entry.line}"
            account = window.get(entry.name)
            if account is None:
                result.skipped.append(Skipped(
                    entry.name,
                    f"not in {src.passwd} with a uid in {src.min_uid}-{src.max_uid}", source))
                continue
            add(entry.name, entry.hash, source)
            added = by_login.get(entry.name)
            if entry.expires_at is not None and added is not None and added.source == source:
                derived[entry.name] = {"PASSWORD_EXPIRES": str(entry.expires_at)}

    settings = read_settings(src.settings) if src.settings is not None else []
    per_who: dict[str, list[Setting]] = {}
    for setting in settings:
        per_who.setdefault(setting.who, []).append(setting)
    folded_logins = {login.lower() for login in by_login}
    for who, items in per_who.items():
        hit = who[1:] in domains if who.startswith("@") else who in folded_logins
        if not hit:
            result.notes.append(f"{src.settings}:{items[0].line}: {who} matches no login")

    for login in sorted(by_login, key=lambda s: s.encode(_ENC, _ERRORS)):
        entry = by_login[login]
        if per_who or login in derived:
            env = dict(derived.get(login, {}))
            domain = login.rpartition("@")[2] if "@" in login else None
            for setting in per_who.get("@" + domain, []) if domain else []:
                env[setting.name] = setting.value
            for setting in per_who.get(login.lower(), []):
                env[setting.name] = setting.value
            entry = Login(login, entry.hash, tuple(env.items()), entry.source)
        result.logins.append(entry)
    return result


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class WriteResult:
    path: Path
    written: bool
    count: int
    old_count: int | None
    reason: str


def check_target(path: Path, mode: int) -> None:
    """Refuse permissions that would expose the hashes, and world-writable directories."""
    if mode & 0o007:
        raise InputError(f"mode {mode:04o} gives other users access to password hashes",
                         path=path, hint="use 0640 or 0600")
    directory = path.parent
    try:
        st = os.stat(directory)
    except OSError as err:
        raise os_error(err, "cannot use the directory") from err
    if st.st_mode & stat.S_IWOTH:
        raise InputError("directory is world-writable: anyone could replace the file",
                         path=directory, hint="write auth.cdb into a directory only root can "
                         "write, e.g. /var/qmail/control")


def _read_existing(path: Path, force: bool) -> list[tuple[bytes, bytes]] | None:
    """The records of the current file; None if there is none (or it is corrupt and force)."""
    from qmailkit import cdb

    if not path.exists():
        return None
    try:
        with cdb.Reader(path) as reader:
            return list(reader.items())
    except InputError as err:
        if force:
            return None
        err.hint = "the shrink guard needs the old file; use --force to replace it"
        raise


def write_cdb(
    path: str | os.PathLike[str],
    records: Sequence[tuple[bytes, bytes]],
    *,
    mode: int = DEFAULT_MODE,
    owner: tuple[int, int] | None = None,
    only_if_changed: bool = False,
    max_shrink: float = DEFAULT_MAX_SHRINK,
    force: bool = False,
    lock_wait: bool | float = False,
) -> WriteResult:
    """Write auth.cdb atomically under a lock, with the empty/shrink guards.

    ``only_if_changed``: leave the file (and its mtime) alone when it already
    holds exactly these records with the wanted mode and owner.  A new set that
    is empty, or smaller than the old file's by more than ``max_shrink`` (a
    fraction), is refused unless ``force``.
    """
    from qmailkit import cdb
    from qmailkit.fsutil import locked

    path = Path(path)
    check_target(path, mode)
    new = sorted(records)
    with locked(path.parent / f".{path.name}.lock", wait=lock_wait, what="another mkauth run"):
        old = _read_existing(path, force)
        old_count = None if old is None else len(old)
        if only_if_changed and old is not None and sorted(old) == new:
            st = path.stat()
            right_owner = owner is None or all(
                want in (-1, have) for want, have in zip(owner, (st.st_uid, st.st_gid)))
            if stat.S_IMODE(st.st_mode) == mode and right_owner:
                return WriteResult(path, False, len(new), old_count, "unchanged")
        cdb.check_shrink(len(new), old_count, path=path, noun="logins",
                         empty_effect="fails every AUTH", max_shrink=max_shrink, force=force)
        cdb.write(path, new, mode=mode, owner=owner)
    if old is None:
        reason = "created"
    elif sorted(old) == new:
        reason = "rewritten (records unchanged; mode or owner fixed)"
    else:
        reason = "replaced"
    return WriteResult(path, True, len(new), old_count, reason)


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
            raise QmailkitError("cannot load libcrypt (libcrypt.so.1) to check passwords",
                                hint="install libcrypt1 (Debian/Ubuntu) or libxcrypt")
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
    return out is not None and hmac.compare_digest(out.encode(_ENC, _ERRORS),
                                                   hash_.encode(_ENC, _ERRORS))


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
            raise InputError(f"the value for {login!r} is not HASH[,VAR=\"value\"...]: "
                             f"{value!r}", path=path)
        env.append((match[1].decode(), match[2].decode(_ENC, _ERRORS)))
        pos = match.end()
    return Entry(login, hash_.decode(_ENC, _ERRORS), tuple(env), value)


def find(path: str | os.PathLike[str], login: str) -> Entry | None:
    """The auth.cdb record for ``login`` (an exact, case-sensitive key, as qmail-smtpd looks)."""
    from qmailkit import cdb

    with cdb.Reader(path) as reader:
        value = reader.get(login.encode(_ENC, _ERRORS))
    return None if value is None else parse_value(login, value, path)
