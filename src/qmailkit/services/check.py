"""``services check``: the config against the running system, and the usual mistakes.

Each finding names the service, says what is wrong and how to fix it.  Errors
would stop a service from working (a missing user, program, certificate or
unreadable rules database) or make the server dangerous (an open relay);
warnings are likely mistakes.  The checks use what ``render`` lists per service
(``RenderedService.checks``: users, programs, files) and the services' options.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmailkit import tcprules
from qmailkit.errors import QmailkitError
from qmailkit.services.config import is_loopback
from qmailkit.services.render import render


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


class Account:
    """uid, gid and groups of a user, for permission checks done the kernel's way."""

    def __init__(self, name: str | None) -> None:
        if name is None or name == "root":
            self.name, self.uid, self.gids = "root", 0, {0}
            return
        pw = pwd.getpwnam(name)
        self.name, self.uid = name, pw.pw_uid
        self.gids = {pw.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}

    def may(self, st: os.stat_result, bit: int) -> bool:
        """``bit``: 4 read, 1 execute/search (as in the permission triplets)."""
        if self.uid == 0:
            return bit != 1 or stat.S_ISDIR(st.st_mode) or bool(st.st_mode & 0o111)
        if st.st_uid == self.uid:
            return bool(st.st_mode & (bit << 6))
        if st.st_gid in self.gids:
            return bool(st.st_mode & (bit << 3))
        return bool(st.st_mode & bit)

    def can_read(self, path: Path) -> str | None:
        """None if the account can read ``path``; else the reason why not."""
        for parent in reversed(path.absolute().parents):
            try:
                st = parent.stat()
            except OSError as err:
                return f"cannot look at {parent}: {err.strerror}"
            if not self.may(st, 1):
                return f"{self.name} cannot enter {parent} (mode {stat.S_IMODE(st.st_mode):04o})"
        st = path.stat()
        if not self.may(st, 4):
            return (
                f"{self.name} cannot read it (mode {stat.S_IMODE(st.st_mode):04o}, "
                f"owner {st.st_uid}:{st.st_gid})"
            )
        return None


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _find_program(prog: str, search: list[str]) -> Path | None:
    if prog.startswith("/"):
        return Path(prog) if os.path.exists(prog) else None
    for d in search:
        cand = Path(d) / prog
        if cand.exists():
            return cand
    return None


def _system_findings(name: str, r: Any, out: list[Finding]) -> None:
    checks = r.checks
    users = list(dict.fromkeys([*checks.users, *([r.user] if r.user else [])]))
    missing_users = set()
    for user in users:
        if not _user_exists(user):
            missing_users.add(user)
            out.append(
                Finding(
                    "error",
                    name,
                    f"user {user!r} does not exist",
                    f"create it (useradd -r -s /usr/sbin/nologin {user}) or name "
                    "another user in the config",
                )
            )
    for prog, key in checks.programs:
        found = _find_program(prog, checks.search_path)
        where = "" if prog.startswith("/") else " in " + ":".join(checks.search_path)
        if found is None:
            out.append(
                Finding(
                    "error",
                    name,
                    f"program {prog} not found{where}",
                    "install it, or give its full path in the config",
                    key,
                    prog,
                )
            )
        elif not os.access(found, os.X_OK) or found.is_dir():
            out.append(
                Finding(
                    "error", name, f"program {found} is not executable", f"chmod 755 {found}", key
                )
            )
    compiled_by_apply = {r.rules[1]} if r.rules and os.path.exists(r.rules[0]) else set()
    for fc in checks.files:
        path = Path(fc.path)
        # a file the service can run without (a STARTTLS certificate) is a warning, as in
        # the run script
        level = "error" if fc.required else "warning"
        if not path.exists():
            if fc.path in compiled_by_apply:
                continue  # apply compiles it from its source before the service starts
            without = "" if fc.required else " (the service starts without it)"
            out.append(
                Finding(
                    level,
                    name,
                    f"{fc.kind} file {path} does not exist{without}",
                    _create_hint(fc.kind),
                    fc.key,
                )
            )
            continue
        if fc.user in missing_users:
            continue
        try:
            reason = Account(fc.user).can_read(path)
        except KeyError:
            continue
        if reason:
            who = fc.user or "root"
            hint = (
                f"chown {who} {path} and chmod 0400 (the private key stays private)"
                if fc.secret
                else f"make it and its directories readable by {who}"
            )
            if fc.kind == "rules":
                hint += "; tcpserver opens the rules cdb after dropping privileges"
            out.append(Finding(level, name, f"{fc.kind} file {path}: {reason}", hint, fc.key))
        if fc.secret and path.stat().st_mode & 0o004:
            out.append(
                Finding(
                    "error",
                    name,
                    f"{fc.kind} file {path} is world-readable and holds a private key",
                    f"chmod o-r {path}",
                    fc.key,
                )
            )
    for key, message, hint in checks.warnings:
        out.append(Finding("warning", name, message, hint, key))


