"""Crash safety: convert-multilog killed with SIGKILL at random moments, then run again.

Whatever the moment, the day files after the final run must equal the
expected output exactly: no line lost, none written twice.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import need
from support.logs import day_files, expected_outputs, label, lines_between, service, write_rotated
from support.supervisors import descendants

T0 = 1_700_000_000 * 10**9
DAY = 86_400 * 10**9


def build(root, seed):
    inputs = {}
    rng = random.Random(seed)
    for k, name in enumerate(("qmail-send", "smtpd", "pop3d")):
        a = lines_between(T0, T0 + 2 * DAY, 12000, seed=seed * 10 + k)
        chunks = [a[i : i + 2000] for i in range(0, 12000, 2000)]
        for chunk in chunks[1:]:  # a split line at the start of some files
            if rng.random() < 0.5:
                chunk.insert(0, b"continued %d" % rng.randrange(1000))
        paths = write_rotated(service(root / "service", name), chunks, start_ns=T0 + 3 * DAY)
        inputs[name] = [p.read_bytes() for p in paths]
    (root / "log").mkdir()
    return inputs


@pytest.mark.parametrize("rename", [False, True])
def test_kill_9_at_random_moments_loses_and_duplicates_nothing(tmp_path, rename):
    need("tai64nlocal")
    env = dict(os.environ, TZ="Europe/Berlin")
    rng = random.Random(42 + rename)
    pristine = tmp_path / "pristine"
    inputs = build(pristine, seed=1)
    want: dict[str, bytes] = {}
    for name, datas in inputs.items():
        want.update(expected_outputs(name, datas, "Europe/Berlin"))
    argv = [sys.executable, "-m", "qmailkit", "convert-multilog", "-q", "--wait", "30"]
    if rename:
        argv.append("-r")
    # how long a whole run takes here: the kills are spread over that time
    calib = tmp_path / "calibration"
    shutil.copytree(pristine, calib)
    started = time.monotonic()
    subprocess.run(
        argv + ["--service-dir", str(calib / "service"), "--log-dir", str(calib / "log")],
        env=env,
        check=True,
    )
    full = time.monotonic() - started
    kills = 0
    for round_ in range(5):
        work = tmp_path / f"round{round_}"
        shutil.copytree(pristine, work)
        args = argv + ["--service-dir", str(work / "service"), "--log-dir", str(work / "log")]
        for attempt in range(4):
            proc = subprocess.Popen(
                args,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
            try:
                proc.wait(timeout=rng.uniform(0.0, full))
            except subprocess.TimeoutExpired:
                workers = descendants(proc.pid)
                if attempt % 2:
                    proc.kill()  # the parent only: its workers must die with it
                else:
                    os.killpg(proc.pid, signal.SIGKILL)  # the whole run
                proc.wait()
                kills += 1
                for pid in workers:  # re-parented to the test (a subreaper): reap them
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(pid, 0)
            proc.stderr.close()
        final = subprocess.run(args, env=env, capture_output=True, check=False)
        assert final.returncode == 0, final.stderr
        assert day_files(work / "log") == want, f"round {round_}"
        for name in inputs:
            left = sorted(p.name for p in (work / "service" / name / "log" / "main").iterdir())
            assert all(n.endswith(".done") for n in left) if rename else left == []
            if rename:
                assert len(left) == len(inputs[name])
        stray = [
            n
            for n in os.listdir(work / "log" / ".convert-multilog")
            if n != "lock" and not n.endswith(".journal")
        ]
        assert stray == []
        shutil.rmtree(work)
    assert kills >= 5  # the first attempt of a round is nearly always interrupted


def test_journal_names_are_forgotten_after_a_commit(tmp_path):
    """A later input with a reused name is converted, not taken as already done."""
    from qmailkit.logs.convert import Options, convert_all

    sdir, ldir = tmp_path / "s", tmp_path / "l"
    ldir.mkdir()
    main = service(sdir, "x")
    write_rotated(main, [[label(T0) + b" one"]], start_ns=T0)
    assert convert_all(Options(service_dir=sdir, log_dir=ldir)).ok
    write_rotated(main, [[label(T0) + b" two"]], start_ns=T0)
    assert convert_all(Options(service_dir=sdir, log_dir=ldir)).ok
    assert sum(v.count(b"\n") for v in day_files(ldir).values()) == 2


class Crash(BaseException):
    """Stands for a kill at a chosen point: nothing after it runs, no clean-up either."""


def _crash_tree(tmp_path):
    a = lines_between(T0, T0 + 2 * DAY, 6000, seed=9)
    sdir, ldir = tmp_path / "s", tmp_path / "l"
    ldir.mkdir()
    paths = write_rotated(service(sdir, "x"), [a[i : i + 1000] for i in range(0, 6000, 1000)])
    return sdir, ldir, [p.read_bytes() for p in paths]


@pytest.mark.parametrize("point", ["after-append", "after-sync", "after-done", "mid-dispose"])
def test_interrupted_at_each_step_then_rerun_is_exact(tmp_path, monkeypatch, point):
    """Each step of a batch interrupted (in-process, at the OS boundary), then a normal rerun.

    after-append: at the first fsync of a day file; after-sync: as the journal is
    marked done; after-done: at the first unlink of an input; mid-dispose: at the third.
    """
    need("tai64nlocal")
    from qmailkit.logs import convert

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    sdir, ldir, inputs = _crash_tree(tmp_path)
    real = {n: getattr(os, n) for n in ("fsync", "rename", "unlink")}
    unlinks = [0]

    def fsync(fd):
        if point == "after-append" and os.readlink(f"/proc/self/fd/{fd}").startswith(f"{ldir}/x."):
            raise Crash(point)
        return real["fsync"](fd)

    def rename(src_, dst, **kw):
        if (
            point == "after-sync"
            and str(dst).endswith(".journal")
            and b'"done": true' in Path(src_).read_bytes()
        ):
            raise Crash(point)
        return real["rename"](src_, dst, **kw)

    def unlink(path, **kw):
        if "/log/main/" in os.fspath(path):
            unlinks[0] += 1
            if unlinks[0] == {"after-done": 1, "mid-dispose": 3}.get(point):
                raise Crash(point)
        return real["unlink"](path, **kw)

    for name, fn in (("fsync", fsync), ("rename", rename), ("unlink", unlink)):
        monkeypatch.setattr(os, name, fn)
    opts = convert.Options(service_dir=sdir, log_dir=ldir, jobs=1, batch_bytes=120_000)
    with pytest.raises(Crash):
        convert.convert_all(opts)
    for name, fn in real.items():
        monkeypatch.setattr(os, name, fn)
    res = convert.convert_all(opts)
    assert res.ok, res.services[0].error
    assert day_files(ldir) == expected_outputs("x", inputs, "UTC")
    assert list((sdir / "x" / "log" / "main").iterdir()) == []
    monkeypatch.undo()
    time.tzset()


def test_kill_9_with_many_small_batches(tmp_path):
    """The same kills with a batch per input file: commits between the kills."""
    need("tai64nlocal")
    rng = random.Random(7)
    inputs = build(tmp_path / "tree", seed=2)
    want: dict[str, bytes] = {}
    for name, datas in inputs.items():
        want.update(expected_outputs(name, datas, "UTC"))
    code = (
        "import sys; from pathlib import Path; from qmailkit.logs import convert as c;"
        "r = c.convert_all(c.Options(service_dir=Path(sys.argv[1]), log_dir=Path(sys.argv[2]),"
        " batch_bytes=1, wait=30)); sys.exit(0 if r.ok else 111)"
    )
    args = [
        sys.executable,
        "-c",
        code,
        str(tmp_path / "tree" / "service"),
        str(tmp_path / "tree" / "log"),
    ]
    env = dict(os.environ, TZ="UTC")
    # Kill times scale with how long a whole run takes here (on a copy of the tree):
    # fixed times would let a fast machine finish before any kill.
    shutil.copytree(tmp_path / "tree", tmp_path / "copy", symlinks=True)
    started = time.monotonic()
    subprocess.run(
        [*args[:3], str(tmp_path / "copy" / "service"), str(tmp_path / "copy" / "log")],
        env=env,
        check=True,
    )
    whole = time.monotonic() - started
    kills = 0
    for _ in range(12):
        proc = subprocess.Popen(args, env=env, start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(0.1, 0.6) * whole)  # each kill leaves less to do
        except subprocess.TimeoutExpired:
            workers = descendants(proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            for pid in workers:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)
    assert subprocess.run(args, env=env, check=False).returncode == 0
    assert day_files(tmp_path / "tree" / "log") == want
    assert kills >= 3
