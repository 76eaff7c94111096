"""``qmailkit tai64nlocal`` against daemontools' tai64nlocal, byte for byte, in many time zones."""

from __future__ import annotations

import os
import select
import subprocess
import time

import pytest
from support import need, wait_for
from support.tai64n import (
    BAD_LINES,
    PLAIN_LINES,
    QMAILKIT,
    ZONES,
    good_lines,
    label,
    run_c,
    run_ours,
    set_tz,
)

from qmailkit.logs import filters
from qmailkit.logs.tai64n import TAI_OFFSET, LocalTime


@pytest.fixture(autouse=True)
def restore_tz(monkeypatch):
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="module")
def good_data() -> bytes:
    # ends without a newline: the C tool prints the last line as it is
    return b"\n".join(good_lines()) + b"\n" + label(1_700_000_000, 42) + b" no newline at the end"


@pytest.mark.parametrize("tz", ZONES)
def test_cli_is_byte_identical_to_daemontools(tz, good_data):
    need("tai64nlocal")
    expected = run_c(good_data, tz)
    assert expected.returncode == 0, expected.stderr
    assert expected.stdout.count(b"\n") == good_data.count(b"\n")  # the C tool did not stop early
    ours = run_ours(good_data, tz)
    assert ours.returncode == 0, ours.stderr
    assert ours.stderr == b""
    assert ours.stdout == expected.stdout


def test_the_zones_are_really_different(good_data):
    """Guard against a TZ that is silently ignored: the outputs must differ between zones."""
    outputs = {tz: run_ours(good_data, tz).stdout for tz in ZONES}
    assert len(set(outputs.values())) == len(ZONES)
    assert b"2016-12-31 23:59:60." in outputs["right/UTC"]
    assert b"2016-12-31 23:59:60." not in outputs["UTC"]


@pytest.mark.parametrize("chunk", [64, 100, 4093, 1 << 20])
@pytest.mark.parametrize("tz", ["Europe/Berlin", "Europe/Amsterdam", "right/UTC"])
def test_any_chunk_size_gives_the_same_bytes(tz, chunk, good_data, tmp_path, monkeypatch):
    """Lines cut across reads, the carried newline and the cache give the C tool's bytes."""
    need("tai64nlocal")
    expected = run_c(good_data, tz).stdout
    set_tz(monkeypatch, tz)
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(good_data)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        filters.tai64nlocal(fin.fileno(), fout.fileno(), chunk=chunk)
    assert dst.read_bytes() == expected


def test_bad_lines_pass_unchanged_where_the_c_tool_fails():
    """Malformed labels: the C tool crashes or prints garbage; ours copies the line."""
    need("tai64nlocal")
    for line in BAD_LINES:
        c_tool = run_c(line + b"\n", "UTC")
        assert c_tool.returncode != 0 or c_tool.stdout != line + b"\n", line
        ours = run_ours(line + b"\n", "UTC")
        assert (ours.returncode, ours.stdout, ours.stderr) == (0, line + b"\n", b""), line


def test_bad_lines_mixed_with_good_ones(good_data):
    """With the malformed lines in between, every other line still matches the C tool."""
    need("tai64nlocal")
    good = good_lines(seed=3, spread=200)
    mixed, expected = [], []
    converted = run_c(b"\n".join(good) + b"\n", "Europe/Berlin").stdout.split(b"\n")[:-1]
    for i, (line, out) in enumerate(zip(good, converted, strict=True)):
        bad = BAD_LINES[i % len(BAD_LINES)]
        mixed += [line, bad]
        expected += [out, bad]
    ours = run_ours(b"\n".join(mixed) + b"\n", "Europe/Berlin")
    assert ours.returncode == 0
    assert ours.stdout == b"\n".join(expected) + b"\n"


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"\n\n\n", b"no newline", b"\r\n", b"\x00", b"@", b"@40", b"x\n@4000000065a1"],
    ids=repr,
)
def test_tiny_inputs_match_the_c_tool(data):
    need("tai64nlocal")
    expected = run_c(data, "UTC")
    if expected.returncode == 0 and not data.startswith(b"@") and b"\n@" not in data:
        assert run_ours(data, "UTC").stdout == expected.stdout
    # our promise in every case: what is not a label is copied
    assert run_ours(data, "UTC").stdout == data


def test_label_at_end_of_input_without_newline_is_converted():
    """The C tool drops such a line (it stops inside the label); ours converts it."""
    need("tai64nlocal")
    data = b"first\n" + label(1_700_000_000, 123)
    assert run_c(data, "UTC").stdout == b"first\n"  # the documented difference
    assert run_ours(data, "UTC").stdout == b"first\n2023-11-14 22:13:20.000000123"


