"""Differential test: on arbitrary rule text, qmailkit.tcprules accepts exactly
what ucspi-tcp's tcprules accepts, and writes the same bytes."""

from __future__ import annotations

import contextlib
import io
import os
import resource
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import need

from qmailkit import tcprules
from qmailkit.errors import InputError

FRAGMENTS = [
    "1", "2", "0", "25", "300", ".", "-", ":", "=", "@", ",", '"', "'", "/", " ", "\t", "#",
    "\r", "allow", "deny", "X", "host", "127.0.0.", "1.2.3.4-7", ',X="v"', ",A=/b c/", "\n",
]  # fmt: skip

rule_text = st.lists(st.sampled_from(FRAGMENTS), max_size=25).map("".join)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(source=rule_text)
def test_accepts_and_writes_exactly_what_tcprules_does(tmp_path, source):
    (prog,) = need("tcprules")
    data = source.encode()
    real_cdb = tmp_path / "real.cdb"
    real_cdb.unlink(missing_ok=True)
    real = subprocess.run(
        [prog, real_cdb, tmp_path / "real.tmp"], input=data, capture_output=True, check=False
    )
    ours_cdb = tmp_path / "ours.cdb"
    ours_cdb.unlink(missing_ok=True)
    try:
        tcprules.compile_rules(tcprules.parse(data, "rules"), ours_cdb)
    except InputError as err:
        assert err.exit_code == 100 and err.line is not None
        assert real.returncode == 100, (source, str(err))
        assert not ours_cdb.exists()
        # the line we blame is the line tcprules prints
        line = data.split(b"\n")[err.line - 1].rstrip(b" \t")
        assert real.stderr == b"tcprules: fatal: unable to parse this line: " + line + b"\n"
        return
    assert real.returncode == 0, (source, real.stderr)
    assert ours_cdb.read_bytes() == real_cdb.read_bytes(), source


# -- hostile standard input and arguments (A14, A16) -------------------------------------------

QMAILKIT = [sys.executable, "-m", "qmailkit"]


def _both(tmp_path, stdin, **kwargs):
    """Run ucspi-tcp's tcprules and ours with the same standard input."""
    (prog,) = need("tcprules")
    runs = []
    for cmd in ([prog], [*QMAILKIT, "tcprules"]):
        with open(stdin, "rb") if stdin else contextlib.nullcontext() as fh:
            runs.append(
                subprocess.run(
                    [*cmd, str(tmp_path / "r.cdb"), str(tmp_path / "r.tmp")],
                    stdin=fh,
                    capture_output=True,
                    check=False,
                    timeout=30,
                    **kwargs,
                )
            )
        (tmp_path / "r.tmp").unlink(missing_ok=True)  # tcprules leaves it on failure
    return runs


def _address_space_limit(nbytes):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (nbytes, nbytes))

    return limit


def test_endless_junk_stops_at_the_first_bad_line_like_tcprules(tmp_path):
    # qmailkit used to read all of /dev/urandom first (2.7 GB in 8 s)
    # ... and in a bounded space: 512 MB of address space is far more than a run needs
    theirs, ours = _both(tmp_path, "/dev/urandom", preexec_fn=_address_space_limit(512 << 20))
    assert theirs.returncode == ours.returncode == 100
    assert ours.stderr.startswith(b"qmailkit tcprules: fatal: standard input:")
    assert not (tmp_path / "r.cdb").exists()


def test_an_endless_line_is_refused_at_its_bound():
    # tcprules itself reads /dev/zero for ever; we stop at MAX_LINE
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(
            [*QMAILKIT, "tcprules", "/nonexistent/r.cdb", "/nonexistent/r.tmp"],
            stdin=zero,
            capture_output=True,
            check=False,
            timeout=30,
        )
    assert proc.returncode == 100
    assert proc.stderr == (
        b"qmailkit tcprules: fatal: standard input:1: line longer than "
        b"1048576 bytes (is this a tcprules source?)\n"
    )