def _patch_findings(config: Any, out: list[Finding]) -> None:
    """smtpd_patch = "jms1" against the program itself: a variable name that is nowhere in
    the qmail-smtpd binary is never read by it."""
    from qmailkit import fsutil
    from qmailkit.services.types import smtpd

    for name, svc in config.services.items():
        o = svc.options
        if svc.type != "qmail-smtpd" or o["smtpd_patch"] != "jms1":
            continue
        prog = _find_program(o["smtpd"], list(o["path"]))
        try:
            data = fsutil.read_bounded(prog, 64 * 2**20) if prog else b""
        except (OSError, QmailkitError):
            continue  # reported as a program problem
        if not data.startswith(b"\x7fELF"):
            continue  # a wrapper script (or missing): cannot tell
        unread = [
            opt
            for opt, var in smtpd.EXPORTS
            if opt in smtpd.JMS1_ONLY
            and o[opt] != smtpd.JMS1_ONLY[opt]
            and var.encode() not in data
        ]
        if not unread:
            continue
        key = f"services.{name}.smtpd_patch"
        message = (
            f"{prog} does not read the variables of jms1's patch for "
            + ", ".join(unread)
            + ": it looks like a stock qmail-smtpd"
        )
        hint = 'install the patched qmail-smtpd, or set smtpd_patch = "stock"'
        level = "error" if svc.profile in _AUTH_PROFILES and "require_auth" in unread else "warning"
        out.append(Finding(level, name, message, hint, key))


def _create_hint(kind: str) -> str:
    return {
        "cert": "create the certificate (PEM, key included) or fix the path",
        "rules": "write the rules source and run qmailkit services apply (it compiles them)",
        "auth_cdb": "build it with mkauth",
        "validrcptto_cdb": "build it with mkvalidrcptto",
    }.get(kind, "create it or fix the path")


def _overlaps(a: str, b: str) -> bool:
    wild = ("0", "0.0.0.0", "::", "")
    return a == b or a in wild or b in wild


def _port_findings(rendered: Mapping[str, Any], out: list[Finding]) -> None:
    seen: list[tuple[str, str, int]] = []
    for name, r in rendered.items():
        if not r.listen:
            continue
        ip, port = r.listen
        if not ip:
            continue
        for other, oip, oport in seen:
            if port == oport and _overlaps(ip, oip):
                out.append(
                    Finding(
                        "error",
                        name,
                        f"port {port} on {ip} is also used by {other} ({oip})",
                        "give one of them another port or address",
                    )
                )
        seen.append((name, ip, port))


def _policy_findings(config: Any, rendered: Mapping[str, Any], out: list[Finding]) -> set[str]:
    """The dangerous mistakes (errors: apply refuses them) and risky ones (warnings), from the
    config and the tcp rules alone; returns the keys covered."""
    covered: set[str] = set()

    def error(name: str, key: str, message: str, hint: str) -> None:
        out.append(Finding("error", name, message, hint, key))
        covered.add(key)

    for name, svc in config.services.items():
        if name not in rendered:
            continue
        if svc.type == "qmail-smtpd":
            _smtpd_policy(name, svc, error, out)
        elif svc.type in _LOCAL_ONLY:
            _local_only_policy(name, svc, error, out)
    _log_user_policy(config, out)
    return covered