def test_a_line_longer_than_a_chunk_streams_in_bounded_pieces(tmp_path, monkeypatch):
    set_tz(monkeypatch, "UTC")
    long_line = label(1_700_000_000, 1) + b" " + b"x@" * 300_000
    data = b"@4000\n" + long_line + b"\n" + label(1_700_000_001, 2) + b" next\n" + long_line
    writes = []
    real_write = os.write
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(data)
    with open(src, "rb") as fin, open(dst, "wb") as fout, monkeypatch.context() as patch:

        def write(fd, block):
            if fd == fout.fileno():
                writes.append(len(block))
            return real_write(fd, block)

        patch.setattr(os, "write", write)
        filters.tai64nlocal(fin.fileno(), fout.fileno(), chunk=4096)
    assert dst.read_bytes() == LocalTime().convert_lines(data)
    assert dst.read_bytes().count(b"2023-11-14 22:13:2") == 3
    assert len(writes) > 100 and max(writes) <= 3 * 4096


def test_tai_option_matches_s6_tai64nlocal():
    """--tai reads s6-log's labels (real TAI, 37 s after 2017) like s6-tai64nlocal."""
    need("s6-tai64nlocal")
    lines = [
        label(unix, nanos, TAI_OFFSET) + b" s6 line"
        for unix, nanos in [(1_500_000_000, 1), (1_700_000_000, 5), (1_764_000_000, 999_999_999)]
    ]
    data = b"\n".join(lines) + b"\nplain\n"
    expected = run_c(data, "UTC", prog="s6-tai64nlocal")
    assert expected.returncode == 0
    assert run_ours(data, "UTC", "--tai").stdout == expected.stdout
    # the same labels read the daemontools way are 27 s late
    assert run_ours(data, "UTC").stdout.split(b"\n")[1] == b"2023-11-14 22:13:47.000000005 s6 line"


def test_it_streams_in_a_pipeline():
    """Each line comes out as soon as it is in, before the input ends."""
    proc = subprocess.Popen(
        [QMAILKIT, "tai64nlocal"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=dict(os.environ, TZ="UTC"),
    )
    try:
        got = b""
        for n, line in enumerate([label(1_700_000_000, 7) + b" one\n", b"two\n"]):
            proc.stdin.write(line)
            proc.stdin.flush()

            def readable(n=n):
                nonlocal got
                if select.select([proc.stdout], [], [], 0)[0]:
                    got += os.read(proc.stdout.fileno(), 4096)
                return got.count(b"\n") == n + 1

            wait_for(readable, timeout=10, what=f"output of line {n + 1}")
        assert got == b"2023-11-14 22:13:20.000000007 one\ntwo\n"
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


def test_read_error_exits_111(tmp_path):
    with open(tmp_path / "w", "wb") as write_only:  # reading it fails with EBADF
        proc = subprocess.run(
            [QMAILKIT, "tai64nlocal"], stdin=write_only, capture_output=True, check=False
        )
    assert proc.returncode == 111
    assert (
        proc.stderr == b"qmailkit tai64nlocal: fatal: unable to read input: Bad file descriptor\n"
    )
    assert proc.stdout == b""


def test_write_error_exits_111():
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [QMAILKIT, "tai64nlocal"],
            input=b"x\n",
            stdout=full,
            stderr=subprocess.PIPE,
            check=False,
        )
    assert proc.returncode == 111
    assert proc.stderr == (
        b"qmailkit tai64nlocal: fatal: unable to write output: No space left on device\n"
    )


@pytest.mark.timeout(60)
def test_closed_pipe_exits_0_quietly(tmp_path):
    src = tmp_path / "in"
    src.write_bytes((label(1_700_000_000, 1) + b" a line of text\n") * 200_000)
    with open(src, "rb") as stdin:
        proc = subprocess.Popen(
            [QMAILKIT, "tai64nlocal"], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    first = proc.stdout.read(100)
    proc.stdout.close()  # like `| head`
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == b""
    proc.stderr.close()
    assert first.startswith(b"2023-11-14 22:13:20.000000001 a line")


def test_plain_lines_are_untouched_in_bulk():
    data = b"\n".join(PLAIN_LINES * 1000) + b"\n"
    assert run_ours(data, "UTC").stdout == data


def _s6_lines(seed: int) -> bytes:
    """Real-TAI labels densely around every leap second, and spread over 1970..2100."""
    import random

    from qmailkit.logs.tai64n import _LEAP_TAI

    rng = random.Random(seed)
    lines = []
    for leap in _LEAP_TAI:
        for tai in range(leap - 70, leap + 70):
            lines.append(b"@%016x%08x s6 %d" % ((1 << 62) + tai, rng.randrange(10**9), tai))
    for _ in range(3000):
        tai = rng.randrange(0, 4_102_444_800)
        lines.append(b"@%016x%08x spread" % ((1 << 62) + tai, rng.randrange(10**9)))
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York"])
def test_tai_option_reads_leap_seconds_like_s6_tai64nlocal(tz):
    """Before 2017 TAI-UTC was smaller; leap seconds print as :60, as s6-tai64nlocal does."""
    need("s6-tai64nlocal")
    data = _s6_lines(5)
    expected = run_c(data, tz, prog="s6-tai64nlocal")
    assert expected.returncode == 0
    assert expected.stdout.count(b":60.") == 27
    assert run_ours(data, tz, "--tai").stdout == expected.stdout
