"""services check: users, programs, certificate and rules permissions, ports, policy."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.services import need_root, public_tempdir

from qmailkit.services.check import Finding, check
from qmailkit.services.render import Checks, FileCheck, RenderedService


@pytest.fixture
def pubdir():
    with public_tempdir() as d:
        yield d


@pytest.fixture(autouse=True)
def _root():
    need_root()  # permission checks need root


def rendered(name="mx", listen=("127.0.0.1", 25), user="nobody", **checks) -> RenderedService:
    return RenderedService(
        name=name,
        type="qmail-smtpd",
        dir=f"/x/{name}",
        files={"run": (b"#!/bin/sh\n", 0o755)},
        dirs=["log/main"],
        log_owner="nobody",
        rules=None,
        checks=Checks(**checks),
        listen=listen,
        user=user,
    )


class Cfg:
    def __init__(self) -> None:
        self.services: dict = {}


def errors(findings: list[Finding]) -> list[str]:
    return [f.describe() for f in findings if f.level == "error"]


def test_clean_service_has_no_findings(tmp_path):
    assert (
        check(
            Cfg(),
            {
                "mx": rendered(
                    users=["nobody"], programs=[("sh", "k")], search_path=["/usr/bin", "/bin"]
                )
            },
        )
        == []
    )


def test_missing_user_and_program(tmp_path):
    exe = tmp_path / "notexec"
    exe.write_text("x")
    os.chmod(exe, 0o644)
    out = check(
        Cfg(),
        {
            "mx": rendered(
                users=["nobody", "qmaild-missing"],
                programs=[
                    ("qmail-smtpd-missing", "services.mx.smtpd"),
                    (str(exe), "services.mx.x"),
                ],
                search_path=["/usr/bin", "/bin"],
            )
        },
    )
    assert errors(out) == [
        (
            "error: mx: user 'qmaild-missing' does not exist (create it (useradd -r -s "
            "/usr/sbin/nologin qmaild-missing) or name another user in the config)"
        ),
        (
            "error: mx: program qmail-smtpd-missing not found in /usr/bin:/bin "
            "[services.mx.smtpd] (install it, or give its full path in the config)"
        ),
        f"error: mx: program {exe} is not executable [services.mx.x] (chmod 755 {exe})",
    ]


def test_certificate_permissions(pubdir):
    pub = pubdir
    cert = pub / "servercert.pem"
    cert.write_text("-----BEGIN PRIVATE KEY-----\n")
    fc = FileCheck(str(cert), "services.mx.tls_cert", "cert", user="nobody", secret=True)
    os.chown(cert, 0, 0)
    os.chmod(cert, 0o600)
    msgs = errors(check(Cfg(), {"mx": rendered(files=[fc])}))
    assert msgs == [
        (
            f"error: mx: cert file {cert}: nobody cannot read it (mode 0600, owner 0:0) "
            "[services.mx.tls_cert] (chown nobody "
            f"{cert} and chmod 0400 (the private key stays private))"
        )
    ]
    os.chmod(cert, 0o644)
    msgs = errors(check(Cfg(), {"mx": rendered(files=[fc])}))
    assert msgs == [
        (
            f"error: mx: cert file {cert} is world-readable and holds a private key "
            f"[services.mx.tls_cert] (chmod o-r {cert})"
        )
    ]
    os.chown(cert, 0, 65534)  # group nogroup, nobody's primary group
    os.chmod(cert, 0o640)
    assert check(Cfg(), {"mx": rendered(files=[fc])}) == []
    cert.unlink()
    msgs = errors(check(Cfg(), {"mx": rendered(files=[fc])}))
    assert msgs == [
        (
            f"error: mx: cert file {cert} does not exist [services.mx.tls_cert] "
            "(create the certificate (PEM, key included) or fix the path)"
        )
    ]


def test_rules_cdb_in_a_private_directory(tmp_path):
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    cdb = private / "smtp.cdb"
    cdb.write_bytes(b"\0" * 2048)
    os.chmod(cdb, 0o644)
    fc = FileCheck(str(cdb), "services.mx.rules", "rules", user="nobody")
    [msg] = errors(check(Cfg(), {"mx": rendered(files=[fc])}))
    assert msg.startswith(f"error: mx: rules file {cdb}: nobody cannot enter ")
    assert msg.endswith("; tcpserver opens the rules cdb after dropping privileges)")
    # root (user None) reads it fine
    root_fc = FileCheck(str(cdb), "services.mx.rules", "rules", user=None)
    assert check(Cfg(), {"mx": rendered(files=[root_fc])}) == []


def test_ports_taken_twice():
    out = check(
        Cfg(),
        {
            "mx": rendered("mx", ("0", 25)),
            "local": rendered("local", ("127.0.0.1", 25)),
            "sub": rendered("sub", ("0", 587)),
            "sub2": rendered("sub2", ("192.0.2.1", 588)),
            "unset": rendered("unset", ("", 25)),
        },
    )
    assert errors(out) == [
        (
            "error: local: port 25 on 127.0.0.1 is also used by mx (0) "
            "(give one of them another port or address)"
        )
    ]


def test_render_warnings_are_passed_on():
    out = check(Cfg(), {"mx": rendered(warnings=[("services.mx.x", "odd", "fix")])})
    assert [f.describe() for f in out] == ["warning: mx: odd [services.mx.x] (fix)"]


# -- policy, from real configs ------------------------------------------------------------


def load(tmp_path: Path, services: str):
    from qmailkit.services import config

    text = f"""