_AUTH_PROFILES = ("submission", "smtps")  # ports whose point is AUTH


def _smtpd_policy(
    name: str, svc: Any, error: Callable[[str, str, str, str], None], out: list[Finding]
) -> None:
    o = svc.options
    key = f"services.{name}"
    ip, port = str(o.get("ip", "")), int(o.get("port") or 0)
    public = bool(ip) and not is_loopback(ip)
    if public:
        if o.get("relay_client"):
            error(
                name,
                f"{key}.relay_client",
                f"open relay: RELAYCLIENT is set for every client on {ip}:{port}",
                "set relay_client = false and allow relaying per network in the tcp "
                'rules (e.g. 192.0.2.:allow,RELAYCLIENT=""), or listen on a literal '
                "loopback address such as 127.0.0.1",
            )
        if "RELAYCLIENT" in o.get("env", {}):
            error(
                name,
                f"{key}.env.RELAYCLIENT",
                f"open relay: env sets RELAYCLIENT for every client on {ip}:{port}",
                "remove it from env and set RELAYCLIENT per network in the tcp rules",
            )
    tables, bad = _rules_tables(o)
    if bad:
        error(name, f"{key}.rules", bad[0], bad[1])
    for table, where in tables if public else []:
        r = tcprules.relaying(table)
        if r.public >= RELAY_LIMIT:
            error(
                name,
                f"{key}.rules",
                f"open relay on {ip}:{port}: {where(r.by_key)}: "
                f"RELAYCLIENT for {_how_many(r.public)}",
                _RELAY_HINT,
            )
        for k in r.names:
            error(
                name,
                f"{key}.rules",
                f"open relay on {ip}:{port}: {where([k])}: "
                f"{k.decode('latin-1')!r} sets RELAYCLIENT by the client's host name, which "
                "the client chooses (its PTR record)",
                _NAME_HINT,
            )
    if port == 25 and not is_loopback(ip or "0"):
        for opt, what in (("force_tls", "FORCE_TLS"), ("require_auth", "REQUIRE_AUTH")):
            if o.get(opt):
                error(
                    name,
                    f"{key}.{opt}",
                    f"{what} on a port-25 MX: other mail servers cannot deliver to you",
                    f"set {opt} = false here; use a submission (587) or smtps (465) "
                    "service for your users",
                )
    if o.get("user") == "root":
        error(
            name,
            f"{key}.user",
            "qmail-smtpd runs as root: every remote client talks to a root process",
            'use the qmaild account (user = "qmaild"), as qmail intends',
        )
    from qmailkit.services.types import smtpd

    unused = smtpd.ignored(svc)
    if unused:
        message = "a stock qmail-smtpd ignores " + ", ".join(unused)
        hint = 'set smtpd_patch = "jms1" if yours has John Simpson\'s combined patch'
        if svc.profile in _AUTH_PROFILES:
            error(
                name,
                f"{key}.smtpd_patch",
                f"{message}: without AUTH this {svc.profile} port "
                "takes mail for your domains from anyone, past the MX's checks",
                hint,
            )
        else:
            out.append(
                Finding("warning", name, message, hint + ", or remove them", f"{key}.smtpd_patch")
            )


# Services for this host's own programs (webmail, SMTP AUTH helpers), never for the Internet.
_LOCAL_ONLY = {
    "vpopmaild": "vpopmail's administration protocol (add, delete, change any account)",
    "courierpassd": "password changes",
    "courierauthd": "password checks (a guessing oracle)",
}


