"""``services check``: the config against the running system, and the usual mistakes.

Each finding names the service, says what is wrong and how to fix it.  Errors
would stop a service from working (a missing user, program, certificate or
unreadable rules database) or make the server dangerous (an open relay);
warnings are likely mistakes.  The checks use what ``render`` lists per service
(``RenderedService.checks``: users, programs, files) and the services' options.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path

from qmailkit import fsutil, supervisor
from qmailkit.errors import QmailkitError
from qmailkit.services.config import Config
from qmailkit.services.policy import Finding
from qmailkit.services.render import FileCheck, RenderedService, render
from qmailkit.services.types import TYPES, smtpd

__all__ = ["Account", "Finding", "check", "merged", "packages", "policy_errors"]


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


def _system_findings(name: str, r: RenderedService, out: list[Finding]) -> None:
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
        if fc.path not in compiled_by_apply or os.path.exists(fc.path):
            out.extend(_file_findings(name, fc, missing_users))
    for key, message, hint in checks.warnings:
        out.append(Finding("warning", name, message, hint, key))


def _file_findings(name: str, fc: FileCheck, missing_users: set[str]) -> list[Finding]:
    """A file the service needs: there, readable by its user, a private key kept private.
    (A file apply compiles from its source before the service starts need not be there.)"""
    path = Path(fc.path)
    # a file the service can run without (a STARTTLS certificate) is a warning, as in
    # the run script
    level = "error" if fc.required else "warning"
    if not path.exists():
        without = "" if fc.required else " (the service starts without it)"
        return [
            Finding(
                level,
                name,
                f"{fc.kind} file {path} does not exist{without}",
                _create_hint(fc.kind),
                fc.key,
            )
        ]
    if fc.user in missing_users:
        return []
    try:
        reason = Account(fc.user).can_read(path)
    except KeyError:
        return []
    out = []
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
    return out


def _patch_findings(config: Config, out: list[Finding]) -> None:
    """smtpd_patch = "jms1" against the program itself: a variable name that is nowhere in
    the qmail-smtpd binary is never read by it."""
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
        level = (
            "error"
            if svc.profile in smtpd.AUTH_PROFILES and "require_auth" in unread
            else "warning"
        )
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


def _port_findings(rendered: Mapping[str, RenderedService], out: list[Finding]) -> None:
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


def _policy_findings(config: Config, rendered: Mapping[str, RenderedService]) -> list[Finding]:
    """What each service's type declares dangerous (errors: apply refuses them) or risky
    (warnings), from the config and the tcp rules alone; and loggers running as root."""
    out = [
        finding
        for name, svc in config.services.items()
        if name in rendered
        for finding in TYPES[svc.type].policy(svc)
    ]
    return out + _log_user_policy(config)


def _log_user_policy(config: Config) -> list[Finding]:
    hint = "use an unprivileged account such as qmaill: multilog only writes the log directory"
    out: list[Finding] = []
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
    return out


def policy_errors(config: Config, rendered: Mapping[str, RenderedService]) -> list[Finding]:
    """The mistakes ``apply`` refuses to install: an open relay, TLS or AUTH forced on the MX.

    Unlike the rest of ``check`` they do not depend on this machine, so they are
    refused even where the programs and users do not exist yet.
    """
    return [f for f in _policy_findings(config, rendered) if f.level == "error"]


def check(config: Config, rendered: Mapping[str, RenderedService] | None = None) -> list[Finding]:
    """Every finding for the configured services, errors and warnings."""
    if rendered is None:
        rendered = render(config)
    out: list[Finding] = []
    for name, service in rendered.items():
        _system_findings(name, service, out)
    _port_findings(rendered, out)
    _patch_findings(config, out)
    return out + _policy_findings(config, rendered)


# The Debian package of each program the generated services run that Debian ships: the
# supervision suites say which are theirs.
PACKAGES = {
    **dict.fromkeys(("tcpserver", "tcprules", "rblsmtpd", "fixcrio", "recordio"), "ucspi-tcp"),
    **{
        program: package
        for kind in supervisor.KINDS
        for program, package in supervisor.get(kind).packages.items()
    },
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
