"""qmail-smtpd under tcpserver (or sslserver): the original service-qmail-smtpd-run.

Every variable of the original script is an option (its name is in ``var``); the
run script checks at start what the original checked (listen address set, user
known, host name known, certificate, rules cdb, checkpassword program), exports
only the variables that are set, logs the command line and execs

    [softlimit -m N] tcpserver|sslserver -e -vR -l LOCAL -c MAX -u UID -g GID [-x CDB] IP PORT
        [fixcrio] [rblsmtpd -t0 -a ZONE... -r ZONE...] [greylist] [recordio]
        qmail-smtpd [LOCAL CHECKPW TRUE]

Profiles: ``mx`` (port 25), ``submission`` (587: AUTH required, FORCE_TLS, no RBL,
greylisting, greet delay, SPF, MAIL FROM check), ``smtps`` (465 under sslserver,
AUTH required, the same relaxations), ``local`` (127.0.0.1: RELAYCLIENT, no RBL,
no rules, no AUTH, no SPF).
"""

from __future__ import annotations

import re
from typing import Any

from qmailkit import tcprules
from qmailkit.services import policy as P
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
    check_program,
    check_user,
    check_zone,
    is_loopback,
    shown,
)
from qmailkit.services.policy import Finding
from qmailkit.services.shell import Script, Var, Word, one_line, quote


def _home(sub: str):
    return lambda system: system.qmail_home + sub


def _vpop(sub: str):
    return lambda system: system.vpopmail_home + sub


