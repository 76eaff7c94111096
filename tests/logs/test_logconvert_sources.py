"""Which directories convert-multilog reads: never dot-directories, except retired services.

``services apply --prune`` retires a service by unlinking it from the scan
directory and renaming its directory ``.retired-NAME-STAMP``; its last rotated
files are converted into NAME's day files, once.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from support.logs import day_files, label, run_cli, service, write_rotated

from qmailkit.logs import convert, logdir
from qmailkit.services.plan import RETIRED_PREFIX
from qmailkit.services.retire import move_aside

T0 = 1_700_000_000 * 10**9  # 2023-11-14 22:13:20 UTC
DAY = 86_400 * 10**9
UTC = {"TZ": "UTC"}


def _line(when: int, text: bytes) -> bytes:
    return (
        time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(when // 10**9)).encode()
        + b".%09d " % (when % 10**9)
        + text
        + b"\n"
    )


def _retire(sdir: Path, stamp: str = "20261202T101010") -> Path:
    """Retire a service directory the way ``services apply --prune`` does."""
    return move_aside(sdir, stamp)


def test_retired_names_are_the_ones_apply_makes(tmp_path):
    assert logdir.RETIRED.pattern.startswith(r"\.retired-")
    assert RETIRED_PREFIX == ".retired-"
    for _ in range(2):  # the second gets a suffix: the name is taken
        (tmp_path / "qmail-smtpd-587").mkdir()
        m = logdir.RETIRED.match(_retire(tmp_path / "qmail-smtpd-587").name)
        assert m and m["name"] == "qmail-smtpd-587"


def test_dot_directories_are_neither_converted_nor_reported(tmp_path):
    """O5, Q7: .s6-svscan and the like are no services (no scanner starts them)."""
    sdir, ldir = tmp_path / "scan", tmp_path / "log"
    ldir.mkdir()
    (sdir / ".s6-svscan").mkdir(parents=True)  # what s6-svscan keeps in its scan directory
    hidden = write_rotated(service(sdir, ".hidden"), [[label(T0) + b" hidden"]])
    write_rotated(service(sdir, "svc"), [[label(T0) + b" seen"]])
    res = run_cli("-v", "--service-dir", str(sdir), "--log-dir", str(ldir), env=UTC)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"svc: 1 file, 1 line into 1 day file\n"
    assert day_files(ldir) == {"svc.2023-11-14": _line(T0, b"seen")}
    assert b"s6-svscan" not in res.stderr and b"hidden" not in res.stderr
    assert hidden[0].exists()


def test_retired_services_in_the_service_root_are_converted_once(tmp_path):
    """The service root is found through the scan directory's links."""
    sroot, sdir, ldir = tmp_path / "supervise", tmp_path / "scan", tmp_path / "log"
    ldir.mkdir()
    sdir.mkdir()
    old = write_rotated(service(sroot, "smtpd-old"), [[label(T0) + b" last words"]], start_ns=T0)
    write_rotated(service(sroot, "send"), [[label(T0 + DAY) + b" live"]], start_ns=T0)
    (sdir / "send").symlink_to(sroot / "send")
    retired = _retire(sroot / "smtpd-old")
    res = run_cli("-v", "--service-dir", str(sdir), "--log-dir", str(ldir), env=UTC)
    assert res.returncode == 0, res.stderr
    assert res.stdout == (
        b"send: 1 file, 1 line into 1 day file\nsmtpd-old: 1 file, 1 line into 1 day file\n"
    )
    assert day_files(ldir) == {
        "send.2023-11-15": _line(T0 + DAY, b"live"),
        "smtpd-old.2023-11-14": _line(T0, b"last words"),
    }
    assert f"Reading {retired}/log/main/{old[0].name}".encode() in res.stderr
    assert list((retired / "log" / "main").iterdir()) == []  # converted; the directory is kept
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir), env=UTC)
    assert res.stdout == (
        b"send: 0 files, 0 lines into 0 day files\nsmtpd-old: 0 files, 0 lines into 0 day files\n"
    )


