"""convert-multilog on generated trees: exact bytes, continuations, options, failures."""

from __future__ import annotations

import errno
import grp
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
import support.logs as logs_helpers
from support import need
from support.logs import (
    day_files,
    expected_outputs,
    label,
    lines_between,
    run_cli,
    service,
    write_rotated,
)

from qmailkit.errors import QmailkitError
from qmailkit.logs import journal, tai64n
from qmailkit.logs.convert import Options, convert_all

T0 = 1_700_000_000 * 10**9  # 2023-11-14 22:13:20 UTC
DAY = 86_400 * 10**9
_real_fsync = os.fsync


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def tree(tmp_path: Path, services: dict[str, list[list[bytes]]]):
    sdir, ldir = tmp_path / "service", tmp_path / "log"
    ldir.mkdir(parents=True)
    inputs = {}
    for name, chunks in services.items():
        paths = write_rotated(service(sdir, name), chunks)
        inputs[name] = [p.read_bytes() for p in paths]
    return sdir, ldir, inputs


def opts(sdir: Path, ldir: Path, **kw) -> Options:
    return Options(service_dir=sdir, log_dir=ldir, **kw)


def expected_all(inputs: dict[str, list[bytes]], tz: str | None = None) -> dict[str, bytes]:
    want: dict[str, bytes] = {}
    for name, datas in inputs.items():
        want.update(expected_outputs(name, datas, tz))
    return want


# -- exact bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata"])
def test_exact_bytes_against_tai64nlocal_in_several_zones(tmp_path, tz):
    need("tai64nlocal")
    # three days around the 2023-11-05 US DST change; two services, several files each
    start = T0 - 10 * DAY
    a = lines_between(start, start + 3 * DAY, 3000, seed=1)
    b = lines_between(start, start + 3 * DAY, 1000, seed=2, text=b"smtp %% \x00 \xff bytes")
    sdir, ldir, inputs = tree(
        tmp_path,
        {
            "qmail-send": [a[:1000], a[1000:2200], a[2200:]],
            "smtpd": [b[:10], b[10:]],
        },
    )
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir), "--jobs", "2", env={"TZ": tz})
    assert res.returncode == 0, res.stderr
    assert day_files(ldir) == expected_all(inputs, tz)
    assert len(day_files(ldir)) >= 6
    assert not list((sdir / "smtpd" / "log" / "main").iterdir())  # inputs removed
    out = res.stdout.decode()
    assert "qmail-send: 3 files, 3000 lines into" in out
    assert "smtpd: 2 files, 1000 lines into" in out


EDGES = [
    ("right/UTC", 1_483_228_800),  # the leap second at the end of 2016
    ("Europe/Berlin", 1_698_541_200),  # 2023-10-29 03:00 CEST -> 02:00 CET
    ("Australia/Lord_Howe", 1_680_445_800),  # a 30-minute DST change
    ("Asia/Kathmandu", 1_700_000_000),  # UTC+5:45
    ("Africa/Monrovia", 63_072_000),  # 1972: from UTC-0:44:30 to UTC
    ("UTC", 0),  # 1970
    ("Europe/Berlin", 2_147_483_647),  # 2038
    ("America/New_York", 4_102_444_800),  # 2100
]


@pytest.mark.parametrize(("tz", "when"), EDGES)
def test_exact_bytes_around_zone_changes_leap_seconds_and_epochs(tmp_path, tz, when):
    need("tai64nlocal")
    start = (when - 4000) * 10**9
    a = lines_between(max(start, 0), (when + 4000) * 10**9, 800, seed=when % 1000)
    sdir, ldir, inputs = tree(tmp_path, {"x": [a[:400], a[400:]]})
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir), env={"TZ": tz})
    assert res.returncode == 0, res.stderr
    assert day_files(ldir) == expected_all(inputs, tz)


def test_sequential_and_parallel_give_the_same_files(tmp_path, utc):
    a = lines_between(T0, T0 + 2 * DAY, 2000, seed=3)
    results = []
    for jobs in (1, 3):
        base = tmp_path / f"j{jobs}"
        sdir, ldir, _ = tree(base, {"x": [a[:700], a[700:]], "y": [a[:5]], "z": [a[5:9]]})
        res = convert_all(opts(sdir, ldir, jobs=jobs))
        assert res.ok
        results.append(day_files(ldir))
    assert results[0] == results[1]


def test_last_line_without_newline_gets_one(tmp_path, utc):
    sdir, ldir = tmp_path / "s", tmp_path / "l"
    ldir.mkdir()
    main = service(sdir, "x")
    (main / "@400000006553f10000000000.u").write_bytes(label(T0) + b" cut off")
    assert convert_all(opts(sdir, ldir)).ok
    assert day_files(ldir) == {"x.2023-11-14": b"2023-11-14 22:13:20.000000000 cut off\n"}


# -- continuation lines -----------------------------------------------------------------------


def test_continuations_follow_the_previous_line_across_files(tmp_path, utc):
    before = label(T0 + 100 * 10**9) + b" last line of the 14th"
    after = label(T0 + 2 * 3600 * 10**9) + b" first line of the 15th"
    sdir, ldir, _ = tree(tmp_path, {"x": [[before], [b"tail of a split line", after]]})
    assert convert_all(opts(sdir, ldir)).ok
    assert day_files(ldir) == {
        "x.2023-11-14": b"2023-11-14 22:15:00.000000000 last line of the 14th\n"
        b"tail of a split line\n",
        "x.2023-11-15": b"2023-11-15 00:13:20.000000000 first line of the 15th\n",
    }