OPTIONS: dict[str, Option] = {
    # -- basic -------------------------------------------------------------------------------
    "ip": Option(
        "str",
        "",
        'address to listen on; "0" = all; empty = refuse to start',
        "IP",
        check=check_listen_ip,
    ),
    "port": Option("int", 25, "TCP port", "PORT", min=1, max=65535),
    "hostname": Option(
        "str",
        "",
        "local host name (tcpserver -l and the AUTH host name); "
        "empty = first line of control/me at start",
        "LOCAL",
        check=check_one_line,
    ),
    "user": Option(
        "str", "qmaild", "account qmail-smtpd runs as", "QUSER", check=check_user, empty_ok=False
    ),
    "maxconn": Option(
        "int", 50, "maximum simultaneous connections (tcpserver -c)", "MAX", min=1, max=MAX_CONN
    ),
    "rules": Option(
        "str",
        "/etc/tcp/smtp.cdb",
        "tcprules cdb (tcpserver -x); empty = none",
        "SMTP_CDB",
        check=check_abs_path,
    ),
    "rules_source": Option(
        "str",
        None,
        "rules text compiled into rules by services apply; "
        "default: rules without .cdb; empty = do not compile",
        check=check_abs_path,
    ),
    "ssl": Option("bool", False, "run under sslserver -e (SMTPS)", "SSL"),
    "tls_cert": Option(
        "str",
        _home("/control/servercert.pem"),
        "PEM certificate and key: CERTFILE under SSL, else TLS_SERVER_CERT for "
        "STARTTLS; empty = no TLS",
        "SSL_CERT",
        check=check_abs_path,
    ),
    "relay_client": Option(
        "bool",
        False,
        'export RELAYCLIENT="" (relaying for every client: only for a loopback address)',
        "RELAYCLIENT",
    ),
    # -- programs before qmail-smtpd ---------------------------------------------------------
    "fixcrio": Option(
        "str",
        "fixcrio",
        "fixcrio program in front of the chain; empty = none",
        "FIXCRIO",
        check=check_program,
    ),
    "rblsmtpd": Option(
        "str",
        "rblsmtpd",
        "rblsmtpd program; empty = no RBL checks",
        "RBLSMTPD_PROG",
        check=check_program,
    ),
    "rbl_allow": Option("list", [], "allow-list zones (rblsmtpd -a)", "RBL_GOOD", check=check_zone),
    "rbl_block": Option(
        "list",
        ["sbl.spamhaus.org", "xbl.spamhaus.org"],
        "block-list zones (rblsmtpd -r)",
        "RBL_BAD",
        check=check_zone,
    ),
    "greylist": Option(
        "str",
        "",
        "greylisting program (e.g. /var/qmail/bin/jgreylist); empty = none",
        "GREYLIST",
        check=check_program,
    ),
    "greylist_dir": Option(
        "str", _home("/jgreylist"), "greylist data directory", "JGREYLIST_DIR", check=check_abs_path
    ),
    "greylist_norev": Option(
        "bool", None, "greylist clients without reverse DNS only", "JGREYLIST_NOREV"
    ),
    "greylist_by_ip": Option("bool", False, "greylist by IP instead of class C", "JGREYLIST_BY_IP"),
    "greylist_holdtime": Option(
        "int", 120, "seconds a new client is held off", "JGREYLIST_HOLDTIME", min=0, max=86400
    ),
    "greylist_log": Option("bool", True, "log greylisting decisions", "JGREYLIST_LOG"),
    "greylist_log_pid": Option(
        "bool", None, "add the pid to greylist log lines", "JGREYLIST_LOG_PID"
    ),
    "greylist_log_smtp": Option(
        "bool", None, "log the SMTP dialogue of greylisted clients", "JGREYLIST_LOG_SMTP"
    ),
    "greylist_timeout": Option(
        "int",
        60,
        "seconds before a greylisted client is dropped",
        "JGREYLIST_TIMEOUT",
        min=0,
        max=3600,
    ),
    "greylist_limit": Option(
        "int", None, "jgreylist's JGREYLIST_LIMIT (exported as given)", "JGREYLIST_LIMIT", min=0
    ),
    "recordio": Option(
        "str",
        "",
        "recordio program (logs the whole dialogue); empty = none",
        "RECORDIO",
        check=check_program,
    ),
    # -- qmail-smtpd -------------------------------------------------------------------------
    "smtpd": Option(
        "str", "qmail-smtpd", "the SMTP daemon", "SMTPD", check=check_program, empty_ok=False
    ),
    "smtpd_patch": Option(
        "str",
        "jms1",
        'which qmail-smtpd that is: "jms1" (John Simpson\'s '
        'combined patch, which the original script drives) or "stock" '
        "(netqmail, notqmail: none of the patch's settings)",
        "",
        choices=("jms1", "stock"),
    ),
    "greeting": Option(
        "str", "Mail server ready", "greeting text", "SMTPGREETING", check=check_one_line
    ),
    "greet_delay": Option(
        "int",
        5,
        "seconds before the greeting (clients wait 5 minutes at most)",
        "GREETDELAY",
        min=0,
        max=300,
    ),
    "drop_pre_greet": Option(
        "bool", True, "drop clients that talk before the greeting", "DROP_PRE_GREET"
    ),
    "force_tls": Option("bool", False, "refuse MAIL FROM before STARTTLS", "FORCE_TLS"),
    "deny_tls": Option("bool", False, "never offer STARTTLS", "DENY_TLS"),
    "mfcheck": Option(
        "int",
        3,
        "MAIL FROM domain must exist (0 off, 1 check, >1 also log)",
        "MFCHECK",
        min=0,
        max=9,
    ),
    "maxrcpt": Option(
        "int",
        None,
        "recipients per message (0 = unlimited; 1..99 count as 100)",
        "MAXRCPT",
        min=0,
        max=100000,
    ),
    "relayrej": Option("bool", None, "reject RCPT with several @, or % or ! before @", "RELAYREJ"),
    "log_mail": Option("bool", True, "log every accepted MAIL FROM", "QMAILSMTPD_LOG_MAIL"),
    "log_rcpt": Option("bool", True, "log every accepted RCPT TO", "QMAILSMTPD_LOG_RCPT"),
    "help_version": Option("bool", None, "HELP shows the patch version", "QMAILSMTPD_HELP_VERSION"),
    # -- AUTH --------------------------------------------------------------------------------
    "auth": Option("bool", True, "offer SMTP AUTH (over TLS unless allow_insecure_auth)", "AUTH"),
    "require_auth": Option("bool", False, "refuse MAIL FROM before AUTH", "REQUIRE_AUTH"),
    "allow_insecure_auth": Option("bool", False, "offer AUTH without TLS", "ALLOW_INSECURE_AUTH"),
    "auth_cdb": Option(
        "str",
        "",
        "auth.cdb for AUTH instead of checkpassword; empty = use checkpassword",
        "AUTH_CDB",
        check=check_abs_path,
    ),
    "checkpassword": Option(
        "str",
        _vpop("/bin/vchkpw"),
        "checkpassword program for AUTH",
        "CHECKPW",
        check=check_program,
    ),
    "checkpassword_true": Option(
        "str",
        "/bin/true",
        "program checkpassword runs on success",
        "TRUE",
        check=check_program,
        empty_ok=False,
    ),
    "auth_set": Option(
        "env",
        lambda system: {},
        "variables set after a successful AUTH (AUTH_SET_NAME)",
        "AUTH_SET_*",
    ),
    "auth_unset": Option(
        "list", [], "variables removed after a successful AUTH (AUTH_UNSET_NAME)", "AUTH_UNSET_*"
    ),
    # -- validrcptto -------------------------------------------------------------------------
    "validrcptto_cdb": Option(
        "str",
        _home("/control/validrcptto.cdb"),
        "valid recipients cdb; empty = accept every recipient",
        "VALIDRCPTTO_CDB",
        check=check_abs_path,
    ),
    "validrcptto_limit": Option(
        "int",
        10,
        "bad recipients before hanging up; 0 = never",
        "VALIDRCPTTO_LIMIT",
        min=0,
        max=100000,
    ),
    "validrcptto_log": Option(
        "int", 2, "validrcptto logging 0/1/2", "VALIDRCPTTO_LOG", min=0, max=2
    ),
    # -- SPF ---------------------------------------------------------------------------------
    "spf": Option("int", 3, "SPF behaviour 0 (off) .. 6 (strictest)", "SPFBEHAVIOR", min=0, max=6),
    "spf_log": Option("bool", True, "log each SPF result", "SPF_LOG"),
    "spf_block_plus_all": Option("bool", True, "treat +all like -all", "SPF_BLOCK_PLUS_ALL"),
    # -- DomainKeys --------------------------------------------------------------------------
    "domainkeys": Option(
        "bool", False, "sign/verify with qmail-dk (needs the DK patch)", "DOMAINKEYS"
    ),
    "qmail_dk": Option(
        "str",
        _home("/bin/qmail-dk"),
        "the qmail-dk program",
        "",
        check=check_abs_path,
        empty_ok=False,
    ),
    "dkverify": Option(
        "str", "", "DomainKeys verification letters", "DKVERIFY", check=check_one_line
    ),
    "dksign": Option(
        "str", "", "DomainKeys signing key for everyone", "DKSIGN", check=check_one_line
    ),
    # -- after qmail-smtpd -------------------------------------------------------------------
    "qmailqueue": Option(
        "str",
        "",
        "qmail-queue replacement (e.g. /var/qmail/bin/simscan); empty = qmail-queue",
        "QMAILQUEUE",
        check=check_abs_path,
    ),
    "simscan_nop0fcheck": Option(
        "bool", True, "simscan: skip the p0f check (exported only with qmailqueue)", "NOP0FCHECK"
    ),
    "simscan_debug": Option("int", None, "simscan debug level", "SIMSCAN_DEBUG", min=0),
    "simscan_debug_files": Option(
        "int", None, "simscan: keep work files", "SIMSCAN_DEBUG_FILES", min=0
    ),
    # -- tcpserver limits patch --------------------------------------------------------------
    "maxload": Option(
        "int", None, "refuse connections above this load average x100", "MAXLOAD", min=1, max=100000
    ),
    "maxconnip": Option("int", None, "connections per client IP", "MAXCONNIP", min=1, max=MAX_CONN),
    "maxconnc": Option(
        "int", None, "connections per class C network", "MAXCONNC", min=1, max=MAX_CONN
    ),
    "diemsg": Option("str", None, "text for refused connections", "DIEMSG", check=check_one_line),
    "diemsg_maxload": Option(
        "str", None, "text when maxload is hit", "DIEMSG_MAXLOAD", check=check_one_line
    ),
    "diemsg_maxconnip": Option(
        "str", None, "text when maxconnip is hit", "DIEMSG_MAXCONNIP", check=check_one_line
    ),
    "diemsg_maxconnc": Option(
        "str", None, "text when maxconnc is hit", "DIEMSG_MAXCONNC", check=check_one_line
    ),
}

