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

from qmailkit import cdb  # noqa: E402 - after the path to the sources
from qmailkit.demo.mailtree import MailTree  # noqa: E402

FIRSTS = ("anna", "bert", "carl", "dora", "emil", "fred", "gina", "hans", "ida", "jan")
LASTS = ("smith", "jones", "brown", "tayl", "white", "green", "black", "young", "king", "hill")


def mailbox(i: int) -> str:
    return f"{FIRSTS[i % 10]}.{LASTS[(i // 10) % 10]}{i // 100 or ''}"


def generate(root: Path, domains: int, mailboxes: int) -> int:
    """Write the tree; returns the number of files written."""
    tree = MailTree(root)
    names = [f"dom{n:05d}.example" for n in range(domains)]
    tree.ctl("rcpthosts", *names[:50])
    cdb.write(tree.control / "morercpthosts.cdb", ((n.encode(), b"") for n in names[50:]))
    tree.ctl("virtualdomains", *(f"{n}:{n}" for n in names))
    files = 5
    vdelivermail = f"| {tree.vpopmail}/bin/vdelivermail ''"
    for n, name in enumerate(names):
        domain_dir = tree.vpopmail / "domains" / name
        vpasswd = "".join(
            f"{mailbox(i)}:$6$salt{i:04d}$0123456789abcdefghijklmnopqrstuvwxyzABCDEF:1:0:"
            f"{mailbox(i).title()}:{domain_dir}/{mailbox(i)}:NOQUOTA\n"
            for i in range(mailboxes)
        )
        extra = {
            ".qmail-info": f"&{mailbox(0)}@{name}\n",
            ".qmail-sales": f"&{mailbox(1)}@{name}\n&boss@example.org\n",
        }
        if n % 10 == 0:
            extra[".qmail-news"] = f"|preline /usr/bin/ezmlm-send '{domain_dir}/news'\n"
            extra[".qmail-news-default"] = f"|preline /usr/bin/ezmlm-manage '{domain_dir}/news'\n"
        if n % 50 == 0:
            extra[".qmail-old-sales"] = "|bouncesaying 'this address is gone'\n"
        catch_all = n % 20 == 19
        default = f"{vdelivermail} {'postmaster@{domain}' if catch_all else 'bounce-no-mailbox'}\n"
        tree.vdomain(name, [], default=default, files=extra, vpasswd=vpasswd)
        files += 2 + len(extra)
    tree.write_assign()
    os.utime(tree.users / "assign", (1_000_000_000, 1_000_000_000))  # older than users/cdb
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
