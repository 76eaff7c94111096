"""Demo part "cdb": tcpserver rules compiled to a cdb, a lookup explained,
a bad rule refused, and a small cdb built and read back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from qmailkit import cdb, tcprules
from qmailkit.errors import QmailkitError

RULES = """\
# Who may connect to qmail-smtpd, and what each client gets.
# Trusted: this host and the office LAN may relay.
127.:allow,RELAYCLIENT=""
192.168.1.:allow,RELAYCLIENT="",RBLSMTPD=""
# A range of addresses that only ever sent spam.
198.51.100.0-63:deny
# Everyone else: no relaying, recipients checked against validrcptto.cdb.
:allow,VALIDRCPTTO_CDB="/var/qmail/control/validrcptto.cdb"
"""


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace")


def run(sandbox: Path, say: Callable[[str], None]) -> None:
    rules_path = sandbox / "tcp.smtp"
    cdb_path = sandbox / "tcp.smtp.cdb"
    rules_path.write_text(RULES)
    rules = tcprules.compile_file(rules_path, cdb_path)
    keys = sum(len(rule.keys) for rule in rules.rules)
    say(f"Compiled {len(rules.rules)} rules from {rules_path.name} into {cdb_path.name}")
    say(f"  ({keys} keys: the range 198.51.100.0-63 becomes one key per address;")
    say("   the bytes are the same as ucspi-tcp's tcprules makes)")

    for ip in ("127.0.0.1", "192.168.1.20", "198.51.100.7", "203.0.113.9"):
        found = tcprules.explain(cdb_path, ip)
        source = tcprules.explain(rules, ip)
        verdict = "allowed" if found.allow else "refused"
        env = " ".join(f"{_text(n)}={_text(v)!r}" for n, v in found.env) or "no variables"
        line = source.rule.line if source.rule else "-"
        say(f"  {ip:14} {verdict}, {env}  (line {line}: key {_text(found.key or b'')!r})")
    say(f"Try it yourself: qmailkit tcprules check {cdb_path} 192.168.1.20")

    before = cdb_path.read_bytes()
    rules_path.write_text(RULES + "10.0.0.:alow\n")
    try:
        tcprules.compile_file(rules_path, cdb_path)
    except QmailkitError as err:
        say("A typo is refused:")
        say(f"  {err}")
    kept = "unchanged" if cdb_path.read_bytes() == before else "CHANGED"
    say(f"  and {cdb_path.name}, which tcpserver reads for every connection, is {kept}")
    rules_path.write_text(RULES)

    recipients = sandbox / "validrcptto.cdb"
    addresses = [b"postmaster@example.com", b"alice@example.com", b"bob@example.com"]
    cdb.write(recipients, ((address, b"") for address in addresses))
    with cdb.Reader(recipients) as reader:
        say(f"Built {recipients.name} with {len(reader)} addresses (atomically replaced);")
        say(
            f"  alice@example.com present: {b'alice@example.com' in reader}, "
            f"mallory@example.com present: {b'mallory@example.com' in reader}"
        )
    say(f"Dump it as cdbmake text: qmailkit cdb dump {recipients}")
