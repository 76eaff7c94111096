"""Generated service trees under real svscan, runsvdir and s6-svscan, with a real tcpserver.

The mail programs are stand-ins (qmailkit.demo.standins) that record their argv
and environment; tcpserver, the supervisors, the loggers, setuidgid/chpst/
s6-setuidgid are the real ones.  Each test checks what a client sees, what the
stand-in was started with, and that the run script's logged command line went
through the real logger and equals what was exec'd.
"""

from __future__ import annotations

import os
import re
import shlex
import socket
from pathlib import Path

import pytest
from support import free_port, need, wait_for
from support.services import need_root, public_tempdir

from qmailkit import supervisor
from qmailkit.demo import standins
from qmailkit.errors import InputError
from qmailkit.services import config as cfgmod
from qmailkit.services import install


@pytest.fixture
def pubdir():
    with public_tempdir() as d:
        yield d


NOBODY = 65534
LOGGER = {
    "daemontools": ["multilog", "setuidgid"],
    "runit": ["svlogd", "chpst"],
    "s6": ["s6-log", "s6-setuidgid"],
}


class Server:
    """A sandbox: stand-ins, qmail control files, rules, and a config for them."""

    def __init__(self, pub: Path, kind: str) -> None:
        need("tcpserver", *LOGGER[kind])
        self.pub, self.kind = pub, kind
        self.bin, self.records = pub / "bin", pub / "records"
        standins.install(self.bin, self.records)
        control = pub / "qmail" / "control"
        control.mkdir(parents=True)
        (control / "me").write_text("mx.example.org\n")
        (control / "rcpthosts").write_text("example.org\n")
        (pub / "tcp").mkdir()
        (pub / "tcp" / "smtp").write_text(
            '127.0.0.1:allow,RELAYCLIENT="",RULEVAR="a b \'c\'"\n:allow\n'
        )
        (pub / "scan").mkdir()
        self.mx_port, self.local_port = free_port(), free_port()
        self.extra_mx = ""
        self.local_hostname = "localhost"

    def text(self) -> str:
        p = self.pub
        return f"""
[supervisor]
kind = "{self.kind}"
scan_dir = "{p}/scan"
service_root = "{p}/services"
log_user = "nobody"
log_size = 4096
log_count = 3

[system]
qmail_home = "{p}/qmail"
path = ["{self.bin}", "/usr/bin", "/bin"]

[services.send]
type = "qmail-send"
default_delivery = "./Maildir/"

[services.mx]
type = "qmail-smtpd"
profile = "mx"
ip = "127.0.0.1"
port = {self.mx_port}
user = "nobody"
rules = "{p}/tcp/smtp.cdb"
greet_delay = 0
checkpassword = "checkpassword"
env = {{ ODD = "it's a \\"test\\" $HOME `x`" }}
{self.extra_mx}

[services.local]
type = "qmail-smtpd"
profile = "local"
port = {self.local_port}
hostname = "{self.local_hostname}"
user = "nobody"
tls_cert = ""
"""

    def config(self):
        path = self.pub / "qmailkit.toml"
        path.write_text(self.text())
        return cfgmod.load(path)

    def dir(self, name: str) -> Path:
        return self.pub / "services" / name


