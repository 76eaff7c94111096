"""The validrcptto keys: every address qmail accepts, with its source (a client of ``delivery``).

``build(Options)`` reads the configuration once (``delivery.Snapshot``) and
returns ``Recipients``: for every domain in rcpthosts / morercpthosts.cdb, the
validrcptto keys (``local@domain``, ``prefix-default@domain``, ``@domain``)
with their value (empty = accept, ``-`` = explicit reject) and the file that
produced them.  Per kind of domain (``delivery.Snapshot.route``):

* local: users/cdb entries first, then the system accounts qmail-getpw takes
  (in the uid window: ``user`` and ``user-EXT`` from their ``.qmail-EXT``
  files), then the alias user (``~alias/.qmail-NAME``; a fastforward
  ``.qmail-default``);
* virtual (``domain:PREPEND``): ``x@domain`` is the local name ``PREPEND-x``,
  answered by whoever owns that name (users/cdb wildcard, e.g. vpopmail's
  ``+domain-``; a system user; else the alias user); ``user@domain:PREPEND``
  lines name one address and win over anything else;
* relayed (smtproutes): the addresses in ``SMTPROUTES_DIR/DOMAIN`` if that
  file exists, else ``@domain``.

Whether an address is accepted is what qmail-local would do with it
(``delivery.Rules.verdict``).  Every name is lower-cased (ASCII only, as
qmail-smtpd does) and appears once; when two sources give the same key, the
one qmail would use wins.

``Plan`` holds what one build works from; ``Plan.domain_keys(domain)`` is
the keys of one domain alone (what an incremental rebuild asks for).  Big
configurations are spread over worker processes (``workers.map_ordered``).
"""

from __future__ import annotations

import bisect
import hashlib
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from qmailkit import workers
from qmailkit.errors import InputError, QmailkitError
from qmailkit.fsutil import read_bounded
from qmailkit.qmail.delivery import (
    ACCEPT,
    AssignIndex,
    Bulk,
    Entry,
    Origin,
    Route,
    RouteKind,
    Rules,
    Single,
    Snapshot,
    folded_bytes,
)
from qmailkit.qmail.shadow import PasswdEntry
from qmailkit.qmail.validrcptto import ENCODING, ERRORS, fold

__all__ = [
    "PARALLEL_MIN_DOMAINS",
    "DomainKeys",
    "Options",
    "Plan",
    "Recipients",
    "build",
    "plan",
]

# Below this many virtual/relayed domains, a worker process costs more than it saves.
PARALLEL_MIN_DOMAINS = 400
# A worker's share is this fraction of one smaller than this process's (measured).
WORKER_HANDICAP = 0.3

Packed = tuple[list[Origin], str, bytes]  # distinct origins, array typecode, index per key


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

    def snapshot(self) -> Snapshot:
        """A fresh snapshot of the configuration these options name."""
        return Snapshot(
            qmail_home=Path(self.qmail_home),
            passwd=Path(self.passwd),
            delimiter=self.delimiter,
            vpopmail_home_given=self.vpopmail_home,
            qmail_ext_given=self.qmail_ext,
            vpopmail_sql=self.vpopmail_sql,
        )


@dataclass(slots=True)
class DomainKeys:
    """One domain's keys in the canonical (sorted) order, with their values and sources."""

    _keys: list[bytes] | None  # None: only _joined is at hand (from a worker)
    values: list[bytes] | None  # None: every value is empty (accept)
    _origins: list[Origin] | None = None  # per key (value, source)
    _packed: Packed | None = None  # from a worker: the origins, compactly
    _joined: bytes | None = None  # the keys joined by newlines, if already at hand
    _digest: bytes | None = None

    def __reduce__(self) -> tuple[object, tuple[bytes, bytes | None, Packed, bytes]]:
        # What crosses from a worker: keys and values joined by newlines (no key or
        # value holds one), the origins packed, the digest already taken there.
        return _arrived, (self.joined_keys(), self.joined_values(), self.pack(), self.digest())

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

    def compact(self) -> None:
        """Keep the keys joined only (as the digest and the cdb writer take them): a share
        of a parallel build then frees its key objects domain by domain, instead of a
        worker holding them all until its answer is pickled."""
        self.joined_keys()
        self._keys = None

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
            if self._packed is None:
                raise AssertionError("DomainKeys without origins")
            distinct, typecode, which = self._packed
            self._origins = list(map(distinct.__getitem__, array(typecode, which)))
            self._packed = None
        return self._origins

    def pack(self) -> Packed:
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