def test_retired_then_live_service_of_one_name_in_the_scan_directory(tmp_path):
    """Retired in the scan directory itself (no links): its lines come before the new ones."""
    sdir, ldir = tmp_path / "scan", tmp_path / "log"
    ldir.mkdir()
    write_rotated(service(sdir, "x"), [[label(T0) + b" first life"]], start_ns=T0)
    first = _retire(sdir / "x", "20261201T000000")
    write_rotated(service(sdir, "x"), [[label(T0 + 1) + b" second life"]], start_ns=T0)
    second = _retire(sdir / "x", "20261202T000000")
    write_rotated(
        service(sdir, second.name + "-2"), [[label(T0 + 2) + b" third life"]], start_ns=T0
    )  # the same stamp again (taken): apply adds a suffix
    write_rotated(service(sdir, "x"), [[label(T0 + 3) + b" now"]], start_ns=T0)
    write_rotated(
        service(sdir, first.name.replace("1201", "1130")),
        [[label(T0 - 1) + b" oldest"]],
        start_ns=T0,
    )
    res = run_cli("--service-dir", str(sdir), "--log-dir", str(ldir), env=UTC)
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"x: 5 files, 5 lines into 1 day file\n"
    assert day_files(ldir) == {
        "x.2023-11-14": _line(T0 - 1, b"oldest")
        + _line(T0, b"first life")
        + _line(T0 + 1, b"second life")
        + _line(T0 + 2, b"third life")
        + _line(T0 + 3, b"now")
    }


def test_service_root_option_and_exclude(tmp_path):
    sroot, sdir, ldir = tmp_path / "elsewhere", tmp_path / "scan", tmp_path / "log"
    ldir.mkdir()
    sdir.mkdir()
    write_rotated(service(sroot, "a"), [[label(T0) + b" a"]])
    write_rotated(service(sroot, "b"), [[label(T0) + b" b"]])
    _retire(sroot / "a")
    _retire(sroot / "b")
    args = ["--service-dir", str(sdir), "--log-dir", str(ldir)]
    res = run_cli(*args, env=UTC)  # nothing links there: not found
    assert (res.returncode, res.stdout, day_files(ldir)) == (0, b"", {})
    res = run_cli("-v", "--service-root", str(sroot), "--exclude", "b", *args, env=UTC)
    assert res.returncode == 0, res.stderr
    assert day_files(ldir) == {"a.2023-11-14": _line(T0, b"a")}
    assert f"Skipping {sroot}/.retired-b-20261202T101010".encode() in res.stderr
    res = run_cli("--service-root", str(tmp_path / "nope"), *args)
    assert res.returncode == 111
    assert (
        res.stderr
        == (
            f"qmailkit convert-multilog: fatal: {tmp_path}/nope: cannot read the "
            "service root: No such file or directory (check --service-root)\n"
        ).encode()
    )


class Crash(BaseException):
    """A kill at a chosen point: nothing after it runs."""


def _crash_at_the_first_input_unlink(monkeypatch, opts) -> None:
    """Run convert-multilog, "killed" as it removes its first input (the journal says done)."""
    real_unlink = os.unlink

    def unlink(path, *args, **kw):
        if "/log/main/" in os.fspath(path):
            raise Crash(path)
        return real_unlink(path, *args, **kw)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(Crash):
        convert.convert_all(opts)
    monkeypatch.setattr(os, "unlink", real_unlink)


def test_an_interrupted_retired_batch_is_finished_in_its_own_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    sdir, ldir = tmp_path / "scan", tmp_path / "log"
    ldir.mkdir()
    inputs = write_rotated(service(sdir, "x"), [[label(T0) + b" old"]])
    retired = _retire(sdir / "x")
    opts = convert.Options(service_dir=sdir, log_dir=ldir, jobs=1)
    _crash_at_the_first_input_unlink(monkeypatch, opts)
    journal = json.loads((ldir / ".convert-multilog" / "x.journal").read_text())
    assert journal == {
        "dir": retired.name,
        "done": True,
        "inputs": [inputs[0].name],
        "last": "2023-11-14",
    }
    messages: list[str] = []
    assert convert.convert_all(opts, messages.append).ok
    assert (
        f"Finishing {retired}/log/main/{inputs[0].name} (converted by an interrupted run)"
        in messages
    )
    assert list((retired / "log" / "main").iterdir()) == []
    assert day_files(ldir) == {"x.2023-11-14": _line(T0, b"old")}


def test_a_service_retired_after_an_interrupted_run_is_finished_not_duplicated(
    tmp_path, monkeypatch
):
    """Killed between the journal's done and the unlink, then retired: the files went along."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    sdir, ldir = tmp_path / "scan", tmp_path / "log"
    ldir.mkdir()
    inputs = write_rotated(service(sdir, "x"), [[label(T0) + b" once"]])
    opts = convert.Options(service_dir=sdir, log_dir=ldir, jobs=1)
    _crash_at_the_first_input_unlink(monkeypatch, opts)
    retired = _retire(sdir / "x")
    messages: list[str] = []
    assert convert.convert_all(opts, messages.append).ok
    assert (
        f"Finishing {retired}/log/main/{inputs[0].name} (converted by an interrupted run)"
        in messages
    )
    assert day_files(ldir) == {"x.2023-11-14": _line(T0, b"once")}
