"""``qmailkit cdb make/dump/get/stats`` against tinycdb's ``cdb`` and freecdb's tools."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from collections import Counter

import pytest
import support
from support import need
from support.cdb import cdbmake_input, freecdb_make, generated_records, tinycdb_make

from qmailkit.cdb import text
from qmailkit.errors import QmailkitError

QMAILKIT = [sys.executable, "-m", "qmailkit"]


def qk(*args, input: bytes = b"") -> subprocess.CompletedProcess:
    return support.run(*args, input=input, text=False)


def dir_listing(path):
    return sorted(os.listdir(path))


@pytest.mark.parametrize("seed,count", [(21, 0), (22, 1), (23, 500), (24, 5000)])
def test_make_is_byte_identical_and_tools_read_each_other(tmp_path, seed, count):
    cdb_tool, cdbdump, cdbget = need("cdb", "cdbdump", "cdbget")
    records = generated_records(seed, count)
    source = cdbmake_input(records)
    ours = tmp_path / "ours.cdb"
    proc = qk("cdb", "make", ours, input=source)
    assert proc.returncode == 0 and proc.stderr == b""
    assert ours.read_bytes() == tinycdb_make(tmp_path / "tiny.cdb", records)
    assert ours.read_bytes() == freecdb_make(tmp_path / "free.cdb", records)
    # our dump of their file, their dumps of ours: all the very input we gave
    assert qk("cdb", "dump", tmp_path / "free.cdb").stdout == source
    assert subprocess.run([cdb_tool, "-d", ours], capture_output=True, check=False).stdout == source
    with open(ours, "rb") as fh:
        assert (
            subprocess.run([cdbdump], stdin=fh, capture_output=True, check=False).stdout == source
        )
    # lookups: ours on their file, theirs on ours
    usable = {k for k, _ in records if b"\0" not in k and k and not k.startswith(b"-")}
    counts = Counter(k for k, _ in records)
    sample = sorted(usable, key=lambda k: (-counts[k], k))[:12]  # duplicated keys first
    assert count < 500 or counts[sample[0]] > 1
    for key in sample:  # each lookup starts a process: a sample will do
        first = next(v for k, v in records if k == key)
        every = [v for k, v in records if k == key]
        got = qk("cdb", "get", tmp_path / "tiny.cdb", os.fsdecode(key))
        assert (got.returncode, got.stdout) == (0, first)
        got = qk("cdb", "get", "--all", tmp_path / "tiny.cdb", os.fsdecode(key))
        assert got.stdout == b"".join(v + b"\n" for v in every)
        with open(ours, "rb") as fh:
            theirs = subprocess.run([cdbget, key], stdin=fh, capture_output=True, check=False)
        assert theirs.stdout == first
        theirs = subprocess.run([cdb_tool, "-q", "--", ours, key], capture_output=True, check=False)
        assert theirs.stdout == b"".join(every)


def test_make_bulk_and_exact_paths_agree_on_awkward_input(tmp_path):
    # Keys and data with ':', '->', newlines, '\x01' and long runs of plain records mixed.
    records = [(b"user%d@example.com" % i, b"") for i in range(3000)]
    records += [(b"a:b", b"c->d"), (b"x\ny", b"\n"), (b"\x01", b"\x01\x01"), (b"", b"")]
    records += [(b"k%d" % i, b"v%d" % i) for i in range(3000)]
    ours = tmp_path / "ours.cdb"
    proc = qk("cdb", "make", ours, input=cdbmake_input(records) + b"ignored after the end")
    assert proc.returncode == 0, proc.stderr
    assert ours.read_bytes() == tinycdb_make(tmp_path / "tiny.cdb", records)


def test_parser_with_tiny_chunks_matches(monkeypatch):
    # Chunk edges fall inside records, numbers and the closing blank line.
    records = generated_records(31, 300) + [(b"plain%d" % i, b"") for i in range(300)]
    source = cdbmake_input(records)
    for chunk in (1, 3, 64, 1000):
        monkeypatch.setattr(text, "CHUNK", chunk)
        got = [
            r
            for keys, values, _ in text.parse_cdbmake(io.BytesIO(source), "x")
            for r in zip(keys, values, strict=True)
        ]
        assert got == records


MALFORMED = [
    (b"+1,1:a->b\n", 2, 2, "input ends without the closing blank line"),
    (b"", 1, 1, "input ends without the closing blank line"),
    (b"+1,1:a->b\n+x,1:a->b\n\n", 2, 2, "bad key length b'x'"),
    (b"+1,1:a->b\n-1,1:a->b\n\n", 2, 2, "expected '+' or a blank line, found b'-'"),
    (b"+3,1:a->b\n\n", 1, 1, "expected '->' after the key (is KLEN right?)"),
    (b"+1,3:a->b\n", 1, 1, "input ends inside the 3-byte data"),
    (b"+1,3:a->b\n\n", 1, 1, "input ends right after the data"),
    (b"+1,3:a", 1, 1, "input ends after the key"),
    (b"+1,0:a->b\n\n", 1, 1, "expected a newline after the data (is DLEN right?)"),
    (b"+,1:->b\n\n", 1, 1, "missing key length"),
    (b"+1,1:a->\n+1,1:b->c\n\n", 1, 1, "expected a newline after the data"),
    (b"+2,2:a\n->b\n\n+1", 4, 2, "input ends inside the key length"),
    (b"+1,1a->b\n\n", 1, 1, "bad data length b'1a'"),
]


@pytest.mark.parametrize("source,line,record,what", MALFORMED)
def test_malformed_input_exit_111_names_line_and_leaves_file(tmp_path, source, line, record, what):
    (cdb_tool,) = need("cdb")
    target = tmp_path / "db.cdb"
    target.write_bytes(b"old contents")
    proc = qk("cdb", "make", target, input=source)
    assert proc.returncode == 111
    message = proc.stderr.decode()
    assert message.startswith(
        f"qmailkit cdb: fatal: standard input:{line}: record {record}: {what}"
    ), message
    assert target.read_bytes() == b"old contents"
    assert dir_listing(tmp_path) == ["db.cdb"]
    # tinycdb agrees that it is malformed (cdbmake takes a missing length as 0)
    real = subprocess.run(
        [cdb_tool, "-c", tmp_path / "c.cdb"], input=source, capture_output=True, check=False
    )
    assert real.returncode != 0


def test_make_lines(tmp_path):
    source = (
        b"# valid recipients\n"
        b"alice@example.com\n"
        b"\n"
        b"bob@example.com  some value\twith tabs  \n"
        b"   carol@example.com 1\n"
        b"dave@example.com"  # no final newline
    )
    ours = tmp_path / "ours.cdb"
    assert qk("cdb", "make", "--lines", ours, input=source).returncode == 0
    expected = [
        (b"alice@example.com", b""),
        (b"bob@example.com", b"some value\twith tabs"),
        (b"carol@example.com", b"1"),
        (b"dave@example.com", b""),
    ]
    assert ours.read_bytes() == tinycdb_make(tmp_path / "tiny.cdb", expected)


def test_make_lines_bulk(tmp_path):
    keys = [b"user%d@example%d.org" % (i, i % 7) for i in range(20000)]
    ours = tmp_path / "ours.cdb"
    assert qk("cdb", "make", "--lines", ours, input=b"\n".join(keys) + b"\n").returncode == 0
    assert ours.read_bytes() == tinycdb_make(tmp_path / "tiny.cdb", [(k, b"") for k in keys])


def test_make_mode(tmp_path):
    ours = tmp_path / "ours.cdb"
    assert qk("cdb", "make", "--mode", "600", ours, input=b"\n").returncode == 0
    assert ours.stat().st_mode & 0o777 == 0o600


def test_get_absent_key_exits_100_silently(tmp_path):
    path = tmp_path / "db.cdb"
    qk("cdb", "make", path, input=b"+1,1:a->b\n\n")
    proc = qk("cdb", "get", path, "nope")
    assert (proc.returncode, proc.stdout, proc.stderr) == (100, b"", b"")


def test_dump_and_get_of_a_broken_file(tmp_path):
    path = tmp_path / "broken.cdb"
    path.write_bytes(b"\0" * 100)
    for args in (("dump", path), ("get", path, "a"), ("stats", path)):
        proc = qk("cdb", *args)
        assert proc.returncode == 100
        assert proc.stderr.decode().startswith(f"qmailkit cdb: fatal: {path}: not a valid cdb")
    proc = qk("cdb", "dump", tmp_path / "missing.cdb")
    assert proc.returncode == 111 and b"missing.cdb" in proc.stderr


def test_stats_agree_with_tinycdb(tmp_path):
    (cdb_tool,) = need("cdb")
    path = tmp_path / "db.cdb"
    records = generated_records(41, 4000)
    tinycdb_make(path, records)
    theirs = subprocess.run(
        [cdb_tool, "-s", path], capture_output=True, text=True, check=False
    ).stdout
    ours = qk("cdb", "stats", path).stdout.decode()
    assert f"records:      {len(records)}\n" in ours
    assert re.search(r"number of records: (\d+)", theirs)[1] == str(len(records))
    their_distances = re.findall(r"^ (d\d|>9):\s+(\d+)", theirs, re.MULTILINE)
    assert their_distances and len(their_distances) == 11
    expected = " ".join(f"{name}:{count}" for name, count in their_distances)
    assert f"distances:    {expected}\n" in ours


@pytest.mark.parametrize("lines", [False, True])
def test_build_size_limit_counts_bulk_records_exactly(tmp_path, monkeypatch, lines):
    from qmailkit.cdb import format as cdb_format

    keys = [b"user%04d@example.com" % i for i in range(2000)]
    source = b"\n".join(keys) + b"\n" if lines else cdbmake_input([(k, b"") for k in keys])
    exact = 2048 + sum(24 + len(k) for k in keys)
    monkeypatch.setattr(cdb_format, "MAX_SIZE", exact)
    assert text.build(str(tmp_path / "ok.cdb"), io.BytesIO(source), lines=lines) == len(keys)
    assert (tmp_path / "ok.cdb").stat().st_size == exact
    monkeypatch.setattr(cdb_format, "MAX_SIZE", exact - 1)
    with pytest.raises(QmailkitError, match="format's limit"):
        text.build(str(tmp_path / "big.cdb"), io.BytesIO(source), lines=lines)
    assert sorted(os.listdir(tmp_path)) == ["ok.cdb"]


@pytest.mark.parametrize("backend", ["native", "cdbx", "pure"])
def test_full_disk_is_a_clear_error_and_keeps_the_old_file(tmp_path, backend):
    """A real 64 KiB tmpfs: the build fails with exit 111 naming the file, the old cdb stays."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt], check=True)
    try:
        target = mnt / "db.cdb"
        small = cdbmake_input([(b"old", b"")])
        assert qk("cdb", "make", target, input=small).returncode == 0
        before = target.read_bytes()
        big = cdbmake_input([(b"user%06d@example.com" % i, b"") for i in range(20_000)])
        proc = subprocess.run(
            [*QMAILKIT, "cdb", "make", str(target)],
            input=big,
            capture_output=True,
            check=False,
            env={**os.environ, "QMAILKIT_CDB_BACKEND": backend},
        )
        assert proc.returncode == 111
        assert proc.stderr.decode().startswith(
            f"qmailkit cdb: fatal: cannot write {target}: No space left on device"
        ), proc.stderr
        assert target.read_bytes() == before
        assert dir_listing(mnt) == ["db.cdb"]
    finally:
        subprocess.run(["umount", mnt], check=True)


