"""What makes a service dangerous, as the service types declare it, and what they share.

A service type's ``policy(service)`` returns its findings from the config and the tcp
rules alone (it reads the rules source and cdb, nothing else of this machine): errors
are what ``apply`` refuses to install (an open relay, TLS or AUTH forced on the MX, a
local-only daemon open to the world), warnings are risky settings.  ``services check``
reports them with the rest of its findings; ``apply`` refuses the errors.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from qmailkit import fsutil, tcprules
from qmailkit.cdb import format as cdb_format
from qmailkit.errors import InputError, QmailkitError
from qmailkit.services.config import Service, is_loopback
from qmailkit.services.plan import rules_stale


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    service: str
    message: str
    hint: str = ""
    key: str = ""  # config key concerned, e.g. services.mx.tls_cert
    program: str = ""  # the program not found, for a "program ... not found" finding

    def describe(self) -> str:
        text = f"{self.level}: {self.service}: {self.message}"
        if self.key:
            text += f" [{self.key}]"
        return text + (f" ({self.hint})" if self.hint else "")


def error(svc: Service, option: str, message: str, hint: str) -> Finding:
    return Finding("error", svc.name, message, hint, f"services.{svc.name}.{option}")


def warning(svc: Service, option: str, message: str, hint: str) -> Finding:
    return Finding("warning", svc.name, message, hint, f"services.{svc.name}.{option}")


#: rules that relay for (or let in) this many public IPv4 addresses (a /8's worth: more than
#: any site's own networks) do it for strangers; every catch-all spelling covers all of them
RELAY_LIMIT = 1 << 24


def how_many(public: int) -> str:
    if public == tcprules.PUBLIC_IPV4:
        return "every public IPv4 address"
    return f"{public:,} public IPv4 addresses ({100 * public / tcprules.PUBLIC_IPV4:.0f}% of them)"


def listen(svc: Service) -> tuple[str, int]:
    """Where a tcpserver service listens: (ip as written, port)."""
    return str(svc.options.get("ip", "")), int(svc.options.get("port") or 0)


# -- the tcp rules tcpserver reads ---------------------------------------------------------


@dataclass(frozen=True)
class RulesTable:
    """One rules table (key -> first value) and how to name where a set of its keys is."""

    table: dict[bytes, bytes]
    where: Callable[[Collection[bytes | None]], str]


@dataclass(frozen=True)
class Rules:
    tables: list[RulesTable]
    problem: tuple[str, str] | None = None  # (message, hint) when one cannot be read


def read_rules(options: Mapping[str, object]) -> Rules:
    """The rules tables tcpserver reads or will read.

    The rules source is judged when there is one (apply compiles it), and the cdb unless
    apply is about to replace it from a newer source.
    """
    cdb = str(options.get("rules") or "")
    if not cdb:
        return Rules([])  # no -x: tcpserver reads no rules
    source = str(options.get("rules_source") or "")
    tables: list[RulesTable] = []
    if source and os.path.exists(source):
        try:
            tables.append(_source_table(source))
        except QmailkitError as err:
            return Rules(
                [],
                (
                    f"bad tcp rules: {err}",
                    "fix the rule; apply will not compile the file until then",
                ),
            )
    if os.path.lexists(cdb) and not (source and rules_stale(Path(source), Path(cdb))):
        try:
            table = _read_rules_cdb(cdb)
        except FileNotFoundError:  # a dangling symlink: nothing tcpserver could read
            table = {}
        except QmailkitError as err:
            return Rules(
                tables,
                (f"bad tcp rules: {err}", "recompile it from its source (qmailkit tcprules)"),
            )
        tables.append(RulesTable(table, lambda keys: f"{cdb}: keys " + _listed(_shown_keys(keys))))
    return Rules(tables)


def _source_table(source: str) -> RulesTable:
    parsed = tcprules.compile_source(source)
    lines: dict[bytes | None, int] = {}
    for rule in parsed.rules:
        for key in rule.keys:
            lines.setdefault(key, rule.line)
    return RulesTable(
        tcprules.first_values(parsed.records()),
        lambda keys: _lines(source, {lines.get(key, 0) for key in keys}),
    )


def _shown_keys(keys: Collection[bytes | None]) -> list[str]:
    return sorted("(none matched)" if k is None else repr(k.decode("latin-1")) for k in keys)


def _read_rules_cdb(path: str) -> dict[bytes, bytes]:
    """key → value of a rules cdb, read as a regular file of bounded size (never hangs)."""
    data = fsutil.read_bounded(path)
    try:
        _tables, end = cdb_format.read_header(data)
        return tcprules.first_values(cdb_format.iter_records(data, end))
    except cdb_format.FormatError as err:
        raise InputError(f"not a valid cdb: {err}", path=path) from None


def _lines(path: str, numbers: set[int]) -> str:
    """path:3,5 (0 stands for no rule: the default)."""
    shown = ["(no rule matched)" if n == 0 else str(n) for n in sorted(numbers)]
    return f"{path}:" + _listed(shown, sep=",")


def _listed(items: list[str], sep: str = ", ", most: int = 5) -> str:
    shown = sep.join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


# -- services for this host's own programs --------------------------------------------------


def internet_facing(ip: str) -> bool:
    """Listening where strangers may connect: all addresses, a name, or a public address."""
    if not ip or is_loopback(ip):
        return False
    if ip in ("0", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(ip).is_global
    except ValueError:
        return True  # a host name: whatever DNS says


def local_only(svc: Service, what: str) -> list[Finding]:
    """The policy of a service for this host's own programs (webmail, SMTP AUTH helpers),
    never for the Internet: ``what`` it offers must not be open to the world."""
    ip, port = listen(svc)
    hint = (
        "listen on 127.0.0.1, or allow only your own networks in the tcp rules "
        "(e.g. 192.0.2.:allow then :deny)"
    )
    rules = read_rules(svc.options)
    out = [error(svc, "rules", *rules.problem)] if rules.problem else []
    if not internet_facing(ip):
        return out
    if not svc.options.get("rules"):
        out.append(
            error(svc, "ip", f"open to the world: {what} on {ip}:{port}, with no tcp rules", hint)
        )
    for rules_table in rules.tables:
        found = tcprules.coverage(rules_table.table, tcprules.lets_in, default=True)
        if found.public >= RELAY_LIMIT:
            out.append(
                error(
                    svc,
                    "rules",
                    f"open to the world: {what} on {ip}:{port}: "
                    f"{rules_table.where(found.by_key)}: lets in {how_many(found.public)}",
                    hint,
                )
            )
    return out