def test_parse_reads_a_stream_only_up_to_the_bad_line():
    stream = io.BytesIO(b"1.2.3.4:allow\n5.6.7.8:bogus\n" + b"9.9.9.9:allow\n" * 1000)
    with pytest.raises(InputError) as exc:
        tcprules.parse(stream, "standard input")
    assert (exc.value.line, exc.value.exit_code) == (2, 100)
    assert stream.tell() == len(b"1.2.3.4:allow\n5.6.7.8:bogus\n")


def test_closed_standard_input_exits_111_like_tcprules(tmp_path):
    (prog,) = need("tcprules")

    def closed(*cmd):
        return subprocess.run(
            [*cmd, str(tmp_path / "r.cdb"), str(tmp_path / "r.tmp")],
            stdin=subprocess.DEVNULL,
            preexec_fn=lambda: os.close(0),
            capture_output=True,
            check=False,
            timeout=30,
        )

    ours = closed(*QMAILKIT, "tcprules")
    assert ours.returncode == 111
    assert ours.stderr == (
        b"qmailkit tcprules: fatal: standard input is closed (give the input on it)\n"
    )
    assert os.listdir(tmp_path) == []
    assert closed(prog).returncode == 111  # (and tcprules leaves r.tmp behind)


def test_check_with_a_host_that_is_not_utf8(tmp_path):
    cdb = tmp_path / "r.cdb"
    tcprules.compile_rules(tcprules.parse(b":allow\n"), cdb)
    proc = subprocess.run(
        [*QMAILKIT, "tcprules", "check", str(cdb), "1.2.3.4", b"\xff\xfe"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 100
    assert proc.stderr == (
        b"qmailkit tcprules: fatal: HOST '\\xff\\xfe' is not valid UTF-8 "
        b"text (give the name as tcpserver sets TCPREMOTEHOST/TCPREMOTEINFO)\n"
    )


def test_check_with_an_ip_that_is_not_utf8(tmp_path):
    # shown as the bytes given, not as Python's surrogates ('\udcff')
    cdb = tmp_path / "r.cdb"
    tcprules.compile_rules(tcprules.parse(b":allow\n"), cdb)
    proc = subprocess.run(
        [*QMAILKIT, "tcprules", "check", str(cdb), b"1.2.3.\xff"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 100
    assert proc.stderr == (
        b"qmailkit tcprules: fatal: not an IP address: '1.2.3.\\xff' "
        b"(give the client's address, e.g. 1.2.3.4)\n"
    )


def test_compile_onto_a_directory_names_it(tmp_path):
    # A18: it said "r.tmp: cannot write r.cdb: Is a directory"
    (tmp_path / "r.cdb").mkdir()
    proc = subprocess.run(
        [*QMAILKIT, "tcprules", str(tmp_path / "r.cdb"), str(tmp_path / "r.tmp")],
        input=b":allow\n",
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 111
    assert proc.stderr.decode() == (
        f"qmailkit tcprules: fatal: {tmp_path}/r.cdb: is a directory, not a regular file "
        "(replace it with a regular file)\n"
    )
    assert sorted(os.listdir(tmp_path)) == [".r.cdb.lock", "r.cdb"]


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_check_of_a_fifo_or_directory_names_it(tmp_path, kind):
    cdb = tmp_path / "r.cdb"
    os.mkfifo(cdb) if kind == "fifo" else cdb.mkdir()
    proc = subprocess.run(
        [*QMAILKIT, "tcprules", "check", str(cdb), "1.2.3.4"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    assert proc.returncode == 111
    shown = "a FIFO" if kind == "fifo" else "a directory"
    assert proc.stderr.decode() == (
        f"qmailkit tcprules: fatal: {cdb}: is {shown}, not a "
        "regular file (replace it with a regular file)\n"
    )
