"""The qmail configuration gathered into the addresses it accepts, each with its source.

``build(Options)`` reads the configuration the way qmail, vpopmail and
fastforward do and returns ``Recipients``: for every domain in rcpthosts /
morercpthosts.cdb, the validrcptto keys (``local@domain``,
``prefix-default@domain``, ``@domain``) with their value (empty = accept,
``-`` = explicit reject) and the file that produced them.

Which addresses exist (qmail-send, qmail-lspawn, qmail-getpw, qmail-local):

* a domain in ``control/locals`` (or ``control/me`` without locals) is
  delivered locally: users/cdb (or users/assign) entries first, then system
  accounts qmail-getpw takes (uid not 0, owner of their home: ``user`` and
  ``user-EXT`` from their ``.qmail-EXT`` files), then the alias user
  (``~alias/.qmail-NAME``; a fastforward ``.qmail-default``);
* a domain in ``control/virtualdomains`` (``domain:PREPEND``; ``:PREPEND``
  for every other domain; never for a domain in locals) turns ``x@domain``
  into the local name ``PREPEND-x``, delivered by whoever owns that name
  (users/cdb wildcard, e.g. vpopmail's ``+domain-``; a system user; else the
  alias user); ``user@domain:PREPEND`` entries name one address;
* a domain in ``control/smtproutes`` is relayed: the addresses in
  ``SMTPROUTES_DIR/DOMAIN`` if that file exists, else ``@domain``.

Whether an address found this way is accepted is what qmail-local would do
with it: the ``.qmail`` file it reaches (``dotqmail``) bounces or not, and
no file at all (with a dash) is "no mailbox here".  Every name is lower-cased
(ASCII only, as qmail-smtpd does) and appears once; when two sources give the
same key, the one qmail would use wins.
"""

from __future__ import annotations

import bisect
import hashlib
import os
import pickle
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from qmailkit.errors import InputError, QmailkitError, os_error
from qmailkit.fsutil import read_bounded
from qmailkit.qmail import assign as assign_mod
from qmailkit.qmail import control
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
from qmailkit.qmail.validrcptto import fold
from qmailkit.qmail.vpopmail import deliverable, mailbox_names, read_vpasswd_bytes

ENC = "utf-8"
ERRS = "surrogateescape"
ACCEPT = b""
REJECT = b"-"

Origin = tuple[bytes, str]  # (value, source)


def _b(text: str) -> bytes:
    # bytes.lower() folds ASCII only, exactly like qmail-smtpd's case_lowerb (and fold()).
    return text.encode(ENC, ERRS).lower()


@dataclass(frozen=True, slots=True)
class Bulk:
    """Many local parts from one source (a vpasswd file): kept as one item for speed."""

    names: list[bytes]  # folded local parts; with keyed, whole keys (local@domain)
    origin: Origin
    keyed: bool = False


Entry = tuple[str, bytes, str] | Bulk  # (local part, value, source), or a Bulk


@dataclass
class Options:
    qmail_home: Path = Path("/var/qmail")
    vpopmail_home: Path | None = None  # default: ~vpopmail from the passwd file
    passwd: Path = Path("/etc/passwd")
    uid_min: int = 500
    uid_max: int = 65000
    uid_ignore: frozenset[int] = frozenset()
    skip_alias: bool = False  # -n: leave out the alias user
    smtproutes_dir: Path | None = None
    exclude: frozenset[str] = frozenset()
    qmail_ext: bool | None = None  # vpopmail built with --enable-qmail-ext; None: detect
    vpopmail_sql: bool | None = None  # None: use vuserinfo/valias when a domain has no vpasswd
    delimiter: str = "-"
    jobs: int | None = None  # processes to use (None: one per CPU); small configurations use one


@dataclass(slots=True)
class DomainKeys:
    """One domain's keys in the canonical (sorted) order, with their values and sources."""

    _keys: list[bytes] | None  # None: only _joined is at hand (from a worker)
    values: list[bytes] | None  # None: every value is empty (accept)
    _origins: list[Origin] | None = None  # per key (value, source)
    # From a worker: the distinct origins and, per key, an index into them.
    _packed: tuple[list[Origin], str, bytes] | None = None
    _joined: bytes | None = None  # the keys joined by newlines, if already at hand
    _digest: bytes | None = None

    @property
    def keys(self) -> list[bytes]:
        if self._keys is None:  # split only when asked: writing the cdb needs only _joined
            self._keys = self._joined.split(b"\n") if self._joined else []
        return self._keys

    def count(self) -> int:
        if self._keys is not None:
            return len(self._keys)
        return self._joined.count(b"\n") + 1 if self._joined else 0

    def joined_keys(self) -> bytes:
        if self._joined is None:
            self._joined = b"\n".join(self.keys)
        return self._joined

    def joined_values(self) -> bytes | None:
        """The values joined by newlines; None if every value is empty."""
        return None if self.values is None else b"\n".join(self.values)

    def digest(self) -> bytes:
        """A sha256 of the records (what mkvalidrcptto -c compares with its last run).

        Each process takes it for the domains it did, so the parent need not.
        """
        if self._digest is None:
            values = self.joined_values()
            found = hashlib.sha256(b"%d\0" % self.count())
            found.update(self.joined_keys())
            found.update(b"\0" if values is None else b"\0\0" + values)
            self._digest = found.digest()
        return self._digest

    def value_list(self) -> list[bytes]:
        return self.values if self.values is not None else [ACCEPT] * self.count()

    def origins(self) -> list[Origin]:
        if self._origins is None:
            assert self._packed is not None
            distinct, typecode, which = self._packed
            self._origins = list(map(distinct.__getitem__, array(typecode, which)))
            self._packed = None
        return self._origins

    def pack(self) -> tuple[list[Origin], str, bytes]:
        """The origins compactly (to send from a worker): few distinct ones per domain."""
        if self._packed is not None:
            return self._packed
        origins = self.origins()
        distinct = list(dict.fromkeys(origins))
        if len(distinct) == 1:
            return distinct, "B", bytes(len(origins))
        index = {origin: i for i, origin in enumerate(distinct)}
        typecode = "B" if len(distinct) <= 256 else "I"
        return distinct, typecode, array(typecode, map(index.__getitem__, origins)).tobytes()

    def find(self, key: bytes) -> int | None:
        i = bisect.bisect_left(self.keys, key)
        return i if i < len(self.keys) and self.keys[i] == key else None


