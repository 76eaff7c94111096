"""The C cdb writer (qmailkit.cdb.backends._native): every way in gives the pure writer's bytes,
and misuse is an exception, never a crash or a bad file."""

from __future__ import annotations

import os

import pytest
from support.cdb import cdbmake_input, generated_records

from qmailkit import cdb
from qmailkit.cdb.backends import _native


def pure_bytes(tmp_path, records) -> bytes:
    cdb.write(tmp_path / "pure.cdb", records, backend="pure")
    return (tmp_path / "pure.cdb").read_bytes()


def native_bytes(tmp_path, feed) -> bytes:
    path = tmp_path / "native.cdb"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        maker = _native.Maker(fd)
        feed(maker)
        maker.finish()
    finally:
        os.close(fd)
    return path.read_bytes()


@pytest.mark.parametrize("count", [0, 1, 3000])
def test_every_entry_point_writes_the_same_bytes(tmp_path, count):
    # printable, newline-free records, so that add_lines can take them too
    records = [
        (k.replace(b"\n", b"."), v.replace(b"\n", b"."))
        for k, v in generated_records(count + 7, count)
    ]
    want = pure_bytes(tmp_path, records)
    keys, values = [k for k, _ in records], [v for _, v in records]

    def one_by_one(maker):
        for key, value in records:
            maker.add(key, value)

    def by_lines(maker):
        assert maker.add_lines(b"\n".join(keys), b"\n".join(values)) == len(records)

    def by_feed(maker):
        data = cdbmake_input(records)
        stop, added, _nbytes, done = maker.feed_cdbmake(data, 0)
        assert (stop, added, done) == (len(data), len(records), True)

    for feed in (one_by_one, lambda m: m.add_many(keys, values), by_lines, by_feed):
        assert native_bytes(tmp_path, feed) == want


def test_big_records_go_straight_to_the_file(tmp_path):
    records = [(b"k%d" % i, bytes([i]) * (3 << 20)) for i in range(3)]  # past the 1 MiB buffer
    assert native_bytes(tmp_path, lambda m: m.add_many(*zip(*records, strict=True))) == pure_bytes(
        tmp_path, records
    )


def test_add_lines_with_empty_values():
    maker = _native.Maker(os.open(os.devnull, os.O_WRONLY))
    assert maker.add_lines(b"") == 0
    assert maker.add_lines(b"a\nb") == 2
    assert maker.add_lines(b"c", b"") == 1
    assert maker.add_lines(b"d\ne", b"\n") == 2
    assert maker.count == 5
    with pytest.raises(ValueError, match="differ in number"):
        maker.add_lines(b"a\nb", b"1")
    with pytest.raises(ValueError, match="differ in number"):
        maker.add_lines(b"a", b"1\n2")
    assert maker.count == 5  # a refused call adds nothing


def test_feed_stops_before_what_it_cannot_take():
    maker = _native.Maker(os.open(os.devnull, os.O_WRONLY))
    good = b"+1,1:a->b\n"
    for tail in (
        b"+1,1:a->",
        b"+1,1:ab>b\n",
        b"-",
        b"+x",
        b"+12345678901,0:",
        b"+1,2:a->b\nx",
        b"+1,2:a->b\n",
    ):
        stop, added, nbytes, done = maker.feed_cdbmake(good + tail, 0)
        assert (stop, added, nbytes, done) == (len(good), 1, 2, False), tail
    assert maker.feed_cdbmake(good + b"\n" + b"junk", 0) == (len(good) + 1, 1, 2, True)
    assert maker.feed_cdbmake(b"xx" + good, 2)[:2] == (len(good) + 2, 1)
    with pytest.raises(ValueError, match="outside the buffer"):
        maker.feed_cdbmake(good, len(good) + 1)


def test_misuse_is_an_exception():
    maker = _native.Maker(os.open(os.devnull, os.O_WRONLY))
    with pytest.raises(TypeError):
        maker.add("key", b"")
    with pytest.raises(TypeError):
        maker.add(b"key")
    with pytest.raises(TypeError):
        maker.add_many([b"k", "x"], [b"", b""])
    with pytest.raises(ValueError, match="differ in length"):
        maker.add_many([b"k"], [])
    maker.finish()
    with pytest.raises(ValueError, match="already finished"):
        maker.add(b"k", b"")
    with pytest.raises(ValueError, match="already finished"):
        maker.finish()


def test_a_write_error_is_an_oserror(tmp_path):
    fd = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT, 0o644)
    try:
        maker = _native.Maker(fd)
        with pytest.raises(OSError) as caught:
            maker.add_lines(b"\n".join(b"%08d" % i for i in range(200_000)))  # > 1 MiB
        assert caught.value.errno == 9  # EBADF: not open for writing
    finally:
        os.close(fd)