_CLIENT = {  # what a port only for authenticated clients turns off
    "fixcrio": "",
    "rblsmtpd": "",
    "greylist": "",
    "greet_delay": 0,
    "drop_pre_greet": False,
    "mfcheck": 0,
    "spf": 0,
    "require_auth": True,
}

PROFILES: dict[str, dict[str, Any]] = {
    "mx": {},
    "submission": {**_CLIENT, "port": 587, "force_tls": True},
    "smtps": {**_CLIENT, "port": 465, "ssl": True},
    "local": {
        "ip": "127.0.0.1",
        "relay_client": True,
        "rblsmtpd": "",
        "rules": "",
        "auth": False,
        "spf": 0,
        "greet_delay": 0,
        "drop_pre_greet": False,
    },
}
DEFAULT_PROFILE = "mx"

# The variables exported when set, in the original script's order: (option, variable).
EXPORTS: list[tuple[str, str]] = [
    ("ssl", "SSL"),
    ("maxload", "MAXLOAD"),
    ("maxconnip", "MAXCONNIP"),
    ("maxconnc", "MAXCONNC"),
    ("diemsg", "DIEMSG"),
    ("diemsg_maxload", "DIEMSG_MAXLOAD"),
    ("diemsg_maxconnip", "DIEMSG_MAXCONNIP"),
    ("diemsg_maxconnc", "DIEMSG_MAXCONNC"),
    ("greeting", "SMTPGREETING"),
    ("greet_delay", "GREETDELAY"),
    ("drop_pre_greet", "DROP_PRE_GREET"),
    ("force_tls", "FORCE_TLS"),
    ("deny_tls", "DENY_TLS"),
    ("mfcheck", "MFCHECK"),
    ("maxrcpt", "MAXRCPT"),
    ("relayrej", "RELAYREJ"),
    ("log_mail", "QMAILSMTPD_LOG_MAIL"),
    ("log_rcpt", "QMAILSMTPD_LOG_RCPT"),
    ("help_version", "QMAILSMTPD_HELP_VERSION"),
    ("require_auth", "REQUIRE_AUTH"),
    ("allow_insecure_auth", "ALLOW_INSECURE_AUTH"),
    ("validrcptto_cdb", "VALIDRCPTTO_CDB"),
    ("validrcptto_limit", "VALIDRCPTTO_LIMIT"),
    ("validrcptto_log", "VALIDRCPTTO_LOG"),
    ("spf", "SPFBEHAVIOR"),
    ("spf_log", "SPF_LOG"),
    ("spf_block_plus_all", "SPF_BLOCK_PLUS_ALL"),
]

