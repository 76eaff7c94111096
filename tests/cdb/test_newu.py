"""``qmailkit newu``: users/assign → users/cdb, checked with tinycdb."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
import support
from support import need

ASSIGN = (
    b"=joe:joe:500:500:/home/joe:-::\n"
    b"=Mary.Smith:mary:501:100:/home/mary:::\n"
    b"+example.com-:example.com:89:89:/home/vpopmail/domains/example.com:-::\n"
    b"+list.:ezmlm:77:77:/var/lists:-:list:\n"
    b"+:alias:7790:2108:/var/qmail/alias:-::\n"
    b".\n"
)

# What qmail-newu writes for ASSIGN, spelled out from the format (qmail-users(5),
# qmail-newu.c): one record per line in order, then the empty key with the wildcard chars.
EXPECTED = [
    (b"!joe\0", b"joe\x00500\x00500\x00/home/joe\x00-\x00"),
    (b"!mary.smith\0", b"mary\x00501\x00100\x00/home/mary\x00\x00"),
    (b"!example.com-", b"example.com\x0089\x0089\x00/home/vpopmail/domains/example.com\x00-\x00"),
    (b"!list.", b"ezmlm\x0077\x0077\x00/var/lists\x00-\x00list"),
    (b"!", b"alias\x007790\x002108\x00/var/qmail/alias\x00-\x00"),
    (b"", b"-."),
]


def cdbmake_text(records) -> bytes:
    out = b"".join(b"+%d,%d:%s->%s\n" % (len(k), len(v), k, v) for k, v in records)
    return out + b"\n"


def newu(home, *extra):
    return support.run("newu", "--qmail-home", home, *extra)


@pytest.fixture
def home(tmp_path):
    (tmp_path / "users").mkdir()
    return tmp_path


def test_newu_writes_what_qmail_newu_writes(home, tmp_path):
    (cdb_prog,) = need("cdb")
    (home / "users" / "assign").write_bytes(ASSIGN)
    proc = newu(home, "-v")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{home}/users/cdb: 5 entries\n"
    target = home / "users" / "cdb"
    dump = subprocess.run([cdb_prog, "-d", str(target)], capture_output=True, check=True).stdout
    assert dump == cdbmake_text(EXPECTED)
    # Byte for byte the file tinycdb builds from the expected records.
    reference = tmp_path / "reference.cdb"
    subprocess.run([cdb_prog, "-c", str(reference)], input=cdbmake_text(EXPECTED), check=True)
    assert target.read_bytes() == reference.read_bytes()
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(os.listdir(home / "users")) == [".cdb.lock", "assign", "cdb"]


def test_newu_lookup_with_tinycdb(home):
    (cdb_prog,) = need("cdb")
    (home / "users" / "assign").write_bytes(ASSIGN)
    assert newu(home).returncode == 0
    # An exact key ends in NUL, which argv cannot carry: "!joe" alone is not a key.
    out = subprocess.run(
        [cdb_prog, "-q", "--", str(home / "users" / "cdb"), "!joe"],
        check=False,
        capture_output=True,
    )
    assert out.returncode == 100
    out = subprocess.run(
        [cdb_prog, "-q", "--", str(home / "users" / "cdb"), "!example.com-"],
        capture_output=True,
        check=True,
    )
    assert out.stdout == EXPECTED[2][1]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"=joe:joe:500:500:/home/joe:-::\n", ':1: missing the terminating line "."'),
        (b"=a:a:1:1:/a:-::\n=joe:joe:x:500:/home/joe:-::\n.\n", ":2: uid 'x' is not a number"),
        (b"=joe:joe:500:500:/home/joe:-:\n.\n", ":1: 5 fields after the address, need 6"),
    ],
)
def test_bad_assign_leaves_old_cdb(home, data, message):
    (home / "users" / "assign").write_bytes(ASSIGN)
    assert newu(home).returncode == 0
    before = (home / "users" / "cdb").read_bytes()
    (home / "users" / "assign").write_bytes(data)
    proc = newu(home)
    assert proc.returncode == 111
    assert proc.stderr.startswith(f"qmailkit newu: fatal: {home}/users/assign")
    assert message in proc.stderr
    assert (home / "users" / "cdb").read_bytes() == before
    assert sorted(os.listdir(home / "users")) == [".cdb.lock", "assign", "cdb"]


def test_bad_assign_writes_nothing(home):
    (home / "users" / "assign").write_bytes(b"joe\n.\n")
    proc = newu(home)
    assert proc.returncode == 111
    assert "line starts with 'j', not '=' or '+'" in proc.stderr
    assert sorted(os.listdir(home / "users")) == ["assign"]


def test_missing_assign(home):
    proc = newu(home)
    assert proc.returncode == 111
    assert proc.stderr == (
        f"qmailkit newu: fatal: {home}/users/assign: cannot read: No such file or directory\n"
    )
    assert os.listdir(home / "users") == []


def test_read_back_with_assign_reader(home):
    from qmailkit.qmail import assign

    (home / "users" / "assign").write_bytes(ASSIGN)
    assert newu(home).returncode == 0
    entries, chars = assign.read_cdb(home / "users" / "cdb")
    assert chars == b"-."
    assert [(e.kind, e.local, e.uid, e.home) for e in entries] == [
        ("=", "joe", 500, "/home/joe"),
        ("=", "mary.smith", 501, "/home/mary"),
        ("+", "example.com-", 89, "/home/vpopmail/domains/example.com"),
        ("+", "list.", 77, "/var/lists"),
        ("+", "", 7790, "/var/qmail/alias"),
    ]


@pytest.mark.parametrize("data", [b".\n", b".+x-:x:1:1:/tmp:-::\n", b"..\n=joe:joe:1:1:/h:-::\n"])
def test_an_empty_users_cdb_is_refused_without_force(home, data):
    # A11: "." alone (or a first line starting with ".") ended users/assign at once and
    # installed an empty users/cdb: every vpopmail +domain- route was gone.
    (home / "users" / "assign").write_bytes(b"+x-:x:1:1:/tmp:-::\n.\n")
    assert newu(home).returncode == 0, newu(home).stderr
    before = (home / "users" / "cdb").read_bytes()
    (home / "users" / "assign").write_bytes(data)
    proc = newu(home)
    assert proc.returncode == 111
    assert proc.stderr == (
        f"qmailkit newu: fatal: {home}/users/cdb: no entries found: an empty users/cdb drops "
        "every users/assign route (vpopmail domains bounce) (check the sources; --force "
        "writes it anyway)\n"
    )
    assert (home / "users" / "cdb").read_bytes() == before
    assert sorted(os.listdir(home / "users")) == [".cdb.lock", "assign", "cdb"]
    proc = newu(home, "--force", "-v")
    assert (proc.returncode, proc.stdout) == (0, f"{home}/users/cdb: 0 entries\n")
    (cdb_prog,) = need("cdb")
    dump = subprocess.run(
        [cdb_prog, "-d", str(home / "users" / "cdb")], capture_output=True, check=True
    ).stdout
    assert dump == b"+0,0:->\n\n"  # what qmail-newu writes for an empty users/assign


def test_a_sharp_shrink_is_refused_without_force(home):
    (home / "users" / "assign").write_bytes(ASSIGN)
    assert newu(home).returncode == 0
    before = (home / "users" / "cdb").read_bytes()
    (home / "users" / "assign").write_bytes(b"".join(ASSIGN.splitlines(True)[:3]) + b".\n")
    proc = newu(home)
    assert proc.returncode == 111
    assert proc.stderr == (
        f"qmailkit newu: fatal: {home}/users/cdb: would shrink from 5 to 3 entries (40 % "
        "fewer, limit 20 %) (check the sources; --force or a larger --max-shrink writes it "
        "anyway)\n"
    )
    assert (home / "users" / "cdb").read_bytes() == before
    assert newu(home, "--max-shrink", "40").returncode == 0
    assert (home / "users" / "cdb").read_bytes() != before


@pytest.mark.parametrize(
    ("uid", "gid", "message"),
    [
        (
            "99999999999999999999",
            "1",
            "uid 99999999999999999999 is out of range (at most 4294967294)",
        ),
        ("4294967295", "1", "uid 4294967295 is out of range (at most 4294967294)"),
        ("1", "4294967295", "gid 4294967295 is out of range (at most 4294967294)"),
    ],
)
def test_uid_and_gid_past_uid_t_are_refused(home, uid, gid, message):
    # A11: qmail-lspawn reads them with scan_ulong into an int for setuid: it would wrap.
    (home / "users" / "assign").write_bytes(
        b"=joe:joe:1:1:/home/joe:-::\n=x:x:%s:%s:/home/x:-::\n.\n" % (uid.encode(), gid.encode())
    )
    proc = newu(home)
    assert proc.returncode == 111
    assert proc.stderr == (
        f"qmailkit newu: fatal: {home}/users/assign:2: {message} "
        "(qmail-lspawn would wrap it into another account's number)\n"
    )
    assert sorted(os.listdir(home / "users")) == ["assign"]


def test_the_largest_uid_and_gid_are_accepted(home):
    (home / "users" / "assign").write_bytes(b"=x:x:4294967294:4294967294:/home/x:-::\n.\n")
    assert newu(home).returncode == 0


def test_a_directory_where_users_cdb_goes_is_named(home):
    # A18: named, with qmail-newu's single failure code, and nothing written
    (home / "users" / "assign").write_bytes(b"=joe:joe:1:1:/home/joe:-::\n.\n")
    (home / "users" / "cdb").mkdir()
    proc = newu(home)
    assert (proc.returncode, proc.stdout) == (111, "")
    assert proc.stderr == (
        f"qmailkit newu: fatal: {home}/users/cdb: is a directory, not a regular file "
        "(replace it with a regular file)\n"
    )
    assert os.listdir(home / "users" / "cdb") == []