[supervisor]
scan_dir = "{tmp_path}/scan"
service_root = "{tmp_path}/services"
log_user = "nobody"
[system]
qmail_home = "{tmp_path}/qmail"
{services}
"""
    return config.loads(text, str(tmp_path / "q.toml"))


def policy(tmp_path: Path, services: str) -> list[str]:
    return [
        f.describe()
        for f in check(load(tmp_path, services))
        if "open relay" in f.message or "port-25" in f.message
    ]


def test_open_relay_by_relay_client(tmp_path):
    assert policy(
        tmp_path,
        """
[services.mx]
type = "qmail-smtpd"
ip = "192.0.2.25"
relay_client = true
""",
    ) == [
        (
            "error: mx: open relay: RELAYCLIENT is set for every client on 192.0.2.25:25 "
            "[services.mx.relay_client] (set relay_client = false and allow relaying per network "
            'in the tcp rules (e.g. 192.0.2.:allow,RELAYCLIENT=""), or listen on a literal '
            "loopback address such as 127.0.0.1)"
        )
    ]
    # the same on the loopback is the local profile: fine
    assert policy(tmp_path, '[services.l]\ntype = "qmail-smtpd"\nprofile = "local"\n') == []


def test_open_relay_by_env_table(tmp_path):
    out = policy(
        tmp_path,
        """
[services.mx]
type = "qmail-smtpd"
ip = "0"
env = { RELAYCLIENT = "" }
""",
    )
    assert out == [
        (
            "error: mx: open relay: env sets RELAYCLIENT for every client on 0:25 "
            "[services.mx.env.RELAYCLIENT] (remove it from env and set RELAYCLIENT per "
            "network in the tcp rules)"
        )
    ]


def test_force_tls_and_require_auth_on_port_25(tmp_path):
    out = policy(
        tmp_path,
        """
[services.mx]
type = "qmail-smtpd"
ip = "0"
force_tls = true
require_auth = true
[services.sub]
type = "qmail-smtpd"
profile = "submission"
ip = "0"
""",
    )
    assert out == [
        (
            "error: mx: FORCE_TLS on a port-25 MX: other mail servers cannot deliver to you "
            "[services.mx.force_tls] (set force_tls = false here; use a submission (587) or smtps "
            "(465) service for your users)"
        ),
        (
            "error: mx: REQUIRE_AUTH on a port-25 MX: other mail servers cannot deliver to you "
            "[services.mx.require_auth] (set require_auth = false here; use a submission (587) or "
            "smtps (465) service for your users)"
        ),
    ]


def test_auth_without_tls_is_a_warning(tmp_path):
    cfg = load(
        tmp_path,
        """
[services.sub]
type = "qmail-smtpd"
profile = "submission"
ip = "0"
force_tls = false
tls_cert = ""
allow_insecure_auth = true
""",
    )
    warnings = [f.describe() for f in check(cfg) if f.level == "warning"]
    assert (
        "warning: sub: AUTH is offered without TLS: passwords cross in clear "
        "[services.sub.allow_insecure_auth] (set allow_insecure_auth = false)"
    ) in warnings


def test_catch_all_relay_rule_and_bad_rules(tmp_path):
    (tmp_path / "tcp").mkdir()
    rules = tmp_path / "tcp" / "smtp"
    rules.write_text('127.:allow,RELAYCLIENT=""\n:allow,RELAYCLIENT=""\n')
    mx = f"""