def _arrived(joined: bytes, values: bytes | None, packed: Packed, digest: bytes) -> DomainKeys:
    """A DomainKeys as a worker sent it (``DomainKeys.__reduce__``)."""
    split_values = None if values is None else values.split(b"\n")
    return DomainKeys(None, split_values, None, packed, joined, digest)


@dataclass
class Recipients:
    """The result: per domain its keys, values and sources; plus warnings for the admin."""

    domains: dict[bytes, DomainKeys] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(found.count() for found in self.domains.values())

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) in the canonical order: domains sorted, then keys sorted."""
        for domain in sorted(self.domains):
            found = self.domains[domain]
            yield from zip(found.keys, found.value_list(), strict=True)

    def explain(self) -> Iterator[tuple[bytes, bytes, str]]:
        for domain in sorted(self.domains):
            found = self.domains[domain]
            for key, (value, source) in zip(found.keys, found.origins(), strict=True):
                yield key, value, source

    def _origin(self, key: bytes) -> Origin | None:
        at = key.rfind(b"@")
        found = self.domains.get(key[at + 1 :]) if at >= 0 else None
        if found is None:
            return None
        i = found.find(key)
        return None if i is None else found.origins()[i]

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
        return domain if at and folded_bytes(domain) not in self.domains else None


# -- what one build works from ------------------------------------------------------------


@dataclass
class Plan:
    """The snapshot, the options, and each received domain's route (from ``plan``)."""

    snapshot: Snapshot
    options: Options
    routes: dict[str, Route]  # folded domain -> how qmail-send handles it
    singles: dict[str, list[Single]]  # domain -> its user@domain:PREPEND lines
    excluded: dict[bytes, list[bytes]]  # domain -> keys never to list
    notes: list[str]  # warnings of the configuration as a whole
    _local_common: list[Entry] | None = None  # the names every local domain shares

    def domain_keys(self, domain: str) -> tuple[DomainKeys, list[str]]:
        """Everything one (folded) domain accepts, sorted, and the warnings it gave.

        Each domain is independent of the others; only the users the local
        domains share are found once (their warnings go with the first asked).
        """
        notes: list[str] = []
        rules = Rules(self.snapshot, notes)
        route = self.routes[domain]
        if route.kind is RouteKind.LOCAL:
            if self._local_common is None:
                self._local_common = self._local_entries(rules)
            found = self._local_common + self._alias_entries(rules, domain)
        elif route.kind is RouteKind.VIRTUAL:
            found = self._virtual_entries(rules, domain, route.detail)
        else:
            found = self._relay_entries(notes, domain, route.detail)
        table = _table(found, domain, notes)
        valued = any(item.origin[0] if isinstance(item, Bulk) else item[1] for item in found)
        for single in self.singles.get(domain, ()):
            home, dash, ext = self.snapshot.deliverer(single.local)
            value = rules.verdict(home, dash, ext, single.source, single.address)
            table[folded_bytes(single.address)] = (value, single.source)
            valued = valued or bool(value)
        for key in self.excluded.get(folded_bytes(domain), ()):
            table.pop(key, None)
        keys = sorted(table)
        origins = list(map(table.__getitem__, keys))
        values = [value for value, _source in origins] if valued else None
        if values is not None and not any(values):
            values = None
        return DomainKeys(keys, values, origins), notes

    # -- local domains ------------------------------------------------------------------

    def _local_entries(self, rules: Rules) -> list[Entry]:
        snapshot, options = self.snapshot, self.options
        assignments = snapshot.assignments
        prepends = snapshot.prepends
        found: list[Entry] = []
        wildcards = []
        for entry in assignments.entries:
            local = fold(entry.local)
            source = assignments.where(entry)
            if not entry.wildcard:
                if not any(local.startswith(prefix) for prefix in prepends):
                    value = rules.verdict(entry.home, entry.dash, entry.ext, source, local)
                    found.append((local, value, source))
                continue
            if local in prepends:
                continue  # vpopmail's +domain- entries serve virtual domains
            wildcards.append((local, entry, source))
        for local, entry, source in wildcards:
            try:
                found += rules.local_parts(
                    entry.home,
                    entry.dash,
                    fold(entry.ext),
                    lead=local,
                    domain="",
                    what=f"users/assign +{local}",
                )
            except QmailkitError as err:
                rules.notes.append(f"{source}: skipped: {err}")
        index = assignments.index if assignments.entries else None
        for account in snapshot.accounts:
            if account.uid == 0 or account.uid in options.uid_ignore:
                continue
            if not (options.uid_min <= account.uid <= options.uid_max):
                continue
            if account.name == "alias":
                continue  # its names are the alias entries
            found += self._account_entries(rules, account, index)
        return found

    def _account_entries(
        self, rules: Rules, account: PasswdEntry, index: AssignIndex | None
    ) -> list[Entry]:
        """A system account's names, unless users/cdb or qmail-getpw says otherwise."""
        name = account.name
        delimiter = self.snapshot.delimiter
        # users/assign wins over the system account: for the name itself if
        # any entry matches it, for its extensions if a wildcard covers "name-".
        base_taken = index is not None and index.lookup(name) is not None
        ext_entry = index.lookup(name + delimiter) if index is not None else None
        ext_taken = ext_entry is not None and ext_entry.wildcard
        if base_taken and ext_taken:
            return []
        source = f"{self.options.passwd}:{account.line}"
        problem = self.snapshot.getpw_problem(account)
        if problem is not None:
            if problem:
                rules.notes.append(f"{source}: user {name} skipped: {problem}")
            return []
        try:
            rules.home(account.home, "-")
        except QmailkitError as err:
            rules.notes.append(f"{source}: user {name} skipped: {err}")
            return []
        found: list[Entry] = []
        if not base_taken:
            found.append((name, rules.verdict(account.home, "", "", source, name), source))
        if not ext_taken:
            found += rules.local_parts(
                account.home, "-", "", lead=name + delimiter, domain="", what=f"user {name}"
            )
        return found

    def _alias_entries(self, rules: Rules, domain: str) -> list[Entry]:
        if self.options.skip_alias:
            return []
        home = self.snapshot.alias_home
        if not os.path.isdir(home):
            rules.notes.append(f"{home}: the alias user's home does not exist; skipped")
            return []
        return rules.local_parts(home, "-", "", lead="", domain=domain, what="alias user")

    # -- virtual domains ------------------------------------------------------------------

    def _virtual_entries(self, rules: Rules, domain: str, prepend: str) -> list[Entry]:
        snapshot = self.snapshot
        assignments = snapshot.assignments
        prefix = fold(prepend) + snapshot.delimiter
        found: list[Entry] = []
        for local, entry in assignments.index.exact_under(prefix):  # exact names under it
            source = assignments.where(entry)
            name = local[len(prefix) :]
            value = rules.verdict(entry.home, entry.dash, entry.ext, source, f"{name}@{domain}")
            found.append((name, value, source))
        home, dash, ext, what = snapshot.resolve_prefix(prefix)
        if self.options.skip_alias and home == snapshot.alias_home:
            return found  # -n: the alias user is left out, also for alias domains
        if what == "alias user" and fold(prepend) != "alias":
            rules.notes.append(f"{domain}: nobody owns {prefix}*, so the alias user delivers it")
        found += rules.local_parts(
            home, dash, ext, lead="", domain=domain, what=f"{domain} ({what})"
        )
        return found

    # -- relayed domains ------------------------------------------------------------------

    def _relay_entries(self, notes: list[str], domain: str, source: str) -> list[Entry]:
        if self.options.smtproutes_dir is not None:
            path = Path(self.options.smtproutes_dir) / domain
            try:
                data = read_bounded(path)
            except FileNotFoundError:
                data = None
            if data is not None:
                found: list[Entry] = []
                for number, raw in enumerate(data.decode(ENCODING, ERRORS).split("\n"), 1):
                    name = raw.split("#", 1)[0].split("@", 1)[0].strip()
                    if name:
                        found.append((fold(name), ACCEPT, f"{path}:{number}"))
                return found
        notes.append(
            f"{domain} is relayed ({source}) and has no mailbox list: every address is accepted"
        )
        return [("", ACCEPT, source)]


