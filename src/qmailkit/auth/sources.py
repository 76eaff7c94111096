"""Gathering the logins that may authenticate: vpopmail mailboxes and system accounts.

Sources:

* vpopmail (``qmail.vpopmail.domains``): every domain in ``users/assign`` whose
  wildcard entry (``+domain-:...:HOME:-::``) points at a vpopmail domain
  directory; each mailbox with a usable hash and without vpopmail's NO_SMTP
  flag becomes ``name@domain``.  Alias domains (vaddaliasdomain adds
  ``+alias-`` with the real domain's directory) give ``name@alias`` too, as
  vchkpw accepts them.  A directory without vpasswd files is a SQL backend's:
  its mailboxes come from ``vuserinfo -D``.
* system accounts (only when a shadow file is given): accounts of the shadow
  file whose passwd entry has a uid in the window (default 500-65000, uid 0
  never).  A shadow account expiry date becomes ``PASSWORD_EXPIRES``.
* a settings file (``auth.settings``) adds ``VAR="value"`` pairs per login
  or per ``@domain``.

Hashes that can never match (empty, ``!...``, ``*...``) are left out and
reported as skipped.

A plain vpasswd file is read in bulk (a few bytes operations per file); a
file or a run that needs a second look is gathered again one login at a time
(``careful``), which says what was left out and why.  Both give the same
records: tests/test_auth_bulk.py holds the property test.
"""

from __future__ import annotations

import operator
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from qmailkit.auth.records import ENCODING, ERRORS, Login, encode_env, parse_value, unusable_hash
from qmailkit.auth.settings import Setting, read_settings
from qmailkit.errors import QmailkitError
from qmailkit.qmail import shadow, vpopmail

DEFAULT_QMAIL_HOME = Path("/var/qmail")


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
        found = []
        for key, value, source in zip(self.keys, self.values, self.sources(), strict=True):
            login = key.decode(ENCODING, ERRORS)
            entry = parse_value(login, value)
            found.append(Login(login, entry.hash, entry.env, source))
        return found


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


