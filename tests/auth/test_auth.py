"""auth.cdb (mkauth, ``qmailkit auth build|check``): sources, format, safety, tinycdb reads it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import support
from support import need

from qmailkit import auth
from qmailkit.auth.passwords import libcrypt_crypt
from qmailkit.demo.mailtree import MailTree
from qmailkit.errors import InputError, LockBusy

# Hashes made by openssl (an independent crypt implementation):
#   openssl passwd -6 -salt saltsalt secret / -1 -salt abcdefgh hunter2 / -5 -salt pepper letmein
SHA512_SECRET = (
    "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y"
    "77vwPZN.Pq.H91p5hVO1"
)
MD5_HUNTER2 = "$1$abcdefgh$vhxKZ/s1ygZHyCEDPyqtQ/"
SHA256_LETMEIN = "$5$pepper$If6JKmFOzlLMEwzeO2WIXbexlEXIxugXv5fM1Qc1AE/"


def make_tree(root: Path) -> dict[str, Path]:
    """A qmail + vpopmail tree (demo.mailtree) with system account files, in ``root``."""
    mail = MailTree(root)
    lists = root / "lists"
    lists.mkdir()
    mail.assign("=joe:joe:1000:1000:/home/joe:-::")
    com = mail.vpopmail / "domains" / "example.com"
    mail.vdomain(
        "example.com",
        [],
        vpasswd=(
            f"alice:{SHA512_SECRET}:1:0:Alice:{com}/alice:NOQUOTA:secret\n"
            f"Bob:{MD5_HUNTER2}:1:0:Bob:{com}/bob:NOQUOTA\n"
            f"locked:!{SHA512_SECRET}:1:0:Locked:{com}/locked:NOQUOTA\n"
            f"nopass::1:0:No password:{com}/nopass:NOQUOTA\n"
            f"starred:*:1:0:Star:{com}/starred:NOQUOTA\n"
            f"nosmtp:{SHA512_SECRET}:1:2048:No SMTP:{com}/nosmtp:NOQUOTA\n"
        ),
    )
    mail.assign(f"+alias.example-:example.com:89:89:{com}:-::")  # as vaddaliasdomain writes it
    # example.net has only vpasswd.cdb (key name, value the rest of the line), in a
    # hashed directory.
    net = mail.vdomain(
        "example.net", [], vpasswd=False, directory=mail.vpopmail / "domains" / "0" / "example.net"
    )
    write_cdb_with_tinycdb(
        net / "vpasswd.cdb",
        [
            (b"dave", f"{SHA256_LETMEIN}:1:0:Dave:{net}/dave:NOQUOTA".encode()),
        ],
    )
    mail.assign(f"+list-:ezmlm:77:77:{lists}:-::")
    mail.write_assign()
    for line in (
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin",
        "joe:x:1000:1000:Joe:/home/joe:/bin/sh",
        "ann:x:1001:1001:Ann:/home/ann:/bin/sh",
        "gone:x:1002:1002:Gone:/home/gone:/bin/sh",
        "sam:x:70000:70000:Sam:/home/sam:/bin/sh",
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin",
    ):
        mail.account(line)
    shadow = root / "shadow"
    shadow.write_text(
        f"root:{SHA512_SECRET}:19000:0:99999:7:::\n"
        "daemon:*:19000:0:99999:7:::\n"
        f"joe:{MD5_HUNTER2}:19000:0:99999:7:::\n"
        f"ann:{SHA256_LETMEIN}:19000:0:99999:7::20000:\n"
        "gone:!:19000:0:99999:7:::\n"
        f"sam:{SHA512_SECRET}:19000:0:99999:7:::\n"
        "nobody:*:19000:0:99999:7:::\n"
    )
    return {
        "qmail": mail.qmail,
        "passwd": mail.passwd,
        "shadow": shadow,
        "com": com,
        "net": net,
        "vpopmail": mail.vpopmail,
    }


def write_cdb_with_tinycdb(path: Path, records) -> None:
    (cdb_prog,) = need("cdb")
    text = b"".join(b"+%d,%d:%s->%s\n" % (len(k), len(v), k, v) for k, v in records) + b"\n"
    subprocess.run([cdb_prog, "-c", str(path)], input=text, check=True)


def tinycdb_get(path: Path, key: str) -> bytes | None:
    (cdb_prog,) = need("cdb")
    proc = subprocess.run([cdb_prog, "-q", "--", str(path), key], capture_output=True, check=False)
    if proc.returncode == 100:
        return None
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def tinycdb_dump(path: Path) -> list[tuple[bytes, bytes]]:
    (cdb_prog,) = need("cdb")
    out = subprocess.run([cdb_prog, "-d", str(path)], capture_output=True, check=True).stdout
    records, pos = [], 0
    while out[pos : pos + 1] == b"+":
        head, _, _rest = out[pos + 1 :].partition(b":")
        klen, dlen = (int(x) for x in head.split(b","))
        start = pos + 1 + len(head) + 1
        key = out[start : start + klen]
        value = out[start + klen + 2 : start + klen + 2 + dlen]
        records.append((key, value))
        pos = start + klen + 2 + dlen + 1
    return records


def run_cli(*args: str, stdin: str | None = None, prog: str = "qmailkit"):
    return support.run(*args, prog=prog, input=stdin)


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path)


VPOP_LOGINS = {
    "alice@alias.example": SHA512_SECRET,
    "alice@example.com": SHA512_SECRET,
    "bob@alias.example": MD5_HUNTER2,
    "bob@example.com": MD5_HUNTER2,
    "dave@example.net": SHA256_LETMEIN,
}


# --------------------------------------------------------------------------- collecting


def test_vpopmail_logins(tree):
    found = auth.collect(auth.Sources(qmail_home=tree["qmail"]))
    assert {(k.decode(), v.decode()) for k, v in found.records()} == set(VPOP_LOGINS.items())
    # Sorted by key.
    assert [k for k, _ in found.records()] == sorted(k for k, _ in found.records())
    skipped = {(s.login, s.reason) for s in found.skipped}
    assert skipped == {
        (f"{u}@{d}", why)
        for d in ("example.com", "alias.example")
        for u, why in [
            ("locked", "locked or empty password hash"),
            ("nopass", "locked or empty password hash"),
            ("starred", "locked or empty password hash"),
            ("nosmtp", "vpopmail NO_SMTP flag set"),
        ]
    }
    assert any("lists has no vpasswd, vpasswd.cdb or vdelivermail" in n for n in found.notes)
    source = {login.login: login.source for login in found.logins}
    assert source["alice@example.com"] == f"{tree['com']}/vpasswd:1"
    assert source["dave@example.net"] == f"{tree['net']}/vpasswd.cdb"


def test_system_accounts_in_uid_window(tree):
    found = auth.collect(
        auth.Sources(
            qmail_home=tree["qmail"], vpopmail=False, shadow=tree["shadow"], passwd=tree["passwd"]
        )
    )
    # root (uid 0), daemon (uid 1), sam (70000) and nobody (65534) are outside 500-65000;
    # gone is locked; ann's account expiry (day 20000) becomes PASSWORD_EXPIRES.
    assert found.records() == [
        (b"ann", f'{SHA256_LETMEIN},PASSWORD_EXPIRES="1728000000"'.encode()),
        (b"joe", MD5_HUNTER2.encode()),
    ]
    skipped = {s.login: s.reason for s in found.skipped}
    assert skipped["gone"] == "locked or empty password hash"
    assert skipped["root"].endswith("with a uid in 500-65000")
    assert set(skipped) == {"root", "daemon", "gone", "sam", "nobody"}


def test_uid_window_options_never_uid_zero(tree):
    found = auth.collect(
        auth.Sources(
            qmail_home=tree["qmail"],
            vpopmail=False,
            shadow=tree["shadow"],
            passwd=tree["passwd"],
            min_uid=0,
            max_uid=100000,
        )
    )
    assert [k for k, _ in found.records()] == [b"ann", b"joe", b"sam"]


def test_exclusions(tree):
    found = auth.collect(
        auth.Sources(
            qmail_home=tree["qmail"],
            shadow=tree["shadow"],
            passwd=tree["passwd"],
            exclude=["@alias.example", "Bob@Example.com", "joe"],
        )
    )
    assert [k for k, _ in found.records()] == [b"alice@example.com", b"ann", b"dave@example.net"]
    skipped = {(s.login, s.reason) for s in found.skipped}
    assert ("@alias.example", "domain excluded") in skipped
    assert ("bob@example.com", "excluded") in skipped
    assert ("joe", "excluded") in skipped


def test_settings_file(tree, tmp_path):
    settings = tmp_path / "auth-settings"
    settings.write_text(
        "# per-login settings\n"
        "@example.com  MAXRCPT=50 DATABYTES=1000\n"
        'alice@example.com  DATABYTES=2000 QMAILSMTPD_LOG_MAIL="1"  # bigger\n'
        "joe  PASSWORD_EXPIRES=2027-01-01 RELAYREJ=\n"
        "ann  PASSWORD_EXPIRES=2026-06-01T12:00:00+02:00\n"
        "nobody@example.org  MAXRCPT=1\n"
    )
    found = auth.collect(
        auth.Sources(
            qmail_home=tree["qmail"],
            shadow=tree["shadow"],
            passwd=tree["passwd"],
            settings=settings,
        )
    )
    records = dict(found.records())
    # Domain settings first, the login's own override them in place.
    assert records[b"alice@example.com"] == (
        f'{SHA512_SECRET},MAXRCPT="50",DATABYTES="2000",QMAILSMTPD_LOG_MAIL="1"'.encode()
    )
    assert records[b"bob@example.com"] == f'{MD5_HUNTER2},MAXRCPT="50",DATABYTES="1000"'.encode()
    assert records[b"bob@alias.example"] == MD5_HUNTER2.encode()
    assert records[b"joe"] == f'{MD5_HUNTER2},PASSWORD_EXPIRES="1798761600",RELAYREJ=""'.encode()
    # The settings file wins over the shadow expiry date.
    assert records[b"ann"] == f'{SHA256_LETMEIN},PASSWORD_EXPIRES="1780308000"'.encode()
    assert f"{settings}:6: nobody@example.org matches no login" in found.notes


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("joe\n", 1, "no VAR=value after 'joe'"),
        ("# c\njoe DATA BYTES=1\n", 2, "'DATA' is not VAR=value"),
        ("joe 1X=2\n", 1, "'1X=2' is not VAR=value"),
        ('joe X="a,b"\n', 1, "the value of X contains"),
        ("joe X='say \"hi\"'\n", 1, "the value of X contains"),
        ('joe X="unterminated\n', 1, "cannot split the line"),
        ("joe PASSWORD_EXPIRES=tomorrow\n", 1, "PASSWORD_EXPIRES 'tomorrow' is not"),
        ("X=1 Y=2\n", 1, "not a login or @domain"),
        ("@ X=1\n", 1, "is neither a login nor @domain"),
    ],
)
def test_bad_settings(text, line, message):
    with pytest.raises(InputError) as exc:
        auth.parse_settings(text, "/etc/auth-settings")
    assert exc.value.path == "/etc/auth-settings" and exc.value.line == line
    assert message in exc.value.message


def test_bad_vpasswd_line_names_file_and_line(tree):
    with open(tree["com"] / "vpasswd", "a") as fh:
        fh.write("broken:line\n")
    with pytest.raises(InputError) as exc:
        auth.collect(auth.Sources(qmail_home=tree["qmail"]))
    assert str(exc.value).startswith(f"{tree['com']}/vpasswd:7: malformed vpasswd line")


def test_missing_assign_means_no_vpopmail(tmp_path):
    found = auth.collect(auth.Sources(qmail_home=tmp_path))
    assert found.logins == [] and found.notes == [
        f"{tmp_path}/users/assign: missing, so no vpopmail domains"
    ]


# --------------------------------------------------------------------------- crypt


@pytest.mark.parametrize(
    ("hash_", "good", "bad"),
    [
        (SHA512_SECRET, "secret", "Secret"),
        (MD5_HUNTER2, "hunter2", "hunter3"),
        (SHA256_LETMEIN, "letmein", ""),
    ],
)
def test_verify_against_openssl_hashes(hash_, good, bad):
    assert auth.verify(good, hash_)
    assert not auth.verify(bad, hash_)


def test_locked_hashes_never_match():
    assert not auth.verify("secret", "!" + SHA512_SECRET)
    assert not auth.verify("", "")
    assert not auth.verify("x", "*")
    assert auth.crypt("x", "!nonsense") is None


def test_parse_value():
    entry = auth.parse_value("joe", b'$1$x$y,A="1",B=""')
    assert entry.hash == "$1$x$y" and entry.env == (("A", "1"), ("B", ""))
    with pytest.raises(InputError, match="is not HASH"):
        auth.parse_value("joe", b"$1$x$y,A=1")


# --------------------------------------------------------------------------- writing


def test_write_mode_0640_read_back_by_tinycdb(tree, tmp_path):
    found = auth.collect(
        auth.Sources(qmail_home=tree["qmail"], shadow=tree["shadow"], passwd=tree["passwd"])
    )
    target = tree["qmail"] / "control" / "auth.cdb"
    result = auth.write_cdb(target, found.records())
    assert result.written and result.reason == "created" and result.count == 7
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert tinycdb_get(target, "alice@example.com") == SHA512_SECRET.encode()
    assert tinycdb_get(target, "joe") == MD5_HUNTER2.encode()
    assert tinycdb_get(target, "ann") == f'{SHA256_LETMEIN},PASSWORD_EXPIRES="1728000000"'.encode()
    assert tinycdb_get(target, "root") is None
    assert tinycdb_get(target, "locked@example.com") is None
    assert tinycdb_dump(target) == found.records()
    assert sorted(os.listdir(target.parent)) == [".auth.cdb.lock", "auth.cdb"]


def test_unchanged_leaves_file_and_mtime(tree):
    records = auth.collect(auth.Sources(qmail_home=tree["qmail"])).records()
    target = tree["qmail"] / "control" / "auth.cdb"
    auth.write_cdb(target, records)
    os.utime(target, (1_000_000_000, 1_000_000_000))
    inode = target.stat().st_ino
    result = auth.write_cdb(target, list(reversed(records)), only_if_changed=True)
    assert not result.written and result.reason == "unchanged"
    assert target.stat().st_mtime == 1_000_000_000 and target.stat().st_ino == inode
    # Without only_if_changed it is rewritten.
    assert auth.write_cdb(target, records).written


def test_unchanged_records_but_wrong_mode_is_fixed(tree):
    records = auth.collect(auth.Sources(qmail_home=tree["qmail"])).records()
    target = tree["qmail"] / "control" / "auth.cdb"
    auth.write_cdb(target, records)
    os.chmod(target, 0o644)
    result = auth.write_cdb(target, records, only_if_changed=True)
    assert result.written and result.reason.startswith("rewritten")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_changed_records_replace(tree):
    records = auth.collect(auth.Sources(qmail_home=tree["qmail"])).records()
    target = tree["qmail"] / "control" / "auth.cdb"
    auth.write_cdb(target, records)
    result = auth.write_cdb(
        target, records + [(b"zed@example.com", b"$1$a$b")], only_if_changed=True
    )
    assert result.written and result.reason == "replaced" and result.previous == 5
    assert tinycdb_get(target, "zed@example.com") == b"$1$a$b"


def test_empty_refused_unless_forced(tmp_path):
    target = tmp_path / "auth.cdb"
    with pytest.raises(InputError, match="no logins found: an empty auth.cdb fails every AUTH"):
        auth.write_cdb(target, [])
    assert not target.exists()
    assert auth.write_cdb(target, [], force=True).written
    assert tinycdb_dump(target) == []


def test_shrink_guard(tmp_path):
    target = tmp_path / "auth.cdb"
    ten = [(b"user%d" % i, b"$1$a$b") for i in range(10)]
    auth.write_cdb(target, ten)
    before = target.read_bytes()
    with pytest.raises(InputError) as exc:
        auth.write_cdb(target, ten[:7])
    assert exc.value.message == "would shrink from 10 to 7 logins (30 % fewer, limit 20 %)"
    assert target.read_bytes() == before
    assert auth.write_cdb(target, ten[:8]).written  # 20 % is allowed
    assert auth.write_cdb(target, ten[:4], max_shrink=0.5).written
    assert auth.write_cdb(target, ten[:1], force=True).written


def test_world_writable_directory_refused(tmp_path):
    public = tmp_path / "public"
    public.mkdir()
    public.chmod(0o777)
    with pytest.raises(InputError) as exc:
        auth.write_cdb(public / "auth.cdb", [(b"a", b"$1$a$b")])
    assert exc.value.path == str(public) and "world-writable" in exc.value.message
    assert os.listdir(public) == []


def test_mode_for_others_refused(tmp_path):
    with pytest.raises(InputError, match="gives other users access"):
        auth.write_cdb(tmp_path / "auth.cdb", [(b"a", b"$1$a$b")], mode=0o644)
    assert os.listdir(tmp_path) == []
    auth.write_cdb(tmp_path / "auth.cdb", [(b"a", b"$1$a$b")], mode=0o600)
    assert stat.S_IMODE((tmp_path / "auth.cdb").stat().st_mode) == 0o600


def test_concurrent_run_locked_out(tmp_path):
    from qmailkit.fsutil import locked

    target = tmp_path / "auth.cdb"
    with locked(tmp_path / ".auth.cdb.lock"), pytest.raises(LockBusy) as exc:
        auth.write_cdb(target, [(b"a", b"$1$a$b")])
    assert "another mkauth run holds the lock" in str(exc.value)
    assert not target.exists()


def test_corrupt_old_file_needs_force(tmp_path):
    target = tmp_path / "auth.cdb"
    target.write_bytes(b"garbage")
    with pytest.raises(InputError) as exc:
        auth.write_cdb(target, [(b"a", b"$1$a$b")])
    assert "use --force" in str(exc.value)
    assert target.read_bytes() == b"garbage"
    assert auth.write_cdb(target, [(b"a", b"$1$a$b")], force=True).written


# --------------------------------------------------------------------------- commands


def test_mkauth_command_end_to_end(tree, tmp_path):
    target = tree["qmail"] / "control" / "auth.cdb"
    args = [
        "--qmail-home",
        str(tree["qmail"]),
        "--shadow",
        str(tree["shadow"]),
        "--passwd",
        str(tree["passwd"]),
        "-c",
        str(target),
    ]
    proc = run_cli(*args, prog="mkauth")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{target}: created: 7 logins\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert tinycdb_get(target, "bob@example.com") == MD5_HUNTER2.encode()
    mtime = target.stat().st_mtime_ns
    proc = run_cli("auth", "build", *args)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{target}: unchanged (7 logins), left alone\n"
    assert target.stat().st_mtime_ns == mtime


def test_build_prints_lines_and_cdbmake(tree):
    (cdb_prog,) = need("cdb")
    base = ["auth", "build", "--qmail-home", str(tree["qmail"]), "--exclude", "@alias.example"]
    proc = run_cli(*base)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"alice@example.com {SHA512_SECRET}\nbob@example.com {MD5_HUNTER2}\n"
        f"dave@example.net {SHA256_LETMEIN}\n"
    )
    proc = run_cli(*base, "-m")
    made = tree["qmail"] / "from-cdbmake.cdb"
    subprocess.run([cdb_prog, "-c", str(made)], input=proc.stdout.encode(), check=True)
    assert tinycdb_get(made, "dave@example.net") == SHA256_LETMEIN.encode()


def test_build_debug_says_what_was_left_out(tree):
    proc = run_cli(
        "auth",
        "build",
        "-d",
        "--qmail-home",
        str(tree["qmail"]),
        "--shadow",
        str(tree["shadow"]),
        "--passwd",
        str(tree["passwd"]),
    )
    assert proc.returncode == 0
    err = proc.stderr.splitlines()
    assert (
        f"skipped: locked@example.com (locked or empty password hash) from {tree['com']}/vpasswd:3"
    ) in err
    assert (
        f"skipped: nosmtp@example.com (vpopmail NO_SMTP flag set) from {tree['com']}/vpasswd:6"
        in err
    )
    assert f"skipped: gone (locked or empty password hash) from {tree['shadow']}:5" in err
    assert f"login: alice@example.com from {tree['com']}/vpasswd:1" in err


def test_build_errors_write_nothing(tree, tmp_path):
    target = tree["qmail"] / "control" / "auth.cdb"
    (tree["qmail"] / "users" / "assign").write_text("=joe:joe:1000:1000:/home/joe:-::\n")
    proc = run_cli("auth", "build", "--qmail-home", str(tree["qmail"]), "-c", str(target))
    assert proc.returncode == 100
    assert proc.stderr == (
        f"qmailkit auth: fatal: {tree['qmail']}/users/assign:1: missing the "
        'terminating line "." (users/assign must end with a line holding a '
        "single dot)\n"
    )
    assert os.listdir(target.parent) == []


def test_build_empty_refused_by_command(tmp_path):
    target = tmp_path / "auth.cdb"
    proc = run_cli("auth", "build", "--qmail-home", str(tmp_path), "-c", str(target))
    assert proc.returncode == 100
    assert "no logins found: an empty auth.cdb fails every AUTH" in proc.stderr
    assert not target.exists()


def test_build_world_writable_refused_before_reading(tmp_path):
    public = tmp_path / "public"
    public.mkdir()
    public.chmod(0o1777)
    proc = run_cli(
        "auth", "build", "--qmail-home", str(tmp_path / "nowhere"), "-c", str(public / "auth.cdb")
    )
    assert proc.returncode == 100
    assert proc.stderr.startswith(f"qmailkit auth: fatal: {public}: directory is world-writable")
    assert os.listdir(public) == []


def test_check_command(tree, tmp_path):
    target = tree["qmail"] / "control" / "auth.cdb"
    settings = tmp_path / "settings"
    settings.write_text("bob@example.com PASSWORD_EXPIRES=1000000000\nalice@example.com X=1\n")
    found = auth.collect(auth.Sources(qmail_home=tree["qmail"], settings=settings))
    auth.write_cdb(target, found.records())
    check = ["auth", "check", "--cdb", str(target)]
    proc = run_cli(*check, "alice@example.com", stdin="secret\n")
    assert (proc.returncode, proc.stdout) == (
        0,
        (
            f"alice@example.com: present in {target}; "
            'sets X="1"\nalice@example.com: password matches\n'
        ),
    )
    proc = run_cli(*check, "alice@example.com", stdin="wrong\n")
    assert proc.returncode == 1
    assert proc.stdout.endswith("alice@example.com: password does not match\n")
    proc = run_cli(*check, "bob@example.com", stdin="hunter2\n")
    assert proc.returncode == 1
    assert proc.stdout.endswith(
        "password matches, but it expired at 2001-09-09 01:46:40 UTC (AUTH fails)\n"
    )
    proc = run_cli(*check, "Alice@example.com", stdin="secret\n")
    assert (proc.returncode, proc.stdout) == (100, f"Alice@example.com: not in {target}\n")
    proc = run_cli(*check, "--no-password", "dave@example.net")
    assert (proc.returncode, proc.stdout) == (0, f"dave@example.net: present in {target}\n")


def test_check_reads_password_with_getpass_on_a_terminal(tree, monkeypatch, capsys):
    import argparse

    from qmailkit.cli import auth as cli_auth

    target = tree["qmail"] / "control" / "auth.cdb"
    auth.write_cdb(target, auth.collect(auth.Sources(qmail_home=tree["qmail"])).records())
    prompts = []

    class Tty:
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stdin", Tty())
    monkeypatch.setattr("getpass.getpass", lambda prompt: prompts.append(prompt) or "letmein")
    args = argparse.Namespace(cdb=str(target), user="dave@example.net", no_password=False)
    assert cli_auth._check(args) == 0
    assert prompts == ["Password for dave@example.net: "]
    assert capsys.readouterr().out.endswith("dave@example.net: password matches\n")


def test_check_missing_cdb(tmp_path):
    proc = run_cli("auth", "check", "--cdb", str(tmp_path / "none.cdb"), "--no-password", "x")
    assert proc.returncode == 111
    assert str(tmp_path / "none.cdb") in proc.stderr


def test_owner_and_group(tree):
    import grp

    target = tree["qmail"] / "control" / "auth.cdb"
    group = "mail" if os.geteuid() == 0 else str(os.getgid())
    gid = grp.getgrnam(group).gr_gid if not group.isdigit() else int(group)
    proc = run_cli(
        "auth", "build", "--qmail-home", str(tree["qmail"]), "-c", str(target), "--group", group
    )
    assert proc.returncode == 0, proc.stderr
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), gid, 0o640)
    proc = run_cli(
        "auth",
        "build",
        "--qmail-home",
        str(tree["qmail"]),
        "-c",
        str(target),
        "--owner",
        "no-such-user-here",
    )
    assert proc.returncode == 100
    assert proc.stderr.endswith(
        "qmailkit auth build: usage: argument --owner: no such user: 'no-such-user-here'\n"
    )
    # USER:GROUP in one option, as chown(1) spells it
    proc = run_cli(
        "auth",
        "build",
        "--qmail-home",
        str(tree["qmail"]),
        "-c",
        str(target),
        "--owner",
        f"{os.geteuid()}:{gid}",
        "--force",
    )
    assert proc.returncode == 0, proc.stderr
    assert (target.stat().st_uid, target.stat().st_gid) == (os.geteuid(), gid)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        # A14: a gid past gid_t was an OverflowError traceback from chown
        (
            "--group",
            "99999999999",
            ("argument --group: gid 99999999999 is out of range (at most 4294967294)"),
        ),
        (
            "--owner",
            "4294967295",
            ("argument --owner: uid 4294967295 is out of range (at most 4294967294)"),
        ),
        (
            "--owner",
            ":",
            ("argument --owner: ':' names no user or group (give USER, USER:GROUP or :GROUP)"),
        ),
        # negative numbers were looked up as names ("no such user: '-5'")
        ("--owner", "-5", "argument --owner: uid -5 is out of range (at least 0)"),
        ("--group", "-1", "argument --group: gid -1 is out of range (at least 0)"),
        ("--owner", "0:-2", "argument --owner: gid -2 is out of range (at least 0)"),
        # A17: setuid and sticky bits were accepted
        (
            "--mode",
            "7770",
            (
                "argument --mode: '7770' sets the setuid, setgid or sticky bit; give "
                "permission bits only (at most 0777)"
            ),
        ),
        (
            "--mode",
            "-1",
            (
                "argument --mode: '-1' is not an octal file mode (give octal digits, "
                "e.g. 644 or 0640)"
            ),
        ),
    ],
)
def test_bad_owner_group_or_mode_is_a_usage_error(tree, option, value, message):
    target = tree["qmail"] / "control" / "auth.cdb"
    proc = run_cli(
        "auth", "build", "--qmail-home", str(tree["qmail"]), "-c", str(target), option, value
    )
    assert proc.returncode == 100
    assert proc.stderr.endswith(f"qmailkit auth build: usage: {message}\n")
    assert "Traceback" not in proc.stderr
    assert not target.exists()


def test_mode_option_refuses_bits_for_others(tree):
    target = tree["qmail"] / "control" / "auth.cdb"
    proc = run_cli(
        "auth", "build", "--qmail-home", str(tree["qmail"]), "-c", str(target), "--mode", "0644"
    )
    assert proc.returncode == 100
    assert "mode 0644 gives other users access to password hashes" in proc.stderr
    assert not target.exists()


def test_installed_mkauth_alias():
    # scripts/test installs the package (pip -e), which creates the alias next to python.
    mkauth = Path(sys.executable).parent / "mkauth"
    proc = subprocess.run([str(mkauth), "--help"], capture_output=True, text=True, check=True)
    assert proc.stdout.startswith("usage: mkauth ")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--max-shrink", "200"], "argument --max-shrink: "),
        (["--min-uid", "x"], "argument --min-uid: not a user id: 'x' (give a number, e.g. 500)"),
    ],
)
def test_a_usage_error_of_mkauth_exits_100_like_qmailkit_auth_build(tree, args, message):
    target = tree["qmail"] / "control" / "auth.cdb"
    proc = run_cli("--qmail-home", str(tree["qmail"]), "-c", str(target), *args, prog="mkauth")
    assert proc.returncode == 100, proc.stderr
    assert f"mkauth: usage: {message}" in proc.stderr
    assert not target.exists()


def test_missing_libcrypt_is_a_clear_error(monkeypatch):
    import ctypes
    import ctypes.util

    from qmailkit.errors import QmailkitError

    def no_lib(name, *a, **k):
        raise OSError(f"{name}: cannot open shared object file")

    # libcrypt is loaded once: forget it before (and after) the library goes missing.
    libcrypt_crypt.cache_clear()
    monkeypatch.setattr(ctypes, "CDLL", no_lib)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    try:
        with pytest.raises(QmailkitError) as exc:
            auth.verify("secret", SHA512_SECRET)
    finally:
        libcrypt_crypt.cache_clear()
    assert str(exc.value) == (
        "cannot load libcrypt (libcrypt.so.1) to check passwords "
        "(install libcrypt1 (Debian/Ubuntu) or libxcrypt)"
    )
    assert exc.value.exit_code == 111


def test_settings_match_logins_without_regard_to_case(tmp_path):
    passwd, shadow, settings = tmp_path / "passwd", tmp_path / "shadow", tmp_path / "settings"
    passwd.write_text("Kim:x:1500:1500:Kim:/home/kim:/bin/sh\n")
    shadow.write_text(f"Kim:{MD5_HUNTER2}:19000::::::\n")
    settings.write_text("KIM MAXRCPT=5\n")
    found = auth.collect(
        auth.Sources(
            qmail_home=tmp_path, vpopmail=False, shadow=shadow, passwd=passwd, settings=settings
        )
    )
    # The key keeps the login's own spelling; the settings still apply.
    assert found.records() == [(b"Kim", f'{MD5_HUNTER2},MAXRCPT="5"'.encode())]


def test_shrink_guard_from_the_command(tree):
    target = tree["qmail"] / "control" / "auth.cdb"
    base = ["auth", "build", "--qmail-home", str(tree["qmail"]), "-c", str(target)]
    assert run_cli(*base).returncode == 0
    before = target.read_bytes()
    proc = run_cli(*base, "--exclude", "@alias.example")
    assert proc.returncode == 100
    assert proc.stderr == (
        f"qmailkit auth: fatal: {target}: would shrink from 5 to 3 logins "
        "(40 % fewer, limit 20 %) (check the sources; --force or a larger "
        "--max-shrink writes it anyway)\n"
    )
    assert target.read_bytes() == before
    proc = run_cli(*base, "--exclude", "@alias.example", "--max-shrink", "40%")
    assert (proc.returncode, proc.stdout) == (0, f"{target}: replaced: 3 logins, was 5\n")
    proc = run_cli(*base, "--max-shrink", "120")
    assert proc.returncode == 100 and "not between 0 and 100: '120'" in proc.stderr


VUSERINFO_OUTPUT = f"""\
------------------------------------------
name:   erin
passwd: {SHA512_SECRET}
clear passwd: secret
comment/gecos: Erin
uid:    1
gid:    0
flags:  0
gecos: Erin
limits: No user limits set.
dir:       /home/vpopmail/domains/sql.example/erin
quota:     NOQUOTA
usage:     NOQUOTA
last auth: Never logged in
------------------------------------------
name:   Frank
passwd: {MD5_HUNTER2}
comment/gecos: Frank
uid:    1
gid:    0
flags:  2048
limits:
        smtp access is closed (*)
        * = set by domain-wide limits
