"""Demo part "services": a whole mail server from one config file.

Renders send, mx, submission, smtps, imap, imapssl, pop3ssl and vpopmaild into
the sandbox, checks and applies them and, when daemontools is installed, runs
the stack under svscan with stand-in mail programs (qmailkit.demo.standins):
``services status``, an SMTP greeting, the log, a one-option change that
restarts only that service.  Everything started is stopped by PID before the
part ends.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from qmailkit import fsutil, supervisor
from qmailkit.demo import standins
from qmailkit.errors import QmailkitError
from qmailkit.logs import tai64n
from qmailkit.services import check as ck
from qmailkit.services import config as cfgmod
from qmailkit.services import install
from qmailkit.services import render as rd
from qmailkit.services import status as st
from qmailkit.services.config import Config
from qmailkit.services.policy import Finding
from qmailkit.supervisor.tree import ScanTree

#: the suite the demo's stack runs under (the sample config's kind)
STACK_KIND = "daemontools"

SERVICES = ("send", "mx", "submission", "smtps", "imap", "imapssl", "pop3ssl", "vpopmaild")

COURIER_CONF = {
    "imapd": 'MAXDAEMONS=40\nMAXPERIP=4\nMAILDIRPATH=Maildir\nTCPDOPTS="-nodnslookup '
    '-noidentlookup"\nIMAPDSTARTTLS=YES\n',
    "imapd-ssl": "TLS_CERTFILE={cert}\n",
    "pop3d": 'MAXDAEMONS=40\nMAXPERIP=4\nMAILDIRPATH=Maildir\nTCPDOPTS="-nodnslookup '
    '-noidentlookup"\nPOP3DSTARTTLS=YES\n',
    "pop3d-ssl": "TLS_CERTFILE={cert}\n",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_config(base: Path, ports: dict[str, int], user: str, kind: str = STACK_KIND) -> str:
    """The demo's qmailkit.toml: every path inside ``base``, every port on 127.0.0.1."""
    q = base / "qmail"
    return f"""# qmailkit demo: a whole mail server (stand-in programs, loopback ports)
[supervisor]
kind = "{kind}"
scan_dir = "{base}/service"
service_root = "{base}/supervise"
log_user = "{user}"
log_size = 65536
log_count = 5

[system]
qmail_home = "{q}"
vpopmail_home = "{base}/vpopmail"
courier_prefix = "{base}/courier"
path = ["{base}/bin", "/usr/local/bin", "/usr/bin", "/bin"]

[services.send]
type = "qmail-send"

[services.mx]
type = "qmail-smtpd"
profile = "mx"
ip = "127.0.0.1"
port = {ports["mx"]}
user = "{user}"
rules = "{base}/tcp/smtp.cdb"
greet_delay = 0
rbl_block = ["zen.spamhaus.org"]

[services.submission]
type = "qmail-smtpd"
profile = "submission"
ip = "127.0.0.1"
port = {ports["submission"]}
user = "{user}"
rules = ""
auth_cdb = "{q}/control/auth.cdb"

[services.smtps]
type = "qmail-smtpd"
profile = "smtps"
ip = "127.0.0.1"
port = {ports["smtps"]}
user = "{user}"
rules = ""
auth_cdb = "{q}/control/auth.cdb"

[services.imap]
type = "courier-imap"
profile = "imap"
ip = "127.0.0.1"
port = {ports["imap"]}

[services.imapssl]
type = "courier-imap"
profile = "imapssl"
ip = "127.0.0.1"
port = {ports["imapssl"]}

[services.pop3ssl]
type = "courier-imap"
profile = "pop3ssl"
ip = "127.0.0.1"
port = {ports["pop3ssl"]}

[services.vpopmaild]
type = "vpopmaild"
port = {ports["vpopmaild"]}
user = "{user}"
"""