def test_leading_continuations_go_with_the_first_dated_line(tmp_path, utc):
    first = label(T0 + 2 * 3600 * 10**9) + b" dated"
    sdir, ldir, _ = tree(tmp_path, {"x": [[b"", b"orphan 1", b"orphan 2", first]]})
    assert convert_all(opts(sdir, ldir)).ok
    assert day_files(ldir) == {
        "x.2023-11-15": b"\norphan 1\norphan 2\n2023-11-15 00:13:20.000000000 dated\n"
    }


def test_service_logging_without_t_loses_nothing(tmp_path, utc):
    """The original dropped every line of such a service; we file them by rotation date."""
    sdir, ldir = tmp_path / "s", tmp_path / "l"
    ldir.mkdir()
    main = service(sdir, "plain")
    day1 = main / (label(T0).decode() + ".s")
    day1.write_bytes(b"no label 1\nno label 2\n")
    day2 = main / (label(T0 + DAY).decode() + ".s")
    day2.write_bytes(b"no label 3\n")
    odd = main / "@odd-name.s"  # not a label: its mtime decides
    odd.write_bytes(b"no label 4\n")
    os.utime(odd, (T0 // 10**9 + 2 * 86400, T0 // 10**9 + 2 * 86400))
    res = convert_all(opts(sdir, ldir))
    assert res.ok and res.services[0].lines == 4
    assert day_files(ldir) == {
        "plain.2023-11-14": b"no label 1\nno label 2\n",
        "plain.2023-11-15": b"no label 3\n",
        "plain.2023-11-16": b"no label 4\n",
    }


def test_continuation_state_carries_over_to_the_next_run(tmp_path, utc):
    sdir, ldir, _ = tree(tmp_path, {"x": [[label(T0) + b" a"]]})
    assert convert_all(opts(sdir, ldir)).ok
    main = sdir / "x" / "log" / "main"
    (main / (label(T0 + 3 * DAY).decode() + ".s")).write_bytes(
        b"split tail\n" + label(T0 + 3 * DAY) + b" b\n"
    )
    assert convert_all(opts(sdir, ldir)).ok
    assert day_files(ldir)["x.2023-11-14"] == b"2023-11-14 22:13:20.000000000 a\nsplit tail\n"


# -- what is read, what is left ---------------------------------------------------------------


def test_only_rotated_files_are_read_and_r_keeps_them_as_done(tmp_path, utc):
    sdir, ldir, _ = tree(tmp_path, {"x": [[label(T0) + b" one"], [label(T0 + 10**9) + b" two"]]})
    main = sdir / "x" / "log" / "main"
    (main / "current").write_bytes(label(T0) + b" current is never read\n")
    (main / "@400000006553f10000000000.s.done").write_bytes(b"old done\n")
    for other in ("lock", "state", "newstate", "config", "processed"):
        (main / other).write_bytes(b"")
    before = sorted(p.name for p in main.iterdir() if p.name.endswith(".s"))
    res = run_cli("-rv", "--service-dir", str(sdir), "--log-dir", str(ldir), env={"TZ": "UTC"})
    assert res.returncode == 0, res.stderr
    assert day_files(ldir) == {
        "x.2023-11-14": b"2023-11-14 22:13:20.000000000 one\n2023-11-14 22:13:21.000000000 two\n"
    }
    names = sorted(p.name for p in main.iterdir())
    assert [n for n in names if n.endswith(".s.done")] == sorted(
        [n + ".done" for n in before] + ["@400000006553f10000000000.s.done"]
    )
    assert (main / "current").read_bytes().endswith(b"never read\n")
    err = res.stderr.decode()
    for msg in (
        "Starting",
        f"Reading {main}/{before[0]}",
        f"Adding to {ldir}/x.2023-11-14",
        f"Closing {ldir}/x.2023-11-14 (2 lines added)",
        f"Done reading {main}/{before[1]} (1 lines read) (renamed)",
        "Done",
    ):
        assert f"convert-multilog: {msg}" in err, msg
    # nothing left to do: a second run changes nothing
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir))
    assert res.returncode == 0 and b"x: 0 files, 0 lines into 0 day files" in res.stdout


def test_exclude_by_option_and_environment(tmp_path, utc):
    one = [[label(T0) + b" x"]]
    sdir, ldir, _ = tree(tmp_path, {"a": one, "b": one, "c": one, "d": one})
    (sdir / "no-log-here").mkdir()
    res = run_cli(
        "-v",
        "--service-dir",
        str(sdir),
        "--log-dir",
        str(ldir),
        "--exclude",
        "a",
        env={"QMAILKIT_CONVERT_EXCLUDE": "b, c"},
    )
    assert res.returncode == 0, res.stderr
    assert sorted(day_files(ldir)) == ["d.2023-11-14"]
    assert f"Skipping {sdir}/a".encode() in res.stderr
    assert f"No log/main directory under {sdir}/no-log-here".encode() in res.stderr
    assert (sdir / "a" / "log" / "main").iterdir().__next__()  # input kept


def test_gzipped_rotated_files_are_read(tmp_path, utc):
    import gzip

    sdir, ldir = tmp_path / "s", tmp_path / "l"
    ldir.mkdir()
    main = service(sdir, "x")
    (main / (label(T0).decode() + ".s")).write_bytes(gzip.compress(label(T0) + b" zipped\n"))
    assert convert_all(opts(sdir, ldir)).ok
    assert day_files(ldir) == {"x.2023-11-14": b"2023-11-14 22:13:20.000000000 zipped\n"}