def test_make_with_records_larger_than_a_chunk(tmp_path):
    """A record longer than the 256 KiB read chunk (and the C writer's 1 MiB buffer)."""
    records = generated_records(31, 300)
    records[100:100] = [(b"big", bytes(range(256)) * 5000), (b"\n" * 300_000, b"")]
    ours = tmp_path / "ours.cdb"
    proc = qk("cdb", "make", ours, input=cdbmake_input(records))
    assert (proc.returncode, proc.stderr) == (0, b"")
    assert ours.read_bytes() == tinycdb_make(tmp_path / "tiny.cdb", records)


def _qk_timed(*args, input: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [*QMAILKIT, *map(str, args)], input=input, capture_output=True, check=False, timeout=20
    )


@pytest.mark.parametrize("command", [("dump",), ("get", "KEY"), ("stats",)])
def test_a_fifo_or_directory_where_a_cdb_belongs_is_named_at_once(tmp_path, command):
    # A16: a FIFO hung the reader for good; A18: a directory said only "No such device".
    (tinycdb,) = need("cdb")
    fifo, directory = tmp_path / "fifo.cdb", tmp_path / "dir.cdb"
    os.mkfifo(fifo)
    directory.mkdir()
    for path, kind in ((fifo, "a FIFO"), (directory, "a directory")):
        verb, *rest = command
        proc = _qk_timed("cdb", verb, path, *rest)
        assert proc.returncode == 111
        assert proc.stderr.decode() == (
            f"qmailkit cdb: fatal: {path}: is {kind}, not a regular file "
            "(replace it with a regular file)\n"
        )
    # tinycdb gives the same exit code for a directory (and hangs on the FIFO)
    assert (
        subprocess.run([tinycdb, "-d", str(directory)], capture_output=True, check=False).returncode
        == 111
    )


