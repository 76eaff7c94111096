"""qmailkit.update.watch: batches from real inotify (and the polling fallback) on tmp dirs.

Waiting is next_batch with a time-out, never a sleep; "nothing comes" is a
time-out of 0.5 s.  The fallback cases run under ``unshare -Ur`` with the
user namespace's own inotify limits lowered, so no global sysctl is touched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from support import need

from qmailkit import fsutil
from qmailkit.errors import QmailkitError
from qmailkit.update.watch import OVERFLOW, PERIODIC, Batch, Watcher, is_temporary

MODES = ["inotify", "poll"]
NOTHING = 0.5


def watcher(mode: str, dirs: dict | None = None, **options) -> Watcher:
    options.setdefault("rescan_every", None)
    return Watcher(dirs, mode=mode, poll_interval=0.05, **options)  # type: ignore[arg-type]


def changed(*paths: Path) -> Batch:
    return Batch(frozenset(str(p) for p in paths))


def drain(w: Watcher, first_timeout: float = 10.0) -> list[Batch]:
    """Every batch until nothing has come for NOTHING*2 s."""
    batches = [w.next_batch(timeout=first_timeout)]
    assert batches[0] is not None, "no batch at all"
    while (batch := w.next_batch(timeout=NOTHING * 2)) is not None:
        batches.append(batch)
    return batches  # type: ignore[return-value]


@pytest.fixture
def box(tmp_path: Path) -> Path:
    path = tmp_path / "watched"
    path.mkdir()
    return path


@pytest.mark.parametrize(
    "name",
    [
        "cdb.tmp",
        "morercpthosts.tmp",
        ".vpasswd.Ab3xYz",
        "..qmail-foo.q1W2e3",
        ".~tmp~",
        ".vpasswd.swp",
        ".vpasswd.swx",
        ".assign.swo",
        "vpasswd~",
        "#vpasswd#",
        ".#vpasswd",
        "4913",
        ".validrcptto.cdb.qmailkit-tmp.4242",
        "..cdb.qmailkit-tmp.1.qmailkit-tmp.1",
    ],
)
def test_temporary_names(name):
    assert is_temporary(name)


@pytest.mark.parametrize(
    "name",
    [
        "vpasswd",
        "vpasswd.cdb",
        "assign",
        "cdb",
        "locals",
        ".qmail",
        ".qmail-default",
        ".qmail-news:letter",
        ".qmail-owner-default",
        "4914",
        "tmp",
        ".vpasswd.Ab3xY",
        "rcpthosts.qmailkit-tmp.1",
        ".cdb.qmailkit-tmp.x1",
    ],
)
def test_names_that_are_not_temporary(name):
    assert not is_temporary(name)


@pytest.mark.parametrize("mode", MODES)
def test_one_write_is_one_batch_with_that_path(box, mode):
    with watcher(mode, {box: None}) as w:
        assert w.mode == mode
        (box / "locals").write_bytes(b"example.org\n")
        assert w.next_batch(timeout=10) == changed(box / "locals")
        assert w.next_batch(timeout=NOTHING) is None


@pytest.mark.parametrize("mode", MODES)
def test_a_burst_of_1000_writes_gives_few_batches(box, mode):
    with watcher(mode, {box: None}) as w:
        started = time.monotonic()
        for i in range(1000):
            (box / f"f{i:04d}").write_bytes(b"x")
        took = time.monotonic() - started
        batches = drain(w)
    assert set().union(*(b.paths for b in batches)) == {str(box / f"f{i:04d}") for i in range(1000)}
    assert all(not b.rescan for b in batches)
    assert len(batches) <= 2 + took / w.max_delay, (len(batches), took)


@pytest.mark.parametrize("mode", MODES)
def test_1000_atomic_replaces_of_one_file_name_only_it(box, mode):
    target = box / "rcpthosts"
    with watcher(mode, {box: None}) as w:
        started = time.monotonic()
        temp = box / f".rcpthosts{fsutil.TMP_MARK}{os.getpid()}"  # fsutil.staged's name, no fsync
        for i in range(1000):
            temp.write_bytes(b"example.org %d\n" % i)
            os.replace(temp, target)
        took = time.monotonic() - started
        batches = drain(w)
    assert {b.paths for b in batches} == {frozenset({str(target)})}
    assert len(batches) <= 2 + took / w.max_delay, (len(batches), took)


@pytest.mark.parametrize("mode", MODES)
def test_a_stream_of_writes_is_cut_at_max_delay(box, mode):
    stop = threading.Event()

    def keep_writing():
        i = 0
        while not stop.is_set():
            (box / "vpasswd").write_bytes(b"%d\n" % i)
            i += 1
            stop.wait(0.02)

    with watcher(mode, {box: None}, quiet=0.5, max_delay=1.0) as w:
        writer = threading.Thread(target=keep_writing)
        started = time.monotonic()
        writer.start()
        try:
            batch = w.next_batch(timeout=10)
            waited = time.monotonic() - started
            still_writing = writer.is_alive()
        finally:
            stop.set()
            writer.join()
    assert batch == changed(box / "vpasswd")
    assert still_writing
    assert waited < 2.5, waited


@pytest.mark.parametrize("mode", MODES)
def test_temporary_names_are_ignored(box, mode):
    temps = [
        "cdb.tmp",
        ".vpasswd.Ab3xYz",
        ".vpasswd.swp",
        ".vpasswd.swx",
        "vpasswd~",
        "#vpasswd#",
        "4913",
        ".vpasswd.qmailkit-tmp.4242",
    ]
    with watcher(mode, {box: None}) as w:
        for name in temps:
            (box / name).write_bytes(b"x")
        (box / ".~tmp~").mkdir()
        (box / "cdb.tmp").rename(box / "morercpthosts.tmp")
        for name in temps[1:]:
            (box / name).unlink()
        (box / "marker").write_bytes(b"x")
        assert w.next_batch(timeout=10) == changed(box / "marker")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rsync_options", [[], ["--delay-updates"]])
def test_rsync_with_an_old_mtime_names_the_final_file(tmp_path, box, mode, rsync_options):
    (rsync,) = need("rsync")
    source = tmp_path / "source"
    source.mkdir()
    vpasswd = source / "vpasswd"
    vpasswd.write_bytes(b"joe:x:1:0:Joe:/home/vpopmail/domains/example.org/joe:NOQUOTA:pw\n")
    os.utime(vpasswd, (1_000_000_000, 1_000_000_000))
    with watcher(mode, {box: None}) as w:
        subprocess.run([rsync, "-a", *rsync_options, str(vpasswd), f"{box}/"], check=True)
        assert w.next_batch(timeout=10) == changed(box / "vpasswd")
        vpasswd.write_bytes(b"ann:x:1:0:Ann:/home/vpopmail/domains/example.org/ann:NOQUOTA:pw2\n")
        os.utime(vpasswd, (1_000_000_000, 1_000_000_000))
        subprocess.run([rsync, "-a", *rsync_options, str(vpasswd), f"{box}/"], check=True)
        assert w.next_batch(timeout=10) == changed(box / "vpasswd")
    assert (box / "vpasswd").stat().st_mtime == 1_000_000_000
    assert sorted(os.listdir(box)) == ["vpasswd"]


@pytest.mark.parametrize("mode", MODES)
def test_mv_into_and_out_of_the_directory_is_seen(tmp_path, box, mode):
    outside = tmp_path / "assign.new"
    outside.write_bytes(b"=joe:joe:1:1:/home/joe:::\n.\n")
    with watcher(mode, {box: None}) as w:
        subprocess.run(["mv", str(outside), str(box / "assign")], check=True)
        assert w.next_batch(timeout=10) == changed(box / "assign")
        subprocess.run(["mv", str(box / "assign"), str(outside)], check=True)
        assert w.next_batch(timeout=10) == changed(box / "assign")


@pytest.mark.parametrize("mode", MODES)
def test_own_writes_are_dropped_and_later_writes_seen(box, mode):
    target = box / "validrcptto.cdb"
    with watcher(mode, {box: None}) as w:
        with w.own_write(target):
            fsutil.atomic_write(target, b"ours")
        (box / "locals").write_bytes(b"example.org\n")
        assert w.next_batch(timeout=10) == changed(box / "locals")
        target.write_bytes(b"someone else's")
        assert w.next_batch(timeout=10) == changed(target)


@pytest.mark.parametrize("mode", MODES)
def test_only_the_names_of_interest(tmp_path, mode):
    domain = tmp_path / "example.org"
    control = tmp_path / "control"
    domain.mkdir()
    control.mkdir()
    dirs = {domain: lambda name: name.startswith(".qmail-"), control: {"locals", "rcpthosts"}}
    with watcher(mode, dirs) as w:
        for path in (domain / "vpasswd", domain / ".qmail-joe", control / "me"):
            path.write_bytes(b"x")
        (control / "locals").write_bytes(b"x")
        (domain / "joe").mkdir()  # a mailbox: not of interest
        assert w.next_batch(timeout=10) == changed(domain / ".qmail-joe", control / "locals")


def test_queue_overflow_asks_for_a_rescan_and_renews_the_watches(box):
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    files = limit // 2 + 100  # each file: IN_CREATE and IN_CLOSE_WRITE
    if files > 200_000:
        pytest.skip(f"max_queued_events is {limit}: too many files to overflow it")
    domain = box / "example.org"
    with watcher("inotify", {box: {"locals"}, domain: None}) as w:
        for i in range(files):
            (box / f"m{i}").write_bytes(b"")
        domain.mkdir()  # its IN_CREATE is lost in the overflow
        batch = w.next_batch(timeout=30)
        assert batch == Batch(rescan=(OVERFLOW, f"watched directory appeared: {domain}"))
        assert batch.needs_rescan
        (domain / "vpasswd").write_bytes(b"x")
        assert w.next_batch(timeout=10) == changed(domain / "vpasswd")


@pytest.mark.parametrize("mode", MODES)
def test_a_removed_watched_directory_asks_for_a_rescan_and_is_watched_again(box, mode):
    gone = f"watched directory removed or moved away: {box}"
    back = f"watched directory appeared: {box}"
    with watcher(mode, {box: None}) as w:
        box.rmdir()
        assert w.next_batch(timeout=10) == Batch(rescan=(gone,))
        box.mkdir()
        assert w.next_batch(timeout=10) == Batch(rescan=(back,))
        (box / "vpasswd").write_bytes(b"x")
        assert w.next_batch(timeout=10) == changed(box / "vpasswd")
        box.rename(box.with_name("moved"))
        assert w.next_batch(timeout=10) == Batch(rescan=(gone,))
        (box.with_name("moved") / "vpasswd").write_bytes(b"y")
        assert w.next_batch(timeout=NOTHING) is None


@pytest.mark.parametrize("mode", MODES)
def test_a_missing_directory_is_watched_once_it_appears(tmp_path, mode):
    domain = tmp_path / "domains" / "3" / "example.org"
    with watcher(mode, {domain: None}) as w:
        assert w.dirs == [str(domain)]
        (tmp_path / "domains").mkdir()
        (tmp_path / "domains" / "note").write_bytes(b"x")
        assert w.next_batch(timeout=NOTHING) is None
        domain.mkdir(parents=True)
        assert w.next_batch(timeout=10) == Batch(rescan=(f"watched directory appeared: {domain}",))
        (domain / "vpasswd").write_bytes(b"x")
        assert w.next_batch(timeout=10) == changed(domain / "vpasswd")
        (tmp_path / "domains" / "3" / "other").write_bytes(b"x")
        assert w.next_batch(timeout=NOTHING) is None


@pytest.mark.parametrize("mode", MODES)
def test_a_directory_whose_parent_is_renamed_is_waited_for_after_the_tick(tmp_path, mode):
    domain = tmp_path / "a" / "example.org"
    domain.mkdir(parents=True)
    with watcher(mode, {domain: None}, rescan_every=0.5) as w:
        (tmp_path / "a").rename(tmp_path / "b")
        batch = w.next_batch(timeout=10)
        assert (
            batch is not None
            and f"watched directory removed or moved away: {domain}" in batch.rescan
        )
        (tmp_path / "b" / "example.org" / "vpasswd").write_bytes(b"x")
        domain.mkdir(parents=True)
        assert w.next_batch(timeout=10) == Batch(rescan=(f"watched directory appeared: {domain}",))
        (domain / "vpasswd").write_bytes(b"x")
        assert w.next_batch(timeout=10) == changed(domain / "vpasswd")


@pytest.mark.parametrize("mode", MODES)
def test_add_dir_and_remove_dir_at_run_time(tmp_path, box, mode):
    later = tmp_path / "example.net"
    later.mkdir()
    with watcher(mode, {box: None}) as w:
        assert w.add_dir(later, {"vpasswd"})
        assert not w.add_dir(tmp_path / "absent")
        (later / "vpasswd").write_bytes(b"x")
        assert w.next_batch(timeout=10) == changed(later / "vpasswd")
        w.remove_dir(box)
        (box / "vpasswd").write_bytes(b"x")
        assert w.next_batch(timeout=NOTHING) is None
        assert sorted(w.dirs) == [str(tmp_path / "absent"), str(later)]


@pytest.mark.parametrize("mode", MODES)
def test_one_directory_under_two_names(tmp_path, box, mode):
    link = tmp_path / "link"
    link.symlink_to(box)
    with watcher(mode, {box: None, link: None}) as w:
        (box / "locals").write_bytes(b"x")
        assert w.next_batch(timeout=10) == changed(box / "locals", link / "locals")
        w.remove_dir(link)
        (box / "rcpthosts").write_bytes(b"x")
        assert w.next_batch(timeout=10) == changed(box / "rcpthosts")


@pytest.mark.parametrize("mode", MODES)
def test_periodic_rescan(box, mode):
    with watcher(mode, {box: None}, rescan_every=0.3) as w:
        started = time.monotonic()
        assert w.next_batch(timeout=10) == Batch(rescan=(PERIODIC,))
        assert time.monotonic() - started >= 0.3
        (box / "locals").write_bytes(b"x")
        assert w.next_batch(timeout=10) == changed(box / "locals")


def test_forced_inotify_refuses_to_fall_back(tmp_path):
    (unshare,) = need("unshare")
    script = """
        from qmailkit.errors import QmailkitError
        from qmailkit.update.watch import Watcher
        try:
            Watcher(mode="inotify")
        except QmailkitError as err:
            print(err)
    """
    assert run_in_user_namespace(unshare, {"max_inotify_instances": 0}, script) == (
        "cannot use inotify: Too many open files\n"
    )


def test_falls_back_to_polling_when_inotify_init_fails(tmp_path, box):
    (unshare,) = need("unshare")
    script = f"""
        from pathlib import Path
        from qmailkit.update.watch import Watcher
        box = Path({str(box)!r})
        with Watcher({{box: None}}, poll_interval=0.05) as w:
            print(w.mode)
            print(w.fallback_reason)
            (box / "vpasswd").write_bytes(b"x")
            print(w.next_batch(timeout=10))
    """
    assert run_in_user_namespace(unshare, {"max_inotify_instances": 0}, script) == (
        "poll\n"
        "inotify is not available: inotify_init: Too many open files"
        " (fs.inotify.max_user_instances or the open-file limit reached);"
        " polling the watched directories every 0.05 s instead\n"
        f"Batch(paths=frozenset({{{str(box / 'vpasswd')!r}}}), rescan=())\n"
    )


def test_falls_back_to_polling_when_watches_run_out(tmp_path):
    (unshare,) = need("unshare")
    dirs = [tmp_path / f"d{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    script = f"""
        from pathlib import Path
        from qmailkit.update.watch import Watcher
        dirs = [Path(d) for d in {[str(d) for d in dirs]!r}]
        with Watcher({{d: None for d in dirs[:2]}}, poll_interval=0.05) as w:
            print(w.mode)
            w.add_dir(dirs[2])
            print(w.mode)
            print(w.next_batch(timeout=10).rescan)
            (dirs[0] / "locals").write_bytes(b"x")
            (dirs[2] / "locals").write_bytes(b"x")
            print(sorted(w.next_batch(timeout=10).paths))
    """
    reason = (
        "inotify is not available: inotify_add_watch: No space left on device"
        " (fs.inotify.max_user_watches reached: raise it);"
        " polling the watched directories every 0.05 s instead"
    )
    expected_paths = [str(dirs[0] / "locals"), str(dirs[2] / "locals")]
    assert run_in_user_namespace(unshare, {"max_inotify_watches": 2}, script) == (
        f"inotify\npoll\n{(reason,)!r}\n{expected_paths!r}\n"
    )


def run_in_user_namespace(unshare: str, limits: dict[str, int], script: str) -> str:
    """Run ``script`` in a new user namespace whose inotify limits are ``limits``."""
    setup = "".join(f"echo {value} > /proc/sys/user/{key} && " for key, value in limits.items())
    done = subprocess.run(
        [unshare, "-Ur", "sh", "-c", f'{setup}exec "$0" -c "$1"']
        + [sys.executable, textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    return done.stdout


@pytest.mark.parametrize("mode", MODES)
def test_idle_costs_no_cpu(box, mode):
    for i in range(50):
        (box / f"f{i}").write_bytes(b"x")
    script = f"""
        import resource
        from qmailkit.update.watch import Watcher
        with Watcher({{{str(box)!r}: None}}, mode={mode!r}, poll_interval=1.0) as w:
            before = resource.getrusage(resource.RUSAGE_SELF)
            batch = w.next_batch(timeout=3)
            after = resource.getrusage(resource.RUSAGE_SELF)
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        print(batch, round(used * 1000, 3))
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    batch, used_ms = done.stdout.split()
    assert batch == "None"
    assert float(used_ms) < 30, used_ms


def test_forced_poll_mode_has_no_fallback_reason(box):
    with watcher("poll", {box: None}) as w:
        assert (w.mode, w.fallback_reason) == ("poll", None)


def test_a_string_is_not_a_set_of_names(box):
    with pytest.raises(TypeError, match="not one string"):
        Watcher({box: "vpasswd"}, mode="poll")  # type: ignore[dict-item]


def test_an_unwatchable_directory_is_an_error_naming_it(tmp_path):
    # As another user, a 0700 directory cannot be watched (inotify_add_watch: EACCES).
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        try:
            os.close(reader)
            os.setgid(65534)
            os.setuid(65534)
            try:
                Watcher({private: None}, mode="inotify")
                message = "no error"
            except QmailkitError as err:
                message = f"{err.path}|{err}"
            os.write(writer, message.encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        message = pipe.read().decode()
    os.waitpid(pid, 0)
    assert message == f"{private}|{private}: cannot watch directory: Permission denied"