GREYLIST_EXPORTS: list[tuple[str, str]] = [
    ("greylist_dir", "JGREYLIST_DIR"),
    ("greylist_norev", "JGREYLIST_NOREV"),
    ("greylist_by_ip", "JGREYLIST_BY_IP"),
    ("greylist_holdtime", "JGREYLIST_HOLDTIME"),
    ("greylist_log", "JGREYLIST_LOG"),
    ("greylist_log_pid", "JGREYLIST_LOG_PID"),
    ("greylist_log_smtp", "JGREYLIST_LOG_SMTP"),
    ("greylist_timeout", "JGREYLIST_TIMEOUT"),
    ("greylist_limit", "JGREYLIST_LIMIT"),
]


def env_value(value: Any) -> str | None:
    """How an option value is exported: booleans as 1/0, nothing for unset or empty."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return value or None


# What only jms1's combined patch reads (a stock qmail-smtpd knows none of it), with the value
# that means "not used".  Under smtpd_patch = "stock" the ones the config does not set are
# switched off, and services check names the ones it does set.
JMS1_ONLY: dict[str, Any] = {
    "greeting": "",
    "greet_delay": 0,
    "drop_pre_greet": False,
    "force_tls": False,
    "deny_tls": False,
    "mfcheck": 0,
    "maxrcpt": None,
    "relayrej": None,
    "log_mail": False,
    "log_rcpt": False,
    "help_version": None,
    "auth": False,
    "require_auth": False,
    "allow_insecure_auth": False,
    "auth_cdb": "",
    "auth_set": {},
    "auth_unset": [],
    "validrcptto_cdb": "",
    "validrcptto_limit": None,
    "validrcptto_log": None,
    "spf": 0,
    "spf_log": None,
    "spf_block_plus_all": None,
}


def ignored(svc: Service) -> list[str]:
    """The options set for this service that its qmail-smtpd ignores (stock: every jms1 one;
    tls_cert too, unless sslserver uses it)."""
    o = svc.options
    if o["smtpd_patch"] != "stock":
        return []
    out = [opt for opt, off in JMS1_ONLY.items() if o[opt] != off]
    if not o["ssl"] and o["tls_cert"]:
        out.insert(0, "tls_cert")
    return out


def _stock(svc: Service) -> None:
    """Switch off what a stock qmail-smtpd would ignore, unless the config sets it."""
    o = svc.options
    configured = svc.explicit | set(PROFILES.get(svc.profile or "", {}))
    for opt, off in JMS1_ONLY.items():
        if opt not in configured:
            o[opt] = off
    if not o["ssl"] and "tls_cert" not in configured:
        o["tls_cert"] = ""


def validate(svc: Service, system: System) -> tuple[str, str, str] | None:
    o = svc.options
    if o["smtpd_patch"] == "stock":
        _stock(svc)
        if o["ssl"] and not o["tls_cert"]:
            return ("tls_cert", "ssl = true needs a certificate", "set tls_cert to the PEM file")
        return None  # the patch's rules do not apply; services check names what is ignored
    problem = _tls_problem(o) or _auth_problem(o)
    if problem:
        return problem
    if o["rules_source"] and not o["rules"]:
        return (
            "rules_source",
            "rules_source is set but rules (the cdb) is empty",
            "set rules to the cdb path tcpserver should read",
        )
    for name in o["auth_unset"]:
        if not _valid_env_name(name):
            return (
                "auth_unset",
                f"not a variable name: {shown(name)}",
                "use letters, digits and _",
            )
    if not o["ssl"] and not o["tls_cert"]:
        # no certificate means no STARTTLS: say so, or the patch offers it with its default one
        o["deny_tls"] = True
    return None


def _tls_problem(o: dict[str, Any]) -> tuple[str, str, str] | None:
    if o["force_tls"] and o["deny_tls"]:
        return (
            "force_tls",
            "force_tls and deny_tls together refuse every client",
            "set at most one of them",
        )
    if o["force_tls"] and not o["ssl"] and not o["tls_cert"]:
        return (
            "force_tls",
            "force_tls needs a certificate for STARTTLS",
            "set tls_cert, or force_tls = false",
        )
    if o["ssl"] and not o["tls_cert"]:
        return ("tls_cert", "ssl = true needs a certificate", "set tls_cert to the PEM file")
    return None


def _auth_problem(o: dict[str, Any]) -> tuple[str, str, str] | None:
    if o["require_auth"] and not o["auth"]:
        return (
            "require_auth",
            "require_auth without auth refuses every client",
            "set auth = true, or require_auth = false",
        )
    if o["require_auth"] and not _auth_possible(o):
        message = (
            "require_auth refuses every client: AUTH is offered only over TLS, and there is no TLS"
        )
        return (
            "require_auth",
            message,
            "set tls_cert (and deny_tls = false), or require_auth = false",
        )
    if o["auth"] and not o["auth_cdb"] and not o["checkpassword"]:
        return (
            "auth",
            "auth needs auth_cdb or a checkpassword program",
            "set auth_cdb or checkpassword, or auth = false",
        )
    return None


def _starttls(o: dict[str, Any]) -> bool:
    """STARTTLS is configured (its certificate may still be missing when the service starts)."""
    return not o["ssl"] and bool(o["tls_cert"]) and not o["deny_tls"]


def _auth_possible(o: dict[str, Any]) -> bool:
    """AUTH can be offered: over SMTPS, over STARTTLS, or in clear when allowed."""
    return o["ssl"] or _starttls(o) or o["allow_insecure_auth"]


def cert_required(o: dict[str, Any]) -> bool:
    """Whether the STARTTLS certificate is needed for the service to do its job: with
    force_tls, or with require_auth when AUTH is offered only over TLS.  The one rule for the
    run script (fatal or a warning) and services check (error or warning)."""
    return _starttls(o) and (o["force_tls"] or (o["require_auth"] and not o["allow_insecure_auth"]))


def _valid_env_name(name: str) -> bool:
    return re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) is not None


def _hidden(o: dict[str, Any]) -> frozenset[str]:
    """Options that do nothing with these settings, left out of the script's header."""
    hide: set[str] = set()
    if not o["greylist"]:
        hide.update(opt for opt, _ in GREYLIST_EXPORTS)
    if not o["domainkeys"]:
        hide.update(("qmail_dk", "dkverify", "dksign"))
    if not o["qmailqueue"]:
        hide.update(("simscan_nop0fcheck", "simscan_debug", "simscan_debug_files"))
    if not o["rblsmtpd"]:
        hide.update(("rbl_allow", "rbl_block"))
    if not o["auth"]:
        hide.update(
            (
                "auth_cdb",
                "checkpassword",
                "checkpassword_true",
                "auth_set",
                "auth_unset",
                "require_auth",
                "allow_insecure_auth",
            )
        )
    elif o["auth_cdb"]:
        hide.update(("checkpassword", "checkpassword_true"))
    if not o["rules"]:
        hide.add("rules_source")
    return frozenset(hide)


