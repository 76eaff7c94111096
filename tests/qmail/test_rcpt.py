"""validrcptto.cdb builds end to end: mkvalidrcptto / qmailkit rcpt, read back with tinycdb."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.rcpt import VDELIVER_CATCHALL, Tree, cdb_dump_keys, cdb_query, mtime_ns

from qmailkit import cdb, rcpt
from qmailkit.errors import InputError, LockBusy
from qmailkit.qmail.recipients import Options

MKVALIDRCPTTO = Path(sys.executable).parent / "mkvalidrcptto"


@pytest.fixture
def tree(tmp_path) -> Tree:
    t = Tree(tmp_path / "t")
    t.ctl("rcpthosts", "example.com", "bounce.example", "catch.example")
    t.ctl("locals", "example.com")
    t.ctl("virtualdomains", "bounce.example:bounce.example", "catch.example:catch.example")
    t.user("bob", 1000, {".qmail-spam": "|bouncesaying 'no'\n"})
    t.alias_file(".qmail-postmaster")
    t.vdomain(
        "bounce.example",
        ["alice", "ann", "amy", "al"],
        files={".qmail-list": "|ezmlm-send list\n", ".qmail-list-default": "|ezmlm-manage list\n"},
    )
    t.vdomain("catch.example", ["carol"], default=VDELIVER_CATCHALL)
    t.write_assign()
    return t


ALL = {
    "bob@example.com": b"",
    "bob-spam@example.com": b"-",
    "postmaster@example.com": b"",
    "alice@bounce.example": b"",
    "ann@bounce.example": b"",
    "amy@bounce.example": b"",
    "al@bounce.example": b"",
    "list@bounce.example": b"",
    "list-default@bounce.example": b"",
    "@catch.example": b"",
}


def run(tree: Tree, *args: str, prog: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = prog or [sys.executable, "-m", "qmailkit", "rcpt", "build"]
    # A timeout: a FIFO read by mistake would hang the run for good.
    return subprocess.run(
        [
            *cmd,
            "--qmail-home",
            str(tree.qmail),
            "--passwd",
            str(tree.passwd),
            "--vpopmail-home",
            str(tree.vpopmail),
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_c_writes_a_cdb_tinycdb_reads(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    done = run(tree, "-q", "-c", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"qmailkit rcpt build: {out}: wrote 10 keys\n"
    assert done.stderr == ""
    assert cdb_dump_keys(out) == ALL
    assert cdb_query(out, "bob-spam@example.com") == b"-"
    assert cdb_query(out, "nobody@example.com") is None
    assert os.stat(out).st_mode & 0o777 == 0o644


def test_c_leaves_an_unchanged_file_alone_and_rewrites_a_changed_one(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    assert run(tree, "-q", "-c", str(out)).returncode == 0
    os.utime(out, ns=(1_000_000_000, 1_000_000_000))
    done = run(tree, "-q", "-c", str(out))
    assert done.returncode == 0
    assert done.stdout == f"qmailkit rcpt build: {out}: unchanged (10 keys), file left alone\n"
    assert mtime_ns(out) == 1_000_000_000
    tree.alias_file(".qmail-abuse")
    done = run(tree, "-q", "-c", str(out))
    assert done.stdout == f"qmailkit rcpt build: {out}: wrote 11 keys (was 10)\n"
    assert mtime_ns(out) != 1_000_000_000
    assert cdb_dump_keys(out) == ALL | {"abuse@example.com": b""}
    # no temp file left: only the lock every builder of the file takes
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [
        ".validrcptto.cdb.lock"
    ]


def test_same_records_in_another_order_count_as_unchanged(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    lines = (
        "".join(
            f"+{len(k)},{len(v)}:{k}->{v.decode()}\n" for k, v in sorted(ALL.items(), reverse=True)
        )
        + "\n"
    )
    subprocess.run(["cdb", "-c", str(out)], input=lines.encode(), check=True)
    os.utime(out, ns=(5_000_000_000, 5_000_000_000))
    assert "unchanged" in run(tree, "-q", "-c", str(out)).stdout
    assert mtime_ns(out) == 5_000_000_000


def test_value_change_alone_counts_as_a_change(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    run(tree, "-q", "-c", str(out))
    (tree.root / "home" / "bob" / ".qmail-spam").write_text("./Maildir/\n")
    assert "wrote 10 keys (was 10)" in run(tree, "-q", "-c", str(out)).stdout
    assert cdb_query(out, "bob-spam@example.com") == b""


def test_plain_and_cdbmake_output(tree, tmp_path):
    done = run(tree, "-q")
    assert done.returncode == 0
    want_order = (
        sorted(k for k in ALL if k.endswith("@bounce.example"))
        + ["@catch.example"]
        + sorted(k for k in ALL if k.endswith("@example.com"))
    )
    assert done.stdout.splitlines() == [k + (" -" if ALL[k] else "") for k in want_order]
    made = run(tree, "-q", "-m")
    assert made.stdout.endswith("\n\n")
    db = tmp_path / "from-m.cdb"
    subprocess.run(["cdb", "-c", str(db)], input=made.stdout.encode(), check=True)
    assert cdb_dump_keys(db) == ALL


def test_explain_and_debug_name_the_sources(tree):
    done = run(tree, "-q", "--explain")
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in done.stdout.splitlines()}
    assert rows["bob-spam@example.com"] == ["reject", f"{tree.root}/home/bob/.qmail-spam"]
    assert rows["bob@example.com"] == ["accept", f"{tree.passwd}:4"]
    assert rows["alice@bounce.example"] == [
        "accept",
        f"{tree.vpopmail}/domains/bounce.example/vpasswd",
    ]
    debug = run(tree, "-d")
    assert (
        f"debug: postmaster@example.com\taccept\t{tree.alias}/.qmail-postmaster\n" in debug.stderr
    )
    assert "warning: catch.example" in debug.stderr and "catch-all" in debug.stderr


def test_unhandled_domain_writes_nothing(tree, tmp_path):
    tree.ctl("rcpthosts", "example.com", "bounce.example", "catch.example", "stray.example")
    out = tmp_path / "validrcptto.cdb"
    done = run(tree, "-c", str(out))
    assert done.returncode == 100
    assert "qmailkit rcpt: fatal: cannot build the list of valid recipients:" in done.stderr
    assert "stray.example" in done.stderr and "nothing handles it" in done.stderr
    assert "Traceback" not in done.stderr
    assert not out.exists()
    # only the (empty) lock file that keeps two runs apart
    assert sorted(p.name for p in tmp_path.iterdir()) == [".validrcptto.cdb.lock", "t"]


def test_empty_set_refused_without_force(tmp_path):
    tree = Tree(tmp_path / "t")
    tree.ctl("rcpthosts", "example.com")
    tree.ctl("locals", "example.com")
    out = tmp_path / "validrcptto.cdb"
    done = run(tree, "-q", "-c", str(out))
    assert done.returncode == 100
    assert "no keys found: an empty validrcptto.cdb rejects all mail" in done.stderr
    assert not out.exists()
    done = run(tree, "-q", "-c", str(out), "--force")
    assert done.returncode == 0 and "wrote 0 keys" in done.stdout
    assert out.stat().st_size == 2048


def test_shrink_guard(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    run(tree, "-q", "-c", str(out))
    before = out.read_bytes()
    # alice stays; ann, amy and al go: 10 -> 7 keys, 30 % fewer
    vpasswd = tree.vpopmail / "domains" / "bounce.example" / "vpasswd"
    vpasswd.write_text(vpasswd.read_text().split("\n", 1)[0] + "\n")
    done = run(tree, "-q", "-c", str(out))
    assert done.returncode == 100
    assert "would shrink from 10 to 7 keys (30 % fewer, limit 20 %)" in done.stderr
    assert out.read_bytes() == before
    assert run(tree, "-q", "-c", str(out), "--max-shrink", "30%").returncode == 0
    assert len(cdb_dump_keys(out)) == 7


def test_force_overrides_the_shrink_guard(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    run(tree, "-q", "-c", str(out))
    (tree.vpopmail / "domains" / "bounce.example" / "vpasswd").write_text("")
    assert run(tree, "-q", "-c", str(out)).returncode == 100
    assert run(tree, "-q", "-c", str(out), "--force").returncode == 0
    assert set(cdb_dump_keys(out)) == set(ALL) - {
        "alice@bounce.example",
        "ann@bounce.example",
        "amy@bounce.example",
        "al@bounce.example",
    }


def test_existing_file_that_is_not_a_cdb(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    out.write_bytes(b"not a cdb")
    done = run(tree, "-q", "-c", str(out))
    assert done.returncode == 100
    assert f"{out}: the existing file is not a cdb" in done.stderr
    assert out.read_bytes() == b"not a cdb"


def test_concurrent_runs_are_locked_out(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    with rcpt.lock(out):
        done = run(tree, "-q", "-c", str(out))
        assert done.returncode == 111
        assert "another build of this file holds the lock" in done.stderr
        assert not out.exists()
        with pytest.raises(LockBusy), rcpt.lock(out):
            pass


def test_write_cdb_library_refusals_leave_no_temp(tree, tmp_path):
    opts = Options(qmail_home=tree.qmail, passwd=tree.passwd, vpopmail_home=tree.vpopmail)
    rec = rcpt.build(opts)
    out = tmp_path / "v.cdb"
    first = rcpt.write_cdb(out, rec)
    assert (first.written, first.count, first.previous, first.reason) == (True, 10, None, "created")
    again = rcpt.write_cdb(out, rec)
    assert (again.written, again.previous) == (False, 10)
    with pytest.raises(InputError, match="directory for the cdb does not exist"):
        rcpt.write_cdb(tmp_path / "no" / "v.cdb", rec)
    with (
        pytest.raises(InputError, match="directory for the cdb does not exist"),
        rcpt.lock(tmp_path / "no" / "v.cdb"),
    ):
        pass
    # no temp left; the lock write_cdb took itself
    assert sorted(p.name for p in tmp_path.iterdir()) == [".v.cdb.lock", "t", "v.cdb"]


def test_mkvalidrcptto_alias(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    done = run(tree, "-q", "-c", str(out), prog=[str(MKVALIDRCPTTO)])
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"mkvalidrcptto: {out}: wrote 10 keys\n"
    assert cdb_dump_keys(out) == ALL
    bad = run(tree, "-c", str(out), "--max-shrink", "120", prog=[str(MKVALIDRCPTTO)])
    assert bad.returncode == 100
    assert "mkvalidrcptto: usage: argument --max-shrink: not between 0 and 100: '120'" in bad.stderr
    usage = run(tree, "--max-shrink", "lots", prog=[str(MKVALIDRCPTTO)])
    assert usage.returncode == 100
    assert "mkvalidrcptto: usage: argument --max-shrink: not a percentage: 'lots'" in usage.stderr


def check(tree: Tree, *args: str) -> subprocess.CompletedProcess:
    return run(tree, *args, prog=[sys.executable, "-m", "qmailkit", "rcpt", "check"])


@pytest.mark.parametrize(
    ("address", "rc", "text"),
    [
        ("Alice@Bounce.Example", 0, "accept: Alice@Bounce.Example: key 'alice@bounce.example'"),
        ("list-subscribe@bounce.example", 0, "key 'list-default@bounce.example'"),
        ("nobody@bounce.example", 1, "reject: nobody@bounce.example: no key matched"),
        ("bob-spam@example.com", 1, "key 'bob-spam@example.com' has a value starting with '-'"),
        ("whoever@catch.example", 0, "key '@catch.example'"),
    ],
)
def test_check_from_cdb_and_live_agree(tree, tmp_path, address, rc, text):
    out = tmp_path / "validrcptto.cdb"
    run(tree, "-q", "-c", str(out))
    from_cdb = check(tree, address, "--cdb", str(out))
    live = check(tree, address)
    assert (from_cdb.returncode, live.returncode) == (rc, rc)
    assert text in from_cdb.stdout and text in live.stdout
    if rc == 0 or "value" in text:
        assert "(from " in live.stdout


def test_check_verbose_lists_keys_tried(tree):
    done = check(tree, "-v", "x-y-z@example.com")
    assert done.stdout.splitlines()[1] == (
        "tried: x-y-z@example.com x-y-default@example.com x-default@example.com @example.com"
    )


def test_unchanged_fast_path_does_not_build_the_cdb(tree, tmp_path, monkeypatch):
    from qmailkit import cdb

    opts = Options(qmail_home=tree.qmail, passwd=tree.passwd, vpopmail_home=tree.vpopmail)
    out = tmp_path / "v.cdb"
    with rcpt.lock(out) as fd:
        assert rcpt.write_cdb(out, rcpt.build(opts), state_fd=fd).written

    def no_build(*args, **kw):
        raise AssertionError("the cdb was built although nothing changed")

    monkeypatch.setattr(cdb, "install", no_build)
    with rcpt.lock(out) as fd:
        again = rcpt.write_cdb(out, rcpt.build(opts), state_fd=fd)
    assert (again.written, again.count, again.reason) == (False, 10, "unchanged")
    os.chmod(out, 0o600)  # the note knows the file's mode: a chmod'ed file is built again
    with pytest.raises(AssertionError, match="nothing changed"), rcpt.lock(out) as fd:
        rcpt.write_cdb(out, rcpt.build(opts), state_fd=fd)


def test_fast_path_notices_a_file_replaced_behind_its_back(tree, tmp_path):
    out = tmp_path / "validrcptto.cdb"
    assert "wrote" in run(tree, "-q", "-c", str(out)).stdout
    stat = out.stat()
    # Another tool puts a different cdb in place, with the same size and mtime.
    other = tmp_path / "other.cdb"
    subprocess.run(["cdb", "-c", str(other)], input=b"+5,0:x@y.z->\n\n", check=True)
    os.rename(other, out)
    os.utime(out, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    done = run(tree, "-q", "-c", str(out), "--force")
    assert "wrote 10 keys (was 1)" in done.stdout
    assert cdb_dump_keys(out) == ALL
    # A damaged state note only costs a full comparison.
    (tmp_path / ".validrcptto.cdb.lock").write_text("garbage\n")
    assert "unchanged" in run(tree, "-q", "-c", str(out)).stdout


def test_a_newline_in_a_dot_qmail_name_neither_crashes_nor_adds_keys(tree, tmp_path):
    """A6, as found: any local user could freeze validrcptto.cdb (ValueError, exit 1)."""
    out = tmp_path / "validrcptto.cdb"
    odd = tree.write(tree.root / "home" / "bob" / ".qmail-x\npostmaster2", "./Maildir/\n")
    done = run(tree, "-c", str(out))
    assert (done.returncode, done.stdout) == (0, f"qmailkit rcpt build: {out}: wrote 10 keys\n")
    assert (
        f"warning: {odd.parent}/'.qmail-x\\npostmaster2': skipped: no address reaches a "
        ".qmail name holding a newline\n" in done.stderr
    )
    assert cdb_dump_keys(out) == ALL


@pytest.mark.parametrize("jobs", ["1", "2"])
@pytest.mark.parametrize("write", [True, False], ids=["c", "print"])
def test_names_holding_a_newline_in_a_vpopmail_domain_are_skipped(tree, tmp_path, jobs, write):
    """A6 as found in a vpopmail domain: .qmail-a<LF>b gave the keys 'a' and
    'b@bounce.example', a vpasswd.cdb key evil<LF>root 'evil' and 'root@bounce.example';
    with a '-' value in the domain, -c crashed (ValueError, exit 1)."""
    ddir = tree.vpopmail / "domains" / "bounce.example"
    tree.write(ddir / ".qmail-a\nb", "&alice@bounce.example\n")
    tree.write(ddir / ".qmail-gone", "|bouncesaying 'gone'\n")
    (ddir / "vpasswd").unlink()
    boxes = [b"alice", b"evil\nroot", b"ann", b"amy", b"al"]
    cdb.write(ddir / "vpasswd.cdb", [(box, b"x:1:0::/d:NOQUOTA") for box in boxes])
    out = tmp_path / "validrcptto.cdb"
    done = run(tree, "-j", jobs, *(["-c", str(out)] if write else []))
    expected = ALL | {"gone@bounce.example": b"-"}
    assert done.returncode == 0
    assert done.stderr.splitlines()[:2] == [
        f"qmailkit rcpt build: warning: {ddir}/'.qmail-a\\nb': skipped: no address reaches "
        "a .qmail name holding a newline",
        f"qmailkit rcpt build: warning: {ddir}/vpasswd.cdb: mailbox 'evil\\nroot' skipped: "
        "no address holds a newline or NUL",
    ]
    if write:
        assert done.stdout == f"qmailkit rcpt build: {out}: wrote 11 keys\n"
        assert cdb_dump_keys(out) == expected
    else:
        assert sorted(done.stdout.splitlines()) == sorted(
            f"{key} -" if value else key for key, value in expected.items()
        )


@pytest.mark.parametrize("write", [True, False], ids=["c", "print"])
def test_a_received_domain_holding_a_newline_is_skipped_with_one_warning(tree, tmp_path, write):
    """A6: a morercpthosts.cdb key 'evil<LF>example.com' split every key of the domain
    (and crashed -c); no RCPT TO holds a newline, so qmail-smtpd never matches it."""
    more = tree.control / "morercpthosts.cdb"
    cdb.write(more, [(b"evil\nexample.com", b""), (b"nul\0example.com", b"")])
    tree.ctl(
        "virtualdomains", "bounce.example:bounce.example", "catch.example:catch.example", ":bob"
    )
    out = tmp_path / "validrcptto.cdb"
    done = run(tree, *(["-c", str(out)] if write else []))
    assert done.returncode == 0
    assert [line for line in done.stderr.splitlines() if "example.com'" in line] == [
        f"qmailkit rcpt build: warning: {more}: skipped domain 'evil\\nexample.com': "
        "no address holds a newline or NUL",
        f"qmailkit rcpt build: warning: {more}: skipped domain 'nul\\x00example.com': "
        "no address holds a newline or NUL",
    ]
    if write:
        assert done.stdout == f"qmailkit rcpt build: {out}: wrote 10 keys\n"
        assert cdb_dump_keys(out) == ALL
    else:
        assert "\n".join(sorted(done.stdout.splitlines())) == "\n".join(
            sorted(f"{key} -" if value else key for key, value in ALL.items())
        )


def test_a_fifo_in_a_home_does_not_hang_the_build(tree, tmp_path):
    """A7: a FIFO in ~bob held the lock for good; qmail-local ignores what is not a file."""
    out = tmp_path / "validrcptto.cdb"
    fifo = tree.root / "home" / "bob" / ".qmail-fifo"
    os.mkfifo(fifo)
    done = run(tree, "-c", str(out))
    assert (done.returncode, done.stdout) == (0, f"qmailkit rcpt build: {out}: wrote 10 keys\n")
    assert (
        f"warning: {fifo}: skipped: it is a FIFO, not a regular file, so qmail-local "
        "ignores it\n" in done.stderr
    )
    assert cdb_dump_keys(out) == ALL


@pytest.mark.parametrize(
    "where",
    [
        "var-qmail/control/rcpthosts",
        "var-qmail/control/morercpthosts.cdb",
        "var-qmail/users/cdb",
        "passwd",
        "home-vpopmail/domains/bounce.example/vpasswd",
        "home-vpopmail/domains/bounce.example/vpasswd.cdb",  # alone: no vpasswd
        "aliases.cdb",  # the alias user's fastforward database
    ],
)
def test_a_fifo_as_a_configuration_file_is_a_temporary_error(tree, tmp_path, where):
    """A7: open without blocking, regular files only, the file named (run's timeout bounds
    a hang)."""
    out = tmp_path / "validrcptto.cdb"
    if where == "aliases.cdb":
        tree.alias_file(".qmail-default", f"| fastforward -d {tree.root}/aliases.cdb\n")
        cdb.write(tree.root / "aliases.cdb", [(b":info@example.com", b"&someone@example.net\0")])
    assert run(tree, "-q", "-c", str(out)).returncode == 0
    before = out.read_bytes()
    path = tree.root / where
    path.unlink(missing_ok=True)
    if where.endswith("vpasswd.cdb"):
        (path.parent / "vpasswd").unlink()
    os.mkfifo(path)
    done = run(tree, "-q", "-c", str(out))
    assert (done.returncode, done.stdout) == (111, "")
    assert done.stderr == (
        f"qmailkit rcpt: fatal: {path}: is a FIFO, not a regular file "
        "(replace it with a regular file)\n"
    )
    assert out.read_bytes() == before


def test_a_device_as_a_configuration_file_is_a_temporary_error(tree):
    rcpthosts = tree.control / "rcpthosts"
    rcpthosts.unlink()
    rcpthosts.symlink_to("/dev/zero")
    done = run(tree, "-q")
    assert (done.returncode, done.stdout) == (111, "")
    assert done.stderr == (
        f"qmailkit rcpt: fatal: {rcpthosts}: is a character device, not a regular file "
        "(replace it with a regular file)\n"
    )


def test_a_socket_in_a_home_is_skipped_like_qmail_local_does(tree, tmp_path):
    sock_path = tree.root / "home" / "bob" / ".qmail-sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock_path))
        done = run(tree, "-c", str(tmp_path / "validrcptto.cdb"))
    assert done.returncode == 0
    assert (
        f"warning: {sock_path}: skipped: it is a socket, not a regular file, so qmail-local "
        "ignores it\n" in done.stderr
    )
    assert cdb_dump_keys(tmp_path / "validrcptto.cdb") == ALL


def test_a_directory_where_a_cdb_belongs_is_named(tree, tmp_path):
    """A18: was "fatal: cannot read cdb: No such device", with no file name."""
    target = tmp_path / "validrcptto.cdb"
    target.mkdir()
    done = run(tree, "-q", "-c", str(target))
    assert (done.returncode, done.stdout) == (111, "")
    assert done.stderr == (
        f"qmailkit rcpt: fatal: {target}: is a directory, not a "
        "regular file (replace it with a regular file)\n"
    )
    more = tree.control / "morercpthosts.cdb"
    more.mkdir()
    done = run(tree, "-q")
    assert (done.returncode, done.stdout) == (111, "")
    assert done.stderr == (
        f"qmailkit rcpt: fatal: {more}: is a directory, not a "
        "regular file (replace it with a regular file)\n"
    )


def test_check_says_when_the_domain_is_not_in_rcpthosts(tree):
    done = check(tree, "someone@elsewhere.example")
    assert done.returncode == 1
    assert done.stdout == (
        "reject: someone@elsewhere.example: elsewhere.example is not in "
        "rcpthosts or morercpthosts.cdb (qmail-smtpd answers 553 unless the "
        "client may relay)\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--uid-min", "x"], "argument --uid-min: not a user id: 'x' (give a number, e.g. 500)"),
        (["--uid-max", "5x"], "argument --uid-max: not a user id: '5x' (give a number, e.g. 500)"),
        (
            ["--uid-ignore", "99999999999"],
            "argument --uid-ignore: uid 99999999999 is out of range (at most 4294967294)",
        ),
        (["-j", "abc"], "argument -j/--jobs: not a number of processes: 'abc' (1 or more)"),
        (["--jobs", "0"], "argument -j/--jobs: not a number of processes: '0' (1 or more)"),
    ],
)
def test_bad_numbers_are_usage_errors_from_the_shared_parsers(tree, args, message):
    """--jobs and the uid options through cli.options (processes, user_number), as mkauth."""
    done = run(tree, *args, prog=[str(MKVALIDRCPTTO)])
    assert (done.returncode, done.stdout) == (100, "")
    assert done.stderr.splitlines()[-1] == f"mkvalidrcptto: usage: {message}"


def test_lines_print_every_record_in_order_with_its_reject_value(tree):
    """rcpt.lines writes a domain whose keys all accept in bulk (its joined keys): the
    same bytes as one line per record, also for a domain with no key at all."""
    tree.ctl("rcpthosts", "example.com", "bounce.example", "catch.example", "empty.example")
    tree.ctl(
        "virtualdomains",
        "bounce.example:bounce.example",
        "catch.example:catch.example",
        "empty.example:empty.example",
    )
    tree.vdomain("empty.example", [])
    tree.write_assign()
    rec = rcpt.build(
        Options(qmail_home=tree.qmail, passwd=tree.passwd, vpopmail_home=tree.vpopmail)
    )
    assert rec.domains[b"empty.example"].count() == 0
    per_record = b"".join(k + b" " + v + b"\n" if v else k + b"\n" for k, v in rec.records())
    assert b"".join(rcpt.lines(rec)) == per_record
    assert per_record.splitlines() == [
        b"al@bounce.example",
        b"alice@bounce.example",
        b"amy@bounce.example",
        b"ann@bounce.example",
        b"list-default@bounce.example",
        b"list@bounce.example",
        b"@catch.example",
        b"bob-spam@example.com -",
        b"bob@example.com",
        b"postmaster@example.com",
    ]