def build_sandbox(base: Path) -> dict[str, int]:
    """Stand-ins, qmail control files, Courier config, rules; returns the ports chosen."""
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    records = base / "records"
    standins.install(base / "bin", records)
    courier = base / "courier"
    standins.install(courier / "bin", records, ("imapd", "pop3d", "couriertls"))
    standins.install(courier / "sbin", records, ("imaplogin", "pop3login"))
    standins.install(courier / "libexec", records, ("couriertcpd",))
    standins.install(base / "vpopmail" / "bin", records, ("vpopmaild", "vchkpw"))
    control = base / "qmail" / "control"
    control.mkdir(parents=True, exist_ok=True)
    cert = control / "servercert.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\n(demo)\n-----END CERTIFICATE-----\n")
    os.chmod(cert, 0o640)
    if os.geteuid() == 0:
        os.chown(cert, 0, _nobody()[1])
    (control / "me").write_text("mail.example.org\n")
    (control / "rcpthosts").write_text("example.org\n")
    (control / "defaultdelivery").write_text("./Maildir/\n")
    for name in ("auth.cdb", "validrcptto.cdb"):  # built by mkauth/mkvalidrcptto really
        (control / name).write_bytes(_empty_cdb())
        os.chmod(control / name, 0o640)
        if os.geteuid() == 0:
            os.chown(control / name, 0, _nobody()[1])
    etc = courier / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    for name, text in COURIER_CONF.items():
        (etc / name).write_text(text.format(cert=cert))
    (base / "tcp").mkdir(exist_ok=True)
    (base / "tcp" / "smtp").write_text(
        "# relaying for this host only; everyone else may deliver to us\n"
        '127.0.0.1:allow,RELAYCLIENT=""\n:allow\n'
    )
    (base / "service").mkdir(exist_ok=True)
    return {name: _free_port() for name in SERVICES if name != "send"}


def _service_user(base: Path) -> tuple[str, bool]:
    """The account the services run as, and whether it can reach the sandbox (tcpserver
    opens the rules cdb as that user; the stand-ins run as it).

    The demo's sandbox directory is private (mkdtemp makes it 0700); letting others
    pass through it (o+x, not o+r) is enough.  As root the account is nobody (qmailkit
    refuses to run qmail-smtpd as root), otherwise our own.
    """
    parent = base.parent
    st = parent.stat()
    if os.geteuid() == st.st_uid and not st.st_mode & 0o001:
        os.chmod(parent, (st.st_mode & 0o7777) | 0o011)
    if os.geteuid() != 0:
        return _own_name(), True
    return "nobody", ck.Account("nobody").can_read(base / "tcp" / "smtp") is None


def _own_name() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _empty_cdb() -> bytes:
    # 256 empty hash tables, each (pos=2048, len=0): a valid cdb with no records
    return ((2048).to_bytes(4, "little") + (0).to_bytes(4, "little")) * 256


def _nobody() -> tuple[int, int]:
    pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


def run(sandbox: Path, say: Callable[[str], None]) -> None:
    base = sandbox
    ports = build_sandbox(base)
    user, reachable = _service_user(base)
    path = base / "qmailkit.toml"
    path.write_text(sample_config(base, ports, user))
    config = cfgmod.load(path)
    say(
        f"One config file, {path.name}, describes {len(config.services)} services: "
        + ", ".join(config.services)
        + "."
    )

    rendered = rd.render(config)
    out = base / "rendered"
    written = install.export(rendered, out)
    say(f"qmailkit services render --out {out.name}: {len(written)} files. The end of mx/run:")
    lines = rendered["mx"].files["run"][0].decode().splitlines()
    tail = lines[next(i for i, t in enumerate(lines) if t.startswith("setenv SMTPGREETING")) :]
    for line in tail:
        say("    " + line)

    result = install.apply(config, rendered)
    say(
        f"qmailkit services apply: {len(result.changes)} changes "
        f"({sum(c.action == 'new-service' for c in result.changes)} new services, tcp rules "
        f"compiled, {sum(c.action == 'link' for c in result.changes)} linked into "
        f"{config.supervisor.scan_dir})"
    )
    again = install.apply(config)
    say(f"apply again: {len(again.changes)} changes (it is idempotent)")

    for line in check_summary(ck.check(config, rendered), path):
        say(line)
    # what starting the stack needs; check names the rest (e.g. a logger of another suite)
    scanner = supervisor.get(STACK_KIND).scanner[0]
    needed = [
        pkg
        for prog, pkg in ((scanner, ck.PACKAGES[scanner]), ("tcpserver", "ucspi-tcp"))
        if shutil.which(prog) is None
    ]
    if needed:
        say(
            f"Not starting the services: they need the Debian package{'s' * (len(needed) > 1)} "
            f"{' and '.join(needed)} (apt-get install {' '.join(needed)})."
        )
        return
    if not reachable:
        say(
            f"Not starting the services: the user {user} cannot reach {base} (give the demo a "
            "--dir that others may pass through, e.g. under /tmp)."
        )
        return
    _run_stack(base, config, ports, say)