def _table(found: list[Entry], domain: str, notes: list[str]) -> dict[bytes, Origin]:
    suffix = folded_bytes("@" + domain)
    table: dict[bytes, Origin] = {}
    # The first source wins, as in qmail's own lookup order: apply the list
    # backwards so that earlier entries overwrite later ones.
    for item in reversed(found):
        if isinstance(item, Bulk):  # names no mail can reach are left out already
            keys = item.names
            # Keys travel joined by newlines (to the cdb writer, from a worker). The names
            # hold none (vpasswd lines; vpopmail.deliverable), the domain neither (plan):
            # only a lead they share can (a users/cdb wildcard), and no address reaches it.
            if keys and (b"\n" in keys[0] or b"\0" in keys[0]):
                notes.append(f"{item.origin[1]}: skipped: {_unreachable(keys[0])}")
                continue
            if not item.keyed:
                # name + suffix for every name, with two bulk operations instead of a loop.
                keys = ((suffix + b"\n").join(keys) + suffix).split(b"\n")
                if len(keys) != len(item.names):  # no names
                    keys = []
            if table:
                table.update(dict.fromkeys(keys, item.origin))
            else:  # the usual first item (a vpasswd): no second copy
                table = dict.fromkeys(keys, item.origin)
            continue
        local, value, source = item
        if "\n" in local or "\0" in local:  # a .qmail name or a cdb key, say
            notes.append(f"{source}: skipped {_unreachable(local + '@' + domain)}")
            continue
        table[folded_bytes(local) + suffix] = (value, source)
    return table


