"""Build small qmail + vpopmail trees in a temp dir for the rcpt tests and the demo."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

VDELIVER_BOUNCE = "| /home/vpopmail/bin/vdelivermail '' bounce-no-mailbox\n"
VDELIVER_CATCHALL = "| /home/vpopmail/bin/vdelivermail '' postmaster@{domain}\n"


class Tree:
    """A qmail home, a passwd file, system homes and a vpopmail home under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.qmail = self.root / "var-qmail"
        self.control = self.qmail / "control"
        self.users = self.qmail / "users"
        self.alias = self.qmail / "alias"
        self.vpopmail = self.root / "home-vpopmail"
        self.passwd = self.root / "passwd"
        for d in (self.control, self.users, self.alias, self.vpopmail / "domains"):
            d.mkdir(parents=True, exist_ok=True)
        os.chown(self.alias, 7790, 2108)  # qmail-getpw takes an account that owns its home
        self.accounts: list[str] = [
            "root:x:0:0:root:/root:/bin/sh",
            f"alias:x:7790:2108::{self.alias}:/bin/false",
            f"vpopmail:x:89:89::{self.vpopmail}:/bin/false",
        ]
        self.assign_lines: list[str] = []
        self.write_passwd()

    def write(self, path: Path, text: str | bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, str):
            text = text.encode()
        path.write_bytes(text)
        return path

    def ctl(self, name: str, *lines: str) -> Path:
        return self.write(self.control / name, "".join(line + "\n" for line in lines))

    def write_passwd(self) -> None:
        self.write(self.passwd, "".join(a + "\n" for a in self.accounts))

    def user(
        self, name: str, uid: int, files: dict[str, str] | None = None, make_home: bool = True
    ) -> Path:
        home = self.root / "home" / name
        if make_home:
            home.mkdir(parents=True, exist_ok=True)
            os.chown(home, uid, uid)  # qmail-getpw takes an account that owns its home
            for fname, text in (files or {}).items():
                self.write(home / fname, text)
        self.accounts.append(f"{name}:x:{uid}:{uid}::{home}:/bin/sh")
        self.write_passwd()
        return home

    def alias_file(self, name: str, text: str = "&someone@example.net\n") -> Path:
        return self.write(self.alias / name, text)

    def vdomain(
        self,
        domain: str,
        mailboxes: list[str],
        default: str = VDELIVER_BOUNCE,
        files: dict[str, str] | None = None,
        vpasswd: bool = True,
    ) -> Path:
        """A vpopmail domain: directory, vpasswd, .qmail-default, users/assign and virtualdomains."""
        ddir = self.vpopmail / "domains" / domain
        ddir.mkdir(parents=True, exist_ok=True)
        if vpasswd:
            lines = [
                f"{m}:$1$salt$hash:1:0:{m.title()}:{ddir}/{m}:NOQUOTA:secret\n" for m in mailboxes
            ]
            self.write(ddir / "vpasswd", "".join(lines))
        if default is not None:
            self.write(ddir / ".qmail-default", default.format(domain=domain))
        for fname, text in (files or {}).items():
            self.write(ddir / fname, text)
        self.assign_lines.append(f"+{domain}-:{domain}:89:89:{ddir}:-::")
        return ddir

    def write_assign(self, compile_cdb: bool = True) -> None:
        from qmailkit import cdb
        from qmailkit.qmail import assign

        text = "".join(line + "\n" for line in self.assign_lines) + ".\n"
        self.write(self.users / "assign", text)
        if compile_cdb:
            entries = assign.parse(text.encode(), self.users / "assign")
            cdb.write(self.users / "cdb", assign.records(entries))

    def setforward(self, table: str, name: str = "aliases.cdb") -> Path:
        """A fastforward database made by the real setforward."""
        prog = shutil.which("setforward")
        assert prog, "setforward (fastforward) is not installed"
        out = self.root / name
        subprocess.run([prog, str(out), str(out) + ".tmp"], input=table.encode(), check=True)
        return out


def cdb_query(path: Path, key: str) -> bytes | None:
    """Ask tinycdb's ``cdb -q`` for a key; None when absent."""
    done = subprocess.run(["cdb", "-q", "--", str(path), key], capture_output=True, check=False)
    if done.returncode == 100:
        return None
    assert done.returncode == 0, done.stderr
    return done.stdout


def cdb_dump_keys(path: Path) -> dict[str, bytes]:
    """Every record of a cdb as tinycdb's ``cdb -d`` prints it."""
    out = subprocess.run(["cdb", "-d", str(path)], capture_output=True, check=True).stdout
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(out) and out[pos : pos + 1] == b"+":
        comma = out.index(b",", pos)
        colon = out.index(b":", comma)
        klen = int(out[pos + 1 : comma])
        vlen = int(out[comma + 1 : colon])
        key = out[colon + 1 : colon + 1 + klen]
        value = out[colon + 3 + klen : colon + 3 + klen + vlen]
        records[key.decode()] = value
        pos = colon + 3 + klen + vlen + 1
    return records


def mtime_ns(path: Path) -> int:
    return os.stat(path).st_mtime_ns