@dataclass
class Recipients:
    """The result: per domain its keys, values and sources; plus warnings for the admin."""

    domains: dict[bytes, DomainKeys] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(d.count() for d in self.domains.values())

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) in the canonical order: domains sorted, then keys sorted."""
        for domain in sorted(self.domains):
            found = self.domains[domain]
            yield from zip(found.keys, found.value_list())

    def explain(self) -> Iterator[tuple[bytes, bytes, str]]:
        for domain in sorted(self.domains):
            found = self.domains[domain]
            for key, (value, source) in zip(found.keys, found.origins()):
                yield key, value, source

    def _origin(self, key: bytes) -> Origin | None:
        at = key.rfind(b"@")
        found = self.domains.get(key[at + 1 :]) if at >= 0 else None
        i = found.find(key) if found is not None else None
        return None if i is None else found.origins()[i]  # type: ignore[union-attr]

    def get(self, key: bytes) -> bytes | None:
        """A value by key (the ``get`` that validrcptto.lookup wants)."""
        origin = self._origin(key)
        return origin[0] if origin else None

    def source(self, key: bytes) -> str | None:
        origin = self._origin(key)
        return origin[1] if origin else None

    def foreign_domain(self, address: str) -> str | None:
        """The (folded) domain of ``address`` if it is not one of the received domains
        (rcpthosts, morercpthosts.cdb): qmail-smtpd refuses it before any validrcptto lookup."""
        _local, at, domain = fold(address).rpartition("@")
        return domain if at and _b(domain) not in self.domains else None


# Below this many virtual/relayed domains, a worker process costs more than it saves.
PARALLEL_MIN_DOMAINS = 400
# A worker's slice is this fraction of one smaller than this process's (measured).
WORKER_HANDICAP = 0.3


# A .qmail name with more colons gets two spellings, not 2**n: a file name in a
# user's home must not blow up the cdb.
MAX_COLONS = 6
GETPW_USERLEN = 32  # qmail-getpw's buffer for a user name, its NUL included


def _safe(ext: str) -> str:
    """An extension as qmail-local looks it up: lower case, "." written ":"."""
    return fold(ext).replace(".", ":") if ext else ext


def _first(origin: Origin) -> bytes:
    return origin[0]


_QMAIL_EXT = re.compile(rb"^\s*#\s*define\s+QMAIL_EXT\s+1\b", re.MULTILINE)
# A complete vpasswd line: name and six more colon-separated fields.


@dataclass
class _AssignIndex:
    """users/assign entries indexed for the per-domain lookups (built once)."""

    entries: list[assign_mod.Assignment]
    wild: dict[str, assign_mod.Assignment]  # folded prefix -> first entry
    exact: list[tuple[str, assign_mod.Assignment]]  # sorted by folded local name
    chars: str  # the wildcard characters
    exact_map: dict[str, assign_mod.Assignment]  # folded local name -> first entry

    def lookup(self, local: str) -> assign_mod.Assignment | None:
        """qmail-lspawn's users/cdb search for a (folded) local name."""
        found = self.exact_map.get(local)
        if found is not None:
            return found
        for end in range(len(local), -1, -1):
            if end and local[end - 1] not in self.chars:
                continue
            found = self.wild.get(local[:end])
            if found is not None:
                return found
        return None


