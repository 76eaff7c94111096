"""qmail's delivery rules: who answers a local part, over one snapshot of the configuration.

``Snapshot`` is the configuration, each file read once, on first use, and kept:
control/rcpthosts and morercpthosts.cdb (``received``), locals,
virtualdomains, smtproutes, users/cdb (or users/assign), the passwd file, and
the ``.qmail`` files of the homes that were looked at.  Its methods are the
rules that decide, without warnings:

* qmail-send: ``route(domain)``: local (``control/locals``, or ``control/me``
  without locals), virtual (``control/virtualdomains`` ``domain:PREPEND``, the
  name then each ``.suffix``, last ``:PREPEND`` for every other domain; never
  for a domain in locals), or relayed (``control/smtproutes``);
* qmail-lspawn and qmail-getpw: ``deliverer(local)`` (users/cdb entries first,
  then the longest system account that owns its home and is not uid 0, else
  the alias user) and ``resolve_prefix(prefix)`` (the same for every name
  that starts with ``prefix``);
* qmail-local: ``qmail_file(home, dash, ext)`` (``.qmail{dash}{ext}``, then each
  ``-default`` from the longest prefix down; "." is written ":").

``Rules(snapshot, notes)`` applies qmail-local to a whole target and says
what it finds odd in ``notes``: ``verdict`` (does mail for one extension
bounce?) and ``local_parts`` (every local part a home, dash and extension
prefix answers, and whether each bounces: ``Entry`` items, or ``Bulk`` for a
vpopmail domain's mailboxes).  Values are validrcptto's: ``ACCEPT`` (empty)
or ``REJECT`` (``-``).
"""

from __future__ import annotations

import bisect
import enum
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from qmailkit import cdb
from qmailkit.errors import InputError, QmailkitError
from qmailkit.qmail import assign as users_assign
from qmailkit.qmail import control, vpopmail
from qmailkit.qmail.dotqmail import (
    Delivery,
    HomeFiles,
    Kind,
    classify_text,
    is_default,
    list_home,
    read_file,
)
from qmailkit.qmail.shadow import PasswdEntry, read_passwd
from qmailkit.qmail.validrcptto import ENCODING, ERRORS, fold
from qmailkit.qmail.vpopmail import (
    deliverable,
    mailbox_names,
    read_vpasswd_bytes,
    read_vpasswd_cdb,
)

ACCEPT = b""
REJECT = b"-"

Origin = tuple[bytes, str]  # (value, source)

# A .qmail name with more colons gets two spellings, not 2**n: a file name in a
# user's home must not blow up the cdb.
MAX_COLONS = 6
GETPW_USERLEN = 32  # qmail-getpw's buffer for a user name, its NUL included


def folded_bytes(text: str) -> bytes:
    """``text`` as key bytes, lower-cased as qmail-smtpd's case_lowerb does (ASCII only)."""
    return text.encode(ENCODING, ERRORS).lower()


def safe_extension(ext: str) -> str:
    """An extension as qmail-local looks it up: lower case, "." written ":"."""
    return fold(ext).replace(".", ":") if ext else ext


@dataclass(frozen=True, slots=True)
class Bulk:
    """Many local parts from one source (a vpasswd file): kept as one item for speed."""

    names: list[bytes]  # folded local parts; with keyed, whole keys (local@domain)
    origin: Origin
    keyed: bool = False


Entry = tuple[str, bytes, str] | Bulk  # (local part, value, source), or a Bulk


# -- control files ---------------------------------------------------------------


@dataclass(frozen=True)
class ControlMap:
    """A ``key:value`` control file (virtualdomains, smtproutes): folded key -> (value, source)."""

    path: Path
    entries: dict[str, tuple[str, str]]


def read_map(path: Path) -> ControlMap:
    entries: dict[str, tuple[str, str]] = {}
    where = f"{path}:"
    for number, value in control.read_control_numbered(path):
        key, sep, rest = value.partition(":")
        if not sep:
            raise InputError(
                f"no ':' in {value!r}",
                path=path,
                line=number,
                hint=f"{path.name} lines are DOMAIN:VALUE",
            )
        entries.setdefault(fold(key), (rest, f"{where}{number}"))
    return ControlMap(path, entries)