def _config_warnings(svc: Service, checks: R.Checks) -> None:
    """Settings that work but are probably wrong; ``services check`` reports them."""
    o = svc.options

    def warn(option: str, message: str, fix: str) -> None:
        checks.warnings.append((R.key(svc, option), message, fix))

    if not o["ip"]:
        warn(
            "ip",
            "no listen address: the service will not start",
            'set ip, e.g. "0" for all addresses',
        )
    if o["auth"] and not _auth_possible(o):
        warn("auth", "AUTH is never offered: there is no TLS", "set tls_cert, or auth = false")
    if o["auth"] and o["allow_insecure_auth"]:
        warn(
            "allow_insecure_auth",
            "AUTH is offered without TLS: passwords cross in clear",
            "set allow_insecure_auth = false",
        )


def _export(s: Script, svc: Service) -> None:
    """The environment qmail-smtpd and its helpers read, in the original's order."""
    o = svc.options
    cert = o["tls_cert"]
    s.blank()
    s.comment("The environment qmail-smtpd and its helpers read (only what is set).")
    if o["relay_client"]:
        s.setenv("RELAYCLIENT", "")
    stock = o["smtpd_patch"] == "stock"
    if o["ssl"]:
        s.setenv("CERTFILE", cert)
        s.setenv("KEYFILE", "")
        s.setenv("DHFILE", "")
    elif cert and not stock:
        s.setenv("TLS_SERVER_CERT", cert)
    exports = list(EXPORTS)
    if o["greylist"]:
        exports[8:8] = GREYLIST_EXPORTS
    for opt, var in exports:
        if stock and (opt in JMS1_ONLY or opt == "ssl"):
            continue  # read by jms1's patch only
        _setenv_if_set(s, var, o[opt])
    if o["auth"] and o["auth_cdb"]:
        s.setenv("AUTH_CDB", o["auth_cdb"])
    for name, value in o["auth_set"].items():
        s.setenv(f"AUTH_SET_{name}", value)  # empty values too (the original dropped them)
    for name in o["auth_unset"]:
        s.setenv(f"AUTH_UNSET_{name}", "1")
    _export_queue(s, o)
    R.export_env(s, svc)