class _Builder:
    def __init__(self, opts: Options) -> None:
        self.o = opts
        self.qhome = Path(opts.qmail_home)
        self.control = self.qhome / "control"
        self.delim = opts.delimiter
        self.warnings: list[str] = []
        self.problems: list[str] = []
        self._homes: dict[str, HomeFiles | QmailkitError] = {}  # listed with dash "-"
        self._dashed: dict[tuple[str, str], HomeFiles] = {}  # the same for other dashes
        self._deliveries: dict[str, Delivery] = {}
        self._shapes: dict[bytes, Delivery] = {}  # .qmail text -> what it does
        self._ff: dict[str, list[bytes]] = {}
        self._accounts: list[PasswdEntry] | None = None
        self._getpw: dict[str, str | None] = {}  # account name -> _getpw_problem
        self._default: Delivery | None = None
        self._by_name: dict[str, PasswdEntry] | None = None
        self._qmail_ext: bool | None = opts.qmail_ext
        self._index: _AssignIndex | None = None
        # Set by run() for domain_keys():
        self._kinds: dict[str, tuple[str, str]] = {}
        self._entries: list[assign_mod.Assignment] = []
        self._assign_src = ""
        self._prepends: set[str] = set()
        self._local_common: list[Entry] | None = None
        self._singles: dict[str, list[tuple[str, str, str]]] = {}  # (address, local, source)
        self._local_label = ""  # the local domains, for warnings about their shared users
        self._excluded: dict[bytes, list[bytes]] = {}

    # -- small readers, cached ------------------------------------------------

    def accounts(self) -> list[PasswdEntry]:
        if self._accounts is None:
            self._accounts = read_passwd(self.o.passwd)
            self._by_name = {}
            for acct in self._accounts:
                self._by_name.setdefault(acct.name, acct)
        return self._accounts

    def account(self, name: str) -> PasswdEntry | None:
        self.accounts()
        assert self._by_name is not None
        return self._by_name.get(name)

    def alias_home(self) -> str:
        acct = self.account("alias")
        return acct.home if acct else str(self.qhome / "alias")

    def vpopmail_home(self) -> Path:
        if self.o.vpopmail_home is not None:
            return Path(self.o.vpopmail_home)
        acct = self.account("vpopmail")
        return Path(acct.home) if acct else Path("/home/vpopmail")

    def qmail_ext(self) -> bool:
        if self._qmail_ext is None:
            header = self.vpopmail_home() / "include" / "vpopmail_config.h"
            try:
                self._qmail_ext = bool(_QMAIL_EXT.search(read_bounded(header)))
            except FileNotFoundError:
                self._qmail_ext = False
        return self._qmail_ext

    def home(self, home: str, dash: str) -> HomeFiles:
        """The .qmail files of ``home`` (the directory is listed once, whatever the dash)."""
        found = self._homes.get(home)
        if found is None:
            try:
                found = list_home(home)
                self.warnings.extend(found.skipped)
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

    def _shape(self, path: str) -> Delivery:
        """What the .qmail file at ``path`` does, as found for the first file with its text."""
        found = self._deliveries.get(path)
        if found is None:
            data = read_file(path)
            # Many domains hold the same .qmail-default: parse each text once.
            found = self._shapes.get(data)
            if found is None:
                found = self._shapes[data] = classify_text(data.decode(ENC, ERRS), path)
            self._deliveries[path] = found
        return found

    def delivery(self, path: str) -> Delivery:
        """What the .qmail file at ``path`` does (``dotqmail.classify``)."""
        shape = self._shape(path)
        return (
            shape
            if shape.path == path
            else Delivery(shape.kind, path, shape.cdb, shape.passthrough, shape.fallback)
        )

    # -- the domains qmail-smtpd accepts ---------------------------------------

    def received(self) -> dict[str, str]:
        rcpthosts = self.control / "rcpthosts"
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
        more = self.control / "morercpthosts.cdb"
        if more.exists():
            from qmailkit import cdb

            with cdb.Reader(more) as reader:
                for key in reader:
                    name = fold(key.decode(ENC, ERRS))
                    if not name:
                        raise InputError(
                            "morercpthosts.cdb holds an empty domain",
                            path=more,
                            hint="fix control/morercpthosts and run qmail-newmrh",
                        )
                    domains.setdefault(name, str(more))
        return domains

    def read_map(self, name: str) -> tuple[Path, dict[str, tuple[str, str]]]:
        """A ``key:value`` control file (virtualdomains, smtproutes): folded key -> (value, source)."""
        path = self.control / name
        out: dict[str, tuple[str, str]] = {}
        where = f"{path}:"
        for number, value in control.read_control_numbered(path):
            key, sep, rest = value.partition(":")
            if not sep:
                raise InputError(
                    f"no ':' in {value!r}",
                    path=path,
                    line=number,
                    hint=f"{name} lines are DOMAIN:VALUE",
                )
            out.setdefault(fold(key), (rest, f"{where}{number}"))
        return path, out

    @staticmethod
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

    # -- users/assign ----------------------------------------------------------

    def assignments(self) -> tuple[list[assign_mod.Assignment], str]:
        users = self.qhome / "users"
        db = users / "cdb"
        text = users / "assign"
        if db.exists():
            if text.exists() and text.stat().st_mtime > db.stat().st_mtime:
                self.warnings.append(
                    f"{text} is newer than {db}: run qmail-newu "
                    "(qmail uses users/cdb, so this list does too)"
                )
            entries, _chars = assign_mod.read_cdb(db)
            return entries, str(db)
        if text.exists():
            self.warnings.append(f"{db} is missing: qmail ignores {text} until qmail-newu runs")
            return assign_mod.read(text), str(text)
        return [], ""

    # -- one delivery target: a home directory, a dash and an extension prefix --

    def target_entries(
        self, home: str, dash: str, ext: str, q: str, domain: str, what: str
    ) -> list[Entry]:
        """The local-part keys (``""`` = the whole domain) one target answers.

        ``ext`` is the part of the extension fixed by the mapping (vpopmail: "");
        ``q`` is the part of the local name in front of what becomes the rest
        of the extension (system user bob: "bob-"; vpopmail domain: "").
        """
        files = self.home(home, dash)
        fixed = _safe(ext)  # file names spell the extension as qmail-local does
        exact: list[Entry] = []
        wild: list[Entry] = []
        catch: tuple[str, str] | None = None  # (wildcard prefix, file name)
        for e, name in files.names.items():
            if is_default(e, self.delim):
                w = e[: -len("default")]
                if len(w) > len(fixed) and w.startswith(fixed):
                    path = files.path(name)
                    value = self._value(path)
                    rest = w[len(fixed) :]
                    if ":" not in rest:
                        wild.append((q + rest + "default", value, path))
                    else:
                        wild.extend(
                            (q + x + "default", value, path) for x in self._spellings(rest, path)
                        )
                elif fixed.startswith(w) and (catch is None or len(w) > len(catch[0])):
                    catch = (w, name)
            elif len(e) > len(fixed) and e.startswith(fixed):
                path = files.path(name)
                value = self._value(path)
                rest = e[len(fixed) :]
                if ":" not in rest:
                    exact.append((q + rest, value, path))
                else:
                    exact.extend((q + x, value, path) for x in self._spellings(rest, path))
        out = exact + wild
        if catch is not None:
            out.extend(self._catch_all(files, catch, fixed, q, domain, what))
        return out

    def _spellings(self, safe: str, path: str) -> list[str]:
        """The extensions qmail-local turns into ``safe``: each ":" may be written "." or ":"."""
        colons = safe.count(":")
        if colons > MAX_COLONS:
            self.warnings.append(
                f"{path}: {colons} colons: only the spellings with all '.' and all ':' are listed"
            )
            return [safe.replace(":", "."), safe]
        found = [""]
        for i, part in enumerate(safe.split(":")):
            found = [x + sep + part for x in found for sep in ((".", ":") if i else ("",))]
        return found

    def qmail_file(self, home: str, dash: str, ext: str) -> str | None:
        """qmail-local's search for the file that takes ``ext`` at (home, dash), or None:
        ``.qmail{dash}{ext}``, then each ``-default`` from the longest prefix down."""
        files = self.home(home, dash)
        safe = _safe(ext)
        head = ".qmail" + dash
        if head + safe in files.present:
            return files.path(head + safe)
        for i in range(len(safe), -1, -1):
            if (not i or safe[i - 1] == "-") and f"{head}{safe[:i]}default" in files.present:
                return files.path(f"{head}{safe[:i]}default")
        return None

    def verdict(self, home: str, dash: str, ext: str, src: str, what: str) -> bytes:
        """What qmail-local does with mail for ``ext`` at (home, dash): accept, or reject when
        the file bounces or there is none (with a dash: "no mailbox here by that name").

        ``src`` and ``what`` name the mapping and the address in a warning."""
        try:
            path = self.qmail_file(home, dash, ext)
        except QmailkitError as err:
            self.warnings.append(f"{src}: {what} rejected: {err}")
            return REJECT
        if path is not None:
            return self._value(path)
        if dash:
            self.warnings.append(
                f"{src}: {what} rejected: qmail-local finds neither "
                f"{home}/.qmail{dash}{_safe(ext)} nor a -default file for it"
            )
            return REJECT
        return REJECT if self._default_delivery().kind is Kind.BOUNCE else ACCEPT

    def _value(self, path: str) -> bytes:
        return REJECT if self._shape(path).kind is Kind.BOUNCE else ACCEPT

    def _whole(self, q: str) -> str:
        return q + "default" if q else ""

    def _catch_all(
        self, files: HomeFiles, catch: tuple[str, str], ext: str, q: str, domain: str, what: str
    ) -> list[Entry]:
        w, name = catch
        path = files.path(name)
        d = self.delivery(path)
        whole = self._whole(q)
        where = f"{what} ({path})"
        if d.kind is Kind.BOUNCE:
            return [(whole, REJECT, path)]
        if d.kind is Kind.VPOP_LIST:
            return self._mailboxes(files.home, q, domain, path)
        if d.kind is Kind.FASTFORWARD and w == ext and d.cdb:
            out = self._fastforward(files.home, d, q, domain)
            if d.passthrough and d.fallback not in (None, Kind.BOUNCE):
                self.warnings.append(
                    f"{where}: every address is accepted (fastforward -p passes unknown names on)"
                )
                out.append((whole, ACCEPT, path))
            return out
        at = domain or self._local_label  # local domains share one list of users
        self.warnings.append(f"{where}: every address {q}*@{at} is accepted (catch-all)")
        return [(whole, ACCEPT, path)]

    def _fastforward(self, home: str, d: Delivery, q: str, domain: str) -> list[Entry]:
        assert d.cdb is not None
        db = d.cdb if os.path.isabs(d.cdb) else os.path.join(home, d.cdb)
        keys = self._ff.get(db)
        if keys is None:
            from qmailkit import cdb

            if not os.path.exists(db):
                raise QmailkitError(
                    f"fastforward database named in {d.path} is missing",
                    path=db,
                    hint="run newaliases or setforward",
                )
            with cdb.Reader(db) as reader:
                keys = self._ff[db] = [k[1:].lower() for k in reader if k[:1] == b":"]
        src = f"{db} (fastforward in {d.path})"
        dom = _b(domain)
        out = []
        for key in keys:
            local, at, host = key.rpartition(b"@")
            if not at:
                continue
            if (host == dom or host == b"") and (local or host):
                name = local.decode(ENC, ERRS)
                out.append((q + name if name else self._whole(q), ACCEPT, src))
        return out

    def _mailboxes(self, domain_dir: str, q: str, domain: str, path: str) -> list[Entry]:
        # The whole keys at once (the C scanner appends "@domain"), except for the list
        # the local domains share.
        suffix = _b("@" + domain) if domain else b""
        names, source = self.vpopmail_users(domain_dir, domain, suffix)
        if q:
            qb = _b(q)
            names = [qb + n for n in names]
        keyed = bool(suffix)
        out: list[Entry] = [Bulk(names, (ACCEPT, source), keyed)]
        if self.qmail_ext():
            tail = _b(self.delim + "default") + suffix
            cut = len(suffix)
            out.append(
                Bulk(
                    [n[: len(n) - cut] + tail for n in names],
                    (ACCEPT, source + " (QMAIL_EXT)"),
                    keyed,
                )
            )
        return out

    # -- vpopmail ----------------------------------------------------------------

    def vpopmail_users(
        self, domain_dir: str, domain: str, suffix: bytes = b""
    ) -> tuple[list[bytes], str]:
        """Mailbox names (each followed by ``suffix``) of a vpopmail domain that can get
        mail, and their source."""
        text = f"{domain_dir}/vpasswd"
        use_sql = self.o.vpopmail_sql
        if use_sql is not True:
            try:
                data = read_vpasswd_bytes(text)
            except FileNotFoundError:
                data = None
            if data is not None:
                names, notes = mailbox_names(data, text, suffix)
                self.warnings.extend(notes)
                return names, text
            db = os.path.join(domain_dir, "vpasswd.cdb")
            if os.path.exists(db):
                from qmailkit.qmail.vpopmail import read_vpasswd_cdb

                names = [e.name.encode(ENC, ERRS) for e in read_vpasswd_cdb(db)]
                names, notes = deliverable(names, db)
                self.warnings.extend(notes)
                return [n + suffix for n in names], db
            if use_sql is False:
                raise InputError(
                    "vpopmail domain has neither vpasswd nor vpasswd.cdb", path=domain_dir
                )
        names, source = self._sql_users(domain)
        names, notes = deliverable(names, source)
        self.warnings.extend(notes)
        return [n + suffix for n in names], source

    def _vpopmail_program(self, name: str, *args: str) -> str:
        prog = self.vpopmail_home() / "bin" / name
        if not prog.exists():
            raise QmailkitError(
                f"vpopmail program {name} not found",
                path=prog,
                hint="a SQL vpopmail needs it; or give --vpopmail-home",
            )
        import subprocess

        try:
            done = subprocess.run([str(prog), *args], capture_output=True, timeout=300, check=False)
        except OSError as err:
            raise os_error(err, f"cannot run {name}") from err
        except subprocess.TimeoutExpired:
            raise QmailkitError(
                f"{name} {' '.join(args)} took more than 300 s", path=prog
            ) from None
        if done.returncode != 0:
            msg = done.stderr.decode(ENC, "replace").strip().splitlines()
            raise QmailkitError(
                f"{name} {' '.join(args)} failed with exit code "
                f"{done.returncode}" + (f": {msg[-1]}" if msg else ""),
                path=prog,
            )
        return done.stdout.decode(ENC, ERRS)

    def _sql_users(self, domain: str) -> tuple[list[bytes], str]:
        names = []
        out = self._vpopmail_program("vuserinfo", "-D", domain)
        for line in out.splitlines():
            if line.startswith("name:"):
                names.append(_b(line[5:].strip()))
        aliases = self._vpopmail_program("valias", "-s", domain)
        for line in aliases.splitlines():
            left = line.split("->", 1)[0].strip()
            local = left.rpartition("@")[0] if "@" in left else left
            if local:
                names.append(_b(local))
        return names, f"vuserinfo -D {domain}; valias -s {domain}"

    # -- building ----------------------------------------------------------------

    def run(self) -> Recipients:
        received = self.received()
        locals_path, local_list = control.locals_file(self.qhome)
        local_set = set(local_list)
        vd_path, vdoms = self.read_map("virtualdomains")
        sr_path, routes = self.read_map("smtproutes")

        kinds: dict[str, tuple[str, str]] = {}  # domain -> (kind, detail)
        for domain, src in received.items():
            if domain.startswith("."):
                self.problems.append(
                    f"{domain} ({src}) is a wildcard entry: validrcptto.cdb cannot express "
                    '"every subdomain"; list the subdomains in rcpthosts instead'
                )
                continue
            is_local = domain in local_set
            # qmail-send looks at virtualdomains only for a domain not in locals.
            vd = None if is_local else self.suffix_lookup(vdoms, domain, catch_all=True)
            if vd is not None and not vd[0]:
                vd = None  # "domain:" exempts a domain from a wildcard entry
            route = self.suffix_lookup(routes, domain)
            if is_local and domain in vdoms:
                self.problems.append(
                    f"{domain} is in both {locals_path} and "
                    f"{vdoms[domain][1]}: remove it from one of them"
                )
            if route is not None and (is_local or vd is not None):
                where = str(locals_path) if is_local else vd[1]  # type: ignore[index]
                self.problems.append(
                    f"{domain} is in both {where} and {route[1]}: "
                    "a relayed domain cannot also be delivered here"
                )
            if is_local:
                kinds[domain] = ("local", str(locals_path))
            elif vd is not None:
                kinds[domain] = ("virtual", vd[0])
            elif route is not None:
                kinds[domain] = ("relay", route[1])
            else:
                self.problems.append(
                    f"{domain} ({src}) is accepted but nothing handles it: it is not in "
                    f"{locals_path}, {vd_path} or {sr_path}"
                )
        if self.problems:
            raise InputError(
                "cannot build the list of valid recipients:\n  " + "\n  ".join(self.problems),
                hint="nothing was written",
            )

        self._kinds = kinds
        self._entries, self._assign_src = self.assignments() if kinds else ([], "")
        self._prepends = {
            fold(v[0]) + self.delim for k, v in vdoms.items() if "@" not in k and v[0]
        }
        # Single addresses from virtualdomains (user@domain:prepend) come first
        # in qmail-send's lookup, so they win over anything else; but it never
        # reads virtualdomains for a domain in locals.
        for key, (prepend, src) in vdoms.items():
            local, at, domain = key.rpartition("@")
            if not (at and prepend and domain in kinds):
                continue
            if kinds[domain][0] == "local":
                self.warnings.append(
                    f"{src}: {key}:{prepend} is ignored: {domain} is in "
                    f"{locals_path}, and qmail-send does not look at "
                    "virtualdomains for a local domain"
                )
                continue
            # qmail-send turns the address into the local name PREPEND-user.
            self._singles.setdefault(domain, []).append((key, f"{fold(prepend)}-{local}", src))
        local_domains = [d for d in sorted(kinds) if kinds[d][0] == "local"]
        self._local_label = (
            local_domains[0]
            if len(local_domains) == 1
            else (f"D for each local domain D ({', '.join(local_domains)})")
        )
        for address in self.o.exclude:
            key = _b(address)
            at = key.rfind(b"@")
            if at >= 0:
                self._excluded.setdefault(key[at + 1 :], []).append(key)

        order = sorted(kinds)
        done = self._build_domains(order)
        result = Recipients(warnings=self.warnings)
        empty = []
        for domain in order:  # warnings in domain order, wherever the domain was done
            found, notes = done[domain]
            result.domains[_b(domain)] = found
            if notes:
                self.warnings.extend(notes)
            if not found.count():
                empty.append(domain)
        for domain in empty:
            self.warnings.append(
                f"{domain}: no valid address found; all mail to it will be rejected"
            )
        # A home several domains share is warned about once (workers each saw it).
        self.warnings[:] = dict.fromkeys(self.warnings)
        return result

    def domain_keys(self, domain: str) -> DomainKeys:
        """Everything one domain accepts, sorted (each domain is independent of the others)."""
        kind, detail = self._kinds[domain]
        if kind == "local":
            if self._local_common is None:
                self._local_common = self.local_entries(
                    self._entries, self._assign_src, self._prepends
                )
            found = self._local_common + self.alias_entries(domain)
        elif kind == "virtual":
            found = self.virtual_entries(domain, detail, self._entries, self._assign_src)
        else:
            found = self.relay_entries(domain, detail)
        table = self._table(found, domain)
        valued = any(item.origin[0] if isinstance(item, Bulk) else item[1] for item in found)
        for address, local, src in self._singles.get(domain, ()):
            home, dash, ext = self.deliverer(local)
            value = self.verdict(home, dash, ext, src, address)
            table[_b(address)] = (value, src)
            valued = valued or bool(value)
        for key in self._excluded.get(_b(domain), ()):
            table.pop(key, None)
        keys = sorted(table)
        origins = list(map(table.__getitem__, keys))
        values = list(map(_first, origins)) if valued else None
        if values is not None and not any(values):
            values = None
        return DomainKeys(keys, values, origins)

    def _one(self, domain: str) -> tuple[DomainKeys, list[str]]:
        """One domain's keys, and the warnings it gave (put back in domain order later)."""
        mark = len(self.warnings)
        found = self.domain_keys(domain)
        notes = self.warnings[mark:]
        del self.warnings[mark:]
        return found, notes

    # -- using every CPU ---------------------------------------------------------

    def _shares(self, order: list[str]) -> list[list[str]]:
        """The domains each worker process does (none for a small configuration).

        Local domains stay here: they share one (cached) list of system users.
        """
        jobs = self.o.jobs if self.o.jobs is not None else len(os.sched_getaffinity(0))
        movable = [d for d in order if self._kinds[d][0] != "local"]
        if jobs < 2 or len(movable) < PARALLEL_MIN_DOMAINS:
            return []
        jobs = min(jobs, len(movable) // (PARALLEL_MIN_DOMAINS // 2))
        # This process keeps the first slice, a little larger: a worker also has
        # to pack its answer and send it over.
        size = int(len(movable) / (jobs + WORKER_HANDICAP))
        first = len(movable) - size * (jobs - 1)
        return [movable[first + size * n : first + size * (n + 1)] for n in range(jobs - 1)]

    def _build_domains(self, order: list[str]) -> dict[str, tuple[DomainKeys, list[str]]]:
        """``_one`` for every domain: some in forked workers, the rest here.

        The outcome is the same as doing them all here in order: the same keys,
        warnings in domain order, and the error of the first domain (in order)
        that fails.
        """
        from qmailkit import workers

        position = {domain: i for i, domain in enumerate(order)}
        started: list[workers.Worker] = []
        for share in self._shares(order):
            worker = workers.start(lambda share=share: self._worker_answer(share, position))
            if worker is None:
                break  # no process to be had: do the rest here
            started.append(worker)
            share_set = set(share)
            order_here = [d for d in order if d not in share_set]
            order = order_here
        done: dict[str, tuple[DomainKeys, list[str]]] = {}
        failed: tuple[int, BaseException] | None = None
        try:
            for domain in order:
                try:
                    done[domain] = self._one(domain)
                except Exception as err:  # noqa: BLE001 - the first failing domain in order decides
                    failed = (position[domain], err)
                    break
                if started:  # while the workers work, rather than after
                    done[domain][0].digest()
            for worker in started:
                try:
                    answer = pickle.loads(worker.result())
                except Exception as err:  # noqa: BLE001 - died, or an answer we cannot read
                    raise QmailkitError(f"a worker process failed: {err}") from None
                if answer[0] == "error":
                    if failed is None or answer[1] < failed[0]:
                        failed = (answer[1], answer[2])
                    continue
                for domain, keys, values, packed, notes, digest in answer[1]:
                    found = DomainKeys(
                        None,
                        None if values is None else values.split(b"\n"),
                        None,
                        packed,
                        keys,
                        digest,
                    )
                    done[domain] = (found, notes)
        finally:
            for worker in started:
                worker.kill()
        if failed is not None:
            raise failed[1]
        return done

    def _worker_answer(self, share: list[str], position: dict[str, int]) -> bytes:
        """In a worker: ``_one`` for each domain of ``share``, pickled compactly."""
        out = []
        for domain in share:
            try:
                found, notes = self._one(domain)
            except Exception as err:  # noqa: BLE001 - raised again by the parent
                try:
                    return pickle.dumps(("error", position[domain], err))
                except Exception:  # noqa: BLE001 - an exception that cannot travel
                    return pickle.dumps(
                        ("error", position[domain], QmailkitError(f"{type(err).__name__}: {err}"))
                    )
            # Newline-joined, to travel cheaply: no key or value holds a newline.
            values = None if found.values is None else b"\n".join(found.values)
            out.append((domain, found.joined_keys(), values, found.pack(), notes, found.digest()))
        return pickle.dumps(("ok", out), protocol=pickle.HIGHEST_PROTOCOL)

    def _table(self, found: list[Entry], domain: str) -> dict[bytes, Origin]:
        suffix = _b("@" + domain)
        table: dict[bytes, Origin] = {}
        # The first source wins, as in qmail's own lookup order: apply the list
        # backwards so that earlier entries overwrite later ones.
        for item in reversed(found):
            if isinstance(item, Bulk):  # names no mail can reach are left out already
                keys = item.names
                if not item.keyed:
                    # n + suffix for every name, with two bulk operations instead of a loop.
                    keys = ((suffix + b"\n").join(keys) + suffix).split(b"\n")
                    if len(keys) != len(item.names):  # no names
                        keys = []
                if table:
                    table.update(dict.fromkeys(keys, item.origin))
                else:  # the usual first item (a vpasswd): no second copy
                    table = dict.fromkeys(keys, item.origin)
            else:
                local, value, source = item
                if "\n" in local or "\0" in local:  # a cdb key, say: keys travel by lines
                    self.warnings.append(
                        f"{source}: skipped {local + '@' + domain!r}: no "
                        "address holds a newline or NUL"
                    )
                    continue
                table[_b(local) + suffix] = (value, source)
        return table

    # local domains

    def local_entries(
        self, entries: list[assign_mod.Assignment], assign_src: str, prepends: set[str]
    ) -> list[Entry]:
        out: list[Entry] = []
        wild_prefixes = []
        for entry in entries:
            local = fold(entry.local)
            src = f"{assign_src}:{entry.line}" if entry.line else assign_src
            if not entry.wildcard:
                if not any(local.startswith(p) for p in prepends):
                    value = self.verdict(entry.home, entry.dash, entry.ext, src, local)
                    out.append((local, value, src))
                continue
            if local in prepends:
                continue  # vpopmail's +domain- entries serve virtual domains
            wild_prefixes.append((local, entry, src))
        for local, entry, src in wild_prefixes:
            try:
                got = self.target_entries(
                    entry.home, entry.dash, fold(entry.ext), local, "", f"users/assign +{local}"
                )
            except QmailkitError as err:
                self.warnings.append(f"{src}: skipped: {err}")
                continue
            out.extend(got)
        index = self._assign_index(entries) if entries else None
        ignore = self.o.uid_ignore
        for acct in self.accounts():
            if acct.uid == 0 or acct.uid in ignore:
                continue
            if not (self.o.uid_min <= acct.uid <= self.o.uid_max):
                continue
            name = acct.name
            if name == "alias":
                continue  # its names are the alias entries below
            # users/assign wins over the system account: for the name itself if
            # any entry matches it, for its extensions if a wildcard covers "name-".
            base_taken = index is not None and index.lookup(name) is not None
            ext_entry = index.lookup(name + self.delim) if index is not None else None
            ext_taken = ext_entry is not None and ext_entry.wildcard
            if base_taken and ext_taken:
                continue
            src = f"{self.o.passwd}:{acct.line}"
            problem = self._getpw_problem(acct)
            if problem is not None:
                if problem:
                    self.warnings.append(f"{src}: user {name} skipped: {problem}")
                continue
            try:
                self.home(acct.home, "-")
            except QmailkitError as err:
                self.warnings.append(f"{src}: user {name} skipped: {err}")
                continue
            if not base_taken:
                out.append((name, self.verdict(acct.home, "", "", src, name), src))
            if not ext_taken:
                out.extend(
                    self.target_entries(acct.home, "-", "", name + self.delim, "", f"user {name}")
                )
        return out

    def _getpw_problem(self, acct: PasswdEntry) -> str | None:
        """Why qmail-getpw never delivers to this account: None if it does, "" if that
        goes without saying (uid 0, capitals).

        qmail-getpw asks getpwnam for a name lower-cased and shorter than 32
        characters, and takes the account only if its uid is not 0 and it owns
        its home directory (else it goes on with a shorter name, then the alias user).
        """
        if acct.name in self._getpw:
            return self._getpw[acct.name]
        problem: str | None = None
        if acct.uid == 0 or not acct.name or acct.name != fold(acct.name):
            problem = ""
        elif len(acct.name) >= GETPW_USERLEN:
            problem = f"qmail-getpw looks up names of at most {GETPW_USERLEN - 1} characters"
        else:
            try:
                owner = os.stat(acct.home).st_uid
            except FileNotFoundError:
                problem = f"{acct.home}: home directory does not exist"
            except OSError as err:
                problem = f"{acct.home}: cannot stat home directory: {err.strerror}"
            else:
                if owner != acct.uid:
                    problem = (
                        f"its home {acct.home} is owned by uid {owner}, not {acct.uid} "
                        "(qmail-getpw delivers only to an account that owns its home)"
                    )
        self._getpw[acct.name] = problem
        return problem

    def getpw(self, name: str) -> str | None:
        """The home of the account qmail-getpw takes for the (folded) user name, if any."""
        acct = self.account(name)
        if acct is None:
            # No passwd entry for the alias user: qmail's own home for it stands in.
            return self.alias_home() if name == "alias" else None
        return acct.home if self._getpw_problem(acct) is None else None

    def deliverer(self, local: str) -> tuple[str, str, str]:
        """Who delivers the (folded) local name, as qmail-lspawn and qmail-getpw decide:
        the home, dash and extension qmail-local gets."""
        if self._entries:
            entry = self._assign_index(self._entries).lookup(local)
            if entry is not None:
                ext = entry.ext + local[len(entry.local) :] if entry.wildcard else entry.ext
                return entry.home, entry.dash, ext
        end = len(local)
        while end > 0:  # the whole name, then up to each delimiter, longest first
            home = self.getpw(local[:end])
            if home is not None:
                return home, "-" if end < len(local) else "", local[end + len(self.delim) :]
            end = local.rfind(self.delim, 0, end)
        return self.alias_home(), "-", local

    def _default_delivery(self) -> Delivery:
        """What qmail-local does when no .qmail file takes an address without a dash."""
        if self._default is None:
            path = self.control / "defaultdelivery"
            lines = control.read_control(path)
            self._default = (
                classify_text("\n".join(lines), str(path))
                if lines
                else Delivery(Kind.DELIVER, str(path))
            )
        return self._default

    def alias_entries(self, domain: str) -> list[Entry]:
        if self.o.skip_alias:
            return []
        home = self.alias_home()
        if not os.path.isdir(home):
            self.warnings.append(f"{home}: the alias user's home does not exist; skipped")
            return []
        return self.target_entries(home, "-", "", "", domain, "alias user")

    # virtual domains

    def virtual_entries(
        self, domain: str, prepend: str, entries: list[assign_mod.Assignment], assign_src: str
    ) -> list[Entry]:
        prefix = fold(prepend) + self.delim
        out: list[Entry] = []
        index = self._assign_index(entries)
        exact = index.exact
        i = bisect.bisect_left(exact, prefix, key=lambda item: item[0])
        while i < len(exact) and exact[i][0].startswith(prefix):  # exact names under the prefix
            local, entry = exact[i]
            src = f"{assign_src}:{entry.line}" if entry.line else assign_src
            name = local[len(prefix) :]
            value = self.verdict(entry.home, entry.dash, entry.ext, src, f"{name}@{domain}")
            out.append((name, value, src))
            i += 1
        home, dash, ext, what = self.resolve_prefix(prefix, entries)
        if self.o.skip_alias and home == self.alias_home():
            return out  # -n: the alias user is left out, also for alias domains
        if what == "alias user" and fold(prepend) != "alias":
            self.warnings.append(f"{domain}: nobody owns {prefix}*, so the alias user delivers it")
        out.extend(self.target_entries(home, dash, ext, "", domain, f"{domain} ({what})"))
        return out

    def _assign_index(self, entries: list[assign_mod.Assignment]) -> _AssignIndex:
        if self._index is None or self._index.entries is not entries:
            wild = {fold(e.local): e for e in reversed(entries) if e.wildcard}
            exact = sorted(
                ((fold(e.local), e) for e in entries if not e.wildcard), key=lambda item: item[0]
            )
            # As in qmail-lspawn: the folded name is compared with the characters
            # as qmail-newu stored them (not folded).
            chars = assign_mod.wildchars(entries).decode(ENC, ERRS)
            exact_map = {fold(e.local): e for e in reversed(entries) if not e.wildcard}
            self._index = _AssignIndex(entries, wild, exact, chars, exact_map)
        return self._index

    def resolve_prefix(
        self, prefix: str, entries: list[assign_mod.Assignment]
    ) -> tuple[str, str, str, str]:
        """Who delivers local names starting with ``prefix``: (home, dash, ext, description)."""
        if entries:
            index = self._assign_index(entries)
            chars, wild = index.chars, index.wild
            for end in range(len(prefix), -1, -1):
                if end and prefix[end - 1] not in chars:
                    continue
                entry = wild.get(prefix[:end])
                if entry is not None:
                    ext = fold(entry.ext) + prefix[end:]
                    return entry.home, entry.dash, ext, f"users/assign +{entry.local}"
        # qmail-getpw: the longest user name that is the prefix up to a delimiter.
        cut = len(prefix) - len(self.delim)
        while cut > 0:
            home = self.getpw(prefix[:cut])
            if home is not None:
                return home, "-", prefix[cut + len(self.delim) :], f"user {prefix[:cut]}"
            cut = prefix.rfind(self.delim, 0, cut)
        return self.alias_home(), "-", prefix, "alias user"

    # relayed domains

    def relay_entries(self, domain: str, source: str) -> list[Entry]:
        if self.o.smtproutes_dir is not None:
            path = Path(self.o.smtproutes_dir) / domain
            try:
                data = read_bounded(path)
            except FileNotFoundError:
                data = None
            if data is not None:
                out = []
                for number, raw in enumerate(data.decode(ENC, ERRS).split("\n"), 1):
                    name = raw.split("#", 1)[0].split("@", 1)[0].strip()
                    if name:
                        out.append((fold(name), ACCEPT, f"{path}:{number}"))
                return out
        self.warnings.append(
            f"{domain} is relayed ({source}) and has no mailbox list: every address is accepted"
        )
        return [("", ACCEPT, source)]


def build(opts: Options) -> Recipients:
    """Read the configuration and return every valid recipient key with its source."""
    return _Builder(opts).run()
