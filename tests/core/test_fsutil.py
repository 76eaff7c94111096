"""fsutil: atomic replacement, stale temps, locks, a full disk."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qmailkit import fsutil
from qmailkit.errors import LockBusy, QmailkitError


def temps(d):
    return sorted(p.name for p in d.iterdir() if fsutil.TMP_MARK in p.name)


def test_atomic_write_mode_and_content(tmp_path):
    target = tmp_path / "f.cdb"
    old = os.umask(0o077)
    try:
        fsutil.atomic_write(target, b"one", mode=0o640)
    finally:
        os.umask(old)
    assert target.read_bytes() == b"one"
    assert target.stat().st_mode & 0o7777 == 0o640
    fsutil.atomic_write(target, lambda fh: fh.write(b"two"), mode=0o644)
    assert target.read_bytes() == b"two"
    assert target.stat().st_mode & 0o7777 == 0o644
    assert temps(tmp_path) == []


def test_failure_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), fsutil.atomic_file(target) as fh:
        fh.write(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert temps(tmp_path) == []


def test_stale_temp_of_dead_writer_is_removed(tmp_path):
    target = tmp_path / "f"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    stale = tmp_path / f".f{fsutil.TMP_MARK}{dead}"
    stale.write_bytes(b"interrupted")
    live = subprocess.Popen(["sleep", "30"])
    try:
        busy = tmp_path / f".f{fsutil.TMP_MARK}{live.pid}"
        busy.write_bytes(b"someone else writing")
        fsutil.atomic_write(target, b"new")
        assert temps(tmp_path) == [busy.name]
    finally:
        live.kill()
        live.wait()
    assert target.read_bytes() == b"new"


def test_lock_excludes_second_holder(tmp_path):
    lock = tmp_path / "lock"
    with fsutil.locked(lock):
        with pytest.raises(LockBusy, match="holds the lock"), fsutil.locked(lock):
            pass
        with pytest.raises(LockBusy), fsutil.locked(lock, wait=0.1):
            pass
    with fsutil.locked(lock):  # free again
        pass


def test_lock_held_by_other_process(tmp_path):
    lock = tmp_path / "lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT);"
                "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()"
            ),
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        with pytest.raises(LockBusy) as info, fsutil.locked(lock, what="convert-multilog"):
            pass
        assert str(info.value).startswith(f"{lock}: convert-multilog holds the lock")
    finally:
        holder.stdin.close()
        holder.wait()
    with fsutil.locked(lock, wait=5):
        pass


@pytest.fixture
def tiny_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_full_disk_keeps_old_file(tiny_fs):
    target = tiny_fs / "validrcptto.cdb"
    fsutil.atomic_write(target, b"x" * 1000)
    with pytest.raises(QmailkitError, match="No space left on device"):
        fsutil.atomic_write(target, b"y" * 200_000)
    assert target.read_bytes() == b"x" * 1000
    assert temps(tiny_fs) == []


def test_read_text_lines_errors(tmp_path):
    with pytest.raises(QmailkitError, match="No such file"):
        fsutil.read_text_lines(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.write_bytes(b"ok\n\xff\n")
    with pytest.raises(QmailkitError, match=r"bad:2: not valid utf-8"):
        fsutil.read_text_lines(bad)


# --- safe reading and appending (what root does in directories others can write) ---


def test_open_regular_refuses_fifo_without_hanging(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(fsutil.NotRegular, match="is a FIFO") as info:
        fsutil.read_bounded(fifo)
    assert info.value.path == str(fifo)


def test_open_regular_blocking_false_keeps_o_nonblock(tmp_path):
    (tmp_path / "f").write_bytes(b"data")
    fd = fsutil.open_regular(tmp_path / "f", blocking=False)
    try:
        assert not os.get_blocking(fd)
        assert os.read(fd, 10) == b"data"
    finally:
        os.close(fd)
    fd = fsutil.open_regular(tmp_path / "f")
    try:
        assert os.get_blocking(fd)
    finally:
        os.close(fd)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(fsutil.NotRegular, match="is a FIFO"):
        fsutil.open_regular(fifo, blocking=False)


def test_open_regular_directory_and_device(tmp_path):
    with pytest.raises(fsutil.NotRegular, match="is a directory"):
        fsutil.read_bounded(tmp_path)
    with pytest.raises(fsutil.NotRegular, match="character device"):
        fsutil.read_bounded("/dev/zero")


def test_open_regular_symlink_followed_only_when_asked(tmp_path):
    (tmp_path / "real").write_bytes(b"data")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert fsutil.read_bounded(tmp_path / "link") == b"data"
    with pytest.raises(fsutil.NotRegular, match="symbolic link"):
        fsutil.read_bounded(tmp_path / "link", follow=False)
    (tmp_path / "zero").symlink_to("/dev/zero")
    with pytest.raises(fsutil.NotRegular, match="character device"):
        fsutil.read_bounded(tmp_path / "zero")


def test_read_bounded_limit(tmp_path):
    f = tmp_path / "big"
    f.write_bytes(b"x" * 100)
    assert fsutil.read_bounded(f, 100) == b"x" * 100
    with pytest.raises(QmailkitError, match="larger than 99 bytes") as info:
        fsutil.read_bounded(f, 99)
    assert info.value.exit_code == 100
    with pytest.raises(FileNotFoundError):
        fsutil.read_bounded(tmp_path / "missing")


def test_open_append_never_through_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep\n")
    (tmp_path / "day").symlink_to(victim)
    with pytest.raises(fsutil.NotRegular, match="symbolic link"):
        fsutil.open_append(tmp_path / "day", create_mode=0o640)
    assert victim.read_bytes() == b"keep\n"
    fd = fsutil.open_append(tmp_path / "new", create_mode=0o640)
    os.write(fd, b"a")
    os.close(fd)
    fd = fsutil.open_append(tmp_path / "new")
    os.write(fd, b"b")
    os.close(fd)
    assert (tmp_path / "new").read_bytes() == b"ab"
    with pytest.raises(FileNotFoundError):
        fsutil.open_append(tmp_path / "absent")
    (tmp_path / "dir").mkdir()
    with pytest.raises(fsutil.NotRegular, match="dir: is a directory, not a regular file"):
        fsutil.open_append(tmp_path / "dir", create_mode=0o640)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(fsutil.NotRegular, match="fifo: is not a regular file"):
        fsutil.open_append(tmp_path / "fifo")  # at once: never waits for a reader


def test_a_directory_where_the_file_goes_is_named_before_any_temp(tmp_path):
    # A18: the rename at the end failed with "TEMP: cannot write PATH: Is a directory"
    target = tmp_path / "auth.cdb"
    target.mkdir()
    with pytest.raises(fsutil.NotRegular) as caught, fsutil.staged(target):
        pytest.fail("staged a file over a directory")
    assert str(caught.value) == (
        f"{target}: is a directory, not a regular file (replace it with a regular file)"
    )
    assert sorted(os.listdir(tmp_path)) == ["auth.cdb"]
    # a symlink to a directory is replaced (rename acts on the name), as any symlink is
    link = tmp_path / "link.cdb"
    link.symlink_to(target)
    fsutil.atomic_write(link, b"new")
    assert link.read_bytes() == b"new" and not link.is_symlink() and target.is_dir()


def test_private_dir_refuses_symlink_and_loose_modes(tmp_path):
    state = tmp_path / "state"
    assert fsutil.private_dir(state) == str(state)
    assert state.stat().st_mode & 0o777 == 0o700
    fsutil.private_dir(state)  # again: fine
    os.chmod(state, 0o755)
    with pytest.raises(QmailkitError, match="mode 0755"):
        fsutil.private_dir(state)
    evil = tmp_path / "evil"
    evil.mkdir(mode=0o700)
    os.rmdir(state)
    state.symlink_to(evil)
    with pytest.raises(QmailkitError, match="symbolic link"):
        fsutil.private_dir(state)


def test_atomic_write_does_not_follow_planted_temp_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    target = tmp_path / "f"
    tmp = tmp_path / f".f{fsutil.TMP_MARK}{os.getpid()}"
    tmp.symlink_to(victim)
    fsutil.atomic_write(target, b"new")
    assert victim.read_bytes() == b"keep"
    assert target.read_bytes() == b"new"


def _dead_pid() -> str:
    return subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()


def test_staged_replaces_only_on_commit(tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"old")
    with fsutil.staged(target, mode=0o640) as st:
        st.file.write(b"new")
        st.seal()
        assert st.tmp == str(tmp_path / f".f{fsutil.TMP_MARK}{os.getpid()}")
        assert Path(st.tmp).read_bytes() == b"new" and target.read_bytes() == b"old"
    assert target.read_bytes() == b"old" and temps(tmp_path) == []  # not committed
    with fsutil.staged(target, mode=0o640) as st:
        st.file.write(b"new")
        st.commit()
    assert target.read_bytes() == b"new" and temps(tmp_path) == []
    assert target.stat().st_mode & 0o7777 == 0o640


def test_stale_nested_temps_are_removed(tmp_path):
    # Older mkauth staged through a second temp: ..F.qmailkit-tmp.P.qmailkit-tmp.P (A13).
    dead = _dead_pid()
    mark = fsutil.TMP_MARK
    nested = [
        f"..auth.cdb{mark}{dead}{mark}{dead}",
        f".auth.cdb{mark}{dead}",
        f"...auth.cdb{mark}{dead}{mark}{dead}{mark}{dead}",
    ]
    others = [
        f".other{mark}{dead}",
        f"..auth.cdbx{mark}{dead}{mark}{dead}",
        f".auth.cdb{mark}{dead}x",
        "auth.cdb.lock",
    ]
    for name in nested + others:
        (tmp_path / name).write_bytes(b"x")
    assert sorted(fsutil.remove_stale_temps(tmp_path / "auth.cdb")) == sorted(nested)
    assert sorted(os.listdir(tmp_path)) == sorted(others)


def test_lock_path_is_hidden_beside_the_target(tmp_path):
    assert fsutil.lock_path(tmp_path / "auth.cdb") == str(tmp_path / ".auth.cdb.lock")
    assert fsutil.lock_path("users/cdb") == "users/.cdb.lock"


def test_poll_returns_the_first_true_value_and_the_last_false_one():
    seen = iter([0, "", None, "ready", "later"])
    assert fsutil.poll(lambda: next(seen), timeout=5, interval=0.001) == "ready"
    calls = []
    started = time.monotonic()
    assert fsutil.poll(lambda: calls.append(1) or [], timeout=0.2, interval=0.01) == []
    assert 0.2 <= time.monotonic() - started < 2
    assert len(calls) >= 3  # at least: first, some in between, once after the deadline


def test_poll_or_fail_names_what_it_waited_for():
    with pytest.raises(QmailkitError, match=r"^timed out after 0.05 s waiting for the moon$"):
        fsutil.poll_or_fail(lambda: False, 0.05, "the moon")
    assert fsutil.poll_or_fail(lambda: 7, 1, "seven") == 7
