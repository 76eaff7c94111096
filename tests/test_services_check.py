"""services check: users, programs, certificate and rules permissions, ports, policy."""

from __future__ import annotations

import os

import pytest

from qmailkit.services.check import Finding, check
from qmailkit.services.render import Checks, FileCheck, RenderedService

pytest_plugins = ["services_helpers"]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="permission checks need root")


def rendered(name="mx", listen=("127.0.0.1", 25), user="nobody", **checks) -> RenderedService:
    return RenderedService(
        name=name, type="qmail-smtpd", dir=f"/x/{name}",
        files={"run": (b"#!/bin/sh\n", 0o755)}, dirs=["log/main"], log_owner="nobody",
        rules=None, checks=Checks(**checks), listen=listen, user=user,
    )


class Cfg:
    def __init__(self) -> None:
        self.services: dict = {}


def errors(findings: list[Finding]) -> list[str]:
    return [f.describe() for f in findings if f.level == "error"]


def test_clean_service_has_no_findings(tmp_path):
    assert check(Cfg(), {"mx": rendered(users=["nobody"], programs=[("sh", "k")],
                                        search_path=["/usr/bin", "/bin"])}) == []


def test_missing_user_and_program(tmp_path):
    exe = tmp_path / "notexec"
    exe.write_text("x")
    os.chmod(exe, 0o644)
    out = check(Cfg(), {"mx": rendered(
        users=["nobody", "qmaild-missing"],
        programs=[("qmail-smtpd-missing", "services.mx.smtpd"), (str(exe), "services.mx.x")],
        search_path=["/usr/bin", "/bin"])})
    assert errors(out) == [
        ("error: mx: user 'qmaild-missing' does not exist (create it (useradd -r -s "
        "/usr/sbin/nologin qmaild-missing) or name another user in the config)"),
        ("error: mx: program qmail-smtpd-missing not found in /usr/bin:/bin "
        "[services.mx.smtpd] (install it, or give its full path in the config)"),
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
        (f"error: mx: cert file {cert}: nobody cannot read it (mode 0600, owner 0:0) "
        "[services.mx.tls_cert] (chown nobody "
        f"{cert} and chmod 0400 (the private key stays private))")]
    os.chmod(cert, 0o644)
    msgs = errors(check(Cfg(), {"mx": rendered(files=[fc])}))
    assert msgs == [(f"error: mx: cert file {cert} is world-readable and holds a private key "
                    f"[services.mx.tls_cert] (chmod o-r {cert})")]
    os.chown(cert, 0, 65534)  # group nogroup, nobody's primary group
    os.chmod(cert, 0o640)
    assert check(Cfg(), {"mx": rendered(files=[fc])}) == []
    cert.unlink()
    msgs = errors(check(Cfg(), {"mx": rendered(files=[fc])}))
    assert msgs == [(f"error: mx: cert file {cert} does not exist [services.mx.tls_cert] "
                    "(create the certificate (PEM, key included) or fix the path)")]


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
    out = check(Cfg(), {
        "mx": rendered("mx", ("0", 25)),
        "local": rendered("local", ("127.0.0.1", 25)),
        "sub": rendered("sub", ("0", 587)),
        "sub2": rendered("sub2", ("192.0.2.1", 588)),
        "unset": rendered("unset", ("", 25)),
    })
    assert errors(out) == [
        ("error: local: port 25 on 127.0.0.1 is also used by mx (0) "
        "(give one of them another port or address)")]


def test_render_warnings_are_passed_on():
    out = check(Cfg(), {"mx": rendered(warnings=[("services.mx.x", "odd", "fix")])})
    assert [f.describe() for f in out] == ["warning: mx: odd [services.mx.x] (fix)"]