def test_a_symlink_to_dev_zero_is_refused(tmp_path):
    link = tmp_path / "zero.cdb"
    link.symlink_to("/dev/zero")
    proc = _qk_timed("cdb", "dump", link)
    assert proc.returncode == 111
    assert b"is a character device, not a regular file" in proc.stderr


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        # A17: -1 and 7777 gave -rwsrwsrwt, 1777777 was taken; 9x said "invalid <lambda> value"
        ("-1", "'-1' is not an octal file mode (give octal digits, e.g. 644 or 0640)"),
        ("9x", "'9x' is not an octal file mode (give octal digits, e.g. 644 or 0640)"),
        (
            "7777",
            (
                "'7777' sets the setuid, setgid or sticky bit; give permission bits only "
                "(at most 0777)"
            ),
        ),
        (
            "1777",
            (
                "'1777' sets the setuid, setgid or sticky bit; give permission bits only "
                "(at most 0777)"
            ),
        ),
        ("1777777", "'1777777' is out of range for a file mode (at most 0777)"),
        # a world-writable cdb: anyone could rewrite what qmail reads
        *(
            (
                mode,
                f"'{mode}' lets every user write the database; give a mode without write "
                "permission for others (e.g. 644 or 0640)",
            )
            for mode in ("666", "0602", "777")
        ),
    ],
)
def test_make_mode_is_checked(tmp_path, mode, message):
    target = tmp_path / "db.cdb"
    proc = qk("cdb", "make", f"--mode={mode}", target, input=b"\n")
    assert proc.returncode == 100
    assert proc.stderr.decode().endswith(f"qmailkit cdb make: usage: argument --mode: {message}\n")
    assert dir_listing(tmp_path) == []