def suffix_lookup(
    table: dict[str, tuple[str, str]], domain: str, *, catch_all: bool = False
) -> tuple[str, str] | None:
    """qmail's host lookup: the name, then each ``.suffix`` of it; with ``catch_all``
    (virtualdomains, as qmail-send reads it) last the empty name ``:prepend``."""
    if domain in table:
        return table[domain]
    if not table:
        return None
    dot = domain.find(".")
    while dot >= 0:
        if domain[dot:] in table:
            return table[domain[dot:]]
        dot = domain.find(".", dot + 1)
    return table.get("") if catch_all else None


def read_received(control_dir: Path) -> dict[str, str]:
    """The domains qmail-smtpd accepts mail for (rcpthosts, morercpthosts.cdb): folded -> source."""
    rcpthosts = control_dir / "rcpthosts"
    if not rcpthosts.exists():
        raise InputError(
            "control/rcpthosts is missing",
            path=rcpthosts,
            hint="without it qmail-smtpd accepts mail for every domain",
        )
    domains: dict[str, str] = {}
    where = f"{rcpthosts}:"
    for number, value in control.read_control_numbered(rcpthosts):
        domains.setdefault(fold(value), f"{where}{number}")
    more = control_dir / "morercpthosts.cdb"
    if more.exists():
        with cdb.Reader(more) as reader:
            for key in reader:
                name = fold(key.decode(ENCODING, ERRORS))
                if not name:
                    raise InputError(
                        "morercpthosts.cdb holds an empty domain",
                        path=more,
                        hint="fix control/morercpthosts and run qmail-newmrh",
                    )
                domains.setdefault(name, str(more))
    return domains


# -- users/assign ------------------------------------------------------------------


@dataclass
class AssignIndex:
    """users/cdb entries indexed for qmail-lspawn's lookups (built once)."""

    wild: dict[str, users_assign.Assignment]  # folded prefix -> first entry
    exact: list[tuple[str, users_assign.Assignment]]  # sorted by folded local name
    chars: str  # the wildcard characters
    exact_map: dict[str, users_assign.Assignment]  # folded local name -> first entry

    @classmethod
    def of(cls, entries: list[users_assign.Assignment]) -> AssignIndex:
        wild = {fold(e.local): e for e in reversed(entries) if e.wildcard}
        exact = sorted(
            ((fold(e.local), e) for e in entries if not e.wildcard), key=lambda item: item[0]
        )
        # As in qmail-lspawn: the folded name is compared with the characters
        # as qmail-newu stored them (not folded).
        chars = users_assign.wildchars(entries).decode(ENCODING, ERRORS)
        exact_map = {fold(e.local): e for e in reversed(entries) if not e.wildcard}
        return cls(wild, exact, chars, exact_map)

    def lookup(self, local: str) -> users_assign.Assignment | None:
        """qmail-lspawn's users/cdb search for a (folded) local name."""
        found = self.exact_map.get(local)
        if found is not None:
            return found
        return self.wildcard(local)

    def wildcard(self, local: str) -> users_assign.Assignment | None:
        """The wildcard entry for the longest prefix of ``local`` that ends at a wildcard
        character (or is empty)."""
        for end in range(len(local), -1, -1):
            if end and local[end - 1] not in self.chars:
                continue
            found = self.wild.get(local[:end])
            if found is not None:
                return found
        return None

    def exact_under(self, prefix: str) -> list[tuple[str, users_assign.Assignment]]:
        """The exact entries whose (folded) name starts with ``prefix``, in name order."""
        exact = self.exact
        i = bisect.bisect_left(exact, prefix, key=lambda item: item[0])
        found = []
        while i < len(exact) and exact[i][0].startswith(prefix):  # no copy of the tail
            found.append(exact[i])
            i += 1
        return found


@dataclass
class Assignments:
    """users/cdb (or users/assign) as qmail-lspawn reads it."""

    entries: list[users_assign.Assignment]
    source: str  # the file they came from; "" when there is none
    note: str | None = None  # a warning about the pair of files

    @cached_property
    def index(self) -> AssignIndex:
        return AssignIndex.of(self.entries)

    def where(self, entry: users_assign.Assignment) -> str:
        return f"{self.source}:{entry.line}" if entry.line else self.source