def test_new_files_get_the_mode_and_existing_files_are_appended(tmp_path, utc):
    sdir, ldir, _ = tree(tmp_path, {"x": [[label(T0) + b" new"]]})
    (ldir / "x.2023-11-14").write_bytes(b"already here\n")
    os.chmod(ldir / "x.2023-11-14", 0o600)
    (sdir / "y" / "log" / "main").mkdir(parents=True)
    write_rotated(sdir / "y" / "log" / "main", [[label(T0) + b" y"]])
    res = run_cli("--mode", "0604", "--service-dir", str(sdir), "--log-dir", str(ldir))
    assert res.returncode == 0, res.stderr
    assert (ldir / "x.2023-11-14").read_bytes().startswith(b"already here\n2023")
    assert stat.S_IMODE((ldir / "x.2023-11-14").stat().st_mode) == 0o600
    assert stat.S_IMODE((ldir / "y.2023-11-14").stat().st_mode) == 0o604
    if os.geteuid() == 0:
        write_rotated(sdir / "y" / "log" / "main", [[label(T0 + 2 * DAY) + b" y"]])
        res = run_cli(
            "--owner", "nobody:nogroup", "--service-dir", str(sdir), "--log-dir", str(ldir)
        )
        assert res.returncode == 0, res.stderr
        st_ = (ldir / "y.2023-11-16").stat()
        assert (st_.st_uid, stat.S_IMODE(st_.st_mode)) == (65534, 0o640)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root gives day files away")
def test_owner_forms_as_chown_reads_them_and_a_bare_user_takes_the_login_group(tmp_path, utc):
    from qmailkit.cli.logs import convert_multilog_main

    sdir, ldir, _ = tree(tmp_path, {"x": [[label(T0) + b" x"]]})
    main = sdir / "x" / "log" / "main"
    adm = grp.getgrnam("adm").gr_gid
    forms = [
        ([], (0, adm)),  # the default: root, group adm
        (["--owner", "daemon"], (1, 1)),  # daemon's login group
        (["--owner", "1"], (1, 1)),
        (["--owner", "daemon:"], (1, 1)),
        (["--owner", "daemon:adm"], (1, adm)),
        (["--owner", ":adm"], (0, adm)),  # the user stays root
        (["--owner", "nobody:0"], (65534, 0)),
    ]
    for day, (args, owner) in enumerate(forms):
        if day:
            write_rotated(main, [[label(T0 + day * DAY) + b" x"]], start_ns=T0 + day * DAY)
        argv = [*args, "-q", "--service-dir", str(sdir), "--log-dir", str(ldir)]
        assert convert_multilog_main(argv) == 0
        date = time.strftime("%Y-%m-%d", time.gmtime(T0 // 10**9 + day * 86400))
        info = (ldir / f"x.{date}").stat()
        assert ((info.st_uid, info.st_gid), args) == (owner, args)


def test_default_mode_is_0640(tmp_path, utc):
    sdir, ldir, _ = tree(tmp_path, {"x": [[label(T0) + b" new"]]})
    assert convert_all(opts(sdir, ldir)).ok
    assert stat.S_IMODE((ldir / "x.2023-11-14").stat().st_mode) == 0o640


# -- malformed input --------------------------------------------------------------------------

MALFORMED = [
    b"@short 123",
    b"@400000006553f100000000004A upper-case hex",
    b"@4000000065 short label",
    b"@400000006553f1003b9aca00 nanoseconds too big",
    b"@400000006553f10000000000",  # a label and nothing else
    b"@400000006553f10000000000x glued text",
    b"@400000006553f10000000000\ttab",
    b"@ffffffffffffffff00000000 year out of range",
    b"\x00\xff\xfe binary \r with CR",
    b"@",
    b"",
    b"2023-11-14 22:13:20 already a date, no label",
]


def test_malformed_corpus_passes_through_unchanged_and_nothing_is_lost(tmp_path, utc):
    lines = [label(T0) + b" good"] + MALFORMED + [label(T0 + DAY) + b" good again"]
    sdir, ldir, _ = tree(tmp_path, {"x": [lines]})
    res = convert_all(opts(sdir, ldir))
    assert res.ok, res.services[0].error
    assert res.services[0].lines == len(lines)
    local = tai64n.LocalTime()

    def conv(line):
        try:
            return local.convert(line)
        except (OverflowError, ValueError, OSError):
            return line

    every = b"".join(sorted(day_files(ldir).values(), key=len))
    for line in lines:
        assert conv(line) + b"\n" in every
    assert sum(v.count(b"\n") for v in day_files(ldir).values()) == len(lines)


# -- failures ---------------------------------------------------------------------------------


def test_unwritable_day_file_fails_that_service_only(tmp_path, utc):
    sdir, ldir, inputs = tree(
        tmp_path,
        {
            "bad": [[label(T0) + b" one"], [label(T0 + DAY) + b" two"]],
            "good": [[label(T0) + b" fine"]],
        },
    )
    (ldir / "bad.2023-11-15").mkdir()  # a directory where the day file should go
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir), "--jobs", "2")
    assert res.returncode == 111
    main = sdir / "bad" / "log" / "main"
    second = min(main.iterdir())
    assert res.stderr.decode() == (
        f"convert-multilog: bad: 1 file, 1 line into 1 day file; FAILED: {ldir}/bad.2023-11-15: "
        f"is a directory, not a regular file (while converting {second}) (day files must be "
        "regular files: remove it or move it away; the input is kept and converted on the "
        "next run)\n"
    )
    assert "good: 1 file, 1 line into 1 day file" in res.stdout.decode()
    assert [p.read_bytes() for p in sorted(main.iterdir())] == [inputs["bad"][1]]  # kept
    assert (ldir / "bad.2023-11-14").read_bytes() == b"2023-11-14 22:13:20.000000000 one\n"
    os.rmdir(ldir / "bad.2023-11-15")
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir))
    assert res.returncode == 0, res.stderr
    assert day_files(ldir) == expected_all(inputs)