def _local_only_policy(
    name: str, svc: Any, error: Callable[[str, str, str, str], None], out: list[Finding]
) -> None:
    o = svc.options
    key = f"services.{name}"
    ip, port = str(o.get("ip", "")), int(o.get("port") or 0)
    what = _LOCAL_ONLY[svc.type]
    hint = (
        "listen on 127.0.0.1, or allow only your own networks in the tcp rules "
        "(e.g. 192.0.2.:allow then :deny)"
    )
    tables, bad = _rules_tables(o)
    if bad:
        error(name, f"{key}.rules", bad[0], bad[1])
    if _internet_facing(ip):
        if not o.get("rules"):
            error(
                name,
                f"{key}.ip",
                f"open to the world: {what} on {ip}:{port}, with no tcp rules",
                hint,
            )
        for table, where in tables:
            r = tcprules.coverage(table, tcprules.lets_in, default=True)
            if r.public >= RELAY_LIMIT:
                error(
                    name,
                    f"{key}.rules",
                    f"open to the world: {what} on {ip}:{port}: "
                    f"{where(r.by_key)}: lets in {_how_many(r.public)}",
                    hint,
                )
    if svc.type == "vpopmaild" and o.get("user") == "root":
        out.append(
            Finding(
                "warning",
                name,
                "vpopmaild runs as root: a flaw in it gives root",
                'run it as the vpopmail account (user = "vpopmail")',
                f"{key}.user",
            )
        )