[services.mx]
type = "qmail-smtpd"
ip = "0"
rules = "{tmp_path}/tcp/smtp.cdb"
"""
    assert policy(tmp_path, mx) == [
        (
            f"error: mx: open relay on 0:25: {rules}:2: RELAYCLIENT for every public IPv4 address "
            "[services.mx.rules] (allow relaying only for your own networks, e.g. "
            '192.0.2.:allow,RELAYCLIENT="", and let your users relay with SMTP AUTH)'
        )
    ]
    rules.write_text('127.:allow,RELAYCLIENT=""\n:allow\n')
    assert policy(tmp_path, mx) == []
    rules.write_text("1.2.3.4-x:allow\n")
    out = [f.describe() for f in check(load(tmp_path, mx)) if "bad tcp rules" in f.message]
    assert len(out) == 1 and out[0].startswith(f"error: mx: bad tcp rules: {rules}:1: ")


def test_apply_refuses_an_open_relay_and_writes_nothing(tmp_path):
    """A config that would relay for the whole Internet is never installed, --force or not."""
    from qmailkit.errors import InputError
    from qmailkit.services import install

    cfg = load(
        tmp_path,
        """
[services.mx]
type = "qmail-smtpd"
ip = "0"
relay_client = true
""",
    )
    (tmp_path / "scan").mkdir()
    for force in (False, True):
        with pytest.raises(InputError) as exc:
            install.apply(cfg, force=force)
        assert str(exc.value).startswith(
            f"{tmp_path / 'q.toml'}: refusing to install: mx: open relay: RELAYCLIENT is set "
            "for every client on 0:25 [services.mx.relay_client] (set relay_client = false"
        )
        assert exc.value.exit_code == 100
    assert not (tmp_path / "services").exists()
    assert list((tmp_path / "scan").iterdir()) == []


def test_apply_refuses_force_tls_on_the_mx(tmp_path):
    from qmailkit.errors import InputError
    from qmailkit.services import install

    cfg = load(tmp_path, '[services.mx]\ntype = "qmail-smtpd"\nip = "0"\nforce_tls = true\n')
    with pytest.raises(InputError, match=r"refusing to install: mx: FORCE_TLS on a port-25 MX"):
        install.apply(cfg)
    assert not (tmp_path / "services").exists()


# -- who runs as root, and services for this host only ---------------------------------------


def test_smtpd_as_root_is_refused(tmp_path):
    from qmailkit.services import install

    cfg = load(
        tmp_path, '[services.mx]\ntype = "qmail-smtpd"\nip = "0"\nuser = "root"\nrules = ""\n'
    )
    found = [f.describe() for f in check(cfg) if f.key == "services.mx.user"]
    assert found == [
        (
            "error: mx: qmail-smtpd runs as root: every remote client talks to a root "
            'process [services.mx.user] (use the qmaild account (user = "qmaild"), as '
            "qmail intends)"
        )
    ]
    from qmailkit.errors import InputError

    with pytest.raises(InputError, match="refusing to install: mx: qmail-smtpd runs as root"):
        install.apply(cfg, force=True)
    assert not (tmp_path / "services").exists()


def test_loggers_as_root_are_warned_about(tmp_path):
    from qmailkit.services import config

    text = (
        f'[supervisor]\nscan_dir = "{tmp_path}/scan"\nservice_root = "{tmp_path}/s"\n'
        'log_user = "root"\n[services.send]\ntype = "qmail-send"\n'
        '[services.send2]\ntype = "qmail-send"\nlog_user = "nobody"\n'
        '[services.send3]\ntype = "qmail-send"\nlog_user = "root"\n'
    )
    cfg = config.loads(text, str(tmp_path / "q.toml"))
    found = [f.describe() for f in check(cfg) if f.key.endswith("log_user")]
    hint = "(use an unprivileged account such as qmaill: multilog only writes the log directory)"
    assert found == [
        f"warning: send3: the logger runs as root [services.send3.log_user] {hint}",
        f"warning: supervisor: the loggers run as root [supervisor.log_user] {hint}",
    ]


def local_only(tmp_path: Path, stype: str, extra: str) -> list[str]:
    cfg = load(tmp_path, f'[services.v]\ntype = "{stype}"\n{extra}')
    return [
        f.describe()
        for f in check(cfg)
        if "open to the world" in f.message or "as root" in f.message
    ]


HINT = (
    "(listen on 127.0.0.1, or allow only your own networks in the tcp rules (e.g. "
    "192.0.2.:allow then :deny))"
)


@pytest.mark.parametrize(
    "stype, what",
    [
        ("vpopmaild", "vpopmail's administration protocol (add, delete, change any account)"),
        ("courierpassd", "password changes"),
        ("courierauthd", "password checks (a guessing oracle)"),
    ],
)
def test_local_only_services_open_to_the_world(tmp_path, stype, what):
    assert local_only(tmp_path, stype, 'ip = "0"\n') == [
        (
            f"error: v: open to the world: {what} on 0:{check_port(stype)}, with no tcp rules "
            f"[services.v.ip] {HINT}"
        )
    ]
    # the defaults (127.0.0.1), a private address: fine
    assert local_only(tmp_path, stype, "") == []
    assert local_only(tmp_path, stype, 'ip = "192.168.1.5"\n') == []


def check_port(stype: str) -> int:
    return {"vpopmaild": 8900, "courierpassd": 106, "courierauthd": 8901}[stype]


def test_vpopmaild_rules_judged_as_tcpserver_reads_them(tmp_path):
    from support import need

    (tcprules, tcprulescheck) = need("tcprules", "tcprulescheck")
    (tmp_path / "tcp").mkdir()
    src, cdb = tmp_path / "tcp" / "vpop", tmp_path / "tcp" / "vpop.cdb"
    rules = f'ip = "0"\nuser = "root"\nrules = "{cdb}"\n'

    def compiled(text: bytes) -> None:
        src.write_bytes(text)
        subprocess.run([tcprules, cdb, f"{cdb}.tmp"], input=text, check=True)
        os.utime(src, ns=(1, 1))

    def allowed(ip: str) -> bool:
        out = subprocess.run(
            [tcprulescheck, cdb], env={"TCPREMOTEIP": ip}, capture_output=True, check=True
        ).stdout
        return out.endswith(b"allow connection\n")

    compiled(b"127.:allow\n10.:allow\n")  # no catch-all: tcpserver lets everyone else in
    assert allowed("8.8.8.8")
    what = "vpopmail's administration protocol (add, delete, change any account)"
    assert local_only(tmp_path, "vpopmaild", rules) == [
        (
            f"error: v: open to the world: {what} on 0:8900: {src}:(no rule matched): lets in "
            f"every public IPv4 address [services.v.rules] {HINT}"
        ),
        (
            f"error: v: open to the world: {what} on 0:8900: {cdb}: keys (none matched): lets in "
            f"every public IPv4 address [services.v.rules] {HINT}"
        ),
        (
            "warning: v: vpopmaild runs as root: a flaw in it gives root [services.v.user] (run it "
            'as the vpopmail account (user = "vpopmail"))'
        ),
    ]
    compiled(b"127.:allow\n10.:allow\n:deny\n")
    assert not allowed("8.8.8.8") and allowed("10.1.1.1")
    assert local_only(tmp_path, "vpopmaild", rules)[:-1] == []


# -- one rule each for check, the run script and apply (Q6) ----------------------------------


def test_rules_cdb_not_compiled_yet_is_not_an_error(tmp_path):
    """Before the first apply the cdb is missing; apply compiles it from the source."""
    (tmp_path / "tcp").mkdir()
    mx = (
        f'[services.mx]\ntype = "qmail-smtpd"\nip = "0"\nuser = "nobody"\n'
        f'rules = "{tmp_path}/tcp/smtp.cdb"\n'
    )

    def rules_findings() -> list[str]:
        return [f.describe() for f in check(load(tmp_path, mx)) if f.key == "services.mx.rules"]

    assert rules_findings() == [
        (
            f"error: mx: rules file {tmp_path}/tcp/smtp.cdb does not exist [services.mx.rules] "
            "(write the rules source and run qmailkit services apply (it compiles them))"
        )
    ]
    (tmp_path / "tcp" / "smtp").write_text('127.:allow,RELAYCLIENT=""\n')
    assert rules_findings() == []


@pytest.mark.parametrize(
    "extra, level",
    [
        ("", "warning"),  # an MX without its certificate runs, without STARTTLS
        ("force_tls = true\nport = 587\n", "error"),
        ("require_auth = true\nport = 587\n", "error"),  # AUTH only over TLS: nobody gets in
        ("require_auth = true\nport = 587\nallow_insecure_auth = true\n", "warning"),
    ],
)
def test_missing_starttls_certificate(tmp_path, extra, level):
    from qmailkit.services.render import render

    cert = tmp_path / "cert.pem"
    cfg = load(
        tmp_path,
        f'[services.mx]\ntype = "qmail-smtpd"\nip = "0"\nrules = ""\ntls_cert = "{cert}"\n{extra}',
    )
    found = [f.describe() for f in check(cfg) if f.key == "services.mx.tls_cert"]
    without = " (the service starts without it)" if level == "warning" else ""
    assert found == [
        (
            f"{level}: mx: cert file {cert} does not exist{without} "
            "[services.mx.tls_cert] (create the certificate (PEM, key included) or fix "
            "the path)"
        )
    ]
    run = render(cfg)["mx"].files["run"][0].decode()
    if level == "error":
        assert f"fatal 'certificate {cert} is missing or unreadable (" in run
    else:
        assert f"certificate {cert} is missing: no STARTTLS" in run


# -- which qmail-smtpd (Q5) ------------------------------------------------------------------


def test_stock_qmail_smtpd_is_told_what_it_ignores(tmp_path):
    from qmailkit.services.render import render

    cfg = load(
        tmp_path,
        '[services.mx]\ntype = "qmail-smtpd"\nip = "0"\nrules = ""\n'
        'smtpd_patch = "stock"\ngreeting = "hi"\nspf = 3\n'
        '[services.plain]\ntype = "qmail-smtpd"\nip = "0"\nport = 26\n'
        'rules = ""\nsmtpd_patch = "stock"\n'
        '[services.sub]\ntype = "qmail-smtpd"\nprofile = "submission"\n'
        'ip = "0"\nrules = ""\nsmtpd_patch = "stock"\n',
    )
    found = [f.describe() for f in check(cfg) if f.key.endswith("smtpd_patch")]
    hint = 'set smtpd_patch = "jms1" if yours has John Simpson\'s combined patch'
    assert found == [
        (
            f"warning: mx: a stock qmail-smtpd ignores greeting, spf [services.mx.smtpd_patch] "
            f"({hint}, or remove them)"
        ),
        (
            "error: sub: a stock qmail-smtpd ignores force_tls, require_auth: without AUTH this "
            "submission port takes mail for your domains from anyone, past the MX's checks "
            f"[services.sub.smtpd_patch] ({hint})"
        ),
    ]
    # what it would ignore anyway is not exported: the plain one is stock qmail's own script
    run = render(cfg)["plain"].files["run"][0].decode()
    for var in (
        "SMTPGREETING",
        "GREETDELAY",
        "TLS_SERVER_CERT",
        "VALIDRCPTTO",
        "SPF",
        "AUTH",
        "MFCHECK",
        "SSL",
        "DENY_TLS",
    ):
        assert f"setenv {var}" not in run, var
    assert " xbl.spamhaus.org qmail-smtpd\nhave " in run  # no LOCAL CHECKPW TRUE
    from qmailkit.errors import InputError
    from qmailkit.services import install

    with pytest.raises(InputError, match="refusing to install: sub: a stock qmail-smtpd"):
        install.apply(cfg)


@pytest.mark.parametrize("profile", ["mx", "submission"])
def test_jms1_setting_checked_against_the_program(tmp_path, profile):
    """A qmail-smtpd binary without the patch's variable names cannot read them."""
    stock, patched = tmp_path / "stock-smtpd", tmp_path / "jms1-smtpd"
    stock.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 100 + b"RELAYCLIENT\0DATABYTES\0")
    patched.write_bytes(
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 100
        + b"\0".join(
            var.encode()
            for var in (
                "SMTPGREETING",
                "GREETDELAY",
                "DROP_PRE_GREET",
                "FORCE_TLS",
                "DENY_TLS",
                "MFCHECK",
                "QMAILSMTPD_LOG_MAIL",
                "QMAILSMTPD_LOG_RCPT",
                "REQUIRE_AUTH",
                "ALLOW_INSECURE_AUTH",
                "VALIDRCPTTO_CDB",
                "VALIDRCPTTO_LIMIT",
                "VALIDRCPTTO_LOG",
                "SPFBEHAVIOR",
                "SPF_LOG",
                "SPF_BLOCK_PLUS_ALL",
            )
        )
    )
    for prog in (stock, patched):
        os.chmod(prog, 0o755)

    def findings(prog: Path) -> list[str]:
        cfg = load(
            tmp_path,
            f'[services.mx]\ntype = "qmail-smtpd"\nprofile = "{profile}"\n'
            f'ip = "0"\nrules = ""\nsmtpd = "{prog}"\n',
        )
        return [f.describe() for f in check(cfg) if f.key.endswith("smtpd_patch")]

    assert findings(patched) == []
    [found] = findings(stock)
    level = "error" if profile == "submission" else "warning"
    assert found.startswith(
        f"{level}: mx: {stock} does not read the variables of jms1's patch for "
    )
    assert found.endswith(
        ": it looks like a stock qmail-smtpd [services.mx.smtpd_patch] "
        '(install the patched qmail-smtpd, or set smtpd_patch = "stock")'
    )
    assert "require_auth" in found if profile == "submission" else "greeting" in found
