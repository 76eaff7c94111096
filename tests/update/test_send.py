"""qmailkit.qmail.send and the qmail-send stand-in: the lock holder, its identity, the HUP."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
import time

import pytest
from support import need, wait_for
from support.qmail_send import SendSite, make_home, other_holder
from support.services import need_root, public_tempdir

from qmailkit.demo import qmail_send
from qmailkit.qmail import send
from qmailkit.qmail.send import HolderChanged, LockLine, parse_locks

KINDS = ["daemontools", "runit", "s6"]


# -- /proc parsing (crafted files) --------------------------------------------------


def test_parse_locks_formats():
    text = (
        "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF\n"
        "1: -> FLOCK  ADVISORY  WRITE 1235 08:01:5678 0 EOF\n"
        "1:  -> FLOCK  ADVISORY  WRITE 1236 08:01:5678 0 EOF\n"
        "2: POSIX  ADVISORY  READ 77 fe:00:2147015 128 128\n"
        "3: OFDLCK ADVISORY  WRITE -1 00:2a:9 0 EOF\n"
        "4: LEASE  ACTIVE    READ 88 103:1f:42 0 EOF\n"
        "5: FLOCK  ADVISORY  WRITE 0 fe:00:77 0 EOF\n"
        "garbage\n"
        "6: FLOCK  ADVISORY  WRITE x fe:00:1 0 EOF\n"
        "7: FLOCK  ADVISORY  WRITE 9 fe:00 0 EOF\n"
        "\n"
    )
    assert parse_locks(text) == [
        LockLine("FLOCK", "WRITE", 1234, 8, 1, 5678),
        LockLine("POSIX", "READ", 77, 0xFE, 0, 2147015),
        LockLine("OFDLCK", "WRITE", -1, 0, 0x2A, 9),
        LockLine("LEASE", "READ", 88, 0x103, 0x1F, 42),
        LockLine("FLOCK", "WRITE", 0, 0xFE, 0, 77),
    ]


def _fake_proc(tmp_path, monkeypatch, locks: str, *, pid: int, comm: str, ticks: int) -> None:
    proc = tmp_path / "proc"
    (proc / str(pid)).mkdir(parents=True)
    (proc / "locks").write_text(locks)
    (proc / "stat").write_text("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n")
    (proc / str(pid) / "comm").write_text(comm + "\n")
    after = ["S", "1"] + ["0"] * 17 + [str(ticks), "0", "0"]  # fields 3..24
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) " + " ".join(after) + "\n")
    monkeypatch.setattr(send, "PROC", str(proc))


def test_holder_from_crafted_proc(tmp_path, monkeypatch):
    home = make_home(tmp_path / "qmail")
    st = os.lstat(home / send.SENDMUTEX)
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    locks = (
        f"1: FLOCK  ADVISORY  WRITE 4242 {where} 0 EOF\n"
        f"1: -> FLOCK  ADVISORY  WRITE 4343 {where} 0 EOF\n"
    )
    _fake_proc(tmp_path, monkeypatch, locks, pid=4242, comm="qmail-send", ticks=12345)
    found = send.holder(home)
    assert found is not None
    assert (found.pid, found.comm, found.start_ticks) == (4242, "qmail-send", 12345)
    assert found.start_time == 1700000000 + 12345 / os.sysconf("SC_CLK_TCK")
    # a comm with spaces and ')' does not shift the fields
    _fake_proc(
        tmp_path / "b",
        monkeypatch,
        locks.replace("4242", "4243"),
        pid=4243,
        comm="a) b (c",
        ticks=777,
    )
    other = send.lock_holder(home)
    assert other is not None and (other.comm, other.start_ticks) == ("a) b (c", 777)
    assert send.holder(home) is None
    # only a blocked waiter: nobody holds it
    _fake_proc(
        tmp_path / "c", monkeypatch, locks.split("\n", 1)[1], pid=4343, comm="qmail-send", ticks=1
    )
    assert send.lock_holder(home) is None
    # pid 0: the holder is outside our PID namespace
    _fake_proc(tmp_path / "d", monkeypatch, locks.replace("4242", "0", 1), pid=5, comm="x", ticks=1)
    with pytest.raises(send.QmailkitError) as err:
        send.lock_holder(home)
    assert str(err.value) == (
        f"{home / send.SENDMUTEX}: is locked by a process outside this PID namespace "
        "(run qmailkit in the namespace (container) qmail-send runs in)"
    )


def test_mutex_missing_or_not_regular(tmp_path):
    home = make_home(tmp_path / "qmail")
    mutex = home / send.SENDMUTEX
    mutex.unlink()
    assert send.lock_holder(home) is None
    mutex.symlink_to(tmp_path)
    with pytest.raises(send.QmailkitError) as err:
        send.lock_holder(home)
    assert str(err.value) == (
        f"{mutex}: is not a regular file (qmail-send's lock must be a plain file)"
    )


def test_start_ticks_of_a_process_named_with_parentheses(tmp_path):
    code = (
        "import ctypes, sys\n"
        "naive = open('/proc/self/stat').read().split()[21]\n"
        "ctypes.CDLL(None).prctl(15, b'x) (y z', 0, 0, 0)\n"
        "print(naive, flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        naive = proc.stdout.readline().strip()
        assert send.process_comm(proc.pid) == "x) (y z"
        assert send.start_ticks(proc.pid) == int(naive)
    finally:
        proc.stdin.close()
        proc.wait()


# -- the stand-in on its own ----------------------------------------------------


def _start_direct(home, program, delay=0.0):
    env = {**os.environ, qmail_send.DELAY_ENV: str(delay)}
    return subprocess.Popen(
        [program, str(home)], stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def test_standin_name_lock_and_second_start(tmp_path):
    home = make_home(tmp_path / "qmail")
    program = qmail_send.install(tmp_path / "bin")
    first = _start_direct(home, program)
    try:
        assert first.stdout.readline() == f"status: starting pid {first.pid}\n"
        assert first.stdout.readline() == (
            f"status: started pid {first.pid}; locals=2 virtualdomains=1\n"
        )
        with open(f"/proc/{first.pid}/comm") as fh:
            assert fh.read() == "qmail-send\n"
        found = send.holder(home)
        assert found is not None and found.pid == first.pid
        second = subprocess.run([program, str(home)], capture_output=True, text=True, check=False)
        assert (second.returncode, second.stdout.splitlines()[1:]) == (
            111,
            ["alert: cannot start: qmail-send is already running"],
        )
        first.send_signal(signal.SIGALRM)
        assert first.stdout.readline() == "status: got ALRM\n"
        first.terminate()
        assert first.stdout.read() == "status: got TERM\nstatus: exiting\n"
        assert first.wait(5) == 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def test_standin_named_by_prctl_when_run_by_python(tmp_path):
    home = make_home(tmp_path / "qmail")
    proc = subprocess.Popen(
        [sys.executable, qmail_send.__file__, str(home)], stdout=subprocess.PIPE, text=True
    )
    try:
        proc.stdout.readline()
        proc.stdout.readline()
        with open(f"/proc/{proc.pid}/comm") as fh:
            assert fh.read() == "qmail-send\n"
        assert send.holder(home).pid == proc.pid
    finally:
        proc.terminate()
        proc.wait(5)


def test_standin_dies_of_a_hup_while_starting(tmp_path):
    home = make_home(tmp_path / "qmail")
    program = qmail_send.install(tmp_path / "bin")
    proc = _start_direct(home, program, delay=5)
    assert proc.stdout.readline() == f"status: starting pid {proc.pid}\n"
    assert send.holder(home) is None  # no lock yet: qmailkit would not signal it
    os.kill(proc.pid, signal.SIGHUP)  # what `svc -h` or `kill` by name does
    assert proc.wait(5) == -signal.SIGHUP
    assert proc.stdout.read() == ""


def test_standin_cannot_open_mutex(tmp_path):
    home = make_home(tmp_path / "qmail")
    (home / send.SENDMUTEX).unlink()
    program = qmail_send.install(tmp_path / "bin")
    done = subprocess.run([program, str(home)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout.splitlines()[1:]) == (
        111,
        ["alert: cannot start: unable to open mutex"],
    )


# -- another program holds the lock --------------------------------------------------


def test_lock_held_by_another_program_is_never_signalled(tmp_path):
    home = make_home(tmp_path / "qmail")
    proc = other_holder(home / send.SENDMUTEX)
    try:
        found = send.lock_holder(home)
        assert found is not None and found.pid == proc.pid
        with open(f"/proc/{proc.pid}/comm") as fh:
            assert found.comm == fh.read().rstrip("\n") != "qmail-send"
        assert send.holder(home) is None
        with pytest.raises(HolderChanged) as err:
            send.hup(found)
        assert str(err.value) == (
            f"{home / send.SENDMUTEX}: pid {proc.pid} holds the lock but is "
            f"{found.comm!r}, not qmail-send: not signalled"
        )
        assert proc.poll() is None  # SIGHUP would have killed it
    finally:
        proc.kill()
        proc.wait()


def test_hup_refuses_a_holder_that_changed(tmp_path):
    home = make_home(tmp_path / "qmail")
    program = qmail_send.install(tmp_path / "bin")
    first = _start_direct(home, program)
    first.stdout.readline()
    first.stdout.readline()
    found = send.holder(home)
    first.terminate()
    first.wait(5)
    second = _start_direct(home, program)
    try:
        second.stdout.readline()
        second.stdout.readline()
        with pytest.raises(HolderChanged) as err:
            send.hup(found)
        assert str(err.value) == (
            f"{home / send.SENDMUTEX}: qmail-send pid {first.pid} no longer holds the lock: "
            "not signalled (it reads locals and virtualdomains afresh when it starts)"
        )
        again = send.holder(home)
        assert again is not None and again.pid == second.pid
        send.hup(again)
        assert second.stdout.readline() == "status: got HUP; locals=2 virtualdomains=1\n"
    finally:
        second.terminate()
        second.wait(5)


# -- under real supervisors -----------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_holder_is_the_supervised_standin_and_hup_reaches_it(tmp_path, scan, kind):
    site = SendSite(tmp_path, kind)
    site.start(scan)
    pid = site.wait_started()
    found = send.holder(site.home)
    assert found is not None
    assert (found.pid, found.comm) == (pid, "qmail-send")
    assert abs(found.start_time - time.time()) < 30
    (site.home / "control" / "locals").write_bytes(b"a.example\nb.example\nc.example\n")
    seen = len(site.lines())
    sent_at = time.monotonic()
    send.hup(found)
    new = site.wait_line("status: got HUP; locals=3 virtualdomains=1", seen, timeout=1.0)
    assert time.monotonic() - sent_at < 1.0
    assert new == ["status: got HUP; locals=3 virtualdomains=1"]
    assert site.pid() == pid


@pytest.mark.parametrize("kind", KINDS)
def test_no_holder_when_the_service_is_down(tmp_path, scan, kind):
    site = SendSite(tmp_path, kind)
    site.start(scan)
    site.suite.down(site.service)
    wait_for(lambda: not site.suite.status(site.service).up, 10, what="qmail-send down")
    assert send.lock_holder(site.home) is None
    assert send.holder(site.home) is None
    assert site.runs()[-1][-2:] == ["status: got TERM", "status: exiting"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_hup_in_the_start_window_kills_the_supervised_standin(tmp_path, scan, kind):
    """The stand-in is faithful: a blind HUP (svc -h) while it starts kills it."""
    site = SendSite(tmp_path, kind, delay=3.0)
    scan(kind, site.scan_dir)
    first = wait_for(
        lambda: site.runs() and site.runs()[0][0], 15, what="the stand-in to begin starting"
    )
    pid = int(first.split()[-1])
    assert send.holder(site.home) is None
    site.suite.hup(site.service)  # svc -h: HUP to whatever the supervisor runs
    wait_for(lambda: site.pid() not in (None, pid), 10, what="a new qmail-send")
    assert site.runs()[0] == [f"status: starting pid {pid}"]  # it died before the lock


def test_standin_runs_as_an_unprivileged_user():
    """As qmail-send runs as qmails: the system Python, another uid, found and HUPped by root."""
    (setpriv,) = need("setpriv")
    need_root()
    with public_tempdir() as top:
        _unprivileged(setpriv, top)


def _unprivileged(setpriv: str, top) -> None:
    home = make_home(top / "qmail")
    nobody = pwd.getpwnam("nobody")
    os.chown(home / send.SENDMUTEX, nobody.pw_uid, nobody.pw_gid)
    program = qmail_send.install(top / "bin")
    proc = subprocess.Popen(
        [
            setpriv,
            f"--reuid={nobody.pw_uid}",
            f"--regid={nobody.pw_gid}",
            "--clear-groups",
            program,
            str(home),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline() == f"status: starting pid {proc.pid}\n"
        assert proc.stdout.readline().startswith(f"status: started pid {proc.pid};")
        assert os.stat(f"/proc/{proc.pid}").st_uid == nobody.pw_uid
        assert send.process_comm(proc.pid) == "qmail-send"
        found = send.holder(home)
        assert found is not None and found.pid == proc.pid
        send.hup(found)
        assert proc.stdout.readline() == "status: got HUP; locals=2 virtualdomains=1\n"
    finally:
        proc.terminate()
        proc.wait(5)
