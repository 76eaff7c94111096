"""``qmailkit tai64n``: every line gets the current label; the text is untouched."""

from __future__ import annotations

import os
import select
import subprocess
import time

import pytest
from support import need, wait_for
from support.tai64n import QMAILKIT

from qmailkit.logs import filters
from qmailkit.logs.tai64n import LABEL_OFFSET, TAI_OFFSET, decode

TEXT = [b"first", b"", b"with\rCR", b"NUL\x00 and \xff\xfe", b"@4000000065a1b2c300000000 old label"]


def check_stamped(out: bytes, lines: list[bytes], start_ns: int, end_ns: int, offset: int):
    """Each output line is label + space + the input line, labels in [start, end] and ordered."""
    got = out.split(b"\n")
    assert len(got) == len(lines)
    previous = 0
    for line, original in zip(got, lines, strict=True):
        assert line[25:26] == b" " and line[26:] == original
        seconds, nanos = decode(line, offset)
        when = seconds * 10**9 + nanos
        assert start_ns // 1000 * 1000 - 1000 <= when <= end_ns + 1000  # same clock, µs slack
        assert when >= previous
        previous = when


@pytest.mark.parametrize("tai", [False, True])
def test_cli_to_a_pipe(tai):
    lines = TEXT + [b"no newline at the end"]
    start = time.time_ns()
    proc = subprocess.run(
        [QMAILKIT, "tai64n", *(["--tai"] if tai else [])],
        input=b"\n".join(lines),
        capture_output=True,
        check=False,
    )
    end = time.time_ns()
    assert (proc.returncode, proc.stderr) == (0, b"")
    check_stamped(proc.stdout, lines, start, end, TAI_OFFSET if tai else LABEL_OFFSET)


def test_tai_labels_are_27_seconds_ahead():
    proc = subprocess.run(
        [QMAILKIT, "tai64n", "--tai"], input=b"x\n", capture_output=True, check=False
    )
    assert decode(proc.stdout)[0] - decode(proc.stdout, TAI_OFFSET)[0] == 27
    assert abs(decode(proc.stdout, TAI_OFFSET)[0] - time.time()) < 60


def test_cli_to_a_file(tmp_path):
    lines = TEXT * 1000
    start = time.time_ns()
    with open(tmp_path / "out", "wb") as out:
        proc = subprocess.run(
            [QMAILKIT, "tai64n"],
            input=b"\n".join(lines) + b"\n",
            stdout=out,
            stderr=subprocess.PIPE,
            check=False,
        )
    end = time.time_ns()
    assert (proc.returncode, proc.stderr) == (0, b"")
    out = (tmp_path / "out").read_bytes()
    assert out.endswith(b"\n")
    check_stamped(out[:-1], lines, start, end, LABEL_OFFSET)


@pytest.mark.parametrize("per_line", [True, False])
@pytest.mark.parametrize("chunk", [64, 1000])
def test_lines_cut_across_reads(tmp_path, per_line, chunk):
    lines = [b"x" * n for n in range(0, 300, 7)] + [b"tail"]
    (tmp_path / "in").write_bytes(b"\n".join(lines))
    start = time.time_ns()
    with open(tmp_path / "in", "rb") as fin, open(tmp_path / "out", "wb") as fout:
        filters.tai64n(fin.fileno(), fout.fileno(), chunk=chunk, per_line=per_line)
    check_stamped((tmp_path / "out").read_bytes(), lines, start, time.time_ns(), LABEL_OFFSET)


def test_output_reads_back_with_daemontools_tai64nlocal():
    need("tai64nlocal")
    stamped = subprocess.run(
        [QMAILKIT, "tai64n"], input=b"hello\nworld\n", capture_output=True, check=False
    )
    local = subprocess.run(
        ["tai64nlocal"],
        input=stamped.stdout,
        capture_output=True,
        env=dict(os.environ, TZ="UTC"),
        check=False,
    )
    day = time.strftime("%Y-%m-%d", time.gmtime()).encode()
    out = local.stdout.split(b"\n")
    assert out[2] == b"" and len(out) == 3
    for line, text in zip(out, [b"hello", b"world"], strict=False):
        assert line.startswith(day) and line.endswith(b" " + text) and len(line) == 30 + len(text)


def test_same_format_as_daemontools_tai64n():
    (c_tool,) = need("tai64n")
    data = b"a\n\nb"
    ours = subprocess.run([QMAILKIT, "tai64n"], input=data, capture_output=True, check=False).stdout
    theirs = subprocess.run([c_tool], input=data, capture_output=True, check=False).stdout
    strip = [line[25:] for line in theirs.split(b"\n")]
    assert [line[25:] for line in ours.split(b"\n")] == strip == [b" a", b" ", b" b"]
    assert [decode(line) is not None for line in ours.split(b"\n")] == [True] * 3


def test_it_streams_in_a_pipeline():
    proc = subprocess.Popen([QMAILKIT, "tai64n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        got = b""
        for n, line in enumerate([b"one\n", b"two\n"]):
            proc.stdin.write(line)
            proc.stdin.flush()

            def readable(n=n):
                nonlocal got
                if select.select([proc.stdout], [], [], 0)[0]:
                    got += os.read(proc.stdout.fileno(), 4096)
                return got.count(b"\n") == n + 1

            wait_for(readable, timeout=10, what=f"stamped line {n + 1}")
        assert [line[26:] for line in got.split(b"\n")] == [b"one", b"two", b""]
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
        proc.stdout.close()


def test_write_error_exits_111():
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [QMAILKIT, "tai64n"], input=b"x\n", stdout=full, stderr=subprocess.PIPE, check=False
        )
    assert proc.returncode == 111
    assert (
        proc.stderr == b"qmailkit tai64n: fatal: unable to write output: No space left on device\n"
    )


def test_closed_pipe_exits_0_quietly(tmp_path):
    (tmp_path / "in").write_bytes(b"a line of text\n" * 500_000)
    with open(tmp_path / "in", "rb") as stdin:
        proc = subprocess.Popen(
            [QMAILKIT, "tai64n"], stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
    assert proc.stdout.read(30)[26:] == b"a li"
    proc.stdout.close()
    assert proc.wait(timeout=30) == 0
    assert proc.stderr.read() == b""
    proc.stderr.close()