def _setenv_if_set(s: Script, var: str, value: object) -> None:
    exported = env_value(value)
    if exported is not None:
        s.setenv(var, exported)


def _export_queue(s: Script, o: dict[str, Any]) -> None:
    """What runs instead of qmail-queue: qmail-dk (then DKQUEUE), simscan, or another."""
    queue = o["qmailqueue"]
    if o["domainkeys"]:
        if queue:
            s.setenv("DKQUEUE", queue)
        s.setenv("AUTH_UNSET_DKVERIFY", "1")
        s.setenv("QMAILQUEUE", o["qmail_dk"])
        if o["dkverify"]:
            s.setenv("DKVERIFY", o["dkverify"])
        if o["dksign"]:
            s.setenv("DKSIGN", o["dksign"])
    elif queue:
        s.setenv("QMAILQUEUE", queue)
    if queue:
        for opt, var in (
            ("simscan_nop0fcheck", "NOP0FCHECK"),
            ("simscan_debug", "SIMSCAN_DEBUG"),
            ("simscan_debug_files", "SIMSCAN_DEBUG_FILES"),
        ):
            _setenv_if_set(s, var, o[opt])


class _RunScript:
    """The run script of one qmail-smtpd service, written part by part in the original's
    order, and what services check must verify for it."""

    def __init__(self, svc: Service, config: Config) -> None:
        self.svc = svc
        self.options = svc.options
        self.config = config
        self.checks = R.Checks(users=[self.options["user"]])
        self.script = R.start(svc, config, OPTIONS, _hidden(self.options))

    def key(self, option: str) -> str:
        return R.key(self.svc, option)

    def identity(self) -> None:
        """Where to listen, as whom, and the host name."""
        s, o = self.script, self.options
        home = self.config.system.qmail_home
        s.comment("Where to listen and as whom (the original refuses to start without IP).")
        s.assign("IP", o["ip"])
        s.fatal_unless('[ -n "$IP" ]', f"ip is not set: set {self.key('ip')} in {self.config.path}")
        s.assign("QUSER", o["user"])
        s.line('QUID=$(id -u "$QUSER") && QGID=$(id -g "$QUSER") ||')
        s.line(f'\tfatal "unknown user $QUSER: create it or change {self.key("user")}"')
        if o["hostname"]:
            s.assign("LOCAL", o["hostname"])
        else:
            me = f"{home}/control/me"
            s.comment("The host name: first line of control/me.")
            s.line(f"LOCAL=$(head -n 1 {quote(me)} 2>/dev/null)")
            s.fatal_unless(
                '[ -n "$LOCAL" ]',
                f"no host name: {me} is missing or empty; set {self.key('hostname')}",
            )
        s.blank()
        s.comment("Without control/rcpthosts qmail-smtpd relays for everyone: create it empty.")
        rcpthosts = f"{home}/control/rcpthosts"
        qr = quote(rcpthosts)
        s.line(f"if [ ! -e {qr} ]; then")
        s.line(
            f"\techo {quote('warning: ' + one_line(rcpthosts) + ' was missing; created it empty')}"
        )
        s.line(f"\t: > {qr} && chmod 644 {qr}")
        s.line("fi")
        s.blank()

    def tls(self) -> list[Word]:
        """The certificate checks; the server program (sslserver for SMTPS)."""
        s, o, checks = self.script, self.options, self.checks
        cert = o["tls_cert"]
        if o["ssl"]:
            checks.programs.append(("sslserver", self.key("ssl")))
            s.comment("SMTPS: sslserver does TLS; the certificate and key are in one PEM file.")
            s.fatal_unless(f"[ -r {quote(cert)} ]", f"certificate {cert} is missing or unreadable")
            checks.files.append(R.FileCheck(cert, self.key("tls_cert"), "cert", None, True))
            return ["sslserver", "-e"]
        checks.programs.append(("tcpserver", ""))
        if not _starttls(o):
            return ["tcpserver"]
        needed = cert_required(o)
        checks.files.append(
            R.FileCheck(cert, self.key("tls_cert"), "cert", o["user"], True, required=needed)
        )
        if needed:
            why = "force_tls" if o["force_tls"] else "require_auth with AUTH over TLS"
            s.fatal_unless(
                f"[ -r {quote(cert)} ]",
                f"certificate {cert} is missing or unreadable ({why} needs it)",
            )
        else:
            s.warn_unless(f"[ -r {quote(cert)} ]", f"certificate {cert} is missing: no STARTTLS")
        return ["tcpserver"]

    def rules(self) -> tuple[str, str] | None:
        """The rules cdb check; the (source, cdb) pair apply compiles."""
        rules = self.options["rules"]
        if not rules:
            return None
        self.script.fatal_unless(
            f"[ -r {quote(rules)} ]",
            f"rules cdb {rules} is missing: compile it with qmailkit tcprules",
        )
        self.checks.files.append(
            R.FileCheck(rules, self.key("rules"), "rules", self.options["user"])
        )
        source = self.options["rules_source"]
        return (source, rules) if source else None

    def auth(self) -> list[Word]:
        """The AUTH database or checkpassword checks; qmail-smtpd's checkpassword arguments."""
        s, o, checks = self.script, self.options, self.checks
        if not o["auth"]:
            return []
        if o["auth_cdb"]:
            s.fatal_unless(
                f"[ -r {quote(o['auth_cdb'])} ]",
                f"auth cdb {o['auth_cdb']} is missing: build it with mkauth",
            )
            checks.files.append(
                R.FileCheck(o["auth_cdb"], self.key("auth_cdb"), "auth_cdb", o["user"], True)
            )
            return []
        cp, true = o["checkpassword"], o["checkpassword_true"]
        s.fatal_unless(f"have {quote(cp)}", f"checkpassword program {cp} not found")
        s.fatal_unless(f"have {quote(true)}", f"program {true} not found")
        checks.programs.append((cp, self.key("checkpassword")))
        checks.programs.append((true, self.key("checkpassword_true")))
        return [Var("LOCAL"), cp, true]

    def databases(self) -> None:
        """qmail-dk, when DomainKeys are on, and the valid-recipients cdb."""
        o = self.options
        if o["domainkeys"]:
            dk = o["qmail_dk"]
            self.script.fatal_unless(
                f"[ -x {quote(dk)} ]",
                f"domainkeys = true but {dk} is missing: install the DK patch",
            )
            self.checks.programs.append((dk, self.key("qmail_dk")))
        if o["validrcptto_cdb"]:
            self.checks.files.append(
                R.FileCheck(
                    o["validrcptto_cdb"], self.key("validrcptto_cdb"), "validrcptto_cdb", o["user"]
                )
            )

    def chain(self) -> list[Word]:
        """The programs between tcpserver and qmail-smtpd, then qmail-smtpd."""
        o, programs = self.options, self.checks.programs
        words: list[Word] = []
        if o["fixcrio"]:
            words.append(o["fixcrio"])
            programs.append((o["fixcrio"], self.key("fixcrio")))
        zones = [("-a", z) for z in o["rbl_allow"]] + [("-r", z) for z in o["rbl_block"]]
        if o["rblsmtpd"] and zones:
            words += [o["rblsmtpd"], "-t0"]
            for flag, zone in zones:
                words += [flag, zone]
            programs.append((o["rblsmtpd"], self.key("rblsmtpd")))
        for opt in ("greylist", "recordio"):
            if o[opt]:
                words.append(o[opt])
                programs.append((o[opt], self.key(opt)))
        words.append(o["smtpd"])
        programs.append((o["smtpd"], self.key("smtpd")))
        return words