def read_assignments(qmail_home: Path) -> Assignments:
    users = qmail_home / "users"
    db = users / "cdb"
    text = users / "assign"
    if db.exists():
        note = None
        if text.exists() and text.stat().st_mtime > db.stat().st_mtime:
            note = (
                f"{text} is newer than {db}: run qmail-newu "
                "(qmail uses users/cdb, so this list does too)"
            )
        entries, _chars = users_assign.read_cdb(db)
        return Assignments(entries, str(db), note)
    if text.exists():
        note = f"{db} is missing: qmail ignores {text} until qmail-newu runs"
        return Assignments(users_assign.read(text), str(text), note)
    return Assignments([], "")


# -- qmail-send's routes -----------------------------------------------------------


class RouteKind(enum.Enum):
    LOCAL = "local"
    VIRTUAL = "virtual"
    RELAY = "relay"


@dataclass(frozen=True, slots=True)
class Route:
    """How qmail-send handles a domain: ``detail`` is the locals file (local), the
    prepend (virtual) or the smtproutes line (relay)."""

    kind: RouteKind
    detail: str


@dataclass(frozen=True, slots=True)
class Single:
    """A ``user@domain:PREPEND`` line of virtualdomains: one (folded) address, its domain,
    the prepend as written, and the line."""

    address: str
    domain: str
    prepend: str
    source: str

    @property
    def local(self) -> str:
        """The local name qmail-send makes of the address: ``PREPEND-user``."""
        return f"{fold(self.prepend)}-{self.address.rpartition('@')[0]}"


# -- the snapshot --------------------------------------------------------------------