def _internet_facing(ip: str) -> bool:
    """Listening where strangers may connect: all addresses, a name, or a public address."""
    if not ip or is_loopback(ip):
        return False
    if ip in ("0", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(ip).is_global
    except ValueError:
        return True  # a host name: whatever DNS says


def _log_user_policy(config: Any, out: list[Finding]) -> None:
    hint = "use an unprivileged account such as qmaill: multilog only writes the log directory"
    inherited = False
    for name, svc in config.services.items():
        if svc.log_user != "root":
            continue
        if "log_user" in svc.explicit:
            out.append(
                Finding(
                    "warning", name, "the logger runs as root", hint, f"services.{name}.log_user"
                )
            )
        else:
            inherited = True
    if inherited:
        out.append(
            Finding("warning", "supervisor", "the loggers run as root", hint, "supervisor.log_user")
        )


#: rules that relay for (or let in) this many public IPv4 addresses (a /8's worth: more than
#: any site's own networks) do it for strangers; every catch-all spelling covers all of them
RELAY_LIMIT = 1 << 24
_RELAY_HINT = (
    'allow relaying only for your own networks, e.g. 192.0.2.:allow,RELAYCLIENT="", '
    "and let your users relay with SMTP AUTH"
)
_NAME_HINT = "relay by IP address or SMTP AUTH; name rules may only deny or set other variables"


def _how_many(public: int) -> str:
    if public == tcprules.PUBLIC_IPV4:
        return "every public IPv4 address"
    return f"{public:,} public IPv4 addresses ({100 * public / tcprules.PUBLIC_IPV4:.0f}% of them)"


def _rules_tables(
    o: Mapping[str, Any],
) -> tuple[list[tuple[dict[bytes, bytes], Any]], tuple[str, str] | None]:
    """The rules tables tcpserver reads or will read, each with a function naming where a set
    of keys comes from; and (message, hint) when one cannot be read.

    The rules source is judged when there is one (apply compiles it), and the cdb unless
    apply is about to replace it from a newer source.
    """
    from qmailkit.services.apply import _rules_stale

    cdb = o.get("rules") or ""
    if not cdb:
        return [], None  # no -x: tcpserver reads no rules
    source = o.get("rules_source") or ""
    tables: list[tuple[dict[bytes, bytes], Any]] = []
    if source and os.path.exists(source):
        try:
            parsed = tcprules.compile_source(source)
        except QmailkitError as err:
            return [], (
                f"bad tcp rules: {err}",
                "fix the rule; apply will not compile the file until then",
            )
        lines: dict[bytes, int] = {}
        for rule in parsed.rules:
            for k in rule.keys:
                lines.setdefault(k, rule.line)
        tables.append(
            (
                tcprules.first_values(parsed.records()),
                lambda keys: _lines(source, {lines.get(k, 0) for k in keys}),
            )
        )
    if os.path.lexists(cdb) and not (source and _rules_stale(Path(source), Path(cdb))):
        try:
            table = _read_rules_cdb(cdb)
        except FileNotFoundError:  # a dangling symlink: nothing tcpserver could read
            table = {}
        except QmailkitError as err:
            return tables, (
                f"bad tcp rules: {err}",
                "recompile it from its source (qmailkit tcprules)",
            )
        tables.append(
            (
                table,
                lambda keys: (
                    f"{cdb}: keys "
                    + _listed(
                        sorted(
                            "(none matched)" if k is None else repr(k.decode("latin-1"))
                            for k in keys
                        )
                    )
                ),
            )
        )
    return tables, None


def _read_rules_cdb(path: str) -> dict[bytes, bytes]:
    """key → value of a rules cdb, read as a regular file of bounded size (never hangs)."""
    from qmailkit import fsutil
    from qmailkit.cdb import pure
    from qmailkit.errors import InputError

    data = fsutil.read_bounded(path)
    try:
        _tables, end = pure.read_header(data)
        return tcprules.first_values(pure.iter_records(data, end))
    except pure.FormatError as err:
        raise InputError(f"not a valid cdb: {err}", path=path) from None


def _lines(path: str, numbers: set[int]) -> str:
    """path:3,5 (0 stands for no rule: the default)."""
    shown = ["(no rule matched)" if n == 0 else str(n) for n in sorted(numbers)]
    return f"{path}:" + _listed(shown, sep=",")


def _listed(items: list[str], sep: str = ", ", most: int = 5) -> str:
    shown = sep.join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def policy_errors(config: Any, rendered: Mapping[str, Any]) -> list[Finding]:
    """The mistakes ``apply`` refuses to install: an open relay, TLS or AUTH forced on the MX.

    Unlike the rest of ``check`` they do not depend on this machine, so they are
    refused even where the programs and users do not exist yet.
    """
    out: list[Finding] = []
    _policy_findings(config, rendered, out)
    return [f for f in out if f.level == "error"]


def check(config: Any, rendered: Mapping[str, Any] | None = None) -> list[Finding]:
    """Every finding for the configured services, errors and warnings."""
    if rendered is None:
        rendered = render(config)
    out: list[Finding] = []
    for name, r in rendered.items():
        _system_findings(name, r, out)
    _port_findings(rendered, out)
    _patch_findings(config, out)
    covered = _policy_findings(config, rendered, out)
    # render's own warnings about the same keys are reported above, as errors
    return [f for f in out if not (f.level == "warning" and f.key in covered)]


# The Debian package of each program the generated services run that Debian ships.
PACKAGES = {
    **dict.fromkeys(("svscan", "supervise", "multilog", "setuidgid", "softlimit"), "daemontools"),
    **dict.fromkeys(("tcpserver", "tcprules", "rblsmtpd", "fixcrio", "recordio"), "ucspi-tcp"),
    **dict.fromkeys(("runsvdir", "runsv", "chpst", "svlogd"), "runit"),
    **dict.fromkeys(("s6-svscan", "s6-supervise", "s6-log", "s6-setuidgid", "s6-softlimit"), "s6"),
}


def merged(findings: list[Finding]) -> list[str]:
    """One line per distinct finding: those that differ only in the service are one line
    naming every service (the same missing program for eight services is one problem)."""
    groups: dict[tuple[str, str, str, str], list[str]] = {}
    for f in findings:
        groups.setdefault((f.level, f.message, f.hint, f.key), []).append(f.service)
    return [
        Finding(level, ", ".join(services), message, hint, key).describe()
        for (level, message, hint, key), services in groups.items()
    ]


def packages(findings: list[Finding]) -> dict[str, list[str]]:
    """The Debian packages that would provide the programs not found: package -> programs."""
    out: dict[str, list[str]] = {}
    for f in findings:
        package = PACKAGES.get(os.path.basename(f.program)) if f.program else None
        if package and f.program not in out.get(package, []):
            out.setdefault(package, []).append(f.program)
    return dict(sorted(out.items()))
