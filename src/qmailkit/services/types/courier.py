"""Courier-IMAP's imapd and pop3d under couriertcpd, as the original's service-imap-run,
service-imapssl-run, service-pop3-run and service-pop3ssl-run.

Like Courier's own start scripts, the run script sources Courier's config files
(``imapd`` and ``imapd-ssl``, or ``pop3d`` and ``pop3d-ssl``) so their settings
reach the programs, applies the overrides from qmailkit's config, and execs

    couriertcpd -address=IP -maxprocs=MAXDAEMONS -maxperip=MAXPERIP $TCPDOPTS PORT
        [couriertls -server -tcpd] imaplogin|pop3login imapd|pop3d MAILDIRPATH

The profile says which of the four: ``imap`` (143), ``imapssl`` (993), ``pop3`` (110),
``pop3ssl`` (995).  ``prefix`` and the directories under it follow the original's
``prefix=``/``bindir=``/... lines.
"""

from __future__ import annotations

from typing import Any

from qmailkit.services import render as R
from qmailkit.services.config import (
    MAX_CONN,
    Config,
    Option,
    Service,
    System,
    check_abs_path,
    check_listen_ip,
    check_one_line,
)
from qmailkit.services.policy import Finding
from qmailkit.services.shell import Raw, Script, Split, Var, Word, quote

OPTIONS: dict[str, Option] = {
    "ip": Option(
        "str",
        "",
        'address to listen on; "0" = all; empty = refuse to start',
        "ADDRESS / SSLADDRESS",
        check=check_listen_ip,
    ),
    "port": Option("int", 143, "TCP port", "PORT / SSLPORT", min=1, max=65535),
    "prefix": Option(
        "str",
        lambda system: system.courier_prefix,
        "where Courier-IMAP is installed",
        "prefix",
        check=check_abs_path,
        empty_ok=False,
    ),
    "bindir": Option(
        "str",
        None,
        "imapd, pop3d, couriertls (default: prefix/bin)",
        "bindir",
        check=check_abs_path,
        empty_ok=False,
    ),
    "sbindir": Option(
        "str",
        None,
        "imaplogin, pop3login (default: prefix/sbin)",
        "sbindir",
        check=check_abs_path,
        empty_ok=False,
    ),
    "libexecdir": Option(
        "str",
        None,
        "couriertcpd (default: prefix/libexec)",
        "libexecdir",
        check=check_abs_path,
        empty_ok=False,
    ),
    "sysconfdir": Option(
        "str",
        None,
        "Courier's config files (default: prefix/etc)",
        "sysconfdir",
        check=check_abs_path,
        empty_ok=False,
    ),
    "maxprocs": Option(
        "int",
        None,
        "maximum connections; not set = from the config file",
        "MAXDAEMONS",
        min=1,
        max=MAX_CONN,
    ),
    "maxperip": Option(
        "int",
        None,
        "connections per client IP; not set = from the config file",
        "MAXPERIP",
        min=1,
        max=MAX_CONN,
    ),
    "maildir": Option(
        "str",
        None,
        "mailbox relative to the home directory; not set = from the config file",
        "MAILDIRPATH",
        check=check_one_line,
        empty_ok=False,
    ),
    "tls_cert": Option(
        "str",
        None,
        "certificate (SSL profiles); not set = from the config file",
        "TLS_CERTFILE",
        check=check_abs_path,
        empty_ok=False,
    ),
}

_DIRS = {"bindir": "bin", "sbindir": "sbin", "libexecdir": "libexec", "sysconfdir": "etc"}
_KINDS = {  # profile → (protocol, ssl, port)
    "imap": ("imap", False, 143),
    "imapssl": ("imap", True, 993),
    "pop3": ("pop3", False, 110),
    "pop3ssl": ("pop3", True, 995),
}
PROFILES: dict[str, dict[str, Any]] = {p: {"port": port} for p, (_, _, port) in _KINDS.items()}
DEFAULT_PROFILE = None  # the profile must be given


def validate(svc: Service, system: System) -> tuple[str, str, str] | None:
    o = svc.options
    for d, sub in _DIRS.items():  # the original's bindir=${exec_prefix}/bin etc.
        if o[d] is None:
            o[d] = f"{o['prefix']}/{sub}"
    return None