def test_unwritable_log_dir_is_a_clear_error_and_touches_nothing(tmp_path, monkeypatch):
    sdir, ldir, _ = tree(tmp_path, {"x": [[label(T0) + b" x"]]})
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(tmp_path / "missing"))
    assert res.returncode == 111
    assert res.stderr.decode() == (
        f"qmailkit convert-multilog: fatal: {tmp_path}/missing: the log directory does not exist "
        "(create it or give --log-dir)\n"
    )
    if os.geteuid() != 0:
        os.chmod(ldir, 0o500)
        res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir))
        assert res.returncode == 111
        assert "cannot create the state directory: Permission denied" in res.stderr.decode()
    else:  # root writes anywhere: a read-only file system refuses it
        ro = tmp_path / "ro"
        ro.mkdir()
        if _mount(ro, "ro,size=64k"):
            try:
                res = run_cli("--service-dir", str(sdir), "--log-dir", str(ro))
            finally:
                subprocess.run(["umount", str(ro)], check=True)
            assert res.returncode == 111
            assert "cannot create the state directory: Read-only file system" in res.stderr.decode()
        else:  # no mount here: the same refusal, injected

            def refuse(path, *a, **kw):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

            monkeypatch.setattr(os, "mkdir", refuse)
            with pytest.raises(QmailkitError, match="cannot create the state dir"):
                convert_all(opts(sdir, ldir))
            monkeypatch.undo()
    assert len(list((sdir / "x" / "log" / "main").iterdir())) == 1


def test_full_disk_keeps_input_and_rolls_back(tmp_path, monkeypatch, utc):
    """ENOSPC in the middle of an append: nothing half-written, input kept, rerun exact."""
    a = lines_between(T0, T0 + 2 * DAY, 3000, seed=5)
    sdir, ldir, inputs = tree(tmp_path, {"x": [a[:1000], a[1000:2000], a[2000:]]})
    (ldir / "x.2023-11-15").write_bytes(b"before\n")
    real_write = os.write
    budget = [50_000]

    def full_write(fd, data):
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data[: budget[0]]))
        budget[0] -= n
        return n

    monkeypatch.setattr(os, "write", full_write)
    res = convert_all(opts(sdir, ldir, jobs=1))
    monkeypatch.undo()
    err = res.services[0].error
    assert err and "No space left on device" in err and "free some space" in err
    done = 3 - len(list((sdir / "x" / "log" / "main").iterdir()))
    assert done == res.services[0].files < 3
    want = expected_outputs("x", inputs["x"][:done])
    got = day_files(ldir)
    got["x.2023-11-15"] = got["x.2023-11-15"].removeprefix(b"before\n")
    assert {k: v for k, v in got.items() if v} == want
    assert convert_all(opts(sdir, ldir)).ok
    final = day_files(ldir)
    assert final["x.2023-11-15"].startswith(b"before\n")
    final["x.2023-11-15"] = final["x.2023-11-15"][7:]
    assert final == expected_all(inputs)


def _mount(path: Path, options: str) -> bool:
    """Mount a tmpfs (root only); False where this machine does not allow it."""
    if os.geteuid() != 0:
        return False
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return res.returncode == 0


def test_full_file_system(tmp_path, monkeypatch, utc):
    """A really full file system (a 256 KiB tmpfs) where mount works, else injected ENOSPC."""
    ldir = tmp_path / "small"
    ldir.mkdir()
    mounted = _mount(ldir, "size=256k")
    if not mounted:
        real_write, left = os.write, [256 << 10]

        def full_write(fd, data):
            if left[0] <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = real_write(fd, bytes(data[: left[0]]))
            left[0] -= n
            return n

        monkeypatch.setattr(os, "write", full_write)
    try:
        a = lines_between(T0, T0 + DAY, 12000, seed=6)
        sdir = tmp_path / "s"
        paths = write_rotated(service(sdir, "x"), [a[i : i + 2000] for i in range(0, 12000, 2000)])
        inputs = [p.read_bytes() for p in paths]
        res = convert_all(opts(sdir, ldir, jobs=1))
        monkeypatch.undo()
        assert not res.ok and "No space left on device" in res.services[0].error
        done = res.services[0].files
        assert 0 < done < 6
        assert day_files(ldir) == expected_outputs("x", inputs[:done])
        left_files = sorted((sdir / "x" / "log" / "main").iterdir())
        assert [p.read_bytes() for p in left_files] == inputs[done:]
    finally:
        if mounted:
            subprocess.run(["umount", str(ldir)], check=True)