class _Excluder:
    """--exclude: logins and @domains left out (compared lower-cased)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.logins: set[str] = set()
        self.domains: set[str] = set()
        for name in names:
            folded = name.strip().lower()
            if folded.startswith("@"):
                self.domains.add(folded[1:])
            elif folded:
                self.logins.add(folded)

    def domain(self, domain: str) -> bool:
        return domain.lower() in self.domains

    def login(self, login: str) -> bool:
        return login.lower() in self.logins


# One run of logins: read in bulk from lines 1, 2, ... of a FILE, or one by one.
_Run = tuple[int, str | list[str]]


class Gathered:
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
        self.runs: list[_Run] = []
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
        why = unusable_hash(hash_)
        if why:
            self.skipped.append(Skipped(login, why, source))
            return False
        if self.careful:
            if login in self._first:
                self.skipped.append(Skipped(login, f"duplicate of {self._first[login]}", source))
                return False
            self._first[login] = source
        one_by_one = self.runs[-1][1] if self.runs else None
        if not isinstance(one_by_one, list):
            one_by_one = []
            self.runs.append((len(self.keys), one_by_one))
        one_by_one.append(source)
        self.keys.append(login.encode(ENCODING, ERRORS))
        self.hashes.append(hash_.encode(ENCODING, ERRORS))
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
        found: list[str] = []
        ends = [start for start, _ in self.runs[1:]] + [len(self.keys)]
        # No runs: no logins (ends then holds one end, for nothing).
        for (start, run), end in zip(self.runs, ends, strict=False):
            if isinstance(run, str):
                found.extend(f"{run}:{line}" for line in range(1, end - start + 1))
            else:
                found.extend(run)
        return found


# The bytes a hash may not hold (unusable_hash), "\n" aside: it joins hashes here.
_BAD_HASH_BYTES = b' ",\x7f' + bytes(range(32)).replace(b"\n", b"")
_GOOD_HASH_BYTES = bytes(set(range(256)) - set(_BAD_HASH_BYTES))


def _add_vpasswd_in_bulk(got: Gathered, domain: vpopmail.Domain) -> bool:
    """Add the mailboxes of a domain straight from the bytes of its vpasswd.

    Only when the file is the plain kind (``vpopmail.vpasswd_columns``) and no
    line needs a second look: a NO_SMTP flag, an unusable hash, an excluded
    login, a name that is not ASCII (lower-cased as str.lower does).  Returns
    False, having added nothing, otherwise: the careful path then handles it.
    """
    path = os.path.join(domain.directory, "vpasswd")
    try:
        data = vpopmail.read_vpasswd_bytes(path)
    except (OSError, QmailkitError):
        return False  # absent (vpasswd.cdb then) or unreadable: the careful path says which
    columns = vpopmail.vpasswd_columns(data)
    if columns is None:
        return False
    names, hashes = b"\n".join(columns.names), b"\n".join(columns.hashes)
    if not names.isascii():
        return False
    if any(gid and int(gid) & vpopmail.NO_SMTP for gid in set(columns.gids)):
        return False
    if (
        b"" in columns.hashes
        or hashes.startswith((b"!", b"*"))
        or b"\n!" in hashes
        or b"\n*" in hashes
        or hashes.translate(None, _GOOD_HASH_BYTES)
    ):
        return False
    if any(login.endswith("@" + domain.name) for login in got.excluder.logins):
        return False
    got.notes.append(
        f"{domain.source}: vpopmail domain {domain.name}: "
        f"{len(columns.names)} mailboxes from {path}"
    )
    at = b"@" + domain.name.encode(ENCODING, ERRORS)
    keys = names.lower().replace(b"\n", at + b"\n") + at if names else b""
    got.add_lines(keys, hashes, path)
    return True


# A mailbox as the careful path sees it: (name, hash, flag word, source).
_Mailbox = tuple[str, str, int, str]


def _domain_mailboxes(
    domain: vpopmail.Domain, vpopmail_home: Callable[[], Path]
) -> tuple[list[_Mailbox], str]:
    """Every mailbox of one domain, one by one, and where they came from."""
    if domain.sql:
        boxes, source = vpopmail.sql_mailboxes(vpopmail_home(), domain.name)
        return [(box.name, box.hash, box.flags, source) for box in boxes], source
    users_path, users = vpopmail.read_domain_users(domain.directory)
    source = str(users_path)
    return [
        (user.name, user.hash, user.gid, f"{users_path}:{user.line}" if user.line else source)
        for user in users
    ], source


def _gather_vpopmail(got: Gathered, src: Sources) -> None:
    """The mailboxes of every vpopmail domain (see the module docstring)."""
    known_home: list[Path] = []

    def vpopmail_home() -> Path:  # read from passwd once, and only for a SQL domain
        if not known_home:
            known_home.append(vpopmail.home(src.passwd, src.vpopmail_home))
        return known_home[0]

    found, notes = vpopmail.domains(src.qmail_home)
    got.notes.extend(notes)
    for domain in found:
        if got.excluder.domain(domain.name):
            got.skipped.append(Skipped("@" + domain.name, "domain excluded", domain.source))
            continue
        got.domains.add(domain.name)
        if not domain.sql and not got.careful and _add_vpasswd_in_bulk(got, domain):
            continue
        boxes, users_source = _domain_mailboxes(domain, vpopmail_home)
        got.notes.append(
            f"{domain.source}: vpopmail domain {domain.name}: "
            f"{len(boxes)} mailboxes from {users_source}"
        )
        for name, hash_, flags, source in boxes:
            login = f"{name.lower()}@{domain.name}"
            if flags & vpopmail.NO_SMTP:
                got.skipped.append(Skipped(login, "vpopmail NO_SMTP flag set", source))
                continue
            got.add(login, hash_, source)


def _gather_system(got: Gathered, src: Sources, shadow_path: Path) -> None:
    """The accounts of the shadow file with a uid in the window."""
    window = shadow.uids_in_window(shadow.read_passwd(src.passwd), src.min_uid, src.max_uid)
    for entry in shadow.read_shadow(shadow_path):
        source = f"{shadow_path}:{entry.line}"
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


def gather(src: Sources, careful: bool) -> Gathered:
    """Every login of the sources, in their order (see Gathered)."""
    got = Gathered(_Excluder(src.exclude), careful)
    if src.vpopmail:
        _gather_vpopmail(got, src)
    if src.shadow is not None:
        _gather_system(got, src, src.shadow)
    return got


def _in_key_order(got: Gathered) -> tuple[list[int], list[bytes]]:
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


def _settings_by_who(got: Gathered, src: Sources, keys: list[bytes]) -> dict[str, list[Setting]]:
    """The settings file's lines by login or @domain; a note for each that matches nothing."""
    per_who: dict[str, list[Setting]] = {}
    if src.settings is None:
        return per_who
    for setting in read_settings(src.settings):
        per_who.setdefault(setting.who, []).append(setting)
    if per_who:
        folded_logins = {key.decode(ENCODING, ERRORS).lower() for key in keys}
        for who, items in per_who.items():
            hit = who[1:] in got.domains if who.startswith("@") else who in folded_logins
            if not hit:
                got.notes.append(f"{src.settings}:{items[0].line}: {who} matches no login")
    return per_who


def collect(src: Sources) -> Collected:
    """Gather every login that may authenticate, with its hash and settings."""
    got = gather(src, careful=False)
    order, keys = _in_key_order(got)
    if any(map(operator.eq, keys, islice(keys, 1, None))):
        # A login twice: gather again one by one, which keeps the first and says so.
        got = gather(src, careful=True)
        order, keys = _in_key_order(got)
    values = list(map(got.hashes.__getitem__, order))
    nbytes = got.nbytes

    per_who = _settings_by_who(got, src, keys)
    if per_who or got.derived:
        for i, key in enumerate(keys):
            login = key.decode(ENCODING, ERRORS)
            if per_who or login in got.derived:
                added = encode_env(_env(login, got.derived, per_who)).encode(ENCODING, ERRORS)
                values[i] += added
                nbytes += len(added)

    def sources() -> list[str]:
        gathered = got.sources()
        return [gathered[i] for i in order]

    return Collected(keys, values, got.skipped, got.notes, sources, nbytes)
