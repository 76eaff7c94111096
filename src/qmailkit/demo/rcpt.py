"""Demo part "rcpt": a sample qmail + vpopmail server, its validrcptto.cdb, and
``rcpt check`` answering for a few addresses the way qmail-smtpd would."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

MAILBOXES = {"bounce.example": ["alice", "carol"], "catch.example": ["dave"]}


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build_tree(root: Path) -> dict[str, Path]:
    """The sample server; returns its paths (qmail home, passwd, vpopmail home)."""
    from qmailkit import cdb
    from qmailkit.qmail import assign

    qmail, vpop, homes = root / "var-qmail", root / "home-vpopmail", root / "home"
    control, alias = qmail / "control", qmail / "alias"
    # qmail-getpw delivers only to an account that owns its home: as root the demo
    # gives bob and mary theirs; otherwise they share the uid of whoever runs it.
    root_runs = os.geteuid() == 0
    uids = (
        {"bob": 1000, "mary": 1001} if root_runs else dict.fromkeys(("bob", "mary"), os.geteuid())
    )
    _write(
        root / "passwd",
        "".join(
            [
                "root:x:0:0:root:/root:/bin/sh\n",
                f"alias:x:7790:2108::{alias}:/bin/false\n",
                f"vpopmail:x:89:89::{vpop}:/bin/false\n",
                f"bob:x:{uids['bob']}:{uids['bob']}:Bob:{homes / 'bob'}:/bin/sh\n",
                f"mary:x:{uids['mary']}:{uids['mary']}:Mary:{homes / 'mary'}:/bin/sh\n",
                "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n",  # below the uid window
            ]
        ),
    )
    _write(control / "rcpthosts", "example.com\nbounce.example\ncatch.example\n")
    _write(control / "locals", "example.com\n")
    _write(
        control / "virtualdomains", "bounce.example:bounce.example\ncatch.example:catch.example\n"
    )
    # Local users: bob has a mailing-list extension and one that bounces.
    _write(homes / "bob" / ".qmail", "./Maildir/\n")
    _write(homes / "bob" / ".qmail-lists", "./Maildir/.lists/\n")
    _write(homes / "bob" / ".qmail-spamtrap", "|bouncesaying 'This address is a spam trap.'\n")
    (homes / "mary").mkdir(parents=True, exist_ok=True)
    if root_runs:
        for name, uid in uids.items():
            os.chown(homes / name, uid, uid)
    # The alias user: postmaster and abuse, a no-reply address that bounces, and
    # (when fastforward is installed) /etc/aliases-style entries in a cdb.
    _write(alias / ".qmail-postmaster", "&bob@example.com\n")
    _write(alias / ".qmail-abuse", "&bob@example.com\n")
    _write(alias / ".qmail-noreply", "|bouncesaying 'Please do not reply to this address.'\n")
    setforward = shutil.which("setforward")
    if setforward:
        table = "info@example.com: bob@example.com;\nwebmaster@: mary@example.com;\n"
        db = root / "aliases.cdb"
        subprocess.run([setforward, str(db), str(db) + ".tmp"], input=table.encode(), check=True)
        _write(alias / ".qmail-default", f"| fastforward -d {db}\n")
    # Two vpopmail domains: one bounces unknown users, one is a catch-all.
    lines = []
    for domain, users in MAILBOXES.items():
        ddir = vpop / "domains" / domain
        _write(
            ddir / "vpasswd",
            "".join(f"{u}:$1$demo$xyz:1:0:{u}:{ddir}/{u}:NOQUOTA\n" for u in users),
        )
        target = "bounce-no-mailbox" if domain == "bounce.example" else f"dave@{domain}"
        _write(ddir / ".qmail-default", f"| {vpop}/bin/vdelivermail '' {target}\n")
        lines.append(f"+{domain}-:{domain}:89:89:{ddir}:-::")
    bounce = vpop / "domains" / "bounce.example"
    _write(bounce / ".qmail-sales", "&alice@bounce.example\n")  # a vpopmail alias
    _write(bounce / ".qmail-news", f"|ezmlm-send '{bounce}/news'\n")  # an ezmlm list
    _write(bounce / ".qmail-news-default", f"|ezmlm-manage '{bounce}/news'\n")
    text = "".join(line + "\n" for line in lines) + ".\n"
    _write(qmail / "users" / "assign", text)
    cdb.write(
        qmail / "users" / "cdb",
        assign.records(assign.parse(text.encode(), qmail / "users" / "assign")),
    )
    return {
        "qmail": qmail,
        "passwd": root / "passwd",
        "vpopmail": vpop,
        "fastforward": Path(setforward) if setforward else Path(),
    }


def run(sandbox: Path, say: Callable[[str], None]) -> None:
    from qmailkit import rcpt
    from qmailkit.errors import QmailkitError
    from qmailkit.qmail.model import Options

    paths = build_tree(sandbox)
    opts = Options(
        qmail_home=paths["qmail"], passwd=paths["passwd"], vpopmail_home=paths["vpopmail"]
    )
    say(
        f"A sample server in {sandbox}: local domain example.com (users bob and mary, the "
        "alias user),"
    )
    say(
        "  vpopmail domains bounce.example (bounce-no-mailbox, an alias, an ezmlm list) and "
        "catch.example (catch-all)"
    )
    if not paths["fastforward"].name:
        say("  (fastforward's setforward is not installed: the /etc/aliases part is left out)")
    target = paths["qmail"] / "control" / "validrcptto.cdb"
    with rcpt.lock(target):
        rec = rcpt.build(opts)
        result = rcpt.write_cdb(target, rec)
    say(f"mkvalidrcptto -c {target.name}: {result.keys} keys:")
    for line in rcpt.explain_lines(rec):
        key, verdict, source = line.rstrip("\n").split("\t")
        where = source.replace(str(sandbox) + "/", "")
        say(f"  {key:32} {verdict:6} {where}")
    for warning in rec.warnings:
        say(f"  warning: {warning.replace(str(sandbox) + '/', '')}")

    say("What qmail-smtpd with VALIDRCPTTO_CDB answers at RCPT TO:")
    for address in (
        "Alice@Bounce.Example",
        "news-subscribe@bounce.example",
        "nobody@bounce.example",
        "anyone@catch.example",
        "bob-lists@example.com",
        "bob-spamtrap@example.com",
        "noreply@example.com",
        "info@example.com",
        "stranger@example.com",
    ):
        decision = rcpt.check_cdb(address, target)
        verdict = "accept" if decision.accept else "reject (553)"
        say(f"  {address:30} {verdict:12} {decision.reason}")
    say(f"Try it yourself: qmailkit rcpt check alice@bounce.example --cdb {target}")

    before = target.read_bytes()
    rcpthosts = paths["qmail"] / "control" / "rcpthosts"
    original = rcpthosts.read_text()
    rcpthosts.write_text(original + "forgotten.example\n")
    try:
        with rcpt.lock(target):
            rcpt.write_cdb(target, rcpt.build(opts))
    except QmailkitError as err:
        say("A domain in rcpthosts that nothing handles is refused:")
        for line in str(err).replace(str(sandbox) + "/", "").splitlines():
            say(f"  {line}")
    kept = "unchanged" if target.read_bytes() == before else "CHANGED"
    say(f"  and {target.name} is {kept}")
    rcpthosts.write_text(original)
