"""The one builder of small qmail + vpopmail trees: for the demo, the benchmarks and the tests.

``MailTree(root)`` lays out, under ``root``::

    var-qmail/control/  var-qmail/users/  var-qmail/alias/   (qmail's home)
    home-vpopmail/domains/                                    (vpopmail's home)
    home/NAME/                                                (system users' homes)
    passwd                                                    (root, alias, vpopmail, ...)

and grows it with these calls:

* ``write(path, text)``: a file (parents made), text or bytes;
* ``ctl(name, *lines)``: ``control/NAME`` with these lines;
* ``account(line)``: a raw passwd line (an account without a home made here);
* ``user(name, uid, files=None, make_home=True)``: a system account whose home
  it owns (qmail-getpw delivers only to such an account) with its ``.qmail`` files;
* ``alias_file(name, text)``: a file in the alias user's home (``.qmail-postmaster``);
* ``vdomain(domain, mailboxes, *, default=..., files=None, vpasswd=True, directory=None)``:
  a vpopmail domain: its directory, vpasswd, ``.qmail-default`` and other files,
  and its ``+domain-`` users/assign line;
* ``assign(line)``: a raw users/assign line (``=joe:...``, ``+list-:...``);
* ``write_assign(compile_cdb=True)``: users/assign, and users/cdb as qmail-newu writes it;
* ``setforward(table, name)``: a fastforward database made by the real setforward.

Ownership is set only when running as root (the demo may run as anyone:
then its accounts take the caller's uid, see ``uid_for``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from qmailkit import cdb
from qmailkit.qmail import assign as users_assign

__all__ = ["ALIAS_GID", "ALIAS_UID", "VDELIVER_BOUNCE", "VDELIVER_CATCHALL", "MailTree", "uid_for"]

VDELIVER_BOUNCE = "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n"
VDELIVER_CATCHALL = "| /home/vpopmail/bin/vdelivermail '' postmaster@{domain}\n"
ALIAS_UID, ALIAS_GID = 7790, 2108
VPOPMAIL_ID = 89


def _as_root() -> bool:
    return os.geteuid() == 0


def uid_for(wanted: int) -> int:
    """``wanted`` as root; otherwise the caller's uid (the only owner a non-root user can give)."""
    return wanted if _as_root() else os.geteuid()


class MailTree:
    """A qmail home, a passwd file, system homes and a vpopmail home under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.qmail = self.root / "var-qmail"
        self.control = self.qmail / "control"
        self.users = self.qmail / "users"
        self.alias = self.qmail / "alias"
        self.vpopmail = self.root / "home-vpopmail"
        self.passwd = self.root / "passwd"
        for directory in (self.control, self.users, self.alias, self.vpopmail / "domains"):
            directory.mkdir(parents=True, exist_ok=True)
        if _as_root():
            os.chown(self.alias, ALIAS_UID, ALIAS_GID)  # qmail-getpw: an owner of its home
        self.accounts: list[str] = [
            "root:x:0:0:root:/root:/bin/sh",
            f"alias:x:{ALIAS_UID}:{ALIAS_GID}::{self.alias}:/bin/false",
            f"vpopmail:x:{VPOPMAIL_ID}:{VPOPMAIL_ID}::{self.vpopmail}:/bin/false",
        ]
        self.assign_lines: list[str] = []
        self.write_passwd()

    def write(self, path: Path, text: str | bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return path

    def ctl(self, name: str, *lines: str) -> Path:
        return self.write(self.control / name, "".join(line + "\n" for line in lines))

    def write_passwd(self) -> None:
        self.write(self.passwd, "".join(line + "\n" for line in self.accounts))

    def account(self, line: str) -> None:
        """A raw passwd line, added at the end."""
        self.accounts.append(line)
        self.write_passwd()

    def user(
        self, name: str, uid: int, files: dict[str, str] | None = None, make_home: bool = True
    ) -> Path:
        home = self.root / "home" / name
        if make_home:
            home.mkdir(parents=True, exist_ok=True)
            if _as_root():
                os.chown(home, uid, uid)  # qmail-getpw takes an account that owns its home
            for file_name, text in (files or {}).items():
                self.write(home / file_name, text)
        self.account(f"{name}:x:{uid}:{uid}::{home}:/bin/sh")
        return home

    def alias_file(self, name: str, text: str = "&someone@example.net\n") -> Path:
        return self.write(self.alias / name, text)

    def vdomain(
        self,
        domain: str,
        mailboxes: list[str],
        *,
        default: str | None = VDELIVER_BOUNCE,
        files: dict[str, str] | None = None,
        vpasswd: bool | str = True,
        directory: Path | None = None,
    ) -> Path:
        """A vpopmail domain: directory, vpasswd, .qmail-default and its users/assign line.

        ``vpasswd``: True writes one line per mailbox, a string is the file's
        text, False writes none (a vpasswd.cdb or SQL domain).  ``default`` is
        formatted with ``domain``; None writes no .qmail-default.  ``directory``
        puts the domain elsewhere than ``domains/DOMAIN`` (a hashed layout).
        """
        domain_dir = directory or self.vpopmail / "domains" / domain
        domain_dir.mkdir(parents=True, exist_ok=True)
        if vpasswd is True:
            lines = [
                f"{box}:$1$salt$hash:1:0:{box.title()}:{domain_dir}/{box}:NOQUOTA:secret\n"
                for box in mailboxes
            ]
            self.write(domain_dir / "vpasswd", "".join(lines))
        elif vpasswd:
            self.write(domain_dir / "vpasswd", vpasswd)
        if default is not None:
            self.write(domain_dir / ".qmail-default", default.format(domain=domain))
        for file_name, text in (files or {}).items():
            self.write(domain_dir / file_name, text)
        self.assign(f"+{domain}-:{domain}:{VPOPMAIL_ID}:{VPOPMAIL_ID}:{domain_dir}:-::")
        return domain_dir

    def assign(self, line: str) -> None:
        """A raw users/assign line (written by ``write_assign``)."""
        self.assign_lines.append(line)

    def write_assign(self, compile_cdb: bool = True) -> None:
        text = "".join(line + "\n" for line in self.assign_lines) + ".\n"
        self.write(self.users / "assign", text)
        if compile_cdb:
            entries = users_assign.parse(text.encode(), self.users / "assign")
            cdb.write(self.users / "cdb", users_assign.records(entries))

    def setforward(self, table: str, name: str = "aliases.cdb") -> Path:
        """A fastforward database made by the real setforward."""
        program = shutil.which("setforward")
        if program is None:
            raise FileNotFoundError("setforward (fastforward) is not installed")
        out = self.root / name
        subprocess.run([program, str(out), f"{out}.tmp"], input=table.encode(), check=True)
        return out