def _unreachable(name: str | bytes) -> str:
    shown = name.decode(ENCODING, ERRORS) if isinstance(name, bytes) else name
    return f"{shown!r}: no address holds a newline or NUL"


def plan(options: Options, snapshot: Snapshot | None = None) -> Plan:
    """Read what every domain needs and decide each one's route; InputError (nothing to
    write) when a received domain is handled by nobody, or twice."""
    snapshot = snapshot or options.snapshot()
    routes, notes = _routes(snapshot)
    if routes and snapshot.assignments.note:
        notes.append(snapshot.assignments.note)
    singles = _singles(snapshot, routes, notes)
    excluded: dict[bytes, list[bytes]] = {}
    for address in options.exclude:
        key = folded_bytes(address)
        at = key.rfind(b"@")
        if at >= 0:
            excluded.setdefault(key[at + 1 :], []).append(key)
    return Plan(snapshot, options, routes, singles, excluded, notes)


def _routes(snapshot: Snapshot) -> tuple[dict[str, Route], list[str]]:
    """Each received domain's route, and warnings; InputError for what nobody handles."""
    routes: dict[str, Route] = {}
    problems: list[str] = []
    notes: list[str] = []
    for domain, source in snapshot.received.items():
        if "\n" in domain or "\0" in domain:  # a morercpthosts.cdb key, say
            notes.append(f"{source}: skipped domain {_unreachable(domain)}")
            continue
        if domain.startswith("."):
            problems.append(
                f"{domain} ({source}) is a wildcard entry: validrcptto.cdb cannot express "
                '"every subdomain"; list the subdomains in rcpthosts instead'
            )
            continue
        route, found = snapshot.route(domain, source)
        problems += found
        if route is not None:
            routes[domain] = route
    if problems:
        raise InputError(
            "cannot build the list of valid recipients:\n  " + "\n  ".join(problems),
            hint="nothing was written",
        )
    return routes, notes