def test_second_run_exits_while_the_first_holds_the_lock(tmp_path, utc):
    from qmailkit import fsutil

    sdir, ldir, _ = tree(tmp_path, {"x": [[label(T0) + b" x"]]})
    sdir_state = journal.state_dir(ldir)
    with fsutil.locked(sdir_state / "lock"):
        res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir))
        assert res.returncode == 111
        assert res.stderr.decode() == (
            f"qmailkit convert-multilog: fatal: {sdir_state}/lock: another convert-multilog "
            "holds the lock (try again when it has finished)\n"
        )
        waiting = subprocess.Popen(
            [
                *run_cli.__globals__["QMAILKIT"],
                "convert-multilog",
                "--wait",
                "30",
                "--service-dir",
                str(sdir),
                "--log-dir",
                str(ldir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        with pytest.raises(subprocess.TimeoutExpired):
            waiting.wait(0.5)
        assert day_files(ldir) == {}
    _out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert list(day_files(ldir)) == ["x.2023-11-14"]


def test_concurrent_runs_never_duplicate(tmp_path, utc):
    a = lines_between(T0, T0 + 2 * DAY, 20000, seed=7)
    sdir, ldir, inputs = tree(
        tmp_path, {"x": [a[i : i + 2000] for i in range(0, 20000, 2000)], "y": [a[:3000]]}
    )
    procs = [
        subprocess.Popen(
            [
                *run_cli.__globals__["QMAILKIT"],
                "convert-multilog",
                "--wait",
                "60",
                "--service-dir",
                str(sdir),
                "--log-dir",
                str(ldir),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(4)
    ]
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    assert day_files(ldir) == expected_all(inputs)


# -- the command line -------------------------------------------------------------------------


def test_help_documents_every_option():
    res = run_cli("--help")
    text = res.stdout.decode()
    for word in (
        "-a,",
        "-r,",
        "-v,",
        "--service-dir",
        "--log-dir",
        "--exclude",
        "--supervisor",
        "--syslog",
        "--mode",
        "--owner",
        "--tai",
        "--jobs",
        "--wait",
        "--service-root",
        "QMAILKIT_CONVERT_EXCLUDE",
        "exit codes",
        "111",
    ):
        assert word in text, word


def test_alias_behaves_like_the_subcommand(tmp_path, utc, capsys):
    from qmailkit.cli.logs import convert_multilog_main

    sdir, ldir, _ = tree(tmp_path, {"x": [[label(T0) + b" x"]]})
    assert convert_multilog_main(["-q", "--service-dir", str(sdir), "--log-dir", str(ldir)]) == 0
    assert list(day_files(ldir)) == ["x.2023-11-14"]
    # a bad mode is a usage error (exit 100) before anything runs; A17: no setuid/setgid/sticky
    for mode, says in (
        ("999", "--mode: '999' is not an octal file mode"),
        ("7777", "sets the setuid, setgid or sticky bit"),
    ):
        with pytest.raises(SystemExit) as stop:
            convert_multilog_main(["--mode", mode, "--log-dir", str(ldir)])
        assert stop.value.code == 100
        assert says in capsys.readouterr().err
    # a bad owner is a usage error too; a gid fchown cannot take is refused before converting
    for value, says in (
        ("no-such-user", "no such user: 'no-such-user'; give USER or USER:GROUP"),
        ("root:no-such-group", "no such group: 'no-such-group'; give USER or USER:GROUP"),
        ("root:99999999999", "gid 99999999999 is out of range (at most 4294967294)"),
        ("4000000000", "uid 4000000000 has no passwd entry, so no login group: give USER:GROUP"),
        ("", "'' names no user or group (give USER, USER:GROUP or :GROUP)"),
    ):
        with pytest.raises(SystemExit) as stop:
            convert_multilog_main(["--owner", value, "--log-dir", str(ldir)])
        assert stop.value.code == 100
        assert capsys.readouterr().err.endswith(
            f"convert-multilog: usage: argument --owner: {says}\n"
        )
    # counts and durations through the shared parsers: usage errors before anything runs
    for option, value, says in (
        ("--jobs", "-1", "not a number of processes: '-1' (1 or more, or 0 for one per CPU)"),
        ("--jobs", "two", "not a number of processes: 'two' (1 or more, or 0 for one per CPU)"),
        ("--wait", "nan", "not a duration of 0 seconds or more: 'nan'"),
        ("--alarm-timeout", "-5", "not a duration of 0 seconds or more: '-5'"),
        ("--wait", "soon", "not a number of seconds: 'soon' (e.g. 10 or 2.5)"),
    ):
        with pytest.raises(SystemExit) as stop:
            convert_multilog_main([option, value, "--log-dir", str(ldir)])
        assert stop.value.code == 100
        assert capsys.readouterr().err.endswith(
            f"convert-multilog: usage: argument {option}: {says}\n"
        )
    sdir2, ldir2, _ = tree(tmp_path / "zero", {"x": [[label(T0) + b" x"]]})
    argv = ["-q", "--jobs", "0", "--service-dir", str(sdir2), "--log-dir", str(ldir2)]
    assert convert_multilog_main(argv) == 0  # 0: one per CPU, as the default
    assert list(day_files(ldir2)) == ["x.2023-11-14"]
    with pytest.raises(SystemExit) as exc:
        convert_multilog_main(["-x"])
    assert exc.value.code == 100
    assert "convert-multilog: usage: unrecognized arguments: -x" in capsys.readouterr().err
    res = run_cli("-ax")
    assert res.returncode == 100 and b"ignored explicit argument 'x'" in res.stderr


def test_bad_service_dir_is_reported(tmp_path):
    (tmp_path / "log").mkdir()
    res = run_cli("--service-dir", str(tmp_path / "nope"), "--log-dir", str(tmp_path / "log"))
    assert res.returncode == 111
    assert b"nope: cannot read the service directory" in res.stderr


# -- compressing old day files ----------------------------------------------------------------


def test_gzip_after_compresses_old_days_only(tmp_path, utc):
    import gzip

    from qmailkit.logs.compress import gzip_old_days

    for date in ("2023-11-10", "2023-11-13", "2023-11-14"):
        (tmp_path / f"x.{date}").write_bytes(f"lines of {date}\n".encode())
        os.chmod(tmp_path / f"x.{date}", 0o604)
    (tmp_path / "xy.2023-11-10").write_bytes(b"another service\n")
    done = gzip_old_days(tmp_path, "x", 1, today="2023-11-15")
    assert done == ["x.2023-11-10", "x.2023-11-13"]
    assert sorted(os.listdir(tmp_path)) == [
        "x.2023-11-10.gz",
        "x.2023-11-13.gz",
        "x.2023-11-14",
        "xy.2023-11-10",
    ]
    assert gzip.decompress((tmp_path / "x.2023-11-13.gz").read_bytes()) == b"lines of 2023-11-13\n"
    assert stat.S_IMODE((tmp_path / "x.2023-11-13.gz").stat().st_mode) == 0o604
    # a crash after the .gz was written but before the plain file was removed
    (tmp_path / "x.2023-11-13").write_bytes(b"lines of 2023-11-13\n")
    # late lines for an old day: appended as a second gzip member
    (tmp_path / "x.2023-11-10").write_bytes(b"late line\n")
    assert gzip_old_days(tmp_path, "x", 1, today="2023-11-15") == ["x.2023-11-10", "x.2023-11-13"]
    assert gzip.decompress((tmp_path / "x.2023-11-13.gz").read_bytes()) == b"lines of 2023-11-13\n"
    assert (
        gzip.decompress((tmp_path / "x.2023-11-10.gz").read_bytes())
        == b"lines of 2023-11-10\nlate line\n"
    )
    assert not (tmp_path / "x.2023-11-10").exists()


def _write_big_day_file(path: Path, mib: int) -> bytes:
    """``mib`` MiB of distinct log lines; their sha256."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "wb") as out:
        for block in range(mib):
            data = b"".join(
                b"2023-11-10 12:%02d:00.000000000 tcpserver: status: %d/40 pid %08d\n"
                % (n % 60, n % 41, block * 16384 + n)
                for n in range(16384)
            )[: 1 << 20]
            digest.update(data)
            out.write(data)
    return digest.digest()


def _gunzipped_digest(path: Path) -> bytes:
    import gzip
    import hashlib

    digest = hashlib.sha256()
    with gzip.open(path, "rb") as packed:
        while block := packed.read(1 << 20):
            digest.update(block)
    return digest.digest()


def test_gzip_old_days_streams_a_big_day_file_in_bounded_memory(tmp_path):
    """32 MiB compressed, found already compressed after a crash, and appended to: each
    in a few MiB of memory (it was read whole, twice, before)."""
    import hashlib
    import tracemalloc

    from qmailkit.logs.compress import gzip_old_days

    logs = tmp_path / "logs"
    logs.mkdir()
    plain, packed = logs / "x.2023-11-10", logs / "x.2023-11-10.gz"

    def peak_of_a_run() -> int:
        tracemalloc.start()
        try:
            assert gzip_old_days(logs, "x", 1, today="2023-11-15") == ["x.2023-11-10"]
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    whole = _write_big_day_file(plain, 32)
    assert peak_of_a_run() < 8 << 20
    assert os.listdir(logs) == [packed.name]
    assert _gunzipped_digest(packed) == whole
    # a crash after the .gz was renamed into place, before the plain file was removed
    first = packed.read_bytes()
    assert _write_big_day_file(plain, 32) == whole
    assert peak_of_a_run() < 8 << 20
    assert packed.read_bytes() == first  # nothing appended twice
    assert not plain.exists()
    # late lines of that day: a new member after the old ones
    plain.write_bytes(b"late line\n")
    assert peak_of_a_run() < 8 << 20
    assert packed.read_bytes().startswith(first)
    expected = tmp_path / "expected"
    _write_big_day_file(expected, 32)
    with open(expected, "ab") as out:
        out.write(b"late line\n")
    assert _gunzipped_digest(packed) == hashlib.sha256(expected.read_bytes()).digest()


def test_gzip_after_on_the_command_line(tmp_path, utc):
    import gzip

    sdir, ldir, inputs = tree(tmp_path, {"x": [lines_between(T0, T0 + DAY, 50)]})
    res = run_cli("-v", "--gzip-after", "0", "--service-dir", str(sdir), "--log-dir", str(ldir))
    assert res.returncode == 0, res.stderr
    want = expected_all(inputs)
    assert sorted(day_files(ldir)) == sorted(k + ".gz" for k in want)
    for k, v in want.items():
        assert gzip.decompress((ldir / (k + ".gz")).read_bytes()) == v
    assert f"Compressing {ldir}/x.2023-11-14".encode() in res.stderr
    for bad in ("-1", "36501", "99999999"):  # 99999999: an OverflowError traceback once
        (sdir / "x" / "log" / "main" / "@400000006553f10000000000.s").write_bytes(b"kept\n")
        res = run_cli("--gzip-after", bad, "--service-dir", str(sdir), "--log-dir", str(ldir))
        assert (res.returncode, res.stdout) == (100, b"")
        assert res.stderr == (
            b"qmailkit convert-multilog: fatal: --gzip-after: must be 0 to 36500 days\n"
        )
        assert (sdir / "x" / "log" / "main" / "@400000006553f10000000000.s").exists()  # before


# -- messages: syslog, progress ---------------------------------------------------------------


def test_syslog_gets_the_messages_and_the_summary(tmp_path, monkeypatch, utc, capsys):
    import argparse
    import syslog

    from qmailkit.cli import logs as cli_logs

    sent = []
    monkeypatch.setattr(syslog, "openlog", lambda *a: sent.append(("open", a)))
    monkeypatch.setattr(syslog, "syslog", lambda prio, msg: sent.append((prio, msg)))
    sdir, ldir, _ = tree(tmp_path, {"x": [[label(T0) + b" x"]]})
    parser = argparse.ArgumentParser()
    cli_logs._add_convert_options(parser)
    args = parser.parse_args(
        ["--syslog", "--jobs", "1", "--service-dir", str(sdir), "--log-dir", str(ldir)]
    )
    assert args.func(args) == 0
    assert sent[0] == ("open", ("convert-multilog", syslog.LOG_PID, syslog.LOG_USER))
    msgs = [m for p, m in sent[1:]]
    assert msgs[0] == "Starting" and msgs[-2] == "Done"
    assert f"Closing {ldir}/x.2023-11-14 (1 lines added)" in msgs
    assert sent[-1] == (syslog.LOG_INFO, "x: 1 file, 1 line into 1 day file")
    assert capsys.readouterr().err == ""  # without -v nothing on stderr


def test_progress_on_a_terminal_for_big_work():
    import io

    from qmailkit.cli.logs import _Progress

    out = io.StringIO()
    bar = _Progress(out)
    bar.start(10 << 20)  # small work: no progress shown
    bar.advance(5 << 20)
    assert out.getvalue() == ""
    bar = _Progress(out)
    bar.start(64 << 20)
    for _ in range(4):
        bar.advance(16 << 20)
    bar.finish()
    assert out.getvalue().startswith("\rconverting:  25% of 64 MB\rconverting:  50% of 64 MB")
    assert out.getvalue().endswith("\r" + " " * 40 + "\r")


def test_damaged_journal_stops_that_service_only(tmp_path, utc):
    one = [[label(T0) + b" x"]]
    sdir, ldir, _ = tree(tmp_path, {"a": one, "b": one})
    state = journal.state_dir(ldir)
    (state / "a.journal").write_bytes(b"{not json")
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir))
    assert res.returncode == 111
    err = res.stderr.decode()
    assert (
        f"a: 0 files, 0 lines into 0 day files; FAILED: {state}/a.journal: cannot read the "
        "journal" in err
    )
    assert "removing it may duplicate lines" in err
    assert list(day_files(ldir)) == ["b.2023-11-14"]
    assert len(list((sdir / "a" / "log" / "main").iterdir())) == 1


def test_journal_of_vanished_inputs_is_rolled_back_with_a_warning(tmp_path, utc):
    import json

    sdir, ldir, inputs = tree(tmp_path, {"x": [[label(T0) + b" x"]]})
    (ldir / "x.2023-11-14").write_bytes(b"kept\nhalf of an interrupted append")
    state = journal.state_dir(ldir)
    (state / "x.journal").write_text(
        json.dumps(
            {"inputs": ["@400000006553f0ff00000000.s"], "sizes": {"x.2023-11-14": 5}, "last": None}
        )
    )
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir))
    assert res.returncode == 0, res.stderr
    assert b"was removed while a run converting it was interrupted" in res.stderr
    assert day_files(ldir) == {"x.2023-11-14": b"kept\n" + expected_all(inputs)["x.2023-11-14"]}


def test_no_worker_process_possible_converts_in_process(tmp_path, monkeypatch, utc):
    def no_fork():
        raise OSError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    sdir, ldir, inputs = tree(tmp_path, {"a": [[label(T0) + b" a"]], "b": [[label(T0) + b" b"]]})
    monkeypatch.setattr(os, "fork", no_fork)
    res = convert_all(opts(sdir, ldir, jobs=2))
    monkeypatch.undo()
    assert res.ok and [s.name for s in res.services] == ["a", "b"]
    assert day_files(ldir) == expected_all(inputs)


def _fsync_failing_for(monkeypatch, ldir: Path, service_name: str, fail) -> None:
    """os.fsync calls ``fail()`` for ``service_name``'s day files (in whichever process)."""
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").startswith(f"{ldir}/{service_name}."):
            fail()
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_dead_worker_is_its_services_error_and_the_others_are_converted(
    tmp_path, monkeypatch, utc
):
    """A worker killed mid-batch (exit 3 at its day file's fsync): that service fails with
    the wait status, keeps its input, and the next run converts it exactly once."""
    names = ["a", "b", "c", "d"]
    sdir, ldir, inputs = tree(tmp_path, {n: [[label(T0) + b" " + n.encode()]] for n in names})
    parent = os.getpid()

    def die_in_a_worker():
        assert os.getpid() != parent, "b must be converted in a worker"
        os._exit(3)

    _fsync_failing_for(monkeypatch, ldir, "b", die_in_a_worker)
    res = convert_all(opts(sdir, ldir, jobs=2))
    monkeypatch.setattr(os, "fsync", _real_fsync)
    assert [s.summary() for s in res.services] == [
        "a: 1 file, 1 line into 1 day file",
        "b: 0 files, 0 lines into 0 day files; FAILED: worker process died (wait status 768)",
        "c: 1 file, 1 line into 1 day file",
        "d: 1 file, 1 line into 1 day file",
    ]
    assert len(list((sdir / "b" / "log" / "main").iterdir())) == 1
    rerun = convert_all(opts(sdir, ldir, jobs=2))
    assert [s.summary() for s in rerun.services] == [
        "a: 0 files, 0 lines into 0 day files",
        "b: 1 file, 1 line into 1 day file",
        "c: 0 files, 0 lines into 0 day files",
        "d: 0 files, 0 lines into 0 day files",
    ]
    assert day_files(ldir) == expected_all(inputs)


@pytest.mark.parametrize("jobs", [1, 2])
def test_an_unexpected_exception_is_that_services_error_not_a_traceback(
    tmp_path, monkeypatch, utc, jobs
):
    sdir, ldir, inputs = tree(tmp_path, {n: [[label(T0) + b" " + n.encode()]] for n in "abc"})

    def bug():
        raise RuntimeError("a bug")

    _fsync_failing_for(monkeypatch, ldir, "b", bug)
    res = convert_all(opts(sdir, ldir, jobs=jobs))
    monkeypatch.setattr(os, "fsync", _real_fsync)
    assert [s.summary() for s in res.services] == [
        "a: 1 file, 1 line into 1 day file",
        "b: 0 files, 0 lines into 0 day files; FAILED: internal error: RuntimeError: a bug",
        "c: 1 file, 1 line into 1 day file",
    ]
    assert convert_all(opts(sdir, ldir, jobs=jobs)).ok
    assert day_files(ldir) == expected_all(inputs)


# -- what a line or file is taken for ----------------------------------------------------------


def test_a_file_that_only_starts_like_gzip_is_plain_text(tmp_path, utc):
    """O6: 1f 8b alone is no gzip header; a real one of several members is read whole."""
    import gzip

    sdir, ldir = tmp_path / "s", tmp_path / "l"
    ldir.mkdir()
    main = service(sdir, "x")
    plain, packed = (main / (label(T0 + i * 10**9).decode() + ".s") for i in range(2))
    plain.write_bytes(b"\x1f\x8b not gzip\n" + label(T0) + b" plain\n")
    packed.write_bytes(
        gzip.compress(label(T0 + 1) + b" member 1\n")
        + gzip.compress(label(T0 + 2) + b" member 2\n")
        + b"\0\0"
    )
    res = convert_all(opts(sdir, ldir))
    assert res.ok, res.services[0].error
    assert day_files(ldir) == {
        "x.2023-11-14": (
            b"\x1f\x8b not gzip\n2023-11-14 22:13:20.000000000 plain\n"
            b"2023-11-14 22:13:20.000000001 member 1\n2023-11-14 22:13:20.000000002 member 2\n"
        )
    }


def test_a_gzip_file_that_does_not_decompress_is_named_and_kept(tmp_path, utc):
    import gzip

    sdir, ldir = tmp_path / "s", tmp_path / "l"
    ldir.mkdir()
    main = service(sdir, "x")
    bad = main / (label(T0).decode() + ".s")
    bad.write_bytes(gzip.compress(label(T0) + b" cut\n" * 100)[:-30])
    res = convert_all(opts(sdir, ldir))
    assert res.services[0].error == (
        f"{bad}: starts like gzip but does not decompress: the file ends inside the compressed "
        "data (kept: it and the files after it wait until it is replaced by a regular file or "
        "removed)"
    )
    assert bad.exists() and day_files(ldir) == {}


def test_a_year_that_is_not_four_digits_stays_with_the_line_before(tmp_path, utc):
    """O7: no day file x.512-04-26; the line is kept as the C tool converts it, like the
    original (whose date pattern wants four digits) kept it with the line before."""
    need("tai64nlocal")
    from datetime import UTC, datetime

    odd = int(datetime(512, 4, 26, tzinfo=UTC).timestamp()) * 10**9 + 5  # the finding's date
    lines = [
        label(T0) + b" before",
        label(odd) + b" odd year",
        label(T0 + DAY) + b" after",
        label(253_402_300_800 * 10**9) + b" year 10000",
    ]
    sdir, ldir, _ = tree(tmp_path, {"x": [lines]})
    assert convert_all(opts(sdir, ldir)).ok
    c = logs_helpers.tai64nlocal(b"\n".join(lines) + b"\n", "UTC").split(b"\n")
    assert c[1] == b"512-04-26 00:00:00.000000005 odd year"
    assert day_files(ldir) == {
        "x.2023-11-14": c[0] + b"\n" + c[1] + b"\n",
        "x.2023-11-15": c[2] + b"\n" + c[3] + b"\n",
    }


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_tai_applies_the_leap_seconds_like_s6_tai64nlocal(tmp_path, tz):
    """O8: an s6-log label of 2001-09-09 01:46:40 UTC lands at 01:46:40, not 01:46:35."""
    import random

    need("s6-tai64nlocal")
    rng = random.Random(8)
    tais = [1_000_000_032]  # 2001-09-09 01:46:40 UTC: TAI-UTC was 32 s
    for leap in tai64n._LEAP_TAI:
        tais.extend(range(leap - 3, leap + 3))
    tais.extend(rng.randrange(0, 4_102_444_800) for _ in range(500))
    lines = [b"@%016x%08x s6 %d" % ((1 << 62) + t, rng.randrange(10**9), t) for t in sorted(tais)]
    sdir, ldir, inputs = tree(tmp_path, {"x": [lines[:200], lines[200:]]})
    res = run_cli("--tai", "--service-dir", str(sdir), "--log-dir", str(ldir), env={"TZ": tz})
    assert res.returncode == 0, res.stderr
    want = expected_outputs("x", inputs["x"], tz, prog="s6-tai64nlocal")
    assert day_files(ldir) == want
    if tz == "UTC":
        assert want["x.2001-09-09"].startswith(b"2001-09-09 01:46:40.")
        assert sum(v.count(b":60.") for v in want.values()) == 27


def test_an_unknown_supervisor_is_refused_with_the_known_kinds(tmp_path):
    res = run_cli(
        "-a",
        "--supervisor",
        "bogus",
        "--service-dir",
        str(tmp_path / "s"),
        "--log-dir",
        str(tmp_path / "l"),
    )
    assert res.returncode == 100
    assert res.stderr == (
        b"qmailkit convert-multilog: fatal: --supervisor: unknown supervisor 'bogus' "
        b"(one of daemontools, runit, s6)\n"
    )
    assert not (tmp_path / "l").exists()