@dataclass
class Snapshot:
    """The configuration qmail, vpopmail and fastforward read, each file once (on first use).

    The rules that need no warnings are its methods; a new snapshot sees new files.
    """

    qmail_home: Path = Path("/var/qmail")
    passwd: Path = Path("/etc/passwd")
    delimiter: str = "-"
    vpopmail_home_given: Path | None = None  # default: ~vpopmail from the passwd file
    qmail_ext_given: bool | None = None  # vpopmail's --enable-qmail-ext; None: detect
    vpopmail_sql: bool | None = None  # None: vuserinfo/valias when a domain has no vpasswd
    _homes: dict[str, HomeFiles | QmailkitError] = field(default_factory=dict, repr=False)
    _dashed: dict[tuple[str, str], HomeFiles] = field(default_factory=dict, repr=False)
    _deliveries: dict[str, Delivery] = field(default_factory=dict, repr=False)
    _by_text: dict[bytes, Delivery] = field(default_factory=dict, repr=False)
    _fastforward: dict[str, list[bytes]] = field(default_factory=dict, repr=False)
    _getpw_problems: dict[str, str | None] = field(default_factory=dict, repr=False)

    @property
    def control(self) -> Path:
        return self.qmail_home / "control"

    # -- control files, users/cdb, passwd ------------------------------------------

    @cached_property
    def received(self) -> dict[str, str]:
        return read_received(self.control)

    @cached_property
    def locals(self) -> tuple[Path, frozenset[str]]:
        path, names = control.locals_file(self.qmail_home)
        return path, frozenset(names)

    @cached_property
    def virtualdomains(self) -> ControlMap:
        return read_map(self.control / "virtualdomains")

    @cached_property
    def smtproutes(self) -> ControlMap:
        return read_map(self.control / "smtproutes")

    @cached_property
    def assignments(self) -> Assignments:
        return read_assignments(self.qmail_home)

    @cached_property
    def accounts(self) -> list[PasswdEntry]:
        return read_passwd(self.passwd)

    @cached_property
    def _accounts_by_name(self) -> dict[str, PasswdEntry]:
        by_name: dict[str, PasswdEntry] = {}
        for account in self.accounts:
            by_name.setdefault(account.name, account)
        return by_name

    def account(self, name: str) -> PasswdEntry | None:
        return self._accounts_by_name.get(name)

    @cached_property
    def alias_home(self) -> str:
        account = self.account("alias")
        return account.home if account else str(self.qmail_home / "alias")

    @cached_property
    def vpopmail_home(self) -> Path:
        return vpopmail.home(self.passwd, self.vpopmail_home_given, default=vpopmail.DEFAULT_HOME)

    @cached_property
    def qmail_ext(self) -> bool:
        if self.qmail_ext_given is not None:
            return self.qmail_ext_given
        return vpopmail.qmail_ext(self.vpopmail_home)

    @cached_property
    def default_delivery(self) -> Delivery:
        """What qmail-local does when no .qmail file takes an address without a dash."""
        path = self.control / "defaultdelivery"
        lines = control.read_control(path)
        if lines:
            return classify_text("\n".join(lines), str(path))
        return Delivery(Kind.DELIVER, str(path))

    @cached_property
    def local_label(self) -> str:
        """The local domains, as warnings about the users they share name them."""
        _path, names = self.locals
        local = sorted(d for d in self.received if d in names and not d.startswith("."))
        if len(local) == 1:
            return local[0]
        return f"D for each local domain D ({', '.join(local)})"

    # -- qmail-send ------------------------------------------------------------------

    def route(self, domain: str, source: str) -> tuple[Route | None, list[str]]:
        """How qmail-send handles ``domain`` (accepted by ``source``), and what is wrong
        with the configuration for it (a domain both local and virtual, say)."""
        locals_path, local_names = self.locals
        virtual = self.virtualdomains
        routes = self.smtproutes
        problems: list[str] = []
        is_local = domain in local_names
        # qmail-send looks at virtualdomains only for a domain not in locals.
        prepend = None if is_local else suffix_lookup(virtual.entries, domain, catch_all=True)
        if prepend is not None and not prepend[0]:
            prepend = None  # "domain:" exempts a domain from a wildcard entry
        relay = suffix_lookup(routes.entries, domain)
        if is_local and domain in virtual.entries:
            problems.append(
                f"{domain} is in both {locals_path} and "
                f"{virtual.entries[domain][1]}: remove it from one of them"
            )
        if relay is not None and (is_local or prepend is not None):
            where = str(locals_path) if is_local or prepend is None else prepend[1]
            problems.append(
                f"{domain} is in both {where} and {relay[1]}: "
                "a relayed domain cannot also be delivered here"
            )
        if is_local:
            return Route(RouteKind.LOCAL, str(locals_path)), problems
        if prepend is not None:
            return Route(RouteKind.VIRTUAL, prepend[0]), problems
        if relay is not None:
            return Route(RouteKind.RELAY, relay[1]), problems
        problems.append(
            f"{domain} ({source}) is accepted but nothing handles it: it is not in "
            f"{locals_path}, {virtual.path} or {routes.path}"
        )
        return None, problems

    @cached_property
    def prepends(self) -> frozenset[str]:
        """``PREPEND-`` of every virtualdomains domain entry: the local names vpopmail's
        ``+PREPEND-`` users/cdb entries serve for virtual domains."""
        return frozenset(
            fold(prepend) + self.delimiter
            for key, (prepend, _source) in self.virtualdomains.entries.items()
            if "@" not in key and prepend
        )

    def singles(self) -> list[Single]:
        """virtualdomains' ``user@domain:PREPEND`` lines, in file order."""
        found = []
        for key, (prepend, source) in self.virtualdomains.entries.items():
            _local, at, domain = key.rpartition("@")
            if at and prepend:
                found.append(Single(key, domain, prepend, source))
        return found

    # -- qmail-lspawn and qmail-getpw --------------------------------------------------

    def getpw_problem(self, account: PasswdEntry) -> str | None:
        """Why qmail-getpw never delivers to this account: None if it does, "" if that
        goes without saying (uid 0, capitals).

        qmail-getpw asks getpwnam for a name lower-cased and shorter than 32
        characters, and takes the account only if its uid is not 0 and it owns
        its home directory (else it goes on with a shorter name, then the alias user).
        """
        if account.name in self._getpw_problems:
            return self._getpw_problems[account.name]
        problem: str | None = None
        if account.uid == 0 or not account.name or account.name != fold(account.name):
            problem = ""
        elif len(account.name) >= GETPW_USERLEN:
            problem = f"qmail-getpw looks up names of at most {GETPW_USERLEN - 1} characters"
        else:
            problem = _home_ownership_problem(account)
        self._getpw_problems[account.name] = problem
        return problem

    def getpw(self, name: str) -> str | None:
        """The home of the account qmail-getpw takes for the (folded) user name, if any."""
        account = self.account(name)
        if account is None:
            # No passwd entry for the alias user: qmail's own home for it stands in.
            return self.alias_home if name == "alias" else None
        return account.home if self.getpw_problem(account) is None else None

    def deliverer(self, local: str) -> tuple[str, str, str]:
        """Who delivers the (folded) local name, as qmail-lspawn and qmail-getpw decide:
        the home, dash and extension qmail-local gets."""
        assignments = self.assignments
        if assignments.entries:
            entry = assignments.index.lookup(local)
            if entry is not None:
                ext = entry.ext + local[len(entry.local) :] if entry.wildcard else entry.ext
                return entry.home, entry.dash, ext
        delimiter = self.delimiter
        end = len(local)
        while end > 0:  # the whole name, then up to each delimiter, longest first
            home = self.getpw(local[:end])
            if home is not None:
                return home, "-" if end < len(local) else "", local[end + len(delimiter) :]
            end = local.rfind(delimiter, 0, end)
        return self.alias_home, "-", local

    def resolve_prefix(self, prefix: str) -> tuple[str, str, str, str]:
        """Who delivers local names starting with ``prefix``: (home, dash, ext, description)."""
        assignments = self.assignments
        if assignments.entries:
            index = assignments.index
            for end in range(len(prefix), -1, -1):
                if end and prefix[end - 1] not in index.chars:
                    continue
                entry = index.wild.get(prefix[:end])
                if entry is not None:
                    ext = fold(entry.ext) + prefix[end:]
                    return entry.home, entry.dash, ext, f"users/assign +{entry.local}"
        # qmail-getpw: the longest user name that is the prefix up to a delimiter.
        delimiter = self.delimiter
        cut = len(prefix) - len(delimiter)
        while cut > 0:
            home = self.getpw(prefix[:cut])
            if home is not None:
                return home, "-", prefix[cut + len(delimiter) :], f"user {prefix[:cut]}"
            cut = prefix.rfind(delimiter, 0, cut)
        return self.alias_home, "-", prefix, "alias user"

    # -- qmail-local ---------------------------------------------------------------------

    def home_files(self, home: str, dash: str) -> HomeFiles:
        """The .qmail files of ``home`` (the directory is listed once, whatever the dash);
        QmailkitError if it cannot be listed."""
        found = self._homes.get(home)
        if found is None:
            try:
                found = list_home(home)
            except QmailkitError as err:
                found = err
            self._homes[home] = found
        if isinstance(found, QmailkitError):
            raise found
        if dash == found.dash:
            return found
        other = self._dashed.get((home, dash))
        if other is None:
            other = self._dashed[(home, dash)] = found.with_dash(dash)
        return other

    def shape(self, path: str) -> Delivery:
        """What the .qmail file at ``path`` does, as found for the first file with its text."""
        found = self._deliveries.get(path)
        if found is None:
            data = read_file(path)
            # Many domains hold the same .qmail-default: parse each text once.
            found = self._by_text.get(data)
            if found is None:
                found = classify_text(data.decode(ENCODING, ERRORS), path)
                self._by_text[data] = found
            self._deliveries[path] = found
        return found

    def delivery(self, path: str) -> Delivery:
        """What the .qmail file at ``path`` does (``dotqmail.classify``)."""
        shape = self.shape(path)
        if shape.path == path:
            return shape
        return Delivery(shape.kind, path, shape.cdb, shape.passthrough, shape.fallback)

    def value(self, path: str) -> bytes:
        """REJECT if the .qmail file at ``path`` bounces, else ACCEPT."""
        return REJECT if self.shape(path).kind is Kind.BOUNCE else ACCEPT

    def qmail_file(self, home: str, dash: str, ext: str) -> str | None:
        """qmail-local's search for the file that takes ``ext`` at (home, dash), or None:
        ``.qmail{dash}{ext}``, then each ``-default`` from the longest prefix down."""
        files = self.home_files(home, dash)
        safe = safe_extension(ext)
        head = ".qmail" + dash
        if head + safe in files.present:
            return files.path(head + safe)
        for end in range(len(safe), -1, -1):
            if (not end or safe[end - 1] == "-") and f"{head}{safe[:end]}default" in files.present:
                return files.path(f"{head}{safe[:end]}default")
        return None

    def fastforward_keys(self, database: str, named_in: str) -> list[bytes]:
        """The addresses (``local@host``, lower-cased) of a fastforward cdb."""
        keys = self._fastforward.get(database)
        if keys is None:
            if not os.path.exists(database):
                raise QmailkitError(
                    f"fastforward database named in {named_in} is missing",
                    path=database,
                    hint="run newaliases or setforward",
                )
            with cdb.Reader(database) as reader:
                keys = [key[1:].lower() for key in reader if key[:1] == b":"]
            self._fastforward[database] = keys
        return keys


