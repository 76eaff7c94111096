"""Log directories: the model, and convert-multilog on files real loggers wrote.

multilog under supervise (daemontools), svlogd under runsv (runit) and s6-log
under s6-supervise write the files; rotations are forced with each suite's own
tool, then ``convert-multilog -a`` rotates ``current`` through our supervisor
interface and converts everything.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from support import need, wait_for
from support.logs import day_files, expected_outputs, label, run_cli, service, write_rotated

from qmailkit.logs import logdir, tai64n
from qmailkit.logs.logdir import LogDir, is_rotated_name, read_chunks, rotation_time

# -- the model ----------------------------------------------------------------------------------


def test_rotated_files_in_time_order_and_nothing_else(tmp_path):
    main = tmp_path / "main"
    main.mkdir()
    names = [
        "@400000006553f10100000000.s",
        "@400000006553f10000000009.u",
        "@400000006553f10000000010.s",
        "current",
        "lock",
        "state",
        "newstate",
        "processed",
        "previous",
        "config",
        "@400000006553f10000000000.s.done",
        "@400000006553f10000000001.t",
    ]
    for n in names:
        (main / n).write_bytes(b"")
    assert [p.name for p in LogDir(main).rotated()] == [
        "@400000006553f10000000009.u",
        "@400000006553f10000000010.s",
        "@400000006553f10100000000.s",
    ]
    assert is_rotated_name("@anything.s") and not is_rotated_name("@x.s.done")
    assert not is_rotated_name("x@y.s") and not is_rotated_name("@x.s\n")
    assert LogDir(tmp_path / "missing").rotated() == []


def test_rotation_time_from_name_or_mtime(tmp_path):
    name = tai64n.encode(1_700_000_000, 500_000_000).decode() + ".s"
    (tmp_path / name).write_bytes(b"")
    assert rotation_time(tmp_path / name) == 1_700_000_000.5
    s6name = tai64n.encode(1_700_000_000, 0, tai64n.TAI_OFFSET).decode() + ".s"
    (tmp_path / s6name).write_bytes(b"")
    assert rotation_time(tmp_path / s6name, tai64n.TAI_OFFSET) == 1_700_000_000
    (tmp_path / "@odd.u").write_bytes(b"")
    os.utime(tmp_path / "@odd.u", (1000, 1234))
    assert rotation_time(tmp_path / "@odd.u") == 1234


def test_read_chunks_cut_at_newlines_and_keep_a_partial_last_line(tmp_path):
    data = b"".join(b"line %d\n" % i for i in range(100)) + b"no newline at the end"
    (tmp_path / "f").write_bytes(data)
    chunks = list(read_chunks(tmp_path / "f", size=64))
    assert b"".join(chunks) == data
    assert all(c.endswith(b"\n") for c in chunks[:-1])
    (tmp_path / "long").write_bytes(b"x" * 1000 + b"\n" + b"y" * 10)
    assert list(read_chunks(tmp_path / "long", size=64)) == [b"x" * 1000 + b"\n", b"y" * 10]
    (tmp_path / "empty").write_bytes(b"")
    assert list(read_chunks(tmp_path / "empty")) == []
    import gzip

    (tmp_path / "gz").write_bytes(gzip.compress(data))
    assert b"".join(read_chunks(tmp_path / "gz")) == data  # small: read at once
    assert b"".join(read_chunks(tmp_path / "gz", size=64)) == data  # big: streamed


def test_wait_for_rotation_gives_up_after_the_timeout(tmp_path):
    directory = LogDir(tmp_path)
    started = time.monotonic()
    assert directory.wait_for_rotation(set(), 0.2) == []
    assert time.monotonic() - started >= 0.2
    (tmp_path / "@400000006553f10000000000.s").write_bytes(b"")
    assert directory.wait_for_rotation(set(), 5) == ["@400000006553f10000000000.s"]


def test_alarm_without_a_supervisor_warns_and_converts_the_rest(tmp_path):
    sdir, ldir = tmp_path / "s", tmp_path / "l"
    ldir.mkdir()
    main = service(sdir, "x")
    write_rotated(main, [[label(1_700_000_000 * 10**9) + b" old"]])
    (main / "current").write_bytes(label(1_700_000_001 * 10**9) + b" new\n")
    res = run_cli(
        "-a",
        "--supervisor",
        "daemontools",
        "--service-dir",
        str(sdir),
        "--log-dir",
        str(ldir),
        env={"TZ": "UTC"},
    )
    assert res.returncode == 0, res.stderr
    err = res.stderr.decode()
    assert f"warning: x: cannot rotate: {sdir}/x/log: no daemontools supervisor is running" in err
    assert day_files(ldir) == {"x.2023-11-14": b"2023-11-14 22:13:20.000000000 old\n"}
    res = run_cli("-a", "--service-dir", str(sdir), "--log-dir", str(ldir))
    assert "cannot tell which supervisor runs it (use --supervisor)" in res.stderr.decode()


# -- real loggers under real supervisors ------------------------------------------------------

RUN = """#!/bin/sh
exec 2>&1
i=0
while [ $i -lt 30 ]; do echo "first batch line $i"; i=$((i+1)); done
while [ ! -e {trigger} ]; do sleep 0.05; done
{long}
i=0
while [ $i -lt 20 ]; do echo "second batch line $i"; i=$((i+1)); done
exec sleep 3600
"""

LOGGERS = {
    # kind: (log/run command, rotate-by-hand command, C converter, --tai)
    "daemontools": ("multilog t s4096 n20 ./main", ["svc", "-a"], "tai64nlocal", False),
    "runit": ("svlogd -t ./main", ["sv", "alarm"], "tai64nlocal", False),
    "s6": ("s6-log t s4096 n20 ./main", ["s6-svc", "-a"], "s6-tai64nlocal", True),
}


def lines_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@pytest.mark.parametrize("kind", ["daemontools", "runit", "s6"])
def test_convert_files_of_a_real_logger_with_alarm(tmp_path, scan, kind):
    logger, rotate, converter, tai = LOGGERS[kind]
    need(logger.split()[0], rotate[0], converter)
    tree = scan(kind)
    svc = tmp_path / "svc" / "hello"
    (svc / "log" / "main").mkdir(parents=True)
    trigger = tmp_path / "next"
    # multilog splits a line longer than the file size: the tail is a continuation
    long = 'printf "%05000d\\n" 7' if kind == "daemontools" else ""
    (svc / "run").write_text(RUN.format(trigger=trigger, long=long))
    (svc / "log" / "run").write_text(f"#!/bin/sh\nexec {logger}\n")
    if kind == "runit":
        (svc / "log" / "main" / "config").write_text("s4096\nn20\n")
    for f in (svc / "run", svc / "log" / "run"):
        f.chmod(0o755)
    link = tree.add(svc)
    tree.wait_up(link)
    main = link / "log" / "main"
    wait_for(lambda: lines_in(main / "current") >= 30, 15, what="the first batch logged")
    # a rotation by the suite's own tool
    before = LogDir(main).rotated_names()
    subprocess.run([*rotate, str(link / "log")], check=True, capture_output=True)
    wait_for(lambda: LogDir(main).rotated_names() - before, 10, what="rotation by " + rotate[0])
    trigger.write_bytes(b"")
    second = 20 + bool(long)
    wait_for(
        lambda: (
            sum(lines_in(p) for p in [main / "current", *LogDir(main).rotated()]) >= 30 + second
        ),
        15,
        what="the second batch logged",
    )

    had = {p.name: p.stat().st_size for p in main.iterdir()}
    ldir = tmp_path / "log"
    ldir.mkdir()
    args = ["-a", "-r", "-v", "--service-dir", str(tree.root), "--log-dir", str(ldir)]
    res = run_cli(*args, *(["--tai"] if tai else []), env={"TZ": "America/New_York"})
    assert res.returncode == 0, res.stderr
    assert had.get("current")  # so -a had something to rotate
    assert f"alarm {tree.root}/hello/log ({kind})".encode() in res.stderr
    done = sorted(p for p in main.iterdir() if p.name.endswith(".done"))
    assert len(done) >= 2
    assert lines_in(main / "current") == 0  # -a rotated it and it was converted
    assert "warning" not in res.stderr.decode()
    inputs = [p.read_bytes() for p in done]
    want = expected_outputs("hello", inputs, "America/New_York", converter)
    assert day_files(ldir) == want
    text = b"".join(want.values())
    for i in range(30):
        assert b" first batch line %d\n" % i in text
    for i in range(20):
        assert b" second batch line %d\n" % i in text
    if long:
        assert b"7\n" in text and b"0" * 3000 in text
        assert any(not d.startswith(b"@") for d in inputs)  # the tail starts a file


def test_multilog_processor_output_is_read(tmp_path):
    """``multilog t '!gzip' ...`` makes gzip'd @ files; they are converted like the others."""
    (multilog_prog,) = need("multilog")
    main = tmp_path / "s" / "x" / "log" / "main"
    main.parent.mkdir(parents=True)
    feed = b"".join(b"zipped line %d\n" % i for i in range(300))
    subprocess.run([multilog_prog, "t", "!gzip", "s4096", "n20", str(main)], input=feed, check=True)
    rotated = LogDir(main).rotated()
    assert rotated and rotated[0].read_bytes()[:2] == b"\x1f\x8b"
    ldir = tmp_path / "l"
    ldir.mkdir()
    res = run_cli("--service-dir", str(tmp_path / "s"), "--log-dir", str(ldir))
    assert res.returncode == 0, res.stderr
    converted = b"".join(day_files(ldir).values())
    current = (main / "current").read_bytes().count(b"\n")
    assert converted.count(b"\n") + current == 300
    assert logdir.LogDir(main).rotated() == []