def build(svc: Service, config: Config) -> R.Built:
    o = svc.options
    run = _RunScript(svc, config)
    run.identity()
    server = run.tls()
    rules_pair = run.rules()
    auth_args = run.auth()
    run.databases()
    _config_warnings(svc, run.checks)
    _export(run.script, svc)
    words: list[Word] = [
        *server,
        "-vR",
        "-l",
        Var("LOCAL"),
        "-c",
        str(o["maxconn"]),
        "-u",
        Var("QUID"),
        "-g",
        Var("QGID"),
    ]
    if o["rules"]:
        words += ["-x", o["rules"]]
    words += [Var("IP"), str(o["port"]), *run.chain(), *auth_args]
    R.common_checks(svc, run.checks)
    run.script.command(R.wrap(svc, words))
    return R.Built(
        run=run.script.text(),
        checks=run.checks,
        listen=(o["ip"], o["port"]),
        rules=rules_pair,
        user=o["user"],
    )


# -- policy ------------------------------------------------------------------------------------

AUTH_PROFILES = ("submission", "smtps")  # ports whose point is AUTH

_RELAY_HINT = (
    'allow relaying only for your own networks, e.g. 192.0.2.:allow,RELAYCLIENT="", '
    "and let your users relay with SMTP AUTH"
)
_NAME_HINT = "relay by IP address or SMTP AUTH; name rules may only deny or set other variables"


