"""Demo part "rcpt": a sample qmail + vpopmail server, its validrcptto.cdb, and
``rcpt check`` answering for a few addresses the way qmail-smtpd would."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from qmailkit import rcpt
from qmailkit.demo.mailtree import MailTree, uid_for
from qmailkit.errors import QmailkitError
from qmailkit.qmail.recipients import Options

MAILBOXES = {"bounce.example": ["alice", "carol"], "catch.example": ["dave"]}


def build_tree(root: Path) -> dict[str, Path]:
    """The sample server; returns its paths (qmail home, passwd, vpopmail home)."""
    tree = MailTree(root)
    # qmail-getpw delivers only to an account that owns its home: as root the demo
    # gives bob and mary theirs; otherwise they share the uid of whoever runs it.
    tree.user(
        "bob",
        uid_for(1000),
        {
            # bob has a mailing-list extension and one that bounces.
            ".qmail": "./Maildir/\n",
            ".qmail-lists": "./Maildir/.lists/\n",
            ".qmail-spamtrap": "|bouncesaying 'This address is a spam trap.'\n",
        },
    )
    tree.user("mary", uid_for(1001))
    tree.account("daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin")  # below the uid window
    tree.ctl("rcpthosts", "example.com", "bounce.example", "catch.example")
    tree.ctl("locals", "example.com")
    tree.ctl("virtualdomains", "bounce.example:bounce.example", "catch.example:catch.example")
    # The alias user: postmaster and abuse, a no-reply address that bounces, and
    # (when fastforward is installed) /etc/aliases-style entries in a cdb.
    tree.alias_file(".qmail-postmaster", "&bob@example.com\n")
    tree.alias_file(".qmail-abuse", "&bob@example.com\n")
    tree.alias_file(".qmail-noreply", "|bouncesaying 'Please do not reply to this address.'\n")
    setforward = shutil.which("setforward")
    if setforward:
        table = "info@example.com: bob@example.com;\nwebmaster@: mary@example.com;\n"
        tree.alias_file(".qmail-default", f"| fastforward -d {tree.setforward(table)}\n")
    # Two vpopmail domains: one bounces unknown users, one is a catch-all.
    vdelivermail = f"| {tree.vpopmail}/bin/vdelivermail ''"
    bounce = tree.vdomain(
        "bounce.example",
        MAILBOXES["bounce.example"],
        default=f"{vdelivermail} bounce-no-mailbox\n",
        files={
            ".qmail-sales": "&alice@bounce.example\n",  # a vpopmail alias
        },
    )
    tree.write(bounce / ".qmail-news", f"|ezmlm-send '{bounce}/news'\n")  # an ezmlm list
    tree.write(bounce / ".qmail-news-default", f"|ezmlm-manage '{bounce}/news'\n")
    tree.vdomain(
        "catch.example",
        MAILBOXES["catch.example"],
        default=f"{vdelivermail} dave@{{domain}}\n",
    )
    tree.write_assign()
    return {
        "qmail": tree.qmail,
        "passwd": tree.passwd,
        "vpopmail": tree.vpopmail,
        "fastforward": Path(setforward) if setforward else Path(),
    }


def run(sandbox: Path, say: Callable[[str], None]) -> None:
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
    with rcpt.lock(target) as state_fd:
        rec = rcpt.build(opts)
        result = rcpt.write_cdb(target, rec, state_fd=state_fd)
    say(f"mkvalidrcptto -c {target.name}: {result.count} keys:")
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
        with rcpt.lock(target) as state_fd:
            rcpt.write_cdb(target, rcpt.build(opts), state_fd=state_fd)
    except QmailkitError as err:
        say("A domain in rcpthosts that nothing handles is refused:")
        for line in str(err).replace(str(sandbox) + "/", "").splitlines():
            say(f"  {line}")
    kept = "unchanged" if target.read_bytes() == before else "CHANGED"
    say(f"  and {target.name} is {kept}")
    rcpthosts.write_text(original)
