"""qmail-pop3d: qmail-popup + checkpassword + qmail-pop3d, plain or under sslserver.

No ``-u``/``-g``: the checkpassword program must start as root so it can switch
to the mailbox owner before running qmail-pop3d.  Profiles: ``pop3`` (110) and
``pop3s`` (995 under ``sslserver -e``, the original's inline example).
"""

from __future__ import annotations

from typing import Any

from qmailkit.services import render as R
from qmailkit.services.config import (
    Config,
    Option,
    Service,
    System,
    check_abs_path,
    check_one_line,
    check_program,
)
from qmailkit.services.policy import Finding
from qmailkit.services.shell import Var, Word, quote

OPTIONS: dict[str, Option] = {
    **{k: v for k, v in R.tcp_options("", 110, "").items() if k != "user"},
    "hostname": Option(
        "str",
        "",
        "host name for qmail-popup and tcpserver -l; empty = first line of control/me at start",
        "LOCAL",
        check=check_one_line,
    ),
    "ssl": Option("bool", False, "run under sslserver -e", ""),
    "tls_cert": Option(
        "str",
        lambda system: system.qmail_home + "/control/servercert.pem",
        "PEM certificate and key for sslserver",
        "CERTFILE",
        check=check_abs_path,
    ),
    "checkpassword": Option(
        "str",
        lambda system: system.vpopmail_home + "/bin/vchkpw",
        "checkpassword program",
        "CHECKPW",
        check=check_program,
        empty_ok=False,
    ),
    "maildir": Option(
        "str",
        "Maildir",
        "mailbox name relative to the user's home",
        "",
        check=check_one_line,
        empty_ok=False,
    ),
    "popup": Option(
        "str", "qmail-popup", "the qmail-popup program", "", check=check_program, empty_ok=False
    ),
    "pop3d": Option(
        "str", "qmail-pop3d", "the qmail-pop3d program", "", check=check_program, empty_ok=False
    ),
}

PROFILES: dict[str, dict[str, Any]] = {"pop3": {}, "pop3s": {"port": 995, "ssl": True}}
DEFAULT_PROFILE = "pop3"


def validate(svc: Service, system: System) -> tuple[str, str, str] | None:
    if svc.options["ssl"] and not svc.options["tls_cert"]:
        return ("tls_cert", "ssl = true needs a certificate", "set tls_cert to the PEM file")
    return None


def build(svc: Service, config: Config) -> R.Built:
    o = svc.options

    def k(option: str) -> str:
        return R.key(svc, option)

    checks = R.Checks()
    s = R.start(svc, config, OPTIONS)
    tcp, rules = R.tcp_setup(s, svc, config, checks)
    if o["hostname"]:
        s.assign("LOCAL", o["hostname"])
    else:
        me = f"{config.system.qmail_home}/control/me"
        s.line(f"LOCAL=$(head -n 1 {quote(me)} 2>/dev/null)")
        s.fatal_unless(
            '[ -n "$LOCAL" ]', f"no host name: {me} is missing or empty; set {k('hostname')}"
        )
    cp = o["checkpassword"]
    s.fatal_unless(f"have {quote(cp)}", f"checkpassword program {cp} not found")
    checks.programs.append((cp, k("checkpassword")))
    server: list[Word]
    if o["ssl"]:
        cert = o["tls_cert"]
        s.fatal_unless(f"[ -r {quote(cert)} ]", f"certificate {cert} is missing or unreadable")
        checks.files.append(R.FileCheck(cert, k("tls_cert"), "cert", None, True))
        checks.programs.append(("sslserver", k("ssl")))
        s.blank()
        s.comment("sslserver reads the certificate and key from one PEM file.")
        s.setenv("CERTFILE", cert)
        s.setenv("KEYFILE", "")
        s.setenv("DHFILE", "")
        server = ["sslserver", "-e"]
    else:
        server = ["tcpserver"]
    R.export_env(s, svc)
    for prog in ("popup", "pop3d"):
        checks.programs.append((o[prog], k(prog)))
    R.common_checks(svc, checks)
    words: list[Word] = [
        *server,
        "-vRH",
        "-l",
        Var("LOCAL"),
        *tcp,
        Var("IP"),
        str(o["port"]),
        o["popup"],
        Var("LOCAL"),
        cp,
        o["pop3d"],
        o["maildir"],
    ]
    s.command(R.wrap(svc, words))
    return R.Built(run=s.text(), checks=checks, listen=(o["ip"], o["port"]), rules=rules)


def policy(svc: Service) -> list[Finding]:
    return []  # IMAP and POP3 serve every client by design
