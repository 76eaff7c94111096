"""Generate a qmail + vpopmail tree for the mkvalidrcptto benchmark.

    .venv/bin/python bench/gen_vpopmail_tree.py DIR [--domains N] [--mailboxes M]

DIR gets ``var-qmail/`` (control/rcpthosts with the first 50 domains, the rest
in control/morercpthosts.cdb; control/virtualdomains; users/assign and
users/cdb as vpopmail writes them), ``home-vpopmail/domains/DOMAIN/`` (vpasswd,
.qmail-default, aliases) and a ``passwd`` file.  Per domain: M mailboxes, two
alias/forward files; every 10th domain an ezmlm list (.qmail-LIST and
.qmail-LIST-default), every 20th a catch-all .qmail-default, every 50th a
``|bouncesaying`` address.  Deterministic: the same arguments give the same tree.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

FIRSTS = ("anna", "bert", "carl", "dora", "emil", "fred", "gina", "hans", "ida", "jan")
LASTS = ("smith", "jones", "brown", "tayl", "white", "green", "black", "young", "king", "hill")


def mailbox(i: int) -> str:
    return f"{FIRSTS[i % 10]}.{LASTS[(i // 10) % 10]}{i // 100 or ''}"


def generate(root: Path, domains: int, mailboxes: int) -> int:
    """Write the tree; returns the number of files written."""
    from qmailkit import cdb
    from qmailkit.qmail import assign

    qmail = root / "var-qmail"
    control = qmail / "control"
    users = qmail / "users"
    vhome = root / "home-vpopmail"
    for d in (control, users, qmail / "alias", vhome / "domains"):
        d.mkdir(parents=True, exist_ok=True)
    (root / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        f"alias:x:7790:2108::{qmail / 'alias'}:/bin/false\n"
        f"vpopmail:x:89:89::{vhome}:/bin/false\n"
    )
    names = [f"dom{n:05d}.example" for n in range(domains)]
    (control / "rcpthosts").write_text("".join(n + "\n" for n in names[:50]))
    cdb.write(control / "morercpthosts.cdb", ((n.encode(), b"") for n in names[50:]))
    (control / "virtualdomains").write_text("".join(f"{n}:{n}\n" for n in names))
    lines = []
    files = 5
    for n, name in enumerate(names):
        ddir = vhome / "domains" / name
        ddir.mkdir(exist_ok=True)
        pw = "".join(
            f"{mailbox(i)}:$6$salt{i:04d}$0123456789abcdefghijklmnopqrstuvwxyzABCDEF:1:0:"
            f"{mailbox(i).title()}:{ddir}/{mailbox(i)}:NOQUOTA\n"
            for i in range(mailboxes)
        )
        (ddir / "vpasswd").write_text(pw)
        if n % 20 == 19:
            default = f"| {vhome}/bin/vdelivermail '' postmaster@{name}\n"
        else:
            default = f"| {vhome}/bin/vdelivermail '' bounce-no-mailbox\n"
        (ddir / ".qmail-default").write_text(default)
        (ddir / ".qmail-info").write_text(f"&{mailbox(0)}@{name}\n")
        (ddir / ".qmail-sales").write_text(f"&{mailbox(1)}@{name}\n&boss@example.org\n")
        files += 4
        if n % 10 == 0:
            (ddir / ".qmail-news").write_text(f"|preline /usr/bin/ezmlm-send '{ddir}/news'\n")
            (ddir / ".qmail-news-default").write_text(
                f"|preline /usr/bin/ezmlm-manage '{ddir}/news'\n"
            )
            files += 2
        if n % 50 == 0:
            (ddir / ".qmail-old-sales").write_text("|bouncesaying 'this address is gone'\n")
            files += 1
        lines.append(f"+{name}-:{name}:89:89:{ddir}:-::")
    text = "".join(line + "\n" for line in lines) + ".\n"
    (users / "assign").write_text(text)
    cdb.write(users / "cdb", assign.records(assign.parse(text.encode(), users / "assign")))
    os.utime(users / "assign", (1_000_000_000, 1_000_000_000))  # older than users/cdb
    return files


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--domains", type=int, default=10_000)
    ap.add_argument("--mailboxes", type=int, default=100)
    args = ap.parse_args()
    count = generate(args.dir, args.domains, args.mailboxes)
    print(f"{args.dir}: {args.domains} domains x {args.mailboxes} mailboxes, {count} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