def build(svc: Service, config: Config) -> R.Built:
    o = svc.options

    def k(option: str) -> str:
        return R.key(svc, option)

    proto, ssl, _ = _KINDS[svc.profile or "imap"]
    dirs = {d: o[d] for d in _DIRS}
    daemon = f"{proto}d"  # imapd / pop3d: program and config file
    conf_files = [f"{dirs['sysconfdir']}/{daemon}"]
    if ssl:
        conf_files.append(f"{dirs['sysconfdir']}/{daemon}-ssl")
    checks = R.Checks()
    s = R.start(svc, config, OPTIONS)
    s.comment("Where to listen.")
    s.assign("IP", o["ip"])
    s.fatal_unless('[ -n "$IP" ]', f"ip is not set: set {k('ip')} in {config.path}")
    if not o["ip"]:
        checks.warnings.append(
            (
                k("ip"),
                "no listen address: the service will not start",
                'set ip, e.g. "0" for all addresses',
            )
        )
    s.blank()
    s.comment("Courier's own settings, exported as its start scripts do.")
    for f in conf_files:
        s.fatal_unless(f"[ -r {quote(f)} ]", f"Courier config file {f} is missing")
        checks.files.append(R.FileCheck(f, k("sysconfdir"), "config"))
    s.line("set -a")
    for f in conf_files:
        s.line(f". {quote(f)}")
    s.line("set +a")
    s.blank()
    s.comment("Overrides from the qmailkit config.")
    for opt, var in (
        ("maxprocs", "MAXDAEMONS"),
        ("maxperip", "MAXPERIP"),
        ("maildir", "MAILDIRPATH"),
        ("tls_cert", "TLS_CERTFILE"),
    ):
        if o[opt] is not None and (opt != "tls_cert" or ssl):
            s.setenv(var, str(o[opt]))
    _tls(s, svc, checks, proto.upper(), ssl=ssl, dirs=dirs)
    for var in ("MAXDAEMONS", "MAXPERIP", "MAILDIRPATH"):
        s.fatal_unless(f'[ -n "${var}" ]', f"{var} is not set in the Courier config files")
    R.export_env(s, svc)
    tcpd = f"{dirs['libexecdir']}/couriertcpd"
    login = f"{dirs['sbindir']}/{proto}login"
    prog = f"{dirs['bindir']}/{daemon}"
    for p, opt in ((tcpd, "libexecdir"), (login, "sbindir"), (prog, "bindir")):
        checks.programs.append((p, k(opt)))
    R.common_checks(svc, checks)
    words: list[Word] = [
        tcpd,
        Raw('-address="$IP"'),
        Raw('-maxprocs="$MAXDAEMONS"'),
        Raw('-maxperip="$MAXPERIP"'),
        Split("TCPDOPTS"),
        str(o["port"]),
    ]
    if ssl:
        words += [Var("COURIERTLS"), "-server", "-tcpd"]
    words += [login, prog, Var("MAILDIRPATH")]
    s.command(R.wrap(svc, words))
    return R.Built(run=s.text(), checks=checks, listen=(o["ip"], o["port"]))


def _tls(
    s: Script, svc: Service, checks: R.Checks, up: str, *, ssl: bool, dirs: dict[str, str]
) -> None:
    """TLS from the start (couriertls, its certificate) or STARTTLS as the config file says."""
    o = svc.options

    def k(option: str) -> str:
        return R.key(svc, option)

    if ssl:
        s.setenv(f"{up}_TLS", "1")
        s.line('[ -n "$COURIERTLS" ] || COURIERTLS=' + quote(dirs["bindir"] + "/couriertls"))
        s.line(
            '[ -r "$TLS_CERTFILE" ] || fatal "certificate ${TLS_CERTFILE:-(not set)} is missing"'
        )
        s.line('[ -x "$COURIERTLS" ] || fatal "couriertls not found: $COURIERTLS"')
        if o["tls_cert"]:
            checks.files.append(R.FileCheck(o["tls_cert"], k("tls_cert"), "cert", None, True))
        checks.programs.append((dirs["bindir"] + "/couriertls", k("bindir")))
    else:
        # the plain services offer STARTTLS when the config file says so
        s.setenv(f"{up}_STARTTLS", Var(f"{up}DSTARTTLS"))


def policy(svc: Service) -> list[Finding]:
    return []  # IMAP and POP3 serve every client by design
