"""Properties of the cdbmake parser: it parses what cdbmake parses, in any chunking,
and fails cleanly (QmailkitError, exit 111, with a line) on anything else."""

from __future__ import annotations

import io
import os
import subprocess
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import need
from support.cdb import cdbmake_input

from qmailkit import cdb
from qmailkit.cdb import text
from qmailkit.errors import QmailkitError

tricky = st.binary(max_size=12) | st.sampled_from(
    [b"", b"->", b":", b"\n", b"\n\n", b"+1,1:", b"a"]
)
records = st.lists(st.tuples(tricky, tricky), max_size=30)


def parse_all(data: bytes, chunk: int) -> list[tuple[bytes, bytes]]:
    old = text.CHUNK
    text.CHUNK = chunk
    try:
        out = []
        for keys, values, nbytes in text.parse_cdbmake(io.BytesIO(data), "in"):
            assert nbytes is None or nbytes == sum(map(len, keys)) + sum(map(len, values))
            out += zip(keys, values, strict=True)
        return out
    finally:
        text.CHUNK = old


def build_native(data: bytes, chunk: int) -> list[tuple[bytes, bytes]]:
    """The fast path: text.build with the C writer parsing the chunks."""
    old = text.CHUNK
    text.CHUNK = chunk
    try:
        with tempfile.TemporaryDirectory() as work:
            path = os.path.join(work, "out.cdb")
            text.build(path, io.BytesIO(data), "in")
            with cdb.Reader(path) as reader:
                return list(reader.items())
    finally:
        text.CHUNK = old


def outcome(parse, data: bytes, chunk: int) -> object:
    try:
        return parse(data, chunk)
    except QmailkitError as err:
        return (str(err), err.line, err.exit_code)


def test_build_takes_the_c_parser():
    with tempfile.TemporaryDirectory() as work, cdb.make(os.path.join(work, "x.cdb")) as writer:
        assert writer.feeds_cdbmake


@settings(max_examples=300, deadline=None)
@given(records=records, chunk=st.sampled_from([1, 2, 5, 17, 64, 4096]), tail=st.binary(max_size=8))
def test_round_trip_any_chunking(records, chunk, tail):
    assert parse_all(cdbmake_input(records) + tail, chunk) == records
    assert build_native(cdbmake_input(records) + tail, chunk) == records


@settings(max_examples=500, deadline=None)
@given(
    data=st.lists(
        st.sampled_from([b"+", b"1", b"2", b"12", b",", b":", b"-", b">", b"->", b"\n", b"a"]),
        max_size=60,
    ).map(b"".join),
    chunk=st.sampled_from([1, 3, 7, 4096]),
)
def test_c_parser_agrees_with_python_parser_on_anything(data, chunk):
    """Same records, or the same error on the same line, whichever parser runs."""
    assert outcome(build_native, data, chunk) == outcome(parse_all, data, 4096)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=st.lists(
        st.sampled_from([b"+", b"1", b"2", b",", b":", b"-", b">", b"->", b"\n", b"a", b"0"]),
        max_size=40,
    ).map(b"".join),
    chunk=st.sampled_from([1, 3, 4096]),
)
def test_garbage_agrees_with_tinycdb(tmp_path, data, chunk):
    (cdb_tool,) = need("cdb")
    real = subprocess.run(
        [cdb_tool, "-c", tmp_path / "t.cdb"], input=data, capture_output=True, check=False
    )
    try:
        got = parse_all(data, chunk)
    except QmailkitError as err:
        assert err.exit_code == 111 and err.line is not None and err.path == "in"
        assert real.returncode != 0, data
        return
    assert real.returncode == 0, data
    dumped = subprocess.run(
        [cdb_tool, "-d", tmp_path / "t.cdb"], capture_output=True, check=True
    ).stdout
    assert cdbmake_input(got) == dumped


@pytest.mark.parametrize(
    "data,expected",
    [
        (b"a\nb c\n", [(b"a", b""), (b"b", b"c")]),
        (b"# c\n\n  \t\nk v w\n", [(b"k", b"v w")]),
        (b"k\r\n", [(b"k", b"")]),
        (b"no-newline", [(b"no-newline", b"")]),
        (b"", []),
    ],
)
def test_lines(tmp_path, data, expected):
    path = str(tmp_path / "lines.cdb")
    assert text.build(path, io.BytesIO(data), "x", lines=True) == len(expected)
    with cdb.Reader(path) as reader:
        assert list(reader.items()) == expected
