"""mkvalidrcptto on a configuration big enough to use a worker process: the same bytes,
warnings and errors as doing everything in one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import need
from support.rcpt import VDELIVER_CATCHALL, Tree

from qmailkit import cdb, rcpt, workers
from qmailkit.errors import QmailkitError
from qmailkit.qmail import recipients
from qmailkit.qmail.recipients import Options

MKVALIDRCPTTO = Path(sys.executable).parent / "mkvalidrcptto"
DOMAINS = recipients.PARALLEL_MIN_DOMAINS + 80


def vdomain_name(i: int) -> str:
    return f"d{i:04d}.example"


def big_tree(root: Path) -> Tree:
    """One local domain, a relayed one and DOMAINS vpopmail domains with the usual variety."""
    t = Tree(root)
    names = [vdomain_name(i) for i in range(DOMAINS)]
    t.ctl("rcpthosts", "example.com", "relay.example", *names)
    t.ctl("locals", "example.com")
    t.ctl("smtproutes", "relay.example:mx.relay.example")
    t.ctl(
        "virtualdomains", *(f"{n}:{n}" for n in names), f"boss@{names[-3]}:{names[-3]}"
    )  # a single address (wins over anything else)
    t.user("bob", 1000, {".qmail-spam": "|bouncesaying 'no'\n"})
    t.alias_file(".qmail-postmaster")
    for i, name in enumerate(names):
        files = {".qmail-info": f"&anna@{name}\n"}
        if i % 10 == 0:
            files[".qmail-news"] = f"|ezmlm-send '{name}/news'\n"
            files[".qmail-news-default"] = f"|ezmlm-manage '{name}/news'\n"
        if i % 50 == 7:
            files[".qmail-gone"] = "|bouncesaying 'this address is gone'\n"
        default = VDELIVER_CATCHALL if i % 20 == 19 else None
        ddir = t.vdomain(
            name,
            ["anna", "Bert", f"u{i}"],
            files=files,
            **({"default": default} if default else {}),
        )
        if i == DOMAINS - 5:  # Windows line ends: the careful reader's path
            vpasswd = ddir / "vpasswd"
            vpasswd.write_bytes(vpasswd.read_bytes().replace(b"\n", b"\r\n"))
        if i == DOMAINS - 6:  # names no address reaches, and one with two spellings
            (ddir / ".qmail-x\nroot").write_text("&anna\n")
            os.mkfifo(ddir / ".qmail-fifo")
            (ddir / ".qmail-first:last").write_text("&anna\n")
        if i == DOMAINS - 7:  # vpasswd.cdb only, with a key holding a newline
            (ddir / "vpasswd").unlink()
            cdb.write(
                ddir / "vpasswd.cdb",
                [(b"evil\nroot", b"x:1:0::/d:NOQUOTA"), (b"zoe", b"x:1:0::/d:NOQUOTA")],
            )
    t.write_assign()
    return t


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Tree:
    return big_tree(tmp_path_factory.mktemp("big") / "t")


def options(t: Tree, jobs: int, **kw) -> Options:
    return Options(qmail_home=t.qmail, passwd=t.passwd, vpopmail_home=t.vpopmail, jobs=jobs, **kw)


@pytest.fixture
def forks(monkeypatch) -> list:
    """The workers recipients.build started (wraps workers.spawn): (pid, pipe), or None
    when no process could be had."""
    started: list = []
    real = workers.spawn

    def spy(target):
        worker = real(target)
        started.append(worker)
        return worker

    monkeypatch.setattr(workers, "spawn", spy)
    return started


def test_workers_give_the_same_keys_sources_and_warnings(tree, forks):
    here = rcpt.build(options(tree, jobs=1, exclude=frozenset({f"u1@{vdomain_name(DOMAINS - 2)}"})))
    assert forks == []
    split = rcpt.build(
        options(tree, jobs=2, exclude=frozenset({f"u1@{vdomain_name(DOMAINS - 2)}"}))
    )
    assert len(forks) == 1 and forks[0] is not None  # the parallel path really ran
    assert list(split.explain()) == list(here.explain())
    assert b"".join(rcpt.lines(split)) == b"".join(rcpt.lines(here))
    assert split.warnings == here.warnings
    last = vdomain_name(DOMAINS - 4)  # done by the worker
    assert split.source(f"anna@{last}".encode()).endswith(f"{last}/vpasswd")
    assert split.get(f"bert@{last}".encode()) is None  # "Bert": vdelivermail never matches it
    assert (
        f"{tree.vpopmail}/domains/{last}/vpasswd:2: mailbox 'Bert' skipped: vdelivermail "
        "looks up the lower-cased address, so a name with capitals never gets mail"
        in split.warnings
    )
    odd, dbonly = vdomain_name(DOMAINS - 6), vdomain_name(DOMAINS - 7)
    assert [k for k in split.domains[odd.encode()].keys if b"first" in k or b"root" in k] == [
        f"first.last@{odd}".encode(),
        f"first:last@{odd}".encode(),
    ]
    assert split.domains[dbonly.encode()].keys == [
        f"info@{dbonly}".encode(),
        f"zoe@{dbonly}".encode(),
    ]
    ddir = f"{tree.vpopmail}/domains"
    assert [w for w in split.warnings if "\\nroot" in w or "fifo" in w] == [
        (
            f"{ddir}/{dbonly}/vpasswd.cdb: mailbox 'evil\\nroot' skipped: no address holds a "
            "newline or NUL"
        ),
        (
            f"{ddir}/{odd}/'.qmail-x\\nroot': skipped: no address reaches a .qmail name holding a "
            "newline"
        ),
        (
            f"{ddir}/{odd}/.qmail-fifo: skipped: it is a FIFO, not a regular file, so qmail-local "
            "ignores it"
        ),
    ]
    assert split.get(f"u{DOMAINS - 4}@{last}".encode()) == b""
    assert split.get(f"gone@{vdomain_name(DOMAINS - 23)}".encode()) == b"-"
    assert split.get(f"boss@{vdomain_name(DOMAINS - 3)}".encode()) == b""
    assert split.get(f"u1@{vdomain_name(DOMAINS - 2)}".encode()) is None  # excluded
    assert split.get(f"nobody@{last}".encode()) is None
    assert split.get(f"@{vdomain_name(DOMAINS - 1)}".encode()) == b""  # catch-all
    assert any(f"{vdomain_name(DOMAINS - 1)}/.qmail-default" in w for w in split.warnings)
    assert len(split) == len(here) > DOMAINS * 3


def test_three_jobs_and_fork_failure_give_the_same_keys(tree, forks, monkeypatch):
    here = list(rcpt.build(options(tree, jobs=1)).explain())
    assert list(rcpt.build(options(tree, jobs=3)).explain()) == here
    assert len(forks) == 1  # not enough domains for two workers of a useful size

    def no_fork():
        raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "fork", no_fork)
    assert list(rcpt.build(options(tree, jobs=2)).explain()) == here
    assert forks[-1] is None  # it fell back to doing everything here


def mk(t: Tree, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(MKVALIDRCPTTO),
            "--qmail-home",
            str(t.qmail),
            "--passwd",
            str(t.passwd),
            "--vpopmail-home",
            str(t.vpopmail),
            *args,
        ],
        capture_output=True,
        check=False,
    )


def test_cdb_bytes_and_messages_match_one_process_and_tinycdb(tree, tmp_path):
    (cdb_prog,) = need("cdb")
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    a = mk(tree, "-j1", "-c", str(one / "v.cdb"))
    b = mk(tree, "-j2", "-c", str(two / "v.cdb"))
    assert a.returncode == b.returncode == 0, b.stderr
    assert b.stdout == a.stdout.replace(bytes(one), bytes(two))
    assert b"wrote" in b.stdout
    assert b.stderr == a.stderr and b"catch-all" in b.stderr
    assert (two / "v.cdb").read_bytes() == (one / "v.cdb").read_bytes()
    text = mk(tree, "-m")
    assert text.returncode == 0
    subprocess.run([cdb_prog, "-c", str(tmp_path / "tiny.cdb")], input=text.stdout, check=True)
    assert (tmp_path / "tiny.cdb").read_bytes() == (two / "v.cdb").read_bytes()
    for flag in ("--explain", "-d"):
        assert mk(tree, "-j2", flag).stdout == mk(tree, "-j1", flag).stdout
        assert mk(tree, "-j2", flag).stderr == mk(tree, "-j1", flag).stderr


def break_vpasswd(t: Tree, i: int) -> Path:
    vpasswd = t.vpopmail / "domains" / vdomain_name(i) / "vpasswd"
    vpasswd.write_bytes(vpasswd.read_bytes() + b"broken line\n")
    return vpasswd


def test_an_error_in_a_worker_domain_is_the_same_error(tmp_path):
    t = big_tree(tmp_path / "t")
    bad = break_vpasswd(t, DOMAINS - 2)  # near the end: the worker's
    out = tmp_path / "out"
    out.mkdir()
    results = [mk(t, f"-j{jobs}", "-c", str(out / "v.cdb")) for jobs in (1, 2)]
    for done in results:
        assert done.returncode == 100
        assert done.stdout == b""
        assert (
            done.stderr
            == (
                f"mkvalidrcptto: fatal: {bad}:4: malformed vpasswd line: 1 fields, "
                "expected at least 7 (vpasswd lines are "
                "name:hash:uid:gid:gecos:dir:quota[:clear])\n"
            ).encode()
        )
    assert sorted(os.listdir(out)) == [".v.cdb.lock"]  # no cdb, no temp file


def test_the_first_failing_domain_in_order_decides(tmp_path):
    t = big_tree(tmp_path / "t")
    late = break_vpasswd(t, DOMAINS - 2)  # the worker's
    early = t.vpopmail / "domains" / vdomain_name(1)  # this process's: it comes first
    (early / "vpasswd").unlink()
    (early / "vpasswd.cdb").write_bytes(b"not a cdb")
    messages = set()
    for jobs in (1, 2):
        with pytest.raises(Exception) as caught:
            rcpt.build(options(t, jobs=jobs))
        messages.add((type(caught.value), str(caught.value)))
    assert len(messages) == 1
    ((_kind, text),) = messages
    assert str(early / "vpasswd.cdb") in text and str(late) not in text
    # Only the worker's domain left broken: its error comes back the same.
    (early / "vpasswd.cdb").unlink()
    (early / "vpasswd").write_text(f"anna:x:1:0:A:{early}/anna:NOQUOTA\n")
    found = set()
    for jobs in (1, 2):
        with pytest.raises(Exception) as caught:
            rcpt.build(options(t, jobs=jobs))
        found.add((type(caught.value).__name__, str(caught.value), caught.value.exit_code))
    message = (
        f"{late}:4: malformed vpasswd line: 1 fields, expected at least 7 "
        "(vpasswd lines are name:hash:uid:gid:gecos:dir:quota[:clear])"
    )
    assert found == {("InputError", message, 100)}


def test_a_small_configuration_does_not_fork(tmp_path, forks):
    t = Tree(tmp_path / "t")
    t.ctl("rcpthosts", *(vdomain_name(i) for i in range(10)))
    t.ctl("virtualdomains", *(f"{vdomain_name(i)}:{vdomain_name(i)}" for i in range(10)))
    for i in range(10):
        t.vdomain(vdomain_name(i), ["anna"])
    t.write_assign()
    rec = rcpt.build(options(t, jobs=2))
    assert forks == []
    assert len(rec) == 10


def test_jobs_must_be_a_positive_number(tree):
    done = mk(tree, "-j0")
    assert done.returncode == 100
    assert b"not a number of processes: '0'" in done.stderr


def test_a_worker_that_dies_is_a_system_error(tree, monkeypatch):
    """A worker killed before it answers (here: its first write to the pipe) is exit 111."""
    parent = os.getpid()
    real_write = os.write

    def write(fd, data):
        if os.getpid() != parent:
            os._exit(3)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    with pytest.raises(QmailkitError) as caught:
        rcpt.build(options(tree, jobs=2))
    assert str(caught.value) == "a worker process failed: worker process died (wait status 768)"
    assert caught.value.exit_code == 111