def check_summary(findings: list[Finding], config_path: Path) -> list[str]:
    """services check's result in a few lines: the programs this machine lacks as one."""
    errors = sum(f.level == "error" for f in findings)
    text = f"qmailkit services check: {errors} error(s), {len(findings) - errors} warning(s)"
    missing = list(dict.fromkeys(f.program for f in findings if f.program))
    if missing:
        count = sum(1 for f in findings if f.program)
        text += f"; {count} of them for programs not installed here: {', '.join(missing)}"
    lines = [text] + ["    " + line for line in ck.merged([f for f in findings if not f.program])]
    if findings:
        lines.append(f"    (qmailkit services check -v --config {config_path} lists each one)")
    return lines


def _run_stack(
    base: Path, config: Config, ports: dict[str, int], say: Callable[[str], None]
) -> None:
    scan = Path(config.supervisor.scan_dir)
    tree = ScanTree(STACK_KIND, scan)
    say(f"Started svscan on {scan} (pid {tree.proc.pid}).")
    try:
        fsutil.poll(lambda: all(r.state == "up" for r in st.collect(config)), 20, 0.05)
        tree.remember()
        say("qmailkit services status:")
        for line in st.format_table(st.collect(config)).splitlines():
            say("    " + line)
        greeting = _greeting(ports["mx"])
        say(f"An SMTP client on mx (127.0.0.1:{ports['mx']}) is greeted with: {greeting}")
        greeting = _greeting(ports["imap"])
        say(f"An IMAP client on imap (127.0.0.1:{ports['imap']}) is greeted with: {greeting}")
        mx_dir = Path(config.supervisor.service_root) / "mx"
        current = mx_dir / "log" / "main" / "current"
        fsutil.poll(lambda: b"command-line:" in _read(current), 10, 0.05)
        say("From mx/log/main/current (multilog, as the log user; labels in local time):")
        lines = _read(current).splitlines()
        shown = [ln for ln in lines if b"SMTPGREETING=" in ln or b"command-line:" in ln]
        shown += [ln for ln in lines if b"tcpserver: " in ln or b"standin" in ln][:4]
        for log_line in shown:
            say("    " + _local(log_line))
        old_pids = {r.name: r.pid for r in st.collect(config)}
        path = Path(config.path)
        path.write_text(
            path.read_text().replace(
                "greet_delay = 0\n", 'greet_delay = 0\ngreeting = "Hello from the demo"\n', 1
            )
        )
        result = install.apply(cfgmod.load(path))
        say(
            "Changed the greeting of mx in the config; apply says: "
            + "; ".join(c.describe() for c in result.changes)
            + "; restarted "
            + ", ".join(result.restarted)
        )
        fsutil.poll(lambda: _pids(config)["mx"] not in (None, old_pids["mx"]), 10, 0.05)
        tree.remember()
        new_pids = {r.name: r.pid for r in st.collect(config)}
        same = [n for n in old_pids if n != "mx" and old_pids[n] == new_pids[n]]
        say(
            f"mx has a new pid ({old_pids['mx']} -> {new_pids['mx']}); the other "
            f"{len(same)} services and loggers kept theirs."
        )
        say(f"mx now greets: {_greeting(ports['mx'])}")
    finally:
        tree.stop()
        say("Stopped svscan and every supervise, service and logger it started.")


def _local(line: bytes) -> str:
    """A multilog line with its TAI64N label in local time, as tai64nlocal shows it."""
    return tai64n.LocalTime().convert(line).decode("utf-8", "replace")


def _pids(config: Config) -> dict[str, int | None]:
    return {r.name: r.pid for r in st.collect(config)}


def _read(path: Path) -> bytes:
    try:
        return fsutil.read_bounded(path)
    except (OSError, QmailkitError):
        return b""


def _greeting(port: int) -> str:
    def attempt() -> str | None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                line = s.makefile("rb").readline()
                return line.decode("utf-8", "replace").strip()
        except OSError:
            return None

    return fsutil.poll(attempt, 10, 0.05) or "(no answer)"