def test_make_onto_a_directory_names_it_before_reading(tmp_path):
    # A18: it said ".db.cdb.qmailkit-tmp.PID: cannot write db.cdb: Is a directory" after
    # reading all the input
    target = tmp_path / "db.cdb"
    target.mkdir()
    proc = qk("cdb", "make", target, input=b"+1,1:a->b\n\n")
    assert proc.returncode == 111
    assert proc.stderr.decode() == (
        f"qmailkit cdb: fatal: {target}: is a directory, not a regular file "
        "(replace it with a regular file)\n"
    )
    assert dir_listing(tmp_path) == ["db.cdb"]
    assert dir_listing(target) == []


def test_make_with_standard_input_closed(tmp_path):
    # A14: sys.stdin is None then; it was an AttributeError traceback.
    (cdbmake,) = need("cdbmake")
    target = tmp_path / "db.cdb"
    proc = subprocess.run(
        [*QMAILKIT, "cdb", "make", str(target)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        preexec_fn=lambda: os.close(0),
    )
    assert proc.returncode == 111
    assert proc.stderr == b"qmailkit cdb: fatal: standard input is closed (give the input on it)\n"
    assert dir_listing(tmp_path) == []
    # freecdb's cdbmake exits 111 too
    theirs = subprocess.run(
        [cdbmake, str(target), str(target) + ".tmp"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
        preexec_fn=lambda: os.close(0),
    )
    assert theirs.returncode == 111


def test_make_lines_from_endless_input_without_a_newline_stops(tmp_path):
    # it used to gather /dev/zero into one "line" for ever (and copy it on every read)
    target = tmp_path / "db.cdb"
    with open("/dev/zero", "rb") as zero:
        proc = subprocess.run(
            [*QMAILKIT, "cdb", "make", "--lines", str(target)],
            stdin=zero,
            capture_output=True,
            check=False,
            timeout=60,
        )
    assert proc.returncode == 111
    assert proc.stderr == (
        b"qmailkit cdb: fatal: standard input: the line at byte 0 is longer "
        b"than 16777216 bytes (is this KEY VALUE lines?)\n"
    )
    assert dir_listing(tmp_path) == []


def test_make_from_dev_urandom_stops_at_once_like_cdbmake(tmp_path):
    (cdbmake,) = need("cdbmake")
    target = tmp_path / "db.cdb"
    codes = []
    for cmd in ([*QMAILKIT, "cdb", "make", str(target)], [cdbmake, str(target), f"{target}.t"]):
        with open("/dev/urandom", "rb") as junk:
            codes.append(
                subprocess.run(
                    cmd, stdin=junk, capture_output=True, check=False, timeout=60
                ).returncode
            )
    assert codes == [111, 111]
    assert not target.exists()