def policy(svc: Service) -> list[Finding]:
    """The open-relay rules, TLS and AUTH on the MX, root, and a stock qmail-smtpd on an AUTH
    port: errors (apply refuses them) and warnings, from the config and its tcp rules."""
    return [*_relay_policy(svc), *_mx_policy(svc), *_patch_policy(svc)]


def _relay_policy(svc: Service) -> list[Finding]:
    """RELAYCLIENT for every client, by the config or by tcp rules that relay for strangers."""
    o = svc.options
    ip, port = P.listen(svc)
    public = bool(ip) and not is_loopback(ip)
    out: list[Finding] = []
    if public and o["relay_client"]:
        out.append(
            P.error(
                svc,
                "relay_client",
                f"open relay: RELAYCLIENT is set for every client on {ip}:{port}",
                "set relay_client = false and allow relaying per network in the tcp "
                'rules (e.g. 192.0.2.:allow,RELAYCLIENT=""), or listen on a literal '
                "loopback address such as 127.0.0.1",
            )
        )
    if public and "RELAYCLIENT" in o["env"]:
        out.append(
            P.error(
                svc,
                "env.RELAYCLIENT",
                f"open relay: env sets RELAYCLIENT for every client on {ip}:{port}",
                "remove it from env and set RELAYCLIENT per network in the tcp rules",
            )
        )
    rules = P.read_rules(o)
    if rules.problem:
        out.append(P.error(svc, "rules", *rules.problem))
    for rules_table in rules.tables if public else []:
        found = tcprules.relaying(rules_table.table)
        where = f"open relay on {ip}:{port}: "
        if found.public >= P.RELAY_LIMIT:
            out.append(
                P.error(
                    svc,
                    "rules",
                    f"{where}{rules_table.where(found.by_key)}: "
                    f"RELAYCLIENT for {P.how_many(found.public)}",
                    _RELAY_HINT,
                )
            )
        out.extend(
            P.error(
                svc,
                "rules",
                f"{where}{rules_table.where([name])}: {name.decode('latin-1')!r} sets "
                "RELAYCLIENT by the client's host name, which the client chooses (its PTR record)",
                _NAME_HINT,
            )
            for name in found.names
        )
    return out


def _mx_policy(svc: Service) -> list[Finding]:
    """What stops other mail servers delivering to a port-25 MX, and qmail-smtpd as root."""
    o = svc.options
    ip, port = P.listen(svc)
    out: list[Finding] = []
    if port == 25 and not is_loopback(ip or "0"):
        out.extend(
            P.error(
                svc,
                opt,
                f"{what} on a port-25 MX: other mail servers cannot deliver to you",
                f"set {opt} = false here; use a submission (587) or smtps (465) "
                "service for your users",
            )
            for opt, what in (("force_tls", "FORCE_TLS"), ("require_auth", "REQUIRE_AUTH"))
            if o[opt]
        )
    if o["user"] == "root":
        out.append(
            P.error(
                svc,
                "user",
                "qmail-smtpd runs as root: every remote client talks to a root process",
                'use the qmaild account (user = "qmaild"), as qmail intends',
            )
        )
    return out


def _patch_policy(svc: Service) -> list[Finding]:
    """Settings a stock qmail-smtpd ignores; on an AUTH port, that means no AUTH at all."""
    unused = ignored(svc)
    if not unused:
        return []
    message = "a stock qmail-smtpd ignores " + ", ".join(unused)
    hint = 'set smtpd_patch = "jms1" if yours has John Simpson\'s combined patch'
    if svc.profile in AUTH_PROFILES:
        return [
            P.error(
                svc,
                "smtpd_patch",
                f"{message}: without AUTH this {svc.profile} port "
                "takes mail for your domains from anyone, past the MX's checks",
                hint,
            )
        ]
    return [P.warning(svc, "smtpd_patch", message, hint + ", or remove them")]