def _home_ownership_problem(account: PasswdEntry) -> str | None:
    try:
        owner = os.stat(account.home).st_uid
    except FileNotFoundError:
        return f"{account.home}: home directory does not exist"
    except OSError as err:
        return f"{account.home}: cannot stat home directory: {err.strerror}"
    if owner != account.uid:
        return (
            f"its home {account.home} is owned by uid {owner}, not {account.uid} "
            "(qmail-getpw delivers only to an account that owns its home)"
        )
    return None


# -- qmail-local over a whole target, with warnings -------------------------------------


class Rules:
    """qmail-local's answers for one snapshot; what it finds odd is added to ``notes``."""

    def __init__(self, snapshot: Snapshot, notes: list[str]) -> None:
        self.snapshot = snapshot
        self.notes = notes

    def home(self, home: str, dash: str) -> HomeFiles:
        """``Snapshot.home_files``, with a note for every .qmail name qmail-local ignores."""
        files = self.snapshot.home_files(home, dash)
        self.notes.extend(files.skipped)  # once per domain (repeats are dropped at the end)
        return files

    def verdict(self, home: str, dash: str, ext: str, source: str, what: str) -> bytes:
        """What qmail-local does with mail for ``ext`` at (home, dash): accept, or reject when
        the file bounces or there is none (with a dash: "no mailbox here by that name").

        ``source`` and ``what`` name the mapping and the address in a note."""
        try:
            self.home(home, dash)
            path = self.snapshot.qmail_file(home, dash, ext)
        except QmailkitError as err:
            self.notes.append(f"{source}: {what} rejected: {err}")
            return REJECT
        if path is not None:
            return self.snapshot.value(path)
        if dash:
            self.notes.append(
                f"{source}: {what} rejected: qmail-local finds neither "
                f"{home}/.qmail{dash}{safe_extension(ext)} nor a -default file for it"
            )
            return REJECT
        return REJECT if self.snapshot.default_delivery.kind is Kind.BOUNCE else ACCEPT

    def local_parts(
        self, home: str, dash: str, ext: str, *, lead: str, domain: str, what: str
    ) -> list[Entry]:
        """The local-part keys (``""`` = the whole domain) one target answers.

        ``ext`` is the part of the extension fixed by the mapping (vpopmail: "");
        ``lead`` is the part of the local name in front of what becomes the rest
        of the extension (system user bob: "bob-"; vpopmail domain: "").
        ``domain`` is "" for the users every local domain shares.
        """
        files = self.home(home, dash)
        fixed = safe_extension(ext)  # file names spell the extension as qmail-local does
        snapshot = self.snapshot
        exact: list[Entry] = []
        wild: list[Entry] = []
        catch: tuple[str, str] | None = None  # (wildcard prefix, file name)
        for file_ext, name in files.names.items():
            if is_default(file_ext, snapshot.delimiter):
                prefix = file_ext[: -len("default")]
                if len(prefix) > len(fixed) and prefix.startswith(fixed):
                    path = files.path(name)
                    value = snapshot.value(path)
                    rest = prefix[len(fixed) :]
                    if ":" not in rest:  # the usual name: one spelling (a hot loop)
                        wild.append((lead + rest + "default", value, path))
                    else:
                        wild.extend(
                            (lead + spelling + "default", value, path)
                            for spelling in self.spellings(rest, path)
                        )
                elif fixed.startswith(prefix) and (catch is None or len(prefix) > len(catch[0])):
                    catch = (prefix, name)
            elif len(file_ext) > len(fixed) and file_ext.startswith(fixed):
                path = files.path(name)
                value = snapshot.value(path)
                rest = file_ext[len(fixed) :]
                if ":" not in rest:
                    exact.append((lead + rest, value, path))
                else:
                    exact.extend(
                        (lead + spelling, value, path) for spelling in self.spellings(rest, path)
                    )
        found = exact + wild
        if catch is not None:
            found.extend(
                self._catch_all(files, catch, fixed=fixed, lead=lead, domain=domain, what=what)
            )
        return found

    def spellings(self, safe: str, path: str) -> list[str]:
        """The extensions qmail-local turns into ``safe``: each ":" may be written "." or ":"."""
        if ":" not in safe:
            return [safe]
        colons = safe.count(":")
        if colons > MAX_COLONS:
            self.notes.append(
                f"{path}: {colons} colons: only the spellings with all '.' and all ':' are listed"
            )
            return [safe.replace(":", "."), safe]
        found = [""]
        for i, part in enumerate(safe.split(":")):
            found = [head + sep + part for head in found for sep in ((".", ":") if i else ("",))]
        return found

    def _catch_all(
        self,
        files: HomeFiles,
        catch: tuple[str, str],
        *,
        fixed: str,
        lead: str,
        domain: str,
        what: str,
    ) -> list[Entry]:
        prefix, name = catch
        path = files.path(name)
        found = self.snapshot.delivery(path)
        whole = lead + "default" if lead else ""
        where = f"{what} ({path})"
        if found.kind is Kind.BOUNCE:
            return [(whole, REJECT, path)]
        if found.kind is Kind.VPOP_LIST:
            return self._mailboxes(files.home, lead, domain)
        if found.kind is Kind.FASTFORWARD and prefix == fixed and found.cdb:
            entries = self._fastforward(files.home, found, lead, domain)
            if found.passthrough and found.fallback not in (None, Kind.BOUNCE):
                self.notes.append(
                    f"{where}: every address is accepted (fastforward -p passes unknown names on)"
                )
                entries.append((whole, ACCEPT, path))
            return entries
        at = domain or self.snapshot.local_label  # local domains share one list of users
        self.notes.append(f"{where}: every address {lead}*@{at} is accepted (catch-all)")
        return [(whole, ACCEPT, path)]

    def _fastforward(self, home: str, found: Delivery, lead: str, domain: str) -> list[Entry]:
        database = found.cdb or ""
        if not os.path.isabs(database):
            database = os.path.join(home, database)
        keys = self.snapshot.fastforward_keys(database, found.path)
        source = f"{database} (fastforward in {found.path})"
        wanted = folded_bytes(domain)
        entries: list[Entry] = []
        for key in keys:
            local, at, host = key.rpartition(b"@")
            if not at:
                continue
            if host in (wanted, b"") and (local or host):
                name = local.decode(ENCODING, ERRORS)
                whole = lead + "default" if lead else ""
                entries.append((lead + name if name else whole, ACCEPT, source))
        return entries

    def _mailboxes(self, domain_dir: str, lead: str, domain: str) -> list[Entry]:
        # The whole keys at once (the C scanner appends "@domain"), except for the list
        # the local domains share.
        suffix = folded_bytes("@" + domain) if domain else b""
        names, source = self.vpopmail_users(domain_dir, domain, suffix)
        if lead:
            lead_bytes = folded_bytes(lead)
            names = [lead_bytes + name for name in names]
        keyed = bool(suffix)
        entries: list[Entry] = [Bulk(names, (ACCEPT, source), keyed)]
        if self.snapshot.qmail_ext:
            tail = folded_bytes(self.snapshot.delimiter + "default") + suffix
            cut = len(suffix)
            entries.append(
                Bulk(
                    [name[: len(name) - cut] + tail for name in names],
                    (ACCEPT, source + " (QMAIL_EXT)"),
                    keyed,
                )
            )
        return entries

    def vpopmail_users(
        self, domain_dir: str, domain: str, suffix: bytes = b""
    ) -> tuple[list[bytes], str]:
        """Mailbox names (each followed by ``suffix``) of a vpopmail domain that can get
        mail, and their source."""
        text = f"{domain_dir}/vpasswd"
        use_sql = self.snapshot.vpopmail_sql
        if use_sql is not True:
            try:
                data = read_vpasswd_bytes(text)
            except FileNotFoundError:
                data = None
            if data is not None:
                names, notes = mailbox_names(data, text, suffix)
                self.notes.extend(notes)
                return names, text
            if vpopmail.has_user_files(domain_dir):  # vpasswd.cdb alone (no vpasswd)
                db = os.path.join(domain_dir, "vpasswd.cdb")
                names = [e.name.encode(ENCODING, ERRORS) for e in read_vpasswd_cdb(db)]
                names, notes = deliverable(names, db)
                self.notes.extend(notes)
                return [name + suffix for name in names], db
            if use_sql is False:
                raise InputError(
                    "vpopmail domain has neither vpasswd nor vpasswd.cdb", path=domain_dir
                )
        names, source = vpopmail.sql_users(self.snapshot.vpopmail_home, domain)
        names, notes = deliverable(names, source)
        self.notes.extend(notes)
        return [name + suffix for name in names], source