dir:       /home/vpopmail/domains/sql.example/frank
------------------------------------------
name:   gina
passwd: !{MD5_HUNTER2}
uid:    1
gid:    0
dir:       /home/vpopmail/domains/sql.example/gina
"""


def make_sql_domain(tree: dict[str, Path], output: str, exit_code: int = 0) -> Path:
    """A SQL-backed vpopmail domain: no vpasswd, a vdelivermail .qmail-default, a vuserinfo.

    Its programs are in the vpopmail user's home of the tree's passwd file."""
    vphome = tree["vpopmail"]
    domain_dir = vphome / "domains" / "sql.example"
    domain_dir.mkdir(parents=True)
    (domain_dir / ".qmail-default").write_text(
        f"| {vphome}/bin/vdelivermail '' bounce-no-mailbox\n"
    )
    (vphome / "bin").mkdir()
    (vphome / "output").write_text(output)
    script = vphome / "bin" / "vuserinfo"
    script.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = -D ] && [ "$2" = sql.example ] || {{ echo "usage: $*" >&2; exit 1; }}\n'
        f"cat {vphome}/output\n"
        f"exit {exit_code}\n"
    )
    script.chmod(0o755)
    assign = tree["qmail"] / "users" / "assign"
    assign.write_text(
        assign.read_text().replace(".\n", f"+sql.example-:sql.example:89:89:{domain_dir}:-::\n.\n")
    )
    return vphome


def test_sql_vpopmail_domain_through_vuserinfo(tree, tmp_path):
    vphome = make_sql_domain(tree, VUSERINFO_OUTPUT)
    found = auth.collect(
        auth.Sources(
            qmail_home=tree["qmail"],
            vpopmail_home=vphome,
            exclude=["@alias.example", "@example.com"],
        )
    )
    assert found.records() == [
        (b"dave@example.net", SHA256_LETMEIN.encode()),
        (b"erin@sql.example", SHA512_SECRET.encode()),
    ]
    skipped = {(s.login, s.reason, s.source) for s in found.skipped}
    what = f"{vphome}/bin/vuserinfo -D sql.example"
    assert ("frank@sql.example", "vpopmail NO_SMTP flag set", what) in skipped
    assert ("gina@sql.example", "locked or empty password hash", what) in skipped


def test_sql_vuserinfo_found_through_passwd(tree, tmp_path):
    make_sql_domain(tree, VUSERINFO_OUTPUT)  # vuserinfo in ~vpopmail of the passwd file
    proc = run_cli(
        "auth",
        "build",
        "--qmail-home",
        str(tree["qmail"]),
        "--passwd",
        str(tree["passwd"]),
        "--exclude",
        "@alias.example",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == f"erin@sql.example {SHA512_SECRET}"


def test_sql_vuserinfo_failure_writes_nothing(tree, tmp_path):
    vphome = make_sql_domain(tree, "", exit_code=111)
    target = tree["qmail"] / "control" / "auth.cdb"
    proc = run_cli(
        "auth",
        "build",
        "--qmail-home",
        str(tree["qmail"]),
        "--vpopmail-home",
        str(vphome),
        "-c",
        str(target),
    )
    assert proc.returncode == 111
    assert proc.stderr == (
        f"qmailkit auth: fatal: {vphome}/bin/vuserinfo -D sql.example failed with exit code 111\n"
    )
    assert not target.exists()


def test_sql_domain_without_vpopmail_user(tree, tmp_path):
    make_sql_domain(tree, VUSERINFO_OUTPUT)
    passwd = tree["passwd"]
    passwd.write_text("".join(line for line in passwd.open() if not line.startswith("vpopmail:")))
    with pytest.raises(InputError) as exc:
        auth.collect(auth.Sources(qmail_home=tree["qmail"], passwd=tree["passwd"]))
    assert str(exc.value) == (
        f"no vpopmail user in {tree['passwd']} to find vpopmail's home (give --vpopmail-home)"
    )


def test_one_temp_file_while_writing_and_stale_nested_ones_cleaned(tmp_path, monkeypatch):
    # A13: the staged copy used to be written through a second temp, and a kill -9
    # left ..auth.cdb.qmailkit-tmp.PID.qmailkit-tmp.PID behind for good.
    from qmailkit.fsutil import TMP_MARK

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    leftover = tmp_path / f"..auth.cdb{TMP_MARK}{dead}{TMP_MARK}{dead}"
    leftover.write_bytes(b"x" * 4096)
    seen = []
    real_fsync = os.fsync

    def fsync(fd):
        seen.append(sorted(n for n in os.listdir(tmp_path) if TMP_MARK in n))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    auth.write_cdb(tmp_path / "auth.cdb", [(b"a", b"$1$a$b")])
    assert seen[0] == [f".auth.cdb{TMP_MARK}{os.getpid()}"]
    assert sorted(os.listdir(tmp_path)) == [".auth.cdb.lock", "auth.cdb"]


def test_mkauth_killed_while_writing_leaves_one_temp_that_the_next_run_removes(tmp_path):
    # A13: 83 kill -9s of a real mkauth -c left 10 nested temp files (166 MB) for good.
    # Killed at moments spread over the writing (once the temp exists): never more than
    # the one temp of the killed run, and a later run leaves nothing but the lock.
    from qmailkit.fsutil import TMP_MARK

    logins = 60_000
    (tmp_path / "passwd").write_text(
        "".join(f"u{i}:x:{1000 + i % 50000}:100::/home/u{i}:/bin/sh\n" for i in range(logins))
    )
    (tmp_path / "shadow").write_text(
        "".join(f"u{i}:{SHA512_SECRET}:19000:0:99999:7:::\n" for i in range(logins))
    )
    control = tmp_path / "control"
    control.mkdir()
    target = control / "auth.cdb"
    mkauth = [
        str(Path(sys.executable).parent / "mkauth"),
        "--no-vpopmail",
        "--passwd",
        str(tmp_path / "passwd"),
        "--shadow",
        str(tmp_path / "shadow"),
        "--min-uid",
        "1000",
        "-c",
        str(target),
    ]

    def temps() -> list[str]:
        return sorted(name for name in os.listdir(control) if TMP_MARK in name)

    killed_while_writing = 0
    for delay in (0.0, 0.003, 0.01, 0.03):
        target.unlink(missing_ok=True)  # so that every run writes the whole file again
        proc = subprocess.Popen(mkauth, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            own = f".auth.cdb{TMP_MARK}{proc.pid}"
            deadline = time.monotonic() + 60
            while own not in temps() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)  # a tight loop: the writing lasts a fraction of a second
            time.sleep(delay)
        finally:
            proc.kill()
            proc.wait()
        left = temps()
        assert set(left) <= {own}, left
        killed_while_writing += left == [own]
    assert killed_while_writing >= 2  # the kills did land while the file was being written
    target.unlink(missing_ok=True)
    done = subprocess.run(mkauth, capture_output=True, text=True, check=False, timeout=120)
    assert (done.returncode, done.stdout) == (0, f"{target}: created: {logins} logins\n")
    assert sorted(os.listdir(control)) == [".auth.cdb.lock", "auth.cdb"]


def test_check_with_standard_input_closed_and_no_terminal(tree):
    # A14: getpass fell back to sys.stdin, which is None: an AttributeError traceback
    target = tree["qmail"] / "control" / "auth.cdb"
    auth.write_cdb(target, auth.collect(auth.Sources(qmail_home=tree["qmail"])).records())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "qmailkit",
            "auth",
            "check",
            "--cdb",
            str(target),
            "dave@example.net",
        ],
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: os.close(0),
        start_new_session=True,
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 111
    assert proc.stderr == (
        "qmailkit auth: fatal: standard input is closed and no password "
        "can be read (give it on standard input, or use --no-password)\n"
    )


@pytest.mark.parametrize(
    ("stdin", "code", "err"),
    [
        (b"\xff\xfe not utf-8\n", 1, ""),  # any bytes are a password; this one does not match
        (
            None,
            100,
            ("qmailkit auth: fatal: the password on standard input is longer than 65536 bytes\n"),
        ),  # /dev/zero: never slurped
    ],
)
def test_check_reads_a_bounded_line_of_bytes(tree, stdin, code, err):
    target = tree["qmail"] / "control" / "auth.cdb"
    auth.write_cdb(target, auth.collect(auth.Sources(qmail_home=tree["qmail"])).records())
    cmd = [
        sys.executable,
        "-m",
        "qmailkit",
        "auth",
        "check",
        "--cdb",
        str(target),
        "dave@example.net",
    ]
    if stdin is None:
        with open("/dev/zero", "rb") as zero:
            proc = subprocess.run(cmd, stdin=zero, capture_output=True, check=False, timeout=30)
    else:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False, timeout=30)
    assert (proc.returncode, proc.stderr.decode()) == (code, err)


def test_build_c_naming_a_directory_says_so(tree):
    # A18: it said "cannot read cdb: No such device", with no file name
    target = tree["qmail"] / "control" / "auth.cdb"
    target.mkdir()
    proc = run_cli("auth", "build", "--qmail-home", str(tree["qmail"]), "-c", str(target))
    assert proc.returncode == 111
    assert proc.stderr == (
        f"qmailkit auth: fatal: {target}: is a directory, not a regular "
        "file (replace it with a regular file)\n"
    )
    assert sorted(os.listdir(target.parent)) == [".auth.cdb.lock", "auth.cdb"]