def smtp_session(port: int) -> tuple[bytes, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rwb")
        greeting = f.readline()
        f.write(b"QUIT\r\n")
        f.flush()
        return greeting, f.readline()


def connect_when_up(port: int) -> tuple[bytes, bytes]:
    def attempt():
        try:
            return smtp_session(port)
        except OSError:
            return None

    return wait_for(attempt, 15, what=f"a server on port {port}")


def logged_commands(service_dir: Path) -> list[list[str]]:
    """The command lines the run script logged, read from the logger's current file."""
    out = []
    current = service_dir / "log" / "main" / "current"
    if not current.exists():
        return out
    for line in current.read_text().splitlines():
        _, sep, rest = line.partition("command-line: ")
        if sep:
            out.append(shlex.split(rest))
    return out


def cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return [a.decode() for a in fh.read().split(b"\0")[:-1]]


def records(server: Server, prog: str) -> list[dict]:
    return standins.read_records(str(server.records), prog)


def check_mx(server: Server, sup) -> None:
    """A client session on mx, the stand-in's argv/env, and the logged command line."""
    greeting, bye = connect_when_up(server.mx_port)
    assert greeting == b"220 Mail server ready ESMTP standin\r\n"
    assert bye == b"221 mx.example.org\r\n"
    rec = wait_for(lambda: records(server, "qmail-smtpd"), 10, what="qmail-smtpd record")[-1]
    env = rec["env"]
    assert (rec["uid"], rec["gid"]) == (NOBODY, NOBODY)
    assert env["TCPREMOTEIP"] == "127.0.0.1" and env["TCPLOCALPORT"] == str(server.mx_port)
    assert env["TCPLOCALHOST"] == "mx.example.org"
    assert env["RELAYCLIENT"] == "" and env["RULEVAR"] == "a b 'c'"  # from the tcp rules
    assert env["VALIDRCPTTO_CDB"] == f"{server.pub}/qmail/control/validrcptto.cdb"
    assert env["SMTPGREETING"] == "Mail server ready" and env["GREETDELAY"] == "0"
    assert env["SPFBEHAVIOR"] == "3" and env["MFCHECK"] == "3"
    assert env["ODD"] == 'it\'s a "test" $HOME `x`'
    assert "REQUIRE_AUTH" in env and env["REQUIRE_AUTH"] == "0"
    assert env["PATH"] == f"{server.bin}:/usr/bin:/bin"
    assert rec["argv"][1:] == ["mx.example.org", "checkpassword", "/bin/true"]

    mx = server.dir("mx")
    pid = sup.status(mx).pid
    run_argv = cmdline(pid)  # what the run script exec'd: tcpserver and its arguments
    assert run_argv[0] == "tcpserver"
    port_at = run_argv.index(str(server.mx_port))
    assert run_argv[: port_at + 1] == [
        "tcpserver",
        "-vR",
        "-l",
        "mx.example.org",
        "-c",
        "50",
        "-u",
        str(NOBODY),
        "-g",
        str(NOBODY),
        "-x",
        f"{server.pub}/tcp/smtp.cdb",
        "127.0.0.1",
        str(server.mx_port),
    ]
    chain = run_argv[port_at + 1 :]
    assert chain == [
        "fixcrio",
        "rblsmtpd",
        "-t0",
        "-r",
        "sbl.spamhaus.org",
        "-r",
        "xbl.spamhaus.org",
        "qmail-smtpd",
        "mx.example.org",
        "checkpassword",
        "/bin/true",
    ]
    # every stand-in of the chain saw exactly its part of that command line
    fix = next(r for r in records(server, "fixcrio") if r["pid"] == rec["pid"])
    assert fix["argv"][1:] == chain[1:]
    # the logged command line went through the real logger and equals argv
    wait_for(lambda: run_argv in logged_commands(mx), 10, what="command line in log/main")
    log = (mx / "log" / "main" / "current").read_text()
    assert 'SMTPGREETING="Mail server ready"\n' in log
    assert "standin qmail-smtpd: pid" in log  # the daemon's stderr reached the log too
    main = (mx / "log" / "main").stat()
    assert (main.st_uid, main.st_gid) == (NOBODY, NOBODY)


@pytest.mark.parametrize("kind", ["daemontools", "runit", "s6"])
def test_smtp_services_under_real_supervisor(pubdir, scan, kind):
    server = Server(pubdir, kind)
    config = server.config()
    tree = scan(kind, pubdir / "scan")
    result = install.apply(config)
    assert ("mx", "rules") in {(c.service, c.action) for c in result.changes}
    assert (pubdir / "tcp" / "smtp.cdb").exists()
    sup = supervisor.get(kind)
    for name in ("send", "mx", "local"):
        tree.wait_up(server.dir(name))
    check_mx(server, sup)

    # local profile: RELAYCLIENT for everyone on the loopback, no rules, no RBL, no AUTH
    greeting, bye = connect_when_up(server.local_port)
    assert (greeting, bye) == (b"220 Mail server ready ESMTP standin\r\n", b"221 localhost\r\n")
    rec = [
        r
        for r in records(server, "qmail-smtpd")
        if r["env"].get("TCPLOCALPORT") == str(server.local_port)
    ][-1]
    assert rec["env"]["RELAYCLIENT"] == "" and "RULEVAR" not in rec["env"]
    assert rec["argv"][1:] == []
    local_argv = cmdline(sup.status(server.dir("local")).pid)
    assert "-x" not in local_argv and "rblsmtpd" not in local_argv

    # qmail-send: qmail-start as root with the default delivery, logging to stdout
    start = wait_for(lambda: records(server, "qmail-start"), 10, what="qmail-start")[-1]
    assert start["argv"][1:] == ["./Maildir/"] and start["uid"] == 0
    assert start["cwd"] == str(server.dir("send"))
    wait_for(
        lambda: logged_commands(server.dir("send")) == [["qmail-start", "./Maildir/"]],
        10,
        what="send's command line in its log",
    )


def test_apply_again_and_restart_only_what_changed(pubdir, scan):
    """runit: a second apply is a no-op; one changed option restarts exactly that service;
    a hand-edited run script is not overwritten."""
    server = Server(pubdir, "runit")
    tree = scan("runit", pubdir / "scan")
    config = server.config()
    first = install.apply(config)
    targets = install.started_targets(first)
    assert targets == ["send", "send/log", "mx", "mx/log", "local", "local/log"]
    assert install.wait_up(config, targets, timeout=15) == []
    tree.remember()
    sup = supervisor.get("runit")
    pids = {n: sup.status(server.dir(n)).pid for n in ("send", "mx", "local", "mx/log")}

    again = install.apply(server.config())
    assert again.changes == [] and again.restarted == []

    server.extra_mx = 'greeting = "Welcome"'
    result = install.apply(server.config())
    assert [(c.service, c.action, c.path) for c in result.changes] == [("mx", "update", "run")]
    assert result.restarted == ["mx"]
    wait_for(
        lambda: sup.status(server.dir("mx")).pid not in (None, pids["mx"]), 10, what="mx restarted"
    )
    tree.remember()
    for name in ("send", "local", "mx/log"):
        assert sup.status(server.dir(name)).pid == pids[name], name
    assert connect_when_up(server.mx_port)[0] == b"220 Welcome ESMTP standin\r\n"
    rec = records(server, "qmail-smtpd")[-1]
    assert rec["env"]["SMTPGREETING"] == "Welcome"

    # an admin edits local/run by hand; the next apply refuses to overwrite it
    run = server.dir("local") / "run"
    edited = run.read_bytes().replace(b"exec 2>&1", b"exec 2>&1\necho hand-edited")
    run.write_bytes(edited)
    server.extra_mx = 'greeting = "Welcome again"'
    server.local_hostname = "localhost.test"
    mx_pid = sup.status(server.dir("mx")).pid
    with pytest.raises(InputError, match="not overwritten: local/run"):
        install.apply(server.config())
    assert run.read_bytes() == edited
    assert b"Welcome again" not in (server.dir("mx") / "run").read_bytes()
    assert sup.status(server.dir("mx")).pid == mx_pid


def _processes_in(directory: Path) -> list[int]:
    """Processes whose working directory is inside ``directory``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(directory) + "/"):
                found.append(int(entry.name))
    return found


def test_demo_runs_the_stack_and_stops_everything(pubdir):
    need("svscan", "tcpserver", "multilog", "setuidgid")
    from qmailkit.demo import services as demo

    sandbox = pubdir / "sandbox"
    sandbox.mkdir(mode=0o700)  # private, as qmailkit demo's mkdtemp makes it
    lines: list[str] = []
    demo.run(sandbox / "services", lines.append)
    text = "\n".join(lines)
    assert not [ln for ln in lines if ln.startswith("note:")]
    assert "qmailkit services check: 0 error(s), 0 warning(s)" in lines
    assert "apply again: 0 changes (it is idempotent)" in lines
    status = lines[lines.index("qmailkit services status:") + 1 :][:17]
    assert [ln.split()[:2] for ln in status[1:]] == [
        [name, "up"] for svc in demo.SERVICES for name in (svc, f"{svc}/log")
    ]
    assert "greeted with: 220 Mail server ready ESMTP standin" in text
    assert "greeted with: * OK [CAPABILITY IMAP4rev1] standin imaplogin ready." in text
    assert "the other 15 services and loggers kept theirs." in text
    assert "mx now greets: 220 Hello from the demo ESMTP standin" in text
    assert lines[-1] == "Stopped svscan and every supervise, service and logger it started."
    wait_for(lambda: not _processes_in(pubdir), 10, what="demo processes gone")


def test_tls_and_courier_services_under_s6(pubdir, scan):
    """smtps under sslserver, imapssl under couriertcpd + couriertls (stand-ins for both
    TLS wrappers; sslserver's stand-in runs the real tcpserver), from the demo's config."""
    need("tcpserver", "s6-log", "s6-setuidgid")
    from qmailkit.demo import services as demo

    ports = demo.build_sandbox(pubdir)
    path = pubdir / "qmailkit.toml"
    path.write_text(demo.sample_config(pubdir, ports, "nobody", kind="s6"))
    config = cfgmod.load(path)
    tree = scan("s6", pubdir / "service")
    install.apply(config)
    for name in ("smtps", "imapssl"):
        tree.wait_up(pubdir / "supervise" / name)
    rec_dir = str(pubdir / "records")

    assert connect_when_up(ports["smtps"]) == (
        b"220 Mail server ready ESMTP standin\r\n",
        b"221 mail.example.org\r\n",
    )
    smtpd = next(
        r
        for r in standins.read_records(rec_dir, "qmail-smtpd")
        if r["env"]["TCPLOCALPORT"] == str(ports["smtps"])
    )
    env = smtpd["env"]
    cert = f"{pubdir}/qmail/control/servercert.pem"
    assert (env["SSL"], env["CERTFILE"], env["KEYFILE"], env["DHFILE"]) == ("1", cert, "", "")
    assert (env["REQUIRE_AUTH"], env["AUTH_CDB"]) == ("1", f"{pubdir}/qmail/control/auth.cdb")
    assert env["GREETDELAY"] == "0" and env["SPFBEHAVIOR"] == "0" and env["MFCHECK"] == "0"
    assert "TLS_SERVER_CERT" not in env and "RELAYCLIENT" not in env
    assert smtpd["argv"][1:] == [] and smtpd["uid"] == NOBODY
    ssl = standins.read_records(rec_dir, "sslserver")[-1]
    assert ssl["argv"][1:3] == ["-e", "-vR"]
    assert ssl["argv"][-3:] == ["127.0.0.1", str(ports["smtps"]), "qmail-smtpd"]

    with socket.create_connection(("127.0.0.1", ports["imapssl"]), timeout=10) as s:
        f = s.makefile("rwb")
        assert f.readline() == b"* OK [CAPABILITY IMAP4rev1] standin imaplogin ready.\r\n"
        f.write(b"a1 LOGOUT\r\n")
        f.flush()
        assert f.readline() == b"* BYE standin\r\n"
        assert f.readline() == b"a1 OK LOGOUT completed\r\n"
    tls = wait_for(lambda: standins.read_records(rec_dir, "couriertls"), 10, what="couriertls")
    login = standins.read_records(rec_dir, "imaplogin")[-1]
    courier = pubdir / "courier"
    assert tls[-1]["argv"][1:] == [
        "-server",
        "-tcpd",
        f"{courier}/sbin/imaplogin",
        f"{courier}/bin/imapd",
        "Maildir",
    ]
    assert login["argv"][1:] == [f"{courier}/bin/imapd", "Maildir"]
    lenv = login["env"]
    assert (lenv["IMAP_TLS"], lenv["TLS_CERTFILE"]) == ("1", cert)
    assert (lenv["MAXDAEMONS"], lenv["MAXPERIP"]) == ("40", "4")  # from Courier's imapd file
    assert lenv["TCPREMOTEIP"] == "127.0.0.1" and lenv["TCPLOCALPORT"] == str(ports["imapssl"])
    tcpd = standins.read_records(rec_dir, "couriertcpd")
    imapssl_tcpd = next(r for r in tcpd if str(ports["imapssl"]) in r["argv"])
    assert imapssl_tcpd["argv"][1:7] == [
        "-address=127.0.0.1",
        "-maxprocs=40",
        "-maxperip=4",
        "-nodnslookup",
        "-noidentlookup",
        str(ports["imapssl"]),
    ]
    # the logged command line is what couriertcpd was started with
    logged = logged_commands(pubdir / "supervise" / "imapssl")
    assert logged and logged[-1][1:] == imapssl_tcpd["argv"][1:]


def test_apply_warns_when_the_service_user_cannot_read_the_rules(tmp_path):
    """pytest's tmp_path is private (0700): tcpserver -u nobody could not read the cdb."""
    need_root()
    server = Server(tmp_path, "daemontools")
    result = install.apply(server.config())
    [warning] = result.warnings
    assert warning.startswith(f"mx: tcp rules {tmp_path}/tcp/smtp.cdb: nobody cannot enter /")
    assert warning.endswith(
        " (mode 0700); tcpserver will drop every connection (run qmailkit services check)"
    )
    assert install.apply(server.config()).warnings == [warning]  # said again, with nothing to do


# what a scanner started by hand may carry (Q1): none of it may reach a service or logger
POLLUTED = {
    "RELAYCLIENT": "",
    "FOO": "bar",
    "LD_LIBRARY_PATH": "/nonexistent",
    "QMAILQUEUE": "/bin/false",
    "_qk_clean": "1",
}


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as fh:
        items = fh.read().split(b"\0")[:-1]
    return dict(item.decode().partition("=")[::2] for item in items)


@pytest.mark.parametrize("kind", ["daemontools", "runit", "s6"])
def test_services_start_from_an_empty_environment(pubdir, kind):
    from support.supervisors import start_scan

    server = Server(pubdir, kind)
    (pubdir / "tcp" / "smtp").write_text(":allow\n")  # nobody may relay
    config = server.config()
    path = f"{server.bin}:/usr/bin:/bin"
    tree = start_scan(kind, pubdir / "scan", {**os.environ, **POLLUTED})
    try:
        install.apply(config)
        for name in ("send", "mx"):
            tree.wait_up(server.dir(name))
        connect_when_up(server.mx_port)
        rec = wait_for(lambda: records(server, "qmail-smtpd"), 10, what="qmail-smtpd")[-1]
        start = wait_for(lambda: records(server, "qmail-start"), 10, what="qmail-start")[-1]
        sup = supervisor.get(kind)
        loggers = {n: environ(sup.status(server.dir(n) / "log").pid) for n in ("send", "mx")}
    finally:
        tree.stop()
    assert start["env"] == {"PATH": path, "PWD": str(server.dir("send"))}
    for name, env in loggers.items():
        assert env == {"PATH": path, "PWD": str(server.dir(name) / "log")}, name
    # the run script's own exports, as its setenv logged them, and tcpserver's: nothing else
    log = (server.dir("mx") / "log" / "main" / "current").read_text()
    exported = dict(re.findall(r'^@[0-9a-f]{24} ([A-Z_]+)="(.*)"$', log, re.MULTILINE))
    assert exported["ODD"] == 'it\'s a "test" $HOME `x`' and "RELAYCLIENT" not in exported
    port = str(server.mx_port)
    assert rec["env"] == {
        "PATH": path,
        "PWD": str(server.dir("mx")),
        **exported,
        "PROTO": "TCP",
        "TCPLOCALIP": "127.0.0.1",
        "TCPLOCALPORT": port,
        "TCPLOCALHOST": "mx.example.org",
        "TCPREMOTEIP": "127.0.0.1",
        "TCPREMOTEPORT": rec["env"]["TCPREMOTEPORT"],
    }