def _singles(
    snapshot: Snapshot, routes: dict[str, Route], notes: list[str]
) -> dict[str, list[Single]]:
    """virtualdomains' single addresses (user@domain:prepend) per domain they serve.

    They come first in qmail-send's lookup, so they win over anything else; but
    it never reads virtualdomains for a domain in locals.
    """
    singles: dict[str, list[Single]] = {}
    locals_path, _names = snapshot.locals
    for single in snapshot.singles():
        route = routes.get(single.domain)
        if route is None:
            continue
        if "\0" in single.address:  # a line cannot hold a newline, but it can hold a NUL
            notes.append(f"{single.source}: skipped {_unreachable(single.address)}")
            continue
        if route.kind is RouteKind.LOCAL:
            notes.append(
                f"{single.source}: {single.address}:{single.prepend} is ignored: "
                f"{single.domain} is in {locals_path}, and qmail-send does not look at "
                "virtualdomains for a local domain"
            )
            continue
        singles.setdefault(single.domain, []).append(single)
    return singles


# -- building ---------------------------------------------------------------------------


def _shares(work: Plan, order: list[str]) -> list[list[str]]:
    """The domains each process does: this one's first, then one share per worker.

    Local domains stay here, first: they share one (cached) list of system
    users.  This process keeps the first slice of the rest, a little larger:
    a worker also has to pack its answer and send it over.
    """
    options = work.options
    jobs = options.jobs if options.jobs is not None else len(os.sched_getaffinity(0))
    local = [d for d in order if work.routes[d].kind is RouteKind.LOCAL]
    movable = [d for d in order if work.routes[d].kind is not RouteKind.LOCAL]
    if jobs < 2 or len(movable) < PARALLEL_MIN_DOMAINS:
        return [local + movable]
    jobs = min(jobs, len(movable) // (PARALLEL_MIN_DOMAINS // 2))
    size = int(len(movable) / (jobs + WORKER_HANDICAP))
    first = len(movable) - size * (jobs - 1)
    workers_shares = [movable[first + size * n : first + size * (n + 1)] for n in range(jobs - 1)]
    return [local + movable[:first], *workers_shares]


def _share_keys(
    work: Plan, with_digest: bool, share: list[str], _send: workers.Send
) -> list[tuple[DomainKeys, list[str]]]:
    """``Plan.domain_keys`` for each domain of a share (in whichever process does it)."""
    done = []
    for domain in share:
        found, notes = work.domain_keys(domain)
        if with_digest:  # while the other processes work, rather than after
            found.digest()
            found.compact()
        done.append((found, notes))
    return done


def build(options: Options) -> Recipients:
    """Read the configuration and return every valid recipient key with its source.

    The same keys, warnings (in domain order) and error (of the first domain
    that fails, local domains first) whether the domains are done here or
    spread over worker processes.
    """
    work = plan(options)
    order = sorted(work.routes)
    shares = _shares(work, order)
    try:
        answers = workers.map_ordered(
            partial(_share_keys, work, len(shares) > 1),
            shares,
            jobs=len(shares),
            chunk=1,
            here=True,
        )
    except workers.WorkerFailed as err:
        raise QmailkitError(f"a worker process failed: {err}") from None
    done: dict[str, tuple[DomainKeys, list[str]]] = {}
    for share, answer in zip(shares, answers, strict=True):
        done.update(zip(share, answer, strict=True))
    result = Recipients(warnings=list(work.notes))
    empty = []
    for domain in order:  # warnings in domain order, wherever the domain was done
        found, notes = done[domain]
        result.domains[folded_bytes(domain)] = found
        result.warnings += notes
        if not found.count():
            empty.append(domain)
    for domain in empty:
        result.warnings.append(f"{domain}: no valid address found; all mail to it will be rejected")
    # A home several domains share is warned about once (each domain notes it).
    result.warnings[:] = dict.fromkeys(result.warnings)
    return result
